//! picolet restarts: after kill -9 the new picolet adopts the running pods
//! (same container processes, restart counts unchanged, logs continue
//! without a lost line); SIGTERM leaves pods running and exits 0 (or
//! stops them first with `picolet.stopPodsOnShutdown`); a
//! malformed manifest next to a valid one does not stop the valid pod;
//! images come from the registry too (plain-HTTP mirror config).

mod sync_support;

use std::collections::BTreeMap;
use std::time::Duration;
use sync_support::*;

fn counter_pod(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: counter
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, \"i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done\"]
  - name: httpd
    image: {HTTPD}
    imagePullPolicy: Never
"
    )
}

/// The numbers of the `line N` entries of a CRI log, in order.
fn numbers(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            // <time> stdout F line N
            let mut f = l.splitn(4, ' ');
            let (_ts, _stream, _tag, msg) = (f.next()?, f.next()?, f.next()?, f.next()?);
            msg.strip_prefix("line ")?.parse().ok()
        })
        .collect()
}

#[test]
fn kill_9_and_restart_adopts_running_pods() {
    let mut node = Node::new(10, Opts::default());
    node.start();
    node.put_manifest("counter.yaml", &counter_pod("counter"));
    let before = node.wait_pod("counter", Duration::from_secs(60), |p| {
        running(container(p, "counter")) && running(container(p, "httpd"))
    });
    let uid = before.metadata.uid.clone().unwrap();
    let mut pids = BTreeMap::new();
    for c in ["counter", "httpd"] {
        let cid = container(&before, c).container_id.clone().unwrap();
        pids.insert(c, (cid.clone(), node.container_pid(&cid).expect("pid")));
    }
    std::thread::sleep(Duration::from_secs(1));
    node.kill9();
    // The containers live on without picolet.
    std::thread::sleep(Duration::from_secs(2));
    for (c, (_, pid)) in &pids {
        assert!(alive(*pid), "{c} died with picolet");
    }
    node.start();
    let after = node.wait_pod("counter", Duration::from_secs(30), |p| {
        running(container(p, "counter")) && running(container(p, "httpd"))
    });
    assert_eq!(
        after.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "same pod"
    );
    // Give the new picolet a few loop rounds to (not) act.
    std::thread::sleep(Duration::from_secs(3));
    let after = node.pod("counter").unwrap();
    for (c, (cid, pid)) in &pids {
        let s = container(&after, c);
        assert_eq!(
            s.container_id.as_deref(),
            Some(cid.as_str()),
            "{c} was replaced"
        );
        assert_eq!(s.restart_count, 0, "{c}");
        assert!(running(s), "{c}");
        assert_eq!(node.container_pid(cid), Some(*pid), "{c}: another process");
    }
    // The log continued: every line, in order, once, across the restart.
    let log = node.container_log(&after, "counter", 0);
    let n = numbers(&log);
    assert!(n.len() > 80, "too few lines: {}", n.len());
    for (i, x) in n.iter().enumerate() {
        assert_eq!(
            *x, i as u64,
            "line {i} of the log is `line {x}`: lost or repeated lines"
        );
    }
}

#[test]
fn sigterm_leaves_pods_running_and_exits_cleanly() {
    let mut node = Node::new(11, Opts::default());
    node.start();
    node.put_manifest("counter.yaml", &counter_pod("counter"));
    let p = node.wait_pod("counter", Duration::from_secs(60), |p| {
        running(container(p, "counter"))
    });
    let cid = container(&p, "counter").container_id.clone().unwrap();
    let pid = node.container_pid(&cid).unwrap();
    let status = node.terminate(Duration::from_secs(10));
    assert!(status.success(), "picolet exited with {status:?}");
    assert!(alive(pid), "the container stopped with picolet");
    node.start();
    let p = node.wait_pod("counter", Duration::from_secs(30), |p| {
        running(container(p, "counter"))
    });
    assert_eq!(
        container(&p, "counter").container_id.as_deref(),
        Some(cid.as_str())
    );
    assert_eq!(node.container_pid(&cid), Some(pid));
}

#[test]
fn stop_pods_on_shutdown_stops_them_gracefully() {
    let mut node = Node::new(
        14,
        Opts {
            stop_pods_on_shutdown: true,
            ..Default::default()
        },
    );
    node.start();
    node.put_manifest("counter.yaml", &counter_pod("counter"));
    let p = node.wait_pod("counter", Duration::from_secs(60), |p| {
        running(container(p, "counter")) && running(container(p, "httpd"))
    });
    let pids: Vec<u32> = ["counter", "httpd"]
        .iter()
        .map(|c| {
            let cid = container(&p, c).container_id.clone().unwrap();
            node.container_pid(&cid).unwrap()
        })
        .collect();
    // httpd ignores SIGTERM: the stop waits its 2 s grace period.
    let status = node.terminate(Duration::from_secs(20));
    assert!(status.success(), "picolet exited with {status:?}");
    for pid in pids {
        assert!(!alive(pid), "container {pid} outlived picolet");
    }
}

#[test]
fn malformed_manifest_next_to_a_valid_one() {
    let mut node = Node::new(12, Opts::default());
    node.put_manifest(
        "bad-types.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: oops}\n",
    );
    node.put_manifest(
        "bad-noimage.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec: {containers: [{name: c}]}\n",
    );
    node.put_manifest("garbage.yaml", "\u{0}\u{1}binary\u{ff}garbage");
    node.put_manifest(
        "good.yaml",
        &busybox_pod("good", "Always", "exec sleep 3600"),
    );
    node.start();
    let p = node.wait_pod("good", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    assert_eq!(phase(&p), "Running");
    let names: Vec<String> = node
        .pods()
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, vec![format!("good-{}", node.node_name)]);
    // The bad files are reported (file and reason) in picolet's log.
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    for f in ["bad-types.yaml", "bad-noimage.yaml", "garbage.yaml"] {
        assert!(log.contains(f), "{f} not reported:\n{}", node.log_tail(40));
    }
}

#[test]
fn images_are_pulled_from_the_registry_with_back_off_on_failure() {
    let mut node = Node::new(13, Opts::default());
    let reg = node.use_registry();
    node.start();
    node.put_manifest(
        "pulled.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: pulled}}
spec:
  containers:
  - name: main
    image: {reg}/picolet/busybox:1.35
    command: [sleep, \"3600\"]
"
        ),
    );
    node.put_manifest(
        "missing.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: missing}}
spec:
  containers:
  - name: main
    image: {reg}/picolet/no-such-image:1
"
        ),
    );
    let p = node.wait_pod("pulled", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    assert!(container(&p, "main").image_id.contains("sha256:"));
    // A missing image: ErrImagePull, then ImagePullBackOff while waiting.
    let p = node.wait_pod("missing", Duration::from_secs(30), |p| {
        waiting_reason(container(p, "main")) == Some("ErrImagePull")
    });
    assert_eq!(phase(&p), "Pending");
    let p = node.wait_pod("missing", Duration::from_secs(30), |p| {
        waiting_reason(container(p, "main")) == Some("ImagePullBackOff")
    });
    let msg = container(&p, "main")
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap();
    assert_eq!(
        msg,
        format!("Back-off pulling image \"{reg}/picolet/no-such-image:1\"")
    );
}
