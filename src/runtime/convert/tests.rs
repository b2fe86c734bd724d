use super::*;
use serde_json::{json, Value};

fn pod(v: Value) -> Pod {
    let mut base = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    });
    merge(&mut base, v);
    serde_json::from_value(base).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn res(req: Value, lim: Value) -> Value {
    json!({"requests": req, "limits": lim})
}

fn node() -> NodeContext {
    NodeContext {
        node_name: "n1".into(),
        cluster_domain: "cluster.local".into(),
        cluster_dns: vec!["10.96.0.10".parse().unwrap()],
        host_dns: Some(parse_resolv_conf(
            "nameserver 1.1.1.1\nsearch example.com corp.\noptions rotate ndots:2\n",
        )),
        node_ips: vec!["192.168.1.5".parse().unwrap()],
        cgroup_root: "/".into(),
        cgroups_per_qos: true,
        pod_pids_limit: -1,
        pod_logs_dir: "/var/log/pods".into(),
        memory_capacity: 4 << 30,
        allocatable: Allocatable {
            cpu_milli: 2000,
            memory: 3 << 30,
            ephemeral_storage: 10 << 30,
        },
    }
}

// --- expansion: the upstream table -----------------------------------------

fn upstream_mapping(k: &str) -> Option<String> {
    let v = match k {
        "VAR_A" => "A",
        "VAR_B" => "B",
        "VAR_C" => "C",
        "VAR_REF" => "$(VAR_A)",
        "VAR_EMPTY" => "",
        _ => return None,
    };
    Some(v.to_string())
}

#[test]
fn expansion_table() {
    let cases = [
        ("$(VAR_A)", "A"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("$(VAR_A)-1", "A-1"),
        ("___$(VAR_B)___", "___B___"),
        ("___$(VAR_C)", "___C"),
        ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
        ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
        ("$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
        ("foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
        ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
        ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
        ("$(VAR_REF)", "$(VAR_A)"),
        ("%%$(VAR_REF)--$(VAR_REF)%%", "%%$(VAR_A)--$(VAR_A)%%"),
        ("foo$(VAR_EMPTY)bar", "foobar"),
        ("foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
        ("f00__(VAR_A)__", "f00__(VAR_A)__"),
        ("$?_boo_$!", "$?_boo_$!"),
        ("$VAR_A", "$VAR_A"),
        ("$(VAR_DNE)", "$(VAR_DNE)"),
        ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
        ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
        ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
        ("$$$$$$$(VAR_A)", "$$$A"),
        ("$VAR_A)", "$VAR_A)"),
        ("${VAR_A}", "${VAR_A}"),
        ("$(VAR_B)_______$(A", "B_______$(A"),
        ("$(VAR_C)_______$(", "C_______$("),
        ("$(VAR_A)foobarzab$", "Afoobarzab$"),
        ("foo-\\$(VAR_A", "foo-\\$(VAR_A"),
        ("--$($($($($--", "--$($($($($--"),
        ("$($($($($--foo$(", "$($($($($--foo$("),
        ("foo0--$($($($(", "foo0--$($($($("),
        ("$(foo$$var)", "$(foo$$var)"),
        ("\n", "\n"),
        // Beyond the upstream table: non-ASCII after `$` stays intact.
        ("$é$(VAR_A)ü", "$éAü"),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, &upstream_mapping), want, "input {input:?}");
    }
}

#[test]
fn env_expansion_order_and_escapes() {
    let p = pod(
        json!({"spec": {"containers": [{"name": "c", "image": "x", "env": [
        {"name": "FOO", "value": "bar"},
        {"name": "ZOO", "value": "$(FOO)-1"},
        {"name": "BLU", "value": "$(ZOO)-2"},
        {"name": "EARLY", "value": "$(LATE)"},
        {"name": "LATE", "value": "late"},
        {"name": "ESC", "value": "$$(FOO)"},
        {"name": "EMPTY"},
        {"name": "FOO", "value": "again-$(FOO)"}
    ], "command": ["sh", "$(BLU)"], "args": ["$(LATE)", "$$(LATE)", "$(NOPE)"]}]}}),
    );
    let c = &p.spec.as_ref().unwrap().containers[0];
    let env = container_env(&p, c, &node(), &[]).unwrap();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("ZOO"), Some("bar-1"));
    assert_eq!(get("BLU"), Some("bar-1-2"));
    assert_eq!(get("EARLY"), Some("$(LATE)"), "later-defined stays literal");
    assert_eq!(get("ESC"), Some("$(FOO)"));
    assert_eq!(get("EMPTY"), Some(""));
    assert_eq!(
        get("FOO"),
        Some("again-bar"),
        "a repeated name sees the earlier value"
    );
    assert_eq!(env[0].0, "FOO", "a repeated name keeps its first position");
    assert_eq!(env.len(), 7);
    let (cmd, args) = expand_command_and_args(c, &env);
    assert_eq!(cmd, ["sh", "bar-1-2"]);
    assert_eq!(args, ["late", "$(LATE)", "$(NOPE)"]);
}

// --- QoS, cgroups, resources -----------------------------------------------

fn qos_of(containers: Value, init: Value) -> QosClass {
    qos_class(&pod(
        json!({"spec": {"containers": containers, "initContainers": init}}),
    ))
}

#[test]
fn qos_table() {
    let g = res(
        json!({"cpu": "1", "memory": "1Gi"}),
        json!({"cpu": "1", "memory": "1Gi"}),
    );
    let lim_only = json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
    let req_only = res(json!({"cpu": "100m"}), json!({}));
    let cases: Vec<(Value, Value, QosClass)> = vec![
        (json!([{"name": "a"}]), json!([]), QosClass::BestEffort),
        (
            json!([{"name": "a", "resources": g}]),
            json!([]),
            QosClass::Guaranteed,
        ),
        (
            json!([{"name": "a", "resources": lim_only}]),
            json!([]),
            QosClass::Guaranteed,
        ),
        (
            json!([{"name": "a", "resources": req_only}]),
            json!([]),
            QosClass::Burstable,
        ),
        // equal values written differently are equal
        (
            json!([{"name": "a", "resources": res(json!({"cpu": "1000m", "memory": "1Gi"}), json!({"cpu": "1", "memory": "1073741824"}))}]),
            json!([]),
            QosClass::Guaranteed,
        ),
        // one Guaranteed, one BestEffort container
        (
            json!([{"name": "a", "resources": g}, {"name": "b"}]),
            json!([]),
            QosClass::Burstable,
        ),
        // cpu only, equal: not Guaranteed (memory missing)
        (
            json!([{"name": "a", "resources": {"limits": {"cpu": "1"}}}]),
            json!([]),
            QosClass::Burstable,
        ),
        // only non-QoS resources: BestEffort
        (
            json!([{"name": "a", "resources": {"requests": {"ephemeral-storage": "1Gi"}}}]),
            json!([]),
            QosClass::BestEffort,
        ),
        // init containers count
        (
            json!([{"name": "a", "resources": g}]),
            json!([{"name": "i", "resources": req_only}]),
            QosClass::Burstable,
        ),
        (
            json!([{"name": "a", "resources": g}]),
            json!([{"name": "i", "resources": g}]),
            QosClass::Guaranteed,
        ),
        (
            json!([{"name": "a"}]),
            json!([{"name": "i", "resources": g}]),
            QosClass::Burstable,
        ),
        // explicit zero request with a limit is not defaulted
        (
            json!([{"name": "a", "resources": res(json!({"cpu": "0", "memory": "1Gi"}), json!({"cpu": "1", "memory": "1Gi"}))}]),
            json!([]),
            QosClass::Burstable,
        ),
    ];
    for (i, (c, init, want)) in cases.into_iter().enumerate() {
        assert_eq!(qos_of(c, init), want, "case {i}");
    }
    let recorded = pod(json!({"status": {"qosClass": "Burstable"}}));
    assert_eq!(qos_class(&recorded), QosClass::Burstable);
    let pod_level = pod(json!({"spec": {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}}));
    assert_eq!(qos_class(&pod_level), QosClass::Guaranteed);
}

#[test]
fn shares_and_quota_math() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(100), 102);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(500_000), 262_144);
    assert_eq!(milli_cpu_to_quota(0, QUOTA_PERIOD), 0);
    assert_eq!(milli_cpu_to_quota(5, QUOTA_PERIOD), 1000);
    assert_eq!(milli_cpu_to_quota(10, QUOTA_PERIOD), 1000);
    assert_eq!(milli_cpu_to_quota(250, QUOTA_PERIOD), 25_000);
    assert_eq!(milli_cpu_to_quota(2500, QUOTA_PERIOD), 250_000);
}

#[test]
fn cgroup_parents() {
    assert_eq!(
        pod_cgroup_parent("/", true, QosClass::Guaranteed, "u"),
        "/kubepods/podu"
    );
    assert_eq!(
        pod_cgroup_parent("/", true, QosClass::Burstable, "u"),
        "/kubepods/burstable/podu"
    );
    assert_eq!(
        pod_cgroup_parent("/t/", true, QosClass::BestEffort, "u"),
        "/t/kubepods/besteffort/podu"
    );
    assert_eq!(
        pod_cgroup_parent("/t", false, QosClass::BestEffort, "u"),
        "/t"
    );
    assert_eq!(pod_cgroup_parent("/", false, QosClass::Burstable, "u"), "/");
    assert_eq!(
        qos_cgroups("/x"),
        [
            "/x/kubepods",
            "/x/kubepods/burstable",
            "/x/kubepods/besteffort"
        ]
    );
}

#[test]
fn pod_level_cgroup_limits() {
    let g = json!({"name": "a", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}});
    let b = json!({"name": "b", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "32Mi"}}});
    let p = pod(json!({"spec": {"containers": [g]}}));
    let r = pod_cgroup_resources(&p, QosClass::Guaranteed, 100).unwrap();
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.cpu_period),
        (256, 25_000, 100_000)
    );
    assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    assert_eq!(r.pids_limit, 100);

    // Burstable: memory limits everywhere, cpu limit missing in one container.
    let p = pod(json!({"spec": {"containers": [g, b]}}));
    assert_eq!(qos_class(&p), QosClass::Burstable);
    let r = pod_cgroup_resources(&p, QosClass::Burstable, -1).unwrap();
    assert_eq!(r.cpu_shares, milli_cpu_to_shares(350));
    assert_eq!((r.cpu_quota, r.cpu_period), (0, 0));
    assert_eq!(r.memory_limit_in_bytes, 96 << 20);
    assert_eq!(r.pids_limit, 0);

    // Init containers count as the max; sidecars add up.
    let p = pod(json!({"spec": {
    "containers": [{"name": "a", "resources": {"limits": {"cpu": "100m", "memory": "10Mi"}}}],
    "initContainers": [
        {"name": "big", "resources": {"limits": {"cpu": "1", "memory": "100Mi"}}},
        {"name": "side", "restartPolicy": "Always", "resources": {"limits": {"cpu": "50m", "memory": "5Mi"}}}
    ]}}));
    let r = pod_cgroup_resources(&p, QosClass::Guaranteed, -1).unwrap();
    assert_eq!(r.cpu_quota, 100_000);
    assert_eq!(r.memory_limit_in_bytes, 100 << 20);

    let r = pod_cgroup_resources(&pod(json!({})), QosClass::BestEffort, 50).unwrap();
    assert_eq!(
        (r.cpu_shares, r.memory_limit_in_bytes, r.pids_limit),
        (2, 0, 50)
    );
}

#[test]
fn container_limits() {
    let c: Container = serde_json::from_value(json!({"name": "a",
        "resources": {"requests": {"cpu": "100m", "memory": "10Mi"}, "limits": {"cpu": "200m", "memory": "20Mi"}}}))
    .unwrap();
    let r = container_cgroup_resources(&c).unwrap();
    assert_eq!(
        (
            r.cpu_shares,
            r.cpu_quota,
            r.cpu_period,
            r.memory_limit_in_bytes
        ),
        (102, 20_000, 100_000, 20 << 20)
    );
    let c: Container =
        serde_json::from_value(json!({"name": "a", "resources": {"limits": {"cpu": "1"}}}))
            .unwrap();
    assert_eq!(container_cgroup_resources(&c).unwrap().cpu_shares, 1024);
    let c: Container = serde_json::from_value(json!({"name": "a"})).unwrap();
    let r = container_cgroup_resources(&c).unwrap();
    assert_eq!(
        (
            r.cpu_shares,
            r.cpu_quota,
            r.cpu_period,
            r.memory_limit_in_bytes
        ),
        (2, 0, 100_000, 0)
    );
    let bad: Container =
        serde_json::from_value(json!({"name": "a", "resources": {"limits": {"memory": "lots"}}}))
            .unwrap();
    let e = container_cgroup_resources(&bad).unwrap_err().to_string();
    assert!(e.contains("limits[memory]") && e.contains("lots"), "{e}");
}

#[test]
fn oom_score_adj_policy() {
    let cap = 4i64 << 30;
    let burst = |mem: &str| json!({"name": "a", "resources": {"requests": {"memory": mem}}});
    let score = |p: &Pod, i: usize| {
        let c = &p.spec.as_ref().unwrap().containers[i];
        oom_score_adj(p, c, qos_class(p), cap).unwrap()
    };
    let p = pod(
        json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}),
    );
    assert_eq!(score(&p, 0), -997);
    assert_eq!(score(&pod(json!({})), 0), 1000);
    // 1 GiB of 4 GiB: 1000 - 250
    assert_eq!(
        score(&pod(json!({"spec": {"containers": [burst("1Gi")]}})), 0),
        750
    );
    // more than capacity: floor 3
    assert_eq!(
        score(&pod(json!({"spec": {"containers": [burst("8Gi")]}})), 0),
        3
    );
    // tiny request: 1000 becomes 999
    assert_eq!(
        score(&pod(json!({"spec": {"containers": [burst("1")]}})), 0),
        999
    );
    // a container without a memory request in a Burstable pod
    let p = pod(json!({"spec": {"containers": [burst("1Gi"), {"name": "b"}]}}));
    assert_eq!(score(&p, 1), 999);
    // node-critical static pod
    let p = pod(
        json!({"metadata": {"annotations": {"kubernetes.io/config.source": "file"}},
        "spec": {"priorityClassName": "system-node-critical"}}),
    );
    assert_eq!(score(&p, 0), -997);
    // a sidecar never scores above the smallest regular container
    let p = pod(json!({"spec": {"containers": [burst("2Gi")],
        "initContainers": [{"name": "s", "restartPolicy": "Always", "resources": {"requests": {"memory": "1"}}}]}}));
    let side = &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!(
        oom_score_adj(&p, side, QosClass::Burstable, cap).unwrap(),
        500
    );
    assert!(oom_score_adj(&p, side, QosClass::Burstable, 0).is_err());
    // pod-level requests: the unclaimed share counts for every container
    let p = pod(json!({"spec": {"resources": {"requests": {"memory": "2Gi"}}}}));
    assert_eq!(qos_class(&p), QosClass::Burstable);
    assert_eq!(score(&p, 0), 500);
}

// --- hostname, DNS -----------------------------------------------------------

#[test]
fn hostnames() {
    let (k, s, d) = pod_hostname(&pod(json!({})), "cluster.local").unwrap();
    assert_eq!((k.as_str(), s.as_str(), d.as_str()), ("web", "web", ""));
    let p = pod(json!({"spec": {"hostname": "h1", "subdomain": "sub"}}));
    let (k, s, d) = pod_hostname(&p, "cluster.local").unwrap();
    assert_eq!(
        (k.as_str(), s.as_str(), d.as_str()),
        ("h1", "h1", "sub.ns1.svc.cluster.local")
    );
    let p = pod(json!({"spec": {"hostname": "h1", "subdomain": "sub", "setHostnameAsFQDN": true}}));
    assert_eq!(
        pod_hostname(&p, "cluster.local").unwrap().0,
        "h1.sub.ns1.svc.cluster.local"
    );
    let long = format!("{}-x", "a".repeat(62));
    let p = pod(json!({"metadata": {"name": long}}));
    assert_eq!(
        pod_hostname(&p, "").unwrap().0,
        "a".repeat(62),
        "truncated, trailing '-' trimmed"
    );
    let p = pod(json!({"spec": {"hostname": "Bad_Name"}}));
    assert!(pod_hostname(&p, "")
        .unwrap_err()
        .0
        .contains("not a valid DNS label"));
}

#[test]
fn resolv_conf_parsing() {
    let d = parse_resolv_conf(
        "# c\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch a.com b.\nsearch c.com. . d.com\noptions ndots:2 rotate\noptions ndots:3\nnameserver\n",
    );
    assert_eq!(d.servers, ["1.1.1.1", "8.8.8.8"]);
    assert_eq!(d.searches, ["c.com", "d.com"]);
    assert_eq!(d.options, ["rotate", "ndots:3"]);
}

fn dns(p: &Pod, n: &NodeContext) -> (DnsConfig, Vec<String>) {
    let mut w = Vec::new();
    let d = pod_dns(p, n, &mut w).unwrap();
    (d, w)
}

#[test]
fn dns_policies() {
    let n = node();
    let (d, w) = dns(&pod(json!({})), &n);
    assert_eq!(d.servers, ["10.96.0.10"]);
    assert_eq!(
        d.searches,
        [
            "ns1.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "example.com",
            "corp"
        ]
    );
    assert_eq!(d.options, ["ndots:5"]);
    assert!(w.is_empty());

    // ClusterFirst on the host network is Default; WithHostNet is cluster.
    let (d, _) = dns(&pod(json!({"spec": {"hostNetwork": true}})), &n);
    assert_eq!(d.servers, ["1.1.1.1"]);
    assert_eq!(d.options, ["rotate", "ndots:2"]);
    let p = pod(json!({"spec": {"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}}));
    assert_eq!(dns(&p, &n).0.servers, ["10.96.0.10"]);

    // No clusterDNS: Default, with a warning.
    let mut n2 = node();
    n2.cluster_dns.clear();
    let (d, w) = dns(&pod(json!({})), &n2);
    assert_eq!(d.servers, ["1.1.1.1"]);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("Falling back to \"Default\""), "{w:?}");

    // resolvConf "": the node's own resolver, search "."
    let mut n3 = node();
    n3.host_dns = None;
    let (d, _) = dns(&pod(json!({"spec": {"dnsPolicy": "Default"}})), &n3);
    assert_eq!(
        (d.servers, d.searches),
        (vec!["127.0.0.1".to_string()], vec![".".to_string()])
    );

    // No cluster domain: host searches only.
    let mut n4 = node();
    n4.cluster_domain.clear();
    assert_eq!(
        dns(&pod(json!({})), &n4).0.searches,
        ["example.com", "corp"]
    );

    // None + dnsConfig
    let p = pod(json!({"spec": {"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["9.9.9.9"], "searches": ["x.y"], "options": [{"name": "ndots", "value": "1"}, {"name": "edns0"}]}}}));
    let (d, _) = dns(&p, &n);
    assert_eq!(d.servers, ["9.9.9.9"]);
    assert_eq!(d.searches, ["x.y"]);
    assert_eq!(d.options, ["edns0", "ndots:1"]);
}

#[test]
fn dns_config_merge_and_limits() {
    let n = node();
    let p = pod(json!({"spec": {"dnsConfig": {
        "nameservers": ["10.96.0.10", "2.2.2.2", "3.3.3.3", "4.4.4.4"],
        "searches": ["cluster.local", "extra.org"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}]}}}));
    let (d, w) = dns(&p, &n);
    assert_eq!(
        d.servers,
        ["10.96.0.10", "2.2.2.2", "3.3.3.3"],
        "deduplicated, cut to 3"
    );
    assert!(
        w.iter()
            .any(|x| x.starts_with("Nameserver limits were exceeded")),
        "{w:?}"
    );
    assert_eq!(d.searches.last().unwrap(), "extra.org");
    assert_eq!(
        d.searches.iter().filter(|s| *s == "cluster.local").count(),
        1
    );
    assert_eq!(d.options, ["ndots:2", "single-request"]);

    let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    let p = pod(json!({"spec": {"dnsPolicy": "None", "dnsConfig": {"searches": many}}}));
    let (d, w) = dns(&p, &n);
    assert_eq!(d.searches.len(), 32);
    assert!(w[0].starts_with("Search Line limits were exceeded"));

    let long: Vec<String> = (0..20).map(|i| format!("{i}{}", "x".repeat(120))).collect();
    let p = pod(json!({"spec": {"dnsPolicy": "None", "dnsConfig": {"searches": long}}}));
    let (d, _) = dns(&p, &n);
    let line = d.searches.join(" ");
    assert!(
        line.len() <= 2048 && d.searches.len() == 16,
        "{} {}",
        line.len(),
        d.searches.len()
    );

    let p = pod(
        json!({"spec": {"dnsPolicy": "None", "dnsConfig": {"searches": ["a".repeat(254), "ok.org".to_string()]}}}),
    );
    assert_eq!(dns(&p, &n).0.searches, ["ok.org"]);
}

// --- sandbox ---------------------------------------------------------------

#[test]
fn sandbox_config_fields() {
    let p = pod(json!({
    "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
    "spec": {
        "hostname": "h", "subdomain": "s", "shareProcessNamespace": true, "hostIPC": true,
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["foo", "bar"]}],
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000],
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
        "containers": [{"name": "c", "ports": [
            {"containerPort": 8080, "hostPort": 18080},
            {"containerPort": 9090},
            {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"}
        ]}]}}));
    let mut n = node();
    n.pod_pids_limit = 256;
    let s = sandbox_config(&p, &n, 2).unwrap();
    assert!(s.warnings.is_empty());
    let c = s.config;
    assert_eq!(
        c.metadata,
        PodSandboxMetadata {
            name: "web".into(),
            uid: "u-1".into(),
            namespace: "ns1".into(),
            attempt: 2
        }
    );
    assert_eq!(
        (c.hostname.as_str(), c.host_domain.as_str()),
        ("h", "s.ns1.svc.cluster.local")
    );
    assert_eq!(c.log_directory, PathBuf::from("/var/log/pods/ns1_web_u-1"));
    assert_eq!(c.labels["app"], "web");
    assert_eq!(c.labels[keys::POD_UID], "u-1");
    assert_eq!(c.annotations["a"], "b");
    assert_eq!(c.cgroup_parent, "/kubepods/besteffort/podu-1");
    assert_eq!(
        c.namespace_options,
        NamespaceOptions {
            network: NamespaceMode::Pod,
            pid: NamespaceMode::Pod,
            ipc: NamespaceMode::Node
        }
    );
    assert_eq!(
        c.host_aliases,
        vec![(
            "10.0.0.1".to_string(),
            vec!["foo".to_string(), "bar".to_string()]
        )]
    );
    assert_eq!((c.run_as_user, c.run_as_group), (Some(1000), Some(3000)));
    assert_eq!(c.supplemental_groups, [2000, 4000]);
    assert_eq!(c.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
    assert_eq!(c.resources.as_ref().unwrap().pids_limit, 256);
    assert_eq!(c.port_mappings.len(), 2, "{:?}", c.port_mappings);
    assert_eq!(
        c.port_mappings[1],
        PortMapping {
            protocol: Protocol::Udp,
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into()
        }
    );

    let hn = pod(json!({"spec": {"hostNetwork": true, "hostPID": true}}));
    let c = sandbox_config(&hn, &n, 0).unwrap().config;
    assert_eq!(
        (
            c.hostname.as_str(),
            c.namespace_options.network,
            c.namespace_options.pid
        ),
        ("", NamespaceMode::Node, NamespaceMode::Node)
    );
}

// --- env sources -----------------------------------------------------------

#[test]
fn downward_api_env() {
    let p = pod(json!({
    "metadata": {"labels": {"app": "web"}, "annotations": {"k.io/x": "y"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [{"name": "c",
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "ANN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['k.io/x']"}}},
            {"name": "MISSING", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['none']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "HOSTS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
            {"name": "CPU_REQ_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            {"name": "CPU_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
            {"name": "CPU_LIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "MEM_LIM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "MEM_REQ", "valueFrom": {"resourceFieldRef": {"containerName": "c", "resource": "requests.memory"}}},
            {"name": "EPH", "valueFrom": {"resourceFieldRef": {"resource": "limits.ephemeral-storage", "divisor": "1Gi"}}},
            {"name": "REF", "value": "$(NAME).$(NS)"}
        ]}]}}));
    let c = &p.spec.as_ref().unwrap().containers[0];
    let ips = vec!["10.1.0.5".to_string(), "fd00::5".to_string()];
    let env = container_env(&p, c, &node(), &ips).unwrap();
    let m: BTreeMap<_, _> = env.into_iter().collect();
    let want = [
        ("NAME", "web"),
        ("NS", "ns1"),
        ("UID", "u-1"),
        ("APP", "web"),
        ("ANN", "y"),
        ("MISSING", ""),
        ("NODE", "n1"),
        ("SA", "sa"),
        ("HOST", "192.168.1.5"),
        ("HOSTS", "192.168.1.5"),
        ("IP", "10.1.0.5"),
        ("IPS", "10.1.0.5,fd00::5"),
        ("CPU_REQ_M", "250"),
        ("CPU_REQ", "1"),
        ("CPU_LIM", "2"),
        ("MEM_LIM_MI", "128"),
        ("MEM_REQ", "67108864"),
        ("EPH", "10"),
        ("REF", "web.ns1"),
    ];
    for (k, v) in want {
        assert_eq!(m[k], v, "{k}");
    }
}

#[test]
fn env_sources_without_api_server_fail() {
    let cases = [
        (
            json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": true}}}]}),
            "couldn't get configMap ns1/cm, no kubeClient defined",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
            "couldn't get secret ns1/s, no kubeClient defined",
        ),
        (
            json!({"envFrom": [{"configMapRef": {"name": "cm2"}}]}),
            "couldn't get configMap ns1/cm2",
        ),
        (
            json!({"envFrom": [{"secretRef": {"name": "s2"}}]}),
            "couldn't get secret ns1/s2",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.restartPolicy"}}}]}),
            "unsupported fieldPath: spec.restartPolicy",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.nvidia.com/gpu"}}}]}),
            "unsupported container resource",
        ),
    ];
    for (c, want) in cases {
        let mut cj = json!({"name": "c", "image": "x"});
        merge(&mut cj, c);
        let p = pod(json!({"spec": {"containers": [cj]}}));
        let vols = BTreeMap::new();
        let inputs = ContainerInputs {
            restart_count: 0,
            hash: "h",
            image_id: "i",
            pod_ips: &[],
            volumes: &vols,
        };
        let e = container_config(
            &p,
            &p.spec.as_ref().unwrap().containers[0],
            &node(),
            &inputs,
        )
        .unwrap_err();
        assert!(e.0.contains(want), "{e} !~ {want}");
        assert_eq!(ConfigError::REASON, "CreateContainerConfigError");
    }
    let mut n = node();
    n.node_ips.clear();
    let p = pod(json!({}));
    assert!(field_ref_value(&p, None, "status.hostIP", &[], "n1", &n.node_ips).is_err());
    assert_eq!(
        field_ref_value(&p, None, "spec.nodeName", &[], "n1", &n.node_ips).unwrap(),
        "n1"
    );
}

// --- mounts ----------------------------------------------------------------

#[test]
fn volume_mounts() {
    let mut vols = BTreeMap::new();
    vols.insert(
        "data".to_string(),
        VolumePath {
            host_path: "/var/lib/p/vol/data".into(),
            read_only: false,
        },
    );
    vols.insert(
        "ro".to_string(),
        VolumePath {
            host_path: "/host/ro".into(),
            read_only: true,
        },
    );
    let env = vec![
        ("POD".to_string(), "web".to_string()),
        ("EMPTY".to_string(), String::new()),
    ];
    let vm = |v: Value| -> VolumeMount { serde_json::from_value(v).unwrap() };
    let m = volume_mount(
        &vm(json!({"name": "data", "mountPath": "/data", "subPath": "a/b"})),
        "c",
        &vols,
        &env,
    )
    .unwrap();
    assert_eq!(
        m,
        Mount {
            container_path: "/data".into(),
            host_path: "/var/lib/p/vol/data/a/b".into(),
            readonly: false,
            propagation: MountPropagation::Private
        }
    );
    let m = volume_mount(
        &vm(json!({"name": "ro", "mountPath": "x", "mountPropagation": "HostToContainer"})),
        "c",
        &vols,
        &env,
    )
    .unwrap();
    assert_eq!(
        (m.container_path.as_str(), m.readonly, m.propagation),
        ("/x", true, MountPropagation::HostToContainer)
    );
    let m = volume_mount(&vm(json!({"name": "data", "mountPath": "/d", "readOnly": true, "subPathExpr": "logs/$(POD)"})), "c", &vols, &env).unwrap();
    assert_eq!(
        (m.host_path, m.readonly),
        (PathBuf::from("/var/lib/p/vol/data/logs/web"), true)
    );
    let bad = [
        (
            json!({"name": "nope", "mountPath": "/n"}),
            "cannot find volume \"nope\" to mount into container \"c\"",
        ),
        (
            json!({"name": "data", "mountPath": "/n", "subPath": "/abs"}),
            "must not be an absolute path",
        ),
        (
            json!({"name": "data", "mountPath": "/n", "subPath": "a/../../x"}),
            "must not contain '..'",
        ),
        (
            json!({"name": "data", "mountPath": "/n", "subPathExpr": "$(NOPE)/$(EMPTY)"}),
            "missing value for EMPTY, NOPE",
        ),
        (
            json!({"name": "data", "mountPath": "/n", "mountPropagation": "Sideways"}),
            "invalid MountPropagation mode",
        ),
    ];
    for (v, want) in bad {
        let e = volume_mount(&vm(v), "c", &vols, &env).unwrap_err();
        assert!(e.0.contains(want), "{e} !~ {want}");
    }
}

// --- security context, whole container config ------------------------------

#[test]
fn security_context_merging() {
    let sc = |p: Value, c: Value| {
        let mut cj = json!({"name": "c"});
        merge(&mut cj, json!({"securityContext": c}));
        let p = pod(json!({"spec": {"securityContext": p, "containers": [cj]}}));
        security_context(&p, &p.spec.as_ref().unwrap().containers[0])
    };
    let s = sc(
        json!({"runAsUser": 1, "runAsGroup": 2, "runAsNonRoot": true, "supplementalGroups": [5], "fsGroup": 7}),
        json!({"runAsUser": 10}),
    );
    assert_eq!(
        (s.run_as_user, s.run_as_group, s.run_as_non_root),
        (Some(10), Some(2), true)
    );
    assert_eq!(s.supplemental_groups, [7, 5]);
    assert!(!s.no_new_privs && !s.privileged && !s.readonly_rootfs && !s.unmasked_proc);
    let s = sc(
        json!({}),
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "procMount": "Unmasked"}),
    );
    assert!(s.no_new_privs && s.readonly_rootfs && s.unmasked_proc);
    assert_eq!(
        (s.capabilities.add.clone(), s.capabilities.drop.clone()),
        (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
    );
    assert!(!sc(json!({}), json!({"allowPrivilegeEscalation": true})).no_new_privs);
    assert!(
        !sc(
            json!({}),
            json!({"allowPrivilegeEscalation": false, "privileged": true})
        )
        .no_new_privs
    );
    assert!(
        !sc(
            json!({}),
            json!({"allowPrivilegeEscalation": false, "capabilities": {"add": ["CAP_SYS_ADMIN"]}})
        )
        .no_new_privs
    );
    assert_eq!(sc(json!({}), json!({})).run_as_user, None);
}

#[test]
fn whole_container_config() {
    let p = pod(json!({"spec": {
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "app", "image": "busybox:1.35", "workingDir": "/w", "tty": true,
            "command": ["sh", "-c"], "args": ["echo $(X)"], "env": [{"name": "X", "value": "1"}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "lifecycle": {"stopSignal": "SIGUSR1"},
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}],
        "initContainers": [{"name": "init", "image": "busybox", "terminationMessagePath": "/tmp/msg"}]}}));
    let vols = BTreeMap::new();
    let inputs = ContainerInputs {
        restart_count: 3,
        hash: "abc123",
        image_id: "sha256:1",
        pod_ips: &[],
        volumes: &vols,
    };
    let spec = p.spec.as_ref().unwrap();
    let c = container_config(&p, &spec.containers[0], &node(), &inputs).unwrap();
    assert_eq!(
        c.metadata,
        ContainerMetadata {
            name: "app".into(),
            attempt: 3
        }
    );
    assert_eq!(
        (c.image.as_str(), c.image_id.as_str()),
        ("busybox:1.35", "sha256:1")
    );
    assert_eq!(
        (c.command.clone(), c.args.clone()),
        (
            vec!["sh".to_string(), "-c".to_string()],
            vec!["echo 1".to_string()]
        )
    );
    assert_eq!(c.working_dir, "/w");
    assert!(c.tty);
    assert_eq!(c.log_path, "app/3.log");
    assert_eq!(c.termination_message_path, "/dev/termination-log");
    assert_eq!(c.stop_signal.as_deref(), Some("SIGUSR1"));
    assert_eq!(c.labels[keys::CONTAINER_NAME], "app");
    assert_eq!(c.labels[keys::POD_NAMESPACE], "ns1");
    assert_eq!(c.annotations[keys::CONTAINER_HASH], "abc123");
    assert_eq!(c.annotations[keys::CONTAINER_RESTART_COUNT], "3");
    assert_eq!(
        c.annotations[keys::TERMINATION_MESSAGE_POLICY],
        "FallbackToLogsOnError"
    );
    assert_eq!(c.annotations[keys::POD_TERMINATION_GRACE_PERIOD], "5");
    assert_eq!(c.annotations[keys::CONTAINER_TYPE], "regular");
    // Burstable pod (init container has no limits): 64 MiB of 4 GiB
    assert_eq!(
        c.resources.oom_score_adj,
        1000 - (1000 * (64 << 20)) / (4i64 << 30)
    );
    assert_eq!(
        (c.resources.cpu_quota, c.resources.memory_limit_in_bytes),
        (50_000, 64 << 20)
    );
    let i = container_config(
        &p,
        &spec.init_containers.as_ref().unwrap()[0],
        &node(),
        &inputs,
    )
    .unwrap();
    assert_eq!(i.annotations[keys::CONTAINER_TYPE], "init");
    assert_eq!(i.termination_message_path, "/tmp/msg");
    assert_eq!(i.annotations[keys::TERMINATION_MESSAGE_POLICY], "File");
    let stranger: Container = serde_json::from_value(json!({"name": "other"})).unwrap();
    assert!(container_config(&p, &stranger, &node(), &inputs).is_err());
}

// --- env from the API server ------------------------------------------------

fn api_env() -> ApiEnv {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "cfg"},
        "data": {"LEVEL": "debug", "1bad": "x", "app.conf": "a=1", "SHARED": "from-cm"},
        "binaryData": {"BIN": "AAE="}
    }))
    .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "data": {"user": "YWRtaW4=", "pass": "czNjcmV0", "SHARED": "ZnJvbS1zZWNyZXQ="}
    }))
    .unwrap();
    let mut a = ApiEnv {
        api_objects: true,
        ..Default::default()
    };
    a.config_maps.insert("cfg".into(), Ok(Rc::new(cm)));
    a.config_maps.insert(
        "gone".into(),
        Err(GetError::NotFound("configmap \"gone\" not found".into())),
    );
    a.secrets.insert("db".into(), Ok(Rc::new(secret)));
    a.secrets.insert(
        "gone".into(),
        Err(GetError::NotFound("secret \"gone\" not found".into())),
    );
    a.services = Ok([
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("MY_SVC_SERVICE_HOST", "10.96.0.7"),
        ("LEVEL", "from-service"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect());
    a
}

fn env_of(spec: Value, api: Option<&ApiEnv>) -> Result<EnvOutcome, ConfigError> {
    let p = pod(json!({"spec": {"containers": [spec]}}));
    let c = p.spec.as_ref().unwrap().containers[0].clone();
    container_env_with(&p, &c, &node(), &[], api)
}

#[test]
fn env_from_config_maps_secrets_and_services_in_upstream_order() {
    let api = api_env();
    let out = env_of(
        json!({"name": "c", "image": "x",
            "envFrom": [
                {"configMapRef": {"name": "cfg"}},
                {"secretRef": {"name": "db"}, "prefix": "DB_"},
                {"secretRef": {"name": "db"}},
                {"configMapRef": {"name": "gone", "optional": true}}],
            "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "LEVEL"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": true}}},
                {"name": "D", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                {"name": "E", "value": "$(DB_pass)/$(MY_SVC_SERVICE_HOST)/$(LEVEL)"},
                {"name": "DB_user", "value": "override"}]}),
        Some(&api),
    )
    .unwrap();
    let get = |k: &str| {
        out.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("LEVEL"), Some("debug"), "envFrom wins over services");
    assert_eq!(get("app.conf"), Some("a=1"));
    assert_eq!(get("1bad"), None, "invalid names are skipped");
    assert_eq!(get("BIN"), None, "binaryData is not env");
    assert_eq!(get("SHARED"), Some("from-secret"), "later envFrom wins");
    assert_eq!(get("DB_user"), Some("override"), "env wins over envFrom");
    assert_eq!(get("DB_pass"), Some("s3cret"));
    assert_eq!(get("A"), Some("debug"));
    assert_eq!(get("B"), Some("admin"));
    assert_eq!(get("C"), None, "optional missing key: unset");
    assert_eq!(get("D"), None, "optional missing secret: unset");
    assert_eq!(get("E"), Some("s3cret/10.96.0.7/debug"));
    assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
    // envFrom first, then env, then the remaining service variables.
    let names: Vec<&str> = out.env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "LEVEL");
    assert_eq!(
        &names[names.len() - 2..],
        ["KUBERNETES_SERVICE_HOST", "MY_SVC_SERVICE_HOST"]
    );
    assert_eq!(
        out.warnings,
        ["Keys [1bad] from the EnvFrom configMap ns1/cfg were skipped since they are considered invalid environment variable names."]
    );
}

#[test]
fn env_reference_errors_as_upstream() {
    let api = api_env();
    let e = |spec: Value| env_of(spec, Some(&api)).unwrap_err().0;
    assert_eq!(
        e(json!({"name": "c", "env": [{"name": "X",
            "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]})),
        "secret \"gone\" not found"
    );
    assert_eq!(
        e(json!({"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]})),
        "configmap \"gone\" not found"
    );
    assert_eq!(
        e(json!({"name": "c", "env": [{"name": "X",
            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]})),
        "couldn't find key nope in ConfigMap ns1/cfg"
    );
    assert_eq!(
        e(json!({"name": "c", "env": [{"name": "X",
            "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}]})),
        "couldn't find key nope in Secret ns1/db"
    );
    let mut unsynced = api_env();
    unsynced.services =
        Err("services have not yet been read at least once, cannot construct envvars".into());
    assert!(env_of(json!({"name": "c"}), Some(&unsynced))
        .unwrap_err()
        .0
        .starts_with("services have not yet been read"));
    // Static pods (no API objects): the references fail as before.
    let static_pod = ApiEnv::default();
    assert_eq!(
        env_of(
            json!({"name": "c", "envFrom": [{"secretRef": {"name": "db"}}]}),
            Some(&static_pod)
        )
        .unwrap_err()
        .0,
        "couldn't get secret ns1/db, no kubeClient defined"
    );
}

#[test]
fn env_var_names_as_upstream() {
    for ok in [
        "A",
        "a.b",
        "-x",
        "_",
        "my.env-name",
        "MY_ENV.NAME",
        "MyEnvName1",
        ".x",
    ] {
        assert!(is_env_var_name(ok), "{ok}");
    }
    for bad in ["", "1a", "a b", "a=b", ".", "..", "..x", "é"] {
        assert!(!is_env_var_name(bad), "{bad}");
    }
}
