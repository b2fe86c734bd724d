//! `picolet run` end to end: a static pod serves on its hostPort with the
//! full v1 status; every restartPolicy × exit code; Job-like pods end
//! Succeeded / Failed and stay listed.

mod sync_support;

use std::time::Duration;
use sync_support::*;

#[test]
fn pod_serves_on_its_host_port_with_a_full_status() {
    let mut node = Node::new(0, Opts::default());
    node.start();
    let hp = node.host_port(0);
    node.put_manifest(
        "web.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: {HTTPD}
    imagePullPolicy: Never
    ports: [{{name: http, containerPort: 8080, hostPort: {hp}}}]
    readinessProbe:
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: 1
    resources:
      requests: {{cpu: 10m, memory: 8Mi}}
"
        ),
    );
    let pod = node.wait_pod("web", Duration::from_secs(60), |p| {
        condition(p, "Ready").as_deref() == Some("True")
    });
    // The pod answers on the node's hostPort.
    let (code, body) = http_get(hp, "/").expect("hostPort answers");
    assert_eq!(code, 200);
    assert_eq!(body.trim(), "hello from picolet httpd");

    // Metadata as upstream gives a static pod.
    let m = &pod.metadata;
    assert_eq!(m.name.as_deref(), Some(&*format!("web-{}", node.node_name)));
    assert_eq!(m.namespace.as_deref(), Some("default"));
    let uid = m.uid.clone().expect("uid");
    let ann = m.annotations.clone().unwrap_or_default();
    assert_eq!(ann["kubernetes.io/config.source"], "file");
    assert_eq!(ann["kubernetes.io/config.hash"], uid);
    assert!(ann.contains_key("kubernetes.io/config.seen"));
    assert_eq!(m.labels.clone().unwrap_or_default()["app"], "web");

    // Status, field by field.
    let st = pod.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.qos_class.as_deref(), Some("Burstable"));
    let pod_ip = st.pod_ip.clone().expect("podIP");
    assert!(pod_ip.starts_with(&node.subnet_prefix()), "{pod_ip}");
    assert_eq!(st.pod_ips.clone().unwrap()[0].ip, pod_ip);
    let host_ip: std::net::IpAddr = st.host_ip.clone().expect("hostIP").parse().unwrap();
    assert_eq!(st.host_ips.clone().unwrap()[0].ip, host_ip.to_string());
    assert!(st.start_time.is_some());
    for c in [
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        assert_eq!(condition(&pod, c).as_deref(), Some("True"), "{c}");
    }
    assert!(st
        .conditions
        .iter()
        .flatten()
        .all(|c| c.last_transition_time.is_some()));
    let cs = container(&pod, "httpd");
    assert_eq!(cs.image, HTTPD);
    assert!(cs.image_id.contains("sha256:"), "{}", cs.image_id);
    let cid = cs.container_id.clone().unwrap();
    assert!(cid.starts_with("containerd://"), "{cid}");
    assert!(cs.ready);
    assert_eq!(cs.started, Some(true));
    assert_eq!(cs.restart_count, 0);
    assert!(cs
        .last_state
        .as_ref()
        .is_none_or(|s| s.terminated.is_none()));
    let started = cs.state.as_ref().unwrap().running.as_ref().unwrap();
    assert!(started.started_at.is_some());
    // The pid runc reports is a real process.
    assert!(node.container_pid(&cid).is_some_and(alive));

    // /runningpods shows it; /spec describes the machine; /healthz says ok.
    let (code, body) = node.get("/runningpods").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(&uid), "{body}");
    let (code, body) = node.get("/spec").unwrap();
    assert_eq!(code, 200);
    let spec: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(spec["num_cores"].as_u64().unwrap() >= 1);
    assert!(spec["memory_capacity"].as_u64().unwrap() > 0);
    assert_eq!(
        http_get(node.healthz_port, "/healthz"),
        Some((200, "ok".into()))
    );
}

#[test]
fn restart_policies_times_exit_codes() {
    let mut node = Node::new(1, Opts::default());
    node.start();
    let cases = [
        ("always-ok", "Always", 0),
        ("always-err", "Always", 3),
        ("onfailure-ok", "OnFailure", 0),
        ("onfailure-err", "OnFailure", 3),
        ("never-ok", "Never", 0),
        ("never-err", "Never", 3),
    ];
    for (name, policy, code) in cases {
        node.put_manifest(
            &format!("{name}.yaml"),
            &busybox_pod(name, policy, &format!("echo started; sleep 1; exit {code}")),
        );
    }
    for (name, policy, code) in cases {
        let restarts = policy == "Always" || (policy == "OnFailure" && code != 0);
        let reason = if code == 0 { "Completed" } else { "Error" };
        if restarts {
            // Restarted; the previous instance shows as the last state.
            let p = node.wait_pod(name, Duration::from_secs(60), |p| {
                container(p, "main").restart_count >= 2
            });
            assert_eq!(phase(&p), "Running", "{name}");
            let c = container(&p, "main");
            assert_eq!(
                last_terminated(c),
                Some((code, reason.to_string())),
                "{name}: {c:?}"
            );
        } else {
            let want = if code == 0 { "Succeeded" } else { "Failed" };
            let p = node.wait_pod(name, Duration::from_secs(60), |p| phase(p) == want);
            let c = container(&p, "main");
            assert_eq!(terminated(c), Some((code, reason.to_string())), "{name}");
            assert_eq!(c.restart_count, 0, "{name}");
            assert!(!c.ready, "{name}");
            let t = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
            assert!(t.started_at.is_some() && t.finished_at.is_some(), "{name}");
            assert_eq!(condition(&p, "Ready").as_deref(), Some("False"), "{name}");
        }
    }
    // Job-like pods stay listed with their final phase, and are not run
    // again.
    std::thread::sleep(Duration::from_secs(3));
    for (name, want) in [
        ("never-ok", "Succeeded"),
        ("never-err", "Failed"),
        ("onfailure-ok", "Succeeded"),
    ] {
        let p = node
            .pod(name)
            .unwrap_or_else(|| panic!("{name} no longer listed"));
        assert_eq!(phase(&p), want, "{name}");
        assert_eq!(container(&p, "main").restart_count, 0, "{name}");
        // Its sandbox is gone from what runs.
        let uid = p.metadata.uid.clone().unwrap();
        let (_, running) = node.get("/runningpods").unwrap();
        assert!(!running.contains(&uid), "{name} still runs: {running}");
    }
}
