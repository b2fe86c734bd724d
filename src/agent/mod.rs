//! `picolet run`: the node agent put together.
//!
//! Start-up order: directories; node facts (machine info, node IP, host
//! DNS, allocatable); the image store, with every tarball in
//! `<root>/images/import/` imported before any pod starts (k3s's
//! air-gap behaviour); the runtime (which recovers what runs); the
//! back-off state; the status manager; the pod workers; the PLEG; the
//! sources; the sync loop; image GC (its own task, every 5 min); the local
//! HTTP API; the signal handler.
//!
//! SIGTERM/SIGINT end the loop: pods keep running (their shims live on)
//! unless `picolet.stopPodsOnShutdown`, and picolet exits 0. A restarted
//! picolet adopts what runs: static pod UIDs come from the manifest's
//! content, restart counts from the runtime's annotations, back-off from
//! the state directory.

pub mod cluster;

use crate::config::Config;
use crate::image::ImageService;
use crate::runtime::convert::{read_host_dns, NodeContext};
use crate::runtime::{Runtime, RuntimeEvent};
use crate::stats::machine::MachineInfo;
use crate::status::StatusManager;
use crate::sync::backoff::BackoffParams;
use crate::sync::kubelet::{Hooks, Kubelet, Prober, SyncConfig};
use crate::sync::pleg::{Pleg, RELIST_PERIOD};
use crate::sync::state::BackoffState;
use crate::sync::syncloop::{self, Exit, Health, LoopInputs};
use anyhow::{Context, Result};
use futures_lite::StreamExt;
use smol::channel::Receiver;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

/// Upstream `ImageGCPeriod`.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// What `picolet run` prepares before the runtime starts.
pub struct Agent {
    pub cfg: Config,
    pub images: Rc<ImageService>,
    pub node: NodeContext,
    pub machine: Rc<MachineInfo>,
    /// What the node status reports as capacity and allocatable.
    pub capacity: crate::node::status::Resources,
    pub allocatable: crate::node::status::Resources,
    /// Where events go: the API server (once joined) and the log, or the
    /// log alone for a node without a kubeconfig.
    pub recorder: Rc<dyn crate::events::Recorder>,
    pub api_events: Option<Rc<crate::events::EventRecorder>>,
}

/// The parts built elsewhere that plug into the pod workers.
pub struct Extensions {
    /// The node's network readiness, as the runtime sees it.
    pub network_status: Option<crate::sync::kubelet::NetworkStatusFn>,
    pub hooks: Rc<dyn Hooks>,
    pub prober: Rc<dyn Prober>,
    /// Probe results that changed.
    pub probe_updates: Receiver<crate::probe::ProbeUpdate>,
    /// The runtime's re-read of its processes (see `Pleg::run`).
    pub deep_relist: Option<crate::sync::pleg::DeepRelist>,
}

/// What the local HTTP API serves (`/healthz`, `/pods`, `/runningpods`,
/// `/spec`): the server's [`crate::server::Host`].
pub struct LocalApi<R> {
    pub status: Rc<RefCell<StatusManager>>,
    pub runtime: Rc<R>,
    pub health: Rc<Health>,
    pub machine: Rc<MachineInfo>,
    /// The node manager once picolet joined a cluster (its API client
    /// makes the secure port's token and access reviews).
    pub node: Rc<RefCell<Option<Rc<crate::node::NodeManager>>>>,
}

impl<R: Runtime> crate::server::Host for LocalApi<R> {
    fn sync_loop_health(&self) -> Result<(), String> {
        self.health.check()
    }
    fn pods(&self) -> Vec<crate::api::core::Pod> {
        self.status.borrow().pods()
    }
    fn pods_json(&self) -> Result<Vec<u8>> {
        self.status
            .borrow()
            .pod_list_json()
            .context("encode PodList")
    }
    async fn running_pods(&self) -> Result<Vec<crate::api::core::Pod>> {
        let sandboxes = self.runtime.list_pod_sandboxes().await?;
        let containers = self
            .runtime
            .list_containers(&crate::runtime::ContainerFilter::default())
            .await?;
        Ok(crate::server::running_pods(&sandboxes, &containers))
    }
    fn machine_info(&self) -> MachineInfo {
        (*self.machine).clone()
    }
    async fn container_status(&self, id: &str) -> Result<crate::runtime::ContainerStatus> {
        Ok(self.runtime.container_status(id).await?)
    }
    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        opts: crate::runtime::stream::StreamOptions,
    ) -> Result<crate::runtime::stream::StreamProcess> {
        Ok(self.runtime.exec_stream(container_id, cmd, opts).await?)
    }
    async fn attach(
        &self,
        container_id: &str,
        opts: crate::runtime::stream::StreamOptions,
    ) -> Result<crate::runtime::stream::StreamProcess> {
        Ok(self.runtime.attach(container_id, opts).await?)
    }
    async fn port_forward(&self, pod_uid: &str, port: u16) -> Result<std::net::TcpStream> {
        let sandboxes = self.runtime.list_pod_sandboxes().await?;
        let sb = sandboxes
            .iter()
            .filter(|s| s.metadata.uid == pod_uid && s.state == crate::runtime::SandboxState::Ready)
            .max_by_key(|s| s.created_at)
            .with_context(|| format!("pod {pod_uid} has no running sandbox"))?;
        Ok(self.runtime.port_forward(&sb.id, port).await?)
    }
    async fn stats_inputs(&self) -> Result<crate::server::stats::Inputs> {
        let sandboxes = self.runtime.list_pod_sandboxes().await?;
        let containers = self
            .runtime
            .list_containers(&crate::runtime::ContainerFilter::default())
            .await?;
        let mut out = crate::server::stats::Inputs::default();
        for sb in sandboxes {
            let info = self.runtime.pod_sandbox_info(&sb.id);
            out.pods.push(crate::server::stats::PodInput {
                cgroup_parent: info.as_ref().map(|i| i.cgroup_parent.clone()),
                netns: info.and_then(|i| i.netns),
                sandbox: sb,
            });
        }
        for c in containers {
            let running = c.state == crate::runtime::ContainerState::Running;
            let stats = if running {
                self.runtime.container_stats(&c.id).await.ok()
            } else {
                None
            };
            let status = self.runtime.container_status(&c.id).await.ok();
            out.containers.push(crate::server::stats::ContainerInput {
                container: c,
                stats,
                status,
            });
        }
        Ok(out)
    }
    fn api_client(&self) -> Option<Rc<crate::kube::Client>> {
        self.node.borrow().as_ref().map(|n| n.client().clone())
    }
}

fn create_dirs(cfg: &Config) -> Result<()> {
    for d in [
        cfg.root_dir.clone(),
        cfg.state_dir(),
        cfg.pods_dir(),
        cfg.import_dir(),
        cfg.run_dir().to_path_buf(),
        cfg.pod_logs_dir().to_path_buf(),
    ] {
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    }
    Ok(())
}

fn fs_capacity(path: &std::path::Path) -> Result<i64> {
    let s = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok((s.f_blocks * s.f_frsize.max(1)) as i64)
}

impl Agent {
    /// Directories, node facts, the image store and the start-up import.
    pub async fn prepare(cfg: Config) -> Result<Agent> {
        let c = cfg.clone();
        crate::rt::unblock(move || create_dirs(&c)).await?;
        let machine = crate::rt::unblock(crate::stats::machine::collect).await;
        let node_ip = crate::node::facts::node_ip(cfg.node_ip)?;
        let resolv = cfg.kubelet.resolv_conf.clone();
        let host_dns = match crate::rt::unblock(move || read_host_dns(&resolv)).await {
            Ok(d) => d,
            Err(e) => {
                // Upstream fails each sandbox on this; the pods then show it.
                log::warn!("{e:#}; pods get no host DNS settings");
                None
            }
        };
        let root = cfg.root_dir.clone();
        let ephemeral = crate::rt::unblock(move || fs_capacity(&root)).await?;
        let alloc = crate::node::facts::allocatable(
            &cfg.kubelet,
            machine.num_cores,
            machine.memory_capacity as i64,
            ephemeral,
        )?;
        let hugepages = crate::node::facts::hugepages(&machine);
        let capacity = crate::node::status::Resources {
            cpu_milli: machine.num_cores as i64 * 1000,
            memory: machine.memory_capacity as i64,
            ephemeral_storage: ephemeral,
            hugepages: hugepages.clone(),
        };
        let allocatable = crate::node::status::Resources {
            cpu_milli: alloc.cpu_milli,
            memory: alloc.memory,
            ephemeral_storage: alloc.ephemeral_storage,
            hugepages,
        };
        let node = NodeContext::new(
            &cfg.kubelet,
            &cfg.node_name,
            vec![node_ip],
            host_dns,
            machine.memory_capacity as i64,
            alloc,
        );
        log::info!(
            "node {}: IP {node_ip}, {} cores, {} MiB memory ({} MiB allocatable)",
            cfg.node_name,
            machine.num_cores,
            machine.memory_capacity >> 20,
            alloc.memory >> 20
        );
        let images = Rc::new(ImageService::open(&cfg)?);
        // Each import is logged by the image service.
        if let Err(e) = images.import_dir().await {
            log::warn!("image import: {e:#}");
        }
        let api_events = cfg.kubeconfig.is_some().then(|| {
            crate::events::EventRecorder::new(
                &cfg.node_name,
                cfg.kubelet.event_record_qps,
                cfg.kubelet.event_burst,
            )
        });
        let recorder: Rc<dyn crate::events::Recorder> = match &api_events {
            Some(r) => r.clone(),
            None => Rc::new(crate::events::LogRecorder),
        };
        Ok(Agent {
            cfg,
            images,
            node,
            machine: Rc::new(machine),
            capacity,
            allocatable,
            recorder,
            api_events,
        })
    }

    /// Runs the node agent on `runtime` until SIGTERM/SIGINT. Returns how
    /// the loop ended.
    pub async fn run<R: Runtime + 'static>(
        self,
        runtime: Rc<R>,
        runtime_events: Option<Receiver<RuntimeEvent>>,
        ext: Extensions,
    ) -> Result<Exit> {
        let kc = &self.cfg.kubelet;
        let backoff = BackoffState::load(&self.cfg.state_dir(), BackoffParams::from_config(kc));
        let _backoff_writer = crate::rt::spawn(backoff.clone().writer());
        let status = Rc::new(RefCell::new(StatusManager::new()));
        // One slot: a wake-up pending covers any number of worker steps.
        let (wake_tx, wake_rx) = smol::channel::bounded(1);
        // Hook (apivolumes): configMaps, secrets, tokens, services for API
        // pods; the cluster side attaches the client.
        let objects = crate::objects::ObjectManager::new();
        // Offline autonomy: only a cluster member has API pods to keep.
        let offline = if self.cfg.kubeconfig.is_some() && kc.picolet.offline_autonomy {
            // Start-up, before any pod syncs: reading a few small files
            // here blocks nothing that runs yet.
            match crate::offline::OfflineStore::open(&self.cfg.state_dir()) {
                Ok(o) => {
                    objects.set_offline(o.clone());
                    Some(o)
                }
                Err(e) => {
                    log::error!("offline state: {e:#}; offline autonomy is off");
                    None
                }
            }
        } else {
            let dir = self.cfg.state_dir();
            crate::rt::unblock(move || crate::offline::OfflineStore::remove_all(&dir)).await;
            None
        };
        let _offline_writer = offline.clone().map(|o| crate::rt::spawn(o.writer()));
        let k = Kubelet::new(
            runtime.clone(),
            self.images.clone(),
            ext.hooks,
            ext.prober,
            Rc::new(
                crate::volume::VolumeManager::new(self.cfg.pods_dir())
                    .with_objects(objects.clone()),
            ),
            self.node.clone(),
            SyncConfig {
                sync_frequency: kc.sync_frequency,
                retry_period: kc.picolet.back_off_initial,
                network_retry_period: Duration::from_secs(1),
                pods_dir: self.cfg.pods_dir(),
                pod_logs_dir: kc.pod_logs_dir.clone(),
            },
            status.clone(),
            backoff.clone(),
            wake_tx,
        );
        let network = ext.network_status.clone();
        if let Some(f) = ext.network_status {
            k.set_network_status(f);
        }
        k.set_recorder(self.recorder.clone());

        // The first relist before any pod syncs, so orphans are known.
        let pleg = Pleg::new();
        if let Err(e) = pleg.relist(&*runtime).await {
            log::warn!("first relist: {e:#}");
        }
        let (pleg_tx, pleg_rx) = smol::channel::bounded(64);
        let _pleg = crate::rt::spawn(pleg.clone().run(
            runtime.clone(),
            runtime_events,
            pleg_tx,
            RELIST_PERIOD,
            ext.deep_relist,
        ));
        let _gc = crate::rt::spawn(image_gc(self.images.clone(), pleg.clone()));

        let health = Health::new(pleg.clone(), kc.sync_frequency);
        let node_slot: Rc<RefCell<Option<Rc<crate::node::NodeManager>>>> = Rc::default();
        let api = Rc::new(LocalApi {
            status: status.clone(),
            runtime: runtime.clone(),
            health: health.clone(),
            machine: self.machine.clone(),
            node: node_slot.clone(),
        });
        let _servers = crate::server::start(kc, api.clone())?;
        let _secure = if kc.enable_server {
            let o = crate::server::SecureOptions::from_config(&self.cfg, &self.node.node_ips)?;
            Some(crate::server::listen_secure(o, api)?)
        } else {
            None
        };

        let (stop_tx, stop_rx) = smol::channel::bounded(1);
        let mut signals =
            async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
                .context("install signal handlers")?;
        let _signals = crate::rt::spawn(async move {
            while let Some(s) = signals.next().await {
                match s {
                    Ok(sig) => log::info!("received {sig:?}"),
                    Err(e) => {
                        log::warn!("signal handler: {e}");
                        continue;
                    }
                }
                if stop_tx.send(()).await.is_err() {
                    break;
                }
            }
        });

        // Node admission: against the Node as the API server has it once
        // picolet is a member, else the Node it would register.
        k.set_admission(admission(&self, node_slot.clone()));

        let joining = self.cfg.kubeconfig.clone();
        // Mirror pods follow the static pods and the API's copies of them.
        let (mirror_tx, mirror_rx) = smol::channel::bounded(1);
        let sources = crate::sources::start(
            kc,
            &self.cfg.node_name,
            joining.is_some(),
            joining.is_some().then(|| mirror_tx.clone()),
        );
        let _cluster = joining.map(|path| {
            let network = network.unwrap_or_else(|| {
                Rc::new(|| crate::network::NetworkStatus {
                    ready: true,
                    reason: String::new(),
                    message: String::new(),
                })
            });
            let host = cluster::ClusterHost::new(
                self.cfg.clone(),
                self.machine.clone(),
                self.node.node_ips[0],
                self.capacity.clone(),
                self.allocatable.clone(),
                self.images.clone(),
                network,
                health.clone(),
            );
            let parts = cluster::Parts {
                api_snapshots: sources.api_snapshots.clone(),
                config: sources.config.clone(),
                status: status.clone(),
                mirror_tx,
                mirror_rx,
                node_slot,
                events: self.api_events.clone(),
                recorder: self.recorder.clone(),
                objects,
                offline: offline.clone(),
            };
            crate::rt::spawn(cluster::run(path, Rc::new(host), parts))
        });

        if sources.names.is_empty() {
            log::warn!("no pod source configured (staticPodPath, staticPodURL): no pods will run");
        }
        log::info!("sync loop started");
        let exit = syncloop::run(
            k,
            sources,
            pleg,
            LoopInputs {
                pleg: pleg_rx,
                probes: ext.probe_updates,
                wake: wake_rx,
                shutdown: stop_rx,
            },
            health,
            kc.picolet.stop_pods_on_shutdown,
        )
        .await;
        // The last back-off changes must not be lost with the process.
        if let Err(e) = backoff.save().await {
            log::warn!("back-off state: {e:#}");
        }
        if let Some(o) = &offline {
            o.flush().await;
        }
        Ok(exit)
    }
}

/// `picolet run`: prepares the node, starts the shim runtime (which
/// recovers what runs), the probe manager and the lifecycle hooks, and runs
/// the agent until SIGTERM/SIGINT.
pub async fn run_node(cfg: Config) -> Result<Exit> {
    let agent = Agent::prepare(cfg).await?;
    // The sandbox runs `picolet pause`: this very binary.
    let exe = std::env::current_exe().context("find picolet's own executable")?;
    let (runtime, events) = crate::runtime::ShimRuntime::new(
        &agent.cfg,
        crate::runtime::RuntimeOptions { pause_binary: exe },
        agent.images.clone(),
    )
    .await
    .context("start the runtime")?;
    let runtime = Rc::new(runtime);
    let prober = crate::probe::ProbeManager::new(runtime.clone());
    prober.set_recorder(agent.recorder.clone());
    let probe_updates = prober.updates();
    let rt = runtime.clone();
    let net = runtime.clone();
    let ext = Extensions {
        network_status: Some(Rc::new(move || net.network_status())),
        hooks: Rc::new(crate::sync::hooks::LifecycleHooks::new(runtime.clone())),
        prober: Rc::new(prober),
        probe_updates,
        deep_relist: Some(Box::new(move || {
            let rt = rt.clone();
            Box::pin(async move {
                rt.relist().await;
            })
        })),
    };
    agent.run(runtime, Some(events), ext).await
}

/// Upstream's admit handlers for a new pod (see [`crate::admission`]),
/// with this node's allocatable, labels, taints and pressure.
fn admission(
    agent: &Agent,
    node_slot: Rc<RefCell<Option<Rc<crate::node::NodeManager>>>>,
) -> crate::sync::kubelet::AdmitFn {
    use crate::admission::{admit, rejected_status, NodeView, Pressure, Resources};
    let kc = agent.cfg.kubelet.clone();
    let root = agent.cfg.root_dir.clone();
    let name = agent.cfg.node_name.clone();
    let a = &agent.allocatable;
    let allocatable = Resources {
        cpu_milli: a.cpu_milli,
        memory: a.memory,
        ephemeral_storage: a.ephemeral_storage,
        pods: i64::from(kc.max_pods),
        scalar: a.hugepages.clone(),
    };
    let standalone = crate::node::register::initial_node(&crate::node::register::Registration {
        name: name.clone(),
        hostname: name.clone(),
        labels: agent.cfg.node_labels.clone(),
        taints: kc.register_with_taints.clone(),
        provider_id: kc.provider_id.clone(),
    });
    Box::new(move |pod, active| {
        let server = node_slot.borrow().as_ref().and_then(|nm| nm.node());
        let signals = crate::node::facts::read_signals(&root);
        let (memory, disk, pid) = crate::node::facts::pressures(&kc, &signals);
        let view = NodeView {
            name: &name,
            node: Some(server.as_ref().unwrap_or(&standalone)),
            allocatable: allocatable.clone(),
            pressure: Pressure { memory, disk, pid },
        };
        let active: Vec<&crate::api::core::Pod> = active.iter().map(|p| &**p).collect();
        admit(pod, &view, &active)
            .map_err(|r| Box::new(rejected_status(pod, &r, jiff::Timestamp::now())))
    })
}

/// Image GC every [`IMAGE_GC_PERIOD`], keeping the images of every
/// container the runtime has.
async fn image_gc(images: Rc<ImageService>, pleg: Rc<Pleg>) {
    loop {
        async_io::Timer::after(IMAGE_GC_PERIOD).await;
        let in_use: HashSet<String> = pleg.snapshot.borrow().images_in_use().into_iter().collect();
        match images.garbage_collect(&in_use).await {
            Ok(r) if !r.removed.is_empty() => log::info!(
                "image GC: removed {} image(s), freed {} bytes",
                r.removed.len(),
                r.freed_bytes
            ),
            Ok(_) => {}
            Err(e) => log::warn!("image GC: {e:#}"),
        }
    }
}
