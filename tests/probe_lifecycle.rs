//! Lifecycle hooks against real processes: httpGet hooks hitting busybox
//! httpd (CGI records each call), the HTTPS-to-HTTP fallback, exec hooks
//! run by a host runner, sleep, and preStop bounded by the grace period.
//! Ports 18310-18312 on 127.0.0.1.

mod probe_support;

use picolet::api::core::{Container, Pod};
use picolet::probe::lifecycle::{self, PostStartFailure, PreStopOutcome};
use picolet::probe::Target;
use probe_support::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn pod(lifecycle: serde_json::Value) -> (Pod, Container) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "hook", "containerPort": 18310}], "lifecycle": lifecycle}]}
    }))
    .unwrap();
    let c = pod.spec.as_ref().unwrap().containers[0].clone();
    (pod, c)
}

fn post_start(l: serde_json::Value, ip: &str) -> Result<(), PostStartFailure> {
    let (pod, c) = pod(l);
    let t = Target {
        pod: &pod,
        container: &c,
        container_id: "c1",
        pod_ip: ip,
    };
    picolet::rt::block_on(lifecycle::run_post_start(&HostRunner, &t))
}

fn pre_stop(l: serde_json::Value, ip: &str, grace: i64) -> PreStopOutcome {
    let (pod, c) = pod(l);
    let t = Target {
        pod: &pod,
        container: &c,
        container_id: "c1",
        pod_ip: ip,
    };
    picolet::rt::block_on(lifecycle::run_pre_stop(&HostRunner, &t, grace))
}

/// A site whose CGI appends each call (path, user agent) to `calls.log`.
fn site(name: &str) -> TempDir {
    let d = TempDir::new(name);
    let log = d.path("calls.log");
    d.write(
        "cgi-bin/hook",
        &format!(
            "#!/bin/sh\necho \"$REQUEST_URI $HTTP_USER_AGENT\" >> {}\nprintf 'Content-Type: text/plain\\n\\nok\\n'\n",
            log.display()
        ),
        true,
    );
    d.write(
        "cgi-bin/broken",
        &format!(
            "#!/bin/sh\necho \"$REQUEST_URI\" >> {}\nprintf 'Status: 500 Internal Server Error\\n\\n'\n",
            log.display()
        ),
        true,
    );
    d
}

fn calls(d: &TempDir) -> Vec<String> {
    std::fs::read_to_string(d.path("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn http_hooks_reach_the_pod_and_any_status_is_fine() {
    let d = site("hook-http");
    let _httpd = httpd(&d.0, "127.0.0.1:18310", None);
    post_start(
        json!({"postStart": {"httpGet": {"path": "/cgi-bin/hook?stage=start", "port": "hook"}}}),
        "127.0.0.1",
    )
    .unwrap();
    // A 500 is not a failure: only transport errors are (upstream).
    let o = pre_stop(
        json!({"preStop": {"httpGet": {"path": "/cgi-bin/broken", "port": 18310}}}),
        "127.0.0.1",
        30,
    );
    assert_eq!(
        o,
        PreStopOutcome {
            grace_left: 30,
            failure: None,
            timed_out: false
        }
    );
    assert_eq!(
        calls(&d),
        [
            "/cgi-bin/hook?stage=start kube-lifecycle/1.35",
            "/cgi-bin/broken"
        ]
    );
    // HTTPS against a plain HTTP server: retried over HTTP.
    post_start(
        json!({"postStart": {"httpGet": {"path": "/cgi-bin/hook?tls", "port": 18310, "scheme": "HTTPS"}}}),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(
        calls(&d).last().unwrap(),
        "/cgi-bin/hook?tls kube-lifecycle/1.35"
    );
    // Nobody listening: the hook fails with upstream's message.
    let e = post_start(
        json!({"postStart": {"httpGet": {"path": "/x", "port": 18311}}}),
        "127.0.0.1",
    )
    .unwrap_err();
    assert!(
        e.message.starts_with("HTTP lifecycle hook (/x) for Container \"c\" in Pod \"web_default(u1)\" failed - error: Get \"http://127.0.0.1:18311/x\": "),
        "{}",
        e.message
    );
    assert!(e
        .error_string()
        .starts_with("PostStartHookError: HTTP lifecycle hook"));
}

#[test]
fn exec_hooks_and_sleep() {
    let d = TempDir::new("hook-exec");
    let marker = d.path("ran");
    post_start(
        json!({"postStart": {"exec": {"command": ["sh", "-c", format!("echo started > {}", marker.display())]}}}),
        "",
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "started\n");
    let e = post_start(
        json!({"postStart": {"exec": {"command": ["sh", "-c", "echo out; echo oops >&2; exit 7"]}}}),
        "",
    )
    .unwrap_err();
    assert_eq!(
        e.message,
        "Exec lifecycle hook ([sh -c echo out; echo oops >&2; exit 7]) for Container \"c\" in Pod \"web_default(u1)\" failed - error: command 'sh -c echo out; echo oops >&2; exit 7' exited with 7: oops\n, message: \"out\\noops\\n\""
    );
    let start = Instant::now();
    post_start(json!({"postStart": {"sleep": {"seconds": 1}}}), "").unwrap();
    assert!(start.elapsed() >= Duration::from_secs(1));
}

#[test]
fn pre_stop_is_bounded_by_the_grace_period() {
    // An exec hook that outlives the grace period is killed at its end.
    let start = Instant::now();
    let o = pre_stop(
        json!({"preStop": {"exec": {"command": ["sleep", "30"]}}}),
        "",
        2,
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(o.grace_left, 2, "never below the minimum");
    assert!(o.timed_out || o.failure.is_some(), "{o:?}");
    // A quick hook leaves most of the grace period.
    let o = pre_stop(
        json!({"preStop": {"exec": {"command": ["sleep", "1"]}}}),
        "",
        10,
    );
    assert_eq!(
        o,
        PreStopOutcome {
            grace_left: 9,
            failure: None,
            timed_out: false
        }
    );
    let o = pre_stop(
        json!({"preStop": {"exec": {"command": ["sh", "-c", "exit 1"]}}}),
        "",
        10,
    );
    assert!(o.failure.unwrap().contains("exited with 1"));
}
