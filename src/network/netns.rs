//! Pod network namespaces, kept alive by a bind mount on a file
//! (`<netns_dir>/<pod-id>`), independent of any process in the pod.
//!
//! A namespace change is per thread and cannot be undone cleanly, so every
//! operation that enters or creates a namespace runs on a short-lived thread
//! of its own that exits afterwards; picolet's own threads never move.
//!
//! Creation also brings `lo` up in the new namespace, so picolet needs no
//! `loopback` CNI plugin run (see `network::cni`).

use crate::util::mountinfo;
use anyhow::{anyhow, Context, Result};
use rustix::io::Errno;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The bind-mount path of a pod's network namespace.
pub fn path(netns_dir: &Path, pod_id: &str) -> PathBuf {
    netns_dir.join(pod_id)
}

/// Creates the pod's network namespace at `<netns_dir>/<pod_id>` with `lo`
/// up and returns its path. Idempotent: an existing mount is reused.
pub async fn create(netns_dir: &Path, pod_id: &str) -> Result<PathBuf> {
    super::validate_pod_id(pod_id)?;
    fs::create_dir_all(netns_dir).with_context(|| format!("create {}", netns_dir.display()))?;
    let p = path(netns_dir, pod_id);
    if is_mounted(&p)? {
        return Ok(p);
    }
    // The mount point; a file left by an earlier half-made attempt is reused.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .open(&p)
        .with_context(|| format!("create netns file {}", p.display()))?;
    let target = p.clone();
    let res = on_own_thread("netns-create", move || new_netns_at(&target)).await;
    if let Err(e) = res {
        let _ = fs::remove_file(&p);
        return Err(e).with_context(|| format!("create network namespace {}", p.display()));
    }
    Ok(p)
}

/// Runs on a dedicated thread: unshare, `lo` up, bind mount, thread exits.
fn new_netns_at(target: &Path) -> Result<()> {
    // SAFETY: CLONE_NEWNET does not touch the fd table; only this thread,
    // which exits right after, ends up in the new namespace.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .context("unshare(CLONE_NEWNET)")?;
    loopback_up().context("bring lo up")?;
    rustix::mount::mount_bind("/proc/thread-self/ns/net", target)
        .with_context(|| format!("bind-mount the new netns on {}", target.display()))?;
    Ok(())
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace. An
/// AF_UNIX socket is enough: the kernel hands unknown socket ioctls to the
/// device layer of the socket's namespace, with no IPv4 dependency.
fn loopback_up() -> Result<()> {
    use rustix::net::{socket, AddressFamily, SocketType};
    use std::os::fd::AsRawFd;
    let sock = socket(AddressFamily::UNIX, SocketType::DGRAM, None).context("socket")?;
    // SAFETY: ifreq is plain data; the ioctls read/write only that struct.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS lo");
        }
    }
    Ok(())
}

/// Pod ids with a netns file in `netns_dir` (mounted or not), for
/// recovery: any without a sandbox is half-made and needs a teardown.
pub fn list(netns_dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(netns_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", netns_dir.display())),
    };
    let mut ids: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| super::validate_pod_id(n).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Unmounts and deletes a pod's netns file. Idempotent (a missing or
/// unmounted file is fine); stacked mounts are all removed.
pub fn remove(path: &Path) -> Result<()> {
    for _ in 0..16 {
        match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => continue,
            // EINVAL: not a mount point (any more); ENOENT: no file.
            Err(Errno::INVAL) | Err(Errno::NOENT) => break,
            Err(e) => return Err(anyhow!("umount {}: {e}", path.display())),
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}

/// Whether `path` is a mount point of an nsfs (a live bind-mounted netns),
/// per `/proc/self/mountinfo`.
pub fn is_mounted(path: &Path) -> Result<bool> {
    let Some(abs) = canonical_mount_point(path)? else {
        return Ok(false);
    };
    let info = fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(mountinfo_has_nsfs(&info, &abs))
}

/// The path as mountinfo shows it: parent resolved through symlinks (e.g.
/// `/var/run` -> `/run`). `None` when the parent does not exist.
fn canonical_mount_point(path: &Path) -> Result<Option<PathBuf>> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    match fs::canonicalize(parent) {
        Ok(p) => Ok(Some(p.join(name))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("resolve {}", parent.display())),
    }
}

/// True when mountinfo text has `mp` mounted with filesystem `nsfs`.
fn mountinfo_has_nsfs(info: &str, mp: &Path) -> bool {
    mountinfo::parse(info)
        .iter()
        .any(|m| m.fs_type == "nsfs" && m.mount_point == mp)
}

/// Runs `f` on a fresh thread that has joined the network namespace at
/// `path` (e.g. to read `/proc/thread-self/net/dev` of a pod, or to open a
/// socket inside it: sockets keep the namespace they were created in).
pub async fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path).with_context(|| format!("open netns {}", path.display()))?;
    let shown = path.display().to_string();
    on_own_thread("netns-run", move || {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .with_context(|| format!("setns into {shown}"))?;
        drop(ns);
        Ok(f())
    })
    .await
}

/// Runs `f` on a new, named OS thread that ends with it, and awaits its
/// result without blocking the executor.
async fn on_own_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = smol::channel::bounded(1);
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tx.try_send(f());
        })
        .with_context(|| format!("spawn thread {name}"))?;
    rx.recv()
        .await
        .map_err(|_| anyhow!("thread {name} ended without a result (panicked)"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nsfs_mounts_only() {
        let info = "\
22 1 0:21 / /run rw,nosuid - tmpfs tmpfs rw
830 22 0:4 net:[4026532890] /run/picolet/netns/pod-a rw shared:5 - nsfs nsfs rw
831 22 0:4 net:[4026532891] /run/picolet/netns/my\\040pod rw - nsfs nsfs rw
832 22 0:50 / /run/picolet/netns/pod-b rw - tmpfs tmpfs rw
";
        assert!(mountinfo_has_nsfs(
            info,
            Path::new("/run/picolet/netns/pod-a")
        ));
        assert!(mountinfo_has_nsfs(
            info,
            Path::new("/run/picolet/netns/my pod")
        ));
        assert!(!mountinfo_has_nsfs(
            info,
            Path::new("/run/picolet/netns/pod-b")
        ));
        assert!(!mountinfo_has_nsfs(
            info,
            Path::new("/run/picolet/netns/pod")
        ));
        assert!(!mountinfo_has_nsfs(info, Path::new("/run")));
    }
}
