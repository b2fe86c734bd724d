//! Helpers for the `runtime_*` integration tests (root; real shim, runc,
//! CNI plugins, cgroups, registry).
//!
//! Test `n` owns: runtime namespace `pltest-rt-<n>`, temp root
//! `/var/tmp/picolet-test/rt-<n>` (picolet root, CNI conf, IPAM leases,
//! pod logs), run dir `/run/picolet-test/rt-<n>` (events socket, netns),
//! bridge `pltr<n>`, subnet `10.89.(48+n).0/24`, host port `18200+n`,
//! cgroup root `/picolet-test-rt-<n>`. [`RtEnv`]'s Drop kills and removes
//! whatever the test left, also after a failure.
#![allow(dead_code)]

use picolet::api::core::Pod;
use picolet::config::Config;
use picolet::image::{Image, ImageService};
use picolet::network::{netns, PodNetworkRequest, PodNetworks};
use picolet::runtime::cgroups::Cgroups;
use picolet::runtime::convert::{self, Allocatable, ContainerInputs, NodeContext};
use picolet::runtime::{
    ContainerConfig, PodSandboxConfig, Runtime, RuntimeEvent, RuntimeOptions, ShimRuntime,
};
use smol::channel::Receiver;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const SHIM: &str = "containerd-shim-runc-v2";
pub const CNI_BIN: &str = "/usr/lib/cni";
const PREREQ: &str = "run scripts/test-env.sh (as root) first";

fn require(ok: bool, what: &str) {
    assert!(ok, "missing prerequisite: {what}; {PREREQ}");
}

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// The local test registry, checked to answer.
pub fn registry() -> String {
    let addr = std::env::var("PICOLET_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let ok = TcpStream::connect(&addr)
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
        })
        .unwrap_or(false);
    require(ok, &format!("the test registry at {addr}"));
    addr
}

/// One test's world.
pub struct RtEnv {
    pub n: u32,
    pub root: PathBuf,
    pub run: PathBuf,
    pub ns: String,
    pub bridge: String,
    pub cgroup_root: String,
    pub cfg: Config,
    pub images: Rc<ImageService>,
    /// When false (a child process that gets killed), Drop cleans nothing.
    pub owner: bool,
}

impl RtEnv {
    /// Checks prerequisites, removes leftovers of an earlier run with the
    /// same number, writes the CNI network.
    pub fn new(n: u32) -> RtEnv {
        require(rustix::process::geteuid().is_root(), "root");
        for b in [SHIM, "runc", "iptables", "ip"] {
            require(in_path(b), b);
        }
        for p in ["bridge", "host-local", "portmap"] {
            require(
                Path::new(CNI_BIN).join(p).exists(),
                &format!("CNI plugin {p}"),
            );
        }
        let mut old = Self::attach(n);
        old.owner = false;
        old.cleanup();
        drop(old);
        let env = Self::attach(n);
        std::fs::create_dir_all(&env.root).unwrap();
        std::fs::create_dir_all(&env.run).unwrap();
        env.write_network(&[]);
        env
    }

    /// The same world without cleaning it (a child process of the test).
    pub fn attach(n: u32) -> RtEnv {
        let root = PathBuf::from(format!("/var/tmp/picolet-test/rt-{n}"));
        let run = PathBuf::from(format!("/run/picolet-test/rt-{n}"));
        let mut cfg = Config::new(
            None,
            Some(root.join("root")),
            None,
            Some(format!("rt-node-{n}")),
            None,
        )
        .expect("config");
        let k = &mut cfg.kubelet;
        k.cgroup_root = format!("/picolet-test-rt-{n}");
        k.pod_logs_dir = root.join("logs");
        k.runtime_request_timeout = Duration::from_secs(60);
        let p = &mut k.picolet;
        p.runtime_namespace = format!("pltest-rt-{n}");
        p.run_dir = run.clone();
        p.cni_conf_dir = root.join("net.d");
        p.cni_bin_dirs = vec![root.join("cni-bin"), CNI_BIN.into()];
        p.registries_config = root.join("registries.yaml");
        p.docker_config = root.join("docker-config.json");
        std::fs::create_dir_all(root.join("root")).unwrap();
        let images = Rc::new(ImageService::open(&cfg).expect("image service"));
        RtEnv {
            n,
            ns: format!("pltest-rt-{n}"),
            bridge: format!("pltr{n}"),
            cgroup_root: format!("/picolet-test-rt-{n}"),
            root,
            run,
            cfg,
            images,
            owner: true,
        }
    }

    pub fn subnet_prefix(&self) -> String {
        format!("10.89.{}.", 48 + self.n)
    }

    pub fn host_port(&self) -> u16 {
        18200 + self.n as u16
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.root.join("ipam")
    }

    pub fn network_name(&self) -> String {
        format!("picolet-test-rt{}", self.n)
    }

    /// The bridge + portmap network, with extra plugins appended.
    pub fn write_network(&self, extra: &[serde_json::Value]) {
        let mut plugins = vec![
            serde_json::json!({
                "type": "bridge", "bridge": self.bridge, "isGateway": true,
                "ipMasq": false, "hairpinMode": true,
                "ipam": {"type": "host-local",
                         "ranges": [[{"subnet": format!("{}0/24", self.subnet_prefix())}]],
                         "routes": [{"dst": "0.0.0.0/0"}],
                         "dataDir": self.ipam_dir()}
            }),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        ];
        plugins.extend(extra.iter().cloned());
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": self.network_name(), "plugins": plugins});
        let dir = self.root.join("net.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("10-test.conflist"), list.to_string()).unwrap();
    }

    /// A CNI plugin of the test's own (in the first bin dir).
    pub fn write_plugin(&self, name: &str, script: &str) {
        let dir = self.root.join("cni-bin");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The runtime over this world (recovers what a previous one left).
    pub async fn runtime(&self) -> (ShimRuntime, Receiver<RuntimeEvent>) {
        let opts = RuntimeOptions {
            pause_binary: env!("CARGO_BIN_EXE_picolet").into(),
        };
        ShimRuntime::new(&self.cfg, opts, self.images.clone())
            .await
            .expect("start the runtime")
    }

    /// Pulls a test image (`busybox`, `httpd`) into this test's store.
    pub async fn pull(&self, name: &str) -> Image {
        let r = format!("{}/picolet/{name}:latest", registry());
        self.images.pull(&r).await.expect("pull test image")
    }

    pub fn node(&self) -> NodeContext {
        NodeContext {
            node_name: format!("rt-node-{}", self.n),
            cluster_domain: "cluster.local".into(),
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            host_dns: None,
            node_ips: vec!["192.0.2.10".parse().unwrap()],
            cgroup_root: self.cgroup_root.clone(),
            cgroups_per_qos: true,
            pod_pids_limit: -1,
            pod_logs_dir: self.root.join("logs"),
            memory_capacity: 8 << 30,
            allocatable: Allocatable {
                cpu_milli: 2000,
                memory: 7 << 30,
                ephemeral_storage: 20 << 30,
            },
        }
    }

    /// A pod from JSON with name `name`, namespace `ns1` and a uid of its own.
    pub fn pod(&self, name: &str, v: serde_json::Value) -> Pod {
        let mut p: Pod = serde_json::from_value(v).unwrap();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns1".into());
        p.metadata.uid = Some(format!("rt{}-{name}-uid", self.n));
        p
    }

    pub fn sandbox_config(&self, pod: &Pod) -> PodSandboxConfig {
        convert::sandbox_config(pod, &self.node(), 0)
            .unwrap()
            .config
    }

    pub fn container_config(
        &self,
        pod: &Pod,
        name: &str,
        image: &Image,
        pod_ips: &[String],
        restart: u32,
    ) -> ContainerConfig {
        let spec = pod.spec.as_ref().unwrap();
        let c = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .unwrap();
        let volumes = BTreeMap::new();
        let inputs = ContainerInputs {
            restart_count: restart,
            hash: "0",
            image_id: &image.id,
            pod_ips,
            volumes: &volumes,
        };
        convert::container_config(pod, c, &self.node(), &inputs).unwrap()
    }

    /// Runs a sandbox and creates + starts the named containers; their ids.
    pub async fn start_pod(
        &self,
        rt: &ShimRuntime,
        pod: &Pod,
        containers: &[(&str, &Image)],
    ) -> (String, Vec<String>) {
        let sc = self.sandbox_config(pod);
        let sid = rt.run_pod_sandbox(&sc).await.expect("run pod sandbox");
        let ip = rt.pod_sandbox_status(&sid).await.unwrap().network.ip;
        let ips: Vec<String> = if ip.is_empty() { vec![] } else { vec![ip] };
        let mut ids = Vec::new();
        for (name, image) in containers {
            let cc = self.container_config(pod, name, image, &ips, 0);
            let id = rt
                .create_container(&sid, &cc, &sc)
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
            rt.start_container(&id)
                .await
                .unwrap_or_else(|e| panic!("start {name}: {e}"));
            ids.push(id);
        }
        (sid, ids)
    }

    pub fn cgroups(&self) -> Cgroups {
        Cgroups::detect().unwrap()
    }

    /// The directory of cgroup `path` in the hierarchy of `controller`
    /// ("" for the cgroup2 tree).
    pub fn cgroup_dir(&self, controller: &str, path: &str) -> PathBuf {
        let cg = self.cgroups();
        let h = if cg.unified || controller.is_empty() {
            cg.hierarchies.iter().find(|h| h.v2).unwrap().clone()
        } else {
            cg.hierarchies
                .iter()
                .find(|h| h.controllers.iter().any(|c| c == controller))
                .unwrap()
                .clone()
        };
        h.dir(path)
    }

    /// Pids of live shim processes of this test's namespace.
    pub fn shim_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for pid in all_pids() {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let ours = args.first().is_some_and(|a| a.ends_with(SHIM.as_bytes()))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-namespace" && w[1] == self.ns.as_bytes());
            if ours && alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    pub fn runc_root(&self) -> String {
        format!("/run/containerd/runc/{}", self.ns)
    }

    fn runc_list(&self) -> Vec<String> {
        let out = Command::new("runc")
            .args(["--root", &self.runc_root(), "list", "-q"])
            .output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Mount points under this test's root and run dir.
    pub fn mounts(&self) -> Vec<String> {
        // By path component: `x-1` must not match `x-10`'s mounts.
        picolet::util::mountinfo::read()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                m.mount_point.starts_with(&self.root) || m.mount_point.starts_with(&self.run)
            })
            .map(|m| m.mount_point.to_string_lossy().into_owned())
            .collect()
    }

    /// Host-local leases of this test's network.
    pub fn leases(&self) -> Vec<String> {
        let d = self.ipam_dir().join(self.network_name());
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Cgroup dirs below the cgroup root other than the QoS parents, in
    /// every hierarchy.
    pub fn pod_cgroups(&self) -> Vec<String> {
        let cg = self.cgroups();
        let qos = convert::qos_cgroups(&self.cgroup_root);
        let mut out = Vec::new();
        for h in &cg.hierarchies {
            let base = h.dir(&self.cgroup_root);
            let mut stack = vec![base.clone()];
            while let Some(d) = stack.pop() {
                let Ok(rd) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in rd.flatten() {
                    if !e.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    let p = e.path();
                    let rel = format!(
                        "/{}",
                        p.strip_prefix(&h.mount_point)
                            .unwrap()
                            .to_string_lossy()
                            .trim_start_matches('/')
                    );
                    if !qos.contains(&rel) {
                        out.push(p.to_string_lossy().into_owned());
                    }
                    stack.push(p);
                }
            }
        }
        out
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

    /// Asserts that nothing of any pod is left: mounts, netns, cgroups
    /// (every hierarchy and the unified tree), CNI leases, iptables rules of
    /// the given sandboxes, bundles, checkpoints, shim processes.
    pub fn assert_nothing_left(&self, sandbox_ids: &[String]) {
        let mounts = self.mounts();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let ns = Self::entries(&self.run.join("netns"));
        assert!(ns.is_empty(), "netns left: {ns:?}");
        let cg = self.pod_cgroups();
        assert!(cg.is_empty(), "cgroups left: {cg:?}");
        let leases = self.leases();
        assert!(leases.is_empty(), "CNI leases left: {leases:?}");
        let cache = Self::entries(&self.cfg.state_dir().join("cni"));
        assert!(cache.is_empty(), "CNI cache left: {cache:?}");
        for id in sandbox_ids {
            let rules = nat_rules_for(id);
            assert!(rules.is_empty(), "iptables rules left for {id}: {rules:?}");
        }
        let b = Self::entries(&self.cfg.bundles_dir());
        assert!(b.is_empty(), "bundles left: {b:?}");
        let st = self.cfg.state_dir();
        let s = Self::entries(&st.join("sandboxes"));
        let c = Self::entries(&st.join("containers"));
        assert!(
            s.is_empty() && c.is_empty(),
            "checkpoints left: {s:?} {c:?}"
        );
        let mut shims = Vec::new();
        wait_until(Duration::from_secs(10), || {
            shims = self.shim_pids();
            shims.is_empty()
        });
        assert!(shims.is_empty(), "shim processes left: {shims:?}");
        let runc = self.runc_list();
        assert!(runc.is_empty(), "runc containers left: {runc:?}");
        // runc list misses dirs without state.json (an interrupted create).
        let dirs = Self::entries(Path::new(&self.runc_root()));
        assert!(dirs.is_empty(), "runc state dirs left: {dirs:?}");
    }

    /// Kills and removes everything this test number may have left.
    pub fn cleanup(&self) {
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
        // CNI attachments (leases, iptables) from the cache, then the bridge.
        if self.root.exists() {
            let nets = PodNetworks::new(&self.cfg);
            for p in nets.cni().cached_pods().unwrap_or_default() {
                let req = PodNetworkRequest {
                    pod_id: p.clone(),
                    netns: nets.netns_path(&p),
                    ..Default::default()
                };
                let _ = picolet::rt::block_on(nets.teardown(&req));
            }
        }
        for f in Self::entries(&self.run.join("netns")) {
            let _ = netns::remove(&self.run.join("netns").join(f));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // Shim sockets named in the bundles' address files.
        for b in Self::entries(&self.cfg.bundles_dir()) {
            if let Ok(a) = std::fs::read_to_string(self.cfg.bundles_dir().join(b).join("address")) {
                if let Some(p) = a.trim().strip_prefix("unix://") {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        if let Ok(cg) = Cgroups::detect() {
            let _ = cg.remove(&self.cgroup_root);
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_dir_all(self.runc_root());
    }
}

impl Drop for RtEnv {
    fn drop(&mut self) {
        if self.owner {
            self.cleanup();
        }
    }
}

pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

pub fn kill(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Polls `cond` until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The async form of [`wait_until`] (keeps the executor running).
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

/// iptables nat rules portmap made for a pod (they carry its id).
pub fn nat_rules_for(pod: &str) -> Vec<String> {
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new("iptables")
            .args(["-w", "-t", "nat", "-S"])
            .output()
            .expect("run iptables");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(pod))
                .map(str::to_string)
                .collect();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iptables -t nat -S keeps failing: {last}");
}

/// One HTTP/1.0 GET; the body when the status is 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    if !r.starts_with("HTTP/1.") || !r.contains(" 200 ") {
        return Err(format!("unexpected response: {r:?}"));
    }
    Ok(r.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

/// [`http_get`] retried until `within` passes (off the executor thread).
pub async fn http_get_retry(
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> Result<String, String> {
    let path = path.to_string();
    picolet::rt::unblock(move || {
        let end = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < end {
            match http_get(addr, &path) {
                Ok(b) => return Ok(b),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("GET http://{addr}{path}: {last}"))
    })
    .await
}

/// The CRI log's entries as (stream, text), without timestamps.
pub fn log_entries(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let _ts = f.next()?;
            let stream = f.next()?;
            let _tag = f.next()?;
            Some((stream.to_string(), f.next().unwrap_or("").to_string()))
        })
        .collect()
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}
