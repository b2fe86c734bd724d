//! The v1 `PodStatus` of a pod, as upstream's `generateAPIPodStatus` and
//! `convertToAPIContainerStatuses` (pkg/kubelet/kubelet_pods.go), the probe
//! manager's `UpdatePodStatus` (ready / started), the condition generators
//! (pkg/kubelet/status/generate.go), the status manager's last-transition
//! times, start time and normalisation, and the active deadline handler.
//! Pure: every input is a parameter.

use crate::api::core::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use crate::api::meta::Time;
use crate::runtime::{self, ContainerState as RtState};
use crate::sync::actions::{
    is_host_network, is_sidecar, past_active_deadline, sandbox_changed, should_restart,
};
use crate::sync::{container_name, restart_count, ts, PodRuntimeStatus, ProbeResult, ProbeResults};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Runtime name in container IDs (`containerd://<id>`), as the kubelet
/// shows it with containerd's shim.
pub const CONTAINER_ID_PREFIX: &str = "containerd://";

/// Why a container that should run does not (the sync result of its last
/// start, upstream's reason cache). Cleared by the caller when a start
/// succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: WaitingReason,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingReason {
    CrashLoopBackOff,
    ErrImagePull,
    ImagePullBackOff,
    InvalidImageName,
    ErrImageNeverPull,
    CreateContainerConfigError,
    CreateContainerError,
    RunContainerError,
    PreStartHookError,
    PostStartHookError,
}

impl WaitingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingReason::CrashLoopBackOff => "CrashLoopBackOff",
            WaitingReason::ErrImagePull => "ErrImagePull",
            WaitingReason::ImagePullBackOff => "ImagePullBackOff",
            WaitingReason::InvalidImageName => "InvalidImageName",
            WaitingReason::ErrImageNeverPull => "ErrImageNeverPull",
            WaitingReason::CreateContainerConfigError => "CreateContainerConfigError",
            WaitingReason::CreateContainerError => "CreateContainerError",
            WaitingReason::RunContainerError => "RunContainerError",
            WaitingReason::PreStartHookError => "PreStartHookError",
            WaitingReason::PostStartHookError => "PostStartHookError",
        }
    }
}

/// Everything the status of one pod is computed from.
pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    pub runtime: &'a PodRuntimeStatus,
    pub probes: &'a ProbeResults,
    /// By container name: the failed starts of the last sync, and a
    /// CrashLoopBackOff entry (with its message) for every container
    /// `compute_pod_actions` reported in `backing_off`.
    pub waiting: &'a BTreeMap<String, Waiting>,
    /// The status last generated for this pod (status manager), if any.
    pub previous: Option<&'a PodStatus>,
    /// `Guaranteed`, `Burstable` or `BestEffort` (computed by the caller).
    pub qos_class: &'a str,
    /// The node's IPs, primary first (at most one per family is used).
    pub host_ips: &'a [IpAddr],
    /// The pod worker has terminated the pod: its containers will not run again.
    pub pod_is_terminal: bool,
    pub now: Timestamp,
}

pub const REASON_CONTAINER_CREATING: &str = "ContainerCreating";
pub const REASON_POD_INITIALIZING: &str = "PodInitializing";
pub const REASON_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";
pub const REASON_DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
pub const MESSAGE_DEADLINE_EXCEEDED: &str =
    "Pod was active on the node longer than the specified deadline";

fn truncate(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn time(nanos: i64) -> Option<Time> {
    ts(nanos).map(|t| Time(truncate(t)))
}

fn is_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Generates the pod's status (see the module docs).
pub fn generate_pod_status(input: &StatusInput) -> PodStatus {
    let pod = input.pod;
    let empty = PodStatus::default();
    let api_status = pod.status.as_ref().unwrap_or(&empty);
    let old = input.previous.unwrap_or(api_status);
    let spec = pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let now = truncate(input.now);

    let mut s = PodStatus {
        qos_class: Some(input.qos_class.to_string()),
        ..Default::default()
    };

    // Pod IPs: one per family, the node's family first.
    let mut ips = sort_ips(&input.runtime.ips(), input.host_ips);
    if is_host_network(pod) && ips.is_empty() {
        ips = sort_ips(
            &input
                .host_ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>(),
            input.host_ips,
        );
    }
    if !ips.is_empty() {
        s.pod_ip = Some(ips[0].clone());
        s.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect());
    }
    if let Some(h) = input.host_ips.first() {
        s.host_ip = Some(h.to_string());
        let mut list = vec![HostIP { ip: h.to_string() }];
        if let Some(second) = input.host_ips.iter().find(|i| i.is_ipv4() != h.is_ipv4()) {
            list.push(HostIP {
                ip: second.to_string(),
            });
        }
        s.host_ips = Some(list);
    }

    let has_inits = !inits.is_empty();
    let mut regular = convert_statuses(
        input,
        old.container_statuses.as_deref().unwrap_or(&[]),
        &spec.containers,
        has_inits,
        false,
    );
    let mut init = convert_statuses(
        input,
        old.init_container_statuses.as_deref().unwrap_or(&[]),
        &inits,
        has_inits,
        true,
    );

    // Upstream HasAnyActiveRegularContainerStarted: a regular container of
    // the current sandbox exists (created since that sandbox was).
    let sandbox_created = input.runtime.sandboxes.first().map(|s| s.created_at);
    let has_initialized = sandbox_created.is_some_and(|since| {
        input.runtime.containers.iter().any(|x| {
            x.created_at >= since && spec.containers.iter().any(|c| c.name == container_name(x))
        })
    });
    let all: Vec<ContainerStatus> = regular.iter().chain(init.iter()).cloned().collect();
    let mut phase = get_phase(pod, &all, input.pod_is_terminal, has_initialized);

    // Terminal phases are sticky.
    if !is_terminal(Some(phase)) {
        if is_terminal(old.phase.as_deref()) {
            phase = if old.phase.as_deref() == Some("Succeeded") {
                "Succeeded"
            } else {
                "Failed"
            };
        } else if is_terminal(api_status.phase.as_deref()) {
            phase = if api_status.phase.as_deref() == Some("Succeeded") {
                "Succeeded"
            } else {
                "Failed"
            };
        }
    }
    s.phase = Some(phase.to_string());
    if old.phase.as_deref() == Some(phase) {
        s.reason = old.reason.clone().or_else(|| api_status.reason.clone());
        s.message = old.message.clone().or_else(|| api_status.message.clone());
    }
    let start_time = old.start_time.clone().map(|t| t.0);
    if past_active_deadline(pod, start_time, input.now) {
        s.phase = Some("Failed".into());
        s.reason = Some(REASON_DEADLINE_EXCEEDED.into());
        s.message = Some(MESSAGE_DEADLINE_EXCEEDED.into());
    }
    if is_terminal(api_status.phase.as_deref()) && s.phase != api_status.phase {
        s.phase = api_status.phase.clone();
    }
    let phase = s.phase.clone().unwrap_or_default();
    // A finished pod whose sandbox is gone keeps the IPs it had (upstream
    // does; a Job's pods show them after completion).
    if s.pod_ips.is_none() && (input.pod_is_terminal || is_terminal(Some(phase.as_str()))) {
        s.pod_ip = old.pod_ip.clone();
        s.pod_ips = old.pod_ips.clone();
    }

    let reported = |l: &Option<Vec<ContainerStatus>>| l.clone().unwrap_or_default();
    set_ready_and_started(
        &spec.containers,
        &mut regular,
        input.probes,
        &reported(&old.container_statuses),
        false,
    );
    set_ready_and_started(
        &inits,
        &mut init,
        input.probes,
        &reported(&old.init_container_statuses),
        true,
    );

    // Conditions not owned by the kubelet are kept; the kubelet's are made anew.
    let mut conditions: Vec<PodCondition> = api_status
        .conditions
        .iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let (sandbox_needed, _, _) = sandbox_changed(pod, input.runtime);
    conditions.push(condition(
        "PodReadyToStartContainers",
        !sandbox_needed,
        None,
        None,
    ));
    let all: Vec<ContainerStatus> = init.iter().chain(regular.iter()).cloned().collect();
    conditions.push(initialized_condition(pod, &all, &phase));
    let ready = ready_condition(pod, &conditions, &all, &phase);
    conditions.push(ready);
    conditions.push(containers_ready_condition(pod, &all, &phase));
    conditions.push(condition("PodScheduled", true, None, None));
    for c in &mut conditions {
        if !KUBELET_CONDITIONS.contains(&c.type_.as_str()) {
            continue;
        }
        let prev = old
            .conditions
            .iter()
            .flatten()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
            .and_then(|o| o.last_transition_time.clone());
        c.last_transition_time = Some(prev.unwrap_or(Time(now)));
    }
    s.conditions = Some(conditions);

    regular.sort_by(|a, b| a.name.cmp(&b.name));
    s.container_statuses = Some(regular);
    if has_inits {
        s.init_container_statuses = Some(init);
    }
    s.start_time = Some(old.start_time.clone().unwrap_or(Time(now)));
    s
}

const KUBELET_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
];

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.map(String::from),
        message,
        ..Default::default()
    }
}

/// The pod IPs to show: the first of the node's family, then the first of
/// the other family (upstream `sortPodIPs`).
fn sort_ips(ips: &[String], host_ips: &[IpAddr]) -> Vec<String> {
    let v6_first = host_ips.first().is_some_and(|h| h.is_ipv6());
    let parsed: Vec<(String, bool)> = ips
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok().map(|ip| (s.clone(), ip.is_ipv6())))
        .collect();
    let mut out = Vec::new();
    for want_v6 in [v6_first, !v6_first] {
        if let Some((s, _)) = parsed.iter().find(|(_, v6)| *v6 == want_v6) {
            out.push(s.clone());
        }
    }
    out
}

fn find<'a>(list: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    list.iter().find(|c| c.name == name)
}

fn state_of(c: &ContainerStatus) -> ContainerState {
    c.state.clone().unwrap_or_default()
}

fn last_state_of(c: &ContainerStatus) -> ContainerState {
    c.last_state.clone().unwrap_or_default()
}

fn waiting_state(reason: Option<&str>, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.map(String::from),
            message,
        }),
        ..Default::default()
    }
}

/// One runtime instance as an API container status.
fn convert_one(
    cs: &runtime::ContainerStatus,
    spec_image: &str,
    old: Option<&ContainerStatus>,
) -> ContainerStatus {
    let cid = format!("{CONTAINER_ID_PREFIX}{}", cs.id);
    let mut st = ContainerStatus {
        name: container_name(cs).to_string(),
        restart_count: restart_count(cs),
        image: if cs.image.is_empty() {
            spec_image.to_string()
        } else {
            cs.image.clone()
        },
        image_id: cs.image_id.clone(),
        container_id: Some(cid.clone()),
        ..Default::default()
    };
    if let Some(o) = old {
        st.volume_mounts = o.volume_mounts.clone();
    }
    let state = match cs.state {
        RtState::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(cs.started_at),
            }),
            ..Default::default()
        },
        RtState::Created => waiting_state(None, None),
        RtState::Exited => {
            // containerd's reasons when the runtime gives none.
            let reason = if !cs.reason.is_empty() {
                cs.reason.clone()
            } else if cs.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: cs.exit_code,
                    reason: Some(reason),
                    message: Some(cs.message.clone()).filter(|m| !m.is_empty()),
                    started_at: time(cs.started_at),
                    finished_at: time(cs.finished_at),
                    container_id: Some(cid),
                    signal: None,
                }),
                ..Default::default()
            }
        }
        RtState::Unknown
            if old
                .and_then(|o| o.state.as_ref())
                .is_some_and(|s| s.running.is_some()) =>
        {
            // It ran and is gone: it did not "never run".
            st.restart_count = old.map_or(0, |o| o.restart_count) + 1;
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some(REASON_STATUS_UNKNOWN.into()),
                    message: Some(
                        "The container could not be located when the pod was terminated".into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
        RtState::Unknown => waiting_state(None, None),
    };
    st.state = Some(state);
    st
}

/// Upstream `convertToAPIContainerStatuses` for one list of containers.
fn convert_statuses(
    input: &StatusInput,
    previous: &[ContainerStatus],
    containers: &[Container],
    has_inits: bool,
    is_init: bool,
) -> Vec<ContainerStatus> {
    let pod = input.pod;
    let rt = input.runtime;
    let default_reason = if has_inits {
        REASON_POD_INITIALIZING
    } else {
        REASON_CONTAINER_CREATING
    };
    let mut statuses: BTreeMap<String, ContainerStatus> = BTreeMap::new();
    for c in containers {
        let mut st = ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: Some(waiting_state(Some(default_reason), None)),
            ..Default::default()
        };
        if let Some(o) = find(previous, &c.name) {
            if state_of(o).terminated.is_some() {
                st = o.clone();
            } else {
                st.restart_count = o.restart_count;
                st.last_state = o.last_state.clone();
            }
        }
        statuses.insert(c.name.clone(), st);
    }

    // A container that was running and vanished from the runtime: show it
    // as terminated (unknown) rather than waiting, which would make the
    // pod Pending again.
    for c in containers {
        if rt.find(&c.name).is_some() {
            continue;
        }
        let Some(o) = find(previous, &c.name) else {
            continue;
        };
        let os = state_of(o);
        if os.terminated.is_some() || os.running.is_none() {
            continue;
        }
        let Some(st) = statuses.get_mut(&c.name) else {
            continue;
        };
        let is_default = state_of(st)
            .waiting
            .as_ref()
            .is_some_and(|w| w.reason.as_deref() == Some(default_reason));
        if !is_default || last_state_of(st).terminated.is_some() {
            continue;
        }
        st.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some(REASON_STATUS_UNKNOWN.into()),
                message: Some(
                    "The container could not be located when the pod was deleted.  The container used to be Running"
                        .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        if pod.metadata.deletion_timestamp.is_none() {
            st.restart_count += 1;
        }
    }

    // The newest instance is the state, the one before it the last state.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for cs in &rt.containers {
        let name = container_name(cs).to_string();
        let Some(spec_c) = containers.iter().find(|c| c.name == name) else {
            continue;
        };
        let n = seen.entry(name.clone()).or_default();
        if *n >= 2 {
            continue;
        }
        let converted = convert_one(
            cs,
            spec_c.image.as_deref().unwrap_or(""),
            find(previous, &name),
        );
        if *n == 0 {
            statuses.insert(name.clone(), converted);
        } else if let Some(st) = statuses.get_mut(&name) {
            st.last_state = converted.state;
        }
        *n += 1;
    }

    // Containers that should run but cannot yet: waiting with the reason of
    // their last failed start.
    for c in containers {
        if is_init {
            // A completed init container is not restarted.
            if rt
                .find(&c.name)
                .is_some_and(|s| s.state == RtState::Exited && s.exit_code == 0)
            {
                continue;
            }
        }
        if !should_restart(c, pod, rt) {
            continue;
        }
        let Some(w) = input.waiting.get(&c.name) else {
            continue;
        };
        let Some(st) = statuses.get_mut(&c.name) else {
            continue;
        };
        if state_of(st).terminated.is_some() {
            st.last_state = st.state.clone();
        }
        st.state = Some(waiting_state(
            Some(w.reason.as_str()),
            Some(w.message.clone()).filter(|m| !m.is_empty()),
        ));
    }

    containers
        .iter()
        .filter_map(|c| statuses.remove(&c.name))
        .collect()
}

fn container_id(st: &ContainerStatus) -> &str {
    st.container_id
        .as_deref()
        .and_then(|s| s.split_once("://").map(|(_, id)| id))
        .unwrap_or("")
}

/// The probe manager's `UpdatePodStatus`: `started` and `ready`.
/// Sets `started` and `ready` from the probe results. Before a probe has
/// any result for a container (the first sync after a picolet restart),
/// what was last reported for that very container counts, so adopting a
/// running pod does not flap its readiness.
fn set_ready_and_started(
    specs: &[Container],
    list: &mut [ContainerStatus],
    probes: &ProbeResults,
    reported: &[ContainerStatus],
    is_init: bool,
) {
    for st in list.iter_mut() {
        let Some(c) = specs.iter().find(|c| c.name == st.name) else {
            continue;
        };
        let running = state_of(st).running.is_some();
        let id = container_id(st).to_string();
        let before = reported
            .iter()
            .find(|r| r.name == st.name && !id.is_empty() && container_id(r) == id);
        let started = running
            && match probes.startup.get(&id) {
                Some(r) => *r == ProbeResult::Success,
                None => {
                    c.startup_probe.is_none() || before.is_some_and(|b| b.started == Some(true))
                }
            };
        st.started = Some(started);
        if is_init && !is_sidecar(c) {
            st.ready = state_of(st).terminated.is_some_and(|t| t.exit_code == 0);
            continue;
        }
        st.ready = started
            && match probes.readiness.get(&id) {
                Some(r) => *r == ProbeResult::Success,
                None => c.readiness_probe.is_none() || before.is_some_and(|b| b.ready),
            };
    }
}

/// Upstream `getPhase`.
pub fn get_phase(
    pod: &Pod,
    all: &[ContainerStatus],
    pod_is_terminal: bool,
    pod_has_initialized: bool,
) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let (mut pending_sidecars, mut pending_inits, mut failed_init) = (0, 0, 0);
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);

    for c in inits.iter().filter(|c| !is_sidecar(c)) {
        let Some(st) = find(all, &c.name) else {
            pending_inits += 1;
            continue;
        };
        let (s, last) = (state_of(st), last_state_of(st));
        if s.running.is_some() {
            pending_inits += 1;
        } else if let Some(t) = &s.terminated {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if s.waiting.is_some() {
            match &last.terminated {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_inits += 1,
            }
        } else {
            pending_inits += 1;
        }
    }
    for c in inits.iter().filter(|c| is_sidecar(c)) {
        let Some(st) = find(all, &c.name) else {
            unknown += 1;
            continue;
        };
        let (s, last) = (state_of(st), last_state_of(st));
        if s.running.is_some() {
            if st.started != Some(true) {
                pending_sidecars += 1;
            }
            running += 1;
        } else if s.terminated.is_some() {
            // Terminated sidecars do not count.
        } else if s.waiting.is_some() {
            if last.terminated.is_none() {
                pending_sidecars += 1;
                waiting += 1;
            }
        } else {
            pending_sidecars += 1;
            unknown += 1;
        }
    }
    for c in &spec.containers {
        let Some(st) = find(all, &c.name) else {
            unknown += 1;
            continue;
        };
        let (s, last) = (state_of(st), last_state_of(st));
        if s.running.is_some() {
            running += 1;
        } else if let Some(t) = &s.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s.waiting.is_some() {
            if last.terminated.is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }

    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_inits > 0 || (pending_sidecars > 0 && !pod_has_initialized) || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        // Static pods get no terminal phase from termination alone (upstream TODO #116484).
        if pod_is_terminal && !is_static(pod) {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// A pod from a file or URL (not from the API server).
fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::sources::CONFIG_SOURCE))
        .is_some_and(|s| s != crate::sources::API_SOURCE)
}

/// Go's `%s` of a string slice: `[a b]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

fn containers_ready_condition(pod: &Pod, all: &[ContainerStatus], phase: &str) -> PodCondition {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    for c in sidecars.chain(spec.containers.iter()) {
        match find(all, &c.name) {
            Some(st) if !st.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("ContainersReady", false, Some("PodCompleted"), None);
    }
    if phase == "Failed" {
        return condition("ContainersReady", false, Some("PodFailed"), None);
    }
    let mut msgs = Vec::new();
    if !unknown.is_empty() {
        msgs.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        msgs.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if !msgs.is_empty() {
        return condition(
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(msgs.join(", ")),
        );
    }
    condition("ContainersReady", true, None, None)
}

fn ready_condition(
    pod: &Pod,
    conditions: &[PodCondition],
    all: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let cr = containers_ready_condition(pod, all, phase);
    if cr.status != "True" {
        return PodCondition {
            type_: "Ready".into(),
            ..cr
        };
    }
    let mut msgs = Vec::new();
    let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.as_ref());
    for g in gates.into_iter().flatten() {
        match conditions.iter().find(|c| c.type_ == g.condition_type) {
            None => msgs.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                g.condition_type
            )),
            Some(c) if c.status != "True" => msgs.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                g.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if !msgs.is_empty() {
        return condition(
            "Ready",
            false,
            Some("ReadinessGatesNotReady"),
            Some(msgs.join(", ")),
        );
    }
    condition("Ready", true, None, None)
}

fn initialized_condition(pod: &Pod, all: &[ContainerStatus], phase: &str) -> PodCondition {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        let Some(st) = find(all, &c.name) else {
            unknown.push(c.name.clone());
            continue;
        };
        let done = if is_sidecar(c) {
            st.started == Some(true)
        } else {
            st.ready
        };
        if !done {
            incomplete.push(c.name.clone());
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("Initialized", true, Some("PodCompleted"), None);
    }
    // A regular container that started means initialization happened.
    let any_started = spec.containers.iter().any(|c| {
        find(all, &c.name).is_some_and(|st| {
            let s = state_of(st);
            s.running.is_some() || s.terminated.is_some()
        })
    });
    if any_started {
        return condition("Initialized", true, None, None);
    }
    let mut msgs = Vec::new();
    if !unknown.is_empty() {
        msgs.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        msgs.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if !msgs.is_empty() {
        return condition(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(msgs.join(", ")),
        );
    }
    condition("Initialized", true, None, None)
}

#[cfg(test)]
mod tests;
