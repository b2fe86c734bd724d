//! The kubelet API on the secure port, reached the way users reach it:
//! `kubectl logs/exec/attach/port-forward` and `kubectl get --raw
//! .../proxy/...` through the real kube-apiserver of `../shared/k8s`
//! (which dials the node's InternalIP, the host's address, and its own port with the
//! apiserver-kubelet-client certificate), plus curl straight at the port
//! for authentication and authorization.
//!
//! Sync-test numbers 15..=19 and 29 (HTTP/2); each test has a namespace and a
//! node of its own and pins its pods to that node.

mod cluster_support;
mod sync_support;

use cluster_support::{is_ready, wait_for, ControlPlane};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sync_support::{Node, Opts, BUSYBOX};

/// The address members register with: the host's own (as picolet picks
/// it), on which the apiserver's `nodes/proxy` works; 127.0.0.1 only
/// when the host has none (the apiserver refuses to proxy to loopback).
pub fn member_ip() -> String {
    match picolet::node::facts::node_ip(None) {
        Ok(ip) if !ip.is_loopback() => ip.to_string(),
        _ => "127.0.0.1".into(),
    }
}

/// A cluster member listening on all addresses and registered with
/// [`member_ip`] (the apiserver dials its port there for logs, exec,
/// attach, port-forward and `nodes/proxy`), trusting the cluster CA for
/// client certificates.
pub fn member(n: u32, cp: &ControlPlane, extra: &str) -> Node {
    let ip = member_ip();
    let name = format!("sync-node-{n}");
    cp.forget_node(&name);
    let ca = cp.dir.join("pki/ca.crt");
    let opts = Opts {
        kubeconfig: Some(cp.node_kubeconfig(&name)),
        extra: format!(
            "address: 0.0.0.0\nauthentication:\n  x509: {{clientCAFile: {}}}\n{extra}",
            ca.display()
        ),
        args: vec!["--node-ip".into(), ip.clone()],
        ..Opts::default()
    };
    let mut node = Node::new(n, opts);
    node.start();
    let nd = wait_for(Duration::from_secs(30), || cp.node(&name).filter(is_ready))
        .unwrap_or_else(|| panic!("node {name} not Ready\n{}", node.log_tail(30)));
    assert_eq!(
        nd["status"]["addresses"][0],
        serde_json::json!({"type": "InternalIP", "address": ip})
    );
    assert_eq!(
        nd["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        node.port
    );
    node
}

/// `kubectl get --raw PATH` of the node's port through the apiserver
/// (`/api/v1/nodes/N/proxy/PATH`, with the apiserver's kubelet client
/// certificate); straight to the port with that certificate when the
/// member has only a loopback address.
pub fn proxy_get(cp: &ControlPlane, node: &Node, path: &str) -> std::process::Output {
    if member_ip() == "127.0.0.1" {
        eprintln!("no host address for nodes/proxy: GET {path} straight to the port");
        return kubelet_kubectl(cp, node, &["get", "--raw", path]);
    }
    cp.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy{path}", node.node_name),
    ])
}

/// The apiserver's kubelet client certificate and key (what `nodes/proxy`
/// presents to a kubelet), as paths.
fn kubelet_client_cert(cp: &ControlPlane) -> (String, String) {
    let pki = cp.dir.join("pki");
    let path = |f: &str| pki.join(f).display().to_string();
    (
        path("apiserver-kubelet-client.crt"),
        path("apiserver-kubelet-client.key"),
    )
}

/// `kubectl` pointed at the node's port with the apiserver's kubelet
/// client certificate (what `nodes/proxy` would send).
pub fn kubelet_kubectl(cp: &ControlPlane, node: &Node, args: &[&str]) -> std::process::Output {
    let (cert, key) = kubelet_client_cert(cp);
    Command::new("kubectl")
        .env("KUBECONFIG", "/dev/null")
        .arg(format!("--server=https://127.0.0.1:{}", node.port))
        .arg("--insecure-skip-tls-verify")
        .arg(format!("--client-certificate={cert}"))
        .arg(format!("--client-key={key}"))
        .args(["--request-timeout", "20s"])
        .args(args)
        .output()
        .expect("run kubectl")
}

/// A busybox pod pinned to `node` running `script` (extra spec lines
/// indented for the container).
pub fn pod(name: &str, ns: &str, node: &str, restart: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  nodeName: {node}
  restartPolicy: {restart}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, {script:?}]
{extra}"#
    )
}

pub fn wait_running(cp: &ControlPlane, node: &Node, ns: &str, name: &str) -> Value {
    wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", ns, "get", "pod", name])
            .filter(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
    })
    .unwrap_or_else(|| {
        panic!(
            "pod {ns}/{name} not running: {:?}\n{}",
            cp.get_json(&["-n", ns, "get", "pod", name])
                .map(|p| p["status"].clone()),
            node.log_tail(40)
        )
    })
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: std::process::Output) -> String {
    assert!(
        o.status.success(),
        "kubectl failed: {}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

/// curl at the node's port: (status, body).
fn curl(port: u16, path: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "-m", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Numbers of `line N` lines, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok())
        .collect()
}

#[test]
fn logs_through_the_apiserver() {
    let cp = ControlPlane::shared();
    let ns = "pl-logs";
    cp.namespace(ns);
    let node = member(
        14,
        &cp,
        "containerLogMaxSize: 16Ki\ncontainerLogMaxFiles: 3",
    );
    let nn = node.node_name.clone();

    cp.apply(&pod(
        "counter",
        ns,
        &nn,
        "Always",
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done",
        "",
    ));
    wait_running(&cp, &node, ns, "counter");
    std::thread::sleep(Duration::from_secs(2));

    // Plain: every line from the first.
    let all = ok(cp.kubectl(&["-n", ns, "logs", "counter"]));
    let n = numbers(&all);
    assert!(n.len() >= 10 && n[0] == 0, "{all}");
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{all}");

    // --tail, --timestamps, --since, --limit-bytes.
    let t = ok(cp.kubectl(&["-n", ns, "logs", "counter", "--tail=3"]));
    assert_eq!(t.lines().count(), 3, "{t}");
    let ts = ok(cp.kubectl(&["-n", ns, "logs", "counter", "--tail=2", "--timestamps"]));
    for l in ts.lines() {
        let (stamp, rest) = l.split_once(' ').unwrap();
        stamp
            .parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(rest.starts_with("line "), "{l}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let since = ok(cp.kubectl(&["-n", ns, "logs", "counter", "--since=1s"]));
    let sn = numbers(&since);
    assert!(!sn.is_empty() && sn.len() < 15 && sn[0] > 10, "{since}");
    let lim = ok(cp.kubectl(&["-n", ns, "logs", "counter", "--limit-bytes=8"]));
    assert_eq!(lim, "line 0\nl");

    // -f while the container writes: lines keep coming, in order.
    let mut f = Command::new("kubectl")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .args(["-n", ns, "logs", "-f", "counter", "--tail=1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(f.stdout.take().unwrap());
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 30 && start.elapsed() < Duration::from_secs(20) {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            break;
        }
        got.extend(numbers(&l));
    }
    let _ = f.kill();
    let _ = f.wait();
    assert!(got.len() >= 30, "follow gave {got:?}");
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");

    // Unknown pod and container, and another namespace's pod name: 404s
    // from the kubelet, never another pod's file.
    let o = cp.kubectl(&["-n", ns, "logs", "counter", "-c", "nope"]);
    assert!(!o.status.success());
    let (cert, key) = kubelet_client_cert(&cp);
    let admin = ["--cert", cert.as_str(), "--key", key.as_str()];
    let (code, body) = curl(
        node.port,
        &format!("/containerLogs/{ns}/counter/nope"),
        &admin,
    );
    assert_eq!(
        (code, body.as_str()),
        (404, "container \"nope\" not found in pod \"counter\"\n")
    );
    let (code, _) = curl(node.port, "/containerLogs/default/counter/main", &admin);
    assert_eq!(code, 404);
    let (code, _) = curl(
        node.port,
        &format!("/containerLogs/{ns}/%2E%2E/main"),
        &admin,
    );
    assert_eq!(code, 400);
    let (code, body) = curl(
        node.port,
        &format!("/containerLogs/{ns}/counter/main?tailLines=-1"),
        &admin,
    );
    assert_eq!(
        (code, body.as_str()),
        (422, r#"{"message": "Invalid request."}"#)
    );
    let (code, body) = curl(
        node.port,
        &format!("/containerLogs/{ns}/counter/main?tailLines=99999999999"),
        &admin,
    );
    assert_eq!(code, 200);
    assert!(body.starts_with("line 0\n"));

    // Rotation while following: the writer fills 16 KiB files quickly;
    // a follower sees every line once, in order, across the renames.
    cp.apply(&pod(
        "fast",
        ns,
        &nn,
        "Always",
        "sleep 2; i=0; while [ $i -lt 3000 ]; do echo \"line $i $(printf '%080d' 0)\"; i=$((i+1)); \
         [ $((i % 50)) = 0 ] && sleep 0.2; done; sleep 3600",
        "",
    ));
    wait_running(&cp, &node, ns, "fast");
    let out = Command::new("timeout")
        .args(["40", "kubectl"])
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .args(["-n", ns, "logs", "-f", "fast"])
        .output()
        .unwrap();
    let text = stdout(&out);
    let n = numbers(
        &text
            .lines()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let last = *n.last().unwrap_or(&0);
    assert_eq!(last, 2999, "follow stopped early: {} lines", n.len());
    assert!(
        n.windows(2).all(|w| w[1] == w[0] + 1),
        "gap or repeat across rotation"
    );
    let rotated = std::fs::read_dir(node.root.join("logs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("_fast_"))
        .flat_map(|e| std::fs::read_dir(e.path().join("main")).unwrap().flatten())
        .filter(|e| e.file_name().to_string_lossy().contains(".log."))
        .count();
    assert!(rotated >= 1, "the log never rotated");

    // --previous after a restart.
    cp.apply(&pod(
        "crash",
        ns,
        &nn,
        "Always",
        "echo run-$(cat /proc/sys/kernel/random/uuid); sleep 2; exit 1",
        "",
    ));
    let restarted = wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", ns, "get", "pod", "crash"])
            .filter(|p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1))
    });
    assert!(restarted.is_some(), "{}", node.log_tail(30));
    let prev = wait_for(Duration::from_secs(20), || {
        let o = cp.kubectl(&["-n", ns, "logs", "crash", "--previous"]);
        o.status.success().then(|| stdout(&o))
    })
    .expect("logs --previous");
    assert!(prev.starts_with("run-"), "{prev}");
    let cur = wait_for(Duration::from_secs(20), || {
        let o = cp.kubectl(&["-n", ns, "logs", "crash"]);
        let s = stdout(&o);
        (o.status.success() && s.starts_with("run-") && s != prev).then_some(s)
    });
    assert!(cur.is_some(), "current log is the previous one: {prev}");

    cp.drop_namespace(ns);
}

#[test]
fn authentication_and_authorization() {
    let cp = ControlPlane::shared();
    let ns = "pl-authz";
    cp.namespace(ns);
    let node = member(15, &cp, "");

    // No credentials: 401, as upstream.
    assert_eq!(
        curl(node.port, "/pods", &[]),
        (401, "Unauthorized".to_string())
    );
    assert_eq!(curl(node.port, "/healthz", &[]).0, 401);
    // A client certificate from another CA: 401 too.
    let other = std::env::temp_dir().join(format!("pl-other-ca-{}", std::process::id()));
    std::fs::create_dir_all(&other).unwrap();
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/O=system:masters/CN=evil",
        ])
        .arg("-keyout")
        .arg(other.join("k.pem"))
        .arg("-out")
        .arg(other.join("c.pem"))
        .output()
        .unwrap();
    assert!(st.status.success());
    let (c, k) = (
        other.join("c.pem").display().to_string(),
        other.join("k.pem").display().to_string(),
    );
    assert_eq!(
        curl(node.port, "/pods", &["--cert", &c, "--key", &k]).0,
        401
    );

    // The apiserver's kubelet client certificate (system:masters): allowed
    // (its SubjectAccessReview says so).
    let reviews = || sync_support::count_lines(&node.log_path, "SubjectAccessReview");
    let out = ok(proxy_get(&cp, &node, "/pods"));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "PodList");
    let out = ok(proxy_get(&cp, &node, "/healthz?verbose"));
    assert_eq!(
        out,
        "[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed\n"
    );
    let cz: Value = serde_json::from_str(&ok(proxy_get(&cp, &node, "/configz"))).unwrap();
    assert_eq!(cz["kubeletconfig"]["port"], node.port);

    // A service account token: TokenReview says who, SubjectAccessReview
    // says no (403 with upstream's text), until a role grants nodes/proxy.
    ok(cp.kubectl(&["-n", ns, "create", "serviceaccount", "reader"]));
    ok(cp.kubectl(&["-n", ns, "create", "serviceaccount", "stats"]));
    let token = ok(cp.kubectl(&["-n", ns, "create", "token", "reader"]))
        .trim()
        .to_string();
    let auth = format!("Authorization: Bearer {token}");
    let before = reviews();
    let (code, body) = curl(node.port, "/pods", &["-H", &auth]);
    assert!(
        reviews() > before,
        "no SubjectAccessReview was made\n{}",
        node.log_tail(20)
    );
    assert_eq!(
        (code, body.as_str()),
        (403, format!("Forbidden (user=system:serviceaccount:{ns}:reader, verb=get, resource=nodes, subresource=proxy)").as_str())
    );
    let (code, body) = curl(node.port, "/stats/summary", &["-H", &auth]);
    assert_eq!(code, 403);
    assert!(body.contains("subresource=stats"), "{body}");
    assert_eq!(
        curl(
            node.port,
            "/pods",
            &["-H", "Authorization: Bearer not-a-token"]
        )
        .0,
        401
    );

    // Grant nodes/stats to the other account: its SAR says yes.
    ok(cp.kubectl(&[
        "create",
        "clusterrole",
        "pl-node-stats",
        "--verb=get",
        "--resource=nodes/stats",
    ]));
    let _ = cp.kubectl(&["delete", "clusterrolebinding", "pl-node-stats"]);
    ok(cp.kubectl(&[
        "create",
        "clusterrolebinding",
        "pl-node-stats",
        "--clusterrole=pl-node-stats",
        &format!("--serviceaccount={ns}:stats"),
    ]));
    let stoken = ok(cp.kubectl(&["-n", ns, "create", "token", "stats"]))
        .trim()
        .to_string();
    let sauth = format!("Authorization: Bearer {stoken}");
    let allowed = wait_for(Duration::from_secs(10), || {
        let (code, _) = curl(node.port, "/stats/summary", &["-H", &sauth]);
        (code != 403).then_some(code)
    });
    assert!(
        allowed.is_some_and(|c| c != 401),
        "stats token: {allowed:?}"
    );
    assert_eq!(curl(node.port, "/pods", &["-H", &sauth]).0, 403);

    let _ = cp.kubectl(&["delete", "clusterrolebinding", "pl-node-stats"]);
    let _ = cp.kubectl(&["delete", "clusterrole", "pl-node-stats"]);
    let _ = std::fs::remove_dir_all(&other);
    cp.drop_namespace(ns);
}

/// curl over HTTP/2 (ALPN h2) at the node's port with `extra` arguments
/// and the URLs of `paths`: curl's output and its `-v` trace.
fn curl_h2(port: u16, extra: &[&str], paths: &[&str]) -> (String, String) {
    let mut c = Command::new("curl");
    c.args(["-svk", "--http2", "-m", "20"]).args(extra);
    for p in paths {
        c.args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version} %{num_connects}\n",
        ])
        .arg(format!("https://127.0.0.1:{port}{p}"));
    }
    let out = c.output().expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The secure port speaks HTTP/2 to clients that offer it (curl with
/// nghttp2 here; Go's clients are `kubectl get --raw` in
/// `authentication_and_authorization`): the same endpoints, credentials
/// and answers as HTTP/1.1, several requests on one connection, a
/// followed log streamed, and exec refused with HTTP_1_1_REQUIRED so
/// that the client retries on HTTP/1.1.
#[test]
fn http2_on_the_secure_port() {
    let cp = ControlPlane::shared();
    let ns = "pl-h2";
    cp.namespace(ns);
    let node = member(29, &cp, "");
    let nn = node.node_name.clone();
    cp.apply(&pod(
        "counter",
        ns,
        &nn,
        "Always",
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done",
        "",
    ));
    wait_running(&cp, &node, ns, "counter");
    let (cert, key) = kubelet_client_cert(&cp);
    let creds = ["--cert", cert.as_str(), "--key", key.as_str()];

    // No credentials: 401 over HTTP/2, ALPN h2 negotiated.
    let (out, trace) = curl_h2(node.port, &[], &["/pods"]);
    assert_eq!(out, "401 2 1\n", "{trace}");
    assert!(trace.contains("ALPN: server accepted h2"), "{trace}");
    assert!(trace.contains("using HTTP/2"), "{trace}");

    // A client certificate: the pod list, body and all.
    let o = Command::new("curl")
        .args(["-sk", "--http2", "-m", "20"])
        .args(creds)
        .args(["-w", "\n%{http_version}"])
        .arg(format!("https://127.0.0.1:{}/pods", node.port))
        .output()
        .unwrap();
    let text = stdout(&o);
    let (body, version) = text.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "{text}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["kind"], "PodList");
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["metadata"]["name"] == "counter"));

    // Every endpoint at once on one connection (curl multiplexes -Z).
    let logs = format!("/containerLogs/{ns}/counter/main?tailLines=2");
    let paths = [
        "/healthz",
        "/pods",
        "/runningpods",
        "/spec",
        "/configz",
        "/stats/summary",
        "/metrics",
        "/metrics/resource",
        "/metrics/probes",
        logs.as_str(),
        "/healthz",
        "/pods",
    ];
    let mut extra = creds.to_vec();
    extra.push("-Z");
    let (out, trace) = curl_h2(node.port, &extra, &paths);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), paths.len(), "{out}\n{trace}");
    assert!(
        lines.iter().all(|l| l.starts_with("200 2 ")),
        "{out}\n{trace}"
    );
    let connects: u32 = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(connects, 1, "one connection for all\n{out}\n{trace}");

    // logs -f: lines keep coming, in order, over the stream.
    let mut child = Command::new("curl")
        .args(["-sk", "--http2", "-N", "-m", "30"])
        .args(creds)
        .arg(format!(
            "https://127.0.0.1:{}/containerLogs/{ns}/counter/main?follow=true&tailLines=1",
            node.port
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let start = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 20 && start.elapsed() < Duration::from_secs(20) {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        seen.extend(numbers(&l));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.len() >= 20, "{seen:?}\n{}", node.log_tail(20));
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");

    // exec cannot upgrade over HTTP/2: HTTP_1_1_REQUIRED, and curl
    // retries on HTTP/1.1, where the missing upgrade headers get 400.
    let exec = format!("/exec/{ns}/counter/main?command=true&output=1");
    let (out, trace) = curl_h2(node.port, &creds, &[exec.as_str()]);
    assert!(trace.contains("HTTP_1_1_REQUIRED"), "{trace}");
    assert!(out.starts_with("400 1.1"), "{out}\n{trace}");

    // ALPN http/1.1 still gets HTTP/1.1.
    let o = Command::new("curl")
        .args(["-svk", "--http1.1", "-m", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}"])
        .args(creds)
        .arg(format!("https://127.0.0.1:{}/healthz", node.port))
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stdout(&o), "200 1.1", "{trace}");
    assert!(trace.contains("ALPN: server accepted http/1.1"), "{trace}");

    // Still healthy after the cancelled stream.
    let (out, _) = curl_h2(node.port, &creds, &["/healthz"]);
    assert_eq!(out, "200 2 1\n");

    // Go's client (kubectl) at the port: it negotiates h2 for plain
    // requests; through the apiserver, exec upgrades on HTTP/1.1 and logs
    // come as they did.
    let out = ok(kubelet_kubectl(&cp, &node, &["get", "--raw", "/healthz"]));
    assert_eq!(out, "ok");
    let out = ok(cp.kubectl(&["-n", ns, "exec", "counter", "--", "echo", "via-h1"]));
    assert_eq!(out, "via-h1\n");
    let out = ok(cp.kubectl(&["-n", ns, "logs", "counter", "--tail=2"]));
    assert_eq!(numbers(&out).len(), 2, "{out}");
    cp.drop_namespace(ns);
}

/// `kubectl` with the admin kubeconfig and stdin from `input`.
fn kubectl_input(cp: &ControlPlane, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut c = Command::new("kubectl")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    i.write_all(input).unwrap();
    drop(i);
    c.wait_with_output().unwrap()
}

fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until the tmux pane shows `needle`; returns the screen.
fn pane_shows(session: &str, needle: &str) -> Option<String> {
    wait_for(Duration::from_secs(15), || {
        let s = tmux(&["capture-pane", "-p", "-t", session]);
        s.contains(needle).then_some(s)
    })
}

#[test]
fn exec_and_attach() {
    let cp = ControlPlane::shared();
    let ns = "pl-exec";
    cp.namespace(ns);
    let node = member(16, &cp, "");
    let nn = node.node_name.clone();
    cp.apply(&pod("box", ns, &nn, "Always", "sleep 3600", ""));
    wait_running(&cp, &node, ns, "box");

    // Output, both streams, exit codes.
    let o = cp.kubectl(&["-n", ns, "exec", "box", "--", "echo", "hello"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "hello\n"),
        "{o:?}\n{}",
        node.log_tail(30)
    );
    let o = cp.kubectl(&[
        "-n",
        ns,
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(stdout(&o), "out\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("err\n") && err.contains("command terminated with exit code 3"),
        "{err}"
    );
    let o = cp.kubectl(&["-n", ns, "exec", "box", "--", "no-such-binary"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-such-binary"),
        "{o:?}"
    );

    // stdin piped in, EOF closes it.
    let o = kubectl_input(
        &cp,
        &[
            "-n",
            ns,
            "exec",
            "-i",
            "box",
            "--",
            "sh",
            "-c",
            "wc -c; cat",
        ],
        b"",
    );
    assert_eq!(stdout(&o).trim(), "0", "{o:?}");
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    let o = kubectl_input(&cp, &["-n", ns, "exec", "-i", "box", "--", "md5sum"], &big);
    let want = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&big)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        stdout(&o).split(' ').next(),
        String::from_utf8_lossy(&want.stdout).split(' ').next(),
        "{o:?}"
    );

    // A terminal under tmux: size, resize, exit status, Ctrl-D.
    let sess = format!("plexec{}", std::process::id());
    let done = node.root.join("tty-exit");
    let _ = std::fs::remove_file(&done);
    let cmd = format!(
        "KUBECONFIG={} kubectl -n {ns} exec -it box -- sh; echo $? > {}",
        cp.admin_kubeconfig().display(),
        done.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &sess,
        "-x",
        "100",
        "-y",
        "30",
        &cmd,
    ]);
    assert!(
        pane_shows(&sess, "/ #").is_some(),
        "no prompt: {}",
        tmux(&["capture-pane", "-p", "-t", &sess])
    );
    tmux(&["send-keys", "-t", &sess, "stty size", "Enter"]);
    assert!(
        pane_shows(&sess, "30 100").is_some(),
        "{}",
        tmux(&["capture-pane", "-p", "-t", &sess])
    );
    tmux(&["resize-window", "-t", &sess, "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", &sess, "clear; stty size", "Enter"]);
    assert!(
        pane_shows(&sess, "40 120").is_some(),
        "{}",
        tmux(&["capture-pane", "-p", "-t", &sess])
    );
    tmux(&["send-keys", "-t", &sess, "echo $TERM; exit 7", "Enter"]);
    let code = wait_for(Duration::from_secs(15), || {
        std::fs::read_to_string(&done).ok()
    });
    let _ = tmux(&["kill-session", "-t", &sess]);
    assert_eq!(code.as_deref().map(str::trim), Some("7"));
    // Ctrl-D ends the shell with 0.
    let _ = std::fs::remove_file(&done);
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &sess,
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]);
    assert!(pane_shows(&sess, "/ #").is_some());
    tmux(&["send-keys", "-t", &sess, "C-d"]);
    let code = wait_for(Duration::from_secs(15), || {
        std::fs::read_to_string(&done).ok()
    });
    let _ = tmux(&["kill-session", "-t", &sess]);
    assert_eq!(code.as_deref().map(str::trim), Some("0"));

    // The container exits mid-exec: the exec ends with it.
    cp.apply(&pod("short", ns, &nn, "Never", "sleep 4", ""));
    wait_running(&cp, &node, ns, "short");
    let t = Instant::now();
    let o = cp.kubectl(&["-n", ns, "exec", "short", "--", "sleep", "60"]);
    assert!(!o.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "exec outlived its container: {o:?}"
    );

    // attach: a shell with stdin and a terminal; what it prints reaches the
    // attached client, and a command typed there runs.
    cp.apply(&pod(
        "att",
        ns,
        &nn,
        "Always",
        "while true; do echo tick; sleep 0.5; done",
        "",
    ));
    wait_running(&cp, &node, ns, "att");
    let mut a = Command::new("kubectl")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .args(["-n", ns, "attach", "att"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(a.stdout.take().unwrap());
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    let _ = a.kill();
    let _ = a.wait();
    assert_eq!(l, "tick\n");

    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: tty, namespace: {ns}}}
spec:
  nodeName: {nn}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh]
    stdin: true
    tty: true
"#
    ));
    wait_running(&cp, &node, ns, "tty");
    let done = node.root.join("attach-exit");
    let _ = std::fs::remove_file(&done);
    let cmd = format!(
        "KUBECONFIG={} kubectl -n {ns} attach -it tty; echo $? > {}",
        cp.admin_kubeconfig().display(),
        done.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &sess,
        "-x",
        "90",
        "-y",
        "25",
        &cmd,
    ]);
    std::thread::sleep(Duration::from_secs(2));
    tmux(&[
        "send-keys",
        "-t",
        &sess,
        "echo at-$((6*7)); stty size",
        "Enter",
    ]);
    let screen = pane_shows(&sess, "at-42");
    assert!(
        screen.is_some(),
        "{}",
        tmux(&["capture-pane", "-p", "-t", &sess])
    );
    assert!(
        pane_shows(&sess, "25 90").is_some(),
        "{}",
        tmux(&["capture-pane", "-p", "-t", &sess])
    );
    let _ = tmux(&["kill-session", "-t", &sess]);

    cp.drop_namespace(ns);
}

#[test]
fn port_forward_to_httpd() {
    let cp = ControlPlane::shared();
    let ns = "pl-pf";
    cp.namespace(ns);
    let node = member(17, &cp, "");
    let nn = node.node_name.clone();
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}}}
spec:
  nodeName: {nn}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {}
    imagePullPolicy: Never
"#,
        sync_support::HTTPD
    ));
    wait_running(&cp, &node, ns, "web");
    // httpd serves a big file too (through several frames and both ways).
    let o = cp.kubectl(&[
        "-n",
        ns,
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/www/big bs=1024 count=3000 2>/dev/null; md5sum /www/big",
    ]);
    let big_md5 = stdout(&o).split(' ').next().unwrap_or("").to_string();
    assert_eq!(big_md5.len(), 32, "{o:?}");

    let local = 18717u16;
    let mut pf = Command::new("kubectl")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .args([
            "-n",
            ns,
            "port-forward",
            "pod/web",
            &format!("{local}:8080"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(pf.stdout.take().unwrap());
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    assert!(l.contains("Forwarding from 127.0.0.1"), "{l}");
    let get = |path: &str| {
        Command::new("curl")
            .args([
                "-sS",
                "-m",
                "20",
                &format!("http://127.0.0.1:{local}{path}"),
            ])
            .output()
            .unwrap()
    };
    let o = get("/healthz");
    assert_eq!(stdout(&o), "ok\n", "{o:?}\n{}", node.log_tail(20));
    // Several connections at once, one of them large.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let path = if i == 0 { "/big" } else { "/healthz" };
                Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "curl -sS -m 30 http://127.0.0.1:{local}{path} | md5sum"
                    ))
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let sums: Vec<String> = handles
        .into_iter()
        .map(|h| {
            stdout(&h.join().unwrap())
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let ok_md5 = {
        let o = Command::new("sh")
            .arg("-c")
            .arg("printf 'ok\\n' | md5sum")
            .output()
            .unwrap();
        stdout(&o).split(' ').next().unwrap().to_string()
    };
    assert_eq!(sums[0], big_md5);
    assert!(sums[1..].iter().all(|s| *s == ok_md5), "{sums:?}");
    // A port nobody listens on: the error reaches kubectl, others go on.
    let _ = pf.kill();
    let _ = pf.wait();
    let mut pf = Command::new("kubectl")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .args([
            "-n",
            ns,
            "port-forward",
            "pod/web",
            &format!("{local}:8081"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(pf.stdout.take().unwrap());
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    let _ = get("/");
    std::thread::sleep(Duration::from_millis(500));
    let _ = pf.kill();
    let out = pf.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error forwarding port 8081") || err.contains("8081"),
        "{err}"
    );
    cp.drop_namespace(ns);
}

/// A cgroup v1 controller file of the cgroup a process is in (`..` for
/// the parent, the pod).
fn cgroup_file(pid: u32, controller: &str, up: bool, file: &str) -> u64 {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cg
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, p) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| p.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in {cg}"));
    let mut dir = std::path::PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}"));
    if up {
        dir.pop();
    }
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn promtool(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/runtime/install-packages.sh installs it)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr)),
    )
}

#[test]
fn stats_and_metrics() {
    let cp = ControlPlane::shared();
    let ns = "pl-stats";
    cp.namespace(ns);
    let node = member(18, &cp, "");
    let nn = node.node_name.clone();
    cp.apply(&pod(
        "load",
        ns,
        &nn,
        "Always",
        "dd if=/dev/zero of=/dev/null",
        "",
    ));
    let p = wait_running(&cp, &node, ns, "load");
    let cid = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let pid =
        wait_for(Duration::from_secs(10), || node.container_pid(&cid)).expect("container pid");
    std::thread::sleep(Duration::from_secs(1));

    let raw = |path: &str| ok(proxy_get(&cp, &node, path));
    let node_cpu = || {
        std::fs::read_to_string("/sys/fs/cgroup/cpuacct/cpuacct.usage")
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let (n0, c0, p0) = (
        node_cpu(),
        cgroup_file(pid, "cpuacct", false, "cpuacct.usage"),
        cgroup_file(pid, "cpuacct", true, "cpuacct.usage"),
    );
    let s: Value = serde_json::from_str(&raw("/stats/summary")).unwrap();
    let (n1, c1, p1) = (
        node_cpu(),
        cgroup_file(pid, "cpuacct", false, "cpuacct.usage"),
        cgroup_file(pid, "cpuacct", true, "cpuacct.usage"),
    );
    let between = |v: &Value, lo: u64, hi: u64| {
        let v = v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"));
        assert!((lo..=hi).contains(&v), "{v} not in {lo}..={hi}");
    };
    assert_eq!(s["node"]["nodeName"], nn.as_str());
    between(&s["node"]["cpu"]["usageCoreNanoSeconds"], n0, n1);
    assert!(s["node"]["memory"]["workingSetBytes"].as_u64().unwrap() > 0);
    assert!(s["node"]["fs"]["capacityBytes"].as_u64().unwrap() > 0);
    assert!(s["node"]["rlimit"]["maxpid"].as_u64().unwrap() > 0);
    let names: Vec<&str> = s["node"]["systemContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&"kubelet") && names.contains(&"pods"),
        "{names:?}"
    );
    let pods = s["pods"].as_array().unwrap();
    let lp = pods
        .iter()
        .find(|p| p["podRef"]["name"] == "load")
        .expect("pod load in the summary");
    assert_eq!(lp["podRef"]["namespace"], ns);
    assert_eq!(lp["podRef"]["uid"], p["metadata"]["uid"]);
    between(&lp["cpu"]["usageCoreNanoSeconds"], p0, p1);
    let c = &lp["containers"][0];
    assert_eq!(c["name"], "main");
    between(&c["cpu"]["usageCoreNanoSeconds"], c0, c1);
    let mem = cgroup_file(pid, "memory", false, "memory.usage_in_bytes");
    let got = c["memory"]["usageBytes"].as_u64().unwrap();
    assert!(
        got.abs_diff(mem) < 4 << 20,
        "memory {got} vs cgroupfs {mem}"
    );
    assert!(lp["process_stats"]["process_count"].as_u64().unwrap() >= 1);
    assert_eq!(lp["network"]["name"], "eth0", "{}", lp["network"]);
    assert!(
        c["logs"]["usedBytes"].is_u64() && c["rootfs"]["usedBytes"].is_u64(),
        "{c}"
    );
    // A rate after a second scrape: dd keeps one core busy (or what a
    // loaded 2-core machine leaves it; 0 or a wild figure is the bug).
    std::thread::sleep(Duration::from_secs(2));
    let s2: Value = serde_json::from_str(&raw("/stats/summary")).unwrap();
    let lp2 = s2["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "load")
        .unwrap();
    let rate = lp2["containers"][0]["cpu"]["usageNanoCores"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        rate > 150_000_000 && rate < 1_300_000_000,
        "usageNanoCores {rate}"
    );

    // /metrics/resource: what metrics-server reads.
    let m = raw("/metrics/resource");
    let (good, out) = promtool(&m);
    assert!(good, "promtool on /metrics/resource: {out}\n{m}");
    let line = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{m}"))
            .to_string()
    };
    let cpu: f64 = line(&format!(
        "container_cpu_usage_seconds_total{{container=\"main\",namespace=\"{ns}\",pod=\"load\"}}"
    ))
    .split(' ')
    .nth(1)
    .unwrap()
    .parse()
    .unwrap();
    let c2 = cgroup_file(pid, "cpuacct", false, "cpuacct.usage") as f64 / 1e9;
    assert!(cpu > 1.0 && cpu <= c2, "{cpu} vs {c2}");
    assert!(
        line("node_cpu_usage_seconds_total ").split(' ').count() == 3,
        "timestamped"
    );
    line(&format!(
        "pod_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"load\"}}"
    ));
    line("node_memory_working_set_bytes ");
    assert!(m.contains("\nresource_scrape_error 0\n"), "{m}");

    // /metrics: picolet's own, in the upstream names, accepted by promtool.
    let own = raw("/metrics");
    let (good, out) = promtool(&own);
    assert!(good, "promtool on /metrics: {out}\n{own}");
    assert!(own.contains("\nkubelet_running_pods 1\n"), "{own}");
    assert!(
        own.contains("kubelet_running_containers{container_state=\"running\"} 1\n"),
        "{own}"
    );
    assert!(
        own.contains("kubelet_pod_start_duration_seconds_count 1\n"),
        "{own}"
    );
    assert!(own.contains("rest_client_requests_total{"), "{own}");
    let sent = own
        .lines()
        .find_map(|l| l.strip_prefix("picolet_apiserver_sent_bytes_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(sent.is_some_and(|b| b > 1000.0), "{own}");
    assert!(own.contains("kubelet_http_requests_total{long_running=\"false\",method=\"GET\",path=\"/stats\",server_type=\"readwrite\"} 2\n"), "{own}");
    let probes = raw("/metrics/probes");
    assert!(promtool(&probes).0, "{probes}");
    // only_cpu_and_memory
    let small: Value =
        serde_json::from_str(&raw("/stats/summary?only_cpu_and_memory=true")).unwrap();
    assert!(small["node"]["fs"].is_null() && small["node"]["cpu"].is_object());
    cp.drop_namespace(ns);
}

/// The stdlib-only WebSocket client beside these tests.
fn ws(
    cp: &ControlPlane,
    node: &Node,
    path: &str,
    proto: &str,
    mode: &str,
    input: &[u8],
    extra: &[&str],
) -> Value {
    use std::io::Write;
    let pki = cp.dir.join("pki");
    let mut c = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/server_support/ws_client.py"
        ))
        .args(["127.0.0.1", &node.port.to_string(), path, proto])
        .arg(pki.join("apiserver-kubelet-client.crt"))
        .arg(pki.join("apiserver-kubelet-client.key"))
        .arg(mode)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("ws client: {e}: {o:?}\n{}", node.log_tail(20)))
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn websocket_variants_and_bad_clients() {
    let cp = ControlPlane::shared();
    let ns = "pl-ws";
    cp.namespace(ns);
    let node = member(19, &cp, "");
    let nn = node.node_name.clone();
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}}}
spec:
  nodeName: {nn}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {}
    imagePullPolicy: Never
"#,
        sync_support::HTTPD
    ));
    wait_running(&cp, &node, ns, "web");
    let exec = |q: &str| format!("/exec/{ns}/web/main?{q}");

    // v5: stdin, its close signal, stdout, stderr and the exit status.
    let v = ws(&cp, &node, &exec("command=sh&command=-c&command=echo+hi%3B+cat%3B+echo+e+%3E%262%3B+exit+5&input=1&output=1&error=1"), "v5.channel.k8s.io", "exec", b"piped\n", &[]);
    assert_eq!(v["status"], "HTTP/1.1 101 Switching Protocols", "{v}");
    assert_eq!(v["channels"]["1"], "hi\npiped\n", "{v}");
    assert_eq!(v["channels"]["2"], "e\n", "{v}");
    let st: Value = serde_json::from_str(v["channels"]["3"].as_str().unwrap()).unwrap();
    assert_eq!(st["details"]["causes"][0]["message"], "5", "{st}");
    // base64 text frames (v4.base64).
    let v = ws(
        &cp,
        &node,
        &exec("command=echo&command=b64&output=1"),
        "v4.base64.channel.k8s.io",
        "exec",
        b"",
        &[],
    );
    assert_eq!(v["channels"]["1"], "b64\n", "{v}");
    assert_eq!(
        v["channels"]["3"], r#"{"metadata":{},"status":"Success"}"#,
        "{v}"
    );
    // port-forward: the port announced on both channels, then data.
    let v = ws(
        &cp,
        &node,
        &format!("/portForward/{ns}/web?port=8080"),
        "v4.channel.k8s.io",
        "pf",
        b"",
        &[],
    );
    assert_eq!(
        v["channels"]["init0"],
        serde_json::json!([0x90, 0x1f]),
        "{v}"
    );
    let body = v["channels"]["0"].as_str().unwrap();
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 ") && body.ends_with("\r\n\r\nok\n"),
        "{v}"
    );

    let pid = node.pid().unwrap();
    let rss0 = rss_kb(pid);
    // A client that stops reading while the process writes without end:
    // back-pressure, no growth.
    let stall = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/server_support/ws_client.py"
        ))
        .args([
            "127.0.0.1",
            &node.port.to_string(),
            &exec("command=cat&command=%2Fdev%2Fzero&output=1"),
            "v5.channel.k8s.io",
        ])
        .arg(cp.dir.join("pki/apiserver-kubelet-client.crt"))
        .arg(cp.dir.join("pki/apiserver-kubelet-client.key"))
        .args(["stall", "8"])
        .spawn()
        .unwrap();
    // Garbage after a SPDY upgrade, and a bad WebSocket frame: the
    // session ends, picolet stays.
    let cert = cp.dir.join("pki/apiserver-kubelet-client.crt");
    let key = cp.dir.join("pki/apiserver-kubelet-client.key");
    for (upgrade, junk) in [
        ("Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io", &b"\x80\x03\x00\x01\x00\xff\xff\xff garbage"[..]),
        ("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", &b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff"[..]),
    ] {
        use std::io::Write;
        let mut c = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{}", node.port)])
            .arg("-cert").arg(&cert).arg("-key").arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut i = c.stdin.take().unwrap();
        let _ = write!(i, "POST {} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n{upgrade}\r\n\r\n", exec("command=cat&input=1&output=1"));
        std::thread::sleep(Duration::from_millis(500));
        let _ = i.write_all(junk);
        std::thread::sleep(Duration::from_millis(500));
        drop(i);
        let o = c.wait_with_output().unwrap();
        assert!(stdout(&o).starts_with("HTTP/1.1 101"), "{o:?}");
    }
    // Thousands of half-open connections (no TLS handshake).
    let flood: Vec<std::net::TcpStream> = (0..2000)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", node.port)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let rss1 = rss_kb(pid);
    assert!(rss1 < rss0 + 32 * 1024, "RSS grew from {rss0} to {rss1} kB");
    drop(flood);
    let mut stall = stall;
    let _ = stall.wait();
    // Everything still answers.
    std::thread::sleep(Duration::from_secs(1));
    let o = cp.kubectl(&["-n", ns, "exec", "web", "--", "echo", "still"]);
    assert_eq!(stdout(&o), "still\n", "{o:?}\n{}", node.log_tail(20));
    let rss2 = rss_kb(pid);
    eprintln!("RSS: {rss0} kB before, {rss1} kB with a stalled reader and 2000 half-open connections, {rss2} kB after");
    // The stalled exec was killed when its client went.
    let ps = ok(cp.kubectl(&["-n", ns, "exec", "web", "--", "ps"]));
    assert!(
        !ps.contains("cat /dev/zero") && !ps.lines().any(|l| l.trim_end().ends_with(" cat")),
        "{ps}"
    );
    cp.drop_namespace(ns);
}
