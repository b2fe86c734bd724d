//! Last-known state on disk for offline autonomy (`picolet.offlineAutonomy`):
//! the API pods bound to this node and the configMaps, secrets, service
//! account tokens and services they use, under `<root>/state/offline/`, so
//! that after a reboot with the API server unreachable picolet starts those
//! pods again (upstream's kubelet starts nothing until the API answers).
//! The API's answer always wins: its first pod list replaces the local copy
//! in the pod config (pods gone meanwhile are stopped) and here.
//!
//! One file per entry (`pods/<uid>`, `configmaps/<ns>_<name>`,
//! `secrets/<ns>_<name>`, `tokens`, `services`), each a frame:
//!
//! ```text
//! picolet-offline/1 <plain|chacha20poly1305> <body length> <sha256 of body hex>\n<body>
//! ```
//!
//! A power cut mid-write cannot leave a half file (temp file, fsync,
//! rename, fsync of the directory), and a frame whose length or digest does
//! not match (a bad sector, a copy cut short) is ignored with a log line:
//! never a crash, never a half-read spec.
//!
//! Secrets and tokens are encrypted at rest (ChaCha20-Poly1305 from ring,
//! already linked for TLS, so no binary cost) with a random node-local key
//! (`<root>/state/offline.key`, mode 0600), the entry's name as associated
//! data so files cannot be swapped. Why not tmpfs: a reboot with the
//! uplink down is exactly the case this is for, and every API pod mounts a
//! service account token by default: on tmpfs no such pod could start
//! after a reboot. The key guards the copies when the state directory
//! alone leaks (a backup, a copied image); whoever holds the whole disk
//! also holds the node's client key, which reads the same secrets from the
//! API anyway.
//!
//! Flash: an entry is written only when its content changed (the digest of
//! what is on disk is kept), pod status and resourceVersions are not kept
//! (they change all the time and are not needed to start a pod), one task
//! writes, and a burst of changes to one entry is one write.

use crate::api::core::Pod;
use anyhow::{Context, Result};
use ring::aead;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// Under the state directory.
pub const OFFLINE_DIR: &str = "offline";
pub const KEY_FILE: &str = "offline.key";
const MAGIC: &str = "picolet-offline/1";
const PLAIN: &str = "plain";
const SEALED: &str = "chacha20poly1305";
/// Longer than any header written.
const MAX_HEADER: usize = 128;
/// How long the API server gets to list the node's pods at start before
/// the local copy is used (a reachable server answers in well under a
/// second; a late answer still wins).
pub const API_WAIT: Duration = Duration::from_secs(3);

/// The digest noted for a file that could not be read: matches no content,
/// so the next save rewrites it.
const BAD: [u8; 32] = [0; 32];

/// Entry kinds; secrets and tokens are encrypted.
pub const PODS: &str = "pods";
pub const CONFIG_MAPS: &str = "configmaps";
pub const SECRETS: &str = "secrets";
pub const TOKENS: &str = "tokens";
pub const SERVICES: &str = "services";

fn sealed(name: &str) -> bool {
    name.starts_with("secrets/") || name == TOKENS
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Frames `plain` as entry `name` (sealed with `key` for secret kinds).
pub fn encode(name: &str, plain: &[u8], key: &aead::LessSafeKey) -> Result<Vec<u8>> {
    let (kind, body) = if sealed(name) {
        let mut nonce = [0u8; aead::NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| anyhow::anyhow!("no random nonce"))?;
        let mut buf = plain.to_vec();
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(name.as_bytes()),
            &mut buf,
        )
        .map_err(|_| anyhow::anyhow!("seal {name}"))?;
        let mut body = nonce.to_vec();
        body.extend_from_slice(&buf);
        (SEALED, body)
    } else {
        (PLAIN, plain.to_vec())
    };
    let mut out = format!(
        "{MAGIC} {kind} {} {}\n",
        body.len(),
        crate::util::hex(&sha256(&body))
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// The plain content of entry `name` from its frame, or why it is bad.
pub fn decode(name: &str, data: &[u8], key: &aead::LessSafeKey) -> Result<Vec<u8>, String> {
    let nl = data
        .iter()
        .take(MAX_HEADER)
        .position(|b| *b == b'\n')
        .ok_or("no header (empty or not a picolet state file)")?;
    let header = std::str::from_utf8(&data[..nl]).map_err(|_| "header is not text")?;
    let body = &data[nl + 1..];
    let f: Vec<&str> = header.split(' ').collect();
    let [magic, kind, len, digest] = f[..] else {
        return Err(format!("bad header {header:?}"));
    };
    if magic != MAGIC {
        return Err(format!("unknown format {magic:?}"));
    }
    let want = if sealed(name) { SEALED } else { PLAIN };
    if kind != want {
        return Err(format!("kind {kind:?}, expected {want:?}"));
    }
    let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
    if body.len() != len {
        return Err(format!(
            "truncated or padded: {} bytes, header says {len}",
            body.len()
        ));
    }
    if crate::util::hex(&sha256(body)) != digest {
        return Err("checksum mismatch".into());
    }
    if kind == PLAIN {
        return Ok(body.to_vec());
    }
    if body.len() < aead::NONCE_LEN + key.algorithm().tag_len() {
        return Err("sealed body too short".into());
    }
    let (nonce, sealed) = body.split_at(aead::NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, aead::Aad::from(name.as_bytes()), &mut buf)
        .map_err(|_| "cannot decrypt (another node's key, or altered)")?;
    Ok(plain.to_vec())
}

/// Whether `s` may be part of a file name (UIDs, namespaces and object
/// names are DNS names; anything else is not stored rather than escaped).
fn safe(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The entry name of a namespaced object, if storable.
pub fn object_name(kind: &str, ns: &str, name: &str) -> Option<String> {
    (safe(ns) && safe(name)).then(|| format!("{kind}/{ns}_{name}"))
}

fn pod_name(uid: &str) -> Option<String> {
    safe(uid).then(|| format!("{PODS}/{uid}"))
}

/// What of an API pod is kept: no status, resourceVersion or
/// managedFields (they change with every status update and a pod does not
/// need them to start). `None` for pods that must not start again from
/// the local copy: terminating or finished ones.
pub fn storable_pod(p: &Pod) -> Option<Pod> {
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let mut p = p.clone();
    p.status = None;
    p.metadata.resource_version = None;
    p.metadata.managed_fields = None;
    Some(p)
}

/// Reads the node-local key, making one if there is none (or it is
/// damaged: then the old secrets cannot be read and are ignored).
fn load_key(state_dir: &Path) -> Result<aead::LessSafeKey> {
    let path = state_dir.join(KEY_FILE);
    let bytes = match crate::util::fs::read_optional(&path)? {
        Some(b) if b.len() == 32 => b,
        other => {
            if other.is_some() {
                log::error!(
                    "offline state: {} is damaged; a new key is made and the stored secrets are ignored",
                    path.display()
                );
            }
            let mut k = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
                .map_err(|_| anyhow::anyhow!("no random key"))?;
            write_private(&path, &k)?;
            k.to_vec()
        }
    };
    let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &bytes)
        .map_err(|_| anyhow::anyhow!("bad key"))?;
    Ok(aead::LessSafeKey::new(key))
}

/// Like `write_atomic`, mode 0600 from the start.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().context("key path without a directory")?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    crate::util::fs::sync_dir(dir)
}

/// The local copy; share as `Rc<OfflineStore>`.
pub struct OfflineStore {
    dir: PathBuf,
    key: aead::LessSafeKey,
    /// Digest of each entry's plain content as on disk (or as queued);
    /// an unreadable file counts with a digest nothing matches.
    on_disk: RefCell<HashMap<String, [u8; 32]>>,
    /// Writes (`Some`) and removals (`None`) for the writer, newest wins:
    /// at most one per entry, so never more than the node's entries.
    pending: RefCell<BTreeMap<String, Option<Vec<u8>>>>,
    wake: smol::channel::Sender<()>,
    wake_rx: smol::channel::Receiver<()>,
    /// Serving local copies: from the start-up snapshot until the API's
    /// first pod list.
    active: Cell<bool>,
    /// Files written since the start (tests, benches).
    pub writes: Cell<u64>,
}

impl OfflineStore {
    /// Opens (or creates) the store under `state_dir`, checking every
    /// file once: bad ones are logged and ignored.
    pub fn open(state_dir: &Path) -> Result<Rc<OfflineStore>> {
        let dir = state_dir.join(OFFLINE_DIR);
        for k in [PODS, CONFIG_MAPS, SECRETS] {
            std::fs::create_dir_all(dir.join(k))
                .with_context(|| format!("create {}", dir.join(k).display()))?;
        }
        let key = load_key(state_dir)?;
        let (wake, wake_rx) = smol::channel::bounded(1);
        let s = OfflineStore {
            dir,
            key,
            on_disk: RefCell::default(),
            pending: RefCell::default(),
            wake,
            wake_rx,
            active: Cell::new(false),
            writes: Cell::new(0),
        };
        let mut names: Vec<String> = [TOKENS, SERVICES]
            .iter()
            .filter(|n| s.dir.join(n).exists())
            .map(|n| n.to_string())
            .collect();
        for k in [PODS, CONFIG_MAPS, SECRETS] {
            for e in std::fs::read_dir(s.dir.join(k))?.flatten() {
                let f = e.file_name().to_string_lossy().into_owned();
                if f.starts_with('.') {
                    // A temp file a power cut left behind.
                    let _ = std::fs::remove_file(e.path());
                    continue;
                }
                names.push(format!("{k}/{f}"));
            }
        }
        for n in names {
            let digest = s.read(&n).map(|b| sha256(&b)).unwrap_or(BAD);
            s.on_disk.borrow_mut().insert(n, digest);
        }
        Ok(Rc::new(s))
    }

    /// Drops the whole local copy (offline autonomy turned off: no secret
    /// stays on disk for nothing).
    pub fn remove_all(state_dir: &Path) {
        let dir = state_dir.join(OFFLINE_DIR);
        if dir.exists() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => log::info!(
                    "offline autonomy is off: removed the local copy {}",
                    dir.display()
                ),
                Err(e) => log::warn!("remove {}: {e}", dir.display()),
            }
        }
        let _ = std::fs::remove_file(state_dir.join(KEY_FILE));
    }

    /// The plain content of entry `name`; a bad file is logged and is
    /// `None`, as a missing one.
    fn read(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("offline state: read {}: {e}; entry ignored", path.display());
                return None;
            }
        };
        match decode(name, &data, &self.key) {
            Ok(b) => Some(b),
            Err(e) => {
                log::warn!(
                    "offline state: {} is corrupt ({e}); entry ignored",
                    path.display()
                );
                None
            }
        }
    }

    /// Through a `Value` and [`crate::api::decode`], as every API object
    /// is decoded: a second deserializer of the large API types (straight
    /// from bytes) would cost ~150 KiB of binary.
    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let b = self.read(name)?;
        let decoded = serde_json::from_slice::<serde_json::Value>(&b)
            .map_err(anyhow::Error::from)
            .and_then(|v| crate::api::decode::<T>(v).map(|d| d.object));
        match decoded {
            Ok(v) => Some(v),
            Err(e) => {
                log::warn!("offline state: {name}: {e}; entry ignored");
                None
            }
        }
    }

    /// Queues `value` as entry `name` unless the disk has it already.
    fn put<T: Serialize>(&self, name: String, value: &T) {
        let plain = match serde_json::to_vec(value) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("offline state: encode {name}: {e}");
                return;
            }
        };
        let d = sha256(&plain);
        if self.on_disk.borrow().get(&name) == Some(&d) {
            return;
        }
        self.on_disk.borrow_mut().insert(name.clone(), d);
        self.pending.borrow_mut().insert(name, Some(plain));
        let _ = self.wake.try_send(());
    }

    fn remove(&self, name: &str) {
        if self.on_disk.borrow_mut().remove(name).is_none() {
            return;
        }
        self.pending.borrow_mut().insert(name.to_string(), None);
        let _ = self.wake.try_send(());
    }

    /// Whether local copies are being served (no API pod list yet).
    pub fn active(&self) -> bool {
        self.active.get()
    }

    pub fn set_active(&self, on: bool) {
        self.active.set(on);
    }

    /// The stored pods, each checked; bad ones are left out.
    pub fn pods(&self) -> Vec<Pod> {
        // Files found bad at open were logged then; not read again.
        let names: Vec<String> = self
            .on_disk
            .borrow()
            .iter()
            .filter(|(n, d)| n.starts_with("pods/") && **d != BAD)
            .map(|(n, _)| n.clone())
            .collect();
        let mut out = Vec::new();
        for n in &names {
            let Some(p) = self.read_json::<Pod>(n) else {
                continue;
            };
            // A file under another pod's name, or without a spec, is not run.
            let own = p.metadata.uid.as_deref().and_then(pod_name).as_deref() == Some(n.as_str());
            if !own || p.spec.is_none() {
                log::warn!("offline state: {n}: not a stored pod of that UID; entry ignored");
                continue;
            }
            out.push(p);
        }
        out.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
        out
    }

    /// Keeps (or drops) one API pod.
    pub fn save_pod(&self, p: &Pod) {
        let Some(name) = p.metadata.uid.as_deref().and_then(pod_name) else {
            return;
        };
        match storable_pod(p) {
            Some(s) => self.put(name, &s),
            None => self.remove(&name),
        }
    }

    pub fn remove_pod(&self, uid: &str) {
        if let Some(n) = pod_name(uid) {
            self.remove(&n);
        }
    }

    /// The API listed the node's pods: they replace the stored ones.
    pub fn replace_pods<'a>(&self, pods: impl Iterator<Item = &'a Pod>) {
        let mut keep = std::collections::HashSet::new();
        for p in pods {
            if let Some(n) = p.metadata.uid.as_deref().and_then(pod_name) {
                keep.insert(n);
            }
            self.save_pod(p);
        }
        let gone: Vec<String> = self
            .on_disk
            .borrow()
            .keys()
            .filter(|n| n.starts_with("pods/") && !keep.contains(*n))
            .cloned()
            .collect();
        for n in gone {
            self.remove(&n);
        }
    }

    /// Forgets the configMaps and secrets no stored pod references (by
    /// entry name, see [`object_name`]). Done when the API's pods change,
    /// not when a pod's volumes go, so that pods stopped at shutdown
    /// (`stopPodsOnShutdown`) still find their objects after a reboot.
    pub fn retain_objects(&self, keep: &std::collections::HashSet<String>) {
        let gone: Vec<String> = self
            .on_disk
            .borrow()
            .keys()
            .filter(|n| {
                (n.starts_with("configmaps/") || n.starts_with("secrets/")) && !keep.contains(*n)
            })
            .cloned()
            .collect();
        for n in gone {
            self.remove(&n);
        }
    }

    /// A stored configMap or secret (`kind` [`CONFIG_MAPS`] or [`SECRETS`]).
    pub fn object<K: DeserializeOwned>(&self, kind: &str, ns: &str, name: &str) -> Option<K> {
        self.read_json(&object_name(kind, ns, name)?)
    }

    /// Keeps an object as the API shows it, or forgets it (`None`).
    pub fn save_object<K>(&self, kind: &str, ns: &str, name: &str, obj: Option<&K>)
    where
        K: Serialize + Clone + k8s_openapi::Metadata<Ty = crate::api::meta::ObjectMeta>,
    {
        let Some(n) = object_name(kind, ns, name) else {
            return;
        };
        match obj {
            Some(o) => {
                let mut o = o.clone();
                o.metadata_mut().resource_version = None;
                o.metadata_mut().managed_fields = None;
                self.put(n, &o);
            }
            None => self.remove(&n),
        }
    }

    pub fn tokens<T: DeserializeOwned>(&self) -> Option<T> {
        self.read_json(TOKENS)
    }

    pub fn save_tokens<T: Serialize>(&self, t: &T) {
        self.put(TOKENS.into(), t);
    }

    pub fn services<T: DeserializeOwned>(&self) -> Option<T> {
        self.read_json(SERVICES)
    }

    pub fn save_services<T: Serialize>(&self, s: &T) {
        self.put(SERVICES.into(), s);
    }

    /// Writes what is queued (one file at a time, in the blocking pool).
    pub async fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        for (name, plain) in batch {
            let path = self.dir.join(&name);
            let res = match plain {
                Some(plain) => match encode(&name, &plain, &self.key) {
                    Ok(frame) => {
                        let p = path.clone();
                        self.writes.set(self.writes.get() + 1);
                        crate::rt::unblock(move || crate::util::fs::write_atomic(&p, &frame)).await
                    }
                    Err(e) => Err(e),
                },
                None => {
                    let p = path.clone();
                    crate::rt::unblock(move || match std::fs::remove_file(&p) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            Err(anyhow::Error::from(e))
                        }
                        _ => Ok(()),
                    })
                    .await
                }
            };
            if let Err(e) = res {
                log::warn!("offline state: {}: {e:#}", path.display());
                // Not on disk as believed: the next change writes again.
                self.on_disk.borrow_mut().remove(&name);
            }
        }
    }

    /// Writes every change until its task is dropped.
    pub async fn writer(self: Rc<Self>) {
        while self.wake_rx.recv().await.is_ok() {
            self.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("picolet-offline-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn key() -> aead::LessSafeKey {
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &[7; 32]).unwrap())
    }

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("p-{uid}"), "namespace": "default", "uid": uid,
                         "resourceVersion": "17"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n"},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[test]
    fn frames_round_trip_and_catch_damage() {
        let k = key();
        let f = encode("pods/u1", b"{\"a\":1}", &k).unwrap();
        assert!(f.starts_with(b"picolet-offline/1 plain 7 "));
        assert_eq!(decode("pods/u1", &f, &k).unwrap(), b"{\"a\":1}");
        // Every cut of the frame is refused: a power cut never yields a
        // half-read entry.
        for n in 0..f.len() {
            assert!(decode("pods/u1", &f[..n], &k).is_err(), "cut at {n}");
        }
        // A flipped byte in the body.
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            decode("pods/u1", &bad, &k).unwrap_err(),
            "checksum mismatch"
        );
        assert!(decode("pods/u1", b"", &k).is_err());
        assert!(decode("pods/u1", b"garbage\n{}", &k).is_err());
    }

    #[test]
    fn secrets_are_sealed_with_the_node_key() {
        let k = key();
        let f = encode("secrets/ns_s", b"top-secret", &k).unwrap();
        assert!(!f.windows(10).any(|w| w == b"top-secret"));
        assert_eq!(decode("secrets/ns_s", &f, &k).unwrap(), b"top-secret");
        // Another key, another entry's name, a plain frame where a sealed
        // one belongs: all refused.
        let other = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &[8; 32]).unwrap(),
        );
        assert!(decode("secrets/ns_s", &f, &other).is_err());
        assert!(decode("secrets/ns_t", &f, &k).is_err());
        let plain = encode("pods/x", b"top-secret", &k).unwrap();
        assert!(decode("secrets/ns_s", &plain, &k).is_err());
        // Cut anywhere: refused.
        for n in 0..f.len() {
            assert!(decode("secrets/ns_s", &f[..n], &k).is_err());
        }
    }

    #[test]
    fn pods_survive_a_restart_and_are_written_only_when_changed() {
        let d = tmp("pods");
        crate::rt::block_on(async {
            let s = OfflineStore::open(&d).unwrap();
            s.replace_pods([pod("u1"), pod("u2")].iter());
            s.flush().await;
            assert_eq!(s.writes.get(), 2);
            // Only the status and resourceVersion differ: nothing written.
            let mut p = pod("u1");
            p.status.as_mut().unwrap().phase = Some("Pending".into());
            p.metadata.resource_version = Some("99".into());
            s.save_pod(&p);
            s.flush().await;
            assert_eq!(s.writes.get(), 2);
            // A finished pod is not kept.
            p.status.as_mut().unwrap().phase = Some("Succeeded".into());
            s.save_pod(&p);
            s.flush().await;
        });
        // A new process: the same pods, without status.
        let s = OfflineStore::open(&d).unwrap();
        let pods = s.pods();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].metadata.uid.as_deref(), Some("u2"));
        assert!(pods[0].status.is_none());
        assert!(pods[0].metadata.resource_version.is_none());
        // Same content after a restart: not written again.
        s.save_pod(&pod("u2"));
        assert!(s.pending.borrow().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_or_corrupt_pod_file_is_ignored_not_run() {
        let d = tmp("torn");
        crate::rt::block_on(async {
            let s = OfflineStore::open(&d).unwrap();
            s.replace_pods([pod("u1"), pod("u2"), pod("u3")].iter());
            s.flush().await;
        });
        let dir = d.join(OFFLINE_DIR).join(PODS);
        // u1 cut short (a power cut on a file system without ordered
        // writes), u2 with a flipped byte, and a temp file left behind.
        let f = std::fs::read(dir.join("u1")).unwrap();
        std::fs::write(dir.join("u1"), &f[..f.len() / 2]).unwrap();
        let mut f = std::fs::read(dir.join("u2")).unwrap();
        let n = f.len() - 3;
        f[n] ^= 0x20;
        std::fs::write(dir.join("u2"), &f).unwrap();
        std::fs::write(dir.join(".u3.tmp.1"), b"half").unwrap();
        // A valid frame holding a pod filed under another UID.
        let s = OfflineStore::open(&d).unwrap();
        let frame = encode("pods/u9", &serde_json::to_vec(&pod("u3")).unwrap(), &s.key).unwrap();
        std::fs::write(dir.join("u9"), frame).unwrap();
        let s = OfflineStore::open(&d).unwrap();
        let uids: Vec<_> = s
            .pods()
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect();
        assert_eq!(uids, vec!["u3".to_string()]);
        assert!(!dir.join(".u3.tmp.1").exists());
        // The API's list replaces them all, bad files included.
        crate::rt::block_on(async {
            s.replace_pods([pod("u3")].iter());
            s.flush().await;
        });
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec!["u3".to_string()]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn objects_and_the_key_survive_a_restart() {
        let d = tmp("objects");
        let secret: crate::api::core::Secret = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "5"},
            "data": {"password": "c2VjcmV0"}
        }))
        .unwrap();
        crate::rt::block_on(async {
            let s = OfflineStore::open(&d).unwrap();
            s.save_object(SECRETS, "ns", "s", Some(&secret));
            s.save_object::<crate::api::core::Secret>(SECRETS, "ns", "../x", Some(&secret));
            s.flush().await;
            assert_eq!(s.writes.get(), 1);
        });
        let raw = std::fs::read(d.join(OFFLINE_DIR).join("secrets/ns_s")).unwrap();
        assert!(!raw.windows(8).any(|w| w == b"c2VjcmV0"));
        let mode = std::fs::metadata(d.join(KEY_FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let s = OfflineStore::open(&d).unwrap();
        let back: crate::api::core::Secret = s.object(SECRETS, "ns", "s").unwrap();
        assert_eq!(back.data, secret.data);
        // A damaged key: the secret is unreadable, ignored, no crash.
        std::fs::write(d.join(KEY_FILE), b"short").unwrap();
        let s = OfflineStore::open(&d).unwrap();
        assert!(s
            .object::<crate::api::core::Secret>(SECRETS, "ns", "s")
            .is_none());
        crate::rt::block_on(async {
            s.save_object::<crate::api::core::Secret>(SECRETS, "ns", "s", None);
            s.flush().await;
        });
        assert!(!d.join(OFFLINE_DIR).join("secrets/ns_s").exists());
        crate::rt::block_on(async {
            s.save_object(SECRETS, "ns", "s", Some(&secret));
            s.save_object(SECRETS, "ns", "t", Some(&secret));
            s.flush().await;
            let keep = ["secrets/ns_t".to_string()].into_iter().collect();
            s.retain_objects(&keep);
            s.flush().await;
        });
        assert!(!d.join(OFFLINE_DIR).join("secrets/ns_s").exists());
        assert!(d.join(OFFLINE_DIR).join("secrets/ns_t").exists());
        OfflineStore::remove_all(&d);
        assert!(!d.join(OFFLINE_DIR).exists() && !d.join(KEY_FILE).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
