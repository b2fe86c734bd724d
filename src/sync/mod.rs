//! The sync loop and the pod workers: turn desired pods plus observed state
//! into runtime actions.
//!
//! This module holds the pure decisions the pod workers call:
//! - [`PodRuntimeStatus`]: what the runtime reports for one pod (upstream's
//!   `kubecontainer.PodStatus`), filled by the runtime integration from
//!   `Runtime::pod_sandbox_status` / `container_status` of everything
//!   labelled with the pod's UID;
//! - [`ProbeResults`]: the latest liveness/readiness/startup result per
//!   container ID, filled by the prober;
//! - [`actions::compute_pod_actions`]: what to start, kill or wait for;
//! - [`backoff::Backoff`]: CrashLoopBackOff and ImagePullBackOff state;
//! - [`hash::container_hash`]: the value for `io.kubernetes.container.hash`.

pub mod actions;
pub mod backoff;
pub mod gc;
pub mod hash;
pub mod hooks;
pub mod kubelet;
pub mod pleg;
pub mod state;
pub mod syncloop;
pub mod workers;

use crate::runtime::{keys, ContainerState, ContainerStatus, PodSandboxStatus, SandboxState};
use jiff::Timestamp;
use std::collections::BTreeMap;

/// What the runtime has for one pod: every sandbox and every container
/// instance (all attempts it still keeps), newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRuntimeStatus {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Newest first (by `created_at`).
    pub sandboxes: Vec<PodSandboxStatus>,
    /// Newest first (by `created_at`).
    pub containers: Vec<ContainerStatus>,
}

impl PodRuntimeStatus {
    /// Builds the status and puts both lists newest first.
    pub fn new(
        uid: &str,
        name: &str,
        namespace: &str,
        mut sandboxes: Vec<PodSandboxStatus>,
        mut containers: Vec<ContainerStatus>,
    ) -> Self {
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        PodRuntimeStatus {
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
            sandboxes,
            containers,
        }
    }

    /// The newest instance of the named container.
    pub fn find(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| container_name(c) == name)
    }

    /// The pod's IPs: those of the newest sandbox, when it is ready.
    pub fn ips(&self) -> Vec<String> {
        match self.sandboxes.first() {
            Some(s) if s.state == SandboxState::Ready && !s.network.ip.is_empty() => {
                let mut ips = vec![s.network.ip.clone()];
                ips.extend(s.network.additional_ips.iter().cloned());
                ips
            }
            _ => Vec::new(),
        }
    }
}

/// The container's name in its pod (the metadata name; the label when a
/// runtime left the metadata empty).
pub fn container_name(c: &ContainerStatus) -> &str {
    if !c.metadata.name.is_empty() {
        &c.metadata.name
    } else {
        c.labels
            .get(keys::CONTAINER_NAME)
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// The restart count picolet wrote on the container (annotation), else the
/// CRI attempt number.
pub fn restart_count(c: &ContainerStatus) -> i32 {
    c.annotations
        .get(keys::CONTAINER_RESTART_COUNT)
        .and_then(|s| s.parse().ok())
        .unwrap_or(c.metadata.attempt as i32)
}

/// The spec hash the container was created with.
pub fn container_hash_of(c: &ContainerStatus) -> u64 {
    c.annotations
        .get(keys::CONTAINER_HASH)
        .map_or(0, |s| hash::parse_container_hash(s))
}

/// A runtime time (Unix nanoseconds, 0 = unset) as a timestamp.
pub fn ts(nanos: i64) -> Option<Timestamp> {
    if nanos == 0 {
        None
    } else {
        Timestamp::from_nanosecond(nanos as i128).ok()
    }
}

/// The container has exited with code 0.
pub fn succeeded(c: &ContainerStatus) -> bool {
    c.state == ContainerState::Exited && c.exit_code == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    Failure,
}

/// The latest probe results, by container ID. A probe that has not produced
/// a result yet has no entry (upstream's "not found" / Unknown).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeResults {
    pub liveness: BTreeMap<String, ProbeResult>,
    pub readiness: BTreeMap<String, ProbeResult>,
    pub startup: BTreeMap<String, ProbeResult>,
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
