//! Pod networking: network namespaces and CNI plugins (ADD/DEL/CHECK).
//!
//! Order the runtime follows (as containerd's CRI does for netns-first pods):
//! 1. [`PodNetworks::setup`]: create the netns (with `lo` up), run CNI ADD.
//!    A failure leaves no netns, no lease, no veth: retry is a fresh start.
//! 2. Start the sandbox container (`picolet pause`) with `linux.namespaces`
//!    `{"type": "network", "path": <netns path>}`; app containers join the
//!    same path. The pod IP is known before any container runs.
//! 3. On stop: stop the containers, then [`PodNetworks::teardown`] (CNI DEL
//!    while the netns still exists, then unmount and delete it), then the
//!    sandbox container.
//!
//! hostNetwork pods skip all of it ([`needs_pod_network`]).

pub mod cni;
pub mod netns;

pub use cni::{
    Cni, CniError, IpCidr, NetworkStatus, PodNetworkRequest, PodNetworkResult, DEFAULT_CONFLIST,
};

use crate::config::Config;
use crate::runtime::{NamespaceMode, NamespaceOptions};
use std::path::PathBuf;

/// Whether a pod gets its own network namespace and a CNI attachment:
/// false for hostNetwork pods (network namespace mode `Node`).
pub fn needs_pod_network(ns: &NamespaceOptions) -> bool {
    ns.network != NamespaceMode::Node
}

/// Pod ids name files (netns, CNI cache) and are the CNI container id, so
/// they follow the CNI rule: an alphanumeric, then alphanumerics, `_.-`.
pub fn validate_pod_id(id: &str) -> anyhow::Result<()> {
    if id.len() > 200 {
        anyhow::bail!("pod id {id:?}: longer than 200 characters");
    }
    cni::config::validate_name(id).map_err(|e| anyhow::anyhow!("pod id {id:?}: {e}"))
}

/// Network namespaces plus CNI, in the order the runtime needs them.
pub struct PodNetworks {
    cni: Cni,
    netns_dir: PathBuf,
}

impl PodNetworks {
    pub fn new(cfg: &Config) -> PodNetworks {
        PodNetworks {
            cni: Cni::new(cfg),
            netns_dir: cfg.netns_dir(),
        }
    }

    pub fn cni(&self) -> &Cni {
        &self.cni
    }

    /// Where the pod's netns is (or will be) bind-mounted.
    pub fn netns_path(&self, pod_id: &str) -> PathBuf {
        netns::path(&self.netns_dir, pod_id)
    }

    /// Creates the netns (reused if present) and attaches it to the network.
    /// `req.netns` must be [`PodNetworks::netns_path`]. On failure nothing
    /// is left behind: the CNI side cleans up after itself, and the netns is
    /// removed unless a cached attachment still uses it.
    pub async fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetworkResult, CniError> {
        let want = self.netns_path(&req.pod_id);
        if req.netns != want {
            return Err(anyhow::anyhow!(
                "pod {}: netns {} is not picolet's path {}",
                req.pod_id,
                req.netns.display(),
                want.display()
            )
            .into());
        }
        netns::create(&self.netns_dir, &req.pod_id).await?;
        match self.cni.setup(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let unused = matches!(self.cni.cached_result(&req.pod_id), Ok(None));
                if unused && !matches!(e, CniError::Busy(_)) {
                    if let Err(r) = netns::remove(&req.netns) {
                        log::warn!("pod {}: {r:#}", req.pod_id);
                    }
                }
                Err(e)
            }
        }
    }

    /// CNI DEL, then the netns goes. Idempotent; fine for half-made pods.
    pub async fn teardown(&self, req: &PodNetworkRequest) -> Result<(), CniError> {
        self.cni.teardown(req).await?;
        netns::remove(&self.netns_path(&req.pod_id))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_network_skips_pod_network() {
        let mut ns = NamespaceOptions::default();
        assert!(needs_pod_network(&ns));
        ns.network = NamespaceMode::Node;
        assert!(!needs_pod_network(&ns));
        ns.network = NamespaceMode::Container;
        assert!(needs_pod_network(&ns));
    }

    #[test]
    fn pod_ids() {
        assert!(validate_pod_id("0a1b2c-pod_x.1").is_ok());
        assert!(validate_pod_id("").is_err());
        assert!(validate_pod_id("../etc").is_err());
        assert!(validate_pod_id("a/b").is_err());
        assert!(validate_pod_id(".hidden").is_err());
        assert!(validate_pod_id(&"a".repeat(201)).is_err());
    }
}
