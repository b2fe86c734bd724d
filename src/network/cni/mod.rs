//! A CNI runtime (spec 1.0, libcni's behaviour where the spec leaves room).
//!
//! - Config: the lowest-sorted `.conf`/`.conflist`/`.json` in the conf dir
//!   (single-plugin files wrapped as a list), re-read on every operation so a
//!   network written after start (e.g. by a network daemonset) is picked up
//!   without a restart or a watcher. Files that do not parse are skipped with
//!   a warning, as the upstream kubelet and CRI-O do.
//! - ADD runs the list in order, each plugin's stdout becoming the next one's
//!   `prevResult`; a failure runs DEL over the whole list so nothing stays
//!   half-made, and returns the plugin's error. The final result and
//!   everything DEL needs (the list itself, CNI_ARGS, runtimeConfig) are
//!   cached in `<state>/cni/<pod-id>.json`, so DEL undoes exactly what ADD
//!   did even if the conf dir changed meanwhile.
//! - DEL runs in reverse with the cached result as `prevResult` (from spec
//!   0.4.0 on), and is idempotent: without a cache (crash before it was
//!   written, or already deleted) it runs with the current config and no
//!   `prevResult`; without a live netns it passes an empty `CNI_NETNS`, which
//!   plugins take as "clean up what you can".
//! - Loopback: picolet brings `lo` up itself when it creates the netns
//!   (`network::netns`), instead of running the `loopback` plugin as
//!   containerd does: one exec less per pod start, nothing to undo (the
//!   interface dies with the namespace), and no dependency on that binary.
//!
//! Plugins run as child processes on the executor (smol's process API) with
//! a deadline of `runtimeRequestTimeout` per operation.

pub mod config;
mod exec;
pub mod result;

pub use config::{NetworkList, DEFAULT_CONFLIST};
pub use result::{IpCidr, PodNetworkResult};

use crate::config::Config;
use crate::runtime::{DnsConfig, PodSandboxConfig, PortMapping, Protocol, RuntimeError};
use crate::util::fs::{read_optional, write_atomic};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The pod's interface name (`CNI_IFNAME`).
pub const IFNAME: &str = "eth0";

const CACHE_KIND: &str = "picoletCniCacheV1";

/// Why a CNI operation failed. Every variant names the network and plugin
/// where one is involved.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable network configuration (the node's NetworkReady=false).
    #[error("network not ready: {0}")]
    NotReady(String),
    #[error(
        "network {network:?}: CNI plugin {plugin:?} (used by {used_by:?}) not found in {dirs}"
    )]
    PluginNotFound {
        network: String,
        plugin: String,
        used_by: String,
        dirs: String,
    },
    #[error("network {network:?}: CNI plugin {plugin:?} failed ({command}): {message}")]
    PluginFailed {
        network: String,
        plugin: String,
        command: String,
        /// The CNI error code, when the plugin printed the error object.
        code: Option<u64>,
        message: String,
    },
    #[error("network {network:?}: CNI plugin {plugin:?} ({command}) did not finish within {after:?}; killed")]
    Timeout {
        network: String,
        plugin: String,
        command: String,
        after: Duration,
    },
    /// Another operation on the same pod is running (the spec forbids
    /// concurrent operations on one container).
    #[error("a network operation for pod {0} is already running")]
    Busy(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Every CNI failure stops the pod from getting a network: the kubelet side
/// reports it as such and retries with back-off.
impl From<CniError> for RuntimeError {
    fn from(e: CniError) -> Self {
        match e {
            CniError::NotReady(m) => RuntimeError::NetworkNotReady(m),
            e => RuntimeError::NetworkNotReady(format!("{e:#}")),
        }
    }
}

/// The node's network condition (NetworkReady in CRI terms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    pub ready: bool,
    /// "NetworkPluginNotReady" when not ready (the upstream reason).
    pub reason: String,
    pub message: String,
}

/// One pod's network attachment request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetworkRequest {
    /// The sandbox id: `CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`, cache key.
    pub pod_id: String,
    /// The pod's network namespace (bind mount path).
    pub netns: PathBuf,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// Only entries with a host port are passed (`portMappings` capability).
    pub port_mappings: Vec<PortMapping>,
    /// Passed as the `dns` capability.
    pub dns: Option<DnsConfig>,
}

impl PodNetworkRequest {
    pub fn new(pod_id: &str, netns: &Path, sandbox: &PodSandboxConfig) -> Self {
        PodNetworkRequest {
            pod_id: pod_id.to_string(),
            netns: netns.to_path_buf(),
            pod_namespace: sandbox.metadata.namespace.clone(),
            pod_name: sandbox.metadata.name.clone(),
            pod_uid: sandbox.metadata.uid.clone(),
            port_mappings: sandbox.port_mappings.clone(),
            dns: sandbox.dns_config.clone(),
        }
    }

    /// `CNI_ARGS` as containerd passes them; unknown values are left out.
    pub fn cni_args(&self) -> String {
        let mut a = vec!["IgnoreUnknown=1".to_string()];
        for (k, v) in [
            ("K8S_POD_NAMESPACE", &self.pod_namespace),
            ("K8S_POD_NAME", &self.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", &self.pod_id),
            ("K8S_POD_UID", &self.pod_uid),
        ] {
            // ';' and '=' cannot be escaped in CNI_ARGS; Kubernetes names
            // never hold them, anything else is dropped rather than mangled.
            if !v.is_empty() && !v.contains([';', '=']) {
                a.push(format!("{k}={v}"));
            }
        }
        a.join(";")
    }

    /// The runtime's capability arguments; each plugin gets, as its
    /// `runtimeConfig`, the ones it declares in `capabilities`.
    pub fn capability_args(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let ports: Vec<Value> = self
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let mut e = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": match p.protocol {
                        Protocol::Tcp => "tcp",
                        Protocol::Udp => "udp",
                        Protocol::Sctp => "sctp",
                    },
                });
                if !p.host_ip.is_empty() {
                    e["hostIP"] = Value::String(p.host_ip.clone());
                }
                e
            })
            .collect();
        if !ports.is_empty() {
            m.insert("portMappings".into(), Value::Array(ports));
        }
        if let Some(d) = &self.dns {
            m.insert(
                "dns".into(),
                json!({"servers": d.servers, "searches": d.searches, "options": d.options}),
            );
        }
        m
    }
}

/// What the cache keeps per pod: enough to DEL exactly what ADD did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    kind: String,
    pod_id: String,
    netns: PathBuf,
    /// Inode of the namespace ADD ran in: a netns re-created at the same
    /// path is a different namespace without the attachment.
    netns_ino: u64,
    if_name: String,
    cni_args: String,
    capability_args: Map<String, Value>,
    network: NetworkList,
    result: Value,
}

/// Arguments shared by every plugin call of one operation.
struct Op<'a> {
    pod_id: &'a str,
    netns: String,
    args: &'a str,
    caps: &'a Map<String, Value>,
    deadline: Instant,
    budget: Duration,
}

/// The CNI runtime. Cheap to build; reads the conf dir per operation.
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
    /// Pods with an operation under way.
    busy: RefCell<BTreeSet<String>>,
}

struct BusyGuard<'a> {
    set: &'a RefCell<BTreeSet<String>>,
    id: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.set.borrow_mut().remove(&self.id);
    }
}

impl Cni {
    pub fn new(cfg: &Config) -> Cni {
        Cni {
            conf_dir: cfg.kubelet.picolet.cni_conf_dir.clone(),
            bin_dirs: cfg.kubelet.picolet.cni_bin_dirs.clone(),
            cache_dir: cfg.state_dir().join("cni"),
            timeout: cfg.kubelet.runtime_request_timeout,
            busy: RefCell::new(BTreeSet::new()),
        }
    }

    /// The network in use now: the lowest-sorted valid config file.
    pub fn load_network(&self) -> Result<NetworkList, CniError> {
        let dir = &self.conf_dir;
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CniError::NotReady(format!(
                    "no network config found in {} (directory missing)",
                    dir.display()
                )))
            }
            Err(e) => {
                return Err(CniError::NotReady(format!(
                    "cannot read CNI config dir {}: {e}",
                    dir.display()
                )))
            }
        };
        let names = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned());
        let files = config::candidate_files(names);
        let mut problems = Vec::new();
        for f in &files {
            let p = dir.join(f);
            let parsed = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| config::parse_file(f, &b));
            match parsed {
                Ok(l) => {
                    for msg in &problems {
                        log::warn!("skipping CNI config {msg}");
                    }
                    return Ok(l);
                }
                Err(e) => problems.push(format!("{}: {e}", p.display())),
            }
        }
        if problems.is_empty() {
            Err(CniError::NotReady(format!(
                "no network config found in {}",
                dir.display()
            )))
        } else {
            Err(CniError::NotReady(format!(
                "no valid network config in {}: {}",
                dir.display(),
                problems.join("; ")
            )))
        }
    }

    /// Ready when a network config loads and all its plugins are present.
    pub fn status(&self) -> NetworkStatus {
        let res = self
            .load_network()
            .and_then(|n| self.check_binaries(&n).map(|_| n));
        match res {
            Ok(n) => NetworkStatus {
                ready: true,
                reason: String::new(),
                message: format!("CNI network {:?} ({})", n.name, n.cni_version),
            },
            Err(e) => NetworkStatus {
                ready: false,
                reason: "NetworkPluginNotReady".into(),
                message: match e {
                    CniError::NotReady(m) => m,
                    e => e.to_string(),
                },
            },
        }
    }

    /// Attaches the pod to the network. Either succeeds with the result
    /// cached, or leaves nothing behind (DEL run over the list).
    /// Idempotent: a pod whose result is cached and whose netns is still
    /// mounted gets the cached result without running plugins again.
    pub async fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetworkResult, CniError> {
        super::validate_pod_id(&req.pod_id)?;
        let _busy = self.busy(&req.pod_id)?;
        if let Some(c) = self.read_cache(&req.pod_id)? {
            if c.netns == req.netns
                && super::netns::is_mounted(&req.netns)?
                && netns_ino(&req.netns) == Some(c.netns_ino)
            {
                return self.result_of(&c);
            }
            // An attachment to a namespace that is gone: undo it first, as
            // ADD must not run twice without a DEL in between.
            self.del_cached(&c).await?;
        }
        let net = self.load_network()?;
        self.check_binaries(&net)?;
        let args = req.cni_args();
        let caps = req.capability_args();
        let op = self.op(
            &req.pod_id,
            req.netns.to_string_lossy().into(),
            &args,
            &caps,
        );
        let added = match self.add_list(&net, &op).await {
            Ok(r) => self.finish_add(req, &net, &args, &caps, r).await,
            Err(e) => Err(e),
        };
        match added {
            Ok(r) => Ok(r),
            Err(e) => {
                let op = self.op(
                    &req.pod_id,
                    req.netns.to_string_lossy().into(),
                    &args,
                    &caps,
                );
                if let Err(d) = self.del_list(&net, &op, None, false).await {
                    log::warn!("pod {}: cleanup after failed CNI ADD: {d}", req.pod_id);
                    return Err(CniError::Other(anyhow::anyhow!(
                        "{e}; cleanup DEL also failed: {d}"
                    )));
                }
                Err(e)
            }
        }
    }

    /// Checks the result and caches it with what DEL needs.
    async fn finish_add(
        &self,
        req: &PodNetworkRequest,
        net: &NetworkList,
        args: &str,
        caps: &Map<String, Value>,
        result: Value,
    ) -> Result<PodNetworkResult, CniError> {
        let pod = result::pod_result(&result, IFNAME)
            .map_err(|e| anyhow::anyhow!("network {:?}: invalid CNI result: {e}", net.name))?;
        if pod.ips.is_empty() {
            return Err(anyhow::anyhow!(
                "network {:?}: the CNI result has no IP address for {IFNAME}",
                net.name
            )
            .into());
        }
        let ino = netns_ino(&req.netns).with_context(|| {
            format!(
                "network namespace {} vanished during ADD",
                req.netns.display()
            )
        })?;
        let entry = CacheEntry {
            kind: CACHE_KIND.into(),
            pod_id: req.pod_id.clone(),
            netns: req.netns.clone(),
            netns_ino: ino,
            if_name: IFNAME.into(),
            cni_args: args.to_string(),
            capability_args: caps.clone(),
            network: net.clone(),
            result,
        };
        let path = self.cache_path(&req.pod_id);
        let data = serde_json::to_vec_pretty(&entry).context("encode CNI cache")?;
        crate::rt::unblock(move || write_atomic(&path, &data)).await?;
        Ok(pod)
    }

    /// Detaches the pod from the network. Idempotent; also right for pods
    /// found half-made after a crash (no cache, netns gone).
    pub async fn teardown(&self, req: &PodNetworkRequest) -> Result<(), CniError> {
        super::validate_pod_id(&req.pod_id)?;
        let _busy = self.busy(&req.pod_id)?;
        if let Some(c) = self.read_cache(&req.pod_id)? {
            return self.del_cached(&c).await;
        }
        let net = match self.load_network() {
            Ok(n) => n,
            Err(CniError::NotReady(m)) => {
                // Nothing cached and no network: nothing is known to undo.
                log::info!(
                    "pod {}: no CNI cache and {m}; nothing to tear down",
                    req.pod_id
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let args = req.cni_args();
        let caps = req.capability_args();
        let netns = live_netns(&req.netns)?;
        let op = self.op(&req.pod_id, netns, &args, &caps);
        self.del_list(&net, &op, None, false).await
    }

    /// Runs CHECK over the list with the cached result (skipped when the
    /// list sets `disableCheck` or predates spec 0.4.0).
    pub async fn check(&self, req: &PodNetworkRequest) -> Result<(), CniError> {
        super::validate_pod_id(&req.pod_id)?;
        let _busy = self.busy(&req.pod_id)?;
        let c = self.read_cache(&req.pod_id)?.ok_or_else(|| {
            anyhow::anyhow!("pod {}: no cached CNI result to check against", req.pod_id)
        })?;
        let net = &c.network;
        if net.disable_check || !net.supports_check_and_prev_on_del() {
            return Ok(());
        }
        let op = self.op(
            &c.pod_id,
            c.netns.to_string_lossy().into(),
            &c.cni_args,
            &c.capability_args,
        );
        for (i, p) in net.plugins.iter().enumerate() {
            let kind = config::plugin_type(p).map_err(|e| anyhow::anyhow!(e))?;
            let path = self.find(net, kind, kind)?;
            let stdin = config::plugin_stdin(net, i, Some(&c.result), op.caps);
            self.invoke(net, kind, &path, "CHECK", &op, stdin).await?;
        }
        Ok(())
    }

    /// The cached result of a pod set up earlier (e.g. its IP after a restart).
    pub fn cached_result(&self, pod_id: &str) -> Result<Option<PodNetworkResult>, CniError> {
        super::validate_pod_id(pod_id)?;
        match self.read_cache(pod_id)? {
            Some(c) => self.result_of(&c).map(Some),
            None => Ok(None),
        }
    }

    /// Pod ids with a cached attachment, for recovery: any that no longer
    /// has a sandbox needs [`Cni::teardown`].
    pub fn cached_pods(&self) -> Result<Vec<String>, CniError> {
        let rd = match std::fs::read_dir(&self.cache_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("read {}", self.cache_dir.display()))
                    .into())
            }
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let id = n.strip_suffix(".json")?;
                (super::validate_pod_id(id).is_ok()).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn busy(&self, pod_id: &str) -> Result<BusyGuard<'_>, CniError> {
        if !self.busy.borrow_mut().insert(pod_id.to_string()) {
            return Err(CniError::Busy(pod_id.to_string()));
        }
        Ok(BusyGuard {
            set: &self.busy,
            id: pod_id.to_string(),
        })
    }

    fn op<'a>(
        &self,
        pod_id: &'a str,
        netns: String,
        args: &'a str,
        caps: &'a Map<String, Value>,
    ) -> Op<'a> {
        Op {
            pod_id,
            netns,
            args,
            caps,
            deadline: Instant::now() + self.timeout,
            budget: self.timeout,
        }
    }

    fn cache_path(&self, pod_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{pod_id}.json"))
    }

    fn read_cache(&self, pod_id: &str) -> Result<Option<CacheEntry>, CniError> {
        let p = self.cache_path(pod_id);
        let Some(b) = read_optional(&p)? else {
            return Ok(None);
        };
        let c: CacheEntry = serde_json::from_slice(&b)
            .with_context(|| format!("parse CNI cache {}", p.display()))?;
        if c.kind != CACHE_KIND || c.pod_id != pod_id {
            return Err(anyhow::anyhow!(
                "CNI cache {}: unexpected kind {:?} or pod {:?}",
                p.display(),
                c.kind,
                c.pod_id
            )
            .into());
        }
        Ok(Some(c))
    }

    fn result_of(&self, c: &CacheEntry) -> Result<PodNetworkResult, CniError> {
        result::pod_result(&c.result, &c.if_name).map_err(|e| {
            anyhow::anyhow!("CNI cache of pod {}: invalid result: {e}", c.pod_id).into()
        })
    }

    /// DEL with everything from the cache; the cache goes on success.
    async fn del_cached(&self, c: &CacheEntry) -> Result<(), CniError> {
        // Only the namespace ADD ran in counts: a new one at the same path
        // holds nothing of this attachment.
        let mut netns = live_netns(&c.netns)?;
        if netns_ino(&c.netns) != Some(c.netns_ino) {
            netns.clear();
        }
        let op = self.op(&c.pod_id, netns, &c.cni_args, &c.capability_args);
        let prev = c
            .network
            .supports_check_and_prev_on_del()
            .then_some(&c.result);
        self.del_list(&c.network, &op, prev, true).await?;
        let p = self.cache_path(&c.pod_id);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("remove {}", p.display()))
                .into()),
        }
    }

    fn check_binaries(&self, net: &NetworkList) -> Result<(), CniError> {
        for (bin, used_by) in net.binaries() {
            self.find(net, &bin, &used_by)?;
        }
        Ok(())
    }

    fn find(&self, net: &NetworkList, kind: &str, used_by: &str) -> Result<PathBuf, CniError> {
        config::find_plugin(kind, &self.bin_dirs).ok_or_else(|| CniError::PluginNotFound {
            network: net.name.clone(),
            plugin: kind.to_string(),
            used_by: used_by.to_string(),
            dirs: self.cni_path(),
        })
    }

    fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    async fn add_list(&self, net: &NetworkList, op: &Op<'_>) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for (i, p) in net.plugins.iter().enumerate() {
            let kind = config::plugin_type(p).map_err(|e| anyhow::anyhow!(e))?;
            let path = self.find(net, kind, kind)?;
            let stdin = config::plugin_stdin(net, i, prev.as_ref(), op.caps);
            let out = self.invoke(net, kind, &path, "ADD", op, stdin).await?;
            if out.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(&out).map_err(|e| CniError::PluginFailed {
                network: net.name.clone(),
                plugin: kind.to_string(),
                command: "ADD".into(),
                code: None,
                message: format!("invalid result JSON: {e}"),
            })?;
            prev = Some(v);
        }
        prev.ok_or_else(|| {
            anyhow::anyhow!("network {:?}: no plugin printed a result", net.name).into()
        })
    }

    /// DEL over the list in reverse. Every plugin runs even when an earlier
    /// one failed (so IPAM still releases the address); the first error is
    /// returned. Missing binaries are errors only when `strict` (an ADD is
    /// known to have run): a plugin that is not there set nothing up.
    async fn del_list(
        &self,
        net: &NetworkList,
        op: &Op<'_>,
        prev: Option<&Value>,
        strict: bool,
    ) -> Result<(), CniError> {
        let mut first: Option<CniError> = None;
        for (i, p) in net.plugins.iter().enumerate().rev() {
            let res = async {
                let kind = config::plugin_type(p).map_err(|e| anyhow::anyhow!(e))?;
                let path = match self.find(net, kind, kind) {
                    Ok(p) => p,
                    Err(e) if !strict => {
                        log::warn!("pod {}: DEL skipped: {e}", op.pod_id);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let stdin = config::plugin_stdin(net, i, prev, op.caps);
                self.invoke(net, kind, &path, "DEL", op, stdin)
                    .await
                    .map(|_| ())
            }
            .await;
            if let Err(e) = res {
                if first.is_some() {
                    log::warn!("pod {}: {e}", op.pod_id);
                } else {
                    first = Some(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn invoke(
        &self,
        net: &NetworkList,
        kind: &str,
        path: &Path,
        command: &str,
        op: &Op<'_>,
        stdin: Value,
    ) -> Result<Vec<u8>, CniError> {
        let started = Instant::now();
        let cni_path = self.cni_path();
        let res = exec::run(exec::Invocation {
            network: &net.name,
            plugin: kind,
            path,
            command,
            container_id: op.pod_id,
            netns: &op.netns,
            ifname: IFNAME,
            args: op.args,
            cni_path: &cni_path,
            stdin: stdin.to_string().into_bytes(),
            deadline: op.deadline,
            budget: op.budget,
        })
        .await;
        log::debug!(
            "pod {}: CNI {command} {kind} in {:?}: {}",
            op.pod_id,
            started.elapsed(),
            if res.is_ok() { "ok" } else { "failed" }
        );
        res
    }
}

/// The inode of the namespace mounted at `p` (stable while it lives).
fn netns_ino(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// The netns path to pass to plugins: empty when it is no longer a live
/// namespace (plugins then clean up host-side state only, per the spec).
fn live_netns(p: &Path) -> Result<String, CniError> {
    Ok(if super::netns::is_mounted(p)? {
        p.to_string_lossy().into_owned()
    } else {
        String::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> PodNetworkRequest {
        PodNetworkRequest {
            pod_id: "abc123".into(),
            netns: "/run/picolet/netns/abc123".into(),
            pod_namespace: "default".into(),
            pod_name: "web-0".into(),
            pod_uid: "1f2e".into(),
            port_mappings: vec![
                PortMapping {
                    protocol: Protocol::Tcp,
                    container_port: 8080,
                    host_port: 18080,
                    host_ip: String::new(),
                },
                PortMapping {
                    protocol: Protocol::Udp,
                    container_port: 53,
                    host_port: 0,
                    host_ip: String::new(),
                },
                PortMapping {
                    protocol: Protocol::Udp,
                    container_port: 5353,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
            ],
            dns: None,
        }
    }

    #[test]
    fn cni_args_like_containerd() {
        assert_eq!(
            req().cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1f2e"
        );
        let bare = PodNetworkRequest {
            pod_id: "x1".into(),
            pod_name: "a;b".into(),
            ..Default::default()
        };
        assert_eq!(
            bare.cni_args(),
            "IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=x1"
        );
    }

    #[test]
    fn capability_args_keep_host_ports_only() {
        let c = req().capability_args();
        assert_eq!(
            c["portMappings"],
            json!([
                {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 5353, "protocol": "udp", "hostIP": "127.0.0.1"}
            ])
        );
        assert!(!c.contains_key("dns"));
        let mut r = req();
        r.port_mappings.clear();
        r.dns = Some(DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        });
        let c = r.capability_args();
        assert!(!c.contains_key("portMappings"));
        assert_eq!(c["dns"]["servers"], json!(["10.0.0.10"]));
    }

    #[test]
    fn request_from_sandbox_config() {
        let mut s = PodSandboxConfig::default();
        s.metadata.name = "p".into();
        s.metadata.namespace = "ns".into();
        s.metadata.uid = "u".into();
        let r = PodNetworkRequest::new("id1", Path::new("/x/id1"), &s);
        assert_eq!((r.pod_name.as_str(), r.pod_uid.as_str()), ("p", "u"));
        assert_eq!(r.netns, Path::new("/x/id1"));
    }

    #[test]
    fn errors_map_to_network_not_ready() {
        let e: RuntimeError = CniError::NotReady("no network config found in /x".into()).into();
        assert_eq!(
            e.to_string(),
            "network not ready: no network config found in /x"
        );
        let e: RuntimeError = CniError::PluginFailed {
            network: "n".into(),
            plugin: "bridge".into(),
            command: "ADD".into(),
            code: Some(7),
            message: "boom".into(),
        }
        .into();
        assert!(matches!(&e, RuntimeError::NetworkNotReady(m) if m.contains("\"bridge\"")));
    }
}
