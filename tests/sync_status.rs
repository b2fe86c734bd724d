//! Pod ends and sources through `picolet run`, checked on `/pods`: a pod
//! past its `activeDeadlineSeconds` is killed and fails with reason
//! DeadlineExceeded (and stays listed); a container over its memory limit
//! ends OOMKilled with 137; pods from `staticPodURL` run, survive a server
//! that answers 500 or garbage (also across a picolet restart), and stop
//! when it serves an empty list; finished pods stay finished across a
//! picolet restart. (Job-like pods
//! ending Succeeded / Failed: `sync_pod.rs`.)

mod sync_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync_support::*;

#[test]
fn active_deadline_kills_the_pod_and_fails_it() {
    let mut node = Node::new(30, Opts::default());
    node.start();
    // main exits on SIGTERM (143); httpd ignores it and is killed at the
    // end of the 2 s grace period (137).
    node.put_manifest(
        "deadline.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: deadline}}
spec:
  activeDeadlineSeconds: 4
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, \"trap 'exit 143' TERM; while true; do sleep 0.1; done\"]
  - name: httpd
    image: {HTTPD}
    imagePullPolicy: Never
"
        ),
    );
    let p = node.wait_pod("deadline", Duration::from_secs(60), |p| {
        running(container(p, "main")) && running(container(p, "httpd"))
    });
    assert_eq!(phase(&p), "Running");
    let start = p
        .status
        .as_ref()
        .unwrap()
        .start_time
        .clone()
        .expect("startTime");
    let uid = p.metadata.uid.clone().unwrap();

    let p = node.wait_pod("deadline", Duration::from_secs(20), |p| {
        phase(p) == "Failed"
            && terminated(container(p, "main")).is_some()
            && terminated(container(p, "httpd")).is_some()
    });
    let st = p.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    assert_eq!(st.start_time.as_ref(), Some(&start), "startTime kept");
    for (name, code) in [("main", 143), ("httpd", 137)] {
        let c = container(&p, name);
        assert_eq!(terminated(c), Some((code, "Error".into())), "{name}: {c:?}");
        assert_eq!(c.restart_count, 0, "{name}");
        assert!(!c.ready, "{name}");
        // Killed at the deadline, not before.
        let t = terminated_state(c).unwrap();
        let after = secs_between(&start, t.finished_at.as_ref().unwrap());
        assert!(after >= 3.0, "{name} ended {after}s after the start");
    }
    for t in ["Ready", "ContainersReady"] {
        let c = pod_condition(&p, t).unwrap_or_else(|| panic!("no {t}"));
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("False", Some("PodFailed"), None),
            "{t}"
        );
    }

    // Nothing of it runs any more, yet it stays listed, Failed, through a
    // re-read of its manifest (fileCheckFrequency is 5 s), and is not
    // started again.
    let ok = wait_until(Duration::from_secs(15), || {
        node.get("/runningpods")
            .is_some_and(|(_, body)| !body.contains(&uid))
    });
    assert!(ok, "the pod still runs\n{}", node.log_tail(30));
    std::thread::sleep(Duration::from_secs(6));
    let p = node.pod("deadline").expect("a failed pod stays listed");
    assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(phase(&p), "Failed");
    assert_eq!(
        p.status.as_ref().unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    for name in ["main", "httpd"] {
        assert_eq!(container(&p, name).restart_count, 0, "{name}");
        assert!(terminated(container(&p, name)).is_some(), "{name}");
    }
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    assert!(!log.contains("restart 1)"), "a container was started again");
}

#[test]
fn memory_hog_is_oom_killed() {
    let mut node = Node::new(31, Opts::default());
    node.start();
    let hog = |name: &str, policy: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 1
  containers:
  - name: hog
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, \"sleep 1; exec tail /dev/zero\"]
    resources:
      limits: {{memory: 16Mi}}
"
        )
    };
    node.put_manifest("never.yaml", &hog("hog-never", "Never"));
    node.put_manifest("always.yaml", &hog("hog-always", "Always"));

    let p = node.wait_pod("hog-never", Duration::from_secs(60), |p| {
        phase(p) == "Failed"
    });
    let c = container(&p, "hog");
    assert_eq!(terminated(c), Some((137, "OOMKilled".into())), "{c:?}");
    assert_eq!(c.restart_count, 0);
    assert!(!c.ready);
    let t = terminated_state(c).unwrap();
    assert!(t.started_at.is_some() && t.finished_at.is_some(), "{t:?}");
    // Only a memory limit: requests default to it, the pod is Burstable.
    let st = p.status.as_ref().unwrap();
    assert_eq!(st.qos_class.as_deref(), Some("Burstable"));
    assert_eq!(st.reason, None, "no pod-level reason for an OOM kill");
    let ready = pod_condition(&p, "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodFailed"))
    );

    // Restarted under Always; the OOM kill is the last state.
    let p = node.wait_pod("hog-always", Duration::from_secs(30), |p| {
        container(p, "hog").restart_count >= 1
    });
    let c = container(&p, "hog");
    assert_eq!(last_terminated(c), Some((137, "OOMKilled".into())), "{c:?}");
    assert_eq!(phase(&p), "Running");
}

/// A one-route HTTP server on 127.0.0.1 answering every request with the
/// current (status, body); counts the requests.
struct ManifestServer {
    reply: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
}

impl ManifestServer {
    fn start(port: u16) -> ManifestServer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let reply = Arc::new(Mutex::new((404, String::new())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, h) = (reply.clone(), hits.clone());
        // Lives as long as the test process.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let (code, body) = r.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(body.as_bytes());
                h.fetch_add(1, Ordering::SeqCst);
            }
        });
        ManifestServer { reply, hits }
    }

    fn serve(&self, code: u16, body: &str) {
        *self.reply.lock().unwrap() = (code, body.to_string());
    }

    /// Waits until picolet has read the URL `n` more times.
    fn wait_reads(&self, node: &Node, n: usize) {
        let from = self.hits.load(Ordering::SeqCst);
        let ok = wait_until(Duration::from_secs(15), || {
            self.hits.load(Ordering::SeqCst) >= from + n
        });
        assert!(ok, "picolet did not read the URL\n{}", node.log_tail(30));
    }
}

#[test]
fn static_pod_url_end_to_end() {
    let port = 18500 + 2 * 32;
    let server = ManifestServer::start(port);
    let url = format!("http://127.0.0.1:{port}/pods");
    let mut node = Node::new(
        32,
        Opts {
            extra: format!("staticPodURL: {url}\nhttpCheckFrequency: 1s\n"),
            ..Default::default()
        },
    );
    assert_eq!(node.host_port(0), port);
    server.serve(
        200,
        &busybox_pod(
            "fromurl",
            "Always",
            "trap 'exit 143' TERM; while true; do sleep 0.1; done",
        ),
    );
    node.start();
    let p = node.wait_pod("fromurl", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    let ann = p.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann["kubernetes.io/config.source"], "http");
    let uid = p.metadata.uid.clone().unwrap();
    assert_eq!(ann["kubernetes.io/config.hash"], uid);
    assert_eq!(phase(&p), "Running");
    let cid = container(&p, "main").container_id.clone().unwrap();
    let pid = node.container_pid(&cid).expect("container pid");

    // A server error, then garbage: the last good pods keep running.
    let unchanged = |what: &str| {
        let p = node
            .pod("fromurl")
            .unwrap_or_else(|| panic!("after {what}: the pod is gone"));
        assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()), "{what}");
        let c = container(&p, "main");
        assert!(running(c), "{what}: {c:?}");
        assert_eq!(c.container_id.as_deref(), Some(cid.as_str()), "{what}");
        assert_eq!(c.restart_count, 0, "{what}");
        assert!(alive(pid), "{what}: the container stopped");
    };
    server.serve(500, "oops");
    server.wait_reads(&node, 3);
    unchanged("500");
    server.serve(200, "kind: [not, a, pod\n\u{1}");
    server.wait_reads(&node, 3);
    unchanged("garbage");
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    for want in [format!("{url}: 500 X"), format!("{url}: cannot parse")] {
        assert!(
            log.lines()
                .any(|l| l.contains("failed to read pods from URL") && l.contains(&want)),
            "no failure `{want}` logged:\n{}",
            node.log_tail(30)
        );
    }

    // An empty list: the pod is stopped and no longer listed.
    server.serve(200, r#"{"apiVersion":"v1","kind":"PodList","items":[]}"#);
    node.wait_pod_gone("fromurl", Duration::from_secs(15));
    assert!(
        wait_until(Duration::from_secs(15), || !alive(pid)),
        "the container still runs"
    );
    let ok = wait_until(Duration::from_secs(15), || {
        node.get("/runningpods")
            .is_some_and(|(_, body)| !body.contains(&uid))
    });
    assert!(ok, "the pod's sandbox is still listed as running");
}

#[test]
fn static_pod_url_down_at_a_picolet_restart_keeps_its_pods() {
    let port = 18500 + 2 * 34;
    let server = ManifestServer::start(port);
    let url = format!("http://127.0.0.1:{port}/pods");
    let mut node = Node::new(
        34,
        Opts {
            extra: format!("staticPodURL: {url}\nhttpCheckFrequency: 1s\n"),
            ..Default::default()
        },
    );
    assert_eq!(node.host_port(0), port);
    let manifest = busybox_pod(
        "fromurl",
        "Always",
        "trap 'exit 143' TERM; while true; do sleep 0.1; done",
    );
    server.serve(200, &manifest);
    node.start();
    let p = node.wait_pod("fromurl", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    let uid = p.metadata.uid.clone().unwrap();
    let cid = container(&p, "main").container_id.clone().unwrap();
    let pid = node.container_pid(&cid).expect("container pid");

    // picolet restarts while the URL fails: until the source has answered
    // once, its pods are not orphans (housekeeping runs every 2 s).
    node.kill9();
    server.serve(500, "down");
    node.start();
    server.wait_reads(&node, 4);
    assert!(
        alive(pid),
        "the URL's pod was stopped while the URL was down"
    );
    assert!(node.pod("fromurl").is_none(), "listed without a source");

    // The URL answers again: the same pod, adopted, not restarted.
    server.serve(200, &manifest);
    let p = node.wait_pod("fromurl", Duration::from_secs(20), |p| {
        running(container(p, "main"))
    });
    assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
    let c = container(&p, "main");
    assert_eq!(c.container_id.as_deref(), Some(cid.as_str()));
    assert_eq!(c.restart_count, 0);
    assert_eq!(node.container_pid(&cid), Some(pid));
}

#[test]
fn terminal_pods_stay_terminal_across_a_picolet_restart() {
    let mut node = Node::new(33, Opts::default());
    node.start();
    let out = node.out_dir();
    // Every run of a container leaves a line in /out/<pod>.
    let manifest = |name: &str, extra: &str, script: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
{extra}  terminationGracePeriodSeconds: 2
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, {script:?}]
",
            out = out.display(),
            script = format!("echo run >> /out/{name}; {script}")
        )
    };
    node.put_manifest(
        "job.yaml",
        &manifest("job", "  restartPolicy: Never\n", "exit 0"),
    );
    node.put_manifest(
        "deadline.yaml",
        &manifest(
            "deadline",
            "  activeDeadlineSeconds: 3\n",
            "trap 'exit 143' TERM; while true; do sleep 0.1; done",
        ),
    );
    let job = node.wait_pod("job", Duration::from_secs(60), |p| phase(p) == "Succeeded");
    let deadline = node.wait_pod("deadline", Duration::from_secs(60), |p| {
        phase(p) == "Failed" && terminated(container(p, "main")).is_some()
    });

    node.kill9();
    node.start();
    // The new picolet finds them finished and leaves them so: same
    // status, nothing run again.
    let job2 = node.wait_pod("job", Duration::from_secs(30), |p| phase(p) == "Succeeded");
    let deadline2 = node.wait_pod("deadline", Duration::from_secs(30), |p| {
        phase(p) == "Failed"
    });
    // A new run would start at once; give it the time to (not) happen.
    std::thread::sleep(Duration::from_secs(3));
    for (before, after) in [(&job, &job2), (&deadline, &deadline2)] {
        let name = before.metadata.name.clone().unwrap();
        let now = node.pod(name.split("-sync-").next().unwrap()).unwrap();
        for p in [after, &now] {
            assert_eq!(p.metadata.uid, before.metadata.uid, "{name}");
            let (a, b) = (p.status.as_ref().unwrap(), before.status.as_ref().unwrap());
            assert_eq!(a.phase, b.phase, "{name}");
            assert_eq!(a.reason, b.reason, "{name}");
            assert_eq!(a.message, b.message, "{name}");
            assert_eq!(a.start_time, b.start_time, "{name}");
            assert_eq!(a.container_statuses, b.container_statuses, "{name}");
        }
    }
    assert_eq!(
        deadline2.status.as_ref().unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    for name in ["job", "deadline"] {
        assert_eq!(count_lines(&out.join(name), "run"), 1, "{name} ran again");
    }
}
