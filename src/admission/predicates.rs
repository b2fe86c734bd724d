//! The scheduler predicates the kubelet runs again at admission (upstream
//! `scheduler.AdmissionCheck` and the kubelet's taint check): required node
//! affinity and nodeSelector (component-helpers
//! scheduling/corev1/nodeaffinity), nodeName, host ports (plugins/nodeports
//! with framework `HostPortInfo`), and NoExecute taints
//! (`FindMatchingUntoleratedTaint`, `Toleration.ToleratesTaint`).

use super::resources::is_sidecar;
use crate::api::core::{
    ContainerPort, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use std::collections::{BTreeMap, BTreeSet};

/// Upstream `RequiredNodeAffinity.Match`: the pod's nodeSelector (every
/// key=value present on the node) and its required node affinity (any term
/// matches).
pub fn matches_node_affinity(
    pod: &Pod,
    node_name: &str,
    node_labels: &BTreeMap<String, String>,
) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = spec.node_selector.as_ref() {
        if !sel.iter().all(|(k, v)| node_labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(ns) => node_selector_matches(ns, node_name, node_labels),
        None => true,
    }
}

/// Upstream `LazyErrorNodeSelector.Match`: the terms are ORed; an empty
/// term selects nothing; a term that does not parse (unknown operator,
/// wrong number of values, a non-integer for Gt/Lt) does not match.
pub fn node_selector_matches(
    ns: &NodeSelector,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    ns.node_selector_terms
        .iter()
        .any(|t| term_matches(t, node_name, labels) == Some(true))
}

/// `None`: the term does not parse (or is empty, which selects nothing).
fn term_matches(
    t: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return None;
    }
    let mut ok = true;
    for e in exprs {
        ok &= label_requirement(e, labels)?;
    }
    for f in fields {
        ok &= field_requirement(f, node_name)?;
    }
    Some(ok)
}

fn values(r: &NodeSelectorRequirement) -> &[String] {
    r.values.as_deref().unwrap_or(&[])
}

/// A `matchExpressions` entry (upstream `nodeSelectorRequirementsAsSelector`
/// then `labels.Requirement.Matches`). `None` when it does not parse.
fn label_requirement(
    r: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    let vals = values(r);
    let have = labels.get(&r.key);
    match r.operator.as_str() {
        "In" | "NotIn" => {
            if vals.is_empty() {
                return None;
            }
            let found = have.is_some_and(|v| vals.contains(v));
            Some(if r.operator == "In" { found } else { !found })
        }
        "Exists" | "DoesNotExist" => {
            if !vals.is_empty() {
                return None;
            }
            Some(have.is_some() == (r.operator == "Exists"))
        }
        "Gt" | "Lt" => {
            let [v] = vals else {
                return None;
            };
            let want: i64 = v.parse().ok()?;
            let Some(have) = have.and_then(|h| h.parse::<i64>().ok()) else {
                return Some(false);
            };
            Some(if r.operator == "Gt" {
                have > want
            } else {
                have < want
            })
        }
        _ => None,
    }
}

/// A `matchFields` entry: only `In`/`NotIn` with exactly one value (upstream
/// `nodeSelectorRequirementsAsFieldSelector`); the node's only field is
/// `metadata.name`, any other key reads as empty.
fn field_requirement(r: &NodeSelectorRequirement, node_name: &str) -> Option<bool> {
    let [v] = values(r) else {
        return None;
    };
    let have = if r.key == "metadata.name" {
        node_name
    } else {
        ""
    };
    match r.operator.as_str() {
        "In" => Some(have == v),
        "NotIn" => Some(have != v),
        _ => None,
    }
}

/// Upstream `nodename.Fits`.
pub fn fits_node_name(pod: &Pod, node_name: &str) -> bool {
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        None | Some("") => true,
        Some(n) => n == node_name,
    }
}

/// The host ports a pod holds: its app containers' and its sidecars' ports
/// with a hostPort (upstream `GetHostPorts`; v1.31 looked at app containers
/// only, later releases added the sidecars, which run as long as the pod).
fn host_ports(pod: &Pod) -> Vec<&ContainerPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    sidecars
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .collect()
}

const BIND_ALL: &str = "0.0.0.0";

/// (host IP, protocol, port) with upstream's `HostPortInfo.sanitize`: an
/// empty IP is 0.0.0.0, an empty protocol TCP.
fn port_key(p: &ContainerPort) -> (String, String, i32) {
    let ip = match p.host_ip.as_deref() {
        None | Some("") => BIND_ALL,
        Some(ip) => ip,
    };
    let proto = match p.protocol.as_deref() {
        None | Some("") => "TCP",
        Some(p) => p,
    };
    (ip.to_string(), proto.to_string(), p.host_port.unwrap_or(0))
}

/// Upstream `nodeports.Fits`: no wanted host port conflicts with one the
/// other pods hold. A wanted 0.0.0.0 port conflicts with the same
/// protocol/port on any IP; a wanted specific IP conflicts with the same
/// IP or 0.0.0.0. (`::` is not a wildcard, as upstream.)
pub fn fits_host_ports(pod: &Pod, others: &[&Pod]) -> bool {
    let wanted = host_ports(pod);
    if wanted.is_empty() {
        return true;
    }
    let used: BTreeSet<(String, String, i32)> = others
        .iter()
        .flat_map(|p| host_ports(p))
        .map(port_key)
        .collect();
    !wanted.into_iter().map(port_key).any(|(ip, proto, port)| {
        if ip == BIND_ALL {
            used.iter().any(|(_, pr, po)| *pr == proto && *po == port)
        } else {
            [BIND_ALL, ip.as_str()]
                .iter()
                .any(|i| used.contains(&(i.to_string(), proto.clone(), port)))
        }
    })
}

/// Upstream `Toleration.ToleratesTaint`: an empty effect matches every
/// effect, an empty key every key; operator `Exists` ignores the value,
/// `Equal` (also when empty) compares it.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if k != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// Upstream `TolerationsTolerateTaint`.
pub fn tolerations_tolerate(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first NoExecute taint the pod does not tolerate (the kubelet only
/// looks at NoExecute; NoSchedule and PreferNoSchedule are the
/// scheduler's).
pub fn untolerated_no_execute<'a>(pod: &Pod, taints: &'a [Taint]) -> Option<&'a Taint> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .find(|t| !tolerations_tolerate(tolerations, t))
}
