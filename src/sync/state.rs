//! Back-off state on disk (`<root>/state/backoff.json`), so a restarted
//! picolet neither restarts a crash-looping container early nor retries a
//! failing pull at once. Written by one task after each change (the newest
//! state wins, writes never interleave), read once at start-up.

use super::backoff::{Backoff, BackoffEntries, BackoffParams};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub const BACKOFF_FILE: &str = "backoff.json";

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct OnDisk {
    #[serde(default)]
    containers: BackoffEntries,
    #[serde(default)]
    images: BackoffEntries,
}

/// The container restart and image pull back-offs, shared by the workers.
#[derive(Debug)]
pub struct BackoffState {
    pub containers: RefCell<Backoff>,
    pub images: RefCell<Backoff>,
    path: PathBuf,
    dirty: smol::channel::Sender<()>,
    dirty_rx: smol::channel::Receiver<()>,
    /// What the file holds (as last written or read): equal content is not
    /// written again (flash wear).
    on_disk: RefCell<Option<Vec<u8>>>,
}

impl BackoffState {
    /// Reads the state under `state_dir` (absent or unreadable: empty, with
    /// a warning; a corrupt file must not keep picolet from starting).
    pub fn load(state_dir: &Path, params: BackoffParams) -> Rc<BackoffState> {
        let path = state_dir.join(BACKOFF_FILE);
        let disk = match read(&path) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("back-off state: {e:#}; starting with none");
                OnDisk::default()
            }
        };
        // One slot: a pending write covers every later change.
        let (dirty, dirty_rx) = smol::channel::bounded(1);
        Rc::new(BackoffState {
            containers: RefCell::new(Backoff::restore(params, disk.containers)),
            images: RefCell::new(Backoff::restore(params, disk.images)),
            path,
            dirty,
            dirty_rx,
            on_disk: RefCell::new(None),
        })
    }

    /// Notes a change; the writer task saves it soon.
    pub fn changed(&self) {
        let _ = self.dirty.try_send(());
    }

    fn encode(&self) -> Result<Vec<u8>> {
        let d = OnDisk {
            containers: self.containers.borrow().entries().clone(),
            images: self.images.borrow().entries().clone(),
        };
        serde_json::to_vec(&d).context("encode back-off state")
    }

    /// Drops entries older than the reset period (housekeeping).
    pub fn gc(&self, now: jiff::Timestamp) {
        let before = (
            self.containers.borrow().entries().len(),
            self.images.borrow().entries().len(),
        );
        self.containers.borrow_mut().gc(now);
        self.images.borrow_mut().gc(now);
        let after = (
            self.containers.borrow().entries().len(),
            self.images.borrow().entries().len(),
        );
        if before != after {
            self.changed();
        }
    }

    /// Writes the state after every change; runs until its task is dropped.
    pub async fn writer(self: Rc<Self>) {
        while self.dirty_rx.recv().await.is_ok() {
            if let Err(e) = self.save().await {
                log::warn!("back-off state: {e:#}");
            }
        }
    }

    /// Saves now.
    pub async fn save(&self) -> Result<()> {
        let data = self.encode()?;
        if self.on_disk.borrow().as_deref() == Some(&data[..]) {
            return Ok(());
        }
        let path = self.path.clone();
        let written = data.clone();
        crate::rt::unblock(move || crate::util::fs::write_atomic(&path, &data))
            .await
            .with_context(|| format!("write {}", self.path.display()))?;
        *self.on_disk.borrow_mut() = Some(written);
        Ok(())
    }
}

fn read(path: &Path) -> Result<OnDisk> {
    match crate::util::fs::read_optional(path)? {
        None => Ok(OnDisk::default()),
        Some(b) => serde_json::from_slice(&b).with_context(|| format!("parse {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("picolet-backoff-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let params = BackoffParams {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset: Duration::from_secs(600),
        };
        let t = jiff::Timestamp::now();
        crate::rt::block_on(async {
            let s = BackoffState::load(&dir, params);
            s.containers.borrow_mut().next("k", t, t);
            s.containers.borrow_mut().next("k", t, t);
            s.images.borrow_mut().next("img", t, t);
            s.save().await.unwrap();
            // Unchanged: not written again (a rewrite renames a new inode in).
            use std::os::unix::fs::MetadataExt;
            let ino = || std::fs::metadata(dir.join(BACKOFF_FILE)).unwrap().ino();
            let first = ino();
            s.save().await.unwrap();
            assert_eq!(ino(), first);
            s.images.borrow_mut().next("img", t, t);
            s.images.borrow_mut().next("img", t, t);
            s.save().await.unwrap();
            assert_ne!(ino(), first);
        });
        let s = BackoffState::load(&dir, params);
        assert_eq!(s.containers.borrow().get("k"), Duration::from_secs(20));
        assert_eq!(s.images.borrow().get("img"), Duration::from_secs(40));
        // A corrupt file is no reason not to start.
        std::fs::write(dir.join(BACKOFF_FILE), b"{nope").unwrap();
        let s = BackoffState::load(&dir, params);
        assert!(s.containers.borrow().entries().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
