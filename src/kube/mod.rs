//! The Kubernetes API client: kubeconfig, transport (one TLS connection,
//! HTTP/2 streams), typed requests and list + watch. A layer of its own
//! that knows nothing of pods' lifecycles; node, sources, status, volume
//! and server build on it.

pub mod client;
pub mod error;
pub mod kubeconfig;
pub mod merge;
pub mod ratelimit;
pub mod tls;
pub mod transport;
pub mod watch;
pub mod x509;
// Joining with a token and keeping credentials fresh (TLS bootstrap issue).
pub mod bootstrap;
pub mod certstore;
pub mod csr;
pub mod der;
pub mod discovery;
pub mod rotation;
pub mod serving;

pub use client::{Client, DeleteParams, ListParams, ObjectList, Patch};
pub use error::{ApiStatus, Error};
pub use kubeconfig::Kubeconfig;
pub use watch::{Event, Reflector, WatchEvent, WatchStream};

/// GOARCH of this build: what Kubernetes labels and nodeInfo use.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}
