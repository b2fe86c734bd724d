//! A pod through picolet's runtime layer: two containers talking over the
//! pod's localhost, a hostPort on 127.0.0.1, exec, stop with a grace
//! period, and a removal that leaves nothing behind. Root; real shim,
//! runc, CNI plugins, cgroups, registry.

mod runtime_support;

use picolet::rt;
use picolet::runtime::{
    ContainerFilter, ContainerState, NamespaceMode, Runtime, RuntimeError, RuntimeEvent,
    SandboxState,
};
use runtime_support::*;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[test]
fn two_containers_share_localhost_and_a_host_port() {
    let env = RtEnv::new(1);
    rt::block_on(async {
        let (rt, events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let httpd = env.pull("httpd").await;
        let pod = env.pod(
            "web",
            json!({"spec": {"containers": [
                {"name": "httpd", "image": "httpd",
                 "ports": [{"containerPort": 8080, "hostPort": env.host_port()}]},
                {"name": "client", "image": "busybox",
                 "command": ["sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.2; done"]}
            ]}}),
        );
        let (sid, ids) = env
            .start_pod(&rt, &pod, &[("httpd", &httpd), ("client", &busybox)])
            .await;
        let st = rt.pod_sandbox_status(&sid).await.unwrap();
        assert_eq!(st.state, SandboxState::Ready);
        assert!(
            st.network.ip.starts_with(&env.subnet_prefix()),
            "pod IP {}",
            st.network.ip
        );
        assert_eq!(st.namespace_options.network, NamespaceMode::Pod);

        // Over the pod's localhost, from the other container.
        let get = args(&[
            "sh",
            "-c",
            "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080",
        ]);
        let mut out = String::new();
        for _ in 0..50 {
            let r = rt
                .exec_sync(&ids[1], &get, Duration::from_secs(10))
                .await
                .unwrap();
            out = String::from_utf8_lossy(&r.stdout).into_owned();
            if out.ends_with("ok") || out.ends_with("ok\n") {
                break;
            }
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
        assert!(out.contains("200 OK"), "{out:?}");
        // From the host: the pod IP, and the hostPort on loopback.
        let pod_addr: SocketAddr = format!("{}:8080", st.network.ip).parse().unwrap();
        let body = http_get_retry(pod_addr, "/healthz", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(body.trim(), "ok");
        let host_addr: SocketAddr = format!("127.0.0.1:{}", env.host_port()).parse().unwrap();
        let body = http_get_retry(host_addr, "/healthz", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(body.trim(), "ok");

        // Both containers share the sandbox's network and uts namespaces.
        let ns = |id: &str| {
            let rt = &rt;
            let id = id.to_string();
            async move {
                let r = rt
                    .exec_sync(
                        &id,
                        &args(&["sh", "-c", "readlink /proc/self/ns/net; hostname"]),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                String::from_utf8_lossy(&r.stdout).into_owned()
            }
        };
        let (a, b) = (ns(&ids[0]).await, ns(&ids[1]).await);
        assert_eq!(a, b);
        assert!(a.ends_with("web\n"), "{a}");

        // Exec: exit codes, both streams, a timeout that kills.
        let r = rt
            .exec_sync(
                &ids[1],
                &args(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(
            (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
            (3, &b"out\n"[..], &b"err\n"[..])
        );
        let t0 = Instant::now();
        let e = rt
            .exec_sync(&ids[1], &args(&["sleep", "30"]), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(e, RuntimeError::Timeout(_)), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        let e = rt
            .exec_sync(&ids[1], &args(&["/no/such"]), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");

        // Listing and status.
        let running = rt
            .list_containers(&ContainerFilter {
                pod_sandbox_id: Some(sid.clone()),
                state: Some(ContainerState::Running),
            })
            .await
            .unwrap();
        assert_eq!(running.len(), 2);
        let s = rt.container_status(&ids[0]).await.unwrap();
        assert_eq!(s.state, ContainerState::Running);
        assert!(s.started_at >= s.created_at && s.created_at > 0);
        assert_eq!(s.image_id, httpd.id);
        assert_eq!(
            s.log_path,
            env.root.join("logs/ns1_web_rt1-web-uid/httpd/0.log")
        );
        let stats = rt.container_stats(&ids[0]).await.unwrap();
        assert!(stats.memory_usage_bytes > 0 && stats.pids >= 1, "{stats:?}");

        // Stop: the client traps SIGTERM and exits 0 within the grace
        // period; httpd as PID 1 ignores SIGTERM and gets SIGKILL after it.
        let t0 = Instant::now();
        rt.stop_container(&ids[1], Duration::from_secs(10))
            .await
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let s = rt.container_status(&ids[1]).await.unwrap();
        assert_eq!(
            (s.state, s.exit_code, s.reason.as_str()),
            (ContainerState::Exited, 0, "Completed")
        );
        assert!(s.finished_at >= s.started_at);
        let t0 = Instant::now();
        rt.stop_container(&ids[0], Duration::from_secs(1))
            .await
            .unwrap();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(10),
            "{took:?}"
        );
        let s = rt.container_status(&ids[0]).await.unwrap();
        assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
        // The client's log got its output; the exits were reported.
        let log = log_entries(&rt.container_status(&ids[1]).await.unwrap().log_path);
        assert_eq!(log.last().map(|e| e.1.as_str()), Some("bye"), "{log:?}");
        let mut exited = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if let RuntimeEvent::ContainerExited { id, exit_code, .. } = ev {
                exited.push((id, exit_code));
            }
        }
        assert!(exited.contains(&(ids[0].clone(), 137)), "{exited:?}");
        assert!(exited.contains(&(ids[1].clone(), 0)), "{exited:?}");

        rt.stop_pod_sandbox(&sid).await.unwrap();
        assert_eq!(
            rt.pod_sandbox_status(&sid).await.unwrap().state,
            SandboxState::NotReady
        );
        rt.stop_pod_sandbox(&sid).await.unwrap();
        rt.remove_pod_sandbox(&sid).await.unwrap();
        rt.remove_pod_sandbox(&sid).await.unwrap();
        assert!(rt.list_pod_sandboxes().await.unwrap().is_empty());
        assert!(rt
            .list_containers(&ContainerFilter::default())
            .await
            .unwrap()
            .is_empty());
        env.assert_nothing_left(&[sid]);
        let logs = RtEnv::entries(&env.root.join("logs"));
        assert!(logs.is_empty(), "pod logs left: {logs:?}");
    });
}

#[test]
fn host_network_pod_runs_in_the_host_namespaces() {
    let env = RtEnv::new(2);
    rt::block_on(async {
        let (rt, _events) = env.runtime().await;
        let busybox = env.pull("busybox").await;
        let pod = env.pod(
            "hostnet",
            json!({"spec": {"hostNetwork": true, "hostPID": true, "containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}
            ]}}),
        );
        let (sid, ids) = env.start_pod(&rt, &pod, &[("c", &busybox)]).await;
        let st = rt.pod_sandbox_status(&sid).await.unwrap();
        assert_eq!(st.network.ip, "", "no pod IP with hostNetwork");
        let r = rt
            .exec_sync(
                &ids[0],
                &args(&[
                    "sh",
                    "-c",
                    "readlink /proc/self/ns/net; readlink /proc/self/ns/pid",
                ]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        let me = |ns: &str| {
            std::fs::read_link(format!("/proc/self/ns/{ns}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(out, format!("{}\n{}\n", me("net"), me("pid")));
        assert!(RtEnv::entries(&env.run.join("netns")).is_empty());
        rt.remove_pod_sandbox(&sid).await.unwrap();
        env.assert_nothing_left(&[sid]);
    });
}
