//! cgroupfs, driven directly (the kubelet's `cgroupfs` driver): QoS parents
//! and pod cgroups in every hierarchy, pod-level limits, removal, and usage
//! for stats. Works on cgroup v1 (incl. the hybrid layout with cgroup2 at
//! `<base>/unified`) and on pure cgroup v2.
//!
//! Paths are cgroup paths (`/kubepods/burstable/pod<uid>`), the same in
//! every hierarchy, as runc's `linux.cgroupsPath` takes them. All calls
//! block on the filesystem; async callers use `smol::unblock`.

use crate::runtime::types::LinuxContainerResources;
use crate::util::mountinfo::{self, MountInfo};
use anyhow::{bail, Context, Result};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// cgroup v1 controllers picolet knows; anything else in a mount's options
/// is a mount flag.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Controllers a v2 tree delegates down to pods (those the host has).
const V2_DELEGATE: &[&str] = &["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// v1 controllers (and `name=...`); empty for a cgroup2 tree.
    pub controllers: Vec<String>,
    pub v2: bool,
}

impl Hierarchy {
    fn has(&self, c: &str) -> bool {
        self.controllers.iter().any(|x| x == c)
    }
    /// The directory of cgroup `path` in this hierarchy.
    pub fn dir(&self, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(rel)
        }
    }
}

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    /// Pure cgroup v2 (one tree with all controllers).
    pub unified: bool,
    /// v1 hierarchies plus the cgroup2 tree when mounted (hybrid), or just
    /// the cgroup2 tree (pure v2).
    pub hierarchies: Vec<Hierarchy>,
    /// Pure v2: the root's `cgroup.controllers` (what the kernel offers;
    /// `None` when not read: every controller assumed present).
    pub v2_controllers: Option<Vec<String>>,
}

/// The controllers whose absence changes what pods get (v2 names; v1 calls
/// io `blkio`), what they run without, and whether picolet sets limits
/// through them today (a missing one is a warning, the rest a note).
pub const FEATURES: &[(&str, &str, bool)] = &[
    (
        "cpu",
        "cpu requests and limits are not applied (cpu.weight, cpu.max)",
        true,
    ),
    (
        "memory",
        "memory limits are not enforced and OOM kills are not detected",
        true,
    ),
    ("pids", "podPidsLimit is not enforced", true),
    (
        "cpuset",
        "cpu and memory node pinning is unavailable",
        false,
    ),
    ("hugetlb", "hugepage limits are unavailable", false),
    ("io", "io weights and limits are unavailable", false),
];

/// `r` without the settings of controllers in `missing`: runc fails a
/// container whose spec sets a limit it cannot write, and a write to a
/// missing file fails the pod cgroup; pods run without those limits
/// instead (a kernel without the memory controller, as Raspberry Pi OS
/// boots without `cgroup_enable=memory`).
pub fn without_missing(r: &LinuxContainerResources, missing: &[String]) -> LinuxContainerResources {
    let lacks = |c: &str| missing.iter().any(|m| m == c);
    let mut r = r.clone();
    if lacks("cpu") {
        r.cpu_shares = 0;
        r.cpu_quota = 0;
        r.cpu_period = 0;
    }
    if lacks("memory") {
        r.memory_limit_in_bytes = 0;
    }
    if lacks("pids") {
        r.pids_limit = 0;
    }
    if lacks("cpuset") {
        r.cpuset_cpus.clear();
        r.cpuset_mems.clear();
    }
    // unified keys are `<controller>.<file>`; `cgroup.*` is the core's
    r.unified
        .retain(|k, _| !lacks(k.split('.').next().unwrap_or_default()));
    r
}

/// Usage of one cgroup, from cgroupfs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    /// usage - inactive_file (never below 0), as cAdvisor computes it.
    pub memory_working_set: u64,
    pub memory_rss: u64,
    /// `None`: unlimited.
    pub memory_limit: Option<u64>,
    pub oom_kills: u64,
    pub pids: u64,
}

/// Reads the layout from mountinfo text (pure; see [`Cgroups::detect`]).
pub fn layout_from_mounts(mounts: &[MountInfo]) -> Result<Cgroups> {
    let mut v1: Vec<Hierarchy> = Vec::new();
    let mut v2: Option<Hierarchy> = None;
    for m in mounts {
        match m.fs_type.as_str() {
            "cgroup" => {
                let controllers: Vec<String> = m
                    .super_options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                    .map(str::to_string)
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                // The same hierarchy may be mounted twice: keep the full
                // tree (root "/") at the shortest path.
                let shorter = |h: &Hierarchy| {
                    m.mount_point.as_os_str().len() < h.mount_point.as_os_str().len()
                };
                match v1.iter_mut().find(|h| h.controllers == controllers) {
                    Some(h) if m.root == "/" && shorter(h) => h.mount_point = m.mount_point.clone(),
                    Some(_) => {}
                    None if m.root == "/" => v1.push(Hierarchy {
                        mount_point: m.mount_point.clone(),
                        controllers,
                        v2: false,
                    }),
                    None => {}
                }
            }
            "cgroup2"
                if m.root == "/"
                    && v2.as_ref().is_none_or(|h| {
                        m.mount_point.as_os_str().len() < h.mount_point.as_os_str().len()
                    }) =>
            {
                v2 = Some(Hierarchy {
                    mount_point: m.mount_point.clone(),
                    controllers: Vec::new(),
                    v2: true,
                });
            }
            _ => {}
        }
    }
    let has_v1_controllers = v1
        .iter()
        .any(|h| h.controllers.iter().any(|c| !c.starts_with("name=")));
    match (has_v1_controllers, v2) {
        (false, Some(h)) => Ok(Cgroups {
            unified: true,
            hierarchies: vec![h],
            v2_controllers: None,
        }),
        (true, v2) => {
            let mut hierarchies = v1;
            hierarchies.extend(v2);
            Ok(Cgroups {
                unified: false,
                hierarchies,
                v2_controllers: None,
            })
        }
        (false, None) => {
            bail!("no cgroup filesystem mounted (neither cgroup v1 controllers nor cgroup2)")
        }
    }
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value).with_context(|| format!("write {value:?} to {}", p.display()))
}

fn read_trim(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
    Ok(s.trim().to_string())
}

fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let s = read_trim(dir, file)?;
    s.parse()
        .with_context(|| format!("{}: not a number: {s:?}", dir.join(file).display()))
}

/// A `key value` line of a flat keyed file (memory.stat, cpu.stat, ...).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// runc's cpu.shares -> cpu.weight mapping (2..262144 -> 1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The `cpu.max` value for a quota and period (µs).
pub fn cpu_max(quota: i64, period: i64) -> String {
    let q = if quota > 0 {
        quota.to_string()
    } else {
        "max".into()
    };
    if period > 0 {
        format!("{q} {period}")
    } else {
        q
    }
}

/// v1 reports "unlimited" as a page-aligned huge number.
const V1_UNLIMITED: u64 = 1 << 62;

impl Cgroups {
    /// Reads the layout of this host from `/proc/self/mountinfo` and, on
    /// pure v2, the controllers the kernel offers.
    pub fn detect() -> Result<Self> {
        let mut c = layout_from_mounts(&mountinfo::read()?)?;
        if c.unified {
            let root = &c.hierarchies[0].mount_point;
            let list = read_trim(root, "cgroup.controllers")?;
            c.v2_controllers = Some(list.split_whitespace().map(str::to_string).collect());
        }
        Ok(c)
    }

    /// Whether controller `c` (v2 name) is usable here.
    pub fn has_controller(&self, c: &str) -> bool {
        if self.unified {
            return self
                .v2_controllers
                .as_ref()
                .is_none_or(|l| l.iter().any(|x| x == c));
        }
        self.with(if c == "io" { "blkio" } else { c }).is_some()
    }

    /// The [`FEATURES`] controllers this host lacks.
    pub fn missing_controllers(&self) -> Vec<String> {
        FEATURES
            .iter()
            .filter(|(c, _, _)| !self.has_controller(c))
            .map(|(c, _, _)| c.to_string())
            .collect()
    }

    fn with(&self, controller: &str) -> Option<&Hierarchy> {
        if self.unified {
            return self.hierarchies.first();
        }
        self.hierarchies.iter().find(|h| h.has(controller))
    }

    /// Whether swap is accounted, so a memory limit also caps swap (as
    /// containerd's `SwapControllerAvailable`).
    pub fn swap_accounting(&self) -> bool {
        if self.unified {
            // memory.swap.max does not exist in the root: look at our own cgroup.
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
                return false;
            };
            return self.hierarchies[0]
                .dir(path)
                .join("memory.swap.max")
                .exists();
        }
        self.with("memory")
            .is_some_and(|h| h.mount_point.join("memory.memsw.limit_in_bytes").exists())
    }

    /// Creates cgroup `path` (and missing parents) in every hierarchy; v1
    /// cpuset dirs get their parent's cpus/mems, v2 parents delegate the
    /// controllers. Existing dirs are fine.
    pub fn create(&self, path: &str) -> Result<()> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for h in &self.hierarchies {
            let mut dir = h.mount_point.clone();
            for part in &parts {
                let parent = dir.clone();
                dir.push(part);
                if h.v2 && self.unified {
                    delegate_controllers(&parent)?;
                }
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("create cgroup {}", dir.display()))
                    }
                }
                if h.has("cpuset") {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        if read_trim(&dir, f)?.is_empty() {
                            let v = read_trim(&parent, f)?;
                            write(&dir, f, &v)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets the limits in `r` on cgroup `path` (non-zero fields only; those
    /// of missing controllers are left out, see [`without_missing`]).
    pub fn set_resources(&self, path: &str, r: &LinuxContainerResources) -> Result<()> {
        let r = &without_missing(r, &self.missing_controllers());
        if self.unified {
            let dir = self.hierarchies[0].dir(path);
            if r.cpu_shares > 0 {
                write(
                    &dir,
                    "cpu.weight",
                    &shares_to_weight(r.cpu_shares as u64).to_string(),
                )?;
            }
            if r.cpu_quota != 0 || r.cpu_period > 0 {
                write(&dir, "cpu.max", &cpu_max(r.cpu_quota, r.cpu_period))?;
            }
            if r.memory_limit_in_bytes > 0 {
                write(&dir, "memory.max", &r.memory_limit_in_bytes.to_string())?;
            }
            if r.pids_limit > 0 {
                write(&dir, "pids.max", &r.pids_limit.to_string())?;
            }
            if !r.cpuset_cpus.is_empty() {
                write(&dir, "cpuset.cpus", &r.cpuset_cpus)?;
            }
            if !r.cpuset_mems.is_empty() {
                write(&dir, "cpuset.mems", &r.cpuset_mems)?;
            }
            for (k, v) in &r.unified {
                write(&dir, k, v)?;
            }
            return Ok(());
        }
        if let Some(h) = self.with("cpu") {
            let dir = h.dir(path);
            if r.cpu_shares > 0 {
                write(&dir, "cpu.shares", &r.cpu_shares.to_string())?;
            }
            if r.cpu_period > 0 {
                write(&dir, "cpu.cfs_period_us", &r.cpu_period.to_string())?;
            }
            if r.cpu_quota != 0 {
                write(&dir, "cpu.cfs_quota_us", &r.cpu_quota.to_string())?;
            }
        }
        if r.memory_limit_in_bytes > 0 {
            let h = self.with("memory").context("no memory cgroup hierarchy")?;
            write(
                &h.dir(path),
                "memory.limit_in_bytes",
                &r.memory_limit_in_bytes.to_string(),
            )?;
        }
        if r.pids_limit > 0 {
            let h = self.with("pids").context("no pids cgroup hierarchy")?;
            write(&h.dir(path), "pids.max", &r.pids_limit.to_string())?;
        }
        if let Some(h) = self.with("cpuset") {
            if !r.cpuset_cpus.is_empty() {
                write(&h.dir(path), "cpuset.cpus", &r.cpuset_cpus)?;
            }
            if !r.cpuset_mems.is_empty() {
                write(&h.dir(path), "cpuset.mems", &r.cpuset_mems)?;
            }
        }
        Ok(())
    }

    /// Creates the QoS parents under `cgroup_root` (`kubepods`,
    /// `kubepods/burstable`, `kubepods/besteffort`); best-effort gets the
    /// minimum cpu weight as upstream.
    pub fn ensure_qos_parents(&self, cgroup_root: &str) -> Result<()> {
        let [_, burstable, besteffort] = crate::runtime::convert::qos_cgroups(cgroup_root);
        self.create(&burstable)?;
        self.create(&besteffort)?;
        self.set_resources(
            &besteffort,
            &LinuxContainerResources {
                cpu_shares: 2,
                ..Default::default()
            },
        )
    }

    /// Creates a pod cgroup and applies its pod-level limits.
    pub fn create_pod(
        &self,
        path: &str,
        resources: Option<&LinuxContainerResources>,
    ) -> Result<()> {
        self.create(path)?;
        if let Some(r) = resources {
            self.set_resources(path, r)?;
        }
        Ok(())
    }

    /// Whether cgroup `path` exists in any hierarchy.
    pub fn exists(&self, path: &str) -> bool {
        self.hierarchies.iter().any(|h| h.dir(path).is_dir())
    }

    /// Whether any process is in cgroup `path` or below it, in any
    /// hierarchy (a cgroup of someone else's that must not be removed).
    pub fn has_processes(&self, path: &str) -> bool {
        fn busy(dir: &Path) -> bool {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            if !procs.trim().is_empty() {
                return true;
            }
            std::fs::read_dir(dir).is_ok_and(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .any(|e| busy(&e.path()))
            })
        }
        self.hierarchies.iter().any(|h| busy(&h.dir(path)))
    }

    /// Names of the child cgroups of `path` (union over the hierarchies).
    pub fn children(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .hierarchies
            .iter()
            .filter_map(|h| std::fs::read_dir(h.dir(path)).ok())
            .flat_map(|rd| rd.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Removes cgroup `path` and every cgroup below it, leaf first, in every
    /// hierarchy. A cgroup the kernel still finds busy (a process leaving,
    /// runc just deleted a child) is retried for about a second; absent ones
    /// are fine.
    pub fn remove(&self, path: &str) -> Result<()> {
        if path.trim_matches('/').is_empty() {
            bail!("refusing to remove a hierarchy root");
        }
        let mut first_err = None;
        for h in &self.hierarchies {
            if let Err(e) = remove_tree(&h.dir(path)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Usage of cgroup `path` from cgroupfs.
    pub fn stats(&self, path: &str) -> Result<CgroupStats> {
        let mut s = CgroupStats::default();
        if self.unified {
            // Each controller's files exist only when it is enabled; cpu.stat
            // (usage) is the core's and always there.
            let dir = self.hierarchies[0].dir(path);
            if self.has_controller("memory") {
                let mem_stat = read_trim(&dir, "memory.stat")?;
                s.memory_usage = read_u64(&dir, "memory.current")?;
                s.memory_rss = keyed_value(&mem_stat, "anon").unwrap_or(0);
                let inactive = keyed_value(&mem_stat, "inactive_file").unwrap_or(0);
                s.memory_working_set = s.memory_usage.saturating_sub(inactive);
                let max = read_trim(&dir, "memory.max")?;
                s.memory_limit = max.parse().ok();
                s.oom_kills =
                    keyed_value(&read_trim(&dir, "memory.events")?, "oom_kill").unwrap_or(0);
            }
            s.cpu_usage_ns =
                keyed_value(&read_trim(&dir, "cpu.stat")?, "usage_usec").unwrap_or(0) * 1000;
            if self.has_controller("pids") {
                s.pids = read_u64(&dir, "pids.current")?;
            }
            return Ok(s);
        }
        if let Some(h) = self.with("memory") {
            let dir = h.dir(path);
            let mem_stat = read_trim(&dir, "memory.stat")?;
            s.memory_usage = read_u64(&dir, "memory.usage_in_bytes")?;
            s.memory_rss = keyed_value(&mem_stat, "total_rss").unwrap_or(0);
            let inactive = keyed_value(&mem_stat, "total_inactive_file").unwrap_or(0);
            s.memory_working_set = s.memory_usage.saturating_sub(inactive);
            let limit = read_u64(&dir, "memory.limit_in_bytes")?;
            s.memory_limit = (limit < V1_UNLIMITED).then_some(limit);
            s.oom_kills =
                keyed_value(&read_trim(&dir, "memory.oom_control")?, "oom_kill").unwrap_or(0);
        }
        if let Some(h) = self.with("cpuacct") {
            s.cpu_usage_ns = read_u64(&h.dir(path), "cpuacct.usage")?;
        }
        if let Some(h) = self.with("pids") {
            s.pids = read_u64(&h.dir(path), "pids.current")?;
        }
        Ok(s)
    }
}

/// Enables the delegatable controllers the parent has in its
/// `cgroup.subtree_control`, one by one so the error names the refused one.
fn delegate_controllers(parent: &Path) -> Result<()> {
    let available = read_trim(parent, "cgroup.controllers")?;
    let enabled = read_trim(parent, "cgroup.subtree_control")?;
    for c in V2_DELEGATE {
        let has = |s: &str| s.split_whitespace().any(|x| x == *c);
        if has(&available) && !has(&enabled) {
            write(parent, "cgroup.subtree_control", &format!("+{c}"))?;
        }
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("list cgroup {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("list cgroup {}", dir.display()))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&e.path())?;
        }
    }
    let mut delay = Duration::from_millis(10);
    for attempt in 0.. {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 7 => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let n = procs.lines().count();
                return Err(e).with_context(|| {
                    format!("remove cgroup {} ({n} processes left in it)", dir.display())
                });
            }
        }
    }
    unreachable!("the retry loop returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpuset rw,nosuid shared:14 - cgroup cgroup rw,cpuset,clone_children
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
90 22 0:30 /docker/x /mnt/inner rw - cgroup cgroup rw,memory
";

    const V2: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_layout() {
        let c = layout_from_mounts(&mountinfo::parse(HYBRID)).unwrap();
        assert!(!c.unified);
        let names: Vec<_> = c
            .hierarchies
            .iter()
            .map(|h| h.controllers.join(","))
            .collect();
        assert_eq!(
            names,
            [
                "name=systemd",
                "cpu,cpuacct",
                "memory",
                "cpuset",
                "pids",
                ""
            ]
        );
        assert!(c.hierarchies.last().unwrap().v2);
        assert_eq!(
            c.with("cpuacct").unwrap().dir("/kubepods/pod1"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1")
        );
        assert_eq!(
            c.with("memory").unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn pure_v2_layout() {
        let c = layout_from_mounts(&mountinfo::parse(V2)).unwrap();
        assert!(c.unified);
        assert_eq!(c.hierarchies.len(), 1);
        assert_eq!(
            c.with("memory").unwrap().dir("/a/b"),
            PathBuf::from("/sys/fs/cgroup/a/b")
        );
        assert!(layout_from_mounts(&[]).is_err());
    }

    #[test]
    fn weight_and_cpu_max() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10000);
        assert_eq!(cpu_max(50_000, 100_000), "50000 100000");
        assert_eq!(cpu_max(0, 100_000), "max 100000");
    }

    fn fake(tag: &str) -> (PathBuf, Cgroups) {
        let base =
            std::env::temp_dir().join(format!("picolet-cg-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let h = |d: &str, c: &[&str]| {
            std::fs::create_dir_all(base.join(d)).unwrap();
            Hierarchy {
                mount_point: base.join(d),
                controllers: c.iter().map(|s| s.to_string()).collect(),
                v2: c.is_empty(),
            }
        };
        let cg = Cgroups {
            unified: false,
            v2_controllers: None,
            hierarchies: vec![
                h("memory", &["memory"]),
                h("pids", &["pids"]),
                h("unified", &[]),
            ],
        };
        (base, cg)
    }

    #[test]
    fn create_and_remove_leaf_first_in_every_hierarchy() {
        let (base, cg) = fake("tree");
        cg.create("/root/kubepods/besteffort/pod1").unwrap();
        cg.create("/root/kubepods/besteffort/pod1/c1").unwrap();
        cg.create("/root/kubepods/besteffort/pod1").unwrap();
        for h in ["memory", "pids", "unified"] {
            assert!(base
                .join(h)
                .join("root/kubepods/besteffort/pod1/c1")
                .is_dir());
        }
        assert!(cg.exists("/root/kubepods"));
        cg.remove("/root/kubepods/besteffort/pod1").unwrap();
        for h in ["memory", "pids", "unified"] {
            assert!(!base.join(h).join("root/kubepods/besteffort/pod1").exists());
            assert!(base.join(h).join("root/kubepods/besteffort").is_dir());
        }
        cg.remove("/root").unwrap();
        cg.remove("/root").unwrap();
        assert!(!cg.exists("/root"));
        assert!(cg.remove("/").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn refused_writes_name_file_and_value() {
        let (base, cg) = fake("write");
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 1 << 26,
            ..Default::default()
        };
        let e = format!("{:#}", cg.set_resources("/absent", &r).unwrap_err());
        let file = base.join("memory/absent/memory.limit_in_bytes");
        assert!(
            e.contains(&format!("write \"67108864\" to {}", file.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn missing_controllers_v2_from_cgroup_controllers_v1_from_mounts() {
        let mut v2 = layout_from_mounts(&mountinfo::parse(V2)).unwrap();
        assert!(v2.missing_controllers().is_empty(), "not read: all assumed");
        // a Raspberry Pi OS kernel without cgroup_enable=memory, no cpuset
        v2.v2_controllers = Some(strings(&["cpu", "io", "pids", "rdma", "misc"]));
        assert_eq!(v2.missing_controllers(), ["memory", "cpuset", "hugetlb"]);
        assert!(v2.has_controller("cpu") && !v2.has_controller("memory"));
        // v1: what is mounted; io is blkio there
        let v1 = layout_from_mounts(&mountinfo::parse(HYBRID)).unwrap();
        assert_eq!(v1.missing_controllers(), ["hugetlb", "io"]);
    }

    #[test]
    fn limits_of_missing_controllers_are_left_out() {
        let r = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 1 << 26,
            oom_score_adj: -997,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            pids_limit: 128,
            unified: [("memory.high", "1M"), ("cpu.idle", "1"), ("cgroup.x", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(without_missing(&r, &[]), r);
        let m = without_missing(&r, &strings(&["memory", "cpuset", "hugetlb"]));
        assert_eq!(m.memory_limit_in_bytes, 0);
        assert_eq!((m.cpuset_cpus.as_str(), m.cpuset_mems.as_str()), ("", ""));
        assert_eq!(
            (m.cpu_shares, m.cpu_quota, m.cpu_period),
            (512, 50_000, 100_000)
        );
        assert_eq!((m.pids_limit, m.oom_score_adj), (128, -997));
        assert_eq!(
            m.unified.keys().collect::<Vec<_>>(),
            ["cgroup.x", "cpu.idle"]
        );
        let c = without_missing(&r, &strings(&["cpu", "pids"]));
        assert_eq!(
            (c.cpu_shares, c.cpu_quota, c.cpu_period, c.pids_limit),
            (0, 0, 0, 0)
        );
        assert_eq!(c.memory_limit_in_bytes, 1 << 26);
        assert!(!c.unified.contains_key("cpu.idle"));
    }

    #[test]
    fn v2_without_memory_sets_the_rest_and_stats_still_read() {
        let base = std::env::temp_dir().join(format!("picolet-cg-unit-v2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("pod1")).unwrap();
        let cg = Cgroups {
            unified: true,
            hierarchies: vec![Hierarchy {
                mount_point: base.clone(),
                controllers: Vec::new(),
                v2: true,
            }],
            v2_controllers: Some(strings(&["cpu", "io", "pids"])),
        };
        let r = LinuxContainerResources {
            cpu_shares: 1024,
            memory_limit_in_bytes: 1 << 26,
            pids_limit: 64,
            ..Default::default()
        };
        cg.set_resources("/pod1", &r).unwrap();
        let dir = base.join("pod1");
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.weight")).unwrap(),
            "39"
        );
        assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap(), "64");
        assert!(!dir.join("memory.max").exists());
        std::fs::write(dir.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n").unwrap();
        std::fs::write(dir.join("pids.current"), "3\n").unwrap();
        let s = cg.stats("/pod1").unwrap();
        assert_eq!((s.cpu_usage_ns, s.pids, s.oom_kills), (7000, 3, 0));
        assert_eq!(s.memory_limit, None);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn keyed_values() {
        let t = "anon 10\ninactive_file 3\noom_kill 2\n";
        assert_eq!(keyed_value(t, "inactive_file"), Some(3));
        assert_eq!(keyed_value(t, "oom_kill"), Some(2));
        assert_eq!(keyed_value(t, "file"), None);
    }
}
