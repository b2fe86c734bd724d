//! Offline autonomy against the real control plane of `../shared/k8s`:
//! a node whose API pods use a configMap volume, a secret in the
//! environment and the default service account token is rebooted while
//! the apiserver is down. With `picolet.offlineAutonomy` (the default) the
//! pods run again from the local copy; once the apiserver is back their
//! statuses are reported, a pod deleted meanwhile is stopped and nothing
//! is duplicated. A second node with `offlineAutonomy: false` goes through
//! the same outage and starts nothing until the apiserver answers
//! (upstream's behaviour).
//!
//! A third node lives through an hour without the apiserver, compressed
//! 40 times by config: its pods keep running (one crash-loops and settles
//! meanwhile), its log does not fill with retries, and on reconnect only
//! the latest status of each pod is sent.
//!
//! Private control plane slots 5 and 6 (the tests stop the apiserver);
//! sync-test numbers 34, 35 and 39; node names `sync-node-<n>`.

mod cluster_support;
mod sync_support;

use cluster_support::{is_ready, wait_for, ControlPlane};
use picolet::api::core::Pod;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use sync_support::{Node, Opts, BUSYBOX};

const NS: &str = "pl-offline";

fn member(n: u32, cp: &ControlPlane, autonomy: bool) -> Node {
    let name = format!("sync-node-{n}");
    cp.forget_node(&name);
    let opts = Opts {
        kubeconfig: Some(cp.node_kubeconfig(&name)),
        extra: "syncFrequency: 10s\n".into(),
        ..Opts::default()
    };
    let mut node = Node::new(n, opts);
    if !autonomy {
        // The `picolet:` section ends the test config.
        let mut text = std::fs::read_to_string(&node.config_path).unwrap();
        text.push_str("  offlineAutonomy: false\n");
        std::fs::write(&node.config_path, text).unwrap();
    }
    node.start();
    wait_for(Duration::from_secs(30), || cp.node(&name).filter(is_ready))
        .unwrap_or_else(|| panic!("node {name} not Ready\n{}", node.log_tail(30)));
    node
}

const OBJECTS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: NS}
data: {greeting: hello-from-cm}
---
apiVersion: v1
kind: Secret
metadata: {name: sec, namespace: NS}
stringData: {pass: s3cret-offline}
"#;

/// Uses a configMap volume, a secret in its environment and the default
/// service account token (projected volume with kube-root-ca.crt).
const APP: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: NAME, namespace: NS}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: BUSYBOX
    command: [sh, -c, "cat /cfg/greeting; echo; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; sleep 3600"]
    env:
    - name: PASS
      valueFrom: {secretKeyRef: {name: sec, key: pass}}
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
  volumes:
  - name: cfg
    configMap: {name: cfg}
"#;

const PLAIN: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: NAME, namespace: NS}
spec:
  nodeName: NODE
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: BUSYBOX
    command: [sleep, "3600"]
"#;

fn apply_pod(cp: &ControlPlane, tmpl: &str, name: &str, node: &Node) {
    cp.apply(
        &tmpl
            .replace("NAME", name)
            .replace("NS", NS)
            .replace("NODE", &node.node_name)
            .replace("BUSYBOX", BUSYBOX),
    );
}

fn api_pod(cp: &ControlPlane, name: &str) -> Option<Value> {
    cp.get_json(&["-n", NS, "get", "pod", name])
}

fn api_container_id(p: &Value) -> Option<String> {
    p["status"]["containerStatuses"][0]["state"]["running"]
        .is_object()
        .then(|| p["status"]["containerStatuses"][0]["containerID"].as_str())
        .flatten()
        .map(str::to_string)
}

/// The node's own view (`/pods` on the read-only port) of an API pod.
fn local_pod(node: &Node, name: &str) -> Option<Pod> {
    node.pods().into_iter().find(|p| {
        p.metadata.name.as_deref() == Some(name) && p.metadata.namespace.as_deref() == Some(NS)
    })
}

fn local_running_id(node: &Node, name: &str) -> Option<String> {
    let p = local_pod(node, name)?;
    let c = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    c.state.as_ref()?.running.as_ref()?;
    c.container_id.clone()
}

fn offline_dir(node: &Node) -> PathBuf {
    node.root.join("root/state/offline")
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().expect("uid").to_string()
}

/// The container's environment as it was started.
fn environ(node: &Node, cid: &str) -> String {
    let pid = node.container_pid(cid).expect("container pid");
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .replace('\0', "\n")
}

#[test]
fn reboot_without_apiserver_runs_pods_from_the_local_copy() {
    let cp = ControlPlane::private(5, "apiserver controller-manager");
    let _purge = cp.purge_on_drop();
    cp.namespace(NS);
    // Pods of a namespace need its default service account (admission).
    wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", NS, "get", "serviceaccount", "default"])
    })
    .expect("default service account");
    wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", NS, "get", "configmap", "kube-root-ca.crt"])
    })
    .expect("kube-root-ca.crt");
    cp.apply(&OBJECTS.replace("NS", NS));

    let mut on = member(34, &cp, true);
    let mut off = member(35, &cp, false);
    apply_pod(&cp, APP, "app", &on);
    apply_pod(&cp, PLAIN, "gone", &on);
    apply_pod(&cp, PLAIN, "torn", &on);
    apply_pod(&cp, PLAIN, "plain-off", &off);
    let wait_api_running = |name: &str, node: &Node| -> Value {
        wait_for(Duration::from_secs(90), || {
            api_pod(&cp, name).filter(|p| api_container_id(p).is_some())
        })
        .unwrap_or_else(|| {
            panic!(
                "pod {name} not running: {:?}\n{}",
                api_pod(&cp, name).map(|p| p["status"].clone()),
                node.log_tail(40)
            )
        })
    };
    let app = wait_api_running("app", &on);
    let gone = wait_api_running("gone", &on);
    let torn = wait_api_running("torn", &on);
    wait_api_running("plain-off", &off);
    let (app_uid, gone_uid, torn_uid) = (uid(&app), uid(&gone), uid(&torn));
    let first_cid = api_container_id(&app).unwrap();
    assert!(environ(&on, &first_cid).contains("PASS=s3cret-offline"));

    // The local copy: both pods, the objects they use, the token; the
    // secret and the token not in the clear.
    let dir = offline_dir(&on);
    let stored = |rel: &str| dir.join(rel).exists();
    assert!(
        wait_for(Duration::from_secs(10), || {
            (stored(&format!("pods/{app_uid}"))
                && stored(&format!("pods/{gone_uid}"))
                && stored(&format!("pods/{torn_uid}"))
                && stored(&format!("configmaps/{NS}_cfg"))
                && stored(&format!("configmaps/{NS}_kube-root-ca.crt"))
                && stored(&format!("secrets/{NS}_sec"))
                && stored("tokens")
                && stored("services"))
            .then_some(())
        })
        .is_some(),
        "local copy incomplete: {:?}",
        sync_support::entries(&dir)
    );
    for f in ["secrets/pl-offline_sec", "tokens"] {
        let raw = std::fs::read(dir.join(f)).unwrap();
        for needle in [
            &b"s3cret-offline"[..],
            b"czNjcmV0LW9mZmxpbmU",
            b"eyJhbGciOi",
        ] {
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle),
                "{f} holds a secret in the clear"
            );
        }
    }
    assert!(
        !offline_dir(&off).exists(),
        "offlineAutonomy: false keeps no local copy"
    );

    // picolet goes down; meanwhile `gone` is deleted from the API; then
    // the apiserver goes down and the node reboots.
    on.kill9();
    off.kill9();
    let out = cp.kubectl(&[
        "-n",
        NS,
        "delete",
        "pod",
        "gone",
        "--grace-period=0",
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
    // The configMap changes meanwhile too.
    let out = cp.kubectl(&[
        "-n",
        NS,
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"greeting":"hello-v2"}}"#,
    ]);
    assert!(out.status.success(), "{out:?}");
    let pid = cp.apiserver_pid().expect("apiserver pid");
    sync_support::kill(pid, rustix::process::Signal::KILL);
    assert!(
        sync_support::wait_until(Duration::from_secs(10), || !sync_support::alive(pid)),
        "apiserver still alive"
    );
    on.reboot();
    off.reboot();
    // Whatever a reboot leaves of the pods' volumes is not what starts them.
    let _ = std::fs::remove_dir_all(on.root.join("root/pods").join(&app_uid).join("volumes"));
    // A power cut left torn's copy cut short (as on a file system that
    // does not order data before the rename).
    let torn_file = offline_dir(&on).join(format!("pods/{torn_uid}"));
    let f = std::fs::read(&torn_file).unwrap();
    std::fs::write(&torn_file, &f[..f.len() * 2 / 3]).unwrap();
    assert!(on.shim_pids().is_empty() && on.runc_list().is_empty());
    assert!(off.shim_pids().is_empty() && off.runc_list().is_empty());

    // Boot with the apiserver down.
    let boot = Instant::now();
    on.start();
    off.start();
    let ids = wait_for(Duration::from_secs(90), || {
        Some((
            local_running_id(&on, "app")?,
            local_running_id(&on, "gone")?,
        ))
    })
    .unwrap_or_else(|| {
        panic!(
            "pods not running from the local copy: {:?}\n{}",
            on.pods()
                .iter()
                .map(|p| (p.metadata.name.clone(), p.status.clone()))
                .collect::<Vec<_>>(),
            on.log_tail(60)
        )
    });
    let boot_to_running = boot.elapsed();
    eprintln!("boot (picolet start) to all offline pods Running: {boot_to_running:?}");
    let (app_cid, _gone_cid) = ids;
    assert_ne!(app_cid, first_cid, "a new container after the reboot");
    // Started with the stored secret, configMap and token.
    let env = environ(&on, &app_cid);
    assert!(env.contains("PASS=s3cret-offline"), "{env}");
    // The service variables from the stored services.
    assert!(env.contains("KUBERNETES_SERVICE_HOST="), "{env}");
    let app_local = local_pod(&on, "app").unwrap();
    assert_eq!(app_local.metadata.uid.as_deref(), Some(app_uid.as_str()));
    let offline_restarts = sync_support::container(&app_local, "main").restart_count;
    // The volumes were rebuilt from the stored configMap and token (the
    // reboot took the token's tmpfs, the test the configMap's files).
    let pid = on.container_pid(&app_cid).expect("app pid");
    let inside =
        |p: &str| std::fs::read_to_string(format!("/proc/{pid}/root{p}")).unwrap_or_default();
    assert_eq!(inside("/cfg/greeting"), "hello-from-cm");
    assert_eq!(
        inside("/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
        NS
    );
    assert!(inside("/var/run/secrets/kubernetes.io/serviceaccount/token").starts_with("eyJ"));
    assert!(
        inside("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        sync_support::count_lines(&on.log_path, "starting 2 pod(s) from the local copy"),
        1,
        "{}",
        on.log_tail(40)
    );
    // The torn copy: reported, never run, no crash.
    assert_eq!(
        sync_support::count_lines(&on.log_path, &format!("{torn_uid} is corrupt")),
        1,
        "{}",
        on.log_tail(40)
    );
    assert!(local_pod(&on, "torn").is_none());
    assert!(on.exited().is_none());
    // Upstream's behaviour without autonomy: nothing from the API runs.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        local_pod(&off, "plain-off").is_none() && off.runc_list().is_empty(),
        "offlineAutonomy: false started a pod without the API\n{}",
        off.log_tail(30)
    );
    assert_eq!(
        sync_support::count_lines(&off.log_path, "from the local copy"),
        0
    );
    // Nothing was removed or restarted meanwhile.
    assert_eq!(local_running_id(&on, "app").as_deref(), Some(&*app_cid));

    // The apiserver comes back: the API's answer wins.
    let back = Instant::now();
    cp.up();
    // app's status is reported: the API shows the container that runs now.
    let want = app_cid.clone();
    wait_for(Duration::from_secs(60), || {
        api_pod(&cp, "app").filter(|p| api_container_id(p).as_deref() == Some(want.as_str()))
    })
    .unwrap_or_else(|| {
        panic!(
            "app's status not reported: {:?}\n{}",
            api_pod(&cp, "app").map(|p| p["status"].clone()),
            on.log_tail(60)
        )
    });
    eprintln!(
        "status reported {:?} after the apiserver returned",
        back.elapsed()
    );
    // `gone` was deleted meanwhile: stopped, its containers and its local
    // copy gone.
    assert!(
        sync_support::wait_until(Duration::from_secs(60), || {
            local_pod(&on, "gone").is_none()
        }),
        "gone still runs\n{}",
        on.log_tail(60)
    );
    assert!(
        sync_support::wait_until(Duration::from_secs(20), || !offline_dir(&on)
            .join(format!("pods/{gone_uid}"))
            .exists()),
        "gone's local copy stays"
    );
    // Nothing duplicated: app's one sandbox and one container, same
    // container as before the apiserver returned.
    assert_eq!(local_running_id(&on, "app").as_deref(), Some(&*app_cid));
    // torn starts now: the API's copy replaces the bad one.
    wait_for(Duration::from_secs(60), || local_running_id(&on, "torn"))
        .unwrap_or_else(|| panic!("torn not started\n{}", on.log_tail(40)));
    let four = sync_support::wait_until(Duration::from_secs(30), || on.runc_list().len() == 4);
    assert!(
        four,
        "app's and torn's sandbox and container only: {:?}\n{}",
        on.runc_list(),
        on.log_tail(30)
    );
    let p = local_pod(&on, "app").unwrap();
    assert_eq!(
        sync_support::container(&p, "main").restart_count,
        offline_restarts,
        "app restarted when the apiserver returned"
    );
    assert_eq!(
        cp.list("pods", NS, None)
            .iter()
            .filter(|p| p["spec"]["nodeName"] == on.node_name.as_str())
            .count(),
        2
    );
    // The configMap as the API has it now reaches the volume.
    let pid = on.container_pid(&app_cid).expect("app pid");
    wait_for(Duration::from_secs(60), || {
        let g = std::fs::read_to_string(format!("/proc/{pid}/root/cfg/greeting")).ok()?;
        (g == "hello-v2").then_some(())
    })
    .unwrap_or_else(|| panic!("configMap not updated\n{}", on.log_tail(40)));
    // Flash: with nothing changing but statuses, the local copy is not
    // rewritten (status patches come back through the watch every time).
    let mtimes = || -> Vec<(String, std::time::SystemTime)> {
        let mut v = Vec::new();
        for sub in ["", "pods", "configmaps", "secrets"] {
            let d = offline_dir(&on).join(sub);
            for f in sync_support::entries(&d) {
                let m = std::fs::metadata(d.join(&f)).unwrap();
                if m.is_file() {
                    v.push((format!("{sub}/{f}"), m.modified().unwrap()));
                }
            }
        }
        v.sort();
        v
    };
    std::thread::sleep(Duration::from_secs(3));
    let before = mtimes();
    assert!(before.len() >= 7, "{before:?}");
    // A status change: torn's container is killed and restarted, the new
    // status goes to the API and its watch brings the pod back.
    let torn_cid = local_running_id(&on, "torn").unwrap();
    let pid = on.container_pid(&torn_cid).expect("torn pid");
    sync_support::kill(pid, rustix::process::Signal::KILL);
    wait_for(Duration::from_secs(60), || {
        let p = api_pod(&cp, "torn")?;
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64() > Some(0)
            && api_container_id(&p).is_some_and(|c| c != torn_cid))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("torn's restart not reported\n{}", on.log_tail(40)));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        mtimes(),
        before,
        "the local copy was rewritten for a status change"
    );

    // app deleted: its pod, configMaps and secret leave the local copy.
    let out = cp.kubectl(&["-n", NS, "delete", "pod", "app", "--wait=false"]);
    assert!(out.status.success(), "{out:?}");
    let dir = offline_dir(&on);
    let left = || {
        [
            format!("pods/{app_uid}"),
            format!("configmaps/{NS}_cfg"),
            format!("configmaps/{NS}_kube-root-ca.crt"),
            format!("secrets/{NS}_sec"),
        ]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect::<Vec<_>>()
    };
    assert!(
        sync_support::wait_until(Duration::from_secs(30), || left().is_empty()),
        "still stored: {:?}",
        left()
    );
    assert!(dir.join(format!("pods/{torn_uid}")).exists());

    // The node without autonomy runs its pod once the API answers.
    wait_for(Duration::from_secs(90), || {
        local_running_id(&off, "plain-off")
    })
    .unwrap_or_else(|| panic!("plain-off not started\n{}", off.log_tail(40)));

    cp.drop_namespace(NS);
    cp.forget_node(&on.node_name);
    cp.forget_node(&off.node_name);
}

/// Runs 10 times: the first 9 exit 1 (a crash loop through the back-off),
/// the 10th stays up. The count lives in an emptyDir, which outlives the
/// container restarts.
const SETTLING: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: NAME, namespace: NS}
spec:
  nodeName: NODE
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: BUSYBOX
    command: [sh, -c, "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; [ $n -ge 10 ] && exec sleep 3600; exit 1"]
    volumeMounts:
    - {name: d, mountPath: /d}
  volumes:
  - name: d
    emptyDir: {}
"#;

fn log_lines(node: &Node) -> Vec<String> {
    std::fs::read_to_string(&node.log_path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// An hour of API outage at 40 times the pace: the node's status every
/// 250 ms (upstream 10 s), the Lease for 1 s (40 s), a pod sync every
/// 1.5 s (1 min), crash-loop back-off 250 ms → 7.5 s (10 s → 5 min), and
/// 90 s without the apiserver.
#[test]
fn an_hour_offline_compressed_keeps_pods_and_sends_only_the_latest_status() {
    let cp = ControlPlane::private(6, "apiserver controller-manager");
    let _purge = cp.purge_on_drop();
    cp.namespace(NS);
    wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", NS, "get", "serviceaccount", "default"])
    })
    .expect("default service account");
    let name = "sync-node-39".to_string();
    cp.forget_node(&name);
    let opts = Opts {
        kubeconfig: Some(cp.node_kubeconfig(&name)),
        back_off_initial: "250ms".into(),
        max_restart_period: "7500ms".into(),
        extra: "nodeStatusUpdateFrequency: 250ms\nnodeStatusReportFrequency: 7500ms\n\
                nodeLeaseDurationSeconds: 1\nsyncFrequency: 1500ms\n"
            .into(),
        ..Opts::default()
    };
    let mut node = Node::new(39, opts);
    node.start();
    wait_for(Duration::from_secs(30), || cp.node(&name).filter(is_ready))
        .unwrap_or_else(|| panic!("node {name} not Ready\n{}", node.log_tail(30)));
    apply_pod(&cp, PLAIN, "steady", &node);
    apply_pod(&cp, SETTLING, "settling", &node);
    let steady = wait_for(Duration::from_secs(60), || {
        api_pod(&cp, "steady").filter(|p| api_container_id(p).is_some())
    })
    .unwrap_or_else(|| panic!("steady not running\n{}", node.log_tail(40)));
    let steady_cid = api_container_id(&steady).unwrap();
    // The outage starts while settling is still in its crash loop.
    wait_for(Duration::from_secs(30), || {
        let p = api_pod(&cp, "settling")?;
        p["status"]["containerStatuses"][0]["containerID"]
            .is_string()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("settling has no status\n{}", node.log_tail(40)));

    let outage_from = log_lines(&node).len();
    let pid = cp.apiserver_pid().expect("apiserver pid");
    sync_support::kill(pid, rustix::process::Signal::KILL);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(90) {
        let (code, _) =
            sync_support::http_get(node.healthz_port, "/healthz").expect("healthz answers");
        assert_eq!(code, 200, "healthz during the outage");
        assert_eq!(
            local_running_id(&node, "steady").as_deref(),
            Some(steady_cid.as_str()),
            "steady was not left alone\n{}",
            node.log_tail(40)
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    let settled = local_pod(&node, "settling").expect("settling on the node");
    let c = sync_support::container(&settled, "main");
    assert!(
        sync_support::running(c) && c.restart_count == 9,
        "settling did not go through its crash loop offline: {c:?}\n{}",
        node.log_tail(40)
    );
    let settled_cid = c.container_id.clone().unwrap();
    // An hour's retries fill no log: warnings and errors of the outage,
    // the crash loop's own aside, stay a handful.
    let lines = log_lines(&node);
    let noisy: Vec<&String> = lines[outage_from..]
        .iter()
        .filter(|l| (l.starts_with("W ") || l.starts_with("E ")) && !l.contains("settling"))
        .collect();
    eprintln!(
        "90 s offline: {} log lines above debug, {} warnings or errors outside the crash loop",
        lines[outage_from..]
            .iter()
            .filter(|l| !l.starts_with("D "))
            .count(),
        noisy.len()
    );
    assert!(noisy.len() <= 8, "{} warnings: {noisy:#?}", noisy.len());

    cp.up();
    let up_from = log_lines(&node).len();
    let back_ts = jiff::Timestamp::now();
    cluster_support::ready_and_renewed_after(&cp, &name, back_ts, Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "not Ready with a renewed lease within 20 s of the apiserver's return\n{}",
                node.log_tail(40)
            )
        });
    // The API gets the pods' latest statuses, and only those: settling's
    // dozens of changes while offline are one or two patches now.
    wait_for(Duration::from_secs(30), || {
        let p = api_pod(&cp, "settling")?;
        (api_container_id(&p).as_deref() == Some(settled_cid.as_str())
            && p["status"]["containerStatuses"][0]["restartCount"].as_i64() == Some(9))
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "settling's latest status not reported: {:?}\n{}",
            api_pod(&cp, "settling").map(|p| p["status"].clone()),
            node.log_tail(40)
        )
    });
    let steady = api_pod(&cp, "steady").expect("steady");
    assert_eq!(api_container_id(&steady), Some(steady_cid));
    assert_eq!(
        steady["status"]["containerStatuses"][0]["restartCount"].as_i64(),
        Some(0)
    );
    std::thread::sleep(Duration::from_secs(3));
    let sends = log_lines(&node)[up_from..]
        .iter()
        .filter(|l| l.contains(&format!("pod {NS}/settling status: sending")))
        .count();
    eprintln!("settling's status patches after the reconnect: {sends}");
    assert!(
        (1..=2).contains(&sends),
        "{sends} status patches of settling after the reconnect\n{}",
        node.log_tail(60)
    );

    node.terminate(Duration::from_secs(10));
    cp.drop_namespace(NS);
    cp.forget_node(&name);
}
