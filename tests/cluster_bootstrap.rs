//! Joining with a bootstrap token against the real kube-apiserver and
//! kube-controller-manager v1.31 of `../shared/k8s`: `picolet join`
//! (kubeadm discovery, bad input), the TLS bootstrap of `picolet run
//! --bootstrap-kubeconfig`, client and serving certificate rotation with
//! one-minute certificates, and requests that are denied or never
//! approved.
//!
//! Sync-test numbers 56..=59 (see `sync_support`); private control planes
//! in slots 3 (short certificates) and 4 (no automatic approval).

mod cluster_support;
mod sync_support;

use cluster_support::{is_ready, wait_for, ControlPlane};
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sync_support::{busybox_pod, Node, Opts};

const PICOLET: &str = env!("CARGO_BIN_EXE_picolet");

/// A private control plane (apiserver and controller-manager) with extra
/// controller-manager flags; stopped and purged first, so flags of an
/// earlier run do not linger.
fn private_cp(slot: u16, kcm_extra: &str) -> ControlPlane {
    let dir = format!("/var/tmp/picolet-k8s-test-{slot}");
    let env: Vec<(String, String)> = [
        ("K8S_DIR", dir.clone()),
        ("APISERVER_PORT", (16443 + slot * 10).to_string()),
        ("ETCD_PORT", (22379 + slot * 10).to_string()),
        ("ETCD_PEER_PORT", (22380 + slot * 10).to_string()),
        ("KCM_PORT", (20257 + slot * 10).to_string()),
        ("SCHED_PORT", (20259 + slot * 10).to_string()),
        ("COMPONENTS", "apiserver controller-manager".to_string()),
        ("KCM_EXTRA_ARGS", kcm_extra.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cp = ControlPlane {
        dir: dir.into(),
        env,
    };
    cp.purge();
    cp.up();
    cp
}

fn server(cp: &ControlPlane) -> String {
    let port = cp
        .env
        .iter()
        .find(|(k, _)| k == "APISERVER_PORT")
        .map_or("6443".to_string(), |(_, v)| v.clone());
    format!("https://127.0.0.1:{port}")
}

fn token(cp: &ControlPlane) -> String {
    std::fs::read_to_string(cp.dir.join("pki/bootstrap-token"))
        .unwrap()
        .trim()
        .to_string()
}

fn ca_hash(cp: &ControlPlane) -> String {
    let ca = std::fs::read(cp.dir.join("pki/ca.crt")).unwrap();
    picolet::kube::discovery::ca_hashes(&ca).unwrap().remove(0)
}

/// Waits until the bootstrapsigner signed cluster-info for the kit's token.
fn wait_signed(cp: &ControlPlane) {
    let key = format!(
        "jws-kubeconfig-{}",
        token(cp).split('.').next().unwrap_or_default()
    );
    wait_for(Duration::from_secs(60), || {
        cp.get_json(&["-n", "kube-public", "get", "configmap", "cluster-info"])
            .filter(|cm| cm["data"][key.as_str()].is_string())
            .map(|_| ())
    })
    .expect("cluster-info signed for the token");
}

/// The per-node files: `<root>/etc/{kubeconfig,bootstrap-kubeconfig}`.
fn etc(n: u32) -> PathBuf {
    PathBuf::from(format!("/var/tmp/picolet-test/sync-{n}/etc"))
}

fn node_args(n: u32) -> Vec<String> {
    vec![
        "--kubeconfig".into(),
        etc(n).join("kubeconfig").display().to_string(),
        "--bootstrap-kubeconfig".into(),
        etc(n).join("bootstrap-kubeconfig").display().to_string(),
    ]
}

fn bootstrap_node(n: u32, cp: &ControlPlane, extra: &str) -> Node {
    let name = format!("sync-node-{n}");
    cp.forget_node(&name);
    Node::new(
        n,
        Opts {
            extra: extra.to_string(),
            args: node_args(n),
            ..Opts::default()
        },
    )
}

/// The kit's bootstrap kubeconfig, with another token when given.
fn write_bootstrap_kubeconfig(n: u32, cp: &ControlPlane, token_override: Option<&str>) {
    let mut text = std::fs::read_to_string(cp.dir.join("bootstrap.kubeconfig")).unwrap();
    if let Some(t) = token_override {
        text = text.replace(&token(cp), t);
    }
    std::fs::create_dir_all(etc(n)).unwrap();
    std::fs::write(etc(n).join("bootstrap-kubeconfig"), text).unwrap();
}

/// `picolet join` for node `n` with these extra flags.
fn join(n: u32, node: &Node, extra: &[&str]) -> Output {
    Command::new(PICOLET)
        .arg("join")
        .args(["--config", node.config_path.to_str().unwrap()])
        .args(["--root-dir", node.root.join("root").to_str().unwrap()])
        .args(["--hostname-override", &node.node_name])
        .args(node_args(n))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run picolet join")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn cert_dir(node: &Node) -> PathBuf {
    node.root.join("root/pki")
}

/// Files (not dirs) under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// What bootstrap and rotation left in the cert dir: every file but the
/// kubelet port's self-signed pair, which shares the dir as upstream's
/// `--cert-dir` does.
fn credentials(node: &Node) -> Vec<PathBuf> {
    files_under(&cert_dir(node))
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n == "kubelet.crt" || n == "kubelet.key")
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

fn wait_ready(cp: &ControlPlane, node: &Node, within: Duration) -> Value {
    wait_for(within, || cp.node(&node.node_name).filter(is_ready)).unwrap_or_else(|| {
        panic!(
            "node {} not Ready within {within:?}: {:?}\n{}",
            node.node_name,
            cp.node(&node.node_name)
                .map(|n| n["status"]["conditions"].clone()),
            node.log_tail(60)
        )
    })
}

fn log_count(node: &Node, needle: &str) -> usize {
    sync_support::count_lines(&node.log_path, needle)
}

fn wait_log(node: &Node, needle: &str, count: usize, within: Duration) {
    wait_for(within, || (log_count(node, needle) >= count).then_some(())).unwrap_or_else(|| {
        panic!(
            "no {count} log line(s) with {needle:?} within {within:?}:\n{}",
            node.log_tail(60)
        )
    });
}

/// Leaf certificate facts of a PEM file (chain, then key), checked to be
/// signed by the control plane's CA with openssl.
fn check_cert(cp: &ControlPlane, pem: &Path) -> picolet::kube::x509::CertInfo {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(cp.dir.join("pki/ca.crt"))
        .arg(pem)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl verify {}: {}{}",
        pem.display(),
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let chain = picolet::kube::certstore::read_chain(&std::fs::read(pem).unwrap(), "pem").unwrap();
    picolet::kube::x509::info(&chain[0]).unwrap()
}

/// Whether the node's kubelet port presents a certificate for `name` that
/// the cluster CA signed (curl's verdict; the HTTP answer does not matter).
fn port_serves_cluster_cert(cp: &ControlPlane, node: &Node, name: &str) -> bool {
    let o = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "5", "--cacert"])
        .arg(cp.dir.join("pki/ca.crt"))
        .arg("--resolve")
        .arg(format!("{name}:{}:127.0.0.1", node.port))
        .arg(format!("https://{name}:{}/healthz", node.port))
        .output()
        .expect("curl");
    o.status.success()
}

fn csrs(cp: &ControlPlane) -> Vec<Value> {
    cp.get_json(&["get", "csr"])
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn pending(csr: &Value) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .is_none_or(|c| c.is_empty())
}

/// Waits for a pending request of `signer` by `username` not in `seen`.
fn wait_pending_csr(
    cp: &ControlPlane,
    node: &Node,
    signer: &str,
    username: &str,
    seen: &[&str],
) -> String {
    wait_for(Duration::from_secs(120), || {
        csrs(cp)
            .into_iter()
            .filter(|c| {
                c["spec"]["signerName"] == signer && c["spec"]["username"] == username && pending(c)
            })
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
            .find(|n| !seen.contains(&n.as_str()))
    })
    .unwrap_or_else(|| {
        panic!(
            "no pending {signer} request by {username}\n{}",
            node.log_tail(40)
        )
    })
}

fn static_container(node: &Node) -> (String, i32) {
    let p = node.wait_pod("p", Duration::from_secs(60), |p| {
        sync_support::phase(p) == "Running"
    });
    let c = sync_support::container(&p, "main");
    (c.container_id.clone().unwrap_or_default(), c.restart_count)
}

#[test]
fn join_refuses_bad_input_then_joins_and_turns_ready() {
    let cp = ControlPlane::shared();
    wait_signed(&cp);
    let n = 56;
    let mut node = bootstrap_node(n, &cp, "");
    let srv = server(&cp);
    let tok = token(&cp);
    let hash = ca_hash(&cp);
    let (id, _) = tok.split_once('.').unwrap();
    let nothing_left = |node: &Node, what: &str| {
        assert!(!etc(n).exists(), "{what}: {:?}", files_under(&etc(n)));
        assert!(credentials(node).is_empty(), "{what}");
    };

    // A CA hash that is not the cluster's: refused, before any file.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let o = join(
        n,
        &node,
        &[
            "--server",
            &srv,
            "--token",
            &tok,
            "--discovery-token-ca-cert-hash",
            &wrong,
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not the one given"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains(&hash), "{}", stderr(&o));
    nothing_left(&node, "wrong hash");

    // The right ID with a wrong secret: the signature does not verify.
    let bad_secret = format!("{id}.0000000000000000");
    let o = join(
        n,
        &node,
        &[
            "--server",
            &srv,
            "--token",
            &bad_secret,
            "--discovery-token-ca-cert-hash",
            &hash,
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the token secret is wrong"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("0000000000000000"),
        "the secret is shown"
    );
    nothing_left(&node, "wrong secret");

    // A token the cluster does not know: no signature for it.
    let o = join(
        n,
        &node,
        &[
            "--server",
            &srv,
            "--token",
            "zzz056.0000000000000000",
            "--discovery-token-ca-cert-hash",
            &hash,
            "--discovery-timeout",
            "3s",
        ],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no signature for token ID \"zzz056\"") && e.contains("gave up"),
        "{e}"
    );
    nothing_left(&node, "unknown token");

    // An expired token: the bootstrapsigner does not sign for it.
    let _ = cp.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "secret",
        "bootstrap-token-exp056",
        "--ignore-not-found",
    ]);
    cp.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: bootstrap-token-exp056, namespace: kube-system}\n\
         type: bootstrap.kubernetes.io/token\nstringData:\n  token-id: exp056\n  token-secret: 0123456789abcdef\n  expiration: \"2020-01-01T00:00:00Z\"\n  usage-bootstrap-authentication: \"true\"\n  usage-bootstrap-signing: \"true\"\n",
    );
    let o = join(
        n,
        &node,
        &[
            "--server",
            &srv,
            "--token",
            "exp056.0123456789abcdef",
            "--discovery-token-ca-cert-hash",
            &hash,
            "--discovery-timeout",
            "3s",
        ],
    );
    let _ = cp.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "secret",
        "bootstrap-token-exp056",
        "--ignore-not-found",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no signature for token ID \"exp056\""),
        "{}",
        stderr(&o)
    );
    nothing_left(&node, "expired token");

    // No pin and no explicit opt-out: refused.
    let o = join(n, &node, &["--server", &srv, "--token", &tok]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--discovery-token-ca-cert-hash"),
        "{}",
        stderr(&o)
    );
    nothing_left(&node, "no pin");

    // The right hash: `picolet join --run`, timed until the Node is Ready.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log_path)
        .unwrap();
    let started = Instant::now();
    let mut child = Command::new(PICOLET)
        .args(["join", "--run", "--v", "4"])
        .args(["--config", node.config_path.to_str().unwrap()])
        .args(["--root-dir", node.root.join("root").to_str().unwrap()])
        .args(["--hostname-override", &node.node_name])
        .args(node_args(n))
        .args([
            "--server",
            &srv,
            "--token",
            &tok,
            "--discovery-token-ca-cert-hash",
            &hash,
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ready = wait_for(Duration::from_secs(60), || {
        cp.node(&node.node_name).filter(is_ready)
    });
    let took = started.elapsed();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    assert!(ready.is_some(), "not Ready:\n{}", node.log_tail(60));
    eprintln!(
        "FIGURE picolet join --run -> node Ready: {:.2} s",
        took.as_secs_f64()
    );

    // The files: 0600, the certificate the cluster CA's, for this node.
    for f in ["kubeconfig", "bootstrap-kubeconfig", "pki/ca.crt"] {
        assert_eq!(mode(&etc(n).join(f)), 0o600, "{f}");
    }
    let current = cert_dir(&node).join("kubelet-client-current.pem");
    assert!(std::fs::symlink_metadata(&current)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode(&current), 0o600);
    assert!(!cert_dir(&node).join("kubelet-client.key.tmp").exists());
    let info = check_cert(&cp, &current);
    assert_eq!(
        info.common_name.as_deref(),
        Some("system:node:sync-node-56")
    );
    assert_eq!(info.organizations, vec!["system:nodes"]);
    let text = std::fs::read_to_string(&current).unwrap();
    assert!(text.contains("BEGIN CERTIFICATE") && text.contains("BEGIN PRIVATE KEY"));
    assert!(!std::fs::read_to_string(node.log_path.clone())
        .unwrap()
        .contains(tok.split_once('.').unwrap().1));

    // Joined already: a second join changes nothing and says so.
    let before = std::fs::read(etc(n).join("kubeconfig")).unwrap();
    let o = join(
        n,
        &node,
        &[
            "--server",
            &srv,
            "--token",
            &tok,
            "--discovery-token-ca-cert-hash",
            &hash,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("works already"), "{}", stderr(&o));
    assert_eq!(std::fs::read(etc(n).join("kubeconfig")).unwrap(), before);

    // And `picolet run` goes on with what the join wrote.
    node.start();
    wait_ready(&cp, &node, Duration::from_secs(30));
    cp.forget_node(&node.node_name);
}

#[test]
fn bootstraps_from_the_bootstrap_kubeconfig_alone() {
    let cp = ControlPlane::shared();
    let n = 57;
    let mut node = bootstrap_node(n, &cp, "");
    // First a token the server refuses.
    write_bootstrap_kubeconfig(n, &cp, Some("bad057.0123456789abcdef"));
    node.put_manifest("p.yaml", &busybox_pod("p", "Always", "sleep 3600"));
    node.start();
    let (cid, _) = static_container(&node);
    wait_log(
        &node,
        "the bootstrap token is wrong, expired or deleted",
        1,
        Duration::from_secs(30),
    );
    assert!(log_count(&node, "local pods keep running") >= 1);
    assert!(credentials(&node).is_empty(), "{:?}", credentials(&node));
    assert!(!etc(n).join("kubeconfig").exists());

    // The right token: the next attempt (30 s on) joins.
    let started = Instant::now();
    write_bootstrap_kubeconfig(n, &cp, None);
    let n_json = wait_ready(&cp, &node, Duration::from_secs(60));
    eprintln!(
        "FIGURE fixed token -> Ready: {:.1} s (retry period 30 s)",
        started.elapsed().as_secs_f64()
    );
    let uid = n_json["metadata"]["uid"].clone();
    let current = cert_dir(&node).join("kubelet-client-current.pem");
    let info = check_cert(&cp, &current);
    assert_eq!(
        info.common_name.as_deref(),
        Some("system:node:sync-node-57")
    );
    assert_eq!(info.organizations, vec!["system:nodes"]);
    assert_eq!(mode(&current), 0o600);
    assert_eq!(mode(&etc(n).join("kubeconfig")), 0o600);
    // The request as the API server has it: ours, approved, from the token.
    let id = token(&cp).split_once('.').unwrap().0.to_string();
    let mine: Vec<Value> = csrs(&cp)
        .into_iter()
        .filter(|c| {
            c["spec"]["username"] == format!("system:bootstrap:{id}").as_str()
                && c["status"]["certificate"].is_string()
                && {
                    let pem = base64_decode(c["status"]["certificate"].as_str().unwrap());
                    let chain = picolet::kube::certstore::read_chain(&pem, "csr").unwrap();
                    picolet::kube::x509::info(&chain[0]).unwrap().spki == info.spki
                }
        })
        .collect();
    assert_eq!(mine.len(), 1, "the request for this certificate");
    let c = &mine[0];
    assert!(c["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("node-csr-"));
    assert_eq!(
        c["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(
        c["spec"]["usages"],
        serde_json::json!(["digital signature", "client auth"])
    );

    // A corrupt certificate file at start-up: bootstrapped again, the
    // static pod untouched, the same Node.
    node.terminate(Duration::from_secs(30));
    let target = std::fs::canonicalize(&current).unwrap();
    std::fs::write(&target, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    node.start();
    wait_log(
        &node,
        "requesting a client certificate with the bootstrap kubeconfig",
        2,
        Duration::from_secs(30),
    );
    let again = wait_ready(&cp, &node, Duration::from_secs(60));
    assert_eq!(
        again["metadata"]["uid"], uid,
        "the Node was registered again"
    );
    let info2 = check_cert(&cp, &current);
    assert_ne!(info2.spki, info.spki, "a new key");
    let (cid2, restarts) = static_container(&node);
    assert_eq!(cid2, cid, "the static pod's container was replaced");
    assert_eq!(restarts, 0);
    cp.forget_node(&node.node_name);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Approves every pending kubelet-serving request of `user` until
/// stopped; counts them.
fn approver(
    cp: &ControlPlane,
    user: String,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let (s, c, cp) = (stop.clone(), count.clone(), cp.clone());
    let h = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            for csr in csrs(&cp) {
                if csr["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
                    && csr["spec"]["username"] == user.as_str()
                    && pending(&csr)
                {
                    let name = csr["metadata"]["name"].as_str().unwrap_or_default();
                    if cp
                        .kubectl(&["certificate", "approve", name])
                        .status
                        .success()
                    {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    (stop, count, h)
}

#[test]
fn rotates_client_and_serving_certificates_before_they_expire() {
    // One-minute certificates (back-dated 5 min by the signer): renewed
    // every 42..54 s.
    let cp = private_cp(3, "--cluster-signing-duration=1m");
    let _purge = cp.purge_on_drop();
    wait_signed(&cp);
    let n = 58;
    let mut node = bootstrap_node(n, &cp, "serverTLSBootstrap: true");
    write_bootstrap_kubeconfig(n, &cp, None);
    node.put_manifest("p.yaml", &busybox_pod("p", "Always", "sleep 3600"));
    let (stop, approved, approver) = approver(&cp, "system:node:sync-node-58".into());
    node.start();
    let (cid, _) = static_container(&node);
    wait_ready(&cp, &node, Duration::from_secs(60));
    let first = check_cert(&cp, &cert_dir(&node).join("kubelet-client-current.pem"));
    let life = first
        .validity
        .not_after
        .duration_since(first.validity.not_before);
    assert!(
        life.as_secs() <= 6 * 60 + 5,
        "certificates of {life:?}: the signer ignored the flag"
    );

    // Ready throughout, the Lease renewed, while the certificates rotate.
    let started = Instant::now();
    let mut not_ready = Vec::new();
    let mut last_renew = String::new();
    let mut renew_seen = Instant::now();
    let mut max_gap = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(240) {
        if let Some(nj) = cp.node(&node.node_name) {
            if !is_ready(&nj) {
                not_ready.push(format!(
                    "{:?}: {}",
                    started.elapsed(),
                    nj["status"]["conditions"]
                ));
            }
        }
        if let Some(l) = cp.lease(&node.node_name) {
            let r = l["spec"]["renewTime"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if r != last_renew {
                max_gap = max_gap.max(renew_seen.elapsed());
                renew_seen = Instant::now();
                last_renew = r;
            }
        }
        if log_count(&node, "client certificate rotated") >= 3
            && log_count(&node, "serving certificate: node-csr") >= 2
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    approver.join().unwrap();
    let rotations = log_count(&node, "client certificate rotated");
    let serving = log_count(&node, "serving certificate: node-csr");
    eprintln!(
        "FIGURE {rotations} client and {serving} serving rotations in {:.0} s; longest gap between \
         Lease renewals {:.1} s; {} serving approvals",
        started.elapsed().as_secs_f64(),
        max_gap.as_secs_f64(),
        approved.load(Ordering::Relaxed)
    );
    assert!(
        rotations >= 3,
        "{rotations} rotations\n{}",
        node.log_tail(80)
    );
    assert!(
        serving >= 2,
        "{serving} serving certificates\n{}",
        node.log_tail(80)
    );
    assert!(
        not_ready.is_empty(),
        "not Ready: {not_ready:?}\n{}",
        node.log_tail(80)
    );
    assert!(
        max_gap < Duration::from_secs(25),
        "Lease not renewed for {max_gap:?}"
    );
    // The first certificate expired long ago: the node works with the new one.
    assert!(first.validity.not_after < jiff::Timestamp::now());
    let now = check_cert(&cp, &cert_dir(&node).join("kubelet-client-current.pem"));
    assert!(now.validity.not_after > jiff::Timestamp::now());
    assert_ne!(now.spki, first.spki, "rotation makes a new key");
    // No request failed for lack of credentials.
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    for bad in ["401 Unauthorized", "certificate expired", "rotation failed"] {
        assert!(
            !log.lines()
                .any(|l| (l.starts_with("E ") || l.starts_with("W ")) && l.contains(bad)),
            "{bad} in the log:\n{}",
            node.log_tail(80)
        );
    }
    // The pod was not touched.
    let (cid2, restarts) = static_container(&node);
    assert_eq!((cid2, restarts), (cid, 0));
    // Old pairs are pruned: the current and the previous remain.
    let pems: Vec<_> = files_under(&cert_dir(&node))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("kubelet-client-2"))
        .collect();
    assert!(pems.len() <= 2, "{pems:?}");
    // The serving certificate: signed by the cluster CA, for the node.
    let serving_pem = cert_dir(&node).join("kubelet-server-current.pem");
    let s = check_cert(&cp, &serving_pem);
    assert_eq!(s.common_name.as_deref(), Some("system:node:sync-node-58"));
    let chain =
        picolet::kube::certstore::read_chain(&std::fs::read(&serving_pem).unwrap(), "s").unwrap();
    let (dns, ips) = picolet::kube::x509::subject_alt_names(&chain[0]).unwrap();
    assert_eq!(dns, vec!["sync-node-58"]);
    assert_eq!(ips, vec![picolet::node::facts::node_ip(None).unwrap()]);
    assert_eq!(mode(&serving_pem), 0o600);
    node.terminate(Duration::from_secs(30));
}

#[test]
fn denied_and_unapproved_requests_give_clear_errors() {
    // No automatic approval: every request waits for the test.
    let cp = private_cp(4, "--controllers=-csrapproving");
    let _purge = cp.purge_on_drop();
    wait_signed(&cp);
    let n = 59;
    let mut node = bootstrap_node(n, &cp, "serverTLSBootstrap: true");
    let srv = server(&cp);
    let tok = token(&cp);
    let hash = ca_hash(&cp);

    // `picolet join` whose request nobody approves: an error, and the
    // files it wrote are gone again.
    let o = join(
        n,
        &node,
        &[
            "--server",
            &srv,
            "--token",
            &tok,
            "--discovery-token-ca-cert-hash",
            &hash,
            "--timeout",
            "5s",
        ],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("was not approved within 5s"), "{e}");
    assert!(!etc(n).exists(), "{:?}", files_under(&etc(n)));
    assert!(
        !cert_dir(&node).exists(),
        "{:?}",
        files_under(&cert_dir(&node))
    );
    // Its request stays pending on the server: out of the way.
    let o = cp.kubectl(&["delete", "csr", "--all"]);
    assert!(o.status.success(), "{o:?}");

    // picolet run: the request times out (picolet.certificateRequestTimeout),
    // the next is denied, the one after approved; the static pod runs all along.
    let cfg = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(
        &node.config_path,
        cfg.replace("picolet:\n", "picolet:\n  certificateRequestTimeout: 15s\n"),
    )
    .unwrap();
    write_bootstrap_kubeconfig(n, &cp, None);
    node.put_manifest("p.yaml", &busybox_pod("p", "Always", "sleep 3600"));
    node.start();
    let (cid, _) = static_container(&node);
    let boot_user = format!("system:bootstrap:{}", tok.split_once('.').unwrap().0);
    let signer = "kubernetes.io/kube-apiserver-client-kubelet";
    let first = wait_pending_csr(&cp, &node, signer, &boot_user, &[]);
    wait_log(
        &node,
        "waiting for it to be approved and signed",
        1,
        Duration::from_secs(10),
    );
    wait_log(
        &node,
        &format!("{first} was not approved within 15s"),
        1,
        Duration::from_secs(30),
    );
    assert!(log_count(&node, "TLS bootstrap failed") >= 1);
    assert!(!cert_dir(&node).join("kubelet-client.key.tmp").exists());
    assert!(!etc(n).join("kubeconfig").exists());

    let second = wait_pending_csr(&cp, &node, signer, &boot_user, &[&first]);
    let o = cp.kubectl(&["certificate", "deny", &second]);
    assert!(o.status.success(), "{o:?}");
    wait_log(
        &node,
        &format!("{second} was denied"),
        1,
        Duration::from_secs(20),
    );
    assert!(credentials(&node).is_empty(), "{:?}", credentials(&node));
    assert!(!etc(n).join("kubeconfig").exists());
    assert!(node.exited().is_none());
    assert_eq!(static_container(&node).0, cid);

    let third = wait_pending_csr(&cp, &node, signer, &boot_user, &[&first, &second]);
    let o = cp.kubectl(&["certificate", "approve", &third]);
    assert!(o.status.success(), "{o:?}");
    wait_ready(&cp, &node, Duration::from_secs(60));

    // The serving certificate waits for an operator, then is used.
    let user = "system:node:sync-node-59";
    let req = wait_pending_csr(&cp, &node, "kubernetes.io/kubelet-serving", user, &[]);
    wait_log(
        &node,
        &format!("kubectl certificate approve {req}"),
        1,
        Duration::from_secs(10),
    );
    let serving_pem = cert_dir(&node).join("kubelet-server-current.pem");
    assert!(!serving_pem.exists());
    // Meanwhile the port answers with its self-signed certificate.
    assert!(!port_serves_cluster_cert(&cp, &node, "sync-node-59"));
    // What it asks for, read with openssl.
    let csr = cp.get_json(&["get", "csr", &req]).unwrap();
    assert_eq!(
        csr["spec"]["usages"],
        serde_json::json!(["digital signature", "key encipherment", "server auth"])
    );
    let pem = base64_decode(csr["spec"]["request"].as_str().unwrap());
    let f = node.root.join("serving.csr");
    std::fs::write(&f, &pem).unwrap();
    let o = Command::new("openssl")
        .args(["req", "-verify", "-noout", "-text", "-in"])
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}{text}", stderr(&o));
    let ip = picolet::node::facts::node_ip(None).unwrap();
    assert!(
        text.contains(&format!("DNS:sync-node-59, IP Address:{ip}")),
        "{text}"
    );
    let o = cp.kubectl(&["certificate", "approve", &req]);
    assert!(o.status.success(), "{o:?}");
    wait_log(&node, "in use", 1, Duration::from_secs(30));
    let s = check_cert(&cp, &serving_pem);
    assert_eq!(s.common_name.as_deref(), Some(user));
    assert_eq!(s.organizations, vec!["system:nodes"]);
    assert!(!cert_dir(&node).join("kubelet-server.key.tmp").exists());
    // The kubelet port now presents it, without a restart.
    assert!(
        wait_for(Duration::from_secs(10), || port_serves_cluster_cert(
            &cp,
            &node,
            "sync-node-59"
        )
        .then_some(()))
        .is_some(),
        "the kubelet port does not serve the signed certificate\n{}",
        node.log_tail(40)
    );
    assert_eq!(static_container(&node), (cid, 0));
    node.terminate(Duration::from_secs(30));
}
