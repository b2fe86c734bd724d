//! The pod lifecycle event generator (upstream `GenericPLEG`,
//! pkg/kubelet/pleg/generic.go): relist the runtime every second (and at
//! once when the runtime reports an event), compare each pod's sandboxes
//! and containers with the previous relist, and tell the sync loop which
//! pods changed. Runtime events only make the relist come sooner: events
//! lost while picolet was down are found by the relist.
//!
//! The last relist is kept as a [`Snapshot`]: the images in use (image
//! GC) and the orphan check (pods the runtime has but no worker knows)
//! read it.

use crate::runtime::{
    keys, Container, ContainerFilter, ContainerState, PodSandbox, Runtime, RuntimeEvent,
    SandboxState,
};
use async_io::Timer;
use futures_lite::FutureExt;
use smol::channel::{Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Upstream relist period.
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// How often the runtime re-reads its processes' state (see [`Pleg::run`]).
/// Events carry every change as it happens; this only catches one a shim
/// failed to deliver, so it need not cost a call per container per second.
pub const DEEP_RELIST_PERIOD: Duration = Duration::from_secs(10);

/// The runtime's own relist (see [`Pleg::run`]).
pub type DeepRelist = Box<dyn Fn() -> futures_lite::future::BoxedLocal<()>>;

/// One container as the relist saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub name: String,
    pub state: ContainerState,
    pub image: String,
    pub image_id: String,
}

/// One pod as the relist saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRecord {
    pub name: String,
    pub namespace: String,
    pub sandboxes: BTreeMap<String, SandboxState>,
    pub containers: BTreeMap<String, ContainerRecord>,
}

/// The runtime's pods at one relist, by UID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub pods: BTreeMap<String, PodRecord>,
}

impl Snapshot {
    /// Groups what the runtime lists by pod UID.
    pub fn build(sandboxes: &[PodSandbox], containers: &[Container]) -> Snapshot {
        let mut pods: BTreeMap<String, PodRecord> = BTreeMap::new();
        for s in sandboxes {
            let p = pods.entry(s.metadata.uid.clone()).or_default();
            p.name = s.metadata.name.clone();
            p.namespace = s.metadata.namespace.clone();
            p.sandboxes.insert(s.id.clone(), s.state);
        }
        for c in containers {
            let Some(uid) = c.labels.get(keys::POD_UID) else {
                continue;
            };
            let p = pods.entry(uid.clone()).or_default();
            if p.name.is_empty() {
                p.name = c.labels.get(keys::POD_NAME).cloned().unwrap_or_default();
                p.namespace = c
                    .labels
                    .get(keys::POD_NAMESPACE)
                    .cloned()
                    .unwrap_or_default();
            }
            let name = if c.metadata.name.is_empty() {
                c.labels
                    .get(keys::CONTAINER_NAME)
                    .cloned()
                    .unwrap_or_default()
            } else {
                c.metadata.name.clone()
            };
            p.containers.insert(
                c.id.clone(),
                ContainerRecord {
                    name,
                    state: c.state,
                    image: c.image.clone(),
                    image_id: c.image_id.clone(),
                },
            );
        }
        pods.retain(|uid, _| !uid.is_empty());
        Snapshot { pods }
    }

    /// UIDs whose sandboxes or containers differ between two relists
    /// (appeared, vanished or changed state).
    pub fn changed(&self, new: &Snapshot) -> Vec<String> {
        let uids: BTreeSet<&String> = self.pods.keys().chain(new.pods.keys()).collect();
        uids.into_iter()
            .filter(|u| {
                let (a, b) = (self.pods.get(*u), new.pods.get(*u));
                match (a, b) {
                    (Some(a), Some(b)) => {
                        a.sandboxes != b.sandboxes
                            || a.containers.len() != b.containers.len()
                            || a.containers.iter().any(|(id, c)| {
                                b.containers.get(id).map(|x| x.state) != Some(c.state)
                            })
                    }
                    _ => true,
                }
            })
            .cloned()
            .collect()
    }

    /// Image ids of every container the runtime has (running or not): the
    /// images image GC must keep.
    pub fn images_in_use(&self) -> BTreeSet<String> {
        self.pods
            .values()
            .flat_map(|p| p.containers.values())
            .filter(|c| !c.image_id.is_empty())
            .map(|c| c.image_id.clone())
            .collect()
    }
}

/// Relist state shared with the health check and readers of the snapshot.
#[derive(Debug)]
pub struct Pleg {
    pub snapshot: RefCell<Snapshot>,
    /// When the last relist succeeded.
    pub last_relist: Cell<Option<Instant>>,
    /// When the last successful relist began listing: the snapshot shows
    /// nothing that happened after this.
    pub listed_at: Cell<Option<Instant>>,
}

impl Pleg {
    pub fn new() -> Rc<Pleg> {
        Rc::new(Pleg {
            snapshot: RefCell::new(Snapshot::default()),
            last_relist: Cell::new(None),
            listed_at: Cell::new(None),
        })
    }

    /// One relist; returns the UIDs that changed.
    pub async fn relist<R: Runtime>(&self, runtime: &R) -> anyhow::Result<Vec<String>> {
        let began = Instant::now();
        let sandboxes = runtime.list_pod_sandboxes().await?;
        let containers = runtime.list_containers(&ContainerFilter::default()).await?;
        let new = Snapshot::build(&sandboxes, &containers);
        let changed = self.snapshot.borrow().changed(&new);
        *self.snapshot.borrow_mut() = new;
        self.last_relist.set(Some(Instant::now()));
        self.listed_at.set(Some(began));
        Ok(changed)
    }

    /// Relists every `period`, and right away after a runtime event, until
    /// `out` is closed. Changed UIDs go to `out` (one message per relist).
    /// `deep`, when given, runs every [`DEEP_RELIST_PERIOD`] before the
    /// relist: a runtime that keeps its state in memory re-reads it from
    /// the processes it drives there (the shim runtime asks each shim; what
    /// it finds comes back as runtime events).
    pub async fn run<R: Runtime>(
        self: Rc<Self>,
        runtime: Rc<R>,
        events: Option<Receiver<RuntimeEvent>>,
        out: Sender<Vec<String>>,
        period: Duration,
        deep: Option<DeepRelist>,
    ) {
        let mut failures = 0u32;
        let mut next_deep = Instant::now() + DEEP_RELIST_PERIOD;
        loop {
            if let Some(d) = &deep {
                if Instant::now() >= next_deep {
                    d().await;
                    next_deep = Instant::now() + DEEP_RELIST_PERIOD;
                }
            }
            match self.relist(&*runtime).await {
                Ok(changed) => {
                    failures = 0;
                    if !changed.is_empty() && out.send(changed).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    failures += 1;
                    // Say it once, then every minute or so, not every second.
                    if failures == 1 || failures % 60 == 0 {
                        log::warn!("relist failed ({failures} in a row): {e:#}");
                    }
                }
            }
            if out.is_closed() {
                return;
            }
            let tick = async {
                Timer::after(period).await;
            };
            match &events {
                Some(rx) => {
                    let ev = async {
                        if rx.recv().await.is_err() {
                            // The runtime stopped sending events: plain ticks.
                            std::future::pending::<()>().await;
                        }
                        // Coalesce a burst (exit + delete …) into one relist.
                        while rx.try_recv().is_ok() {}
                    };
                    tick.or(ev).await;
                }
                None => tick.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerMetadata, PodSandboxMetadata};

    fn sb(id: &str, uid: &str, state: SandboxState) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            metadata: PodSandboxMetadata {
                name: "p".into(),
                uid: uid.into(),
                namespace: "default".into(),
                attempt: 0,
            },
            state,
            ..Default::default()
        }
    }

    fn c(id: &str, uid: &str, name: &str, state: ContainerState) -> Container {
        Container {
            id: id.into(),
            metadata: ContainerMetadata {
                name: name.into(),
                attempt: 0,
            },
            state,
            image_id: format!("sha256:{name}"),
            labels: [(keys::POD_UID.to_string(), uid.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn changes_per_pod() {
        use ContainerState::*;
        let a = Snapshot::build(
            &[
                sb("s1", "u1", SandboxState::Ready),
                sb("s2", "u2", SandboxState::Ready),
            ],
            &[c("c1", "u1", "a", Running), c("c2", "u2", "b", Running)],
        );
        assert_eq!(Snapshot::default().changed(&a), vec!["u1", "u2"]);
        assert!(a.changed(&a).is_empty());
        // c1 exited; u3 appeared; u2 unchanged.
        let b = Snapshot::build(
            &[
                sb("s1", "u1", SandboxState::Ready),
                sb("s2", "u2", SandboxState::Ready),
            ],
            &[
                c("c1", "u1", "a", Exited),
                c("c2", "u2", "b", Running),
                c("c3", "u3", "x", Created),
            ],
        );
        assert_eq!(a.changed(&b), vec!["u1", "u3"]);
        // u2's sandbox stopped; u3's container vanished (and so did u3).
        let c2 = Snapshot::build(
            &[
                sb("s1", "u1", SandboxState::Ready),
                sb("s2", "u2", SandboxState::NotReady),
            ],
            &[c("c1", "u1", "a", Exited), c("c2", "u2", "b", Running)],
        );
        assert_eq!(b.changed(&c2), vec!["u2", "u3"]);
    }

    #[test]
    fn images_in_use() {
        use ContainerState::*;
        let s = Snapshot::build(
            &[sb("s1", "u1", SandboxState::Ready)],
            &[c("c1", "u1", "a", Running), c("c2", "u2", "b", Exited)],
        );
        assert_eq!(
            s.images_in_use().into_iter().collect::<Vec<_>>(),
            vec!["sha256:a", "sha256:b"]
        );
    }
}
