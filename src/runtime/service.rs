//! [`ShimRuntime`]: the [`Runtime`] (CRI RuntimeService shape) built from
//! the shim client, the events server, the log copier, exec, the OCI spec
//! builder, cgroupfs, CNI and the image store.
//!
//! Shape of a pod: the sandbox is a `picolet pause` container that leads
//! the pod's shim (one shim per sandbox: the group annotation is the
//! sandbox id, so a re-created sandbox of the same pod never joins the old
//! one's shim); it holds the pod's ipc/uts/pid namespaces, the network
//! namespace is a bind mount made before it (CNI configured). App
//! containers join those. Every bundle's `log` FIFO is drained for the
//! bundle's whole life.
//!
//! Life of a container, as containerd's CRI does it:
//! - `create_container`: bundle, overlay rootfs mounted by picolet at
//!   `BUNDLE/rootfs` (the spec builder reads the image's /etc/passwd), the
//!   container's cgroup made and its limits written (a refused write fails
//!   here, naming the file and value), `config.json`. No task yet.
//! - `start_container`: log FIFOs opened, shim `Create` (runc create: a
//!   missing binary fails here) and `Start`; then a short watch until the
//!   process has exec'd, so runc's exec failures (exec format error) are
//!   start failures too. A failed start leaves the container exited with
//!   `StartError` / 128 and runc's message, nothing running or mounted.
//! - on exit (shim event, or found by [`ShimRuntime::relist`]): OOM read
//!   from the event or the cgroup's kill count, task deleted (frees the
//!   cgroup), the log copy finished, rootfs unmounted, the termination
//!   message read; then `ContainerExited` is sent.
//!
//! Every state change is checkpointed first (`state`), and recovery
//! (`recovery`) rebuilds this picture after a restart.

use super::cgroups::Cgroups;
use super::events::{EventServer, TaskEvent};
use super::logs::{ContainerLog, LogCopy, LogPolicy};
use super::rules::{self, TerminationFile};
use super::shim::{
    self, Bundle, CreateTask, Exit, LogDrain, Shim, ShimConfig, Shims, TaskStatus, GROUP_ANNOTATION,
};
use super::spec::{self, HostInfo, SandboxContext, SpecError};
use super::state::{ContainerCheckpoint, ContainerPhase, ExitInfo, SandboxCheckpoint, StateDir};
use super::ttrpc;
use super::types::*;
use crate::config::Config;
use crate::image::{ImageService, RootfsMount};
use crate::network::{needs_pod_network, NetworkStatus, PodNetworkRequest, PodNetworks};
use crate::pause::PauseBinary;
use anyhow::{anyhow, Context};
use async_io::Timer;
use futures_lite::future;
use smol::channel::{self, Receiver, Sender};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// How long a SIGKILLed process may take to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// How long `start_container` watches for the process to exec.
const EXEC_WATCH: Duration = Duration::from_secs(2);
/// How much of the end of a log the termination message may need.
const LOG_TAIL_READ: u64 = (rules::MAX_TERMINATION_LOG_LINES as u64 + 1) * 17 * 1024;

/// What the runtime needs besides the [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The binary the sandbox runs as `/pause pause`: picolet itself
    /// (`picolet run` passes its own executable).
    pub pause_binary: PathBuf,
}

/// The runtime over containerd's runc shim. Single-threaded: use it from
/// the executor's tasks (`&self` methods, interior state).
pub struct ShimRuntime {
    pub(super) inner: Rc<Inner>,
    _events: smol::Task<()>,
}

pub(super) struct Inner {
    pub(super) state: StateDir,
    pub(super) bundles_dir: PathBuf,
    pause_root: PathBuf,
    pub(super) cgroup_root: String,
    pub(super) cgroups_per_qos: bool,
    pub(super) log_policy: LogPolicy,
    pub(super) netns_dir: PathBuf,
    pub(super) shims: Rc<Shims>,
    pub(super) other_shims: RefCell<Vec<Rc<Shims>>>,
    pub(super) net: PodNetworks,
    pub(super) cgroups: Cgroups,
    host: HostInfo,
    pause: PauseBinary,
    images: Rc<ImageService>,
    pub(super) sandboxes: RefCell<BTreeMap<String, Rc<Sandbox>>>,
    pub(super) containers: RefCell<BTreeMap<String, Rc<Ctr>>>,
    tx: Sender<RuntimeEvent>,
    _event_server: EventServer,
}

/// A sandbox in memory: its checkpoint plus the live handles.
pub(super) struct Sandbox {
    pub(super) cp: RefCell<SandboxCheckpoint>,
    pub(super) shims: Rc<Shims>,
    pub(super) shim: RefCell<Option<Shim>>,
    pub(super) drain: RefCell<Option<LogDrain>>,
    /// Serialises making, exit handling, stopping and removal.
    pub(super) lock: smol::lock::Mutex<()>,
}

/// A container in memory.
pub(super) struct Ctr {
    pub(super) cp: RefCell<ContainerCheckpoint>,
    pub(super) shim: RefCell<Option<Shim>>,
    pub(super) drain: RefCell<Option<LogDrain>>,
    pub(super) copy: RefCell<Option<LogCopy>>,
    /// The write end of the container's stdin FIFO (`stdin: true`), for
    /// attach sessions.
    pub(super) stdin: Rc<RefCell<Option<super::stream::Stdin>>>,
    /// Serialises making, starting, exit handling and removal.
    pub(super) lock: smol::lock::Mutex<()>,
}

impl Sandbox {
    pub(super) fn new(cp: SandboxCheckpoint, shims: Rc<Shims>) -> Rc<Sandbox> {
        Rc::new(Sandbox {
            cp: RefCell::new(cp),
            shims,
            shim: RefCell::new(None),
            drain: RefCell::new(None),
            lock: smol::lock::Mutex::new(()),
        })
    }
    pub(super) fn id(&self) -> String {
        self.cp.borrow().id.clone()
    }
    pub(super) fn bundle(&self) -> Bundle {
        let cp = self.cp.borrow();
        Bundle {
            id: cp.id.clone(),
            dir: cp.bundle.clone(),
        }
    }
    fn ready(&self) -> bool {
        let cp = self.cp.borrow();
        !cp.creating && !cp.stopped && cp.exit.is_none()
    }
}

impl Ctr {
    pub(super) fn new(cp: ContainerCheckpoint) -> Rc<Ctr> {
        Rc::new(Ctr {
            cp: RefCell::new(cp),
            shim: RefCell::new(None),
            drain: RefCell::new(None),
            copy: RefCell::new(None),
            stdin: Rc::default(),
            lock: smol::lock::Mutex::new(()),
        })
    }
    pub(super) fn id(&self) -> String {
        self.cp.borrow().id.clone()
    }
    pub(super) fn bundle(&self) -> Bundle {
        let cp = self.cp.borrow();
        Bundle {
            id: cp.id.clone(),
            dir: cp.bundle.clone(),
        }
    }
    pub(super) fn phase(&self) -> ContainerPhase {
        self.cp.borrow().phase
    }
}

fn other(e: anyhow::Error) -> RuntimeError {
    RuntimeError::Other(e)
}

fn create_err(e: anyhow::Error) -> RuntimeError {
    RuntimeError::CreateContainer(format!("{e:#}"))
}

/// The shim is gone: its socket is missing or refuses connections.
pub(super) fn shim_gone(e: &ttrpc::Error) -> bool {
    matches!(e, ttrpc::Error::Connect { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused))
}

/// How a process ended, and whether its task is already gone from the shim.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ended {
    pub(super) exit: Exit,
    /// Deleted already (shim delete action, or the task vanished).
    pub(super) task_gone: bool,
    /// Exit status unknown (the task vanished while nobody watched).
    pub(super) unknown: bool,
}

impl Ended {
    pub(super) fn of(exit: Exit) -> Ended {
        Ended {
            exit,
            task_gone: false,
            unknown: false,
        }
    }
    pub(super) fn vanished() -> Ended {
        Ended {
            exit: Exit {
                pid: 0,
                exit_status: rules::UNKNOWN_EXIT_CODE as u32,
                exited_at: rules::now_ns(),
            },
            task_gone: true,
            unknown: true,
        }
    }
}

impl ShimRuntime {
    /// Detects the host (cgroups, capabilities), starts the events server
    /// (before any shim), loads the checkpoints and recovers: shims
    /// reconnected, running containers adopted (their logs continue), what
    /// exited meanwhile finished, what is half-made or orphaned removed.
    /// Events arrive on the returned channel (unbounded).
    pub async fn new(
        cfg: &Config,
        opts: RuntimeOptions,
        images: Rc<ImageService>,
    ) -> anyhow::Result<(ShimRuntime, Receiver<RuntimeEvent>)> {
        let cgroups = Cgroups::detect().context("detect cgroups")?;
        // Say once what this kernel cannot enforce; pods run without it.
        let v = if cgroups.unified { "v2" } else { "v1" };
        for c in cgroups.missing_controllers() {
            let Some((_, lost, used)) = super::cgroups::FEATURES.iter().find(|f| f.0 == c) else {
                continue;
            };
            let level = if *used {
                log::Level::Warn
            } else {
                log::Level::Info
            };
            log::log!(
                level,
                "cgroup controller \"{c}\" missing on this host (cgroup {v}): {lost}"
            );
        }
        let host = HostInfo::detect(&cgroups).context("detect host capabilities")?;
        let pause_path = opts.pause_binary.clone();
        let pause = crate::rt::unblock(move || PauseBinary::for_path(&pause_path))
            .await
            .context("inspect the pause binary")?;
        let shim_cfg = ShimConfig::from_config(cfg);
        let (server, events) = EventServer::start(&shim_cfg.events_socket)?;
        let state = StateDir::new(&cfg.state_dir());
        let bundles_dir = cfg.bundles_dir();
        for d in [&bundles_dir, &state.sandboxes(), &state.containers()] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let pause_root = cfg.state_dir().join("pause-root");
        spec::prepare_sandbox_rootfs(&pause_root)?;
        let k = &cfg.kubelet;
        if k.cgroups_per_qos {
            cgroups
                .ensure_qos_parents(&k.cgroup_root)
                .context("create the QoS cgroups")?;
        }
        let (tx, rx) = channel::unbounded();
        let inner = Rc::new(Inner {
            state,
            bundles_dir,
            pause_root,
            cgroup_root: k.cgroup_root.clone(),
            cgroups_per_qos: k.cgroups_per_qos,
            log_policy: LogPolicy::from_config(cfg),
            netns_dir: cfg.netns_dir(),
            shims: Rc::new(Shims::new(shim_cfg)),
            other_shims: RefCell::new(Vec::new()),
            net: PodNetworks::new(cfg),
            cgroups,
            host,
            pause,
            images,
            sandboxes: RefCell::new(BTreeMap::new()),
            containers: RefCell::new(BTreeMap::new()),
            tx,
            _event_server: server,
        });
        let loaded = inner.state.load()?;
        inner.recover(loaded).await?;
        inner.update_burstable_shares();
        let task = crate::rt::spawn(consume_events(Rc::downgrade(&inner), events));
        Ok((
            ShimRuntime {
                inner,
                _events: task,
            },
            rx,
        ))
    }

    /// Re-reads the state of every live sandbox and container from its
    /// shim (events can be lost): what exited is finished (task deleted,
    /// logs flushed, checkpointed) and reported; a dead shim's containers
    /// are cleaned up with the shim's `delete` action and reported exited.
    /// Returns the events it sent on the channel too.
    pub async fn relist(&self) -> Vec<RuntimeEvent> {
        self.inner.relist().await
    }

    /// The node's network readiness (CRI `NetworkReady`): a CNI config
    /// loads and its plugins exist.
    pub fn network_status(&self) -> NetworkStatus {
        self.inner.net.cni().status()
    }
}

/// Turns shim events into runtime events; exits are finished (see the
/// module doc) before `ContainerExited` / `SandboxChanged` goes out.
async fn consume_events(inner: Weak<Inner>, rx: Receiver<super::events::Event>) {
    while let Ok(ev) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let cid = ev.event.container_id().to_string();
        let is_sandbox = inner.sandboxes.borrow().contains_key(&cid);
        let is_container = inner.containers.borrow().contains_key(&cid);
        if !is_sandbox && !is_container {
            continue;
        }
        match &ev.event {
            TaskEvent::Exit {
                id,
                pid,
                exit_status,
                exited_at,
                ..
            } if *id == cid || id.is_empty() => {
                let exit = Exit {
                    pid: *pid,
                    exit_status: *exit_status,
                    exited_at: *exited_at,
                };
                crate::rt::spawn(async move {
                    if is_sandbox {
                        let sb = inner.sandboxes.borrow().get(&cid).cloned();
                        if let Some(sb) = sb {
                            inner.finish_sandbox(&sb, Ended::of(exit)).await;
                        }
                    } else {
                        let c = inner.containers.borrow().get(&cid).cloned();
                        if let Some(c) = c {
                            inner.finish_container(&c, Ended::of(exit)).await;
                        }
                    }
                })
                .detach();
            }
            TaskEvent::Oom { .. } if is_container => {
                if let Some(c) = inner.containers.borrow().get(&cid) {
                    c.cp.borrow_mut().oom = true;
                }
                inner.emit(RuntimeEvent::ContainerOom { id: cid });
            }
            TaskEvent::Start { .. } | TaskEvent::Delete { .. } if is_sandbox => {
                inner.emit(RuntimeEvent::SandboxChanged { id: cid });
            }
            e => {
                if let Some(re) = e.to_runtime_event() {
                    if !matches!(re, RuntimeEvent::ContainerExited { .. }) {
                        inner.emit(re);
                    }
                }
            }
        }
    }
}

impl Inner {
    pub(super) fn emit(&self, e: RuntimeEvent) {
        // Nobody listening is fine (tests, shutdown).
        let _ = self.tx.try_send(e);
    }

    /// The shim manager for a sandbox's recorded `-namespace`/`-address`
    /// (those name the shim's socket: an older sandbox keeps its own).
    pub(super) fn shims_for(&self, namespace: &str, address: &Path) -> Rc<Shims> {
        let main = self.shims.config();
        if main.namespace == namespace && main.address == address {
            return self.shims.clone();
        }
        let mut others = self.other_shims.borrow_mut();
        if let Some(s) = others
            .iter()
            .find(|s| s.config().namespace == namespace && s.config().address == address)
        {
            return s.clone();
        }
        log::warn!(
            "sandboxes of runtime namespace {namespace:?} (address {}) are still served: keeping their shims",
            address.display()
        );
        let s = Rc::new(Shims::new(ShimConfig {
            namespace: namespace.to_string(),
            address: address.to_path_buf(),
            ..main.clone()
        }));
        others.push(s.clone());
        s
    }

    pub(super) fn save_sandbox(&self, sb: &Sandbox) {
        if let Err(e) = self.state.save_sandbox(&sb.cp.borrow()) {
            log::error!("checkpoint of sandbox {}: {e:#}", sb.id());
        }
    }

    pub(super) fn save_container(&self, c: &Ctr) {
        if let Err(e) = self.state.save_container(&c.cp.borrow()) {
            log::error!("checkpoint of container {}: {e:#}", c.id());
        }
    }

    /// The shims of a container's sandbox (their namespace names its runc root).
    pub(super) fn container_shims(&self, c: &Ctr) -> Rc<Shims> {
        let sid = c.cp.borrow().sandbox_id.clone();
        self.sandboxes
            .borrow()
            .get(&sid)
            .map(|s| s.shims.clone())
            .unwrap_or_else(|| self.shims.clone())
    }

    fn sandbox(&self, id: &str) -> Result<Rc<Sandbox>, RuntimeError> {
        self.sandboxes
            .borrow()
            .get(id)
            .filter(|s| !s.cp.borrow().creating)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id}")))
    }

    fn container(&self, id: &str) -> Result<Rc<Ctr>, RuntimeError> {
        self.containers
            .borrow()
            .get(id)
            .filter(|c| c.phase() != ContainerPhase::Creating)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))
    }

    pub(super) fn containers_of(&self, sandbox_id: &str) -> Vec<Rc<Ctr>> {
        self.containers
            .borrow()
            .values()
            .filter(|c| c.cp.borrow().sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }

    /// The burstable QoS parent's cpu.shares follow the burstable pods'
    /// requests (upstream's QoS manager); best-effort stays at 2.
    pub(super) fn update_burstable_shares(&self) {
        if !self.cgroups_per_qos {
            return;
        }
        let sum: i64 = self
            .sandboxes
            .borrow()
            .values()
            .map(|s| s.cp.borrow())
            .filter(|c| !c.stopped && c.config.qos_class == QosClass::Burstable)
            .filter_map(|c| c.config.resources.as_ref().map(|r| r.cpu_shares))
            .sum();
        let [_, burstable, _] = super::convert::qos_cgroups(&self.cgroup_root);
        let r = LinuxContainerResources {
            cpu_shares: sum.max(2),
            ..Default::default()
        };
        if let Err(e) = self.cgroups.set_resources(&burstable, &r) {
            log::warn!("burstable QoS cgroup shares: {e:#}");
        }
    }

    // -- sandboxes --------------------------------------------------------

    async fn make_sandbox(&self, sb: &Sandbox) -> Result<(), RuntimeError> {
        let (id, config, netns, pod_dir) = {
            let cp = sb.cp.borrow();
            (
                cp.id.clone(),
                cp.config.clone(),
                cp.netns.clone(),
                cp.pod_dir.clone(),
            )
        };
        if self.cgroups_per_qos {
            self.cgroups
                .ensure_qos_parents(&self.cgroup_root)
                .map_err(other)?;
        }
        self.cgroups
            .create_pod(&config.cgroup_parent, config.resources.as_ref())
            .with_context(|| format!("pod cgroup {}", config.cgroup_parent))
            .map_err(other)?;
        self.update_burstable_shares();
        let mut ips = Vec::new();
        if let Some(ns) = &netns {
            let req = PodNetworkRequest::new(&id, ns, &config);
            let res = self.net.setup(&req).await?;
            ips = res.ips.iter().map(|c| c.addr.to_string()).collect();
            sb.cp.borrow_mut().ips = ips.clone();
            self.save_sandbox(sb);
        }
        spec::write_pod_files(&pod_dir, &config, &ips, &self.host)
            .context("write the pod's files")
            .map_err(other)?;
        let ctx = SandboxContext {
            netns_path: netns,
            pause_pid: None,
            pod_dir,
        };
        let mut s = spec::sandbox_spec(
            &id,
            &config,
            &ctx,
            &self.pause_root,
            &self.pause,
            &self.host,
        )
        .map_err(|e| other(anyhow!("sandbox spec: {e}")))?;
        s.annotations.insert(GROUP_ANNOTATION.into(), id.clone());
        let bundle = sb.bundle();
        bundle.prepare().map_err(other)?;
        s.write(&bundle.dir).map_err(other)?;
        *sb.drain.borrow_mut() = Some(bundle.drain_log().map_err(other)?);
        let shim = sb.shims.start(&bundle).await.map_err(other)?;
        sb.cp.borrow_mut().shim_url = Some(shim.address().url.clone());
        *sb.shim.borrow_mut() = Some(shim.clone());
        self.save_sandbox(sb);
        let req = CreateTask {
            id: id.clone(),
            bundle: bundle.dir.clone(),
            ..Default::default()
        };
        shim.create(&req)
            .await
            .map_err(|e| other(anyhow!("create the sandbox container: {}", e.message())))?;
        let pid = shim
            .start(&id, None)
            .await
            .map_err(|e| other(anyhow!("start the sandbox container: {}", e.message())))?;
        sb.cp.borrow_mut().pause_pid = pid;
        Ok(())
    }

    /// Finishes the pause process's exit: task deleted, checkpointed,
    /// `SandboxChanged` sent. Idempotent.
    pub(super) async fn finish_sandbox(&self, sb: &Sandbox, ended: Ended) -> Option<RuntimeEvent> {
        let _g = sb.lock.lock().await;
        self.finish_sandbox_locked(sb, ended).await
    }

    async fn finish_sandbox_locked(&self, sb: &Sandbox, ended: Ended) -> Option<RuntimeEvent> {
        if sb.cp.borrow().exit.is_some() {
            return None;
        }
        let id = sb.id();
        if !ended.task_gone {
            let shim = sb.shim.borrow().clone();
            if let Some(shim) = shim {
                if let Err(e) = shim.delete(&id, None).await {
                    if !e.is_not_found() {
                        log::warn!("delete sandbox task {id}: {e}");
                    }
                }
            }
        }
        sb.cp.borrow_mut().exit = Some(ExitInfo {
            exit_code: ended.exit.exit_status as i32,
            finished_at: if ended.exit.exited_at > 0 {
                ended.exit.exited_at
            } else {
                rules::now_ns()
            },
        });
        self.save_sandbox(sb);
        let ev = RuntimeEvent::SandboxChanged { id };
        self.emit(ev.clone());
        Some(ev)
    }

    /// Kills and removes what a sandbox holds, step by step, each step
    /// idempotent: pause task, shim, network, pod files. Errors of the
    /// network teardown are returned (the kubelet retries the stop).
    pub(super) async fn stop_sandbox_locked(&self, sb: &Sandbox) -> Result<(), RuntimeError> {
        let id = sb.id();
        let shim = sb.shim.borrow().clone();
        if sb.cp.borrow().exit.is_none() {
            let ended = match &shim {
                Some(shim) => kill_and_wait(shim, &id).await,
                None => Ended::vanished(),
            };
            self.finish_sandbox_locked(sb, ended).await;
        }
        if let Some(shim) = shim {
            // Every container of the sandbox is deleted by now: the shim exits.
            let busy = self
                .containers_of(&id)
                .iter()
                .any(|c| c.phase() == ContainerPhase::Running);
            if !busy {
                if let Err(e) = sb.shims.shutdown(&shim, &id).await {
                    if !shim_gone(&e) {
                        log::warn!("shut down the shim of sandbox {id}: {e}");
                    }
                }
                sb.shims.forget(shim.address());
                *sb.shim.borrow_mut() = None;
            }
        }
        let (netns, config, pod_dir) = {
            let cp = sb.cp.borrow();
            (cp.netns.clone(), cp.config.clone(), cp.pod_dir.clone())
        };
        if let Some(ns) = &netns {
            let req = PodNetworkRequest::new(&id, ns, &config);
            self.net.teardown(&req).await?;
        }
        spec::release_pod_files(&pod_dir).map_err(other)?;
        Ok(())
    }

    /// Removes a stopped sandbox's bundle, pod cgroup, files, checkpoint.
    pub(super) async fn remove_sandbox_locked(&self, sb: &Sandbox) -> Result<(), RuntimeError> {
        let id = sb.id();
        *sb.drain.borrow_mut() = None;
        clear_runc_state(&sb.shims, &id).await;
        sb.bundle().remove().map_err(other)?;
        let (parent, uid, log_dir) = {
            let cp = sb.cp.borrow();
            (
                cp.config.cgroup_parent.clone(),
                cp.config.metadata.uid.clone(),
                cp.config.log_directory.clone(),
            )
        };
        // The pod cgroup and log dir are the pod's, shared by re-created sandboxes.
        let shared = self
            .sandboxes
            .borrow()
            .values()
            .any(|o| o.id() != id && o.cp.borrow().config.metadata.uid == uid);
        if !shared {
            if self.is_pod_cgroup(&parent) {
                self.cgroups
                    .remove(&parent)
                    .with_context(|| format!("remove pod cgroup {parent}"))
                    .map_err(other)?;
            }
            remove_empty_dirs(&log_dir);
        }
        self.state.remove_sandbox(&id).map_err(other)?;
        self.sandboxes.borrow_mut().remove(&id);
        self.update_burstable_shares();
        Ok(())
    }

    /// Without cgroupsPerQOS every pod sits in the cgroup root itself,
    /// which is never removed.
    pub(super) fn is_pod_cgroup(&self, path: &str) -> bool {
        self.cgroups_per_qos && path.trim_end_matches('/') != self.cgroup_root.trim_end_matches('/')
    }

    // -- containers -------------------------------------------------------

    async fn make_container(
        &self,
        c: &Ctr,
        sandbox: &SandboxCheckpoint,
        image: &crate::image::ImageConfig,
    ) -> Result<(), RuntimeError> {
        let (id, config, cgroup) = {
            let cp = c.cp.borrow();
            (cp.id.clone(), cp.config.clone(), cp.cgroup.clone())
        };
        let bundle = c.bundle();
        bundle.prepare().map_err(create_err)?;
        *c.drain.borrow_mut() = Some(bundle.drain_log().map_err(create_err)?);
        let m = self
            .images
            .rootfs_mount(&config.image_id, &bundle.dir)
            .map_err(create_err)?;
        mount_rootfs(&m, &bundle.rootfs()).map_err(create_err)?;
        // runc would write these too; doing it first turns a value the
        // kernel refuses into a clear error naming the file and value.
        self.cgroups
            .create(&cgroup)
            .and_then(|()| self.cgroups.set_resources(&cgroup, &config.resources))
            .with_context(|| format!("container cgroup {cgroup}"))
            .map_err(create_err)?;
        if !config.termination_message_path.is_empty() {
            // Known before the spec creates it, so a failure removes it.
            c.cp.borrow_mut().termination_log = Some(
                spec::PodFiles::new(&sandbox.pod_dir).termination_log(&config.metadata.name, &id),
            );
        }
        let ctx = SandboxContext {
            netns_path: sandbox.netns.clone(),
            pause_pid: Some(sandbox.pause_pid),
            pod_dir: sandbox.pod_dir.clone(),
        };
        let mut s = spec::container_spec(
            &id,
            &sandbox.config,
            &config,
            image,
            &ctx,
            &bundle.rootfs(),
            &self.host,
        )
        .map_err(|e| match e {
            SpecError::Config(m) => RuntimeError::CreateContainerConfig(m),
            SpecError::Other(e) => create_err(e),
        })?;
        s.annotations
            .insert(GROUP_ANNOTATION.into(), sandbox.id.clone());
        s.write(&bundle.dir).map_err(create_err)?;
        Ok(())
    }

    /// Removes what a container holds (task, log copy, rootfs mount,
    /// cgroup, bundle, termination log); each step idempotent.
    pub(super) async fn teardown_container(&self, c: &Ctr) -> anyhow::Result<()> {
        let id = c.id();
        let shim = c.shim.borrow().clone();
        if let Some(shim) = shim {
            match shim.state(&id, None).await {
                Ok(st) => {
                    if st.status != TaskStatus::Stopped {
                        kill_and_wait(&shim, &id).await;
                    }
                    if let Err(e) = shim.delete(&id, None).await {
                        if !e.is_not_found() {
                            log::warn!("delete task {id}: {e}");
                        }
                    }
                }
                Err(e) if e.is_not_found() || shim_gone(&e) => {}
                Err(e) => log::warn!("state of task {id}: {e}"),
            }
        }
        // A create killed mid-way (timeout, picolet killed) leaves runc's dir.
        clear_runc_state(&self.container_shims(c), &id).await;
        let copy = c.copy.borrow_mut().take();
        if let Some(copy) = copy {
            copy.finish().await;
        }
        let bundle = c.bundle();
        unmount_all(&bundle.rootfs())?;
        let (cgroup, tlog) = {
            let cp = c.cp.borrow();
            (cp.cgroup.clone(), cp.termination_log.clone())
        };
        self.cgroups
            .remove(&cgroup)
            .with_context(|| format!("remove container cgroup {cgroup}"))?;
        *c.drain.borrow_mut() = None;
        let b = bundle.clone();
        crate::rt::unblock(move || b.remove()).await?;
        if let Some(t) = tlog {
            remove_file_if_exists(&t)?;
        }
        Ok(())
    }

    /// Finishes a container's exit (see the module doc). Idempotent; only
    /// running containers are finished.
    pub(super) async fn finish_container(&self, c: &Ctr, ended: Ended) -> Option<RuntimeEvent> {
        let _g = c.lock.lock().await;
        self.finish_container_locked(c, ended, false).await
    }

    /// `early`: the exit was seen while starting; runc's exec failures are
    /// then start failures (`StartError`, 128, runc's message).
    async fn finish_container_locked(
        &self,
        c: &Ctr,
        ended: Ended,
        early: bool,
    ) -> Option<RuntimeEvent> {
        if c.phase() != ContainerPhase::Running {
            return None;
        }
        let (id, cgroup) = {
            let cp = c.cp.borrow();
            (cp.id.clone(), cp.cgroup.clone())
        };
        // Before Delete: it removes the cgroup and its OOM count.
        let oom = c.cp.borrow().oom
            || self
                .cgroups
                .stats(&cgroup)
                .map(|s| s.oom_kills > 0)
                .unwrap_or(false);
        if !ended.task_gone {
            let shim = c.shim.borrow().clone();
            if let Some(shim) = shim {
                if let Err(e) = shim.delete(&id, None).await {
                    if !e.is_not_found() {
                        log::warn!("delete task {id}: {e}");
                    }
                }
            }
        }
        // The shim closed its FIFO writers at Delete: flush the log.
        let copy = c.copy.borrow_mut().take();
        if let Some(copy) = copy {
            copy.finish().await;
        }
        if let Err(e) = unmount_all(&c.bundle().rootfs()) {
            log::warn!("container {id}: {e:#}");
        }
        let exit_code = ended.exit.exit_status as i32;
        let finished_at = if ended.exit.exited_at > 0 {
            ended.exit.exited_at
        } else {
            rules::now_ns()
        };
        let (log_path, tlog, policy) = {
            let cp = c.cp.borrow();
            (
                cp.log_path.clone(),
                cp.termination_log.clone(),
                cp.config
                    .annotations
                    .get(keys::TERMINATION_MESSAGE_POLICY)
                    .cloned()
                    .unwrap_or_default(),
            )
        };
        let mut reason = if ended.unknown {
            rules::REASON_UNKNOWN
        } else {
            rules::exit_reason(exit_code, oom)
        };
        let mut code = exit_code;
        let mut runtime_message = String::new();
        if early {
            let last = read_tail(&log_path, 64 << 10)
                .ok()
                .and_then(|t| rules::last_stderr_line(&t));
            if rules::is_runc_exec_failure(exit_code, last.as_deref()) {
                reason = rules::REASON_START_ERROR;
                code = rules::START_ERROR_EXIT_CODE;
                runtime_message = last.unwrap_or_default();
            }
        }
        let message = rules::termination_message(
            &runtime_message,
            &policy,
            code,
            reason,
            read_termination_file(tlog.as_deref()),
            || log_tail(&log_path),
        );
        {
            let mut cp = c.cp.borrow_mut();
            cp.phase = ContainerPhase::Exited;
            cp.exit_code = code;
            cp.finished_at = finished_at;
            cp.reason = reason.to_string();
            cp.message = message;
            cp.oom = oom;
            cp.pid = 0;
        }
        self.save_container(c);
        let ev = RuntimeEvent::ContainerExited {
            id,
            exit_code: code,
            finished_at,
        };
        self.emit(ev.clone());
        Some(ev)
    }

    /// A start that failed: nothing left running or mounted, the container
    /// exited with `StartError` / 128 and the runtime's message.
    async fn fail_start(&self, c: &Ctr, message: String) -> RuntimeError {
        let id = c.id();
        let shim = c.shim.borrow().clone();
        if let Some(shim) = shim {
            match shim.state(&id, None).await {
                Ok(st) => {
                    if st.status != TaskStatus::Stopped {
                        kill_and_wait(&shim, &id).await;
                    }
                    if let Err(e) = shim.delete(&id, None).await {
                        if !e.is_not_found() {
                            log::warn!("delete task {id} after a failed start: {e}");
                        }
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => log::warn!("state of task {id} after a failed start: {e}"),
            }
        }
        // A `Create` that timed out had its runc create killed half-way.
        clear_runc_state(&self.container_shims(c), &id).await;
        let copy = c.copy.borrow_mut().take();
        if let Some(copy) = copy {
            copy.finish().await;
        }
        if let Err(e) = unmount_all(&c.bundle().rootfs()) {
            log::warn!("container {id}: {e:#}");
        }
        let cgroup = c.cp.borrow().cgroup.clone();
        if let Err(e) = self.cgroups.remove(&cgroup) {
            log::warn!("container {id}: {e:#}");
        }
        let finished_at = rules::now_ns();
        {
            let mut cp = c.cp.borrow_mut();
            cp.phase = ContainerPhase::Exited;
            cp.exit_code = rules::START_ERROR_EXIT_CODE;
            cp.reason = rules::REASON_START_ERROR.into();
            cp.message = message.clone();
            cp.finished_at = finished_at;
            cp.pid = 0;
        }
        self.save_container(c);
        self.emit(RuntimeEvent::ContainerExited {
            id,
            exit_code: rules::START_ERROR_EXIT_CODE,
            finished_at,
        });
        RuntimeError::RunContainer(message)
    }

    async fn start_locked(&self, c: &Ctr) -> Result<(), RuntimeError> {
        let (id, sandbox_id, log_path) = {
            let cp = c.cp.borrow();
            if cp.phase != ContainerPhase::Created {
                return Err(other(anyhow!(
                    "container {} is {:?}, not created",
                    cp.id,
                    cp.phase
                )));
            }
            (cp.id.clone(), cp.sandbox_id.clone(), cp.log_path.clone())
        };
        let sb = self.sandbox(&sandbox_id)?;
        let shim = sb.shim.borrow().clone();
        let Some(shim) = shim.filter(|_| sb.ready()) else {
            return Err(self
                .fail_start(c, format!("pod sandbox {sandbox_id} is not running"))
                .await);
        };
        let bundle = c.bundle();
        // The pod's shim serves every container of the sandbox; this is
        // what `start` would write for a running group, without the exec.
        if let Err(e) = std::fs::write(bundle.address_path(), &shim.address().url) {
            return Err(self
                .fail_start(c, format!("write {}: {e}", bundle.address_path().display()))
                .await);
        }
        *c.shim.borrow_mut() = Some(shim.clone());
        if !bundle.rootfs_mounted().unwrap_or(false) {
            // Unmounted meanwhile (host reboot): mount it again.
            let image_id = c.cp.borrow().config.image_id.clone();
            let res = self
                .images
                .rootfs_mount(&image_id, &bundle.dir)
                .and_then(|m| mount_rootfs(&m, &bundle.rootfs()));
            if let Err(e) = res {
                return Err(self.fail_start(c, format!("{e:#}")).await);
            }
        }
        let logs = match ContainerLog::open(
            Some(&bundle.stdout_fifo()),
            Some(&bundle.stderr_fifo()),
            &log_path,
            self.log_policy,
        ) {
            Ok(l) => l,
            Err(e) => return Err(self.fail_start(c, format!("{e:#}")).await),
        };
        let (tty, want_stdin) = {
            let cp = c.cp.borrow();
            (cp.config.tty, cp.config.stdin)
        };
        let mut req = CreateTask {
            id: id.clone(),
            bundle: bundle.dir.clone(),
            stdout: bundle.stdout_fifo().to_string_lossy().into_owned(),
            stderr: bundle.stderr_fifo().to_string_lossy().into_owned(),
            terminal: tty,
            ..Default::default()
        };
        if want_stdin {
            // Held open for attach sessions; `kubectl attach -i` writes here.
            let p = bundle.dir.join("stdin");
            match super::stream::open_fifo_writer(&p) {
                Ok(w) => {
                    *c.stdin.borrow_mut() = Some(w);
                    req.stdin = p.to_string_lossy().into_owned();
                }
                Err(e) => return Err(self.fail_start(c, format!("{e:#}")).await),
            }
        }
        if let Err(e) = shim.create(&req).await {
            drop(logs);
            return Err(self.fail_start(c, e.message()).await);
        }
        *c.copy.borrow_mut() = Some(logs.start());
        let pid = match shim.start(&id, None).await {
            Ok(pid) => pid,
            Err(e) => return Err(self.fail_start(c, e.message()).await),
        };
        {
            let mut cp = c.cp.borrow_mut();
            cp.phase = ContainerPhase::Running;
            cp.pid = pid;
            cp.started_at = rules::now_ns();
        }
        self.save_container(c);
        if !exec_done(pid).await {
            // Gone before it was seen running its command: find out why.
            let exit = future::or(async { shim.wait(&id, None).await.ok() }, async {
                Timer::after(KILL_WAIT).await;
                None
            })
            .await;
            if let Some(exit) = exit {
                self.finish_container_locked(c, Ended::of(exit), true).await;
                let cp = c.cp.borrow();
                if cp.reason == rules::REASON_START_ERROR {
                    return Err(RuntimeError::RunContainer(cp.message.clone()));
                }
            }
        }
        Ok(())
    }

    /// Stops a running container: the stop signal, up to `timeout`, then
    /// SIGKILL to every process; returns once its exit is finished.
    async fn stop_container(&self, c: &Ctr, timeout: Duration) -> Result<(), RuntimeError> {
        if c.phase() != ContainerPhase::Running {
            return Ok(());
        }
        let id = c.id();
        let shim = c.shim.borrow().clone();
        let Some(shim) = shim else {
            self.finish_container(c, Ended::vanished()).await;
            return Ok(());
        };
        let mut exited = None;
        if !timeout.is_zero() {
            let (sig, warn) = {
                let cp = c.cp.borrow();
                rules::stop_signal(
                    cp.config.stop_signal.as_deref(),
                    cp.image_stop_signal.as_deref(),
                )
            };
            if let Some(w) = warn {
                log::warn!("container {id}: stop signal: {w}");
            }
            match shim.kill(&id, None, sig, false).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) if shim_gone(&e) => {
                    self.relist_sandbox_of(c).await;
                    return Ok(());
                }
                Err(e) => return Err(other(anyhow!("signal {sig} to {id}: {e}"))),
            }
            exited = future::or(async { shim.wait(&id, None).await.ok() }, async {
                Timer::after(timeout).await;
                None
            })
            .await;
        }
        let ended = match exited {
            Some(exit) => Ended::of(exit),
            None => kill_and_wait(&shim, &id).await,
        };
        self.finish_container(c, ended).await;
        Ok(())
    }

    /// A shim call found the shim dead: clean up its whole group.
    async fn relist_sandbox_of(&self, c: &Ctr) {
        let sid = c.cp.borrow().sandbox_id.clone();
        let sb = self.sandboxes.borrow().get(&sid).cloned();
        if let Some(sb) = sb {
            self.dead_shim(&sb).await;
        }
    }

    /// The sandbox's shim is dead: its containers keep running orphaned.
    /// The shim's `delete` action kills and deletes each (containers
    /// first, the pause last); all are then finished as exited.
    pub(super) async fn dead_shim(&self, sb: &Sandbox) -> Vec<RuntimeEvent> {
        let mut out = Vec::new();
        let id = sb.id();
        log::warn!("the shim of pod sandbox {id} is gone: cleaning up its containers");
        for c in self.containers_of(&id) {
            if c.phase() != ContainerPhase::Running {
                continue;
            }
            let ended = cleanup_dead(&sb.shims, &c.bundle()).await;
            out.extend(self.finish_container(&c, ended).await);
        }
        if sb.cp.borrow().exit.is_none() {
            let ended = cleanup_dead(&sb.shims, &sb.bundle()).await;
            out.extend(self.finish_sandbox(sb, ended).await);
        }
        let shim = sb.shim.borrow_mut().take();
        if let Some(shim) = shim {
            sb.shims.forget(shim.address());
            if let Err(e) = shim::remove_stale_socket(shim.address()) {
                log::warn!("{e:#}");
            }
        }
        out
    }

    pub(super) async fn relist(&self) -> Vec<RuntimeEvent> {
        let mut out = Vec::new();
        let sandboxes: Vec<Rc<Sandbox>> = self.sandboxes.borrow().values().cloned().collect();
        for sb in sandboxes {
            let live = {
                let cp = sb.cp.borrow();
                !cp.creating && cp.exit.is_none()
            };
            let shim = sb.shim.borrow().clone();
            let (true, Some(shim)) = (live, shim) else {
                continue;
            };
            match shim.state(&sb.id(), None).await {
                Ok(st) if st.status == TaskStatus::Stopped => {
                    out.extend(self.finish_sandbox(&sb, Ended::of(st.exit())).await);
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    out.extend(self.finish_sandbox(&sb, Ended::vanished()).await)
                }
                Err(e) if shim_gone(&e) => out.extend(self.dead_shim(&sb).await),
                Err(e) => log::warn!("relist sandbox {}: {e}", sb.id()),
            }
        }
        let containers: Vec<Rc<Ctr>> = self.containers.borrow().values().cloned().collect();
        for c in containers {
            if c.phase() != ContainerPhase::Running {
                continue;
            }
            let shim = c.shim.borrow().clone();
            let Some(shim) = shim else {
                out.extend(self.finish_container(&c, Ended::vanished()).await);
                continue;
            };
            match shim.state(&c.id(), None).await {
                Ok(st) if st.status == TaskStatus::Stopped => {
                    out.extend(self.finish_container(&c, Ended::of(st.exit())).await);
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    out.extend(self.finish_container(&c, Ended::vanished()).await)
                }
                Err(e) if shim_gone(&e) => {
                    let sid = c.cp.borrow().sandbox_id.clone();
                    let sb = self.sandboxes.borrow().get(&sid).cloned();
                    match sb {
                        Some(sb) => out.extend(self.dead_shim(&sb).await),
                        None => {
                            let ended = cleanup_dead(&self.shims, &c.bundle()).await;
                            out.extend(self.finish_container(&c, ended).await);
                        }
                    }
                }
                Err(e) => log::warn!("relist container {}: {e}", c.id()),
            }
        }
        out
    }

    fn container_status(&self, c: &Ctr) -> ContainerStatus {
        let cp = c.cp.borrow();
        ContainerStatus {
            id: cp.id.clone(),
            metadata: cp.config.metadata.clone(),
            state: container_state(cp.phase),
            created_at: cp.created_at,
            started_at: cp.started_at,
            finished_at: cp.finished_at,
            exit_code: cp.exit_code,
            image: cp.config.image.clone(),
            image_id: cp.config.image_id.clone(),
            reason: cp.reason.clone(),
            message: cp.message.clone(),
            labels: cp.config.labels.clone(),
            annotations: cp.config.annotations.clone(),
            mounts: cp.config.mounts.clone(),
            log_path: cp.log_path.clone(),
        }
    }
}

fn container_state(p: ContainerPhase) -> ContainerState {
    match p {
        ContainerPhase::Creating => ContainerState::Unknown,
        ContainerPhase::Created => ContainerState::Created,
        ContainerPhase::Running => ContainerState::Running,
        ContainerPhase::Exited => ContainerState::Exited,
    }
}

/// Clears a half-made runc dir of `id` under `shims`' namespace (see
/// [`runc_state`](super::runc_state)); a dir with `state.json` is left alone.
pub(super) async fn clear_runc_state(shims: &Shims, id: &str) {
    let Some(root) = super::runc_state::root_for(&shims.config().namespace) else {
        return;
    };
    if let Err(e) = super::runc_state::clear(&root, id).await {
        log::warn!("half-made runc state of {id}: {e:#}");
    }
}

/// SIGKILL to every process of the task, then its exit (bounded).
pub(super) async fn kill_and_wait(shim: &Shim, id: &str) -> Ended {
    match shim.kill(id, None, libc::SIGKILL as u32, true).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => log::warn!("SIGKILL {id}: {e}"),
    }
    let waited = future::or(async { Some(shim.wait(id, None).await) }, async {
        Timer::after(KILL_WAIT).await;
        None
    })
    .await;
    match waited {
        Some(Ok(exit)) => Ended::of(exit),
        Some(Err(e)) if e.is_not_found() => Ended::vanished(),
        Some(Err(e)) => {
            log::warn!("wait for {id}: {e}");
            Ended::vanished()
        }
        None => {
            log::warn!("{id} did not exit within {KILL_WAIT:?} of SIGKILL");
            Ended::vanished()
        }
    }
}

/// The shim's `delete` action for a container of a dead shim (kills it
/// with `runc delete --force`, unmounts its rootfs). A failure (e.g. runc's
/// state is gone after a reboot) leaves the exit unknown.
pub(super) async fn cleanup_dead(shims: &Shims, bundle: &Bundle) -> Ended {
    if !bundle.dir.exists() {
        return Ended::vanished();
    }
    // The action may open the bundle's log FIFO: keep it drained.
    let _drain = bundle.drain_log();
    match shims.cleanup_dead(bundle).await {
        Ok(exit) => Ended {
            exit: Exit {
                exited_at: if exit.exited_at > 0 {
                    exit.exited_at
                } else {
                    rules::now_ns()
                },
                ..exit
            },
            task_gone: true,
            unknown: false,
        },
        Err(e) => {
            log::warn!("clean up {} after its shim died: {e:#}", bundle.id);
            Ended::vanished()
        }
    }
}

/// Waits until `pid` has exec'd the container's command (true), or is gone
/// before that (false). Right after `Start` runc's init is about to exec,
/// so this is normally one look at `/proc`.
async fn exec_done(pid: u32) -> bool {
    let deadline = Instant::now() + EXEC_WATCH;
    loop {
        // Gone or a zombie: it ended. (An empty cmdline alone is not
        // enough: it reads empty for a moment during execve.)
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .and_then(|i| s[i + 1..].trim_start().chars().next())
            });
        match state {
            None | Some('Z') | Some('X') => return false,
            Some(_) => {}
        }
        if std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| !c.is_empty() && !rules::is_runc_init(&c))
        {
            return true;
        }
        if Instant::now() > deadline {
            return true;
        }
        Timer::after(Duration::from_millis(1)).await;
    }
}

/// Mounts the overlay rootfs at `target` (the bundle's `rootfs`), unless
/// something is mounted there already.
pub(super) fn mount_rootfs(m: &RootfsMount, target: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("create {}", target.display()))?;
    if crate::util::mountinfo::is_mount_point(&crate::util::mountinfo::read()?, target) {
        return Ok(());
    }
    let data =
        std::ffi::CString::new(m.options.join(",")).context("overlay options hold a NUL byte")?;
    rustix::mount::mount(
        m.source.as_str(),
        target,
        m.fstype.as_str(),
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .with_context(|| format!("mount {} on {}", m.fstype, target.display()))
}

/// Unmounts everything stacked on `target`; fine when nothing is.
pub(super) fn unmount_all(target: &Path) -> anyhow::Result<()> {
    use rustix::mount::{unmount, UnmountFlags};
    for _ in 0..8 {
        if !crate::util::mountinfo::is_mount_point(&crate::util::mountinfo::read()?, target) {
            return Ok(());
        }
        if let Err(e) = unmount(target, UnmountFlags::empty()) {
            // Busy (a process still has it open): detach it.
            if e == rustix::io::Errno::BUSY {
                unmount(target, UnmountFlags::DETACH)
                    .with_context(|| format!("unmount {}", target.display()))?;
            } else if e != rustix::io::Errno::INVAL {
                return Err(e).with_context(|| format!("unmount {}", target.display()));
            }
        }
    }
    anyhow::bail!("{}: still mounted after 8 unmounts", target.display())
}

pub(super) fn remove_file_if_exists(p: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", p.display())),
    }
}

/// Removes `dir` and its empty subdirectories; keeps anything with files.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The last `max` bytes of a file.
fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

fn read_termination_file(path: Option<&Path>) -> TerminationFile {
    let Some(p) = path else {
        return TerminationFile::Absent;
    };
    match read_tail(p, rules::MAX_TERMINATION_MESSAGE as u64) {
        Ok(d) => TerminationFile::Content(d),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TerminationFile::Absent,
        Err(e) => TerminationFile::Unreadable(format!(
            "Error on reading termination log {}: {e}",
            p.display()
        )),
    }
}

fn log_tail(path: &Path) -> String {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match read_tail(path, LOG_TAIL_READ) {
        Ok(t) => rules::log_tail_message(&t, len <= LOG_TAIL_READ),
        Err(e) => format!("Error on reading termination message from logs: {e}"),
    }
}

/// Disk usage of a directory tree (blocks, each inode once), like `du`.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, seen: &mut std::collections::HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if seen.insert((m.dev(), m.ino())) {
                *total += m.blocks() * 512;
            }
            if m.is_dir() {
                walk(&e.path(), seen, total);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    walk(dir, &mut seen, &mut total);
    total
}

impl Runtime for ShimRuntime {
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        let inner = &self.inner;
        let id = rules::new_id().map_err(other)?;
        let bundle = Bundle::new(&inner.bundles_dir, &id).map_err(other)?;
        let netns = needs_pod_network(&config.namespace_options).then(|| inner.net.netns_path(&id));
        let main = inner.shims.config();
        let cp = SandboxCheckpoint::new(
            &id,
            config,
            &main.namespace,
            &main.address,
            &bundle.dir,
            netns,
            &inner.state.sandbox_dir(&id),
            rules::now_ns(),
        );
        inner.state.save_sandbox(&cp).map_err(other)?;
        let sb = Sandbox::new(cp, inner.shims.clone());
        let _g = sb.lock.lock().await;
        inner.sandboxes.borrow_mut().insert(id.clone(), sb.clone());
        match inner.make_sandbox(&sb).await {
            Ok(()) => {
                sb.cp.borrow_mut().creating = false;
                inner.save_sandbox(&sb);
                inner.emit(RuntimeEvent::SandboxChanged { id: id.clone() });
                Ok(id)
            }
            Err(e) => {
                let cleaned = async {
                    inner.stop_sandbox_locked(&sb).await?;
                    inner.remove_sandbox_locked(&sb).await
                }
                .await;
                if let Err(c) = cleaned {
                    // Left checkpointed as `creating`: recovery retries.
                    log::error!("pod sandbox {id}: cleanup after a failed start: {c}");
                    inner.sandboxes.borrow_mut().remove(&id);
                }
                Err(e)
            }
        }
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let Ok(sb) = inner.sandbox(id) else {
            return Ok(());
        };
        for c in inner.containers_of(id) {
            inner.stop_container(&c, Duration::ZERO).await?;
        }
        let _g = sb.lock.lock().await;
        if sb.cp.borrow().stopped {
            return Ok(());
        }
        inner.stop_sandbox_locked(&sb).await?;
        sb.cp.borrow_mut().stopped = true;
        inner.save_sandbox(&sb);
        inner.emit(RuntimeEvent::SandboxChanged { id: id.into() });
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let Ok(sb) = inner.sandbox(id) else {
            return Ok(());
        };
        self.stop_pod_sandbox(id).await?;
        for c in inner.containers_of(id) {
            self.remove_container(&c.id()).await?;
        }
        let _g = sb.lock.lock().await;
        inner.remove_sandbox_locked(&sb).await
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        let sb = self.inner.sandbox(id)?;
        let ready = sb.ready();
        let cp = sb.cp.borrow();
        Ok(PodSandboxStatus {
            id: cp.id.clone(),
            metadata: cp.config.metadata.clone(),
            state: if ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: cp.created_at,
            network: PodSandboxNetworkStatus {
                ip: cp.ips.first().cloned().unwrap_or_default(),
                additional_ips: cp.ips.iter().skip(1).cloned().collect(),
            },
            namespace_options: cp.config.namespace_options,
            labels: cp.config.labels.clone(),
            annotations: cp.config.annotations.clone(),
        })
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandbox>, RuntimeError> {
        Ok(self
            .inner
            .sandboxes
            .borrow()
            .values()
            .filter(|s| !s.cp.borrow().creating)
            .map(|s| {
                let ready = s.ready();
                let cp = s.cp.borrow();
                PodSandbox {
                    id: cp.id.clone(),
                    metadata: cp.config.metadata.clone(),
                    state: if ready {
                        SandboxState::Ready
                    } else {
                        SandboxState::NotReady
                    },
                    created_at: cp.created_at,
                    labels: cp.config.labels.clone(),
                    annotations: cp.config.annotations.clone(),
                }
            })
            .collect())
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: &ContainerConfig,
        _sandbox_config: &PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let inner = &self.inner;
        let sb = inner.sandbox(pod_sandbox_id)?;
        if !sb.ready() {
            return Err(RuntimeError::CreateContainer(format!(
                "pod sandbox {pod_sandbox_id} is not ready"
            )));
        }
        let sandbox = sb.cp.borrow().clone();
        let image = inner
            .images
            .get(&config.image_id)
            .map_err(create_err)?
            .ok_or_else(|| {
                RuntimeError::CreateContainer(format!(
                    "image {} ({}) is not in the store",
                    config.image, config.image_id
                ))
            })?;
        let id = rules::new_id().map_err(other)?;
        let bundle = Bundle::new(&inner.bundles_dir, &id).map_err(other)?;
        let log_path = sandbox.config.log_directory.join(&config.log_path);
        let cgroup = format!(
            "{}/{id}",
            sandbox.config.cgroup_parent.trim_end_matches('/')
        );
        let mut cp =
            ContainerCheckpoint::new(&id, pod_sandbox_id, config, &bundle.dir, &log_path, &cgroup);
        cp.image_stop_signal = image.config.stop_signal.clone();
        cp.created_at = rules::now_ns();
        inner.state.save_container(&cp).map_err(other)?;
        let c = Ctr::new(cp);
        let _g = c.lock.lock().await;
        inner.containers.borrow_mut().insert(id.clone(), c.clone());
        match inner.make_container(&c, &sandbox, &image.config).await {
            Ok(()) => {
                c.cp.borrow_mut().phase = ContainerPhase::Created;
                inner.save_container(&c);
                Ok(id)
            }
            Err(e) => {
                match inner.teardown_container(&c).await {
                    Ok(()) => {
                        if let Err(r) = inner.state.remove_container(&id) {
                            log::error!("{r:#}");
                        }
                    }
                    // Left checkpointed as `creating`: recovery retries.
                    Err(t) => log::error!("container {id}: cleanup after a failed create: {t:#}"),
                }
                inner.containers.borrow_mut().remove(&id);
                Err(e)
            }
        }
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.inner.container(id)?;
        let _g = c.lock.lock().await;
        // `ContainerStarted` comes from the shim's start event.
        self.inner.start_locked(&c).await
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let c = self.inner.container(id)?;
        self.inner.stop_container(&c, timeout).await
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let Ok(c) = inner.container(id) else {
            return Ok(());
        };
        // As containerd: a running container is killed first.
        inner.stop_container(&c, Duration::ZERO).await?;
        let _g = c.lock.lock().await;
        inner.teardown_container(&c).await.map_err(other)?;
        let log_path = c.cp.borrow().log_path.clone();
        remove_log_files(&log_path);
        inner.state.remove_container(id).map_err(other)?;
        inner.containers.borrow_mut().remove(id);
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<Container>, RuntimeError> {
        Ok(self
            .inner
            .containers
            .borrow()
            .values()
            .filter(|c| c.phase() != ContainerPhase::Creating)
            .map(|c| c.cp.borrow())
            .filter(|cp| {
                filter
                    .pod_sandbox_id
                    .as_ref()
                    .is_none_or(|s| *s == cp.sandbox_id)
                    && filter.state.is_none_or(|s| s == container_state(cp.phase))
            })
            .map(|cp| Container {
                id: cp.id.clone(),
                pod_sandbox_id: cp.sandbox_id.clone(),
                metadata: cp.config.metadata.clone(),
                image: cp.config.image.clone(),
                image_id: cp.config.image_id.clone(),
                state: container_state(cp.phase),
                created_at: cp.created_at,
                labels: cp.config.labels.clone(),
                annotations: cp.config.annotations.clone(),
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let c = self.inner.container(id)?;
        Ok(self.inner.container_status(&c))
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, RuntimeError> {
        let c = self.inner.container(id)?;
        let shim = c.shim.borrow().clone();
        let (Some(shim), ContainerPhase::Running) = (shim, c.phase()) else {
            return Err(other(anyhow!("container {id} is not running")));
        };
        super::exec::exec_sync(&shim, &c.bundle(), cmd, timeout)
            .await
            .map_err(|e| match e {
                super::exec::ExecError::Timeout(t) => RuntimeError::Timeout(format!(
                    "command {cmd:?} in container {id} timed out after {t:?}"
                )),
                super::exec::ExecError::Start(m) => {
                    other(anyhow!("exec {cmd:?} in container {id}: {m}"))
                }
                super::exec::ExecError::Other(e) => other(e),
            })
    }

    async fn exec_stream(
        &self,
        id: &str,
        cmd: &[String],
        opts: super::stream::StreamOptions,
    ) -> Result<super::stream::StreamProcess, RuntimeError> {
        let c = self.inner.container(id)?;
        let shim = c.shim.borrow().clone();
        let (Some(shim), ContainerPhase::Running) = (shim, c.phase()) else {
            return Err(other(anyhow!("container {id} is not running")));
        };
        let bundle = c.bundle();
        let base = super::exec::container_process(&bundle).map_err(other)?;
        let spec = super::stream::stream_spec(&base, cmd, opts.tty);
        super::stream::exec(&shim, id, &bundle.dir, spec, opts)
            .await
            .map_err(|e| match e {
                super::exec::ExecError::Start(m) => RuntimeError::RunContainer(m),
                super::exec::ExecError::Timeout(t) => RuntimeError::Timeout(format!("{t:?}")),
                super::exec::ExecError::Other(e) => other(e),
            })
    }

    async fn attach(
        &self,
        id: &str,
        opts: super::stream::StreamOptions,
    ) -> Result<super::stream::StreamProcess, RuntimeError> {
        let c = self.inner.container(id)?;
        let shim = c.shim.borrow().clone();
        let hub = c.copy.borrow().as_ref().map(|l| l.hub());
        let (Some(shim), Some(hub), ContainerPhase::Running) = (shim, hub, c.phase()) else {
            return Err(other(anyhow!("container {id} is not running")));
        };
        let once = c.cp.borrow().config.stdin_once;
        super::stream::attach(&shim, id, &hub, c.stdin.clone(), once, opts).map_err(other)
    }

    fn pod_sandbox_info(&self, id: &str) -> Option<SandboxInfo> {
        let sb = self.inner.sandbox(id).ok()?;
        let cp = sb.cp.borrow();
        Some(SandboxInfo {
            cgroup_parent: cp.config.cgroup_parent.clone(),
            netns: cp.netns.clone(),
        })
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<std::net::TcpStream, RuntimeError> {
        let sb = self.inner.sandbox(sandbox_id)?;
        if !sb.ready() {
            return Err(other(anyhow!("pod sandbox {sandbox_id} is not ready")));
        }
        let netns = sb.cp.borrow().netns.clone();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let connect = move || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10));
        let r = match netns {
            Some(ns) => crate::network::netns::run_in(&ns, connect)
                .await
                .map_err(other)?,
            // Host network: the node's own localhost.
            None => crate::rt::unblock(connect).await,
        };
        r.map_err(|e| {
            other(anyhow!(
                "failed to connect to localhost:{port} inside namespace {sandbox_id:?}, IPv4: {e}"
            ))
        })
    }

    async fn container_stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let c = self.inner.container(id)?;
        let now = rules::now_ns();
        let shim = c.shim.borrow().clone();
        let mut s = match (shim, c.phase()) {
            (Some(shim), ContainerPhase::Running) => shim
                .stats(id)
                .await
                .map_err(other)?
                .to_container_stats(id, now),
            _ => ContainerStats {
                id: id.to_string(),
                timestamp: now,
                ..Default::default()
            },
        };
        let upper = c.bundle().dir.join("fs");
        s.writable_layer_bytes = crate::rt::unblock(move || disk_usage(&upper)).await;
        Ok(s)
    }
}

/// Removes a container's CRI log and its rotated files (what the kubelet's
/// log manager does when a container is removed).
fn remove_log_files(log: &Path) {
    let _ = std::fs::remove_file(log);
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // The container's log dir goes when it is empty.
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_disk_usage() {
        let d = std::env::temp_dir().join(format!("picolet-svc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let f = d.join("sub/f");
        std::fs::write(&f, vec![b'x'; 10000]).unwrap();
        std::fs::hard_link(&f, d.join("link")).unwrap();
        let du = disk_usage(&d);
        assert!((10000..20000).contains(&du), "hard link counted once: {du}");
        assert_eq!(read_tail(&f, 3).unwrap(), b"xxx");
        assert_eq!(read_tail(&f, 1 << 20).unwrap().len(), 10000);
        assert_eq!(read_termination_file(None), TerminationFile::Absent);
        assert_eq!(
            read_termination_file(Some(&d.join("nope"))),
            TerminationFile::Absent
        );
        std::fs::write(d.join("log"), b"T stdout F hello\n").unwrap();
        assert_eq!(log_tail(&d.join("log")), "hello\n");
        remove_log_files(&d.join("log"));
        assert!(!d.join("log").exists());
        remove_empty_dirs(&d);
        assert!(d.join("sub/f").exists(), "files are kept");
        std::fs::remove_file(d.join("sub/f")).unwrap();
        std::fs::remove_file(d.join("link")).unwrap();
        remove_empty_dirs(&d);
        assert!(!d.exists());
    }
}
