//! Pod workers: the per-pod lifecycle state machine of upstream's
//! `podWorkers` (pkg/kubelet/pod_workers.go), without goroutines.
//!
//! Every pod UID has one [`PodWorker`] record. Updates (config changes, a
//! runtime change, a probe result, a timer) only mark the record pending
//! and store the newest spec; the sync loop then makes sure one task runs
//! for the UID, and that task asks [`PodWorkers::next_work`] what to do
//! until nothing is pending. So the work of one pod is serialised, the
//! newest spec always wins, and an idle pod costs no task at all.
//!
//! Lifecycle, as upstream: **syncing** (SyncPod, repeatedly) → on a kill
//! request (source removed it, graceful delete, the pod reached a terminal
//! phase, shutdown) **terminating** (SyncTerminatingPod: stop everything
//! within the grace period) → **terminated** (SyncTerminatedPod: release
//! volumes; containers stay for status) → when no source wants the pod
//! any more, **removed** (runtime state, directories and the record go).
//!
//! Static pods: a pod whose full name (`name_namespace`) is still used by
//! another, older pod of this node waits until that one has terminated
//! (upstream `allowStaticPodStart`): an edited manifest gets a new UID, and
//! the new pod must not run beside the old one (same hostPort, same files).
//!
//! Pure: time comes in as a parameter, effects are the caller's.

use crate::api::core::Pod;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Syncing,
    Terminating,
    Terminated,
}

/// What a worker task does next for its pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Upstream SyncPod with the newest spec.
    Sync(Rc<Pod>),
    /// Stop every container and the sandbox. `grace`: a deletion's
    /// override of the pod's grace period (seconds).
    Terminating { pod: Rc<Pod>, grace: Option<i64> },
    /// Release what the stopped pod still holds (volumes).
    Terminated(Rc<Pod>),
    /// No source wants the terminated pod: remove its containers, sandbox,
    /// directories and logs.
    Remove(Rc<Pod>),
}

/// The result of one piece of [`Work`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// SyncPod finished. `terminal`: the pod reached Succeeded or Failed.
    /// `wake`: when it must be synced again at the latest (back-off expiry,
    /// resync period).
    Synced { terminal: bool, wake: Instant },
    /// The step failed; try it again at `retry`.
    Failed { retry: Instant },
    /// The step finished.
    Done,
}

/// Kinds of update the sync loop delivers (upstream `SyncPodType`, plus
/// Remove for a pod no source has any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    Create,
    Update,
    /// Re-sync without a spec change (runtime event, probe, timer).
    Sync,
    /// Terminate, optionally with a shorter grace period.
    Kill {
        grace: Option<i64>,
    },
    /// The sources no longer have the pod: terminate it and forget it.
    Remove,
}

#[derive(Debug, Clone)]
pub struct PodWorker {
    pub pod: Rc<Pod>,
    pub lifecycle: Lifecycle,
    /// `name_namespace`.
    pub full_name: String,
    /// From a file or URL source: subject to the start gate.
    pub is_static: bool,
    /// Allowed to start (static gate passed), and SyncPod ran at least once.
    pub started: bool,
    /// Termination requested, with the grace override.
    pub kill: Option<Option<i64>>,
    pub terminated_synced: bool,
    /// No source wants the pod.
    pub removed: bool,
    /// The Remove step ran.
    pub cleaned: bool,
    /// The same UID came back while it was being terminated: start it
    /// afresh once it is gone.
    pub restart_requested: bool,
    pub pending: bool,
    /// A task is working on this pod.
    pub working: bool,
    /// Sync again at this time (back-off, resync, retry).
    pub next_sync: Option<Instant>,
}

impl PodWorker {
    fn new(pod: Rc<Pod>, is_static: bool) -> Self {
        PodWorker {
            full_name: crate::sources::pod_full_name(&pod),
            pod,
            lifecycle: Lifecycle::Syncing,
            is_static,
            started: false,
            kill: None,
            terminated_synced: false,
            removed: false,
            cleaned: false,
            restart_requested: false,
            pending: true,
            working: false,
            next_sync: None,
        }
    }

    /// Terminated and released (upstream `IsFinished`).
    pub fn finished(&self) -> bool {
        self.lifecycle == Lifecycle::Terminated && self.terminated_synced
    }

    /// Upstream `IsTerminationRequested`.
    pub fn termination_requested(&self) -> bool {
        self.kill.is_some() || self.lifecycle != Lifecycle::Syncing
    }

    /// Its containers may be running: started and not yet finished.
    fn holds_name(&self) -> bool {
        self.started && !self.finished()
    }
}

/// Whether a pod came from a static source (file or URL).
pub fn is_static_pod(pod: &Pod) -> bool {
    matches!(
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::sources::CONFIG_SOURCE))
            .map(String::as_str),
        Some(crate::sources::FILE_SOURCE | crate::sources::HTTP_SOURCE)
    )
}

/// The pod workers of the node, by UID.
#[derive(Debug, Default)]
pub struct PodWorkers {
    workers: BTreeMap<String, PodWorker>,
    /// Arrival order of UIDs (the static start gate lets the oldest go first).
    seq: BTreeMap<String, u64>,
    next_seq: u64,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl PodWorkers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, uid: &str) -> Option<&PodWorker> {
        self.workers.get(uid)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &PodWorker)> {
        self.workers.iter()
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Applies an update. Returns whether the UID now has work pending (the
    /// caller then makes sure a task runs for it).
    pub fn update(&mut self, pod: Rc<Pod>, kind: Update) -> bool {
        let uid = uid_of(&pod);
        if uid.is_empty() {
            return false;
        }
        let is_static = is_static_pod(&pod);
        let Some(w) = self.workers.get_mut(&uid) else {
            match kind {
                // Nothing ever ran for it: there is nothing to stop.
                Update::Kill { .. } | Update::Remove | Update::Sync => return false,
                Update::Create | Update::Update => {
                    self.seq.insert(uid.clone(), self.next_seq);
                    self.next_seq += 1;
                    self.workers
                        .insert(uid.clone(), PodWorker::new(pod, is_static));
                    return true;
                }
            }
        };
        match kind {
            Update::Create | Update::Update => {
                if w.termination_requested() {
                    if w.removed && kind == Update::Create {
                        // Wanted again (a deleted manifest put back):
                        // finish the termination, then start over.
                        w.restart_requested = true;
                        w.removed = false;
                        w.pod = pod;
                    }
                    // A terminating pod does not take spec updates.
                    return w.pending;
                }
                w.pod = pod;
                w.pending = true;
            }
            Update::Sync => {
                if w.finished() && (!w.removed || w.cleaned) {
                    return false;
                }
                w.pending = true;
            }
            Update::Kill { grace } => {
                if !w.started && !w.is_static {
                    // An API pod marked for deletion may have containers from
                    // before a picolet restart: stop whatever runs for it.
                    // (Static pods that never started hold nothing: their
                    // UID is their content.)
                    w.started = true;
                }
                request_kill(w, grace);
                if !w.termination_requested() {
                    return false;
                }
            }
            Update::Remove => {
                w.removed = true;
                w.restart_requested = false;
                request_kill(w, None);
            }
        }
        w.pending
    }

    /// A newer copy of the pod from its source with only its status
    /// changed: kept for the next sync, without scheduling one. Returns
    /// whether the worker took it.
    pub fn refresh_pod(&mut self, pod: Rc<Pod>) -> bool {
        match self.workers.get_mut(&uid_of(&pod)) {
            Some(w) if !w.termination_requested() => {
                w.pod = pod;
                true
            }
            _ => false,
        }
    }

    /// Takes over a pod the runtime runs but no source wants (found by
    /// housekeeping, e.g. after its manifest went while picolet was down):
    /// it is terminated and removed like a pod whose manifest was deleted.
    /// Returns false when the UID already has a worker.
    pub fn adopt_orphan(&mut self, pod: Rc<Pod>) -> bool {
        let uid = uid_of(&pod);
        if uid.is_empty() || self.workers.contains_key(&uid) {
            return false;
        }
        let mut w = PodWorker::new(pod, false);
        w.started = true;
        w.removed = true;
        w.kill = Some(None);
        self.seq.insert(uid.clone(), self.next_seq);
        self.next_seq += 1;
        self.workers.insert(uid, w);
        true
    }

    /// Marks `uid` busy when it has pending work and no task yet; returns
    /// whether the caller must start a task for it.
    pub fn mark_working(&mut self, uid: &str) -> bool {
        match self.workers.get_mut(uid) {
            Some(w) if w.pending && !w.working => {
                w.working = true;
                true
            }
            _ => false,
        }
    }

    /// The next piece of work for `uid`, marking the worker busy; `None`
    /// marks it idle (the task should end).
    pub fn next_work(&mut self, uid: &str) -> Option<Work> {
        let gate_open = self.static_gate_open(uid);
        let w = self.workers.get_mut(uid)?;
        let work = next_work_of(w, gate_open);
        w.working = work.is_some();
        if work.is_some() {
            w.pending = false;
        }
        work
    }

    /// Records the outcome of the work `next_work` gave. Returns the UIDs
    /// that should be kicked (static pods waiting for this one's name, the
    /// pod itself when more work followed).
    pub fn complete(&mut self, uid: &str, work: &Work, outcome: Outcome) -> Vec<String> {
        let mut kick = Vec::new();
        let Some(w) = self.workers.get_mut(uid) else {
            return kick;
        };
        match (work, outcome) {
            (_, Outcome::Failed { retry }) => {
                w.next_sync = Some(retry);
            }
            (Work::Sync(_), Outcome::Synced { terminal, wake }) => {
                w.next_sync = Some(wake);
                if terminal {
                    request_kill(w, None);
                }
            }
            (Work::Terminating { .. }, _) => {
                w.lifecycle = Lifecycle::Terminated;
                w.next_sync = None;
                w.pending = true;
            }
            (Work::Terminated(_), _) => {
                w.terminated_synced = true;
                w.next_sync = None;
                if w.removed && !w.cleaned {
                    w.pending = true;
                }
                let name = w.full_name.clone();
                kick.extend(self.waiting_for(&name, uid));
            }
            (Work::Remove(_), _) => {
                w.cleaned = true;
                w.next_sync = None;
            }
            (Work::Sync(_), Outcome::Done) => {}
        }
        kick
    }

    /// Finished workers of pods no source wants, and pods that were wanted
    /// again, are dealt with: the former forgotten, the latter restarted.
    /// Returns the UIDs restarted (to be kicked) and those forgotten.
    pub fn housekeep(&mut self) -> (Vec<String>, Vec<String>) {
        let mut restarted = Vec::new();
        let mut forgotten = Vec::new();
        let uids: Vec<String> = self.workers.keys().cloned().collect();
        for uid in uids {
            let Some(w) = self.workers.get(&uid) else {
                continue;
            };
            if w.working || !w.finished() {
                continue;
            }
            if w.restart_requested {
                let fresh = PodWorker::new(w.pod.clone(), w.is_static);
                self.workers.insert(uid.clone(), fresh);
                restarted.push(uid);
            } else if w.removed && w.cleaned {
                self.workers.remove(&uid);
                self.seq.remove(&uid);
                forgotten.push(uid);
            }
        }
        (restarted, forgotten)
    }

    /// UIDs whose timer is due, their timers cleared and work marked pending.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for (uid, w) in self.workers.iter_mut() {
            if w.next_sync.is_some_and(|t| t <= now) {
                w.next_sync = None;
                if !(w.finished() && (!w.removed || w.cleaned)) {
                    w.pending = true;
                    out.push(uid.clone());
                }
            }
        }
        out
    }

    /// The earliest timer of any worker.
    pub fn next_timer(&self) -> Option<Instant> {
        self.workers.values().filter_map(|w| w.next_sync).min()
    }

    /// Every worker is finished (terminated), e.g. at shutdown.
    pub fn all_finished(&self) -> bool {
        self.workers
            .values()
            .all(|w| w.finished() || (!w.started && w.kill.is_some()))
    }

    /// Whether a static pod may start: no other pod of the same full name
    /// still holds it, and no older one waits for it first.
    fn static_gate_open(&self, uid: &str) -> bool {
        let Some(w) = self.workers.get(uid) else {
            return false;
        };
        if !w.is_static || w.started {
            return true;
        }
        let my_seq = self.seq.get(uid).copied().unwrap_or(u64::MAX);
        !self.workers.iter().any(|(other_uid, o)| {
            other_uid != uid
                && o.full_name == w.full_name
                && (o.holds_name()
                    || (!o.started
                        && !o.termination_requested()
                        && self.seq.get(other_uid).copied().unwrap_or(u64::MAX) < my_seq))
        })
    }

    /// Static pods of `full_name` (other than `uid`) that wait to start.
    fn waiting_for(&self, full_name: &str, uid: &str) -> Vec<String> {
        self.workers
            .iter()
            .filter(|(u, w)| {
                u.as_str() != uid && w.full_name == full_name && !w.started && w.pending
            })
            .map(|(u, _)| u.clone())
            .collect()
    }
}

fn request_kill(w: &mut PodWorker, grace: Option<i64>) {
    if !w.started && w.lifecycle == Lifecycle::Syncing {
        // Never ran: nothing to stop or release.
        w.kill = Some(grace);
        w.lifecycle = Lifecycle::Terminated;
        w.terminated_synced = true;
        w.cleaned = true;
        w.pending = false;
        return;
    }
    if w.lifecycle == Lifecycle::Terminated {
        // Already stopped; a removal still has to clean up.
        w.pending = w.pending || (w.removed && !w.cleaned) || !w.terminated_synced;
        return;
    }
    w.kill = Some(match (w.kill, grace) {
        // A deletion may only shorten the grace period.
        (Some(Some(old)), Some(new)) => Some(old.min(new)),
        (Some(Some(old)), None) => Some(old),
        (_, g) => g,
    });
    w.pending = true;
}

fn next_work_of(w: &mut PodWorker, gate_open: bool) -> Option<Work> {
    if !w.pending {
        return None;
    }
    match w.lifecycle {
        Lifecycle::Syncing => {
            if let Some(grace) = w.kill {
                w.lifecycle = Lifecycle::Terminating;
                return Some(Work::Terminating {
                    pod: w.pod.clone(),
                    grace,
                });
            }
            if !w.started {
                if !gate_open {
                    // Stays pending; kicked when the older pod is gone.
                    return None;
                }
                w.started = true;
            }
            Some(Work::Sync(w.pod.clone()))
        }
        Lifecycle::Terminating => Some(Work::Terminating {
            pod: w.pod.clone(),
            grace: w.kill.flatten(),
        }),
        Lifecycle::Terminated => {
            if !w.terminated_synced {
                Some(Work::Terminated(w.pod.clone()))
            } else if w.removed && !w.cleaned {
                Some(Work::Remove(w.pod.clone()))
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn pod(name: &str, uid: &str) -> Rc<Pod> {
        Rc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": uid,
                             "annotations": {"kubernetes.io/config.source": "file"}},
                "spec": {"containers": [{"name": "c", "image": "img"}]}
            }))
            .unwrap(),
        )
    }

    fn kind(w: &Option<Work>) -> &'static str {
        match w {
            None => "none",
            Some(Work::Sync(_)) => "sync",
            Some(Work::Terminating { .. }) => "terminating",
            Some(Work::Terminated(_)) => "terminated",
            Some(Work::Remove(_)) => "remove",
        }
    }

    fn synced(now: Instant) -> Outcome {
        Outcome::Synced {
            terminal: false,
            wake: now + Duration::from_secs(60),
        }
    }

    /// Runs the worker of `uid` until idle, answering each work with
    /// `outcome`; returns the kinds of work done.
    fn drain(ws: &mut PodWorkers, uid: &str, outcome: Outcome) -> Vec<&'static str> {
        let mut done = Vec::new();
        loop {
            let w = ws.next_work(uid);
            done.push(kind(&w));
            let Some(w) = w else { break };
            ws.complete(uid, &w, outcome);
        }
        done
    }

    #[test]
    fn full_lifecycle_of_a_removed_pod() {
        let now = Instant::now();
        let mut ws = PodWorkers::new();
        assert!(ws.update(pod("a", "u1"), Update::Create));
        assert_eq!(drain(&mut ws, "u1", synced(now)), vec!["sync", "none"]);
        assert!(!ws.get("u1").unwrap().working);
        // Runtime event: one more sync.
        assert!(ws.update(pod("a", "u1"), Update::Sync));
        assert_eq!(drain(&mut ws, "u1", synced(now)), vec!["sync", "none"]);
        // Removed: terminate, release, remove, then forgotten.
        assert!(ws.update(pod("a", "u1"), Update::Remove));
        assert_eq!(
            drain(&mut ws, "u1", Outcome::Done),
            vec!["terminating", "terminated", "remove", "none"]
        );
        assert_eq!(ws.housekeep(), (vec![], vec!["u1".to_string()]));
        assert!(ws.is_empty());
    }

    #[test]
    fn latest_spec_wins_while_busy() {
        let now = Instant::now();
        let mut ws = PodWorkers::new();
        ws.update(pod("a", "u1"), Update::Create);
        let w = ws.next_work("u1").unwrap();
        assert!(ws.get("u1").unwrap().working);
        // Two updates arrive while the first sync runs: one more sync, with
        // the newest spec.
        let mut p2 = (*pod("a", "u1")).clone();
        p2.metadata.labels = Some([("v".to_string(), "2".to_string())].into());
        ws.update(Rc::new(p2.clone()), Update::Update);
        let mut p3 = p2.clone();
        p3.metadata.labels = Some([("v".to_string(), "3".to_string())].into());
        ws.update(Rc::new(p3.clone()), Update::Update);
        ws.complete("u1", &w, synced(now));
        match ws.next_work("u1") {
            Some(Work::Sync(p)) => assert_eq!(*p, p3),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn terminal_phase_terminates_but_keeps_the_pod() {
        let now = Instant::now();
        let mut ws = PodWorkers::new();
        ws.update(pod("job", "u1"), Update::Create);
        let w = ws.next_work("u1").unwrap();
        ws.complete(
            "u1",
            &w,
            Outcome::Synced {
                terminal: true,
                wake: now,
            },
        );
        assert_eq!(
            drain(&mut ws, "u1", Outcome::Done),
            vec!["terminating", "terminated", "none"]
        );
        let wk = ws.get("u1").unwrap();
        assert!(wk.finished() && !wk.removed);
        // Later syncs do nothing; housekeeping keeps it.
        assert!(!ws.update(pod("job", "u1"), Update::Sync));
        assert_eq!(ws.housekeep(), (vec![], vec![]));
        assert_eq!(ws.len(), 1);
        // The manifest goes: only the removal step is left.
        assert!(ws.update(pod("job", "u1"), Update::Remove));
        assert_eq!(drain(&mut ws, "u1", Outcome::Done), vec!["remove", "none"]);
        assert_eq!(ws.housekeep().1, vec!["u1".to_string()]);
    }

    #[test]
    fn edited_static_pod_waits_for_the_old_one() {
        let now = Instant::now();
        let mut ws = PodWorkers::new();
        ws.update(pod("web", "old"), Update::Create);
        drain(&mut ws, "old", synced(now));
        // Manifest edited: REMOVE old, ADD new (same full name).
        ws.update(pod("web", "old"), Update::Remove);
        ws.update(pod("web", "new"), Update::Create);
        // The new pod cannot start yet.
        assert_eq!(kind(&ws.next_work("new")), "none");
        assert!(ws.get("new").unwrap().pending);
        let w = ws.next_work("old").unwrap();
        assert_eq!(kind(&Some(w.clone())), "terminating");
        ws.complete("old", &w, Outcome::Done);
        assert_eq!(kind(&ws.next_work("new")), "none");
        let w = ws.next_work("old").unwrap();
        assert_eq!(kind(&Some(w.clone())), "terminated");
        // Released: the new pod is kicked.
        assert_eq!(ws.complete("old", &w, Outcome::Done), vec!["new"]);
        assert_eq!(kind(&ws.next_work("new")), "sync");
    }

    #[test]
    fn kill_before_start_needs_no_termination() {
        let mut ws = PodWorkers::new();
        ws.update(pod("web", "old"), Update::Create);
        ws.next_work("old");
        ws.update(pod("web", "mid"), Update::Create);
        ws.update(pod("web", "mid"), Update::Remove);
        let m = ws.get("mid").unwrap();
        assert!(m.finished() && m.cleaned && !m.pending);
        assert_eq!(ws.housekeep().1, vec!["mid".to_string()]);
        // Unknown pods: kills and syncs are ignored.
        assert!(!ws.update(pod("x", "zz"), Update::Sync));
        assert!(!ws.update(pod("x", "zz"), Update::Kill { grace: Some(1) }));
    }

    #[test]
    fn grace_override_only_shortens() {
        let now = Instant::now();
        let mut ws = PodWorkers::new();
        ws.update(pod("a", "u1"), Update::Create);
        drain(&mut ws, "u1", synced(now));
        ws.update(pod("a", "u1"), Update::Kill { grace: Some(20) });
        ws.update(pod("a", "u1"), Update::Kill { grace: Some(40) });
        ws.update(pod("a", "u1"), Update::Kill { grace: Some(5) });
        match ws.next_work("u1") {
            Some(Work::Terminating { grace, .. }) => assert_eq!(grace, Some(5)),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn same_uid_back_while_terminating_restarts_after() {
        let now = Instant::now();
        let mut ws = PodWorkers::new();
        ws.update(pod("a", "u1"), Update::Create);
        drain(&mut ws, "u1", synced(now));
        ws.update(pod("a", "u1"), Update::Remove);
        let w = ws.next_work("u1").unwrap();
        // The manifest is put back while the pod stops.
        ws.update(pod("a", "u1"), Update::Create);
        ws.complete("u1", &w, Outcome::Done);
        // Terminated is still carried out, no removal.
        assert_eq!(
            drain(&mut ws, "u1", Outcome::Done),
            vec!["terminated", "none"]
        );
        assert_eq!(ws.housekeep(), (vec!["u1".to_string()], vec![]));
        assert_eq!(drain(&mut ws, "u1", synced(now)), vec!["sync", "none"]);
    }

    #[test]
    fn timers_and_failures() {
        let now = Instant::now();
        let mut ws = PodWorkers::new();
        ws.update(pod("a", "u1"), Update::Create);
        let w = ws.next_work("u1").unwrap();
        ws.complete(
            "u1",
            &w,
            Outcome::Failed {
                retry: now + Duration::from_secs(1),
            },
        );
        assert_eq!(ws.next_timer(), Some(now + Duration::from_secs(1)));
        assert!(ws.due(now).is_empty());
        assert_eq!(ws.due(now + Duration::from_secs(2)), vec!["u1".to_string()]);
        assert_eq!(ws.next_timer(), None);
        assert_eq!(kind(&ws.next_work("u1")), "sync");
    }

    #[test]
    fn orphans_are_terminated_and_removed() {
        let mut ws = PodWorkers::new();
        assert!(ws.adopt_orphan(pod("gone", "u9")));
        assert!(!ws.adopt_orphan(pod("gone", "u9")));
        assert!(ws.mark_working("u9"));
        assert_eq!(
            drain(&mut ws, "u9", Outcome::Done),
            vec!["terminating", "terminated", "remove", "none"]
        );
        assert_eq!(ws.housekeep().1, vec!["u9".to_string()]);
    }

    #[test]
    fn all_finished_for_shutdown() {
        let now = Instant::now();
        let mut ws = PodWorkers::new();
        ws.update(pod("a", "u1"), Update::Create);
        drain(&mut ws, "u1", synced(now));
        assert!(!ws.all_finished());
        ws.update(pod("a", "u1"), Update::Kill { grace: None });
        drain(&mut ws, "u1", Outcome::Done);
        assert!(ws.all_finished());
    }
}
