//! The sync loop (upstream `syncLoop` / `syncLoopIteration`): one task
//! that waits on
//! - config updates from the sources (ADD / UPDATE / DELETE / REMOVE /
//!   RECONCILE),
//! - the PLEG (pods whose runtime state changed: shim events + relist),
//! - probe results (pods to sync again),
//! - timers: the pod workers' wake-ups (back-off expiry, active deadline,
//!   `syncFrequency` resync, retries) and housekeeping every 2 s,
//! - the end: picolet's own shutdown,
//!
//! and hands each pod's work to its worker ([`Kubelet::dispatch`]). The
//! loop itself never waits on I/O, so a slow runtime call stalls one pod,
//! not the node; [`Health`] notices when the loop or the relist stop
//! turning (`/healthz`).

use super::kubelet::{Images, Kubelet};
use super::pleg::{Pleg, Snapshot};
use super::workers::Update;
use super::ProbeResult;
use crate::api::core::Pod;
use crate::probe::{ProbeKind, ProbeUpdate};
use crate::runtime::Runtime;
use crate::sources::{Op, PodUpdate, Sources};
use async_io::Timer;
use futures_lite::FutureExt;
use smol::channel::Receiver;
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Upstream `housekeepingPeriod`.
pub const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(2);
/// Upstream PLEG `relistThreshold`: a relist older than this is unhealthy.
pub const RELIST_THRESHOLD: Duration = Duration::from_secs(180);
/// Upstream lower bound of the sync-loop health window.
pub const MIN_LOOP_THRESHOLD: Duration = Duration::from_secs(300);

/// Liveness of the loop and the relist, for `/healthz`.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    loop_entry: Cell<Instant>,
    sync_frequency: Duration,
    pleg: Rc<Pleg>,
}

impl Health {
    pub fn new(pleg: Rc<Pleg>, sync_frequency: Duration) -> Rc<Health> {
        let now = Instant::now();
        Rc::new(Health {
            started: now,
            loop_entry: Cell::new(now),
            sync_frequency,
            pleg,
        })
    }

    fn entered(&self) {
        self.loop_entry.set(Instant::now());
    }

    /// Ok, or why picolet is not healthy.
    pub fn check(&self) -> Result<(), String> {
        check_health(
            Instant::now(),
            self.started,
            self.loop_entry.get(),
            self.pleg.last_relist.get(),
            self.sync_frequency,
        )
    }
}

/// Upstream's `syncLoopHealthCheck` (the loop ran within max(2 ×
/// syncFrequency, 5 min)) and PLEG `Healthy` (a relist succeeded within
/// 3 min, counting from start-up before the first).
pub fn check_health(
    now: Instant,
    started: Instant,
    loop_entry: Instant,
    last_relist: Option<Instant>,
    sync_frequency: Duration,
) -> Result<(), String> {
    let window = (sync_frequency * 2).max(MIN_LOOP_THRESHOLD);
    let since_loop = now.saturating_duration_since(loop_entry);
    if since_loop > window {
        return Err(format!(
            "sync loop took longer than expected: last iteration {}s ago (limit {}s)",
            since_loop.as_secs(),
            window.as_secs()
        ));
    }
    let since_relist = now.saturating_duration_since(last_relist.unwrap_or(started));
    if since_relist > RELIST_THRESHOLD {
        return Err(format!(
            "PLEG is not healthy: pleg was last seen active {}s ago; threshold is {}s",
            since_relist.as_secs(),
            RELIST_THRESHOLD.as_secs()
        ));
    }
    Ok(())
}

/// The loop's inputs besides the sources.
pub struct LoopInputs {
    /// UIDs whose runtime state changed (PLEG).
    pub pleg: Receiver<Vec<String>>,
    /// Probe results that changed.
    pub probes: Receiver<ProbeUpdate>,
    /// A worker finished a step (its timers may have changed).
    pub wake: Receiver<()>,
    /// picolet is asked to stop.
    pub shutdown: Receiver<()>,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown requested; pods left running.
    Shutdown,
    /// Shutdown requested; every pod was stopped first (or the wait ended).
    StoppedPods,
}

enum Event {
    Config(PodUpdate),
    Pleg(Vec<String>),
    Probe(ProbeUpdate),
    Wake,
    Tick,
    Shutdown,
}

/// A receiver whose closing just means "nothing more from here".
async fn recv_or_pending<T>(rx: &Receiver<T>) -> T {
    match rx.recv().await {
        Ok(v) => v,
        Err(_) => std::future::pending().await,
    }
}

/// The orphan pod record for a UID the runtime has and nobody wants: just
/// enough to stop it (grace periods come from the containers' annotations).
/// Pods the runtime runs that no source wants and no worker owns. A pod
/// whose worker was forgotten after the snapshot's listing began is skipped:
/// the snapshot may still show what that worker has just removed. Entries
/// of `forgotten_at` a newer listing has seen are dropped.
fn orphan_uids(
    snap: &Snapshot,
    wanted: &BTreeSet<String>,
    has_worker: impl Fn(&str) -> bool,
    forgotten_at: &mut HashMap<String, Instant>,
    listed_at: Option<Instant>,
) -> Vec<String> {
    forgotten_at.retain(|_, t| listed_at.is_none_or(|l| l <= *t));
    snap.pods
        .keys()
        .filter(|uid| {
            !wanted.contains(*uid) && !has_worker(uid) && !forgotten_at.contains_key(*uid)
        })
        .cloned()
        .collect()
}

fn orphan_pod(uid: &str, name: &str, namespace: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.uid = Some(uid.to_string());
    p.metadata.name = Some(name.to_string());
    p.metadata.namespace = Some(namespace.to_string());
    p.spec = Some(Default::default());
    p
}

/// Runs the loop until shutdown. With `stop_pods_on_shutdown`, every pod
/// is terminated first (bounded by the longest grace period plus a margin).
pub async fn run<R: Runtime + 'static, I: Images + 'static>(
    k: Rc<Kubelet<R, I>>,
    sources: Sources,
    pleg: Rc<Pleg>,
    inputs: LoopInputs,
    health: Rc<Health>,
    stop_pods_on_shutdown: bool,
) -> Exit {
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING_PERIOD;
    let mut stopping: Option<Instant> = None;
    let mut forgotten_at = HashMap::new();
    loop {
        health.entered();
        if let Some(deadline) = stopping {
            if k.workers.borrow().all_finished() {
                log::info!("every pod stopped");
                return Exit::StoppedPods;
            }
            if Instant::now() >= deadline {
                log::warn!("shutdown: pods still stopping after the grace period; leaving");
                return Exit::StoppedPods;
            }
        }
        let mut at = next_housekeeping;
        if let Some(t) = k.workers.borrow().next_timer() {
            at = at.min(t);
        }
        if let Some(d) = stopping {
            at = at.min(d);
        }
        let ev = async {
            recv_or_pending(&inputs.shutdown).await;
            Event::Shutdown
        }
        .or(async { Event::Config(recv_or_pending(&sources.updates).await) })
        .or(async { Event::Pleg(recv_or_pending(&inputs.pleg).await) })
        .or(async { Event::Probe(recv_or_pending(&inputs.probes).await) })
        .or(async {
            recv_or_pending(&inputs.wake).await;
            Event::Wake
        })
        .or(async {
            Timer::at(at).await;
            Event::Tick
        })
        .await;
        match ev {
            Event::Shutdown => {
                if stopping.is_some() {
                    continue;
                }
                if !stop_pods_on_shutdown {
                    log::info!("shutting down; pods keep running");
                    return Exit::Shutdown;
                }
                log::info!("shutting down: stopping every pod");
                stopping = Some(Instant::now() + stop_window(&k));
                let pods: Vec<Rc<Pod>> = k
                    .workers
                    .borrow()
                    .iter()
                    .map(|(_, w)| w.pod.clone())
                    .collect();
                for p in pods {
                    k.dispatch(p, Update::Kill { grace: None });
                }
            }
            Event::Config(u) => {
                if stopping.is_none() {
                    handle_config(&k, u);
                }
            }
            Event::Pleg(uids) => sync_pods(&k, &uids),
            Event::Probe(u) => {
                // A liveness success changes nothing (upstream ignores it);
                // every other change may restart a container or change
                // readiness in the status.
                if !(u.kind == ProbeKind::Liveness && u.result == ProbeResult::Success) {
                    sync_pods(&k, &[u.pod_uid]);
                }
            }
            Event::Wake => {}
            Event::Tick => {
                let now = Instant::now();
                let due = k.workers.borrow_mut().due(now);
                for uid in due {
                    k.ensure_worker(&uid);
                }
                if now >= next_housekeeping {
                    housekeeping(&k, &sources, &pleg, &mut forgotten_at, stopping.is_some());
                    next_housekeeping = Instant::now() + HOUSEKEEPING_PERIOD;
                }
            }
        }
    }
}

/// How long shutdown waits for pods: the longest grace period of any pod,
/// plus a margin for hooks and the runtime.
fn stop_window<R: Runtime + 'static, I: Images + 'static>(k: &Kubelet<R, I>) -> Duration {
    let longest = k
        .workers
        .borrow()
        .iter()
        .filter_map(|(_, w)| {
            w.pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .max()
        .unwrap_or(0)
        .max(0) as u64;
    Duration::from_secs(longest + 10)
}

fn sync_pods<R: Runtime + 'static, I: Images + 'static>(k: &Rc<Kubelet<R, I>>, uids: &[String]) {
    for uid in uids {
        let pod = k.workers.borrow().get(uid).map(|w| w.pod.clone());
        if let Some(pod) = pod {
            k.dispatch(pod, Update::Sync);
        }
    }
}

/// Whether the API server already holds a terminal phase for the pod (a
/// picolet restart finds Succeeded and Failed pods still bound to it).
fn terminal_on_server(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Upstream `HandlePodAdditions` / `Updates` / `Removes` / `Reconcile`.
pub fn handle_config<R: Runtime + 'static, I: Images + 'static>(
    k: &Rc<Kubelet<R, I>>,
    u: PodUpdate,
) {
    for pod in u.pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match u.op {
            Op::Add | Op::Update => {
                k.status.borrow_mut().set_pod(pod.clone());
                if u.op == Op::Add && terminal_on_server(&pod) {
                    // Never run again; its status stays what the server has.
                    if let Some(st) = pod.status.clone() {
                        k.status.borrow_mut().set_status(&uid, st);
                    }
                    k.dispatch(pod.clone(), Update::Create);
                    k.dispatch(pod, Update::Kill { grace: None });
                    continue;
                }
                if u.op == Op::Add && !k.admit(&pod) {
                    continue;
                }
                if u.op == Op::Update && k.workers.borrow().get(&uid).is_none() {
                    // Rejected at admission: it stays Failed, whatever
                    // changes in its spec.
                    continue;
                }
                k.prober.add_pod(&pod);
                let kind = if u.op == Op::Add {
                    Update::Create
                } else {
                    Update::Update
                };
                k.dispatch(pod.clone(), kind);
                // Marked for deletion while picolet was away.
                if pod.metadata.deletion_timestamp.is_some() {
                    let grace = pod.metadata.deletion_grace_period_seconds;
                    k.dispatch(pod, Update::Kill { grace });
                }
            }
            Op::Delete => {
                k.status.borrow_mut().set_pod(pod.clone());
                let grace = pod.metadata.deletion_grace_period_seconds;
                k.dispatch(pod, Update::Kill { grace });
            }
            Op::Remove => {
                k.status.borrow_mut().remove_pod(&uid);
                k.prober.remove_pod(&uid);
                if k.workers.borrow().get(&uid).is_none() {
                    // Never ran (rejected at admission): nothing to wait for.
                    k.status.borrow_mut().forget(&uid);
                }
                // A deletion's grace period (0 when forced) bounds the stop.
                if let Some(grace) = pod.metadata.deletion_grace_period_seconds {
                    k.dispatch(pod.clone(), Update::Kill { grace: Some(grace) });
                }
                k.dispatch(pod, Update::Remove);
            }
            // Only the server's status differs: the kubelet's own status
            // wins, but the copies it is made from (conditions others own)
            // are refreshed; readiness gates may change Ready.
            Op::Reconcile => {
                k.status.borrow_mut().set_pod(pod.clone());
                let gates = pod
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.readiness_gates.as_ref().is_some_and(|g| !g.is_empty()));
                if k.workers.borrow_mut().refresh_pod(pod.clone()) && gates {
                    k.dispatch(pod, Update::Sync);
                }
            }
        }
    }
}

/// Upstream `HandlePodCleanups`, in the parts a node without API server
/// needs: finished workers of removed pods are forgotten, pods wanted
/// again after a removal restart, pods the runtime runs that no source
/// wants are stopped and removed (only once every source has spoken), and
/// stale back-off entries go. `forgotten_at` remembers when workers of
/// removed pods were forgotten, so a relist from before their removal
/// does not bring them back as orphans.
fn housekeeping<R: Runtime + 'static, I: Images + 'static>(
    k: &Rc<Kubelet<R, I>>,
    sources: &Sources,
    pleg: &Pleg,
    forgotten_at: &mut HashMap<String, Instant>,
    stopping: bool,
) {
    let (restarted, forgotten) = k.workers.borrow_mut().housekeep();
    let now = Instant::now();
    for uid in &forgotten {
        k.forget(uid);
        forgotten_at.insert(uid.clone(), now);
    }
    for uid in &restarted {
        k.ensure_worker(uid);
    }
    if !stopping && sources.seen_all() {
        // Updates already merged but not yet read must count as wanted.
        while let Ok(u) = sources.updates.try_recv() {
            handle_config(k, u);
        }
        let wanted: BTreeSet<String> = sources
            .config
            .borrow()
            .pods()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let listed_at = pleg.listed_at.get();
        let orphans: Vec<Pod> = {
            let snap = pleg.snapshot.borrow();
            let workers = k.workers.borrow();
            orphan_uids(
                &snap,
                &wanted,
                |u| workers.get(u).is_some(),
                forgotten_at,
                listed_at,
            )
            .into_iter()
            .filter_map(|uid| {
                snap.pods
                    .get(&uid)
                    .map(|p| orphan_pod(&uid, &p.name, &p.namespace))
            })
            .collect()
        };
        for pod in orphans {
            log::info!(
                "pod {}: runs but no source wants it; stopping it",
                super::actions::format_pod(&pod)
            );
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if k.workers.borrow_mut().adopt_orphan(Rc::new(pod)) {
                k.ensure_worker(&uid);
            }
        }
        // After the adoption: an orphan's worker still needs its directory.
        k.cleanup_orphan_dirs(wanted);
    }
    k.backoff.gc(jiff::Timestamp::now());
    // dlmalloc keeps up to 2 MiB of free heap top on its own; a burst of
    // syncs just ended leaves that much, idle pods need none of it.
    crate::util::heap::trim();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_skip_pods_removed_after_the_listing() {
        let mut snap = Snapshot::default();
        for uid in ["wanted", "owned", "orphan", "just-removed"] {
            snap.pods.insert(uid.into(), Default::default());
        }
        let wanted: BTreeSet<String> = ["wanted".to_string()].into();
        let t0 = Instant::now();
        let listed = Some(t0);
        let mut forgotten =
            HashMap::from([("just-removed".to_string(), t0 + Duration::from_millis(500))]);
        let got = orphan_uids(&snap, &wanted, |u| u == "owned", &mut forgotten, listed);
        assert_eq!(got, ["orphan"]);
        assert!(forgotten.contains_key("just-removed"));
        // A listing begun after the worker was forgotten is believed again:
        // a pod it still shows really runs.
        let got = orphan_uids(
            &snap,
            &wanted,
            |u| u == "owned",
            &mut forgotten,
            Some(t0 + Duration::from_secs(1)),
        );
        assert_eq!(got, ["just-removed", "orphan"]);
        assert!(forgotten.is_empty());
    }

    #[test]
    fn health_windows() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let f = Duration::from_secs(60);
        assert!(check_health(at(10), t0, at(9), Some(at(9)), f).is_ok());
        // No relist yet: counted from the start.
        assert!(check_health(at(100), t0, at(99), None, f).is_ok());
        let e = check_health(at(200), t0, at(199), None, f).unwrap_err();
        assert!(e.contains("PLEG"), "{e}");
        let e = check_health(at(400), t0, at(50), Some(at(399)), f).unwrap_err();
        assert!(e.contains("sync loop"), "{e}");
        // A long syncFrequency widens the loop window.
        let f = Duration::from_secs(600);
        assert!(check_health(at(1000), t0, at(50), Some(at(999)), f).is_ok());
    }
}
