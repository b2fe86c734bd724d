//! Helpers for the network integration tests (root, real CNI plugins).
//!
//! Test `n` owns: bridge `pltn<n>`, subnet `10.89.(16+n).0/24`, network name
//! `picolet-test-n<n>`, host port `18100+n`, `/var/tmp/picolet-test/net-<n>/`
//! (config, state, IPAM leases) and `/run/picolet-test/net-<n>/` (netns).
#![allow(dead_code)]

use picolet::config::Config;
use picolet::network::{netns, PodNetworkRequest, PodNetworks};
use picolet::runtime::{PortMapping, Protocol};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CNI_BIN: &str = "/usr/lib/cni";

/// Fails (never skips) when the machine lacks what the tests need.
pub fn require_prereqs() {
    assert!(
        rustix::process::geteuid().is_root(),
        "network tests must run as root"
    );
    for p in ["bridge", "host-local", "portmap"] {
        let f = Path::new(CNI_BIN).join(p);
        assert!(
            f.exists(),
            "{} missing: run scripts/test-env.sh (installs containernetworking-plugins)",
            f.display()
        );
    }
    for tool in [
        "nsenter", "unshare", "ip", "iptables", "busybox", "chroot", "mount",
    ] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{tool} not found: run scripts/test-env.sh");
    }
}

/// Runs a command, returning its output (panics if it cannot start).
pub fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"))
}

pub fn stdout_of(prog: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&run(prog, args).stdout).into_owned()
}

/// One test's network: its own conf dir, bridge, subnet and dirs.
pub struct TestNet {
    pub n: u8,
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub bridge: String,
    pub name: String,
    pub cfg: Config,
    pub nets: PodNetworks,
}

impl TestNet {
    /// A clean slate for test `n` (leftovers of a crashed run removed),
    /// with the standard bridge + portmap conflist written.
    pub fn new(n: u8) -> TestNet {
        Self::with_plugins(n, &[], &[])
    }

    /// As [`TestNet::new`], with extra plugin objects appended to the list
    /// and extra bin dirs searched before the system one.
    pub fn with_plugins(n: u8, extra: &[serde_json::Value], bin_dirs: &[PathBuf]) -> TestNet {
        require_prereqs();
        let root = PathBuf::from(format!("/var/tmp/picolet-test/net-{n}"));
        let run_dir = PathBuf::from(format!("/run/picolet-test/net-{n}"));
        let mut cfg = Config::new(
            None,
            Some(root.join("root")),
            None,
            Some("test-node".into()),
            None,
        )
        .expect("config");
        cfg.kubelet.picolet.cni_conf_dir = root.join("net.d");
        let mut dirs = bin_dirs.to_vec();
        dirs.push(CNI_BIN.into());
        cfg.kubelet.picolet.cni_bin_dirs = dirs;
        cfg.kubelet.picolet.run_dir = run_dir.clone();
        cfg.kubelet.runtime_request_timeout = Duration::from_secs(60);
        let t = TestNet {
            n,
            conf_dir: root.join("net.d"),
            ipam_dir: root.join("ipam"),
            root,
            run_dir,
            bridge: format!("pltn{n}"),
            name: format!("picolet-test-n{n}"),
            nets: PodNetworks::new(&cfg),
            cfg,
        };
        t.clean();
        std::fs::create_dir_all(&t.conf_dir).expect("create conf dir");
        for d in bin_dirs {
            std::fs::create_dir_all(d).expect("create bin dir");
        }
        t.write_conflist(extra);
        t
    }

    pub fn subnet_prefix(&self) -> String {
        format!("10.89.{}.", 16 + self.n as u32)
    }

    pub fn host_port(&self) -> u16 {
        18100 + self.n as u16
    }

    pub fn conflist(&self, extra: &[serde_json::Value]) -> serde_json::Value {
        let mut plugins = vec![
            serde_json::json!({
                "type": "bridge", "bridge": self.bridge, "isGateway": true,
                "ipMasq": false, "hairpinMode": true,
                "ipam": {"type": "host-local",
                         "ranges": [[{"subnet": format!("{}0/24", self.subnet_prefix())}]],
                         "routes": [{"dst": "0.0.0.0/0"}],
                         "dataDir": self.ipam_dir}
            }),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        ];
        plugins.extend(extra.iter().cloned());
        serde_json::json!({"cniVersion": "1.0.0", "name": self.name, "plugins": plugins})
    }

    pub fn write_conflist(&self, extra: &[serde_json::Value]) {
        std::fs::write(
            self.conf_dir.join("10-test.conflist"),
            self.conflist(extra).to_string(),
        )
        .expect("write conflist");
    }

    /// The list without portmap.
    pub fn write_bridge_only(&self) {
        let mut l = self.conflist(&[]);
        l["plugins"].as_array_mut().expect("plugins").truncate(1);
        std::fs::write(self.conf_dir.join("10-test.conflist"), l.to_string())
            .expect("write conflist");
    }

    /// A request for pod `<pod>` with an optional hostPort -> 8080.
    pub fn request(&self, pod: &str, host_port: Option<u16>) -> PodNetworkRequest {
        PodNetworkRequest {
            pod_id: pod.to_string(),
            netns: self.nets.netns_path(pod),
            pod_namespace: "default".into(),
            pod_name: format!("{pod}-name"),
            pod_uid: format!("{pod}-uid"),
            port_mappings: host_port
                .map(|h| PortMapping {
                    protocol: Protocol::Tcp,
                    container_port: 8080,
                    host_port: h,
                    host_ip: String::new(),
                })
                .into_iter()
                .collect(),
            dns: None,
        }
    }

    /// Host-local lease files of this network (one per allocated address).
    pub fn leases(&self) -> Vec<String> {
        let d = self.ipam_dir.join(&self.name);
        let Ok(rd) = std::fs::read_dir(&d) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// Interfaces enslaved to this test's bridge (the pods' host veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        stdout_of("ip", &["-o", "link", "show", "master", &self.bridge])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|s| s.split('@').next().unwrap_or(s).to_string())
            .collect()
    }

    pub fn netns_files(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.run_dir.join("netns")) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    pub fn cache_file(&self, pod: &str) -> PathBuf {
        self.cfg.state_dir().join("cni").join(format!("{pod}.json"))
    }

    /// Removes everything this test may have made; used at start and end.
    pub fn clean(&self) {
        if let Ok(pods) = self.nets.cni().cached_pods() {
            for p in pods {
                let req = self.request(&p, None);
                let _ = picolet::rt::block_on(self.nets.teardown(&req));
            }
        }
        for f in self.netns_files() {
            let _ = netns::remove(&self.run_dir.join("netns").join(f));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.clean();
    }
}

/// iptables nat rules portmap made for a pod (they carry its id).
pub fn nat_rules_for(pod: &str) -> Vec<String> {
    let needle = format!("id: \\\"{pod}\\\"");
    // Other tests change the nat table at the same time; iptables-nft
    // listing can then fail transiently: retry a few times.
    let mut last = String::new();
    for _ in 0..20 {
        let out = run("iptables", &["-w", "-t", "nat", "-S"]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(&needle))
                .map(str::to_string)
                .collect();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iptables -t nat -S keeps failing: {last}");
}

/// `busybox httpd` serving `dir` on :8080 inside a netns; killed on drop.
pub struct Httpd(Child);

impl Httpd {
    pub fn start(netns: &Path, dir: &Path, body: &str) -> Httpd {
        std::fs::create_dir_all(dir).expect("httpd dir");
        std::fs::write(dir.join("index.html"), body).expect("index.html");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["busybox", "httpd", "-f", "-p", "8080", "-h"])
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("start busybox httpd");
        Httpd(child)
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` until it holds or `within` passes; its last value.
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

/// GET `/` at `addr`, retrying until `within` passes; the body on success.
pub fn http_get(addr: SocketAddr, within: Duration) -> Result<String, String> {
    let end = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < end {
        match get_once(addr) {
            Ok(b) => return Ok(b),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("GET http://{addr}/: {last}"))
}

fn get_once(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    if !r.starts_with("HTTP/1.") || !r.contains(" 200 ") {
        return Err(format!("unexpected response: {r:?}"));
    }
    Ok(r.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}
