//! The image service: references, registry pulls, the content store, layer
//! snapshots and the rootfs overlay given to the runtime.
//!
//! The types below are the contract the runtime and the kubelet side use.
//! `ImageService` is single-threaded (`&self` methods, interior state); share
//! it as `Rc<ImageService>`. Concurrent pulls of one reference in one process
//! share a single download; other processes (e.g. `picolet images pull` next
//! to `picolet run`) are kept consistent by file locks in the store.

pub mod auth;
mod import;
pub mod policy;
mod pull;
pub mod reference;
pub mod registries;
pub mod registry;
pub mod store;
pub mod unpack;

pub use policy::{pull_decision, ImageError, PullDecision, PullPolicy};

use crate::config::Config;
use anyhow::{bail, Context, Result};
use reference::Reference;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
use store::{Record, Store};

/// How stale an image's recorded last use may get before a use rewrites
/// its record (what a restarted picolet orders GC by: an hour is plenty).
pub const USE_GRANULARITY: Duration = Duration::from_secs(3600);

/// The parts of an image's config the runtime needs (OCI image config
/// `config` object; Docker images use the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `USER`: "uid", "uid:gid", "name", "name:group" or empty.
    pub user: String,
    /// `ExposedPorts` keys, e.g. "8080/tcp".
    pub exposed_ports: Vec<String>,
    /// `Env`: "KEY=value" entries.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`, e.g. "SIGQUIT".
    pub stop_signal: Option<String>,
}

/// An image present in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<config digest>`: the image id, as CRI and `imageID` report it.
    pub id: String,
    /// Normalised references that name this image, e.g.
    /// `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// `repo@sha256:<manifest digest>` for each repository it was pulled from.
    pub repo_digests: Vec<String>,
    /// Compressed size of the layers plus config, bytes.
    pub size: u64,
    pub config: ImageConfig,
    /// Uncompressed layer digests (`rootfs.diff_ids`), bottom first.
    pub diff_ids: Vec<String>,
}

/// A mount for the container's rootfs (containerd `Mount` shape): give it to
/// the shim in `CreateTaskRequest.rootfs`, or mount it yourself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// `overlay`
    pub fstype: String,
    /// `overlay`
    pub source: String,
    /// `lowerdir=TOP:...:BOTTOM`, `upperdir=`, `workdir=`, `index=off`.
    pub options: Vec<String>,
}

/// Disk usage of the filesystem holding the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    /// Sum of the images' (compressed) sizes.
    pub images_bytes: u64,
}

/// What a GC or prune run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed: Vec<String>,
    /// Bytes that became available on the filesystem.
    pub freed_bytes: u64,
}

/// Image GC settings (KubeletConfiguration `imageGC*`, `imageMinimumGCAge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
}

/// The parsed image config blob (the parts we read).
#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RawConfig>,
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

/// Parses an image config blob: the runtime view and the diffIDs.
fn parse_config(b: &[u8]) -> Result<(ImageConfig, Vec<String>)> {
    let c: ConfigFile = serde_json::from_slice(b).context("invalid image config")?;
    let r = c.config.unwrap_or_default();
    for d in &c.rootfs.diff_ids {
        reference::check_digest(d).with_context(|| format!("image config diff_id {d:?}"))?;
    }
    Ok((
        ImageConfig {
            user: r.user.unwrap_or_default(),
            exposed_ports: r.exposed_ports.unwrap_or_default().into_keys().collect(),
            env: r.env.unwrap_or_default(),
            entrypoint: r.entrypoint.unwrap_or_default(),
            cmd: r.cmd.unwrap_or_default(),
            working_dir: r.working_dir.unwrap_or_default(),
            labels: r.labels.unwrap_or_default(),
            stop_signal: r.stop_signal.filter(|s| !s.is_empty()),
        },
        c.rootfs.diff_ids,
    ))
}

type InFlight = Rc<smol::lock::OnceCell<Result<Image, String>>>;

/// Removes an in-flight entry when its pull ends or is dropped.
struct InFlightGuard<'a> {
    map: &'a RefCell<HashMap<String, InFlight>>,
    key: String,
    cell: InFlight,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.map.borrow_mut().remove(&self.key);
        if self.cell.get().is_none() {
            // Nobody else initialises this cell, so this never blocks.
            let _ = self
                .cell
                .set_blocking(Err(format!("pull {}: cancelled", self.key)));
        }
    }
}

/// The image service of one picolet root.
pub struct ImageService {
    store: Store,
    import_dir: PathBuf,
    registries: registries::RegistriesConfig,
    docker: auth::DockerConfig,
    auth: Rc<registry::AuthState>,
    retry: registry::RetryPolicy,
    gc: GcPolicy,
    inflight: RefCell<HashMap<String, InFlight>>,
    /// Last uses seen by this process (unix s), finer than the records
    /// (written at most every [`USE_GRANULARITY`]); GC orders by the later.
    uses: RefCell<HashMap<String, u64>>,
}

impl ImageService {
    /// Opens (creating) the store under `Config::images_dir()` and reads the
    /// registries and docker credentials files named in the config.
    pub fn open(cfg: &Config) -> Result<ImageService> {
        let p = &cfg.kubelet.picolet;
        let store = Store::open(&cfg.images_dir())?;
        Ok(ImageService {
            store,
            import_dir: cfg.import_dir(),
            registries: registries::RegistriesConfig::load(&p.registries_config)?,
            docker: auth::DockerConfig::load(&p.docker_config)?,
            auth: Rc::default(),
            retry: registry::RetryPolicy::default(),
            gc: GcPolicy {
                high_percent: cfg.kubelet.image_gc_high_threshold_percent,
                low_percent: cfg.kubelet.image_gc_low_threshold_percent,
                min_age: cfg.kubelet.image_minimum_gc_age,
            },
            inflight: RefCell::default(),
            uses: RefCell::default(),
        })
    }

    /// Changes the retry policy (attempts, back-off base).
    pub fn set_retry_policy(&mut self, attempts: u32, base: Duration) {
        self.retry = registry::RetryPolicy {
            attempts: attempts.max(1),
            base,
        };
    }

    /// The store directory (`<root-dir>/images`).
    pub fn root(&self) -> &Path {
        &self.store.root
    }

    /// Pulls an image (or joins a pull of the same reference already running
    /// in this process). Errors name the reference and the cause.
    pub async fn pull(&self, image: &str) -> Result<Image> {
        self.pull_with(image, &[]).await
    }

    /// Pulls with a pod's pull secrets, as upstream's keyring: every
    /// credential the secrets hold for the registry, in order, then
    /// picolet's own (the docker config), each tried until one pull
    /// succeeds; no credential at all pulls anonymously. Credentials from
    /// registries.yaml for an endpoint still win on that endpoint.
    pub async fn pull_with(&self, image: &str, secrets: &[auth::DockerConfig]) -> Result<Image> {
        let r = Reference::parse(image)
            .map_err(|e| anyhow::anyhow!("pull {image:?}: invalid reference: {e:#}"))?;
        let candidates = auth::pull_candidates(secrets, &self.docker, &r.domain);
        let mut errors = Vec::new();
        for creds in candidates {
            match self.pull_once(&r, creds).await {
                Ok(i) => return Ok(i),
                Err(e) => errors.push(e),
            }
        }
        Err(match errors.len() {
            1 => errors.remove(0),
            _ => anyhow::anyhow!(
                "{}",
                errors
                    .iter()
                    .map(|e| format!("{e:#}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        })
    }

    async fn pull_once(&self, r: &Reference, creds: Option<auth::Credentials>) -> Result<Image> {
        let key = r.to_string();
        // Pulls with other credentials must not join this one.
        let slot = match &creds {
            Some(c) => format!("{key}\n{}", c.fingerprint()),
            None => key.clone(),
        };
        let existing = self.inflight.borrow().get(&slot).cloned();
        if let Some(cell) = existing {
            log::info!("pull {key}: joining the pull already in progress");
            return cell.wait().await.clone().map_err(anyhow::Error::msg);
        }
        let cell: InFlight = Rc::default();
        self.inflight
            .borrow_mut()
            .insert(slot.clone(), cell.clone());
        // If this future is dropped mid-pull, waiters get an error and the
        // next pull starts afresh (partial downloads stay for resuming).
        let guard = InFlightGuard {
            map: &self.inflight,
            key: slot,
            cell: cell.clone(),
        };
        let res = pull::pull(self, r, creds)
            .await
            .map_err(|e| format!("pull {key}: {e:#}"));
        let _ = cell.set(res.clone()).await;
        drop(guard);
        res.map_err(anyhow::Error::msg)
    }

    /// An image by reference (`busybox`, `repo@sha256:...`) or id (full,
    /// `sha256:`-prefixed or a unique hex prefix of 12+ characters).
    pub fn get(&self, reference_or_id: &str) -> Result<Option<Image>> {
        Ok(self.find(reference_or_id)?.map(|(r, _)| r.image))
    }

    /// Every image in the store.
    /// Changes whenever an image is added or removed (the records
    /// directory's mtime), so callers can cache what they derive from
    /// [`list`](Self::list).
    pub fn records_version(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.store.root.join("records"))
            .and_then(|m| m.modified())
            .ok()
    }

    pub fn list(&self) -> Result<Vec<Image>> {
        Ok(self.store.records()?.into_iter().map(|r| r.image).collect())
    }

    /// Finds a record; the flag says whether `s` matched by tag.
    fn find(&self, s: &str) -> Result<Option<(Record, Option<String>)>> {
        let recs = self.store.records()?;
        let h = s.strip_prefix("sha256:").unwrap_or(s);
        if h.len() >= 12 && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            let m: Vec<&Record> = recs
                .iter()
                .filter(|r| r.image.id[7..].starts_with(&h.to_ascii_lowercase()))
                .collect();
            if m.len() == 1 {
                return Ok(Some((m[0].clone(), None)));
            }
            if m.len() > 1 {
                bail!("image id prefix {s:?} is ambiguous");
            }
        }
        let Ok(r) = Reference::parse(s) else {
            return Ok(None);
        };
        if let Some(d) = &r.digest {
            let rd = format!("{}@{d}", r.name());
            return Ok(recs
                .into_iter()
                .find(|x| x.image.repo_digests.contains(&rd))
                .map(|x| (x, None)));
        }
        let tag = r.tagged().unwrap_or_default();
        Ok(recs
            .into_iter()
            .find(|x| x.image.repo_tags.contains(&tag))
            .map(|x| (x, Some(tag))))
    }

    /// Removes an image. By tag, only that tag goes when the image has
    /// others; by id, the image and all its names. Unreferenced blobs and
    /// snapshots are deleted.
    pub async fn remove(&self, reference_or_id: &str) -> Result<()> {
        let _l = self.store.lock_store(true).await?;
        let _r = self.store.lock_records().await?;
        let (mut rec, by_tag) = self
            .find(reference_or_id)?
            .with_context(|| format!("image {reference_or_id:?} not found"))?;
        match by_tag {
            Some(tag) if rec.image.repo_tags.len() > 1 => {
                rec.image.repo_tags.retain(|t| *t != tag);
                self.store.write_record(&rec)?;
                log::info!("untagged {tag}");
            }
            _ => {
                self.store.remove_record(&rec.image.id)?;
                log::info!("removed image {}", rec.image.id);
            }
        }
        self.store.sweep()?;
        Ok(())
    }

    /// Removes images without tags (left behind when a tag moved) and any
    /// unreferenced blobs, snapshots and leftovers of interrupted work.
    pub async fn prune(&self) -> Result<GcReport> {
        let _l = self.store.lock_store(true).await?;
        let _r = self.store.lock_records().await?;
        let before = self.statvfs()?.available_bytes;
        let mut removed = Vec::new();
        for r in self.store.records()? {
            if r.image.repo_tags.is_empty() {
                self.store.remove_record(&r.image.id)?;
                removed.push(r.image.id);
            }
        }
        self.store.sweep()?;
        let after = self.statvfs()?.available_bytes;
        Ok(GcReport {
            removed,
            freed_bytes: after.saturating_sub(before),
        })
    }

    /// Imports an OCI image-layout tarball or a `docker save` archive
    /// (optionally gzip-compressed). Returns the images it held.
    pub async fn import(&self, path: &Path) -> Result<Vec<Image>> {
        import::import(self, path)
            .await
            .with_context(|| format!("import {}", path.display()))
    }

    /// Imports every tarball in `Config::import_dir()` not imported before
    /// (remembered by name, size and mtime). Errors of one file are logged
    /// and do not stop the others.
    pub async fn import_dir(&self) -> Result<Vec<Image>> {
        import::import_dir(self, &self.import_dir).await
    }

    /// The overlay mount for a container of `image_id`: lower = the image's
    /// snapshots (topmost first), upper/work created under `container_dir`.
    pub fn rootfs_mount(&self, image_id: &str, container_dir: &Path) -> Result<RootfsMount> {
        let rec = self
            .store
            .record(image_id)?
            .with_context(|| format!("image {image_id} not found"))?;
        if rec.image.diff_ids.is_empty() {
            bail!("image {image_id} has no layers");
        }
        let mut lowers = Vec::new();
        for d in rec.image.diff_ids.iter().rev() {
            let p = self.store.snapshot_fs(d)?;
            if !p.is_dir() {
                bail!("image {image_id}: snapshot of layer {d} is missing; pull the image again");
            }
            lowers.push(p.to_string_lossy().into_owned());
        }
        let (upper, work) = (container_dir.join("fs"), container_dir.join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        self.touch(image_id);
        Ok(RootfsMount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", lowers.join(":")),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
                "index=off".into(),
            ],
        })
    }

    /// Records a use of the image (GC removes the least recently used first).
    /// The exact time stays in memory for GC's order; the record is only
    /// rewritten when its time is older than [`USE_GRANULARITY`] (flash
    /// storage is spared a rewrite per in-use image every GC period).
    /// Advisory: skipped when another writer holds the records lock.
    fn touch(&self, id: &str) {
        let now = store::now_unix();
        self.uses.borrow_mut().insert(id.to_string(), now);
        if let Ok(Some(r)) = self.store.record(id) {
            if now.saturating_sub(r.last_used) < USE_GRANULARITY.as_secs() {
                return;
            }
        }
        let Ok(Some(_lock)) = store::try_lock(&self.store.root.join("records.lock"), true) else {
            return;
        };
        if let Ok(Some(mut r)) = self.store.record(id) {
            r.last_used = now;
            if let Err(e) = self.store.write_record(&r) {
                log::warn!("image {id}: cannot record its use: {e:#}");
            }
        }
    }

    fn statvfs(&self) -> Result<FsUsage> {
        let s = rustix::fs::statvfs(&self.store.root)
            .with_context(|| format!("statvfs {}", self.store.root.display()))?;
        let f = s.f_frsize.max(1);
        Ok(FsUsage {
            capacity_bytes: s.f_blocks * f,
            available_bytes: s.f_bavail * f,
            used_bytes: (s.f_blocks - s.f_bfree) * f,
            inodes: s.f_files,
            inodes_free: s.f_ffree,
            images_bytes: 0,
        })
    }

    /// Usage of the filesystem that holds the store (imagefs).
    pub fn fs_usage(&self) -> Result<FsUsage> {
        let mut u = self.statvfs()?;
        u.images_bytes = self.store.records()?.iter().map(|r| r.image.size).sum();
        Ok(u)
    }

    /// Image GC as upstream: when usage reaches the high threshold, remove
    /// images not in use, least recently used first and older than the
    /// minimum age, until usage is below the low threshold. Waits for
    /// running pulls and imports (of any process) to finish first, so run
    /// it as its own task.
    pub async fn garbage_collect(&self, in_use_image_ids: &HashSet<String>) -> Result<GcReport> {
        let now = store::now_unix();
        for id in in_use_image_ids {
            self.touch(id);
        }
        let u = self.statvfs()?;
        let Some(need) = policy::gc_bytes_to_free(
            u.capacity_bytes,
            u.available_bytes,
            self.gc.high_percent,
            self.gc.low_percent,
        ) else {
            return Ok(GcReport::default());
        };
        let _l = self.store.lock_store(true).await?;
        let _r = self.store.lock_records().await?;
        let mut recs = self.store.records()?;
        {
            let uses = self.uses.borrow();
            for r in &mut recs {
                if let Some(t) = uses.get(&r.image.id) {
                    r.last_used = r.last_used.max(*t);
                }
            }
        }
        let order = policy::gc_candidates(&recs, in_use_image_ids, now, self.gc.min_age);
        let target = u.available_bytes + need;
        let mut report = GcReport::default();
        for id in order {
            self.store.remove_record(&id)?;
            self.uses.borrow_mut().remove(&id);
            self.store.sweep()?;
            log::info!("image GC: removed {id}");
            report.removed.push(id);
            if self.statvfs()?.available_bytes >= target {
                break;
            }
        }
        let avail = self.statvfs()?.available_bytes;
        report.freed_bytes = avail.saturating_sub(u.available_bytes);
        if avail < target {
            bail!(
                "Failed to garbage collect required amount of images. Attempted to free {need} bytes, but only freed {} bytes",
                report.freed_bytes
            );
        }
        Ok(report)
    }

    /// Writes (or updates) the record of an image whose blobs and
    /// snapshots are all in place: the last step of a pull or import.
    #[allow(clippy::too_many_arguments)]
    async fn commit_image(
        &self,
        config_digest: &str,
        config: ImageConfig,
        diff_ids: Vec<String>,
        manifest_digest: &str,
        layers: Vec<registry::Descriptor>,
        tags: Vec<String>,
        repo_digests: Vec<String>,
        config_size: u64,
    ) -> Result<Image> {
        let _r = self.store.lock_records().await?;
        let now = store::now_unix();
        let size = config_size + layers.iter().map(|l| l.size).sum::<u64>();
        let mut rec = match self.store.record(config_digest)? {
            Some(r) => r,
            None => Record {
                image: Image {
                    id: config_digest.to_string(),
                    repo_tags: vec![],
                    repo_digests: vec![],
                    size,
                    config,
                    diff_ids,
                },
                manifest_digest: manifest_digest.to_string(),
                layers,
                created: now,
                last_used: now,
            },
        };
        rec.last_used = now;
        for t in &tags {
            if !rec.image.repo_tags.contains(t) {
                rec.image.repo_tags.push(t.clone());
            }
            // The tag moves: no other image keeps it.
            for mut o in self.store.records()? {
                if o.image.id != rec.image.id && o.image.repo_tags.contains(t) {
                    o.image.repo_tags.retain(|x| x != t);
                    self.store.write_record(&o)?;
                }
            }
        }
        for d in repo_digests {
            if !rec.image.repo_digests.contains(&d) {
                rec.image.repo_digests.push(d);
            }
        }
        self.store.write_record(&rec)?;
        Ok(rec.image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_config() {
        let (c, d) = parse_config(
            br#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000",
            "ExposedPorts":{"8080/tcp":{}},"Env":["A=b"],"Entrypoint":["httpd"],"Cmd":null,
            "WorkingDir":"/www","Labels":{"k":"v"},"StopSignal":"SIGQUIT"},
            "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#,
        )
        .unwrap();
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.exposed_ports, vec!["8080/tcp"]);
        assert_eq!(c.entrypoint, vec!["httpd"]);
        assert!(c.cmd.is_empty());
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(d.len(), 1);
        assert!(parse_config(br#"{"rootfs":{"diff_ids":["md5:x"]}}"#).is_err());
        let (c, _) = parse_config(br#"{"rootfs":{"diff_ids":[]}}"#).unwrap();
        assert_eq!(c, ImageConfig::default());
    }
}
