//! Pod and QoS cgroups in every hierarchy, pod- and container-level limits
//! visible in cgroupfs and enforced, stats, and complete removal.

mod spec_support;

use picolet::runtime::convert;
use serde_json::json;
use spec_support::{pod, Env, RunningPod, SandboxProcess};

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn memory_limit_is_enforced() {
    let env = Env::new(9);
    let p = pod(json!({"spec": {"containers": [
        {"name": "hog", "image": "busybox", "command": ["tail", "/dev/zero"],
            "resources": {"limits": {"memory": "16Mi"}, "requests": {"memory": "16Mi", "cpu": "100m"}}},
        {"name": "sees", "image": "busybox", "command": ["sh", "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"],
            "resources": {"limits": {"memory": "16Mi"}}}
    ]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let (code, out, _) = rp.run("sees", "c-sees");
    assert_eq!((code, out.trim()), (0, (16u64 << 20).to_string().as_str()));
    let (code, _, err) = rp.run("hog", "c-hog");
    assert_eq!(code, 137, "OOM-killed: {err}");

    // Detached, to read the counters before runc deletes the cgroup.
    let (bundle, s) = rp.container("hog", "c-hog2", &Default::default());
    env.run_detached("c-hog2", &bundle, &s.unwrap());
    let path = format!("{}/c-hog2", rp.config.cgroup_parent);
    let mut stats = env.cgroups.stats(&path).unwrap();
    for _ in 0..100 {
        if stats.oom_kills > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        stats = env.cgroups.stats(&path).unwrap();
    }
    assert_eq!(stats.oom_kills, 1, "{stats:?}");
    assert_eq!(stats.memory_limit, Some(16 << 20));
    env.delete("c-hog2");
    rp.stop();
}

#[test]
fn cpu_quota_pids_and_stats() {
    let env = Env::new(10);
    let p = pod(json!({"spec": {"containers": [
        {"name": "busy", "image": "busybox", "command": ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 600"],
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}},
        {"name": "forker", "image": "busybox", "command": ["sh", "-c",
            "i=0; while [ $i -lt 30 ]; do sleep 5 & i=$((i+1)); done; wait"]}
    ]}}));
    let mut node_pods = env.node();
    node_pods.pod_pids_limit = 20;
    // The pods limit comes from the kubelet config: rebuild the pod config with it.
    let conv = convert::sandbox_config(&p, &node_pods, 0).unwrap();
    assert_eq!(conv.config.resources.as_ref().unwrap().pids_limit, 20);
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    env.cgroups
        .set_resources(
            &rp.config.cgroup_parent,
            conv.config.resources.as_ref().unwrap(),
        )
        .unwrap();

    let (bundle, s) = rp.container("busy", "c-busy", &Default::default());
    env.run_detached("c-busy", &bundle, &s.unwrap());
    let path = format!("{}/c-busy", rp.config.cgroup_parent);
    if env.cgroups.unified {
        assert_eq!(
            read(&env.cgroup_dir("cpu", &path).join("cpu.max")),
            "25000 100000"
        );
    } else {
        let cpu = env.cgroup_dir("cpu", &path);
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&cpu.join("cpu.shares")), "256");
        assert_eq!(
            read(
                &env.cgroup_dir("pids", &rp.config.cgroup_parent)
                    .join("pids.max")
            ),
            "20"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let st = env.cgroups.stats(&path).unwrap();
    assert!(
        st.cpu_usage_ns > 0 && st.memory_usage > 0 && st.pids >= 1,
        "{st:?}"
    );
    assert!(st.memory_working_set <= st.memory_usage);
    let pod_st = env.cgroups.stats(&rp.config.cgroup_parent).unwrap();
    assert!(pod_st.pids >= st.pids, "pod {pod_st:?} container {st:?}");
    env.delete("c-busy");

    // 20 pids for the pod: the sandbox and the shell use some, forks fail.
    let (_, out, err) = rp.run("forker", "c-forker");
    assert!(
        err.contains("can't fork") || out.contains("can't fork"),
        "{out}\n{err}"
    );
    rp.stop();
}

#[test]
fn pod_and_qos_cgroups_created_and_removed_everywhere() {
    let env = Env::new(11);
    let g = pod(
        json!({"metadata": {"uid": "guaranteed-1"}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "command": ["true"],
            "resources": {"limits": {"cpu": "500m", "memory": "32Mi"}}}]}}),
    );
    let conv = convert::sandbox_config(&g, &env.node(), 0).unwrap().config;
    assert_eq!(
        conv.cgroup_parent,
        format!("{}/kubepods/podguaranteed-1", env.cgroup_root)
    );
    let rp = RunningPod::start(&env, g, SandboxProcess::Busybox);
    let [kubepods, burstable, besteffort] = convert::qos_cgroups(&env.cgroup_root);
    for path in [&kubepods, &burstable, &besteffort, &rp.config.cgroup_parent] {
        for h in &env.cgroups.hierarchies {
            assert!(h.dir(path).is_dir(), "{} missing", h.dir(path).display());
        }
    }
    if !env.cgroups.unified {
        let cpuset = env.cgroup_dir("cpuset", &rp.config.cgroup_parent);
        assert!(
            !read(&cpuset.join("cpuset.cpus")).is_empty(),
            "cpuset copied from the parent"
        );
        assert!(!read(&cpuset.join("cpuset.mems")).is_empty());
        let cpu = env.cgroup_dir("cpu", &rp.config.cgroup_parent);
        assert_eq!(read(&cpu.join("cpu.shares")), "512");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        let mem = env.cgroup_dir("memory", &rp.config.cgroup_parent);
        assert_eq!(
            read(&mem.join("memory.limit_in_bytes")),
            (32u64 << 20).to_string()
        );
        assert_eq!(
            read(&env.cgroup_dir("cpu", &besteffort).join("cpu.shares")),
            "2"
        );
    } else {
        let d = env.cgroup_dir("", &rp.config.cgroup_parent);
        assert_eq!(read(&d.join("cpu.max")), "50000 100000");
        assert_eq!(read(&d.join("memory.max")), (32u64 << 20).to_string());
    }
    // The sandbox's own cgroup sits below the pod cgroup in every hierarchy.
    let sandbox_path = format!("{}/{}", rp.config.cgroup_parent, rp.sandbox_id);
    let procs = read(&env.cgroup_dir("memory", &sandbox_path).join("cgroup.procs"));
    assert_eq!(procs, rp.ctx.pause_pid.unwrap().to_string());
    let (code, _, err) = rp.run("c", "c-true");
    assert_eq!(code, 0, "{err}");

    // A value the kernel refuses: the error names the file and the value.
    let refused = picolet::runtime::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 500,
        ..Default::default()
    };
    let e = format!(
        "{:#}",
        env.cgroups
            .set_resources(&rp.config.cgroup_parent, &refused)
            .unwrap_err()
    );
    let file = if env.cgroups.unified {
        "cpu.max"
    } else {
        "cpu.cfs_quota_us"
    };
    assert!(e.contains(file) && e.contains("500"), "{e}");

    let pod_path = rp.config.cgroup_parent.clone();
    rp.stop();
    for h in &env.cgroups.hierarchies {
        assert!(
            !h.dir(&pod_path).exists(),
            "{} left",
            h.dir(&pod_path).display()
        );
        assert!(h.dir(&kubepods).exists());
    }
    env.cgroups.remove(&env.cgroup_root).unwrap();
    for h in &env.cgroups.hierarchies {
        assert!(
            !h.dir(&env.cgroup_root).exists(),
            "{} left",
            h.dir(&env.cgroup_root).display()
        );
    }
}
