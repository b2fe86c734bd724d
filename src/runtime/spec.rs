//! Runtime side: OCI runtime specs (`config.json`) for pod sandboxes and
//! containers, built from the CRI-shaped configs the way containerd's CRI
//! plugin builds them, plus the per-pod files every container binds
//! (/etc/hosts, /etc/hostname, /etc/resolv.conf, /dev/shm, termination logs).
//!
//! Own minimal serde structs (the subset runc reads), no oci-spec crate.

use crate::image::ImageConfig;
use crate::pause::{PauseBinary, PAUSE_PATH};
use crate::runtime::cgroups::without_missing;
use crate::runtime::types::{
    self, ContainerConfig, DnsConfig, LinuxContainerSecurityContext, MountPropagation,
    NamespaceMode, NamespaceOptions, PodSandboxConfig, StringMap,
};
use crate::util::mountinfo;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const OCI_VERSION: &str = "1.0.2";
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// containerd's default capability set for containers.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
/// Masked and read-only /proc and /sys paths (kubelet's defaults for
/// procMount Default, the same set containerd's default spec has).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// containerd's sandbox `oom_score_adj`.
pub const SANDBOX_OOM_SCORE_ADJ: i64 = -998;

/// Capability names by bit number (the kernel's order).
const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

// ---------------------------------------------------------------------------
// The OCI runtime spec (the subset picolet writes)

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub oci_version: String,
    pub process: Process,
    pub root: Root,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub linux: Linux,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminal: bool,
    pub user: User,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<LinuxCapabilities>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_new_privileges: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxCapabilities {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    #[serde(default)]
    pub options: Vec<String>,
}

impl Mount {
    fn new(destination: &str, kind: &str, source: &str, options: &[&str]) -> Self {
        Mount {
            destination: destination.into(),
            kind: kind.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroups_path: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readonly_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_propagation: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Namespace {
    fn new(kind: &str) -> Self {
        Namespace {
            kind: kind.into(),
            path: None,
        }
    }
    fn at(kind: &str, path: impl Into<String>) -> Self {
        Namespace {
            kind: kind.into(),
            path: Some(path.into()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub devices: Vec<DeviceCgroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Pids>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unified: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCgroup {
    pub allow: bool,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    #[serde(default)]
    pub access: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mems: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids {
    pub limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    pub major: i64,
    pub minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

impl Spec {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).context("serialize OCI spec")
    }

    /// Writes `config.json` into `bundle`.
    pub fn write(&self, bundle: &Path) -> Result<()> {
        crate::util::fs::write_atomic(&bundle.join("config.json"), &self.to_json()?)
    }
}

// ---------------------------------------------------------------------------
// Errors and inputs

/// Why no spec could be built. `Config` is what upstream reports as
/// `CreateContainerConfigError` (runAsNonRoot); the rest as
/// `CreateContainerError`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Config(String),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

fn other(msg: impl std::fmt::Display) -> SpecError {
    SpecError::Other(anyhow::anyhow!("{msg}"))
}

/// Where the pod's shared pieces are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxContext {
    /// The pod's network namespace (bind mount); `None` with hostNetwork,
    /// or for a sandbox that gets a fresh one from runc.
    pub netns_path: Option<PathBuf>,
    /// The sandbox (pause) process, whose ipc/uts/pid namespaces containers
    /// join; `None` while building the sandbox's own spec.
    pub pause_pid: Option<u32>,
    /// The per-pod directory holding `etc-hosts`, `hostname`, `resolv.conf`,
    /// `shm/` and the termination message files (see [`PodFiles`]).
    pub pod_dir: PathBuf,
}

/// What picolet itself may hand to containers, detected once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// Capabilities picolet holds (effective and bounding), in kernel order.
    pub capabilities: Vec<String>,
    /// `CAP_SYS_RESOURCE` held: a negative `oom_score_adj` is allowed.
    pub sys_resource: bool,
    /// picolet's own `oom_score_adj` (the floor without CAP_SYS_RESOURCE).
    pub oom_score_adj: i64,
    /// Pure cgroup v2: containers get a cgroup namespace.
    pub cgroup_unified: bool,
    /// A memory limit also caps swap.
    pub swap_accounting: bool,
    /// cgroup controllers this host lacks: their limits are left out of
    /// the spec (see [`crate::runtime::cgroups::without_missing`]).
    pub cgroup_missing: Vec<String>,
    /// The node's host name (hostNetwork pods, `HOSTNAME`).
    pub hostname: String,
}

/// Parses the `CapEff` and `CapBnd` masks from `/proc/<pid>/status`.
pub fn parse_status_caps(status: &str) -> Result<(u64, u64)> {
    let get = |key: &str| -> Result<u64> {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in process status"))?;
        u64::from_str_radix(v.trim(), 16).with_context(|| format!("{key}: bad mask {v:?}"))
    };
    Ok((get("CapEff:")?, get("CapBnd:")?))
}

/// The capability names of a mask (bits the table does not know are skipped).
pub fn capability_names(mask: u64) -> Vec<String> {
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

impl HostInfo {
    /// Reads picolet's capabilities, OOM score and the cgroup layout.
    pub fn detect(cgroups: &crate::runtime::cgroups::Cgroups) -> Result<Self> {
        let status =
            std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
        let (eff, bnd) = parse_status_caps(&status)?;
        let held = eff & bnd;
        let adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .context("read /proc/self/oom_score_adj")?;
        Ok(HostInfo {
            capabilities: capability_names(held),
            sys_resource: held & (1 << 24) != 0,
            oom_score_adj: adj
                .trim()
                .parse()
                .with_context(|| format!("oom_score_adj {adj:?}"))?,
            cgroup_unified: cgroups.unified,
            swap_accounting: cgroups.swap_accounting(),
            cgroup_missing: cgroups.missing_controllers(),
            hostname: crate::config::hostname()?,
        })
    }

    fn has_cap(&self, c: &str) -> bool {
        self.capabilities.iter().any(|x| x == c)
    }
}

/// Without CAP_SYS_RESOURCE the kernel refuses an `oom_score_adj` below the
/// caller's own (runc then fails opaquely): raise it to picolet's own, as
/// containerd's `restrict_oom_score_adj` does.
pub fn clamp_oom_score_adj(adj: i64, host: &HostInfo) -> i64 {
    if !host.sys_resource && adj < host.oom_score_adj {
        host.oom_score_adj
    } else {
        adj
    }
}

// ---------------------------------------------------------------------------
// Process: args, env, cwd

/// The process args by the Kubernetes rules: `command` replaces the image
/// Entrypoint and drops its Cmd; `args` replace Cmd.
pub fn process_args(
    command: &[String],
    args: &[String],
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let mut cmd: Vec<String> = command.to_vec();
    let mut a: Vec<String> = args.to_vec();
    if cmd.is_empty() {
        if a.is_empty() {
            a = image.cmd.clone();
        }
        // An Entrypoint of [""] means "none" (docker's reset).
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            cmd = image.entrypoint.clone();
        }
    }
    cmd.extend(a);
    if cmd.is_empty() {
        return Err(other("no command specified"));
    }
    Ok(cmd)
}

/// Sets `KEY=value` in an env list in place (appends when new); an entry
/// without `=` unsets the key.
fn set_env(list: &mut Vec<String>, entry: &str) {
    let key = entry.split_once('=').map_or(entry, |(k, _)| k);
    let pos = list
        .iter()
        .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key);
    match (entry.contains('='), pos) {
        (true, Some(i)) => list[i] = entry.to_string(),
        (true, None) => list.push(entry.to_string()),
        (false, Some(i)) => {
            list.remove(i);
        }
        (false, None) => {}
    }
}

/// The process environment as containerd builds it: default PATH, HOSTNAME,
/// the image's Env, then the container's (later wins).
pub fn process_env(hostname: &str, image_env: &[String], envs: &[(String, String)]) -> Vec<String> {
    let mut out = vec![DEFAULT_PATH_ENV.to_string()];
    set_env(&mut out, &format!("HOSTNAME={hostname}"));
    for e in image_env {
        set_env(&mut out, e);
    }
    for (k, v) in envs {
        set_env(&mut out, &format!("{k}={v}"));
    }
    out
}

/// Working directory: the container's, else the image's, else `/`.
pub fn process_cwd(working_dir: &str, image: &ImageConfig) -> String {
    [working_dir, image.working_dir.as_str()]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string()
}

// ---------------------------------------------------------------------------
// Users and groups

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parses /etc/passwd; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            if f.len() < 4 || f[0].is_empty() || f[0].starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// Parses /etc/group; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            if f.len() < 3 || f[0].is_empty() || f[0].starts_with('#') {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Names the container in runAsNonRoot errors as upstream (`name_ns(uid)`).
pub struct PodRef<'a> {
    pub pod: &'a types::PodSandboxMetadata,
    pub container: &'a str,
}

impl std::fmt::Display for PodRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pod: \"{}_{}({})\", container: {}",
            self.pod.name, self.pod.namespace, self.pod.uid, self.container
        )
    }
}

/// Resolves the process user as kubelet + containerd do: runAsUser, else
/// the runtime's user name, else the image USER's user part (its group is
/// ignored, as upstream), else root; the primary group is runAsGroup or the
/// passwd entry's (0 when the uid has none); additional groups are the
/// primary one, the user's /etc/group memberships and supplementalGroups,
/// sorted. runAsNonRoot is checked on the way.
pub fn resolve_user(
    sc: &LinuxContainerSecurityContext,
    image_user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
    who: &PodRef<'_>,
) -> Result<User, SpecError> {
    let image_part = image_user.split(':').next().unwrap_or("");
    let (uid, name): (Option<i64>, Option<&str>) = if let Some(u) = sc.run_as_user {
        (Some(u), None)
    } else if !sc.run_as_username.is_empty() {
        (None, Some(sc.run_as_username.as_str()))
    } else if image_part.is_empty() {
        (Some(0), None)
    } else if let Ok(n) = image_part.parse::<i64>() {
        (Some(n), None)
    } else {
        (None, Some(image_part))
    };
    if sc.run_as_non_root {
        match (sc.run_as_user, uid, name) {
            (Some(0), _, _) => {
                return Err(SpecError::Config(format!("container's runAsUser breaks non-root policy ({who})")))
            }
            (Some(_), _, _) => {}
            (None, Some(0), _) => {
                return Err(SpecError::Config(format!(
                    "container has runAsNonRoot and image will run as root ({who})"
                )))
            }
            (None, None, Some(n)) => {
                return Err(SpecError::Config(format!(
                    "container has runAsNonRoot and image has non-numeric user ({n}), cannot verify user is non-root ({who})"
                )))
            }
            _ => {}
        }
    }
    let id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| other(format!("{what} {v} is out of range")))
    };
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let by_name = |n: &str| -> Result<&PasswdEntry, SpecError> {
        if passwd.is_none() {
            return Err(other(format!(
                "unable to find user {n}: no /etc/passwd in the image"
            )));
        }
        users.iter().find(|u| u.name == n).ok_or_else(|| {
            other(format!(
                "unable to find user {n}: no matching entries in passwd file"
            ))
        })
    };
    let group_id = sc.run_as_group.map(|g| id(g, "runAsGroup")).transpose()?;
    let (uid, gid, user_name) = match (uid, name) {
        (Some(u), _) => {
            let u = id(u, "runAsUser")?;
            let entry = users.iter().find(|e| e.uid == u);
            (
                u,
                group_id.unwrap_or(entry.map_or(0, |e| e.gid)),
                entry.map(|e| e.name.clone()),
            )
        }
        (None, Some(n)) => {
            let e = by_name(n)?;
            (e.uid, group_id.unwrap_or(e.gid), Some(n.to_string()))
        }
        (None, None) => unreachable!("a uid or a name is always chosen"),
    };
    let mut gids = vec![gid];
    if let Some(user_name) = user_name {
        for g in group.map(parse_group).unwrap_or_default() {
            if g.name != user_name && g.members.contains(&user_name) {
                gids.push(g.gid);
            }
        }
    }
    for g in &sc.supplemental_groups {
        gids.push(id(*g, "supplemental group")?);
    }
    gids.sort_unstable();
    gids.dedup();
    Ok(User {
        uid,
        gid,
        additional_gids: gids,
    })
}

/// Resolves `path` inside `root` as if `root` were `/`: symlinks are
/// followed relative to `root` and `..` never climbs out of it.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: VecDeque<String> = path.split('/').map(str::to_string).collect();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&c);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    bail!(
                        "{path}: too many levels of symbolic links in {}",
                        root.display()
                    );
                }
                let target = std::fs::read_link(&full)
                    .with_context(|| format!("readlink {}", full.display()))?;
                let t = target.to_string_lossy();
                if t.starts_with('/') {
                    resolved = PathBuf::new();
                }
                let mut next: VecDeque<String> = t.split('/').map(str::to_string).collect();
                next.extend(pending);
                pending = next;
            }
            Ok(_) => resolved = candidate,
            Err(e) if e.kind() == ErrorKind::NotFound => resolved = candidate,
            Err(e) => return Err(e).with_context(|| format!("stat {}", full.display())),
        }
    }
    Ok(root.join(resolved))
}

/// Reads a small text file of the container's rootfs (no symlink leaves it);
/// `None` when absent.
pub fn read_rootfs_file(root: &Path, path: &str) -> Result<Option<String>> {
    let p = resolve_in_root(root, path)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("open {}", p.display())),
    };
    let mut s = String::new();
    f.by_ref()
        .take(4 << 20)
        .read_to_string(&mut s)
        .with_context(|| format!("read {}", p.display()))?;
    Ok(Some(s))
}

// ---------------------------------------------------------------------------
// Capabilities, masked paths

fn cap_name(c: &str) -> String {
    let u = c.to_ascii_uppercase();
    if u.starts_with("CAP_") {
        u
    } else {
        format!("CAP_{u}")
    }
}

/// The container's capabilities (containerd's `WithCapabilities`): the
/// default set (what picolet holds of it), `ALL` added then dropped, then
/// single adds and drops, with or without the `CAP_` prefix; privileged
/// gets every capability picolet holds.
pub fn capabilities(
    sc: &LinuxContainerSecurityContext,
    host: &HostInfo,
) -> Result<Vec<String>, SpecError> {
    if sc.privileged {
        return Ok(host.capabilities.clone());
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .filter(|c| host.has_cap(c))
        .map(|c| c.to_string())
        .collect();
    if sc.capabilities.add.iter().any(is_all) {
        caps = host.capabilities.clone();
    }
    if sc.capabilities.drop.iter().any(is_all) {
        caps.clear();
    }
    for a in sc.capabilities.add.iter().filter(|c| !is_all(c)) {
        let n = cap_name(a);
        if !CAPABILITY_NAMES.contains(&n.as_str()) {
            return Err(other(format!("unknown capability {a:?}")));
        }
        if !host.has_cap(&n) {
            return Err(other(format!(
                "capability {n} is not in picolet's own capability set, so no container can have it"
            )));
        }
        if !caps.contains(&n) {
            caps.push(n);
        }
    }
    for d in sc.capabilities.drop.iter().filter(|c| !is_all(c)) {
        let n = cap_name(d);
        caps.retain(|c| *c != n);
    }
    Ok(caps)
}

fn linux_capabilities(caps: Vec<String>) -> LinuxCapabilities {
    LinuxCapabilities {
        bounding: caps.clone(),
        effective: caps.clone(),
        inheritable: Vec::new(),
        permitted: caps,
        ambient: Vec::new(),
    }
}

/// (masked, read-only) paths: none for privileged or procMount Unmasked,
/// the given lists when set, else the defaults.
pub fn masked_paths(sc: &LinuxContainerSecurityContext) -> (Vec<String>, Vec<String>) {
    if sc.privileged || sc.unmasked_proc {
        return (Vec::new(), Vec::new());
    }
    let pick = |given: &Vec<String>, def: &[&str]| {
        if given.is_empty() {
            def.iter().map(|s| s.to_string()).collect()
        } else {
            given.clone()
        }
    };
    (
        pick(&sc.masked_paths, &DEFAULT_MASKED_PATHS),
        pick(&sc.readonly_paths, &DEFAULT_READONLY_PATHS),
    )
}

// ---------------------------------------------------------------------------
// Sysctls

/// `net/ipv4/ip_forward` -> `net.ipv4.ip_forward` (upstream normalisation).
pub fn normalize_sysctl(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// Only namespaced sysctls may be set, and not in a namespace shared with
/// the host (upstream `NamespacedBy` and its hostNetwork/hostIPC checks).
pub fn check_sysctls(
    sysctls: &StringMap,
    ns: &NamespaceOptions,
) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for (k, v) in sysctls {
        let name = normalize_sysctl(k);
        let ipc = name == "kernel.sem"
            || name.starts_with("kernel.shm")
            || name.starts_with("kernel.msg")
            || name.starts_with("fs.mqueue.");
        let net = name.starts_with("net.");
        if !ipc && !net {
            return Err(other(format!(
                "sysctl {name:?} is not namespaced and cannot be set for a pod"
            )));
        }
        if ipc && ns.ipc == NamespaceMode::Node {
            return Err(other(format!(
                "sysctl {name:?} not allowed with host ipc enabled"
            )));
        }
        if net && ns.network == NamespaceMode::Node {
            return Err(other(format!(
                "sysctl {name:?} not allowed with host net enabled"
            )));
        }
        out.insert(name, v.clone());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Generated /etc files

const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

fn host_alias_entries(aliases: &[(String, Vec<String>)]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for (ip, names) in aliases {
        s.push_str(&format!("{ip}\t{}\n", names.join("\t")));
    }
    s
}

/// The kubelet's managed /etc/hosts for a pod with its own network.
pub fn managed_hosts(
    pod_ips: &[String],
    hostname: &str,
    domain: &str,
    aliases: &[(String, Vec<String>)],
) -> String {
    let mut s = String::from(MANAGED_HOSTS_HEADER);
    s.push_str("127.0.0.1\tlocalhost\n");
    s.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    s.push_str("fe00::0\tip6-localnet\n");
    s.push_str("fe00::0\tip6-mcastprefix\n");
    s.push_str("fe00::1\tip6-allnodes\n");
    s.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        if domain.is_empty() {
            s.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            s.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
        }
    }
    s.push_str(&host_alias_entries(aliases));
    s
}

/// The node's /etc/hosts for a hostNetwork pod, with the kubelet's header
/// and the pod's host aliases.
pub fn node_hosts(node_hosts: &str, aliases: &[(String, Vec<String>)]) -> String {
    format!(
        "{MANAGED_HOSTS_HEADER_HOST_NETWORK}{node_hosts}{}",
        host_alias_entries(aliases)
    )
}

/// resolv.conf from a DNS config (containerd's format); empty when the
/// config has nothing.
pub fn resolv_conf(d: &DnsConfig) -> String {
    let mut s = String::new();
    if !d.searches.is_empty() {
        s.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for ns in &d.servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if !d.options.is_empty() {
        s.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    s
}

/// The short host name for /etc/hosts (the sandbox's host name may be the
/// FQDN with setHostnameAsFQDN).
fn short_hostname<'a>(hostname: &'a str, domain: &str) -> &'a str {
    if domain.is_empty() {
        return hostname;
    }
    hostname
        .strip_suffix(domain)
        .and_then(|h| h.strip_suffix('.'))
        .unwrap_or(hostname)
}

/// The files of one pod directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    pub dir: PathBuf,
}

impl PodFiles {
    pub fn new(pod_dir: &Path) -> Self {
        PodFiles {
            dir: pod_dir.to_path_buf(),
        }
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("etc-hosts")
    }
    pub fn hostname(&self) -> PathBuf {
        self.dir.join("hostname")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    pub fn shm(&self) -> PathBuf {
        self.dir.join("shm")
    }
    /// The host file a container's termination message is written to.
    pub fn termination_log(&self, container_name: &str, container_id: &str) -> PathBuf {
        self.dir
            .join("containers")
            .join(container_name)
            .join(container_id)
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    // In place (not rename): running containers bind this inode.
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Writes the pod's /etc files into its directory and mounts its /dev/shm
/// tmpfs (not for hostIPC pods). Idempotent; call again when the pod IPs
/// change (the files are rewritten in place).
pub fn write_pod_files(
    pod_dir: &Path,
    cfg: &PodSandboxConfig,
    pod_ips: &[String],
    host: &HostInfo,
) -> Result<()> {
    let f = PodFiles::new(pod_dir);
    std::fs::create_dir_all(pod_dir).with_context(|| format!("create {}", pod_dir.display()))?;
    let hostname = if cfg.hostname.is_empty() {
        &host.hostname
    } else {
        &cfg.hostname
    };
    write_file(&f.hostname(), format!("{hostname}\n").as_bytes(), 0o644)?;
    let hosts = if cfg.namespace_options.network == NamespaceMode::Node {
        let node = std::fs::read_to_string("/etc/hosts").context("read /etc/hosts")?;
        node_hosts(&node, &cfg.host_aliases)
    } else {
        let short = short_hostname(hostname, &cfg.host_domain);
        managed_hosts(pod_ips, short, &cfg.host_domain, &cfg.host_aliases)
    };
    write_file(&f.hosts(), hosts.as_bytes(), 0o644)?;
    let resolv = cfg.dns_config.as_ref().map(resolv_conf).unwrap_or_default();
    let resolv = if resolv.is_empty() {
        // As containerd: nothing configured -> the host's file.
        std::fs::read("/etc/resolv.conf").unwrap_or_default()
    } else {
        resolv.into_bytes()
    };
    write_file(&f.resolv_conf(), &resolv, 0o644)?;
    if cfg.namespace_options.ipc != NamespaceMode::Node {
        mount_shm(&f.shm())?;
    }
    Ok(())
}

/// The pod's /dev/shm: a 64 MiB tmpfs, as containerd's default.
fn mount_shm(dir: &Path) -> Result<()> {
    use rustix::mount::{mount, MountFlags};
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if mountinfo::is_mount_point(&mountinfo::read()?, dir) {
        return Ok(());
    }
    mount(
        "shm",
        dir,
        "tmpfs",
        MountFlags::NOEXEC | MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=1777,size=67108864"),
    )
    .with_context(|| format!("mount tmpfs on {}", dir.display()))
}

/// Unmounts the pod's /dev/shm (the sandbox owns it); fine when not mounted.
pub fn release_pod_files(pod_dir: &Path) -> Result<()> {
    use rustix::mount::{unmount, UnmountFlags};
    let shm = PodFiles::new(pod_dir).shm();
    // Stacked mounts (a crash between two mounts) come off one by one.
    for _ in 0..8 {
        if !mountinfo::is_mount_point(&mountinfo::read()?, &shm) {
            return Ok(());
        }
        unmount(&shm, UnmountFlags::DETACH)
            .with_context(|| format!("unmount {}", shm.display()))?;
    }
    bail!("{}: still mounted after 8 unmounts", shm.display())
}

// ---------------------------------------------------------------------------
// Mounts

/// containerd's default mounts (without /run) plus the read-only cgroupfs.
pub fn default_mounts() -> Vec<Mount> {
    vec![
        Mount::new("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        Mount::new(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        Mount::new(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        Mount::new(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        Mount::new(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        Mount::new(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        Mount::new(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

fn clean(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// A CRI mount as an OCI bind mount (containerd's `WithMounts`).
pub fn bind_mount(m: &types::Mount) -> Mount {
    let prop = match m.propagation {
        MountPropagation::Private => "rprivate",
        MountPropagation::HostToContainer => "rslave",
        MountPropagation::Bidirectional => "rshared",
    };
    let rw = if m.readonly { "ro" } else { "rw" };
    Mount {
        destination: m.container_path.clone(),
        kind: "bind".into(),
        source: m.host_path.to_string_lossy().into_owned(),
        options: vec!["rbind".into(), prop.into(), rw.into()],
    }
}

/// Default mounts not overridden (same destination, or anything under /dev
/// when /dev itself is given) followed by the CRI mounts, parents first.
pub fn merge_mounts(defaults: Vec<Mount>, cri: &[types::Mount]) -> Vec<Mount> {
    let given: Vec<String> = cri.iter().map(|m| clean(&m.container_path)).collect();
    let dev_given = given.iter().any(|g| g == "/dev");
    let mut out: Vec<Mount> = defaults
        .into_iter()
        .filter(|m| {
            let d = clean(&m.destination);
            !(given.contains(&d) || (dev_given && d.starts_with("/dev/")))
        })
        .collect();
    let mut sorted: Vec<&types::Mount> = cri.iter().collect();
    sorted.sort_by_key(|m| {
        clean(&m.container_path)
            .split('/')
            .filter(|s| !s.is_empty())
            .count()
    });
    out.extend(sorted.into_iter().map(bind_mount));
    out
}

/// The root propagation the CRI mounts need (`rshared` wins over `rslave`).
fn rootfs_propagation(cri: &[types::Mount]) -> Option<String> {
    let mut p = None;
    for m in cri {
        match m.propagation {
            MountPropagation::Bidirectional => return Some("rshared".into()),
            MountPropagation::HostToContainer => p = Some("rslave".to_string()),
            MountPropagation::Private => {}
        }
    }
    p
}

/// Bidirectional needs a shared host mount, HostToContainer a shared or
/// slave one (containerd's `ensureShared` / `ensureSharedOrSlave`).
fn check_propagation(
    cri: &[types::Mount],
    mounts: &[mountinfo::MountInfo],
) -> Result<(), SpecError> {
    for m in cri {
        if m.propagation == MountPropagation::Private {
            continue;
        }
        let src = std::fs::canonicalize(&m.host_path)
            .with_context(|| format!("resolve {}", m.host_path.display()))?;
        let mi = mountinfo::mount_of(mounts, &src)
            .ok_or_else(|| other(format!("no mount found for {}", src.display())))?;
        let ok = match m.propagation {
            MountPropagation::Bidirectional => mi.is_shared(),
            _ => mi.is_shared() || mi.is_slave(),
        };
        if !ok {
            let want = if m.propagation == MountPropagation::Bidirectional {
                "a shared"
            } else {
                "a shared or slave"
            };
            return Err(other(format!(
                "path {:?} is mounted on {:?} but it is not {want} mount",
                src.display().to_string(),
                mi.mount_point.display().to_string()
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Resources, devices

/// OCI resources from CRI resources (containerd's `WithResources`), the
/// device cgroup denying all but runc's defaults, or allowing all.
pub fn resources(
    r: &types::LinuxContainerResources,
    allow_all_devices: bool,
    swap_accounting: bool,
) -> Resources {
    let cpu = Cpu {
        shares: (r.cpu_shares > 0).then_some(r.cpu_shares as u64),
        quota: (r.cpu_quota != 0).then_some(r.cpu_quota),
        period: (r.cpu_period > 0).then_some(r.cpu_period as u64),
        cpus: (!r.cpuset_cpus.is_empty()).then(|| r.cpuset_cpus.clone()),
        mems: (!r.cpuset_mems.is_empty()).then(|| r.cpuset_mems.clone()),
    };
    let memory = (r.memory_limit_in_bytes > 0).then(|| Memory {
        limit: Some(r.memory_limit_in_bytes),
        // No swap beyond the limit by default.
        swap: swap_accounting.then_some(r.memory_limit_in_bytes),
    });
    Resources {
        devices: vec![DeviceCgroup {
            allow: allow_all_devices,
            access: "rwm".into(),
            ..Default::default()
        }],
        memory,
        cpu: (cpu != Cpu::default()).then_some(cpu),
        pids: (r.pids_limit > 0).then_some(Pids {
            limit: r.pids_limit,
        }),
        unified: r.unified.clone(),
    }
}

/// Every device node of the host's /dev, for privileged containers
/// (containerd's `HostDevices`).
pub fn host_devices() -> Result<Vec<Device>> {
    fn walk(dir: &Path, out: &mut Vec<Device>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
            let e = e.with_context(|| format!("list {}", dir.display()))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let path = e.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            if ft.is_dir() {
                if !matches!(
                    &*name,
                    "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
                ) {
                    walk(&path, out)?;
                }
                continue;
            }
            if name == "console" {
                continue;
            }
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            let rdev = md.rdev();
            out.push(Device {
                kind: kind.into(),
                path: path.to_string_lossy().into_owned(),
                major: libc::major(rdev) as i64,
                minor: libc::minor(rdev) as i64,
                file_mode: Some(md.mode() & 0o7777),
                uid: Some(md.uid()),
                gid: Some(md.gid()),
            });
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Container spec

fn ns_path(pid: u32, ns: &str) -> String {
    format!("/proc/{pid}/ns/{ns}")
}

/// The container's namespaces: net by path (or the sandbox's) or host,
/// ipc/uts joined from the sandbox, pid per mode, a new mount namespace and
/// a cgroup namespace on pure cgroup v2 (not privileged), as containerd.
pub fn container_namespaces(
    ns: &NamespaceOptions,
    ctx: &SandboxContext,
    pause_pid: u32,
    cgroupns: bool,
) -> Vec<Namespace> {
    let mut v = Vec::new();
    match ns.pid {
        NamespaceMode::Container => v.push(Namespace::new("pid")),
        NamespaceMode::Pod => v.push(Namespace::at("pid", ns_path(pause_pid, "pid"))),
        NamespaceMode::Node => {}
    }
    if ns.network != NamespaceMode::Node {
        let p = match &ctx.netns_path {
            Some(p) => p.to_string_lossy().into_owned(),
            None => ns_path(pause_pid, "net"),
        };
        v.push(Namespace::at("network", p));
        v.push(Namespace::at("uts", ns_path(pause_pid, "uts")));
    }
    if ns.ipc != NamespaceMode::Node {
        v.push(Namespace::at("ipc", ns_path(pause_pid, "ipc")));
    }
    v.push(Namespace::new("mount"));
    if cgroupns {
        v.push(Namespace::new("cgroup"));
    }
    v
}

fn cgroups_path(parent: &str, id: &str) -> String {
    format!("{}/{id}", parent.trim_end_matches('/'))
}

/// The termination message file of a container, created world-writable
/// (the container's user may be anyone) as the kubelet does.
fn create_termination_log(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .context("termination log path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The CRI mounts containerd and the kubelet add: /etc/hostname, /etc/hosts,
/// /etc/resolv.conf (read-only with a read-only rootfs), the pod's /dev/shm
/// (the host's with hostIPC), then the container's own mounts, then the
/// termination message file. A container mount at the same path wins.
fn container_cri_mounts(
    id: &str,
    container: &ContainerConfig,
    ctx: &SandboxContext,
) -> Vec<types::Mount> {
    let f = PodFiles::new(&ctx.pod_dir);
    let sc = &container.security_context;
    let has = |p: &str| {
        container
            .mounts
            .iter()
            .any(|m| clean(&m.container_path) == p)
    };
    let mut v = Vec::new();
    for (dst, src) in [
        ("/etc/hostname", f.hostname()),
        ("/etc/hosts", f.hosts()),
        ("/etc/resolv.conf", f.resolv_conf()),
    ] {
        if !has(dst) {
            v.push(types::Mount {
                container_path: dst.into(),
                host_path: src,
                readonly: sc.readonly_rootfs,
                propagation: MountPropagation::Private,
            });
        }
    }
    if !has("/dev/shm") {
        let src = if sc.namespace_options.ipc == NamespaceMode::Node {
            PathBuf::from("/dev/shm")
        } else {
            f.shm()
        };
        v.push(types::Mount {
            container_path: "/dev/shm".into(),
            host_path: src,
            readonly: false,
            propagation: MountPropagation::Private,
        });
    }
    v.extend(container.mounts.iter().cloned());
    if !container.termination_message_path.is_empty() {
        v.push(types::Mount {
            container_path: container.termination_message_path.clone(),
            host_path: f.termination_log(&container.metadata.name, id),
            readonly: false,
            propagation: MountPropagation::Private,
        });
    }
    v
}

/// The OCI spec of container `id` of a pod. `rootfs` is where the
/// container's root filesystem can be read now (for /etc/passwd and
/// /etc/group); the spec's `root.path` is the bundle's `rootfs`.
/// Creates the termination message file and missing bind sources.
pub fn container_spec(
    id: &str,
    sandbox: &PodSandboxConfig,
    container: &ContainerConfig,
    image: &ImageConfig,
    ctx: &SandboxContext,
    rootfs: &Path,
    host: &HostInfo,
) -> Result<Spec, SpecError> {
    let pause_pid = ctx
        .pause_pid
        .ok_or_else(|| other("the pod sandbox has no running process to join"))?;
    if !container.devices.is_empty() {
        return Err(other("devices are not supported yet"));
    }
    let sc = &container.security_context;
    let hostname = if sandbox.hostname.is_empty() {
        host.hostname.as_str()
    } else {
        sandbox.hostname.as_str()
    };
    let passwd = read_rootfs_file(rootfs, "/etc/passwd")?;
    let group = read_rootfs_file(rootfs, "/etc/group")?;
    let who = PodRef {
        pod: &sandbox.metadata,
        container: &container.metadata.name,
    };
    let user = resolve_user(sc, &image.user, passwd.as_deref(), group.as_deref(), &who)?;
    let files = PodFiles::new(&ctx.pod_dir);
    for f in [files.hosts(), files.hostname(), files.resolv_conf()] {
        if !f.is_file() {
            return Err(other(format!(
                "{} is missing: the pod's files are not written",
                f.display()
            )));
        }
    }
    for m in &container.mounts {
        // containerd creates missing bind sources as directories.
        if !m.host_path.exists() {
            std::fs::create_dir_all(&m.host_path)
                .with_context(|| format!("create mount source {}", m.host_path.display()))?;
        }
    }
    if !container.termination_message_path.is_empty() {
        create_termination_log(&files.termination_log(&container.metadata.name, id))?;
    }
    let cri = container_cri_mounts(id, container, ctx);
    check_propagation(&cri, &mountinfo::read()?)?;
    let mut mounts = merge_mounts(default_mounts(), &cri);
    if sc.privileged {
        // Privileged containers get writable sysfs and cgroupfs.
        for m in mounts
            .iter_mut()
            .filter(|m| m.kind == "sysfs" || m.kind == "cgroup")
        {
            for o in m.options.iter_mut().filter(|o| *o == "ro") {
                *o = "rw".into();
            }
        }
    }
    let (masked, readonly) = masked_paths(sc);
    Ok(Spec {
        oci_version: OCI_VERSION.into(),
        process: Process {
            terminal: container.tty,
            user,
            args: process_args(&container.command, &container.args, image)?,
            env: process_env(hostname, &image.env, &container.envs),
            cwd: process_cwd(&container.working_dir, image),
            capabilities: Some(linux_capabilities(capabilities(sc, host)?)),
            no_new_privileges: sc.no_new_privs,
            oom_score_adj: Some(clamp_oom_score_adj(container.resources.oom_score_adj, host)),
        },
        root: Root {
            path: "rootfs".into(),
            readonly: sc.readonly_rootfs,
        },
        hostname: None,
        mounts,
        // The runtime adds the shim group (it knows the sandbox id).
        annotations: BTreeMap::new(),
        linux: Linux {
            namespaces: container_namespaces(
                &sc.namespace_options,
                ctx,
                pause_pid,
                host.cgroup_unified && !sc.privileged,
            ),
            resources: Some(resources(
                &without_missing(&container.resources, &host.cgroup_missing),
                sc.privileged,
                host.swap_accounting,
            )),
            cgroups_path: cgroups_path(&sandbox.cgroup_parent, id),
            sysctl: BTreeMap::new(),
            masked_paths: masked,
            readonly_paths: readonly,
            devices: if sc.privileged {
                host_devices()?
            } else {
                Vec::new()
            },
            rootfs_propagation: rootfs_propagation(&cri),
        },
    })
}

// ---------------------------------------------------------------------------
// Sandbox spec

/// The sandbox (pause) spec: `/pause pause` from the [`PauseBinary`] (bound
/// read-only with what a dynamic build needs) in a read-only root at
/// `rootfs` (any directory, may be shared by all pods),
/// creating the pod's namespaces: the net namespace by path (or a new one,
/// or the host's), new ipc/uts/pid ones unless shared with the host; the
/// pod's cgroup, shm, resolv.conf, sysctls, user and shim group.
pub fn sandbox_spec(
    id: &str,
    sandbox: &PodSandboxConfig,
    ctx: &SandboxContext,
    rootfs: &Path,
    pause: &PauseBinary,
    host: &HostInfo,
) -> Result<Spec, SpecError> {
    let ns = &sandbox.namespace_options;
    let mut namespaces = Vec::new();
    if ns.pid != NamespaceMode::Node {
        namespaces.push(Namespace::new("pid"));
    }
    if ns.ipc != NamespaceMode::Node {
        namespaces.push(Namespace::new("ipc"));
    }
    if ns.network != NamespaceMode::Node {
        namespaces.push(Namespace::new("uts"));
        namespaces.push(match &ctx.netns_path {
            Some(p) => Namespace::at("network", p.to_string_lossy()),
            None => Namespace::new("network"),
        });
    }
    namespaces.push(Namespace::new("mount"));
    if host.cgroup_unified {
        namespaces.push(Namespace::new("cgroup"));
    }
    let f = PodFiles::new(&ctx.pod_dir);
    let shm = if ns.ipc == NamespaceMode::Node {
        PathBuf::from("/dev/shm")
    } else {
        f.shm()
    };
    let mut mounts: Vec<Mount> = default_mounts()
        .into_iter()
        .filter(|m| m.destination != "/dev/shm")
        .collect();
    mounts.push(Mount::new(
        "/dev/shm",
        "bind",
        &shm.to_string_lossy(),
        &["rbind", "ro", "nosuid", "nodev", "noexec"],
    ));
    mounts.push(Mount::new(
        "/etc/resolv.conf",
        "bind",
        &f.resolv_conf().to_string_lossy(),
        &["rbind", "ro"],
    ));
    mounts.extend(pause_mounts(pause));
    let id_of = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| other(format!("{what} {v} is out of range")))
    };
    let uid = sandbox
        .run_as_user
        .map(|u| id_of(u, "runAsUser"))
        .transpose()?
        .unwrap_or(0);
    let gid = sandbox
        .run_as_group
        .map(|g| id_of(g, "runAsGroup"))
        .transpose()?
        .unwrap_or(0);
    let mut gids = vec![gid];
    for g in &sandbox.supplemental_groups {
        gids.push(id_of(*g, "supplemental group")?);
    }
    gids.sort_unstable();
    gids.dedup();
    let caps = DEFAULT_CAPABILITIES
        .iter()
        .filter(|c| host.has_cap(c))
        .map(|c| c.to_string())
        .collect();
    Ok(Spec {
        oci_version: OCI_VERSION.into(),
        process: Process {
            terminal: false,
            user: User {
                uid,
                gid,
                additional_gids: gids,
            },
            args: PauseBinary::args(),
            env: pause_env(pause),
            cwd: "/".into(),
            capabilities: Some(linux_capabilities(caps)),
            no_new_privileges: true,
            oom_score_adj: Some(clamp_oom_score_adj(SANDBOX_OOM_SCORE_ADJ, host)),
        },
        root: Root {
            path: rootfs.to_string_lossy().into_owned(),
            readonly: true,
        },
        hostname: (ns.network != NamespaceMode::Node && !sandbox.hostname.is_empty())
            .then(|| sandbox.hostname.clone()),
        mounts,
        // The runtime adds the shim group (it knows the sandbox id).
        annotations: BTreeMap::new(),
        linux: Linux {
            namespaces,
            resources: Some(resources(
                &without_missing(
                    &types::LinuxContainerResources {
                        cpu_shares: 2,
                        ..Default::default()
                    },
                    &host.cgroup_missing,
                ),
                false,
                false,
            )),
            cgroups_path: cgroups_path(&sandbox.cgroup_parent, id),
            sysctl: check_sysctls(&sandbox.sysctls, ns)?,
            masked_paths: DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            readonly_paths: DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            devices: Vec::new(),
            rootfs_propagation: None,
        },
    })
}

/// The read-only bind mounts running `pause` needs: the binary at
/// [`PAUSE_PATH`], and a dynamic build's libraries and loader.
pub fn pause_mounts(pause: &PauseBinary) -> Vec<Mount> {
    let opts = ["rbind", "ro", "nosuid", "nodev"];
    let mut v = vec![Mount::new(
        PAUSE_PATH,
        "bind",
        &pause.path.to_string_lossy(),
        &opts,
    )];
    for b in &pause.binds {
        v.push(Mount::new(
            &b.destination.to_string_lossy(),
            "bind",
            &b.source.to_string_lossy(),
            &opts,
        ));
    }
    v
}

/// The sandbox process environment: PATH, and the library path of a
/// dynamic build (the sandbox has no ld.so.cache).
fn pause_env(pause: &PauseBinary) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    if let Some(lp) = &pause.library_path {
        env.push(format!("LD_LIBRARY_PATH={lp}"));
    }
    env
}

/// Makes `dir` a root for sandboxes: an empty `/pause` file to bind onto.
pub fn prepare_sandbox_rootfs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let p = dir.join("pause");
    if !p.exists() {
        std::fs::File::create(&p).with_context(|| format!("create {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
