//! Shared helpers for the `spec_*` integration tests: a per-test temp root,
//! cgroup root and runc root; busybox bundles from the OCI test image; pods
//! run straight with runc (no shim) from picolet's generated specs.
#![allow(dead_code)]

use picolet::api::core::Pod;
use picolet::image::ImageConfig;
use picolet::pause::PauseBinary;
use picolet::runtime::cgroups::Cgroups;
use picolet::runtime::convert::{self, Allocatable, ContainerInputs, NodeContext, VolumePath};
use picolet::runtime::spec::{self, HostInfo, SandboxContext, Spec};
use picolet::runtime::PodSandboxConfig;
use picolet::util::mountinfo;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const IMAGE_LAYOUT: &str = "/var/tmp/picolet-images/oci";

fn require(cond: bool, what: &str) {
    assert!(
        cond,
        "test prerequisite missing: {what}; run scripts/test-env.sh (as root) first"
    );
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One test's world: temp dir, cgroup root and runc root of its own.
pub struct Env {
    pub n: u32,
    pub tmp: PathBuf,
    pub cgroup_root: String,
    pub runc_root: PathBuf,
    pub cgroups: Cgroups,
    pub host: HostInfo,
}

impl Env {
    pub fn new(n: u32) -> Env {
        require(rustix::process::geteuid().is_root(), "root");
        require(have("runc"), "runc");
        require(have("umoci"), "umoci");
        require(
            Path::new(IMAGE_LAYOUT).join("index.json").exists(),
            "the OCI test image layout",
        );
        let cgroups = Cgroups::detect().expect("detect cgroups");
        let host = HostInfo::detect(&cgroups).expect("detect host");
        let env = Env {
            n,
            tmp: PathBuf::from(format!("/var/tmp/picolet-test/spec-{n}")),
            cgroup_root: format!("/picolet-test-spec-{n}"),
            runc_root: PathBuf::from(format!("/run/picolet-test/spec-{n}")),
            cgroups,
            host,
        };
        env.cleanup();
        std::fs::create_dir_all(&env.tmp).unwrap();
        std::fs::create_dir_all(&env.runc_root).unwrap();
        env
    }

    /// Removes everything a (possibly crashed) earlier run left.
    fn cleanup(&self) {
        if self.runc_root.exists() {
            if let Ok(out) = self.runc(&["list", "-q"]).output() {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = self.runc(&["delete", "--force", id]).output();
                }
            }
        }
        if let Ok(mounts) = mountinfo::read() {
            let mut mine: Vec<_> = mounts
                .iter()
                .filter(|m| m.mount_point.starts_with(&self.tmp))
                .map(|m| m.mount_point.clone())
                .collect();
            mine.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for p in mine {
                let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
            }
        }
        if let Err(e) = self.cgroups.remove(&self.cgroup_root) {
            eprintln!("cleanup: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
        let _ = std::fs::remove_dir_all(&self.runc_root);
    }

    pub fn runc(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.arg("60")
            .arg("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(args);
        c
    }

    /// A node context for this test (cgroup root of its own).
    pub fn node(&self) -> NodeContext {
        NodeContext {
            node_name: "node1".into(),
            cluster_domain: "cluster.local".into(),
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            host_dns: Some(convert::parse_resolv_conf(
                "nameserver 192.0.2.53\nsearch corp.example\n",
            )),
            node_ips: vec!["192.0.2.10".parse().unwrap()],
            cgroup_root: self.cgroup_root.clone(),
            cgroups_per_qos: true,
            pod_pids_limit: -1,
            pod_logs_dir: self.tmp.join("logs"),
            memory_capacity: 8 << 30,
            allocatable: Allocatable {
                cpu_milli: 2000,
                memory: 7 << 30,
                ephemeral_storage: 20 << 30,
            },
        }
    }

    /// A bundle dir with the busybox image unpacked as `rootfs`.
    pub fn busybox_bundle(&self, name: &str) -> PathBuf {
        let b = self.tmp.join("bundles").join(name);
        std::fs::create_dir_all(&b).unwrap();
        let out = Command::new("umoci")
            .args(["raw", "unpack", "--image"])
            .arg(format!("{IMAGE_LAYOUT}:busybox"))
            .arg(b.join("rootfs"))
            .output()
            .expect("run umoci");
        assert!(
            out.status.success(),
            "umoci unpack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        b
    }

    /// Runs a bundle in the foreground; returns its output (runc's exit
    /// status is the container's).
    pub fn run(&self, id: &str, bundle: &Path, spec: &Spec) -> Output {
        spec.write(bundle).unwrap();
        self.runc(&["run", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .expect("run runc")
    }

    /// Starts a bundle detached; returns the container's pid.
    pub fn run_detached(&self, id: &str, bundle: &Path, spec: &Spec) -> u32 {
        spec.write(bundle).unwrap();
        // The container inherits runc's stdio: a pipe would stay open while
        // it runs, so its output goes to a file.
        let log = bundle.join("stdio.log");
        let file = std::fs::File::create(&log).unwrap();
        let status = self
            .runc(&["run", "--detach", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .expect("run runc");
        assert!(
            status.success(),
            "runc run -d {id}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.pid(id)
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.runc(&["state", id]).output().unwrap();
        assert!(
            out.status.success(),
            "runc state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn pid(&self, id: &str) -> u32 {
        self.state(id)["pid"].as_u64().unwrap() as u32
    }

    pub fn delete(&self, id: &str) {
        let out = self.runc(&["delete", "--force", id]).output().unwrap();
        assert!(
            out.status.success(),
            "runc delete {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The directory of cgroup `path` in the hierarchy holding `controller`
    /// (the cgroup2 tree for "").
    pub fn cgroup_dir(&self, controller: &str, path: &str) -> PathBuf {
        let h = if self.cgroups.unified || controller.is_empty() {
            self.cgroups.hierarchies.iter().find(|h| h.v2).unwrap()
        } else {
            self.cgroups
                .hierarchies
                .iter()
                .find(|h| h.controllers.iter().any(|c| c == controller))
                .unwrap()
        };
        h.dir(path)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A pod from JSON (metadata defaults: name `web`, namespace `ns1`, a uid).
pub fn pod(v: serde_json::Value) -> Pod {
    let mut p: Pod = serde_json::from_value(v).unwrap();
    p.metadata.name.get_or_insert_with(|| "web".into());
    p.metadata.namespace.get_or_insert_with(|| "ns1".into());
    p.metadata.uid.get_or_insert_with(|| "0b2c-test-uid".into());
    p
}

/// A pod whose sandbox runs (busybox `sleep`, or picolet's pause).
pub struct RunningPod<'a> {
    pub env: &'a Env,
    pub pod: Pod,
    pub config: PodSandboxConfig,
    pub ctx: SandboxContext,
    pub sandbox_id: String,
}

pub enum SandboxProcess {
    /// busybox `sleep` from the test image.
    Busybox,
    /// `/pause pause` from the picolet binary at this path.
    Pause(PathBuf),
}

impl<'a> RunningPod<'a> {
    pub fn start(env: &'a Env, pod: Pod, process: SandboxProcess) -> RunningPod<'a> {
        let node = env.node();
        let conv = convert::sandbox_config(&pod, &node, 0).unwrap();
        let config = conv.config;
        env.cgroups.ensure_qos_parents(&env.cgroup_root).unwrap();
        env.cgroups
            .create_pod(&config.cgroup_parent, config.resources.as_ref())
            .unwrap();
        let pod_dir = env.tmp.join("pods").join(&config.metadata.uid);
        spec::write_pod_files(&pod_dir, &config, &["10.89.99.5".to_string()], &env.host).unwrap();
        let mut ctx = SandboxContext {
            netns_path: None,
            pause_pid: None,
            pod_dir,
        };
        let sandbox_id = format!("sb-{}", env.n);
        let (rootfs, pause, bundle) = match &process {
            SandboxProcess::Busybox => {
                let b = env.busybox_bundle(&sandbox_id);
                // The busybox rootfs has its own binary; nothing to bind.
                let none = PauseBinary {
                    path: b.join("rootfs/bin/busybox"),
                    binds: Vec::new(),
                    library_path: None,
                };
                (b.join("rootfs"), none, b)
            }
            SandboxProcess::Pause(bin) => {
                let root = env.tmp.join("pause-root");
                spec::prepare_sandbox_rootfs(&root).unwrap();
                let b = env.tmp.join("bundles").join(&sandbox_id);
                std::fs::create_dir_all(&b).unwrap();
                (root, PauseBinary::for_path(bin).unwrap(), b)
            }
        };
        let mut s =
            spec::sandbox_spec(&sandbox_id, &config, &ctx, &rootfs, &pause, &env.host).unwrap();
        if let SandboxProcess::Busybox = process {
            s.process.args = vec!["sleep".into(), "3600".into()];
        }
        ctx.pause_pid = Some(env.run_detached(&sandbox_id, &bundle, &s));
        RunningPod {
            env,
            pod,
            config,
            ctx,
            sandbox_id,
        }
    }

    /// The container config and OCI spec of container `name` in a fresh
    /// busybox bundle; the bundle's rootfs is where users are looked up.
    pub fn container(
        &self,
        name: &str,
        id: &str,
        volumes: &BTreeMap<String, VolumePath>,
    ) -> (PathBuf, Result<Spec, spec::SpecError>) {
        let c = self
            .pod
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .chain(
                self.pod
                    .spec
                    .as_ref()
                    .unwrap()
                    .init_containers
                    .iter()
                    .flatten(),
            )
            .find(|c| c.name == name)
            .unwrap()
            .clone();
        let ips = vec!["10.89.99.5".to_string()];
        let inputs = ContainerInputs {
            restart_count: 0,
            hash: "0",
            image_id: "sha256:test",
            pod_ips: &ips,
            volumes,
        };
        let cfg = convert::container_config(&self.pod, &c, &self.env.node(), &inputs).unwrap();
        let bundle = self.env.busybox_bundle(id);
        let image = ImageConfig {
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        };
        let s = spec::container_spec(
            id,
            &self.config,
            &cfg,
            &image,
            &self.ctx,
            &bundle.join("rootfs"),
            &self.env.host,
        );
        (bundle, s)
    }

    /// Runs container `name` to completion; returns (exit code, stdout, stderr).
    pub fn run(&self, name: &str, id: &str) -> (i32, String, String) {
        let (bundle, s) = self.container(name, id, &BTreeMap::new());
        let out = self.env.run(id, &bundle, &s.unwrap());
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stops the sandbox and removes the pod's cgroup and files.
    pub fn stop(self) {
        self.env.delete(&self.sandbox_id);
        spec::release_pod_files(&self.ctx.pod_dir).unwrap();
        self.env.cgroups.remove(&self.config.cgroup_parent).unwrap();
    }
}

/// The capability mask of a list of names.
pub fn cap_mask(names: &[String]) -> u64 {
    (0..64)
        .filter(|bit| {
            spec::capability_names(1u64 << bit)
                .first()
                .is_some_and(|n| names.contains(n))
        })
        .fold(0, |m, bit| m | (1u64 << bit))
}
