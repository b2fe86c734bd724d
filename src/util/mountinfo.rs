//! `/proc/self/mountinfo`: which filesystems are mounted where, with their
//! propagation (cgroup hierarchies, shared mounts for mount propagation,
//! mount points to clean up).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One mountinfo line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The path of the mounted tree's root inside its filesystem.
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// Optional fields: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    pub optional: Vec<String>,
    pub fs_type: String,
    pub source: String,
    /// Per-superblock options (for cgroup v1: the controllers).
    pub super_options: String,
}

impl MountInfo {
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("shared:"))
    }
    pub fn is_slave(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("master:"))
    }
}

/// Undoes the kernel's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let f: Vec<&str> = line.split(' ').collect();
    let sep = f.iter().position(|x| *x == "-")?;
    if sep < 6 || f.len() < sep + 3 {
        return None;
    }
    Some(MountInfo {
        root: unescape(f[3]),
        mount_point: PathBuf::from(unescape(f[4])),
        options: f[5].to_string(),
        optional: f[6..sep].iter().map(|s| s.to_string()).collect(),
        fs_type: f[sep + 1].to_string(),
        source: unescape(f[sep + 2]),
        super_options: f.get(sep + 3).map(|s| s.to_string()).unwrap_or_default(),
    })
}

/// The mounts of this process.
pub fn read() -> Result<Vec<MountInfo>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(parse(&text))
}

/// The mount a path lives on: the last-mounted entry whose mount point is
/// the longest prefix of `path` (which should be canonical).
pub fn mount_of<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    let mut best: Option<&MountInfo> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best
                .is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len())
        {
            best = Some(m);
        }
    }
    best
}

/// Whether `path` is itself a mount point.
pub fn is_mount_point(mounts: &[MountInfo], path: &Path) -> bool {
    mounts.iter().any(|m| m.mount_point == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/systemd rw,nosuid shared:13 - cgroup cgroup rw,xattr,name=systemd
40 22 0:40 / /mnt/with\\040space rw master:5 - tmpfs none rw
41 22 0:41 / /mnt/private rw - tmpfs none rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 8);
        assert_eq!(m[3].fs_type, "cgroup2");
        assert_eq!(m[4].super_options, "rw,cpu,cpuacct");
        assert_eq!(m[6].mount_point, PathBuf::from("/mnt/with space"));
        assert!(m[6].is_slave() && !m[6].is_shared());
        assert!(m[0].is_shared());
        assert!(m[7].optional.is_empty());
    }

    #[test]
    fn unescapes_octal_only() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("x\\09"), "x\\09");
        assert_eq!(unescape("end\\"), "end\\");
    }

    #[test]
    fn finds_the_mount_of_a_path() {
        let m = parse(SAMPLE);
        assert_eq!(
            mount_of(&m, Path::new("/sys/fs/cgroup/unified/x"))
                .unwrap()
                .fs_type,
            "cgroup2"
        );
        assert_eq!(
            mount_of(&m, Path::new("/etc/hosts")).unwrap().mount_point,
            PathBuf::from("/")
        );
        assert_eq!(
            mount_of(&m, Path::new("/mnt/private/a")).unwrap().source,
            "none"
        );
        assert!(is_mount_point(&m, Path::new("/sys")));
        assert!(!is_mount_point(&m, Path::new("/sys/fs")));
    }

    #[test]
    fn skips_garbage() {
        assert!(parse("nonsense\n1 2 3\n").is_empty());
    }
}
