//! What a pod worker does next: upstream `computePodActions` and
//! `computeInitContainerActions` (pkg/kubelet/kuberuntime), plus the
//! back-off check upstream makes when it starts a container (`doBackOff`),
//! the active deadline and the kill order of a pod's containers.
//!
//! The caller carries the actions out in upstream's `SyncPod` order:
//! 1. `kill_pod`: stop every container ([`termination_order`]) and the
//!    sandbox; if `create_sandbox` too, remove the init containers;
//!    otherwise stop each of `containers_to_kill`
//!    (grace period: [`kill_grace_period`]);
//! 2. `create_sandbox`: run a new sandbox with `attempt`;
//! 3. start `init_containers_to_start` in order; when one fails to start,
//!    go on only if it is a sidecar;
//! 4. start `containers_to_start`.
//!
//! Before starting a container that carries a [`BackoffStep`], call
//! `backoff.next(&step.key, step.event_time, now)` (upstream does it in
//! `doBackOff`). Containers in `backing_off` are not started: their waiting
//! reason is CrashLoopBackOff with the given message until `until`, when
//! the worker should sync the pod again.

use super::backoff::Backoff;
use super::hash::container_hash_value;
use super::{
    container_hash_of, container_name, restart_count, ts, PodRuntimeStatus, ProbeResult,
    ProbeResults,
};
use crate::api::core::{Container, Pod, PodSpec};
use crate::runtime::{ContainerState, ContainerStatus, NamespaceMode, SandboxState};
use jiff::Timestamp;
use std::time::Duration;

/// Why a running container is killed (upstream `containerKillReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    StartupProbe,
    LivenessProbe,
    FailedPostStartHook,
    Unknown,
}

impl KillReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::StartupProbe => "StartupProbe",
            KillReason::LivenessProbe => "LivenessProbe",
            KillReason::FailedPostStartHook => "FailedPostStartHook",
            KillReason::Unknown => "Unknown",
        }
    }
}

/// A container to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillContainer {
    /// Runtime container ID.
    pub id: String,
    pub name: String,
    /// For the event and the log ("Container c failed liveness probe, will be restarted").
    pub message: String,
    /// None: the spec changed.
    pub reason: Option<KillReason>,
}

/// What to tell the back-off when the container is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffStep {
    pub key: String,
    /// When the previous instance finished.
    pub event_time: Timestamp,
}

/// A container to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartContainer {
    /// Index in `spec.initContainers` or `spec.containers`.
    pub index: usize,
    pub name: String,
    /// The restart count to label the new instance with.
    pub restart_count: i32,
    /// Set when an earlier instance exited: advance the back-off on start.
    pub backoff: Option<BackoffStep>,
}

/// A container that should run again but waits for its back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingOff {
    pub init: bool,
    pub index: usize,
    pub name: String,
    pub delay: Duration,
    pub until: Timestamp,
    /// `back-off 20s restarting failed container=c pod=web_default(uid)`
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodActions {
    /// Stop every container and the sandbox.
    pub kill_pod: bool,
    /// Run a new sandbox (after killing the pod: the old one is stopped).
    pub create_sandbox: bool,
    /// The existing sandbox (to start containers in, or the one being replaced).
    pub sandbox_id: String,
    /// The attempt number for the new sandbox.
    pub attempt: u32,
    pub init_containers_to_start: Vec<StartContainer>,
    pub containers_to_start: Vec<StartContainer>,
    pub containers_to_kill: Vec<KillContainer>,
    pub backing_off: Vec<BackingOff>,
    /// `activeDeadlineSeconds` has passed: the pod is killed and fails with
    /// reason DeadlineExceeded.
    pub deadline_exceeded: bool,
}

impl PodActions {
    fn kill(&mut self, k: KillContainer) {
        // Keyed by container ID, as upstream's map: the last word wins.
        self.containers_to_kill.retain(|x| x.id != k.id);
        self.containers_to_kill.push(k);
    }

    /// Nothing to do.
    pub fn is_noop(&self) -> bool {
        !self.kill_pod
            && !self.create_sandbox
            && self.init_containers_to_start.is_empty()
            && self.containers_to_start.is_empty()
            && self.containers_to_kill.is_empty()
    }
}

/// The minimal stop window upstream gives a container (`minimumGracePeriodInSeconds`).
pub const MIN_GRACE_PERIOD_SECONDS: i64 = 2;

fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

fn init_containers(pod: &Pod) -> &[Container] {
    spec(pod).init_containers.as_deref().unwrap_or(&[])
}

fn restart_policy(pod: &Pod) -> &str {
    spec(pod).restart_policy.as_deref().unwrap_or("Always")
}

/// An init container with `restartPolicy: Always`: a native sidecar.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

pub fn is_host_network(pod: &Pod) -> bool {
    spec(pod).host_network.unwrap_or(false)
}

fn restart_on_failure(pod: &Pod) -> bool {
    restart_policy(pod) != "Never"
}

/// `<name>_<namespace>(<uid>)`, upstream's `format.Pod`.
pub fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// The restart back-off key of a container (upstream `GetStableKey`): a new
/// spec hash starts a new back-off.
pub fn backoff_key(pod: &Pod, c: &Container) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or(""),
        c.name,
        container_hash_value(c)
    )
}

/// Whether the pod ran longer than `activeDeadlineSeconds` since it started.
pub fn past_active_deadline(pod: &Pod, start_time: Option<Timestamp>, now: Timestamp) -> bool {
    let (Some(ads), Some(start)) = (spec(pod).active_deadline_seconds, start_time) else {
        return false;
    };
    now.duration_since(start) >= jiff::SignedDuration::from_secs(ads)
}

/// Upstream `PodSandboxChanged`: whether a new sandbox is needed, its
/// attempt number, and the current sandbox's ID.
pub fn sandbox_changed(pod: &Pod, status: &PodRuntimeStatus) -> (bool, u32, String) {
    let Some(newest) = status.sandboxes.first() else {
        return (true, 0, String::new());
    };
    let ready = status
        .sandboxes
        .iter()
        .filter(|s| s.state == SandboxState::Ready)
        .count();
    let next = newest.metadata.attempt + 1;
    if ready > 1 || newest.state != SandboxState::Ready {
        return (true, next, newest.id.clone());
    }
    let want = if is_host_network(pod) {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    if newest.namespace_options.network != want {
        return (true, next, String::new());
    }
    if !is_host_network(pod) && newest.network.ip.is_empty() {
        return (true, next, newest.id.clone());
    }
    (false, newest.metadata.attempt, newest.id.clone())
}

/// Upstream `ShouldContainerBeRestarted`.
pub fn should_restart(c: &Container, pod: &Pod, status: &PodRuntimeStatus) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(s) = status.find(&c.name) else {
        return true;
    };
    match s.state {
        ContainerState::Running => false,
        ContainerState::Unknown | ContainerState::Created => true,
        ContainerState::Exited => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

/// Upstream `isInitContainerFailed`.
fn init_failed(s: &ContainerStatus) -> bool {
    s.reason == "OOMKilled"
        || (s.state == ContainerState::Exited && s.exit_code != 0)
        || s.state == ContainerState::Unknown
}

fn changed(c: &Container, s: &ContainerStatus) -> bool {
    container_hash_of(s) != container_hash_value(c)
}

fn has_any_regular_container_created(pod: &Pod, status: &PodRuntimeStatus) -> bool {
    spec(pod).containers.iter().any(|c| {
        status.find(&c.name).is_some_and(|s| {
            matches!(
                s.state,
                ContainerState::Created | ContainerState::Running | ContainerState::Exited
            )
        })
    })
}

fn state_name(s: ContainerState) -> &'static str {
    match s {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "unknown",
    }
}

/// Computes what to do with the pod (see the module docs).
///
/// `start_time` is the pod's `status.startTime` (for the active deadline).
pub fn compute_pod_actions(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &ProbeResults,
    backoff: &Backoff,
    start_time: Option<Timestamp>,
    now: Timestamp,
) -> PodActions {
    let (create, attempt, sandbox_id) = sandbox_changed(pod, status);
    let mut a = PodActions {
        kill_pod: create,
        create_sandbox: create,
        sandbox_id,
        attempt,
        ..Default::default()
    };
    if past_active_deadline(pod, start_time, now) {
        a.kill_pod = true;
        a.create_sandbox = false;
        a.deadline_exceeded = true;
        return a;
    }
    let containers = &spec(pod).containers;

    if create {
        if !restart_on_failure(pod) && attempt != 0 && !status.containers.is_empty() {
            // Everything ran and nothing may restart: just stop what is left.
            a.create_sandbox = false;
            return a;
        }
        let to_start: Vec<usize> = containers
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !(restart_policy(pod) == "OnFailure"
                    && status.find(&c.name).is_some_and(super::succeeded))
            })
            .map(|(i, _)| i)
            .collect();
        if to_start.is_empty() && has_any_regular_container_created(pod, status) {
            a.create_sandbox = false;
            return a;
        }
        // A new sandbox starts the pod over, from the first init container.
        if !init_containers(pod).is_empty() {
            a.init_containers_to_start = vec![start(pod, status, true, 0)];
        } else {
            a.containers_to_start = to_start
                .into_iter()
                .map(|i| start(pod, status, false, i))
                .collect();
        }
        return apply_backoff(a, pod, status, backoff, now);
    }

    let initialized = compute_init_actions(pod, status, probes, &mut a);
    if a.kill_pod || !initialized {
        return apply_backoff(a, pod, status, backoff, now);
    }

    let mut keep = 0;
    for (idx, c) in containers.iter().enumerate() {
        let cs = status.find(&c.name);
        let running = cs.is_some_and(|s| s.state == ContainerState::Running);
        if !running {
            if should_restart(c, pod, status) {
                a.containers_to_start.push(start(pod, status, false, idx));
                if let Some(s) = cs.filter(|s| s.state == ContainerState::Unknown) {
                    // It may still run: stop it before starting another.
                    a.kill(KillContainer {
                        id: s.id.clone(),
                        name: c.name.clone(),
                        message: format!(
                            "Container is in {:?} state, try killing it before restart",
                            state_name(s.state)
                        ),
                        reason: Some(KillReason::Unknown),
                    });
                }
            }
            continue;
        }
        let Some(s) = cs else { continue };
        let mut restart = restart_on_failure(pod);
        let (message, reason) = if changed(c, s) {
            restart = true;
            (format!("Container {} definition changed", c.name), None)
        } else if probes.liveness.get(&s.id) == Some(&ProbeResult::Failure) {
            (
                format!("Container {} failed liveness probe", c.name),
                Some(KillReason::LivenessProbe),
            )
        } else if probes.startup.get(&s.id) == Some(&ProbeResult::Failure) {
            (
                format!("Container {} failed startup probe", c.name),
                Some(KillReason::StartupProbe),
            )
        } else {
            keep += 1;
            continue;
        };
        let message = if restart {
            a.containers_to_start.push(start(pod, status, false, idx));
            format!("{message}, will be restarted")
        } else {
            message
        };
        a.kill(KillContainer {
            id: s.id.clone(),
            name: c.name.clone(),
            message,
            reason,
        });
    }
    if keep == 0 && a.containers_to_start.is_empty() {
        // Nothing runs and nothing will: the pod is done; sidecars must not
        // keep it alive.
        a.kill_pod = true;
        a.init_containers_to_start.clear();
    }
    apply_backoff(a, pod, status, backoff, now)
}

fn start(pod: &Pod, status: &PodRuntimeStatus, init: bool, index: usize) -> StartContainer {
    let list = if init {
        init_containers(pod)
    } else {
        &spec(pod).containers[..]
    };
    let name = list.get(index).map(|c| c.name.clone()).unwrap_or_default();
    let restart_count = status.find(&name).map_or(0, |s| restart_count(s) + 1);
    StartContainer {
        index,
        name,
        restart_count,
        backoff: None,
    }
}

/// Upstream `computeInitContainerActions` (the sidecar-aware version).
/// Returns whether the pod is initialized.
fn compute_init_actions(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &ProbeResults,
    a: &mut PodActions,
) -> bool {
    let inits = init_containers(pod);
    if inits.is_empty() {
        return true;
    }
    // A regular container that was created or runs means initialization
    // finished at some point (its init containers may be gone since).
    let mut initialized = spec(pod).containers.iter().any(|c| {
        status
            .find(&c.name)
            .is_some_and(|s| matches!(s.state, ContainerState::Created | ContainerState::Running))
    });
    let mut previously_initialized = initialized;
    let restart = restart_on_failure(pod);
    let mut to_start: Vec<usize> = Vec::new();

    // Backwards: completed init containers may have been removed; the last
    // one known tells how far initialization got.
    for i in (0..inits.len()).rev() {
        let c = &inits[i];
        let sidecar = is_sidecar(c);
        let Some(s) = status.find(&c.name) else {
            if previously_initialized && sidecar {
                to_start.push(i);
            }
            continue;
        };
        if previously_initialized && !sidecar {
            continue;
        }
        match s.state {
            ContainerState::Created => to_start.push(i),
            ContainerState::Running => {
                if sidecar {
                    'sidecar: {
                        if c.startup_probe.is_some() {
                            match probes.startup.get(&s.id) {
                                None => break 'sidecar,
                                Some(ProbeResult::Failure) => {
                                    a.kill(KillContainer {
                                        id: s.id.clone(),
                                        name: c.name.clone(),
                                        message: format!(
                                            "Init container {} failed startup probe",
                                            c.name
                                        ),
                                        reason: Some(KillReason::StartupProbe),
                                    });
                                    to_start.push(i);
                                    break 'sidecar;
                                }
                                Some(ProbeResult::Success) => {}
                            }
                        }
                        if i == inits.len() - 1 {
                            initialized = true;
                        } else if !previously_initialized {
                            // Started: the next init container may go.
                            to_start.push(i + 1);
                        }
                        if changed(c, s) {
                            a.kill(KillContainer {
                                id: s.id.clone(),
                                name: c.name.clone(),
                                message: format!("Init container {} definition changed", c.name),
                                reason: None,
                            });
                            to_start.push(i);
                            break 'sidecar;
                        }
                        if c.liveness_probe.is_some()
                            && probes.liveness.get(&s.id) == Some(&ProbeResult::Failure)
                        {
                            a.kill(KillContainer {
                                id: s.id.clone(),
                                name: c.name.clone(),
                                message: format!("Init container {} failed liveness probe", c.name),
                                reason: Some(KillReason::LivenessProbe),
                            });
                            to_start.push(i);
                        }
                    }
                }
                // A running regular init container: wait for it.
            }
            ContainerState::Exited => {
                if sidecar {
                    to_start.push(i);
                } else if init_failed(s) {
                    if !restart {
                        a.kill_pod = true;
                        a.init_containers_to_start.clear();
                        return false;
                    }
                    to_start.push(i);
                } else if i == inits.len() - 1 {
                    initialized = true;
                } else {
                    to_start.push(i + 1);
                }
            }
            ContainerState::Unknown => {
                if !sidecar && !restart {
                    a.kill_pod = true;
                    a.init_containers_to_start.clear();
                    return false;
                }
                a.kill(KillContainer {
                    id: s.id.clone(),
                    name: c.name.clone(),
                    message:
                        "Init container is in \"unknown\" state, try killing it before restart"
                            .into(),
                    reason: Some(KillReason::Unknown),
                });
                to_start.push(i);
            }
        }
        previously_initialized = true;
    }
    if !previously_initialized {
        to_start.push(0);
    }
    // Found backwards; start in spec order.
    to_start.reverse();
    a.init_containers_to_start = to_start
        .into_iter()
        .map(|i| start(pod, status, true, i))
        .collect();
    initialized
}

/// Upstream `doBackOff`, made pure: a container whose last exit is inside
/// its back-off is not started but reported as backing off.
fn apply_backoff(
    mut a: PodActions,
    pod: &Pod,
    status: &PodRuntimeStatus,
    backoff: &Backoff,
    now: Timestamp,
) -> PodActions {
    let check =
        |list: Vec<StartContainer>, init: bool, out: &mut Vec<BackingOff>| -> Vec<StartContainer> {
            let specs = if init {
                init_containers(pod)
            } else {
                &spec(pod).containers[..]
            };
            let mut keep = Vec::with_capacity(list.len());
            for mut s in list {
                let Some(c) = specs.get(s.index) else {
                    continue;
                };
                // The newest instance of this name that exited.
                let exited = status
                    .containers
                    .iter()
                    .find(|x| container_name(x) == c.name && x.state == ContainerState::Exited);
                let Some(finished) = exited.and_then(|x| ts(x.finished_at)) else {
                    keep.push(s);
                    continue;
                };
                let key = backoff_key(pod, c);
                if backoff.in_backoff_since(&key, finished, now) {
                    let delay = backoff.get(&key);
                    out.push(BackingOff {
                        init,
                        index: s.index,
                        name: c.name.clone(),
                        delay,
                        until: backoff.until(&key, finished),
                        message: format!(
                            "back-off {} restarting failed container={} pod={}",
                            go_duration(delay),
                            c.name,
                            format_pod(pod)
                        ),
                    });
                } else {
                    s.backoff = Some(BackoffStep {
                        key,
                        event_time: finished,
                    });
                    keep.push(s);
                }
            }
            keep
        };
    let mut waiting = Vec::new();
    a.init_containers_to_start = check(
        std::mem::take(&mut a.init_containers_to_start),
        true,
        &mut waiting,
    );
    a.containers_to_start = check(
        std::mem::take(&mut a.containers_to_start),
        false,
        &mut waiting,
    );
    a.backing_off = waiting;
    a
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`, `500ms`).
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_s = d.as_secs();
    let frac = d.subsec_millis();
    let (h, m, s) = (total_s / 3600, (total_s / 60) % 60, total_s % 60);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

/// The grace period to stop a container with (upstream
/// `setTerminationGracePeriod`): the deletion's, else a probe-level one for
/// probe kills, else the pod's. The caller subtracts the preStop hook's time
/// and never goes below [`MIN_GRACE_PERIOD_SECONDS`].
pub fn kill_grace_period(pod: &Pod, c: &Container, reason: Option<KillReason>) -> i64 {
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        return g;
    }
    let Some(pod_grace) = spec(pod).termination_grace_period_seconds else {
        return MIN_GRACE_PERIOD_SECONDS;
    };
    let probe = match reason {
        Some(KillReason::StartupProbe) => c.startup_probe.as_ref(),
        Some(KillReason::LivenessProbe) => c.liveness_probe.as_ref(),
        _ => None,
    };
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(pod_grace)
}

/// The order in which the running containers of a pod are stopped when the
/// whole pod is (upstream `terminationOrdering`): first every regular
/// container and regular init container together, then the sidecars one by
/// one, the last in the spec first. Each inner list is one stage; a stage
/// starts once the previous one has exited. (Every container's preStop hook
/// runs at once at the start; only the stop signal waits for its stage.)
pub fn termination_order(pod: &Pod, running: &[&str]) -> Vec<Vec<String>> {
    let is_running = |n: &str| running.contains(&n);
    let inits = init_containers(pod);
    let mut first: Vec<String> = running
        .iter()
        .filter(|n| !inits.iter().any(|c| c.name == **n && is_sidecar(c)))
        .map(|n| n.to_string())
        .collect();
    first.sort_by_key(|n| {
        // spec order: init containers, then regular ones, then unknown
        inits
            .iter()
            .chain(spec(pod).containers.iter())
            .position(|c| c.name == *n)
            .unwrap_or(usize::MAX)
    });
    let mut stages = Vec::new();
    if !first.is_empty() {
        stages.push(first);
    }
    for c in inits.iter().rev() {
        if is_sidecar(c) && is_running(&c.name) {
            stages.push(vec![c.name.clone()]);
        }
    }
    stages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{
        ContainerMetadata, PodSandboxMetadata, PodSandboxNetworkStatus, PodSandboxStatus,
    };
    use crate::sync::backoff::BackoffParams;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(NOW + s).unwrap()
    }
    fn ns(s: i64) -> i64 {
        (NOW + s) * 1_000_000_000
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": spec
        }))
        .unwrap();
        crate::sources::defaults::apply(&mut p);
        p
    }

    fn simple(restart_policy: &str) -> Pod {
        pod(json!({"restartPolicy": restart_policy,
                   "containers": [{"name": "a", "image": "img"}, {"name": "b", "image": "img"}]}))
    }

    fn sandbox(ready: bool, attempt: u32) -> PodSandboxStatus {
        PodSandboxStatus {
            id: format!("sb{attempt}"),
            metadata: PodSandboxMetadata {
                name: "p".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt,
            },
            state: if ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: ns(attempt as i64),
            network: PodSandboxNetworkStatus {
                ip: "10.0.0.2".into(),
                additional_ips: vec![],
            },
            ..Default::default()
        }
    }

    /// A container instance matching the spec's hash.
    fn cs(
        pod: &Pod,
        name: &str,
        state: ContainerState,
        exit: i32,
        created: i64,
    ) -> ContainerStatus {
        let spec_c = init_containers(pod)
            .iter()
            .chain(spec(pod).containers.iter())
            .find(|c| c.name == name)
            .unwrap();
        let mut annotations = crate::runtime::StringMap::new();
        annotations.insert(
            crate::runtime::keys::CONTAINER_HASH.into(),
            crate::sync::hash::container_hash(spec_c),
        );
        ContainerStatus {
            id: format!("{name}-{created}"),
            metadata: ContainerMetadata {
                name: name.into(),
                attempt: 0,
            },
            state,
            created_at: ns(created),
            started_at: ns(created),
            finished_at: if state == ContainerState::Exited {
                ns(created + 1)
            } else {
                0
            },
            exit_code: exit,
            annotations,
            ..Default::default()
        }
    }

    fn status(
        sandboxes: Vec<PodSandboxStatus>,
        containers: Vec<ContainerStatus>,
    ) -> PodRuntimeStatus {
        PodRuntimeStatus::new("u1", "p", "default", sandboxes, containers)
    }

    fn backoff() -> Backoff {
        Backoff::new(BackoffParams {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset: Duration::from_secs(600),
        })
    }

    fn actions(pod: &Pod, st: &PodRuntimeStatus) -> PodActions {
        compute_pod_actions(pod, st, &ProbeResults::default(), &backoff(), None, t(100))
    }

    fn names(v: &[StartContainer]) -> Vec<&str> {
        v.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn new_pod_creates_sandbox_and_starts_everything() {
        let p = simple("Always");
        let a = actions(&p, &status(vec![], vec![]));
        assert!(a.kill_pod && a.create_sandbox);
        assert_eq!(a.attempt, 0);
        assert_eq!(names(&a.containers_to_start), vec!["a", "b"]);
        assert!(a
            .containers_to_start
            .iter()
            .all(|s| s.restart_count == 0 && s.backoff.is_none()));
    }

    #[test]
    fn running_pod_is_a_noop() {
        let p = simple("Always");
        let st = status(
            vec![sandbox(true, 0)],
            vec![
                cs(&p, "a", ContainerState::Running, 0, 1),
                cs(&p, "b", ContainerState::Running, 0, 1),
            ],
        );
        let a = actions(&p, &st);
        assert!(a.is_noop(), "{a:?}");
        assert_eq!(a.sandbox_id, "sb0");
    }

    /// restartPolicy × exit code → restarted or not.
    #[test]
    fn restart_policy_table() {
        for (policy, exit, restart) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("OnFailure", 137, true),
            ("Never", 0, false),
            ("Never", 1, false),
        ] {
            let p = simple(policy);
            let st = status(
                vec![sandbox(true, 0)],
                vec![
                    cs(&p, "a", ContainerState::Exited, exit, 1),
                    cs(&p, "b", ContainerState::Running, 0, 1),
                ],
            );
            let a = actions(&p, &st);
            let want: Vec<&str> = if restart { vec!["a"] } else { vec![] };
            assert_eq!(names(&a.containers_to_start), want, "{policy} exit {exit}");
            assert!(!a.kill_pod, "{policy} exit {exit}");
            if restart {
                assert_eq!(a.containers_to_start[0].restart_count, 1);
                assert_eq!(
                    a.containers_to_start[0].backoff,
                    Some(BackoffStep {
                        key: backoff_key(&p, &spec(&p).containers[0]),
                        event_time: t(2)
                    })
                );
            }
        }
    }

    #[test]
    fn all_done_kills_the_pod_without_new_sandbox() {
        for policy in ["Never", "OnFailure"] {
            let p = simple(policy);
            let st = status(
                vec![sandbox(true, 0)],
                vec![
                    cs(&p, "a", ContainerState::Exited, 0, 1),
                    cs(&p, "b", ContainerState::Exited, 0, 1),
                ],
            );
            let a = actions(&p, &st);
            assert!(a.kill_pod && !a.create_sandbox, "{policy}: {a:?}");
            assert!(a.containers_to_start.is_empty());
            // Later the sandbox is gone (not ready): still no new sandbox.
            let st = status(
                vec![sandbox(false, 0)],
                vec![
                    cs(&p, "a", ContainerState::Exited, 0, 1),
                    cs(&p, "b", ContainerState::Exited, 0, 1),
                ],
            );
            let a = actions(&p, &st);
            assert!(!a.create_sandbox, "{policy}: {a:?}");
        }
    }

    #[test]
    fn dead_sandbox_is_recreated_with_next_attempt() {
        let p = simple("Always");
        let st = status(
            vec![sandbox(false, 2), sandbox(false, 1)],
            vec![cs(&p, "a", ContainerState::Exited, 0, 1)],
        );
        let a = actions(&p, &st);
        assert!(a.kill_pod && a.create_sandbox);
        assert_eq!(a.attempt, 3);
        assert_eq!(a.sandbox_id, "sb2");
        assert_eq!(names(&a.containers_to_start), vec!["a", "b"]);
        // Never, containers ran: no new sandbox.
        let p = simple("Never");
        let a = actions(&p, &st);
        assert!(a.kill_pod && !a.create_sandbox && a.containers_to_start.is_empty());
        // OnFailure: the succeeded container is not started again.
        let p = simple("OnFailure");
        let a = actions(&p, &st);
        assert!(a.create_sandbox);
        assert_eq!(names(&a.containers_to_start), vec!["b"]);
    }

    #[test]
    fn network_mode_change_needs_a_new_sandbox() {
        let p = pod(json!({"hostNetwork": true, "containers": [{"name": "a", "image": "img"}]}));
        let st = status(
            vec![sandbox(true, 0)],
            vec![cs(&p, "a", ContainerState::Running, 0, 1)],
        );
        let a = actions(&p, &st);
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.sandbox_id, "");
        assert_eq!(a.attempt, 1);
        // A pod-network sandbox without an IP is replaced too.
        let p = simple("Always");
        let mut sb = sandbox(true, 0);
        sb.network.ip.clear();
        let a = actions(&p, &status(vec![sb], vec![]));
        assert!(a.create_sandbox);
    }

    #[test]
    fn spec_change_kills_and_restarts_regardless_of_policy() {
        let p = simple("Never");
        let mut old = cs(&p, "a", ContainerState::Running, 0, 1);
        old.annotations
            .insert(crate::runtime::keys::CONTAINER_HASH.into(), "1234".into());
        let st = status(
            vec![sandbox(true, 0)],
            vec![old, cs(&p, "b", ContainerState::Running, 0, 1)],
        );
        let a = actions(&p, &st);
        assert_eq!(
            a.containers_to_kill,
            vec![KillContainer {
                id: "a-1".into(),
                name: "a".into(),
                message: "Container a definition changed, will be restarted".into(),
                reason: None
            }]
        );
        assert_eq!(names(&a.containers_to_start), vec!["a"]);
    }

    #[test]
    fn probe_failures_kill_with_reason() {
        for (policy, restart) in [("Always", true), ("OnFailure", true), ("Never", false)] {
            let p = simple(policy);
            let st = status(
                vec![sandbox(true, 0)],
                vec![
                    cs(&p, "a", ContainerState::Running, 0, 1),
                    cs(&p, "b", ContainerState::Running, 0, 1),
                ],
            );
            let mut probes = ProbeResults::default();
            probes.liveness.insert("a-1".into(), ProbeResult::Failure);
            probes.startup.insert("b-1".into(), ProbeResult::Failure);
            let a = compute_pod_actions(&p, &st, &probes, &backoff(), None, t(100));
            let suffix = if restart { ", will be restarted" } else { "" };
            assert_eq!(a.containers_to_kill.len(), 2);
            assert_eq!(
                a.containers_to_kill[0].reason,
                Some(KillReason::LivenessProbe)
            );
            assert_eq!(
                a.containers_to_kill[0].message,
                format!("Container a failed liveness probe{suffix}")
            );
            assert_eq!(
                a.containers_to_kill[1].reason,
                Some(KillReason::StartupProbe)
            );
            assert_eq!(
                a.containers_to_kill[1].message,
                format!("Container b failed startup probe{suffix}")
            );
            let want: Vec<&str> = if restart { vec!["a", "b"] } else { vec![] };
            assert_eq!(names(&a.containers_to_start), want);
            // Never: nothing left running → the pod is done.
            assert_eq!(a.kill_pod, !restart);
        }
    }

    #[test]
    fn unknown_container_is_killed_then_restarted() {
        let p = simple("Never");
        let st = status(
            vec![sandbox(true, 0)],
            vec![
                cs(&p, "a", ContainerState::Unknown, 0, 1),
                cs(&p, "b", ContainerState::Running, 0, 1),
            ],
        );
        let a = actions(&p, &st);
        assert_eq!(names(&a.containers_to_start), vec!["a"]);
        assert_eq!(a.containers_to_kill[0].reason, Some(KillReason::Unknown));
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container is in \"unknown\" state, try killing it before restart"
        );
    }

    #[test]
    fn crash_loop_backoff_holds_the_restart() {
        let p = simple("Always");
        let key = backoff_key(&p, &spec(&p).containers[0]);
        let mut b = backoff();
        // It was restarted once already (entry: 10 s); it exited again at 50.
        b.next(&key, t(10), t(10));
        b.next(&key, t(30), t(30)); // now 20 s
        let st = status(
            vec![sandbox(true, 0)],
            vec![
                cs(&p, "a", ContainerState::Exited, 1, 49),
                cs(&p, "b", ContainerState::Running, 0, 1),
            ],
        );
        let a = compute_pod_actions(&p, &st, &ProbeResults::default(), &b, None, t(60));
        assert!(a.containers_to_start.is_empty());
        assert_eq!(
            a.backing_off,
            vec![BackingOff {
                init: false,
                index: 0,
                name: "a".into(),
                delay: Duration::from_secs(20),
                until: t(70),
                message: "back-off 20s restarting failed container=a pod=p_default(u1)".into(),
            }]
        );
        assert!(!a.kill_pod);
        // After the delay it starts, and says how to advance the back-off.
        let a = compute_pod_actions(&p, &st, &ProbeResults::default(), &b, None, t(70));
        assert!(a.backing_off.is_empty());
        assert_eq!(
            a.containers_to_start[0]
                .backoff
                .as_ref()
                .unwrap()
                .event_time,
            t(50)
        );
    }

    #[test]
    fn active_deadline_kills_the_pod() {
        let p = pod(
            json!({"activeDeadlineSeconds": 30, "containers": [{"name": "a", "image": "img"}]}),
        );
        let st = status(
            vec![sandbox(true, 0)],
            vec![cs(&p, "a", ContainerState::Running, 0, 1)],
        );
        let a = compute_pod_actions(
            &p,
            &st,
            &ProbeResults::default(),
            &backoff(),
            Some(t(0)),
            t(29),
        );
        assert!(a.is_noop());
        let a = compute_pod_actions(
            &p,
            &st,
            &ProbeResults::default(),
            &backoff(),
            Some(t(0)),
            t(30),
        );
        assert!(a.kill_pod && a.deadline_exceeded && !a.create_sandbox);
        assert!(a.containers_to_start.is_empty());
        assert!(!past_active_deadline(&p, None, t(1000)));
    }

    fn with_inits(policy: &str) -> Pod {
        pod(json!({"restartPolicy": policy,
            "initContainers": [{"name": "i1", "image": "img"}, {"name": "i2", "image": "img"}],
            "containers": [{"name": "a", "image": "img"}]}))
    }

    #[test]
    fn init_containers_run_in_order() {
        let p = with_inits("Always");
        // New sandbox: first init container only.
        let a = actions(&p, &status(vec![], vec![]));
        assert!(a.create_sandbox);
        assert_eq!(names(&a.init_containers_to_start), vec!["i1"]);
        assert!(a.containers_to_start.is_empty());
        let sb = || vec![sandbox(true, 0)];
        // Sandbox ready, nothing ran yet.
        let a = actions(&p, &status(sb(), vec![]));
        assert_eq!(names(&a.init_containers_to_start), vec!["i1"]);
        // i1 running: wait.
        let a = actions(
            &p,
            &status(sb(), vec![cs(&p, "i1", ContainerState::Running, 0, 1)]),
        );
        assert!(a.is_noop(), "{a:?}");
        // i1 done: i2.
        let a = actions(
            &p,
            &status(sb(), vec![cs(&p, "i1", ContainerState::Exited, 0, 1)]),
        );
        assert_eq!(names(&a.init_containers_to_start), vec!["i2"]);
        assert!(a.containers_to_start.is_empty());
        // both done: the app container.
        let a = actions(
            &p,
            &status(
                sb(),
                vec![
                    cs(&p, "i1", ContainerState::Exited, 0, 1),
                    cs(&p, "i2", ContainerState::Exited, 0, 2),
                ],
            ),
        );
        assert!(a.init_containers_to_start.is_empty());
        assert_eq!(names(&a.containers_to_start), vec!["a"]);
        // Only the last init container's status is left (GC): still initialized.
        let a = actions(
            &p,
            &status(sb(), vec![cs(&p, "i2", ContainerState::Exited, 0, 2)]),
        );
        assert_eq!(names(&a.containers_to_start), vec!["a"]);
        // App running and init containers gone: never re-run them.
        let a = actions(
            &p,
            &status(sb(), vec![cs(&p, "a", ContainerState::Running, 0, 3)]),
        );
        assert!(a.is_noop(), "{a:?}");
    }

    #[test]
    fn init_failure_follows_restart_policy() {
        for (policy, kill) in [("Always", false), ("OnFailure", false), ("Never", true)] {
            let p = with_inits(policy);
            let st = status(
                vec![sandbox(true, 0)],
                vec![
                    cs(&p, "i1", ContainerState::Exited, 0, 1),
                    cs(&p, "i2", ContainerState::Exited, 3, 2),
                ],
            );
            let a = actions(&p, &st);
            assert_eq!(a.kill_pod, kill, "{policy}");
            if kill {
                assert!(a.init_containers_to_start.is_empty());
            } else {
                assert_eq!(names(&a.init_containers_to_start), vec!["i2"], "{policy}");
                assert_eq!(a.init_containers_to_start[0].restart_count, 1);
            }
            assert!(a.containers_to_start.is_empty());
        }
        // OOMKilled with exit 0 still counts as failed.
        let p = with_inits("Never");
        let mut oom = cs(&p, "i1", ContainerState::Exited, 0, 1);
        oom.reason = "OOMKilled".into();
        assert!(actions(&p, &status(vec![sandbox(true, 0)], vec![oom])).kill_pod);
    }

    fn with_sidecars(policy: &str) -> Pod {
        pod(json!({"restartPolicy": policy,
            "initContainers": [
                {"name": "s1", "image": "img", "restartPolicy": "Always",
                 "startupProbe": {"exec": {"command": ["true"]}}},
                {"name": "i1", "image": "img"},
                {"name": "s2", "image": "img", "restartPolicy": "Always"}],
            "containers": [{"name": "a", "image": "img"}]}))
    }

    #[test]
    fn sidecars_start_in_order_and_gate_on_startup() {
        let p = with_sidecars("Never");
        let sb = || vec![sandbox(true, 0)];
        let a = actions(&p, &status(sb(), vec![]));
        assert_eq!(names(&a.init_containers_to_start), vec!["s1"]);
        // s1 runs but its startup probe has not succeeded: wait.
        let s1 = cs(&p, "s1", ContainerState::Running, 0, 1);
        let a = actions(&p, &status(sb(), vec![s1.clone()]));
        assert!(a.is_noop(), "{a:?}");
        // started: i1 may go.
        let mut probes = ProbeResults::default();
        probes.startup.insert(s1.id.clone(), ProbeResult::Success);
        let st = status(sb(), vec![s1.clone()]);
        let a = compute_pod_actions(&p, &st, &probes, &backoff(), None, t(100));
        assert_eq!(names(&a.init_containers_to_start), vec!["i1"]);
        // i1 done: s2; then s2 running (no startup probe): the app.
        let st = status(
            sb(),
            vec![s1.clone(), cs(&p, "i1", ContainerState::Exited, 0, 2)],
        );
        let a = compute_pod_actions(&p, &st, &probes, &backoff(), None, t(100));
        assert_eq!(names(&a.init_containers_to_start), vec!["s2"]);
        let st = status(
            sb(),
            vec![
                s1.clone(),
                cs(&p, "i1", ContainerState::Exited, 0, 2),
                cs(&p, "s2", ContainerState::Running, 0, 3),
            ],
        );
        let a = compute_pod_actions(&p, &st, &probes, &backoff(), None, t(100));
        assert!(a.init_containers_to_start.is_empty());
        assert_eq!(names(&a.containers_to_start), vec!["a"]);
        // A failed startup probe restarts the sidecar.
        let mut bad = ProbeResults::default();
        bad.startup.insert(s1.id.clone(), ProbeResult::Failure);
        let a = compute_pod_actions(
            &p,
            &status(sb(), vec![s1.clone()]),
            &bad,
            &backoff(),
            None,
            t(100),
        );
        assert_eq!(
            a.containers_to_kill[0].reason,
            Some(KillReason::StartupProbe)
        );
        assert_eq!(names(&a.init_containers_to_start), vec!["s1"]);
    }

    #[test]
    fn exited_sidecar_restarts_even_with_never_and_dies_with_the_pod() {
        let p = with_sidecars("Never");
        let sb = || vec![sandbox(true, 0)];
        let mut probes = ProbeResults::default();
        let s1 = cs(&p, "s1", ContainerState::Running, 0, 1);
        probes.startup.insert(s1.id.clone(), ProbeResult::Success);
        // App running; s2 crashed: restart s2 only.
        let st = status(
            sb(),
            vec![
                s1.clone(),
                cs(&p, "i1", ContainerState::Exited, 0, 2),
                cs(&p, "s2", ContainerState::Exited, 1, 3),
                cs(&p, "a", ContainerState::Running, 0, 4),
            ],
        );
        let a = compute_pod_actions(&p, &st, &probes, &backoff(), None, t(100));
        assert_eq!(names(&a.init_containers_to_start), vec!["s2"]);
        assert!(!a.kill_pod);
        // App finished (Never): the pod is killed; the sidecars do not keep
        // it alive.
        let st = status(
            sb(),
            vec![
                s1.clone(),
                cs(&p, "i1", ContainerState::Exited, 0, 2),
                cs(&p, "s2", ContainerState::Running, 0, 3),
                cs(&p, "a", ContainerState::Exited, 0, 4),
            ],
        );
        let a = compute_pod_actions(&p, &st, &probes, &backoff(), None, t(100));
        assert!(a.kill_pod);
        assert!(a.init_containers_to_start.is_empty() && a.containers_to_start.is_empty());
        // As upstream: a sidecar that crashed after the app finished is
        // restarted first (the pod counts as initialized again only once the
        // last sidecar runs), then the pod is killed.
        let st = status(
            sb(),
            vec![
                s1.clone(),
                cs(&p, "i1", ContainerState::Exited, 0, 2),
                cs(&p, "s2", ContainerState::Exited, 1, 3),
                cs(&p, "a", ContainerState::Exited, 0, 4),
            ],
        );
        let a = compute_pod_actions(&p, &st, &probes, &backoff(), None, t(100));
        assert!(!a.kill_pod);
        assert_eq!(names(&a.init_containers_to_start), vec!["s2"]);
    }

    #[test]
    fn sidecar_liveness_and_spec_change() {
        let p = pod(json!({
            "initContainers": [{"name": "s", "image": "img", "restartPolicy": "Always",
                                "livenessProbe": {"exec": {"command": ["true"]}}}],
            "containers": [{"name": "a", "image": "img"}]}));
        let sb = || vec![sandbox(true, 0)];
        let s = cs(&p, "s", ContainerState::Running, 0, 1);
        let app = cs(&p, "a", ContainerState::Running, 0, 2);
        let mut probes = ProbeResults::default();
        probes.liveness.insert(s.id.clone(), ProbeResult::Failure);
        let a = compute_pod_actions(
            &p,
            &status(sb(), vec![s.clone(), app.clone()]),
            &probes,
            &backoff(),
            None,
            t(100),
        );
        assert_eq!(
            a.containers_to_kill[0].reason,
            Some(KillReason::LivenessProbe)
        );
        assert_eq!(names(&a.init_containers_to_start), vec!["s"]);
        let mut old = s.clone();
        old.annotations
            .insert(crate::runtime::keys::CONTAINER_HASH.into(), "0".into());
        let a = actions(&p, &status(sb(), vec![old, app]));
        assert_eq!(
            a.containers_to_kill[0].message,
            "Init container s definition changed"
        );
        assert_eq!(names(&a.init_containers_to_start), vec!["s"]);
    }

    #[test]
    fn kill_order_puts_sidecars_last_in_reverse() {
        let p = with_sidecars("Always");
        let order = termination_order(&p, &["s2", "a", "s1", "i1"]);
        assert_eq!(
            order,
            vec![
                vec!["i1".to_string(), "a".into()],
                vec!["s2".into()],
                vec!["s1".into()]
            ]
        );
        assert_eq!(termination_order(&p, &["s1"]), vec![vec!["s1".to_string()]]);
    }

    #[test]
    fn grace_periods() {
        let p = pod(
            json!({"terminationGracePeriodSeconds": 40, "containers": [{"name": "a", "image": "img",
            "livenessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}}]}),
        );
        let c = &spec(&p).containers[0];
        assert_eq!(kill_grace_period(&p, c, None), 40);
        assert_eq!(kill_grace_period(&p, c, Some(KillReason::LivenessProbe)), 5);
        assert_eq!(kill_grace_period(&p, c, Some(KillReason::StartupProbe)), 40);
        let mut d = p.clone();
        d.metadata.deletion_grace_period_seconds = Some(3);
        assert_eq!(kill_grace_period(&d, c, Some(KillReason::LivenessProbe)), 3);
    }

    #[test]
    fn go_durations() {
        for (ms, s) in [
            (10_000, "10s"),
            (80_000, "1m20s"),
            (300_000, "5m0s"),
            (500, "500ms"),
            (1500, "1.5s"),
            (3_600_000, "1h0m0s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(ms)), s);
        }
    }
}
