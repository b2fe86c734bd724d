//! Kubelet side of the runtime boundary: a v1 `Pod` becomes a CRI-shaped
//! [`PodSandboxConfig`] and, per container, a [`ContainerConfig`], by the
//! upstream kubelet's rules (QoS class, pod cgroup, resources, OOM score,
//! hostname, DNS, ports, namespaces, security context, env with `$(VAR)`
//! expansion and the downward API, mounts, labels and annotations).
//!
//! Everything here is pure: what the node knows (memory capacity,
//! allocatable, IPs, the host's resolv.conf, volume host paths) is passed in.

use crate::api::core::{
    ConfigMap, Container, EnvVar, Pod, ResourceRequirements, Secret, VolumeMount,
};
use crate::api::quantity::Quantity;
use crate::config::KubeletConfig;
use crate::objects::GetError;
use crate::runtime::keys;
use crate::runtime::types::{
    Capabilities, ContainerConfig, ContainerMetadata, DnsConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOptions,
    PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol, QosClass, StringMap,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Where a container's termination message goes when the pod does not say.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// CFS period the kubelet uses for every container (µs).
pub const QUOTA_PERIOD: i64 = 100_000;
const MIN_QUOTA_PERIOD: i64 = 1000;
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BESTEFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Pods with at least this priority are critical (`SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
const MAX_DNS_SEARCH_PATHS: usize = 32;
const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
const MAX_DNS_NAMESERVERS: usize = 3;
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
const HOSTNAME_MAX_LEN: usize = 63;

/// A pod spec the kubelet cannot turn into a container config. The kubelet
/// reports it as the container's waiting reason [`ConfigError::REASON`]
/// with this message, and retries with back-off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub const REASON: &'static str = "CreateContainerConfigError";
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Node allocatable, the downward API's fallback for unset limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_milli: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
}

/// What the node contributes to every conversion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeContext {
    /// This node (`spec.nodeName` of pods whose source left it empty).
    pub node_name: String,
    /// `clusterDomain` (may be empty).
    pub cluster_domain: String,
    /// `clusterDNS`.
    pub cluster_dns: Vec<IpAddr>,
    /// The host's resolv.conf as parsed by [`parse_resolv_conf`]; `None` when
    /// `resolvConf` is the empty string (DNS then points at localhost, as upstream).
    pub host_dns: Option<DnsConfig>,
    /// The node's IPs, first = primary (`status.hostIP`).
    pub node_ips: Vec<IpAddr>,
    pub cgroup_root: String,
    pub cgroups_per_qos: bool,
    /// `podPidsLimit`; -1 or 0: none.
    pub pod_pids_limit: i64,
    pub pod_logs_dir: PathBuf,
    /// Node memory capacity in bytes (Burstable OOM score).
    pub memory_capacity: i64,
    pub allocatable: Allocatable,
}

impl NodeContext {
    /// The node context from the kubelet config plus what the node reports.
    pub fn new(
        cfg: &KubeletConfig,
        node_name: &str,
        node_ips: Vec<IpAddr>,
        host_dns: Option<DnsConfig>,
        memory_capacity: i64,
        allocatable: Allocatable,
    ) -> Self {
        NodeContext {
            node_name: node_name.to_string(),
            cluster_domain: cfg.cluster_domain.clone(),
            cluster_dns: cfg.cluster_dns.clone(),
            host_dns,
            node_ips,
            cgroup_root: cfg.cgroup_root.clone(),
            cgroups_per_qos: cfg.cgroups_per_qos,
            pod_pids_limit: cfg.pod_pids_limit,
            pod_logs_dir: cfg.pod_logs_dir.clone(),
            memory_capacity,
            allocatable,
        }
    }
}

/// The result of converting a pod: the sandbox config and the warnings the
/// upstream kubelet emits as events (DNS limits, missing clusterDNS).
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConversion {
    pub config: PodSandboxConfig,
    pub warnings: Vec<String>,
}

/// A volume as the volume manager made it available on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumePath {
    pub host_path: PathBuf,
    /// The volume itself is read-only (e.g. a read-only hostPath source).
    pub read_only: bool,
}

/// Per-container inputs the caller owns.
#[derive(Debug, Clone, Copy)]
pub struct ContainerInputs<'a> {
    pub restart_count: u32,
    /// `io.kubernetes.container.hash` value, computed by the caller.
    pub hash: &'a str,
    /// The resolved image id (`sha256:...`).
    pub image_id: &'a str,
    /// Pod IPs from the network setup (empty for none yet); host IPs for
    /// hostNetwork pods.
    pub pod_ips: &'a [String],
    /// Volume name -> host path (volumes of the pod the container mounts).
    pub volumes: &'a BTreeMap<String, VolumePath>,
}

/// How the pod runs a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Init,
    /// An init container with `restartPolicy: Always`.
    Sidecar,
    Regular,
}

impl ContainerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKind::Init => "init",
            ContainerKind::Sidecar => "sidecar",
            ContainerKind::Regular => "regular",
        }
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Where `name` sits in the pod, or `None` when the pod has no such container.
pub fn container_kind(pod: &Pod, name: &str) -> Option<ContainerKind> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = init_containers(pod).iter().find(|c| c.name == name) {
        return Some(if is_sidecar(c) {
            ContainerKind::Sidecar
        } else {
            ContainerKind::Init
        });
    }
    spec.containers
        .iter()
        .any(|c| c.name == name)
        .then_some(ContainerKind::Regular)
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[])
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

// ---------------------------------------------------------------------------
// Resources and QoS

/// cpu (millicores), memory and ephemeral storage (bytes); absent = 0, as
/// the upstream helpers read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Amounts {
    cpu: i64,
    memory: i64,
    ephemeral: i64,
}

impl Amounts {
    fn add(self, o: Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu.saturating_add(o.cpu),
            memory: self.memory.saturating_add(o.memory),
            ephemeral: self.ephemeral.saturating_add(o.ephemeral),
        }
    }
    fn max(self, o: Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu.max(o.cpu),
            memory: self.memory.max(o.memory),
            ephemeral: self.ephemeral.max(o.ephemeral),
        }
    }
}

/// Requests and limits of one resource block, requests defaulted from
/// limits as the API server's defaulting does (static pods are defaulted
/// the same way upstream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Resources {
    requests: Amounts,
    limits: Amounts,
    /// Any request or limit set at all (of any resource name).
    any: bool,
}

fn parse_amount(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    name: &str,
    milli: bool,
    field: &str,
) -> Result<Option<i64>, ConfigError> {
    let Some(q) = list.and_then(|l| l.get(name)) else {
        return Ok(None);
    };
    let v = Quantity::parse(&q.0)
        .map_err(|e| err(format!("{field}[{name}]: invalid quantity {:?}: {e}", q.0)))?;
    Ok(Some(if milli { v.milli_value() } else { v.value() }))
}

fn resources_of(r: Option<&ResourceRequirements>, field: &str) -> Result<Resources, ConfigError> {
    let Some(r) = r else {
        return Ok(Resources::default());
    };
    let req = r.requests.as_ref();
    let lim = r.limits.as_ref();
    let mut out = Resources {
        any: req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()),
        ..Default::default()
    };
    for (name, milli) in [
        ("cpu", true),
        ("memory", false),
        ("ephemeral-storage", false),
    ] {
        let l = parse_amount(lim, name, milli, &format!("{field}.limits"))?;
        let q = parse_amount(req, name, milli, &format!("{field}.requests"))?.or(l);
        let (rq, lm) = (q.unwrap_or(0), l.unwrap_or(0));
        match name {
            "cpu" => (out.requests.cpu, out.limits.cpu) = (rq, lm),
            "memory" => (out.requests.memory, out.limits.memory) = (rq, lm),
            _ => (out.requests.ephemeral, out.limits.ephemeral) = (rq, lm),
        }
    }
    Ok(out)
}

fn container_resources(c: &Container) -> Result<Resources, ConfigError> {
    resources_of(
        c.resources.as_ref(),
        &format!("container {:?} resources", c.name),
    )
}

fn pod_level_resources(pod: &Pod) -> Result<Option<Resources>, ConfigError> {
    match pod.spec.as_ref().and_then(|s| s.resources.as_ref()) {
        None => Ok(None),
        Some(r) => resources_of(Some(r), "spec.resources").map(Some),
    }
}

/// Checks every quantity of the pod parses, so later steps can rely on it.
pub fn validate_resources(pod: &Pod) -> Result<(), ConfigError> {
    for c in init_containers(pod).iter().chain(containers(pod)) {
        container_resources(c)?;
    }
    pod_level_resources(pod)?;
    if let Some(o) = pod.spec.as_ref().and_then(|s| s.overhead.as_ref()) {
        for name in ["cpu", "memory"] {
            parse_amount(Some(o), name, name == "cpu", "spec.overhead")?;
        }
    }
    Ok(())
}

/// QoS of one resource block (upstream `resourceQOS`).
fn resource_qos(r: &Resources) -> QosClass {
    if !r.any {
        return QosClass::BestEffort;
    }
    let mut qos = None;
    for (req, lim) in [
        (r.requests.cpu, r.limits.cpu),
        (r.requests.memory, r.limits.memory),
    ] {
        if req != lim {
            return QosClass::Burstable;
        }
        let best_effort = req == 0;
        match qos {
            None => {
                qos = Some(if best_effort {
                    QosClass::BestEffort
                } else {
                    QosClass::Guaranteed
                })
            }
            Some(q) => {
                if best_effort != (q == QosClass::BestEffort) {
                    return QosClass::Burstable;
                }
            }
        }
    }
    qos.unwrap_or(QosClass::BestEffort)
}

/// The pod's QoS class by the upstream rules (`GetPodQOS`): the recorded
/// `status.qosClass` when set, else pod-level resources when set, else every
/// init and app container's requests and limits of cpu and memory.
/// Unparsable quantities count as unset (see [`validate_resources`]).
pub fn qos_class(pod: &Pod) -> QosClass {
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => return QosClass::Guaranteed,
        Some("Burstable") => return QosClass::Burstable,
        Some("BestEffort") => return QosClass::BestEffort,
        _ => {}
    }
    if let Ok(Some(r)) = pod_level_resources(pod) {
        return resource_qos(&r);
    }
    let mut pod_qos = None;
    for c in init_containers(pod).iter().chain(containers(pod)) {
        let q = resource_qos(&container_resources(c).unwrap_or_default());
        if q == QosClass::Burstable {
            return q;
        }
        match pod_qos {
            None => pod_qos = Some(q),
            Some(p) if p != q => return QosClass::Burstable,
            _ => {}
        }
    }
    pod_qos.unwrap_or(QosClass::BestEffort)
}

/// `cgroupRoot` joined with relative parts, always absolute, no trailing `/`.
fn cgroup_join(root: &str, parts: &[&str]) -> String {
    let mut s = root.trim_end_matches('/').to_string();
    for p in parts {
        s.push('/');
        s.push_str(p);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// The QoS parent cgroups under `cgroupRoot` (`kubepods`, `kubepods/burstable`,
/// `kubepods/besteffort`), parents first.
pub fn qos_cgroups(cgroup_root: &str) -> [String; 3] {
    [
        cgroup_join(cgroup_root, &["kubepods"]),
        cgroup_join(cgroup_root, &["kubepods", "burstable"]),
        cgroup_join(cgroup_root, &["kubepods", "besteffort"]),
    ]
}

/// The pod cgroup (`<cgroupRoot>/kubepods[/burstable|/besteffort]/pod<uid>`);
/// without `cgroupsPerQOS` every container sits directly under `cgroupRoot`.
pub fn pod_cgroup_parent(
    cgroup_root: &str,
    cgroups_per_qos: bool,
    qos: QosClass,
    uid: &str,
) -> String {
    if !cgroups_per_qos {
        return cgroup_join(cgroup_root, &[]);
    }
    let pod = format!("pod{uid}");
    match qos {
        QosClass::Guaranteed => cgroup_join(cgroup_root, &["kubepods", &pod]),
        QosClass::Burstable => cgroup_join(cgroup_root, &["kubepods", "burstable", &pod]),
        QosClass::BestEffort => cgroup_join(cgroup_root, &["kubepods", "besteffort", &pod]),
    }
}

/// Upstream `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: i64) -> i64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli.saturating_mul(SHARES_PER_CPU) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// Upstream `MilliCPUToQuota` (0 = no limit; at least 1 ms otherwise).
pub fn milli_cpu_to_quota(milli: i64, period: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    (milli.saturating_mul(period) / 1000).max(MIN_QUOTA_PERIOD)
}

/// Pod requests and limits summed the upstream way (`PodRequests`,
/// `PodLimits`): app containers and sidecars add up, init containers count
/// as the max of each one (plus the sidecars started before it); pod-level
/// values replace the sum; overhead is added. Also says whether every
/// container declared a cpu / memory limit.
struct PodTotals {
    requests: Amounts,
    limits: Amounts,
    cpu_limits_declared: bool,
    memory_limits_declared: bool,
}

/// The containers' part of [`pod_totals`] (upstream
/// `AggregateContainerRequests` / `AggregateContainerLimits`).
fn container_totals(pod: &Pod) -> Result<PodTotals, ConfigError> {
    let mut req = Amounts::default();
    let mut lim = Amounts::default();
    let mut cpu_declared = true;
    let mut mem_declared = true;
    let mut note = |l: Amounts| {
        cpu_declared &= l.cpu != 0;
        mem_declared &= l.memory != 0;
    };
    for c in containers(pod) {
        let r = container_resources(c)?;
        note(r.limits);
        req = req.add(r.requests);
        lim = lim.add(r.limits);
    }
    let (mut side_req, mut side_lim) = (Amounts::default(), Amounts::default());
    let (mut init_req, mut init_lim) = (Amounts::default(), Amounts::default());
    for c in init_containers(pod) {
        let r = container_resources(c)?;
        let (cr, cl) = if is_sidecar(c) {
            req = req.add(r.requests);
            lim = lim.add(r.limits);
            side_req = side_req.add(r.requests);
            side_lim = side_lim.add(r.limits);
            (side_req, side_lim)
        } else {
            (r.requests.add(side_req), r.limits.add(side_lim))
        };
        note(cl);
        init_req = init_req.max(cr);
        init_lim = init_lim.max(cl);
    }
    Ok(PodTotals {
        requests: req.max(init_req),
        limits: lim.max(init_lim),
        cpu_limits_declared: cpu_declared,
        memory_limits_declared: mem_declared,
    })
}

fn pod_totals(pod: &Pod) -> Result<PodTotals, ConfigError> {
    let PodTotals {
        requests: mut req,
        limits: mut lim,
        cpu_limits_declared: mut cpu_declared,
        memory_limits_declared: mut mem_declared,
    } = container_totals(pod)?;
    if let Some(p) = pod_level_resources(pod)? {
        let raw = pod.spec.as_ref().and_then(|s| s.resources.as_ref());
        let has = |which: fn(&ResourceRequirements) -> Option<&BTreeMap<String, _>>, n: &str| {
            raw.and_then(which).is_some_and(|m| m.contains_key(n))
        };
        if has(|r| r.requests.as_ref(), "cpu") || has(|r| r.limits.as_ref(), "cpu") {
            req.cpu = p.requests.cpu;
        }
        if has(|r| r.requests.as_ref(), "memory") || has(|r| r.limits.as_ref(), "memory") {
            req.memory = p.requests.memory;
        }
        if p.limits.cpu != 0 {
            lim.cpu = p.limits.cpu;
            cpu_declared = true;
        }
        if p.limits.memory != 0 {
            lim.memory = p.limits.memory;
            mem_declared = true;
        }
    }
    if let Some(o) = pod.spec.as_ref().and_then(|s| s.overhead.as_ref()) {
        let cpu = parse_amount(Some(o), "cpu", true, "spec.overhead")?.unwrap_or(0);
        let mem = parse_amount(Some(o), "memory", false, "spec.overhead")?.unwrap_or(0);
        req.cpu += cpu;
        req.memory += mem;
        // Overhead adds to limits only where a limit exists.
        if lim.cpu != 0 {
            lim.cpu += cpu;
        }
        if lim.memory != 0 {
            lim.memory += mem;
        }
    }
    Ok(PodTotals {
        requests: req,
        limits: lim,
        cpu_limits_declared: cpu_declared,
        memory_limits_declared: mem_declared,
    })
}

/// Pod cgroup limits as upstream `ResourceConfigForPod` sets them (CFS quota
/// enforced, period 100 ms), plus `podPidsLimit`.
pub fn pod_cgroup_resources(
    pod: &Pod,
    qos: QosClass,
    pod_pids_limit: i64,
) -> Result<LinuxContainerResources, ConfigError> {
    let t = pod_totals(pod)?;
    let shares = milli_cpu_to_shares(t.requests.cpu);
    let quota = milli_cpu_to_quota(t.limits.cpu, QUOTA_PERIOD);
    let mut r = LinuxContainerResources::default();
    match qos {
        QosClass::Guaranteed => {
            r.cpu_shares = shares;
            r.cpu_quota = quota;
            r.cpu_period = QUOTA_PERIOD;
            r.memory_limit_in_bytes = t.limits.memory;
        }
        QosClass::Burstable => {
            r.cpu_shares = shares;
            if t.cpu_limits_declared {
                r.cpu_quota = quota;
                r.cpu_period = QUOTA_PERIOD;
            }
            if t.memory_limits_declared {
                r.memory_limit_in_bytes = t.limits.memory;
            }
        }
        QosClass::BestEffort => r.cpu_shares = MIN_SHARES,
    }
    if pod_pids_limit > 0 {
        r.pids_limit = pod_pids_limit;
    }
    Ok(r)
}

/// Container cgroup resources (upstream `calculateLinuxResources`): shares
/// from the cpu request (or the limit when only a limit is set), quota from
/// the cpu limit over a 100 ms period, the memory limit.
pub fn container_cgroup_resources(c: &Container) -> Result<LinuxContainerResources, ConfigError> {
    let r = container_resources(c)?;
    let cpu_shares = if r.requests.cpu == 0 && r.limits.cpu != 0 {
        milli_cpu_to_shares(r.limits.cpu)
    } else {
        milli_cpu_to_shares(r.requests.cpu)
    };
    Ok(LinuxContainerResources {
        cpu_period: QUOTA_PERIOD,
        cpu_quota: milli_cpu_to_quota(r.limits.cpu, QUOTA_PERIOD),
        cpu_shares,
        memory_limit_in_bytes: r.limits.memory,
        ..Default::default()
    })
}

fn is_static_or_mirror(pod: &Pod) -> bool {
    let a = pod.metadata.annotations.as_ref();
    let source = a.and_then(|a| a.get("kubernetes.io/config.source"));
    let mirror = a.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    source.is_some_and(|s| s != "api") || mirror
}

/// Upstream `IsNodeCriticalPod`: a critical pod (static, mirror, or priority
/// at least system-critical) with priorityClassName `system-node-critical`.
pub fn is_node_critical_pod(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let critical = is_static_or_mirror(pod)
        || spec
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    critical && spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical")
}

/// The container's `oom_score_adj` by upstream policy: node-critical and
/// Guaranteed -997, BestEffort 1000, Burstable `1000 - 1000*request/capacity`
/// (pod-level request share and sidecar rule included) kept within 3..=999.
pub fn oom_score_adj(
    pod: &Pod,
    c: &Container,
    qos: QosClass,
    memory_capacity: i64,
) -> Result<i64, ConfigError> {
    if is_node_critical_pod(pod) {
        return Ok(GUARANTEED_OOM_SCORE_ADJ);
    }
    match qos {
        QosClass::Guaranteed => return Ok(GUARANTEED_OOM_SCORE_ADJ),
        QosClass::BestEffort => return Ok(BESTEFFORT_OOM_SCORE_ADJ),
        QosClass::Burstable => {}
    }
    if memory_capacity <= 0 {
        return Err(err(
            "node memory capacity unknown: cannot compute oom_score_adj",
        ));
    }
    let score =
        |req: i64| -> i64 { 1000 - ((1000i128 * req as i128) / memory_capacity as i128) as i64 };
    let mut remaining = 0i64;
    if let Some(p) = pod_level_resources(pod)? {
        let n = (init_containers(pod).len() + containers(pod).len()) as i64;
        if p.requests.memory != 0 && n > 0 {
            remaining = (p.requests.memory - container_totals(pod)?.requests.memory) / n;
        }
    }
    let mut adj = score(container_resources(c)?.requests.memory + remaining);
    let sidecar = is_sidecar(c) && init_containers(pod).iter().any(|i| i.name == c.name);
    if sidecar && !containers(pod).is_empty() {
        let mut min = i64::MAX;
        for x in containers(pod) {
            min = min.min(container_resources(x)?.requests.memory);
        }
        adj = adj.min(score(min + remaining));
    }
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return Ok(1000 + GUARANTEED_OOM_SCORE_ADJ);
    }
    if adj == BESTEFFORT_OOM_SCORE_ADJ {
        return Ok(adj - 1);
    }
    Ok(adj)
}

// ---------------------------------------------------------------------------
// Hostname and DNS

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Upstream `GeneratePodHostNameAndDomain` (+ `GetNodenameForKernel`):
/// returns (the kernel host name, the short host name, the domain).
pub fn pod_hostname(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, String, String), ConfigError> {
    let spec = pod.spec.as_ref();
    let name = pod_name(pod);
    let mut hostname = name.to_string();
    if let Some(h) = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        if !is_dns1123_label(h) {
            return Err(err(format!("pod Hostname {h:?} is not a valid DNS label")));
        }
        hostname = h.to_string();
    }
    if hostname.len() > HOSTNAME_MAX_LEN {
        let t = hostname[..HOSTNAME_MAX_LEN].trim_end_matches(['-', '.']);
        if t.is_empty() {
            return Err(err(format!(
                "hostname for pod {name:?} was invalid: {hostname:?}"
            )));
        }
        hostname = t.to_string();
    }
    let mut domain = String::new();
    if let Some(sd) = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        if !is_dns1123_label(sd) {
            return Err(err(format!(
                "pod Subdomain {sd:?} is not a valid DNS label"
            )));
        }
        domain = format!("{sd}.{}.svc.{cluster_domain}", pod_namespace(pod));
    }
    let fqdn = spec.and_then(|s| s.set_hostname_as_fqdn).unwrap_or(false);
    let kernel = if fqdn && !domain.is_empty() {
        let f = format!("{hostname}.{domain}");
        if f.len() > 64 {
            return Err(err(format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {f} is too long (64 characters is the max, {} characters requested)",
                f.len()
            )));
        }
        f
    } else {
        hostname.clone()
    };
    Ok((kernel, hostname, domain))
}

/// Parses resolv.conf the way the kubelet does: nameservers accumulate; the
/// last `search` line wins (trailing dots dropped, "." ignored); options
/// accumulate, a later option of the same name replacing an earlier one.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut d = DnsConfig::default();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        match f.first().copied() {
            Some("nameserver") => {
                if let Some(ns) = f.get(1) {
                    d.servers.push(ns.to_string());
                }
            }
            Some("search") => {
                d.searches = f[1..]
                    .iter()
                    .filter(|s| **s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect();
            }
            Some("options") => {
                for o in &f[1..] {
                    let name = o.split(':').next().unwrap_or(o);
                    d.options.retain(|x| x.split(':').next() != Some(name));
                    d.options.push(o.to_string());
                }
            }
            _ => {}
        }
    }
    d
}

/// Reads and parses the host's resolv.conf (`resolvConf`); the empty path
/// means none (`Ok(None)`).
pub fn read_host_dns(path: &str) -> anyhow::Result<Option<DnsConfig>> {
    use anyhow::Context;
    if path.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read resolvConf {path}"))?;
    Ok(Some(parse_resolv_conf(&text)))
}

fn omit_duplicates(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Merges options by name; pod options override; output sorted by name.
fn merge_dns_options(base: &[String], pod: &[(String, Option<String>)]) -> Vec<String> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for o in base {
        match o.split_once(':') {
            Some((k, v)) => m.insert(k.to_string(), v.to_string()),
            None => m.insert(o.clone(), String::new()),
        };
    }
    for (k, v) in pod {
        m.insert(k.clone(), v.clone().unwrap_or_default());
    }
    m.into_iter()
        .map(|(k, v)| if v.is_empty() { k } else { format!("{k}:{v}") })
        .collect()
}

/// Applies the search list limits (32 paths, each at most 253 chars, the
/// whole line at most 2048 chars), cutting from the end as upstream does.
fn fit_searches(mut s: Vec<String>, warnings: &mut Vec<String>) -> Vec<String> {
    let mut exceeded = false;
    if s.len() > MAX_DNS_SEARCH_PATHS {
        s.truncate(MAX_DNS_SEARCH_PATHS);
        exceeded = true;
    }
    let before = s.len();
    s.retain(|x| x.len() <= DNS1123_SUBDOMAIN_MAX_LEN);
    exceeded |= s.len() != before;
    let line_len =
        |s: &[String]| s.iter().map(|x| x.len()).sum::<usize>() + s.len().saturating_sub(1);
    while line_len(&s) > MAX_DNS_SEARCH_LIST_CHARS {
        s.pop();
        exceeded = true;
    }
    if exceeded {
        warnings.push(format!(
            "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
            s.join(" ")
        ));
    }
    s
}

/// The pod's DNS config by `dnsPolicy` (upstream `GetPodDNS`), merged with
/// `dnsConfig` and cut to the resolver limits. Warnings are upstream's events.
pub fn pod_dns(
    pod: &Pod,
    node: &NodeContext,
    warnings: &mut Vec<String>,
) -> Result<DnsConfig, ConfigError> {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    enum Kind {
        None,
        Cluster,
        Host,
    }
    let kind = match policy {
        "None" => Kind::None,
        "ClusterFirstWithHostNet" => Kind::Cluster,
        "ClusterFirst" if !host_network => Kind::Cluster,
        "ClusterFirst" | "Default" => Kind::Host,
        other => {
            warnings.push(format!(
                "invalid DNSPolicy={other}: falling back to ClusterFirst"
            ));
            Kind::Cluster
        }
    };
    let host = node.host_dns.clone().unwrap_or_default();
    let mut d = match kind {
        Kind::None => DnsConfig::default(),
        Kind::Cluster if !node.cluster_dns.is_empty() => {
            let mut searches = host.searches.clone();
            if !node.cluster_domain.is_empty() {
                let dom = &node.cluster_domain;
                let mut s = vec![
                    format!("{}.svc.{dom}", pod_namespace(pod)),
                    format!("svc.{dom}"),
                    dom.clone(),
                ];
                s.append(&mut searches);
                searches = omit_duplicates(s);
            }
            DnsConfig {
                servers: node.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        Kind::Cluster | Kind::Host => {
            if matches!(kind, Kind::Cluster) {
                warnings.push(format!(
                    "pod: \"{}_{}({})\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.",
                    pod_name(pod),
                    pod_namespace(pod),
                    pod_uid(pod)
                ));
            }
            let mut d = host;
            if node.host_dns.is_none() {
                // resolvConf "": point at the node itself, which upstream
                // documents as effectively disabling lookups.
                d.servers = node
                    .node_ips
                    .iter()
                    .map(|ip| if ip.is_ipv6() { "::1" } else { "127.0.0.1" }.to_string())
                    .collect();
                if d.servers.is_empty() {
                    d.servers.push("127.0.0.1".into());
                }
                d.searches = vec![".".into()];
            }
            d
        }
    };
    if let Some(pc) = spec.and_then(|s| s.dns_config.as_ref()) {
        let mut servers = std::mem::take(&mut d.servers);
        servers.extend(pc.nameservers.clone().unwrap_or_default());
        d.servers = omit_duplicates(servers);
        let mut searches = std::mem::take(&mut d.searches);
        searches.extend(pc.searches.clone().unwrap_or_default());
        d.searches = omit_duplicates(searches);
        let opts: Vec<(String, Option<String>)> = pc
            .options
            .iter()
            .flatten()
            .filter_map(|o| o.name.clone().map(|n| (n, o.value.clone())))
            .collect();
        d.options = merge_dns_options(&d.options, &opts);
    }
    if d.servers.len() > MAX_DNS_NAMESERVERS {
        d.servers.truncate(MAX_DNS_NAMESERVERS);
        warnings.push(format!(
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
            d.servers.join(" ")
        ));
    }
    d.searches = fit_searches(d.searches, warnings);
    Ok(d)
}

// ---------------------------------------------------------------------------
// Sandbox

/// Namespace modes of the pod (upstream `NamespacesForPod`).
pub fn namespace_options(pod: &Pod) -> NamespaceOptions {
    let spec = pod.spec.as_ref();
    let flag =
        |f: fn(&crate::api::core::PodSpec) -> Option<bool>| spec.and_then(f).unwrap_or(false);
    NamespaceOptions {
        network: if flag(|s| s.host_network) {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        },
        pid: if flag(|s| s.host_pid) {
            NamespaceMode::Node
        } else if flag(|s| s.share_process_namespace) {
            NamespaceMode::Pod
        } else {
            NamespaceMode::Container
        },
        ipc: if flag(|s| s.host_ipc) {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        },
    }
}

/// Port mappings of the app containers' ports that ask for a host port
/// (upstream `MakePortMappings`, duplicates by name dropped).
pub fn port_mappings(pod: &Pod) -> Result<Vec<PortMapping>, ConfigError> {
    let mut out = Vec::new();
    for c in containers(pod) {
        let mut names = Vec::new();
        for p in c.ports.iter().flatten() {
            let host_ip = p.host_ip.clone().unwrap_or_default();
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let family = if host_ip.is_empty() {
                "any"
            } else if host_ip.contains(':') {
                "v6"
            } else {
                "v4"
            };
            let host_port = p.host_port.unwrap_or(0);
            let name = p.name.clone().unwrap_or_else(|| {
                format!(
                    "{family}-{proto}-{host_ip}:{}:{host_port}",
                    p.container_port
                )
            });
            if names.contains(&name) {
                continue;
            }
            names.push(name);
            if host_port == 0 {
                continue;
            }
            let protocol = match proto {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                other => {
                    return Err(err(format!(
                        "container {:?}: unknown port protocol {other:?}",
                        c.name
                    )))
                }
            };
            let port = |v: i32, what: &str| {
                u16::try_from(v)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err(format!("container {:?}: invalid {what} {v}", c.name)))
            };
            out.push(PortMapping {
                protocol,
                container_port: port(p.container_port, "containerPort")?,
                host_port: port(host_port, "hostPort")?,
                host_ip,
            });
        }
    }
    Ok(out)
}

/// `/var/log/pods/<ns>_<name>_<uid>`.
pub fn pod_log_directory(pod_logs_dir: &Path, pod: &Pod) -> PathBuf {
    pod_logs_dir.join(format!(
        "{}_{}_{}",
        pod_namespace(pod),
        pod_name(pod),
        pod_uid(pod)
    ))
}

fn pod_labels(pod: &Pod) -> StringMap {
    let mut l = pod.metadata.labels.clone().unwrap_or_default();
    l.insert(keys::POD_NAME.into(), pod_name(pod).into());
    l.insert(keys::POD_NAMESPACE.into(), pod_namespace(pod).into());
    l.insert(keys::POD_UID.into(), pod_uid(pod).into());
    l
}

fn supplemental_groups(pod: &Pod) -> Vec<i64> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let mut g: Vec<i64> = psc.and_then(|p| p.fs_group).into_iter().collect();
    g.extend(
        psc.and_then(|p| p.supplemental_groups.clone())
            .unwrap_or_default(),
    );
    g
}

/// The sandbox config of a pod (upstream `generatePodSandboxConfig`).
pub fn sandbox_config(
    pod: &Pod,
    node: &NodeContext,
    attempt: u32,
) -> Result<SandboxConversion, ConfigError> {
    if pod_uid(pod).is_empty() || pod_name(pod).is_empty() {
        return Err(err("pod has no name or uid"));
    }
    validate_resources(pod)?;
    let mut warnings = Vec::new();
    let spec = pod.spec.as_ref();
    let ns_opts = namespace_options(pod);
    let (hostname, host_domain) = if ns_opts.network == NamespaceMode::Node {
        (String::new(), String::new())
    } else {
        let (kernel, _, domain) = pod_hostname(pod, &node.cluster_domain)?;
        (kernel, domain)
    };
    let qos = qos_class(pod);
    let psc = spec.and_then(|s| s.security_context.as_ref());
    let sysctls: StringMap = psc
        .and_then(|p| p.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    let host_aliases = spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
        .map(|a| (a.ip.clone(), a.hostnames.clone().unwrap_or_default()))
        .collect();
    let config = PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: pod_name(pod).into(),
            uid: pod_uid(pod).into(),
            namespace: pod_namespace(pod).into(),
            attempt,
        },
        hostname,
        host_domain,
        log_directory: pod_log_directory(&node.pod_logs_dir, pod),
        dns_config: Some(pod_dns(pod, node, &mut warnings)?),
        port_mappings: port_mappings(pod)?,
        labels: pod_labels(pod),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        cgroup_parent: pod_cgroup_parent(
            &node.cgroup_root,
            node.cgroups_per_qos,
            qos,
            pod_uid(pod),
        ),
        qos_class: qos,
        namespace_options: ns_opts,
        sysctls,
        host_aliases,
        run_as_user: psc.and_then(|p| p.run_as_user),
        run_as_group: psc.and_then(|p| p.run_as_group),
        supplemental_groups: supplemental_groups(pod),
        resources: Some(pod_cgroup_resources(pod, qos, node.pod_pids_limit)?),
    };
    Ok(SandboxConversion { config, warnings })
}

// ---------------------------------------------------------------------------
// $(VAR) expansion (port of kubernetes third_party/forked/golang/expansion)

/// Expands `$(VAR)` references in `input`. `mapping` returns the value of a
/// defined variable; undefined ones stay as written. `$$` is an escaped `$`;
/// a `$` not followed by `(` or `$` is kept with the next byte; an
/// unterminated `$(` is kept literally.
pub fn expand(input: &str, mapping: &dyn Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 1 < b.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest[1..].find(')') {
                    Some(i) => {
                        let name = &rest[1..1 + i];
                        match mapping(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        i + 2
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // Keep the operator and the whole next character.
                    let ch = rest.chars().next().map_or(1, char::len_utf8);
                    out.push('$');
                    out.push_str(&rest[..ch]);
                    ch
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint..]);
    out
}

// ---------------------------------------------------------------------------
// Environment

fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let s = path.strip_suffix("']")?;
    let (head, key) = s.split_once("['")?;
    (!head.is_empty()).then_some((head, key))
}

/// The value of a downward API `fieldRef` (upstream
/// `podFieldSelectorRuntimeValue`). `spec.nodeName` falls back to
/// `node_name` for a pod whose source did not set it.
pub fn field_ref_value(
    pod: &Pod,
    api_version: Option<&str>,
    field_path: &str,
    pod_ips: &[String],
    node_name: &str,
    host_ips: &[IpAddr],
) -> Result<String, ConfigError> {
    if let Some(v) = api_version.filter(|v| !v.is_empty() && *v != "v1") {
        return Err(err(format!("unsupported pod version: {v}")));
    }
    let spec = pod.spec.as_ref();
    let m = &pod.metadata;
    let no_host = || err("no host IP known for this node");
    Ok(match field_path {
        "metadata.name" => pod_name(pod).into(),
        "metadata.namespace" => pod_namespace(pod).into(),
        "metadata.uid" => pod_uid(pod).into(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| node_name.to_string()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ips.first().ok_or_else(no_host)?.to_string(),
        "status.hostIPs" => {
            if host_ips.is_empty() {
                return Err(no_host());
            }
            host_ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        p => match split_subscript(p) {
            Some(("metadata.labels", k)) => m
                .labels
                .as_ref()
                .and_then(|l| l.get(k).cloned())
                .unwrap_or_default(),
            Some(("metadata.annotations", k)) => m
                .annotations
                .as_ref()
                .and_then(|l| l.get(k).cloned())
                .unwrap_or_default(),
            _ => return Err(err(format!("unsupported fieldPath: {p}"))),
        },
    })
}

/// The value of a downward API `resourceFieldRef` for `c` (upstream
/// `ExtractContainerResourceValue`), unset limits defaulting to node allocatable.
pub fn resource_field_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    allocatable: &Allocatable,
) -> Result<String, ConfigError> {
    let r = container_resources(c)?;
    let lim = Amounts {
        cpu: if r.limits.cpu == 0 {
            allocatable.cpu_milli
        } else {
            r.limits.cpu
        },
        memory: if r.limits.memory == 0 {
            allocatable.memory
        } else {
            r.limits.memory
        },
        ephemeral: if r.limits.ephemeral == 0 {
            allocatable.ephemeral_storage
        } else {
            r.limits.ephemeral
        },
    };
    let div = match divisor {
        None => None,
        Some(d) => {
            let q = Quantity::parse(d).map_err(|e| err(format!("invalid divisor {d:?}: {e}")))?;
            (!q.is_zero()).then_some(q)
        }
    };
    let ceil = |a: i64, b: i64| -> Result<String, ConfigError> {
        if b <= 0 {
            return Err(err(format!("invalid divisor {divisor:?} for {resource}")));
        }
        Ok(((a + b - 1).div_euclid(b)).to_string())
    };
    let cpu = |v: i64| ceil(v, div.map_or(1000, |d| d.milli_value()));
    let bytes = |v: i64| ceil(v, div.map_or(1, |d| d.value()));
    match resource {
        "limits.cpu" => cpu(lim.cpu),
        "requests.cpu" => cpu(r.requests.cpu),
        "limits.memory" => bytes(lim.memory),
        "requests.memory" => bytes(r.requests.memory),
        "limits.ephemeral-storage" => bytes(lim.ephemeral),
        "requests.ephemeral-storage" => bytes(r.requests.ephemeral),
        other => Err(err(format!("unsupported container resource : {other}"))),
    }
}

/// What the API server contributes to a container's environment, fetched
/// by the object manager before the (pure) env is built.
#[derive(Debug, Clone)]
pub struct ApiEnv {
    /// The pod may use configMaps and secrets (an API pod with a client);
    /// `false`: references fail as upstream without a client.
    pub api_objects: bool,
    /// The configMaps and secrets the container references, by name.
    pub config_maps: BTreeMap<String, Result<Rc<ConfigMap>, GetError>>,
    pub secrets: BTreeMap<String, Result<Rc<Secret>, GetError>>,
    /// The service variables (upstream `getServiceEnvVarMap`); `Err` while
    /// the services were never listed.
    pub services: Result<BTreeMap<String, String>, String>,
}

impl Default for ApiEnv {
    fn default() -> Self {
        ApiEnv {
            api_objects: false,
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            services: Ok(BTreeMap::new()),
        }
    }
}

/// A container's environment and the warnings upstream records as
/// `InvalidEnvironmentVariableNames` events (envFrom keys skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvOutcome {
    pub env: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// Event reason for envFrom keys that were skipped.
pub const REASON_INVALID_ENV_NAMES: &str = "InvalidEnvironmentVariableNames";

/// Upstream `IsEnvVarName` (the strict form the v1.31 kubelet checks
/// envFrom keys with): `[-._a-zA-Z][-._a-zA-Z0-9]*`, not `.`, `..` or
/// starting with `..`.
pub fn is_env_var_name(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(first) = b.first() else {
        return false;
    };
    let ok = |c: u8, first: bool| {
        c.is_ascii_alphabetic()
            || c == b'-'
            || c == b'.'
            || c == b'_'
            || (!first && c.is_ascii_digit())
    };
    ok(*first, true) && b[1..].iter().all(|c| ok(*c, false)) && !s.starts_with("..") && s != "."
}

fn no_client(kind: &str, ns: &str, name: &str) -> ConfigError {
    err(format!(
        "couldn't get {kind} {ns}/{name}, no kubeClient defined"
    ))
}

/// Sets `k` keeping its first position (upstream uses a map).
fn env_set(env: &mut Vec<(String, String)>, k: String, v: String) {
    match env.iter_mut().find(|(n, _)| *n == k) {
        Some(e) => e.1 = v,
        None => env.push((k, v)),
    }
}

/// Looks a referenced object up: `Ok(None)` when it is missing and the
/// reference optional.
fn api_object<'a, T>(
    api: Option<&'a ApiEnv>,
    pick: impl Fn(&'a ApiEnv) -> &'a BTreeMap<String, Result<Rc<T>, GetError>>,
    kind: &str,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<&'a T>, ConfigError> {
    let Some(api) = api.filter(|a| a.api_objects) else {
        return Err(no_client(kind, ns, name));
    };
    match pick(api).get(name) {
        Some(Ok(o)) => Ok(Some(o)),
        Some(Err(e)) if e.is_not_found() && optional => Ok(None),
        Some(Err(e)) => Err(err(e.to_string())),
        None => Err(err(format!("object \"{ns}\"/\"{name}\" not registered"))),
    }
}

/// The container's environment (upstream `makeEnvironmentVariables`
/// without an API server): see [`container_env_with`].
pub fn container_env(
    pod: &Pod,
    c: &Container,
    node: &NodeContext,
    pod_ips: &[String],
) -> Result<Vec<(String, String)>, ConfigError> {
    container_env_with(pod, c, node, pod_ips, None).map(|o| o.env)
}

/// The container's environment (upstream `makeEnvironmentVariables`):
/// envFrom first (later sources win; keys that are not valid variable
/// names are skipped with a warning), then `env` in order (values
/// `$(VAR)`-expanded against what is set so far and the service
/// variables; configMap/secret/downward API sources resolved; a missing
/// optional reference leaves the variable unset), then the service
/// variables nothing else set. A repeated name keeps its first position,
/// last value. `api` is `None` without an API server: configMap and
/// secret references fail and there are no service variables.
pub fn container_env_with(
    pod: &Pod,
    c: &Container,
    node: &NodeContext,
    pod_ips: &[String],
    api: Option<&ApiEnv>,
) -> Result<EnvOutcome, ConfigError> {
    let ns = pod_namespace(pod);
    let services = match api.map(|a| &a.services) {
        Some(Ok(s)) => s.clone(),
        Some(Err(e)) => return Err(err(e.clone())),
        None => BTreeMap::new(),
    };
    let mut out = EnvOutcome::default();
    let mut env: Vec<(String, String)> = Vec::new();
    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.as_deref().unwrap_or("");
        let (kind, name, pairs): (&str, &str, Vec<(String, String)>) =
            if let Some(r) = &ef.config_map_ref {
                let optional = r.optional.unwrap_or(false);
                match api_object(api, |a| &a.config_maps, "configMap", ns, &r.name, optional)? {
                    None => continue,
                    Some(cm) => (
                        "configMap",
                        r.name.as_str(),
                        cm.data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                }
            } else if let Some(r) = &ef.secret_ref {
                let optional = r.optional.unwrap_or(false);
                match api_object(api, |a| &a.secrets, "secret", ns, &r.name, optional)? {
                    None => continue,
                    Some(s) => (
                        "secret",
                        r.name.as_str(),
                        s.data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                            .collect(),
                    ),
                }
            } else {
                continue;
            };
        let mut invalid = Vec::new();
        for (k, v) in pairs {
            let k = format!("{prefix}{k}");
            if !is_env_var_name(&k) {
                invalid.push(k);
                continue;
            }
            env_set(&mut env, k, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            out.warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.iter().flatten()
    {
        let v = match (value.as_deref().filter(|v| !v.is_empty()), value_from) {
            (Some(v), _) => {
                let lookup = |k: &str| {
                    env.iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .or_else(|| services.get(k).cloned())
                };
                expand(v, &lookup)
            }
            (None, Some(src)) => {
                if let Some(f) = &src.field_ref {
                    field_ref_value(
                        pod,
                        f.api_version.as_deref(),
                        &f.field_path,
                        pod_ips,
                        &node.node_name,
                        &node.node_ips,
                    )?
                } else if let Some(r) = &src.resource_field_ref {
                    let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                        None => c,
                        Some(n) => init_containers(pod)
                            .iter()
                            .chain(containers(pod))
                            .find(|x| x.name == n)
                            .ok_or_else(|| err(format!("container {n} not found")))?,
                    };
                    resource_field_value(
                        target,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                        &node.allocatable,
                    )?
                } else if let Some(r) = &src.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let Some(cm) =
                        api_object(api, |a| &a.config_maps, "configMap", ns, &r.name, optional)?
                    else {
                        continue;
                    };
                    match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            )))
                        }
                    }
                } else if let Some(r) = &src.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let Some(s) = api_object(api, |a| &a.secrets, "secret", ns, &r.name, optional)?
                    else {
                        continue;
                    };
                    match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(err(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            )))
                        }
                    }
                } else if src.file_key_ref.is_some() {
                    return Err(err(format!("env {name}: fileKeyRef is not supported")));
                } else {
                    String::new()
                }
            }
            (None, None) => String::new(),
        };
        env_set(&mut env, name.clone(), v);
    }
    for (k, v) in services {
        if !env.iter().any(|(n, _)| *n == k) {
            env.push((k, v));
        }
    }
    out.env = env;
    Ok(out)
}

fn env_lookup(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    }
}

/// `command` and `args` with `$(VAR)` expanded against the final environment.
pub fn expand_command_and_args(
    c: &Container,
    env: &[(String, String)],
) -> (Vec<String>, Vec<String>) {
    let m = env_lookup(env);
    let ex = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| expand(s, &m)).collect()
    };
    (ex(&c.command), ex(&c.args))
}

// ---------------------------------------------------------------------------
// Mounts

fn translate_propagation(p: Option<&str>) -> Result<MountPropagation, ConfigError> {
    match p {
        None | Some("None") => Ok(MountPropagation::Private),
        Some("HostToContainer") => Ok(MountPropagation::HostToContainer),
        Some("Bidirectional") => Ok(MountPropagation::Bidirectional),
        Some(other) => Err(err(format!("invalid MountPropagation mode: {other:?}"))),
    }
}

/// One volume mount of the container (upstream `makeMounts`, minus the
/// safe-subpath bind that the volume manager owns).
pub fn volume_mount(
    m: &VolumeMount,
    container: &str,
    volumes: &BTreeMap<String, VolumePath>,
    env: &[(String, String)],
) -> Result<Mount, ConfigError> {
    let vol = volumes.get(&m.name).ok_or_else(|| {
        err(format!(
            "cannot find volume {:?} to mount into container {container:?}",
            m.name
        ))
    })?;
    let mut sub = m.sub_path.clone().unwrap_or_default();
    if let Some(expr) = m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        // Upstream expands undefined and empty variables to "" and fails
        // naming them all.
        let missing = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let values = env_lookup(env);
        let look = |k: &str| {
            let v = values(k).unwrap_or_default();
            if v.is_empty() {
                missing.borrow_mut().insert(k.to_string());
            }
            Some(v)
        };
        let s = expand(expr, &look);
        let missing = missing.into_inner();
        if !missing.is_empty() {
            let names: Vec<_> = missing.into_iter().collect();
            return Err(err(format!("missing value for {}", names.join(", "))));
        }
        sub = s;
    }
    let mut host_path = vol.host_path.clone();
    if !sub.is_empty() {
        if sub.starts_with('/') {
            return Err(err(format!(
                "error SubPath `{sub}` must not be an absolute path"
            )));
        }
        if sub.split('/').any(|p| p == "..") {
            return Err(err(format!(
                "unable to provision SubPath `{sub}`: must not contain '..'"
            )));
        }
        host_path = host_path.join(&sub);
    }
    let readonly = m.read_only.unwrap_or(false) || vol.read_only;
    if m.recursive_read_only.as_deref() == Some("Enabled") {
        return Err(err(format!(
            "volume {:?}: recursiveReadOnly Enabled is not supported by this runtime",
            m.name
        )));
    }
    let container_path = if m.mount_path.starts_with('/') {
        m.mount_path.clone()
    } else {
        format!("/{}", m.mount_path)
    };
    Ok(Mount {
        container_path,
        host_path,
        readonly,
        propagation: translate_propagation(m.mount_propagation.as_deref())?,
    })
}

// ---------------------------------------------------------------------------
// Security context

fn capability_list(v: Option<&Vec<String>>) -> Vec<String> {
    v.cloned().unwrap_or_default()
}

/// The container's effective security context (upstream
/// `DetermineEffectiveSecurityContext` + the CRI conversion).
pub fn security_context(pod: &Pod, c: &Container) -> LinuxContainerSecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let caps = csc.and_then(|s| s.capabilities.as_ref());
    let privileged = csc.and_then(|s| s.privileged).unwrap_or(false);
    let add = capability_list(caps.and_then(|c| c.add.as_ref()));
    let sys_admin = add.iter().any(|a| {
        a.trim_start_matches("CAP_")
            .eq_ignore_ascii_case("SYS_ADMIN")
    });
    // Validation forbids allowPrivilegeEscalation=false with privileged or
    // CAP_SYS_ADMIN; honour those over the flag if the check was skipped.
    let no_new_privs =
        csc.and_then(|s| s.allow_privilege_escalation) == Some(false) && !privileged && !sys_admin;
    let unmasked = csc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked");
    LinuxContainerSecurityContext {
        capabilities: Capabilities {
            add,
            drop: capability_list(caps.and_then(|c| c.drop.as_ref())),
        },
        privileged,
        namespace_options: namespace_options(pod),
        run_as_user: csc
            .and_then(|s| s.run_as_user)
            .or(psc.and_then(|s| s.run_as_user)),
        run_as_username: String::new(),
        run_as_group: csc
            .and_then(|s| s.run_as_group)
            .or(psc.and_then(|s| s.run_as_group)),
        run_as_non_root: csc
            .and_then(|s| s.run_as_non_root)
            .or(psc.and_then(|s| s.run_as_non_root))
            .unwrap_or(false),
        readonly_rootfs: csc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        supplemental_groups: supplemental_groups(pod),
        no_new_privs,
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
        unmasked_proc: unmasked,
        sysctls: StringMap::new(),
    }
}

// ---------------------------------------------------------------------------
// Container

/// The container config (upstream `generateContainerConfig`). Errors are
/// reported as `CreateContainerConfigError`.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    node: &NodeContext,
    inputs: &ContainerInputs<'_>,
) -> Result<ContainerConfig, ConfigError> {
    container_config_with(pod, c, node, inputs, None).map(|(c, _)| c)
}

/// [`container_config`] with what the API server contributes to the
/// environment; also returns the env warnings (see [`EnvOutcome`]).
pub fn container_config_with(
    pod: &Pod,
    c: &Container,
    node: &NodeContext,
    inputs: &ContainerInputs<'_>,
    api: Option<&ApiEnv>,
) -> Result<(ContainerConfig, Vec<String>), ConfigError> {
    let kind = container_kind(pod, &c.name)
        .ok_or_else(|| err(format!("container {:?} is not part of the pod", c.name)))?;
    validate_resources(pod)?;
    let EnvOutcome {
        env: envs,
        warnings,
    } = container_env_with(pod, c, node, inputs.pod_ips, api)?;
    let (command, args) = expand_command_and_args(c, &envs);
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        mounts.push(volume_mount(m, &c.name, inputs.volumes, &envs)?);
    }
    let qos = qos_class(pod);
    let mut resources = container_cgroup_resources(c)?;
    resources.oom_score_adj = oom_score_adj(pod, c, qos, node.memory_capacity)?;
    let termination_message_path = c
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_string());
    let mut labels = StringMap::new();
    labels.insert(keys::POD_NAME.into(), pod_name(pod).into());
    labels.insert(keys::POD_NAMESPACE.into(), pod_namespace(pod).into());
    labels.insert(keys::POD_UID.into(), pod_uid(pod).into());
    labels.insert(keys::CONTAINER_NAME.into(), c.name.clone());
    let mut annotations = StringMap::new();
    annotations.insert(keys::CONTAINER_HASH.into(), inputs.hash.into());
    annotations.insert(
        keys::CONTAINER_RESTART_COUNT.into(),
        inputs.restart_count.to_string(),
    );
    annotations.insert(
        keys::TERMINATION_MESSAGE_PATH.into(),
        termination_message_path.clone(),
    );
    annotations.insert(
        keys::TERMINATION_MESSAGE_POLICY.into(),
        c.termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
    );
    if let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        annotations.insert(keys::POD_TERMINATION_GRACE_PERIOD.into(), g.to_string());
    }
    annotations.insert(keys::CONTAINER_TYPE.into(), kind.as_str().into());
    let config = ContainerConfig {
        metadata: ContainerMetadata {
            name: c.name.clone(),
            attempt: inputs.restart_count,
        },
        image: c.image.clone().unwrap_or_default(),
        image_id: inputs.image_id.into(),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        devices: Vec::new(),
        labels,
        annotations,
        log_path: format!("{}/{}.log", c.name, inputs.restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        resources,
        security_context: security_context(pod, c),
        termination_message_path,
        stop_signal: c.lifecycle.as_ref().and_then(|l| l.stop_signal.clone()),
    };
    Ok((config, warnings))
}

#[cfg(test)]
mod tests;
