//! What pods take from the API server, on a picolet member of the real
//! control plane of `../shared/k8s`: the projected `kube-api-access-*`
//! volume the ServiceAccount admission plugin injects (a bound token the
//! apiserver's TokenReview accepts, the cluster CA, the namespace),
//! configMap and secret volumes (modes, tmpfs, updates, subPath), env from
//! configMaps and secrets, service variables, pods waiting for missing
//! objects, a refused TokenRequest, imagePullSecrets against a registry
//! with auth, and the Node authorizer's view (picolet asks only for what
//! its pods reference).
//!
//! Sync-test numbers 50..=54; each test has a namespace and a node of its
//! own and pins its pods to that node.

mod cluster_support;
mod image_support;
mod sync_support;

use cluster_support::{is_ready, wait_for, ControlPlane};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sync_support::{Node, Opts, BUSYBOX, HTTPD};

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn member(n: u32, cp: &ControlPlane, extra: &str) -> (Node, PathBuf) {
    let name = format!("sync-node-{n}");
    cp.forget_node(&name);
    let kubeconfig = cp.node_kubeconfig(&name);
    let opts = Opts {
        kubeconfig: Some(kubeconfig.clone()),
        extra: extra.to_string(),
        ..Opts::default()
    };
    let mut node = Node::new(n, opts);
    node.start();
    wait_for(Duration::from_secs(30), || cp.node(&name).filter(is_ready))
        .unwrap_or_else(|| panic!("node {name} not Ready\n{}", node.log_tail(30)));
    (node, kubeconfig)
}

/// `kubectl` as admin with `input` on stdin.
fn kubectl_stdin(cp: &ControlPlane, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .args(["--request-timeout", "10s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str]) {
    let out = cp.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pod(cp: &ControlPlane, ns: &str, name: &str) -> Option<Value> {
    cp.get_json(&["-n", ns, "get", "pod", name])
}

fn container_status(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn running(p: &Value) -> bool {
    !container_status(p)["state"]["running"].is_null()
}

fn waiting_reason(p: &Value) -> Option<String> {
    container_status(p)["state"]["waiting"]["reason"]
        .as_str()
        .map(str::to_string)
}

fn wait_running(cp: &ControlPlane, node: &Node, ns: &str, name: &str, within: Duration) -> Value {
    wait_for(within, || pod(cp, ns, name).filter(running)).unwrap_or_else(|| {
        panic!(
            "pod {ns}/{name} not running: {}\n{}",
            pod(cp, ns, name)
                .map(|p| p["status"].to_string())
                .unwrap_or_default(),
            node.log_tail(40)
        )
    })
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().expect("uid").to_string()
}

/// `<root>/pods/<uid>/volumes/<plugin>/<volume>` on the node.
fn volume_dir(node: &Node, p: &Value, plugin: &str, volume: &str) -> PathBuf {
    node.root
        .join("root/pods")
        .join(uid(p))
        .join("volumes")
        .join(plugin)
        .join(volume)
}

fn is_tmpfs(p: &Path) -> bool {
    #[allow(clippy::unnecessary_cast)]
    let t = rustix::fs::statfs(p).expect("statfs").f_type as i64;
    t == TMPFS_MAGIC
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// The content lines of a container's CRI log (first instance).
fn log_lines(node: &Node, p: &Value, container: &str) -> Vec<String> {
    let m = &p["metadata"];
    let dir = format!(
        "{}_{}_{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or(""),
        m["uid"].as_str().unwrap_or("")
    );
    let text = std::fs::read_to_string(
        node.root
            .join("logs")
            .join(dir)
            .join(container)
            .join("0.log"),
    )
    .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

#[test]
fn default_deployment_runs_with_a_bound_service_account_token() {
    let cp = ControlPlane::shared();
    let ns = "pl-apivol-sa";
    cp.namespace(ns);
    let (node, node_kubeconfig) = member(50, &cp, "syncFrequency: 10s\n");
    let name = node.node_name.clone();
    // The namespace's default service account and CA bundle come from
    // controllers; kubectl create deployment needs neither, the pod does.
    wait_for(Duration::from_secs(30), || {
        cp.get_json(&["-n", ns, "get", "configmap", "kube-root-ca.crt"])
    })
    .expect("kube-root-ca.crt published");
    wait_for(Duration::from_secs(30), || {
        cp.get_json(&["-n", ns, "get", "serviceaccount", "default"])
    })
    .expect("default service account");

    // A Deployment as `kubectl create deployment` makes it, pinned here.
    let out = cp.kubectl(&[
        "-n",
        ns,
        "create",
        "deployment",
        "web",
        "--image",
        HTTPD,
        "--dry-run=client",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut d: Value = serde_json::from_slice(&out.stdout).unwrap();
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": name});
    cp.apply(&d.to_string());
    let p = wait_for(Duration::from_secs(90), || {
        cp.list("pods", ns, Some("app=web"))
            .into_iter()
            .find(|p| running(p) && p["status"]["phase"] == "Running")
    })
    .unwrap_or_else(|| {
        panic!(
            "deployment pod not running: {:?}\n{}",
            cp.list("pods", ns, Some("app=web"))
                .iter()
                .map(|p| p["status"].clone())
                .collect::<Vec<_>>(),
            node.log_tail(40)
        )
    });
    let pod_name = p["metadata"]["name"].as_str().unwrap().to_string();

    // The admission plugin's projected volume, as picolet wrote it.
    let vol = p["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| {
            v["name"]
                .as_str()
                .filter(|n| n.starts_with("kube-api-access-"))
        })
        .expect("kube-api-access volume injected")
        .to_string();
    let dir = volume_dir(&node, &p, "kubernetes.io~projected", &vol);
    assert!(is_tmpfs(&dir), "{} is not a tmpfs", dir.display());
    let token = std::fs::read_to_string(dir.join("token")).expect("token file");
    let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
    let root_ca = cp
        .get_json(&["-n", ns, "get", "configmap", "kube-root-ca.crt"])
        .unwrap();
    assert_eq!(ca, root_ca["data"]["ca.crt"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(dir.join("namespace")).unwrap(), ns);
    assert_eq!(mode(&dir.join("token")), 0o644);
    assert!(std::fs::symlink_metadata(dir.join("..data"))
        .unwrap()
        .file_type()
        .is_symlink());

    // The apiserver authenticates it as the pod's service account, bound
    // to this pod, for its own audience.
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": token}});
    let out = kubectl_stdin(
        &cp,
        &["create", "-o", "json", "-f", "-"],
        &review.to_string(),
    );
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &r["status"];
    assert_eq!(st["authenticated"], true, "{st}");
    assert_eq!(
        st["user"]["username"],
        format!("system:serviceaccount:{ns}:default")
    );
    assert!(
        st["audiences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "https://kubernetes.default.svc.cluster.local"),
        "{st}"
    );
    assert_eq!(
        st["user"]["extra"]["authentication.kubernetes.io/pod-name"][0],
        pod_name.as_str()
    );
    assert_eq!(
        st["user"]["extra"]["authentication.kubernetes.io/pod-uid"][0],
        uid(&p).as_str()
    );

    // The Node authorizer: this node may read what its pods reference and
    // nothing else; picolet never asked for anything else.
    kubectl_ok(
        &cp,
        &[
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            "unreferenced",
            "--from-literal=k=v",
        ],
    );
    let out = cp.kubectl_as(
        &node_kubeconfig,
        &["-n", ns, "get", "secret", "unreferenced"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Forbidden") && err.contains("no relationship found between node"),
        "{err}"
    );
    let out = cp.kubectl_as(
        &node_kubeconfig,
        &["-n", ns, "get", "configmap", "kube-root-ca.crt"],
    );
    assert!(out.status.success(), "{out:?}");
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    let watched: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("watching ").map(|(_, w)| w))
        .filter(|w| w.starts_with("configmap ") || w.starts_with("secret "))
        .collect();
    assert_eq!(
        watched,
        [format!("configmap {ns}/kube-root-ca.crt").as_str()],
        "one watch per referenced object"
    );
    assert!(!log.contains("unreferenced"));

    // The Deployment's pod goes with the Deployment; so do its watches.
    kubectl_ok(
        &cp,
        &["-n", ns, "delete", "deployment", "web", "--wait=false"],
    );
    wait_for(Duration::from_secs(60), || {
        let log = std::fs::read_to_string(&node.log_path).unwrap();
        log.contains(&format!(
            "no longer watching configmap {ns}/kube-root-ca.crt"
        ))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("watch not stopped\n{}", node.log_tail(30)));
    cp.drop_namespace(ns);
}

const APP_OBJECTS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: app, namespace: NS}
data:
  app.conf: "v1"
  1badkey: "x"
binaryData:
  blob.bin: AJ//
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: NS}
stringData: {user: admin, pass: s3cret}
---
apiVersion: v1
kind: Service
metadata: {name: my-db, namespace: NS}
spec:
  ports:
  - {name: pg, port: 5432}
  - {name: metrics, port: 9187, protocol: UDP}
"#;

const APP_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: app, namespace: NS}
spec:
  nodeName: NODE
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: BUSYBOX
    imagePullPolicy: Never
    command: [sh, -c, 'env | sort; echo ---; while true; do echo "cfg=$(cat /etc/cfg/app.conf) sub=$(cat /etc/sub.conf)"; sleep 1; done']
    env:
    - {name: A, valueFrom: {configMapKeyRef: {name: app, key: app.conf}}}
    - {name: B, valueFrom: {secretKeyRef: {name: creds, key: user}}}
    - {name: C, valueFrom: {configMapKeyRef: {name: app, key: nope, optional: true}}}
    - {name: D, value: "$(A)-$(MY_DB_SERVICE_HOST)-$(S_pass)"}
    - {name: E, valueFrom: {secretKeyRef: {name: ghost, key: k, optional: true}}}
    - {name: S_user, value: override}
    envFrom:
    - configMapRef: {name: app}
    - prefix: S_
      secretRef: {name: creds}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: cfg, mountPath: /etc/sub.conf, subPath: app.conf}
    - {name: sec, mountPath: /etc/sec}
    - {name: opt, mountPath: /etc/opt}
  volumes:
  - {name: cfg, configMap: {name: app}}
  - name: sec
    secret:
      secretName: creds
      defaultMode: 0400
      items: [{key: pass, path: db/pass, mode: 0440}, {key: user, path: user}]
  - {name: opt, configMap: {name: ghost, optional: true}}
"#;

/// Upstream's service variables for one service (envvars.FromServices).
fn service_vars(name: &str, ip: &str, ports: &[(&str, u16, &str)]) -> BTreeMap<String, String> {
    let p = name.to_uppercase().replace('-', "_");
    let mut m = BTreeMap::new();
    m.insert(format!("{p}_SERVICE_HOST"), ip.to_string());
    m.insert(format!("{p}_SERVICE_PORT"), ports[0].1.to_string());
    for (n, port, _) in ports {
        if !n.is_empty() {
            m.insert(
                format!("{p}_SERVICE_PORT_{}", n.to_uppercase()),
                port.to_string(),
            );
        }
    }
    for (i, (_, port, proto)) in ports.iter().enumerate() {
        let url = format!("{}://{ip}:{port}", proto.to_lowercase());
        if i == 0 {
            m.insert(format!("{p}_PORT"), url.clone());
        }
        let pp = format!("{p}_PORT_{port}_{proto}");
        m.insert(format!("{pp}_PROTO"), proto.to_lowercase());
        m.insert(format!("{pp}_PORT"), port.to_string());
        m.insert(format!("{pp}_ADDR"), ip.to_string());
        m.insert(pp, url);
    }
    m
}

#[test]
fn config_map_and_secret_volumes_env_and_service_variables() {
    let cp = ControlPlane::shared();
    let ns = "pl-apivol-cm";
    cp.namespace(ns);
    let (node, _) = member(51, &cp, "syncFrequency: 10s\n");
    cp.apply(&APP_OBJECTS.replace("NS", ns));
    let db_ip = cp.get_json(&["-n", ns, "get", "service", "my-db"]).unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let k8s_ip = cp
        .get_json(&["-n", "default", "get", "service", "kubernetes"])
        .unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    cp.apply(
        &APP_POD
            .replace("NS", ns)
            .replace("NODE", &node.node_name)
            .replace("BUSYBOX", BUSYBOX),
    );
    let p = wait_running(&cp, &node, ns, "app", Duration::from_secs(60));
    let lines = wait_for(Duration::from_secs(20), || {
        let l = log_lines(&node, &p, "main");
        l.iter().any(|x| x.starts_with("cfg=")).then_some(l)
    })
    .unwrap_or_else(|| panic!("no output\n{}", node.log_tail(30)));

    // The environment, exactly as upstream builds it: what the process
    // was started with (a shell would drop `app.conf` from its own env).
    let cid = container_status(&p)["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = node.container_pid(&cid).expect("container pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env: BTreeMap<String, String> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(lines.iter().any(|l| l.starts_with("A=v1")));
    let mut want: BTreeMap<String, String> = [
        ("A", "v1".to_string()),
        ("B", "admin".to_string()),
        ("D", format!("v1-{db_ip}-s3cret")),
        ("app.conf", "v1".to_string()),
        ("S_user", "override".to_string()),
        ("S_pass", "s3cret".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    want.extend(service_vars(
        "kubernetes",
        &k8s_ip,
        &[("https", 443, "TCP")],
    ));
    want.extend(service_vars(
        "my-db",
        &db_ip,
        &[("pg", 5432, "TCP"), ("metrics", 9187, "UDP")],
    ));
    let skip = ["HOME", "PATH", "HOSTNAME", "SHLVL", "PWD", "TERM", "_"];
    let got: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .collect();
    assert_eq!(got, want);
    assert!(
        sync_support::count_lines(
            &node.log_path,
            &format!("Keys [1badkey] from the EnvFrom configMap {ns}/app were skipped")
        ) > 0,
        "no warning for the invalid key\n{}",
        node.log_tail(30)
    );

    // Files: secret items with their modes on a tmpfs; the configMap on
    // disk with its binary data; the optional missing configMap empty.
    let sec = volume_dir(&node, &p, "kubernetes.io~secret", "sec");
    assert!(is_tmpfs(&sec), "secret volume not on tmpfs");
    assert_eq!(
        std::fs::read_to_string(sec.join("db/pass")).unwrap(),
        "s3cret"
    );
    assert_eq!(mode(&sec.join("db/pass")), 0o440);
    assert_eq!(std::fs::read_to_string(sec.join("user")).unwrap(), "admin");
    assert_eq!(mode(&sec.join("user")), 0o400);
    let cfg = volume_dir(&node, &p, "kubernetes.io~configmap", "cfg");
    assert!(
        !is_tmpfs(&cfg),
        "configMap volume on tmpfs (upstream: disk)"
    );
    assert_eq!(
        std::fs::read(cfg.join("blob.bin")).unwrap(),
        vec![0, 159, 255]
    );
    assert_eq!(mode(&cfg.join("app.conf")), 0o644);
    let opt = volume_dir(&node, &p, "kubernetes.io~configmap", "opt");
    let visible: Vec<String> = sync_support::entries(&opt)
        .into_iter()
        .filter(|e| !e.starts_with(".."))
        .collect();
    assert!(visible.is_empty(), "{visible:?}");

    // An edit reaches the running pod's file (syncFrequency 10 s), not
    // the subPath mount (as upstream).
    let t0 = Instant::now();
    kubectl_ok(
        &cp,
        &[
            "-n",
            ns,
            "patch",
            "configmap",
            "app",
            "-p",
            r#"{"data":{"app.conf":"v2"}}"#,
        ],
    );
    let line = wait_for(Duration::from_secs(40), || {
        log_lines(&node, &p, "main")
            .into_iter()
            .find(|l| l.starts_with("cfg=v2"))
    })
    .unwrap_or_else(|| panic!("update not seen\n{}", node.log_tail(30)));
    assert_eq!(line, "cfg=v2 sub=v1");
    eprintln!("configMap update visible after {:?}", t0.elapsed());
    assert_eq!(std::fs::read_to_string(cfg.join("app.conf")).unwrap(), "v2");

    // The configMap goes: the running pod keeps its files (upstream keeps
    // a mounted volume whose remount fails) and is not held up.
    kubectl_ok(&cp, &["-n", ns, "delete", "configmap", "app"]);
    wait_for(Duration::from_secs(30), || {
        (sync_support::count_lines(&node.log_path, "keeping its current contents") > 0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no sync after the deletion\n{}", node.log_tail(30)));
    let p2 = pod(&cp, ns, "app").unwrap();
    assert!(running(&p2));
    assert_eq!(container_status(&p2)["restartCount"], 0);
    assert_eq!(std::fs::read_to_string(cfg.join("app.conf")).unwrap(), "v2");
    cp.drop_namespace(ns);
}

#[test]
fn pods_wait_for_missing_objects_and_a_refused_token_request_is_reported() {
    let cp = ControlPlane::shared();
    let ns = "pl-apivol-wait";
    cp.namespace(ns);
    let (node, _) = member(52, &cp, "");
    let manifest = |name: &str, spec: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  nodeName: {}\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n{spec}",
            node.node_name
        )
    };
    cp.apply(&manifest(
        "vol-wait",
        "    volumeMounts: [{name: s, mountPath: /s}]\n  volumes: [{name: s, secret: {secretName: later}}]\n",
    ));
    cp.apply(&manifest(
        "env-wait",
        "    env: [{name: K, valueFrom: {secretKeyRef: {name: later, key: k}}}]\n",
    ));
    cp.apply(&manifest("plain", ""));
    wait_running(&cp, &node, ns, "plain", Duration::from_secs(60));
    let v = wait_for(Duration::from_secs(30), || {
        pod(&cp, ns, "vol-wait")
            .filter(|p| waiting_reason(p).as_deref() == Some("ContainerCreating"))
    })
    .expect("vol-wait waits in ContainerCreating");
    let msg = container_status(&v)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("MountVolume.SetUp failed for volume \"s\"")
            && msg.contains("secret \"later\" not found"),
        "{msg}"
    );
    let e = wait_for(Duration::from_secs(30), || {
        pod(&cp, ns, "env-wait")
            .filter(|p| waiting_reason(p).as_deref() == Some("CreateContainerConfigError"))
    })
    .expect("env-wait in CreateContainerConfigError");
    assert_eq!(
        container_status(&e)["state"]["waiting"]["message"],
        "secret \"later\" not found"
    );
    // The secret appears: both start.
    let t0 = Instant::now();
    kubectl_ok(
        &cp,
        &[
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            "later",
            "--from-literal=k=v",
        ],
    );
    wait_running(&cp, &node, ns, "vol-wait", Duration::from_secs(30));
    wait_running(&cp, &node, ns, "env-wait", Duration::from_secs(30));
    eprintln!(
        "both running {:?} after the secret was created",
        t0.elapsed()
    );

    // A configMap over 1 MiB never reaches a node: the apiserver refuses it.
    let big = std::env::temp_dir().join(format!("picolet-big-{}", std::process::id()));
    std::fs::write(&big, vec![b'x'; (1 << 20) + 1]).unwrap();
    let out = cp.kubectl(&[
        "-n",
        ns,
        "create",
        "configmap",
        "big",
        &format!("--from-file=big={}", big.display()),
    ]);
    let _ = std::fs::remove_file(&big);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must have at most 1048576 bytes"),
        "{out:?}"
    );

    // A TokenRequest the apiserver refuses: the service account goes
    // between admission (which injected the token volume) and binding
    // (a scheduling gate holds the pod meanwhile).
    kubectl_ok(&cp, &["-n", ns, "create", "serviceaccount", "temp"]);
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: tok, namespace: {ns}}}
spec:
  serviceAccountName: temp
  schedulingGates: [{{name: picolet.test/hold}}]
  nodeSelector: {{kubernetes.io/hostname: {}}}
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: [sleep, '3600']}}]
"#,
        node.node_name
    ));
    kubectl_ok(&cp, &["-n", ns, "delete", "serviceaccount", "temp"]);
    kubectl_ok(
        &cp,
        &[
            "-n",
            ns,
            "patch",
            "pod",
            "tok",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/schedulingGates"}]"#,
        ],
    );
    let t = wait_for(Duration::from_secs(60), || {
        pod(&cp, ns, "tok").filter(|p| {
            container_status(p)["state"]["waiting"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("failed to fetch token"))
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no token failure reported: {:?}\n{}",
            pod(&cp, ns, "tok").map(|p| p["status"].clone()),
            node.log_tail(30)
        )
    });
    let msg = container_status(&t)["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("serviceaccounts \"temp\" not found"), "{msg}");
    assert_eq!(waiting_reason(&t).as_deref(), Some("ContainerCreating"));
    // Nothing was written for it, and the other pods are untouched.
    let projected = node
        .root
        .join("root/pods")
        .join(uid(&t))
        .join("volumes/kubernetes.io~projected");
    assert!(sync_support::entries(&projected).is_empty());
    for n in ["plain", "vol-wait", "env-wait"] {
        let p = pod(&cp, ns, n).unwrap();
        assert!(running(&p), "{n}: {}", p["status"]);
        assert_eq!(container_status(&p)["restartCount"], 0);
    }
    cp.drop_namespace(ns);
}

const AUTH_REGISTRY_PORT: u16 = 5155;

#[test]
fn image_pull_secret_authenticates_only_its_pod() {
    image_support::need_tool("htpasswd");
    let cp = ControlPlane::shared();
    let ns = "pl-apivol-pull";
    cp.namespace(ns);
    let root = image_support::TestRoot::new("apivol-pull");
    let htp = root.path("htpasswd");
    std::fs::write(
        &htp,
        image_support::sh("htpasswd", &["-Bbn", "puller", "s3cret"]),
    )
    .unwrap();
    let addr = image_support::start_registry(
        &root,
        AUTH_REGISTRY_PORT,
        "",
        &format!(
            "auth:\n  htpasswd:\n    realm: picolet-test\n    path: {}\n",
            htp.display()
        ),
    );
    let image = format!("{addr}/picolet/private-httpd:1");
    image_support::push(
        Path::new(sync_support::LAYOUT),
        "httpd",
        &image,
        &["--dest-creds", "puller:s3cret"],
    );
    let (node, _) = member(53, &cp, "");
    kubectl_ok(
        &cp,
        &[
            "-n",
            ns,
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={addr}"),
            "--docker-username=puller",
            "--docker-password=s3cret",
        ],
    );
    let manifest = |name: &str, secrets: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  nodeName: {}\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n{secrets}  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: Always\n",
            node.node_name
        )
    };
    cp.apply(&manifest(
        "with-secret",
        "  imagePullSecrets: [{name: regcred}]\n",
    ));
    wait_running(&cp, &node, ns, "with-secret", Duration::from_secs(90));
    // Another pod without the secret cannot pull (Always), although the
    // image is on the node now.
    cp.apply(&manifest("without", ""));
    let p = wait_for(Duration::from_secs(60), || {
        pod(&cp, ns, "without").filter(|p| {
            matches!(
                waiting_reason(p).as_deref(),
                Some("ErrImagePull") | Some("ImagePullBackOff")
            )
        })
    })
    .unwrap_or_else(|| panic!("pod without the secret pulled\n{}", node.log_tail(30)));
    let msg = container_status(&p)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains(&image), "{msg}");
    // The pull failed for lack of credentials (ErrImagePull's message).
    let log = std::fs::read_to_string(&node.log_path).unwrap();
    assert!(
        log.lines().any(|l| l.contains("pl-apivol-pull")
            && l.contains("ErrImagePull")
            && l.contains("401")),
        "{}",
        node.log_tail(30)
    );
    cp.drop_namespace(ns);
}

/// Ten minutes is the shortest token the apiserver issues: picolet asks
/// again once 80 % of it passed (480 s, up to 10 s earlier). Takes about
/// nine minutes: `cargo test --test cluster_volumes -- --ignored`.
#[test]
#[ignore]
fn projected_token_is_refreshed_at_eighty_percent_of_its_lifetime() {
    let cp = ControlPlane::shared();
    let ns = "pl-apivol-refresh";
    cp.namespace(ns);
    let (node, _) = member(54, &cp, "syncFrequency: 5s\n");
    wait_for(Duration::from_secs(30), || {
        cp.get_json(&["-n", ns, "get", "serviceaccount", "default"])
    })
    .expect("default service account");
    cp.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: short, namespace: {ns}}}
spec:
  nodeName: {}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext: {{fsGroup: 3000}}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sleep, '3600']
    volumeMounts: [{{name: tok, mountPath: /var/run/tok}}]
  volumes:
  - name: tok
    projected:
      sources:
      - serviceAccountToken: {{path: token, audience: picolet-test, expirationSeconds: 600}}
"#,
        node.node_name
    ));
    let p = wait_running(&cp, &node, ns, "short", Duration::from_secs(60));
    let file = volume_dir(&node, &p, "kubernetes.io~projected", "tok").join("token");
    let first = std::fs::read_to_string(&file).unwrap();
    let t0 = Instant::now();
    // fsGroup: 0600 then group read.
    assert_eq!(mode(&file), 0o640);
    let md = std::fs::metadata(&file).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&md), 3000);
    let changed = wait_for(Duration::from_secs(560), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| *t != first)
            .map(|_| t0.elapsed())
    })
    .unwrap_or_else(|| panic!("token not refreshed\n{}", node.log_tail(30)));
    eprintln!("token refreshed after {changed:?}");
    // Requested at 480 s of its life at the latest (minus jitter), picked
    // up by the next sync (5 s).
    assert!(
        changed >= Duration::from_secs(460) && changed <= Duration::from_secs(500),
        "{changed:?}"
    );
    cp.drop_namespace(ns);
}
