//! Cluster membership: register the Node, keep its status current, renew
//! its Lease (upstream `kubelet_node_status.go` and the node lease
//! controller).
//!
//! The server's copy of the Node comes from a watch of that one object,
//! so the status is compared with what the server holds (as upstream,
//! which GETs it every `nodeStatusUpdateFrequency`) without asking every
//! ten seconds: a status is computed every `nodeStatusUpdateFrequency`
//! and sent only when it differs, heartbeat times aside, or when
//! `nodeStatusReportFrequency` has passed. A Node deleted by an operator
//! is registered again; labels operators add are kept.

pub mod facts;
pub mod lease;
pub mod register;
pub mod status;

use crate::api::core::Node;
use crate::kube::{Client, Error, Event, ListParams, Patch, Reflector};
use crate::util::Backoff;
use register::Registration;
use status::NodeFacts;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The Kubernetes release whose kubelet behaviour picolet follows.
pub const KUBE_VERSION: &str = "v1.31.0";

/// `nodeInfo.kubeletVersion`: the Kubernetes version picolet behaves as,
/// with picolet's own version as semver build metadata (as k3s does), so
/// version-skew checks read v1.31 and people see what runs.
pub fn kubelet_version() -> String {
    format!("{KUBE_VERSION}+picolet.{}", env!("CARGO_PKG_VERSION"))
}

/// `nodeInfo.containerRuntimeVersion`: `<name>://<version>` as CRI reports
/// it. Container IDs are `containerd://<id>` (containerd's runc shim runs
/// them), so the name is `containerd`; the version says who drives it.
pub fn container_runtime_version() -> String {
    format!("containerd://picolet-{}", env!("CARGO_PKG_VERSION"))
}

/// Where the node manager gets the facts of each status.
pub trait NodeHost {
    /// Called every `nodeStatusUpdateFrequency`: keep it cheap.
    fn facts(&self) -> impl Future<Output = NodeFacts>;
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub registration: Registration,
    /// `registerNode`: create the Node (else it must exist).
    pub register_node: bool,
    pub update_frequency: Duration,
    pub report_frequency: Duration,
    pub lease_duration_seconds: u32,
}

/// The node's membership, shared with whoever needs the Node as the
/// server has it (admission reads labels and taints from it).
pub struct NodeManager {
    client: Rc<Client>,
    recorder: Rc<dyn crate::events::Recorder>,
    cfg: NodeConfig,
    /// The Node as the server last showed it.
    server: RefCell<Option<Node>>,
    /// Its UID, for the Lease's owner reference.
    uid: Rc<RefCell<Option<String>>>,
    /// Set when the Node must be registered (again).
    unregistered: Cell<bool>,
    wake_tx: smol::channel::Sender<()>,
    wake_rx: smol::channel::Receiver<()>,
    /// When a status PATCH last succeeded (the Lease may skip a renewal).
    status_written: Rc<Cell<Option<Instant>>>,
    /// The transport's outage count when the Node was last read: after an
    /// outage the cached copy may be stale (the node controller marks an
    /// unreachable node Unknown), so it is read again.
    outages_seen: Cell<u64>,
}

/// "system:node:NAME" of the client certificate, if it is one.
fn certificate_node_name(client: &Client) -> Option<String> {
    let tls = crate::kube::tls::TlsMaterial::read(client.transport().kubeconfig()).ok()?;
    let info = crate::kube::x509::info(tls.client_chain.first()?).ok()?;
    info.common_name?
        .strip_prefix("system:node:")
        .map(str::to_string)
}

fn newer(old: &Node, new: &Node) -> bool {
    let rv = |n: &Node| {
        n.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (rv(old), rv(new)) {
        (Some(a), Some(b)) => b >= a,
        // resourceVersions are opaque: when not numbers, trust the order.
        _ => true,
    }
}

impl NodeManager {
    pub fn new(
        client: Rc<Client>,
        recorder: Rc<dyn crate::events::Recorder>,
        cfg: NodeConfig,
    ) -> Rc<NodeManager> {
        let (wake_tx, wake_rx) = smol::channel::bounded(1);
        Rc::new(NodeManager {
            client,
            recorder,
            cfg,
            server: RefCell::new(None),
            uid: Rc::new(RefCell::new(None)),
            unregistered: Cell::new(true),
            wake_tx,
            wake_rx,
            status_written: Rc::new(Cell::new(None)),
            outages_seen: Cell::new(0),
        })
    }

    /// The Node as the server last showed it.
    /// The API client this node talks through.
    pub fn client(&self) -> &Rc<Client> {
        &self.client
    }

    pub fn node(&self) -> Option<Node> {
        self.server.borrow().clone()
    }

    fn name(&self) -> &str {
        &self.cfg.registration.name
    }

    fn set_server(&self, n: Node) {
        *self.uid.borrow_mut() = n.metadata.uid.clone();
        *self.server.borrow_mut() = Some(n);
    }

    /// Upstream's node events for each of its conditions that is new or
    /// changed (`NodeHasSufficientMemory`, `NodeReady`, ...).
    fn record_transitions(
        &self,
        before: Option<&crate::api::core::NodeStatus>,
        after: &crate::api::core::NodeStatus,
    ) {
        for (_, reason) in status::transitions(before, after) {
            let obj = crate::events::ObjectRef::node(self.name(), None);
            self.recorder.event(
                &obj,
                crate::events::EventType::Normal,
                reason,
                &crate::events::messages::node_status(self.name(), reason),
            );
        }
    }

    fn wake(&self) {
        let _ = self.wake_tx.try_send(());
    }

    /// Creates the Node, or reconciles the one that exists.
    async fn register<H: NodeHost>(&self, host: &H) -> Result<Node, Error> {
        let mut node = register::initial_node(&self.cfg.registration);
        if !self.cfg.register_node {
            return self.client.get::<Node>(None, self.name()).await;
        }
        let facts = host.facts().await;
        let now = crate::api::meta::Time(jiff::Timestamp::now());
        node.status = Some(status::desired_status(&facts, None, now));
        match self.client.create(None, &node).await {
            Ok(n) if n.status.is_some() => {
                log::info!("registered node {}", self.name());
                if let Some(st) = &n.status {
                    self.record_transitions(None, st);
                }
                Ok(n)
            }
            Ok(n) => {
                log::info!("registered node {}", self.name());
                Ok(n)
            }
            Err(e) if e.is_already_exists() => {
                let existing = self.client.get::<Node>(None, self.name()).await?;
                log::info!("node {} was previously registered", self.name());
                match register::reconcile_existing(&node, &existing) {
                    Some(p) => {
                        self.client
                            .patch::<Node>(None, self.name(), None, &Patch::Strategic(p))
                            .await
                    }
                    None => Ok(existing),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Registers until it works, with upstream's back-off (100 ms doubling
    /// to 7 s), logging once per change of the failure.
    async fn register_until_done<H: NodeHost>(&self, host: &H) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(7), 0.2);
        let mut last_err = String::new();
        loop {
            match self.register(host).await {
                Ok(n) => {
                    self.set_server(n);
                    self.unregistered.set(false);
                    return;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if e.is_transport() {
                        log::debug!("register node {}: {msg}", self.name());
                    } else if e.is_not_found() && !self.cfg.register_node {
                        if last_err != msg {
                            log::warn!(
                                "node {} does not exist and registerNode is false: waiting for it",
                                self.name()
                            );
                        }
                    } else if last_err != msg {
                        log::warn!("unable to register node {}: {msg}", self.name());
                    }
                    last_err = msg;
                    let mut d = backoff.next_delay();
                    if let Some(ra) = e.retry_after() {
                        d = d.max(ra);
                    }
                    async_io::Timer::after(d).await;
                }
            }
        }
    }

    /// Follows the server's copy of this Node.
    async fn watch_node(self: Rc<Self>) {
        let (tx, rx) = smol::channel::bounded(8);
        let r = Reflector::new(
            self.client.clone(),
            None,
            ListParams::fields(format!("metadata.name={}", self.name())),
        );
        let _task = crate::rt::spawn(r.run::<Node>(tx));
        while let Ok(ev) = rx.recv().await {
            let gone = match ev {
                Event::Listed(mut items) => match items.pop() {
                    Some(n) => {
                        self.accept(n);
                        false
                    }
                    None => true,
                },
                Event::Applied(n) => {
                    self.accept(n);
                    false
                }
                Event::Deleted(_) => true,
            };
            if gone && !self.unregistered.get() {
                log::warn!(
                    "node {} was deleted from the API server; registering it again",
                    self.name()
                );
                self.unregistered.set(true);
                *self.server.borrow_mut() = None;
                self.wake();
            }
        }
    }

    fn accept(&self, n: Node) {
        let take = match &*self.server.borrow() {
            Some(old) => old.metadata.uid == n.metadata.uid && newer(old, &n),
            None => false,
        };
        if take {
            // Changes by others (the node controller's Unknown) show at the
            // next status computation.
            let differs = self.server.borrow().as_ref().map(|o| &o.status) != Some(&n.status);
            self.set_server(n);
            if differs {
                log::debug!("node {}: status changed on the server", self.name());
            }
        }
    }

    /// Computes the status and sends it when due; a Node found gone is
    /// marked for registration.
    async fn sync_status<H: NodeHost>(
        &self,
        host: &H,
        last_report: &mut Option<Instant>,
        failing: &mut bool,
    ) {
        let outages = self.client.transport().outages();
        if outages != self.outages_seen.get() {
            match self.client.get::<Node>(None, self.name()).await {
                Ok(n) => {
                    self.set_server(n);
                    self.outages_seen.set(outages);
                }
                Err(e) if e.is_not_found() => {
                    self.unregistered.set(true);
                    return;
                }
                Err(e) => log::debug!("re-read node {}: {e}", self.name()),
            }
        }
        let facts = host.facts().await;
        let current = self
            .server
            .borrow()
            .as_ref()
            .and_then(|n| n.status.clone())
            .unwrap_or_default();
        let now = crate::api::meta::Time(jiff::Timestamp::now());
        let desired = status::desired_status(&facts, Some(&current), now);
        let changed = status::has_changed(&current, &desired);
        if !status::should_send(
            changed,
            *last_report,
            Instant::now(),
            self.cfg.report_frequency,
        ) {
            return;
        }
        self.record_transitions(Some(&current), &desired);
        let patch = status::status_patch(&current, &desired);
        match self
            .client
            .patch::<Node>(None, self.name(), Some("status"), &Patch::Strategic(patch))
            .await
        {
            Ok(n) => {
                *last_report = Some(Instant::now());
                self.status_written.set(Some(Instant::now()));
                self.set_server(n);
                if *failing {
                    log::info!("node {} status updated again", self.name());
                    *failing = false;
                }
            }
            Err(e) if e.is_not_found() => {
                log::warn!(
                    "node {} is gone from the API server; registering it again",
                    self.name()
                );
                self.unregistered.set(true);
            }
            Err(e) => {
                if !*failing && !e.is_transport() {
                    log::warn!("unable to update node {} status: {e}", self.name());
                } else {
                    log::debug!("update node {} status: {e}", self.name());
                }
                *failing = true;
            }
        }
    }

    /// Runs until dropped: registration, the Lease, the node watch and the
    /// status loop.
    pub async fn run<H: NodeHost + 'static>(self: Rc<Self>, host: Rc<H>) {
        if let Some(cn) = certificate_node_name(&self.client) {
            if cn != self.name() {
                // NodeRestriction would refuse every write; do not try.
                log::error!(
                    "the client certificate of {} is for node {cn:?}, but this node is {:?}: \
                     picolet will not register or report it (set --hostname-override {cn} or \
                     use this node's credentials); pods from local sources keep running",
                    self.client.transport().kubeconfig().path.display(),
                    self.name()
                );
                return;
            }
        }
        self.register_until_done(&*host).await;
        self.recorder.event(
            &crate::events::ObjectRef::node(self.name(), None),
            crate::events::EventType::Normal,
            crate::events::reasons::STARTING_KUBELET,
            &crate::events::messages::starting_kubelet(),
        );
        let _lease = crate::rt::spawn(lease::run(
            self.client.clone(),
            self.name().to_string(),
            self.cfg.lease_duration_seconds,
            self.uid.clone(),
            self.status_written.clone(),
        ));
        let _watch = crate::rt::spawn(self.clone().watch_node());
        let mut last_report = Some(Instant::now());
        let mut failing = false;
        loop {
            if self.unregistered.get() {
                self.register_until_done(&*host).await;
                last_report = Some(Instant::now());
            }
            self.sync_status(&*host, &mut last_report, &mut failing)
                .await;
            if self.unregistered.get() {
                continue;
            }
            let tick = async_io::Timer::after(self.cfg.update_frequency);
            futures_lite::future::or(
                async {
                    tick.await;
                },
                async {
                    let _ = self.wake_rx.recv().await;
                },
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_say_what_runs() {
        let v = kubelet_version();
        assert!(v.starts_with("v1.31.0+picolet."), "{v}");
        assert!(container_runtime_version().starts_with("containerd://picolet-"));
    }

    #[test]
    fn older_resource_versions_do_not_replace_newer() {
        let n = |rv: &str| Node {
            metadata: crate::api::meta::ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(newer(&n("10"), &n("11")));
        assert!(newer(&n("10"), &n("10")));
        assert!(!newer(&n("10"), &n("9")));
        assert!(newer(&n("x"), &n("9")));
    }
}
