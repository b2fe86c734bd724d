//! Container and sandbox garbage collection of one pod (upstream
//! `containerGC` with the kubelet defaults: `MinAge` 0,
//! `MaxPerPodContainer` 1, `MaxContainers` unlimited), decided per pod by
//! its worker right after a sync, so it never races that pod's work.
//!
//! - Of the instances of one container name that do not run, the newest is
//!   kept: it is the `lastState` (or, for a container that waits to
//!   restart, the `state`) status shows, and what restart counts and
//!   back-off derive from after a picolet restart.
//! - Sandboxes that are not ready and not the newest go once no container
//!   of theirs is left.
//! - A pod no source wants loses everything.

use super::{container_name, PodRuntimeStatus};
use crate::runtime::{ContainerState, SandboxState};
use std::collections::BTreeMap;

/// What to remove from the runtime for one pod.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removal {
    pub containers: Vec<String>,
    pub sandboxes: Vec<String>,
}

impl Removal {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.sandboxes.is_empty()
    }
}

/// The removal for a pod that still exists (see the module docs).
pub fn evictable(status: &PodRuntimeStatus) -> Removal {
    let mut kept: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Removal::default();
    // Newest first, as PodRuntimeStatus keeps them.
    for c in &status.containers {
        if c.state == ContainerState::Running {
            continue;
        }
        let n = kept.entry(container_name(c)).or_default();
        *n += 1;
        if *n > 1 {
            out.containers.push(c.id.clone());
        }
    }
    for (i, s) in status.sandboxes.iter().enumerate() {
        if i == 0 || s.state == SandboxState::Ready {
            continue;
        }
        let has_containers = status.containers.iter().any(|c| {
            !out.containers.contains(&c.id) && container_sandbox(status, &c.id) == Some(&s.id)
        });
        if !has_containers {
            out.sandboxes.push(s.id.clone());
        }
    }
    out
}

/// Everything of a pod that is gone from every source.
pub fn all(status: &PodRuntimeStatus) -> Removal {
    Removal {
        containers: status.containers.iter().map(|c| c.id.clone()).collect(),
        sandboxes: status.sandboxes.iter().map(|s| s.id.clone()).collect(),
    }
}

/// The sandbox a container belongs to: the newest one created before it
/// (a pod's old sandbox is stopped before the next one is made, and
/// containers are only created in the current one).
fn container_sandbox<'a>(status: &'a PodRuntimeStatus, id: &str) -> Option<&'a String> {
    let c = status.containers.iter().find(|c| c.id == id)?;
    status
        .sandboxes
        .iter()
        .find(|s| s.created_at <= c.created_at)
        .map(|s| &s.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{
        ContainerMetadata, ContainerStatus, PodSandboxMetadata, PodSandboxStatus,
    };

    fn c(id: &str, name: &str, state: ContainerState, created: i64) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            metadata: ContainerMetadata {
                name: name.into(),
                attempt: 0,
            },
            state,
            created_at: created,
            ..Default::default()
        }
    }

    fn sb(id: &str, ready: bool, created: i64) -> PodSandboxStatus {
        PodSandboxStatus {
            id: id.into(),
            metadata: PodSandboxMetadata::default(),
            state: if ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: created,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_running_and_newest_dead_instance_per_name() {
        use ContainerState::*;
        let st = PodRuntimeStatus::new(
            "u",
            "p",
            "ns",
            vec![sb("s1", true, 1)],
            vec![
                c("a3", "a", Running, 30),
                c("a2", "a", Exited, 20),
                c("a1", "a", Exited, 10),
                c("b2", "b", Exited, 25),
                c("b1", "b", Created, 15),
                c("i1", "init", Exited, 5),
            ],
        );
        let r = evictable(&st);
        assert_eq!(r.containers, vec!["b1".to_string(), "a1".to_string()]);
        assert!(r.sandboxes.is_empty());
    }

    #[test]
    fn old_sandboxes_go_when_empty() {
        use ContainerState::*;
        let st = PodRuntimeStatus::new(
            "u",
            "p",
            "ns",
            vec![
                sb("s1", false, 1),
                sb("s2", false, 100),
                sb("s3", true, 200),
            ],
            vec![c("a1", "a", Exited, 150), c("a0", "a", Exited, 50)],
        );
        // a0 (in s1) is removed, so s1 goes; s2 keeps a1; s3 is the newest.
        let r = evictable(&st);
        assert_eq!(r.containers, vec!["a0".to_string()]);
        assert_eq!(r.sandboxes, vec!["s1".to_string()]);
        let all = all(&st);
        assert_eq!(all.containers.len(), 2);
        assert_eq!(all.sandboxes.len(), 3);
    }
}
