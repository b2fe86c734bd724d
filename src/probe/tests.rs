use super::*;
use serde_json::json;
use std::cell::Cell;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn pod(policy: &str, probe: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {"restartPolicy": policy, "containers": [
            {"name": "c", "livenessProbe": probe, "readinessProbe": probe, "startupProbe": probe}
        ]}
    }))
    .unwrap()
}

/// A v1 status with container `c` as given.
fn status(id: &str, state: serde_json::Value, started: bool) -> PodStatus {
    serde_json::from_value(json!({
        "phase": "Running",
        "podIP": "127.0.0.1",
        "containerStatuses": [{"name": "c", "containerID": format!("containerd://{id}"),
            "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "started": started, "state": state}]
    }))
    .unwrap()
}

fn running(at: i64) -> serde_json::Value {
    json!({"running": {"startedAt": ts(at).to_string()}})
}

fn worker(kind: ProbeKind, p: &Pod) -> Worker {
    let c = &p.spec.as_ref().unwrap().containers[0];
    Worker::new(kind, p, c, kind.probe_of(c).unwrap())
}

#[test]
fn timing_defaults() {
    let t = Timing::of(&Probe::default());
    assert_eq!(
        t,
        Timing {
            period: Duration::from_secs(10),
            initial_delay_seconds: 0,
            success_threshold: 1,
            failure_threshold: 3
        }
    );
}

#[test]
fn new_container_gets_initial_values_and_old_results_go() {
    let p = pod("Always", json!({"exec": {"command": ["x"]}}));
    for (kind, initial) in [
        (ProbeKind::Liveness, Some(ProbeResult::Success)),
        (ProbeKind::Readiness, Some(ProbeResult::Failure)),
        (ProbeKind::Startup, None),
    ] {
        let mut w = worker(kind, &p);
        let mut fx = vec![];
        w.before(&p, Some(&status("a", running(0), false)), ts(5), &mut fx);
        assert_eq!(fx, vec![("a".to_string(), initial)], "{kind:?}");
        fx.clear();
        w.before(&p, Some(&status("b", running(0), false)), ts(5), &mut fx);
        assert_eq!(
            fx,
            vec![("a".to_string(), None), ("b".to_string(), initial)],
            "{kind:?}"
        );
    }
}

#[test]
fn startup_gates_the_other_probes() {
    let p = pod("Always", json!({"exec": {"command": ["x"]}}));
    let not_started = status("a", running(0), false);
    let started = status("a", running(0), true);
    let mut fx = vec![];
    let mut s = worker(ProbeKind::Startup, &p);
    let mut l = worker(ProbeKind::Liveness, &p);
    let mut r = worker(ProbeKind::Readiness, &p);
    assert_eq!(
        s.before(&p, Some(&not_started), ts(1), &mut fx),
        Next::Probe
    );
    assert_eq!(l.before(&p, Some(&not_started), ts(1), &mut fx), Next::Wait);
    assert_eq!(r.before(&p, Some(&not_started), ts(1), &mut fx), Next::Wait);
    assert_eq!(s.before(&p, Some(&started), ts(1), &mut fx), Next::Wait);
    assert_eq!(l.before(&p, Some(&started), ts(1), &mut fx), Next::Probe);
    assert_eq!(r.before(&p, Some(&started), ts(1), &mut fx), Next::Probe);
}

#[test]
fn initial_delay_counts_from_the_container_start() {
    let p = pod(
        "Always",
        json!({"exec": {"command": ["x"]}, "initialDelaySeconds": 5}),
    );
    let mut w = worker(ProbeKind::Readiness, &p);
    let st = status("a", running(100), true);
    let mut fx = vec![];
    assert_eq!(w.before(&p, Some(&st), ts(104), &mut fx), Next::Wait);
    assert_eq!(w.before(&p, Some(&st), ts(105), &mut fx), Next::Probe);
}

#[test]
fn thresholds_and_hold_after_liveness_failure() {
    let p = pod(
        "Always",
        json!({"exec": {"command": ["x"]}, "failureThreshold": 2, "successThreshold": 1}),
    );
    let mut w = worker(ProbeKind::Liveness, &p);
    let st = status("a", running(0), true);
    let mut fx = vec![];
    w.before(&p, Some(&st), ts(1), &mut fx);
    fx.clear();
    w.after(Some(ProbeResult::Failure), &mut fx);
    assert!(fx.is_empty(), "one failure is below the threshold");
    w.after(None, &mut fx); // an error changes nothing
    w.after(Some(ProbeResult::Failure), &mut fx);
    assert_eq!(fx, vec![("a".to_string(), Some(ProbeResult::Failure))]);
    fx.clear();
    // On hold until a new container appears.
    assert_eq!(w.before(&p, Some(&st), ts(2), &mut fx), Next::Wait);
    assert!(fx.is_empty());
    assert_eq!(
        w.before(&p, Some(&status("b", running(2), true)), ts(3), &mut fx),
        Next::Probe
    );
    // A success in between resets the run.
    fx.clear();
    w.after(Some(ProbeResult::Failure), &mut fx);
    w.after(Some(ProbeResult::Success), &mut fx);
    w.after(Some(ProbeResult::Failure), &mut fx);
    assert_eq!(fx, vec![("b".to_string(), Some(ProbeResult::Success))]);
}

#[test]
fn readiness_needs_success_threshold_and_never_holds() {
    let p = pod(
        "Always",
        json!({"exec": {"command": ["x"]}, "successThreshold": 2, "failureThreshold": 1}),
    );
    let mut w = worker(ProbeKind::Readiness, &p);
    let st = status("a", running(0), true);
    let mut fx = vec![];
    w.before(&p, Some(&st), ts(1), &mut fx);
    fx.clear();
    w.after(Some(ProbeResult::Success), &mut fx);
    assert!(fx.is_empty());
    w.after(Some(ProbeResult::Success), &mut fx);
    w.after(Some(ProbeResult::Failure), &mut fx);
    assert_eq!(
        fx,
        vec![
            ("a".to_string(), Some(ProbeResult::Success)),
            ("a".to_string(), Some(ProbeResult::Failure))
        ]
    );
    assert_eq!(w.before(&p, Some(&st), ts(2), &mut vec![]), Next::Probe);
}

#[test]
fn stopped_containers_pods_and_deletion() {
    let exited = json!({"terminated": {"exitCode": 1, "startedAt": ts(0).to_string(), "finishedAt": ts(1).to_string()}});
    for (policy, next) in [
        ("Never", Next::Stop),
        ("Always", Next::Wait),
        ("OnFailure", Next::Wait),
    ] {
        let p = pod(policy, json!({"exec": {"command": ["x"]}}));
        let mut w = worker(ProbeKind::Liveness, &p);
        let mut fx = vec![];
        assert_eq!(
            w.before(
                &p,
                Some(&status("a", exited.clone(), false)),
                ts(2),
                &mut fx
            ),
            next,
            "{policy}"
        );
        assert_eq!(
            fx.last(),
            Some(&("a".to_string(), Some(ProbeResult::Failure)))
        );
    }
    let p = pod("Always", json!({"exec": {"command": ["x"]}}));
    let mut st = status("a", running(0), true);
    st.phase = Some("Succeeded".into());
    assert_eq!(
        worker(ProbeKind::Readiness, &p).before(&p, Some(&st), ts(1), &mut vec![]),
        Next::Stop
    );
    assert_eq!(
        worker(ProbeKind::Readiness, &p).before(&p, None, ts(1), &mut vec![]),
        Next::Wait
    );
    // A pod being deleted: liveness/startup end with success, readiness goes on.
    let mut deleting = p.clone();
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(1)));
    let st = status("a", running(0), true);
    let mut fx = vec![];
    assert_eq!(
        worker(ProbeKind::Liveness, &p).before(&deleting, Some(&st), ts(2), &mut fx),
        Next::Stop
    );
    assert_eq!(
        fx.last(),
        Some(&("a".to_string(), Some(ProbeResult::Success)))
    );
    assert_eq!(
        worker(ProbeKind::Readiness, &p).before(&deleting, Some(&st), ts(2), &mut vec![]),
        Next::Probe
    );
}

#[test]
fn sidecars_are_found_among_init_containers_and_restart() {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "uid": "u1"},
        "spec": {"restartPolicy": "Never",
            "initContainers": [{"name": "c", "restartPolicy": "Always", "livenessProbe": {"tcpSocket": {"port": 1}}}],
            "containers": [{"name": "main"}]}
    }))
    .unwrap();
    let c = &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let mut w = Worker::new(
        ProbeKind::Liveness,
        &p,
        c,
        c.liveness_probe.as_ref().unwrap(),
    );
    let mut st = status("a", json!({"terminated": {"exitCode": 1}}), false);
    st.init_container_statuses = st.container_statuses.take();
    assert_eq!(w.before(&p, Some(&st), ts(1), &mut vec![]), Next::Wait);
}

#[test]
fn outcomes_map_to_results() {
    let o = |outcome| {
        Ok(Output {
            outcome,
            message: String::new(),
        })
    };
    assert_eq!(result_of(&o(Outcome::Success)), Some(ProbeResult::Success));
    assert_eq!(result_of(&o(Outcome::Warning)), Some(ProbeResult::Success));
    assert_eq!(result_of(&o(Outcome::Failure)), Some(ProbeResult::Failure));
    assert_eq!(result_of(&o(Outcome::Unknown)), Some(ProbeResult::Failure));
    assert_eq!(result_of(&Err(anyhow::anyhow!("x"))), None);
}

/// Exec results from a script; counts calls.
struct Scripted {
    exits: RefCell<Vec<i32>>,
    calls: Cell<usize>,
}

impl CommandRunner for Scripted {
    async fn run_in_container(
        &self,
        _id: &str,
        _cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecSyncResponse, RuntimeError> {
        self.calls.set(self.calls.get() + 1);
        let mut e = self.exits.borrow_mut();
        let code = if e.len() > 1 { e.remove(0) } else { e[0] };
        Ok(ExecSyncResponse {
            stdout: vec![],
            stderr: vec![],
            exit_code: code,
        })
    }
}

#[test]
fn manager_runs_workers_and_announces_changes() {
    crate::rt::block_on(async {
        let runner = Rc::new(Scripted {
            exits: RefCell::new(vec![0, 1]),
            calls: Cell::new(0),
        });
        // Started long ago: no jitter.
        let m =
            ProbeManager::started_at(runner.clone(), Instant::now() - Duration::from_secs(3600));
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c",
                "readinessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1, "failureThreshold": 1},
                "livenessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1, "failureThreshold": 2}}]}
        }))
        .unwrap();
        m.add_pod(&Rc::new(p.clone()));
        m.add_pod(&Rc::new(p.clone()));
        assert_eq!(m.worker_count(), 2);
        let updates = m.updates();
        m.update_pod_status("u1", &status("a", running(0), true));
        // The status update triggers readiness at once: success (exit 0).
        let u = updates.recv().await.unwrap();
        assert_eq!(u.container_id, "a");
        let mut seen = vec![(u.kind, u.result)];
        // Then the scripted exit 1: readiness fails after 1, liveness after 2.
        while !seen.contains(&(ProbeKind::Liveness, ProbeResult::Failure)) {
            let u = futures_lite::future::or(async { updates.recv().await.ok() }, async {
                Timer::after(Duration::from_secs(10)).await;
                None
            })
            .await
            .expect("an update within 10s");
            seen.push((u.kind, u.result));
        }
        assert!(seen.contains(&(ProbeKind::Liveness, ProbeResult::Success)));
        assert!(seen.contains(&(ProbeKind::Readiness, ProbeResult::Success)));
        assert!(seen.contains(&(ProbeKind::Readiness, ProbeResult::Failure)));
        let r = m.results("u1");
        assert_eq!(r.liveness.get("a"), Some(&ProbeResult::Failure));
        assert_eq!(r.readiness.get("a"), Some(&ProbeResult::Failure));
        // Liveness holds after its failure: a later status brings a new
        // container; the old results go.
        m.update_pod_status("u1", &status("b", running(0), true));
        Timer::after(Duration::from_millis(1500)).await;
        let r = m.results("u1");
        assert!(!r.liveness.contains_key("a") && !r.readiness.contains_key("a"));
        assert!(r.liveness.contains_key("b"));
        m.remove_pod("u1");
        Timer::after(Duration::from_millis(100)).await;
        assert_eq!(m.worker_count(), 0);
        assert_eq!(m.results("u1"), ProbeResults::default());
        let calls = runner.calls.get();
        Timer::after(Duration::from_millis(1200)).await;
        assert_eq!(runner.calls.get(), calls, "stopped workers do not probe");
    });
}

#[test]
fn young_manager_jitters_the_first_probe() {
    crate::rt::block_on(async {
        let runner = Rc::new(Scripted {
            exits: RefCell::new(vec![0]),
            calls: Cell::new(0),
        });
        let m = ProbeManager::new(runner.clone());
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "uid": "u1"},
            "spec": {"containers": [{"name": "c",
                "readinessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 2}}]}
        }))
        .unwrap();
        m.add_pod(&Rc::new(p.clone()));
        m.update_pod_status("u1", &status("a", running(0), true));
        // Triggers queue behind the jitter; within one period the probe has run.
        Timer::after(Duration::from_millis(2300)).await;
        assert!(runner.calls.get() >= 1);
        assert_eq!(
            m.results("u1").readiness.get("a"),
            Some(&ProbeResult::Success)
        );
        m.stop_liveness_and_startup("u1");
        assert_eq!(m.worker_count(), 1);
        m.cleanup_pods(&[]);
        Timer::after(Duration::from_millis(50)).await;
        assert_eq!(m.worker_count(), 0);
    });
}

#[test]
fn a_container_the_source_showed_ready_or_started_stays_so_until_probed() {
    // After a picolet restart the API server's copy says container "a"
    // was ready and started: no flap to not-ready while the first probe
    // is due. Another container id (a restart meanwhile) starts afresh.
    let mut p = pod("Always", json!({"exec": {"command": ["x"]}}));
    let mut reported = status("a", running(0), true);
    reported.container_statuses.as_mut().unwrap()[0].ready = true;
    p.status = Some(reported);
    for (kind, for_a) in [
        (ProbeKind::Readiness, Some(ProbeResult::Success)),
        (ProbeKind::Startup, Some(ProbeResult::Success)),
        (ProbeKind::Liveness, Some(ProbeResult::Success)),
    ] {
        let mut w = worker(kind, &p);
        let mut fx = Vec::new();
        w.before(&p, Some(&status("a", running(0), false)), ts(5), &mut fx);
        assert_eq!(fx[0], ("a".to_string(), for_a), "{kind:?}");
        let mut fx = Vec::new();
        w.before(&p, Some(&status("b", running(0), false)), ts(5), &mut fx);
        assert_eq!(fx[1], ("b".to_string(), kind.initial()), "{kind:?}");
    }
}
