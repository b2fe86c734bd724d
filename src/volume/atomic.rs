//! Upstream's `AtomicWriter` (pkg/volume/util/atomic_writer.go): a set of
//! files projected into a directory so that readers always see one
//! consistent version.
//!
//! The real files live in a hidden timestamped directory
//! (`..2006_01_02_15_04_05.<n>`); `..data` is a symlink to it, and every
//! user-visible top-level name is a symlink through `..data`
//! (`labels -> ..data/labels`, `dir -> ..data/dir`). An update writes a new
//! timestamped directory, points `..data_tmp` at it and renames that over
//! `..data` (atomic), then prunes names that left the payload and removes
//! the old directory. A reader that opened a file of the old version keeps
//! reading that version; every path resolved after the rename sees the new
//! one. Names starting with `..` are reserved for the writer.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;
pub const DATA_DIR: &str = "..data";
const NEW_DATA_DIR: &str = "..data_tmp";

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (0..=0o777).
    pub mode: u32,
}

/// Upstream `validatePath`: relative, no `..` element, no name over 255
/// bytes, at most 4096 bytes, and not starting with `..` (reserved).
pub fn validate_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("invalid path: must not be empty: \"\"".into());
    }
    if p.starts_with('/') {
        return Err(format!("invalid path: must be relative path: {p}"));
    }
    if p.len() > MAX_PATH_LENGTH {
        return Err(format!(
            "invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters"
        ));
    }
    let items: Vec<&str> = p.split('/').collect();
    for item in &items {
        if *item == ".." {
            return Err(format!("invalid path: must not contain '..': {p}"));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(format!(
                "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            ));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return Err(format!("invalid path: must not start with '..': {p}"));
    }
    Ok(())
}

/// A validated relative path with empty and `.` elements dropped (Go's
/// `path.Clean` for the paths [`validate_path`] accepts).
pub fn clean_path(p: &str) -> Result<String, String> {
    validate_path(p)?;
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.is_empty() {
        return Err(format!("invalid path: must name a file: {p:?}"));
    }
    Ok(parts.join("/"))
}

/// Every path the payload occupies: its files and their parent directories.
fn payload_paths(payload: &BTreeMap<String, FileProjection>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in payload.keys() {
        let mut p = file.as_str();
        loop {
            out.insert(p.to_string());
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
    }
    out
}

/// Paths of the old version that the new payload no longer has (upstream
/// `pathsToRemove`): `existing` are the old data directory's relative paths.
pub fn paths_to_remove(
    existing: &BTreeSet<String>,
    payload: &BTreeMap<String, FileProjection>,
) -> BTreeSet<String> {
    let keep = payload_paths(payload);
    existing.difference(&keep).cloned().collect()
}

/// The user-visible symlinks of a payload: top-level name -> link target.
pub fn visible_links(payload: &BTreeMap<String, FileProjection>) -> BTreeMap<String, String> {
    payload
        .keys()
        .map(|p| {
            let top = p.split('/').next().unwrap_or(p).to_string();
            let target = format!("{DATA_DIR}/{top}");
            (top, target)
        })
        .collect()
}

/// Whether a directory entry is one of the writer's timestamped directories.
fn is_timestamp_dir(name: &str) -> bool {
    name.starts_with("..") && name != DATA_DIR && name != NEW_DATA_DIR && name.len() > 2
}

/// Relative paths (files and dirs) under `dir`, without following symlinks.
fn walk_relative(dir: &Path) -> Result<BTreeSet<String>> {
    fn go(base: &Path, rel: &str, out: &mut BTreeSet<String>) -> Result<()> {
        let here = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        let rd = fs::read_dir(&here).with_context(|| format!("read {}", here.display()))?;
        for e in rd {
            let e = e.with_context(|| format!("read {}", here.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let is_dir = e
                .file_type()
                .with_context(|| format!("stat {}", base.join(&child).display()))?
                .is_dir();
            out.insert(child.clone());
            if is_dir {
                go(base, &child, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    go(dir, "", &mut out)?;
    Ok(out)
}

/// Whether any payload file is missing from `old` or differs in content.
/// Modes are not compared, as upstream: fsGroup ownership changes them
/// after writing, and a pod's modes cannot change without a new pod.
fn should_write(payload: &BTreeMap<String, FileProjection>, old: &Path) -> Result<bool> {
    for (p, f) in payload {
        let path = old.join(p);
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
        };
        if !md.is_file() {
            return Ok(true);
        }
        let on_disk = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        if on_disk != f.data {
            return Ok(true);
        }
    }
    Ok(false)
}

fn new_timestamp_dir(target: &Path) -> Result<String> {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y_%m_%d_%H_%M_%S")
        .to_string();
    let seed = jiff::Timestamp::now().as_nanosecond() as u64 ^ ((std::process::id() as u64) << 32);
    for i in 0..100u64 {
        // A decimal suffix like Go's MkdirTemp.
        let n = (seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % 4_294_967_296) as u32;
        let name = format!("..{stamp}.{n}");
        let path = target.join(&name);
        match fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => {
                // As upstream: 0755 whatever the umask.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("chmod {}", path.display()))?;
                return Ok(name);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
        }
    }
    bail!("{}: no free timestamped directory name", target.display())
}

fn write_payload(payload: &BTreeMap<String, FileProjection>, dir: &Path) -> Result<()> {
    for (p, f) in payload {
        let full = dir.join(p);
        if let Some(parent) = full.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(f.mode)
            .open(&full)
            .with_context(|| format!("create {}", full.display()))?;
        file.write_all(&f.data)
            .with_context(|| format!("write {}", full.display()))?;
        // The mode exactly, whatever the umask.
        fs::set_permissions(&full, fs::Permissions::from_mode(f.mode))
            .with_context(|| format!("chmod {}", full.display()))?;
    }
    Ok(())
}

fn read_link_name(path: &Path) -> Result<Option<String>> {
    match fs::read_link(path) {
        Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("readlink {}", path.display())),
    }
}

/// Projects `payload` (clean relative paths, see [`clean_path`]) into
/// `target`, which must exist. `set_perms` runs on the new version before
/// it is published (upstream applies fsGroup ownership there). Returns
/// whether anything was written.
pub fn write(
    target: &Path,
    payload: &BTreeMap<String, FileProjection>,
    set_perms: Option<&dyn Fn() -> Result<()>>,
) -> Result<bool> {
    for p in payload.keys() {
        if clean_path(p).as_deref() != Ok(p.as_str()) {
            bail!("invalid payload path {p:?}");
        }
    }
    let data_dir = target.join(DATA_DIR);
    let mut old_ts = read_link_name(&data_dir)?;
    let mut to_remove = BTreeSet::new();
    let mut wrote = true;
    if let Some(old) = &old_ts {
        let old_path = target.join(old);
        let existing = match walk_relative(&old_path) {
            Ok(e) => e,
            // `..data` dangles: treat as no old version.
            Err(_) if !old_path.exists() => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        to_remove = paths_to_remove(&existing, payload);
        if !should_write(payload, &old_path)? && to_remove.is_empty() {
            // Up to date; still make sure the visible links exist.
            wrote = false;
            old_ts = None;
        }
    }
    if wrote {
        let ts = new_timestamp_dir(target)?;
        let ts_path = target.join(&ts);
        let publish = || -> Result<()> {
            write_payload(payload, &ts_path)?;
            if let Some(f) = set_perms {
                f()?;
            }
            let tmp = target.join(NEW_DATA_DIR);
            // A crash may have left it; upstream would fail forever.
            match fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("remove {}", tmp.display())),
            }
            std::os::unix::fs::symlink(&ts, &tmp)
                .with_context(|| format!("symlink {}", tmp.display()))?;
            if let Err(e) = fs::rename(&tmp, &data_dir) {
                let _ = fs::remove_file(&tmp);
                return Err(e).with_context(|| {
                    format!("rename {} to {}", tmp.display(), data_dir.display())
                });
            }
            Ok(())
        };
        if let Err(e) = publish() {
            let _ = fs::remove_dir_all(&ts_path);
            return Err(e);
        }
    }
    for (name, link) in visible_links(payload) {
        let visible = target.join(&name);
        match fs::read_link(&visible) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                std::os::unix::fs::symlink(&link, &visible)
                    .with_context(|| format!("symlink {}", visible.display()))?;
            }
            // Exists but is not a symlink (a nested mount point): leave it.
            Err(_) => {}
        }
    }
    let mut last_err = None;
    for p in to_remove.iter().filter(|p| !p.contains('/')) {
        let path = target.join(p);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != ErrorKind::NotFound {
                last_err =
                    Some(anyhow::Error::new(e).context(format!("remove {}", path.display())));
            }
        }
    }
    if let Some(e) = last_err {
        return Err(e);
    }
    if let Some(old) = old_ts {
        let old_path = target.join(&old);
        if old_path.exists() {
            fs::remove_dir_all(&old_path)
                .with_context(|| format!("remove {}", old_path.display()))?;
        }
    }
    if wrote {
        remove_stale_versions(target)?;
    }
    Ok(wrote)
}

/// Timestamped directories that `..data` does not point at (left by a
/// crash between writing and publishing).
fn remove_stale_versions(target: &Path) -> Result<()> {
    let current = read_link_name(&target.join(DATA_DIR))?;
    for e in fs::read_dir(target).with_context(|| format!("read {}", target.display()))? {
        let e = e.with_context(|| format!("read {}", target.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_timestamp_dir(&name) && Some(&name) != current.as_ref() {
            let p = e.path();
            fs::remove_dir_all(&p).with_context(|| format!("remove {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str)]) -> BTreeMap<String, FileProjection> {
        items
            .iter()
            .map(|(p, d)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn validates_paths_like_upstream() {
        assert!(validate_path("labels").is_ok());
        assert!(validate_path("a/b/c").is_ok());
        assert!(validate_path("..").is_err());
        assert_eq!(
            validate_path("").unwrap_err(),
            "invalid path: must not be empty: \"\""
        );
        assert_eq!(
            validate_path("/etc/x").unwrap_err(),
            "invalid path: must be relative path: /etc/x"
        );
        assert_eq!(
            validate_path("a/../b").unwrap_err(),
            "invalid path: must not contain '..': a/../b"
        );
        assert_eq!(
            validate_path("..data").unwrap_err(),
            "invalid path: must not start with '..': ..data"
        );
        assert!(validate_path(&"x".repeat(256)).is_err());
        assert!(validate_path(&format!("{}/y", "x".repeat(255))).is_ok());
        assert!(validate_path(&"a/".repeat(2049)).is_err());
    }

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_path("a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(clean_path("./x").unwrap(), "x");
        assert!(clean_path(".").is_err());
    }

    #[test]
    fn computes_paths_to_remove_keeping_parents_of_new_files() {
        let existing: BTreeSet<String> = ["a", "d", "d/x", "d/y", "old", "e", "e/f"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = payload(&[("a", "1"), ("d/x", "2"), ("n/m", "3")]);
        let r: Vec<_> = paths_to_remove(&existing, &p).into_iter().collect();
        assert_eq!(r, vec!["d/y", "e", "e/f", "old"]);
    }

    #[test]
    fn visible_links_are_top_level_names_through_data() {
        let p = payload(&[("labels", ""), ("k8s/a", ""), ("k8s/b/c", "")]);
        let v: Vec<_> = visible_links(&p).into_iter().collect();
        assert_eq!(
            v,
            vec![
                ("k8s".to_string(), "..data/k8s".to_string()),
                ("labels".to_string(), "..data/labels".to_string())
            ]
        );
    }

    #[test]
    fn recognises_timestamp_dirs() {
        assert!(is_timestamp_dir("..2024_01_02_03_04_05.1234"));
        assert!(!is_timestamp_dir("..data"));
        assert!(!is_timestamp_dir("..data_tmp"));
        assert!(!is_timestamp_dir(".."));
        assert!(!is_timestamp_dir("labels"));
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("picolet-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_swaps_and_prunes() {
        let d = temp("swap");
        assert!(write(
            &d,
            &payload(&[("a", "1"), ("sub/b", "2"), ("gone", "x")]),
            None
        )
        .unwrap());
        let first = fs::read_link(d.join(DATA_DIR)).unwrap();
        assert_eq!(
            fs::read_link(d.join("a")).unwrap().to_str(),
            Some("..data/a")
        );
        assert_eq!(
            fs::read_link(d.join("sub")).unwrap().to_str(),
            Some("..data/sub")
        );
        assert_eq!(fs::read_to_string(d.join("sub/b")).unwrap(), "2");
        // Same payload: nothing written, same version.
        assert!(!write(
            &d,
            &payload(&[("a", "1"), ("sub/b", "2"), ("gone", "x")]),
            None
        )
        .unwrap());
        assert_eq!(fs::read_link(d.join(DATA_DIR)).unwrap(), first);
        // New content, one name gone.
        assert!(write(&d, &payload(&[("a", "10"), ("sub/b", "2")]), None).unwrap());
        let second = fs::read_link(d.join(DATA_DIR)).unwrap();
        assert_ne!(first, second);
        assert!(!d.join(&first).exists(), "old version removed");
        assert!(fs::symlink_metadata(d.join("gone")).is_err(), "pruned");
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "10");
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}"); // ..data, ts dir, a, sub
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn modes_are_exact_and_stale_versions_go() {
        let d = temp("mode");
        let mut p = payload(&[("a", "1")]);
        p.get_mut("a").unwrap().mode = 0o400;
        write(&d, &p, None).unwrap();
        let md = fs::metadata(d.join("a")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o400);
        // A crash left an unpublished version and a stale ..data_tmp.
        fs::create_dir(d.join("..2000_01_01_00_00_00.1")).unwrap();
        fs::write(d.join(NEW_DATA_DIR), b"").unwrap();
        // Only the mode differs: nothing to write (as upstream).
        p.get_mut("a").unwrap().mode = 0o644;
        assert!(!write(&d, &p, None).unwrap());
        p.get_mut("a").unwrap().data = b"2".to_vec();
        assert!(write(&d, &p, None).unwrap());
        assert_eq!(
            fs::metadata(d.join("a")).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(!d.join("..2000_01_01_00_00_00.1").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_set_perms_publishes_nothing() {
        let d = temp("perms");
        write(&d, &payload(&[("a", "1")]), None).unwrap();
        let before = fs::read_link(d.join(DATA_DIR)).unwrap();
        let fail = || -> Result<()> { bail!("nope") };
        assert!(write(&d, &payload(&[("a", "2")]), Some(&fail)).is_err());
        assert_eq!(fs::read_link(d.join(DATA_DIR)).unwrap(), before);
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "1");
        let dirs = fs::read_dir(&d)
            .unwrap()
            .filter(|e| is_timestamp_dir(&e.as_ref().unwrap().file_name().to_string_lossy()))
            .count();
        assert_eq!(dirs, 1, "the unpublished version was removed");
        fs::remove_dir_all(&d).unwrap();
    }
}
