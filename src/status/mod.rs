//! Pod status: phase, conditions and container statuses computed from the
//! spec and what the runtime reports (pure), and the status manager.

pub mod generate;
pub mod manager;
pub mod writer;

pub use generate::{generate_pod_status, StatusInput, Waiting, WaitingReason};
pub use manager::StatusManager;
