//! The local HTTP API on real sockets: curl for the endpoints, keep-alive
//! and methods; raw TCP for a slow client, oversized heads and bodies.
//! Ports 18320-18329 on 127.0.0.1.

use picolet::api::core::Pod;
use picolet::server::{self, Api, Host, Limits};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

struct TestHost {
    healthy: Cell<bool>,
}

impl Host for TestHost {
    fn sync_loop_health(&self) -> Result<(), String> {
        if self.healthy.get() {
            Ok(())
        } else {
            Err("sync loop stalled".into())
        }
    }
    fn pods(&self) -> Vec<Pod> {
        vec![serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-node", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5"}
        }))
        .unwrap()]
    }
    async fn running_pods(&self) -> anyhow::Result<Vec<Pod>> {
        use picolet::runtime::{keys, Container, ContainerMetadata, ContainerState};
        let c = Container {
            id: "c1".into(),
            metadata: ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            },
            image: "busybox:1.36".into(),
            state: ContainerState::Running,
            labels: [
                (keys::POD_UID.to_string(), "u1".to_string()),
                (keys::POD_NAME.to_string(), "web-node".to_string()),
                (keys::POD_NAMESPACE.to_string(), "default".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        Ok(server::running_pods(&[], &[c]))
    }
}

/// Runs the servers on a thread of their own (the executor is per thread);
/// the test talks to them with curl and raw sockets. `f` gets the
/// read-only and healthz addresses.
fn with_servers(
    ro_port: u16,
    hz_port: u16,
    limits: Limits,
    f: impl FnOnce(SocketAddr, SocketAddr),
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
    let t = std::thread::spawn(move || {
        picolet::rt::block_on(async move {
            let host = Rc::new(TestHost {
                healthy: Cell::new(true),
            });
            let ro = server::listen(
                SocketAddr::from(([127, 0, 0, 1], ro_port)),
                Api::ReadOnly,
                host.clone(),
                limits,
            )
            .expect("listen on the read-only port");
            let hz = server::listen(
                SocketAddr::from(([127, 0, 0, 1], hz_port)),
                Api::Healthz,
                host.clone(),
                limits,
            )
            .expect("listen on the healthz port");
            tx.send((ro.local_addr, hz.local_addr)).unwrap();
            // Serve until the test is done.
            let _ = done_rx.recv().await;
        })
    });
    let (ro, hz) = rx.recv().unwrap();
    f(ro, hz);
    drop(done_tx);
    t.join().unwrap();
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "5", "-D", "/dev/stderr"])
        .args(args)
        .output()
        .expect("run curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn endpoints_answer_as_upstream() {
    with_servers(18320, 18321, Limits::default(), |ro, hz| {
        let (body, head) = curl(&[&format!("http://{hz}/healthz")]);
        assert_eq!(body, "ok");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; charset=utf-8"),
            "{head}"
        );
        let (body, _) = curl(&[&format!("http://{hz}/pods")]);
        assert_eq!(
            body, "404 page not found\n",
            "the healthz port serves only /healthz"
        );

        let (body, _) = curl(&[&format!("http://{ro}/healthz?verbose")]);
        assert_eq!(body, "[+]ping ok\n[+]syncloop ok\nhealthz check passed\n");

        let (body, head) = curl(&[&format!("http://{ro}/pods")]);
        assert!(head.contains("Content-Type: application/json"), "{head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "PodList");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["items"][0]["metadata"]["name"], "web-node");
        assert_eq!(v["items"][0]["status"]["podIP"], "10.0.0.5");

        for path in ["/spec", "/spec/"] {
            let (body, _) = curl(&[&format!("http://{ro}{path}")]);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["num_cores"].as_u64().unwrap() >= 1, "{body}");
            assert!(v["memory_capacity"].as_u64().unwrap() > 0, "{body}");
        }

        let (body, _) = curl(&[&format!("http://{ro}/runningpods/")]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "PodList");
        assert_eq!(
            v["items"][0]["spec"]["containers"],
            serde_json::json!([{"name": "c", "image": "busybox:1.36"}])
        );

        let (body, head) = curl(&[&format!("http://{ro}/nope")]);
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        assert_eq!(body, "404 page not found\n");
        let (_, head) = curl(&["-X", "POST", "-d", "x=1", &format!("http://{ro}/pods")]);
        assert!(head.starts_with("HTTP/1.1 405"), "{head}");
        assert!(head.contains("Allow: GET, HEAD"), "{head}");
        let (body, head) = curl(&["-I", &format!("http://{ro}/healthz")]);
        assert!(
            head.starts_with("HTTP/1.1 200") && head.contains("Content-Length: 2"),
            "{head}"
        );
        assert!(body.starts_with("HTTP/1.1 200"), "curl -I prints the head");
    });
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    with_servers(18322, 18323, Limits::default(), |ro, _| {
        let out = Command::new("curl")
            .args(["-s", "-v", "--max-time", "5"])
            .arg(format!("http://{ro}/healthz"))
            .arg(format!("http://{ro}/pods"))
            .arg(format!("http://{ro}/healthz"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Re-using existing connection"), "{err}");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.starts_with("ok{") && body.ends_with("ok"), "{body}");
    });
}

#[test]
fn slow_and_oversized_clients_are_cut_off() {
    let limits = Limits {
        head_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        max_head_bytes: 4096,
        max_body_bytes: 1024,
        ..Limits::default()
    };
    with_servers(18324, 18325, limits, |ro, _| {
        // Slow loris: one header byte at a time; the head deadline ends it.
        let mut s = TcpStream::connect(ro).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = Instant::now();
        let mut closed_after = None;
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if s.write_all(&[*b]).is_err() {
                closed_after = Some(start.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        let t = closed_after.unwrap_or(start.elapsed());
        assert!(resp.starts_with("HTTP/1.1 408"), "{resp:?}");
        assert!(t < Duration::from_secs(5), "cut off after {t:?}");
        // Meanwhile others are served.
        let (body, _) = curl(&[&format!("http://{ro}/healthz")]);
        assert_eq!(body, "ok");

        // An idle connection is closed after the first request's deadline.
        let mut s = TcpStream::connect(ro).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
        assert!(start.elapsed() < Duration::from_secs(3));

        // Oversized head and body.
        let mut s = TcpStream::connect(ro).unwrap();
        let big = format!(
            "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(8000)
        );
        let _ = s.write_all(big.as_bytes());
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 431"), "{resp:?}");
        let mut s = TcpStream::connect(ro).unwrap();
        s.write_all(b"POST /pods HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp:?}");
        // Garbage.
        let mut s = TcpStream::connect(ro).unwrap();
        s.write_all(b"\x16\x03\x01 not http\r\n\r\n").unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp:?}");
    });
}

#[test]
fn unhealthy_sync_loop_fails_healthz() {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        picolet::rt::block_on(async move {
            let host = Rc::new(TestHost {
                healthy: Cell::new(false),
            });
            let hz = server::listen(
                SocketAddr::from(([127, 0, 0, 1], 18326)),
                Api::Healthz,
                host,
                Limits::default(),
            )
            .unwrap();
            tx.send(hz.local_addr).unwrap();
            async_io::Timer::after(Duration::from_secs(3)).await;
        })
    });
    let hz = rx.recv().unwrap();
    let (body, head) = curl(&[&format!("http://{hz}/healthz")]);
    assert!(head.starts_with("HTTP/1.1 500"), "{head}");
    assert_eq!(
        body,
        "[-]syncloop failed: reason withheld\nhealthz check failed\n"
    );
    t.join().unwrap();
}
