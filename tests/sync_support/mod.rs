//! Harness for the `sync_*` integration tests: `picolet run` as a child
//! process (the real binary, real shim, runc, CNI, cgroups), static pod
//! manifests written into its directory, status read from the read-only
//! port's `/pods` as v1 types.
//!
//! Test `n` (0..=59) owns: temp root `/var/tmp/picolet-test/sync-<n>`
//! (picolet root, manifests, config, CNI conf, logs), run dir
//! `/run/picolet-test/sync-<n>`, runtime namespace `pltest-sync-<n>`,
//! bridge `plts<n>`, subnet `10.89.(80+n).0/24`, cgroup root
//! `/picolet-test-sync-<n>`, healthz port `18400+2n`, read-only port
//! `18401+2n` (for n >= 50: `18700+2(n-50)` and `18701+2(n-50)`, past
//! the host ports), host ports `18500+2n` and `18501+2n`, kubelet (TLS)
//! port `18800+n` (unless the test's `extra` config sets `port`). Dropping the [`Node`]
//! kills picolet and removes whatever it left (shims, containers, mounts,
//! network, cgroups, files), also after a failure.
//!
//! Images: `picolet.test/busybox:1` and `picolet.test/httpd:1`, exported
//! from the offline test layout into the node's import directory (picolet
//! imports them at start); [`Node::use_registry`] adds the local registry
//! (`PICOLET_TEST_REGISTRY`) as a plain-HTTP mirror for pull tests.
#![allow(dead_code)]

use picolet::api::core::{ContainerStateTerminated, ContainerStatus, Pod, PodCondition};
use picolet::config::Config;
use picolet::network::{netns, PodNetworkRequest, PodNetworks};
use picolet::runtime::cgroups::Cgroups;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SHIM: &str = "containerd-shim-runc-v2";
pub const CNI_BIN: &str = "/usr/lib/cni";
pub const LAYOUT: &str = "/var/tmp/picolet-images/oci";
pub const BUSYBOX: &str = "picolet.test/busybox:1";
pub const HTTPD: &str = "picolet.test/httpd:1";
const PREREQ: &str = "run scripts/test-env.sh (as root) first";

fn require(ok: bool, what: &str) {
    assert!(ok, "missing prerequisite: {what}; {PREREQ}");
}

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// Settings a test may change.
#[derive(Debug, Clone)]
pub struct Opts {
    /// `picolet.backOffInitial`.
    pub back_off_initial: String,
    /// `crashLoopBackOff.maxContainerRestartPeriod`.
    pub max_restart_period: String,
    /// `picolet.backOffReset`.
    pub back_off_reset: String,
    /// More top-level KubeletConfiguration lines.
    pub extra: String,
    /// `picolet.stopPodsOnShutdown`.
    pub stop_pods_on_shutdown: bool,
    /// `--kubeconfig`: join this cluster.
    pub kubeconfig: Option<PathBuf>,
    /// More `picolet run` flags.
    pub args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            back_off_initial: "1s".into(),
            max_restart_period: "4s".into(),
            back_off_reset: "60s".into(),
            extra: String::new(),
            stop_pods_on_shutdown: false,
            kubeconfig: None,
            args: Vec::new(),
        }
    }
}

/// One picolet node under test.
pub struct Node {
    pub n: u32,
    pub root: PathBuf,
    pub run: PathBuf,
    pub manifests: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub ns: String,
    pub bridge: String,
    pub cgroup_root: String,
    pub node_name: String,
    pub healthz_port: u16,
    pub ro_port: u16,
    /// The secure kubelet port (`port`).
    pub port: u16,
    /// The config picolet runs with (paths for the clean-up).
    pub cfg: Config,
    /// `--kubeconfig` and other flags of `picolet run`.
    pub run_args: Vec<String>,
    /// picolet's output reaches the log file through a pipe (copied by
    /// the test), as under journald: its own disk writes then leave the
    /// log out.
    pub log_through_pipe: bool,
    child: Option<Child>,
}

impl Node {
    /// Checks prerequisites, removes leftovers of an earlier run of test
    /// `n`, writes config, CNI network and the image tarballs.
    pub fn new(n: u32, opts: Opts) -> Node {
        assert!(n < 60, "sync test numbers are 0..=59");
        require(rustix::process::geteuid().is_root(), "root");
        for b in [SHIM, "runc", "iptables", "ip", "skopeo"] {
            require(in_path(b), b);
        }
        for p in ["bridge", "host-local", "portmap"] {
            require(
                Path::new(CNI_BIN).join(p).exists(),
                &format!("CNI plugin {p}"),
            );
        }
        require(
            Path::new(LAYOUT).join("index.json").exists(),
            "the offline test images",
        );
        let root = PathBuf::from(format!("/var/tmp/picolet-test/sync-{n}"));
        let run = PathBuf::from(format!("/run/picolet-test/sync-{n}"));
        let mut node = Node {
            n,
            manifests: root.join("manifests"),
            config_path: root.join("config.yaml"),
            log_path: root.join("picolet.log"),
            ns: format!("pltest-sync-{n}"),
            bridge: format!("plts{n}"),
            cgroup_root: format!("/picolet-test-sync-{n}"),
            node_name: format!("sync-node-{n}"),
            healthz_port: status_port(n),
            ro_port: status_port(n) + 1,
            port: 18800 + n as u16,
            cfg: Config::new(None, Some(root.join("root")), None, Some("x".into()), None)
                .expect("config"),
            root,
            run,
            run_args: Vec::new(),
            log_through_pipe: false,
            child: None,
        };
        node.write_config(&opts);
        node.cleanup();
        for d in [
            &node.root,
            &node.run,
            &node.manifests,
            &node.root.join("net.d"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        node.write_config(&opts);
        node.write_network();
        node.export_images();
        node
    }

    fn write_config(&mut self, o: &Opts) {
        let r = &self.root;
        let port = if o.extra.lines().any(|l| l.starts_with("port:")) {
            String::new()
        } else {
            format!("port: {}\n", self.port)
        };
        let address = if o.extra.lines().any(|l| l.starts_with("address:")) {
            ""
        } else {
            "address: 127.0.0.1\n"
        };
        let text = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: {manifests}
fileCheckFrequency: 5s
healthzBindAddress: 127.0.0.1
healthzPort: {hz}
{address}readOnlyPort: {ro}
{port}cgroupRoot: {cg}
podLogsDir: {logs}
resolvConf: /etc/resolv.conf
# The test machine's disk is shared with builds and has been seen 99 % full
# (CI failed on DiskPressure at 1 %): absolute thresholds, as the pressure
# conditions are not what these tests are about. Image GC off for the same
# reason (its 85 % default would remove images a test imported).
evictionHard: {{memory.available: 100Mi, nodefs.available: 1Mi, imagefs.available: 1Mi, nodefs.inodesFree: '100'}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
crashLoopBackOff:
  maxContainerRestartPeriod: {max}
{extra}
picolet:
  cniConfDir: {netd}
  cniBinDirs: [{bin}]
  registriesConfig: {reg}
  dockerConfig: {docker}
  runtimeNamespace: {ns}
  runDir: {run}
  backOffInitial: {init}
  backOffReset: {reset}
  stopPodsOnShutdown: {stop}
",
            manifests = self.manifests.display(),
            hz = self.healthz_port,
            ro = self.ro_port,
            cg = self.cgroup_root,
            logs = r.join("logs").display(),
            max = o.max_restart_period,
            extra = o.extra,
            netd = r.join("net.d").display(),
            bin = CNI_BIN,
            reg = r.join("registries.yaml").display(),
            docker = r.join("docker-config.json").display(),
            ns = self.ns,
            run = self.run.display(),
            init = o.back_off_initial,
            reset = o.back_off_reset,
            stop = o.stop_pods_on_shutdown,
        );
        if self.root.exists() {
            std::fs::write(&self.config_path, &text).unwrap();
        }
        let kc = picolet::config::KubeletConfig::parse(&text).expect("test config parses");
        self.port = kc.port;
        self.cfg.kubelet = kc;
        self.cfg.node_name = self.node_name.clone();
        self.run_args = o.args.clone();
        if let Some(k) = &o.kubeconfig {
            self.run_args.push("--kubeconfig".into());
            self.run_args.push(k.display().to_string());
        }
    }

    /// Replaces `backOffInitial` etc. (takes effect at the next start).
    pub fn set_opts(&mut self, o: &Opts) {
        self.write_config(o);
    }

    pub fn subnet_prefix(&self) -> String {
        format!("10.89.{}.", 80 + self.n)
    }

    /// The test's host ports.
    pub fn host_port(&self, i: u16) -> u16 {
        assert!(i < 2);
        18500 + 2 * self.n as u16 + i
    }

    fn write_network(&self) {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("picolet-test-sync{}", self.n),
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": false,
                 "hairpinMode": true,
                 "ipam": {"type": "host-local",
                          "ranges": [[{"subnet": format!("{}0/24", self.subnet_prefix())}]],
                          "routes": [{"dst": "0.0.0.0/0"}],
                          "dataDir": self.root.join("ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        });
        std::fs::write(
            self.root.join("net.d/10-test.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
    }

    fn export_images(&self) {
        let import = self.root.join("root/images/import");
        std::fs::create_dir_all(&import).unwrap();
        for (tag, name) in [("busybox", BUSYBOX), ("httpd", HTTPD)] {
            let tmp = self.root.join(format!("{tag}.tar"));
            let out = Command::new("skopeo")
                .args(["copy", "--quiet"])
                .arg(format!("oci:{LAYOUT}:{tag}"))
                .arg(format!("oci-archive:{}:{name}", tmp.display()))
                .output()
                .expect("run skopeo");
            assert!(
                out.status.success(),
                "skopeo export of {tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, import.join(format!("{tag}.tar"))).unwrap();
        }
    }

    /// Adds the local test registry as a plain-HTTP endpoint; returns its
    /// address (`PICOLET_TEST_REGISTRY`, default 127.0.0.1:5000).
    pub fn use_registry(&self) -> String {
        let addr =
            std::env::var("PICOLET_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
        let ok = TcpStream::connect(&addr).is_ok();
        require(ok, &format!("the test registry at {addr}"));
        std::fs::write(
            self.root.join("registries.yaml"),
            format!("mirrors:\n  \"{addr}\":\n    endpoint: [\"http://{addr}\"]\n"),
        )
        .unwrap();
        addr
    }

    // -- picolet -------------------------------------------------------------

    /// Starts `picolet run` and waits for its healthz endpoint.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "picolet already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let (out, err): (Stdio, Stdio) = if self.log_through_pipe {
            (Stdio::piped(), Stdio::piped())
        } else {
            (
                log.try_clone().unwrap().into(),
                log.try_clone().unwrap().into(),
            )
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_picolet"))
            .args(["run", "--v", "4", "--config"])
            .arg(&self.config_path)
            .arg("--root-dir")
            .arg(self.root.join("root"))
            .args(["--hostname-override", &self.node_name])
            .args(&self.run_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start picolet");
        // The copiers end at picolet's exit (EOF).
        if let Some(mut o) = child.stdout.take() {
            let mut l = log.try_clone().unwrap();
            std::thread::spawn(move || std::io::copy(&mut o, &mut l));
        }
        if let Some(mut e) = child.stderr.take() {
            let mut l = log.try_clone().unwrap();
            std::thread::spawn(move || std::io::copy(&mut e, &mut l));
        }
        self.child = Some(child);
        let mut exited = None;
        let ok = wait_until(Duration::from_secs(60), || {
            exited = self.exited();
            exited.is_some()
                || http_get(self.healthz_port, "/healthz")
                    .is_some_and(|(c, b)| c == 200 && b == "ok")
        });
        if let Some(status) = exited {
            self.child = None;
            panic!("picolet exited at start: {status}\n{}", self.log_tail(60));
        }
        if !ok {
            panic!(
                "picolet did not become healthy: exit {:?}\n{}",
                self.exited(),
                self.log_tail(60)
            );
        }
    }

    /// The child's exit status, if it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns the exit status (panics after `within`).
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("picolet runs");
        kill(c.id(), rustix::process::Signal::TERM);
        let end = Instant::now() + within;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                panic!("picolet did not exit after SIGTERM\n{}", self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of picolet's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    // -- manifests -----------------------------------------------------------

    /// Writes `manifests/<file>` atomically (a dot-file renamed into place).
    pub fn put_manifest(&self, file: &str, text: &str) {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests.join(file)).unwrap();
    }

    /// `<root>/out`, created: a host directory for pods to write into
    /// (mounted with a hostPath volume).
    pub fn out_dir(&self) -> PathBuf {
        let d = self.root.join("out");
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).unwrap();
    }

    // -- the API -------------------------------------------------------------

    /// GET on the read-only port.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.ro_port, path)
    }

    /// `/pods` as v1 types (the list's kind and apiVersion checked).
    pub fn pods(&self) -> Vec<Pod> {
        let (code, body) = self.get("/pods").expect("GET /pods");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("/pods is JSON");
        assert_eq!(v["kind"], "PodList", "{body}");
        assert_eq!(v["apiVersion"], "v1", "{body}");
        serde_json::from_value(v["items"].clone()).expect("/pods items are v1 Pods")
    }

    /// The static pod of manifest pod name `name` (`<name>-<node>`).
    pub fn pod(&self, name: &str) -> Option<Pod> {
        let full = format!("{name}-{}", self.node_name);
        self.pods()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(full.as_str()))
    }

    /// Polls `/pods` until `cond` holds for pod `name` (once picolet has
    /// generated its status); panics with the last status and picolet's log
    /// otherwise.
    pub fn wait_pod(&self, name: &str, within: Duration, cond: impl Fn(&Pod) -> bool) -> Pod {
        let end = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(p) = self.pod(name).filter(generated) {
                if cond(&p) {
                    return p;
                }
                last = Some(p);
            }
            if Instant::now() > end {
                panic!(
                    "pod {name}: condition not met within {within:?}; last status:\n{}\nlog:\n{}",
                    last.map(|p| serde_json::to_string_pretty(&p.status).unwrap())
                        .unwrap_or_else(|| "(not listed)".into()),
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `/pods` no longer lists pod `name`.
    pub fn wait_pod_gone(&self, name: &str, within: Duration) {
        let ok = wait_until(within, || self.pod(name).is_none());
        assert!(ok, "pod {name} still listed\n{}", self.log_tail(40));
    }

    /// The CRI log of a container instance (`<pod log dir>/<c>/<n>.log`).
    pub fn container_log(&self, pod: &Pod, container: &str, restart: i32) -> String {
        let dir = format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or(""),
            pod.metadata.uid.as_deref().unwrap_or("")
        );
        let p = self
            .root
            .join("logs")
            .join(dir)
            .join(container)
            .join(format!("{restart}.log"));
        std::fs::read_to_string(&p).unwrap_or_default()
    }

    /// The host pid of a container (runc's state).
    pub fn container_pid(&self, container_id: &str) -> Option<u32> {
        let id = container_id.trim_start_matches("containerd://");
        let out = Command::new("runc")
            .args(["--root", &self.runc_root(), "state", id])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        if v["status"] != "running" {
            return None;
        }
        v["pid"].as_u64().map(|p| p as u32)
    }

    // -- clean-up --------------------------------------------------------------

    pub fn runc_root(&self) -> String {
        format!("/run/containerd/runc/{}", self.ns)
    }

    /// Shim processes of this test's namespace.
    pub fn shim_pids(&self) -> Vec<u32> {
        all_pids()
            .into_iter()
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(SHIM.as_bytes()))
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"-namespace" && w[1] == self.ns.as_bytes())
            })
            .collect()
    }

    pub fn runc_list(&self) -> Vec<String> {
        let out = Command::new("runc")
            .args(["--root", &self.runc_root(), "list", "-q"])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn mounts(&self) -> Vec<String> {
        // By path component: node 2's clean-up must not unmount node 20's
        // mounts (`sync-2` is a string prefix of `sync-20`).
        picolet::util::mountinfo::read()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                m.mount_point.starts_with(&self.root) || m.mount_point.starts_with(&self.run)
            })
            .map(|m| m.mount_point.to_string_lossy().into_owned())
            .collect()
    }

    /// Kills and removes everything this test number may have left.
    pub fn cleanup(&mut self) {
        self.reboot();
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// What a reboot does to the node: picolet, the shims and the
    /// containers killed, mounts, network, cgroups and the run dirs gone;
    /// the root dir (picolet's state on disk) stays.
    pub fn reboot(&mut self) {
        self.kill9();
        for pid in self.shim_pids() {
            kill(pid, rustix::process::Signal::KILL);
        }
        for id in self.runc_list() {
            let _ = Command::new("runc")
                .args(["--root", &self.runc_root(), "delete", "--force", &id])
                .output();
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        if self.root.exists() {
            let mut cfg = self.cfg.clone();
            cfg.kubelet.picolet.cni_conf_dir = self.root.join("net.d");
            cfg.kubelet.picolet.cni_bin_dirs = vec![CNI_BIN.into()];
            cfg.kubelet.picolet.run_dir = self.run.clone();
            let nets = PodNetworks::new(&cfg);
            for p in nets.cni().cached_pods().unwrap_or_default() {
                let req = PodNetworkRequest {
                    pod_id: p.clone(),
                    netns: nets.netns_path(&p),
                    ..Default::default()
                };
                let _ = picolet::rt::block_on(nets.teardown(&req));
            }
        }
        let netns_dir = self.run.join("netns");
        for f in entries(&netns_dir) {
            let _ = netns::remove(&netns_dir.join(f));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let bundles = self.root.join("root/state/bundles");
        for b in entries(&bundles) {
            if let Ok(a) = std::fs::read_to_string(bundles.join(b).join("address")) {
                if let Some(p) = a.trim().strip_prefix("unix://") {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        if let Ok(cg) = Cgroups::detect() {
            let _ = cg.remove(&self.cgroup_root);
        }
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_dir_all(self.runc_root());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("picolet log (tail):\n{}", self.log_tail(80));
        }
        // PICOLET_TEST_LOGS=<dir>: keep picolet's log as <dir>/sync-<n>.log.
        if let Some(d) = std::env::var_os("PICOLET_TEST_LOGS") {
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::copy(
                &self.log_path,
                Path::new(&d).join(format!("sync-{}.log", self.n)),
            );
        }
        self.cleanup();
    }
}

// -- helpers -------------------------------------------------------------------

/// The healthz port of test `n` (the read-only port is the next one):
/// 18400..=18499 for 0..=49; from 50 on, 18700 up, since 18500..=18619
/// are the tests' host ports.
pub fn status_port(n: u32) -> u16 {
    if n < 50 {
        18400 + 2 * n as u16
    } else {
        18700 + 2 * (n as u16 - 50)
    }
}

/// Files and dirs in a directory (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn all_pids() -> Vec<u32> {
    entries(Path::new("/proc"))
        .into_iter()
        .filter_map(|e| e.parse().ok())
        .collect()
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn kill(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Polls `cond` every 50 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET http://127.0.0.1:<port><path>` → (status, body); None when the
/// connection fails.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// -- status helpers ----------------------------------------------------------------

/// Whether the pod's status is picolet's (until its worker first synced it,
/// `/pods` shows the status the source gave, without container statuses).
pub fn generated(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.qos_class.is_some())
}

pub fn container<'a>(p: &'a Pod, name: &str) -> &'a ContainerStatus {
    let st = p.status.as_ref().expect("pod has a status");
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status for container {name}: {st:?}"))
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn running(c: &ContainerStatus) -> bool {
    c.state.as_ref().is_some_and(|s| s.running.is_some())
}

pub fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_deref())
}

/// (exit code, reason) of the current state when terminated.
pub fn terminated(c: &ContainerStatus) -> Option<(i32, String)> {
    c.state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| (t.exit_code, t.reason.clone().unwrap_or_default()))
}

/// (exit code, reason) of the last state when terminated.
pub fn last_terminated(c: &ContainerStatus) -> Option<(i32, String)> {
    c.last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| (t.exit_code, t.reason.clone().unwrap_or_default()))
}

/// The last state's terminated record.
pub fn last_terminated_state(c: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    c.last_state.as_ref().and_then(|s| s.terminated.as_ref())
}

/// The current state's terminated record.
pub fn terminated_state(c: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    c.state.as_ref().and_then(|s| s.terminated.as_ref())
}

/// The pod condition of type `type_`.
pub fn pod_condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// Lines of a file that contain `needle` (0 when it does not exist).
pub fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Seconds from `a` to `b`.
pub fn secs_between(a: &picolet::api::meta::Time, b: &picolet::api::meta::Time) -> f64 {
    (b.0.as_millisecond() - a.0.as_millisecond()) as f64 / 1000.0
}

pub fn condition(p: &Pod, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// A pod manifest with one busybox container running `sh -c <script>`.
pub fn busybox_pod(name: &str, restart_policy: &str, script: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {restart_policy}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, {script:?}]
"
    )
}
