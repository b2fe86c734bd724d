//! Orchestration tests of the pod workers and the loop over in-memory
//! stand-ins (see `fake.rs`): which runtime calls happen in which order.

use super::backoff::BackoffParams;
use super::fake::*;
use super::kubelet::{Kubelet, SyncConfig};
use super::state::BackoffState;
use super::workers::Update;
use crate::api::core::{ContainerStatus, Pod, PodStatus};
use crate::runtime::convert::{Allocatable, NodeContext};
use crate::runtime::{ContainerState, DnsConfig};
use crate::status::StatusManager;
use serde_json::json;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

type K = Kubelet<FakeRuntime, FakeImages>;

struct Setup {
    k: Rc<K>,
    rt: Rc<FakeRuntime>,
    images: Rc<FakeImages>,
    calls: Calls,
    dir: PathBuf,
    wake_rx: smol::channel::Receiver<()>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup(name: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("picolet-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let calls: Calls = Rc::default();
    let rt = FakeRuntime::new(calls.clone());
    setup_with(name, dir, calls, rt)
}

fn setup_with(_name: &str, dir: PathBuf, calls: Calls, rt: Rc<FakeRuntime>) -> Setup {
    let images = Rc::new(FakeImages::default());
    images.present.borrow_mut().insert("busybox:1".into());
    let kc = crate::config::KubeletConfig {
        pod_logs_dir: dir.join("logs"),
        ..Default::default()
    };
    let node = NodeContext::new(
        &kc,
        "node1",
        vec!["192.168.1.10".parse().unwrap()],
        Some(DnsConfig::default()),
        8 << 30,
        Allocatable {
            cpu_milli: 2000,
            memory: 7 << 30,
            ephemeral_storage: 10 << 30,
        },
    );
    let params = BackoffParams {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        reset: Duration::from_secs(10),
    };
    let (wake, wake_rx) = smol::channel::unbounded();
    let k = Kubelet::new(
        rt.clone(),
        images.clone(),
        Rc::new(FakeHooks {
            calls: calls.clone(),
        }),
        Rc::new(NoProbes),
        Rc::new(crate::volume::VolumeManager::new(dir.join("pods"))),
        node,
        SyncConfig {
            sync_frequency: Duration::from_secs(60),
            retry_period: Duration::from_millis(200),
            network_retry_period: Duration::from_millis(100),
            pods_dir: dir.join("pods"),
            pod_logs_dir: dir.join("logs"),
        },
        Rc::new(RefCell::new(StatusManager::new())),
        BackoffState::load(&dir.join("state"), params),
        wake,
    );
    Setup {
        k,
        rt,
        images,
        calls,
        dir,
        wake_rx,
    }
}

fn pod(name: &str, uid: &str, spec: serde_json::Value) -> Rc<Pod> {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid,
                     "annotations": {"kubernetes.io/config.source": "file"}},
        "spec": spec
    }))
    .unwrap();
    crate::sources::defaults::apply(&mut p);
    Rc::new(p)
}

fn one(policy: &str) -> serde_json::Value {
    json!({"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox:1"}]})
}

/// Waits until no worker is busy.
async fn settle(k: &K) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        async_io::Timer::after(Duration::from_millis(2)).await;
        if k.workers.borrow().iter().all(|(_, w)| !w.working) {
            return;
        }
        assert!(Instant::now() < end, "workers did not settle");
    }
}

/// Runs due timers until `uid` has no timer before `limit`.
async fn run_timers(k: &Rc<K>, until: Instant) {
    while Instant::now() < until {
        async_io::Timer::after(Duration::from_millis(10)).await;
        let due = k.workers.borrow_mut().due(Instant::now());
        for u in due {
            k.ensure_worker(&u);
        }
    }
    settle(k).await;
}

fn status(k: &K, uid: &str) -> PodStatus {
    k.status.borrow().status(uid).cloned().expect("a status")
}

fn cstatus<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status for {name}: {s:?}"))
}

fn waiting_reason(s: &PodStatus, name: &str) -> Option<String> {
    cstatus(s, name)
        .state
        .as_ref()
        .and_then(|st| st.waiting.as_ref())
        .and_then(|w| w.reason.clone())
}

fn pos(calls: &Calls, what: &str) -> usize {
    calls
        .borrow()
        .iter()
        .position(|c| c == what)
        .unwrap_or_else(|| panic!("{what:?} not in {:?}", calls.borrow()))
}

fn add(k: &Rc<K>, p: &Rc<Pod>) {
    k.status.borrow_mut().set_pod(p.clone());
    k.dispatch(p.clone(), Update::Create);
}

#[test]
fn new_pod_runs_and_is_adopted_by_a_new_kubelet() {
    let s = setup("adopt");
    crate::rt::block_on(async {
        let p = pod("web", "u1", one("Always"));
        add(&s.k, &p);
        settle(&s.k).await;
        assert_eq!(
            *s.calls.borrow(),
            vec!["run_sandbox 0", "create a", "start a"]
        );
        let st = status(&s.k, "u1");
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let a = cstatus(&st, "a");
        assert!(a.state.as_ref().unwrap().running.is_some());
        assert_eq!(a.restart_count, 0);
        assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.1"));

        // A restarted picolet (new kubelet, same runtime) changes nothing.
        s.calls.borrow_mut().clear();
        let s2 = setup_with(
            "adopt2",
            s.dir.join("second"),
            s.calls.clone(),
            s.rt.clone(),
        );
        add(&s2.k, &p);
        settle(&s2.k).await;
        assert!(s.calls.borrow().is_empty(), "{:?}", s.calls.borrow());
        assert_eq!(status(&s2.k, "u1").phase.as_deref(), Some("Running"));
    });
}

#[test]
fn crash_loop_backs_off_and_keeps_one_dead_instance() {
    let s = setup("crash");
    crate::rt::block_on(async {
        let p = pod("web", "u1", one("Always"));
        add(&s.k, &p);
        settle(&s.k).await;
        // First exit: restarted at once.
        s.rt.exit("a", 1);
        s.k.dispatch(p.clone(), Update::Sync);
        settle(&s.k).await;
        let inst = s.rt.instances("a");
        assert_eq!(inst.len(), 2);
        assert_eq!(inst[0].1, ContainerState::Running);
        assert_eq!(inst[0].2, "1");
        // Second exit: CrashLoopBackOff for the initial 100 ms.
        s.rt.exit("a", 1);
        s.k.dispatch(p.clone(), Update::Sync);
        settle(&s.k).await;
        let st = status(&s.k, "u1");
        assert_eq!(
            waiting_reason(&st, "a").as_deref(),
            Some("CrashLoopBackOff")
        );
        let msg = cstatus(&st, "a")
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .message
            .clone();
        assert_eq!(
            msg.as_deref(),
            Some("back-off 100ms restarting failed container=a pod=web_default(u1)")
        );
        let last = cstatus(&st, "a").last_state.as_ref().unwrap();
        assert_eq!(last.terminated.as_ref().unwrap().exit_code, 1);
        assert_eq!(
            last.terminated.as_ref().unwrap().reason.as_deref(),
            Some("Error")
        );
        assert_eq!(cstatus(&st, "a").restart_count, 1);
        // GC keeps only the newest dead instance.
        assert_eq!(s.rt.instances("a").len(), 1);
        // The worker's timer restarts it when the back-off ends.
        assert!(s.k.workers.borrow().next_timer().is_some());
        run_timers(&s.k, Instant::now() + Duration::from_millis(200)).await;
        let inst = s.rt.instances("a");
        assert_eq!(inst[0].1, ContainerState::Running);
        assert_eq!(inst[0].2, "2");
        // The delay doubled.
        let key = super::actions::backoff_key(&p, &p.spec.as_ref().unwrap().containers[0]);
        assert_eq!(
            s.k.backoff.containers.borrow().get(&key),
            Duration::from_millis(200)
        );
        // And it is on disk.
        s.k.backoff.save().await.unwrap();
        let text = std::fs::read_to_string(s.dir.join("state/backoff.json")).unwrap();
        assert!(text.contains("\"delay_ms\":200"), "{text}");
    });
}

#[test]
fn restart_policies_and_terminal_phases() {
    for (policy, code, phase, restarted) in [
        ("Never", 0, "Succeeded", false),
        ("Never", 1, "Failed", false),
        ("OnFailure", 0, "Succeeded", false),
        ("OnFailure", 2, "Running", true),
        ("Always", 0, "Running", true),
    ] {
        let s = setup(&format!("policy-{policy}-{code}"));
        crate::rt::block_on(async {
            let p = pod("job", "u1", one(policy));
            add(&s.k, &p);
            settle(&s.k).await;
            s.rt.exit("a", code);
            s.k.dispatch(p.clone(), Update::Sync);
            settle(&s.k).await;
            let st = status(&s.k, "u1");
            let what = format!("{policy} exit {code}");
            assert_eq!(st.phase.as_deref(), Some(phase), "{what}");
            assert_eq!(s.rt.instances("a").len() == 2, restarted, "{what}");
            let w = s.k.workers.borrow().get("u1").unwrap().clone();
            assert_eq!(w.finished(), !restarted, "{what}");
            if !restarted {
                let t = cstatus(&st, "a").state.clone().unwrap().terminated.unwrap();
                let reason = if code == 0 { "Completed" } else { "Error" };
                assert_eq!(t.reason.as_deref(), Some(reason), "{what}");
                assert_eq!(t.exit_code, code, "{what}");
                // Listed with its final status; the sandbox is stopped.
                let list = s.k.status.borrow().pod_list();
                assert_eq!(list["items"][0]["status"]["phase"], phase);
                assert!(s
                    .calls
                    .borrow()
                    .iter()
                    .any(|c| c.starts_with("stop_sandbox")));
            }
        });
    }
}

#[test]
fn removal_runs_prestop_then_stops_sidecars_last() {
    let s = setup("remove");
    crate::rt::block_on(async {
        let p = pod(
            "web",
            "u1",
            json!({
                "terminationGracePeriodSeconds": 7,
                "initContainers": [{"name": "side", "image": "busybox:1", "restartPolicy": "Always",
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "3"]}}}}],
                "containers": [
                    {"name": "a", "image": "busybox:1",
                     "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}},
                    {"name": "b", "image": "busybox:1"}]
            }),
        );
        add(&s.k, &p);
        settle(&s.k).await;
        // The sidecar runs: the next sync starts the regular containers.
        s.k.dispatch(p.clone(), Update::Sync);
        settle(&s.k).await;
        assert_eq!(
            *s.calls.borrow(),
            vec![
                "run_sandbox 0",
                "create side",
                "start side",
                "create a",
                "start a",
                "create b",
                "start b"
            ]
        );
        s.calls.borrow_mut().clear();
        s.k.status.borrow_mut().remove_pod("u1");
        s.k.dispatch(p.clone(), Update::Remove);
        settle(&s.k).await;
        let c = &s.calls;
        // Every preStop starts at once; each stop waits for its own hook;
        // the sidecar's stop waits for the regular containers.
        // a's stop came after its 50 ms hook, out of its 7 s grace period.
        assert!(pos(c, "hook a sleep 5") < pos(c, "stop a 7s"));
        let stop_a = c
            .borrow()
            .iter()
            .position(|x| x.starts_with("stop a "))
            .unwrap();
        let stop_b = c
            .borrow()
            .iter()
            .position(|x| x.starts_with("stop b "))
            .unwrap();
        let stop_side = c
            .borrow()
            .iter()
            .position(|x| x.starts_with("stop side "))
            .unwrap();
        assert!(pos(c, "hook side sleep 3") < stop_side);
        assert!(pos(c, "hook a sleep 5") < stop_a);
        assert!(stop_b < stop_a, "b has no hook: {:?}", c.borrow());
        assert!(stop_a < stop_side && stop_b < stop_side, "{:?}", c.borrow());
        let stop_sb = c
            .borrow()
            .iter()
            .position(|x| x.starts_with("stop_sandbox"))
            .unwrap();
        assert!(stop_side < stop_sb);
        let rm_sb = c
            .borrow()
            .iter()
            .position(|x| x.starts_with("remove_sandbox"))
            .unwrap();
        assert!(stop_sb < rm_sb);
        assert_eq!(s.rt.sandbox_count(), 0);
        let (_, forgotten) = s.k.workers.borrow_mut().housekeep();
        assert_eq!(forgotten, vec!["u1".to_string()]);
    });
}

#[test]
fn image_pull_errors_then_back_off() {
    let s = setup("pull");
    crate::rt::block_on(async {
        let p = pod(
            "web",
            "u1",
            json!({"containers": [{"name": "a", "image": "example.com/app:1"}]}),
        );
        add(&s.k, &p);
        settle(&s.k).await;
        let st = status(&s.k, "u1");
        assert_eq!(waiting_reason(&st, "a").as_deref(), Some("ErrImagePull"));
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        // Inside the back-off: no pull, ImagePullBackOff.
        s.k.dispatch(p.clone(), Update::Sync);
        settle(&s.k).await;
        assert_eq!(*s.images.pulls.borrow(), 1);
        let st = status(&s.k, "u1");
        assert_eq!(
            waiting_reason(&st, "a").as_deref(),
            Some("ImagePullBackOff")
        );
        let w = cstatus(&st, "a").state.clone().unwrap().waiting.unwrap();
        assert_eq!(
            w.message.as_deref(),
            Some("Back-off pulling image \"example.com/app:1\"")
        );
        // The timer retries after the back-off; now the pull works.
        s.images
            .pullable
            .borrow_mut()
            .insert("example.com/app:1".into());
        run_timers(&s.k, Instant::now() + Duration::from_millis(250)).await;
        assert_eq!(*s.images.pulls.borrow(), 2);
        assert_eq!(status(&s.k, "u1").phase.as_deref(), Some("Running"));
    });
}

#[test]
fn start_failures_surface_as_waiting_reasons() {
    let s = setup("fail");
    crate::rt::block_on(async {
        // The node has no network: no sandbox is tried; status says why.
        let ready = Rc::new(std::cell::Cell::new(false));
        let r = ready.clone();
        s.k.set_network_status(Rc::new(move || crate::network::NetworkStatus {
            ready: r.get(),
            reason: "NetworkPluginNotReady".into(),
            message: "no CNI configuration".into(),
        }));
        let p = pod("web", "u1", one("Always"));
        add(&s.k, &p);
        settle(&s.k).await;
        assert_eq!(s.rt.sandbox_count(), 0);
        let st = status(&s.k, "u1");
        let w = cstatus(&st, "a").state.clone().unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(
            w.message.as_deref(),
            Some("network is not ready: container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:no CNI configuration")
        );
        let cond = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodReadyToStartContainers")
            .unwrap();
        assert_eq!(cond.status, "False");
        // Ready, but the plugin fails: the runtime's error is shown.
        ready.set(true);
        *s.rt.network_down.borrow_mut() = true;
        run_timers(&s.k, Instant::now() + Duration::from_millis(150)).await;
        let st = status(&s.k, "u1");
        let w = cstatus(&st, "a").state.clone().unwrap().waiting.unwrap();
        assert_eq!(
            w.message.as_deref(),
            Some("Failed to create pod sandbox: network not ready: no CNI config")
        );
        // Network back: retried after the retry period; a create error next.
        *s.rt.network_down.borrow_mut() = false;
        s.rt.fail_create.borrow_mut().insert("a".into());
        run_timers(&s.k, Instant::now() + Duration::from_millis(250)).await;
        let st = status(&s.k, "u1");
        let w = cstatus(&st, "a").state.clone().unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("CreateContainerError"));
        assert_eq!(w.message.as_deref(), Some("mount failed"));
        // A config error (unknown named port in an env fieldRef is not
        // one; a missing volume is).
        let bad = pod(
            "cfg",
            "u2",
            json!({"containers": [{"name": "a", "image": "busybox:1",
                "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}),
        );
        add(&s.k, &bad);
        settle(&s.k).await;
        let st = status(&s.k, "u2");
        assert_eq!(
            waiting_reason(&st, "a").as_deref(),
            Some("CreateContainerConfigError")
        );
    });
}

#[test]
fn post_start_failure_kills_the_container() {
    let s = setup("poststart");
    crate::rt::block_on(async {
        let p = pod(
            "web",
            "u1",
            json!({"containers": [{"name": "a", "image": "busybox:1",
                "lifecycle": {"postStart": {"exec": {"command": ["fail"]}}}}]}),
        );
        add(&s.k, &p);
        settle(&s.k).await;
        assert_eq!(
            *s.calls.borrow(),
            vec![
                "run_sandbox 0",
                "create a",
                "start a",
                "hook a fail",
                "stop a 30s"
            ]
        );
        let st = status(&s.k, "u1");
        let w = cstatus(&st, "a").state.clone().unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("PostStartHookError"));
        assert_eq!(w.message.as_deref(), Some("command \"fail\" exited with 1"));
    });
}

#[test]
fn init_containers_in_order_and_init_failure() {
    let s = setup("init");
    crate::rt::block_on(async {
        let p = pod(
            "web",
            "u1",
            json!({"restartPolicy": "Never",
                "initContainers": [{"name": "i1", "image": "busybox:1"}, {"name": "i2", "image": "busybox:1"}],
                "containers": [{"name": "a", "image": "busybox:1"}]}),
        );
        add(&s.k, &p);
        settle(&s.k).await;
        assert_eq!(status(&s.k, "u1").phase.as_deref(), Some("Pending"));
        s.rt.exit("i1", 0);
        s.k.dispatch(p.clone(), Update::Sync);
        settle(&s.k).await;
        s.rt.exit("i2", 3);
        s.k.dispatch(p.clone(), Update::Sync);
        settle(&s.k).await;
        let starts: Vec<String> = s
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("start "))
            .cloned()
            .collect();
        assert_eq!(starts, vec!["start i1", "start i2"]);
        let st = status(&s.k, "u1");
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(
            cstatus(&st, "i2")
                .state
                .clone()
                .unwrap()
                .terminated
                .unwrap()
                .exit_code,
            3
        );
        assert_eq!(waiting_reason(&st, "a").as_deref(), Some("PodInitializing"));
    });
}

#[test]
fn loop_takes_manifests_and_stops_orphans() {
    let s = setup("loop");
    // A pod the runtime runs that no manifest wants any more.
    s.rt.seed_running("orphan-uid", "gone", "x", 3);
    let manifests = s.dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: a, image: busybox:1}]\n",
    )
    .unwrap();
    let kc = crate::config::KubeletConfig {
        static_pod_path: Some(manifests.clone()),
        ..Default::default()
    };
    crate::rt::block_on(async {
        let sources = crate::sources::start(&kc, "node1", false, None);
        let pleg = super::pleg::Pleg::new();
        let (pleg_tx, pleg_rx) = smol::channel::bounded(16);
        let _pleg_task = crate::rt::spawn(pleg.clone().run(
            s.rt.clone(),
            None,
            pleg_tx,
            Duration::from_millis(50),
            None,
        ));
        let (_probe_tx, probe_rx) = smol::channel::unbounded();
        let (stop_tx, stop_rx) = smol::channel::bounded(1);
        let health = super::syncloop::Health::new(pleg.clone(), Duration::from_secs(60));
        let lp = crate::rt::spawn(super::syncloop::run(
            s.k.clone(),
            sources,
            pleg,
            super::syncloop::LoopInputs {
                pleg: pleg_rx,
                probes: probe_rx,
                wake: s.wake_rx.clone(),
                shutdown: stop_rx,
            },
            health.clone(),
            false,
        ));
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            async_io::Timer::after(Duration::from_millis(20)).await;
            let calls = s.calls.borrow().clone();
            if calls.iter().any(|c| c == "start a")
                && calls.iter().any(|c| c.starts_with("remove_sandbox"))
            {
                break;
            }
            assert!(Instant::now() < end, "{calls:?}");
        }
        // The orphan was stopped with the grace period it was created with.
        assert!(s.calls.borrow().contains(&"stop x 3s".to_string()));
        assert!(health.check().is_ok());
        let list = s.k.status.borrow().pod_list();
        assert_eq!(list["items"][0]["metadata"]["name"], "web-node1");
        stop_tx.send(()).await.unwrap();
        assert_eq!(lp.await, super::syncloop::Exit::Shutdown);
        // Shutdown left the pod running.
        assert_eq!(s.rt.instances("a")[0].1, ContainerState::Running);
    });
}

/// An API pod as the pod config delivers it.
fn api_pod(name: &str, uid: &str, spec: serde_json::Value) -> Pod {
    let mut p = (*pod(name, uid, spec)).clone();
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            crate::sources::CONFIG_SOURCE.into(),
            crate::sources::API_SOURCE.into(),
        );
    p
}

fn update(op: crate::sources::Op, pods: Vec<Pod>) -> crate::sources::PodUpdate {
    crate::sources::PodUpdate {
        op,
        source: crate::sources::API_SOURCE,
        pods: pods.into_iter().map(Rc::new).collect(),
    }
}

#[test]
fn api_pods_rejected_terminal_or_marked_for_deletion_do_not_run() {
    use crate::sources::Op;
    let s = setup("apipods");
    // Admission refuses pods named "big".
    s.k.set_admission(Box::new(|p: &Pod, _: &[Rc<Pod>]| {
        if p.metadata.name.as_deref() == Some("big") {
            Err(Box::new(PodStatus {
                phase: Some("Failed".into()),
                reason: Some("OutOfmemory".into()),
                message: Some("Pod was rejected: Node didn't have enough resource: memory".into()),
                ..Default::default()
            }))
        } else {
            Ok(())
        }
    }));
    crate::rt::block_on(async {
        let big = api_pod("big", "u-big", one("Always"));
        super::syncloop::handle_config(&s.k, update(Op::Add, vec![big.clone()]));
        settle(&s.k).await;
        assert!(s.calls.borrow().is_empty(), "{:?}", s.calls.borrow());
        let st = status(&s.k, "u-big");
        assert_eq!(st.reason.as_deref(), Some("OutOfmemory"));
        // A later spec change does not start it either.
        let mut big2 = big.clone();
        big2.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        super::syncloop::handle_config(&s.k, update(Op::Update, vec![big2]));
        settle(&s.k).await;
        assert!(s.calls.borrow().is_empty(), "{:?}", s.calls.borrow());
        assert!(
            s.k.workers.borrow().get("u-big").is_none(),
            "a worker for a rejected pod"
        );

        // Finished on the server before picolet started: never run again.
        let mut done = api_pod("done", "u-done", one("Never"));
        done.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        super::syncloop::handle_config(&s.k, update(Op::Add, vec![done]));
        settle(&s.k).await;
        assert!(
            !s.calls
                .borrow()
                .iter()
                .any(|c| c.starts_with("run_sandbox")),
            "{:?}",
            s.calls.borrow()
        );
        assert_eq!(status(&s.k, "u-done").phase.as_deref(), Some("Succeeded"));

        // Running before a restart, marked for deletion meanwhile: stopped
        // with the deletion's grace period, not started anew.
        s.rt.seed_running("u-del", "del", "a", 30);
        let mut del = api_pod("del", "u-del", one("Always"));
        del.metadata.deletion_timestamp = Some(crate::api::meta::Time(jiff::Timestamp::now()));
        del.metadata.deletion_grace_period_seconds = Some(5);
        super::syncloop::handle_config(&s.k, update(Op::Add, vec![del]));
        settle(&s.k).await;
        let calls = s.calls.borrow().clone();
        assert!(calls.contains(&"stop a 5s".to_string()), "{calls:?}");
        assert!(!calls.iter().any(|c| c == "start a"), "{calls:?}");
        assert!(s
            .k
            .status
            .borrow()
            .pending("u-del")
            .is_some_and(|p| p.terminated));
    });
}
