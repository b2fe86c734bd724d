//! runc's own state dirs (`/run/containerd/runc/<namespace>/<id>/`, the
//! shim's default `--root`), and the half-made ones a killed `runc create`
//! leaves: the shim runs `runc create` under the ttrpc request's context,
//! so when picolet dies (its connection closes) or the call times out, the
//! shim SIGKILLs runc before it wrote `state.json`. What remains is a dir
//! holding only `exec.fifo`: `runc list` does not show it, nothing ever
//! removes it, and a container of the same id could never be created.
//!
//! Only dirs without `state.json` are touched: a dir with one is a real
//! container that runc (and the shim's `delete`) handle.

use anyhow::{bail, Context, Result};
use async_io::Timer;
use futures_lite::future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shim's default runc root (`options.Root` unset).
pub const RUNC_ROOT: &str = "/run/containerd/runc";
/// runc's state file: written once the container is created.
const STATE_FILE: &str = "state.json";
/// How long `runc delete --force` may take.
const RUNC_TIMEOUT: Duration = Duration::from_secs(10);

/// runc's root for a shim namespace; `None` for a namespace that is not a
/// single path component (never a path outside the runc root).
pub fn root_for(namespace: &str) -> Option<PathBuf> {
    super::shim::validate_id(namespace).ok()?;
    Some(Path::new(RUNC_ROOT).join(namespace))
}

/// Whether `root/id` is a dir runc left without `state.json`.
pub fn is_half_made(root: &Path, id: &str) -> bool {
    if super::shim::validate_id(id).is_err() {
        return false;
    }
    let dir = root.join(id);
    // symlink_metadata: a symlink is never followed, nor treated as a dir.
    dir.symlink_metadata().is_ok_and(|m| m.is_dir())
        && matches!(dir.join(STATE_FILE).symlink_metadata(), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// The ids of `root`'s half-made dirs (none when `root` is absent).
pub fn half_made_ids(root: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| is_half_made(root, id))
        .collect();
    ids.sort();
    ids
}

/// Clears `root/id` if it is half-made: `runc delete --force` (which
/// removes a dir without `state.json` itself), else by hand. Ok(true) when
/// there was something to clear.
pub async fn clear(root: &Path, id: &str) -> Result<bool> {
    if !is_half_made(root, id) {
        return Ok(false);
    }
    log::info!(
        "removing half-made runc state {} (no state.json: an interrupted runc create)",
        root.join(id).display()
    );
    if let Err(e) = runc_delete(root, id).await {
        log::debug!("runc delete {id}: {e:#}");
    }
    // runc missing or refusing: remove what it would have, if still half-made.
    if is_half_made(root, id) {
        let (root, id) = (root.to_path_buf(), id.to_string());
        crate::rt::unblock(move || remove_by_hand(&root, &id)).await?;
    }
    Ok(true)
}

async fn runc_delete(root: &Path, id: &str) -> Result<()> {
    let mut cmd = smol::process::Command::new("runc");
    cmd.arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = future::or(async { Some(cmd.output().await) }, async {
        Timer::after(RUNC_TIMEOUT).await;
        None
    })
    .await;
    match out {
        None => bail!("runc delete did not finish within {RUNC_TIMEOUT:?}"),
        Some(Err(e)) => Err(e).context("run runc"),
        Some(Ok(o)) if o.status.success() => Ok(()),
        Some(Ok(o)) => bail!(
            "runc delete: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    }
}

/// Removes a half-made dir's files (`exec.fifo`, a stray socket) and the
/// dir. A subdirectory is not runc's half-made state: left alone.
fn remove_by_hand(root: &Path, id: &str) -> Result<()> {
    if !is_half_made(root, id) {
        return Ok(());
    }
    let dir = root.join(id);
    for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e.with_context(|| format!("read {}", dir.display()))?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            bail!(
                "{} holds a directory {:?}: not runc's half-made state, left alone",
                dir.display(),
                e.file_name()
            );
        }
        match std::fs::remove_file(e.path()) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("remove {}", e.path().display())),
        }
    }
    match std::fs::remove_dir(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("picolet-runc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }

    /// What a killed `runc create` leaves.
    fn half_made(root: &Path, id: &str) {
        std::fs::create_dir_all(root.join(id)).unwrap();
        super::super::shim::mkfifo(&root.join(id).join("exec.fifo")).unwrap();
    }

    #[test]
    fn finds_only_dirs_without_state() {
        let t = tmp("find");
        half_made(&t.0, "half");
        std::fs::create_dir_all(t.0.join("real")).unwrap();
        std::fs::write(t.0.join("real/state.json"), b"{}").unwrap();
        std::fs::write(t.0.join("a-file"), b"").unwrap();
        std::os::unix::fs::symlink(t.0.join("half"), t.0.join("link")).unwrap();
        assert_eq!(half_made_ids(&t.0), vec!["half".to_string()]);
        assert!(half_made_ids(&t.0.join("absent")).is_empty());
        assert!(!is_half_made(&t.0, ".."));
        assert_eq!(root_for("../x"), None);
        assert_eq!(
            root_for("k8s.io"),
            Some(PathBuf::from("/run/containerd/runc/k8s.io"))
        );
    }

    #[test]
    fn clears_half_made_and_keeps_real_state() {
        let t = tmp("clear");
        half_made(&t.0, "half");
        std::fs::create_dir_all(t.0.join("real")).unwrap();
        std::fs::write(t.0.join("real/state.json"), b"{}").unwrap();
        crate::rt::block_on(async {
            assert!(clear(&t.0, "half").await.unwrap());
            assert!(!clear(&t.0, "real").await.unwrap());
            assert!(!clear(&t.0, "absent").await.unwrap());
        });
        assert!(!t.0.join("half").exists());
        assert!(t.0.join("real/state.json").exists());
    }

    #[test]
    fn by_hand_removes_files_but_not_foreign_dirs() {
        let t = tmp("hand");
        half_made(&t.0, "half");
        remove_by_hand(&t.0, "half").unwrap();
        assert!(!t.0.join("half").exists());
        half_made(&t.0, "odd");
        std::fs::create_dir_all(t.0.join("odd/sub")).unwrap();
        assert!(remove_by_hand(&t.0, "odd").is_err());
        assert!(t.0.join("odd/sub").exists());
    }
}
