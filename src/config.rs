//! Configuration: the upstream `KubeletConfiguration` file
//! (`kubelet.config.k8s.io/v1beta1`) with upstream defaults, plus the flags
//! that keep upstream names. picolet's own settings live under a top-level
//! `picolet:` key of the same file (documented in README).
//!
//! Unknown fields warn; invalid values fail with the field name and value.

use crate::util::duration;
use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
pub const KIND: &str = "KubeletConfiguration";

/// The fields of KubeletConfiguration picolet acts on, defaulted as upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletConfig {
    pub static_pod_path: Option<PathBuf>,
    pub static_pod_url: Option<String>,
    pub static_pod_url_header: BTreeMap<String, Vec<String>>,
    pub file_check_frequency: Duration,
    pub http_check_frequency: Duration,
    pub sync_frequency: Duration,
    pub enable_server: bool,
    pub address: IpAddr,
    pub port: u16,
    /// 0 disables the read-only port.
    pub read_only_port: u16,
    /// 0 disables the healthz endpoint.
    pub healthz_port: u16,
    pub healthz_bind_address: IpAddr,
    pub cluster_domain: String,
    pub cluster_dns: Vec<IpAddr>,
    /// Empty: containers get no host resolv.conf (upstream semantics).
    pub resolv_conf: String,
    pub cgroup_root: String,
    pub cgroups_per_qos: bool,
    pub cgroup_driver: String,
    pub max_pods: u32,
    /// -1: unlimited.
    pub pod_pids_limit: i64,
    pub image_gc_high_threshold_percent: u8,
    pub image_gc_low_threshold_percent: u8,
    pub image_minimum_gc_age: Duration,
    /// Zero: disabled.
    pub image_maximum_gc_age: Duration,
    pub serialize_image_pulls: bool,
    pub max_parallel_image_pulls: Option<u32>,
    pub registry_pull_qps: f64,
    pub registry_burst: u32,
    pub eviction_hard: BTreeMap<String, String>,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
    pub node_lease_duration_seconds: u32,
    pub runtime_request_timeout: Duration,
    pub shutdown_grace_period: Duration,
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    pub pod_logs_dir: PathBuf,
    /// `crashLoopBackOff.maxContainerRestartPeriod` (upstream 5 min).
    pub max_container_restart_period: Duration,
    pub kube_api_qps: f64,
    pub kube_api_burst: u32,
    /// `eventRecordQPS` / `eventBurst`: the event recorder's own rate limit.
    pub event_record_qps: f64,
    pub event_burst: u32,
    pub register_node: bool,
    /// Taints the Node is created with.
    pub register_with_taints: Vec<crate::api::core::Taint>,
    /// Images in the node status; -1: all.
    pub node_status_max_images: i32,
    pub provider_id: String,
    pub system_reserved: BTreeMap<String, String>,
    pub kube_reserved: BTreeMap<String, String>,
    /// `rotateCertificates`: renew the client certificate before it
    /// expires (picolet's default: true; upstream's v1beta1 default is
    /// false, kubeadm sets it true).
    pub rotate_certificates: bool,
    /// `serverTLSBootstrap`: a cluster-signed serving certificate for the
    /// kubelet port instead of the self-signed one.
    pub server_tls_bootstrap: bool,
    /// Serving certificate and key of the secure port (both or neither;
    /// neither: a self-signed pair under `<root>/pki`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// `VersionTLS12` (default) or `VersionTLS13`.
    pub tls_min_version: Option<String>,
    /// Go cipher suite names; empty: the defaults.
    pub tls_cipher_suites: Vec<String>,
    pub authentication: Authentication,
    pub authorization: Authorization,
    /// Logs, exec, attach and port-forward on the secure port.
    pub enable_debugging_handlers: bool,
    /// An exec/attach/port-forward session with no traffic ends after this.
    pub streaming_connection_idle_timeout: Duration,
    pub picolet: PicoletConfig,
}

/// `authentication` (upstream KubeletAuthentication, v1beta1 defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Authentication {
    /// `x509.clientCAFile`: client certificates signed by it authenticate.
    pub client_ca_file: Option<PathBuf>,
    /// `webhook.enabled`: bearer tokens through TokenReview.
    pub webhook_enabled: bool,
    /// `webhook.cacheTTL`.
    pub webhook_cache_ttl: Duration,
    /// `anonymous.enabled`.
    pub anonymous: bool,
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            client_ca_file: None,
            webhook_enabled: true,
            webhook_cache_ttl: Duration::from_secs(120),
            anonymous: false,
        }
    }
}

/// `authorization` (upstream KubeletAuthorization, v1beta1 defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    /// `Webhook` or `AlwaysAllow`.
    pub mode: String,
    pub cache_authorized_ttl: Duration,
    pub cache_unauthorized_ttl: Duration,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            mode: "Webhook".into(),
            cache_authorized_ttl: Duration::from_secs(300),
            cache_unauthorized_ttl: Duration::from_secs(30),
        }
    }
}

/// picolet's own settings (the `picolet:` section).
#[derive(Debug, Clone, PartialEq)]
pub struct PicoletConfig {
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    /// k3s-style registries.yaml (mirrors, TLS, auth); absent file = none.
    pub registries_config: PathBuf,
    /// docker config.json-style credentials; absent file = none.
    pub docker_config: PathBuf,
    /// containerd's runc shim; a bare name is looked up in PATH.
    pub shim_binary: PathBuf,
    /// containerd namespace given to the shims; keeps picolet apart from any containerd.
    pub runtime_namespace: String,
    /// Sockets, pod netns bind mounts.
    pub run_dir: PathBuf,
    /// Restart back-off start (upstream 10 s, fixed); lowered only by tests.
    pub back_off_initial: Duration,
    /// A container that ran this long resets its back-off (upstream 10 min).
    pub back_off_reset: Duration,
    /// Stop all pods when picolet itself gets SIGTERM (upstream leaves them).
    pub stop_pods_on_shutdown: bool,
    /// How long a client certificate request waits for approval and
    /// signing (TLS bootstrap, rotation) before it is given up (upstream's
    /// bootstrap waits an hour).
    pub certificate_request_timeout: Duration,
    /// Keep the node's API pods and what they use on disk and start them
    /// from there after a restart while the API server is unreachable
    /// (`crate::offline`); off: upstream's behaviour, nothing from the
    /// API runs until it answers.
    pub offline_autonomy: bool,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            static_pod_path: None,
            static_pod_url: None,
            static_pod_url_header: BTreeMap::new(),
            file_check_frequency: Duration::from_secs(20),
            http_check_frequency: Duration::from_secs(20),
            sync_frequency: Duration::from_secs(60),
            enable_server: true,
            address: IpAddr::from([0, 0, 0, 0]),
            port: 10250,
            read_only_port: 0,
            healthz_port: 10248,
            healthz_bind_address: IpAddr::from([127, 0, 0, 1]),
            cluster_domain: String::new(),
            cluster_dns: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
            cgroup_root: "/".into(),
            cgroups_per_qos: true,
            cgroup_driver: "cgroupfs".into(),
            max_pods: 110,
            pod_pids_limit: -1,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: Duration::from_secs(120),
            image_maximum_gc_age: Duration::ZERO,
            serialize_image_pulls: true,
            max_parallel_image_pulls: None,
            registry_pull_qps: 5.0,
            registry_burst: 10,
            eviction_hard: default_eviction_hard(),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            node_lease_duration_seconds: 40,
            runtime_request_timeout: Duration::from_secs(120),
            shutdown_grace_period: Duration::ZERO,
            container_log_max_size: 10 << 20,
            container_log_max_files: 5,
            pod_logs_dir: "/var/log/pods".into(),
            max_container_restart_period: Duration::from_secs(300),
            kube_api_qps: 50.0,
            kube_api_burst: 100,
            event_record_qps: 50.0,
            event_burst: 100,
            register_node: true,
            register_with_taints: Vec::new(),
            node_status_max_images: 50,
            provider_id: String::new(),
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            rotate_certificates: true,
            server_tls_bootstrap: false,
            tls_cert_file: None,
            tls_private_key_file: None,
            tls_min_version: None,
            tls_cipher_suites: Vec::new(),
            authentication: Authentication::default(),
            authorization: Authorization::default(),
            enable_debugging_handlers: true,
            streaming_connection_idle_timeout: Duration::from_secs(4 * 3600),
            picolet: PicoletConfig::default(),
        }
    }
}

impl Default for PicoletConfig {
    fn default() -> Self {
        PicoletConfig {
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            registries_config: "/etc/picolet/registries.yaml".into(),
            docker_config: "/etc/picolet/config.json".into(),
            shim_binary: "containerd-shim-runc-v2".into(),
            runtime_namespace: "picolet".into(),
            run_dir: "/run/picolet".into(),
            back_off_initial: Duration::from_secs(10),
            back_off_reset: Duration::from_secs(600),
            stop_pods_on_shutdown: false,
            certificate_request_timeout: Duration::from_secs(3600),
            offline_autonomy: true,
        }
    }
}

fn default_eviction_hard() -> BTreeMap<String, String> {
    [
        ("memory.available", "100Mi"),
        ("nodefs.available", "10%"),
        ("imagefs.available", "15%"),
        ("nodefs.inodesFree", "5%"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Upstream fields picolet accepts but does not act on (no "unknown" warning).
const IGNORED_UPSTREAM: &[&str] = &[
    "allowedUnsafeSysctls",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "containerRuntimeEndpoint",
    "contentType",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "cpuManagerPolicy",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "enableContentionProfiling",
    "enableControllerAttachDetach",
    "enableDebugFlagsHandler",
    "enableProfilingHandler",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "enforceNodeAllocatable",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "evictionPressureTransitionPeriod",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "failCgroupV1",
    "failSwapOn",
    "featureGates",
    "hairpinMode",
    "imagePullCredentialsVerificationPolicy",
    "imageServiceEndpoint",
    "iptablesDropBit",
    "iptablesMasqueradeBit",
    "kernelMemcgNotification",
    "kubeReservedCgroup",
    "kubeletCgroups",
    "localStorageCapacityIsolation",
    "logging",
    "makeIPTablesUtilChains",
    "maxOpenFiles",
    "memoryManagerPolicy",
    "memorySwap",
    "memoryThrottlingFactor",
    "mergeDefaultEvictionSettings",
    "oomScoreAdj",
    "podCIDR",
    "podsPerCore",
    "preloadedImagesVerificationAllowlist",
    "protectKernelDefaults",
    "qosReserved",
    "reservedMemory",
    "runtimeCgroups",
    "seccompDefault",
    "shutdownGracePeriodByPodPriority",
    "shutdownGracePeriodCriticalPods",
    "singleProcessOOMKill",
    "systemCgroups",
    "systemReservedCgroup",
    "topologyManagerPolicy",
    "topologyManagerPolicyOptions",
    "topologyManagerScope",
    "tracing",
    "userNamespaces",
    "volumePluginDir",
    "volumeStatsAggPeriod",
];

impl KubeletConfig {
    /// Reads and validates a KubeletConfiguration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses KubeletConfiguration YAML or JSON. Warnings for unknown fields
    /// are logged; the first invalid value is an error.
    pub fn parse(text: &str) -> Result<Self> {
        let v = crate::api::yaml::single(text)?;
        let (cfg, warnings) = Self::from_value(&v)?;
        for w in warnings {
            log::warn!("config: {w}");
        }
        Ok(cfg)
    }

    /// Returns the config and the warnings (unknown or ignored fields).
    pub fn from_value(v: &Value) -> Result<(Self, Vec<String>)> {
        let obj = v
            .as_object()
            .context("a KubeletConfiguration must be a mapping")?;
        let mut c = KubeletConfig::default();
        let mut warn = Vec::new();
        let mut eviction_set = false;
        for (k, val) in obj {
            let f = Field(k, val);
            match k.as_str() {
                "apiVersion" => {
                    let s = f.string()?;
                    if s != API_VERSION {
                        bail!("apiVersion: unsupported value {s:?}, want {API_VERSION:?}");
                    }
                }
                "kind" => {
                    let s = f.string()?;
                    if s != KIND {
                        bail!("kind: unsupported value {s:?}, want {KIND:?}");
                    }
                }
                "staticPodPath" => c.static_pod_path = f.opt_path()?,
                "staticPodURL" => c.static_pod_url = f.opt_string()?,
                "staticPodURLHeader" => c.static_pod_url_header = f.string_list_map()?,
                "fileCheckFrequency" => c.file_check_frequency = f.duration()?,
                "httpCheckFrequency" => c.http_check_frequency = f.duration()?,
                "syncFrequency" => c.sync_frequency = f.duration()?,
                "enableServer" => c.enable_server = f.bool()?,
                "address" => c.address = f.ip()?,
                "port" => c.port = f.port(false)?,
                "readOnlyPort" => c.read_only_port = f.port(true)?,
                "healthzPort" => c.healthz_port = f.port(true)?,
                "healthzBindAddress" => c.healthz_bind_address = f.ip()?,
                "clusterDomain" => c.cluster_domain = f.string()?,
                "clusterDNS" => {
                    c.cluster_dns = f
                        .string_list()?
                        .iter()
                        .map(|s| {
                            s.parse()
                                .map_err(|_| anyhow::anyhow!("clusterDNS: invalid IP {s:?}"))
                        })
                        .collect::<Result<_>>()?
                }
                "resolvConf" => c.resolv_conf = f.string()?,
                "cgroupRoot" => c.cgroup_root = f.string()?,
                "cgroupsPerQOS" => c.cgroups_per_qos = f.bool()?,
                "cgroupDriver" => c.cgroup_driver = f.string()?,
                "maxPods" => c.max_pods = f.uint(u32::MAX as u64)? as u32,
                "podPidsLimit" => c.pod_pids_limit = f.int()?,
                "imageGCHighThresholdPercent" => {
                    c.image_gc_high_threshold_percent = f.uint(100)? as u8
                }
                "imageGCLowThresholdPercent" => {
                    c.image_gc_low_threshold_percent = f.uint(100)? as u8
                }
                "imageMinimumGCAge" => c.image_minimum_gc_age = f.duration()?,
                "imageMaximumGCAge" => c.image_maximum_gc_age = f.duration()?,
                "serializeImagePulls" => c.serialize_image_pulls = f.bool()?,
                "maxParallelImagePulls" => {
                    c.max_parallel_image_pulls = if val.is_null() {
                        None
                    } else {
                        Some(f.uint(u32::MAX as u64)? as u32)
                    }
                }
                "registryPullQPS" => c.registry_pull_qps = f.float()?,
                "registryBurst" => c.registry_burst = f.uint(u32::MAX as u64)? as u32,
                "evictionHard" => {
                    c.eviction_hard = f.string_map()?;
                    eviction_set = true;
                }
                "nodeStatusUpdateFrequency" => c.node_status_update_frequency = f.duration()?,
                "nodeStatusReportFrequency" => c.node_status_report_frequency = f.duration()?,
                "nodeLeaseDurationSeconds" => {
                    c.node_lease_duration_seconds = f.uint(u32::MAX as u64)? as u32
                }
                "runtimeRequestTimeout" => c.runtime_request_timeout = f.duration()?,
                "shutdownGracePeriod" => c.shutdown_grace_period = f.duration()?,
                "containerLogMaxSize" => {
                    let s = f.string()?;
                    let q = crate::api::quantity::Quantity::parse(&s).map_err(|e| {
                        anyhow::anyhow!("containerLogMaxSize: invalid value {s:?}: {e}")
                    })?;
                    if q.value() <= 0 {
                        bail!("containerLogMaxSize: must be positive, got {s:?}");
                    }
                    c.container_log_max_size = q.value() as u64;
                }
                "containerLogMaxFiles" => {
                    c.container_log_max_files = f.uint(u32::MAX as u64)? as u32
                }
                "podLogsDir" => c.pod_logs_dir = f.path()?,
                "crashLoopBackOff" => {
                    let m = f.object()?;
                    for (ck, cv) in m {
                        let cf = Field(ck, cv);
                        match ck.as_str() {
                            "maxContainerRestartPeriod" => {
                                c.max_container_restart_period = cf
                                    .duration()
                                    .map_err(|e| anyhow::anyhow!("crashLoopBackOff.{e}"))?
                            }
                            _ => warn.push(format!("unknown field crashLoopBackOff.{ck}")),
                        }
                    }
                }
                "kubeAPIQPS" => c.kube_api_qps = f.float()?,
                "kubeAPIBurst" => c.kube_api_burst = f.uint(u32::MAX as u64)? as u32,
                "eventRecordQPS" => c.event_record_qps = f.float()?,
                "eventBurst" => c.event_burst = f.uint(u32::MAX as u64)? as u32,
                "registerNode" => c.register_node = f.bool()?,
                "registerWithTaints" => c.register_with_taints = f.taints()?,
                "nodeStatusMaxImages" => {
                    let n = f.int()?;
                    if n < -1 || n > i64::from(i32::MAX) {
                        bail!("nodeStatusMaxImages: invalid value {n}: expected -1 (all) or more");
                    }
                    c.node_status_max_images = n as i32;
                }
                "providerID" => c.provider_id = f.string()?,
                "systemReserved" => c.system_reserved = f.string_map()?,
                "kubeReserved" => c.kube_reserved = f.string_map()?,
                "rotateCertificates" => c.rotate_certificates = f.bool()?,
                "serverTLSBootstrap" => c.server_tls_bootstrap = f.bool()?,
                "tlsCertFile" => c.tls_cert_file = f.opt_path()?,
                "tlsPrivateKeyFile" => c.tls_private_key_file = f.opt_path()?,
                "tlsMinVersion" => c.tls_min_version = f.opt_string()?,
                "tlsCipherSuites" => c.tls_cipher_suites = f.string_list()?,
                "enableDebuggingHandlers" => c.enable_debugging_handlers = f.bool()?,
                "streamingConnectionIdleTimeout" => {
                    c.streaming_connection_idle_timeout = f.duration()?
                }
                "authentication" => c.authentication = Authentication::from_value(val, &mut warn)?,
                "authorization" => c.authorization = Authorization::from_value(val, &mut warn)?,
                "picolet" => c.picolet = PicoletConfig::from_value(val, &mut warn)?,
                other if IGNORED_UPSTREAM.contains(&other) => warn.push(format!(
                    "field {other} is not supported by picolet; ignored"
                )),
                other => warn.push(format!("unknown field {other}")),
            }
        }
        if !eviction_set {
            c.eviction_hard = default_eviction_hard();
        }
        c.validate()?;
        Ok((c, warn))
    }

    fn validate(&self) -> Result<()> {
        if self.image_gc_low_threshold_percent >= self.image_gc_high_threshold_percent {
            bail!(
                "imageGCLowThresholdPercent: {} must be less than imageGCHighThresholdPercent {}",
                self.image_gc_low_threshold_percent,
                self.image_gc_high_threshold_percent
            );
        }
        if self.cgroup_driver != "cgroupfs" {
            bail!(
                "cgroupDriver: unsupported value {:?}: picolet supports only \"cgroupfs\" \
                 (it writes the cgroup files itself; systemd does not manage them) \
                 - set cgroupDriver: cgroupfs",
                self.cgroup_driver
            );
        }
        if !self.cgroup_root.starts_with('/') {
            bail!(
                "cgroupRoot: must be an absolute path, got {:?}",
                self.cgroup_root
            );
        }
        if self.pod_pids_limit < -1 || self.pod_pids_limit == 0 {
            bail!(
                "podPidsLimit: must be -1 (unlimited) or positive, got {}",
                self.pod_pids_limit
            );
        }
        if self.node_lease_duration_seconds == 0 {
            bail!("nodeLeaseDurationSeconds: must be positive, got 0");
        }
        for (name, d) in [
            ("fileCheckFrequency", self.file_check_frequency),
            ("httpCheckFrequency", self.http_check_frequency),
            ("syncFrequency", self.sync_frequency),
            (
                "nodeStatusUpdateFrequency",
                self.node_status_update_frequency,
            ),
            ("runtimeRequestTimeout", self.runtime_request_timeout),
        ] {
            if d.is_zero() {
                bail!("{name}: must be greater than zero, got 0s");
            }
        }
        if self.max_container_restart_period < Duration::from_secs(1)
            || self.max_container_restart_period > Duration::from_secs(300)
        {
            bail!(
                "crashLoopBackOff.maxContainerRestartPeriod: must be between 1s and 300s, got {}",
                duration::format(self.max_container_restart_period)
            );
        }
        for (k, v) in &self.eviction_hard {
            if ![
                "memory.available",
                "nodefs.available",
                "nodefs.inodesFree",
                "imagefs.available",
                "imagefs.inodesFree",
                "containerfs.available",
                "containerfs.inodesFree",
                "pid.available",
            ]
            .contains(&k.as_str())
            {
                bail!("evictionHard: unknown signal {k:?}");
            }
            parse_threshold(v)
                .with_context(|| format!("evictionHard[{k}]: invalid value {v:?}"))?;
        }
        if let Some(u) = &self.static_pod_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!("staticPodURL: must be an http:// or https:// URL, got {u:?}");
            }
        }
        if self.registry_pull_qps < 0.0 {
            bail!(
                "registryPullQPS: must not be negative, got {}",
                self.registry_pull_qps
            );
        }
        let p = &self.picolet;
        if p.back_off_initial.is_zero() || p.back_off_initial > self.max_container_restart_period {
            bail!(
                "picolet.backOffInitial: must be positive and at most the max restart period, got {}",
                duration::format(p.back_off_initial)
            );
        }
        if p.runtime_namespace.is_empty()
            || !p
                .runtime_namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            bail!(
                "picolet.runtimeNamespace: invalid containerd namespace {:?}",
                p.runtime_namespace
            );
        }
        Ok(())
    }
}

/// An eviction threshold: a quantity or a percentage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Quantity(i64),
    Percent(f64),
}

pub fn parse_threshold(s: &str) -> Result<Threshold> {
    if let Some(p) = s.strip_suffix('%') {
        let f: f64 = p.parse().context("percentage")?;
        if !(0.0..=100.0).contains(&f) {
            bail!("percentage out of range");
        }
        return Ok(Threshold::Percent(f));
    }
    Ok(Threshold::Quantity(
        crate::api::quantity::Quantity::parse(s)?.value(),
    ))
}

/// Walks `{a: {b: value}}` calling `f("a.b", value)`, one level deep.
fn nested(
    top: &str,
    v: &Value,
    warn: &mut Vec<String>,
    mut f: impl FnMut(&str, &Value) -> Result<bool>,
) -> Result<()> {
    for (k, val) in Field(top, v).object()? {
        match val.as_object() {
            Some(m) => {
                for (k2, v2) in m {
                    let name = format!("{top}.{k}.{k2}");
                    if !f(&format!("{k}.{k2}"), v2).with_context(|| name.clone())? {
                        warn.push(format!("unknown field {name}"));
                    }
                }
            }
            None if f(k, val).with_context(|| format!("{top}.{k}"))? => {}
            None => warn.push(format!("unknown field {top}.{k}")),
        }
    }
    Ok(())
}

impl Authentication {
    fn from_value(v: &Value, warn: &mut Vec<String>) -> Result<Self> {
        let mut a = Authentication::default();
        nested("authentication", v, warn, |k, val| {
            let f = Field(k, val);
            match k {
                "x509.clientCAFile" => a.client_ca_file = f.opt_path()?,
                "webhook.enabled" => a.webhook_enabled = f.bool()?,
                "webhook.cacheTTL" => a.webhook_cache_ttl = f.duration()?,
                "anonymous.enabled" => a.anonymous = f.bool()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(a)
    }
}

impl Authorization {
    fn from_value(v: &Value, warn: &mut Vec<String>) -> Result<Self> {
        let mut a = Authorization::default();
        nested("authorization", v, warn, |k, val| {
            let f = Field(k, val);
            match k {
                "mode" => {
                    let m = f.string()?;
                    if m != "Webhook" && m != "AlwaysAllow" {
                        bail!("unsupported mode {m:?}: Webhook or AlwaysAllow");
                    }
                    a.mode = m;
                }
                "webhook.cacheAuthorizedTTL" => a.cache_authorized_ttl = f.duration()?,
                "webhook.cacheUnauthorizedTTL" => a.cache_unauthorized_ttl = f.duration()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(a)
    }
}

impl PicoletConfig {
    fn from_value(v: &Value, warn: &mut Vec<String>) -> Result<Self> {
        let field = Field("picolet", v);
        let obj = field.object()?;
        let mut p = PicoletConfig::default();
        for (k, val) in obj {
            let name = format!("picolet.{k}");
            let f = Field(&name, val);
            match k.as_str() {
                "cniConfDir" => p.cni_conf_dir = f.path()?,
                "cniBinDirs" => {
                    p.cni_bin_dirs = f.string_list()?.into_iter().map(PathBuf::from).collect()
                }
                "registriesConfig" => p.registries_config = f.path()?,
                "dockerConfig" => p.docker_config = f.path()?,
                "shimBinary" => p.shim_binary = f.path()?,
                "runtimeNamespace" => p.runtime_namespace = f.string()?,
                "runDir" => p.run_dir = f.path()?,
                "backOffInitial" => p.back_off_initial = f.duration()?,
                "backOffReset" => p.back_off_reset = f.duration()?,
                "stopPodsOnShutdown" => p.stop_pods_on_shutdown = f.bool()?,
                "certificateRequestTimeout" => p.certificate_request_timeout = f.duration()?,
                "offlineAutonomy" => p.offline_autonomy = f.bool()?,
                _ => warn.push(format!("unknown field {name}")),
            }
        }
        Ok(p)
    }
}

/// A named field value, so every error names its field.
struct Field<'a>(&'a str, &'a Value);

impl Field<'_> {
    fn bad(&self, want: &str) -> anyhow::Error {
        anyhow::anyhow!("{}: invalid value {}: expected {want}", self.0, self.1)
    }
    fn string(&self) -> Result<String> {
        self.1
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.bad("a string"))
    }
    fn opt_string(&self) -> Result<Option<String>> {
        if self.1.is_null() {
            return Ok(None);
        }
        let s = self.string()?;
        Ok((!s.is_empty()).then_some(s))
    }
    fn path(&self) -> Result<PathBuf> {
        let s = self.string()?;
        if s.is_empty() {
            bail!("{}: must not be empty", self.0);
        }
        Ok(PathBuf::from(s))
    }
    fn opt_path(&self) -> Result<Option<PathBuf>> {
        Ok(self.opt_string()?.map(PathBuf::from))
    }
    fn bool(&self) -> Result<bool> {
        self.1.as_bool().ok_or_else(|| self.bad("true or false"))
    }
    fn int(&self) -> Result<i64> {
        self.1.as_i64().ok_or_else(|| self.bad("an integer"))
    }
    fn uint(&self, max: u64) -> Result<u64> {
        match self.1.as_u64() {
            Some(n) if n <= max => Ok(n),
            _ => Err(self.bad(&format!("an integer from 0 to {max}"))),
        }
    }
    fn float(&self) -> Result<f64> {
        self.1.as_f64().ok_or_else(|| self.bad("a number"))
    }
    fn port(&self, zero_ok: bool) -> Result<u16> {
        let n = self.uint(65535)?;
        if n == 0 && !zero_ok {
            return Err(self.bad("a port from 1 to 65535"));
        }
        Ok(n as u16)
    }
    fn ip(&self) -> Result<IpAddr> {
        let s = self.string()?;
        s.parse().map_err(|_| self.bad("an IP address"))
    }
    fn duration(&self) -> Result<Duration> {
        let s = self.string()?;
        duration::parse(&s).map_err(|e| anyhow::anyhow!("{}: {e}", self.0))
    }
    fn object(&self) -> Result<&Map<String, Value>> {
        self.1.as_object().ok_or_else(|| self.bad("a mapping"))
    }
    fn string_list(&self) -> Result<Vec<String>> {
        if self.1.is_null() {
            return Ok(Vec::new());
        }
        let a = self
            .1
            .as_array()
            .ok_or_else(|| self.bad("a list of strings"))?;
        a.iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.bad("a list of strings"))
            })
            .collect()
    }
    fn string_map(&self) -> Result<BTreeMap<String, String>> {
        if self.1.is_null() {
            return Ok(BTreeMap::new());
        }
        self.object()?
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| self.bad("a map of strings"))
            })
            .collect()
    }
    /// A list of `{key, value, effect}` taints.
    fn taints(&self) -> Result<Vec<crate::api::core::Taint>> {
        if self.1.is_null() {
            return Ok(Vec::new());
        }
        let list = self
            .1
            .as_array()
            .ok_or_else(|| self.bad("a list of taints"))?;
        let mut out = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let at = format!("{}[{i}]", self.0);
            let obj = t
                .as_object()
                .ok_or_else(|| anyhow::anyhow!("{at}: expected a mapping"))?;
            let get = |k: &str| -> Result<Option<String>> {
                match obj.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(v) => bail!("{at}.{k}: invalid value {v}: expected a string"),
                }
            };
            for k in obj.keys() {
                if !["key", "value", "effect", "timeAdded"].contains(&k.as_str()) {
                    bail!("{at}: unknown field {k}");
                }
            }
            let key = get("key")?.filter(|k| !k.is_empty());
            let key = key.ok_or_else(|| anyhow::anyhow!("{at}.key: required"))?;
            let effect = get("effect")?.unwrap_or_default();
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect.as_str()) {
                bail!(
                    "{at}.effect: unsupported value {effect:?}: expected NoSchedule, PreferNoSchedule or NoExecute"
                );
            }
            out.push(crate::api::core::Taint {
                key,
                value: get("value")?,
                effect,
                time_added: None,
            });
        }
        Ok(out)
    }
    fn string_list_map(&self) -> Result<BTreeMap<String, Vec<String>>> {
        if self.1.is_null() {
            return Ok(BTreeMap::new());
        }
        self.object()?
            .iter()
            .map(|(k, v)| {
                let name = format!("{}.{k}", self.0);
                Ok((k.clone(), Field(&name, v).string_list()?))
            })
            .collect()
    }
}

/// Everything picolet needs to start: the config file plus the flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubelet: KubeletConfig,
    pub root_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    /// `--node-labels`, applied when the Node is created.
    pub node_labels: BTreeMap<String, String>,
    /// `--bootstrap-kubeconfig`: credentials to request a client
    /// certificate with when `kubeconfig` is missing or expired.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// `--cert-dir` (default `<root-dir>/pki`); see [`Config::cert_dir`].
    pub cert_dir_flag: Option<PathBuf>,
}

impl Config {
    /// Builds the config from an optional file and the flag values.
    pub fn new(
        file: Option<&Path>,
        root_dir: Option<PathBuf>,
        kubeconfig: Option<PathBuf>,
        hostname_override: Option<String>,
        node_ip: Option<IpAddr>,
    ) -> Result<Self> {
        let kubelet = match file {
            Some(p) => KubeletConfig::load(p)?,
            None => KubeletConfig::default(),
        };
        let node_name = match hostname_override {
            Some(h) => h,
            None => hostname()?,
        };
        let node_name = node_name.trim().to_ascii_lowercase();
        validate_node_name(&node_name)?;
        Ok(Config {
            kubelet,
            root_dir: root_dir.unwrap_or_else(|| "/var/lib/picolet".into()),
            kubeconfig,
            node_name,
            node_ip,
            node_labels: BTreeMap::new(),
            bootstrap_kubeconfig: None,
            cert_dir_flag: None,
        })
    }

    /// Client and serving certificates and keys (`--cert-dir`, default
    /// `<root-dir>/pki`).
    pub fn cert_dir(&self) -> PathBuf {
        self.cert_dir_flag
            .clone()
            .unwrap_or_else(|| self.root_dir.join("pki"))
    }
    /// Content store, image records, layer snapshots.
    pub fn images_dir(&self) -> PathBuf {
        self.root_dir.join("images")
    }
    /// Tarballs imported at start-up (k3s's agent/images equivalent).
    pub fn import_dir(&self) -> PathBuf {
        self.images_dir().join("import")
    }
    /// Per-pod data: volumes, generated /etc files.
    pub fn pods_dir(&self) -> PathBuf {
        self.root_dir.join("pods")
    }
    /// Checkpoints for restart recovery.
    pub fn state_dir(&self) -> PathBuf {
        self.root_dir.join("state")
    }
    /// Container bundles (one dir per container id).
    pub fn bundles_dir(&self) -> PathBuf {
        self.state_dir().join("bundles")
    }
    pub fn run_dir(&self) -> &Path {
        &self.kubelet.picolet.run_dir
    }
    /// The ttrpc socket picolet serves shim events on (`TTRPC_ADDRESS`).
    pub fn events_socket(&self) -> PathBuf {
        self.run_dir().join("events.sock")
    }
    /// Pod network namespaces (bind mounts).
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir().join("netns")
    }
    pub fn pod_logs_dir(&self) -> &Path {
        &self.kubelet.pod_logs_dir
    }
}

/// The machine's host name, as upstream's default node name.
pub fn hostname() -> Result<String> {
    let u = rustix::system::uname();
    Ok(u.nodename().to_string_lossy().into_owned())
}

/// Node names are DNS subdomains (RFC 1123).
pub fn validate_node_name(n: &str) -> Result<()> {
    if n.is_empty() || n.len() > 253 {
        bail!("node name {n:?}: must be 1 to 253 characters");
    }
    for label in n.split('.') {
        let ok = !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            bail!("node name {n:?}: not a valid DNS subdomain");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(KubeletConfig, Vec<String>)> {
        KubeletConfig::from_value(&crate::api::yaml::single(s)?)
    }

    #[test]
    fn empty_config_has_upstream_defaults() {
        let (c, w) =
            parse("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
                .unwrap();
        assert!(w.is_empty());
        assert_eq!(c, KubeletConfig::default());
        assert_eq!(c.file_check_frequency, Duration::from_secs(20));
        assert_eq!(c.healthz_port, 10248);
        assert_eq!(c.image_gc_high_threshold_percent, 85);
        assert_eq!(c.eviction_hard["memory.available"], "100Mi");
    }

    #[test]
    fn certificate_fields() {
        let (c, w) = parse("kind: KubeletConfiguration\n").unwrap();
        assert!(w.is_empty());
        assert!(c.rotate_certificates && !c.server_tls_bootstrap);
        assert_eq!(
            c.picolet.certificate_request_timeout,
            Duration::from_secs(3600)
        );
        let (c, w) = parse(
            "rotateCertificates: false\nserverTLSBootstrap: true\n\
             picolet: {certificateRequestTimeout: 90s}\n",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(!c.rotate_certificates && c.server_tls_bootstrap);
        assert_eq!(
            c.picolet.certificate_request_timeout,
            Duration::from_secs(90)
        );
        let e = parse("serverTLSBootstrap: yes please\n").unwrap_err();
        assert!(format!("{e:#}").contains("serverTLSBootstrap"), "{e:#}");
    }

    #[test]
    fn reads_fields() {
        let (c, w) = parse(
            r#"
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: /etc/picolet/manifests
fileCheckFrequency: 5s
readOnlyPort: 10255
clusterDNS: [10.0.0.10]
staticPodURLHeader: {X-Token: [a, b]}
crashLoopBackOff: {maxContainerRestartPeriod: 40s}
registerWithTaints: [{key: dedicated, value: edge, effect: NoExecute}]
nodeStatusMaxImages: -1
evictionHard: {memory.available: 50Mi}
picolet:
  cniConfDir: /tmp/cni
  backOffInitial: 1s
  offlineAutonomy: false
"#,
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.static_pod_path, Some("/etc/picolet/manifests".into()));
        assert_eq!(c.file_check_frequency, Duration::from_secs(5));
        assert_eq!(c.read_only_port, 10255);
        assert_eq!(c.cluster_dns, vec!["10.0.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.static_pod_url_header["X-Token"], vec!["a", "b"]);
        assert_eq!(c.max_container_restart_period, Duration::from_secs(40));
        assert_eq!(c.register_with_taints.len(), 1);
        assert_eq!(c.register_with_taints[0].effect, "NoExecute");
        assert_eq!(c.register_with_taints[0].value.as_deref(), Some("edge"));
        assert_eq!(c.node_status_max_images, -1);
        assert_eq!(c.eviction_hard.len(), 1);
        assert_eq!(c.picolet.cni_conf_dir, PathBuf::from("/tmp/cni"));
        assert_eq!(c.picolet.back_off_initial, Duration::from_secs(1));
        assert!(!c.picolet.offline_autonomy);
        assert!(KubeletConfig::default().picolet.offline_autonomy);
    }

    #[test]
    fn reads_server_auth_and_tls() {
        let (c, w) = parse(
            r#"
kind: KubeletConfiguration
port: 18650
tlsCertFile: /etc/k/c.crt
tlsPrivateKeyFile: /etc/k/c.key
tlsMinVersion: VersionTLS13
tlsCipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
authentication:
  x509: {clientCAFile: /etc/k/ca.crt}
  webhook: {enabled: false, cacheTTL: 10s}
  anonymous: {enabled: true}
authorization:
  mode: AlwaysAllow
  webhook: {cacheAuthorizedTTL: 1m, cacheUnauthorizedTTL: 5s}
enableDebuggingHandlers: false
"#,
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.port, 18650);
        assert_eq!(c.tls_cert_file, Some("/etc/k/c.crt".into()));
        assert_eq!(c.tls_min_version.as_deref(), Some("VersionTLS13"));
        assert_eq!(c.tls_cipher_suites.len(), 1);
        assert_eq!(
            c.authentication,
            Authentication {
                client_ca_file: Some("/etc/k/ca.crt".into()),
                webhook_enabled: false,
                webhook_cache_ttl: Duration::from_secs(10),
                anonymous: true,
            }
        );
        assert_eq!(c.authorization.mode, "AlwaysAllow");
        assert_eq!(
            c.authorization.cache_authorized_ttl,
            Duration::from_secs(60)
        );
        assert_eq!(
            c.authorization.cache_unauthorized_ttl,
            Duration::from_secs(5)
        );
        assert!(!c.enable_debugging_handlers);
        let e = parse("authorization: {mode: RBAC}").unwrap_err();
        assert!(format!("{e:#}").contains("authorization.mode"), "{e:#}");
        let (_, w) = parse("authentication: {x509: {nope: 1}}").unwrap();
        assert_eq!(w, ["unknown field authentication.x509.nope"]);
    }

    #[test]
    fn unknown_fields_warn() {
        let (_, w) = parse(
            "kind: KubeletConfiguration\nbogus: 1\ncpuManagerPolicy: x\npicolet: {nope: 1}\n",
        )
        .unwrap();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w.iter().any(|m| m == "unknown field bogus"), "{w:?}");
        assert!(
            w.iter()
                .any(|m| m.contains("cpuManagerPolicy") && m.contains("not supported")),
            "{w:?}"
        );
        assert!(w.iter().any(|m| m == "unknown field picolet.nope"), "{w:?}");
    }

    #[test]
    fn invalid_values_name_field_and_value() {
        for (doc, want) in [
            ("fileCheckFrequency: soon", "fileCheckFrequency"),
            ("port: 70000", "port: invalid value 70000"),
            ("healthzBindAddress: localhost", "healthzBindAddress"),
            (
                "imageGCHighThresholdPercent: 50",
                "imageGCLowThresholdPercent",
            ),
            (
                "cgroupDriver: systemd",
                "cgroupDriver: unsupported value \"systemd\": picolet supports only \"cgroupfs\"",
            ),
            ("apiVersion: v1", "apiVersion"),
            (
                "evictionHard: {memory.available: lots}",
                "evictionHard[memory.available]",
            ),
            ("staticPodURL: ftp://x", "staticPodURL"),
            ("maxPods: -1", "maxPods"),
            ("picolet: {backOffInitial: 0s}", "picolet.backOffInitial"),
            ("enableServer: yes please", "enableServer"),
            (
                "registerWithTaints: [{key: a, effect: Sometimes}]",
                "registerWithTaints[0].effect",
            ),
            (
                "registerWithTaints: [{effect: NoSchedule}]",
                "registerWithTaints[0].key",
            ),
            ("nodeStatusMaxImages: -2", "nodeStatusMaxImages"),
        ] {
            let e = parse(doc).err().unwrap_or_else(|| panic!("{doc} accepted"));
            let m = format!("{e:#}");
            assert!(m.contains(want), "{doc}: {m}");
        }
    }

    #[test]
    fn node_names() {
        assert!(validate_node_name("edge-1.example").is_ok());
        assert!(validate_node_name("Edge").is_err());
        assert!(validate_node_name("-x").is_err());
        assert!(validate_node_name("").is_err());
    }
}
