//! Recovery: `kill -9` of the process holding the runtime, then a fresh
//! runtime adopts what runs (same processes, logs continue without a lost
//! line); a SIGKILLed shim is found by `relist` and by a restart, and its
//! pod is reported exited and cleaned on removal; half-made and orphaned
//! things are removed at start-up without touching a running container of
//! a known sandbox. Root; real everything.

mod runtime_support;

use picolet::rt;
use picolet::runtime::{ContainerState, Runtime, RuntimeEvent, SandboxState};
use runtime_support::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PICOLET_RT_TEST_CHILD";

/// The pid a container checkpoint records.
fn ckpt(env: &RtEnv, id: &str) -> serde_json::Value {
    let p = env
        .cfg
        .state_dir()
        .join("containers")
        .join(format!("{id}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn ckpt_pid(env: &RtEnv, id: &str) -> u32 {
    ckpt(env, id)["pid"].as_u64().unwrap() as u32
}

const COUNTER: &str = "trap 'exit 0' TERM; i=0; while true; do echo line$i; echo err$i >&2; i=$((i+1)); usleep 10000; done";

/// The child's role: make a pod through the runtime, say so, then block
/// until the parent kills it with SIGKILL.
fn child_holds_the_runtime() {
    let mut env = RtEnv::attach(7);
    env.owner = false;
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let httpd = env.pull("httpd").await;
        let pod = env.pod(
            "survivor",
            json!({"spec": {"containers": [
                {"name": "counter", "image": "busybox", "command": ["sh", "-c", COUNTER]},
                {"name": "web", "image": "httpd"}
            ]}}),
        );
        let (sid, ids) = env
            .start_pod(&rt, &pod, &[("counter", &busybox), ("web", &httpd)])
            .await;
        println!("READY {sid} {} {}", ids[0], ids[1]);
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        loop {
            async_io::Timer::after(Duration::from_secs(3600)).await;
        }
    });
}

#[test]
fn kill_9_of_the_runtime_process_then_recovery() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child_holds_the_runtime();
    }
    let env = RtEnv::new(7);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill_9_of_the_runtime_process_then_recovery",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child");
    let mut ready = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("READY ") {
            ready = Some(rest.split(' ').map(str::to_string).collect::<Vec<_>>());
            break;
        }
    }
    let Some(ready) = ready else {
        let st = child.wait().unwrap();
        panic!("the child ended ({st}) before making its pod");
    };
    let (sid, counter, web) = (&ready[0], &ready[1], &ready[2]);
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let pids = [ckpt_pid(&env, counter), ckpt_pid(&env, web)];
    assert!(
        pids.iter().all(|p| *p > 0 && alive(*p)),
        "containers survive"
    );
    // The counter keeps writing while nobody reads its FIFOs.
    std::thread::sleep(Duration::from_millis(700));

    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let sbs = rt.list_pod_sandboxes().await.unwrap();
        assert_eq!(sbs.len(), 1);
        assert_eq!((&sbs[0].id, sbs[0].state), (sid, SandboxState::Ready));
        for (id, pid) in [counter, web].iter().zip(pids) {
            let s = rt.container_status(id).await.unwrap();
            assert_eq!(s.state, ContainerState::Running, "{id}");
            assert_eq!(ckpt_pid(&env, id), pid, "the same process, adopted");
            assert!(alive(pid));
        }
        // Adopted for real: exec, and the pod IP still serves.
        let r = rt
            .exec_sync(
                web,
                &args(&["cat", "/www/healthz"]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "ok");
        let ip = rt.pod_sandbox_status(sid).await.unwrap().network.ip;
        let body = http_get_retry(
            format!("{ip}:8080").parse().unwrap(),
            "/healthz",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(body.trim(), "ok");
        async_io::Timer::after(Duration::from_millis(500)).await;
        rt.stop_container(counter, Duration::from_secs(10))
            .await
            .unwrap();
        let s = rt.container_status(counter).await.unwrap();
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));

        // Every line, in order, across the kill: duplicates are allowed
        // only as an immediate repeat (killed between write and consume).
        let entries = log_entries(&s.log_path);
        for (stream, prefix) in [("stdout", "line"), ("stderr", "err")] {
            let mut nums: Vec<u64> = entries
                .iter()
                .filter(|(s, _)| s == stream)
                .map(|(_, t)| t.strip_prefix(prefix).unwrap().parse().unwrap())
                .collect();
            let n = nums.len();
            nums.dedup();
            assert!(
                n - nums.len() <= 20,
                "{} duplicated {stream} lines",
                n - nums.len()
            );
            let want: Vec<u64> = (0..nums.len() as u64).collect();
            assert_eq!(nums, want, "{stream} lines lost or reordered");
            assert!(nums.len() > 100, "{} {stream} lines", nums.len());
        }

        // Nobody read the FIFOs while picolet was down: the lines of that
        // time were logged late, in one burst after the restart.
        let stamps: Vec<i128> = std::fs::read_to_string(&s.log_path)
            .unwrap()
            .lines()
            .map(|l| {
                l.split(' ')
                    .next()
                    .unwrap()
                    .parse::<jiff::Timestamp>()
                    .unwrap()
                    .as_nanosecond()
            })
            .collect();
        let gap = stamps.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(gap >= 600_000_000, "largest gap between entries {gap} ns");

        rt.remove_pod_sandbox(sid).await.unwrap();
        assert!(pids.iter().all(|p| !alive(*p)));
        env.assert_nothing_left(std::slice::from_ref(sid));
    });
}

fn shim_of(env: &RtEnv, sandbox_id: &str) -> u32 {
    let pids: Vec<u32> = env
        .shim_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == sandbox_id.as_bytes()))
        })
        .collect();
    assert_eq!(pids.len(), 1, "one shim serves sandbox {sandbox_id}");
    pids[0]
}

#[test]
fn a_killed_shim_is_found_by_relist_and_after_a_restart() {
    let env = RtEnv::new(8);
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let sleeper = |name: &str| {
            env.pod(
                name,
                json!({"spec": {"containers": [
                    {"name": "a", "image": "busybox", "command": ["sleep", "3600"]},
                    {"name": "b", "image": "busybox", "command": ["sleep", "3600"]}
                ]}}),
            )
        };
        let (sa, ia) = env
            .start_pod(&rt, &sleeper("pa"), &[("a", &busybox), ("b", &busybox)])
            .await;
        let (sb, ib) = env
            .start_pod(&rt, &sleeper("pb"), &[("a", &busybox), ("b", &busybox)])
            .await;
        let pids_a: Vec<u32> = ia.iter().map(|id| ckpt_pid(&env, id)).collect();
        kill(shim_of(&env, &sa), rustix::process::Signal::KILL);
        assert!(
            eventually(Duration::from_secs(5), || env.shim_pids().len() == 1).await,
            "shim A gone"
        );
        assert!(pids_a.iter().all(|p| alive(*p)), "orphaned, still running");
        let evs = rt.relist().await;
        for id in &ia {
            assert!(
                evs.iter()
                    .any(|e| matches!(e, RuntimeEvent::ContainerExited { id: x, .. } if x == id)),
                "{evs:?}"
            );
            let s = rt.container_status(id).await.unwrap();
            assert_eq!((s.state, s.exit_code), (ContainerState::Exited, 137));
        }
        assert!(evs.contains(&RuntimeEvent::SandboxChanged { id: sa.clone() }));
        assert_eq!(
            rt.pod_sandbox_status(&sa).await.unwrap().state,
            SandboxState::NotReady
        );
        assert!(
            pids_a.iter().all(|p| !alive(*p)),
            "killed by the delete action"
        );
        for id in &ib {
            let s = rt.container_status(id).await.unwrap();
            assert_eq!(s.state, ContainerState::Running, "pod B is untouched");
        }

        // Pod B's shim dies while picolet is down.
        let pids_b: Vec<u32> = ib.iter().map(|id| ckpt_pid(&env, id)).collect();
        drop(rt);
        kill(shim_of(&env, &sb), rustix::process::Signal::KILL);
        assert!(eventually(Duration::from_secs(5), || env.shim_pids().is_empty()).await);
        let (rt, _events) = env.runtime().await;
        for id in &ib {
            let s = rt.container_status(id).await.unwrap();
            assert_eq!(
                (s.state, s.exit_code),
                (ContainerState::Exited, 137),
                "{s:?}"
            );
        }
        assert_eq!(
            rt.pod_sandbox_status(&sb).await.unwrap().state,
            SandboxState::NotReady
        );
        assert!(pids_b.iter().all(|p| !alive(*p)));
        // The mounts of the dead containers are gone already.
        for id in ia.iter().chain(&ib) {
            let rootfs = env.cfg.bundles_dir().join(id).join("rootfs");
            assert!(!env.mounts().iter().any(|m| Path::new(m) == rootfs), "{id}");
        }
        rt.remove_pod_sandbox(&sa).await.unwrap();
        rt.remove_pod_sandbox(&sb).await.unwrap();
        env.assert_nothing_left(&[sa, sb]);
    });
}

#[test]
fn restart_removes_half_made_and_orphaned_things_but_keeps_running_pods() {
    let env = RtEnv::new(9);
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let sleeper = |name: &str| {
            env.pod(
                name,
                json!({"spec": {"containers": [
                    {"name": "a", "image": "busybox", "command": ["sleep", "3600"]},
                    {"name": "b", "image": "busybox", "command": ["sleep", "3600"]}
                ]}}),
            )
        };
        // Pod G will be forgotten (its checkpoints lost), pod K is kept.
        let (sg, ig) = env
            .start_pod(&rt, &sleeper("gone"), &[("a", &busybox)])
            .await;
        let (sk, ik) = env
            .start_pod(&rt, &sleeper("kept"), &[("a", &busybox)])
            .await;
        // A container of K that was being created at the crash.
        let pod_k = sleeper("kept");
        let ip = rt.pod_sandbox_status(&sk).await.unwrap().network.ip;
        let cc = env.container_config(&pod_k, "b", &busybox, &[ip], 0);
        let half = rt
            .create_container(&sk, &cc, &env.sandbox_config(&pod_k))
            .await
            .unwrap();
        let g_pid = ckpt_pid(&env, &ig[0]);
        let k_pid = ckpt_pid(&env, &ik[0]);
        drop(rt);

        let st = env.cfg.state_dir();
        std::fs::remove_file(st.join("sandboxes").join(&sg).join("sandbox.json")).unwrap();
        std::fs::remove_file(st.join("containers").join(format!("{}.json", ig[0]))).unwrap();
        let p = st.join("containers").join(format!("{half}.json"));
        let mut cp: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        cp["phase"] = json!("Creating");
        std::fs::write(&p, cp.to_string()).unwrap();
        let half_rootfs = env.cfg.bundles_dir().join(&half).join("rootfs");
        assert!(env.mounts().iter().any(|m| Path::new(m) == half_rootfs));

        let t0 = Instant::now();
        let (rt, _events) = env.runtime().await;
        eprintln!("recovery took {:?}", t0.elapsed());
        // G: unknown now, so everything of it is gone.
        assert!(!alive(g_pid), "the orphan's container is killed");
        let ids = |d: &Path| RtEnv::entries(d);
        let bundles = ids(&env.cfg.bundles_dir());
        assert!(
            !bundles.contains(&sg) && !bundles.contains(&ig[0]),
            "{bundles:?}"
        );
        assert!(!ids(&env.run.join("netns")).contains(&sg));
        assert!(!ids(&st.join("cni")).iter().any(|f| f.starts_with(&sg)));
        assert!(nat_rules_for(&sg).is_empty());
        assert_eq!(env.leases().len(), 1, "K's lease only");
        assert!(!env
            .cgroup_dir(
                "memory",
                &format!("{}/kubepods/besteffort/podrt9-gone-uid", env.cgroup_root)
            )
            .exists());
        assert!(!st.join("sandboxes").join(&sg).exists(), "G's pod files");
        // The half-made container is gone, unmounted.
        assert!(!bundles.contains(&half));
        assert!(!env.mounts().iter().any(|m| Path::new(m) == half_rootfs));
        assert!(rt.container_status(&half).await.is_err());
        // K runs on, untouched.
        assert!(alive(k_pid));
        assert_eq!(ckpt_pid(&env, &ik[0]), k_pid);
        let s = rt.container_status(&ik[0]).await.unwrap();
        assert_eq!(s.state, ContainerState::Running);
        assert_eq!(
            rt.pod_sandbox_status(&sk).await.unwrap().state,
            SandboxState::Ready
        );
        assert_eq!(rt.list_pod_sandboxes().await.unwrap().len(), 1);
        rt.remove_pod_sandbox(&sk).await.unwrap();
        env.assert_nothing_left(&[sg, sk]);
    });
}

const CREATE_CHILD_ENV: &str = "PICOLET_RT_TEST_CREATE_CHILD";

/// Pid file of the hook that holds `runc create` of container `b`.
fn hook_pid_file(env: &RtEnv) -> std::path::PathBuf {
    env.root.join("hook.pid")
}

/// The child's role: a pod whose container `a` runs, then container `b`
/// whose `runc create` blocks in a createRuntime hook (runc runs those
/// before it writes state.json); the parent kills the child meanwhile.
fn child_interrupted_create() {
    let mut env = RtEnv::attach(38);
    env.owner = false;
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let pod = env.pod(
            "halfmade",
            json!({"spec": {"containers": [
                {"name": "a", "image": "busybox", "command": ["sleep", "3600"]},
                {"name": "b", "image": "busybox", "command": ["sleep", "3600"]}
            ]}}),
        );
        let (sid, ids) = env.start_pod(&rt, &pod, &[("a", &busybox)]).await;
        let sc = env.sandbox_config(&pod);
        let ip = rt.pod_sandbox_status(&sid).await.unwrap().network.ip;
        let cc = env.container_config(&pod, "b", &busybox, &[ip], 0);
        let b = rt.create_container(&sid, &cc, &sc).await.unwrap();
        let cfg = env.cfg.bundles_dir().join(&b).join("config.json");
        std::fs::copy(&cfg, cfg.with_extension("orig")).unwrap();
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        let hook = format!(
            "echo $$ > {}; exec sleep 120",
            hook_pid_file(&env).display()
        );
        spec["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
        std::fs::write(&cfg, spec.to_string()).unwrap();
        println!("READY {sid} {} {b}", ids[0]);
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        let r = rt.start_container(&b).await;
        eprintln!("start of b returned: {r:?}");
        loop {
            async_io::Timer::after(Duration::from_secs(3600)).await;
        }
    });
}

/// Processes running `runc ... create` under this test's runc root.
fn runc_creates(env: &RtEnv) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.iter().any(|a| *a == b"create")
                    && args.iter().any(|a| *a == env.runc_root().as_bytes())
            })
        })
        .collect()
}

fn make_half_made(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    picolet::runtime::shim::mkfifo(&dir.join("exec.fifo")).unwrap();
}

#[test]
fn a_runc_create_interrupted_by_kill_9_leaves_nothing_after_recovery() {
    if std::env::var_os(CREATE_CHILD_ENV).is_some() {
        return child_interrupted_create();
    }
    let env = RtEnv::new(38);
    let other_ns = Path::new("/run/containerd/runc/pltest-rt-38-other");
    let _ = std::fs::remove_dir_all(other_ns);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_runc_create_interrupted_by_kill_9_leaves_nothing_after_recovery",
            "--exact",
            "--nocapture",
        ])
        .env(CREATE_CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child");
    let mut ready = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("READY ") {
            ready = Some(rest.split(' ').map(str::to_string).collect::<Vec<_>>());
            break;
        }
    }
    let Some(ready) = ready else {
        let st = child.wait().unwrap();
        panic!("the child ended ({st}) before making its pod");
    };
    let (sid, a, b) = (&ready[0], &ready[1], &ready[2]);
    let root = Path::new(&env.runc_root()).to_path_buf();
    // runc create of b sits in its hook: exec.fifo made, no state.json yet.
    let hook_pid = || {
        std::fs::read_to_string(hook_pid_file(&env))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(30), || hook_pid().is_some()),
        "the createRuntime hook never ran"
    );
    assert!(!runc_creates(&env).is_empty(), "runc create runs");
    assert!(root.join(b).join("exec.fifo").exists());
    assert!(!root.join(b).join("state.json").exists());
    child.kill().unwrap(); // SIGKILL: picolet dies mid-create
    child.wait().unwrap();
    // Its connection closed, so the shim kills runc create half-way.
    assert!(
        wait_until(Duration::from_secs(10), || runc_creates(&env).is_empty()),
        "runc create still runs"
    );
    if let Some(p) = hook_pid() {
        kill(p, rustix::process::Signal::KILL);
    }
    assert!(root.join(b).join("exec.fifo").exists(), "the half-made dir");
    assert!(!root.join(b).join("state.json").exists());
    let listed = |env: &RtEnv| -> Vec<String> {
        let out = Command::new("runc")
            .args(["--root", &env.runc_root(), "list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert!(!listed(&env).contains(b), "runc list does not show it");
    // Also one of an id nobody knows, and one in another namespace.
    make_half_made(&root.join("ghost"));
    make_half_made(&other_ns.join("ghost"));
    let a_pid = ckpt_pid(&env, a);
    // b as it would have been without the hook.
    let cfg = env.cfg.bundles_dir().join(b).join("config.json");
    std::fs::rename(cfg.with_extension("orig"), &cfg).unwrap();

    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        assert!(!root.join(b).exists(), "b's half-made runc dir is gone");
        assert!(!root.join("ghost").exists());
        assert!(
            other_ns.join("ghost").join("exec.fifo").exists(),
            "other namespaces are not touched"
        );
        // a runs on, untouched, its runc state whole.
        assert!(alive(a_pid));
        assert_eq!(ckpt_pid(&env, a), a_pid);
        let s = rt.container_status(a).await.unwrap();
        assert_eq!(s.state, ContainerState::Running);
        assert!(root.join(a).join("state.json").exists());
        assert!(root.join(sid).join("state.json").exists());
        let l = listed(&env);
        assert!(l.contains(a) && l.contains(sid), "{l:?}");
        // b stayed created, and its id can be created again now.
        assert_eq!(
            rt.container_status(b).await.unwrap().state,
            ContainerState::Created
        );
        rt.start_container(b).await.unwrap();
        assert_eq!(
            rt.container_status(b).await.unwrap().state,
            ContainerState::Running
        );

        // Removal clears one too (a Create that timed out, picolet alive).
        let pod = env.pod(
            "halfmade",
            json!({"spec": {"containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}
            ]}}),
        );
        let busybox = env.pull("busybox").await;
        let ip = rt.pod_sandbox_status(sid).await.unwrap().network.ip;
        let cc = env.container_config(&pod, "c", &busybox, &[ip], 0);
        let c = rt
            .create_container(sid, &cc, &env.sandbox_config(&pod))
            .await
            .unwrap();
        make_half_made(&root.join(&c));
        rt.remove_container(&c).await.unwrap();
        assert!(!root.join(&c).exists(), "removal clears it");
        assert!(root.join(a).join("state.json").exists());

        rt.remove_pod_sandbox(sid).await.unwrap();
        env.assert_nothing_left(std::slice::from_ref(sid));
    });
    assert!(other_ns.join("ghost").exists());
    std::fs::remove_dir_all(other_ns).unwrap();
}
