//! The container runtime: pod sandboxes and containers run by containerd's
//! runc shim, driven over ttrpc (no containerd daemon).
//!
//! [`Runtime`] is shaped like the CRI RuntimeService so another backend (a
//! CRI endpoint, picolet's own shim) can slot in later. The types below are
//! a trimmed CRI v1: what the kubelet side (sync, pod workers) hands to the
//! runtime, and what the runtime reports back.

pub mod cgroups;
pub mod convert;
pub mod events;
pub mod exec;
pub mod logs;
pub mod proto;
mod recovery;
pub mod rules;
pub mod runc_state;
pub mod service;
pub mod shim;
pub mod spec;
mod state;
pub mod stream;
pub mod ttrpc;
pub mod types;

pub use service::{RuntimeOptions, ShimRuntime};
pub use types::*;
