//! The image service: references, registry pulls, the content store, layer
//! snapshots and the rootfs overlay given to the runtime.
//!
//! The types below are the contract the runtime and the kubelet side use.

pub mod auth;
pub mod reference;
pub mod registries;
pub mod registry;
pub mod store;
pub mod unpack;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The parts of an image's config the runtime needs (OCI image config
/// `config` object; Docker images use the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `USER`: "uid", "uid:gid", "name", "name:group" or empty.
    pub user: String,
    /// `ExposedPorts` keys, e.g. "8080/tcp".
    pub exposed_ports: Vec<String>,
    /// `Env`: "KEY=value" entries.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`, e.g. "SIGQUIT".
    pub stop_signal: Option<String>,
}

/// An image present in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<config digest>`: the image id, as CRI and `imageID` report it.
    pub id: String,
    /// Normalised references that name this image, e.g.
    /// `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// `repo@sha256:<manifest digest>` for each repository it was pulled from.
    pub repo_digests: Vec<String>,
    /// Compressed size of the layers plus config, bytes.
    pub size: u64,
    pub config: ImageConfig,
    /// Uncompressed layer digests (`rootfs.diff_ids`), bottom first.
    pub diff_ids: Vec<String>,
}
