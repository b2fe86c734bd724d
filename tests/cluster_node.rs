//! Cluster membership against the real kube-apiserver v1.31 of
//! `../shared/k8s`: registration, node status and its reporting rules,
//! the Lease, re-registration, NodeRestriction, and picolet's behaviour
//! when the kubeconfig or the server is bad, checked with `kubectl` as a
//! user would.
//!
//! Sync-test numbers 40..=45 (see `sync_support`); node names
//! `sync-node-<n>`.

mod cluster_support;
mod sync_support;

use cluster_support::{is_ready, node_condition, time, wait_for, ControlPlane};
use picolet::api::quantity::Quantity;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sync_support::{busybox_pod, Node, Opts};

fn q(v: &Value) -> i64 {
    Quantity::parse(v.as_str().unwrap_or_else(|| panic!("quantity {v}")))
        .unwrap()
        .value()
}

fn member(n: u32, cp: &ControlPlane, extra: &str, args: &[&str]) -> Node {
    let name = format!("sync-node-{n}");
    cp.forget_node(&name);
    let opts = Opts {
        kubeconfig: Some(cp.node_kubeconfig(&name)),
        extra: extra.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Opts::default()
    };
    Node::new(n, opts)
}

fn wait_ready(cp: &ControlPlane, node: &Node, within: Duration) -> Value {
    wait_for(within, || cp.node(&node.node_name).filter(is_ready)).unwrap_or_else(|| {
        panic!(
            "node {} not Ready within {within:?}: {:?}\n{}",
            node.node_name,
            cp.node(&node.node_name)
                .map(|n| n["status"]["conditions"].clone()),
            node.log_tail(40)
        )
    })
}

fn log_count(node: &Node, needle: &str) -> usize {
    sync_support::count_lines(&node.log_path, needle)
}

/// Warning and error lines holding `needle` (debug lines repeat per attempt
/// by design; what an operator reads must not).
fn warn_count(node: &Node, needle: &str) -> usize {
    std::fs::read_to_string(&node.log_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| (l.starts_with("W ") || l.starts_with("E ")) && l.contains(needle))
        .count()
}

#[test]
fn registers_reports_status_and_renews_its_lease() {
    let cp = ControlPlane::shared();
    let mut node = member(
        40,
        &cp,
        "registerWithTaints: [{key: dedicated, value: edge, effect: NoSchedule}]\n\
         nodeStatusUpdateFrequency: 2s\nmaxPods: 50",
        &["--node-labels", "site=hall-3,node.kubernetes.io/role=edge"],
    );
    let started = Instant::now();
    node.start();
    let n = wait_ready(&cp, &node, Duration::from_secs(30));
    eprintln!("Ready {:?} after start", started.elapsed());
    let name = node.node_name.clone();

    // Capacity and allocatable from this machine and the config.
    let st = &n["status"];
    let cores = std::thread::available_parallelism().unwrap().get() as i64;
    assert_eq!(q(&st["capacity"]["cpu"]), cores, "{st}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total = picolet::stats::machine::meminfo_bytes(&meminfo, "MemTotal").unwrap() as i64;
    assert_eq!(q(&st["capacity"]["memory"]), total);
    assert_eq!(q(&st["allocatable"]["memory"]), total - (100 << 20));
    assert_eq!(st["capacity"]["pods"], "50");
    assert!(q(&st["capacity"]["ephemeral-storage"]) > 0);
    assert!(q(&st["allocatable"]["ephemeral-storage"]) < q(&st["capacity"]["ephemeral-storage"]));

    // Addresses, endpoint, nodeInfo.
    let ip = picolet::node::facts::node_ip(None).unwrap().to_string();
    assert_eq!(
        st["addresses"],
        serde_json::json!([{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}])
    );
    assert_eq!(st["daemonEndpoints"]["kubeletEndpoint"]["Port"], node.port);
    let info = &st["nodeInfo"];
    assert_eq!(info["kubeletVersion"], picolet::node::kubelet_version());
    assert_eq!(
        info["containerRuntimeVersion"],
        picolet::node::container_runtime_version()
    );
    assert_eq!(info["architecture"], picolet::kube::go_arch());
    assert_eq!(info["operatingSystem"], "linux");
    assert_eq!(info["kubeProxyVersion"], "");
    assert_eq!(
        info["kernelVersion"],
        picolet::node::facts::kernel_version()
    );
    assert_eq!(info["osImage"], picolet::node::facts::read_os_image());
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(info["bootID"], boot_id.trim());

    // Labels, taints, annotation.
    let labels = &n["metadata"]["labels"];
    for (k, v) in [
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", picolet::kube::go_arch()),
        ("beta.kubernetes.io/arch", picolet::kube::go_arch()),
        ("site", "hall-3"),
        ("node.kubernetes.io/role", "edge"),
    ] {
        assert_eq!(labels[k], v, "label {k}: {labels}");
    }
    let taints = n["spec"]["taints"].as_array().expect("taints");
    assert!(
        taints.iter().any(|t| t["key"] == "dedicated"
            && t["value"] == "edge"
            && t["effect"] == "NoSchedule"),
        "{taints:?}"
    );
    assert_eq!(
        n["metadata"]["annotations"]["volumes.kubernetes.io/controller-managed-attach-detach"],
        "true"
    );
    // The imported test images are listed, largest first.
    let images = st["images"].as_array().expect("images");
    assert!(
        images.iter().any(|i| i["names"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == sync_support::BUSYBOX))),
        "{images:?}"
    );
    let conds: Vec<&str> = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for c in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
        assert!(conds.contains(&c), "{conds:?}");
    }
    let ready = node_condition(&n, "Ready").unwrap();
    assert_eq!(ready["reason"], "KubeletReady");
    assert_eq!(ready["message"], "kubelet is posting ready status");

    // The node's events, in namespace default.
    let selector = format!("involvedObject.name={name}");
    let reasons = wait_for(Duration::from_secs(10), || {
        let evs = cp.get_json(&[
            "-n",
            "default",
            "get",
            "events",
            "--field-selector",
            &selector,
        ])?;
        let r: std::collections::BTreeSet<String> = evs["items"]
            .as_array()?
            .iter()
            .filter(|e| e["source"]["component"] == "kubelet")
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect();
        r.contains("NodeReady").then_some(r)
    })
    .unwrap_or_else(|| panic!("no node events\n{}", node.log_tail(20)));
    for want in [
        "Starting",
        "NodeHasSufficientMemory",
        "NodeHasNoDiskPressure",
        "NodeHasSufficientPID",
        "NodeReady",
    ] {
        assert!(reasons.contains(want), "{want} missing: {reasons:?}");
    }

    // The Lease: held by the node, owned by it, renewed every ~10 s. Over
    // the same time the status is computed every 2 s but not sent: nothing
    // changed and the report frequency (5 min) has not passed.
    let uid = n["metadata"]["uid"].as_str().unwrap().to_string();
    let heartbeat = ready["lastHeartbeatTime"].clone();
    let mut renewals: Vec<jiff::Timestamp> = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(33) {
        let l = cp.lease(&name).expect("the node lease exists");
        assert_eq!(l["spec"]["holderIdentity"], name.as_str());
        assert_eq!(l["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(l["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
        let rt = time(&l["spec"]["renewTime"]);
        if renewals.last() != Some(&rt) {
            renewals.push(rt);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(renewals.len() >= 3, "lease renewals seen: {renewals:?}");
    for (i, w) in renewals.windows(2).enumerate() {
        let gap = w[1].duration_since(w[0]).as_secs_f64();
        // One renewal may be left out after a status write (the Ready
        // heartbeat counts): only the start-up writes precede this window.
        let max = if i == 0 { 23.0 } else { 13.0 };
        assert!(
            (8.0..=max).contains(&gap),
            "renewal gap {gap}s: {renewals:?}"
        );
    }
    let n2 = cp.node(&name).unwrap();
    assert_eq!(
        node_condition(&n2, "Ready").unwrap()["lastHeartbeatTime"],
        heartbeat,
        "the status was sent although nothing changed"
    );

    // A change is sent at once: the CNI network goes away → NotReady with
    // upstream's reason; back → Ready, with a new transition time.
    let conf = node.root.join("net.d/10-test.conflist");
    let saved = node.root.join("10-test.conflist.saved");
    std::fs::rename(&conf, &saved).unwrap();
    let nr = wait_for(Duration::from_secs(10), || {
        cp.node(&name).filter(|n| !is_ready(n))
    })
    .unwrap_or_else(|| {
        panic!(
            "no NotReady after the CNI config went\n{}",
            node.log_tail(30)
        )
    });
    let c = node_condition(&nr, "Ready").unwrap();
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "KubeletNotReady");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"
        ),
        "{msg}"
    );
    std::fs::rename(&saved, &conf).unwrap();
    let back = wait_ready(&cp, &node, Duration::from_secs(10));
    assert_ne!(
        node_condition(&back, "Ready").unwrap()["lastTransitionTime"],
        ready["lastTransitionTime"]
    );
    assert!(node.exited().is_none());
    cp.forget_node(&name);
}

#[test]
fn report_frequency_reregistration_and_operator_labels() {
    let cp = ControlPlane::shared();
    let mut node = member(
        41,
        &cp,
        "nodeStatusUpdateFrequency: 1s\nnodeStatusReportFrequency: 12s",
        &[],
    );
    node.start();
    let name = node.node_name.clone();
    let n = wait_ready(&cp, &node, Duration::from_secs(30));

    // With nothing changing, the status goes out once per report period
    // (12 s), not once per computation (1 s).
    let mut beats: Vec<Value> = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let hb =
            node_condition(&cp.node(&name).unwrap(), "Ready").unwrap()["lastHeartbeatTime"].clone();
        if beats.last() != Some(&hb) {
            beats.push(hb);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        (2..=4).contains(&beats.len()),
        "heartbeats in 30 s with a 12 s report period: {beats:?}"
    );

    // Somebody else's change to the status (the node controller marking
    // the node Unknown) is seen through the watch and corrected.
    let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown","message":"Kubelet stopped posting node status."}]}}"#;
    let out = cp.kubectl(&[
        "patch",
        "node",
        &name,
        "--subresource=status",
        "--type=strategic",
        "-p",
        patch,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    // (picolet may correct it before a `get` could see it.)
    let patched: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!is_ready(&patched));
    wait_for(Duration::from_secs(10), || cp.node(&name).filter(is_ready))
        .unwrap_or_else(|| panic!("Ready not restored\n{}", node.log_tail(30)));

    // An operator's label stays; a Node deleted by an operator comes back
    // (new UID) with its Lease owned by the new Node.
    let out = cp.kubectl(&["label", "node", &name, "team=ops"]);
    assert!(out.status.success(), "{out:?}");
    let old_uid = n["metadata"]["uid"].as_str().unwrap().to_string();
    let out = cp.kubectl(&["delete", "node", &name]);
    assert!(out.status.success(), "{out:?}");
    let again = wait_for(Duration::from_secs(20), || {
        cp.node(&name)
            .filter(|n| n["metadata"]["uid"] != old_uid.as_str() && is_ready(n))
    })
    .unwrap_or_else(|| panic!("node not registered again\n{}", node.log_tail(30)));
    let new_uid = again["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(log_count(&node, "was deleted from the API server"), 1);
    wait_for(Duration::from_secs(30), || {
        cp.lease(&name)
            .filter(|l| l["metadata"]["ownerReferences"][0]["uid"] == new_uid.as_str())
    })
    .unwrap_or_else(|| panic!("lease not owned by the new node: {:?}", cp.lease(&name)));

    // After a restart, picolet keeps an operator's label and restores the
    // labels it owns.
    let out = cp.kubectl(&[
        "label",
        "node",
        &name,
        "team=ops",
        "kubernetes.io/hostname=wrong",
        "--overwrite",
    ]);
    assert!(out.status.success(), "{out:?}");
    node.terminate(Duration::from_secs(10));
    node.start();
    let after = wait_for(Duration::from_secs(20), || {
        cp.node(&name)
            .filter(|n| n["metadata"]["labels"]["kubernetes.io/hostname"] == name.as_str())
    })
    .unwrap_or_else(|| panic!("hostname label not restored\n{}", node.log_tail(30)));
    assert_eq!(after["metadata"]["labels"]["team"], "ops");
    assert_eq!(
        after["metadata"]["uid"],
        new_uid.as_str(),
        "restart must not re-create the node"
    );
    assert!(log_count(&node, "was previously registered") >= 1);
    cp.forget_node(&name);
}

#[test]
fn node_credentials_for_another_name_are_not_used() {
    let cp = ControlPlane::shared();
    let other = "other-node-42";
    let kc = cp.node_kubeconfig(other);
    let mut node = Node::new(
        42,
        Opts {
            kubeconfig: Some(kc.clone()),
            ..Opts::default()
        },
    );
    cp.forget_node(&node.node_name);
    node.put_manifest("p.yaml", &busybox_pod("p", "Always", "sleep 3600"));
    node.start();
    node.wait_pod("p", Duration::from_secs(60), |p| {
        sync_support::phase(p) == "Running"
    });
    assert!(
        wait_for(Duration::from_secs(10), || (log_count(
            &node,
            "is for node \"other-node-42\""
        ) > 0)
            .then_some(()))
        .is_some(),
        "{}",
        node.log_tail(20)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        cp.node(&node.node_name).is_none(),
        "picolet registered with another node's credentials"
    );
    // What picolet avoided: NodeRestriction refuses a node writing another Node.
    let victim = "victim-node-42";
    cp.forget_node(victim);
    let manifest = node.root.join("victim.json");
    std::fs::write(
        &manifest,
        format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{victim}"}}}}"#),
    )
    .unwrap();
    let out = cp.kubectl(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = cp.kubectl_as(&kc, &["label", "node", victim, "x=y"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    cp.forget_node(victim);
    assert!(node.exited().is_none());
}

/// Writes a kubeconfig for `server` with the given cluster and user
/// fields (YAML lines, already indented).
fn kubeconfig(path: &Path, server: &str, cluster: &str, user: &str) -> PathBuf {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n{cluster}\
             contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n\
             users:\n- name: u\n  user:\n{user}"
        ),
    )
    .unwrap();
    path.to_path_buf()
}

fn openssl(args: &[&str], dir: &Path) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client certificate for `cn` signed by the cluster CA that expired in 2020.
fn expired_cert(cp: &ControlPlane, dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let pki = cp.dir.join("pki");
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\n\
         default_md=sha256\npolicy=p\n[p]\ncommonName=supplied\norganizationName=optional\n",
    )
    .unwrap();
    openssl(&["genrsa", "-out", "old.key", "2048"], dir);
    let subj = format!("/O=system:nodes/CN=system:node:{cn}");
    openssl(
        &[
            "req", "-new", "-key", "old.key", "-subj", &subj, "-out", "old.csr",
        ],
        dir,
    );
    let (ca, cakey) = (pki.join("ca.crt"), pki.join("ca.key"));
    openssl(
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            ca.to_str().unwrap(),
            "-keyfile",
            cakey.to_str().unwrap(),
            "-in",
            "old.csr",
            "-out",
            "old.crt",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-notext",
        ],
        dir,
    );
    (dir.join("old.crt"), dir.join("old.key"))
}

#[test]
fn bad_kubeconfigs_are_reported_and_local_pods_keep_running() {
    let cp = ControlPlane::shared();
    let mut node = Node::new(43, Opts::default());
    let name = node.node_name.clone();
    cp.forget_node(&name);
    let dir = node.root.join("kc");
    std::fs::create_dir_all(&dir).unwrap();
    let server = "https://127.0.0.1:6443";
    let good_kc = std::fs::read_to_string(cp.node_kubeconfig(&name)).unwrap();
    let ca_line = good_kc
        .lines()
        .find(|l| l.trim_start().starts_with("certificate-authority-data:"))
        .unwrap()
        .to_string();
    let ca = format!("{ca_line}\n");
    let (old_crt, old_key) = expired_cert(&cp, &dir, &name);
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=not-the-cluster-ca",
        ],
        &dir,
    );
    let pki = cp.dir.join("pki/nodes");
    let cert_lines = format!(
        "    client-certificate: {}\n    client-key: {}\n",
        pki.join(format!("{name}.crt")).display(),
        pki.join(format!("{name}.key")).display()
    );
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.join("missing"), "read kubeconfig"),
        (
            {
                let p = dir.join("noctx");
                std::fs::write(&p, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
                p
            },
            "no current-context set",
        ),
        (
            kubeconfig(&dir.join("badpem"), server, &ca, "    client-certificate-data: bm90IGEgY2VydA==\n    client-key-data: bm90IGEga2V5\n"),
            "client-certificate-data: no certificate in PEM",
        ),
        (
            kubeconfig(
                &dir.join("expired"),
                server,
                &ca,
                &format!("    client-certificate: {}\n    client-key: {}\n", old_crt.display(), old_key.display()),
            ),
            "client certificate expired at 2020-01-02T00:00:00Z",
        ),
        (
            kubeconfig(
                &dir.join("wrongca"),
                server,
                &format!("    certificate-authority: {}\n", dir.join("other-ca.crt").display()),
                &cert_lines,
            ),
            "unreachable",
        ),
        (
            kubeconfig(&dir.join("token"), server, &ca, "    token: abcdef.0123456789abcdef\n"),
            "unable to register node sync-node-43: 401 Unauthorized",
        ),
    ];
    node.put_manifest("p.yaml", &busybox_pod("p", "Always", "sleep 3600"));
    for (i, (kc, want)) in cases.iter().enumerate() {
        node.set_opts(&Opts {
            kubeconfig: Some(kc.clone()),
            ..Opts::default()
        });
        let _ = std::fs::remove_file(&node.log_path);
        node.start();
        if i == 0 {
            node.wait_pod("p", Duration::from_secs(60), |p| {
                sync_support::phase(p) == "Running"
            });
        }
        let seen = wait_for(Duration::from_secs(15), || {
            (warn_count(&node, want) > 0).then_some(())
        });
        assert!(
            seen.is_some(),
            "case {i} ({}): no {want:?} in the log\n{}",
            kc.display(),
            node.log_tail(30)
        );
        // Not one line per attempt: the retries go on quietly for a while.
        std::thread::sleep(Duration::from_secs(6));
        assert_eq!(
            warn_count(&node, want),
            1,
            "case {i}: {}",
            node.log_tail(30)
        );
        if *want == "unreachable" {
            // The line names the server and what is wrong with it.
            let log = std::fs::read_to_string(&node.log_path).unwrap();
            let line = log
                .lines()
                .find(|l| l.starts_with("W ") && l.contains("unreachable"))
                .unwrap();
            assert!(
                line.contains(server) && line.contains("invalid peer certificate"),
                "{line}"
            );
        }
        assert!(
            node.exited().is_none(),
            "case {i}: picolet exited\n{}",
            node.log_tail(30)
        );
        let p = node.pod("p").expect("the static pod");
        assert_eq!(sync_support::phase(&p), "Running");
        assert_eq!(sync_support::container(&p, "main").restart_count, 0);
        assert!(cp.node(&name).is_none(), "case {i}: the node registered");
        node.terminate(Duration::from_secs(10));
    }
}

#[test]
fn api_server_outage_keeps_pods_running_and_recovers() {
    let cp = ControlPlane::private(1, "apiserver controller-manager");
    let _purge = cp.purge_on_drop();
    let mut node = member(44, &cp, "nodeStatusUpdateFrequency: 2s", &[]);
    let name = node.node_name.clone();
    node.put_manifest("p.yaml", &busybox_pod("p", "Always", "sleep 3600"));
    node.start();
    wait_ready(&cp, &node, Duration::from_secs(30));
    let p = node.wait_pod("p", Duration::from_secs(60), |p| {
        sync_support::phase(p) == "Running"
    });
    let cid = sync_support::container(&p, "main").container_id.clone();

    let pid = cp.apiserver_pid().expect("apiserver pid");
    sync_support::kill(pid, rustix::process::Signal::KILL);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(60) {
        let (code, body) =
            sync_support::http_get(node.healthz_port, "/healthz").expect("healthz answers");
        assert_eq!(
            (code, body.as_str()),
            (200, "ok"),
            "healthz during the outage"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let p = node.pod("p").unwrap();
    let c = sync_support::container(&p, "main");
    assert_eq!(
        c.container_id, cid,
        "the container was replaced during the outage"
    );
    assert_eq!(c.restart_count, 0);
    assert!(sync_support::running(c));
    // One line when the server went away, not one per attempt.
    assert_eq!(warn_count(&node, "unreachable"), 1, "{}", node.log_tail(40));

    cp.up();
    let back = Instant::now();
    let back_ts = jiff::Timestamp::now();
    cluster_support::ready_and_renewed_after(&cp, &name, back_ts, Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "not Ready with a renewed lease within 20 s of the apiserver's return: {:?}\n{}",
                cp.node(&name).map(|n| n["status"]["conditions"].clone()),
                node.log_tail(40)
            )
        });
    eprintln!(
        "Ready and renewed {:?} after the apiserver returned",
        back.elapsed()
    );
    assert!(
        log_count(&node, "reachable again") >= 1,
        "{}",
        node.log_tail(20)
    );
    cp.forget_node(&name);
}
