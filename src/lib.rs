//! picolet: a small Kubernetes node agent.
//!
//! One module per kubelet concern; each owns its state behind a narrow async
//! interface. Decisions are pure functions with unit tests; effects live at
//! the edges. See README.md's design section for the map.

#![deny(clippy::await_holding_refcell_ref)]

pub mod admission;
pub mod agent;
pub mod api;
pub mod config;
pub mod events;
pub mod http;
pub mod image;
pub mod join;
pub mod kube;
pub mod logger;
pub mod network;
pub mod node;
pub mod objects;
pub mod offline;
pub mod pause;
pub mod probe;
pub mod rt;
pub mod runtime;
pub mod server;
pub mod sources;
pub mod stats;
pub mod status;
pub mod sync;
pub mod util;
pub mod volume;
