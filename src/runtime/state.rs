//! Checkpoints: what a restarted picolet needs to find its sandboxes and
//! containers again (and to clean up what it left half-made). One JSON file
//! per sandbox (`<state>/sandboxes/<id>/sandbox.json`, next to the pod's
//! generated files) and per container (`<state>/containers/<id>.json`),
//! always written atomically, and written *before* the side effects they
//! describe, so a crash at any point leaves a checkpoint that names what
//! may exist (`creating`), or nothing that recovery cannot find by itself
//! (bundles, netns files, CNI caches and pod cgroups without a checkpoint
//! are orphans and are removed).

use super::types::{ContainerConfig, PodSandboxConfig};
use crate::util::fs::write_atomic;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const VERSION: u32 = 1;

/// How a process (the pause process or a container) ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    /// Unix ns.
    pub finished_at: i64,
}

/// A sandbox: the pod's namespaces, network, cgroup, files and the pause
/// container that leads the pod's shim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxCheckpoint {
    pub version: u32,
    pub id: String,
    pub config: PodSandboxConfig,
    /// Unix ns.
    pub created_at: i64,
    /// Still being made by `run_pod_sandbox`: recovery removes it whole.
    pub creating: bool,
    /// The shim's `-namespace` and `-address`: they name its socket and
    /// runc's state dir, so they must stay the same for the shim's life.
    pub shim_namespace: String,
    pub shim_address: PathBuf,
    /// The shim's socket URL once known (also in `BUNDLE/address`).
    pub shim_url: Option<String>,
    pub bundle: PathBuf,
    /// The pod's network namespace (`None`: hostNetwork).
    pub netns: Option<PathBuf>,
    /// Pod IPs from CNI, first = the pod IP.
    pub ips: Vec<String>,
    pub pause_pid: u32,
    /// The pod's generated files (etc-hosts, resolv.conf, shm, termination logs).
    pub pod_dir: PathBuf,
    /// `stop_pod_sandbox` finished: network down, shm released, shim gone.
    pub stopped: bool,
    /// The pause process exited (or was never seen running again).
    pub exit: Option<ExitInfo>,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    /// Being made by `create_container`: recovery removes it whole.
    #[default]
    Creating,
    /// Created (bundle, rootfs, spec, cgroup), not started: no task yet.
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCheckpoint {
    pub version: u32,
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    /// The image's `StopSignal` (used when the container sets none).
    pub image_stop_signal: Option<String>,
    pub bundle: PathBuf,
    /// Absolute CRI log path.
    pub log_path: PathBuf,
    /// `linux.cgroupsPath` of the container.
    pub cgroup: String,
    /// Host file of the termination message (`None` without a path).
    pub termination_log: Option<PathBuf>,
    pub phase: ContainerPhase,
    /// Unix ns; 0 when not reached.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub pid: u32,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// An OOM kill was reported for the container's cgroup.
    pub oom: bool,
}

impl ContainerCheckpoint {
    pub fn new(
        id: &str,
        sandbox_id: &str,
        config: &ContainerConfig,
        bundle: &Path,
        log_path: &Path,
        cgroup: &str,
    ) -> Self {
        ContainerCheckpoint {
            version: VERSION,
            id: id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            config: config.clone(),
            image_stop_signal: None,
            bundle: bundle.to_path_buf(),
            log_path: log_path.to_path_buf(),
            cgroup: cgroup.to_string(),
            termination_log: None,
            phase: ContainerPhase::Creating,
            created_at: 0,
            started_at: 0,
            finished_at: 0,
            pid: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            oom: false,
        }
    }
}

impl SandboxCheckpoint {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: &str,
        config: &PodSandboxConfig,
        shim_namespace: &str,
        shim_address: &Path,
        bundle: &Path,
        netns: Option<PathBuf>,
        pod_dir: &Path,
        created_at: i64,
    ) -> Self {
        SandboxCheckpoint {
            version: VERSION,
            id: id.to_string(),
            config: config.clone(),
            created_at,
            creating: true,
            shim_namespace: shim_namespace.to_string(),
            shim_address: shim_address.to_path_buf(),
            shim_url: None,
            bundle: bundle.to_path_buf(),
            netns,
            ips: Vec::new(),
            pause_pid: 0,
            pod_dir: pod_dir.to_path_buf(),
            stopped: false,
            exit: None,
        }
    }
}

/// The checkpoint directory layout under `Config::state_dir()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path) -> Self {
        StateDir {
            root: root.to_path_buf(),
        }
    }
    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }
    /// A sandbox's own directory: its checkpoint and the pod's files.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes().join(id)
    }
    fn sandbox_file(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("sandbox.json")
    }
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    fn container_file(&self, id: &str) -> PathBuf {
        self.containers().join(format!("{id}.json"))
    }

    pub fn save_sandbox(&self, s: &SandboxCheckpoint) -> Result<()> {
        let data = serde_json::to_vec_pretty(s).context("encode sandbox checkpoint")?;
        write_atomic(&self.sandbox_file(&s.id), &data)
    }

    pub fn save_container(&self, c: &ContainerCheckpoint) -> Result<()> {
        let data = serde_json::to_vec_pretty(c).context("encode container checkpoint")?;
        write_atomic(&self.container_file(&c.id), &data)
    }

    /// Drops a sandbox's checkpoint (its directory must be emptied of
    /// mounts first: the caller released the pod files).
    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        let d = self.sandbox_dir(id);
        match std::fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", d.display())),
        }
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let f = self.container_file(id);
        match std::fs::remove_file(&f) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", f.display())),
        }
    }

    /// Every readable checkpoint; unreadable ones are reported by path
    /// (their resources are then orphans recovery removes).
    pub fn load(&self) -> Result<Loaded> {
        let mut out = Loaded::default();
        for (name, path) in list_dir(&self.sandboxes())? {
            let file = path.join("sandbox.json");
            if !path.is_dir() {
                continue;
            }
            match read_json::<SandboxCheckpoint>(&file) {
                Ok(Some(s)) if s.id == name => out.sandboxes.push(s),
                Ok(Some(s)) => out
                    .unreadable
                    .push((file, format!("names sandbox {:?}", s.id))),
                // A sandbox dir without checkpoint: pod files of a sandbox
                // whose checkpoint was never written or already removed.
                Ok(None) => out.stray_sandbox_dirs.push(path),
                Err(e) => out.unreadable.push((file, format!("{e:#}"))),
            }
        }
        for (name, path) in list_dir(&self.containers())? {
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            match read_json::<ContainerCheckpoint>(&path) {
                Ok(Some(c)) if c.id == id => out.containers.push(c),
                Ok(Some(c)) => out
                    .unreadable
                    .push((path, format!("names container {:?}", c.id))),
                Ok(None) => {}
                Err(e) => out.unreadable.push((path, format!("{e:#}"))),
            }
        }
        out.sandboxes.sort_by_key(|s| s.created_at);
        out.containers.sort_by_key(|c| c.created_at);
        Ok(out)
    }
}

/// What [`StateDir::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sandboxes: Vec<SandboxCheckpoint>,
    pub containers: Vec<ContainerCheckpoint>,
    pub unreadable: Vec<(PathBuf, String)>,
    pub stray_sandbox_dirs: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let mut v = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("read {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        // Temp files of interrupted atomic writes start with a dot.
        if !name.starts_with('.') {
            v.push((name, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

fn read_json<T: serde::de::DeserializeOwned + HasVersion>(path: &Path) -> Result<Option<T>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let v: T =
        serde_json::from_slice(&data).with_context(|| format!("parse {}", path.display()))?;
    if v.version() != VERSION {
        bail!(
            "{}: checkpoint version {} (this picolet reads {VERSION})",
            path.display(),
            v.version()
        );
    }
    Ok(Some(v))
}

trait HasVersion {
    fn version(&self) -> u32;
}
impl HasVersion for SandboxCheckpoint {
    fn version(&self) -> u32 {
        self.version
    }
}
impl HasVersion for ContainerCheckpoint {
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("picolet-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trips_and_reports_bad_files() {
        let d = tmp("rt");
        let st = StateDir::new(&d);
        let mut cfg = PodSandboxConfig::default();
        cfg.metadata.uid = "u1".into();
        let mut s = SandboxCheckpoint::new(
            "sb1",
            &cfg,
            "picolet",
            Path::new("/run/picolet/picolet.sock"),
            Path::new("/b/sb1"),
            Some("/run/picolet/netns/sb1".into()),
            &st.sandbox_dir("sb1"),
            5,
        );
        s.ips = vec!["10.0.0.2".into()];
        st.save_sandbox(&s).unwrap();
        let mut c = ContainerCheckpoint::new(
            "c1",
            "sb1",
            &ContainerConfig::default(),
            Path::new("/b/c1"),
            Path::new("/logs/c/0.log"),
            "/pod/c1",
        );
        c.phase = ContainerPhase::Running;
        st.save_container(&c).unwrap();
        // A foreign file, a bad checkpoint, a leftover temp file, a
        // sandbox dir without checkpoint.
        std::fs::write(st.containers().join("c2.json"), b"{").unwrap();
        std::fs::write(st.containers().join(".c3.json.tmp.1"), b"{").unwrap();
        std::fs::write(st.containers().join("notes.txt"), b"x").unwrap();
        std::fs::create_dir_all(st.sandbox_dir("sb9")).unwrap();
        let l = st.load().unwrap();
        assert_eq!(l.sandboxes, vec![s]);
        assert_eq!(l.containers, vec![c]);
        assert_eq!(l.unreadable.len(), 1);
        assert!(l.unreadable[0].0.ends_with("c2.json"));
        assert_eq!(l.stray_sandbox_dirs, vec![st.sandbox_dir("sb9")]);
        st.remove_container("c1").unwrap();
        st.remove_container("c1").unwrap();
        st.remove_sandbox("sb1").unwrap();
        let l = st.load().unwrap();
        assert!(l.sandboxes.is_empty() && l.containers.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_other_versions() {
        let d = tmp("ver");
        let st = StateDir::new(&d);
        let mut c = ContainerCheckpoint::new(
            "c1",
            "sb",
            &ContainerConfig::default(),
            Path::new("/b"),
            Path::new("/l"),
            "/cg",
        );
        c.version = 99;
        st.save_container(&c).unwrap();
        let l = st.load().unwrap();
        assert!(l.containers.is_empty());
        assert!(
            l.unreadable[0].1.contains("version 99"),
            "{:?}",
            l.unreadable
        );
        assert!(StateDir::new(&d.join("missing")).load().is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
