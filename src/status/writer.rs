//! Pod statuses to the API server (upstream status_manager's `syncPod`):
//! one task sends each pod's status when it changed, as a strategic-merge
//! PATCH of `pods/<name>/status` computed against the server's copy (from
//! the pod watch, so no GET first), carrying the pod's UID as a
//! precondition. A static pod's status goes to its mirror pod.
//!
//! Rules kept from upstream:
//! - conditions the kubelet does not own (DisruptionTarget, readiness
//!   gates) stay as the server has them;
//! - a terminal phase on the server is never left; restart counts never go
//!   down;
//! - a failed send is retried with back-off, only the newest status is
//!   ever sent; a pod gone from the server (404, or a UID conflict) is
//!   dropped;
//! - once a pod marked for deletion has been terminated by its worker
//!   (containers stopped, volumes released), its final status is sent and
//!   the object deleted with grace period 0 and a UID precondition
//!   (`canBeDeleted`).

use super::manager::{Pending, StatusManager};
use crate::api::core::{Pod, PodStatus};
use crate::kube::{Client, DeleteParams, Error, Patch};
use crate::sources::api::SharedApiPods;
use crate::util::Backoff;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Conditions the kubelet owns (upstream `PodConditionsByKubelet`).
const KUBELET_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
];

/// Re-check everything this often even without a change (upstream's
/// status manager syncs every 10 s).
const SYNC_PERIOD: Duration = Duration::from_secs(10);

fn is_terminal(s: Option<&PodStatus>) -> bool {
    matches!(
        s.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The status to send: ours, with the conditions others own taken from
/// the server, the server's terminal phase kept and restart counts never
/// lower than the server's (upstream `mergePodStatus` and the status
/// manager's checks). `None` when ours would leave a terminal phase.
pub fn merge_for_server(server: Option<&PodStatus>, ours: &PodStatus) -> Option<PodStatus> {
    let mut s = ours.clone();
    // The API's Go types always carry `state` and `lastState` (as `{}`):
    // say the same, or every comparison with the server's copy differs.
    for c in s
        .container_statuses
        .iter_mut()
        .chain(s.init_container_statuses.iter_mut())
        .flatten()
    {
        c.state.get_or_insert_with(Default::default);
        c.last_state.get_or_insert_with(Default::default);
    }
    let Some(server) = server else {
        return Some(s);
    };
    if is_terminal(Some(server)) && !is_terminal(Some(&s)) {
        return None;
    }
    let mut conds: Vec<_> = server
        .conditions
        .iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    for c in s.conditions.iter().flatten() {
        // Ours, or another's the server does not have yet.
        if KUBELET_CONDITIONS.contains(&c.type_.as_str())
            || !conds.iter().any(|o| o.type_ == c.type_)
        {
            conds.push(c.clone());
        }
    }
    s.conditions = (!conds.is_empty()).then_some(conds);
    for (mine, theirs) in [
        (&mut s.container_statuses, &server.container_statuses),
        (
            &mut s.init_container_statuses,
            &server.init_container_statuses,
        ),
    ] {
        for c in mine.iter_mut().flatten() {
            if let Some(t) = theirs.iter().flatten().find(|t| t.name == c.name) {
                c.restart_count = c.restart_count.max(t.restart_count);
            }
        }
    }
    Some(s)
}

/// The PATCH body from the server's status to `new`, with the UID as a
/// precondition (upstream `preparePatchBytesForPodStatus`); `None` when
/// nothing but the UID would be in it.
pub fn status_patch(uid: &str, server: Option<&PodStatus>, new: &PodStatus) -> Option<Value> {
    let old = json!({ "status": server });
    let new_v = json!({ "metadata": {"uid": uid}, "status": new });
    let p = crate::kube::merge::two_way(&old, &new_v, &crate::kube::merge::pod_keys);
    p.get("status")
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))?;
    Some(p)
}

/// Where a pod's status goes: (namespace, name, UID, server status).
fn target(api: &SharedApiPods, p: &Pending) -> Option<(String, String, String, Rc<Pod>)> {
    let store = api.borrow();
    let server = if crate::sync::workers::is_static_pod(&p.pod) {
        let m = store.mirror(&crate::sources::pod_full_name(&p.pod))?;
        // A mirror of an older version of the static pod is replaced by the
        // mirror manager first.
        let hash = p
            .pod
            .metadata
            .annotations
            .as_ref()?
            .get(crate::sources::CONFIG_HASH)?;
        let mirror_of = m
            .metadata
            .annotations
            .as_ref()?
            .get(crate::sources::CONFIG_MIRROR)?;
        if hash != mirror_of || m.metadata.deletion_timestamp.is_some() {
            return None;
        }
        m
    } else {
        store.pod(&p.uid)?
    };
    Some((
        server.metadata.namespace.clone().unwrap_or_default(),
        server.metadata.name.clone().unwrap_or_default(),
        server.metadata.uid.clone().unwrap_or_default(),
        server,
    ))
}

pub struct StatusWriter {
    client: Rc<Client>,
    status: Rc<RefCell<StatusManager>>,
    api: SharedApiPods,
    /// Each pod's last send (or give-up).
    sent: HashMap<String, SentState>,
    /// Pods whose final DELETE went out.
    deleted: HashSet<String>,
    /// Failed pods wait until then.
    retry_at: HashMap<String, (Instant, Backoff)>,
    failing: bool,
    /// PATCHes sent (for tests and benchmarks).
    pub patches: Rc<std::cell::Cell<u64>>,
}

/// What the last send of a pod left behind.
struct SentState {
    version: u64,
    /// The server object's UID and resourceVersion afterwards.
    server: Option<(String, Option<String>)>,
}

enum Sent {
    /// Done with this version; the server copy's UID and resourceVersion.
    Done(Option<(String, Option<String>)>),
    /// The server has no object for it yet (a mirror pod to come): looked
    /// at again when the server's copies change.
    NotYet,
    /// Try again later.
    Retry(Option<Duration>),
}

impl StatusWriter {
    pub fn new(
        client: Rc<Client>,
        status: Rc<RefCell<StatusManager>>,
        api: SharedApiPods,
    ) -> StatusWriter {
        StatusWriter {
            client,
            status,
            api,
            sent: HashMap::new(),
            deleted: HashSet::new(),
            retry_at: HashMap::new(),
            failing: false,
            patches: Rc::new(std::cell::Cell::new(0)),
        }
    }

    /// Runs until dropped. `api_changed` wakes it when the server's copies
    /// change (a pod appears in the store, a mirror pod is created).
    pub async fn run(mut self, api_changed: smol::channel::Receiver<()>) {
        let (tx, rx) = smol::channel::bounded(1);
        self.status.borrow_mut().subscribe(tx);
        loop {
            self.sync_once().await;
            let next_retry = self.retry_at.values().map(|(t, _)| *t).min();
            let wait = next_retry
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(SYNC_PERIOD)
                .min(SYNC_PERIOD);
            futures_lite::future::or(
                async {
                    let _ = rx.recv().await;
                },
                futures_lite::future::or(
                    async {
                        let _ = api_changed.recv().await;
                    },
                    async {
                        async_io::Timer::after(wait).await;
                    },
                ),
            )
            .await;
        }
    }

    /// Sends what changed: pods whose status changed since it was last
    /// sent, and pods whose server copy changed under us (another writer,
    /// a re-created mirror pod: upstream's `needsReconcile`). Forgets pods
    /// the manager forgot.
    async fn sync_once(&mut self) {
        let versions = self.status.borrow().versions();
        let now = Instant::now();
        for (uid, version) in &versions {
            if self.retry_at.get(uid).is_some_and(|(t, _)| *t > now) {
                continue;
            }
            let stale = match self.sent.get(uid) {
                None => true,
                Some(s) => s.version < *version || self.server_changed(uid, s),
            };
            if !stale {
                continue;
            }
            let Some(p) = self.status.borrow().pending(uid) else {
                continue;
            };
            match self.send(&p).await {
                Sent::Done(server) => {
                    self.sent.insert(
                        p.uid.clone(),
                        SentState {
                            version: p.version,
                            server,
                        },
                    );
                    self.retry_at.remove(&p.uid);
                }
                Sent::NotYet => {}
                Sent::Retry(after) => {
                    let e = self.retry_at.entry(p.uid.clone()).or_insert_with(|| {
                        (
                            now,
                            Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 0.5),
                        )
                    });
                    let d = e.1.next_delay().max(after.unwrap_or_default());
                    e.0 = Instant::now() + d;
                }
            }
        }
        let alive: HashSet<&String> = versions.iter().map(|(u, _)| u).collect();
        self.sent.retain(|u, _| alive.contains(u));
        self.deleted.retain(|u| alive.contains(u));
        self.retry_at.retain(|u, _| alive.contains(u));
    }

    /// Whether the server's copy is no longer the one the last send left.
    fn server_changed(&self, uid: &str, s: &SentState) -> bool {
        let Some(p) = self.status.borrow().pending(uid) else {
            return false;
        };
        let now =
            target(&self.api, &p).map(|(_, _, u, pod)| (u, pod.metadata.resource_version.clone()));
        now != s.server
    }

    fn failed(&mut self, what: &str, e: &Error) -> Sent {
        if e.is_retryable() {
            if !self.failing && !e.is_transport() {
                log::warn!("{what}: {e}; retrying");
            } else {
                log::debug!("{what}: {e}");
            }
            self.failing = true;
            return Sent::Retry(e.retry_after());
        }
        // 404 / 409: the pod is gone or is another pod now: nothing to do.
        if e.is_not_found() || e.is_conflict() {
            log::debug!("{what}: {e}; dropped");
        } else {
            log::warn!("{what}: {e}; not retried");
        }
        Sent::Done(None)
    }

    async fn send(&mut self, p: &Pending) -> Sent {
        let Some((ns, name, server_uid, server)) = target(&self.api, p) else {
            log::debug!(
                "pod {}: no API object for its status yet",
                crate::sources::pod_full_name(&p.pod)
            );
            return Sent::NotYet;
        };
        let is_static = crate::sync::workers::is_static_pod(&p.pod);
        let mut left = Some((server_uid.clone(), server.metadata.resource_version.clone()));
        if !is_static && server_uid != p.uid {
            return Sent::Done(left);
        }
        let what = format!("pod {ns}/{name} status");
        if let Some(ours) = &p.status {
            let Some(merged) = merge_for_server(server.status.as_ref(), ours) else {
                log::debug!("{what}: the server has a terminal phase; not sent");
                return Sent::Done(left);
            };
            if let Some(body) = status_patch(&server_uid, server.status.as_ref(), &merged) {
                log::debug!("{what}: sending {body}");
                self.patches.set(self.patches.get() + 1);
                match self
                    .client
                    .patch::<Pod>(Some(&ns), &name, Some("status"), &Patch::Strategic(body))
                    .await
                {
                    Ok(updated) => {
                        if self.failing {
                            log::info!("pod statuses reach the API server again");
                            self.failing = false;
                        }
                        left = Some((
                            server_uid.clone(),
                            updated.metadata.resource_version.clone(),
                        ));
                        self.api.borrow_mut().refresh(updated);
                    }
                    Err(e) => return self.failed(&what, &e),
                }
            }
        }
        // The final DELETE of a pod marked for deletion, once terminated.
        if !is_static
            && p.terminated
            && server.metadata.deletion_timestamp.is_some()
            && !self.deleted.contains(&p.uid)
        {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                uid: Some(p.uid.clone()),
                ..Default::default()
            };
            match self.client.delete::<Pod>(Some(&ns), &name, &params).await {
                Ok(()) => {
                    log::info!("pod {ns}/{name}: terminated; deleted from the API server");
                    self.deleted.insert(p.uid.clone());
                }
                Err(e) if e.is_not_found() || e.is_conflict() => {
                    self.deleted.insert(p.uid.clone());
                }
                Err(e) => return self.failed(&format!("delete pod {ns}/{name}"), &e),
            }
        }
        Sent::Done(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::core::{ContainerStatus, PodCondition};

    fn cond(t: &str, s: &str) -> PodCondition {
        PodCondition {
            type_: t.into(),
            status: s.into(),
            ..Default::default()
        }
    }

    fn st(phase: &str, conds: &[(&str, &str)], restarts: i32) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conds.iter().map(|(t, s)| cond(t, s)).collect()),
            container_statuses: Some(vec![ContainerStatus {
                name: "c".into(),
                restart_count: restarts,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn others_conditions_stay_and_counts_never_drop() {
        let server = st(
            "Running",
            &[("DisruptionTarget", "True"), ("Ready", "False")],
            5,
        );
        let ours = st("Running", &[("Ready", "True"), ("Initialized", "True")], 3);
        let m = merge_for_server(Some(&server), &ours).unwrap();
        let types: Vec<&str> = m
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["DisruptionTarget", "Ready", "Initialized"]);
        assert_eq!(m.container_statuses.unwrap()[0].restart_count, 5);
        // A terminal phase on the server is never left.
        assert!(merge_for_server(Some(&st("Failed", &[], 0)), &ours).is_none());
        assert!(merge_for_server(Some(&st("Failed", &[], 0)), &st("Succeeded", &[], 0)).is_some());
    }

    #[test]
    fn patches_carry_the_uid_and_only_changes() {
        let server = st("Pending", &[("PodScheduled", "True")], 0);
        let ours = st("Running", &[("PodScheduled", "True"), ("Ready", "True")], 0);
        let p = status_patch("u-1", Some(&server), &ours).unwrap();
        assert_eq!(p["metadata"]["uid"], "u-1");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(
            p["status"]["$setElementOrder/conditions"],
            json!([{"type": "PodScheduled"}, {"type": "Ready"}])
        );
        assert_eq!(
            p["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
        assert!(status_patch("u-1", Some(&ours), &ours).is_none());
        // The first report: everything.
        let p = status_patch("u-1", None, &ours).unwrap();
        assert_eq!(p["status"]["phase"], "Running");
    }

    /// While the API is unreachable (or has no copy of the pod yet, as
    /// after an offline start), a pod's statuses are not queued: the
    /// manager keeps one entry per pod holding the newest, the writer's
    /// per-pod maps hold at most one entry per pod, and the newest status
    /// is what goes out once the API answers.
    #[test]
    fn offline_keeps_only_the_latest_status_per_pod() {
        use crate::status::StatusManager;
        crate::rt::block_on(async {
            let kc = crate::kube::Kubeconfig::parse(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
                 users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
                 current-context: x\n",
                std::path::Path::new("/nonexistent/kubeconfig"),
                std::path::Path::new("/nonexistent"),
            )
            .unwrap();
            let client = Rc::new(Client::new(
                crate::kube::transport::Transport::new(kc).unwrap(),
                5.0,
                10,
            ));
            let status = Rc::new(RefCell::new(StatusManager::new()));
            let api = crate::sources::api::ApiPods::new();
            let mut w = StatusWriter::new(client, status.clone(), api);
            let (tx, rx) = smol::channel::bounded(1);
            status.borrow_mut().subscribe(tx);
            let pods: Vec<Rc<Pod>> = (0..3)
                .map(|i| {
                    Rc::new(
                        serde_json::from_value(json!({
                            "metadata": {"name": format!("p{i}"), "namespace": "default", "uid": format!("u{i}")},
                            "spec": {"containers": [{"name": "c", "image": "i"}]}
                        }))
                        .unwrap(),
                    )
                })
                .collect();
            for p in &pods {
                status.borrow_mut().set_pod(p.clone());
            }
            for n in 0..1000 {
                for i in 0..3 {
                    let changed = status
                        .borrow_mut()
                        .set_status(&format!("u{i}"), st("Running", &[], n));
                    assert!(changed);
                }
                w.sync_once().await;
            }
            // One wake-up slot, whatever the number of changes.
            assert!(rx.try_recv().is_ok());
            assert!(rx.try_recv().is_err());
            let versions = status.borrow().versions();
            assert_eq!(versions.len(), 3);
            for i in 0..3 {
                let p = status.borrow().pending(&format!("u{i}")).unwrap();
                let s = p.status.unwrap();
                assert_eq!(s.container_statuses.unwrap()[0].restart_count, 999);
            }
            assert!(w.sent.is_empty(), "nothing was sent while offline");
            assert!(w.retry_at.len() <= 3 && w.deleted.is_empty());
            assert_eq!(w.patches.get(), 0);
        });
    }
}
