//! Liveness, readiness and startup probes (upstream pkg/kubelet/prober),
//! and the lifecycle hooks that share their handlers.
//!
//! [`ProbeManager`] runs one worker task per container and probe kind on
//! this thread's executor. A worker reads the pod's latest status (given by
//! the sync loop through [`ProbeManager::update_pod_status`]), decides with
//! the pure [`Worker`] state machine whether to probe, runs the handler
//! ([`handlers`]) and folds the outcome into the results the sync loop
//! reads ([`ProbeManager::results`]); every change of a result is also sent
//! on [`ProbeManager::updates`] so the loop re-syncs the pod.
//!
//! As upstream: the first run waits a random part of the period while the
//! manager is young (so a restarted picolet does not probe everything at
//! once); `initialDelaySeconds` counts from the container's start; a
//! startup probe holds the other two back until it succeeds; readiness is
//! false, liveness true and startup unknown until the probe says
//! otherwise; a result needs `successThreshold` / `failureThreshold` equal
//! outcomes in a row; after a liveness or startup failure the worker holds
//! until it sees a new container ID; a probe that cannot be run (an error,
//! not a failure) is retried three times and then ignored.

pub mod grpc;
pub mod handlers;
pub mod lifecycle;

pub use handlers::{Outcome, Output};

use crate::api::core::{Container, ContainerStatus, Pod, PodStatus, Probe};
use crate::runtime::{ExecSyncResponse, Runtime, RuntimeError};
use crate::sync::{ProbeResult, ProbeResults};
use async_io::Timer;
use futures_lite::future;
use jiff::Timestamp;
use smol::channel::{Receiver, Sender};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Runs a command in a container (exec probes and hooks). Every
/// [`Runtime`] is one; tests use a small fake.
#[allow(async_fn_in_trait)]
pub trait CommandRunner {
    /// As [`Runtime::exec_sync`]: a timeout must surface as
    /// `RuntimeError::Other` holding [`crate::runtime::exec::ExecError::Timeout`];
    /// zero means no timeout.
    async fn run_in_container(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, RuntimeError>;
}

impl<R: Runtime> CommandRunner for R {
    async fn run_in_container(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, RuntimeError> {
        self.exec_sync(container_id, cmd, timeout).await
    }
}

/// The container a probe or hook is about.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    /// Runtime container ID (no `containerd://` prefix).
    pub container_id: &'a str,
    /// `status.podIP` (the host IP for hostNetwork pods).
    pub pod_ip: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The result before the first probe (upstream `initialValue`); `None`
    /// is "unknown" (no entry in [`ProbeResults`]).
    pub fn initial(self) -> Option<ProbeResult> {
        match self {
            ProbeKind::Liveness => Some(ProbeResult::Success),
            ProbeKind::Readiness => Some(ProbeResult::Failure),
            ProbeKind::Startup => None,
        }
    }

    fn probe_of(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
            ProbeKind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// A result changed: the sync loop should sync the pod again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUpdate {
    pub pod_uid: String,
    pub container_name: String,
    pub container_id: String,
    pub kind: ProbeKind,
    pub result: ProbeResult,
}

/// A probe's timing, with upstream's defaults for unset fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub period: Duration,
    pub initial_delay_seconds: i32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(p: &Probe) -> Self {
        let pos = |v: Option<i32>, d: i32| v.filter(|x| *x > 0).unwrap_or(d);
        Timing {
            period: Duration::from_secs(pos(p.period_seconds, 10) as u64),
            initial_delay_seconds: p.initial_delay_seconds.unwrap_or(0).max(0),
            success_threshold: pos(p.success_threshold, 1) as u32,
            failure_threshold: pos(p.failure_threshold, 3) as u32,
        }
    }
}

/// What a worker should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing to probe now; wait for the next tick.
    Wait,
    /// Run the probe, then call [`Worker::after`].
    Probe,
    /// The worker is done (pod finished, container will not restart,
    /// pod being deleted for liveness/startup).
    Stop,
}

/// A change to the results store: container ID and its new value (`None`
/// removes the entry).
pub type Effect = (String, Option<ProbeResult>);

/// One probe of one container: upstream's `worker.doProbe` as a pure state
/// machine around the probe call.
#[derive(Debug, Clone)]
pub struct Worker {
    pub kind: ProbeKind,
    pub container_name: String,
    pub timing: Timing,
    /// The container restarts after it terminates (pod policy other than
    /// Never, or a sidecar).
    restarts: bool,
    container_id: String,
    last: Option<ProbeResult>,
    run: u32,
    on_hold: bool,
}

impl Worker {
    pub fn new(kind: ProbeKind, pod: &Pod, c: &Container, probe: &Probe) -> Self {
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always");
        Worker {
            kind,
            container_name: c.name.clone(),
            timing: Timing::of(probe),
            restarts: policy != "Never" || crate::sync::actions::is_sidecar(c),
            container_id: String::new(),
            last: None,
            run: 0,
            on_hold: false,
        }
    }

    /// The container ID the worker currently follows.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The result before this container's first probe. A container the
    /// source's copy of the pod (the API server's, after a picolet
    /// restart) already showed ready or started keeps that until its probe
    /// says otherwise, so a restart of picolet does not flap the pod's
    /// Ready condition; anything else starts from upstream's initial value.
    fn initial_for(&self, pod: &Pod, id: &str) -> Option<ProbeResult> {
        let reported = pod
            .status
            .as_ref()
            .and_then(|s| find_status(s, &self.container_name))
            .filter(|c| runtime_id(c.container_id.as_deref().unwrap_or("")) == id);
        match (self.kind, reported) {
            (ProbeKind::Readiness, Some(c)) if c.ready => Some(ProbeResult::Success),
            (ProbeKind::Startup, Some(c)) if c.started == Some(true) => Some(ProbeResult::Success),
            (k, _) => k.initial(),
        }
    }

    /// Looks at the latest status and decides; pushes result changes.
    pub fn before(
        &mut self,
        pod: &Pod,
        status: Option<&PodStatus>,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) -> Next {
        let Some(status) = status else {
            return Next::Wait;
        };
        if matches!(status.phase.as_deref(), Some("Failed" | "Succeeded")) {
            return Next::Stop;
        }
        let Some(c) = find_status(status, &self.container_name) else {
            return Next::Wait;
        };
        let id = runtime_id(c.container_id.as_deref().unwrap_or("")).to_string();
        if id != self.container_id {
            if !self.container_id.is_empty() {
                fx.push((std::mem::take(&mut self.container_id), None));
            }
            self.container_id = id.clone();
            fx.push((id.clone(), self.initial_for(pod, &id)));
            self.on_hold = false;
        }
        if self.on_hold {
            return Next::Wait;
        }
        let state = c.state.clone().unwrap_or_default();
        let Some(running) = state.running else {
            fx.push((id, Some(ProbeResult::Failure)));
            return if state.terminated.is_some() && !self.restarts {
                Next::Stop
            } else {
                Next::Wait
            };
        };
        if pod.metadata.deletion_timestamp.is_some()
            && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup)
        {
            // A quiet shutdown: no probe kills a container being deleted.
            fx.push((id, Some(ProbeResult::Success)));
            return Next::Stop;
        }
        if let Some(started) = running.started_at {
            let secs = now.duration_since(started.0).as_secs();
            if secs < self.timing.initial_delay_seconds as i64 {
                return Next::Wait;
            }
        }
        let started = c.started == Some(true);
        match (self.kind, started) {
            // Startup is done once; kept for a restarted container.
            (ProbeKind::Startup, true) => Next::Wait,
            (ProbeKind::Startup, false) => Next::Probe,
            (_, false) => Next::Wait,
            (_, true) => Next::Probe,
        }
    }

    /// Folds one probe result in (thresholds, hold after a kill-worthy
    /// failure). `None`: the probe errored; nothing changes.
    pub fn after(&mut self, result: Option<ProbeResult>, fx: &mut Vec<Effect>) {
        let Some(result) = result else { return };
        if self.last == Some(result) {
            self.run += 1;
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let threshold = match result {
            ProbeResult::Failure => self.timing.failure_threshold,
            ProbeResult::Success => self.timing.success_threshold,
        };
        if self.run < threshold {
            return;
        }
        fx.push((self.container_id.clone(), Some(result)));
        if result == ProbeResult::Failure
            && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup)
        {
            // The container will be killed; wait for its successor.
            self.on_hold = true;
            self.run = 0;
        }
    }
}

/// A container's status by name: regular containers first, then init
/// containers (sidecars), only once it has an ID.
fn find_status<'a>(s: &'a PodStatus, name: &str) -> Option<&'a ContainerStatus> {
    let has_id = |c: &&ContainerStatus| {
        c.name == name && c.container_id.as_deref().is_some_and(|i| !i.is_empty())
    };
    s.container_statuses
        .iter()
        .flatten()
        .find(has_id)
        .or_else(|| s.init_container_statuses.iter().flatten().find(has_id))
}

/// `containerd://abc` → `abc`
fn runtime_id(s: &str) -> &str {
    s.split_once("://").map_or(s, |(_, id)| id)
}

/// Maps a handler's outcome to a result (upstream `prober.probe`): success
/// and warning succeed, failure and unknown fail, an error is no result.
pub fn result_of(r: &anyhow::Result<Output>) -> Option<ProbeResult> {
    match r {
        Ok(o) => Some(match o.outcome {
            Outcome::Success | Outcome::Warning => ProbeResult::Success,
            Outcome::Failure | Outcome::Unknown => ProbeResult::Failure,
        }),
        Err(_) => None,
    }
}

type Key = (String, String, ProbeKind);

struct PodEntry {
    pod: Rc<Pod>,
    status: Option<PodStatus>,
    results: ProbeResults,
}

struct WorkerHandle {
    generation: u64,
    stop: Sender<()>,
    trigger: Sender<()>,
}

struct State {
    pods: HashMap<String, PodEntry>,
    workers: BTreeMap<Key, WorkerHandle>,
    generation: u64,
}

struct Inner<R> {
    runner: Rc<R>,
    state: RefCell<State>,
    updates: Sender<ProbeUpdate>,
    /// When the manager started: young managers jitter the first probe.
    start: Instant,
    /// Unhealthy and ProbeWarning events.
    recorder: RefCell<Rc<dyn crate::events::Recorder>>,
}

/// The probe manager (upstream `prober.Manager`): probe workers keyed by
/// pod UID, container name and kind. Cheap to clone (shared state).
pub struct ProbeManager<R> {
    inner: Rc<Inner<R>>,
    updates: Receiver<ProbeUpdate>,
}

impl<R> Clone for ProbeManager<R> {
    fn clone(&self) -> Self {
        ProbeManager {
            inner: self.inner.clone(),
            updates: self.updates.clone(),
        }
    }
}

impl<R: CommandRunner + 'static> ProbeManager<R> {
    pub fn new(runner: Rc<R>) -> Self {
        Self::started_at(runner, Instant::now())
    }

    /// Where probe failures are reported (upstream's Unhealthy events).
    pub fn set_recorder(&self, r: Rc<dyn crate::events::Recorder>) {
        *self.inner.recorder.borrow_mut() = r;
    }

    fn started_at(runner: Rc<R>, start: Instant) -> Self {
        let (tx, rx) = smol::channel::unbounded();
        ProbeManager {
            inner: Rc::new(Inner {
                runner,
                state: RefCell::new(State {
                    pods: HashMap::new(),
                    workers: BTreeMap::new(),
                    generation: 0,
                }),
                updates: tx,
                start,
                recorder: RefCell::new(Rc::new(crate::events::NoopRecorder)),
            }),
            updates: rx,
        }
    }

    /// Result changes, for the sync loop to re-sync the pod. Every change
    /// of a stored result is sent (the loop may ignore liveness
    /// successes, as upstream does).
    pub fn updates(&self) -> Receiver<ProbeUpdate> {
        self.updates.clone()
    }

    /// Starts workers for every probe of the pod's containers and sidecars
    /// (init containers with `restartPolicy: Always`). Existing workers are
    /// kept; probe parameters are not updated (as upstream).
    pub fn add_pod(&self, pod_rc: &Rc<Pod>) {
        let pod: &Pod = pod_rc;
        let uid = pod_uid(pod);
        // The caller's shared copy, not one more per pod.
        let mut st = self.inner.state.borrow_mut();
        st.pods
            .entry(uid.clone())
            .and_modify(|e| e.pod = pod_rc.clone())
            .or_insert_with(|| PodEntry {
                pod: pod_rc.clone(),
                status: None,
                results: ProbeResults::default(),
            });
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| crate::sync::actions::is_sidecar(c));
        for c in spec.containers.iter().chain(sidecars) {
            for kind in [
                ProbeKind::Startup,
                ProbeKind::Readiness,
                ProbeKind::Liveness,
            ] {
                let Some(probe) = kind.probe_of(c) else {
                    continue;
                };
                let key = (uid.clone(), c.name.clone(), kind);
                if st.workers.contains_key(&key) {
                    continue;
                }
                st.generation += 1;
                let generation = st.generation;
                let (stop_tx, stop_rx) = smol::channel::bounded(1);
                let (trig_tx, trig_rx) = smol::channel::bounded(1);
                let w = Worker::new(kind, pod, c, probe);
                let task = WorkerTask {
                    inner: Rc::downgrade(&self.inner),
                    key: key.clone(),
                    generation,
                    container: c.clone(),
                    probe: probe.clone(),
                    worker: w,
                };
                crate::rt::spawn(task.run(stop_rx, trig_rx)).detach();
                st.workers.insert(
                    key,
                    WorkerHandle {
                        generation,
                        stop: stop_tx,
                        trigger: trig_tx,
                    },
                );
            }
        }
    }

    /// Replaces the pod object the workers see (its deletion timestamp
    /// ends liveness and startup probing quietly).
    pub fn update_pod(&self, pod: &Pod) {
        if let Some(e) = self.inner.state.borrow_mut().pods.get_mut(&pod_uid(pod)) {
            e.pod = Rc::new(pod.clone());
        }
    }

    /// The pod's latest status (as generated for the API, with container
    /// IDs, states, `started`, and the pod IP). Workers probe against it.
    /// Like upstream's `UpdatePodStatus`, a running, started container that
    /// is not ready yet gets its readiness probe run now.
    pub fn update_pod_status(&self, pod_uid: &str, status: &PodStatus) {
        let mut st = self.inner.state.borrow_mut();
        let Some(e) = st.pods.get_mut(pod_uid) else {
            return;
        };
        e.status = Some(status.clone());
        let mut trigger = Vec::new();
        for c in status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
        {
            let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
            let id = runtime_id(c.container_id.as_deref().unwrap_or(""));
            if running
                && c.started == Some(true)
                && e.results.readiness.get(id) != Some(&ProbeResult::Success)
            {
                trigger.push((pod_uid.to_string(), c.name.clone(), ProbeKind::Readiness));
            }
        }
        for k in trigger {
            if let Some(w) = st.workers.get(&k) {
                let _ = w.trigger.try_send(());
            }
        }
    }

    /// Stops the liveness and startup workers (the pod is terminating).
    pub fn stop_liveness_and_startup(&self, pod_uid: &str) {
        let st = self.inner.state.borrow();
        for (k, w) in &st.workers {
            if k.0 == pod_uid && k.2 != ProbeKind::Readiness {
                let _ = w.stop.try_send(());
            }
        }
    }

    /// Stops every worker of the pod and forgets its results.
    pub fn remove_pod(&self, pod_uid: &str) {
        let mut st = self.inner.state.borrow_mut();
        for (k, w) in &st.workers {
            if k.0 == pod_uid {
                let _ = w.stop.try_send(());
            }
        }
        st.pods.remove(pod_uid);
    }

    /// Removes every pod not in `desired` (upstream `CleanupPods`).
    pub fn cleanup_pods(&self, desired: &[&str]) {
        let uids: Vec<String> = self
            .inner
            .state
            .borrow()
            .pods
            .keys()
            .filter(|u| !desired.contains(&u.as_str()))
            .cloned()
            .collect();
        for u in uids {
            self.remove_pod(&u);
        }
    }

    /// The pod's current results (empty when unknown).
    pub fn results(&self, pod_uid: &str) -> ProbeResults {
        self.inner
            .state
            .borrow()
            .pods
            .get(pod_uid)
            .map(|e| e.results.clone())
            .unwrap_or_default()
    }

    /// How many workers run (for tests and metrics).
    pub fn worker_count(&self) -> usize {
        self.inner.state.borrow().workers.len()
    }
}

fn pod_uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

struct WorkerTask<R> {
    inner: Weak<Inner<R>>,
    key: Key,
    generation: u64,
    container: Container,
    probe: Probe,
    worker: Worker,
}

enum Wake {
    Stop,
    Tick,
    Trigger,
}

impl<R: CommandRunner + 'static> WorkerTask<R> {
    async fn run(mut self, stop: Receiver<()>, trigger: Receiver<()>) {
        let period = self.worker.timing.period;
        let young = self
            .inner
            .upgrade()
            .is_some_and(|i| i.start.elapsed() < period);
        if young {
            // Upstream: a random part of the period, so probes of a
            // restarted agent spread out.
            let jitter = period.mul_f64(random_fraction(&self.key));
            let woke = future::or(async { stop.recv().await.ok().map(|_| ()) }, async {
                Timer::after(jitter).await;
                None
            })
            .await;
            if woke.is_some() || stop.is_closed() {
                self.finish();
                return;
            }
        }
        let mut next = Instant::now() + period;
        while self.probe_once().await {
            let wake = future::or(
                async {
                    match stop.recv().await {
                        Ok(()) | Err(_) => Wake::Stop,
                    }
                },
                future::or(
                    async {
                        Timer::at(next).await;
                        Wake::Tick
                    },
                    async {
                        match trigger.recv().await {
                            Ok(()) => Wake::Trigger,
                            Err(_) => Wake::Stop,
                        }
                    },
                ),
            )
            .await;
            match wake {
                Wake::Stop => break,
                Wake::Tick => {
                    // A ticker: missed ticks are dropped, not queued.
                    let now = Instant::now();
                    while next <= now {
                        next += period;
                    }
                }
                Wake::Trigger => {}
            }
        }
        self.finish();
    }

    /// One round of upstream's `doProbe`. Returns whether to go on.
    async fn probe_once(&mut self) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let mut fx = Vec::new();
        let (next, pod, pod_ip) = {
            let st = inner.state.borrow();
            let Some(e) = st.pods.get(&self.key.0) else {
                return false;
            };
            let next = self
                .worker
                .before(&e.pod, e.status.as_ref(), Timestamp::now(), &mut fx);
            let ip = e
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            (next, e.pod.clone(), ip)
        };
        apply(&inner, &self.key, &fx);
        match next {
            Next::Stop => return false,
            Next::Wait => return true,
            Next::Probe => {}
        }
        let runner = inner.runner.clone();
        drop(inner);
        let id = self.worker.container_id().to_string();
        let target = Target {
            pod: &pod,
            container: &self.container,
            container_id: &id,
            pod_ip: &pod_ip,
        };
        let out = handlers::run_with_retries(&*runner, &self.probe, &target).await;
        log_outcome(&self.key, &out);
        if let Some(inner) = self.inner.upgrade() {
            record_outcome(&inner, &self.key, &out);
        }
        let mut fx = Vec::new();
        self.worker.after(result_of(&out), &mut fx);
        if let Some(inner) = self.inner.upgrade() {
            apply(&inner, &self.key, &fx);
        }
        true
    }

    /// Upstream's deferred clean-up: the result of this worker's container
    /// goes, and the worker leaves the map (unless replaced meanwhile).
    fn finish(&self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        if !self.worker.container_id().is_empty() {
            apply(
                &inner,
                &self.key,
                &[(self.worker.container_id().to_string(), None)],
            );
        }
        let mut st = inner.state.borrow_mut();
        if st.workers.get(&self.key).map(|w| w.generation) == Some(self.generation) {
            st.workers.remove(&self.key);
        }
    }
}

/// Writes result changes and announces those that set a value.
fn apply<R>(inner: &Inner<R>, key: &Key, fx: &[Effect]) {
    if fx.is_empty() {
        return;
    }
    let mut st = inner.state.borrow_mut();
    let Some(e) = st.pods.get_mut(&key.0) else {
        return;
    };
    let map = match key.2 {
        ProbeKind::Liveness => &mut e.results.liveness,
        ProbeKind::Readiness => &mut e.results.readiness,
        ProbeKind::Startup => &mut e.results.startup,
    };
    for (id, value) in fx {
        let changed = match value {
            Some(v) => map.insert(id.clone(), *v) != Some(*v),
            None => {
                map.remove(id);
                false
            }
        };
        if let (true, Some(v)) = (changed, value) {
            let _ = inner.updates.try_send(ProbeUpdate {
                pod_uid: key.0.clone(),
                container_name: key.1.clone(),
                container_id: id.clone(),
                kind: key.2,
                result: *v,
            });
        }
    }
}

/// Upstream's probe events on the container: `Unhealthy` for a failure or
/// an error, `ProbeWarning` for a warning.
fn record_outcome<R>(inner: &Inner<R>, key: &Key, out: &anyhow::Result<Output>) {
    let (uid, name, kind) = key;
    let (t, reason, msg) = match out {
        Ok(o) if o.outcome == Outcome::Success => return,
        Ok(o) if o.outcome == Outcome::Warning => (
            crate::events::EventType::Warning,
            "ProbeWarning",
            crate::events::messages::probe_warning(kind.as_str(), &o.message),
        ),
        Ok(o) => (
            crate::events::EventType::Warning,
            "Unhealthy",
            crate::events::messages::probe_failed(kind.as_str(), o.message.trim_end()),
        ),
        Err(e) => (
            crate::events::EventType::Warning,
            "Unhealthy",
            crate::events::messages::probe_errored(kind.as_str(), "unknown", &format!("{e:#}")),
        ),
    };
    let pod = inner.state.borrow().pods.get(uid).map(|e| e.pod.clone());
    if let Some(pod) = pod {
        let init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.name == *name));
        let obj = crate::events::ObjectRef::container(&pod, name, init);
        let r = inner.recorder.borrow().clone();
        r.event(&obj, t, reason, &msg);
    }
}

fn log_outcome(key: &Key, out: &anyhow::Result<Output>) {
    let (uid, name, kind) = key;
    match out {
        Ok(o) if o.outcome == Outcome::Success => {
            log::trace!("{} probe of {name} in pod {uid} succeeded", kind.as_str())
        }
        Ok(o) if o.outcome == Outcome::Warning => log::warn!(
            "{} probe warning for {name} in pod {uid}: {}",
            kind.as_str(),
            o.message
        ),
        Ok(o) => log::debug!(
            "{} probe failed for {name} in pod {uid}: {}",
            kind.as_str(),
            o.message.trim_end()
        ),
        Err(e) => log::warn!(
            "{} probe errored for {name} in pod {uid}: {e:#}",
            kind.as_str()
        ),
    }
}

/// A fraction in [0, 1) from the process's random hasher keys.
fn random_fraction(key: &Key) -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(key.0.as_bytes());
    h.write(key.1.as_bytes());
    h.write_u8(key.2 as u8);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;
