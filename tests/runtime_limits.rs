//! Resources through the runtime: pod and container limits in cgroupfs and
//! enforced (a memory hog is OOMKilled with 137); termination messages by
//! policy; the container's own stop signal. Root; real everything.

mod runtime_support;

use picolet::rt;
use picolet::runtime::{ContainerState, ContainerStatus, Runtime, ShimRuntime};
use runtime_support::*;
use serde_json::json;
use std::time::{Duration, Instant};

async fn wait_exited(rt: &ShimRuntime, id: &str, within: Duration) -> ContainerStatus {
    let end = Instant::now() + within;
    loop {
        let s = rt.container_status(id).await.unwrap();
        if s.state == ContainerState::Exited {
            return s;
        }
        assert!(
            Instant::now() < end,
            "{id} still {:?} after {within:?}",
            s.state
        );
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

fn read(p: std::path::PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn limits_are_in_cgroupfs_and_a_memory_hog_is_oom_killed() {
    let env = RtEnv::new(3);
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let pod = env.pod(
            "limits",
            json!({"spec": {"containers": [
                {"name": "limited", "image": "busybox", "command": ["sleep", "3600"],
                 "resources": {"requests": {"cpu": "100m", "memory": "16Mi"},
                               "limits": {"cpu": "200m", "memory": "48Mi"}}},
                {"name": "hog", "image": "busybox",
                 "command": ["sh", "-c", "sleep 1; exec tail /dev/zero"],
                 "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}}}
            ]}}),
        );
        let (sid, ids) = env
            .start_pod(&rt, &pod, &[("limited", &busybox), ("hog", &busybox)])
            .await;
        let pod_cg = format!("{}/kubepods/burstable/podrt3-limits-uid", env.cgroup_root);
        let c0 = format!("{pod_cg}/{}", ids[0]);
        assert_eq!(
            read(env.cgroup_dir("memory", &c0).join("memory.limit_in_bytes")),
            (48u64 << 20).to_string()
        );
        assert_eq!(
            read(env.cgroup_dir("cpu", &c0).join("cpu.cfs_quota_us")),
            "20000"
        );
        assert_eq!(
            read(env.cgroup_dir("cpu", &c0).join("cpu.cfs_period_us")),
            "100000"
        );
        assert_eq!(read(env.cgroup_dir("cpu", &c0).join("cpu.shares")), "102");
        // The container's process is in that cgroup, in every hierarchy
        // and the unified tree.
        let pid = read(env.cgroup_dir("pids", &c0).join("cgroup.procs"));
        assert!(!pid.is_empty());
        assert!(env.cgroup_dir("", &c0).is_dir(), "unified tree");
        // Pod level: both containers declare limits, so the pod is capped
        // at their sum; the burstable parent's shares follow the requests.
        assert_eq!(
            read(
                env.cgroup_dir("memory", &pod_cg)
                    .join("memory.limit_in_bytes")
            ),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            read(env.cgroup_dir("cpu", &pod_cg).join("cpu.cfs_quota_us")),
            "30000"
        );
        let burstable = format!("{}/kubepods/burstable", env.cgroup_root);
        assert_eq!(
            read(env.cgroup_dir("cpu", &burstable).join("cpu.shares")),
            "204"
        );
        let besteffort = format!("{}/kubepods/besteffort", env.cgroup_root);
        assert_eq!(
            read(env.cgroup_dir("cpu", &besteffort).join("cpu.shares")),
            "2"
        );

        let s = wait_exited(&rt, &ids[1], Duration::from_secs(60)).await;
        assert_eq!(
            (s.exit_code, s.reason.as_str()),
            (137, "OOMKilled"),
            "{s:?}"
        );
        assert!(s.finished_at > s.started_at);
        // The cgroup of the exited container is gone (task deleted).
        assert!(!env
            .cgroup_dir("memory", &format!("{pod_cg}/{}", ids[1]))
            .exists());
        let s = rt.container_status(&ids[0]).await.unwrap();
        assert_eq!(s.state, ContainerState::Running);

        rt.remove_pod_sandbox(&sid).await.unwrap();
        env.assert_nothing_left(&[sid]);
        let burstable_shares = read(env.cgroup_dir("cpu", &burstable).join("cpu.shares"));
        assert_eq!(burstable_shares, "2", "no burstable pod left");
    });
}

#[test]
fn termination_messages_and_the_stop_signal() {
    let env = RtEnv::new(4);
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let pod = env.pod(
            "term",
            json!({"spec": {"containers": [
                {"name": "file", "image": "busybox",
                 "command": ["sh", "-c", "echo -n bye > /dev/termination-log; echo noise; exit 1"]},
                {"name": "logs", "image": "busybox", "terminationMessagePolicy": "FallbackToLogsOnError",
                 "command": ["sh", "-c", "i=0; while [ $i -lt 100 ]; do echo l$i; i=$((i+1)); done; exit 2"]},
                {"name": "fine", "image": "busybox", "terminationMessagePolicy": "FallbackToLogsOnError",
                 "command": ["sh", "-c", "echo all good"]},
                {"name": "custom", "image": "busybox", "terminationMessagePath": "/tmp/why",
                 "command": ["sh", "-c", "echo -n custom > /tmp/why; exit 3"]},
                {"name": "usr1", "image": "busybox",
                 "lifecycle": {"stopSignal": "SIGUSR1"},
                 "command": ["sh", "-c", "trap 'echo got usr1; exit 0' USR1; while true; do sleep 0.2; done"]}
            ]}}),
        );
        let (sid, ids) = env
            .start_pod(
                &rt,
                &pod,
                &[
                    ("file", &busybox),
                    ("logs", &busybox),
                    ("fine", &busybox),
                    ("custom", &busybox),
                    ("usr1", &busybox),
                ],
            )
            .await;
        let s = wait_exited(&rt, &ids[0], Duration::from_secs(30)).await;
        assert_eq!(
            (s.exit_code, s.reason.as_str(), s.message.as_str()),
            (1, "Error", "bye")
        );
        let s = wait_exited(&rt, &ids[1], Duration::from_secs(30)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (2, "Error"));
        let want: String = (20..100).map(|i| format!("l{i}\n")).collect();
        assert_eq!(s.message, want, "the last 80 log lines");
        let s = wait_exited(&rt, &ids[2], Duration::from_secs(30)).await;
        assert_eq!(
            (s.exit_code, s.reason.as_str(), s.message.as_str()),
            (0, "Completed", "")
        );
        let s = wait_exited(&rt, &ids[3], Duration::from_secs(30)).await;
        assert_eq!((s.exit_code, s.message.as_str()), (3, "custom"));

        rt.stop_container(&ids[4], Duration::from_secs(20))
            .await
            .unwrap();
        let s = rt.container_status(&ids[4]).await.unwrap();
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
        let log = log_entries(&s.log_path);
        assert_eq!(
            log.last().map(|e| e.1.as_str()),
            Some("got usr1"),
            "{log:?}"
        );

        rt.remove_pod_sandbox(&sid).await.unwrap();
        env.assert_nothing_left(&[sid]);
    });
}
