//! Field-by-field checks of generated statuses against the v1 types, one
//! scenario per behaviour.

use super::*;
use crate::runtime::{
    keys, ContainerMetadata, ContainerStatus as RtStatus, PodSandboxMetadata,
    PodSandboxNetworkStatus, PodSandboxStatus, SandboxState, StringMap,
};
use serde_json::json;

const T0: i64 = 1_700_000_000;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(T0 + s).unwrap()
}
fn time_at(s: i64) -> Option<Time> {
    Some(Time(t(s)))
}
fn ns(s: i64) -> i64 {
    (T0 + s) * 1_000_000_000 + 123_456 // sub-second parts are dropped in the status
}

fn pod(spec: serde_json::Value) -> Pod {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u1",
                     "annotations": {"kubernetes.io/config.source": "file"}},
        "spec": spec,
        "status": {"phase": "Pending"}
    }))
    .unwrap();
    crate::sources::defaults::apply(&mut p);
    p
}

fn one(policy: &str) -> Pod {
    pod(json!({"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox:1"}]}))
}

fn sandbox() -> PodSandboxStatus {
    PodSandboxStatus {
        id: "sb".into(),
        metadata: PodSandboxMetadata {
            name: "p".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 0,
        },
        state: SandboxState::Ready,
        created_at: ns(0),
        network: PodSandboxNetworkStatus {
            ip: "10.88.0.5".into(),
            additional_ips: vec!["fd00::5".into()],
        },
        ..Default::default()
    }
}

fn rt(name: &str, id: &str, state: RtState, exit: i32, created: i64, restarts: i32) -> RtStatus {
    let mut annotations = StringMap::new();
    annotations.insert(keys::CONTAINER_RESTART_COUNT.into(), restarts.to_string());
    RtStatus {
        id: id.into(),
        metadata: ContainerMetadata {
            name: name.into(),
            attempt: restarts as u32,
        },
        state,
        created_at: ns(created),
        started_at: if state == RtState::Created {
            0
        } else {
            ns(created + 1)
        },
        finished_at: if state == RtState::Exited {
            ns(created + 5)
        } else {
            0
        },
        exit_code: exit,
        image: "docker.io/library/busybox:1".into(),
        image_id: "docker.io/library/busybox@sha256:abc".into(),
        annotations,
        ..Default::default()
    }
}

struct Case {
    pod: Pod,
    runtime: PodRuntimeStatus,
    probes: ProbeResults,
    waiting: BTreeMap<String, Waiting>,
    previous: Option<PodStatus>,
    terminal: bool,
    now: i64,
}

impl Case {
    fn new(pod: Pod, sandboxes: Vec<PodSandboxStatus>, containers: Vec<RtStatus>) -> Self {
        Case {
            pod,
            runtime: PodRuntimeStatus::new("u1", "p", "default", sandboxes, containers),
            probes: ProbeResults::default(),
            waiting: BTreeMap::new(),
            previous: None,
            terminal: false,
            now: 100,
        }
    }
    fn wait(mut self, name: &str, reason: WaitingReason, message: &str) -> Self {
        self.waiting.insert(
            name.into(),
            Waiting {
                reason,
                message: message.into(),
            },
        );
        self
    }
    fn run(&self) -> PodStatus {
        let hosts: Vec<IpAddr> = vec!["192.168.1.10".parse().unwrap(), "fd00::10".parse().unwrap()];
        generate_pod_status(&StatusInput {
            pod: &self.pod,
            runtime: &self.runtime,
            probes: &self.probes,
            waiting: &self.waiting,
            previous: self.previous.as_ref(),
            qos_class: "BestEffort",
            host_ips: &hosts,
            pod_is_terminal: self.terminal,
            now: t(self.now),
        })
    }
}

fn cond<'a>(s: &'a PodStatus, type_: &str) -> &'a PodCondition {
    s.conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
}

/// (status, reason, message) of a condition.
fn c3(s: &PodStatus, type_: &str) -> (String, Option<String>, Option<String>) {
    let c = cond(s, type_);
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn tru() -> (String, Option<String>, Option<String>) {
    ("True".into(), None, None)
}

fn container<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    s.container_statuses
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == name)
        .unwrap()
}
fn init_container<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    s.init_container_statuses
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == name)
        .unwrap()
}

fn waiting(reason: &str, message: Option<&str>) -> Option<ContainerState> {
    Some(ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: message.map(String::from),
        }),
        ..Default::default()
    })
}

fn terminated(exit: i32, reason: &str, created: i64, id: &str) -> Option<ContainerState> {
    Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: exit,
            reason: Some(reason.into()),
            message: None,
            started_at: time_at(created + 1),
            finished_at: time_at(created + 5),
            container_id: Some(format!("containerd://{id}")),
            signal: None,
        }),
        ..Default::default()
    })
}

fn running(created: i64) -> Option<ContainerState> {
    Some(ContainerState {
        running: Some(ContainerStateRunning {
            started_at: time_at(created + 1),
        }),
        ..Default::default()
    })
}

#[test]
fn new_pod_without_sandbox() {
    let s = Case::new(one("Always"), vec![], vec![]).run();
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(s.host_ip.as_deref(), Some("192.168.1.10"));
    assert_eq!(
        s.host_ips,
        Some(vec![
            HostIP {
                ip: "192.168.1.10".into()
            },
            HostIP {
                ip: "fd00::10".into()
            }
        ])
    );
    assert_eq!(s.pod_ip, None);
    assert_eq!(s.start_time, time_at(100));
    assert!(s.init_container_statuses.is_none());
    let a = container(&s, "a");
    assert_eq!(a.state, waiting("ContainerCreating", None));
    assert_eq!(a.image, "busybox:1");
    assert_eq!(a.image_id, "");
    assert_eq!(a.container_id, None);
    assert_eq!(
        (a.ready, a.started, a.restart_count),
        (false, Some(false), 0)
    );
    assert_eq!(
        c3(&s, "PodReadyToStartContainers"),
        ("False".into(), None, None)
    );
    assert_eq!(c3(&s, "Initialized"), tru());
    let not_ready = (
        "False".to_string(),
        Some("ContainersNotReady".to_string()),
        Some("containers with unready status: [a]".to_string()),
    );
    assert_eq!(c3(&s, "Ready"), not_ready);
    assert_eq!(c3(&s, "ContainersReady"), not_ready);
    assert_eq!(c3(&s, "PodScheduled"), tru());
    let types: Vec<&str> = s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(
        types,
        vec![
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    assert!(s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .all(|c| c.last_transition_time == time_at(100)));
}

#[test]
fn running_pod_and_transition_times() {
    let mut c = Case::new(
        one("Always"),
        vec![sandbox()],
        vec![rt("a", "c1", RtState::Running, 0, 10, 0)],
    );
    let s = c.run();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ip.as_deref(), Some("10.88.0.5"));
    assert_eq!(
        s.pod_ips,
        Some(vec![
            PodIP {
                ip: "10.88.0.5".into()
            },
            PodIP {
                ip: "fd00::5".into()
            }
        ])
    );
    let a = container(&s, "a");
    assert_eq!(a.state, running(10));
    assert_eq!(a.last_state, None);
    assert_eq!(a.container_id.as_deref(), Some("containerd://c1"));
    assert_eq!(a.image, "docker.io/library/busybox:1");
    assert_eq!(a.image_id, "docker.io/library/busybox@sha256:abc");
    assert_eq!((a.ready, a.started, a.restart_count), (true, Some(true), 0));
    for ty in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert_eq!(c3(&s, ty), tru(), "{ty}");
    }

    // Later, a readiness probe fails: only Ready/ContainersReady move.
    c.pod.spec.as_mut().unwrap().containers[0].readiness_probe = Some(Default::default());
    c.probes.readiness.insert("c1".into(), ProbeResult::Failure);
    c.previous = Some(s.clone());
    c.now = 200;
    let s2 = c.run();
    assert_eq!(s2.phase.as_deref(), Some("Running"));
    assert!(!container(&s2, "a").ready);
    assert_eq!(container(&s2, "a").started, Some(true));
    assert_eq!(cond(&s2, "Ready").status, "False");
    assert_eq!(cond(&s2, "Ready").last_transition_time, time_at(200));
    assert_eq!(cond(&s2, "Initialized").last_transition_time, time_at(100));
    assert_eq!(cond(&s2, "PodScheduled").last_transition_time, time_at(100));
    assert_eq!(s2.start_time, time_at(100));
    // Success again.
    c.probes.readiness.insert("c1".into(), ProbeResult::Success);
    c.previous = Some(s2);
    c.now = 300;
    let s3 = c.run();
    assert_eq!(cond(&s3, "Ready").status, "True");
    assert_eq!(cond(&s3, "Ready").last_transition_time, time_at(300));
}

/// Every restartPolicy × exit code, as the sync loop leaves it: a container
/// that will restart is waiting in CrashLoopBackOff with the exit as last state.
#[test]
fn restart_policy_by_exit_code() {
    for (policy, exit, phase, restarting) in [
        ("Always", 0, "Running", true),
        ("Always", 1, "Running", true),
        ("OnFailure", 0, "Succeeded", false),
        ("OnFailure", 1, "Running", true),
        ("Never", 0, "Succeeded", false),
        ("Never", 1, "Failed", false),
    ] {
        let reason = if exit == 0 { "Completed" } else { "Error" };
        let msg = "back-off 10s restarting failed container=a pod=p_default(u1)";
        let c = Case::new(
            one(policy),
            vec![sandbox()],
            vec![rt("a", "c1", RtState::Exited, exit, 10, 0)],
        )
        .wait("a", WaitingReason::CrashLoopBackOff, msg);
        let s = c.run();
        let what = format!("{policy} exit {exit}");
        assert_eq!(s.phase.as_deref(), Some(phase), "{what}");
        let a = container(&s, "a");
        if restarting {
            assert_eq!(a.state, waiting("CrashLoopBackOff", Some(msg)), "{what}");
            assert_eq!(a.last_state, terminated(exit, reason, 10, "c1"), "{what}");
        } else {
            assert_eq!(a.state, terminated(exit, reason, 10, "c1"), "{what}");
            assert_eq!(a.last_state, None, "{what}");
        }
        assert_eq!((a.ready, a.started), (false, Some(false)), "{what}");
        match phase {
            "Succeeded" => {
                assert_eq!(
                    c3(&s, "Ready"),
                    ("False".into(), Some("PodCompleted".into()), None)
                );
                assert_eq!(c3(&s, "ContainersReady").1.as_deref(), Some("PodCompleted"));
                assert_eq!(
                    c3(&s, "Initialized"),
                    ("True".into(), Some("PodCompleted".into()), None)
                );
            }
            "Failed" => {
                assert_eq!(
                    c3(&s, "Ready"),
                    ("False".into(), Some("PodFailed".into()), None)
                );
                assert_eq!(c3(&s, "ContainersReady").1.as_deref(), Some("PodFailed"));
            }
            _ => assert_eq!(c3(&s, "Ready").1.as_deref(), Some("ContainersNotReady")),
        }
    }
}

#[test]
fn crash_loop_shows_restart_count_and_previous_exit() {
    // Two instances: the newest exited, the previous one too.
    let c = Case::new(
        one("Always"),
        vec![sandbox()],
        vec![
            rt("a", "c3", RtState::Exited, 2, 30, 2),
            rt("a", "c2", RtState::Exited, 1, 20, 1),
        ],
    )
    .wait(
        "a",
        WaitingReason::CrashLoopBackOff,
        "back-off 20s restarting failed container=a pod=p_default(u1)",
    );
    let s = c.run();
    let a = container(&s, "a");
    assert_eq!(a.restart_count, 2);
    assert_eq!(a.container_id.as_deref(), Some("containerd://c3"));
    assert_eq!(a.last_state, terminated(2, "Error", 30, "c3"));
    assert_eq!(s.phase.as_deref(), Some("Running"));
    // Without a reason (it restarts right away), the newest exit is the state
    // and the one before is the last state.
    let c = Case::new(
        one("Always"),
        vec![sandbox()],
        vec![
            rt("a", "c3", RtState::Exited, 2, 30, 2),
            rt("a", "c2", RtState::Exited, 1, 20, 1),
        ],
    );
    let s = c.run();
    let a = container(&s, "a");
    assert_eq!(a.state, terminated(2, "Error", 30, "c3"));
    assert_eq!(a.last_state, terminated(1, "Error", 20, "c2"));
}

#[test]
fn oom_killed() {
    let mut oom = rt("a", "c1", RtState::Exited, 137, 10, 0);
    oom.reason = "OOMKilled".into();
    oom.message = "memory limit reached".into();
    let s = Case::new(one("Never"), vec![sandbox()], vec![oom]).run();
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    let t = container(&s, "a")
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(t.exit_code, 137);
    assert_eq!(t.message.as_deref(), Some("memory limit reached"));
}

#[test]
fn image_pull_errors_and_start_errors() {
    for (reason, text) in [
        (WaitingReason::ErrImagePull, "ErrImagePull"),
        (WaitingReason::ImagePullBackOff, "ImagePullBackOff"),
        (
            WaitingReason::CreateContainerConfigError,
            "CreateContainerConfigError",
        ),
        (WaitingReason::CreateContainerError, "CreateContainerError"),
    ] {
        let s = Case::new(one("Always"), vec![sandbox()], vec![])
            .wait("a", reason, "Back-off pulling image \"busybox:1\"")
            .run();
        assert_eq!(s.phase.as_deref(), Some("Pending"), "{text}");
        assert_eq!(
            container(&s, "a").state,
            waiting(text, Some("Back-off pulling image \"busybox:1\"")),
            "{text}"
        );
        assert_eq!(c3(&s, "PodReadyToStartContainers").0, "True");
    }
    // A container that was created but could not run.
    let mut failed = rt("a", "c1", RtState::Exited, 128, 10, 0);
    failed.reason = "StartError".into();
    let s = Case::new(one("Always"), vec![sandbox()], vec![failed])
        .wait(
            "a",
            WaitingReason::RunContainerError,
            "exec: \"nope\": not found",
        )
        .run();
    let a = container(&s, "a");
    assert_eq!(
        a.state,
        waiting("RunContainerError", Some("exec: \"nope\": not found"))
    );
    assert_eq!(a.last_state, terminated(128, "StartError", 10, "c1"));
}

fn inits(policy: &str) -> Pod {
    pod(json!({"restartPolicy": policy,
        "initContainers": [{"name": "i1", "image": "busybox:1"}, {"name": "i2", "image": "busybox:1"}],
        "containers": [{"name": "a", "image": "busybox:1"}]}))
}

#[test]
fn init_containers_in_progress() {
    let s = Case::new(
        inits("Always"),
        vec![sandbox()],
        vec![rt("i1", "x1", RtState::Running, 0, 10, 0)],
    )
    .run();
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(init_container(&s, "i1").state, running(10));
    assert!(!init_container(&s, "i1").ready);
    assert_eq!(
        init_container(&s, "i2").state,
        waiting("PodInitializing", None)
    );
    assert_eq!(container(&s, "a").state, waiting("PodInitializing", None));
    assert_eq!(
        c3(&s, "Initialized"),
        (
            "False".into(),
            Some("ContainersNotInitialized".into()),
            Some("containers with incomplete status: [i1 i2]".into())
        )
    );
    let names: Vec<&str> = s
        .init_container_statuses
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, vec!["i1", "i2"]);

    // All init containers done, app running.
    let s = Case::new(
        inits("Always"),
        vec![sandbox()],
        vec![
            rt("i1", "x1", RtState::Exited, 0, 10, 0),
            rt("i2", "x2", RtState::Exited, 0, 20, 0),
            rt("a", "c1", RtState::Running, 0, 30, 0),
        ],
    )
    .run();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(
        init_container(&s, "i2").state,
        terminated(0, "Completed", 20, "x2")
    );
    assert!(init_container(&s, "i1").ready && init_container(&s, "i2").ready);
    assert_eq!(c3(&s, "Initialized"), tru());
    assert_eq!(c3(&s, "Ready"), tru());
}

#[test]
fn init_container_failure() {
    let rts = || {
        vec![
            rt("i1", "x1", RtState::Exited, 0, 10, 0),
            rt("i2", "x2", RtState::Exited, 3, 20, 0),
        ]
    };
    let s = Case::new(inits("Never"), vec![sandbox()], rts()).run();
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(
        init_container(&s, "i2").state,
        terminated(3, "Error", 20, "x2")
    );
    // The app container never ran.
    assert_eq!(container(&s, "a").state, waiting("PodInitializing", None));
    // With restarts allowed, the init container crash-loops and the pod is Pending.
    let s = Case::new(inits("OnFailure"), vec![sandbox()], rts())
        .wait(
            "i2",
            WaitingReason::CrashLoopBackOff,
            "back-off 10s restarting failed container=i2 pod=p_default(u1)",
        )
        .run();
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let i2 = init_container(&s, "i2");
    assert_eq!(
        i2.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("CrashLoopBackOff")
    );
    assert_eq!(i2.last_state, terminated(3, "Error", 20, "x2"));
    // A completed init container is never shown as waiting.
    assert_eq!(
        init_container(&s, "i1").state,
        terminated(0, "Completed", 10, "x1")
    );
}

fn sidecar_pod() -> Pod {
    pod(json!({"restartPolicy": "Never",
        "initContainers": [{"name": "s", "image": "busybox:1", "restartPolicy": "Always",
                            "startupProbe": {"exec": {"command": ["true"]}}}],
        "containers": [{"name": "a", "image": "busybox:1"}]}))
}

#[test]
fn sidecars() {
    // Running, startup probe not yet passed: not started, Pending.
    let mut c = Case::new(
        sidecar_pod(),
        vec![sandbox()],
        vec![rt("s", "s1", RtState::Running, 0, 10, 0)],
    );
    let s = c.run();
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let sc = init_container(&s, "s");
    assert_eq!((sc.started, sc.ready), (Some(false), false));
    assert_eq!(cond(&s, "Initialized").status, "False");
    // Started: initialized; the app runs next to it.
    c.probes.startup.insert("s1".into(), ProbeResult::Success);
    c.runtime
        .containers
        .insert(0, rt("a", "c1", RtState::Running, 0, 20, 0));
    let s = c.run();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let sc = init_container(&s, "s");
    assert_eq!((sc.started, sc.ready), (Some(true), true));
    assert_eq!(c3(&s, "Initialized"), tru());
    assert_eq!(c3(&s, "ContainersReady"), tru());
    // The app finished (Never); the sidecar still runs until the pod is
    // killed: Running; once stopped: Succeeded.
    c.runtime.containers[0] = rt("a", "c1", RtState::Exited, 0, 20, 0);
    assert_eq!(c.run().phase.as_deref(), Some("Running"));
    c.runtime.containers[1] = rt("s", "s1", RtState::Exited, 143, 10, 0);
    assert_eq!(c.run().phase.as_deref(), Some("Succeeded"));
}

#[test]
fn deadline_exceeded() {
    let p = pod(
        json!({"activeDeadlineSeconds": 60, "containers": [{"name": "a", "image": "busybox:1"}]}),
    );
    let mut c = Case::new(
        p,
        vec![sandbox()],
        vec![rt("a", "c1", RtState::Running, 0, 10, 0)],
    );
    c.previous = Some(PodStatus {
        phase: Some("Running".into()),
        start_time: time_at(0),
        ..Default::default()
    });
    c.now = 59;
    assert_eq!(c.run().phase.as_deref(), Some("Running"));
    c.now = 60;
    let s = c.run();
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        s.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    assert_eq!(s.start_time, time_at(0));
    // Later statuses keep reason and message with the phase.
    c.previous = Some(s);
    c.runtime.containers[0] = rt("a", "c1", RtState::Exited, 137, 10, 0);
    let s = c.run();
    assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
}

#[test]
fn terminal_phase_is_sticky() {
    // Succeeded before; the runtime lost the containers since.
    let mut c = Case::new(one("OnFailure"), vec![], vec![]);
    c.previous = Some(PodStatus {
        phase: Some("Succeeded".into()),
        start_time: time_at(0),
        ..Default::default()
    });
    assert_eq!(c.run().phase.as_deref(), Some("Succeeded"));
}

#[test]
fn vanished_running_container_is_not_pending() {
    let mut c = Case::new(one("Always"), vec![sandbox()], vec![]);
    c.previous = Some(PodStatus {
        phase: Some("Running".into()),
        start_time: time_at(0),
        container_statuses: Some(vec![ContainerStatus {
            name: "a".into(),
            restart_count: 3,
            state: running(10),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let s = c.run();
    let a = container(&s, "a");
    assert_eq!(a.restart_count, 4);
    let last = a.last_state.clone().unwrap().terminated.unwrap();
    assert_eq!(last.reason.as_deref(), Some("ContainerStatusUnknown"));
    assert_eq!(last.exit_code, 137);
    assert_eq!(s.phase.as_deref(), Some("Running"));
}

#[test]
fn host_network_pod_gets_host_ips() {
    let p = pod(json!({"hostNetwork": true, "containers": [{"name": "a", "image": "busybox:1"}]}));
    let mut sb = sandbox();
    sb.network.ip.clear();
    sb.network.additional_ips.clear();
    sb.namespace_options.network = crate::runtime::NamespaceMode::Node;
    let s = Case::new(p, vec![sb], vec![rt("a", "c1", RtState::Running, 0, 10, 0)]).run();
    assert_eq!(s.pod_ip.as_deref(), Some("192.168.1.10"));
    assert_eq!(s.pod_ips.as_ref().unwrap().len(), 2);
    assert_eq!(c3(&s, "PodReadyToStartContainers"), tru());
}

#[test]
fn status_round_trips_through_json() {
    let s = Case::new(
        one("Always"),
        vec![sandbox()],
        vec![rt("a", "c1", RtState::Running, 0, 10, 0)],
    )
    .run();
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(
        v["containerStatuses"][0]["state"]["running"]["startedAt"],
        "2023-11-14T22:13:31Z"
    );
    assert_eq!(
        v["conditions"][0]["lastTransitionTime"],
        "2023-11-14T22:15:00Z"
    );
    let back: PodStatus = serde_json::from_value(v).unwrap();
    assert_eq!(back, s);
}

fn cs(
    name: &str,
    state: Option<ContainerState>,
    last: Option<ContainerState>,
    started: bool,
) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state,
        last_state: last,
        started: Some(started),
        ..Default::default()
    }
}

#[test]
fn phase_table() {
    let sidecar = pod(json!({"restartPolicy": "Always",
        "initContainers": [{"name": "s", "image": "i", "restartPolicy": "Always"}],
        "containers": [{"name": "a", "image": "i"}]}));
    let mut api_pod = one("Always");
    api_pod
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(crate::sources::CONFIG_SOURCE.into(), "api".into());
    let run = running(1);
    let exit0 = terminated(0, "Completed", 1, "x");
    let exit1 = terminated(1, "Error", 1, "x");
    let crash = waiting("CrashLoopBackOff", None);
    // (what, pod, statuses, pod is terminal, pod has initialized, phase)
    type Case<'a> = (&'a str, &'a Pod, Vec<ContainerStatus>, bool, bool, &'a str);
    let cases: Vec<Case> = vec![
        ("no status yet", &sidecar, vec![], false, false, "Pending"),
        (
            "sidecar running, not started",
            &sidecar,
            vec![
                cs("s", run.clone(), None, false),
                cs("a", waiting("PodInitializing", None), None, false),
            ],
            false,
            false,
            "Pending",
        ),
        (
            "sidecar restarting after the pod initialized",
            &sidecar,
            vec![
                cs("s", crash.clone(), exit1.clone(), false),
                cs("a", run.clone(), None, true),
            ],
            false,
            true,
            "Running",
        ),
        (
            "sidecar not started again, not initialized",
            &sidecar,
            vec![
                cs("s", run.clone(), None, false),
                cs("a", run.clone(), None, true),
            ],
            false,
            false,
            "Pending",
        ),
        (
            "Always, crash looping",
            &api_pod,
            vec![cs("a", crash.clone(), exit1.clone(), false)],
            false,
            false,
            "Running",
        ),
        (
            "terminal API pod, success",
            &api_pod,
            vec![cs("a", exit0.clone(), None, false)],
            true,
            false,
            "Succeeded",
        ),
        (
            "terminal API pod, failure",
            &api_pod,
            vec![cs("a", exit1.clone(), None, false)],
            true,
            false,
            "Failed",
        ),
        // Static pods get no terminal phase from termination (upstream TODO #116484).
        (
            "terminal static pod",
            &sidecar,
            vec![cs("a", exit0.clone(), None, false)],
            true,
            false,
            "Pending",
        ),
    ];
    for (what, p, statuses, terminal, initialized, want) in cases {
        assert_eq!(
            get_phase(p, &statuses, terminal, initialized),
            want,
            "{what}"
        );
    }
    let static_one = one("Always");
    assert_eq!(
        get_phase(&static_one, &[cs("a", exit0, None, false)], true, false),
        "Running",
        "terminal static pod with Always"
    );
}
