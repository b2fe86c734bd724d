//! Probe handlers against real processes: busybox httpd (also inside a
//! network namespace, probed at its IP from the host), openssl s_server
//! for HTTPS, TCP listeners, grpcio's health service, and commands run by a
//! host runner. Ports 18300-18309 on 127.0.0.1.

mod probe_support;

use picolet::api::core::{Container, Pod, Probe};
use picolet::probe::handlers;
use picolet::probe::{Outcome, Output, Target};
use probe_support::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 18300}],
            "env": [{"name": "CODE", "value": "3"}]}]}
    }))
    .unwrap()
}

fn probe(v: serde_json::Value) -> Probe {
    serde_json::from_value(v).unwrap()
}

fn run(p: &Probe, pod_ip: &str) -> anyhow::Result<Output> {
    let pod = pod();
    let c: Container = pod.spec.as_ref().unwrap().containers[0].clone();
    let t = Target {
        pod: &pod,
        container: &c,
        container_id: "c1",
        pod_ip,
    };
    picolet::rt::block_on(handlers::run(&HostRunner, p, &t))
}

fn site(name: &str) -> TempDir {
    let d = TempDir::new(name);
    d.write("index.html", "hello from httpd\n", false);
    d.write("big.txt", &"x".repeat(20_000), false);
    d.write(
        "cgi-bin/headers",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"ua=$HTTP_USER_AGENT accept=$HTTP_ACCEPT custom=$HTTP_X_CUSTOM host=$HTTP_HOST\"\n",
        true,
    );
    d.write(
        "cgi-bin/fail",
        "#!/bin/sh\nprintf 'Status: 503 Service Unavailable\\nContent-Type: text/plain\\n\\nsecret body\\n'\n",
        true,
    );
    d.write(
        "cgi-bin/slow",
        "#!/bin/sh\nsleep 3\nprintf 'Content-Type: text/plain\\n\\nlate\\n'\n",
        true,
    );
    d
}

#[test]
fn http_get_success_failure_headers_and_timeout() {
    let d = site("http");
    let _httpd = httpd(&d.0, "127.0.0.1:18300", None);
    // Named port, default path.
    let o = run(
        &probe(json!({"httpGet": {"port": "http"}, "timeoutSeconds": 2})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(o.outcome, Outcome::Success, "{o:?}");
    assert_eq!(o.message, "hello from httpd\n");
    // The headers upstream sends, plus the probe's own (and a Host override).
    let o = run(
        &probe(json!({"httpGet": {"port": 18300, "path": "/cgi-bin/headers",
            "httpHeaders": [{"name": "X-Custom", "value": "yes"}, {"name": "Host", "value": "web.example"}]}})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(
        o.message.trim(),
        "ua=kube-probe/1.35 accept=*/* custom=yes host=web.example"
    );
    // 404 and 503 fail; the body stays out of the message.
    let o = run(
        &probe(json!({"httpGet": {"port": 18300, "path": "/missing"}})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(
        (o.outcome, o.message.as_str()),
        (Outcome::Failure, "HTTP probe failed with statuscode: 404")
    );
    let o = run(
        &probe(json!({"httpGet": {"port": 18300, "path": "/cgi-bin/fail"}})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(o.message, "HTTP probe failed with statuscode: 503");
    // Bodies are cut at 10 KiB, and that is no failure.
    let o = run(
        &probe(json!({"httpGet": {"port": 18300, "path": "/big.txt"}})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!((o.outcome, o.message.len()), (Outcome::Success, 10 * 1024));
    // A server slower than timeoutSeconds fails in about that time.
    let start = Instant::now();
    let o = run(
        &probe(json!({"httpGet": {"port": 18300, "path": "/cgi-bin/slow"}, "timeoutSeconds": 1})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
    assert!(
        o.message.contains("Client.Timeout exceeded"),
        "{}",
        o.message
    );
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    // Nobody listening.
    let o = run(&probe(json!({"httpGet": {"port": 18303}})), "127.0.0.1").unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
    assert!(
        o.message.starts_with("Get \"http://127.0.0.1:18303/\": "),
        "{}",
        o.message
    );
    assert!(o.message.contains("refused"), "{}", o.message);
    // A named port the container does not have is an error, not a failure.
    let e = run(&probe(json!({"httpGet": {"port": "metrics"}})), "127.0.0.1").unwrap_err();
    assert!(e.to_string().contains("port metrics not found"), "{e}");
}

#[test]
fn http_get_redirects_as_upstream() {
    let d = site("redirect");
    d.write(
        "cgi-bin/same",
        "#!/bin/sh\nprintf 'Status: 302 Found\\nLocation: /index.html\\n\\n'\n",
        true,
    );
    d.write(
        "cgi-bin/loop",
        "#!/bin/sh\nprintf 'Status: 301 Moved\\nLocation: /cgi-bin/loop\\n\\n'\n",
        true,
    );
    d.write(
        "cgi-bin/away",
        "#!/bin/sh\nprintf 'Status: 302 Found\\nLocation: http://127.0.0.2:18304/elsewhere\\nContent-Type: text/plain\\n\\ngone away\\n'\n",
        true,
    );
    let _httpd = httpd(&d.0, "127.0.0.1:18301", None);
    let p = |path: &str| probe(json!({"httpGet": {"port": 18301, "path": path}}));
    // Same host: followed.
    let o = run(&p("/cgi-bin/same"), "127.0.0.1").unwrap();
    assert_eq!(
        (o.outcome, o.message.as_str()),
        (Outcome::Success, "hello from httpd\n")
    );
    // Another host: not followed, success with a warning.
    let o = run(&p("/cgi-bin/away"), "127.0.0.1").unwrap();
    assert_eq!(o.outcome, Outcome::Warning);
    assert_eq!(
        o.message,
        "Probe terminated redirects, Response body: gone away\n"
    );
    // Endless: stops after 10.
    let o = run(&p("/cgi-bin/loop"), "127.0.0.1").unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
    assert!(
        o.message.ends_with("stopped after 10 redirects"),
        "{}",
        o.message
    );
}

#[test]
fn https_probe_skips_verification() {
    let d = TempDir::new("https");
    let _srv = https_server(&d, 18302);
    let o = run(
        &probe(json!({"httpGet": {"port": 18302, "scheme": "HTTPS"}, "timeoutSeconds": 5})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(o.outcome, Outcome::Success, "{o:?}");
    // s_server -www answers with its session report.
    assert!(
        o.message.contains("Ciphers supported"),
        "{}",
        &o.message[..o.message.len().min(200)]
    );
}

#[test]
fn tcp_socket_probe() {
    let l = std::net::TcpListener::bind("127.0.0.1:18305").unwrap();
    let o = run(&probe(json!({"tcpSocket": {"port": 18305}})), "127.0.0.1").unwrap();
    assert_eq!(o.outcome, Outcome::Success, "{o:?}");
    // host overrides the pod IP.
    let o = run(
        &probe(json!({"tcpSocket": {"port": 18305, "host": "127.0.0.1"}})),
        "10.255.255.1",
    )
    .unwrap();
    assert_eq!(o.outcome, Outcome::Success, "{o:?}");
    drop(l);
    let o = run(&probe(json!({"tcpSocket": {"port": 18305}})), "127.0.0.1").unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
    assert_eq!(
        o.message,
        "dial tcp 127.0.0.1:18305: connect: connection refused"
    );
}

#[test]
fn grpc_probe_against_grpcio_health_service() {
    let d = TempDir::new("grpc");
    let _srv = grpc_server(&d, 18306, "health");
    let g = |service: &str| {
        probe(json!({"grpc": {"port": 18306, "service": service}, "timeoutSeconds": 5}))
    };
    let o = run(&g(""), "127.0.0.1").unwrap();
    assert_eq!(
        (o.outcome, o.message.as_str()),
        (Outcome::Success, "service healthy")
    );
    let o = run(&g("down"), "127.0.0.1").unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
    assert_eq!(
        o.message,
        "service unhealthy (responded with \"NOT_SERVING\")"
    );
    let o = run(&g("nope"), "127.0.0.1").unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
    // grpcio sets the code only (grpc-go would print the same).
    assert_eq!(
        o.message,
        "error: health rpc probe failed: rpc error: code = NotFound desc = "
    );
    // Nothing listening.
    let o = run(&probe(json!({"grpc": {"port": 18303}})), "127.0.0.1").unwrap();
    assert!(
        o.message
            .starts_with("error: failed to connect service at \"127.0.0.1:18303\""),
        "{}",
        o.message
    );
}

#[test]
fn grpc_probe_without_health_service_and_stalled_server() {
    let d = TempDir::new("grpc-bare");
    let _srv = grpc_server(&d, 18307, "bare");
    let o = run(
        &probe(json!({"grpc": {"port": 18307}, "timeoutSeconds": 5})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
    assert!(
        o.message.starts_with("error: this server does not implement the grpc health protocol (grpc.health.v1.Health)"),
        "{}",
        o.message
    );
    // Accepts, never answers: the RPC times out.
    let _l = std::net::TcpListener::bind("127.0.0.1:18308").unwrap();
    let start = Instant::now();
    let o = run(
        &probe(json!({"grpc": {"port": 18308}, "timeoutSeconds": 1})),
        "127.0.0.1",
    )
    .unwrap();
    assert_eq!(o.message, "timeout: health rpc did not complete within 1s");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn exec_probe_exit_codes_output_and_timeout() {
    let o = run(
        &probe(json!({"exec": {"command": ["sh", "-c", "echo fine"]}})),
        "",
    )
    .unwrap();
    assert_eq!(
        (o.outcome, o.message.as_str()),
        (Outcome::Success, "fine\n")
    );
    // $(VAR) from the container's env; stderr is captured too.
    let o = run(
        &probe(json!({"exec": {"command": ["sh", "-c", "echo bad >&2; exit $(CODE)"]}})),
        "",
    )
    .unwrap();
    assert_eq!((o.outcome, o.message.as_str()), (Outcome::Failure, "bad\n"));
    let o = run(
        &probe(json!({"exec": {"command": ["sh", "-c", "yes | head -c 50000"]}})),
        "",
    )
    .unwrap();
    assert_eq!(o.message.len(), 10 * 1024);
    let start = Instant::now();
    let o = run(
        &probe(json!({"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 1})),
        "",
    )
    .unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
    assert_eq!(o.message, "command \"sleep 5\" timed out after 1s");
    assert!(start.elapsed() < Duration::from_secs(3));
    // A command that cannot start is an error (retried, then ignored).
    assert!(run(
        &probe(json!({"exec": {"command": ["/nonexistent/probe"]}})),
        ""
    )
    .is_err());
}

#[test]
fn network_probes_reach_the_pod_ip_in_its_namespace() {
    let ns = Netns::new("net", "172.30.183");
    let d = site("netns");
    let _httpd = httpd(&d.0, &format!("{}:18309", ns.ns_ip), Some(&ns.path));
    wait_listening(&format!("{}:18309", ns.ns_ip), "httpd in the netns");
    let o = run(&probe(json!({"httpGet": {"port": 18309}})), &ns.ns_ip).unwrap();
    assert_eq!(
        (o.outcome, o.message.as_str()),
        (Outcome::Success, "hello from httpd\n")
    );
    let o = run(&probe(json!({"tcpSocket": {"port": 18309}})), &ns.ns_ip).unwrap();
    assert_eq!(o.outcome, Outcome::Success);
    // The same port on the host's loopback is not the pod.
    let o = run(&probe(json!({"tcpSocket": {"port": 18309}})), "127.0.0.1").unwrap();
    assert_eq!(o.outcome, Outcome::Failure);
}
