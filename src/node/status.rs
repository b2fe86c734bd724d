//! The node's status as upstream's `nodestatus` setters build it, and the
//! decisions around sending it: has it changed (heartbeat times aside),
//! is a report due, and the strategic-merge patch from what the server
//! holds to what picolet wants. Pure functions; the node manager does the
//! I/O.

use crate::api::core::{
    ContainerImage, DaemonEndpoint, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use crate::api::meta::Time;
use crate::api::quantity::{format_binary_si, format_milli, Quantity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Upstream `maxNamesPerImageInNodeStatus`.
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// The condition types the kubelet owns, in upstream's order.
pub const OWN_CONDITIONS: [&str; 4] = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];

/// Everything the status is made from, gathered by the node manager.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    pub hostname: String,
    /// InternalIP addresses, the primary first.
    pub internal_ips: Vec<IpAddr>,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub max_pods: u32,
    pub node_info: NodeSystemInfo,
    pub kubelet_port: i32,
    /// Images, any order (sorted and cut here).
    pub images: Vec<ContainerImage>,
    pub max_images: usize,
    /// Why the node is not ready (runtime, network); empty: ready.
    pub not_ready: Vec<String>,
    pub memory_pressure: bool,
    pub disk_pressure: bool,
    pub pid_pressure: bool,
}

/// Node resources: cpu in millicores, the rest in bytes; hugepages by
/// resource name (`hugepages-2Mi`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub hugepages: BTreeMap<String, i64>,
}

impl Resources {
    fn to_map(&self, pods: u32) -> BTreeMap<String, Q> {
        let mut m = BTreeMap::new();
        m.insert("cpu".into(), Q(format_milli(self.cpu_milli)));
        m.insert("memory".into(), Q(format_binary_si(self.memory)));
        m.insert(
            "ephemeral-storage".into(),
            Q(format_binary_si(self.ephemeral_storage)),
        );
        m.insert("pods".into(), Q(pods.to_string()));
        for (k, v) in &self.hugepages {
            m.insert(k.clone(), Q(format_binary_si(*v)));
        }
        m
    }
}

/// A condition of one of the kubelet's types: status, reason, message.
fn own_condition(f: &NodeFacts, kind: &str) -> (bool, &'static str, String) {
    let (on, yes, no, msg_yes, msg_no) = match kind {
        "MemoryPressure" => (
            f.memory_pressure,
            "KubeletHasInsufficientMemory",
            "KubeletHasSufficientMemory",
            "kubelet has insufficient memory available",
            "kubelet has sufficient memory available",
        ),
        "DiskPressure" => (
            f.disk_pressure,
            "KubeletHasDiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has disk pressure",
            "kubelet has no disk pressure",
        ),
        "PIDPressure" => (
            f.pid_pressure,
            "KubeletHasInsufficientPID",
            "KubeletHasSufficientPID",
            "kubelet has insufficient PID available",
            "kubelet has sufficient PID available",
        ),
        _ => {
            return if f.not_ready.is_empty() {
                (
                    true,
                    "KubeletReady",
                    "kubelet is posting ready status".into(),
                )
            } else {
                (false, "KubeletNotReady", f.not_ready.join(", "))
            };
        }
    };
    if on {
        (true, yes, msg_yes.into())
    } else {
        (false, no, msg_no.into())
    }
}

/// Images for the status: largest first, at most `max`, each with at most
/// five names (digests first, then tags), as upstream's setter.
pub fn status_images(mut images: Vec<ContainerImage>, max: usize) -> Vec<ContainerImage> {
    images.sort_by(|a, b| {
        b.size_bytes
            .unwrap_or(0)
            .cmp(&a.size_bytes.unwrap_or(0))
            .then_with(|| a.names.cmp(&b.names))
    });
    images.truncate(max);
    for i in &mut images {
        if let Some(n) = i.names.as_mut() {
            n.truncate(MAX_NAMES_PER_IMAGE);
        }
    }
    images
}

/// The status picolet wants the server to hold: `current` (the server's)
/// supplies the transition times of unchanged conditions and the
/// conditions others own, which are kept in place.
pub fn desired_status(f: &NodeFacts, current: Option<&NodeStatus>, now: Time) -> NodeStatus {
    let mut conditions: Vec<NodeCondition> = current
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for kind in OWN_CONDITIONS {
        let (on, reason, message) = own_condition(f, kind);
        let status = if on { "True" } else { "False" }.to_string();
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now.clone());
                }
                c.status = status;
                c.reason = Some(reason.into());
                c.message = Some(message);
                c.last_heartbeat_time = Some(now.clone());
            }
            None => conditions.push(NodeCondition {
                type_: kind.into(),
                status,
                reason: Some(reason.into()),
                message: Some(message),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now.clone()),
            }),
        }
    }
    let mut addresses: Vec<NodeAddress> = f
        .internal_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .collect();
    if !f.hostname.is_empty() {
        addresses.push(NodeAddress {
            type_: "Hostname".into(),
            address: f.hostname.clone(),
        });
    }
    let images = status_images(f.images.clone(), f.max_images);
    NodeStatus {
        addresses: Some(addresses),
        allocatable: Some(f.allocatable.to_map(f.max_pods)),
        capacity: Some(f.capacity.to_map(f.max_pods)),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: f.kubelet_port,
            }),
        }),
        images: (!images.is_empty()).then_some(images),
        node_info: Some(f.node_info.clone()),
        ..Default::default()
    }
}

/// The node event reason of one of the kubelet's conditions in a status.
fn condition_reason(kind: &str, status: &str) -> Option<&'static str> {
    Some(match (kind, status) {
        ("MemoryPressure", "False") => "NodeHasSufficientMemory",
        ("MemoryPressure", "True") => "NodeHasInsufficientMemory",
        ("DiskPressure", "False") => "NodeHasNoDiskPressure",
        ("DiskPressure", "True") => "NodeHasDiskPressure",
        ("PIDPressure", "False") => "NodeHasSufficientPID",
        ("PIDPressure", "True") => "NodeHasInsufficientPID",
        ("Ready", "True") => "NodeReady",
        ("Ready", _) => "NodeNotReady",
        _ => return None,
    })
}

/// The kubelet's conditions that are new or changed from `before` to
/// `after`, with the event reason upstream records for each.
pub fn transitions(before: Option<&NodeStatus>, after: &NodeStatus) -> Vec<(String, &'static str)> {
    let find = |s: Option<&NodeStatus>, t: &str| {
        s.and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == t))
            .map(|c| c.status.clone())
    };
    OWN_CONDITIONS
        .iter()
        .filter_map(|t| {
            let now = find(Some(after), t)?;
            if find(before, t).as_deref() == Some(now.as_str()) {
                return None;
            }
            Some((t.to_string(), condition_reason(t, &now)?))
        })
        .collect()
}

/// Fields of the status picolet sets (the rest belongs to others).
const OWN_FIELDS: [&str; 7] = [
    "addresses",
    "allocatable",
    "capacity",
    "conditions",
    "daemonEndpoints",
    "images",
    "nodeInfo",
];

fn to_value(s: &NodeStatus) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// Quantity maps compare by value: the server may print `1024Mi` where
/// picolet printed `1Gi`.
fn same_quantities(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter().all(|(k, va)| {
            b.get(k).is_some_and(|vb| match (va.as_str(), vb.as_str()) {
                (Some(x), Some(y)) => match (Quantity::parse(x), Quantity::parse(y)) {
                    (Ok(qx), Ok(qy)) => qx == qy,
                    _ => x == y,
                },
                _ => va == vb,
            })
        })
}

/// A condition without its heartbeat, for comparisons.
fn without_heartbeat(c: &Value) -> Value {
    let mut c = c.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("lastHeartbeatTime");
    }
    c
}

fn field_changed(key: &str, cur: &Value, des: &Value) -> bool {
    match key {
        "allocatable" | "capacity" => !same_quantities(cur, des),
        "conditions" => {
            let strip = |v: &Value| -> Vec<Value> {
                v.as_array()
                    .map(|a| a.iter().map(without_heartbeat).collect())
                    .unwrap_or_default()
            };
            strip(cur) != strip(des)
        }
        _ => cur != des,
    }
}

/// Whether `desired` differs from `current` in what picolet sets, with
/// heartbeat times ignored (upstream `nodeStatusHasChanged`).
pub fn has_changed(current: &NodeStatus, desired: &NodeStatus) -> bool {
    let (c, d) = (to_value(current), to_value(desired));
    OWN_FIELDS.iter().any(|k| {
        field_changed(
            k,
            c.get(*k).unwrap_or(&Value::Null),
            d.get(*k).unwrap_or(&Value::Null),
        )
    })
}

/// Send when something changed, or when the last report is older than the
/// report frequency (upstream's `nodeStatusReportFrequency`).
pub fn should_send(
    changed: bool,
    last_report: Option<Instant>,
    now: Instant,
    every: Duration,
) -> bool {
    changed || last_report.is_none_or(|t| now.saturating_duration_since(t) >= every)
}

/// A two-way strategic merge patch of `status` from `current` to
/// `desired`, as upstream's `PatchNodeStatus`: maps carry changed keys
/// (removed ones as null), conditions merge by type with
/// `$setElementOrder`, addresses are replaced whole (their merge key is
/// wrong upstream, hence its `$patch: replace` fix-up), images replaced.
pub fn status_patch(current: &NodeStatus, desired: &NodeStatus) -> Value {
    let (c, d) = (to_value(current), to_value(desired));
    let mut st = Map::new();
    for key in OWN_FIELDS {
        let cur = c.get(key).unwrap_or(&Value::Null);
        let des = d.get(key).unwrap_or(&Value::Null);
        if key == "conditions" {
            // Heartbeats count here: a report refreshes them.
            if cur == des {
                continue;
            }
        } else if !field_changed(key, cur, des) {
            continue;
        }
        match key {
            "conditions" => {
                let des_list = des.as_array().cloned().unwrap_or_default();
                let cur_list = cur.as_array().cloned().unwrap_or_default();
                let order: Vec<Value> = des_list
                    .iter()
                    .map(|x| json!({"type": x.get("type").cloned().unwrap_or(Value::Null)}))
                    .collect();
                let mut changed = Vec::new();
                for x in &des_list {
                    let t = x.get("type");
                    match cur_list.iter().find(|y| y.get("type") == t) {
                        Some(y) if y == x => {}
                        Some(y) => {
                            let mut m = map_diff(y, x);
                            m.insert("type".into(), t.cloned().unwrap_or(Value::Null));
                            changed.push(Value::Object(m));
                        }
                        None => changed.push(x.clone()),
                    }
                }
                st.insert("$setElementOrder/conditions".into(), Value::Array(order));
                st.insert("conditions".into(), Value::Array(changed));
            }
            "addresses" => {
                let mut list = des.as_array().cloned().unwrap_or_default();
                if !cur.is_null() {
                    list.push(json!({"$patch": "replace"}));
                }
                st.insert(key.into(), Value::Array(list));
            }
            "images" => {
                st.insert(key.into(), des.clone());
            }
            _ => {
                st.insert(key.into(), Value::Object(map_diff(cur, des)));
            }
        }
    }
    json!({ "status": Value::Object(st) })
}

/// The keys of `des` that differ from `cur` (nested maps recursively) and
/// the keys only `cur` has, as null.
fn map_diff(cur: &Value, des: &Value) -> Map<String, Value> {
    let empty = Map::new();
    let c = cur.as_object().unwrap_or(&empty);
    let d = des.as_object().unwrap_or(&empty);
    let mut out = Map::new();
    for (k, v) in d {
        match c.get(k) {
            Some(old) if old == v => {}
            Some(old) if old.is_object() && v.is_object() => {
                out.insert(k.clone(), Value::Object(map_diff(old, v)));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    for k in c.keys() {
        if !d.contains_key(k) {
            out.insert(k.clone(), Value::Null);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            hostname: "edge-1".into(),
            internal_ips: vec!["192.168.1.5".parse().unwrap()],
            capacity: Resources {
                cpu_milli: 4000,
                memory: 8 << 30,
                ephemeral_storage: 100 << 30,
                hugepages: [("hugepages-2Mi".to_string(), 0)].into(),
            },
            allocatable: Resources {
                cpu_milli: 3750,
                memory: (8 << 30) - (200 << 20),
                ephemeral_storage: 90 << 30,
                hugepages: [("hugepages-2Mi".to_string(), 0)].into(),
            },
            max_pods: 110,
            node_info: NodeSystemInfo {
                architecture: "arm64".into(),
                kubelet_version: "v1.31.0+picolet.0.1.0".into(),
                operating_system: "linux".into(),
                ..Default::default()
            },
            kubelet_port: 10250,
            images: vec![
                ContainerImage {
                    names: Some(vec!["a@sha256:1".into(), "a:1".into()]),
                    size_bytes: Some(10),
                },
                ContainerImage {
                    names: Some((0..9).map(|i| format!("b:{i}")).collect()),
                    size_bytes: Some(20),
                },
            ],
            max_images: 50,
            ..Default::default()
        }
    }

    #[test]
    fn builds_upstream_shaped_status() {
        let s = desired_status(&facts(), None, t("2026-12-06T10:00:00Z"));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["capacity"]["cpu"], "4");
        assert_eq!(v["capacity"]["memory"], "8Gi");
        assert_eq!(v["capacity"]["pods"], "110");
        assert_eq!(v["allocatable"]["cpu"], "3750m");
        assert_eq!(v["allocatable"]["memory"], "7992Mi");
        assert_eq!(v["capacity"]["hugepages-2Mi"], "0");
        assert_eq!(
            v["addresses"],
            json!([{"type":"InternalIP","address":"192.168.1.5"},{"type":"Hostname","address":"edge-1"}])
        );
        assert_eq!(v["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        let types: Vec<&str> = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, OWN_CONDITIONS);
        let ready = &s.conditions.as_ref().unwrap()[3];
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_deref(),
                ready.message.as_deref()
            ),
            (
                "True",
                Some("KubeletReady"),
                Some("kubelet is posting ready status")
            )
        );
        let mem = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(mem.reason.as_deref(), Some("KubeletHasSufficientMemory"));
        // Largest image first, names cut to five.
        let imgs = s.images.unwrap();
        assert_eq!(imgs[0].size_bytes, Some(20));
        assert_eq!(imgs[0].names.as_ref().unwrap().len(), 5);
    }

    #[test]
    fn not_ready_reasons_and_pressure() {
        let mut f = facts();
        f.not_ready = vec!["container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:no CNI configuration".into()];
        f.disk_pressure = true;
        let s = desired_status(&f, None, t("2026-12-06T10:00:00Z"));
        let c = s.conditions.unwrap();
        assert_eq!(c[3].status, "False");
        assert_eq!(c[3].reason.as_deref(), Some("KubeletNotReady"));
        assert!(c[3]
            .message
            .as_deref()
            .unwrap()
            .contains("NetworkReady=false"));
        assert_eq!(
            (c[1].status.as_str(), c[1].reason.as_deref()),
            ("True", Some("KubeletHasDiskPressure"))
        );
    }

    #[test]
    fn heartbeats_alone_are_not_a_change_but_transitions_are() {
        let f = facts();
        let first = desired_status(&f, None, t("2026-12-06T10:00:00Z"));
        let again = desired_status(&f, Some(&first), t("2026-12-06T10:00:10Z"));
        assert!(!has_changed(&first, &again));
        // Transition time kept, heartbeat moved.
        let (a, b) = (
            &first.conditions.as_ref().unwrap()[3],
            &again.conditions.as_ref().unwrap()[3],
        );
        assert_eq!(a.last_transition_time, b.last_transition_time);
        assert_ne!(a.last_heartbeat_time, b.last_heartbeat_time);

        let mut f2 = f.clone();
        f2.not_ready = vec!["runtime down".into()];
        let later = desired_status(&f2, Some(&first), t("2026-12-06T10:00:20Z"));
        assert!(has_changed(&first, &later));
        assert_eq!(
            later.conditions.as_ref().unwrap()[3].last_transition_time,
            Some(t("2026-12-06T10:00:20Z"))
        );

        // A quantity the server prints differently is not a change.
        let mut server = first.clone();
        server
            .capacity
            .as_mut()
            .unwrap()
            .insert("memory".into(), Q("8192Mi".into()));
        assert!(!has_changed(&server, &again));
        // An image more is.
        let mut f3 = f.clone();
        f3.images.pop();
        assert!(has_changed(
            &first,
            &desired_status(&f3, Some(&first), t("2026-12-06T10:00:30Z"))
        ));
    }

    #[test]
    fn others_conditions_are_kept_in_place() {
        let f = facts();
        let mut server = desired_status(&f, None, t("2026-12-06T10:00:00Z"));
        server.conditions.as_mut().unwrap().insert(
            0,
            NodeCondition {
                type_: "NetworkUnavailable".into(),
                status: "False".into(),
                ..Default::default()
            },
        );
        let d = desired_status(&f, Some(&server), t("2026-12-06T10:05:00Z"));
        let types: Vec<&str> = d
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "NetworkUnavailable",
                "MemoryPressure",
                "DiskPressure",
                "PIDPressure",
                "Ready"
            ]
        );
        let p = status_patch(&server, &d);
        let order: Vec<&str> = p["status"]["$setElementOrder/conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["type"].as_str().unwrap())
            .collect();
        assert_eq!(order, types);
        // Only the heartbeat moved: each own condition carries type + heartbeat.
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 4);
        for c in conds {
            let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["lastHeartbeatTime", "type"], "{c}");
        }
        assert!(p["status"].get("capacity").is_none());
        assert!(p["status"].get("images").is_none());
    }

    #[test]
    fn patch_carries_changed_keys_nulls_and_replaced_lists() {
        let f = facts();
        let server = desired_status(&f, None, t("2026-12-06T10:00:00Z"));
        let mut f2 = f.clone();
        f2.capacity.hugepages.clear();
        f2.allocatable.hugepages.clear();
        f2.capacity.cpu_milli = 2000;
        f2.internal_ips = vec!["10.0.0.9".parse().unwrap()];
        f2.images.truncate(1);
        let d = desired_status(&f2, Some(&server), t("2026-12-06T10:00:10Z"));
        let p = status_patch(&server, &d);
        let st = &p["status"];
        assert_eq!(st["capacity"], json!({"cpu": "2", "hugepages-2Mi": null}));
        assert_eq!(st["allocatable"], json!({"hugepages-2Mi": null}));
        assert_eq!(
            st["addresses"],
            json!([{"type":"InternalIP","address":"10.0.0.9"},{"type":"Hostname","address":"edge-1"},{"$patch":"replace"}])
        );
        assert_eq!(st["images"].as_array().unwrap().len(), 1);
        assert!(st.get("nodeInfo").is_none());
        assert!(st.get("daemonEndpoints").is_none());
        // The first report against an empty server status: everything.
        let p = status_patch(&NodeStatus::default(), &d);
        for k in OWN_FIELDS {
            assert!(p["status"].get(k).is_some(), "{k}");
        }
        assert!(p["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.get("$patch").is_none()));
    }

    #[test]
    fn condition_transitions_name_upstreams_events() {
        let f = facts();
        let first = desired_status(&f, None, t("2026-12-06T10:00:00Z"));
        let all: Vec<&str> = transitions(None, &first)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(
            all,
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID",
                "NodeReady"
            ]
        );
        assert!(transitions(Some(&first), &first).is_empty());
        let mut f2 = f.clone();
        f2.not_ready = vec!["x".into()];
        f2.memory_pressure = true;
        let later = desired_status(&f2, Some(&first), t("2026-12-06T10:01:00Z"));
        let r: Vec<&str> = transitions(Some(&first), &later)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(r, ["NodeHasInsufficientMemory", "NodeNotReady"]);
    }

    #[test]
    fn reports_when_changed_or_due() {
        let t0 = Instant::now();
        let five = Duration::from_secs(300);
        assert!(should_send(false, None, t0, five));
        assert!(!should_send(
            false,
            Some(t0),
            t0 + Duration::from_secs(10),
            five
        ));
        assert!(should_send(
            true,
            Some(t0),
            t0 + Duration::from_secs(10),
            five
        ));
        assert!(should_send(false, Some(t0), t0 + five, five));
    }
}
