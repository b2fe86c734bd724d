//! The effects: directories, tmpfs mounts, hostPath checks, fsGroup
//! ownership, teardown and usage. Blocking; the manager runs these on
//! smol's blocking pool.

use super::atomic::{self, FileProjection};
use super::plan::{
    check_host_path, FileKind, HostPathType, Medium, Observed, PodPlan, TypeCheck, VolumePlan,
    EMPTY_DIR,
};
use super::VolumeError;
use crate::runtime::convert::VolumePath;
use crate::util::mountinfo;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Upstream kubelet creates pod, volume and plugin dirs with 0750.
const POD_DIR_MODE: u32 = 0o750;
/// emptyDir directories are world-writable (upstream `defaultPerm`).
const EMPTY_DIR_MODE: u32 = 0o777;
const READY_FILE: &str = "ready";

/// `<pod>/volumes/<plugin>/<name>`.
pub fn volume_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(plugin).join(name)
}

/// Where the "set up" marker of an emptyDir (or of the tmpfs a file volume
/// wraps, named `wrapped_<name>` as upstream) lives.
fn meta_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("plugins").join(EMPTY_DIR).join(name)
}

fn mkdir_all(dir: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

/// Sets up every planned volume; the map is what `ContainerInputs.volumes`
/// takes.
pub fn setup(pods_dir: &Path, plan: &PodPlan) -> Result<BTreeMap<String, VolumePath>, VolumeError> {
    let pod_dir = pods_dir.join(&plan.uid);
    let fail = |volume: &str, e: anyhow::Error| VolumeError::SetUp {
        volume: volume.to_string(),
        message: format!("{e:#}"),
    };
    for d in [
        pods_dir.to_path_buf(),
        pod_dir.clone(),
        pod_dir.join("volumes"),
    ] {
        mkdir_all(&d, POD_DIR_MODE).map_err(|e| fail("", e))?;
    }
    let mut out = BTreeMap::new();
    for v in &plan.volumes {
        let name = v.name();
        let path = match v {
            VolumePlan::EmptyDir { medium, .. } => {
                let dir = volume_dir(&pod_dir, EMPTY_DIR, name);
                setup_empty_dir(&dir, &meta_dir(&pod_dir, name), *medium, plan.fs_group)
                    .map_err(|e| fail(name, e))?;
                VolumePath {
                    host_path: dir,
                    read_only: false,
                }
            }
            VolumePlan::HostPath { path, kind, .. } => {
                setup_host_path(path, *kind).map_err(|m| VolumeError::SetUp {
                    volume: name.to_string(),
                    message: m,
                })?;
                VolumePath {
                    host_path: path.clone(),
                    read_only: false,
                }
            }
            VolumePlan::Files {
                plugin,
                medium,
                payload,
                nested,
                ..
            } => {
                let dir = volume_dir(&pod_dir, plugin, name);
                let meta = meta_dir(&pod_dir, &format!("wrapped_{name}"));
                setup_files(&dir, &meta, *medium, payload, nested, plan.fs_group)
                    .map_err(|e| fail(name, e))?;
                // Upstream mounts downward API and projected volumes read-only.
                VolumePath {
                    host_path: dir,
                    read_only: true,
                }
            }
            VolumePlan::Kept { plugin, .. } => VolumePath {
                host_path: volume_dir(&pod_dir, plugin, name),
                read_only: true,
            },
        };
        out.insert(name.to_string(), path);
    }
    Ok(out)
}

/// Whether `dir` is itself a tmpfs mount (upstream `GetMountMedium`:
/// statfs type plus a device differing from the parent's).
fn is_tmpfs_mount(dir: &Path) -> Result<bool> {
    let md = match fs::symlink_metadata(dir) {
        Ok(md) => md,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("stat {}", dir.display())),
    };
    let sfs = rustix::fs::statfs(dir).with_context(|| format!("statfs {}", dir.display()))?;
    #[allow(clippy::unnecessary_cast)]
    let is_tmpfs = sfs.f_type as i64 == TMPFS_MAGIC;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let pmd = fs::metadata(parent).with_context(|| format!("stat {}", parent.display()))?;
    Ok(is_tmpfs && md.dev() != pmd.dev())
}

/// The tmpfs mount data: `size=` in bytes, and `noswap` (kernel 6.4+;
/// upstream adds it where supported).
pub fn tmpfs_options(size: Option<u64>, noswap: bool) -> String {
    let mut o = Vec::new();
    if let Some(s) = size.filter(|s| *s > 0) {
        o.push(format!("size={s}"));
    }
    if noswap {
        o.push("noswap".to_string());
    }
    o.join(",")
}

fn mount_tmpfs(dir: &Path, size: Option<u64>) -> Result<()> {
    use rustix::mount::{mount, MountFlags};
    let flags = MountFlags::NODEV | MountFlags::NOSUID;
    let attempt = |noswap: bool| {
        let data = std::ffi::CString::new(tmpfs_options(size, noswap))
            .context("tmpfs options contain a NUL")?;
        mount("tmpfs", dir, "tmpfs", flags, Some(data.as_c_str())).map_err(anyhow::Error::from)
    };
    match attempt(true) {
        Ok(()) => Ok(()),
        // Older kernels reject `noswap`.
        Err(e) if e.downcast_ref() == Some(&rustix::io::Errno::INVAL) => attempt(false),
        Err(e) => Err(e),
    }
    .with_context(|| format!("mount tmpfs on {}", dir.display()))
}

/// The directory with exactly `mode`, whatever the umask (upstream `setupDir`).
fn setup_dir(dir: &Path, mode: u32) -> Result<()> {
    mkdir_all(dir, mode)?;
    let md = fs::symlink_metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    if md.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dir.display()))?;
    }
    Ok(())
}

/// Upstream emptyDir `SetUpAt`: nothing to do when set up before (marker
/// present, and for Memory the tmpfs still mounted — it is gone after a
/// reboot). Returns whether it set anything up now.
fn setup_empty_dir(dir: &Path, meta: &Path, medium: Medium, fs_group: Option<u32>) -> Result<bool> {
    let ready = meta.join(READY_FILE);
    if ready.exists() {
        let done = match medium {
            Medium::Disk => dir.is_dir(),
            Medium::Memory { .. } => is_tmpfs_mount(dir)?,
        };
        if done {
            return Ok(false);
        }
    }
    setup_dir(dir, EMPTY_DIR_MODE)?;
    if let Medium::Memory { size } = medium {
        if !is_tmpfs_mount(dir)? {
            mount_tmpfs(dir, size)?;
        }
    }
    if let Some(gid) = fs_group {
        // Upstream ignores ownership errors here too.
        if let Err(e) = set_volume_ownership(dir, gid, false) {
            log::warn!("fsGroup ownership of {}: {e:#}", dir.display());
        }
    }
    mkdir_all(meta, POD_DIR_MODE)?;
    fs::write(&ready, b"").with_context(|| format!("write {}", ready.display()))?;
    Ok(true)
}

/// A file volume (downward API, projected, secret, configMap): its wrapped
/// emptyDir, the nested mount point directories, then the payload through
/// the atomic writer with fsGroup ownership applied before publishing. A
/// first setup that fails is undone.
fn setup_files(
    dir: &Path,
    meta: &Path,
    medium: Medium,
    payload: &BTreeMap<String, FileProjection>,
    nested: &[String],
    fs_group: Option<u32>,
) -> Result<()> {
    let fresh = setup_empty_dir(dir, meta, medium, fs_group)?;
    let res = (|| -> Result<()> {
        for n in nested {
            mkdir_all(&dir.join(n), 0o755).context("unable to create nested volume mountpoints")?;
        }
        let perms = move || -> Result<()> {
            match fs_group {
                Some(gid) => set_volume_ownership(dir, gid, true),
                None => Ok(()),
            }
        };
        atomic::write(dir, payload, Some(&perms))?;
        Ok(())
    })();
    if res.is_err() && fresh {
        for p in remove_tree(dir).into_iter().chain(remove_tree(meta)) {
            log::warn!("undoing a failed volume setup: {p}");
        }
    }
    res
}

fn observe(path: &Path) -> Observed {
    let Ok(md) = fs::metadata(path) else {
        return Observed::Missing;
    };
    let ft = md.file_type();
    if ft.is_dir() {
        Observed::Kind(FileKind::Directory)
    } else if ft.is_file() {
        Observed::Kind(FileKind::File)
    } else if ft.is_socket() {
        Observed::Kind(FileKind::Socket)
    } else if ft.is_char_device() {
        Observed::Kind(FileKind::CharDevice)
    } else if ft.is_block_device() {
        Observed::Kind(FileKind::BlockDevice)
    } else {
        Observed::Unknown(
            "only recognise file, directory, socket, block device and character device".into(),
        )
    }
}

/// Upstream hostPath `SetUp`: the type check, creating what `*OrCreate`
/// asks for (directories 0755, parents too; files 0644, the parent must
/// exist), owned by picolet (root).
pub fn setup_host_path(path: &Path, kind: HostPathType) -> Result<(), String> {
    let shown = path.to_string_lossy();
    let mut may_create = true;
    loop {
        match check_host_path(&shown, kind, &observe(path), may_create) {
            TypeCheck::Ok => return Ok(()),
            TypeCheck::Fail(m) => return Err(m),
            TypeCheck::CreateDir => {
                match fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("mkdir {shown}: {e}")),
                }
            }
            TypeCheck::CreateFile => {
                if let Err(e) = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                {
                    return Err(format!("open {shown}: {e}"));
                }
            }
        }
        may_create = false;
    }
}

/// The mode upstream's fsGroup change gives an entry
/// (`changeFilePermission`): group read/write (read-only volumes: read) and
/// for directories group exec plus setgid, so new files inherit the group.
pub fn ownership_mode(mode: u32, is_dir: bool, read_only: bool) -> u32 {
    let mut mask = if read_only { 0o440 } else { 0o660 };
    if is_dir {
        mask |= 0o2000 | 0o110;
    }
    (mode & 0o7777) | mask
}

/// Upstream `SetVolumeOwnership` with the Always policy (what it uses for
/// emptyDir and downward API volumes): every entry, children before their
/// directory, gets group `gid` and [`ownership_mode`]; symlinks only the
/// group. Per-entry failures are logged as upstream does; a directory that
/// cannot be read fails the walk.
pub fn set_volume_ownership(dir: &Path, gid: u32, read_only: bool) -> Result<()> {
    fn change(path: &Path, md: &fs::Metadata, gid: u32, read_only: bool) {
        if let Err(e) = std::os::unix::fs::lchown(path, None, Some(gid)) {
            log::warn!("lchown {}: {e}", path.display());
        }
        if md.file_type().is_symlink() {
            return;
        }
        let mode = ownership_mode(md.permissions().mode(), md.is_dir(), read_only);
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
            log::warn!("chmod {}: {e}", path.display());
        }
    }
    fn walk(path: &Path, md: &fs::Metadata, gid: u32, read_only: bool) -> Result<()> {
        if md.is_dir() {
            for e in fs::read_dir(path).with_context(|| format!("read {}", path.display()))? {
                let e = e.with_context(|| format!("read {}", path.display()))?;
                let child = e.path();
                match fs::symlink_metadata(&child) {
                    Ok(cmd) => walk(&child, &cmd, gid, read_only)?,
                    Err(err) => log::warn!("stat {}: {err}", child.display()),
                }
            }
        }
        change(path, md, gid, read_only);
        Ok(())
    }
    let md = fs::symlink_metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    walk(dir, &md, gid, read_only)
}

/// Mount points at or below `root` (canonical), deepest first.
fn mounts_below(root: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = mountinfo::read()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(root))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    Ok(v)
}

/// Unmounts everything at or below `root`, deepest first; a busy mount is
/// detached (lazily unmounted) instead. Returns what stays mounted, with
/// the reasons.
fn unmount_below(root: &Path, problems: &mut Vec<String>) -> BTreeSet<PathBuf> {
    use rustix::io::Errno;
    use rustix::mount::{unmount, UnmountFlags};
    let mut failed: BTreeMap<PathBuf, String> = BTreeMap::new();
    // Stacked mounts come off one per round.
    for _ in 0..16 {
        let points = match mounts_below(root) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{e:#}"));
                return BTreeSet::new();
            }
        };
        let todo: Vec<_> = points
            .into_iter()
            .filter(|p| !failed.contains_key(p))
            .collect();
        if todo.is_empty() {
            break;
        }
        for p in todo {
            let res = match unmount(&p, UnmountFlags::empty()) {
                Err(Errno::BUSY) => {
                    log::warn!("{} is busy: detaching it", p.display());
                    unmount(&p, UnmountFlags::DETACH)
                }
                r => r,
            };
            match res {
                // EINVAL: no longer a mount point (went with its parent).
                Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
                Err(e) => {
                    failed.insert(p.clone(), format!("unmount {}: {e}", p.display()));
                }
            }
        }
    }
    let still: BTreeSet<PathBuf> = mounts_below(root).unwrap_or_default().into_iter().collect();
    for p in &still {
        problems.push(
            failed
                .get(p)
                .cloned()
                .unwrap_or_else(|| format!("{} is still mounted", p.display())),
        );
    }
    still
}

/// Removes `dir`'s contents, never descending into anything mounted (a
/// path in `mounted` or on another device). Returns whether it is empty.
fn remove_contents(
    dir: &Path,
    dev: u64,
    mounted: &BTreeSet<PathBuf>,
    problems: &mut Vec<String>,
) -> bool {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            problems.push(format!("read {}: {e}", dir.display()));
            return false;
        }
    };
    let mut empty = true;
    for e in rd {
        let path = match e {
            Ok(e) => e.path(),
            Err(e) => {
                problems.push(format!("read {}: {e}", dir.display()));
                empty = false;
                continue;
            }
        };
        if mounted.contains(&path) {
            empty = false;
            continue;
        }
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(format!("stat {}: {e}", path.display()));
                empty = false;
                continue;
            }
        };
        let res = if md.is_dir() {
            if md.dev() != dev {
                problems.push(format!(
                    "{} is on another filesystem: left alone",
                    path.display()
                ));
                empty = false;
                continue;
            }
            if !remove_contents(&path, dev, mounted, problems) {
                empty = false;
                continue;
            }
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(e) = res {
            if e.kind() != ErrorKind::NotFound {
                problems.push(format!("remove {}: {e}", path.display()));
                empty = false;
            }
        }
    }
    empty
}

/// Unmounts everything below `root` and removes the tree without crossing
/// into anything still mounted. Idempotent; returns the problems left (an
/// empty list: `root` is gone).
pub fn remove_tree(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == ErrorKind::NotFound => return problems,
        Err(e) => {
            problems.push(format!("stat {}: {e}", root.display()));
            return problems;
        }
        Ok(md) if !md.is_dir() => {
            if let Err(e) = fs::remove_file(root) {
                problems.push(format!("remove {}: {e}", root.display()));
            }
            return problems;
        }
        Ok(_) => {}
    }
    let root = match fs::canonicalize(root) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("resolve {}: {e}", root.display()));
            return problems;
        }
    };
    let mounted = unmount_below(&root, &mut problems);
    if mounted.contains(&root) {
        return problems;
    }
    let dev = match fs::symlink_metadata(&root) {
        Ok(md) => md.dev(),
        Err(e) => {
            problems.push(format!("stat {}: {e}", root.display()));
            return problems;
        }
    };
    if remove_contents(&root, dev, &mounted, &mut problems) {
        if let Err(e) = fs::remove_dir(&root) {
            if e.kind() != ErrorKind::NotFound {
                problems.push(format!("remove {}: {e}", root.display()));
            }
        }
    }
    problems
}

/// Bytes a directory tree occupies, as `du` counts them (upstream
/// `fs.DiskUsage`): allocated blocks, hard links once, not crossing into
/// other filesystems.
pub fn disk_usage(dir: &Path) -> Result<u64> {
    fn walk(path: &Path, dev: u64, seen: &mut HashSet<(u64, u64)>, total: &mut u64) -> Result<()> {
        let md = match fs::symlink_metadata(path) {
            Ok(md) => md,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
        };
        if md.dev() != dev {
            return Ok(());
        }
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            return Ok(());
        }
        *total += md.blocks() * 512;
        if md.is_dir() {
            let rd = match fs::read_dir(path) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            };
            for e in rd {
                let e = e.with_context(|| format!("read {}", path.display()))?;
                walk(&e.path(), dev, seen, total)?;
            }
        }
        Ok(())
    }
    let dev = fs::symlink_metadata(dir)
        .with_context(|| format!("stat {}", dir.display()))?
        .dev();
    let mut total = 0;
    walk(dir, dev, &mut HashSet::new(), &mut total)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_modes() {
        // Read-write volume: group rw; dirs also group x and setgid.
        assert_eq!(ownership_mode(0o644, false, false), 0o664);
        assert_eq!(ownership_mode(0o755, true, false), 0o2775);
        assert_eq!(ownership_mode(0o1777, true, false), 0o3777);
        // Read-only volume (downward API): group read only.
        assert_eq!(ownership_mode(0o600, false, true), 0o640);
        assert_eq!(ownership_mode(0o400, false, true), 0o440);
        assert_eq!(ownership_mode(0o700, true, true), 0o2750);
        // File type bits are dropped.
        assert_eq!(ownership_mode(0o100644, false, true), 0o644);
    }

    #[test]
    fn tmpfs_mount_options() {
        assert_eq!(tmpfs_options(Some(1 << 20), true), "size=1048576,noswap");
        assert_eq!(tmpfs_options(Some(1 << 20), false), "size=1048576");
        assert_eq!(tmpfs_options(None, true), "noswap");
        assert_eq!(tmpfs_options(Some(0), false), "");
    }
}
