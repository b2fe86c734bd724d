use super::*;
use serde_json::{json, Value};

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("test pod")
}

fn node(v: Value) -> Node {
    serde_json::from_value(v).expect("test node")
}

/// A pod with one container requesting `req` (a resource list).
fn with_requests(uid: &str, req: Value) -> Pod {
    pod(json!({
        "metadata": {"name": uid, "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": req}}]}
    }))
}

fn alloc(cpu_milli: i64, memory: i64, pods: i64) -> Resources {
    Resources {
        cpu_milli,
        memory,
        ephemeral_storage: 10 << 30,
        pods,
        scalar: BTreeMap::new(),
    }
}

fn view(a: Resources) -> NodeView<'static> {
    NodeView {
        name: "n1",
        node: None,
        allocatable: a,
        pressure: Pressure::default(),
    }
}

fn rejection(reason: &str, message: &str) -> Result<(), Rejection> {
    Err(Rejection {
        reason: reason.into(),
        message: message.into(),
    })
}

// ---------------------------------------------------------------------------
// Resources

#[test]
fn cpu_over_capacity_counts_active_pods() {
    let v = view(alloc(2000, 1 << 30, 110));
    let running = with_requests("a", json!({"cpu": "500m"}));
    let new = with_requests("b", json!({"cpu": "1600m"}));
    assert_eq!(
        admit(&new, &v, &[&running]),
        rejection(
            "OutOfcpu",
            "Node didn't have enough resource: cpu, requested: 1600, used: 500, capacity: 2000"
        )
    );
    // Without the running pod it fits; exactly the remainder fits too.
    assert_eq!(admit(&new, &v, &[]), Ok(()));
    let exact = with_requests("c", json!({"cpu": "1500m"}));
    assert_eq!(admit(&exact, &v, &[&running]), Ok(()));
}

#[test]
fn the_final_status_reads_like_upstream() {
    let v = view(alloc(2000, 1 << 30, 110));
    let new = with_requests("b", json!({"cpu": "3"}));
    let r = admit(&new, &v, &[]).unwrap_err();
    let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
    let s = rejected_status(&new, &r, now);
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(s.reason.as_deref(), Some("OutOfcpu"));
    assert_eq!(
        s.message.as_deref(),
        Some(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 3000, used: 0, \
             capacity: 2000"
        )
    );
    assert_eq!(s.qos_class.as_deref(), Some("Burstable"));
    assert_eq!(s.start_time, Some(Time(now)));
    assert!(s.container_statuses.is_none());
    assert!(s.conditions.is_none());
}

#[test]
fn rejected_status_keeps_start_time_and_foreign_conditions() {
    let p = pod(json!({
        "metadata": {"name": "p", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}}}]},
        "status": {
            "startTime": "2024-01-01T00:00:00Z",
            "qosClass": "Guaranteed",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"},
                {"type": "example.com/gate", "status": "True"}
            ]
        }
    }));
    let r = Rejection {
        reason: "NodeName".into(),
        message: "m".into(),
    };
    let s = rejected_status(&p, &r, jiff::Timestamp::now());
    assert_eq!(s.message.as_deref(), Some("Pod was rejected: m"));
    assert_eq!(s.qos_class.as_deref(), Some("Guaranteed"));
    assert_eq!(
        s.start_time.map(|t| t.0.to_string()),
        Some("2024-01-01T00:00:00Z".to_string())
    );
    let types: Vec<String> = s
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["PodScheduled", "example.com/gate"]);
}

#[test]
fn memory_and_ephemeral_storage_over_capacity() {
    let v = view(alloc(4000, 1 << 30, 110));
    let running = with_requests("a", json!({"memory": "768Mi"}));
    let new = with_requests("b", json!({"memory": "512Mi"}));
    assert_eq!(
        admit(&new, &v, &[&running]),
        rejection(
            "OutOfmemory",
            "Node didn't have enough resource: memory, requested: 536870912, used: 805306368, \
             capacity: 1073741824"
        )
    );
    let disk = with_requests("c", json!({"ephemeral-storage": "11Gi"}));
    assert_eq!(
        admit(&disk, &v, &[]),
        rejection(
            "OutOfephemeral-storage",
            "Node didn't have enough resource: ephemeral-storage, requested: 11811160064, used: 0, \
             capacity: 10737418240"
        )
    );
}

#[test]
fn too_many_pods_comes_first_even_without_requests() {
    let v = view(alloc(1000, 1 << 30, 2));
    let a = with_requests("a", json!({}));
    let b = with_requests("b", json!({}));
    let new = with_requests("c", json!({"cpu": "2"}));
    assert_eq!(
        admit(&new, &v, &[&a, &b]),
        rejection(
            "OutOfpods",
            "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
        )
    );
    assert_eq!(admit(&with_requests("d", json!({})), &v, &[&a]), Ok(()));
}

#[test]
fn the_pod_itself_and_mirror_pods_are_not_counted() {
    let v = view(alloc(1000, 1 << 30, 1));
    let new = with_requests("a", json!({"cpu": "1"}));
    let mut mirror = with_requests("m", json!({"cpu": "1"}));
    mirror.metadata.annotations = Some(
        [(CONFIG_MIRROR.to_string(), "hash".to_string())]
            .into_iter()
            .collect(),
    );
    assert_eq!(admit(&new, &v, &[&new, &mirror]), Ok(()));
}

#[test]
fn a_pod_without_cpu_request_fits_an_overcommitted_node() {
    let v = view(alloc(1000, 1 << 30, 110));
    let mut critical = with_requests("a", json!({"cpu": "3"}));
    critical.spec.as_mut().unwrap().priority = Some(SYSTEM_CRITICAL_PRIORITY);
    let new = with_requests("b", json!({"memory": "1Mi"}));
    assert_eq!(admit(&new, &v, &[&critical]), Ok(()));
}

#[test]
fn extended_resources_and_hugepages() {
    let n = node(json!({
        "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110",
                                   "example.com/gpu": "2"}}
    }));
    let v = NodeView {
        node: Some(&n),
        ..view(alloc(0, 0, 0))
    };
    let running = with_requests("a", json!({"example.com/gpu": "1"}));
    let new = with_requests("b", json!({"example.com/gpu": "2"}));
    assert_eq!(
        admit(&new, &v, &[&running]),
        rejection(
            "OutOfexample.com/gpu",
            "Node didn't have enough resource: example.com/gpu, requested: 2, used: 1, capacity: 2"
        )
    );
    // An extended resource the node does not have is a cluster-level one:
    // ignored (upstream removeMissingExtendedResources).
    let cluster = with_requests("c", json!({"example.com/licence": "5"}));
    assert_eq!(admit(&cluster, &v, &[&running]), Ok(()));
    // Hugepages are not extended: missing means none.
    let huge = with_requests("d", json!({"hugepages-2Mi": "4Mi", "memory": "4Mi"}));
    assert_eq!(
        admit(&huge, &v, &[]),
        rejection(
            "OutOfhugepages-2Mi",
            "Node didn't have enough resource: hugepages-2Mi, requested: 4194304, used: 0, \
             capacity: 0"
        )
    );
    let mut a = alloc(4000, 8 << 30, 110);
    a.scalar.insert("hugepages-2Mi".into(), 8 << 20);
    assert_eq!(admit(&huge, &view(a), &[]), Ok(()));
}

#[test]
fn node_allocatable_wins_over_the_computed_one() {
    let n = node(json!({
        "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "500m", "memory": "1Gi", "pods": "10"}}
    }));
    let v = NodeView {
        node: Some(&n),
        ..view(alloc(8000, 1 << 30, 110))
    };
    let new = with_requests("b", json!({"cpu": "1"}));
    assert_eq!(
        admit(&new, &v, &[]),
        rejection(
            "OutOfcpu",
            "Node didn't have enough resource: cpu, requested: 1000, used: 0, capacity: 500"
        )
    );
    // A Node without allocatable (not reported yet): picolet's figures.
    let bare = node(json!({"metadata": {"name": "n1"}}));
    let v = NodeView {
        node: Some(&bare),
        ..view(alloc(8000, 1 << 30, 110))
    };
    assert_eq!(admit(&new, &v, &[]), Ok(()));
}

#[test]
fn init_containers_take_the_max() {
    let p = pod(json!({
        "metadata": {"name": "p", "uid": "u"},
        "spec": {
            "initContainers": [
                {"name": "i1", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "10Mi"}}},
                {"name": "i2", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "300Mi"}}}
            ],
            "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}},
                {"name": "b", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}}
            ]
        }
    }));
    let r = pod_requests(&p);
    assert_eq!(r.cpu_milli, 2000);
    assert_eq!(r.memory, 300 << 20);
    let v = view(alloc(1500, 1 << 30, 110));
    assert_eq!(
        admit(&p, &v, &[]),
        rejection(
            "OutOfcpu",
            "Node didn't have enough resource: cpu, requested: 2000, used: 0, capacity: 1500"
        )
    );
}

#[test]
fn sidecars_add_to_the_app_containers_and_to_later_init_containers() {
    // sidecar (1 cpu) then a regular init (2 cpu) then the app (1 cpu):
    // while the init runs: 2 + 1 = 3; steady state: 1 + 1 = 2.
    let p = pod(json!({
        "metadata": {"name": "p"},
        "spec": {
            "initContainers": [
                {"name": "s", "image": "i", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "1"}}},
                {"name": "i", "image": "i", "resources": {"requests": {"cpu": "2"}}}
            ],
            "containers": [{"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}}}]
        }
    }));
    assert_eq!(pod_requests(&p).cpu_milli, 3000);
    // The regular init before the sidecar runs alone: max(2, 1 + 1) = 2.
    let p = pod(json!({
        "metadata": {"name": "p"},
        "spec": {
            "initContainers": [
                {"name": "i", "image": "i", "resources": {"requests": {"cpu": "2"}}},
                {"name": "s", "image": "i", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "1"}}}
            ],
            "containers": [{"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}}}]
        }
    }));
    assert_eq!(pod_requests(&p).cpu_milli, 2000);
    // Two sidecars, then a small init: it runs beside both sidecars
    // (100 + 100 + 50 = 250), more than the steady state (100 + 100 + 10).
    let p = pod(json!({
        "metadata": {"name": "p"},
        "spec": {
            "initContainers": [
                {"name": "s1", "image": "i", "restartPolicy": "Always",
                 "resources": {"requests": {"memory": "100Mi"}}},
                {"name": "s2", "image": "i", "restartPolicy": "Always",
                 "resources": {"requests": {"memory": "100Mi"}}},
                {"name": "i", "image": "i", "resources": {"requests": {"memory": "50Mi"}}}
            ],
            "containers": [{"name": "a", "image": "i", "resources": {"requests": {"memory": "10Mi"}}}]
        }
    }));
    assert_eq!(pod_requests(&p).memory, 250 << 20);
}

#[test]
fn overhead_and_pod_level_requests() {
    let p = pod(json!({
        "metadata": {"name": "p"},
        "spec": {
            "overhead": {"cpu": "250m", "memory": "64Mi"},
            "containers": [{"name": "a", "image": "i",
                            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
        }
    }));
    let r = pod_requests(&p);
    assert_eq!(r.cpu_milli, 1250);
    assert_eq!(r.memory, (1 << 30) + (64 << 20));
    let v = view(alloc(1200, 2 << 30, 110));
    assert_eq!(
        admit(&p, &v, &[]),
        rejection(
            "OutOfcpu",
            "Node didn't have enough resource: cpu, requested: 1250, used: 0, capacity: 1200"
        )
    );
    let p = pod(json!({
        "metadata": {"name": "p"},
        "spec": {
            "resources": {"requests": {"cpu": "2"}},
            "overhead": {"cpu": "100m"},
            "containers": [{"name": "a", "image": "i",
                            "resources": {"requests": {"cpu": "500m", "memory": "1Mi"}}}]
        }
    }));
    let r = pod_requests(&p);
    assert_eq!((r.cpu_milli, r.memory), (2100, 1 << 20));
}

#[test]
fn unparsable_quantities_count_as_zero() {
    let p = with_requests("a", json!({"cpu": "lots", "memory": "1Mi"}));
    let r = pod_requests(&p);
    assert_eq!((r.cpu_milli, r.memory), (0, 1 << 20));
}

// ---------------------------------------------------------------------------
// Host ports

fn ports_pod(uid: &str, ports: Value) -> Pod {
    pod(json!({
        "metadata": {"name": uid, "uid": uid},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]}
    }))
}

const PORTS: &str =
    "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports";

#[test]
fn host_port_conflicts() {
    let v = view(alloc(1000, 1 << 30, 110));
    let check = |existing: Value, wanted: Value| {
        let a = ports_pod("a", existing);
        let b = ports_pod("b", wanted);
        admit(&b, &v, &[&a])
    };
    let conflict = rejection("NodePorts", PORTS);
    // Same port, default protocol (TCP) and default IP (0.0.0.0).
    assert_eq!(
        check(
            json!([{"containerPort": 80, "hostPort": 8080}]),
            json!([{"containerPort": 81, "hostPort": 8080, "protocol": "TCP"}])
        ),
        conflict
    );
    // Other protocol: no conflict.
    assert_eq!(
        check(
            json!([{"containerPort": 80, "hostPort": 8080}]),
            json!([{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}])
        ),
        Ok(())
    );
    // Other port: no conflict; no hostPort: nothing held.
    assert_eq!(
        check(
            json!([{"containerPort": 8080}]),
            json!([{"containerPort": 80, "hostPort": 8080}])
        ),
        Ok(())
    );
    // Different specific IPs: no conflict.
    assert_eq!(
        check(
            json!([{"containerPort": 80, "hostPort": 53, "hostIP": "10.0.0.1"}]),
            json!([{"containerPort": 80, "hostPort": 53, "hostIP": "10.0.0.2"}])
        ),
        Ok(())
    );
    // Same specific IP: conflict.
    assert_eq!(
        check(
            json!([{"containerPort": 80, "hostPort": 53, "hostIP": "10.0.0.1"}]),
            json!([{"containerPort": 80, "hostPort": 53, "hostIP": "10.0.0.1"}])
        ),
        conflict
    );
    // A wanted wildcard conflicts with any IP holding the port.
    assert_eq!(
        check(
            json!([{"containerPort": 80, "hostPort": 53, "hostIP": "10.0.0.1"}]),
            json!([{"containerPort": 80, "hostPort": 53, "hostIP": "0.0.0.0"}])
        ),
        conflict
    );
    // A wanted specific IP conflicts with a held wildcard.
    assert_eq!(
        check(
            json!([{"containerPort": 80, "hostPort": 53}]),
            json!([{"containerPort": 80, "hostPort": 53, "hostIP": "127.0.0.1"}])
        ),
        conflict
    );
}

#[test]
fn sidecar_host_ports_are_held() {
    let v = view(alloc(1000, 1 << 30, 110));
    let a = pod(json!({
        "metadata": {"name": "a", "uid": "a"},
        "spec": {
            "initContainers": [
                {"name": "s", "image": "i", "restartPolicy": "Always",
                 "ports": [{"containerPort": 9000, "hostPort": 9000}]},
                {"name": "once", "image": "i",
                 "ports": [{"containerPort": 9100, "hostPort": 9100}]}
            ],
            "containers": [{"name": "c", "image": "i"}]
        }
    }));
    let b = ports_pod("b", json!([{"containerPort": 9000, "hostPort": 9000}]));
    assert_eq!(admit(&b, &v, &[&a]), rejection("NodePorts", PORTS));
    // A regular init container's port is not held for the pod's life.
    let c = ports_pod("c", json!([{"containerPort": 9100, "hostPort": 9100}]));
    assert_eq!(admit(&c, &v, &[&a]), Ok(()));
}

// ---------------------------------------------------------------------------
// Node name, selector, affinity

const AFFINITY: &str =
    "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector";

fn labelled_node() -> Node {
    node(json!({
        "metadata": {"name": "n1", "labels": {
            "kubernetes.io/os": "linux", "kubernetes.io/hostname": "n1",
            "disk": "ssd", "cores": "4", "zone": "a"
        }},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
    }))
}

fn affinity_pod(spec: Value) -> Pod {
    let mut s = json!({"containers": [{"name": "c", "image": "i"}]});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    pod(json!({"metadata": {"name": "p", "uid": "p"}, "spec": s}))
}

fn required(terms: Value) -> Value {
    json!({"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
    }}})
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]})
}

#[test]
fn node_name_mismatch() {
    let v = view(alloc(1000, 1 << 30, 110));
    let p = affinity_pod(json!({"nodeName": "other"}));
    assert_eq!(
        admit(&p, &v, &[]),
        rejection(
            "NodeName",
            "Predicate NodeName failed: node(s) didn't match the requested node name"
        )
    );
    assert_eq!(
        admit(&affinity_pod(json!({"nodeName": "n1"})), &v, &[]),
        Ok(())
    );
}

#[test]
fn node_selector() {
    let n = labelled_node();
    let v = NodeView {
        node: Some(&n),
        ..view(alloc(0, 0, 0))
    };
    let ok = affinity_pod(json!({"nodeSelector": {"disk": "ssd", "zone": "a"}}));
    assert_eq!(admit(&ok, &v, &[]), Ok(()));
    let wrong = affinity_pod(json!({"nodeSelector": {"disk": "hdd"}}));
    assert_eq!(admit(&wrong, &v, &[]), rejection("NodeAffinity", AFFINITY));
    let missing = affinity_pod(json!({"nodeSelector": {"gpu": "yes"}}));
    assert_eq!(
        admit(&missing, &v, &[]),
        rejection("NodeAffinity", AFFINITY)
    );
}

#[test]
fn standalone_node_has_the_default_labels() {
    let v = view(alloc(1000, 1 << 30, 110));
    let arch = crate::kube::go_arch();
    let p = affinity_pod(json!({"nodeSelector": {
        "kubernetes.io/os": "linux", "kubernetes.io/arch": arch, "kubernetes.io/hostname": "n1"
    }}));
    assert_eq!(admit(&p, &v, &[]), Ok(()));
    let p = affinity_pod(json!({"nodeSelector": {"disk": "ssd"}}));
    assert_eq!(admit(&p, &v, &[]), rejection("NodeAffinity", AFFINITY));
}

#[test]
fn required_node_affinity_operators() {
    let n = labelled_node();
    let v = NodeView {
        node: Some(&n),
        ..view(alloc(0, 0, 0))
    };
    let run = |terms: Value| admit(&affinity_pod(required(terms)), &v, &[]);
    let no = rejection("NodeAffinity", AFFINITY);
    assert_eq!(run(json!([expr("disk", "In", &["hdd", "ssd"])])), Ok(()));
    assert_eq!(run(json!([expr("disk", "In", &["hdd"])])), no);
    assert_eq!(run(json!([expr("gpu", "In", &["yes"])])), no);
    assert_eq!(run(json!([expr("disk", "NotIn", &["hdd"])])), Ok(()));
    assert_eq!(run(json!([expr("gpu", "NotIn", &["yes"])])), Ok(()));
    assert_eq!(run(json!([expr("disk", "NotIn", &["ssd"])])), no);
    assert_eq!(run(json!([expr("disk", "Exists", &[])])), Ok(()));
    assert_eq!(run(json!([expr("gpu", "Exists", &[])])), no);
    assert_eq!(run(json!([expr("gpu", "DoesNotExist", &[])])), Ok(()));
    assert_eq!(run(json!([expr("disk", "DoesNotExist", &[])])), no);
    assert_eq!(run(json!([expr("cores", "Gt", &["2"])])), Ok(()));
    assert_eq!(run(json!([expr("cores", "Gt", &["4"])])), no);
    assert_eq!(run(json!([expr("cores", "Lt", &["8"])])), Ok(()));
    assert_eq!(run(json!([expr("cores", "Lt", &["4"])])), no);
    // Gt on a non-integer label or a missing one: no match.
    assert_eq!(run(json!([expr("disk", "Gt", &["1"])])), no);
    assert_eq!(run(json!([expr("gpu", "Lt", &["1"])])), no);
    // Terms that do not parse select nothing.
    assert_eq!(run(json!([expr("cores", "Gt", &["two"])])), no);
    assert_eq!(run(json!([expr("cores", "Gt", &["1", "2"])])), no);
    assert_eq!(run(json!([expr("disk", "In", &[])])), no);
    assert_eq!(run(json!([expr("disk", "Exists", &["ssd"])])), no);
    assert_eq!(run(json!([expr("disk", "Like", &["ssd"])])), no);
    // An empty term selects nothing; terms are ORed; expressions ANDed.
    assert_eq!(run(json!([{}])), no);
    assert_eq!(run(json!([])), no);
    assert_eq!(
        run(json!([
            expr("disk", "In", &["hdd"]),
            expr("zone", "In", &["a"])
        ])),
        Ok(())
    );
    assert_eq!(
        run(json!([{"matchExpressions": [
            {"key": "disk", "operator": "In", "values": ["ssd"]},
            {"key": "zone", "operator": "In", "values": ["b"]}
        ]}])),
        no
    );
    // A bad term beside a good one: the good one still matches.
    assert_eq!(
        run(json!([
            expr("disk", "Like", &[]),
            expr("zone", "Exists", &[])
        ])),
        Ok(())
    );
}

#[test]
fn match_fields_metadata_name() {
    let n = labelled_node();
    let v = NodeView {
        node: Some(&n),
        ..view(alloc(0, 0, 0))
    };
    let run = |terms: Value| admit(&affinity_pod(required(terms)), &v, &[]);
    let no = rejection("NodeAffinity", AFFINITY);
    let field = |op: &str, values: &[&str]| json!({"matchFields": [{"key": "metadata.name", "operator": op, "values": values}]});
    assert_eq!(run(json!([field("In", &["n1"])])), Ok(()));
    assert_eq!(run(json!([field("In", &["n2"])])), no);
    assert_eq!(run(json!([field("NotIn", &["n2"])])), Ok(()));
    assert_eq!(run(json!([field("NotIn", &["n1"])])), no);
    // Only one value, only In/NotIn.
    assert_eq!(run(json!([field("In", &["n1", "n2"])])), no);
    assert_eq!(run(json!([field("Exists", &[])])), no);
    // Fields and labels in one term are ANDed.
    assert_eq!(
        run(json!([{
            "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]
        }])),
        no
    );
    // nodeSelector and affinity must both match.
    let mut spec = required(json!([field("In", &["n1"])]));
    spec["nodeSelector"] = json!({"disk": "hdd"});
    assert_eq!(admit(&affinity_pod(spec), &v, &[]), no);
}

// ---------------------------------------------------------------------------
// Taints

const TAINTS: &str =
    "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate";

fn tainted_node(taints: Value) -> Node {
    node(json!({
        "metadata": {"name": "n1", "labels": {}},
        "spec": {"taints": taints},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
    }))
}

#[test]
fn no_execute_taints() {
    let n = tainted_node(json!([
        {"key": "dedicated", "value": "db", "effect": "NoExecute"},
        {"key": "noisy", "effect": "NoSchedule"}
    ]));
    let v = NodeView {
        node: Some(&n),
        ..view(alloc(0, 0, 0))
    };
    let run =
        |tolerations: Value| admit(&affinity_pod(json!({"tolerations": tolerations})), &v, &[]);
    let no = rejection("TaintToleration", TAINTS);
    // NoSchedule is the scheduler's business: only NoExecute counts.
    assert_eq!(run(json!([])), no);
    assert_eq!(
        run(json!([{"key": "dedicated", "operator": "Exists"}])),
        Ok(())
    );
    assert_eq!(
        run(json!([{"key": "dedicated", "operator": "Equal", "value": "db"}])),
        Ok(())
    );
    // Operator defaults to Equal.
    assert_eq!(run(json!([{"key": "dedicated", "value": "db"}])), Ok(()));
    assert_eq!(
        run(json!([{"key": "dedicated", "operator": "Equal", "value": "web"}])),
        no
    );
    assert_eq!(
        run(
            json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 30}])
        ),
        Ok(())
    );
    assert_eq!(
        run(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}])),
        no
    );
    // Empty key with Exists tolerates everything.
    assert_eq!(run(json!([{"operator": "Exists"}])), Ok(()));
    assert_eq!(run(json!([{"key": "other", "operator": "Exists"}])), no);
    assert_eq!(
        run(json!([{"operator": "Unknown", "key": "dedicated"}])),
        no
    );
}

#[test]
fn static_pods_skip_the_taint_check() {
    let n = tainted_node(json!([{"key": "k", "effect": "NoExecute"}]));
    let v = NodeView {
        node: Some(&n),
        ..view(alloc(0, 0, 0))
    };
    let mut p = affinity_pod(json!({}));
    assert_eq!(admit(&p, &v, &[]), rejection("TaintToleration", TAINTS));
    p.metadata.annotations = Some([(CONFIG_SOURCE.to_string(), "file".to_string())].into());
    assert_eq!(admit(&p, &v, &[]), Ok(()));
    p.metadata.annotations = Some([(CONFIG_SOURCE.to_string(), "api".to_string())].into());
    assert_eq!(admit(&p, &v, &[]), rejection("TaintToleration", TAINTS));
}

// ---------------------------------------------------------------------------
// OS

#[test]
fn os_label_and_field() {
    let v = view(alloc(1000, 1 << 30, 110));
    let mut p = affinity_pod(json!({}));
    p.metadata.labels = Some([("kubernetes.io/os".to_string(), "windows".to_string())].into());
    assert_eq!(
        admit(&p, &v, &[]),
        rejection(
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
        )
    );
    p.metadata.labels = Some([("kubernetes.io/os".to_string(), "linux".to_string())].into());
    assert_eq!(admit(&p, &v, &[]), Ok(()));
    let w = affinity_pod(json!({"os": {"name": "windows"}}));
    assert_eq!(
        admit(&w, &v, &[]),
        rejection(
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS"
        )
    );
    assert_eq!(
        admit(&affinity_pod(json!({"os": {"name": "linux"}})), &v, &[]),
        Ok(())
    );
    // The OS checks come before the others (and are not waived for critical pods).
    let mut both = affinity_pod(json!({"os": {"name": "windows"}, "nodeName": "other"}));
    both.spec.as_mut().unwrap().priority = Some(SYSTEM_CRITICAL_PRIORITY);
    assert_eq!(
        admit(&both, &v, &[]).unwrap_err().reason,
        "PodOSNotSupported"
    );
}

// ---------------------------------------------------------------------------
// Pressure

fn pressured(memory: bool, disk: bool, pid: bool) -> NodeView<'static> {
    NodeView {
        pressure: Pressure { memory, disk, pid },
        ..view(alloc(4000, 8 << 30, 110))
    }
}

#[test]
fn memory_pressure_rejects_best_effort_only() {
    let v = pressured(true, false, false);
    let best_effort = affinity_pod(json!({}));
    assert_eq!(
        admit(&best_effort, &v, &[]),
        rejection("Evicted", "The node had condition: [MemoryPressure]. ")
    );
    let burstable = with_requests("b", json!({"memory": "10Mi"}));
    assert_eq!(admit(&burstable, &v, &[]), Ok(()));
    // A BestEffort pod tolerating the memory-pressure taint (DaemonSets do).
    let tolerant = affinity_pod(json!({"tolerations": [
        {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}
    ]}));
    assert_eq!(admit(&tolerant, &v, &[]), Ok(()));
    let other = affinity_pod(json!({"tolerations": [
        {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}
    ]}));
    assert!(admit(&other, &v, &[]).is_err());
}

#[test]
fn disk_and_pid_pressure_reject_every_pod() {
    let burstable = with_requests("b", json!({"memory": "10Mi"}));
    assert_eq!(
        admit(&burstable, &pressured(false, true, false), &[]),
        rejection("Evicted", "The node had condition: [DiskPressure]. ")
    );
    assert_eq!(
        admit(&burstable, &pressured(false, false, true), &[]),
        rejection("Evicted", "The node had condition: [PIDPressure]. ")
    );
    // Memory plus another pressure: every pod, even a tolerant one.
    let tolerant = affinity_pod(json!({"tolerations": [{"operator": "Exists"}]}));
    assert_eq!(
        admit(&tolerant, &pressured(true, true, false), &[]),
        rejection(
            "Evicted",
            "The node had condition: [MemoryPressure DiskPressure]. "
        )
    );
}

// ---------------------------------------------------------------------------
// Critical pods

#[test]
fn critical_pods() {
    let mut p = affinity_pod(json!({}));
    assert!(!is_critical(&p));
    p.spec.as_mut().unwrap().priority = Some(SYSTEM_CRITICAL_PRIORITY - 1);
    assert!(!is_critical(&p));
    p.spec.as_mut().unwrap().priority = Some(SYSTEM_CRITICAL_PRIORITY);
    assert!(is_critical(&p));
    let mut s = affinity_pod(json!({}));
    s.metadata.annotations = Some([(CONFIG_SOURCE.to_string(), "http".to_string())].into());
    assert!(is_critical(&s) && is_static(&s));
    s.metadata.annotations = Some([(CONFIG_SOURCE.to_string(), "api".to_string())].into());
    assert!(!is_critical(&s));
    s.metadata.annotations = Some([(CONFIG_MIRROR.to_string(), "h".to_string())].into());
    assert!(is_critical(&s) && !is_static(&s));
}

#[test]
fn critical_pods_pass_pressure_and_resources_but_not_the_rest() {
    let mut p = with_requests("s", json!({"cpu": "8"}));
    p.metadata.annotations = Some([(CONFIG_SOURCE.to_string(), "file".to_string())].into());
    // Disk pressure and too little cpu: admitted (picolet does not preempt).
    assert_eq!(admit(&p, &pressured(false, true, false), &[]), Ok(()));
    let full = view(alloc(1000, 1 << 30, 1));
    let other = with_requests("o", json!({"cpu": "1"}));
    assert_eq!(admit(&p, &full, &[&other]), Ok(()));
    // Resource failures are dropped; the next failure is reported.
    p.spec.as_mut().unwrap().node_name = Some("other".into());
    assert_eq!(
        admit(&p, &full, &[&other]),
        rejection(
            "NodeName",
            "Predicate NodeName failed: node(s) didn't match the requested node name"
        )
    );
    // Not critical: the resource failure comes first.
    p.metadata.annotations = None;
    assert_eq!(admit(&p, &full, &[&other]).unwrap_err().reason, "OutOfpods");
}

// ---------------------------------------------------------------------------
// Sysctls

fn sysctl_pod(host_network: bool, names: &[&str]) -> Pod {
    let sysctls: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "value": "1"}))
        .collect();
    affinity_pod(json!({
        "hostNetwork": host_network,
        "securityContext": {"sysctls": sysctls}
    }))
}

#[test]
fn sysctls() {
    let v = view(alloc(1000, 1 << 30, 110));
    let safe = sysctl_pod(
        false,
        &["kernel.shm_rmid_forced", "net/ipv4/tcp_syncookies"],
    );
    assert_eq!(admit(&safe, &v, &[]), Ok(()));
    assert_eq!(
        admit(&sysctl_pod(false, &["net.core.somaxconn"]), &v, &[]),
        rejection(
            "SysctlForbidden",
            "forbidden sysctl: \"net.core.somaxconn\" not allowlisted"
        )
    );
    assert_eq!(
        admit(&sysctl_pod(true, &["net.ipv4.tcp_syncookies"]), &v, &[]),
        rejection(
            "SysctlForbidden",
            "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host net enabled"
        )
    );
    // An ipc sysctl is fine with the host network.
    assert_eq!(
        admit(&sysctl_pod(true, &["kernel.shm_rmid_forced"]), &v, &[]),
        Ok(())
    );
    let mut ipc = sysctl_pod(false, &["kernel.shm_rmid_forced"]);
    ipc.spec.as_mut().unwrap().host_ipc = Some(true);
    assert_eq!(
        admit(&ipc, &v, &[]),
        rejection(
            "SysctlForbidden",
            "forbidden sysctl: \"kernel.shm_rmid_forced\" not allowed with host ipc enabled"
        )
    );
}

// ---------------------------------------------------------------------------
// Order

#[test]
fn handlers_run_in_upstream_order() {
    // Fails everything: pressure is reported first.
    let n = tainted_node(json!([{"key": "k", "effect": "NoExecute"}]));
    let mut p = sysctl_pod(false, &["vm.swappiness"]);
    p.spec.as_mut().unwrap().node_name = Some("other".into());
    let mut v = NodeView {
        node: Some(&n),
        pressure: Pressure {
            disk: true,
            ..Default::default()
        },
        ..view(alloc(0, 0, 0))
    };
    assert_eq!(admit(&p, &v, &[]).unwrap_err().reason, "Evicted");
    v.pressure = Pressure::default();
    assert_eq!(admit(&p, &v, &[]).unwrap_err().reason, "SysctlForbidden");
    p.spec.as_mut().unwrap().security_context = None;
    assert_eq!(admit(&p, &v, &[]).unwrap_err().reason, "NodeName");
    p.spec.as_mut().unwrap().node_name = None;
    assert_eq!(admit(&p, &v, &[]).unwrap_err().reason, "TaintToleration");
}
