//! The real Kubernetes control plane of `../shared/k8s` for the cluster
//! tests: started once per machine by `scripts/test-env.sh` (or here, when
//! a test runs alone), node credentials from `mknode.sh`, and `kubectl`
//! as an administrator to check what a user would see.
//!
//! A test that stops the apiserver runs its own control plane
//! ([`ControlPlane::private`]) so the others are not disturbed.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The kit's scripts: `PICOLET_K8S_KIT`, else `../shared/k8s` next to the
/// repository.
pub fn kit() -> PathBuf {
    let p = std::env::var_os("PICOLET_K8S_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/k8s"));
    assert!(
        p.join("up.sh").exists(),
        "the Kubernetes test kit is missing at {} (set PICOLET_K8S_KIT)",
        p.display()
    );
    p
}

/// One control plane: its state dir and ports.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl ControlPlane {
    /// The shared control plane (default `K8S_DIR`, port 6443), started
    /// if it is not running.
    pub fn shared() -> ControlPlane {
        let dir = std::env::var("PICOLET_TEST_K8S_DIR").unwrap_or("/var/tmp/picolet-k8s".into());
        let cp = ControlPlane {
            dir: dir.clone().into(),
            env: vec![("K8S_DIR".into(), dir)],
        };
        cp.up();
        cp
    }

    /// A control plane of the test's own, on ports derived from `slot`
    /// (1..=9), for tests that stop or restart the apiserver.
    pub fn private(slot: u16, components: &str) -> ControlPlane {
        assert!((1..=9).contains(&slot));
        let dir = format!("/var/tmp/picolet-k8s-test-{slot}");
        let env: Vec<(String, String)> = [
            ("K8S_DIR", dir.clone()),
            ("APISERVER_PORT", (16443 + slot * 10).to_string()),
            ("ETCD_PORT", (22379 + slot * 10).to_string()),
            ("ETCD_PEER_PORT", (22380 + slot * 10).to_string()),
            ("KCM_PORT", (20257 + slot * 10).to_string()),
            ("SCHED_PORT", (20259 + slot * 10).to_string()),
            ("COMPONENTS", components.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cp = ControlPlane {
            dir: dir.into(),
            env,
        };
        cp.up();
        cp
    }

    fn script(&self, name: &str) -> Command {
        let mut c = Command::new(kit().join(name));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// `up.sh` (idempotent).
    pub fn up(&self) {
        let out = self.script("up.sh").output().expect("run up.sh");
        assert!(
            out.status.success(),
            "up.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `down.sh --purge`.
    pub fn purge(&self) {
        let _ = self.script("down.sh").arg("--purge").output();
    }

    /// Purges this (private) control plane when the guard is dropped, also
    /// after a failed assertion.
    pub fn purge_on_drop(&self) -> PurgeGuard {
        PurgeGuard(self.clone())
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A kubeconfig with the node's client certificate (`mknode.sh`).
    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        let out = self
            .script("mknode.sh")
            .arg(node)
            .output()
            .expect("mknode.sh");
        assert!(
            out.status.success(),
            "mknode.sh {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// The apiserver's pid, from the kit's pid file.
    pub fn apiserver_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("run/kube-apiserver.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `kubectl` as the cluster administrator.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.admin_kubeconfig(), args)
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(["--request-timeout", "10s"])
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl apply -f` of YAML text; panics with kubectl's answer on
    /// failure.
    pub fn apply(&self, yaml: &str) {
        let dir = std::env::temp_dir().join(format!("picolet-apply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(format!(
            "{}.yaml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::write(&f, yaml).unwrap();
        let out = self.kubectl(&["apply", "-f", f.to_str().unwrap()]);
        let _ = std::fs::remove_file(&f);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A namespace of the test's own, emptied first if it exists.
    pub fn namespace(&self, ns: &str) {
        self.drop_namespace(ns);
        wait_for(Duration::from_secs(60), || {
            self.get_json(&["get", "namespace", ns])
                .is_none()
                .then_some(())
        })
        .unwrap_or_else(|| panic!("namespace {ns} did not go away"));
        let out = self.kubectl(&["create", "namespace", ns]);
        assert!(out.status.success(), "{out:?}");
    }

    /// Deletes a namespace without waiting for kubelets (pods are
    /// force-deleted: the node under test may be gone).
    pub fn drop_namespace(&self, ns: &str) {
        let _ = self.kubectl(&[
            "-n",
            ns,
            "delete",
            "pods",
            "--all",
            "--grace-period=0",
            "--force",
        ]);
        let _ = self.kubectl(&[
            "delete",
            "namespace",
            ns,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }

    /// The items of `kubectl get KIND -n NS [-l SELECTOR] -o json`.
    pub fn list(&self, kind: &str, ns: &str, selector: Option<&str>) -> Vec<Value> {
        let mut a = vec!["-n", ns, "get", kind];
        if let Some(s) = selector {
            a.extend(["-l", s]);
        }
        self.get_json(&a)
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// `kubectl ... -o json`, parsed; `None` when kubectl fails.
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        self.get_json(&["get", "node", name])
    }

    pub fn lease(&self, name: &str) -> Option<Value> {
        self.get_json(&["-n", "kube-node-lease", "get", "lease", name])
    }

    /// Deletes the Node and its Lease left by an earlier run.
    pub fn forget_node(&self, name: &str) {
        let _ = self.kubectl(&["delete", "node", name, "--ignore-not-found", "--wait=false"]);
        let _ = self.kubectl(&[
            "-n",
            "kube-node-lease",
            "delete",
            "lease",
            name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

pub struct PurgeGuard(ControlPlane);

impl Drop for PurgeGuard {
    fn drop(&mut self) {
        self.0.purge();
    }
}

/// The status of a node condition.
pub fn node_condition<'a>(node: &'a Value, kind: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

pub fn is_ready(node: &Value) -> bool {
    node_condition(node, "Ready").is_some_and(|c| c["status"] == "True")
}

/// Polls `f` every 250 ms until it returns `Some`, for at most `within`.
pub fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A timestamp field of an API object.
pub fn time(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("time {v}"))
        .parse()
        .unwrap()
}

/// The node once it is Ready with its Lease renewed after `since` (back
/// from an outage), within `within`.
pub fn ready_and_renewed_after(
    cp: &ControlPlane,
    name: &str,
    since: jiff::Timestamp,
    within: Duration,
) -> Option<Value> {
    wait_for(within, || {
        let n = cp.node(name).filter(is_ready)?;
        let l = cp.lease(name)?;
        (time(&l["spec"]["renewTime"]) > since).then_some(n)
    })
}
