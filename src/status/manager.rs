//! The status manager (upstream pkg/kubelet/status/status_manager.go,
//! without an API server yet): the latest v1 `PodStatus` of every pod,
//! set by the pod workers after each sync, and the pod list the local API
//! serves (`/pods`).
//!
//! Rules kept from upstream:
//! - a terminal phase (Succeeded, Failed) is never left again; a status
//!   that would leave it keeps the old phase, reason and message;
//! - `startTime` never changes once set;
//! - every change bumps the pod's version, so a future API-server status
//!   writer can send only what changed ([`StatusManager::changed_since`]).
//!
//! `/pods` lists the pods the sources want (upstream's pod manager), with
//! their status once a worker produced one; a pod being terminated after
//! its source dropped it is no longer listed, as upstream.

use crate::api::core::{Pod, PodStatus};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Debug, Clone)]
struct Entry {
    pod: Rc<Pod>,
    status: Option<PodStatus>,
    /// A source wants it (listed in `/pods`).
    desired: bool,
    /// Its worker terminated it: containers stopped, volumes released
    /// (upstream's `canBeDeleted` condition for the final DELETE).
    terminated: bool,
    version: u64,
}

/// One pod as the API status writer sees it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub uid: String,
    pub pod: Rc<Pod>,
    pub status: Option<PodStatus>,
    pub terminated: bool,
    pub version: u64,
}

#[derive(Debug, Default)]
pub struct StatusManager {
    pods: BTreeMap<String, Entry>,
    version: u64,
    /// Told of every change (the API status writer).
    notify: Option<smol::channel::Sender<()>>,
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

fn is_terminal(s: &PodStatus) -> bool {
    matches!(s.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// The status to store when `new` follows `old` (see the module docs).
pub fn merge_status(old: Option<&PodStatus>, mut new: PodStatus) -> PodStatus {
    let Some(old) = old else {
        return new;
    };
    if is_terminal(old) && !is_terminal(&new) {
        log::warn!(
            "pod status: refused phase transition {:?} -> {:?}",
            old.phase,
            new.phase
        );
        new.phase = old.phase.clone();
        new.reason = old.reason.clone();
        new.message = old.message.clone();
    }
    if old.start_time.is_some() {
        new.start_time = old.start_time.clone();
    }
    new
}

impl StatusManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells `tx` of every change from now on (one slot is enough: a
    /// pending wake-up covers any number of changes).
    pub fn subscribe(&mut self, tx: smol::channel::Sender<()>) {
        self.notify = Some(tx);
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        if let Some(tx) = &self.notify {
            let _ = tx.try_send(());
        }
        self.version
    }

    /// The worker terminated the pod (containers stopped, volumes
    /// released).
    pub fn set_terminated(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|e| !e.terminated) {
            let v = self.bump();
            if let Some(e) = self.pods.get_mut(uid) {
                e.terminated = true;
                e.version = v;
            }
        }
    }

    /// Every pod's UID and version, for the API status writer.
    pub fn versions(&self) -> Vec<(String, u64)> {
        self.pods
            .iter()
            .map(|(u, e)| (u.clone(), e.version))
            .collect()
    }

    /// One pod as the API status writer needs it.
    pub fn pending(&self, uid: &str) -> Option<Pending> {
        let e = self.pods.get(uid)?;
        Some(Pending {
            uid: uid.to_string(),
            pod: e.pod.clone(),
            status: e.status.clone(),
            terminated: e.terminated,
            version: e.version,
        })
    }

    /// A pod a source wants (added or updated); its status is kept.
    pub fn set_pod(&mut self, pod: Rc<Pod>) {
        let key = uid(&pod).to_string();
        let v = self.bump();
        match self.pods.get_mut(&key) {
            Some(e) => {
                e.pod = pod;
                e.desired = true;
                e.version = v;
            }
            None => {
                self.pods.insert(
                    key,
                    Entry {
                        pod,
                        status: None,
                        desired: true,
                        terminated: false,
                        version: v,
                    },
                );
            }
        }
    }

    /// The sources dropped the pod: it leaves `/pods`; its status stays
    /// until [`StatusManager::forget`] (its worker still terminates it).
    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(e) = self.pods.get_mut(uid) {
            e.desired = false;
        }
    }

    /// The pod is gone for good.
    pub fn forget(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    /// Stores a generated status. Returns whether it changed.
    pub fn set_status(&mut self, uid: &str, status: PodStatus) -> bool {
        let Some(e) = self.pods.get(uid) else {
            return false;
        };
        let merged = merge_status(e.status.as_ref(), status);
        if e.status.as_ref() == Some(&merged) {
            return false;
        }
        let v = self.bump();
        if let Some(e) = self.pods.get_mut(uid) {
            e.status = Some(merged);
            e.version = v;
        }
        true
    }

    /// The last status stored for the pod.
    pub fn status(&self, uid: &str) -> Option<&PodStatus> {
        self.pods.get(uid).and_then(|e| e.status.as_ref())
    }

    /// The pod (as the source gave it) with its status.
    pub fn pod_with_status(&self, uid: &str) -> Option<Pod> {
        let e = self.pods.get(uid)?;
        let mut p = (*e.pod).clone();
        if let Some(s) = &e.status {
            p.status = Some(s.clone());
        }
        Some(p)
    }

    /// Every pod a source wants, with its status (upstream `GetPods` for a
    /// kubelet without API server), in UID order.
    pub fn pods(&self) -> Vec<Pod> {
        self.pods
            .iter()
            .filter(|(_, e)| e.desired)
            .filter_map(|(u, _)| self.pod_with_status(u))
            .collect()
    }

    /// `/pods` as JSON bytes, the same as [`pod_list`] of [`Self::pods`]
    /// but written from the stored pods and statuses: no copy of each pod.
    pub fn pod_list_json(&self) -> serde_json::Result<Vec<u8>> {
        use serde::ser::{SerializeSeq, SerializeStruct};
        /// A pod with its stored status, serialized as k8s-openapi does.
        struct View<'a>(&'a Pod, Option<&'a PodStatus>);
        impl serde::Serialize for View<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let (p, status) = (self.0, self.1.or(self.0.status.as_ref()));
                let n = 3 + usize::from(p.spec.is_some()) + usize::from(status.is_some());
                let mut st = s.serialize_struct("Pod", n)?;
                st.serialize_field("apiVersion", "v1")?;
                st.serialize_field("kind", "Pod")?;
                st.serialize_field("metadata", &p.metadata)?;
                if let Some(spec) = &p.spec {
                    st.serialize_field("spec", spec)?;
                }
                if let Some(status) = status {
                    st.serialize_field("status", status)?;
                }
                st.end()
            }
        }
        struct Items<'a>(&'a StatusManager);
        impl serde::Serialize for Items<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                for e in self.0.pods.values().filter(|e| e.desired) {
                    seq.serialize_element(&View(&e.pod, e.status.as_ref()))?;
                }
                seq.end()
            }
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct List<'a> {
            kind: &'static str,
            api_version: &'static str,
            metadata: Empty,
            items: Items<'a>,
        }
        #[derive(serde::Serialize)]
        struct Empty {}
        serde_json::to_vec(&List {
            kind: "PodList",
            api_version: "v1",
            metadata: Empty {},
            items: Items(self),
        })
    }

    /// `/pods`: a v1 `PodList`.
    pub fn pod_list(&self) -> Value {
        pod_list(self.pods())
    }

    /// Pods whose pod or status changed after `version`, and the current
    /// version (for a status writer).
    pub fn changed_since(&self, version: u64) -> (Vec<Pod>, u64) {
        let pods = self
            .pods
            .iter()
            .filter(|(_, e)| e.version > version && e.status.is_some())
            .filter_map(|(u, _)| self.pod_with_status(u))
            .collect();
        (pods, self.version)
    }
}

/// A v1 `PodList` of `items`.
pub fn pod_list(items: Vec<Pod>) -> Value {
    json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta::Time;

    fn pod(uid: &str) -> Rc<Pod> {
        Rc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("p-{uid}"), "namespace": "default", "uid": uid},
                "spec": {"containers": [{"name": "c", "image": "img"}]}
            }))
            .unwrap(),
        )
    }

    fn status(phase: &str, start: i64) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            start_time: Some(Time(jiff::Timestamp::from_second(start).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn terminal_phase_and_start_time_stick() {
        let mut m = StatusManager::new();
        m.set_pod(pod("u1"));
        assert!(m.set_status("u1", status("Running", 100)));
        assert!(!m.set_status("u1", status("Running", 100)));
        let mut failed = status("Failed", 200);
        failed.reason = Some("DeadlineExceeded".into());
        assert!(m.set_status("u1", failed));
        let s = m.status("u1").unwrap();
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.start_time, status("x", 100).start_time);
        m.set_status("u1", status("Running", 300));
        let s = m.status("u1").unwrap();
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
    }

    #[test]
    fn pod_list_has_desired_pods_with_status() {
        let mut m = StatusManager::new();
        m.set_pod(pod("u1"));
        m.set_pod(pod("u2"));
        m.set_status("u1", status("Running", 1));
        // Unknown pods take no status.
        assert!(!m.set_status("zz", status("Running", 1)));
        let l = m.pod_list();
        assert_eq!(l["kind"], "PodList");
        assert_eq!(l["apiVersion"], "v1");
        let items = l["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["metadata"]["uid"], "u1");
        assert_eq!(items[0]["status"]["phase"], "Running");
        assert!(items[1].get("status").is_none() || items[1]["status"].is_null());
        let (changed, v) = m.changed_since(0);
        assert_eq!(changed.len(), 1);
        assert!(m.changed_since(v).0.is_empty());
        m.remove_pod("u1");
        assert_eq!(m.pod_list()["items"].as_array().unwrap().len(), 1);
        assert!(m.status("u1").is_some());
        m.forget("u1");
        assert!(m.status("u1").is_none());
    }

    #[test]
    fn pod_list_json_writes_what_the_copies_would() {
        let mut m = StatusManager::new();
        m.set_pod(pod("u1"));
        m.set_pod(pod("u2"));
        let mut own = (*pod("u3")).clone();
        own.status = Some(status("Pending", 5));
        m.set_pod(Rc::new(own));
        m.set_pod(pod("u4"));
        m.set_status("u1", status("Running", 1));
        m.set_status("u3", status("Running", 7));
        m.remove_pod("u4");
        assert_eq!(
            m.pod_list_json().unwrap(),
            crate::server::pod_list_json(m.pods()).unwrap()
        );
    }
}
