//! Bad input through the runtime: each a clear error of the kind the
//! kubelet reports (RunContainerError with StartError/128,
//! CreateContainerError, CreateContainerConfigError, network not ready),
//! no hang, and nothing half-made left (shim task, mount, cgroup, bundle,
//! netns, lease). Root; real everything.

mod runtime_support;

use picolet::rt;
use picolet::runtime::{ContainerState, Mount, MountPropagation, Runtime, RuntimeError};
use runtime_support::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[test]
fn container_errors_are_reported_by_kind_and_leave_nothing_half_made() {
    let env = RtEnv::new(5);
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let pod = env.pod(
            "bad",
            json!({"spec": {"containers": [
                {"name": "good", "image": "busybox", "command": ["sleep", "3600"]},
                {"name": "missing", "image": "busybox", "command": ["/no/such/binary"]},
                {"name": "badfmt", "image": "busybox", "command": ["/bad"]},
                {"name": "cpuset", "image": "busybox", "command": ["sleep", "3600"]},
                {"name": "nonroot", "image": "busybox", "command": ["sleep", "3600"],
                 "securityContext": {"runAsNonRoot": true}}
            ]}}),
        );
        let (sid, good) = env.start_pod(&rt, &pod, &[("good", &busybox)]).await;
        let sc = env.sandbox_config(&pod);
        let ip = rt.pod_sandbox_status(&sid).await.unwrap().network.ip;
        let cfg =
            |name: &str| env.container_config(&pod, name, &busybox, std::slice::from_ref(&ip), 0);
        let bundles = || RtEnv::entries(&env.cfg.bundles_dir()).len();
        let pod_cg = format!("{}/kubepods/besteffort/podrt5-bad-uid", env.cgroup_root);
        let t0 = Instant::now();

        // A binary missing from the image: runc create fails; the start
        // fails with runc's message, the container exited StartError/128.
        let id = rt
            .create_container(&sid, &cfg("missing"), &sc)
            .await
            .unwrap();
        let e = rt.start_container(&id).await.unwrap_err();
        let RuntimeError::RunContainer(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(
            msg.contains("/no/such/binary") && msg.contains("no such file or directory"),
            "{msg}"
        );
        let s = rt.container_status(&id).await.unwrap();
        assert_eq!(
            (s.state, s.exit_code, s.reason.as_str(), &s.message),
            (ContainerState::Exited, 128, "StartError", msg)
        );
        let b = env.cfg.bundles_dir().join(&id);
        assert!(!env
            .mounts()
            .iter()
            .any(|m| m.starts_with(&*b.to_string_lossy())));
        assert!(!env.cgroup_dir("memory", &format!("{pod_cg}/{id}")).exists());
        rt.remove_container(&id).await.unwrap();
        assert!(!b.exists());

        // An exec format error: runc's init fails after start; still a
        // start error with runc's message.
        let bad = env.root.join("bad-binary");
        std::fs::write(&bad, b"\x00\x01\x02 not a program").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = cfg("badfmt");
        c.mounts.push(Mount {
            container_path: "/bad".into(),
            host_path: bad.clone(),
            readonly: true,
            propagation: MountPropagation::Private,
        });
        let id = rt.create_container(&sid, &c, &sc).await.unwrap();
        let e = rt.start_container(&id).await.unwrap_err();
        let RuntimeError::RunContainer(msg) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(msg, "exec /bad: exec format error");
        let s = rt.container_status(&id).await.unwrap();
        assert_eq!((s.exit_code, s.reason.as_str()), (128, "StartError"));
        assert!(!env.cgroup_dir("memory", &format!("{pod_cg}/{id}")).exists());
        rt.remove_container(&id).await.unwrap();

        // A cgroup value the kernel refuses: the create fails naming the
        // file and the value; no bundle, mount or cgroup is left.
        let before = bundles();
        let mut c = cfg("cpuset");
        c.resources.cpuset_cpus = "1000-1001".into();
        let e = rt.create_container(&sid, &c, &sc).await.unwrap_err();
        let RuntimeError::CreateContainer(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(
            msg.contains("cpuset.cpus") && msg.contains("1000-1001"),
            "{msg}"
        );
        assert_eq!(bundles(), before);
        let left: Vec<String> = env
            .pod_cgroups()
            .into_iter()
            .filter(|p| {
                !p.ends_with("podrt5-bad-uid") && !p.contains(&sid) && !p.contains(&good[0])
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // runAsNonRoot against a root image: a configuration error.
        let e = rt
            .create_container(&sid, &cfg("nonroot"), &sc)
            .await
            .unwrap_err();
        let RuntimeError::CreateContainerConfig(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("runAsNonRoot"), "{msg}");
        assert_eq!(bundles(), before);
        assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());

        // The pod itself is fine: the good container still runs, a retry
        // with a fixed spec starts.
        let r = rt
            .exec_sync(&good[0], &args(&["true"]), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(r.exit_code, 0);
        let id = rt
            .create_container(&sid, &cfg("cpuset"), &sc)
            .await
            .unwrap();
        rt.start_container(&id).await.unwrap();

        rt.remove_pod_sandbox(&sid).await.unwrap();
        env.assert_nothing_left(&[sid]);
    });
}

#[test]
fn cni_failures_are_network_not_ready_and_leave_nothing() {
    let env = RtEnv::new(6);
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let pod = env.pod(
            "net",
            json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        );
        let sc = env.sandbox_config(&pod);
        let expect_not_ready = |r: Result<String, RuntimeError>, what: &str| match r {
            Err(RuntimeError::NetworkNotReady(m)) => {
                assert!(m.contains(what), "{m}");
            }
            other => panic!("want network not ready ({what}), got {other:?}"),
        };
        // A plugin that fails ADD.
        env.write_plugin(
            "fail",
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  \
             echo '{\"cniVersion\":\"1.0.0\",\"code\":100,\"msg\":\"injected failure\"}'\n  exit 1\nfi\n",
        );
        env.write_network(&[json!({"type": "fail"})]);
        let t0 = Instant::now();
        expect_not_ready(rt.run_pod_sandbox(&sc).await, "injected failure");
        // A plugin that does not exist.
        env.write_network(&[json!({"type": "nosuchplugin"})]);
        expect_not_ready(rt.run_pod_sandbox(&sc).await, "nosuchplugin");
        // No network config at all.
        std::fs::remove_file(env.root.join("net.d/10-test.conflist")).unwrap();
        expect_not_ready(rt.run_pod_sandbox(&sc).await, "no network config");
        assert!(!rt.network_status().ready);
        assert!(t0.elapsed() < Duration::from_secs(60));
        assert!(rt.list_pod_sandboxes().await.unwrap().is_empty());
        env.assert_nothing_left(&[]);

        // Fixed: the retry works.
        env.write_network(&[]);
        assert!(rt.network_status().ready);
        let sid = rt.run_pod_sandbox(&sc).await.unwrap();
        rt.remove_pod_sandbox(&sid).await.unwrap();
        env.assert_nothing_left(&[sid]);
    });
}
