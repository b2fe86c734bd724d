//! Shared helpers of the probe, hook, server and URL-source tests: temp
//! dirs under /var/tmp/picolet-test/probe-*, real servers (busybox httpd,
//! openssl s_server, a Python gRPC health server) killed on drop, a host
//! command runner, and a network namespace with a veth pair.
#![allow(dead_code)]

use picolet::runtime::exec::ExecError;
use picolet::runtime::{ExecSyncResponse, RuntimeError};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SETUP_HINT: &str = "run scripts/test-env.sh (as root) first";

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = PathBuf::from(format!(
            "/var/tmp/picolet-test/probe-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir under /var/tmp/picolet-test");
        TempDir(d)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Writes a file (creating parents); `exec` makes it executable.
    pub fn write(&self, name: &str, body: &str, exec: bool) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        if exec {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr} within 20s ({SETUP_HINT})");
}

fn require(bin: &str) {
    if !Path::new(bin).exists() {
        panic!("{bin} is missing: {SETUP_HINT}");
    }
}

/// `busybox httpd` serving `root` (CGI under `root/cgi-bin`) on `addr`,
/// optionally inside a network namespace.
pub fn httpd(root: &Path, addr: &str, netns: Option<&Path>) -> Proc {
    require("/bin/busybox");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("/bin/busybox");
            c
        }
        None => Command::new("/bin/busybox"),
    };
    let child = cmd
        .args(["httpd", "-f", "-p", addr, "-h"])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start busybox httpd");
    let p = Proc(child);
    if netns.is_none() {
        wait_listening(addr, "busybox httpd");
    }
    p
}

/// `openssl s_server -www` (HTTPS, self-signed) on 127.0.0.1:`port`.
pub fn https_server(dir: &TempDir, port: u16) -> Proc {
    let key = dir.path("key.pem");
    let cert = dir.path("cert.pem");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=probe",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("openssl: {e} ({SETUP_HINT})"));
    assert!(st.success(), "openssl req failed");
    let child = Command::new("openssl")
        .args(["s_server", "-www", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-key")
        .arg(&key)
        .arg("-cert")
        .arg(&cert)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let p = Proc(child);
    wait_listening(&format!("127.0.0.1:{port}"), "openssl s_server");
    p
}

/// The Python with grpcio that scripts/probe/grpc-venv.sh installs.
pub fn grpc_python() -> PathBuf {
    let venv = std::env::var_os("PICOLET_GRPC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/picolet-grpc-venv".into());
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import grpc, grpc_health.v1.health"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "no grpcio venv at {}: {SETUP_HINT}", venv.display());
    py
}

const GRPC_SERVER: &str = r#"
import sys
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

port, mode = sys.argv[1], sys.argv[2]
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
if mode == "health":
    h = health.HealthServicer()
    h.set("", health_pb2.HealthCheckResponse.SERVING)
    h.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
server.add_insecure_port("127.0.0.1:" + port)
server.start()
server.wait_for_termination()
"#;

/// grpcio's own health service (`mode` "health"), or a gRPC server
/// without it ("bare"), on 127.0.0.1:`port`.
pub fn grpc_server(dir: &TempDir, port: u16, mode: &str) -> Proc {
    let py = grpc_python();
    let script = dir.write("grpc_server.py", GRPC_SERVER, false);
    let child = Command::new(py)
        .arg(script)
        .arg(port.to_string())
        .arg(mode)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the Python gRPC server");
    let p = Proc(child);
    wait_listening(&format!("127.0.0.1:{port}"), "Python gRPC server");
    p
}

/// Runs commands on the host as a runtime would in a container: output
/// captured, a timeout kills the command and reports `ExecError::Timeout`.
pub struct HostRunner;

impl picolet::probe::CommandRunner for HostRunner {
    async fn run_in_container(
        &self,
        _id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, RuntimeError> {
        let Some((prog, args)) = cmd.split_first() else {
            return Err(RuntimeError::Other(anyhow::anyhow!("empty command")));
        };
        let child = smol::process::Command::new(prog)
            .args(args)
            .stdout(smol::process::Stdio::piped())
            .stderr(smol::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Other(anyhow::anyhow!("exec {prog}: {e}")))?;
        let out = child.output();
        let r = if timeout.is_zero() {
            Some(out.await)
        } else {
            futures_lite::future::or(async { Some(out.await) }, async {
                async_io::Timer::after(timeout).await;
                None
            })
            .await
        };
        match r {
            None => Err(RuntimeError::Other(anyhow::Error::new(ExecError::Timeout(
                timeout,
            )))),
            Some(Err(e)) => Err(RuntimeError::Other(e.into())),
            Some(Ok(o)) => Ok(ExecSyncResponse {
                stdout: o.stdout,
                stderr: o.stderr,
                exit_code: o.status.code().unwrap_or(-1),
            }),
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace bound at /run/picolet-test/probe-<name>-<pid> with a
/// veth pair: `host_ip` on the host side, `ns_ip` inside. Removed on drop.
pub struct Netns {
    pub path: PathBuf,
    host_if: String,
    pub host_ip: String,
    pub ns_ip: String,
}

impl Netns {
    /// `subnet` is the first three octets of a /30 (e.g. "172.30.183").
    pub fn new(name: &str, subnet: &str) -> Netns {
        let pid = std::process::id();
        let dir = Path::new("/run/picolet-test");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("probe-{name}-{pid}"));
        std::fs::write(&path, "").unwrap();
        let host_if = format!("pph{}", pid % 1_000_000);
        let n = Netns {
            path: path.clone(),
            host_if: host_if.clone(),
            host_ip: format!("{subnet}.1"),
            ns_ip: format!("{subnet}.2"),
        };
        run(Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true"));
        let ns = |args: &[&str]| {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", path.display())).args(args);
            run(&mut c);
        };
        // Created inside, the host end moved to this process's namespace.
        ns(&[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &host_if,
            "netns",
            &pid.to_string(),
        ]);
        ns(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", n.ns_ip),
            "dev",
            "eth0",
        ]);
        ns(&["ip", "link", "set", "eth0", "up"]);
        ns(&["ip", "link", "set", "lo", "up"]);
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/30", n.host_ip),
            "dev",
            &host_if,
        ]));
        run(Command::new("ip").args(["link", "set", &host_if, "up"]));
        n
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_file(&self.path);
    }
}
