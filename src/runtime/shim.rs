//! containerd's runc shim (`containerd-shim-runc-v2`) driven directly:
//! bundles, the shim's `start` and `delete` actions, and typed calls of the
//! task API over [`ttrpc`](super::ttrpc). The contract is RUNTIME.md §4-§6.
//!
//! Shape of a pod: every container of the pod carries the annotation
//! [`GROUP_ANNOTATION`] = pod uid, so `start` for the second container finds
//! the running shim of the group and spawns nothing. The serving shim's cwd
//! is the first bundle (its `log` FIFO, its `address`), so the sandbox
//! container goes first and its bundle is removed last.
//!
//! Reaping: picolet is **not** a child subreaper. The shim's `start` process
//! is picolet's child (reaped by `smol::process`); the serving shim it forks
//! is re-parented to PID 1, which reaps it. Being a subreaper would need a
//! `waitpid(-1)` loop that steals exit statuses from `smol::process`
//! children (CNI plugins, `start` itself).

use super::proto::task::{mount as pb_mount, shim as pb, task as pb_task};
use super::proto::{self, cgroups_v1, cgroups_v2};
use super::ttrpc::{self, Client, Code};
use super::ContainerStats;
use crate::config::Config;
use crate::util::mountinfo;
use anyhow::{bail, Context, Result};
use async_io::{Async, Timer};
use futures_lite::future;
use protobuf::Message;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

/// Shim annotation naming the group (pod) whose shim serves a container.
pub const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";
const TYPE_PROCESS: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const TYPE_RESOURCES: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// How long the `start` and `delete` actions may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// How picolet runs shims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimConfig {
    /// `containerd-shim-runc-v2` (a bare name is looked up in PATH).
    pub binary: PathBuf,
    /// `-namespace`: keeps picolet's shims and runc state apart.
    pub namespace: String,
    /// `-address`: only an input to the shim's socket name; nothing listens.
    pub address: PathBuf,
    /// `TTRPC_ADDRESS`: picolet's events socket (must exist before `start`).
    pub events_socket: PathBuf,
    /// `-debug`: debug-level shim logs (into picolet's log at debug level).
    pub debug: bool,
    /// Timeout of task calls (`Wait` has none).
    pub call_timeout: Duration,
}

impl ShimConfig {
    pub fn from_config(cfg: &Config) -> ShimConfig {
        ShimConfig {
            binary: cfg.kubelet.picolet.shim_binary.clone(),
            namespace: cfg.kubelet.picolet.runtime_namespace.clone(),
            address: cfg.run_dir().join("picolet.sock"),
            events_socket: cfg.events_socket(),
            debug: log::log_enabled!(target: "picolet::shim", log::Level::Trace),
            call_timeout: cfg.kubelet.runtime_request_timeout,
        }
    }
}

/// Which task service the shim speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskApi {
    /// containerd 1.x shims: bare address on stdout.
    V2,
    /// containerd 2.x shims: JSON `{"version":3,...}` on stdout.
    V3,
}

impl TaskApi {
    pub fn service(self) -> &'static str {
        match self {
            TaskApi::V2 => "containerd.task.v2.Task",
            TaskApi::V3 => "containerd.task.v3.Task",
        }
    }
}

/// Where a shim listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimAddress {
    /// As the shim printed it, e.g. `unix:///run/containerd/s/<hex>`.
    pub url: String,
    pub socket: PathBuf,
    pub api: TaskApi,
}

/// Parses the stdout of `start` (or a bundle's `address` /
/// `bootstrap.json`): a bare `unix://` URL (task API v2) or containerd 2's
/// JSON `{"version":3,"address":"unix://...","protocol":"ttrpc"}`.
pub fn parse_start_output(out: &str) -> Result<ShimAddress> {
    let out = out.trim();
    if out.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Bootstrap {
            version: u32,
            address: String,
            #[serde(default)]
            protocol: String,
        }
        let b: Bootstrap =
            serde_json::from_str(out).with_context(|| format!("shim start output {out:?}"))?;
        if !b.protocol.is_empty() && b.protocol != "ttrpc" {
            bail!("shim speaks {:?}; picolet speaks ttrpc only", b.protocol);
        }
        let api = match b.version {
            2 => TaskApi::V2,
            3 => TaskApi::V3,
            v => bail!("shim bootstrap version {v} not supported"),
        };
        return Ok(ShimAddress {
            socket: socket_path(&b.address)?,
            url: b.address,
            api,
        });
    }
    Ok(ShimAddress {
        socket: socket_path(out)?,
        url: out.to_string(),
        api: TaskApi::V2,
    })
}

fn socket_path(url: &str) -> Result<PathBuf> {
    let p = url.strip_prefix("unix://").unwrap_or(url);
    if !p.starts_with('/') {
        bail!("unsupported shim address {url:?} (want unix:///path)");
    }
    Ok(PathBuf::from(p))
}

/// Checks a container id is usable as a bundle directory name.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        bail!("invalid container id {id:?}");
    }
    Ok(())
}

/// A container's bundle: `BUNDLES/<id>/` (the name must equal the id: the
/// shim's `delete` action finds the bundle by it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub id: String,
    pub dir: PathBuf,
}

impl Bundle {
    pub fn new(bundles_dir: &Path, id: &str) -> Result<Bundle> {
        validate_id(id)?;
        Ok(Bundle {
            id: id.to_string(),
            dir: bundles_dir.join(id),
        })
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// The FIFO the serving shim logs into.
    pub fn log_fifo(&self) -> PathBuf {
        self.dir.join("log")
    }
    /// Written by the shim's `start`.
    pub fn address_path(&self) -> PathBuf {
        self.dir.join("address")
    }
    /// containerd 2's JSON start output, written by picolet when `start`
    /// printed JSON (the shim writes only the bare URL to `address`).
    pub fn bootstrap_path(&self) -> PathBuf {
        self.dir.join("bootstrap.json")
    }
    pub fn stdout_fifo(&self) -> PathBuf {
        self.dir.join("stdout")
    }
    pub fn stderr_fifo(&self) -> PathBuf {
        self.dir.join("stderr")
    }

    /// Creates the directory and the `log` FIFO (idempotent). The caller
    /// writes `config.json` (and fills or mounts `rootfs`).
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create bundle {}", self.dir.display()))?;
        mkfifo(&self.log_fifo())
    }

    /// The shim this bundle's container runs under, from `bootstrap.json`
    /// or `address`; `None` if `start` never ran for it.
    pub fn read_address(&self) -> Result<Option<ShimAddress>> {
        for p in [self.bootstrap_path(), self.address_path()] {
            match std::fs::read_to_string(&p) {
                Ok(s) => {
                    return parse_start_output(&s)
                        .with_context(|| format!("{}", p.display()))
                        .map(Some)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
            }
        }
        Ok(None)
    }

    /// Whether `rootfs` is a mount point (the shim mounted it and has not
    /// unmounted it yet).
    pub fn rootfs_mounted(&self) -> Result<bool> {
        let dir =
            std::fs::metadata(&self.dir).with_context(|| format!("stat {}", self.dir.display()))?;
        match std::fs::metadata(self.rootfs()) {
            Ok(r) => Ok(r.dev() != dir.dev() || mounted_in_proc(&self.rootfs())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("stat {}", self.rootfs().display())),
        }
    }

    /// Removes the bundle directory. Refuses while `rootfs` is mounted, so
    /// that a removal never deletes through into a live filesystem.
    pub fn remove(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        if self.rootfs_mounted()? {
            bail!("bundle {}: rootfs is still mounted", self.dir.display());
        }
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("remove bundle {}", self.dir.display()))
    }

    /// Opens the `log` FIFO and copies what the shim writes into picolet's
    /// log (debug level) until the returned handle is dropped. Keep it for
    /// the whole life of the bundle: whichever bundle's `start` spawns the
    /// serving shim, that shim needs a reader or it hangs.
    pub fn drain_log(&self) -> Result<LogDrain> {
        let path = self.log_fifo();
        // O_RDWR: the open never blocks, and we never see EOF when the shim
        // restarts its writer.
        let fd = rustix::fs::open(
            &path,
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .with_context(|| format!("open shim log {}", path.display()))?;
        let f =
            Async::new(File::from(fd)).with_context(|| format!("register {}", path.display()))?;
        let id = self.id.clone();
        // The shim writes a few lines at start and on errors: wait for
        // readability holding no buffer (one drain per bundle, for the
        // pod's whole life), then read what is there with a stack buffer.
        let task = crate::rt::spawn(async move {
            let mut line = Vec::new();
            loop {
                if let Err(e) = f.readable().await {
                    log::debug!("shim log {id}: {e}");
                    break;
                }
                let mut buf = [0u8; 1024];
                let n = match std::io::Read::read(&mut f.get_ref(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        log::debug!("shim log {id}: {e}");
                        break;
                    }
                };
                line.extend_from_slice(&buf[..n]);
                while let Some(i) = line.iter().position(|&b| b == b'\n') {
                    log::debug!(target: "picolet::shim", "{id}: {}", String::from_utf8_lossy(&line[..i]));
                    line.drain(..=i);
                }
                if line.len() > 16 << 10 {
                    log::debug!(target: "picolet::shim", "{id}: {}", String::from_utf8_lossy(&line));
                    line.clear();
                }
                if line.is_empty() {
                    line = Vec::new(); // give the capacity back
                }
            }
        });
        Ok(LogDrain { _task: task })
    }
}

/// Keeps a bundle's `log` FIFO drained; dropping it closes the reader.
pub struct LogDrain {
    _task: smol::Task<()>,
}

/// Creates a FIFO (0600) unless one exists.
pub fn mkfifo(path: &Path) -> Result<()> {
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => {
            let m = std::fs::symlink_metadata(path)
                .with_context(|| format!("stat {}", path.display()))?;
            if !m.file_type().is_fifo() {
                bail!("{} exists and is not a FIFO", path.display());
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("mkfifo {}", path.display())),
    }
}

/// Creates the FIFO unless it exists and opens its read end, non-blocking
/// (a reader never waits for a writer to come).
pub fn open_fifo_reader(path: &Path) -> Result<rustix::fd::OwnedFd> {
    mkfifo(path)?;
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .with_context(|| format!("open FIFO {}", path.display()))
}

fn mounted_in_proc(path: &Path) -> bool {
    mountinfo::read().is_ok_and(|m| mountinfo::is_mount_point(&m, path))
}

fn shim_command(cfg: &ShimConfig, bundle: &Bundle, action: &str) -> smol::process::Command {
    let mut c = smol::process::Command::new(&cfg.binary);
    c.arg("-namespace").arg(&cfg.namespace);
    c.arg("-id").arg(&bundle.id);
    c.arg("-address").arg(&cfg.address);
    if cfg.debug {
        c.arg("-debug");
    }
    c.arg(action);
    c.current_dir(&bundle.dir)
        .env("TTRPC_ADDRESS", &cfg.events_socket)
        // `start` reads stdin to EOF (optional runc options): never a tty/pipe.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run_action(cfg: &ShimConfig, bundle: &Bundle, action: &str) -> Result<Vec<u8>> {
    let what = || format!("{} {action} for {}", cfg.binary.display(), bundle.id);
    let child = shim_command(cfg, bundle, action)
        .spawn()
        .with_context(what)?;
    let out = future::or(async { Some(child.output().await) }, async {
        Timer::after(ACTION_TIMEOUT).await;
        None
    })
    .await;
    let out = match out {
        None => bail!("{}: no exit within {ACTION_TIMEOUT:?}", what()),
        Some(r) => r.with_context(what)?,
    };
    if !out.status.success() {
        bail!(
            "{}: {}: {}",
            what(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Runs the shim's `start` for a prepared bundle (config.json written, its
/// `log` FIFO drained): spawns the group's shim or finds the running one,
/// and returns where it listens. The shim writes `BUNDLE/address`.
pub async fn start(cfg: &ShimConfig, bundle: &Bundle) -> Result<ShimAddress> {
    let out = run_action(cfg, bundle, "start").await?;
    let text = String::from_utf8_lossy(&out);
    let addr =
        parse_start_output(&text).with_context(|| format!("shim start for {}", bundle.id))?;
    if text.trim_start().starts_with('{') {
        crate::util::fs::write_atomic(&bundle.bootstrap_path(), text.trim().as_bytes())
            .with_context(|| format!("write {}", bundle.bootstrap_path().display()))?;
    }
    Ok(addr)
}

/// Exit of a process as the shim reports it. `exited_at`: Unix ns (0 if
/// not exited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exit {
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: i64,
}

/// The shim's `delete` action, for a container whose shim is gone
/// (crashed, killed): `runc delete --force`, unmount `rootfs`. Run it for
/// every container the dead shim served, then [`remove_stale_socket`].
pub async fn delete_action(cfg: &ShimConfig, bundle: &Bundle) -> Result<Exit> {
    let out = run_action(cfg, bundle, "delete").await?;
    let r = pb::DeleteResponse::parse_from_bytes(&out)
        .with_context(|| format!("decode DeleteResponse of the shim delete for {}", bundle.id))?;
    Ok(Exit {
        pid: r.pid,
        exit_status: r.exit_status,
        exited_at: super::events::timestamp_nanos(&r.exited_at),
    })
}

/// Removes a shim's socket file if nobody serves it (a killed shim leaves
/// it behind). Returns whether it removed it.
pub fn remove_stale_socket(addr: &ShimAddress) -> Result<bool> {
    match std::os::unix::net::UnixStream::connect(&addr.socket) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(_) => match std::fs::remove_file(&addr.socket) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("remove {}", addr.socket.display())),
        },
    }
}

/// Task status (`containerd.v1.types.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskStatus {
    #[default]
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

/// A process's state (`State` response). Times are Unix ns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskState {
    pub id: String,
    pub exec_id: String,
    pub bundle: String,
    pub pid: u32,
    pub status: TaskStatus,
    pub exit_status: u32,
    pub exited_at: i64,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl TaskState {
    /// The exit this state reports (meaningful once `status` is Stopped).
    pub fn exit(&self) -> Exit {
        Exit {
            pid: self.pid,
            exit_status: self.exit_status,
            exited_at: self.exited_at,
        }
    }
}

/// A mount for `Create.rootfs` (the shim mounts it on `BUNDLE/rootfs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootfsMount {
    /// e.g. `overlay`
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// `Create` of a container's init process. Stdio: empty = /dev/null; a
/// FIFO path (open a reader first, or Create blocks); a regular file (must
/// exist); `file:///p`; `binary:///p?k=v`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTask {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<RootfsMount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// `Exec` of an extra process in a container.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecProcess {
    pub id: String,
    pub exec_id: String,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// The OCI `process` object (sent as JSON).
    pub spec: serde_json::Value,
}

/// `Connect` response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShimInfo {
    pub shim_pid: u32,
    pub task_pid: u32,
    pub version: String,
}

/// Cgroup metrics of a container (`Stats`): v1 on cgroup v1/hybrid hosts,
/// v2 on unified hosts.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    V1(Box<cgroups_v1::metrics::Metrics>),
    V2(Box<cgroups_v2::metrics::Metrics>),
}

impl Metrics {
    pub fn decode(any: &protobuf::well_known_types::any::Any) -> Result<Metrics> {
        match proto::type_name(&any.type_url) {
            n @ "io.containerd.cgroups.v1.Metrics" => {
                Ok(Metrics::V1(Box::new(proto::unpack(any, n)?)))
            }
            n @ "io.containerd.cgroups.v2.Metrics" => {
                Ok(Metrics::V2(Box::new(proto::unpack(any, n)?)))
            }
            _ => bail!("unsupported stats type {:?}", any.type_url),
        }
    }

    /// CRI container stats the way containerd's CRI computes them
    /// (working set = usage - inactive file; RSS = total_rss / anon).
    pub fn to_container_stats(&self, id: &str, timestamp: i64) -> ContainerStats {
        let mut s = ContainerStats {
            id: id.to_string(),
            timestamp,
            ..Default::default()
        };
        match self {
            Metrics::V1(m) => {
                if let Some(cpu) = m.cpu.as_ref() {
                    s.cpu_usage_core_nanoseconds = cpu.usage.as_ref().map_or(0, |u| u.total);
                }
                if let Some(mem) = m.memory.as_ref() {
                    let usage = mem.usage.as_ref().map_or(0, |u| u.usage);
                    s.memory_usage_bytes = usage;
                    s.memory_working_set_bytes = usage.saturating_sub(mem.total_inactive_file);
                    s.memory_rss_bytes = mem.total_rss;
                    s.memory_limit_bytes = mem.usage.as_ref().map_or(0, |u| u.limit);
                }
                s.oom_kills = m.memory_oom_control.as_ref().map_or(0, |o| o.oom_kill);
                s.pids = m.pids.as_ref().map_or(0, |p| p.current);
            }
            Metrics::V2(m) => {
                if let Some(cpu) = m.cpu.as_ref() {
                    s.cpu_usage_core_nanoseconds = cpu.usage_usec.saturating_mul(1000);
                }
                if let Some(mem) = m.memory.as_ref() {
                    s.memory_usage_bytes = mem.usage;
                    s.memory_working_set_bytes = mem.usage.saturating_sub(mem.inactive_file);
                    s.memory_rss_bytes = mem.anon;
                    s.memory_limit_bytes = mem.usage_limit;
                }
                s.oom_kills = m.memory_events.as_ref().map_or(0, |e| e.oom_kill);
                s.pids = m.pids.as_ref().map_or(0, |p| p.current);
            }
        }
        s
    }
}

/// A connection to one shim (shared by the containers of its group).
/// Cheap to clone. Every method is one task API call; errors keep the
/// ttrpc status code ([`ttrpc::Error::code`]).
#[derive(Clone)]
pub struct Shim {
    client: Client,
    address: Rc<ShimAddress>,
    timeout: Duration,
}

type CallResult<T> = std::result::Result<T, ttrpc::Error>;

fn exec_opt(exec_id: Option<&str>) -> String {
    exec_id.unwrap_or_default().to_string()
}

impl Shim {
    /// A client for the shim at `address` (connects on the first call).
    pub fn new(address: ShimAddress, namespace: &str, timeout: Duration) -> Shim {
        let client = Client::new(
            address.socket.clone(),
            vec![(ttrpc::NAMESPACE_KEY.to_string(), namespace.to_string())],
        );
        Shim {
            client,
            address: Rc::new(address),
            timeout,
        }
    }

    pub fn address(&self) -> &ShimAddress {
        &self.address
    }

    /// Drops the connection (the next call reconnects).
    pub fn disconnect(&self) {
        self.client.disconnect();
    }

    async fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> CallResult<Resp> {
        self.client
            .call(self.address.api.service(), method, req, timeout)
            .await
    }

    /// `Create`, after checking with `State` that the id is not already
    /// known to the shim: a second Create of a live id fails *and unmounts
    /// the running container's rootfs* (RUNTIME.md pitfall 6). An existing
    /// task gives `AlreadyExists`. Returns the init pid.
    pub async fn create(&self, req: &CreateTask) -> CallResult<u32> {
        match self.state(&req.id, None).await {
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
            Ok(st) => {
                return Err(ttrpc::Error::Status {
                    method: format!("{}/Create", self.address.api.service()),
                    code: Code::AlreadyExists,
                    message: format!("task {} already exists ({:?})", req.id, st.status),
                })
            }
        }
        let mut r = pb::CreateTaskRequest::new();
        r.id = req.id.clone();
        r.bundle = req.bundle.to_string_lossy().into_owned();
        for m in &req.rootfs {
            let mut pm = pb_mount::Mount::new();
            pm.type_ = m.kind.clone();
            pm.source = m.source.clone();
            pm.options = m.options.clone();
            r.rootfs.push(pm);
        }
        r.stdin = req.stdin.clone();
        r.stdout = req.stdout.clone();
        r.stderr = req.stderr.clone();
        r.terminal = req.terminal;
        let resp: pb::CreateTaskResponse = self.call("Create", &r, Some(self.timeout)).await?;
        Ok(resp.pid)
    }

    /// `Start` of the init process (`exec_id` None) or an exec; the pid.
    pub async fn start(&self, id: &str, exec_id: Option<&str>) -> CallResult<u32> {
        let mut r = pb::StartRequest::new();
        r.id = id.to_string();
        r.exec_id = exec_opt(exec_id);
        let resp: pb::StartResponse = self.call("Start", &r, Some(self.timeout)).await?;
        Ok(resp.pid)
    }

    pub async fn state(&self, id: &str, exec_id: Option<&str>) -> CallResult<TaskState> {
        let mut r = pb::StateRequest::new();
        r.id = id.to_string();
        r.exec_id = exec_opt(exec_id);
        let s: pb::StateResponse = self.call("State", &r, Some(self.timeout)).await?;
        let status = match s.status.enum_value() {
            Ok(pb_task::Status::CREATED) => TaskStatus::Created,
            Ok(pb_task::Status::RUNNING) => TaskStatus::Running,
            Ok(pb_task::Status::STOPPED) => TaskStatus::Stopped,
            Ok(pb_task::Status::PAUSED) => TaskStatus::Paused,
            Ok(pb_task::Status::PAUSING) => TaskStatus::Pausing,
            _ => TaskStatus::Unknown,
        };
        Ok(TaskState {
            exited_at: super::events::timestamp_nanos(&s.exited_at),
            id: s.id,
            exec_id: s.exec_id,
            bundle: s.bundle,
            pid: s.pid,
            status,
            exit_status: s.exit_status,
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
            terminal: s.terminal,
        })
    }

    /// Signals the process; `all`: every process of the container (needed
    /// for the final SIGKILL).
    pub async fn kill(
        &self,
        id: &str,
        exec_id: Option<&str>,
        signal: u32,
        all: bool,
    ) -> CallResult<()> {
        let mut r = pb::KillRequest::new();
        r.id = id.to_string();
        r.exec_id = exec_opt(exec_id);
        r.signal = signal;
        r.all = all;
        let _: protobuf::well_known_types::empty::Empty =
            self.call("Kill", &r, Some(self.timeout)).await?;
        Ok(())
    }

    /// Blocks until the process exits (at once if it has); no timeout:
    /// race it with a timer or run it as its own task.
    pub async fn wait(&self, id: &str, exec_id: Option<&str>) -> CallResult<Exit> {
        let mut r = pb::WaitRequest::new();
        r.id = id.to_string();
        r.exec_id = exec_opt(exec_id);
        let w: pb::WaitResponse = self.call("Wait", &r, None).await?;
        Ok(Exit {
            pid: 0,
            exit_status: w.exit_status,
            exited_at: super::events::timestamp_nanos(&w.exited_at),
        })
    }

    /// Deletes an exited process; for the init process also the runc
    /// container, its cgroup and the rootfs mount.
    pub async fn delete(&self, id: &str, exec_id: Option<&str>) -> CallResult<Exit> {
        let mut r = pb::DeleteRequest::new();
        r.id = id.to_string();
        r.exec_id = exec_opt(exec_id);
        let d: pb::DeleteResponse = self.call("Delete", &r, Some(self.timeout)).await?;
        Ok(Exit {
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: super::events::timestamp_nanos(&d.exited_at),
        })
    }

    /// `Exec`: adds a process (not started yet).
    pub async fn exec(&self, p: &ExecProcess) -> CallResult<()> {
        let mut r = pb::ExecProcessRequest::new();
        r.id = p.id.clone();
        r.exec_id = p.exec_id.clone();
        r.stdin = p.stdin.clone();
        r.stdout = p.stdout.clone();
        r.stderr = p.stderr.clone();
        r.terminal = p.terminal;
        r.spec = protobuf::MessageField::some(json_any(TYPE_PROCESS, &p.spec));
        let _: protobuf::well_known_types::empty::Empty =
            self.call("Exec", &r, Some(self.timeout)).await?;
        Ok(())
    }

    /// `ResizePty`: the terminal size of a process run with `terminal`.
    pub async fn resize_pty(
        &self,
        id: &str,
        exec_id: Option<&str>,
        width: u32,
        height: u32,
    ) -> CallResult<()> {
        let mut r = pb::ResizePtyRequest::new();
        r.id = id.to_string();
        r.exec_id = exec_opt(exec_id);
        r.width = width;
        r.height = height;
        let _: protobuf::well_known_types::empty::Empty =
            self.call("ResizePty", &r, Some(self.timeout)).await?;
        Ok(())
    }

    /// `CloseIO` with `stdin`: the process's stdin is closed (EOF).
    pub async fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> CallResult<()> {
        let mut r = pb::CloseIORequest::new();
        r.id = id.to_string();
        r.exec_id = exec_opt(exec_id);
        r.stdin = true;
        let _: protobuf::well_known_types::empty::Empty =
            self.call("CloseIO", &r, Some(self.timeout)).await?;
        Ok(())
    }

    pub async fn pids(&self, id: &str) -> CallResult<Vec<u32>> {
        let mut r = pb::PidsRequest::new();
        r.id = id.to_string();
        let p: pb::PidsResponse = self.call("Pids", &r, Some(self.timeout)).await?;
        Ok(p.processes.iter().map(|p| p.pid).collect())
    }

    pub async fn stats(&self, id: &str) -> Result<Metrics> {
        let mut r = pb::StatsRequest::new();
        r.id = id.to_string();
        let s: pb::StatsResponse = self.call("Stats", &r, Some(self.timeout)).await?;
        let any = s
            .stats
            .as_ref()
            .with_context(|| format!("Stats of {id}: empty"))?;
        Metrics::decode(any).with_context(|| format!("Stats of {id}"))
    }

    /// Applies OCI `linux.resources` (JSON) to a running container.
    pub async fn update(&self, id: &str, resources: &serde_json::Value) -> CallResult<()> {
        let mut r = pb::UpdateTaskRequest::new();
        r.id = id.to_string();
        r.resources = protobuf::MessageField::some(json_any(TYPE_RESOURCES, resources));
        let _: protobuf::well_known_types::empty::Empty =
            self.call("Update", &r, Some(self.timeout)).await?;
        Ok(())
    }

    pub async fn connect(&self, id: &str) -> CallResult<ShimInfo> {
        let mut r = pb::ConnectRequest::new();
        r.id = id.to_string();
        let c: pb::ConnectResponse = self.call("Connect", &r, Some(self.timeout)).await?;
        Ok(ShimInfo {
            shim_pid: c.shim_pid,
            task_pid: c.task_pid,
            version: c.version,
        })
    }

    /// Asks the shim to exit. A no-op while it still has containers (delete
    /// them first). The shim may close the connection before answering;
    /// that counts as success.
    pub async fn shutdown(&self, id: &str) -> CallResult<()> {
        let mut r = pb::ShutdownRequest::new();
        r.id = id.to_string();
        let res: CallResult<protobuf::well_known_types::empty::Empty> =
            self.call("Shutdown", &r, Some(self.timeout)).await;
        self.client.disconnect();
        match res {
            Ok(_) | Err(ttrpc::Error::Closed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn json_any(type_url: &str, v: &serde_json::Value) -> protobuf::well_known_types::any::Any {
    let mut a = protobuf::well_known_types::any::Any::new();
    a.type_url = type_url.to_string();
    a.value = v.to_string().into_bytes();
    a
}

/// picolet's shims: runs `start`/`delete` and keeps one [`Shim`] (one
/// connection) per shim socket, so the containers of a pod share it.
pub struct Shims {
    cfg: ShimConfig,
    by_socket: RefCell<HashMap<PathBuf, Shim>>,
}

impl Shims {
    pub fn new(cfg: ShimConfig) -> Shims {
        Shims {
            cfg,
            by_socket: RefCell::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ShimConfig {
        &self.cfg
    }

    /// The (shared) client for a shim address.
    pub fn attach(&self, address: ShimAddress) -> Shim {
        let mut m = self.by_socket.borrow_mut();
        m.entry(address.socket.clone())
            .or_insert_with(|| Shim::new(address, &self.cfg.namespace, self.cfg.call_timeout))
            .clone()
    }

    /// Runs `start` for a prepared bundle (its `log` FIFO drained) and
    /// returns the group's shim.
    pub async fn start(&self, bundle: &Bundle) -> Result<Shim> {
        let addr = start(&self.cfg, bundle).await?;
        Ok(self.attach(addr))
    }

    /// The shim of an existing bundle, from its `address` (after a picolet
    /// restart). `None` if `start` never ran for it. Does not check that
    /// the shim is alive: the first call tells (`Unavailable` if not).
    pub fn reconnect(&self, bundle: &Bundle) -> Result<Option<Shim>> {
        Ok(bundle.read_address()?.map(|a| self.attach(a)))
    }

    /// Shuts a shim down once all its containers are deleted, and forgets it.
    pub async fn shutdown(&self, shim: &Shim, id: &str) -> CallResult<()> {
        let r = shim.shutdown(id).await;
        if r.is_ok() {
            self.forget(shim.address());
        }
        r
    }

    /// Forgets the client of a shim (gone or shut down).
    pub fn forget(&self, address: &ShimAddress) {
        if let Some(s) = self.by_socket.borrow_mut().remove(&address.socket) {
            s.disconnect();
        }
    }

    /// Cleans up after a dead shim for one of its containers: the shim's
    /// `delete` action (kills the container, unmounts rootfs, deletes runc
    /// state) and the stale socket.
    pub async fn cleanup_dead(&self, bundle: &Bundle) -> Result<Exit> {
        let exit = delete_action(&self.cfg, bundle).await?;
        if let Some(addr) = bundle.read_address()? {
            self.forget(&addr);
            remove_stale_socket(&addr)?;
        }
        Ok(exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bare_and_json_start_output() {
        let a = parse_start_output("unix:///run/containerd/s/abc").unwrap();
        assert_eq!(a.socket, Path::new("/run/containerd/s/abc"));
        assert_eq!(a.api, TaskApi::V2);
        assert_eq!(a.url, "unix:///run/containerd/s/abc");
        let a = parse_start_output(
            r#"{"version":3,"address":"unix:///run/containerd/s/x","protocol":"ttrpc"}"#,
        )
        .unwrap();
        assert_eq!(a.api, TaskApi::V3);
        assert_eq!(a.api.service(), "containerd.task.v3.Task");
        assert_eq!(a.socket, Path::new("/run/containerd/s/x"));
        assert!(
            parse_start_output(r#"{"version":3,"address":"unix:///x","protocol":"grpc"}"#).is_err()
        );
        assert!(parse_start_output("vsock://3:1024").is_err());
        assert!(parse_start_output("").is_err());
    }

    #[test]
    fn ids_are_safe_directory_names() {
        assert!(validate_id("abc-1.2_x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(77)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v1_metrics_to_cri_stats() {
        let mut m = cgroups_v1::metrics::Metrics::new();
        let mut mem = cgroups_v1::metrics::MemoryStat::new();
        let mut usage = cgroups_v1::metrics::MemoryEntry::new();
        usage.usage = 1000;
        usage.limit = 4096;
        mem.usage = protobuf::MessageField::some(usage);
        mem.total_inactive_file = 300;
        mem.total_rss = 600;
        m.memory = protobuf::MessageField::some(mem);
        let mut cpu = cgroups_v1::metrics::CPUStat::new();
        let mut cu = cgroups_v1::metrics::CPUUsage::new();
        cu.total = 123;
        cpu.usage = protobuf::MessageField::some(cu);
        m.cpu = protobuf::MessageField::some(cpu);
        let mut oom = cgroups_v1::metrics::MemoryOomControl::new();
        oom.oom_kill = 1;
        m.memory_oom_control = protobuf::MessageField::some(oom);
        let s = Metrics::V1(Box::new(m)).to_container_stats("c", 5);
        assert_eq!(
            (
                s.memory_usage_bytes,
                s.memory_working_set_bytes,
                s.memory_rss_bytes
            ),
            (1000, 700, 600)
        );
        assert_eq!(
            (
                s.memory_limit_bytes,
                s.cpu_usage_core_nanoseconds,
                s.oom_kills
            ),
            (4096, 123, 1)
        );
        let any = proto::pack(
            "io.containerd.cgroups.v1.Metrics",
            &cgroups_v1::metrics::Metrics::new(),
        )
        .unwrap();
        assert!(matches!(Metrics::decode(&any).unwrap(), Metrics::V1(_)));
    }

    #[test]
    fn v2_metrics_to_cri_stats() {
        let mut m = cgroups_v2::metrics::Metrics::new();
        let mut mem = cgroups_v2::metrics::MemoryStat::new();
        mem.usage = 500;
        mem.inactive_file = 600;
        mem.anon = 50;
        mem.usage_limit = 1 << 20;
        m.memory = protobuf::MessageField::some(mem);
        let mut cpu = cgroups_v2::metrics::CPUStat::new();
        cpu.usage_usec = 7;
        m.cpu = protobuf::MessageField::some(cpu);
        let s = Metrics::V2(Box::new(m)).to_container_stats("c", 5);
        assert_eq!((s.memory_working_set_bytes, s.memory_rss_bytes), (0, 50));
        assert_eq!(s.cpu_usage_core_nanoseconds, 7000);
    }
}
