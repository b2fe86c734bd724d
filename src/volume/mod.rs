//! Volumes: emptyDir (disk, or tmpfs for `medium: Memory`), hostPath with
//! its type checks, downwardAPI volumes, and for pods from the API server
//! configMap, secret and projected volumes (configMap, secret, downwardAPI
//! and serviceAccountToken sources) from the [`crate::objects`] manager
//! (see [`api`]). Static pods referencing API objects fail with
//! [`VolumeError::NeedsApiServer`], as upstream; every other type is
//! [`VolumeError::Unsupported`].
//!
//! Layout as upstream, under `<pods_dir>/<uid>/`:
//! - `volumes/kubernetes.io~empty-dir/<name>` (a tmpfs mount for Memory)
//! - `volumes/kubernetes.io~downward-api/<name>`,
//!   `volumes/kubernetes.io~projected/<name>`,
//!   `volumes/kubernetes.io~secret/<name>`: a tmpfs holding the files in
//!   the atomic writer's layout (`..data` -> timestamped dir, visible
//!   symlinks), see [`atomic`]; `volumes/kubernetes.io~configmap/<name>`:
//!   the same on disk, as upstream
//! - `plugins/kubernetes.io~empty-dir/<name>/ready` (and `wrapped_<name>`
//!   for file volumes): set-up markers, as upstream's.
//!
//! The pod worker calls [`VolumeManager::setup_pod`] before creating
//! containers (on every sync: it is idempotent and refreshes downward API
//! files, as upstream's periodic remount does), [`VolumeManager::teardown_pod`]
//! when the pod is gone, and housekeeping calls
//! [`VolumeManager::cleanup_orphans`] (after a restart) and
//! [`VolumeManager::usage`] with [`exceeds_size_limit`] for `sizeLimit`.

pub mod api;
pub mod atomic;
pub mod downward;
mod host;
pub mod plan;

pub use plan::{exceeds_size_limit, SizeLimitExceeded};

use crate::api::core::Pod;
use crate::objects::ObjectManager;
use crate::runtime::convert::{Allocatable, VolumePath};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What the node contributes to volume setup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeContext {
    /// Node allocatable: the tmpfs size when nothing lower applies, and the
    /// downward API's value for unset limits. Downward API *volumes* can
    /// only name metadata fields and container resources (upstream
    /// validation), so no pod or host IPs are needed here.
    pub allocatable: Allocatable,
}

/// Why a pod's volumes could not be set up. `volume` is empty for a
/// problem of the pod as a whole (its uid, fsGroup, its directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeError {
    /// A configMap, secret, service account token, cluster trust bundle or
    /// pod certificate: needs the API-server source.
    NeedsApiServer { volume: String, message: String },
    /// A volume type or medium picolet does not run (nfs, csi,
    /// persistentVolumeClaim, HugePages, ...).
    Unsupported { volume: String, message: String },
    /// The spec itself is wrong (what API validation would reject).
    Invalid { volume: String, message: String },
    /// Setting up on the host failed (hostPath type check, mount, write);
    /// may succeed on a later try. The text is upstream's FailedMount event.
    SetUp { volume: String, message: String },
}

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VolumeError::NeedsApiServer { message, .. } => f.write_str(message),
            VolumeError::Unsupported { volume, message }
            | VolumeError::Invalid { volume, message } => {
                if volume.is_empty() {
                    f.write_str(message)
                } else {
                    write!(f, "volume {volume:?}: {message}")
                }
            }
            VolumeError::SetUp { volume, message } => {
                if volume.is_empty() {
                    write!(f, "setting up the pod's volumes failed: {message}")
                } else {
                    write!(
                        f,
                        "MountVolume.SetUp failed for volume {volume:?} : {message}"
                    )
                }
            }
        }
    }
}

impl std::error::Error for VolumeError {}

impl VolumeError {
    /// Event reason upstream records for a failed volume setup.
    pub const EVENT_REASON: &'static str = "FailedMount";

    /// The volume's name ("" for pod-level problems).
    pub fn volume(&self) -> &str {
        match self {
            VolumeError::NeedsApiServer { volume, .. }
            | VolumeError::Unsupported { volume, .. }
            | VolumeError::Invalid { volume, .. }
            | VolumeError::SetUp { volume, .. } => volume,
        }
    }

    /// The waiting reason of the pod's containers: spec problems that no
    /// retry fixes show as `CreateContainerConfigError` (with this error as
    /// the message, since picolet has no events to carry it); host-side
    /// failures stay `ContainerCreating` as upstream's do, and are retried.
    pub fn waiting_reason(&self) -> &'static str {
        match self {
            VolumeError::SetUp { .. } => "ContainerCreating",
            _ => "CreateContainerConfigError",
        }
    }
}

/// Cleanup that could not finish; the rest was done. Calling again retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {uid}: cleanup incomplete: {}", problems.join("; "))]
pub struct TeardownError {
    pub uid: String,
    pub problems: Vec<String>,
}

/// What [`VolumeManager::cleanup_orphans`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanCleanup {
    pub removed: Vec<String>,
    pub failed: Vec<TeardownError>,
}

/// The volume manager. Holds no state of its own: everything is on disk,
/// so a new manager over the same directory (after a restart) picks up
/// where the last one stopped. Calls for the same pod must not overlap (the
/// pod worker serialises them).
#[derive(Clone)]
pub struct VolumeManager {
    pods_dir: PathBuf,
    /// The API objects of pods from the API server.
    objects: Option<Rc<ObjectManager>>,
}

impl std::fmt::Debug for VolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("pods_dir", &self.pods_dir)
            .field("objects", &self.objects.is_some())
            .finish()
    }
}

fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid != "." && uid != ".." && !uid.contains('/')
}

impl VolumeManager {
    /// A manager over `pods_dir` (`Config::pods_dir()`).
    pub fn new(pods_dir: impl Into<PathBuf>) -> Self {
        VolumeManager {
            pods_dir: pods_dir.into(),
            objects: None,
        }
    }

    /// Serves API-backed volumes (and env, pull secrets) from `objects`.
    pub fn with_objects(mut self, objects: Rc<ObjectManager>) -> Self {
        self.objects = Some(objects);
        self
    }

    pub fn objects(&self) -> Option<&Rc<ObjectManager>> {
        self.objects.as_ref()
    }

    /// What the API server contributes to a container's environment (see
    /// [`ObjectManager::env_inputs`]); `None` without an object manager.
    pub async fn env_inputs(
        &self,
        pod: &Pod,
        c: &crate::api::core::Container,
    ) -> Option<crate::runtime::convert::ApiEnv> {
        match &self.objects {
            Some(o) => o.env_inputs(pod, c).await,
            None => None,
        }
    }

    /// The pod's imagePullSecrets as registry credentials.
    pub async fn pull_secrets(&self, pod: &Pod) -> Vec<crate::image::auth::DockerConfig> {
        match &self.objects {
            Some(o) => o.pull_secrets(pod).await,
            None => Vec::new(),
        }
    }

    pub fn pods_dir(&self) -> &Path {
        &self.pods_dir
    }

    /// `<pods_dir>/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    /// Makes every volume of `pod` available and returns volume name ->
    /// host path for `ContainerInputs.volumes`. Idempotent: what exists is
    /// reused (a tmpfs lost to a reboot is mounted again); downward API
    /// files are re-rendered and swapped in atomically when their content
    /// changed. Nothing touches the host before the whole pod is checked.
    pub async fn setup_pod(
        &self,
        pod: &Pod,
        ctx: &VolumeContext,
    ) -> Result<BTreeMap<String, VolumePath>, VolumeError> {
        let mut data = match &self.objects {
            Some(o) => api::fetch(o, pod).await,
            None => api::ApiData::default(),
        };
        let plan = loop {
            match plan::plan_pod_with(pod, ctx, &data) {
                Ok(p) => break p,
                Err(VolumeError::SetUp { volume, message })
                    if !data.keep.contains(&volume) && self.was_set_up(pod, &volume) =>
                {
                    // A running pod keeps what it has (upstream keeps the
                    // mounted volume); the next sync tries again.
                    log::warn!(
                        "pod {}/{}: MountVolume.SetUp failed for volume {volume:?} : {message}; \
                         keeping its current contents",
                        pod.metadata.namespace.as_deref().unwrap_or(""),
                        pod.metadata.name.as_deref().unwrap_or("")
                    );
                    data.keep.insert(volume);
                }
                Err(e) => return Err(e),
            }
        };
        drop(data);
        let pods_dir = self.pods_dir.clone();
        crate::rt::unblock(move || host::setup(&pods_dir, &plan)).await
    }

    /// Whether the pod's API-backed file volume `name` was set up before
    /// (its `..data` exists).
    fn was_set_up(&self, pod: &Pod, name: &str) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        if !valid_uid(uid) || name.is_empty() || name.contains('/') {
            return false;
        }
        let vols = self.pod_dir(uid).join("volumes");
        [plan::CONFIG_MAP, plan::SECRET, plan::PROJECTED]
            .iter()
            .any(|p| {
                std::fs::symlink_metadata(vols.join(p).join(name).join(atomic::DATA_DIR)).is_ok()
            })
    }

    async fn remove(&self, uid: &str, parts: &'static [&'static str]) -> Result<(), TeardownError> {
        if !valid_uid(uid) {
            return Err(TeardownError {
                uid: uid.to_string(),
                problems: vec!["not a pod uid".into()],
            });
        }
        let dir = self.pod_dir(uid);
        let problems = crate::rt::unblock(move || {
            if parts.is_empty() {
                host::remove_tree(&dir)
            } else {
                parts
                    .iter()
                    .flat_map(|p| host::remove_tree(&dir.join(p)))
                    .collect()
            }
        })
        .await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TeardownError {
                uid: uid.to_string(),
                problems,
            })
        }
    }

    /// Removes the pod's whole directory: unmounts its tmpfs volumes (and
    /// anything else mounted below it, e.g. the sandbox's /dev/shm), then
    /// deletes the volumes, markers and the pod's generated files, never
    /// descending into something that stays mounted. Call once the pod's
    /// containers and sandbox are gone. Idempotent; on error the rest was
    /// still done and a later call retries.
    pub async fn teardown_pod(&self, uid: &str) -> Result<(), TeardownError> {
        if let Some(o) = &self.objects {
            o.unregister_pod(uid);
        }
        self.remove(uid, &[]).await
    }

    /// Unmounts and removes only the pod's volumes (and their markers),
    /// keeping its other files: for a pod that finished but stays known
    /// (upstream unmounts a terminated pod's volumes).
    pub async fn teardown_volumes(&self, uid: &str) -> Result<(), TeardownError> {
        if let Some(o) = &self.objects {
            o.unregister_pod(uid);
        }
        self.remove(uid, &["volumes", "plugins"]).await
    }

    /// Tears down every pod directory whose uid is not in `known` (pods
    /// that went away while picolet was not running).
    pub async fn cleanup_orphans(&self, known: &BTreeSet<String>) -> OrphanCleanup {
        if let Some(o) = &self.objects {
            o.retain_pods(known);
        }
        let dir = self.pods_dir.clone();
        let listed = crate::rt::unblock(move || -> anyhow::Result<Vec<String>> {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
            };
            let mut out = Vec::new();
            for e in rd {
                let e = e.with_context(|| format!("read {}", dir.display()))?;
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.file_name().to_string_lossy().into_owned());
                }
            }
            Ok(out)
        })
        .await;
        let mut report = OrphanCleanup::default();
        let uids = match listed {
            Ok(u) => u,
            Err(e) => {
                report.failed.push(TeardownError {
                    uid: String::new(),
                    problems: vec![format!("{e:#}")],
                });
                return report;
            }
        };
        for uid in uids.into_iter().filter(|u| !known.contains(u)) {
            match self.teardown_pod(&uid).await {
                Ok(()) => report.removed.push(uid),
                Err(e) => report.failed.push(e),
            }
        }
        report
    }

    /// Bytes used by each emptyDir of the pod (disk and Memory), measured
    /// like `du`; for [`exceeds_size_limit`]. A pod without volumes on
    /// disk has an empty map.
    pub async fn usage(&self, uid: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        anyhow::ensure!(valid_uid(uid), "{uid:?} is not a pod uid");
        let dir = self.pod_dir(uid).join("volumes").join(plan::EMPTY_DIR);
        crate::rt::unblock(move || {
            let mut out = BTreeMap::new();
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
            };
            for e in rd {
                let e = e.with_context(|| format!("read {}", dir.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                out.insert(name, host::disk_usage(&e.path())?);
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(volume: &str) -> [VolumeError; 4] {
        let (v, m) = (volume.to_string(), "why".to_string());
        [
            VolumeError::NeedsApiServer {
                volume: v.clone(),
                message: m.clone(),
            },
            VolumeError::Unsupported {
                volume: v.clone(),
                message: m.clone(),
            },
            VolumeError::Invalid {
                volume: v.clone(),
                message: m.clone(),
            },
            VolumeError::SetUp {
                volume: v,
                message: m,
            },
        ]
    }

    #[test]
    fn error_texts_and_reasons() {
        let texts: Vec<_> = all("data").iter().map(|e| e.to_string()).collect();
        assert_eq!(
            texts,
            vec![
                "why",
                "volume \"data\": why",
                "volume \"data\": why",
                "MountVolume.SetUp failed for volume \"data\" : why",
            ]
        );
        let texts: Vec<_> = all("").iter().map(|e| e.to_string()).collect();
        assert_eq!(
            texts,
            vec![
                "why",
                "why",
                "why",
                "setting up the pod's volumes failed: why"
            ]
        );
        let reasons: Vec<_> = all("x").iter().map(|e| e.waiting_reason()).collect();
        assert_eq!(
            reasons,
            vec![
                "CreateContainerConfigError",
                "CreateContainerConfigError",
                "CreateContainerConfigError",
                "ContainerCreating",
            ]
        );
        assert!(all("x").iter().all(|e| e.volume() == "x"));
    }
}
