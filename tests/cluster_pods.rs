//! Pods from the API server on a picolet node, driven with `kubectl` as a
//! user would against the real control plane of `../shared/k8s`
//! (apiserver, scheduler, controller-manager): Deployments and rollouts,
//! graceful and forced deletion, Jobs, admission, readiness, mirror pods,
//! and picolet or the apiserver restarting mid-rollout.
//!
//! Sync-test numbers 45..=49; each test has a namespace and a
//! node of its own, and pins its pods to that node.

mod cluster_support;
mod sync_support;

use cluster_support::{is_ready, wait_for, ControlPlane};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use sync_support::{busybox_pod, Node, Opts};

fn member(n: u32, cp: &ControlPlane, extra: &str) -> Node {
    let name = format!("sync-node-{n}");
    cp.forget_node(&name);
    let opts = Opts {
        kubeconfig: Some(cp.node_kubeconfig(&name)),
        extra: extra.to_string(),
        ..Opts::default()
    };
    let mut node = Node::new(n, opts);
    node.start();
    wait_for(Duration::from_secs(30), || cp.node(&name).filter(is_ready))
        .unwrap_or_else(|| panic!("node {name} not Ready\n{}", node.log_tail(30)));
    node
}

/// A Deployment of the registry's busybox httpd, pinned to `node`.
fn deployment(name: &str, ns: &str, node: &str, image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      automountServiceAccountToken: false
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: {image}
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
"#
    )
}

fn pod_names(pods: &[Value]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn container_ids(pods: &[Value]) -> BTreeMap<String, String> {
    pods.iter()
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_string(),
                p["status"]["containerStatuses"][0]["containerID"]
                    .as_str()?
                    .trim_start_matches("containerd://")
                    .to_string(),
            ))
        })
        .collect()
}

fn restarts(pods: &[Value]) -> i64 {
    pods.iter()
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum()
}

/// The Deployment has `n` updated, available replicas and no other pods.
fn rolled_out(cp: &ControlPlane, ns: &str, name: &str, n: i64) -> Option<Vec<Value>> {
    let d = cp.get_json(&["-n", ns, "get", "deployment", name])?;
    let st = &d["status"];
    let generation = d["metadata"]["generation"].as_i64()?;
    let done = st["observedGeneration"].as_i64() == Some(generation)
        && st["updatedReplicas"].as_i64() == Some(n)
        && st["availableReplicas"].as_i64() == Some(n)
        && st["replicas"].as_i64() == Some(n);
    let pods = cp.list("pods", ns, Some(&format!("app={name}")));
    (done && pods.len() as i64 == n).then_some(pods)
}

fn wait_rolled_out(
    cp: &ControlPlane,
    node: &Node,
    ns: &str,
    name: &str,
    n: i64,
    within: Duration,
) -> Vec<Value> {
    wait_for(within, || rolled_out(cp, ns, name, n)).unwrap_or_else(|| {
        panic!(
            "deployment {ns}/{name} not rolled out: {:?}\n{:?}\n{}",
            cp.get_json(&["-n", ns, "get", "deployment", name])
                .map(|d| d["status"].clone()),
            cp.list("pods", ns, None)
                .iter()
                .map(|p| (p["metadata"]["name"].clone(), p["status"]["phase"].clone()))
                .collect::<Vec<_>>(),
            node.log_tail(40)
        )
    })
}

/// Containers runc runs for this node's namespace, by pod UID label.
fn runc_containers_of(node: &Node, container_id: &str) -> bool {
    node.runc_list().iter().any(|l| l.contains(container_id))
}

fn http_ok(ip: &str, port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    use std::io::{Read, Write};
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    b.starts_with("HTTP/1.") && b.contains(" 200 ")
}

#[test]
fn deployment_serves_rolls_and_deletes_gracefully() {
    let cp = ControlPlane::shared();
    let ns = "pl-deploy";
    cp.namespace(ns);
    let node = member(45, &cp, "");
    let reg = node.use_registry();
    let name = node.node_name.clone();
    let image = format!("{reg}/picolet/httpd:latest");

    cp.apply(&deployment("web", ns, &name, &image, 3));
    let pods = wait_rolled_out(&cp, &node, ns, "web", 3, Duration::from_secs(90));
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], name.as_str());
        let ip = p["status"]["podIP"].as_str().expect("podIP");
        assert!(ip.starts_with(&node.subnet_prefix()), "{ip}");
        assert!(http_ok(ip, 8080), "pod {ip} does not serve");
        assert!(is_ready_pod(p));
    }

    // A rollout restart replaces every pod.
    let before = pod_names(&pods);
    let out = cp.kubectl(&["-n", ns, "rollout", "restart", "deployment/web"]);
    assert!(out.status.success(), "{out:?}");
    let after = wait_for(Duration::from_secs(90), || {
        rolled_out(&cp, ns, "web", 3).filter(|p| pod_names(p).is_disjoint(&before))
    })
    .unwrap_or_else(|| panic!("rollout restart did not finish\n{}", node.log_tail(40)));
    assert_eq!(restarts(&after), 0);

    // Graceful deletion: preStop (2 s) then SIGTERM, which `sleep` as PID 1
    // ignores, so the grace period (6 s) runs out; the object goes only
    // once the container is gone.
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: slow, namespace: {ns}}}
spec:
  nodeName: {name}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 6
  containers:
  - name: c
    image: {image}
    command: [sleep, "3600"]
    lifecycle: {{preStop: {{exec: {{command: [sleep, "2"]}}}}}}
"#
    ));
    let slow = wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", ns, "get", "pod", "slow"])
            .filter(is_ready_pod)
    })
    .expect("pod slow running");
    let cid = container_ids(&[slow])["slow"].clone();
    let t0 = Instant::now();
    let out = cp.kubectl(&["-n", ns, "delete", "pod", "slow", "--timeout=60s"]);
    let took = t0.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(
        took >= Duration::from_millis(5500) && took < Duration::from_secs(15),
        "graceful delete took {took:?} (grace 6 s)"
    );
    assert!(
        !runc_containers_of(&node, &cid),
        "the object went before its container"
    );

    // Forced deletion kills at once (within the kubelet's 2 s minimum),
    // not after the pod's 30 s.
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: quick, namespace: {ns}}}
spec:
  nodeName: {name}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 30
  containers: [{{name: c, image: {image}, command: [sleep, "3600"]}}]
"#
    ));
    let quick = wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", ns, "get", "pod", "quick"])
            .filter(is_ready_pod)
    })
    .expect("pod quick running");
    let cid = container_ids(&[quick])["quick"].clone();
    let out = cp.kubectl(&[
        "-n",
        ns,
        "delete",
        "pod",
        "quick",
        "--grace-period=0",
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
    let gone = wait_for(Duration::from_secs(6), || {
        (!runc_containers_of(&node, &cid)).then_some(())
    });
    assert!(
        gone.is_some(),
        "force-deleted container still runs\n{}",
        node.log_tail(20)
    );
    cp.drop_namespace(ns);
}

fn is_ready_pod(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn ready_status(cp: &ControlPlane, ns: &str, pod: &str) -> Option<String> {
    let p = cp.get_json(&["-n", ns, "get", "pod", pod])?;
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

#[test]
fn jobs_admission_and_readiness() {
    let cp = ControlPlane::shared();
    let ns = "pl-jobs";
    cp.namespace(ns);
    let node = member(46, &cp, "");
    let name = node.node_name.clone();
    let bb = sync_support::BUSYBOX;
    let job = |job: &str, cmd: &str, limit: u32| {
        format!(
            r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {job}, namespace: {ns}}}
spec:
  backoffLimit: {limit}
  template:
    spec:
      nodeSelector: {{kubernetes.io/hostname: {name}}}
      automountServiceAccountToken: false
      restartPolicy: Never
      containers: [{{name: c, image: {bb}, imagePullPolicy: IfNotPresent, command: [sh, -c, "{cmd}"]}}]
"#
        )
    };
    cp.apply(&job("ok", "echo done; sleep 1", 0));
    cp.apply(&job("bad", "exit 3", 1));
    // A pod no node of this size can hold.
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: huge, namespace: {ns}}}
spec:
  nodeName: {name}
  automountServiceAccountToken: false
  containers: [{{name: c, image: {bb}, command: [sleep, "60"], resources: {{requests: {{memory: 900Ti}}}}}}]
"#
    ));
    // Ready after 3 s, not ready again after 10 s.
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: flip, namespace: {ns}}}
spec:
  nodeName: {name}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {bb}
    command: [sh, -c, "sleep 3; touch /tmp/ready; sleep 7; rm /tmp/ready; sleep 3600"]
    readinessProbe: {{exec: {{command: [test, -f, /tmp/ready]}}, periodSeconds: 1}}
"#
    ));

    // Crash-looping: its BackOff events fold into one Event with a count.
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: crash, namespace: {ns}}}
spec:
  nodeName: {name}
  automountServiceAccountToken: false
  containers: [{{name: c, image: {bb}, command: [sh, -c, "exit 1"]}}]
"#
    ));

    let rejected = wait_for(Duration::from_secs(30), || {
        cp.get_json(&["-n", ns, "get", "pod", "huge"])
            .filter(|p| p["status"]["phase"] == "Failed")
    })
    .unwrap_or_else(|| panic!("huge not rejected\n{}", node.log_tail(30)));
    assert_eq!(rejected["status"]["reason"], "OutOfmemory");
    let msg = rejected["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Pod was rejected: Node didn't have enough resource: memory, requested: 989560464998400, used: "),
        "{msg}"
    );
    assert!(rejected["status"]["containerStatuses"].is_null());

    // Readiness as the API shows it: False, then True, then False.
    let mut seen: Vec<String> = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(40) && seen.len() < 3 {
        if let Some(r) = ready_status(&cp, ns, "flip") {
            if seen.last() != Some(&r) {
                seen.push(r);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(seen, ["False", "True", "False"], "{}", node.log_tail(30));

    let ok = wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", ns, "get", "job", "ok"])
            .filter(|j| j["status"]["succeeded"].as_i64() == Some(1))
    })
    .unwrap_or_else(|| panic!("job ok did not complete\n{}", node.log_tail(30)));
    let complete = ok["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Complete" && c["status"] == "True");
    assert!(complete, "{}", ok["status"]);
    let p = &cp.list("pods", ns, Some("job-name=ok"))[0];
    assert_eq!(p["status"]["phase"], "Succeeded");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert!(
        p["status"]["podIP"].is_string(),
        "a finished pod keeps its IP: {}",
        p["status"]
    );

    let bad = wait_for(Duration::from_secs(90), || {
        cp.get_json(&["-n", ns, "get", "job", "bad"]).filter(|j| {
            j["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Failed" && c["status"] == "True")
            })
        })
    })
    .unwrap_or_else(|| panic!("job bad did not fail\n{}", node.log_tail(30)));
    let failed = bad["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    let pods = cp.list("pods", ns, Some("job-name=bad"));
    assert_eq!(pods.len(), 2, "backoffLimit 1: two tries");
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            3
        );
    }

    // Events, as `kubectl get events` shows them: the kubelet's reasons,
    // from source kubelet on this node, repeated ones counted.
    let events_of = |pod: &str| -> Vec<Value> {
        cp.list("events", ns, None)
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == pod)
            .collect()
    };
    let reasons = |evs: &[Value]| -> BTreeSet<String> {
        evs.iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    };
    let ok_pod = p["metadata"]["name"].as_str().unwrap().to_string();
    let evs = events_of(&ok_pod);
    for want in ["Pulled", "Created", "Started"] {
        assert!(
            reasons(&evs).contains(want),
            "{want} missing: {:?}",
            reasons(&evs)
        );
    }
    let started = evs.iter().find(|e| e["reason"] == "Started").unwrap();
    assert_eq!(started["source"]["component"], "kubelet");
    assert_eq!(started["source"]["host"], name.as_str());
    assert_eq!(started["involvedObject"]["fieldPath"], "spec.containers{c}");
    assert_eq!(started["message"], "Started container c");
    let huge = events_of("huge");
    let oom = huge
        .iter()
        .find(|e| e["reason"] == "OutOfmemory")
        .expect("OutOfmemory event");
    assert_eq!(oom["type"], "Warning");
    assert!(oom["message"]
        .as_str()
        .unwrap()
        .starts_with("Node didn't have enough resource: memory"));
    let backoff = wait_for(Duration::from_secs(30), || {
        let b: Vec<Value> = events_of("crash")
            .into_iter()
            .filter(|e| e["reason"] == "BackOff")
            .collect();
        (b.len() == 1 && b[0]["count"].as_i64().unwrap_or(0) >= 2).then(|| b[0].clone())
    })
    .unwrap_or_else(|| panic!("no counted BackOff event: {:?}", events_of("crash")));
    assert_eq!(backoff["type"], "Warning");
    assert!(
        backoff["message"]
            .as_str()
            .unwrap()
            .starts_with("Back-off restarting failed container c in pod crash_pl-jobs("),
        "{backoff}"
    );
    let out = cp.kubectl(&["-n", ns, "describe", "pod", "crash"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("BackOff") && l.contains("kubelet") && l.contains("(x")),
        "{text}"
    );
    cp.drop_namespace(ns);
}

#[test]
fn static_pods_get_mirror_pods() {
    let cp = ControlPlane::shared();
    let node = member(47, &cp, "");
    let name = node.node_name.clone();
    let full = format!("mirror-{name}");
    node.put_manifest("m.yaml", &busybox_pod("mirror", "Always", "sleep 3600"));
    let get = || cp.get_json(&["-n", "default", "get", "pod", &full]);
    let m = wait_for(Duration::from_secs(60), || get().filter(is_ready_pod))
        .unwrap_or_else(|| panic!("no ready mirror pod {full}\n{}", node.log_tail(30)));
    let ann = &m["metadata"]["annotations"];
    assert!(ann["kubernetes.io/config.mirror"].is_string(), "{ann}");
    assert_eq!(
        ann["kubernetes.io/config.mirror"],
        ann["kubernetes.io/config.hash"]
    );
    assert_eq!(ann["kubernetes.io/config.source"], "file");
    let owner = &m["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Node"), Some(name.as_str()))
    );
    assert_eq!(m["status"]["phase"], "Running");
    let local = node.pod("mirror").unwrap();
    let cid = sync_support::container(&local, "main")
        .container_id
        .clone()
        .unwrap();
    assert_eq!(
        m["status"]["containerStatuses"][0]["containerID"],
        cid.as_str()
    );

    // Deleted by someone: created again, with the status on it.
    let uid = m["metadata"]["uid"].as_str().unwrap().to_string();
    let out = cp.kubectl(&["-n", "default", "delete", "pod", &full, "--wait=false"]);
    assert!(out.status.success(), "{out:?}");
    let again = wait_for(Duration::from_secs(30), || {
        get().filter(|m| m["metadata"]["uid"] != uid.as_str() && is_ready_pod(m))
    })
    .unwrap_or_else(|| panic!("mirror pod not re-created\n{}", node.log_tail(30)));
    assert_eq!(
        again["status"]["containerStatuses"][0]["containerID"],
        cid.as_str()
    );
    // The static pod itself never stopped.
    let local = node.pod("mirror").unwrap();
    assert_eq!(
        sync_support::container(&local, "main")
            .container_id
            .as_deref(),
        Some(cid.as_str())
    );

    // The manifest goes: so does the mirror.
    node.remove_manifest("m.yaml");
    wait_for(Duration::from_secs(30), || get().is_none().then_some(()))
        .unwrap_or_else(|| panic!("mirror pod outlived its manifest\n{}", node.log_tail(30)));
}

#[test]
fn picolet_killed_mid_rollout_duplicates_and_restarts_nothing() {
    let cp = ControlPlane::shared();
    let ns = "pl-restart";
    cp.namespace(ns);
    let mut node = member(48, &cp, "");
    let name = node.node_name.clone();
    let image = sync_support::HTTPD;
    cp.apply(&deployment("web", ns, &name, image, 3));
    let first = wait_rolled_out(&cp, &node, ns, "web", 3, Duration::from_secs(90));
    let before = pod_names(&first);
    let out = cp.kubectl(&["-n", ns, "rollout", "restart", "deployment/web"]);
    assert!(out.status.success(), "{out:?}");
    // Mid-rollout: some new pods exist.
    wait_for(Duration::from_secs(30), || {
        let pods = cp.list("pods", ns, Some("app=web"));
        (pod_names(&pods).difference(&before).count() >= 1).then_some(())
    })
    .expect("the rollout started");
    let running_before = container_ids(&cp.list("pods", ns, Some("app=web")));
    node.kill9();
    std::thread::sleep(Duration::from_secs(2));
    node.start();
    let pods = wait_for(Duration::from_secs(120), || {
        rolled_out(&cp, ns, "web", 3).filter(|p| pod_names(p).is_disjoint(&before))
    })
    .unwrap_or_else(|| {
        panic!(
            "rollout did not finish after the restart\n{}",
            node.log_tail(40)
        )
    });
    // A kill between a container's create and its start leaves a container
    // that never ran; after the restart a new one starts with the next
    // attempt (restartCount 1, lastState waiting), as upstream's kubelet
    // does. What must not happen: a container that ran is restarted.
    let ran_and_restarted = pods.iter().any(|p| {
        p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["restartCount"].as_i64().unwrap_or(0) > 0
                    && c["lastState"].get("waiting").is_none()
            })
    });
    if ran_and_restarted {
        let statuses: Vec<&Value> = pods
            .iter()
            .map(|p| &p["status"]["containerStatuses"])
            .collect();
        let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                [
                    "kill", "Kill", "restart", "exited", "adopt", "recover", "offline", "Back-off",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .collect();
        panic!(
            "a container was restarted: {statuses:#?}\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
    }
    // Pods that ran before the kill run the same container now.
    for (pod, cid) in container_ids(&pods) {
        if let Some(old) = running_before.get(&pod) {
            assert_eq!(&cid, old, "pod {pod} got a new container");
        }
    }
    // One container per pod in the runtime (sandboxes aside): nothing
    // duplicated, nothing left of the old pods.
    let runc = node.runc_list();
    for cid in container_ids(&pods).values() {
        assert_eq!(
            runc.iter().filter(|l| l.contains(cid.as_str())).count(),
            1,
            "{runc:?}"
        );
    }
    let apps = pods.len();
    let running = node
        .pods()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .count();
    assert_eq!(running, apps, "picolet runs pods the API does not have");
    cp.drop_namespace(ns);
}

#[test]
fn apiserver_restart_mid_rollout_converges() {
    let cp = ControlPlane::private(2, "apiserver controller-manager scheduler");
    let _purge = cp.purge_on_drop();
    let ns = "pl-outage";
    cp.namespace(ns);
    let node = member(49, &cp, "nodeStatusUpdateFrequency: 2s");
    let name = node.node_name.clone();
    cp.apply(&deployment("web", ns, &name, sync_support::HTTPD, 3));
    let first = wait_rolled_out(&cp, &node, ns, "web", 3, Duration::from_secs(120));
    let before = pod_names(&first);
    let out = cp.kubectl(&["-n", ns, "rollout", "restart", "deployment/web"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(Duration::from_secs(30), || {
        let pods = cp.list("pods", ns, Some("app=web"));
        (pod_names(&pods).difference(&before).count() >= 1).then_some(())
    })
    .expect("the rollout started");
    let pid = cp.apiserver_pid().expect("apiserver pid");
    sync_support::kill(pid, rustix::process::Signal::KILL);
    std::thread::sleep(Duration::from_secs(10));
    cp.up();
    let pods = wait_for(Duration::from_secs(120), || {
        rolled_out(&cp, ns, "web", 3).filter(|p| pod_names(p).is_disjoint(&before))
    })
    .unwrap_or_else(|| {
        panic!(
            "no convergence after the apiserver came back\n{}",
            node.log_tail(40)
        )
    });
    assert_eq!(restarts(&pods), 0);
    let running = node
        .pods()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .count();
    assert_eq!(running, 3, "picolet runs pods the API does not have");
}
