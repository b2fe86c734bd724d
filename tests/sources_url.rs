//! The `staticPodURL` source against real HTTP servers: busybox httpd
//! serving manifests (and a CGI that needs the configured headers), and a
//! small in-test server that answers 500, garbage, an empty body, or never.
//! Ports 18330-18332 on 127.0.0.1.

mod probe_support;

use futures_lite::future;
use picolet::config::KubeletConfig;
use picolet::sources::{self, Op, PodUpdate, Sources};
use probe_support::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODE: &str = "edge-1";
const PERIOD: Duration = Duration::from_millis(300);

fn start(url: &str, headers: BTreeMap<String, Vec<String>>) -> Sources {
    let cfg = KubeletConfig {
        static_pod_url: Some(url.to_string()),
        static_pod_url_header: headers,
        http_check_frequency: PERIOD,
        ..Default::default()
    };
    sources::start(&cfg, NODE, false, None)
}

async fn next(s: &Sources, within: Duration) -> PodUpdate {
    let got = future::or(async { s.updates.recv().await.ok() }, async {
        async_io::Timer::after(within).await;
        None
    })
    .await;
    got.unwrap_or_else(|| panic!("no pod update within {within:?}"))
}

async fn quiet(s: &Sources, for_: Duration) {
    let got = future::or(async { s.updates.recv().await.ok() }, async {
        async_io::Timer::after(for_).await;
        None
    })
    .await;
    if let Some(u) = got {
        panic!("unexpected update {:?} {:?}", u.op, names(&u));
    }
}

fn names(u: &PodUpdate) -> Vec<String> {
    u.pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn pod_yaml(name: &str, image: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: {image}\n")
}

#[test]
fn pods_and_pod_lists_from_busybox_httpd() {
    let d = TempDir::new("url-httpd");
    d.write("pod.yaml", &pod_yaml("web", "busybox:1.36"), false);
    d.write(
        "list.json",
        r#"{"apiVersion":"v1","kind":"PodList","metadata":{},"items":[
            {"metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"busybox"}]}},
            {"metadata":{"name":"b","namespace":"kube-system"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}]}"#,
        false,
    );
    // Answers only with the configured header.
    d.write(
        "cgi-bin/secret",
        "#!/bin/sh\nif [ \"$HTTP_X_TOKEN\" != s3cret ]; then printf 'Status: 403 Forbidden\\n\\n'; exit 0; fi\nprintf 'Content-Type: application/yaml\\n\\napiVersion: v1\\nkind: Pod\\nmetadata: {name: guarded}\\nspec: {containers: [{name: c, image: busybox}]}\\n'\n",
        true,
    );
    let _httpd = httpd(&d.0, "127.0.0.1:18330", None);
    picolet::rt::block_on(async {
        let s = start("http://127.0.0.1:18330/pod.yaml", BTreeMap::new());
        let u = next(&s, Duration::from_secs(5)).await;
        assert_eq!((u.op, u.source), (Op::Add, sources::HTTP_SOURCE));
        assert_eq!(names(&u), ["web-edge-1"]);
        let ann = u.pods[0].metadata.annotations.clone().unwrap();
        assert_eq!(ann[sources::CONFIG_SOURCE], "http");
        assert!(s.seen_all());
        // Unchanged: silent. Edited: the pod is replaced (new UID).
        quiet(&s, PERIOD * 3).await;
        let first_uid = u.pods[0].metadata.uid.clone();
        d.write("pod.yaml", &pod_yaml("web", "busybox:1.37"), false);
        let u = next(&s, Duration::from_secs(5)).await;
        assert_eq!(u.op, Op::Remove);
        assert_eq!(u.pods[0].metadata.uid, first_uid);
        let u = next(&s, Duration::from_secs(5)).await;
        assert_eq!(u.op, Op::Add);
        assert_ne!(u.pods[0].metadata.uid, first_uid);
        drop(s);

        let s = start("http://127.0.0.1:18330/list.json", BTreeMap::new());
        let u = next(&s, Duration::from_secs(5)).await;
        assert_eq!(u.op, Op::Add);
        assert_eq!(names(&u), ["a-edge-1", "b-edge-1"]);
        assert_eq!(u.pods[1].metadata.namespace.as_deref(), Some("kube-system"));
        drop(s);

        // Without the header: 403, reported, no pods; with it: the pod.
        let s = start("http://127.0.0.1:18330/cgi-bin/secret", BTreeMap::new());
        async_io::Timer::after(PERIOD * 2).await;
        let err = s.url_report.as_ref().unwrap().borrow().last_error.clone();
        assert!(err.unwrap().contains("403"));
        assert!(!s.seen_all());
        drop(s);
        let mut h = BTreeMap::new();
        h.insert("X-Token".to_string(), vec!["s3cret".to_string()]);
        let s = start("http://127.0.0.1:18330/cgi-bin/secret", h);
        let u = next(&s, Duration::from_secs(5)).await;
        assert_eq!(names(&u), ["guarded-edge-1"]);
    });
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Good,
    Error500,
    Garbage,
    Empty,
    Stall,
}

/// A one-thread HTTP server whose answer the test switches.
fn scripted_server(port: u16, mode: Arc<Mutex<Mode>>) {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mode = *mode.lock().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let body = match mode {
                    Mode::Good => pod_yaml("kept", "busybox"),
                    Mode::Garbage => "\u{1}\u{2}%%% definitely: [not a pod".into(),
                    _ => String::new(),
                };
                let status = if mode == Mode::Error500 {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                if mode == Mode::Stall {
                    std::thread::sleep(Duration::from_secs(15));
                    return;
                }
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
}

#[test]
fn errors_keep_the_last_good_state_and_empty_means_no_pods() {
    let mode = Arc::new(Mutex::new(Mode::Good));
    scripted_server(18331, mode.clone());
    let set = |m| *mode.lock().unwrap() = m;
    picolet::rt::block_on(async {
        let s = start("http://127.0.0.1:18331/pods", BTreeMap::new());
        let report = s.url_report.clone().unwrap();
        let u = next(&s, Duration::from_secs(5)).await;
        assert_eq!(names(&u), ["kept-edge-1"]);

        for (m, want) in [
            (Mode::Error500, "500 Internal Server Error"),
            (Mode::Garbage, "http://127.0.0.1:18331/pods: "),
        ] {
            set(m);
            quiet(&s, PERIOD * 4).await;
            let r = report.borrow().clone();
            assert!(
                r.last_error.as_deref().unwrap_or("").contains(want),
                "{m:?}: {r:?}"
            );
            assert!(r.failures >= 1);
            // The pod stays.
            assert_eq!(s.config.borrow().pods().len(), 1, "{m:?}");
        }
        // Back to good: reported ok; the same pod, so no update.
        set(Mode::Good);
        quiet(&s, PERIOD * 4).await;
        assert_eq!(report.borrow().last_error, None);

        // The server stops answering: reported after the 10 s timeout.
        set(Mode::Stall);
        let start = Instant::now();
        while report.borrow().last_error.is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(14),
                "no timeout reported"
            );
            async_io::Timer::after(Duration::from_millis(200)).await;
        }
        let err = report.borrow().last_error.clone().unwrap();
        assert!(
            err.contains("timed out") || err.contains("deadline exceeded"),
            "{err}"
        );
        assert!(
            start.elapsed() >= Duration::from_secs(9),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(s.config.borrow().pods().len(), 1);

        // An empty 200 body: no pods (and reported).
        set(Mode::Empty);
        let u = next(&s, Duration::from_secs(15)).await;
        assert_eq!(
            (u.op, names(&u)),
            (Op::Remove, vec!["kept-edge-1".to_string()])
        );
        assert!(report
            .borrow()
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("zero-length"));
    });
}
