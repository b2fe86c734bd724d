//! The API-server pod source: a list + watch of the pods bound to this
//! node (`spec.nodeName=<node>`), as upstream's `NewSourceApiserver`
//! (reflector + UndeltaStore): every change sends the whole set to the pod
//! config as one snapshot of source `api`.
//!
//! The same watch shows the node's mirror pods (the API faces of its static
//! pods, annotation `kubernetes.io/config.mirror`): they are kept apart, for
//! the mirror pod manager and the status writer, and never run.
//!
//! The store also serves the status writer: the server's copy of each pod
//! (its UID, resourceVersion and status) is what a status patch is computed
//! against, so no GET precedes a PATCH.

use super::{pod_full_name, SourceUpdate, API_SOURCE, CONFIG_MIRROR};
use crate::api::core::Pod;
use crate::kube::{Client, Event, ListParams, Reflector};
use crate::offline::OfflineStore;
use smol::channel::Sender;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The pods of this node as the API server last showed them.
#[derive(Debug, Default)]
pub struct ApiPods {
    /// Regular pods by UID.
    pods: BTreeMap<String, Rc<Pod>>,
    /// Mirror pods by full name (`name_namespace`).
    mirrors: BTreeMap<String, Rc<Pod>>,
    /// The first list arrived.
    synced: bool,
}

pub type SharedApiPods = Rc<RefCell<ApiPods>>;

/// Whether `pod` is a mirror pod.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_MIRROR))
}

fn slim(mut p: Pod) -> Pod {
    p.metadata.managed_fields = None;
    p
}

/// Whether `p` is an older version of the same object than `have` (our
/// own PATCH's answer may arrive before the watch's older events).
/// resourceVersions are compared as numbers, as etcd makes them; others
/// count as newer.
fn older_than(p: &Pod, have: Option<&Rc<Pod>>) -> bool {
    let Some(have) = have else { return false };
    let rv = |p: &Pod| {
        p.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    have.metadata.uid == p.metadata.uid && matches!((rv(p), rv(have)), (Some(a), Some(b)) if a < b)
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

impl ApiPods {
    pub fn new() -> SharedApiPods {
        Rc::new(RefCell::new(ApiPods::default()))
    }

    /// The server's copy of a regular pod.
    pub fn pod(&self, uid: &str) -> Option<Rc<Pod>> {
        self.pods.get(uid).cloned()
    }

    /// The mirror pod of the static pod with this full name.
    pub fn mirror(&self, full_name: &str) -> Option<Rc<Pod>> {
        self.mirrors.get(full_name).cloned()
    }

    pub fn mirrors(&self) -> Vec<Rc<Pod>> {
        self.mirrors.values().cloned().collect()
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Applies one event; returns (regular pods changed, mirrors changed).
    pub fn apply(&mut self, ev: Event<Pod>) -> (bool, bool) {
        // managedFields are the server's bookkeeping, often the largest
        // part of a pod; nothing here reads them.
        let ev = match ev {
            Event::Listed(items) => Event::Listed(items.into_iter().map(slim).collect()),
            Event::Applied(p) => Event::Applied(slim(p)),
            Event::Deleted(p) => Event::Deleted(slim(p)),
        };
        match ev {
            Event::Listed(items) => {
                self.synced = true;
                let (mut pods, mut mirrors) = (BTreeMap::new(), BTreeMap::new());
                for p in items {
                    if is_mirror(&p) {
                        mirrors.insert(pod_full_name(&p), Rc::new(p));
                    } else {
                        pods.insert(uid(&p), Rc::new(p));
                    }
                }
                self.pods = pods;
                self.mirrors = mirrors;
                (true, true)
            }
            Event::Applied(p) if is_mirror(&p) => {
                let name = pod_full_name(&p);
                if older_than(&p, self.mirrors.get(&name)) {
                    return (false, false);
                }
                self.mirrors.insert(name, Rc::new(p));
                (false, true)
            }
            Event::Applied(p) => {
                if older_than(&p, self.pods.get(&uid(&p))) {
                    return (false, false);
                }
                self.pods.insert(uid(&p), Rc::new(p));
                (true, false)
            }
            Event::Deleted(p) if is_mirror(&p) => {
                let name = pod_full_name(&p);
                // Only that very object: a new mirror of the same name may
                // be there already.
                if self
                    .mirrors
                    .get(&name)
                    .and_then(|m| m.metadata.uid.as_deref())
                    == p.metadata.uid.as_deref()
                {
                    self.mirrors.remove(&name);
                }
                (false, true)
            }
            Event::Deleted(p) => {
                self.pods.remove(&uid(&p));
                (true, false)
            }
        }
    }

    /// A copy fresher than the watch's (a PATCH's answer): kept unless the
    /// store already has a newer one.
    pub fn refresh(&mut self, p: Pod) {
        let p = slim(p);
        let slot = if is_mirror(&p) {
            self.mirrors.get_mut(&pod_full_name(&p))
        } else {
            self.pods.get_mut(&uid(&p))
        };
        if let Some(old) = slot {
            if old.metadata.uid == p.metadata.uid && !older_than(&p, Some(old)) {
                *old = Rc::new(p);
            }
        }
    }

    /// The snapshot the pod config gets.
    pub fn snapshot(&self) -> SourceUpdate {
        SourceUpdate {
            source: API_SOURCE,
            pods: self.pods.values().map(|p| (**p).clone()).collect(),
            provisional: false,
        }
    }
}

/// Offline autonomy: when the API has not listed the node's pods within
/// [`crate::offline::API_WAIT`], the stored copies go to the pod config as
/// a provisional snapshot (run, but the source is not seen yet, so nothing
/// is removed on their word).
async fn start_from_local_copy(
    offline: Rc<OfflineStore>,
    store: SharedApiPods,
    snapshots: Sender<SourceUpdate>,
) {
    async_io::Timer::after(crate::offline::API_WAIT).await;
    if store.borrow().synced() {
        return;
    }
    let pods = offline.pods();
    if pods.is_empty() {
        return;
    }
    log::info!(
        "the API server has not listed this node's pods within {}s: starting {} pod(s) from the local copy",
        crate::offline::API_WAIT.as_secs(),
        pods.len()
    );
    offline.set_active(true);
    // Unbounded channel: the send does not wait, so no real list can slip
    // in between the check above and this snapshot.
    let _ = snapshots
        .send(SourceUpdate {
            source: API_SOURCE,
            pods,
            provisional: true,
        })
        .await;
}

/// Which regular pods an event touched.
enum Touched {
    All,
    Pod(String),
    Gone(String),
    Nothing,
}

impl Touched {
    fn of(ev: &Event<Pod>) -> Touched {
        match ev {
            Event::Listed(_) => Touched::All,
            Event::Applied(p) if !is_mirror(p) => Touched::Pod(uid(p)),
            Event::Deleted(p) if !is_mirror(p) => Touched::Gone(uid(p)),
            _ => Touched::Nothing,
        }
    }
}

/// Keeps the local copy in step with the store after an event.
fn persist(offline: &OfflineStore, store: &ApiPods, touched: Touched) {
    match touched {
        Touched::All => {
            if offline.active() {
                log::info!(
                    "the API server listed this node's pods: its answer replaces the local copy"
                );
            }
            offline.set_active(false);
            offline.replace_pods(store.pods.values().map(|p| &**p));
        }
        Touched::Pod(u) => {
            if let Some(p) = store.pods.get(&u) {
                offline.save_pod(p);
            }
            // Most updates are statuses: objects are sorted out on lists
            // and deletions only.
            return;
        }
        Touched::Gone(u) => {
            if !store.pods.contains_key(&u) {
                offline.remove_pod(&u);
            }
        }
        Touched::Nothing => return,
    }
    offline.retain_objects(&referenced(store));
}

/// The entry names of the configMaps and secrets the pods reference.
fn referenced(store: &ApiPods) -> std::collections::HashSet<String> {
    use crate::offline::{object_name, CONFIG_MAPS, SECRETS};
    let mut keep = std::collections::HashSet::new();
    for p in store.pods.values() {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let r = crate::objects::refs::pod_refs(p);
        keep.extend(
            r.config_maps
                .iter()
                .filter_map(|n| object_name(CONFIG_MAPS, ns, n)),
        );
        keep.extend(r.secrets.iter().filter_map(|n| object_name(SECRETS, ns, n)));
    }
    keep
}

/// Watches this node's pods until the task is dropped, keeping `store`
/// current and sending the pod config a snapshot per change; `changed`
/// hear of every change of the store (the status writer, the mirror pod
/// manager). With `offline`, the pods are kept on disk and started from
/// there when the API does not answer at start.
pub async fn run(
    client: Rc<Client>,
    node_name: String,
    store: SharedApiPods,
    snapshots: Sender<SourceUpdate>,
    changed: Vec<Sender<()>>,
    offline: Option<Rc<OfflineStore>>,
) {
    let (tx, rx) = smol::channel::bounded(64);
    let r = Reflector::new(
        client,
        None,
        ListParams::fields(format!("spec.nodeName={node_name}")),
    );
    let _watch = crate::rt::spawn(r.run::<Pod>(tx));
    let _local = offline
        .clone()
        .map(|o| crate::rt::spawn(start_from_local_copy(o, store.clone(), snapshots.clone())));
    while let Ok(first) = rx.recv().await {
        // Coalesce a burst (a relist, a rollout) into one snapshot.
        let mut events = vec![first];
        while let Ok(ev) = rx.try_recv() {
            events.push(ev);
        }
        let mut pods = false;
        for ev in events {
            if let Event::Deleted(p) = &ev {
                // A forced deletion's MODIFIED (grace 0) and DELETED come
                // together: the pod config must see the final deletion
                // grace period before the pod goes, or it stops the pod
                // with the spec's.
                if !is_mirror(p) && p.metadata.deletion_timestamp.is_some() {
                    let (changed, _) = store.borrow_mut().apply(Event::Applied(p.clone()));
                    if changed {
                        let snap = store.borrow().snapshot();
                        if snapshots.send(snap).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let touched = Touched::of(&ev);
            pods |= store.borrow_mut().apply(ev).0;
            if let Some(o) = &offline {
                persist(o, &store.borrow(), touched);
            }
        }
        if pods {
            let snap = store.borrow().snapshot();
            if snapshots.send(snap).await.is_err() {
                return;
            }
        }
        for c in &changed {
            let _ = c.try_send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, uid: &str, mirror: bool) -> Pod {
        let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": uid},
                           "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n"}});
        if mirror {
            v["metadata"]["annotations"] = json!({CONFIG_MIRROR: "h"});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn mirror_pods_are_kept_apart() {
        let mut s = ApiPods::default();
        assert!(!s.synced());
        assert_eq!(
            s.apply(Event::Listed(vec![
                pod("a", "1", false),
                pod("s-n", "2", true)
            ])),
            (true, true)
        );
        assert!(s.synced());
        assert_eq!(s.snapshot().pods.len(), 1);
        assert_eq!(s.snapshot().source, API_SOURCE);
        assert!(s.mirror("s-n_default").is_some());
        assert_eq!(s.apply(Event::Applied(pod("b", "3", false))), (true, false));
        assert_eq!(s.snapshot().pods.len(), 2);
        assert!(s.pod("3").is_some());
        // A delete of an older mirror object does not drop its successor.
        s.apply(Event::Applied(pod("s-n", "4", true)));
        assert_eq!(
            s.apply(Event::Deleted(pod("s-n", "2", true))),
            (false, true)
        );
        assert!(s.mirror("s-n_default").is_some());
        s.apply(Event::Deleted(pod("s-n", "4", true)));
        assert!(s.mirror("s-n_default").is_none());
        s.apply(Event::Deleted(pod("a", "1", false)));
        assert_eq!(s.snapshot().pods.len(), 1);
    }
}
