//! Manifest edits and deletions: an edited manifest is a new pod that
//! replaces the old one; a deleted manifest terminates its pod — preStop
//! first, then SIGTERM, and SIGKILL at the end of the grace period.

mod sync_support;

use std::time::{Duration, Instant};
use sync_support::*;

fn out_dir(node: &Node) -> std::path::PathBuf {
    let d = node.root.join("out");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn edited_manifest_replaces_the_pod() {
    let mut node = Node::new(4, Opts::default());
    node.start();
    let hp = node.host_port(0);
    let manifest = |v: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: {HTTPD}
    imagePullPolicy: Never
    env: [{{name: VERSION, value: \"{v}\"}}]
    ports: [{{containerPort: 8080, hostPort: {hp}}}]
"
        )
    };
    node.put_manifest("web.yaml", &manifest("1"));
    let old = node.wait_pod("web", Duration::from_secs(60), |p| {
        running(container(p, "httpd"))
    });
    let old_uid = old.metadata.uid.clone().unwrap();
    let old_cid = container(&old, "httpd").container_id.clone().unwrap();
    let old_pid = node.container_pid(&old_cid).expect("old container pid");

    node.put_manifest("web.yaml", &manifest("2"));
    let new = node.wait_pod("web", Duration::from_secs(60), |p| {
        p.metadata.uid.as_deref() != Some(&old_uid) && running(container(p, "httpd"))
    });
    // A new pod (new UID, restart count 0), the old one stopped and gone.
    assert_eq!(container(&new, "httpd").restart_count, 0);
    assert!(!alive(old_pid), "the old container still runs");
    let pods = node.pods();
    assert_eq!(
        pods.len(),
        1,
        "{:?}",
        pods.iter().map(|p| &p.metadata.uid).collect::<Vec<_>>()
    );
    // The hostPort moved to the new pod.
    let ok = wait_until(Duration::from_secs(10), || {
        http_get(hp, "/").is_some_and(|(c, _)| c == 200)
    });
    assert!(ok, "hostPort does not answer after the replacement");
}

#[test]
fn deleted_manifest_runs_pre_stop_then_sigterm() {
    let mut node = Node::new(5, Opts::default());
    node.start();
    let out = out_dir(&node);
    node.put_manifest(
        "hooks.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, \"trap 'echo term >> /out/events; exit 0' TERM; echo started >> /out/events; while true; do sleep 0.1; done\"]
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, \"echo prestop >> /out/events; sleep 1; echo prestop-done >> /out/events\"]}}
",
            out = out.display()
        ),
    );
    let p = node.wait_pod("hooks", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    let cid = container(&p, "main").container_id.clone().unwrap();
    let pid = node.container_pid(&cid).expect("container pid");
    let t0 = Instant::now();
    node.remove_manifest("hooks.yaml");
    // Gone from /pods at once (the source no longer has it).
    node.wait_pod_gone("hooks", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(15), || !alive(pid)),
        "container still runs"
    );
    let took = t0.elapsed();
    let events = std::fs::read_to_string(out.join("events")).unwrap();
    assert_eq!(
        events.lines().collect::<Vec<_>>(),
        vec!["started", "prestop", "prestop-done", "term"],
        "preStop must finish before SIGTERM"
    );
    // It stopped on SIGTERM, well before the grace period ended.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    // Everything of the pod goes: no shim left for it.
    assert!(
        wait_until(Duration::from_secs(15), || node.shim_pids().is_empty()),
        "shims left: {:?}",
        node.shim_pids()
    );
}

#[test]
fn container_ignoring_sigterm_is_killed_at_the_grace_period() {
    let mut node = Node::new(6, Opts::default());
    node.start();
    node.put_manifest(
        "stubborn.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: stubborn}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, \"trap '' TERM; while true; do sleep 0.2; done\"]
"
        ),
    );
    let p = node.wait_pod("stubborn", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    let cid = container(&p, "main").container_id.clone().unwrap();
    let pid = node.container_pid(&cid).expect("container pid");
    let t0 = Instant::now();
    node.remove_manifest("stubborn.yaml");
    assert!(
        wait_until(Duration::from_secs(20), || !alive(pid)),
        "container still runs"
    );
    let took = t0.elapsed();
    // SIGTERM was ignored: it lived the whole grace period, then SIGKILL.
    assert!(
        took >= Duration::from_millis(2800),
        "killed after {took:?}, before the grace period"
    );
    assert!(took < Duration::from_secs(8), "killed only after {took:?}");
}
