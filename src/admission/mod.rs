//! Node admission: the kubelet's admit handlers, run once before a new pod
//! starts (upstream `Kubelet.canAdmitPod` in pkg/kubelet/kubelet.go). A pod
//! they reject is set Failed with the handler's reason and message
//! ([`rejected_status`]) and never started.
//!
//! The handlers, in upstream's order (NewMainKubelet):
//!
//! 1. eviction manager (pkg/kubelet/eviction/eviction_manager.go `Admit`):
//!    under node pressure, reason `Evicted`, message
//!    `The node had condition: [MemoryPressure]. ` — memory pressure alone
//!    rejects only BestEffort pods that do not tolerate the memory-pressure
//!    taint, any other pressure rejects every pod; critical pods pass;
//! 2. sysctls (pkg/kubelet/sysctl/allowlist.go): reason `SysctlForbidden`;
//! 3. the predicate handler (pkg/kubelet/lifecycle/predicate.go):
//!    `kubernetes.io/os` pod label and `spec.os` (reasons
//!    `PodOSSelectorNodeLabelDoesNotMatch`, `PodOSNotSupported`), then the
//!    scheduler's `AdmissionCheck` — resources (`OutOfcpu`, `OutOfmemory`,
//!    `OutOfephemeral-storage`, `OutOfpods`, `OutOf<extended>`), node
//!    affinity/selector, node name, host ports — and NoExecute taints for
//!    all but static pods. The first failure is reported.
//!
//! Left out, because picolet has nothing behind them yet: the device,
//! topology, CPU and memory manager handler (no device plugins), the
//! AppArmor handler (needs the host's AppArmor state), the node shutdown
//! manager's handler, and `SupplementalGroupsPolicy: Strict` (admitted, as
//! v1.31 does while the feature is alpha).
//!
//! Differences from upstream, on purpose:
//! - A critical pod ([`is_critical`]) that fails only for resources is
//!   admitted: upstream preempts other pods to make room
//!   (`CriticalPodAdmissionHandler`), picolet does not preempt yet, so it
//!   overcommits instead. Its other failures still reject it.
//! - When node affinity is the only failure, upstream reads the Node from
//!   the API server again and retries once; picolet's caller passes the
//!   Node its watch holds, which is as fresh.
//!
//! Everything here is pure; the caller supplies the node and the active
//! pods.

mod predicates;
mod resources;
mod sysctl;

#[cfg(test)]
mod tests;

pub use predicates::{node_selector_matches, tolerates};
pub use resources::{pod_requests, Resources};
pub use sysctl::{REASON_SYSCTL_FORBIDDEN, SAFE_SYSCTLS};

use crate::api::core::{Node, Pod, PodCondition, PodStatus, Taint};
use crate::api::meta::Time;
use crate::runtime::types::QosClass;
use crate::sources::{API_SOURCE, CONFIG_MIRROR, CONFIG_SOURCE};
use std::collections::BTreeMap;

/// Pods with at least this priority are critical (`SystemCriticalPriority`).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Upstream eviction `Reason`.
pub const REASON_EVICTED: &str = "Evicted";
/// Upstream `PodOSSelectorNodeLabelDoesNotMatch`.
pub const REASON_OS_SELECTOR: &str = "PodOSSelectorNodeLabelDoesNotMatch";
/// Upstream `PodOSNotSupported`.
pub const REASON_OS_NOT_SUPPORTED: &str = "PodOSNotSupported";
/// Predicate names (`PredicateFailureError.PredicateName`), the reason of
/// a non-resource predicate failure.
pub const REASON_NODE_AFFINITY: &str = "NodeAffinity";
pub const REASON_NODE_NAME: &str = "NodeName";
pub const REASON_NODE_PORTS: &str = "NodePorts";
pub const REASON_TAINT_TOLERATION: &str = "TaintToleration";
/// Prefix of the message [`rejected_status`] writes (upstream `rejectPod`).
pub const REJECTED_PREFIX: &str = "Pod was rejected: ";

const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
const ERR_TAINTS: &str = "node(s) had taints that the pod didn't tolerate";

const LABEL_OS: &str = "kubernetes.io/os";
const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// The OS picolet runs pods for (upstream `runtime.GOOS`).
const NODE_OS: &str = "linux";

/// Node conditions that reject pods, as picolet's eviction signals computed
/// them (not as the API server's copy of the Node says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

impl Pressure {
    /// The condition types under pressure, in the order the Node lists
    /// them (upstream reports the eviction manager's set, whose order is
    /// not fixed).
    fn conditions(&self) -> Vec<&'static str> {
        [
            (self.memory, "MemoryPressure"),
            (self.disk, "DiskPressure"),
            (self.pid, "PIDPressure"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// What admission needs to know about the node.
#[derive(Debug, Clone)]
pub struct NodeView<'a> {
    pub name: &'a str,
    /// The Node as the API server has it (labels, taints, allocatable),
    /// when known. Standalone picolet: `None`, or the Node picolet would
    /// register (`node::register::initial_node`), as upstream's
    /// `getNodeAnyWay` falls back to its initial node — that gives
    /// `--node-labels` and `registerWithTaints` to the checks. With `None`
    /// the node has the default labels (`kubernetes.io/os`, `…/arch`,
    /// `…/hostname` = `name`, and the beta ones) and no taints.
    pub node: Option<&'a Node>,
    /// Allocatable as picolet computes it (cpu millicores, memory and
    /// ephemeral-storage bytes, pods, hugepages and extended resources by
    /// name in `scalar`) — used when `node` is None or has no allocatable.
    pub allocatable: Resources,
    /// Node conditions that reject pods, as picolet computed them.
    pub pressure: Pressure,
}

impl NodeView<'_> {
    /// Upstream `NodeInfo.Allocatable` from `node.Status.Allocatable`.
    fn allocatable(&self) -> Resources {
        let list = self
            .node
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.allocatable.as_ref())
            .filter(|l| !l.is_empty());
        match list {
            Some(l) => Resources::from_list(l),
            None => self.allocatable.clone(),
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        if let Some(n) = self.node {
            return n.metadata.labels.clone().unwrap_or_default();
        }
        let arch = crate::kube::go_arch();
        [
            ("kubernetes.io/hostname", self.name),
            (LABEL_OS, NODE_OS),
            ("kubernetes.io/arch", arch),
            ("beta.kubernetes.io/os", NODE_OS),
            ("beta.kubernetes.io/arch", arch),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn taints(&self) -> &[Taint] {
        self.node
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[])
    }
}

/// Why a pod was not admitted: the pod's `status.reason` and the message
/// after [`REJECTED_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

impl Rejection {
    fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Upstream `PredicateFailureError`: reason = predicate name, message
    /// `Predicate <name> failed: <description>`.
    fn predicate(name: &str, desc: &str) -> Self {
        Rejection::new(name, format!("Predicate {name} failed: {desc}"))
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Upstream `IsStaticPod`: a config source other than the API server
/// (`file`, `http`).
pub fn is_static(pod: &Pod) -> bool {
    annotation(pod, CONFIG_SOURCE).is_some_and(|s| s != API_SOURCE)
}

/// Upstream `IsMirrorPod`.
pub fn is_mirror(pod: &Pod) -> bool {
    annotation(pod, CONFIG_MIRROR).is_some()
}

/// Critical pods as upstream's `IsCriticalPod`: static pods, mirror pods,
/// and pods with priority at least [`SYSTEM_CRITICAL_PRIORITY`].
pub fn is_critical(pod: &Pod) -> bool {
    is_static(pod)
        || is_mirror(pod)
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
}

/// Upstream's admit handlers in their order. `active` are the pods already
/// admitted and not terminated (their requests count as used; terminal
/// pods do not). Entries with the pod's own UID and mirror pods (their
/// static pod is the one that counts) are skipped.
pub fn admit(pod: &Pod, node: &NodeView, active: &[&Pod]) -> Result<(), Rejection> {
    let uid = pod.metadata.uid.as_deref();
    let others: Vec<&Pod> = active
        .iter()
        .copied()
        .filter(|p| uid.is_none() || p.metadata.uid.as_deref() != uid)
        .filter(|p| !is_mirror(p))
        .collect();
    admit_pressure(pod, node.pressure)?;
    sysctl::check(pod).map_err(|m| Rejection::new(REASON_SYSCTL_FORBIDDEN, m))?;
    admit_predicates(pod, node, &others)
}

/// The eviction manager's `Admit`.
fn admit_pressure(pod: &Pod, pressure: Pressure) -> Result<(), Rejection> {
    let conditions = pressure.conditions();
    if conditions.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if conditions == ["MemoryPressure"] {
        if crate::runtime::convert::qos_class(pod) != QosClass::BestEffort {
            return Ok(());
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        let taint = Taint {
            key: TAINT_MEMORY_PRESSURE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if predicates::tolerations_tolerate(tolerations, &taint) {
            return Ok(());
        }
    }
    Err(Rejection::new(
        REASON_EVICTED,
        format!("The node had condition: [{}]. ", conditions.join(" ")),
    ))
}

/// One failure of the general filter (upstream `PredicateFailureReason`).
enum Failure {
    Resource(resources::Insufficient),
    Predicate(&'static str, &'static str),
}

/// The predicate admit handler.
fn admit_predicates(pod: &Pod, node: &NodeView, others: &[&Pod]) -> Result<(), Rejection> {
    // Checks preemption cannot help come first.
    let labels = pod.metadata.labels.as_ref();
    if labels
        .and_then(|l| l.get(LABEL_OS))
        .is_some_and(|os| os != NODE_OS)
    {
        return Err(Rejection::new(
            REASON_OS_SELECTOR,
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        ));
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.os.as_ref())
        .is_some_and(|os| os.name != NODE_OS)
    {
        return Err(Rejection::new(
            REASON_OS_NOT_SUPPORTED,
            "Failed to admit pod as the OS field doesn't match node OS",
        ));
    }

    let allocatable = node.allocatable();
    let filtered = resources::without_missing_extended(pod, &allocatable);
    let mut failures: Vec<Failure> = Vec::new();

    // scheduler.AdmissionCheck with includeAllFailures.
    let mut used = Resources::default();
    for p in others {
        used.add(&pod_requests(p));
    }
    let request = pod_requests(&filtered);
    failures.extend(
        resources::fits(&request, &allocatable, &used, others.len())
            .into_iter()
            .map(Failure::Resource),
    );
    if !predicates::matches_node_affinity(pod, node.name, &node.labels()) {
        failures.push(Failure::Predicate(REASON_NODE_AFFINITY, ERR_NODE_AFFINITY));
    }
    if !predicates::fits_node_name(pod, node.name) {
        failures.push(Failure::Predicate(REASON_NODE_NAME, ERR_NODE_NAME));
    }
    if !predicates::fits_host_ports(pod, others) {
        failures.push(Failure::Predicate(REASON_NODE_PORTS, ERR_NODE_PORTS));
    }
    if !is_static(pod) && predicates::untolerated_no_execute(pod, node.taints()).is_some() {
        failures.push(Failure::Predicate(REASON_TAINT_TOLERATION, ERR_TAINTS));
    }

    // CriticalPodAdmissionHandler: resources never reject a critical pod
    // (upstream preempts; picolet admits without preempting).
    if is_critical(pod) {
        failures.retain(|f| !matches!(f, Failure::Resource(_)));
    }
    match failures.into_iter().next() {
        None => Ok(()),
        Some(Failure::Resource(r)) => Err(Rejection::new(r.reason(), r.message())),
        Some(Failure::Predicate(name, desc)) => Err(Rejection::predicate(name, desc)),
    }
}

/// Pod conditions the kubelet owns (upstream `PodConditionByKubelet`); the
/// others (PodScheduled, DisruptionTarget, readiness gates) survive a
/// status update.
const KUBELET_CONDITIONS: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
];

fn qos_name(q: QosClass) -> &'static str {
    match q {
        QosClass::Guaranteed => "Guaranteed",
        QosClass::Burstable => "Burstable",
        QosClass::BestEffort => "BestEffort",
    }
}

/// The status upstream writes for a rejected pod (`rejectPod`): phase
/// Failed, the rejection's reason, message `Pod was rejected: <message>`,
/// the QoS class kept; the status manager then keeps `startTime` (or sets
/// it to now) and the conditions the kubelet does not own. No container
/// statuses and no kubelet conditions: nothing ever ran. Upstream also
/// records a Warning event with the reason and the bare message.
pub fn rejected_status(pod: &Pod, r: &Rejection, now: jiff::Timestamp) -> PodStatus {
    let old = pod.status.as_ref();
    let conditions: Vec<PodCondition> = old
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    PodStatus {
        phase: Some("Failed".into()),
        reason: Some(r.reason.clone()),
        message: Some(format!("{REJECTED_PREFIX}{}", r.message)),
        qos_class: Some(qos_name(crate::runtime::convert::qos_class(pod)).into()),
        start_time: Some(old.and_then(|s| s.start_time.clone()).unwrap_or(Time(now))),
        conditions: (!conditions.is_empty()).then_some(conditions),
        ..Default::default()
    }
}
