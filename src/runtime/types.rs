//! CRI-shaped runtime types (a trimmed `runtime.v1` of the CRI API) and the
//! [`Runtime`] interface. The kubelet side builds [`PodSandboxConfig`] and
//! [`ContainerConfig`] from the pod spec; the runtime turns them into OCI
//! bundles, shim calls, CNI calls and cgroups.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Labels and annotations, as in CRI.
pub type StringMap = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandboxMetadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    /// Bumped each time the sandbox of this pod is re-created.
    pub attempt: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceMode {
    /// Shared by the containers of the pod (held by the sandbox).
    #[default]
    Pod,
    /// Private to the container (PID namespace without shareProcessNamespace).
    Container,
    /// The host's namespace (hostNetwork, hostPID, hostIPC).
    Node,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceOptions {
    pub network: NamespaceMode,
    /// `Container` unless shareProcessNamespace (`Pod`) or hostPID (`Node`).
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    pub host_port: u16,
    /// Empty: all host addresses.
    pub host_ip: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    #[default]
    BestEffort,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandboxConfig {
    pub metadata: PodSandboxMetadata,
    /// Empty for hostNetwork pods (the node's host name applies).
    pub hostname: String,
    /// `<subdomain>.<ns>.svc.<clusterDomain>` when the pod has a subdomain,
    /// else empty; the generated /etc/hosts names the pod `<hostname>.<domain>`.
    pub host_domain: String,
    /// `/var/log/pods/<ns>_<name>_<uid>`; container log paths are relative to it.
    pub log_directory: PathBuf,
    /// `None`: the runtime gives the host's resolv.conf (dnsPolicy Default).
    pub dns_config: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: StringMap,
    pub annotations: StringMap,
    /// Pod cgroup path relative to the cgroup root of every hierarchy,
    /// e.g. `/kubepods/burstable/pod<uid>`.
    pub cgroup_parent: String,
    pub qos_class: QosClass,
    pub namespace_options: NamespaceOptions,
    /// Pod-level `sysctls`.
    pub sysctls: StringMap,
    /// Extra /etc/hosts entries (`hostAliases`): (ip, hostnames).
    pub host_aliases: Vec<(String, Vec<String>)>,
    /// Pod-level securityContext values the sandbox process uses.
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    /// Pod-level resource limits (applied on the pod cgroup).
    pub resources: Option<LinuxContainerResources>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    #[default]
    NotReady,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandboxNetworkStatus {
    /// The pod IP (first address of the CNI result); empty for hostNetwork.
    pub ip: String,
    pub additional_ips: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandboxStatus {
    pub id: String,
    pub metadata: PodSandboxMetadata,
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub network: PodSandboxNetworkStatus,
    pub namespace_options: NamespaceOptions,
    pub labels: StringMap,
    pub annotations: StringMap,
}

/// A sandbox's cgroup parent and network namespace path (`None`: host
/// network).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxInfo {
    pub cgroup_parent: String,
    pub netns: Option<std::path::PathBuf>,
}

/// A sandbox as listed (no network detail).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandbox {
    pub id: String,
    pub metadata: PodSandboxMetadata,
    pub state: SandboxState,
    pub created_at: i64,
    pub labels: StringMap,
    pub annotations: StringMap,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    pub name: String,
    /// Restart count of this container in its pod.
    pub attempt: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountPropagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
    pub readonly: bool,
    pub propagation: MountPropagation,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    /// cgroup permissions, e.g. "rwm".
    pub permissions: String,
}

/// Linux resources of a container, in CRI units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxContainerResources {
    /// CFS period in µs (0: unset).
    pub cpu_period: i64,
    /// CFS quota in µs (0: unset, i.e. no limit).
    pub cpu_quota: i64,
    /// cpu.shares (0: unset).
    pub cpu_shares: i64,
    /// Bytes (0: unlimited).
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// pids.max (0: unset).
    pub pids_limit: i64,
    /// cgroup v2 unified key/values.
    pub unified: StringMap,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Names without the CAP_ prefix as in the pod spec ("NET_ADMIN"), or "ALL".
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxContainerSecurityContext {
    pub capabilities: Capabilities,
    pub privileged: bool,
    pub namespace_options: NamespaceOptions,
    pub run_as_user: Option<i64>,
    /// Image USER given as a name; resolved in the rootfs's /etc/passwd.
    pub run_as_username: String,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: bool,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    /// allowPrivilegeEscalation == false.
    pub no_new_privs: bool,
    /// Empty: the runtime's default list (procMount Default).
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// procMount: Unmasked clears both lists.
    pub unmasked_proc: bool,
    pub sysctls: StringMap,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub metadata: ContainerMetadata,
    /// The image as the pod names it (for status), and its resolved id.
    pub image: String,
    pub image_id: String,
    /// Kubernetes `command` (overrides the image Entrypoint) and `args`
    /// (override Cmd); the runtime merges them with the image config by the
    /// Kubernetes rules.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    /// Final environment (already `$(VAR)`-expanded), before the image's.
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub labels: StringMap,
    pub annotations: StringMap,
    /// Relative to the sandbox log directory: `<container>/<attempt>.log`.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: LinuxContainerResources,
    pub security_context: LinuxContainerSecurityContext,
    /// Where the termination message is written inside the container.
    pub termination_message_path: String,
    /// Container lifecycle `stopSignal` override (else the image's).
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    #[default]
    Unknown,
}

/// A container as listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub pod_sandbox_id: String,
    pub metadata: ContainerMetadata,
    pub image: String,
    pub image_id: String,
    pub state: ContainerState,
    pub created_at: i64,
    pub labels: StringMap,
    pub annotations: StringMap,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub metadata: ContainerMetadata,
    pub state: ContainerState,
    /// Unix nanoseconds; 0 when not reached.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub image: String,
    pub image_id: String,
    /// Brief CamelCase reason ("OOMKilled", "Error", "Completed",
    /// "StartError" …), empty when running.
    pub reason: String,
    /// Human-readable message; the termination message when there is one.
    pub message: String,
    pub labels: StringMap,
    pub annotations: StringMap,
    pub mounts: Vec<Mount>,
    /// Absolute log path.
    pub log_path: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSyncResponse {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub id: String,
    /// Unix nanoseconds of the sample.
    pub timestamp: i64,
    /// Cumulative CPU time, ns.
    pub cpu_usage_core_nanoseconds: u64,
    pub memory_usage_bytes: u64,
    pub memory_working_set_bytes: u64,
    pub memory_rss_bytes: u64,
    pub memory_limit_bytes: u64,
    pub oom_kills: u64,
    pub pids: u64,
    /// Bytes used by the writable layer.
    pub writable_layer_bytes: u64,
}

/// What the runtime tells the sync loop without being asked (shim events,
/// and changes a relist found). Events can be lost across a picolet
/// restart; the loop relists on start, so events only speed things up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    ContainerStarted {
        id: String,
    },
    ContainerExited {
        id: String,
        exit_code: i32,
        finished_at: i64,
    },
    ContainerOom {
        id: String,
    },
    ContainerDeleted {
        id: String,
    },
    SandboxChanged {
        id: String,
    },
}

/// Filter for [`Runtime::list_containers`].
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    pub pod_sandbox_id: Option<String>,
    pub state: Option<ContainerState>,
}

/// Why a runtime call failed, in the terms the kubelet reports. What the
/// upstream kubelet shows for each (kuberuntime `startContainer` and
/// `SyncPod`, with containerd's CRI), for the sync loop to copy:
/// - `run_pod_sandbox`: `NetworkNotReady` for every CNI failure. Upstream
///   shows a node without a usable network (no config, plugin missing:
///   `ShimRuntime::network_status` not ready) as the pod sync error
///   "network is not ready" (event `NetworkNotReady`), and a plugin that
///   failed, like any other sandbox error, as `CreatePodSandboxError`
///   (event `FailedCreatePodSandBox` with the message). Retried with back-off.
/// - `create_container`: `CreateContainerConfig` → waiting reason
///   `CreateContainerConfigError`; `CreateContainer` → waiting reason
///   `CreateContainerError` (event `Failed`). No container is left.
/// - `start_container`: `RunContainer` → waiting reason
///   `RunContainerError` (event `Failed`); the container stays as exited
///   with reason `StartError`, exit code 128 and the message, so it counts
///   as a restart (last state terminated) like containerd's.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The pod network could not be set up (CNI failure, no config).
    #[error("network not ready: {0}")]
    NetworkNotReady(String),
    /// The container's configuration cannot be honoured (runAsNonRoot
    /// against a root image, ...): upstream `CreateContainerConfigError`.
    #[error("{0}")]
    CreateContainerConfig(String),
    /// Creating the container failed (bad spec, mount, cgroup write refused).
    #[error("{0}")]
    CreateContainer(String),
    /// Starting the process failed (binary missing, exec format error):
    /// runc's message.
    #[error("{0}")]
    RunContainer(String),
    /// An `exec_sync` command ran past its timeout and was killed (CRI
    /// `DeadlineExceeded`; probes report it as a timeout).
    #[error("{0}")]
    Timeout(String),
    /// With its causes: "pod cgroup X: write ... to memory.max: No such file".
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// The runtime interface the kubelet side uses (CRI RuntimeService shape).
/// Implementations are driven from the single-threaded executor, so the
/// futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Runtime {
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError>;
    /// Stops every container of the sandbox and tears its network down.
    /// Idempotent.
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    /// Removes a stopped sandbox and everything it owns. Idempotent.
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, RuntimeError>;
    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandbox>, RuntimeError>;

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String, RuntimeError>;
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// Signals the stop signal, waits up to `timeout`, then SIGKILL.
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;
    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<Container>, RuntimeError>;
    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError>;
    /// Runs `cmd` in the container, capturing output; a timeout kills it.
    async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, RuntimeError>;
    async fn container_stats(&self, id: &str) -> Result<ContainerStats, RuntimeError>;

    /// Starts `cmd` in a running container with streamed stdio and
    /// optionally a terminal (`kubectl exec`).
    async fn exec_stream(
        &self,
        id: &str,
        cmd: &[String],
        opts: super::stream::StreamOptions,
    ) -> Result<super::stream::StreamProcess, RuntimeError> {
        let _ = (cmd, opts);
        Err(RuntimeError::Other(anyhow::anyhow!(
            "container {id}: this runtime cannot stream an exec"
        )))
    }

    /// Attaches to a running container's stdio (`kubectl attach`).
    async fn attach(
        &self,
        id: &str,
        opts: super::stream::StreamOptions,
    ) -> Result<super::stream::StreamProcess, RuntimeError> {
        let _ = opts;
        Err(RuntimeError::Other(anyhow::anyhow!(
            "container {id}: this runtime cannot attach"
        )))
    }

    /// Where a sandbox's usage is read (stats): its cgroup and network
    /// namespace. `None` when unknown.
    fn pod_sandbox_info(&self, id: &str) -> Option<SandboxInfo> {
        let _ = id;
        None
    }

    /// A TCP connection to `localhost:port` inside the sandbox's network
    /// namespace (`kubectl port-forward`).
    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<std::net::TcpStream, RuntimeError> {
        let _ = port;
        Err(RuntimeError::Other(anyhow::anyhow!(
            "pod sandbox {sandbox_id}: this runtime cannot forward ports"
        )))
    }
}

/// Labels and annotations picolet puts on sandboxes and containers (the
/// upstream kubelet's keys), so a restarted picolet can map what runs back
/// to pods, and so tools that read them work unchanged.
pub mod keys {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// Annotation: hash of the container spec; a change means recreate.
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
    pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
    pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
    /// Annotation: "init", "sidecar" (init with restartPolicy Always) or "regular".
    pub const CONTAINER_TYPE: &str = "io.picolet.container.type";
}
