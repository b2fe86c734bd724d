//! The content store under `<root-dir>/images`:
//!
//! ```text
//! blobs/sha256/<hex>         verified blobs (manifests, configs, layers), by digest
//! ingest/<hex>.partial       a download in progress (kept for resuming), guarded by
//! ingest/<hex>.lock          an flock: one writer per blob across processes
//! snapshots/<hex>/fs         a layer unpacked, keyed by its diffID
//! snapshots/.tmp-<hex>       an unpack in progress, guarded by snapshots/.lock-<hex>
//! records/<id-hex>.json      image records, written last (nothing partial is an image)
//! lock                       shared by pulls/imports, exclusive for rm/prune/GC
//! records.lock               serialises record updates (tag moves)
//! ```
//!
//! The reference -> image id index is the set of records (each lists its
//! tags and digests); a tag moved to a new image is removed from the old one
//! under `records.lock`.

use super::registry::Descriptor;
use super::Image;
use anyhow::{bail, Context, Result};
use futures_lite::AsyncWriteExt;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
    )
}

pub use crate::util::hex;

/// The hex part of a `sha256:` digest, validated (safe as a file name).
pub fn digest_hex(d: &str) -> Result<&str> {
    super::reference::check_digest(d)?;
    Ok(&d[7..])
}

/// Checks size and sha256 of in-memory content.
pub fn verify_bytes(b: &[u8], digest: &str, size: u64) -> Result<()> {
    if b.len() as u64 != size {
        bail!(
            "size mismatch for {digest}: expected {size} bytes, got {}",
            b.len()
        );
    }
    let got = sha256_digest(b);
    if got != digest {
        bail!("digest mismatch: expected {digest}, got {got}");
    }
    Ok(())
}

/// Adds "disk full" to ENOSPC errors so the cause is obvious.
pub fn io_err(e: io::Error, what: impl std::fmt::Display) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        anyhow::anyhow!("{what}: disk full (no space left on device)")
    } else {
        anyhow::Error::new(e).context(what.to_string())
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An image record: what the store knows about one image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub image: Image,
    /// Digest of the manifest pulled or imported (empty for `docker save` archives).
    #[serde(default)]
    pub manifest_digest: String,
    /// Compressed layers, bottom first (diffIDs are in `image.diff_ids`).
    pub layers: Vec<Descriptor>,
    /// Unix seconds when the image first appeared in the store.
    pub created: u64,
    /// Unix seconds of the last use (pull, rootfs mount, seen in use by GC).
    pub last_used: u64,
}

impl Record {
    /// Blobs this image needs kept.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.image.id.as_str())
            .chain((!self.manifest_digest.is_empty()).then_some(self.manifest_digest.as_str()))
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }
}

/// An flock held until dropped.
pub struct Lock {
    _file: File,
}

/// Tries to lock `path` (created if needed); `None` when someone else holds it.
pub fn try_lock(path: &Path, exclusive: bool) -> Result<Option<Lock>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open lock {}", path.display()))?;
    let op = if exclusive {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockShared
    };
    match rustix::fs::flock(f.as_fd(), op) {
        Ok(()) => Ok(Some(Lock { _file: f })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}

/// Waits for a lock without blocking the executor (polls; also works between
/// two locks of this same process, which a blocking flock would deadlock).
pub async fn lock(path: &Path, exclusive: bool) -> Result<Lock> {
    let mut logged = false;
    loop {
        if let Some(l) = try_lock(path, exclusive)? {
            return Ok(l);
        }
        if !logged {
            log::debug!("waiting for lock {}", path.display());
            logged = true;
        }
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

/// Blocking variant for code on the blocking pool.
pub fn lock_blocking(path: &Path) -> Result<Lock> {
    loop {
        if let Some(l) = try_lock(path, true)? {
            return Ok(l);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["blobs/sha256", "ingest", "snapshots", "records"] {
            let p = root.join(d);
            fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        }
        Ok(Store { root: root.into() })
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    pub fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let mut f = File::open(&p).with_context(|| format!("open blob {}", p.display()))?;
        let mut v = Vec::new();
        f.by_ref()
            .take(limit + 1)
            .read_to_end(&mut v)
            .with_context(|| format!("read blob {}", p.display()))?;
        if v.len() as u64 > limit {
            bail!("blob {digest} larger than {limit} bytes");
        }
        Ok(v)
    }

    /// The first bytes of a blob (to sniff its compression).
    pub fn read_blob_head(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let mut f = File::open(&p).with_context(|| format!("open blob {}", p.display()))?;
        let mut v = vec![0u8; 8];
        let n = f
            .read(&mut v)
            .with_context(|| format!("read blob {}", p.display()))?;
        v.truncate(n);
        Ok(v)
    }

    /// Stores small verified content (manifests, configs) atomically.
    pub fn put_blob_bytes(&self, digest: &str, b: &[u8]) -> Result<()> {
        verify_bytes(b, digest, b.len() as u64)?;
        if self.has_blob(digest) {
            return Ok(());
        }
        crate::util::fs::write_atomic(&self.blob_path(digest)?, b)
            .map_err(|e| anyhow::anyhow!("store blob {digest}: {e:#}"))
    }

    pub fn snapshot_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("snapshots").join(digest_hex(diff_id)?))
    }

    /// The unpacked tree of a layer (`snapshots/<hex>/fs`).
    pub fn snapshot_fs(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.snapshot_dir(diff_id)?.join("fs"))
    }

    pub fn has_snapshot(&self, diff_id: &str) -> bool {
        self.snapshot_fs(diff_id).is_ok_and(|p| p.is_dir())
    }

    /// Pulls and imports hold this shared; rm, prune and GC exclusive.
    pub async fn lock_store(&self, exclusive: bool) -> Result<Lock> {
        lock(&self.root.join("lock"), exclusive).await
    }

    pub async fn lock_records(&self) -> Result<Lock> {
        lock(&self.root.join("records.lock"), true).await
    }

    fn record_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("records")
            .join(format!("{}.json", digest_hex(id)?)))
    }

    pub fn records(&self) -> Result<Vec<Record>> {
        let dir = self.root.join("records");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let p = e.with_context(|| format!("read {}", dir.display()))?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let b = match fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
            };
            match serde_json::from_slice::<Record>(&b) {
                Ok(r) => out.push(r),
                Err(e) => log::warn!("image record {}: {e}; ignored", p.display()),
            }
        }
        out.sort_by(|a, b| a.image.id.cmp(&b.image.id));
        Ok(out)
    }

    pub fn record(&self, id: &str) -> Result<Option<Record>> {
        match crate::util::fs::read_optional(&self.record_path(id)?)? {
            None => Ok(None),
            Some(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("image record {id}"))?,
            )),
        }
    }

    pub fn write_record(&self, r: &Record) -> Result<()> {
        let b = serde_json::to_vec_pretty(r).context("encode image record")?;
        crate::util::fs::write_atomic(&self.record_path(&r.image.id)?, &b)
            .map_err(|e| anyhow::anyhow!("write image record {}: {e:#}", r.image.id))
    }

    pub fn remove_record(&self, id: &str) -> Result<()> {
        let p = self.record_path(id)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", p.display())),
        }
    }

    /// Deletes blobs and snapshots no record references, and leftovers of
    /// interrupted downloads/unpacks nobody holds. Call with the store lock
    /// held exclusively. Returns the bytes freed (apparent sizes of blobs).
    pub fn sweep(&self) -> Result<u64> {
        let recs = self.records()?;
        let mut blobs: HashSet<String> = HashSet::new();
        let mut snaps: HashSet<String> = HashSet::new();
        for r in &recs {
            blobs.extend(
                r.blobs()
                    .filter_map(|d| digest_hex(d).ok())
                    .map(String::from),
            );
            snaps.extend(
                r.image
                    .diff_ids
                    .iter()
                    .filter_map(|d| digest_hex(d).ok())
                    .map(String::from),
            );
        }
        let mut freed = 0;
        let bdir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&bdir).with_context(|| format!("read {}", bdir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                freed += e.metadata().map_or(0, |m| m.len());
                fs::remove_file(e.path())
                    .with_context(|| format!("remove {}", e.path().display()))?;
            }
        }
        let idir = self.root.join("ingest");
        for e in fs::read_dir(&idir).with_context(|| format!("read {}", idir.display()))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "lock") {
                if let Some(_l) = try_lock(&p, true)? {
                    let _ = fs::remove_file(p.with_extension("partial"));
                    let _ = fs::remove_file(&p);
                }
            }
        }
        let sdir = self.root.join("snapshots");
        for e in fs::read_dir(&sdir).with_context(|| format!("read {}", sdir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(h) = name.strip_prefix(".tmp-") {
                if let Some(_l) = try_lock(&sdir.join(format!(".lock-{h}")), true)? {
                    remove_tree(&e.path())?;
                }
            } else if name.starts_with(".del-") {
                remove_tree(&e.path())?;
            } else if !name.starts_with('.') && !snaps.contains(&name) {
                let del = sdir.join(format!(".del-{name}"));
                fs::rename(e.path(), &del)
                    .with_context(|| format!("remove snapshot {}", e.path().display()))?;
                remove_tree(&del)?;
            }
        }
        Ok(freed)
    }

    /// Starts or resumes writing a blob. `None` when it is already stored.
    pub async fn ingest(&self, digest: &str, size: u64) -> Result<Option<Ingest>> {
        let hexd = digest_hex(digest)?.to_string();
        if self.has_blob(digest) {
            return Ok(None);
        }
        let lock_path = self.root.join("ingest").join(format!("{hexd}.lock"));
        let l = lock(&lock_path, true).await?;
        if self.has_blob(digest) {
            return Ok(None); // another writer finished while we waited
        }
        let partial = self.root.join("ingest").join(format!("{hexd}.partial"));
        let p2 = partial.clone();
        let (file, ctx, offset) = crate::rt::unblock(move || -> Result<_> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .append(true)
                .open(&p2)
                .with_context(|| format!("open {}", p2.display()))?;
            // Re-hash what an interrupted download left, to resume after it.
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 64 << 10];
            let mut n = 0u64;
            loop {
                let k = f
                    .read(&mut buf)
                    .with_context(|| format!("read {}", p2.display()))?;
                if k == 0 {
                    break;
                }
                ctx.update(&buf[..k]);
                n += k as u64;
            }
            Ok((f, ctx, n))
        })
        .await?;
        let mut ing = Ingest {
            digest: digest.to_string(),
            size,
            blob: self.blob_path(digest)?,
            partial,
            file: Some(smol::Unblock::with_capacity(256 << 10, file)),
            ctx,
            offset,
            _lock: l,
            lock_path,
        };
        if ing.offset > size {
            ing.reset().await?;
        }
        Ok(Some(ing))
    }
}

/// Removes a tree that may hold read-only dirs (as root that still works).
pub fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", p.display())),
    }
}

/// A blob being written: hashed while streaming, renamed into place only
/// when size and digest match.
pub struct Ingest {
    pub digest: String,
    pub size: u64,
    blob: PathBuf,
    partial: PathBuf,
    file: Option<smol::Unblock<File>>,
    ctx: ring::digest::Context,
    /// Bytes already written (a resumed download starts here).
    pub offset: u64,
    _lock: Lock,
    lock_path: PathBuf,
}

impl Ingest {
    fn file(&mut self) -> Result<&mut smol::Unblock<File>> {
        self.file.as_mut().context("ingest already committed")
    }

    /// Drops what was written (the server ignored our Range).
    pub async fn reset(&mut self) -> Result<()> {
        let p = self.partial.clone();
        let f = self.file()?;
        f.flush().await.map_err(|e| io_err(e, p.display()))?;
        f.get_mut()
            .await
            .set_len(0)
            .with_context(|| format!("truncate {}", p.display()))?;
        self.ctx = ring::digest::Context::new(&ring::digest::SHA256);
        self.offset = 0;
        Ok(())
    }

    pub async fn write(&mut self, b: &[u8]) -> Result<()> {
        if self.offset + b.len() as u64 > self.size {
            bail!(
                "blob {} is larger than its declared {} bytes",
                self.digest,
                self.size
            );
        }
        self.ctx.update(b);
        let what = format!("write {}", self.partial.display());
        self.file()?
            .write_all(b)
            .await
            .map_err(|e| io_err(e, what))?;
        self.offset += b.len() as u64;
        Ok(())
    }

    /// Pushes buffered bytes to the file (so a later resume finds them).
    pub async fn flush(&mut self) -> Result<()> {
        let what = format!("write {}", self.partial.display());
        self.file()?.flush().await.map_err(|e| io_err(e, what))
    }

    /// Verifies, fsyncs and renames into `blobs/`. A mismatch deletes the
    /// partial file so the next attempt starts clean.
    pub async fn commit(mut self) -> Result<()> {
        let mut f = self.file.take().context("ingest already committed")?;
        let what = format!("write {}", self.partial.display());
        f.flush().await.map_err(|e| io_err(e, &what))?;
        let f = f.into_inner().await;
        let got = format!("sha256:{}", hex(self.ctx.clone().finish().as_ref()));
        if self.offset != self.size || got != self.digest {
            let _ = fs::remove_file(&self.partial);
            if self.offset != self.size {
                bail!(
                    "size mismatch for {}: expected {} bytes, got {}",
                    self.digest,
                    self.size,
                    self.offset
                );
            }
            bail!("digest mismatch: expected {}, got {got}", self.digest);
        }
        let (partial, blob, lock_path) = (
            self.partial.clone(),
            self.blob.clone(),
            self.lock_path.clone(),
        );
        crate::rt::unblock(move || -> Result<()> {
            f.sync_all()
                .map_err(|e| io_err(e, format!("fsync {}", partial.display())))?;
            drop(f);
            fs::rename(&partial, &blob).with_context(|| format!("rename to {}", blob.display()))?;
            if let Some(d) = blob.parent() {
                crate::util::fs::sync_dir(d)?;
            }
            // Waiters re-check for the blob after they get the lock.
            let _ = fs::remove_file(&lock_path);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(verify_bytes(b"", &sha256_digest(b""), 0).is_ok());
        assert!(verify_bytes(b"x", &sha256_digest(b""), 1).is_err());
        assert!(digest_hex("sha256:../../etc").is_err());
    }

    #[test]
    fn ingest_resumes_and_verifies() {
        let d = std::env::temp_dir().join(format!("picolet-store-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let s = Store::open(&d).unwrap();
        let data = vec![7u8; 300_000];
        let dg = sha256_digest(&data);
        crate::rt::block_on(async {
            let mut i = s.ingest(&dg, data.len() as u64).await.unwrap().unwrap();
            i.write(&data[..1000]).await.unwrap();
            i.flush().await.unwrap();
            drop(i); // interrupted: the partial file stays
            let mut i = s.ingest(&dg, data.len() as u64).await.unwrap().unwrap();
            assert_eq!(i.offset, 1000);
            i.write(&data[1000..]).await.unwrap();
            i.commit().await.unwrap();
            assert!(s.has_blob(&dg));
            assert!(s.ingest(&dg, 1).await.unwrap().is_none());
            // wrong content is rejected and leaves nothing
            let other = sha256_digest(b"other");
            let mut i = s.ingest(&other, 5).await.unwrap().unwrap();
            i.write(b"othex").await.unwrap();
            assert!(i
                .commit()
                .await
                .unwrap_err()
                .to_string()
                .contains("digest mismatch"));
            assert!(!s.has_blob(&other));
            let mut i = s.ingest(&other, 2).await.unwrap().unwrap();
            assert!(i.write(b"abc").await.is_err());
        });
        fs::remove_dir_all(&d).unwrap();
    }
}
