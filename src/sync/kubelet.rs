//! The pod workers' effects: upstream `SyncPod`, `SyncTerminatingPod`,
//! `SyncTerminatedPod` (pkg/kubelet/kubelet.go) and the runtime manager's
//! `SyncPod` / `killPodWithSyncResult` / `startContainer` / `killContainer`
//! (pkg/kubelet/kuberuntime), carried out over the [`Runtime`] interface.
//!
//! Each pod's work runs in one task at a time (see [`super::workers`]);
//! different pods run concurrently on the one executor thread. Nothing
//! here blocks: runtime calls are async, file work goes to `smol::unblock`.
//!
//! Seams for modules built elsewhere: [`Images`] (the image service),
//! [`Hooks`] (postStart/preStop handlers), [`Prober`] (probe results).

use super::actions::{
    compute_pod_actions, format_pod, is_sidecar, kill_grace_period, termination_order, KillReason,
    PodActions, StartContainer, MIN_GRACE_PERIOD_SECONDS,
};
use super::gc;
use super::hash::container_hash;
use super::state::BackoffState;
use super::workers::{Outcome, PodWorkers, Update, Work};
use super::{container_name, PodRuntimeStatus, ProbeResults};
use crate::api::core::{Container, LifecycleHandler, Pod, PodStatus};
use crate::events::{messages, reasons, EventType, ObjectRef, Recorder};
use crate::image::{pull_decision, ImageError, PullDecision, PullPolicy};
use crate::runtime::convert::{
    container_config_with, pod_log_directory, qos_class, sandbox_config, ContainerInputs,
    NodeContext, VolumePath,
};
use crate::runtime::{
    keys, ContainerFilter, ContainerState, PodSandboxConfig, QosClass, Runtime, RuntimeError,
    SandboxState,
};
use crate::status::{generate_pod_status, StatusInput, StatusManager, Waiting, WaitingReason};
use crate::volume::{VolumeContext, VolumeError, VolumeManager};
use futures_lite::future::BoxedLocal;
use futures_lite::FutureExt;
use jiff::Timestamp;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Seams

/// What the pod workers need from the image service.
#[allow(async_fn_in_trait)]
pub trait Images {
    /// The image id, when the store has `image` (a reference as the pod
    /// names it).
    fn present(&self, image: &str) -> anyhow::Result<Option<String>>;
    /// Pulls `image`, returning its id.
    async fn pull(&self, image: &str) -> anyhow::Result<String>;
    /// The image's size in bytes (for the Pulled event), 0 when unknown.
    fn size(&self, _image: &str) -> u64 {
        0
    }
    /// Pulls `image` with the pod's imagePullSecrets tried first.
    async fn pull_with(
        &self,
        image: &str,
        secrets: &[crate::image::auth::DockerConfig],
    ) -> anyhow::Result<String> {
        let _ = secrets;
        self.pull(image).await
    }
}

impl Images for crate::image::ImageService {
    fn present(&self, image: &str) -> anyhow::Result<Option<String>> {
        Ok(self.get(image)?.map(|i| i.id))
    }
    async fn pull(&self, image: &str) -> anyhow::Result<String> {
        Ok(crate::image::ImageService::pull(self, image).await?.id)
    }
    fn size(&self, image: &str) -> u64 {
        self.get(image).ok().flatten().map_or(0, |i| i.size)
    }
    async fn pull_with(
        &self,
        image: &str,
        secrets: &[crate::image::auth::DockerConfig],
    ) -> anyhow::Result<String> {
        Ok(crate::image::ImageService::pull_with(self, image, secrets)
            .await?
            .id)
    }
}

/// One lifecycle hook to run (postStart or preStop).
#[derive(Debug, Clone)]
pub struct HookCall {
    pub pod: Rc<Pod>,
    pub container: Container,
    pub container_id: String,
    pub handler: LifecycleHandler,
    /// The pod's IP (httpGet handlers without a host).
    pub pod_ip: Option<String>,
    /// Bound for exec commands and sleeps: the grace period for preStop;
    /// none for postStart (upstream: the start waits for it).
    pub limit: Option<Duration>,
}

/// Runs lifecycle handlers (exec, httpGet, sleep). `Err` carries the
/// message the kubelet reports (event, PostStartHookError message).
pub trait Hooks {
    fn run(&self, call: HookCall) -> BoxedLocal<Result<(), String>>;
}

/// The probe manager as the sync loop sees it.
pub trait Prober {
    /// A pod to probe (added or its spec updated).
    fn add_pod(&self, pod: &Rc<Pod>);
    /// Stop probing the pod.
    fn remove_pod(&self, uid: &str);
    /// The pod is terminating: only readiness goes on.
    fn stop_liveness_and_startup(&self, uid: &str);
    /// The newest status of the pod (container ids, started times).
    fn update_status(&self, pod: &Rc<Pod>, status: &PodStatus);
    /// The latest results of the pod's probes, by container id.
    fn results(&self, uid: &str) -> ProbeResults;
}

impl<R: crate::probe::CommandRunner + 'static> Prober for crate::probe::ProbeManager<R> {
    fn add_pod(&self, pod: &Rc<Pod>) {
        // The manager keeps a copy of the pod and of its status for its
        // workers; a pod without probes needs neither (no results = no
        // probe, which the status treats as success).
        if has_probes(pod) {
            crate::probe::ProbeManager::add_pod(self, pod);
        }
    }
    fn remove_pod(&self, uid: &str) {
        crate::probe::ProbeManager::remove_pod(self, uid);
    }
    fn stop_liveness_and_startup(&self, uid: &str) {
        crate::probe::ProbeManager::stop_liveness_and_startup(self, uid);
    }
    fn update_status(&self, pod: &Rc<Pod>, status: &PodStatus) {
        self.update_pod_status(uid(pod), status);
    }
    fn results(&self, uid: &str) -> ProbeResults {
        crate::probe::ProbeManager::results(self, uid)
    }
}

// ---------------------------------------------------------------------------

/// Whether a container or sidecar of the pod has a probe.
fn has_probes(pod: &Pod) -> bool {
    let (inits, regular) = spec_containers(pod);
    inits
        .iter()
        .filter(|c| is_sidecar(c))
        .chain(regular)
        .any(|c| {
            c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
        })
}

/// Settings of the pod workers.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Re-sync every pod this often (`syncFrequency`).
    pub sync_frequency: Duration,
    /// Retry a failed sync after this long (upstream's worker back-off,
    /// 10 s; `picolet.backOffInitial`, so tests can scale it down).
    pub retry_period: Duration,
    /// Retry after a network-not-ready failure (upstream 1 s).
    pub network_retry_period: Duration,
    /// `<root>/pods`.
    pub pods_dir: PathBuf,
    /// `podLogsDir`.
    pub pod_logs_dir: PathBuf,
}

/// Reports the node's network readiness.
pub type NetworkStatusFn = Rc<dyn Fn() -> crate::network::NetworkStatus>;

/// Node admission of a new pod against the pods already admitted: `Err`
/// carries the Failed status of a rejected pod.
pub type AdmitFn = Box<dyn Fn(&Pod, &[Rc<Pod>]) -> Result<(), Box<PodStatus>>>;

/// Per-pod memory of the last sync (upstream's reason cache), plus the
/// reason the pod cannot start containers yet (sandbox, volumes).
#[derive(Debug, Clone, Default)]
struct PodCache {
    waiting: BTreeMap<String, Waiting>,
    blocked: Option<String>,
    /// The waiting reasons came from a volume error.
    volume_error: bool,
}

/// Everything the pod workers share.
pub struct Kubelet<R: Runtime, I: Images> {
    pub runtime: Rc<R>,
    pub images: Rc<I>,
    pub hooks: Rc<dyn Hooks>,
    pub prober: Rc<dyn Prober>,
    pub volumes: Rc<VolumeManager>,
    pub node: NodeContext,
    pub cfg: SyncConfig,
    pub status: Rc<RefCell<StatusManager>>,
    pub backoff: Rc<BackoffState>,
    pub workers: RefCell<PodWorkers>,
    cache: RefCell<BTreeMap<String, PodCache>>,
    /// An orphan directory clean-up runs.
    cleaning: std::cell::Cell<bool>,
    /// The node's network readiness (CRI `NetworkReady`), when the runtime
    /// tells it.
    network_status: RefCell<Option<NetworkStatusFn>>,
    admission: RefCell<Option<AdmitFn>>,
    /// Events about pods and containers (upstream's recorder).
    recorder: RefCell<Rc<dyn Recorder>>,
    /// Tells the sync loop that a worker finished a step (timers changed).
    wake: smol::channel::Sender<()>,
    /// Bounds the SyncPods running at once (see [`SYNC_SLOTS`]).
    sync_slots: std::sync::Arc<smol::lock::Semaphore>,
    /// The slots held, by pod UID (one worker per UID), so that a sync can
    /// give its slot back while it waits for an image pull.
    sync_slots_held: RefCell<BTreeMap<String, smol::lock::SemaphoreGuardArc>>,
}

/// SyncPods running at once. A burst (many manifests written at once, or
/// a restart adopting every pod) otherwise runs them all together: their
/// futures and status work add up to several MiB of heap at the peak,
/// which musl's allocator keeps afterwards. Syncs mostly wait on the shim
/// and runc, so a few at a time keep the machine as busy. Termination is
/// not bounded (a grace period must not wait for a slot), nor are image
/// pulls (the slot is given back while one runs).
pub const SYNC_SLOTS: usize = 8;

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

fn spec_containers(pod: &Pod) -> (&[Container], &[Container]) {
    match pod.spec.as_ref() {
        Some(s) => (
            s.init_containers.as_deref().unwrap_or(&[]),
            &s.containers[..],
        ),
        None => (&[], &[]),
    }
}

/// The spec of the named container (init or regular).
fn find_spec<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let (inits, regular) = spec_containers(pod);
    inits.iter().chain(regular).find(|c| c.name == name)
}

fn qos_str(q: QosClass) -> &'static str {
    match q {
        QosClass::Guaranteed => "Guaranteed",
        QosClass::Burstable => "Burstable",
        QosClass::BestEffort => "BestEffort",
    }
}

fn waiting(reason: WaitingReason, message: impl Into<String>) -> Waiting {
    Waiting {
        reason,
        message: message.into(),
    }
}

/// An image failure's reason as a waiting reason.
fn image_waiting(e: ImageError) -> Waiting {
    let reason = match e.reason {
        ImageError::NEVER_PULL => WaitingReason::ErrImageNeverPull,
        ImageError::INVALID_NAME => WaitingReason::InvalidImageName,
        ImageError::BACK_OFF => WaitingReason::ImagePullBackOff,
        _ => WaitingReason::ErrImagePull,
    };
    waiting(reason, e.message)
}

/// The restart count a container gets when the runtime has no instance of
/// it left (upstream `calcRestartCountByLogDir`): one more than the highest
/// `<n>.log` in its log directory.
pub fn restart_count_from_logs<S: AsRef<str>>(names: &[S]) -> u32 {
    names
        .iter()
        .filter_map(|n| {
            let n = n.as_ref();
            let (num, rest) = n.split_once(".log")?;
            if !(rest.is_empty() || rest.starts_with('.')) {
                return None;
            }
            num.parse::<u32>().ok()
        })
        .max()
        .map_or(0, |m| m + 1)
}

/// `Instant` for a wall-clock time (for timers).
fn instant_at(t: Timestamp, now_ts: Timestamp, now: Instant) -> Instant {
    let d = t.duration_since(now_ts);
    match Duration::try_from(d) {
        Ok(d) => now + d,
        Err(_) => now,
    }
}

fn runtime_waiting(kind: WaitingReason, e: &RuntimeError) -> Waiting {
    waiting(kind, e.to_string())
}

impl<R: Runtime + 'static, I: Images + 'static> Kubelet<R, I> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runtime: Rc<R>,
        images: Rc<I>,
        hooks: Rc<dyn Hooks>,
        prober: Rc<dyn Prober>,
        volumes: Rc<VolumeManager>,
        node: NodeContext,
        cfg: SyncConfig,
        status: Rc<RefCell<StatusManager>>,
        backoff: Rc<BackoffState>,
        wake: smol::channel::Sender<()>,
    ) -> Rc<Self> {
        Rc::new(Kubelet {
            runtime,
            images,
            hooks,
            prober,
            volumes,
            node,
            cfg,
            status,
            backoff,
            workers: RefCell::new(PodWorkers::new()),
            cache: RefCell::new(BTreeMap::new()),
            cleaning: std::cell::Cell::new(false),
            network_status: RefCell::new(None),
            admission: RefCell::new(None),
            recorder: RefCell::new(Rc::new(crate::events::NoopRecorder)),
            wake,
            sync_slots: std::sync::Arc::new(smol::lock::Semaphore::new(SYNC_SLOTS)),
            sync_slots_held: RefCell::new(BTreeMap::new()),
        })
    }

    /// Upstream checks the runtime's network readiness before it makes a
    /// pod sandbox that needs the pod network.
    pub fn set_network_status(&self, f: NetworkStatusFn) {
        *self.network_status.borrow_mut() = Some(f);
    }

    /// Where events go (the API server once picolet is a member; the log
    /// always).
    pub fn set_recorder(&self, r: Rc<dyn Recorder>) {
        *self.recorder.borrow_mut() = r;
    }

    fn pod_event(&self, pod: &Pod, t: EventType, reason: &str, msg: &str) {
        let r = self.recorder.borrow().clone();
        r.event(&ObjectRef::pod(pod), t, reason, msg);
    }

    fn container_event(&self, pod: &Pod, name: &str, t: EventType, reason: &str, msg: &str) {
        let (inits, _) = spec_containers(pod);
        let init = inits.iter().any(|c| c.name == name);
        let r = self.recorder.borrow().clone();
        r.event(&ObjectRef::container(pod, name, init), t, reason, msg);
    }

    /// Installs node admission (the cluster side knows the Node).
    pub fn set_admission(&self, f: AdmitFn) {
        *self.admission.borrow_mut() = Some(f);
    }

    /// Upstream `canAdmitPod` for a new pod: `false` when the pod is
    /// rejected (its Failed status is stored, nothing starts).
    pub fn admit(&self, pod: &Rc<Pod>) -> bool {
        let f = self.admission.borrow();
        let Some(f) = f.as_ref() else {
            return true;
        };
        let active: Vec<Rc<Pod>> = self
            .workers
            .borrow()
            .iter()
            .filter(|(_, w)| !w.termination_requested())
            .filter(|(u, _)| u.as_str() != uid(pod))
            .map(|(_, w)| w.pod.clone())
            .collect();
        match f(pod, &active) {
            Ok(()) => true,
            Err(status) => {
                // Upstream's event carries the handler's own message.
                let msg = status.message.as_deref().unwrap_or("");
                let msg = msg.strip_prefix("Pod was rejected: ").unwrap_or(msg);
                self.pod_event(
                    pod,
                    EventType::Warning,
                    status.reason.as_deref().unwrap_or("Rejected"),
                    msg,
                );
                let mut st = self.status.borrow_mut();
                st.set_status(uid(pod), *status);
                // Nothing runs for it: deletable at once when deleted.
                st.set_terminated(uid(pod));
                false
            }
        }
    }

    /// `Err(message)` when the node's network is not ready (upstream
    /// `runtimeState.networkErrors`).
    fn network_error(&self) -> Option<String> {
        let f = self.network_status.borrow();
        let st = f.as_ref()?();
        (!st.ready).then(|| {
            format!(
                "network is not ready: container runtime network not ready: NetworkReady=false reason:{} message:{}",
                st.reason, st.message
            )
        })
    }

    // -- dispatch ----------------------------------------------------------

    /// Hands an update to the pod's worker, starting a task for it when
    /// none runs.
    pub fn dispatch(self: &Rc<Self>, pod: Rc<Pod>, update: Update) {
        let id = uid(&pod).to_string();
        let pending = self.workers.borrow_mut().update(pod, update);
        if pending {
            self.ensure_worker(&id);
        }
    }

    /// Starts the task of `uid` unless one runs.
    pub fn ensure_worker(self: &Rc<Self>, uid: &str) {
        if !self.workers.borrow_mut().mark_working(uid) {
            return;
        }
        let this = self.clone();
        let uid = uid.to_string();
        crate::rt::spawn(async move { this.worker(uid).await }).detach();
    }

    async fn worker(self: Rc<Self>, uid: String) {
        loop {
            let next = self.workers.borrow_mut().next_work(&uid);
            let Some(work) = next else { break };
            let outcome = if let Work::Sync(_) = work {
                self.sync_slot(&uid).await;
                // Boxed: the step's future (~17 KiB) is freed when the step
                // ends. A task's allocation lives as long as any waker of it
                // does, and massif showed ended workers' tasks kept after a
                // burst: those now hold a few hundred bytes each.
                let o = Box::pin(self.run_work(&work)).await;
                self.sync_slots_held.borrow_mut().remove(&uid);
                o
            } else {
                Box::pin(self.run_work(&work)).await
            };
            if matches!(work, Work::Terminated(_)) && outcome == Outcome::Done {
                // Stopped and released: an API pod marked for deletion may
                // now be deleted for good.
                self.status.borrow_mut().set_terminated(&uid);
            }
            let kick = self.workers.borrow_mut().complete(&uid, &work, outcome);
            for k in kick {
                self.ensure_worker(&k);
            }
            let _ = self.wake.try_send(());
        }
    }

    /// Waits for a sync slot for the pod and holds it until the sync ends.
    async fn sync_slot(&self, uid: &str) {
        let g = self.sync_slots.acquire_arc().await;
        self.sync_slots_held.borrow_mut().insert(uid.to_string(), g);
    }

    async fn run_work(self: &Rc<Self>, work: &Work) -> Outcome {
        let now = Instant::now();
        let (what, res) = match work {
            Work::Sync(pod) => return self.sync_pod(pod).await,
            Work::Terminating { pod, grace } => {
                ("terminate", self.sync_terminating_pod(pod, *grace).await)
            }
            Work::Terminated(pod) => ("release", self.sync_terminated_pod(pod).await),
            Work::Remove(pod) => ("remove", self.remove_pod(pod).await),
        };
        match res {
            Ok(()) => Outcome::Done,
            Err(e) => {
                let pod = match work {
                    Work::Sync(p)
                    | Work::Terminating { pod: p, .. }
                    | Work::Terminated(p)
                    | Work::Remove(p) => p,
                };
                log::warn!("{what} pod {}: {e:#}", format_pod(pod));
                Outcome::Failed {
                    retry: now + self.cfg.retry_period,
                }
            }
        }
    }

    // -- runtime status ------------------------------------------------------

    /// Everything the runtime has for the pod (upstream `GetPodStatus`).
    pub async fn pod_runtime_status(&self, pod: &Pod) -> anyhow::Result<PodRuntimeStatus> {
        let id = uid(pod);
        // Only this pod's ids are kept across the status calls below: the
        // whole node's lists held by every pod syncing at once add up.
        let all = self.runtime.list_pod_sandboxes().await?;
        let ids: Vec<String> = all
            .into_iter()
            .filter(|s| s.metadata.uid == id)
            .map(|s| s.id)
            .collect();
        let mut sandboxes = Vec::new();
        for s in ids {
            match self.runtime.pod_sandbox_status(&s).await {
                Ok(st) => sandboxes.push(st),
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let all = self
            .runtime
            .list_containers(&ContainerFilter::default())
            .await?;
        let ids: Vec<String> = all
            .into_iter()
            .filter(|c| c.labels.get(keys::POD_UID).map(String::as_str) == Some(id))
            .map(|c| c.id)
            .collect();
        let mut containers = Vec::new();
        for c in ids {
            match self.runtime.container_status(&c).await {
                Ok(st) => containers.push(st),
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(PodRuntimeStatus::new(
            id,
            pod.metadata.name.as_deref().unwrap_or(""),
            pod.metadata.namespace.as_deref().unwrap_or(""),
            sandboxes,
            containers,
        ))
    }

    // -- status --------------------------------------------------------------

    fn generate_status(
        &self,
        pod: &Pod,
        rt: &PodRuntimeStatus,
        probes: &ProbeResults,
        terminal: bool,
    ) -> PodStatus {
        let id = uid(pod);
        let cache = self.cache.borrow().get(id).cloned().unwrap_or_default();
        // After a picolet restart there is no previous status: the API
        // server's copy is it (transition times, readiness), else the pod
        // started when its first sandbox was made (keeps startTime and the
        // active deadline across restarts).
        let previous = self.status.borrow().status(id).cloned().or_else(|| {
            if let Some(s) = pod.status.as_ref().filter(|s| s.start_time.is_some()) {
                return Some(s.clone());
            }
            let first = rt
                .sandboxes
                .iter()
                .map(|s| s.created_at)
                .filter(|t| *t > 0)
                .min()?;
            Some(PodStatus {
                start_time: super::ts(first)
                    .and_then(|t| Timestamp::from_second(t.as_second()).ok())
                    .map(crate::api::meta::Time),
                ..Default::default()
            })
        });
        let mut st = generate_pod_status(&StatusInput {
            pod,
            runtime: rt,
            probes,
            waiting: &cache.waiting,
            previous: previous.as_ref(),
            qos_class: qos_str(qos_class(pod)),
            host_ips: &self.node.node_ips,
            pod_is_terminal: terminal,
            now: Timestamp::now(),
        });
        if let Some(msg) = &cache.blocked {
            // Why the pod cannot get going (no sandbox, no volumes): upstream
            // tells it in events only; without an API server the waiting
            // message is where a user looks.
            for cs in st
                .container_statuses
                .iter_mut()
                .flatten()
                .chain(st.init_container_statuses.iter_mut().flatten())
            {
                if let Some(w) = cs.state.as_mut().and_then(|s| s.waiting.as_mut()) {
                    let default = matches!(
                        w.reason.as_deref(),
                        Some(crate::status::generate::REASON_CONTAINER_CREATING)
                            | Some(crate::status::generate::REASON_POD_INITIALIZING)
                    );
                    if default && w.message.is_none() {
                        w.message = Some(msg.clone());
                    }
                }
            }
        }
        st
    }

    fn store_status(&self, pod: &Rc<Pod>, st: PodStatus) {
        self.prober.update_status(pod, &st);
        self.status.borrow_mut().set_status(uid(pod), st);
    }

    fn set_blocked(&self, pod: &Pod, msg: Option<String>) {
        self.cache
            .borrow_mut()
            .entry(uid(pod).to_string())
            .or_default()
            .blocked = msg;
    }

    fn set_waiting(&self, pod: &Pod, name: &str, w: Option<Waiting>) {
        let mut cache = self.cache.borrow_mut();
        let e = cache.entry(uid(pod).to_string()).or_default();
        match w {
            Some(w) => {
                e.waiting.insert(name.to_string(), w);
            }
            None => {
                e.waiting.remove(name);
            }
        }
    }

    /// A volume problem: a spec that no retry fixes puts every container
    /// that should start into CreateContainerConfigError (the error as its
    /// message); a host-side failure leaves them ContainerCreating with
    /// upstream's FailedMount text as the message.
    fn volume_error(&self, pod: &Pod, rt: &PodRuntimeStatus, e: &VolumeError) {
        if let VolumeError::SetUp { .. } = e {
            self.set_blocked(pod, Some(format!("Unable to attach or mount volumes: {e}")));
            return;
        }
        self.set_blocked(pod, None);
        let (inits, regular) = spec_containers(pod);
        for c in inits.iter().chain(regular) {
            let running = rt
                .find(&c.name)
                .is_some_and(|s| s.state == ContainerState::Running);
            if !running {
                self.set_waiting(
                    pod,
                    &c.name,
                    Some(waiting(
                        WaitingReason::CreateContainerConfigError,
                        e.to_string(),
                    )),
                );
            }
        }
        self.cache
            .borrow_mut()
            .entry(uid(pod).to_string())
            .or_default()
            .volume_error = true;
    }

    /// Volumes work again: drop the waiting reasons a volume error set.
    fn clear_volume_errors(&self, pod: &Pod) {
        let mut cache = self.cache.borrow_mut();
        let Some(c) = cache.get_mut(uid(pod)) else {
            return;
        };
        if std::mem::take(&mut c.volume_error) {
            c.waiting
                .retain(|_, w| w.reason != WaitingReason::CreateContainerConfigError);
        }
        if c.blocked
            .as_deref()
            .is_some_and(|m| m.starts_with("Unable to attach or mount volumes"))
        {
            c.blocked = None;
        }
    }

    // -- SyncPod -------------------------------------------------------------

    /// Upstream `SyncPod`: status first (a terminal pod stops here), then
    /// the pod's directories and volumes, then [`compute_pod_actions`]
    /// carried out in upstream's order.
    pub async fn sync_pod(self: &Rc<Self>, pod: &Rc<Pod>) -> Outcome {
        let now = Instant::now();
        let retry = |d: Duration| Outcome::Failed { retry: now + d };
        let rt = match self.pod_runtime_status(pod).await {
            Ok(rt) => rt,
            Err(e) => {
                log::warn!("sync pod {}: runtime status: {e:#}", format_pod(pod));
                return retry(self.cfg.retry_period);
            }
        };
        let probes = self.prober.results(uid(pod));
        let st = self.generate_status(pod, &rt, &probes, false);
        let terminal = matches!(st.phase.as_deref(), Some("Succeeded" | "Failed"));
        let start_time = st.start_time.as_ref().map(|t| t.0);
        self.store_status(pod, st);
        if terminal {
            return Outcome::Synced {
                terminal: true,
                wake: now,
            };
        }

        let pod_dir = self.cfg.pods_dir.join(uid(pod));
        if let Err(e) = crate::rt::unblock(move || std::fs::create_dir_all(&pod_dir)).await {
            log::warn!("sync pod {}: pod directory: {e}", format_pod(pod));
            return retry(self.cfg.retry_period);
        }
        let ctx = VolumeContext {
            allocatable: self.node.allocatable,
        };
        let volumes = match self.volumes.setup_pod(pod, &ctx).await {
            Ok(v) => {
                self.clear_volume_errors(pod);
                v
            }
            Err(e) => {
                self.pod_event(
                    pod,
                    EventType::Warning,
                    reasons::FAILED_MOUNT_VOLUME,
                    &messages::failed_mount(&e.to_string()),
                );
                self.volume_error(pod, &rt, &e);
                self.refresh_status(pod, &probes).await;
                return retry(self.cfg.retry_period);
            }
        };

        let actions = {
            let backoff = self.backoff.containers.borrow();
            compute_pod_actions(pod, &rt, &probes, &backoff, start_time, Timestamp::now())
        };
        let res = self.apply_actions(pod, &rt, &actions, &volumes).await;
        let mut wake = now + self.cfg.sync_frequency;
        let now_ts = Timestamp::now();
        for b in &actions.backing_off {
            self.container_event(
                pod,
                &b.name,
                EventType::Warning,
                reasons::BACK_OFF_START_CONTAINER,
                &messages::back_off_restart(&b.name, &format_pod(pod)),
            );
            self.set_waiting(
                pod,
                &b.name,
                Some(waiting(WaitingReason::CrashLoopBackOff, b.message.clone())),
            );
            wake = wake.min(instant_at(b.until, now_ts, now));
        }
        if let Some(t) = self.image_backoff_wake(pod, now_ts, now) {
            wake = wake.min(t);
        }
        if let (Some(ads), Some(start)) = (
            pod.spec.as_ref().and_then(|s| s.active_deadline_seconds),
            start_time,
        ) {
            let deadline = start
                .checked_add(jiff::SignedDuration::from_secs(ads))
                .unwrap_or(start);
            wake = wake.min(instant_at(deadline, now_ts, now));
        }
        let outcome = match res {
            Ok(false) => Outcome::Synced {
                terminal: false,
                wake,
            },
            // Some start failed for another reason than a back-off.
            Ok(true) => Outcome::Synced {
                terminal: false,
                wake: wake.min(now + self.cfg.retry_period),
            },
            Err(SandboxFailure { network }) => retry(if network {
                self.cfg.network_retry_period
            } else {
                self.cfg.retry_period
            }),
        };
        if !actions.is_noop() || !actions.backing_off.is_empty() {
            self.refresh_status(pod, &probes).await;
        }
        outcome
    }

    /// Fetches the runtime status again, removes what GC allows, and
    /// stores the regenerated status.
    async fn refresh_status(self: &Rc<Self>, pod: &Rc<Pod>, probes: &ProbeResults) {
        let rt = match self.pod_runtime_status(pod).await {
            Ok(rt) => rt,
            Err(e) => {
                log::warn!("sync pod {}: runtime status: {e:#}", format_pod(pod));
                return;
            }
        };
        let removal = gc::evictable(&rt);
        let rt = if removal.is_empty() {
            rt
        } else {
            self.remove(pod, &removal).await;
            match self.pod_runtime_status(pod).await {
                Ok(rt) => rt,
                Err(_) => rt,
            }
        };
        let st = self.generate_status(pod, &rt, probes, false);
        self.store_status(pod, st);
    }

    /// When the earliest image pull back-off of the pod ends.
    fn image_backoff_wake(&self, pod: &Pod, now_ts: Timestamp, now: Instant) -> Option<Instant> {
        let cache = self.cache.borrow();
        let c = cache.get(uid(pod))?;
        let ib = self.backoff.images.borrow();
        c.waiting
            .iter()
            .filter(|(_, w)| {
                matches!(
                    w.reason,
                    WaitingReason::ErrImagePull | WaitingReason::ImagePullBackOff
                )
            })
            .filter_map(|(name, _)| {
                let image = find_spec(pod, name)?.image.clone()?;
                let key = image_key(pod, &image);
                let e = ib.entries().get(&key)?;
                let until = e
                    .last_update
                    .checked_add(jiff::SignedDuration::from_millis(e.delay_ms as i64))
                    .ok()?;
                Some(instant_at(until, now_ts, now))
            })
            .min()
    }

    /// Carries out the actions. Ok(true): some container failed to start
    /// for a reason other than a back-off (retry after the retry period,
    /// as upstream's worker back-off; a back-off wakes the pod when it
    /// ends instead).
    async fn apply_actions(
        self: &Rc<Self>,
        pod: &Rc<Pod>,
        rt: &PodRuntimeStatus,
        a: &PodActions,
        volumes: &BTreeMap<String, VolumePath>,
    ) -> Result<bool, SandboxFailure> {
        // 1. Kill. Why each container goes is logged also when the whole
        // pod goes (a liveness failure under restartPolicy Never): without
        // events, the log is the only place that tells.
        for k in &a.containers_to_kill {
            self.container_event(
                pod,
                &k.name,
                EventType::Normal,
                reasons::KILLING_CONTAINER,
                &k.message,
            );
        }
        if a.kill_pod {
            if a.create_sandbox && !rt.sandboxes.is_empty() {
                self.pod_event(
                    pod,
                    EventType::Normal,
                    reasons::SANDBOX_CHANGED,
                    &messages::sandbox_changed(),
                );
            }
            if let Err(e) = self.kill_pod(pod, rt, None).await {
                self.pod_event(
                    pod,
                    EventType::Warning,
                    reasons::FAILED_TO_KILL_POD,
                    &messages::failed_kill_pod(&format!("{e:#}")),
                );
                return Err(SandboxFailure { network: false });
            }
            if a.create_sandbox {
                // A new sandbox runs every init container again.
                let (inits, _) = spec_containers(pod);
                for c in rt.containers.iter() {
                    if inits.iter().any(|i| i.name == container_name(c)) {
                        if let Err(e) = self.runtime.remove_container(&c.id).await {
                            log::warn!("remove init container {}: {e}", c.id);
                        }
                    }
                }
            }
        } else if !a.containers_to_kill.is_empty() {
            let pod_ip = rt.ips().first().cloned();
            let mut tasks = Vec::new();
            for k in &a.containers_to_kill {
                let this = self.clone();
                let (pod, k, ip) = (pod.clone(), k.clone(), pod_ip.clone());
                tasks.push(crate::rt::spawn(async move {
                    let res = this
                        .kill_container(&pod, &k.id, &k.name, k.reason, None, ip)
                        .await;
                    (k, res)
                }));
            }
            for t in tasks {
                let (k, res) = t.await;
                if let Err(e) = res {
                    log::warn!("pod {}: kill {}: {e}", format_pod(pod), k.name);
                }
            }
        }
        if a.kill_pod && !a.create_sandbox {
            return Ok(false);
        }

        // 2. Sandbox.
        if a.create_sandbox && !super::actions::is_host_network(pod) {
            if let Some(msg) = self.network_error() {
                self.pod_event(pod, EventType::Warning, reasons::NETWORK_NOT_READY, &msg);
                self.set_blocked(pod, Some(msg));
                return Err(SandboxFailure { network: true });
            }
        }
        let (sandbox_id, attempt, pod_ips) = if a.create_sandbox {
            let conv = match sandbox_config(pod, &self.node, a.attempt) {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("Failed to generate sandbox config for pod: {e}");
                    self.pod_event(pod, EventType::Warning, "FailedCreatePodSandBox", &msg);
                    self.set_blocked(pod, Some(msg));
                    return Err(SandboxFailure { network: false });
                }
            };
            for w in &conv.warnings {
                // Upstream's DNS warnings: no cluster DNS, or a resolv.conf
                // past the limits.
                let reason = if w.contains("ClusterDNS") {
                    "MissingClusterDNS"
                } else {
                    "DNSConfigForming"
                };
                self.pod_event(pod, EventType::Warning, reason, w);
            }
            let id = match self.runtime.run_pod_sandbox(&conv.config).await {
                Ok(id) => id,
                Err(e) => {
                    // A plugin that fails is retried like any sandbox error
                    // (upstream CreatePodSandboxError); only a node without
                    // a network configured takes the short retry above.
                    let msg = messages::failed_create_sandbox(&e.to_string());
                    self.pod_event(pod, EventType::Warning, "FailedCreatePodSandBox", &msg);
                    self.set_blocked(pod, Some(msg));
                    return Err(SandboxFailure { network: false });
                }
            };
            let ips = match self.runtime.pod_sandbox_status(&id).await {
                Ok(s) if !s.network.ip.is_empty() => {
                    let mut v = vec![s.network.ip];
                    v.extend(s.network.additional_ips);
                    v
                }
                Ok(_) => Vec::new(),
                Err(e) => {
                    log::warn!("pod {}: sandbox status: {e}", format_pod(pod));
                    Vec::new()
                }
            };
            (id, a.attempt, ips)
        } else {
            let attempt = rt.sandboxes.first().map_or(0, |s| s.metadata.attempt);
            (a.sandbox_id.clone(), attempt, rt.ips())
        };
        self.set_blocked(pod, None);
        let sandbox = match sandbox_config(pod, &self.node, attempt) {
            Ok(c) => c.config,
            Err(e) => {
                self.set_blocked(pod, Some(e.to_string()));
                return Err(SandboxFailure { network: false });
            }
        };

        // 3. Init containers, in order; a regular one that fails to start
        // stops the sequence, a sidecar does not.
        let mut failed = false;
        let (inits, regular) = spec_containers(pod);
        for s in &a.init_containers_to_start {
            let Some(c) = inits.get(s.index) else {
                continue;
            };
            let res = self
                .start_container(pod, c, s, rt, &sandbox_id, &sandbox, &pod_ips, volumes)
                .await;
            if let Err(w) = res {
                failed |= w.reason != WaitingReason::ImagePullBackOff;
                if !is_sidecar(c) {
                    return Ok(failed);
                }
                log::warn!("pod {}: sidecar {}: {}", format_pod(pod), c.name, w.message);
            }
        }
        // 4. Regular containers.
        for s in &a.containers_to_start {
            let Some(c) = regular.get(s.index) else {
                continue;
            };
            let res = self
                .start_container(pod, c, s, rt, &sandbox_id, &sandbox, &pod_ips, volumes)
                .await;
            if let Err(w) = res {
                failed |= w.reason != WaitingReason::ImagePullBackOff;
            }
        }
        Ok(failed)
    }

    /// Upstream `startContainer`: back-off step, image, config, create,
    /// start, postStart. The failure (with its waiting reason) is also
    /// recorded for the pod's status; a success clears it.
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        self: &Rc<Self>,
        pod: &Rc<Pod>,
        c: &Container,
        s: &StartContainer,
        rt: &PodRuntimeStatus,
        sandbox_id: &str,
        sandbox: &PodSandboxConfig,
        pod_ips: &[String],
        volumes: &BTreeMap<String, VolumePath>,
    ) -> Result<(), Waiting> {
        let res = self
            .start_container_inner(pod, c, s, rt, sandbox_id, sandbox, pod_ips, volumes)
            .await;
        match &res {
            Ok(()) => self.set_waiting(pod, &c.name, None),
            Err(w) => {
                log::debug!(
                    "pod {}: container {}: {}: {}",
                    format_pod(pod),
                    c.name,
                    w.reason.as_str(),
                    w.message
                );
                // Upstream: `Error: <reason>` for image problems (their
                // detail has its own event), `Error: <detail>` otherwise;
                // a pull back-off is a Normal BackOff plus this.
                let detail = match w.reason {
                    WaitingReason::ErrImagePull
                    | WaitingReason::ImagePullBackOff
                    | WaitingReason::ErrImageNeverPull
                    | WaitingReason::InvalidImageName => w.reason.as_str().to_string(),
                    _ => w.message.clone(),
                };
                if w.reason == WaitingReason::ImagePullBackOff {
                    let image = c.image.as_deref().unwrap_or("");
                    self.container_event(
                        pod,
                        &c.name,
                        EventType::Normal,
                        reasons::BACK_OFF_PULL_IMAGE,
                        &messages::back_off_pull(image),
                    );
                }
                self.container_event(
                    pod,
                    &c.name,
                    EventType::Warning,
                    reasons::FAILED_TO_CREATE_CONTAINER,
                    &messages::error(&detail),
                );
                self.set_waiting(pod, &c.name, Some(w.clone()));
            }
        }
        res
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_container_inner(
        self: &Rc<Self>,
        pod: &Rc<Pod>,
        c: &Container,
        s: &StartContainer,
        rt: &PodRuntimeStatus,
        sandbox_id: &str,
        sandbox: &PodSandboxConfig,
        pod_ips: &[String],
        volumes: &BTreeMap<String, VolumePath>,
    ) -> Result<(), Waiting> {
        if let Some(step) = &s.backoff {
            self.backoff
                .containers
                .borrow_mut()
                .next(&step.key, step.event_time, Timestamp::now());
            self.backoff.changed();
        }
        let image_id = self.ensure_image(pod, c).await?;
        let mut restart_count = s.restart_count.max(0) as u32;
        if restart_count == 0 && rt.find(&c.name).is_none() {
            restart_count = self.restart_count_from_log_dir(pod, &c.name).await;
        }
        let hash = container_hash(c);
        // configMaps, secrets and services for the env.
        let api_env = self.volumes.env_inputs(pod, c).await;
        let (config, env_warnings) = container_config_with(
            pod,
            c,
            &self.node,
            &ContainerInputs {
                restart_count,
                hash: &hash,
                image_id: &image_id,
                pod_ips,
                volumes,
            },
            api_env.as_ref(),
        )
        .map_err(|e| waiting(WaitingReason::CreateContainerConfigError, e.0))?;
        for w in &env_warnings {
            self.pod_event(
                pod,
                EventType::Warning,
                crate::runtime::convert::REASON_INVALID_ENV_NAMES,
                w,
            );
        }
        let id = self
            .runtime
            .create_container(sandbox_id, &config, sandbox)
            .await
            .map_err(|e| match e {
                RuntimeError::CreateContainerConfig(_) => {
                    runtime_waiting(WaitingReason::CreateContainerConfigError, &e)
                }
                _ => runtime_waiting(WaitingReason::CreateContainerError, &e),
            })?;
        self.container_event(
            pod,
            &c.name,
            EventType::Normal,
            reasons::CREATED_CONTAINER,
            &messages::created(&c.name),
        );
        self.runtime
            .start_container(&id)
            .await
            .map_err(|e| runtime_waiting(WaitingReason::RunContainerError, &e))?;
        log::debug!(
            "pod {}: started container {} ({id}, restart {restart_count})",
            format_pod(pod),
            c.name
        );
        self.container_event(
            pod,
            &c.name,
            EventType::Normal,
            reasons::STARTED_CONTAINER,
            &messages::started(&c.name),
        );
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            let call = HookCall {
                pod: pod.clone(),
                container: c.clone(),
                container_id: id.clone(),
                handler: h,
                pod_ip: pod_ips.first().cloned(),
                limit: None,
            };
            if let Err(msg) = self.hooks.run(call).await {
                self.container_event(
                    pod,
                    &c.name,
                    EventType::Warning,
                    "FailedPostStartHook",
                    &msg,
                );
                if let Err(e) = self
                    .kill_container(
                        pod,
                        &id,
                        &c.name,
                        Some(KillReason::FailedPostStartHook),
                        None,
                        pod_ips.first().cloned(),
                    )
                    .await
                {
                    log::warn!("pod {}: kill {}: {e}", format_pod(pod), c.name);
                }
                return Err(waiting(WaitingReason::PostStartHookError, msg));
            }
        }
        Ok(())
    }

    async fn restart_count_from_log_dir(&self, pod: &Pod, name: &str) -> u32 {
        let dir = pod_log_directory(&self.cfg.pod_logs_dir, pod).join(name);
        crate::rt::unblock(move || {
            let names: Vec<String> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            restart_count_from_logs(&names)
        })
        .await
    }

    /// The image per `imagePullPolicy`, pulling with back-off
    /// (ErrImagePull, then ImagePullBackOff while the back-off lasts).
    async fn ensure_image(&self, pod: &Pod, c: &Container) -> Result<String, Waiting> {
        let image = c.image.as_deref().unwrap_or("");
        let event = |t, reason: &str, msg: &str| self.container_event(pod, &c.name, t, reason, msg);
        let policy = PullPolicy::parse(c.image_pull_policy.as_deref().unwrap_or(""), image)
            .map_err(|m| waiting(WaitingReason::ErrImagePull, m))?;
        let present = match self.images.present(image) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("image {image}: store: {e:#}");
                None
            }
        };
        let decision = match pull_decision(Some(policy), image, present.is_some()) {
            Ok(d) => d,
            Err(e) => {
                if e.reason == ImageError::NEVER_PULL {
                    event(
                        EventType::Warning,
                        reasons::ERR_IMAGE_NEVER_PULL_POLICY,
                        &messages::never_pull(image),
                    );
                }
                return Err(image_waiting(e));
            }
        };
        match decision {
            PullDecision::UsePresent => {
                event(
                    EventType::Normal,
                    reasons::PULLED_IMAGE,
                    &messages::already_present(image),
                );
                Ok(present.unwrap_or_default())
            }
            PullDecision::Pull => {
                let key = image_key(pod, image);
                let now = Timestamp::now();
                if self
                    .backoff
                    .images
                    .borrow()
                    .in_backoff_since_update(&key, now)
                {
                    return Err(image_waiting(ImageError::back_off(image)));
                }
                event(
                    EventType::Normal,
                    reasons::PULLING_IMAGE,
                    &messages::pulling(image),
                );
                let t0 = Instant::now();
                // The pod's imagePullSecrets, tried before the node's own
                // credentials.
                let secrets = self.volumes.pull_secrets(pod).await;
                // A pull may take minutes: other pods' syncs go on meanwhile.
                let slot = self.sync_slots_held.borrow_mut().remove(uid(pod));
                let pulled = if slot.is_some() {
                    drop(slot);
                    let r = self.images.pull_with(image, &secrets).await;
                    self.sync_slot(uid(pod)).await;
                    r
                } else {
                    self.images.pull_with(image, &secrets).await
                };
                match pulled {
                    Ok(id) => {
                        let took = t0.elapsed();
                        event(
                            EventType::Normal,
                            reasons::PULLED_IMAGE,
                            &messages::pulled(image, took, took, self.images.size(image)),
                        );
                        Ok(id)
                    }
                    Err(e) => {
                        let now = Timestamp::now();
                        self.backoff.images.borrow_mut().next(&key, now, now);
                        self.backoff.changed();
                        event(
                            EventType::Warning,
                            reasons::FAILED_TO_PULL_IMAGE,
                            &messages::failed_to_pull(image, &format!("{e:#}")),
                        );
                        Err(image_waiting(ImageError::pull_failed(image, &e)))
                    }
                }
            }
        }
    }

    // -- killing -------------------------------------------------------------

    /// Upstream `killContainer`: the preStop hook within the grace period,
    /// then the stop signal with what is left of it (at least 2 s).
    async fn kill_container(
        self: &Rc<Self>,
        pod: &Rc<Pod>,
        id: &str,
        name: &str,
        reason: Option<KillReason>,
        grace_override: Option<i64>,
        pod_ip: Option<String>,
    ) -> Result<(), RuntimeError> {
        let t0 = Instant::now();
        let grace = self.grace_for(pod, id, name, reason, grace_override).await;
        self.pre_stop(pod, id, name, grace, pod_ip).await;
        self.runtime.stop_container(id, remaining(grace, t0)).await
    }

    /// The grace period for a container (seconds).
    async fn grace_for(
        &self,
        pod: &Pod,
        id: &str,
        name: &str,
        reason: Option<KillReason>,
        grace_override: Option<i64>,
    ) -> i64 {
        if let Some(g) = grace_override {
            return g;
        }
        match find_spec(pod, name) {
            Some(c) => kill_grace_period(pod, c, reason),
            // A container no spec knows (an orphan): the grace period it
            // was created with.
            None => match self.runtime.container_status(id).await {
                Ok(s) => s
                    .annotations
                    .get(keys::POD_TERMINATION_GRACE_PERIOD)
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(MIN_GRACE_PERIOD_SECONDS),
                Err(_) => MIN_GRACE_PERIOD_SECONDS,
            },
        }
    }

    /// Runs the container's preStop hook, if it has one, for at most
    /// `grace` seconds. Failures are logged (upstream: an event).
    async fn pre_stop(
        &self,
        pod: &Rc<Pod>,
        id: &str,
        name: &str,
        grace: i64,
        pod_ip: Option<String>,
    ) {
        let Some(c) = find_spec(pod, name) else {
            return;
        };
        let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
            return;
        };
        if grace <= 0 {
            return;
        }
        let timeout = Duration::from_secs(grace as u64);
        let call = HookCall {
            pod: pod.clone(),
            container: c.clone(),
            container_id: id.to_string(),
            handler: h,
            pod_ip,
            limit: Some(timeout),
        };
        let run = self.hooks.run(call);
        let limit = async {
            async_io::Timer::after(timeout).await;
            Err(format!("preStop hook did not finish within {}s", grace))
        };
        if let Err(msg) = run.or(limit).await {
            self.container_event(pod, name, EventType::Warning, "FailedPreStopHook", &msg);
        }
    }

    /// Stops every running container of the pod in upstream's termination
    /// order (every preStop hook at once; the stop signals stage by stage,
    /// sidecars last), then every sandbox.
    async fn kill_pod(
        self: &Rc<Self>,
        pod: &Rc<Pod>,
        rt: &PodRuntimeStatus,
        grace_override: Option<i64>,
    ) -> anyhow::Result<()> {
        let running: Vec<(String, String)> = rt
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| (c.id.clone(), container_name(c).to_string()))
            .collect();
        let mut errors = Vec::new();
        if !running.is_empty() {
            let names: Vec<&str> = running.iter().map(|(_, n)| n.as_str()).collect();
            let stages = termination_order(pod, &names);
            let t0 = Instant::now();
            let pod_ip = rt.ips().first().cloned();
            // Every preStop hook starts now; each stop waits for its own
            // hook and for the earlier stages.
            let mut hooks: BTreeMap<String, (i64, smol::Task<()>)> = BTreeMap::new();
            for (id, name) in &running {
                let grace = self.grace_for(pod, id, name, None, grace_override).await;
                let this = self.clone();
                let (pod, id2, name, ip) = (pod.clone(), id.clone(), name.clone(), pod_ip.clone());
                let task = crate::rt::spawn(async move {
                    this.pre_stop(&pod, &id2, &name, grace, ip).await;
                });
                hooks.insert(id.clone(), (grace, task));
            }
            for stage in stages {
                let mut stops = Vec::new();
                for (id, name) in running.iter().filter(|(_, n)| stage.contains(n)) {
                    let Some((grace, hook)) = hooks.remove(id) else {
                        continue;
                    };
                    let this = self.clone();
                    let (id, name) = (id.clone(), name.clone());
                    stops.push(crate::rt::spawn(async move {
                        hook.await;
                        let res = this.runtime.stop_container(&id, remaining(grace, t0)).await;
                        (name, res)
                    }));
                }
                for t in stops {
                    let (name, res) = t.await;
                    if let Err(e) = res {
                        errors.push(format!("stop {name}: {e}"));
                    }
                }
            }
        }
        for s in &rt.sandboxes {
            if s.state == SandboxState::Ready {
                if let Err(e) = self.runtime.stop_pod_sandbox(&s.id).await {
                    errors.push(format!("stop sandbox {}: {e}", s.id));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", errors.join("; "))
        }
    }

    // -- terminating, terminated, removed -----------------------------------

    /// Upstream `SyncTerminatingPod`: stop everything, check nothing runs,
    /// final status.
    pub async fn sync_terminating_pod(
        self: &Rc<Self>,
        pod: &Rc<Pod>,
        grace: Option<i64>,
    ) -> anyhow::Result<()> {
        log::info!("pod {}: terminating", format_pod(pod));
        self.prober.stop_liveness_and_startup(uid(pod));
        let rt = self.pod_runtime_status(pod).await?;
        self.kill_pod(pod, &rt, grace).await?;
        let rt = self.pod_runtime_status(pod).await?;
        if let Some(c) = rt
            .containers
            .iter()
            .find(|c| c.state == ContainerState::Running)
        {
            anyhow::bail!("container {} still runs", container_name(c));
        }
        let probes = self.prober.results(uid(pod));
        let st = self.generate_status(pod, &rt, &probes, true);
        self.store_status(pod, st);
        log::info!("pod {}: terminated", format_pod(pod));
        Ok(())
    }

    /// Upstream `SyncTerminatedPod`: release the volumes (the pod's other
    /// files stay while it is known).
    pub async fn sync_terminated_pod(self: &Rc<Self>, pod: &Rc<Pod>) -> anyhow::Result<()> {
        self.volumes.teardown_volumes(uid(pod)).await?;
        Ok(())
    }

    /// The pod is gone from every source: remove its containers, sandboxes,
    /// logs and directory.
    pub async fn remove_pod(self: &Rc<Self>, pod: &Rc<Pod>) -> anyhow::Result<()> {
        let rt = self.pod_runtime_status(pod).await?;
        let errors = self.remove(pod, &gc::all(&rt)).await;
        if errors > 0 {
            anyhow::bail!("{errors} runtime objects could not be removed");
        }
        self.volumes.teardown_pod(uid(pod)).await?;
        let logs = pod_log_directory(&self.cfg.pod_logs_dir, pod);
        crate::rt::unblock(move || -> anyhow::Result<()> {
            match std::fs::remove_dir_all(&logs) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(anyhow::anyhow!("remove {}: {e}", logs.display())),
            }
        })
        .await?;
        let id = uid(pod).to_string();
        self.cache.borrow_mut().remove(&id);
        self.prober.remove_pod(&id);
        log::info!("pod {}: removed", format_pod(pod));
        Ok(())
    }

    /// Removes containers, then sandboxes; returns how many failed.
    async fn remove(&self, pod: &Pod, r: &gc::Removal) -> usize {
        let mut errors = 0;
        for id in &r.containers {
            match self.runtime.remove_container(id).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => {
                    errors += 1;
                    log::warn!("pod {}: remove container {id}: {e}", format_pod(pod));
                }
            }
        }
        for id in &r.sandboxes {
            let res = match self.runtime.stop_pod_sandbox(id).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {
                    self.runtime.remove_pod_sandbox(id).await
                }
                Err(e) => Err(e),
            };
            match res {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => {
                    errors += 1;
                    log::warn!("pod {}: remove sandbox {id}: {e}", format_pod(pod));
                }
            }
        }
        errors
    }

    /// Tears down pod directories no worker and no source knows (pods that
    /// went while picolet was down), in the background; one run at a time.
    pub fn cleanup_orphan_dirs(self: &Rc<Self>, wanted: BTreeSet<String>) {
        if self.cleaning.replace(true) {
            return;
        }
        let mut known = wanted;
        known.extend(self.workers.borrow().iter().map(|(u, _)| u.clone()));
        let this = self.clone();
        crate::rt::spawn(async move {
            let r = this.volumes.cleanup_orphans(&known).await;
            for uid in &r.removed {
                log::info!("removed the directory of pod {uid} (no longer known)");
            }
            for e in &r.failed {
                log::warn!("{e}");
            }
            this.cleaning.set(false);
        })
        .detach();
    }

    /// Forgets a pod's per-pod memory (after its worker is gone).
    pub fn forget(&self, uid: &str) {
        self.cache.borrow_mut().remove(uid);
        self.status.borrow_mut().forget(uid);
        self.prober.remove_pod(uid);
    }
}

/// The sandbox could not be made ready; `network`: for lack of a network.
#[derive(Debug, Clone, Copy)]
struct SandboxFailure {
    network: bool,
}

/// The image pull back-off key of a container image in a pod.
fn image_key(pod: &Pod, image: &str) -> String {
    let norm = crate::image::reference::Reference::parse(image)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| image.to_string());
    super::backoff::image_backoff_key(uid(pod), &norm)
}

/// What is left of `grace` seconds since `t0`, at least the minimum.
fn remaining(grace: i64, t0: Instant) -> Duration {
    let total = Duration::from_secs(grace.max(0) as u64);
    total
        .saturating_sub(t0.elapsed())
        .max(Duration::from_secs(MIN_GRACE_PERIOD_SECONDS as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_count_from_log_names() {
        assert_eq!(restart_count_from_logs::<&str>(&[]), 0);
        assert_eq!(
            restart_count_from_logs(&[
                "0.log",
                "3.log.20240101-000000",
                "2.log",
                "x.log",
                "4.logx"
            ]),
            4
        );
    }

    #[test]
    fn remaining_grace_never_below_minimum() {
        let t0 = Instant::now() - Duration::from_secs(29);
        assert_eq!(remaining(30, t0).as_secs(), 2);
        let r = remaining(30, Instant::now());
        assert!(r > Duration::from_secs(29) && r <= Duration::from_secs(30));
        assert_eq!(remaining(0, Instant::now()).as_secs(), 2);
    }
}
