//! Probes and the postStart hook through `picolet run`: a failing liveness
//! probe (exec, httpGet, tcpSocket, grpc) restarts its container, passing
//! ones never do; a failing readiness probe clears Ready without a
//! restart; a startup probe holds the other two back and, when it never
//! succeeds, restarts the container; a failed postStart hook kills the
//! container and the restart policy decides. Everything checked on `/pods`.

mod sync_support;

use picolet::api::core::Pod;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use sync_support::*;

/// A busybox container that exits 143 on SIGTERM (a shell as PID 1 only
/// gets the signal with a trap), running `setup` first.
fn trapping(setup: &str) -> String {
    format!("trap 'exit 143' TERM; {setup} while true; do sleep 0.1; done")
}

fn cid(p: &Pod, name: &str) -> String {
    container(p, name)
        .container_id
        .clone()
        .unwrap_or_else(|| panic!("{name} has no container ID"))
}

/// The container was restarted once because of its liveness probe: the
/// previous instance (`old_cid`) is the terminated last state with
/// `want` (exit code, reason), a new instance runs.
fn assert_restarted_once(node: &Node, p: &Pod, name: &str, old_cid: &str, want: (i32, &str)) {
    let c = container(p, name);
    assert_eq!(c.restart_count, 1, "{name}: {c:?}");
    let t = last_terminated_state(c).unwrap_or_else(|| panic!("{name}: no last state: {c:?}"));
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (want.0, Some(want.1)),
        "{name}: {t:?}"
    );
    assert_eq!(t.container_id.as_deref(), Some(old_cid), "{name}");
    let (started, finished) = (t.started_at.as_ref(), t.finished_at.as_ref());
    assert!(
        started.zip(finished).is_some_and(|(s, f)| f.0 >= s.0),
        "{name}: {t:?}"
    );
    assert!(running(c), "{name}: {c:?}");
    let new = c.container_id.as_deref().unwrap_or("");
    assert!(!new.is_empty() && new != old_cid, "{name}: {new}");
    assert_eq!(c.started, Some(true), "{name}");
    let now = c.state.as_ref().and_then(|s| s.running.as_ref());
    let since = now.and_then(|r| r.started_at.as_ref());
    assert!(
        since.zip(finished).is_some_and(|(s, f)| s.0 >= f.0),
        "{name}: the new instance started before the old one ended: {c:?}"
    );
    assert_eq!(phase(p), "Running");
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    let want_line = format!(
        "spec.containers{{{name}}}: Normal Killing: Container {name} failed liveness probe, will be restarted"
    );
    assert!(
        log.contains(&want_line),
        "no `{want_line}` in the log:\n{}",
        node.log_tail(40)
    );
}

#[test]
fn liveness_exec_failure_restarts_the_container() {
    let mut node = Node::new(20, Opts::default());
    node.start();
    // Healthy for 2 s, then the file the probe reads is gone (the new
    // instance starts healthy again: a fresh root filesystem).
    let manifest = |name: &str, policy: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, {script:?}]
    livenessProbe:
      exec: {{command: [cat, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 2
",
            script = trapping("touch /tmp/healthy; sleep 2; rm /tmp/healthy;")
        )
    };
    node.put_manifest("live.yaml", &manifest("live", "Always"));
    node.put_manifest("once.yaml", &manifest("once", "Never"));
    let first = node.wait_pod("live", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    let old = cid(&first, "main");
    let old_pid = node.container_pid(&old).expect("container pid");
    let p = node.wait_pod("live", Duration::from_secs(30), |p| {
        container(p, "main").restart_count >= 1 && running(container(p, "main"))
    });
    // SIGTERM, and the shell's trap exits 143.
    assert_restarted_once(&node, &p, "main", &old, (143, "Error"));
    // It ran healthy for 2 s, then failed twice, 1 s apart.
    let t = last_terminated_state(container(&p, "main")).unwrap();
    let ran = secs_between(
        t.started_at.as_ref().unwrap(),
        t.finished_at.as_ref().unwrap(),
    );
    assert!(ran >= 2.0, "killed after {ran}s, while still healthy");
    assert!(!alive(old_pid), "the old instance still runs");
    assert!(container(&p, "main").ready);
    // The probe goes on with the new instance: killed again.
    node.wait_pod("live", Duration::from_secs(20), |p| {
        container(p, "main").restart_count >= 2
    });

    // restartPolicy Never: killed the same way, not started again; the pod
    // fails.
    let p = node.wait_pod("once", Duration::from_secs(20), |p| phase(p) == "Failed");
    let c = container(&p, "main");
    assert_eq!(terminated(c), Some((143, "Error".into())), "{c:?}");
    assert_eq!(c.restart_count, 0);
    assert!(!c.ready);
    // The reason is an event (in the log without an API server).
    let want = "Killing: Container main failed liveness probe";
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    assert!(
        log.lines().any(|l| l
            .contains("event: pod default/once-sync-node-20 spec.containers{main}:")
            && l.contains(want)),
        "{}",
        node.log_tail(40)
    );
}

#[test]
fn liveness_http_get_failure_restarts_after_the_probe_grace_period() {
    let mut node = Node::new(21, Opts::default());
    node.start();
    // httpd ignores SIGTERM: the kill takes the probe's own grace period
    // (1 s), not the pod's 30 s.
    node.put_manifest(
        "web.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: httpd
    image: {HTTPD}
    imagePullPolicy: Never
    ports: [{{name: http, containerPort: 8080}}]
    livenessProbe:
      httpGet: {{path: /no-such-page, port: http}}
      periodSeconds: 1
      failureThreshold: 2
      terminationGracePeriodSeconds: 1
"
        ),
    );
    let first = node.wait_pod("web", Duration::from_secs(60), |p| {
        running(container(p, "httpd"))
    });
    let old = cid(&first, "httpd");
    let p = node.wait_pod("web", Duration::from_secs(20), |p| {
        container(p, "httpd").restart_count >= 1 && running(container(p, "httpd"))
    });
    assert_restarted_once(&node, &p, "httpd", &old, (137, "Error"));
    // The probe did reach httpd (it answered 404), so the failure is the
    // probe's verdict, not a connection error.
    let log = node.container_log(&p, "httpd", 0);
    assert!(log.contains("response:404"), "httpd log:\n{log}");
    let t = last_terminated_state(container(&p, "httpd")).unwrap();
    let ran = secs_between(
        t.started_at.as_ref().unwrap(),
        t.finished_at.as_ref().unwrap(),
    );
    assert!(ran < 10.0, "ran {ran}s: the pod's grace period was used");
}

#[test]
fn liveness_tcp_socket_failure_restarts_the_container() {
    let mut node = Node::new(22, Opts::default());
    node.start();
    // Nothing listens on 8099; httpd ignores SIGTERM and is killed at the
    // end of the pod's 1 s grace period.
    node.put_manifest(
        "tcp.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: tcp}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {HTTPD}
    imagePullPolicy: Never
    livenessProbe:
      tcpSocket: {{port: 8099}}
      periodSeconds: 1
      failureThreshold: 2
"
        ),
    );
    let first = node.wait_pod("tcp", Duration::from_secs(60), |p| {
        running(container(p, "httpd"))
    });
    let old = cid(&first, "httpd");
    let p = node.wait_pod("tcp", Duration::from_secs(20), |p| {
        container(p, "httpd").restart_count >= 1 && running(container(p, "httpd"))
    });
    assert_restarted_once(&node, &p, "httpd", &old, (137, "Error"));
}

// -- gRPC --------------------------------------------------------------------

/// The Python with grpcio that scripts/probe/grpc-venv.sh installs.
fn grpc_python() -> PathBuf {
    let venv = std::env::var_os("PICOLET_GRPC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/picolet-grpc-venv".into());
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import grpc, grpc_health.v1.health"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "missing prerequisite: the grpcio venv at {}; run scripts/test-env.sh (as root) first",
        venv.display()
    );
    py
}

/// grpcio's health service: "" SERVING, "down" NOT_SERVING; every Check
/// appends the service asked for ("-" for "") to a file.
const GRPC_SERVER: &str = r#"
import sys
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

port, log = sys.argv[1], sys.argv[2]

class Counting(health.HealthServicer):
    def Check(self, request, context):
        with open(log, "a") as f:
            f.write((request.service or "-") + "\n")
        return super().Check(request, context)

h = Counting()
h.set("", health_pb2.HealthCheckResponse.SERVING)
h.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
health_pb2_grpc.add_HealthServicer_to_server(h, server)
server.add_insecure_port("0.0.0.0:" + port)
server.start()
server.wait_for_termination()
"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn grpc_server(dir: &Path, port: u16, log: &Path) -> Server {
    let py = grpc_python();
    let script = dir.join("grpc_server.py");
    std::fs::write(&script, GRPC_SERVER).unwrap();
    let child = Command::new(py)
        .arg(&script)
        .arg(port.to_string())
        .arg(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the Python gRPC server");
    let s = Server(child);
    let ok = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ok, "the Python gRPC server did not listen on {port}");
    s
}

/// gRPC probes go to the pod IP; no test image can serve gRPC, so the pod
/// uses the host's network and the health server runs on the host: the
/// probe then targets the node's IP, as upstream does for hostNetwork pods.
#[test]
fn liveness_grpc_failure_restarts_and_success_does_not() {
    let mut node = Node::new(23, Opts::default());
    let port = node.host_port(0);
    let checks = node.root.join("grpc-checks");
    let _server = grpc_server(&node.root, port, &checks);
    node.start();
    let ctr = |name: &str, service: &str| {
        format!(
            "  - name: {name}
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, {script:?}]
    livenessProbe:
      grpc: {{port: {port}, service: {service:?}}}
      periodSeconds: 1
      failureThreshold: 2
",
            script = trapping("")
        )
    };
    node.put_manifest(
        "grpc.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: grpc}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
{}{}",
            ctr("down", "down"),
            ctr("up", "")
        ),
    );
    let first = node.wait_pod("grpc", Duration::from_secs(60), |p| {
        running(container(p, "down")) && running(container(p, "up"))
    });
    // The probe's target is the node's IP.
    let st = first.status.clone().unwrap();
    assert_eq!(st.pod_ip, st.host_ip, "hostNetwork: podIP is the host IP");
    let (old_down, up) = (cid(&first, "down"), cid(&first, "up"));
    let p = node.wait_pod("grpc", Duration::from_secs(20), |p| {
        container(p, "down").restart_count >= 1 && running(container(p, "down"))
    });
    assert_restarted_once(&node, &p, "down", &old_down, (143, "Error"));
    // The passing probe ran at least 5 times meanwhile and after: no
    // restart, same instance.
    let ok = wait_until(Duration::from_secs(20), || count_lines(&checks, "-") >= 5);
    assert!(
        ok,
        "the health service was asked {} times",
        count_lines(&checks, "-")
    );
    let p = node.pod("grpc").unwrap();
    let c = container(&p, "up");
    assert_eq!(c.restart_count, 0, "{c:?}");
    assert_eq!(c.container_id.as_deref(), Some(up.as_str()));
    assert!(running(c) && c.ready);
    assert!(
        count_lines(&checks, "down") >= 2,
        "the failing probe asked for `down`"
    );
}

#[test]
fn passing_liveness_probes_never_restart() {
    let mut node = Node::new(24, Opts::default());
    node.start();
    let out = node.out_dir();
    // Each handler leaves a trace of every probe: the exec probe appends to
    // a file, httpd logs its 200s, nc runs a command per connection.
    node.put_manifest(
        "fine.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: fine}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: exec
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, {exec:?}]
    livenessProbe:
      exec: {{command: [sh, -c, \"echo run >> /out/exec-runs\"]}}
      periodSeconds: 1
      failureThreshold: 1
  - name: http
    image: {HTTPD}
    imagePullPolicy: Never
    livenessProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 1
      failureThreshold: 1
  - name: tcp
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [nc, -ll, -p, \"8081\", -e, sh, -c, \"echo conn >> /out/tcp-runs\"]
    livenessProbe:
      tcpSocket: {{port: 8081}}
      periodSeconds: 1
      failureThreshold: 1
",
            out = out.display(),
            exec = trapping("")
        ),
    );
    let first = node.wait_pod("fine", Duration::from_secs(60), |p| {
        ["exec", "http", "tcp"]
            .iter()
            .all(|c| running(container(p, c)))
    });
    let ids: Vec<String> = ["exec", "http", "tcp"]
        .iter()
        .map(|c| cid(&first, c))
        .collect();
    let ok = wait_until(Duration::from_secs(20), || {
        let p = node.pod("fine").unwrap();
        count_lines(&out.join("exec-runs"), "run") >= 6
            && count_lines(&out.join("tcp-runs"), "conn") >= 6
            && node
                .container_log(&p, "http", 0)
                .matches("response:200")
                .count()
                >= 6
    });
    assert!(
        ok,
        "probes did not run 6 times: exec {}, tcp {}\n{}",
        count_lines(&out.join("exec-runs"), "run"),
        count_lines(&out.join("tcp-runs"), "conn"),
        node.log_tail(30)
    );
    let p = node.pod("fine").unwrap();
    for (name, id) in ["exec", "http", "tcp"].iter().zip(&ids) {
        let c = container(&p, name);
        assert_eq!(c.restart_count, 0, "{name}: {c:?}");
        assert_eq!(c.container_id.as_deref(), Some(id.as_str()), "{name}");
        assert!(
            running(c) && c.ready && c.started == Some(true),
            "{name}: {c:?}"
        );
        assert!(
            c.last_state.as_ref().is_none_or(|s| s.terminated.is_none()),
            "{name}"
        );
    }
    assert_eq!(phase(&p), "Running");
    assert_eq!(condition(&p, "Ready").as_deref(), Some("True"));
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    assert!(
        !log.contains("failed liveness probe"),
        "{}",
        node.log_tail(30)
    );
}

#[test]
fn failing_readiness_clears_ready_without_a_restart() {
    let mut node = Node::new(25, Opts::default());
    node.start();
    let out = node.out_dir();
    // Ready while /out/ready exists (the test decides); every probe leaves
    // a line in /out/runs.
    node.put_manifest(
        "ready.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: ready}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, {script:?}]
    readinessProbe:
      exec: {{command: [sh, -c, \"echo run >> /out/runs; test -f /out/ready\"]}}
      periodSeconds: 1
      failureThreshold: 2
",
            out = out.display(),
            script = trapping("")
        ),
    );
    let runs = out.join("runs");
    let not_ready = |p: &Pod, name: &str| {
        let c = container(p, "main");
        assert!(running(c), "{name}: {c:?}");
        assert!(!c.ready, "{name}");
        assert_eq!(c.started, Some(true), "{name}");
        assert_eq!(phase(p), "Running", "{name}");
        for t in ["Ready", "ContainersReady"] {
            let cond = pod_condition(p, t).unwrap_or_else(|| panic!("{name}: no {t}"));
            assert_eq!(cond.status, "False", "{name}: {t}");
            assert_eq!(
                cond.reason.as_deref(),
                Some("ContainersNotReady"),
                "{name}: {t}"
            );
            assert_eq!(
                cond.message.as_deref(),
                Some("containers with unready status: [main]"),
                "{name}: {t}"
            );
        }
    };
    let first = node.wait_pod("ready", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    let id = cid(&first, "main");
    // Failing for several periods: not ready, not restarted.
    assert!(
        wait_until(Duration::from_secs(20), || count_lines(&runs, "run") >= 4),
        "readiness probe ran {} times",
        count_lines(&runs, "run")
    );
    let p = node.pod("ready").unwrap();
    not_ready(&p, "failing");
    assert_eq!(container(&p, "main").restart_count, 0);

    // Passing: ready.
    std::fs::write(out.join("ready"), "").unwrap();
    let p = node.wait_pod("ready", Duration::from_secs(10), |p| {
        container(p, "main").ready
    });
    for t in ["Ready", "ContainersReady"] {
        let cond = pod_condition(&p, t).unwrap();
        assert_eq!(cond.status, "True", "{t}");
        assert_eq!(cond.reason, None, "{t}");
    }

    // Failing again: not ready after failureThreshold periods, still the
    // same instance.
    std::fs::remove_file(out.join("ready")).unwrap();
    let p = node.wait_pod("ready", Duration::from_secs(10), |p| {
        !container(p, "main").ready
    });
    not_ready(&p, "failing again");
    let c = container(&p, "main");
    assert_eq!(c.restart_count, 0);
    assert_eq!(c.container_id.as_deref(), Some(id.as_str()));
}

#[test]
fn startup_probe_holds_liveness_and_readiness_back() {
    let mut node = Node::new(26, Opts::default());
    node.start();
    let out = node.out_dir();
    // Every probe appends its kind to /out/log; startup succeeds once
    // /out/started exists (the test decides).
    let probe = |kind: &str, test: &str| {
        format!(
            "    {kind}Probe:
      exec: {{command: [sh, -c, \"echo {kind} >> /out/log{test}\"]}}
      periodSeconds: 1
      failureThreshold: 30
"
        )
    };
    node.put_manifest(
        "slow.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: slow}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, {script:?}]
{startup}{liveness}{readiness}",
            out = out.display(),
            script = trapping(""),
            startup = probe("startup", "; test -f /out/started"),
            liveness = probe("liveness", ""),
            readiness = probe("readiness", ""),
        ),
    );
    let log = out.join("log");
    node.wait_pod("slow", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    assert!(
        wait_until(Duration::from_secs(20), || count_lines(&log, "startup")
            >= 4),
        "the startup probe ran {} times",
        count_lines(&log, "startup")
    );
    let p = node.pod("slow").unwrap();
    let c = container(&p, "main");
    assert!(running(c));
    assert_eq!(c.started, Some(false));
    assert!(!c.ready);
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    assert_eq!(phase(&p), "Running");

    // Mark the moment in the same file, then let the startup probe pass.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"--- started\n"))
        .unwrap();
    std::fs::write(out.join("started"), "").unwrap();
    let p = node.wait_pod("slow", Duration::from_secs(10), |p| {
        container(p, "main").started == Some(true) && container(p, "main").ready
    });
    assert_eq!(condition(&p, "Ready").as_deref(), Some("True"));
    assert!(
        wait_until(Duration::from_secs(10), || count_lines(&log, "liveness")
            >= 2),
        "liveness did not run after startup"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let (before, after) = text.split_once("--- started\n").unwrap();
    assert!(
        before.lines().all(|l| l == "startup"),
        "liveness or readiness ran before startup succeeded:\n{before}"
    );
    assert!(
        after.contains("liveness") && after.contains("readiness"),
        "{after}"
    );
    // Startup runs no more once it succeeded (at most one run was already
    // under way when the file appeared).
    assert!(
        after.lines().filter(|l| *l == "startup").count() <= 2,
        "startup still probed:\n{after}"
    );
    let c = container(&p, "main");
    assert_eq!(c.restart_count, 0);
}

#[test]
fn startup_probe_that_never_succeeds_restarts_the_container() {
    let mut node = Node::new(27, Opts::default());
    node.start();
    let out = node.out_dir();
    node.put_manifest(
        "never.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, {script:?}]
    startupProbe:
      exec: {{command: [sh, -c, \"echo startup >> /out/log; exit 1\"]}}
      periodSeconds: 1
      failureThreshold: 3
    livenessProbe:
      exec: {{command: [sh, -c, \"echo liveness >> /out/log\"]}}
      periodSeconds: 1
",
            out = out.display(),
            script = trapping(""),
        ),
    );
    let first = node.wait_pod("never", Duration::from_secs(60), |p| {
        running(container(p, "main"))
    });
    let old = cid(&first, "main");
    assert_eq!(container(&first, "main").started, Some(false));
    let p = node.wait_pod("never", Duration::from_secs(20), |p| {
        container(p, "main").restart_count >= 1
    });
    let c = container(&p, "main");
    assert_eq!(c.restart_count, 1);
    let t = last_terminated_state(c).expect("last state");
    assert_eq!((t.exit_code, t.reason.as_deref()), (143, Some("Error")));
    assert_eq!(t.container_id.as_deref(), Some(old.as_str()));
    // Killed after failureThreshold × periodSeconds, not before.
    let ran = secs_between(
        t.started_at.as_ref().unwrap(),
        t.finished_at.as_ref().unwrap(),
    );
    assert!((2.0..10.0).contains(&ran), "killed after {ran}s");
    assert!(!c.ready);
    assert_ne!(c.started, Some(true));
    let text = std::fs::read_to_string(out.join("log")).unwrap();
    assert!(
        text.lines().filter(|l| *l == "startup").count() >= 3,
        "{text}"
    );
    assert!(
        !text.contains("liveness"),
        "liveness ran before startup:\n{text}"
    );
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    let want = "spec.containers{main}: Normal Killing: Container main failed startup probe, will be restarted";
    assert!(log.contains(want), "no `{want}`:\n{}", node.log_tail(40));
    // The new instance is probed from scratch: not started, and killed
    // again after three failures.
    let p = node.wait_pod("never", Duration::from_secs(20), |p| {
        let c = container(p, "main");
        c.restart_count >= 2 || (running(c) && c.container_id != Some(old.clone()))
    });
    assert_eq!(container(&p, "main").started, Some(false));
    node.wait_pod("never", Duration::from_secs(20), |p| {
        container(p, "main").restart_count >= 2
    });
}

#[test]
fn failed_post_start_hook_kills_the_container() {
    let mut node = Node::new(28, Opts::default());
    node.start();
    let out = node.out_dir();
    let manifest = |name: &str, policy: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 5
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, {script:?}]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, \"until test -f /tmp/up; do sleep 0.05; done; echo hook >> /out/{name}; exit 1\"]}}
",
            out = out.display(),
            script = trapping(&format!("echo main >> /out/{name}; touch /tmp/up;"))
        )
    };
    node.put_manifest("always.yaml", &manifest("always", "Always"));
    node.put_manifest("never.yaml", &manifest("never", "Never"));

    // Never: killed once, not started again; the pod fails.
    let p = node.wait_pod("never", Duration::from_secs(60), |p| phase(p) == "Failed");
    let c = container(&p, "main");
    assert_eq!(terminated(c), Some((143, "Error".into())), "{c:?}");
    assert_eq!(c.restart_count, 0);
    assert!(!c.ready);
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    assert_eq!(count_lines(&out.join("never"), "hook"), 1);
    assert_eq!(count_lines(&out.join("never"), "main"), 1);

    // Always: killed and started again, each time; while it waits, the
    // hook's error (or the back-off) is the waiting reason.
    let reasons = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let p = node.wait_pod("always", Duration::from_secs(30), |p| {
        let c = container(p, "main");
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            reasons
                .borrow_mut()
                .insert((w.reason.clone(), w.message.clone()));
        }
        c.restart_count >= 2
    });
    // Seen or not depends on timing; when seen, the reason and message are
    // upstream's.
    for (reason, message) in reasons.borrow().iter() {
        let (reason, message) = (reason.as_deref(), message.as_deref().unwrap_or(""));
        match reason {
            Some("ContainerCreating") => {}
            Some("PostStartHookError") => assert!(
                message.starts_with("Exec lifecycle hook ([sh -c until test -f /tmp/up;")
                    && message.contains("for Container \"main\" in Pod \"always-")
                    && message.ends_with("exited with 1: , message: \"\""),
                "{message}"
            ),
            Some("CrashLoopBackOff") => assert!(
                message.starts_with("back-off ")
                    && message.contains(" restarting failed container=main pod=always-"),
                "{message}"
            ),
            r => panic!("waiting reason {r:?}: {message}"),
        }
    }
    let c = container(&p, "main");
    assert_eq!(last_terminated(c), Some((143, "Error".into())), "{c:?}");
    assert!(count_lines(&out.join("always"), "hook") >= 2);
    assert_eq!(phase(&p), "Running");

    let log = std::fs::read_to_string(&node.log_path).unwrap();
    for name in ["always", "never"] {
        let want = format!(
            "pod default/{name}-{} spec.containers{{main}}:",
            node.node_name
        );
        assert!(
            log.lines()
                .any(|l| l.contains(&want) && l.contains("Warning FailedPostStartHook")),
            "no postStart failure logged for {name}:\n{}",
            node.log_tail(40)
        );
    }
}
