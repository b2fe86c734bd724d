//! Joining the cluster when `--kubeconfig` is given: the API client, and
//! the node manager fed with this machine's facts. Without a usable
//! kubeconfig picolet keeps running its local pods and tries again.

use crate::config::Config;
use crate::image::ImageService;
use crate::kube::{Client, Kubeconfig};
use crate::network::NetworkStatus;
use crate::node::status::{NodeFacts, Resources};
use crate::node::{NodeConfig, NodeHost, NodeManager};
use crate::stats::machine::MachineInfo;
use crate::sync::syncloop::Health;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// How often a missing or broken kubeconfig is read again.
const KUBECONFIG_RETRY: Duration = Duration::from_secs(30);

/// This machine as the node status shows it.
pub struct ClusterHost {
    pub cfg: Config,
    pub machine: Rc<MachineInfo>,
    pub node_ip: std::net::IpAddr,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub images: Rc<ImageService>,
    pub network: Rc<dyn Fn() -> NetworkStatus>,
    pub health: Rc<Health>,
    /// The images part of the status, kept while the store is unchanged.
    image_cache: RefCell<Option<(SystemTime, Vec<crate::api::core::ContainerImage>)>>,
    os_image: String,
    kernel: String,
}

impl ClusterHost {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Config,
        machine: Rc<MachineInfo>,
        node_ip: std::net::IpAddr,
        capacity: Resources,
        allocatable: Resources,
        images: Rc<ImageService>,
        network: Rc<dyn Fn() -> NetworkStatus>,
        health: Rc<Health>,
    ) -> Self {
        ClusterHost {
            cfg,
            machine,
            node_ip,
            capacity,
            allocatable,
            images,
            network,
            health,
            image_cache: RefCell::new(None),
            os_image: crate::node::facts::read_os_image(),
            kernel: crate::node::facts::kernel_version(),
        }
    }

    fn images(&self) -> Vec<crate::api::core::ContainerImage> {
        let version = self.images.records_version();
        if let (Some(v), Some((cv, imgs))) = (version, &*self.image_cache.borrow()) {
            if v == *cv {
                return imgs.clone();
            }
        }
        let list = match self.images.list() {
            Ok(l) => l,
            Err(e) => {
                log::warn!("node status: list images: {e:#}");
                return Vec::new();
            }
        };
        let imgs: Vec<_> = list
            .into_iter()
            .map(|i| crate::api::core::ContainerImage {
                names: Some(i.repo_digests.into_iter().chain(i.repo_tags).collect()),
                size_bytes: Some(i.size as i64),
            })
            .collect();
        if let Some(v) = version {
            *self.image_cache.borrow_mut() = Some((v, imgs.clone()));
        }
        imgs
    }
}

impl NodeHost for ClusterHost {
    async fn facts(&self) -> NodeFacts {
        let kc = &self.cfg.kubelet;
        let root = self.cfg.root_dir.clone();
        let signals = crate::rt::unblock(move || crate::node::facts::read_signals(&root)).await;
        let (memory_pressure, disk_pressure, pid_pressure) =
            crate::node::facts::pressures(kc, &signals);
        let mut not_ready = Vec::new();
        if let Err(e) = self.health.check() {
            not_ready.push(e);
        }
        let net = (self.network)();
        if !net.ready {
            not_ready.push(format!(
                "container runtime network not ready: NetworkReady=false reason:{} message:{}",
                net.reason, net.message
            ));
        }
        let m = &self.machine;
        NodeFacts {
            hostname: self.cfg.node_name.clone(),
            internal_ips: vec![self.node_ip],
            capacity: self.capacity.clone(),
            allocatable: self.allocatable.clone(),
            max_pods: kc.max_pods,
            node_info: crate::api::core::NodeSystemInfo {
                architecture: crate::kube::go_arch().into(),
                boot_id: m.boot_id.clone(),
                container_runtime_version: crate::node::container_runtime_version(),
                kernel_version: self.kernel.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: crate::node::kubelet_version(),
                machine_id: m.machine_id.clone(),
                operating_system: "linux".into(),
                os_image: self.os_image.clone(),
                swap: None,
                system_uuid: m.system_uuid.clone(),
            },
            kubelet_port: i32::from(kc.port),
            images: self.images(),
            max_images: usize::try_from(kc.node_status_max_images).unwrap_or(usize::MAX),
            not_ready,
            memory_pressure,
            disk_pressure,
            pid_pressure,
        }
    }
}

/// Reads the kubeconfig until it loads, logging each new problem once.
async fn load_kubeconfig(path: PathBuf) -> Kubeconfig {
    let mut last = String::new();
    loop {
        let p = path.clone();
        match crate::rt::unblock(move || Kubeconfig::load(&p)).await {
            Ok(kc) => {
                if !last.is_empty() {
                    log::info!("kubeconfig {} loaded", path.display());
                }
                return kc;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if msg != last {
                    log::error!(
                        "{msg}; not joining the cluster until this is fixed (checked every {}s); \
                         local pods keep running",
                        KUBECONFIG_RETRY.as_secs()
                    );
                    last = msg;
                }
                async_io::Timer::after(KUBECONFIG_RETRY).await;
            }
        }
    }
}

/// The API client for `kc` with the config's rate limit.
pub fn client(kc: Kubeconfig, cfg: &Config) -> anyhow::Result<Rc<Client>> {
    let t = crate::kube::transport::Transport::new(kc)?;
    Ok(Rc::new(Client::new(
        t,
        cfg.kubelet.kube_api_qps,
        cfg.kubelet.kube_api_burst,
    )))
}

/// What the cluster side shares with the rest of the agent.
pub struct Parts {
    /// The pod config's input for the API-server source.
    pub api_snapshots: Option<smol::channel::Sender<crate::sources::SourceUpdate>>,
    /// The merged pods of every source (the static pods to mirror).
    pub config: Rc<RefCell<crate::sources::PodConfig>>,
    pub status: Rc<RefCell<crate::status::StatusManager>>,
    /// Wakes the mirror pod manager (also given to the pod config).
    pub mirror_tx: smol::channel::Sender<()>,
    pub mirror_rx: smol::channel::Receiver<()>,
    /// Filled with the node manager once it exists (admission reads the
    /// Node from it).
    pub node_slot: Rc<RefCell<Option<Rc<NodeManager>>>>,
    /// The event recorder to attach to the API client.
    pub events: Option<Rc<crate::events::EventRecorder>>,
    /// Node events (Starting, NodeReady, ...).
    pub recorder: Rc<dyn crate::events::Recorder>,
    /// The API objects pods use (configMaps, secrets, tokens, services):
    /// gets the client.
    pub objects: Rc<crate::objects::ObjectManager>,
    /// The local copy of the node's API pods (offline autonomy).
    pub offline: Option<Rc<crate::offline::OfflineStore>>,
}

/// Joins the cluster and keeps the node's membership until dropped: the
/// node manager, the API pod source, the status writer and the mirror
/// pods.
pub async fn run(kubeconfig: PathBuf, host: Rc<ClusterHost>, parts: Parts) {
    // TLS bootstrap with --bootstrap-kubeconfig (crate::kube::bootstrap).
    let kc = match crate::kube::bootstrap::Bootstrap::from_config(&host.cfg, &kubeconfig) {
        Some(b) => b.obtain().await,
        None => load_kubeconfig(kubeconfig).await,
    };
    let cfg = &host.cfg;
    log::info!(
        "joining the cluster at {} as node {} (kubeconfig {}, context {})",
        kc.server,
        cfg.node_name,
        kc.path.display(),
        kc.context
    );
    let client = match client(kc, cfg) {
        Ok(c) => c,
        Err(e) => {
            log::error!("API client: {e:#}; not joining the cluster");
            return;
        }
    };
    // Certificate rotation and the serving certificate (crate::kube::rotation).
    let _certificates = crate::kube::rotation::start(cfg, &client, host.node_ip);
    if let Some(ev) = &parts.events {
        // The recorder keeps its own rate limit (eventRecordQPS), apart
        // from the client's; both share the one connection.
        ev.attach(Rc::new(Client::new(client.transport().clone(), 0.0, 1)));
    }
    parts.objects.attach(client.clone());
    let kcfg = &cfg.kubelet;
    let nm = NodeManager::new(
        client.clone(),
        parts.recorder.clone(),
        NodeConfig {
            registration: crate::node::register::Registration {
                name: cfg.node_name.clone(),
                hostname: cfg.node_name.clone(),
                labels: cfg.node_labels.clone(),
                taints: kcfg.register_with_taints.clone(),
                provider_id: kcfg.provider_id.clone(),
            },
            register_node: kcfg.register_node,
            update_frequency: kcfg.node_status_update_frequency,
            report_frequency: kcfg.node_status_report_frequency,
            lease_duration_seconds: kcfg.node_lease_duration_seconds,
        },
    );
    *parts.node_slot.borrow_mut() = Some(nm.clone());
    let api = crate::sources::api::ApiPods::new();
    let (writer_tx, writer_rx) = smol::channel::bounded(1);
    let _source = parts.api_snapshots.map(|snapshots| {
        crate::rt::spawn(crate::sources::api::run(
            client.clone(),
            cfg.node_name.clone(),
            api.clone(),
            snapshots,
            vec![writer_tx, parts.mirror_tx.clone()],
            parts.offline.clone(),
        ))
    });
    let _writer = crate::rt::spawn(
        crate::status::writer::StatusWriter::new(client.clone(), parts.status, api.clone())
            .run(writer_rx),
    );
    let node = nm.clone();
    let _mirrors = crate::rt::spawn(crate::sources::mirror::run(
        client,
        cfg.node_name.clone(),
        Rc::new(move || node.node().and_then(|n| n.metadata.uid)),
        parts.config,
        api,
        parts.mirror_rx,
    ));
    nm.run(host).await;
}
