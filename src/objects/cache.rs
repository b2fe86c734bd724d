//! Upstream's watch-based object cache (pkg/kubelet/util/manager,
//! `watch_based_manager.go`) for one kind: a list + watch per referenced
//! object, selected by `metadata.name` in its namespace (the Node
//! authorizer lets a node read only what its pods reference, so nothing
//! is ever listed namespace-wide). The watch starts with the first pod
//! that references the object and stops with the last one; an object
//! found immutable is kept and no longer watched.

use super::GetError;
use crate::api::meta::ObjectMeta;
use crate::kube::{Client, Event, ListParams, Reflector};
use crate::offline::OfflineStore;
use k8s_openapi::{Metadata, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a get waits for a new watch's first list. Upstream polls for
/// one second, then its volume reconciler retries within a second; picolet
/// retries a pod only after the worker back-off (10 s), so it waits
/// longer here: a pod just bound may meet the Node authorizer before the
/// authorizer knows the binding (403, listed again within ~2 s).
pub const SYNC_WAIT: Duration = Duration::from_secs(5);
const SYNC_POLL: Duration = Duration::from_millis(10);

/// An object that can be marked immutable.
pub trait Immutable {
    fn is_immutable(&self) -> bool;
}

impl Immutable for crate::api::core::ConfigMap {
    fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

impl Immutable for crate::api::core::Secret {
    fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

struct State<K> {
    /// The first list arrived.
    synced: bool,
    object: Option<Rc<K>>,
}

struct Entry<K> {
    /// UIDs of the pods referencing the object.
    refs: BTreeSet<String>,
    state: Rc<RefCell<State<K>>>,
    /// The watch; `None` once the object was found immutable.
    task: Option<smol::Task<()>>,
}

/// Counters for tests and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Objects referenced now.
    pub objects: usize,
    /// Watches running now.
    pub watches: usize,
    /// Watches started since the start.
    pub watches_started: u64,
}

/// The cache of one kind (`resource` names it in messages: `configmap`,
/// `secret`, as upstream's group resource).
pub struct ObjectCache<K> {
    resource: &'static str,
    entries: RefCell<BTreeMap<(String, String), Entry<K>>>,
    started: Cell<u64>,
    /// The local copy (offline autonomy): every object watched is kept
    /// there, and served from there while the API is unreachable at start.
    offline: RefCell<Option<Rc<OfflineStore>>>,
}

impl<K> ObjectCache<K>
where
    K: Resource
        + DeserializeOwned
        + Serialize
        + Clone
        + Metadata<Ty = ObjectMeta>
        + Immutable
        + 'static,
{
    pub fn new(resource: &'static str) -> Self {
        ObjectCache {
            resource,
            entries: RefCell::new(BTreeMap::new()),
            started: Cell::new(0),
            offline: RefCell::new(None),
        }
    }

    pub fn set_offline(&self, store: Rc<OfflineStore>) {
        *self.offline.borrow_mut() = Some(store);
    }

    /// The local copy's directory for this kind.
    fn kind(&self) -> &'static str {
        if self.resource == "secret" {
            crate::offline::SECRETS
        } else {
            crate::offline::CONFIG_MAPS
        }
    }

    /// While the node runs from its local copy, a new entry starts from
    /// the stored object (as if listed); the watch's first list replaces
    /// it once the API answers.
    fn local_copy(&self, ns: &str, name: &str) -> State<K> {
        let offline = self.offline.borrow().clone();
        let object = offline
            .filter(|o| o.active())
            .and_then(|o| o.object::<K>(self.kind(), ns, name));
        if object.is_some() {
            log::info!(
                "{} {ns}/{name}: the API server is unreachable, using the local copy",
                self.resource
            );
        }
        State {
            synced: object.is_some(),
            object: object.map(Rc::new),
        }
    }

    /// Pod `uid` references `ns/name`: watch it unless watched already.
    pub fn add_reference(&self, client: &Rc<Client>, ns: &str, name: &str, uid: &str) {
        let key = (ns.to_string(), name.to_string());
        let mut entries = self.entries.borrow_mut();
        if let Some(e) = entries.get_mut(&key) {
            e.refs.insert(uid.to_string());
            return;
        }
        let state = Rc::new(RefCell::new(self.local_copy(ns, name)));
        log::debug!("watching {} {ns}/{name}", self.resource);
        self.started.set(self.started.get() + 1);
        let offline = self.offline.borrow().clone().map(|o| (o, self.kind()));
        let task = crate::rt::spawn(watch::<K>(
            client.clone(),
            ns.to_string(),
            name.to_string(),
            state.clone(),
            offline,
        ));
        entries.insert(
            key,
            Entry {
                refs: [uid.to_string()].into_iter().collect(),
                state,
                task: Some(task),
            },
        );
    }

    /// Pod `uid` no longer references `ns/name`; the last reference stops
    /// the watch and forgets the object.
    pub fn delete_reference(&self, ns: &str, name: &str, uid: &str) {
        let key = (ns.to_string(), name.to_string());
        let mut entries = self.entries.borrow_mut();
        let gone = match entries.get_mut(&key) {
            Some(e) => {
                e.refs.remove(uid);
                e.refs.is_empty()
            }
            None => false,
        };
        if gone {
            log::debug!("no longer watching {} {ns}/{name}", self.resource);
            // The local copy stays: the API pod source forgets it with the
            // last stored pod that references it (`retain_objects`).
            // Dropping the task cancels the watch.
            entries.remove(&key);
        }
    }

    /// The object as the watch last saw it. A new watch gets
    /// [`SYNC_WAIT`] to list before the get fails.
    pub async fn get(&self, ns: &str, name: &str) -> Result<Rc<K>, GetError> {
        let key = (ns.to_string(), name.to_string());
        let state = match self.entries.borrow().get(&key) {
            Some(e) => e.state.clone(),
            None => {
                return Err(GetError::Other(format!(
                    "object \"{ns}\"/\"{name}\" not registered"
                )))
            }
        };
        let deadline = Instant::now() + SYNC_WAIT;
        while !state.borrow().synced {
            if Instant::now() >= deadline {
                return Err(GetError::Other(format!(
                    "failed to sync {} cache: timed out waiting for the condition",
                    self.resource
                )));
            }
            async_io::Timer::after(SYNC_POLL).await;
        }
        let object = state.borrow().object.clone();
        let Some(object) = object else {
            return Err(GetError::NotFound(format!(
                "{} \"{name}\" not found",
                self.resource
            )));
        };
        if object.is_immutable() {
            if let Some(e) = self.entries.borrow_mut().get_mut(&key) {
                if e.task.take().is_some() {
                    log::debug!(
                        "{} {ns}/{name} is immutable: no longer watched",
                        self.resource
                    );
                }
            }
        }
        Ok(object)
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.entries.borrow();
        CacheStats {
            objects: entries.len(),
            watches: entries.values().filter(|e| e.task.is_some()).count(),
            watches_started: self.started.get(),
        }
    }
}

/// Keeps `state` (and the local copy, when there is one) in step with
/// the one object.
async fn watch<K>(
    client: Rc<Client>,
    ns: String,
    name: String,
    state: Rc<RefCell<State<K>>>,
    offline: Option<(Rc<OfflineStore>, &'static str)>,
) where
    K: Resource + DeserializeOwned + Serialize + Clone + Metadata<Ty = ObjectMeta> + 'static,
{
    let (tx, rx) = smol::channel::bounded(4);
    let r = Reflector::new(
        client,
        Some(ns.clone()),
        ListParams::fields(format!("metadata.name={name}")),
    );
    let _reflector = crate::rt::spawn(r.run::<K>(tx));
    while let Ok(ev) = rx.recv().await {
        let mut st = state.borrow_mut();
        match ev {
            Event::Listed(items) => {
                st.synced = true;
                st.object = items
                    .into_iter()
                    .find(|o| o.metadata().name.as_deref() == Some(name.as_str()))
                    .map(Rc::new);
            }
            Event::Applied(o) => {
                if o.metadata().name.as_deref() == Some(name.as_str()) {
                    st.object = Some(Rc::new(o));
                }
            }
            Event::Deleted(o) => {
                if o.metadata().name.as_deref() == Some(name.as_str()) {
                    st.object = None;
                }
            }
        }
        if let Some((o, kind)) = &offline {
            o.save_object(kind, &ns, &name, st.object.as_deref());
        }
    }
}
