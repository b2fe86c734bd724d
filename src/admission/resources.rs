//! Resource accounting for admission: a pod's effective requests (upstream
//! `PodRequests`, pkg/api/v1/resource/helpers.go) and the resource fit of
//! the scheduler's `NodeResourcesFit` plugin (`fitsRequest`,
//! pkg/scheduler/framework/plugins/noderesources/fit.go) that the kubelet
//! runs again before it starts a pod.

use crate::api::core::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use std::collections::BTreeMap;

/// Resource amounts as the scheduler's `framework.Resource` keeps them:
/// cpu in millicores, memory and ephemeral storage in bytes, a pod count,
/// and the scalar resources by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// `pods` (node allocatable only; a pod's own requests never carry it).
    pub pods: i64,
    /// Upstream's scalar resources, in whole units: extended resources
    /// (`vendor.example/gpu`), `hugepages-<size>` (bytes),
    /// `kubernetes.io/…` and `attachable-volumes-…` resources.
    pub scalar: BTreeMap<String, i64>,
}

/// `hugepages-2Mi`, `hugepages-1Gi`.
pub(super) fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

/// Upstream `IsPrefixedNativeResource`.
fn is_prefixed_native(name: &str) -> bool {
    name.contains("kubernetes.io/")
}

/// Upstream `IsExtendedResourceName`: a qualified name outside the
/// `kubernetes.io/` namespace and not a quota `requests.` name. (Upstream
/// also checks the name's syntax; pod validation already did.)
pub fn is_extended(name: &str) -> bool {
    name.contains('/') && !is_prefixed_native(name) && !name.starts_with("requests.")
}

/// Upstream `IsScalarResourceName`.
fn is_scalar(name: &str) -> bool {
    is_extended(name)
        || is_hugepages(name)
        || is_prefixed_native(name)
        || name.starts_with("attachable-volumes-")
}

/// A quantity the API machinery accepted. One that does not parse counts as
/// zero: pods from the API server were parsed there already, and static
/// pods are validated by the sources (`validate_resources`), so this only
/// keeps admission total.
fn amount(q: &Q, milli: bool) -> i64 {
    match crate::api::quantity::parse(q) {
        Ok(v) if milli => v.milli_value(),
        Ok(v) => v.value(),
        Err(e) => {
            log::warn!(
                "admission: unparsable quantity {:?} counts as 0: {e:#}",
                q.0
            );
            0
        }
    }
}

impl Resources {
    /// A resource list (`requests`, `overhead`, node `allocatable`) as
    /// upstream's `Resource.Add` reads it; names that are neither standard
    /// nor scalar are ignored, as there.
    pub fn from_list(list: &BTreeMap<String, Q>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list {
            match name.as_str() {
                "cpu" => r.cpu_milli += amount(q, true),
                "memory" => r.memory += amount(q, false),
                "ephemeral-storage" => r.ephemeral_storage += amount(q, false),
                "pods" => r.pods += amount(q, false),
                n if is_scalar(n) => {
                    *r.scalar.entry(n.to_string()).or_default() += amount(q, false)
                }
                _ => {}
            }
        }
        r
    }

    /// Sum, resource by resource.
    pub fn add(&mut self, o: &Resources) {
        self.cpu_milli = self.cpu_milli.saturating_add(o.cpu_milli);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
        self.pods = self.pods.saturating_add(o.pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    /// Maximum, resource by resource (upstream `maxResourceList`).
    pub fn max(&mut self, o: &Resources) {
        self.cpu_milli = self.cpu_milli.max(o.cpu_milli);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.pods = self.pods.max(o.pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(*v);
            *e = (*e).max(*v);
        }
    }

    fn is_zero(&self) -> bool {
        self.cpu_milli == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.is_empty()
    }
}

fn requests(r: Option<&ResourceRequirements>) -> Resources {
    r.and_then(|r| r.requests.as_ref())
        .map(Resources::from_list)
        .unwrap_or_default()
}

fn container_requests(c: &Container) -> Resources {
    requests(c.resources.as_ref())
}

/// An init container with `restartPolicy: Always`: a native sidecar.
pub(super) fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective requests, by upstream `PodRequests`:
///
/// - the app containers' requests summed;
/// - each sidecar (restartable init container) adds its requests to that
///   sum, since it runs beside the app containers;
/// - while the i-th regular init container runs, the pod uses its requests
///   plus those of the sidecars started before it; the pod needs the
///   largest of those, resource by resource, if it exceeds the sum;
/// - pod-level `spec.resources.requests` of cpu and memory replace the
///   containers' figure for that resource (upstream's PodLevelResources,
///   the same rule [`crate::runtime::convert::qos_class`] follows);
/// - `spec.overhead` is added last.
///
/// Quantities are rounded up per container (millicores, bytes) where
/// upstream rounds the pod's exact total: they differ only for sub-millicore
/// or fractional-byte requests.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let own = container_requests(c);
        let during = if is_sidecar(c) {
            reqs.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut t = own;
            t.add(&sidecars);
            t
        };
        init_max.max(&during);
    }
    reqs.max(&init_max);
    if let Some(r) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let pod_level = Resources::from_list(r);
        if r.contains_key("cpu") {
            reqs.cpu_milli = pod_level.cpu_milli;
        }
        if r.contains_key("memory") {
            reqs.memory = pod_level.memory;
        }
    }
    if let Some(o) = spec.overhead.as_ref() {
        reqs.add(&Resources::from_list(o));
    }
    reqs
}

/// One resource the node lacks (upstream `InsufficientResource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insufficient {
    pub resource: String,
    pub requested: i64,
    pub used: i64,
    pub capacity: i64,
}

impl Insufficient {
    /// The kubelet's admission reason (`OutOfcpu`, `OutOfnvidia.com/gpu`).
    pub fn reason(&self) -> String {
        format!("OutOf{}", self.resource)
    }

    /// Upstream `InsufficientResourceError.Error()`.
    pub fn message(&self) -> String {
        format!(
            "Node didn't have enough resource: {}, requested: {}, used: {}, capacity: {}",
            self.resource, self.requested, self.used, self.capacity
        )
    }
}

/// Upstream `fitsRequest`: the pod count first, then cpu, memory,
/// ephemeral storage and the scalar resources (by name; upstream walks a Go
/// map, so its order among scalars is random). `used` is the sum of the
/// other pods' requests, `others` their number.
pub fn fits(
    request: &Resources,
    allocatable: &Resources,
    used: &Resources,
    others: usize,
) -> Vec<Insufficient> {
    let mut out = Vec::new();
    let others = others as i64;
    if others + 1 > allocatable.pods {
        out.push(Insufficient {
            resource: "pods".into(),
            requested: 1,
            used: others,
            capacity: allocatable.pods,
        });
    }
    if request.is_zero() {
        return out;
    }
    let mut check = |name: &str, req: i64, used: i64, cap: i64| {
        if req > 0 && req > cap.saturating_sub(used) {
            out.push(Insufficient {
                resource: name.into(),
                requested: req,
                used,
                capacity: cap,
            });
        }
    };
    check(
        "cpu",
        request.cpu_milli,
        used.cpu_milli,
        allocatable.cpu_milli,
    );
    check("memory", request.memory, used.memory, allocatable.memory);
    check(
        "ephemeral-storage",
        request.ephemeral_storage,
        used.ephemeral_storage,
        allocatable.ephemeral_storage,
    );
    for (name, &req) in &request.scalar {
        let u = used.scalar.get(name).copied().unwrap_or(0);
        let cap = allocatable.scalar.get(name).copied().unwrap_or(0);
        check(name, req, u, cap);
    }
    out
}

/// Upstream `removeMissingExtendedResources`: the pod's requests of
/// extended resources the node does not list as allocatable are dropped
/// (cluster-level resources unknown to nodes). Only container requests are
/// filtered, as upstream; overhead is kept.
pub fn without_missing_extended(pod: &Pod, allocatable: &Resources) -> Pod {
    let mut pod = pod.clone();
    let keep = |name: &String| !is_extended(name) || allocatable.scalar.contains_key(name);
    if let Some(spec) = pod.spec.as_mut() {
        let inits = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(inits) {
            if let Some(req) = c.resources.as_mut().and_then(|r| r.requests.as_mut()) {
                req.retain(|k, _| keep(k));
            }
        }
    }
    pod
}
