//! The runc shim driven through picolet's shim layer: lifecycle, one shim
//! per pod, concurrent calls, a crashed shim, stats. Root, real shim/runc.

mod shim_support;

use picolet::rt;
use picolet::runtime::logs::{ContainerLog, LogPolicy, MAX_LINE};
use picolet::runtime::shim::{self, CreateTask, Shims, TaskStatus};
use picolet::runtime::ttrpc::Code;
use shim_support::*;
use std::time::{Duration, Instant};

fn create_req(b: &shim::Bundle) -> CreateTask {
    CreateTask {
        id: b.id.clone(),
        bundle: b.dir.clone(),
        ..Default::default()
    }
}

#[test]
fn lifecycle_leaves_nothing_behind() {
    rt::block_on(async {
        let env = TestEnv::new(1);
        let b = env.bundle(
            "c1",
            "busybox",
            &["sh", "-c", "echo out; echo err >&2; sleep 0.3; exit 3"],
            None,
            None,
        );
        let rootfs = env.overlay_rootfs(&b);
        let _drain = b.drain_log().unwrap();
        let shims = Shims::new(env.cfg.clone());
        let t0 = Instant::now();
        let shim = shims.start(&b).await.unwrap();
        let t_start = t0.elapsed();
        assert_eq!(b.read_address().unwrap().as_ref(), Some(shim.address()));
        assert_eq!(env.shim_pids().len(), 1);

        let log = env.root.join("logs/c1/0.log");
        let policy = LogPolicy {
            max_size: 1 << 20,
            max_files: 2,
            max_line: MAX_LINE,
        };
        let logs = ContainerLog::open(Some(&b.stdout_fifo()), Some(&b.stderr_fifo()), &log, policy)
            .unwrap();
        let mut req = create_req(&b);
        req.rootfs = vec![rootfs];
        req.stdout = b.stdout_fifo().to_string_lossy().into_owned();
        req.stderr = b.stderr_fifo().to_string_lossy().into_owned();
        let t0 = Instant::now();
        let pid = shim.create(&req).await.unwrap();
        let t_create = t0.elapsed();
        assert!(pid > 0);
        let copy = logs.start();
        assert!(b.rootfs_mounted().unwrap());
        let st = shim.state(&b.id, None).await.unwrap();
        assert_eq!((st.status, st.pid), (TaskStatus::Created, pid));

        // Pitfall 6: a second Create is refused before it reaches the shim.
        let e = shim.create(&req).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e}");
        assert!(
            b.rootfs_mounted().unwrap(),
            "second Create must not unmount"
        );

        let t0 = Instant::now();
        assert_eq!(shim.start(&b.id, None).await.unwrap(), pid);
        eprintln!(
            "shim start {t_start:?}, Create {t_create:?}, Start {:?}",
            t0.elapsed()
        );
        assert_eq!(
            shim.state(&b.id, None).await.unwrap().status,
            TaskStatus::Running
        );
        let exit = shim.wait(&b.id, None).await.unwrap();
        assert_eq!(exit.exit_status, 3);
        assert!(exit.exited_at > 0);
        let st = shim.state(&b.id, None).await.unwrap();
        assert_eq!((st.status, st.exit_status), (TaskStatus::Stopped, 3));

        let d = shim.delete(&b.id, None).await.unwrap();
        assert_eq!((d.pid, d.exit_status), (pid, 3));
        copy.wait().await;
        let text = std::fs::read_to_string(&log).unwrap();
        let entries: Vec<&str> = text.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert!(entries.contains(&"stdout F out"), "{text}");
        assert!(entries.contains(&"stderr F err"), "{text}");
        let e = shim.state(&b.id, None).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(!b.rootfs_mounted().unwrap());

        shims.shutdown(&shim, &b.id).await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || env.shim_pids().is_empty()).await,
            "shim still running: {:?}",
            env.shim_pids()
        );
        assert!(!shim.address().socket.exists(), "shim socket left");
        assert_eq!(env.runc_list(), Vec::<String>::new());
        assert_eq!(env.mounts(), Vec::<String>::new());
        b.remove().unwrap();
        assert!(!b.dir.exists());
    });
}

#[test]
fn one_shim_per_pod_group() {
    rt::block_on(async {
        let env = TestEnv::new(2);
        let group = "pod-uid-2";
        let sb = env.bundle("sandbox", "busybox", &["sleep", "1000"], Some(group), None);
        let c2 = env.bundle("app", "busybox", &["sleep", "1000"], Some(group), None);
        let (_d1, _d2) = (sb.drain_log().unwrap(), c2.drain_log().unwrap());
        let shims = Shims::new(env.cfg.clone());
        let s1 = shims.start(&sb).await.unwrap();
        let leader = env.shim_pids();
        assert_eq!(leader.len(), 1);
        let t0 = Instant::now();
        let s2 = shims.start(&c2).await.unwrap();
        eprintln!("second start: {:?}", t0.elapsed());
        assert_eq!(s1.address(), s2.address(), "the group's shim serves both");
        assert_eq!(env.shim_pids(), leader, "second start spawned nothing");
        assert_eq!(c2.read_address().unwrap().as_ref(), Some(s1.address()));

        for b in [&sb, &c2] {
            s2.create(&create_req(b)).await.unwrap();
            s2.start(&b.id, None).await.unwrap();
        }
        for b in [&sb, &c2] {
            assert_eq!(
                s1.state(&b.id, None).await.unwrap().status,
                TaskStatus::Running
            );
        }
        let info = s1.connect(&sb.id).await.unwrap();
        assert_eq!(info.shim_pid, leader[0]);

        // Shutdown with a container left is a no-op.
        s1.shutdown(&sb.id).await.unwrap();
        assert_eq!(env.shim_pids(), leader);

        // App container first, sandbox (group leader) last.
        for b in [&c2, &sb] {
            s1.kill(&b.id, None, 9, true).await.unwrap();
            assert_eq!(s1.wait(&b.id, None).await.unwrap().exit_status, 137);
            s1.delete(&b.id, None).await.unwrap();
        }
        shims.shutdown(&s1, &sb.id).await.unwrap();
        assert!(eventually(Duration::from_secs(5), || env.shim_pids().is_empty()).await);
        assert_eq!(env.runc_list(), Vec::<String>::new());
        c2.remove().unwrap();
        sb.remove().unwrap();
    });
}

#[test]
fn calls_run_concurrently_on_one_connection() {
    rt::block_on(async {
        let env = TestEnv::new(3);
        let b = env.bundle("c", "busybox", &["sleep", "1"], None, None);
        let _drain = b.drain_log().unwrap();
        let shims = Shims::new(env.cfg.clone());
        let shim = shims.start(&b).await.unwrap();
        shim.create(&create_req(&b)).await.unwrap();
        shim.start(&b.id, None).await.unwrap();
        let t0 = Instant::now();
        let wait = rt::spawn({
            let (shim, id) = (shim.clone(), b.id.clone());
            async move { (shim.wait(&id, None).await, Instant::now()) }
        });
        async_io::Timer::after(Duration::from_millis(50)).await;
        let st = shim.state(&b.id, None).await.unwrap();
        let pids = shim.pids(&b.id).await.unwrap();
        let answered = Instant::now();
        assert_eq!(st.status, TaskStatus::Running);
        assert_eq!(pids, vec![st.pid]);
        assert!(
            answered - t0 < Duration::from_millis(800),
            "State/Pids waited for Wait"
        );
        let (exit, waited) = wait.await;
        assert_eq!(exit.unwrap().exit_status, 0);
        assert!(waited > answered, "Wait answered only after the exit");
        assert!(waited - t0 >= Duration::from_millis(800));
        shim.delete(&b.id, None).await.unwrap();
        shims.shutdown(&shim, &b.id).await.unwrap();
        assert!(eventually(Duration::from_secs(5), || env.shim_pids().is_empty()).await);
    });
}

#[test]
fn a_crashed_shim_is_cleaned_up_with_the_delete_action() {
    rt::block_on(async {
        let env = TestEnv::new(7);
        let b = env.bundle("c", "busybox", &["sleep", "1000"], None, None);
        let rootfs = env.overlay_rootfs(&b);
        let _drain = b.drain_log().unwrap();
        let shims = Shims::new(env.cfg.clone());
        let shim = shims.start(&b).await.unwrap();
        let mut req = create_req(&b);
        req.rootfs = vec![rootfs];
        shim.create(&req).await.unwrap();
        let pid = shim.start(&b.id, None).await.unwrap();
        let info = shim.connect(&b.id).await.unwrap();
        assert_eq!(info.task_pid, pid);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(info.shim_pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        assert!(eventually(Duration::from_secs(5), || env.shim_pids().is_empty()).await);
        assert!(alive(pid), "the container outlives its shim");
        let e = shim.state(&b.id, None).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");

        let exit = shims.cleanup_dead(&b).await.unwrap();
        assert_eq!(exit.exit_status, 137);
        assert!(
            eventually(Duration::from_secs(5), || !alive(pid)).await,
            "container still running"
        );
        assert_eq!(env.runc_list(), Vec::<String>::new());
        assert_eq!(env.mounts(), Vec::<String>::new());
        assert!(!shim.address().socket.exists(), "stale socket left");
        assert!(env.shim_pids().is_empty());
        b.remove().unwrap();
    });
}

fn read_u64(p: std::path::PathBuf) -> u64 {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn stats_match_cgroupfs() {
    rt::block_on(async {
        let env = TestEnv::new(8);
        let limit = 64 << 20;
        // Burn some CPU, then idle so the figures hold still.
        let b = env.bundle(
            "c",
            "busybox",
            &["sh", "-c", "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; touch /tmp/done; exec sleep 1000"],
            None,
            Some(limit),
        );
        let _drain = b.drain_log().unwrap();
        let shims = Shims::new(env.cfg.clone());
        let shim = shims.start(&b).await.unwrap();
        shim.create(&create_req(&b)).await.unwrap();
        shim.start(&b.id, None).await.unwrap();
        let done = b.rootfs().join("tmp/done");
        assert!(eventually(Duration::from_secs(20), || done.exists()).await);
        async_io::Timer::after(Duration::from_millis(100)).await;

        let cpu = || read_u64(env.cgroup("cpuacct", &b.id).join("cpuacct.usage"));
        let mem = || read_u64(env.cgroup("memory", &b.id).join("memory.usage_in_bytes"));
        let (cpu0, mem0) = (cpu(), mem());
        let m = shim.stats(&b.id).await.unwrap();
        let (cpu1, mem1) = (cpu(), mem());
        let s = m.to_container_stats(&b.id, 1);
        assert!(matches!(m, shim::Metrics::V1(_)));
        assert!(cpu0 <= s.cpu_usage_core_nanoseconds && s.cpu_usage_core_nanoseconds <= cpu1);
        assert!(s.cpu_usage_core_nanoseconds > 1_000_000, "{s:?}");
        assert!(
            s.memory_usage_bytes == mem0 || s.memory_usage_bytes == mem1,
            "{} vs {mem0}/{mem1}",
            s.memory_usage_bytes
        );
        assert_eq!(s.memory_limit_bytes, limit);
        assert_eq!(
            s.pids,
            read_u64(env.cgroup("pids", &b.id).join("pids.current"))
        );
        assert!(s.memory_working_set_bytes <= s.memory_usage_bytes);

        // Update applies OCI linux.resources live.
        let res = serde_json::json!({"memory": {"limit": 128u64 << 20}, "cpu": {"quota": 50000, "period": 100000}});
        shim.update(&b.id, &res).await.unwrap();
        assert_eq!(
            read_u64(env.cgroup("memory", &b.id).join("memory.limit_in_bytes")),
            128 << 20
        );
        assert_eq!(
            read_u64(env.cgroup("cpu", &b.id).join("cpu.cfs_quota_us")),
            50000
        );

        shim.kill(&b.id, None, 9, true).await.unwrap();
        shim.wait(&b.id, None).await.unwrap();
        shim.delete(&b.id, None).await.unwrap();
        assert!(
            !env.cgroup("memory", &b.id).exists(),
            "container cgroup left"
        );
        shims.shutdown(&shim, &b.id).await.unwrap();
    });
}
