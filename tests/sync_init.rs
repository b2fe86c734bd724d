//! Init containers run in order to completion before the app containers;
//! a failing one fails the pod (restartPolicy Never) or is retried with
//! back-off (Always); a native sidecar (init container with
//! `restartPolicy: Always`) runs beside the app and stops after it.

mod sync_support;

use std::time::Duration;
use sync_support::*;

fn out_dir(node: &Node) -> std::path::PathBuf {
    let d = node.root.join("out");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ctr(name: &str, script: &str) -> String {
    format!(
        "  - name: {name}
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, {script:?}]
"
    )
}

fn pod_with(
    name: &str,
    policy: &str,
    out: &std::path::Path,
    inits: &str,
    containers: &str,
) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 2
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  initContainers:
{inits}  containers:
{containers}",
        out = out.display()
    )
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let mut node = Node::new(7, Opts::default());
    node.start();
    let out = out_dir(&node);
    node.put_manifest(
        "init.yaml",
        &pod_with(
            "init",
            "Always",
            &out,
            &(ctr("first", "sleep 1; echo first >> /out/order")
                + &ctr("second", "echo second >> /out/order")),
            &ctr("app", "echo app >> /out/order; exec sleep 3600"),
        ),
    );
    // While the first init container runs, the pod is initializing.
    let p = node.wait_pod("init", Duration::from_secs(60), |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.init_container_statuses.is_some())
    });
    if condition(&p, "Initialized").as_deref() == Some("False") {
        assert_eq!(phase(&p), "Pending");
        assert_eq!(
            waiting_reason(container(&p, "app")),
            Some("PodInitializing")
        );
    }
    let p = node.wait_pod("init", Duration::from_secs(60), |p| {
        running(container(p, "app"))
    });
    assert_eq!(
        std::fs::read_to_string(out.join("order")).unwrap(),
        "first\nsecond\napp\n"
    );
    for name in ["first", "second"] {
        let c = container(&p, name);
        assert_eq!(terminated(c), Some((0, "Completed".into())), "{name}");
        assert!(c.ready, "{name}: a completed init container is ready");
        assert_eq!(c.restart_count, 0);
    }
    assert_eq!(phase(&p), "Running");
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("True"));
    // Init containers are listed in spec order.
    let names: Vec<String> = p
        .status
        .as_ref()
        .unwrap()
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, vec!["first", "second"]);
}

#[test]
fn init_failure_fails_the_pod_or_backs_off() {
    let mut node = Node::new(8, Opts::default());
    node.start();
    let out = out_dir(&node);
    node.put_manifest(
        "never.yaml",
        &pod_with(
            "never",
            "Never",
            &out,
            &ctr("setup", "echo setup-never >> /out/runs; exit 2"),
            &ctr("app", "echo app-never >> /out/runs; sleep 3600"),
        ),
    );
    node.put_manifest(
        "always.yaml",
        &pod_with(
            "always",
            "Always",
            &out,
            &ctr("setup", "exit 2"),
            &ctr("app", "echo app-always >> /out/runs; sleep 3600"),
        ),
    );
    let p = node.wait_pod("never", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(
        terminated(container(&p, "setup")),
        Some((2, "Error".into()))
    );
    assert_eq!(
        waiting_reason(container(&p, "app")),
        Some("PodInitializing")
    );
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("False"));

    let p = node.wait_pod("always", Duration::from_secs(60), |p| {
        container(p, "setup").restart_count >= 2
            && waiting_reason(container(p, "setup")) == Some("CrashLoopBackOff")
    });
    assert_eq!(phase(&p), "Pending");
    assert_eq!(
        last_terminated(container(&p, "setup")),
        Some((2, "Error".into()))
    );
    assert_eq!(
        waiting_reason(container(&p, "app")),
        Some("PodInitializing")
    );
    // Neither app container ever ran.
    let runs = std::fs::read_to_string(out.join("runs")).unwrap_or_default();
    assert_eq!(runs, "setup-never\n");
}

#[test]
fn native_sidecar_runs_beside_the_app_and_stops_after_it() {
    let mut node = Node::new(9, Opts::default());
    node.start();
    let out = out_dir(&node);
    let sidecar = format!(
        "  - name: side
    image: {BUSYBOX}
    imagePullPolicy: Never
    restartPolicy: Always
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, \"echo side-up >> /out/order; trap 'echo side-term >> /out/order; exit 0' TERM; while true; do sleep 0.1; done\"]
"
    );
    node.put_manifest(
        "job.yaml",
        &pod_with(
            "job",
            "Never",
            &out,
            &sidecar,
            &ctr("app", "sleep 2; echo app-done >> /out/order"),
        ),
    );
    let p = node.wait_pod("job", Duration::from_secs(60), |p| {
        running(container(p, "app"))
    });
    let side = container(&p, "side");
    assert!(running(side), "the sidecar runs with the app: {side:?}");
    assert_eq!(side.started, Some(true));
    let p = node.wait_pod("job", Duration::from_secs(60), |p| phase(p) == "Succeeded");
    assert_eq!(
        terminated(container(&p, "app")),
        Some((0, "Completed".into()))
    );
    // The sidecar was stopped once the app was done (SIGTERM, exit 0).
    assert!(!running(container(&p, "side")));
    let order = std::fs::read_to_string(out.join("order")).unwrap();
    assert_eq!(order, "side-up\napp-done\nside-term\n");
}
