//! The multiplexed HTTP/2 connection against the real kube-apiserver, over
//! TLS with ALPN h2 and the admin client certificate: many concurrent
//! requests, a watch fed by POSTs on the same connection, a list larger
//! than the flow-control windows, a cancelled watch, a large request body.
//!
//! The API server: `PICOLET_TEST_APISERVER_URL` with `..._CA`, `..._CERT`
//! and `..._KEY` (PEM files) when the environment provides one; otherwise
//! the test starts its own control plane from the shared kit
//! (`PICOLET_K8S_KIT`, else `../shared/k8s` beside the checkout, else
//! /work/shared/k8s) in /var/tmp/picolet-k8s-h2 on ports 16443/12379/12380,
//! and stops it at the end if it started it. It is skipped only when
//! `PICOLET_SKIP_APISERVER_TESTS=1` says so.

use picolet::http::h2::conn::{connect_tls, Body, ConnOptions, Connection, Error, Request};
use picolet::http::{client_config, TlsOptions, Url};
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts live heap bytes, to measure what an idle watch stream holds.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

const K8S_DIR: &str = "/var/tmp/picolet-k8s-h2";
const PORT: &str = "16443";

struct Server {
    url: Url,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The control plane we started (stopped at the end).
    started: Option<PathBuf>,
}

fn kit() -> PathBuf {
    if let Some(k) = std::env::var_os("PICOLET_K8S_KIT") {
        return k.into();
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/k8s");
    if beside.join("up.sh").exists() {
        return beside;
    }
    PathBuf::from("/work/shared/k8s")
}

fn kit_cmd(script: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(script)
        .env("K8S_DIR", K8S_DIR)
        .env("APISERVER_PORT", PORT)
        .env("ETCD_PORT", "12379")
        .env("ETCD_PEER_PORT", "12380")
        .env("COMPONENTS", "apiserver");
    c
}

fn server() -> Option<Server> {
    if let Ok(u) = std::env::var("PICOLET_TEST_APISERVER_URL") {
        let var = |n: &str| {
            PathBuf::from(
                std::env::var(n)
                    .unwrap_or_else(|_| panic!("{n} must be set with PICOLET_TEST_APISERVER_URL")),
            )
        };
        return Some(Server {
            url: Url::parse(&u).expect("PICOLET_TEST_APISERVER_URL"),
            ca: var("PICOLET_TEST_APISERVER_CA"),
            cert: var("PICOLET_TEST_APISERVER_CERT"),
            key: var("PICOLET_TEST_APISERVER_KEY"),
            started: None,
        });
    }
    if std::env::var("PICOLET_SKIP_APISERVER_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: PICOLET_SKIP_APISERVER_TESTS=1");
        return None;
    }
    let kit = kit();
    let up = kit.join("up.sh");
    assert!(
        up.exists(),
        "no API server: set PICOLET_TEST_APISERVER_URL (and _CA, _CERT, _KEY), or PICOLET_K8S_KIT to the k8s kit, or PICOLET_SKIP_APISERVER_TESTS=1; {} not found",
        up.display()
    );
    // Already up (a developer's run): use it and leave it running.
    let was_up = std::net::TcpStream::connect(format!("127.0.0.1:{PORT}")).is_ok();
    let out = kit_cmd(&up).output().expect("run up.sh");
    assert!(
        out.status.success(),
        "up.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pki = Path::new(K8S_DIR).join("pki");
    Some(Server {
        url: Url::parse(&format!("https://127.0.0.1:{PORT}")).unwrap(),
        ca: pki.join("ca.crt"),
        cert: pki.join("admin.crt"),
        key: pki.join("admin.key"),
        started: (!was_up).then(|| kit.join("down.sh")),
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(down) = &self.started {
            let _ = kit_cmd(down).status();
        }
    }
}

fn tls(s: &Server) -> TlsOptions {
    // In-memory PEM, as a kubeconfig's *-data fields give it.
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    TlsOptions {
        ca_pem: vec![read(&s.ca)],
        client_cert_pem: Some((read(&s.cert), read(&s.key))),
        no_system_roots: true,
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ..Default::default()
    }
}

struct Api {
    c: Connection,
    authority: String,
}

impl Api {
    fn req(&self, method: &str, path: &str, body: Option<&Value>) -> Request {
        let mut headers = vec![("accept".to_string(), "application/json".to_string())];
        if body.is_some() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        Request {
            method: method.into(),
            scheme: "https".into(),
            authority: self.authority.clone(),
            path: path.into(),
            headers,
            body: body
                .map(|b| serde_json::to_vec(b).unwrap())
                .unwrap_or_default(),
        }
    }

    /// A request whose JSON response must have `status`.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let mut r = self
            .c
            .send(self.req(method, path, body))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let b = r.body.read_to_end(64 << 20).await.unwrap();
        assert_eq!(
            r.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&b)
        );
        serde_json::from_slice(&b).unwrap()
    }
}

/// Reads watch events (one JSON object a line) until `n` arrived.
async fn events(body: &mut Body, buf: &mut Vec<u8>, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
        if out.len() >= n {
            break;
        }
        match body.chunk().await.unwrap() {
            Some(c) => buf.extend_from_slice(&c),
            None => panic!(
                "watch ended after {} events; pending {:?}",
                out.len(),
                String::from_utf8_lossy(buf)
            ),
        }
    }
    out
}

fn configmap(name: &str, size: usize, label: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"h2-test": label}},
        "data": {"blob": "x".repeat(size)},
    })
}

#[test]
fn multiplexed_connection_against_the_apiserver() {
    let Some(s) = server() else { return };
    let o = tls(&s);
    let cfg = Arc::new(client_config(&o).unwrap());
    let host = s.url.host.clone();
    let port = s.url.port;
    let name = o.server_name(&host).unwrap();
    picolet::rt::block_on(futures_lite::future::or(
        async move {
            // ALPN h2 negotiated on a connection we dial ourselves.
            let tcp = smol::net::TcpStream::connect((host.as_str(), port))
                .await
                .unwrap();
            let stream = futures_rustls::TlsConnector::from(cfg.clone())
                .connect(name.clone(), tcp)
                .await
                .unwrap();
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let c = Connection::handshake(stream, ConnOptions::default())
                .await
                .unwrap();
            let api = Api {
                c,
                authority: format!("{host}:{port}"),
            };
            scenarios(&api).await;
            // connect_tls: the same, in one call; and what an idle
            // connection holds, TLS included.
            let before = LIVE.load(Ordering::Relaxed);
            let c2 = connect_tls(
                &host,
                port,
                cfg.clone(),
                name.clone(),
                Duration::from_secs(10),
                ConnOptions::default(),
            )
            .await
            .unwrap();
            let api2 = Api {
                c: c2,
                authority: api.authority.clone(),
            };
            let v = api2.call("GET", "/version", None, 200).await;
            assert!(v["gitVersion"].is_string());
            drop(v);
            async_io::Timer::after(Duration::from_millis(200)).await;
            let idle = LIVE.load(Ordering::Relaxed) - before;
            eprintln!("idle connection after one GET: {idle} bytes of heap (TLS included)");
            // Offering only http/1.1 is refused before anything is sent.
            let h1 = Arc::new(
                client_config(&TlsOptions {
                    alpn: vec![b"http/1.1".to_vec()],
                    ..o.clone()
                })
                .unwrap(),
            );
            let e = connect_tls(
                &host,
                port,
                h1,
                name,
                Duration::from_secs(10),
                ConnOptions::default(),
            )
            .await
            .unwrap_err();
            assert!(matches!(e, Error::Protocol(_)), "{e}");
            api.c.close();
            assert!(api.c.is_closed());
            assert!(matches!(
                api.c.send(api.req("GET", "/version", None)).await,
                Err(Error::Unprocessed(_))
            ));
        },
        async {
            async_io::Timer::after(Duration::from_secs(180)).await;
            panic!("timed out");
        },
    ));
    drop(s);
}

async fn scenarios(api: &Api) {
    let c = &api.c;
    let ns = format!(
        "h2-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    api.call(
        "POST",
        "/api/v1/namespaces",
        Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
        201,
    )
    .await;

    // 100 concurrent GETs on the one connection.
    let sent0 = c.bytes_sent();
    let recv0 = c.bytes_received();
    let start = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/version".to_string()
            } else {
                format!("/api/v1/namespaces/{ns}")
            };
            let (c, req) = (c.clone(), api.req("GET", &path, None));
            picolet::rt::spawn(async move {
                let mut r = c.send(req).await?;
                let b = r.body.read_to_end(1 << 20).await?;
                Ok::<_, Error>((r.status, b))
            })
        })
        .collect();
    let mut peak = 0;
    let mut results = Vec::new();
    for t in tasks {
        peak = peak.max(c.open_streams());
        results.push(t.await.unwrap());
    }
    for (i, (status, b)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "{}", String::from_utf8_lossy(b));
        let v: Value = serde_json::from_slice(b).unwrap();
        if i % 2 == 0 {
            assert!(v["gitVersion"].is_string());
        } else {
            assert_eq!(v["metadata"]["name"], ns.as_str());
        }
    }
    let (gets_sent, gets_recv) = (c.bytes_sent() - sent0, c.bytes_received() - recv0);
    eprintln!(
        "100 concurrent GETs: {:?}, {gets_sent} bytes sent, {gets_recv} received, up to {peak} streams open at once",
        start.elapsed()
    );
    assert!(peak > 1, "the GETs ran one at a time");
    // HPACK: the 100 request header blocks as sent, and as literals
    // without indexing (the one-request client's encoding) would be.
    let (indexed, literal) = header_block_sizes(api, &ns);
    eprintln!("100 GET header blocks: {indexed} bytes with HPACK indexing + Huffman, {literal} as plain literals");
    assert!(gets_sent < 100 * 60, "{gets_sent} bytes for 100 GETs");
    assert_eq!(c.open_streams(), 0);

    // A watch fed by POSTs on the same connection.
    let watch_path = format!(
        "/api/v1/namespaces/{ns}/configmaps?watch=1&allowWatchBookmarks=true&timeoutSeconds=30"
    );
    let mut w = c.send(api.req("GET", &watch_path, None)).await.unwrap();
    assert_eq!(w.status, 200);
    let (tx, rx) = smol::channel::unbounded::<Value>();
    let watcher = picolet::rt::spawn(async move {
        let mut buf = Vec::new();
        loop {
            for e in events(&mut w.body, &mut buf, 1).await {
                if tx.send(e).await.is_err() {
                    // Done: dropping the body cancels the watch.
                    return;
                }
            }
        }
    });
    for i in 0..5 {
        api.call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some(&configmap(&format!("small-{i}"), 10, "small")),
            201,
        )
        .await;
    }
    let mut added = Vec::new();
    while added.len() < 5 {
        let e = rx.recv().await.unwrap();
        // The controller-manager (when it runs) adds kube-root-ca.crt to
        // every new namespace: only the test's own objects count.
        let ours = e["object"]["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("small-"));
        if e["type"] == "ADDED" && ours {
            added.push(
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    assert_eq!(
        added,
        (0..5).map(|i| format!("small-{i}")).collect::<Vec<_>>()
    );

    // ~300 configmaps of 8 KiB, 8 POSTs at a time, while the watch streams
    // them. (Hundreds at once make the API server's event dispatch miss its
    // budget and close the watch as "unresponsive", whoever the client.)
    let recv1 = c.bytes_received();
    for batch in 0..300 / 8 + 1 {
        let creates: Vec<_> = (batch * 8..(batch * 8 + 8).min(300))
            .map(|i| {
                let cm = configmap(&format!("big-{i:03}"), 8192, "big");
                let req = api.req(
                    "POST",
                    &format!("/api/v1/namespaces/{ns}/configmaps"),
                    Some(&cm),
                );
                let c = c.clone();
                picolet::rt::spawn(async move {
                    let mut r = c.send(req).await?;
                    let b = r.body.read_to_end(1 << 20).await?;
                    Ok::<_, Error>((r.status, b))
                })
            })
            .collect();
        for t in creates {
            let (status, b) = t.await.unwrap();
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&b));
        }
    }
    let mut seen = 0;
    while seen < 300 {
        let e = rx.recv().await.unwrap();
        if e["type"] == "ADDED" {
            seen += 1;
        }
    }
    // The list: several MiB, more than the connection and stream windows.
    let mut r = c
        .send(api.req(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps?labelSelector=h2-test%3Dbig"),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let list = r.body.read_to_end(64 << 20).await.unwrap();
    assert!(list.len() > 2 * 1024 * 1024, "{}", list.len());
    let v: Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 300);
    eprintln!(
        "list of 300 configmaps: {} bytes of JSON; {} bytes received meanwhile (creates, watch events, list)",
        list.len(),
        c.bytes_received() - recv1
    );
    assert!(c.bytes_received() - recv1 > 2 * list.len() as u64);

    // Cancelling the watch: the body dropped, the stream gone.
    assert_eq!(c.open_streams(), 1);
    drop(rx);
    api.call(
        "POST",
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        Some(&configmap("wake-the-watch", 1, "small")),
        201,
    )
    .await;
    watcher.await;
    assert_eq!(c.open_streams(), 0);

    // A POST body larger than 64 KiB (the default windows): 200 KiB.
    let sent2 = c.bytes_sent();
    let big = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some(&configmap("large-body", 200 * 1024, "large")),
            201,
        )
        .await;
    assert_eq!(big["data"]["blob"].as_str().unwrap().len(), 200 * 1024);
    assert!(c.bytes_sent() - sent2 > 200 * 1024);
    let back = api
        .call(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps/large-body"),
            None,
            200,
        )
        .await;
    assert_eq!(back["data"]["blob"].as_str().unwrap().len(), 200 * 1024);

    // What three idle watches hold on our side.
    let before = LIVE.load(Ordering::Relaxed);
    let mut idle = Vec::new();
    for i in 0..3 {
        let p = format!("/api/v1/namespaces/{ns}/configmaps?watch=1&labelSelector=h2-test%3Dnone-{i}&timeoutSeconds=60");
        let r = c.send(api.req("GET", &p, None)).await.unwrap();
        assert_eq!(r.status, 200);
        idle.push(r);
    }
    async_io::Timer::after(Duration::from_millis(300)).await;
    let per_watch = (LIVE.load(Ordering::Relaxed) - before) / 3;
    eprintln!("idle watch: {per_watch} bytes of heap each (stream state and response headers)");
    assert!(per_watch < 4096, "{per_watch} bytes per idle watch");
    assert_eq!(c.open_streams(), 3);
    drop(idle);
    async_io::Timer::after(Duration::from_millis(50)).await;
    assert_eq!(c.open_streams(), 0);

    // Clean up: the configmaps, then the namespace.
    api.call(
        "DELETE",
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        None,
        200,
    )
    .await;
    api.call("DELETE", &format!("/api/v1/namespaces/{ns}"), None, 200)
        .await;
    assert!(!c.is_closed());
    assert!(
        c.bytes_sent() > 2_500_000 && c.bytes_received() > 5_000_000,
        "{} {}",
        c.bytes_sent(),
        c.bytes_received()
    );
}

/// The header blocks of the 100 GETs above: with our encoder (as sent) and
/// as literals without indexing.
fn header_block_sizes(api: &Api, ns: &str) -> (usize, usize) {
    use picolet::http::h2::hpack::{encode_literal, Encoder};
    let mut e = Encoder::default();
    let (mut indexed, mut literal) = (0, 0);
    let ua = ConnOptions::default().user_agent;
    for i in 0..100 {
        let path = if i % 2 == 0 {
            "/version".to_string()
        } else {
            format!("/api/v1/namespaces/{ns}")
        };
        let fields = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", api.authority.as_str()),
            (":path", path.as_str()),
            ("accept", "application/json"),
            ("user-agent", ua.as_str()),
        ];
        let mut b = Vec::new();
        e.encode(fields, &mut b);
        indexed += b.len();
        let mut b = Vec::new();
        for (k, v) in fields {
            encode_literal(&mut b, k, v);
        }
        literal += b.len();
    }
    (indexed, literal)
}
