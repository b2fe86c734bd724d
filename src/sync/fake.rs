//! In-memory stand-ins for the unit tests of the pod workers'
//! orchestration (ordering of starts, kills, hooks, back-off, GC). The
//! real runtime is exercised by the integration tests.

use super::kubelet::{HookCall, Hooks, Images, Prober};
use super::ProbeResults;
use crate::api::core::{Pod, PodStatus};
use crate::runtime::*;
use futures_lite::future::BoxedLocal;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

/// A shared, ordered record of what happened.
pub type Calls = Rc<RefCell<Vec<String>>>;

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<String, PodSandboxStatus>,
    /// id → (status, sandbox id)
    containers: BTreeMap<String, (ContainerStatus, String)>,
    next: u64,
    clock: i64,
}

#[derive(Default)]
pub struct FakeRuntime {
    state: RefCell<State>,
    pub calls: Calls,
    /// Container names whose create fails.
    pub fail_create: RefCell<BTreeSet<String>>,
    /// Container names that exit with this code when stopped (else 137).
    pub stop_codes: RefCell<BTreeMap<String, i32>>,
    /// Sandbox creation fails with a network error.
    pub network_down: RefCell<bool>,
}

fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

impl FakeRuntime {
    pub fn new(calls: Calls) -> Rc<Self> {
        Rc::new(FakeRuntime {
            calls,
            ..Default::default()
        })
    }

    fn tick(&self) -> i64 {
        let mut s = self.state.borrow_mut();
        s.clock = now_nanos().max(s.clock + 1);
        s.clock
    }

    fn id(&self, prefix: &str) -> String {
        let mut s = self.state.borrow_mut();
        s.next += 1;
        format!("{prefix}{}", s.next)
    }

    fn log(&self, s: String) {
        self.calls.borrow_mut().push(s);
    }

    /// The running container named `name` exits with `code`.
    pub fn exit(&self, name: &str, code: i32) {
        let t = self.tick();
        let mut s = self.state.borrow_mut();
        for (c, _) in s.containers.values_mut() {
            if c.metadata.name == name && c.state == ContainerState::Running {
                c.state = ContainerState::Exited;
                c.exit_code = code;
                c.finished_at = t;
            }
        }
    }

    /// Instances of `name`, newest first: (id, state, restart count).
    pub fn instances(&self, name: &str) -> Vec<(String, ContainerState, String)> {
        let s = self.state.borrow();
        let mut v: Vec<&ContainerStatus> = s
            .containers
            .values()
            .map(|(c, _)| c)
            .filter(|c| c.metadata.name == name)
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        v.into_iter()
            .map(|c| {
                (
                    c.id.clone(),
                    c.state,
                    c.annotations
                        .get(keys::CONTAINER_RESTART_COUNT)
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    pub fn sandbox_count(&self) -> usize {
        self.state.borrow().sandboxes.len()
    }

    /// Adds a running pod as a previous picolet would have left it.
    pub fn seed_running(&self, uid: &str, name: &str, container: &str, grace: i64) {
        let t = self.tick();
        let sb = self.id("sb");
        let c = self.id("c");
        let mut s = self.state.borrow_mut();
        s.sandboxes.insert(
            sb.clone(),
            PodSandboxStatus {
                id: sb.clone(),
                metadata: PodSandboxMetadata {
                    name: name.into(),
                    uid: uid.into(),
                    namespace: "default".into(),
                    attempt: 0,
                },
                state: SandboxState::Ready,
                created_at: t,
                network: PodSandboxNetworkStatus {
                    ip: "10.0.0.99".into(),
                    additional_ips: vec![],
                },
                ..Default::default()
            },
        );
        let labels: StringMap = [
            (keys::POD_UID.to_string(), uid.to_string()),
            (keys::POD_NAME.to_string(), name.to_string()),
            (keys::POD_NAMESPACE.to_string(), "default".to_string()),
            (keys::CONTAINER_NAME.to_string(), container.to_string()),
        ]
        .into();
        let annotations: StringMap = [(
            keys::POD_TERMINATION_GRACE_PERIOD.to_string(),
            grace.to_string(),
        )]
        .into();
        s.containers.insert(
            c.clone(),
            (
                ContainerStatus {
                    id: c.clone(),
                    metadata: ContainerMetadata {
                        name: container.into(),
                        attempt: 0,
                    },
                    state: ContainerState::Running,
                    created_at: t,
                    started_at: t,
                    labels,
                    annotations,
                    ..Default::default()
                },
                sb,
            ),
        );
    }

    fn name_of(&self, id: &str) -> String {
        self.state
            .borrow()
            .containers
            .get(id)
            .map(|(c, _)| c.metadata.name.clone())
            .unwrap_or_else(|| id.to_string())
    }
}

fn not_found(id: &str) -> RuntimeError {
    RuntimeError::NotFound(id.to_string())
}

impl Runtime for FakeRuntime {
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        if *self.network_down.borrow() {
            return Err(RuntimeError::NetworkNotReady("no CNI config".into()));
        }
        let id = self.id("sb");
        let t = self.tick();
        self.log(format!("run_sandbox {}", config.metadata.attempt));
        let n = self.state.borrow().next;
        self.state.borrow_mut().sandboxes.insert(
            id.clone(),
            PodSandboxStatus {
                id: id.clone(),
                metadata: config.metadata.clone(),
                state: SandboxState::Ready,
                created_at: t,
                network: PodSandboxNetworkStatus {
                    ip: format!("10.0.0.{n}"),
                    additional_ips: vec![],
                },
                namespace_options: config.namespace_options,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
            },
        );
        Ok(id)
    }
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.log(format!("stop_sandbox {id}"));
        let t = self.tick();
        let mut s = self.state.borrow_mut();
        let sb = s.sandboxes.get_mut(id).ok_or_else(|| not_found(id))?;
        sb.state = SandboxState::NotReady;
        for (c, sid) in s.containers.values_mut() {
            if sid == id && c.state == ContainerState::Running {
                c.state = ContainerState::Exited;
                c.exit_code = 137;
                c.finished_at = t;
            }
        }
        Ok(())
    }
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.log(format!("remove_sandbox {id}"));
        let mut s = self.state.borrow_mut();
        s.sandboxes.remove(id);
        s.containers.retain(|_, (_, sid)| sid != id);
        Ok(())
    }
    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        self.state
            .borrow()
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }
    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandbox>, RuntimeError> {
        Ok(self
            .state
            .borrow()
            .sandboxes
            .values()
            .map(|s| PodSandbox {
                id: s.id.clone(),
                metadata: s.metadata.clone(),
                state: s.state,
                created_at: s.created_at,
                labels: s.labels.clone(),
                annotations: s.annotations.clone(),
            })
            .collect())
    }
    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: &ContainerConfig,
        _sandbox_config: &PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        if self.fail_create.borrow().contains(&config.metadata.name) {
            return Err(RuntimeError::CreateContainer("mount failed".into()));
        }
        let id = self.id("c");
        let t = self.tick();
        self.log(format!("create {}", config.metadata.name));
        self.state.borrow_mut().containers.insert(
            id.clone(),
            (
                ContainerStatus {
                    id: id.clone(),
                    metadata: config.metadata.clone(),
                    state: ContainerState::Created,
                    created_at: t,
                    image: config.image.clone(),
                    image_id: config.image_id.clone(),
                    labels: config.labels.clone(),
                    annotations: config.annotations.clone(),
                    ..Default::default()
                },
                pod_sandbox_id.to_string(),
            ),
        );
        Ok(id)
    }
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let t = self.tick();
        let name = self.name_of(id);
        self.log(format!("start {name}"));
        let mut s = self.state.borrow_mut();
        let (c, _) = s.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        c.state = ContainerState::Running;
        c.started_at = t;
        Ok(())
    }
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let name = self.name_of(id);
        self.log(format!("stop {name} {}s", timeout.as_secs_f64().round()));
        // Let other tasks run, as a real stop would.
        async_io::Timer::after(Duration::from_millis(5)).await;
        let code = self.stop_codes.borrow().get(&name).copied().unwrap_or(137);
        let t = self.tick();
        let mut s = self.state.borrow_mut();
        let (c, _) = s.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        if c.state == ContainerState::Running {
            c.state = ContainerState::Exited;
            c.exit_code = code;
            c.finished_at = t;
        }
        Ok(())
    }
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let name = self.name_of(id);
        self.log(format!("remove {name}"));
        self.state.borrow_mut().containers.remove(id);
        Ok(())
    }
    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<Container>, RuntimeError> {
        Ok(self
            .state
            .borrow()
            .containers
            .values()
            .filter(|(_, sid)| filter.pod_sandbox_id.as_ref().is_none_or(|f| f == sid))
            .filter(|(c, _)| filter.state.is_none_or(|s| s == c.state))
            .map(|(c, sid)| Container {
                id: c.id.clone(),
                pod_sandbox_id: sid.clone(),
                metadata: c.metadata.clone(),
                image: c.image.clone(),
                image_id: c.image_id.clone(),
                state: c.state,
                created_at: c.created_at,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
            })
            .collect())
    }
    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.state
            .borrow()
            .containers
            .get(id)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| not_found(id))
    }
    async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecSyncResponse, RuntimeError> {
        self.log(format!("exec {} {}", self.name_of(id), cmd.join(" ")));
        Ok(ExecSyncResponse::default())
    }
    async fn container_stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        Ok(ContainerStats {
            id: id.into(),
            ..Default::default()
        })
    }
}

/// Images: everything named in `present` is there; pulls of names in
/// `pullable` succeed, the others fail.
#[derive(Default)]
pub struct FakeImages {
    pub present: RefCell<BTreeSet<String>>,
    pub pullable: RefCell<BTreeSet<String>>,
    pub pulls: RefCell<u32>,
}

impl Images for FakeImages {
    fn present(&self, image: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .present
            .borrow()
            .contains(image)
            .then(|| format!("sha256:{image}")))
    }
    async fn pull(&self, image: &str) -> anyhow::Result<String> {
        *self.pulls.borrow_mut() += 1;
        if self.pullable.borrow().contains(image) {
            self.present.borrow_mut().insert(image.to_string());
            Ok(format!("sha256:{image}"))
        } else {
            anyhow::bail!("manifest unknown")
        }
    }
}

/// Hooks: exec handlers are recorded as `hook <container> <command>`; a
/// command containing `fail` fails; `sleep N` sleeps N × 10 ms.
pub struct FakeHooks {
    pub calls: Calls,
}

impl Hooks for FakeHooks {
    fn run(&self, call: HookCall) -> BoxedLocal<Result<(), String>> {
        let calls = self.calls.clone();
        Box::pin(async move {
            let cmd = call
                .handler
                .exec
                .as_ref()
                .and_then(|e| e.command.clone())
                .unwrap_or_default()
                .join(" ");
            calls
                .borrow_mut()
                .push(format!("hook {} {cmd}", call.container.name));
            if let Some(n) = cmd.strip_prefix("sleep ") {
                let n: u64 = n.parse().unwrap_or(0);
                async_io::Timer::after(Duration::from_millis(n * 10)).await;
            }
            if cmd.contains("fail") {
                return Err(format!("command {cmd:?} exited with 1"));
            }
            Ok(())
        })
    }
}

/// No probes configured: no results.
pub struct NoProbes;

impl Prober for NoProbes {
    fn add_pod(&self, _pod: &Rc<Pod>) {}
    fn remove_pod(&self, _uid: &str) {}
    fn stop_liveness_and_startup(&self, _uid: &str) {}
    fn update_status(&self, _pod: &Rc<Pod>, _status: &PodStatus) {}
    fn results(&self, _uid: &str) -> ProbeResults {
        ProbeResults::default()
    }
}
