//! Pod networks through the real CNI plugins (bridge, host-local, portmap)
//! in real network namespaces. Root; see `network_support` for the
//! per-test names, subnets and ports.

mod network_support;

use network_support::*;
use picolet::network::{netns, CniError};
use picolet::rt::block_on;
use picolet::runtime::RuntimeError;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

fn in_subnet(t: &TestNet, ip: IpAddr) -> bool {
    ip.to_string().starts_with(&t.subnet_prefix())
}

#[test]
fn setup_gives_reachable_pod_and_teardown_leaves_nothing() {
    let t = TestNet::new(0);
    let pod = "net0-a";
    let req = t.request(pod, Some(t.host_port()));
    block_on(async {
        let res = t.nets.setup(&req).await.expect("setup");
        let ip = res.pod_ip().expect("pod ip");
        assert!(in_subnet(&t, ip), "{res:?}");
        assert_eq!(res.ips[0].prefix_len, 24);
        assert_eq!(
            res.gateway,
            Some(format!("{}1", t.subnet_prefix()).parse().unwrap())
        );
        assert_eq!(res.interface.as_deref(), Some("eth0"));
        assert!(netns::is_mounted(&req.netns).unwrap());

        // Visible inside the namespace, with lo up (no loopback plugin ran).
        let ns_arg = format!("--net={}", req.netns.display());
        let addrs = stdout_of("nsenter", &[&ns_arg, "ip", "-4", "-o", "addr"]);
        assert!(
            addrs.contains(&format!("eth0    inet {ip}/24"))
                || addrs.contains(&format!("inet {ip}/24")),
            "{addrs}"
        );
        assert!(
            addrs.contains("inet 127.0.0.1/8"),
            "lo has no address: {addrs}"
        );
        let lo = stdout_of("nsenter", &[&ns_arg, "ip", "-o", "link", "show", "lo"]);
        assert!(lo.contains(",UP"), "lo is down: {lo}");
        // run_in: a thread inside the pod's netns sees eth0; the host's
        // /proc/thread-self/net/dev (this thread) is unchanged.
        let inside = netns::run_in(&req.netns, || {
            std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default()
        })
        .await
        .expect("run_in");
        assert!(
            inside.contains("eth0:") && inside.contains("lo:"),
            "{inside}"
        );
        assert!(!inside.contains(&format!("{}:", t.bridge)), "{inside}");
        let host = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        assert!(host.contains(&format!("{}:", t.bridge)), "{host}");

        // A server in the pod: reachable at the pod IP and via the hostPort.
        let www = t.root.join("www-a");
        let _httpd = Httpd::start(&req.netns, &www, "hello from net0-a");
        let body = http_get(SocketAddr::new(ip, 8080), Duration::from_secs(10)).expect("pod IP");
        assert_eq!(body, "hello from net0-a");
        let hp = SocketAddr::from(([127, 0, 0, 1], t.host_port()));
        let body = http_get(hp, Duration::from_secs(10)).expect("hostPort on 127.0.0.1");
        assert_eq!(body, "hello from net0-a");
        let rules = nat_rules_for(pod);
        assert!(!rules.is_empty(), "no portmap rules for the pod");
        let dn_chain = rules
            .iter()
            .find_map(|r| r.split("-j ").nth(1).filter(|c| c.starts_with("CNI-DN-")))
            .expect("a CNI-DN-* chain")
            .trim()
            .to_string();

        // Setup again is idempotent (cached, same address). (No CHECK here:
        // portmap <= 1.2 fails CHECK on IPv4-only pods, plugins#819; the
        // two-pod test checks a bridge-only list.)
        let again = t.nets.setup(&req).await.expect("setup again");
        assert_eq!(again, res);
        assert_eq!(t.leases(), vec![ip.to_string()]);
        assert_eq!(t.nets.cni().cached_result(pod).unwrap(), Some(res.clone()));
        assert_eq!(t.nets.cni().cached_pods().unwrap(), vec![pod.to_string()]);
        let veth = t.bridge_ports();
        assert_eq!(veth.len(), 1, "{veth:?}");

        t.nets.teardown(&req).await.expect("teardown");
        assert!(t.leases().is_empty(), "lease left: {:?}", t.leases());
        assert!(
            t.bridge_ports().is_empty(),
            "veth left: {:?}",
            t.bridge_ports()
        );
        let link = run("ip", &["link", "show", &veth[0]]);
        assert!(!link.status.success(), "host veth {} still exists", veth[0]);
        assert!(nat_rules_for(pod).is_empty(), "{:?}", nat_rules_for(pod));
        let chain = run("iptables", &["-w", "-t", "nat", "-S", &dn_chain]);
        assert!(!chain.status.success(), "chain {dn_chain} still exists");
        assert!(!netns::is_mounted(&req.netns).unwrap());
        assert!(!req.netns.exists(), "netns file left");
        assert!(!t.cache_file(pod).exists(), "cache left");
        assert!(http_get(hp, Duration::from_millis(300)).is_err());

        // DEL twice is fine.
        t.nets.teardown(&req).await.expect("second teardown");
    });
}

#[test]
fn two_pods_talk_to_each_other() {
    let t = TestNet::new(1);
    t.write_bridge_only();
    let (a, b) = (t.request("net1-a", None), t.request("net1-b", None));
    block_on(async {
        let ra = t.nets.setup(&a).await.expect("setup a");
        let rb = t.nets.setup(&b).await.expect("setup b");
        let (ipa, ipb) = (ra.pod_ip().unwrap(), rb.pod_ip().unwrap());
        assert_ne!(ipa, ipb);
        assert!(in_subnet(&t, ipa) && in_subnet(&t, ipb));
        let _httpd = Httpd::start(&a.netns, &t.root.join("www-a"), "served by a");
        // Wait until a serves (from the host), then fetch from b's netns.
        http_get(SocketAddr::new(ipa, 8080), Duration::from_secs(10)).expect("a serves");
        // From b's netns (curl: busybox 1.35's static wget segfaults here).
        let out = run(
            "nsenter",
            &[
                &format!("--net={}", b.netns.display()),
                "curl",
                "-sS",
                "-m",
                "5",
                "-w",
                " from %{local_ip}",
                &format!("http://{ipa}:8080/"),
            ],
        );
        assert!(
            out.status.success(),
            "b -> a failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("served by a from {ipb}")
        );

        // CHECK passes on a healthy pod and fails, naming the plugin, when
        // the pod lost its address.
        t.nets.cni().check(&b).await.expect("check b");
        let flush = run(
            "nsenter",
            &[
                &format!("--net={}", b.netns.display()),
                "ip",
                "addr",
                "flush",
                "dev",
                "eth0",
            ],
        );
        assert!(flush.status.success());
        let e = t.nets.cni().check(&b).await.expect_err("check after flush");
        assert!(
            matches!(&e, CniError::PluginFailed { plugin, command, .. } if plugin == "bridge" && command == "CHECK"),
            "{e}"
        );
        t.nets.teardown(&a).await.expect("teardown a");
        t.nets.teardown(&b).await.expect("teardown b");
        assert!(t.leases().is_empty());
        assert!(t.netns_files().is_empty());
    });
}

#[test]
fn teardown_works_without_cache_and_without_netns() {
    let t = TestNet::new(2);
    block_on(async {
        // Cache lost (crash between ADD and the cache write, or state wiped).
        let a = t.request("net2-a", Some(t.host_port()));
        t.nets.setup(&a).await.expect("setup a");
        assert_eq!(t.leases().len(), 1);
        assert!(!nat_rules_for("net2-a").is_empty());
        std::fs::remove_file(t.cache_file("net2-a")).unwrap();
        t.nets.teardown(&a).await.expect("teardown without cache");
        assert!(t.leases().is_empty(), "{:?}", t.leases());
        assert!(t.bridge_ports().is_empty(), "{:?}", t.bridge_ports());
        assert!(nat_rules_for("net2-a").is_empty());
        assert!(!a.netns.exists());

        // Half-made after a crash and reboot-like loss: cache gone and the
        // netns gone too; DEL runs with an empty CNI_NETNS and still frees
        // the lease.
        let b = t.request("net2-b", None);
        t.nets.setup(&b).await.expect("setup b");
        std::fs::remove_file(t.cache_file("net2-b")).unwrap();
        netns::remove(&b.netns).unwrap();
        assert_eq!(t.leases().len(), 1);
        t.nets
            .teardown(&b)
            .await
            .expect("teardown without cache or netns");
        assert!(t.leases().is_empty(), "{:?}", t.leases());
        // The kernel destroys an unmounted netns (and its veth pair) a little
        // later, in a work queue.
        assert!(
            wait_until(Duration::from_secs(10), || t.bridge_ports().is_empty()),
            "{:?}",
            t.bridge_ports()
        );

        // Setup again after the netns was lost but the cache kept: the stale
        // attachment is deleted and a fresh one made in the new namespace.
        let d = t.request("net2-d", None);
        t.nets.setup(&d).await.expect("setup d");
        netns::remove(&d.netns).unwrap();
        let again = t.nets.setup(&d).await.expect("setup d again");
        let ip = again.pod_ip().unwrap();
        let addrs = stdout_of(
            "nsenter",
            &[
                &format!("--net={}", d.netns.display()),
                "ip",
                "-4",
                "-o",
                "addr",
            ],
        );
        assert!(addrs.contains(&format!("inet {ip}/24")), "{addrs}");
        assert_eq!(t.leases(), vec![ip.to_string()]);
        t.nets.teardown(&d).await.expect("teardown d");
        assert!(t.leases().is_empty(), "{:?}", t.leases());

        // With the cache but without the netns (netns removed first).
        let c = t.request("net2-c", None);
        t.nets.setup(&c).await.expect("setup c");
        netns::remove(&c.netns).unwrap();
        t.nets
            .teardown(&c)
            .await
            .expect("teardown with cache, no netns");
        assert!(t.leases().is_empty(), "{:?}", t.leases());
        assert!(!t.cache_file("net2-c").exists());
    });
}

/// Asserts nothing of pod `pod` is left: lease, veth, netns, cache.
fn assert_nothing_left(t: &TestNet, pod: &str) {
    assert!(t.leases().is_empty(), "lease left: {:?}", t.leases());
    assert!(
        t.bridge_ports().is_empty(),
        "veth left: {:?}",
        t.bridge_ports()
    );
    assert!(
        t.netns_files().is_empty(),
        "netns left: {:?}",
        t.netns_files()
    );
    assert!(!t.cache_file(pod).exists(), "cache left");
    assert!(nat_rules_for(pod).is_empty());
}

#[test]
fn missing_plugin_is_a_clear_error_and_leaves_nothing() {
    let t = TestNet::with_plugins(
        3,
        &[serde_json::json!({"type": "picolet-no-such-plugin"})],
        &[],
    );
    let req = t.request("net3-a", Some(t.host_port()));
    block_on(async {
        let e = t.nets.setup(&req).await.expect_err("setup must fail");
        let msg = e.to_string();
        assert!(matches!(e, CniError::PluginNotFound { .. }), "{msg}");
        assert!(
            msg.contains("\"picolet-no-such-plugin\"") && msg.contains("/usr/lib/cni"),
            "{msg}"
        );
        assert_nothing_left(&t, "net3-a");
        let st = t.nets.cni().status();
        assert!(!st.ready);
        assert!(st.message.contains("picolet-no-such-plugin"), "{st:?}");
        // The runtime reports it as the network not being ready.
        let re: RuntimeError = e.into();
        assert!(matches!(re, RuntimeError::NetworkNotReady(_)));
        // Retrying after the config is fixed works.
        t.write_conflist(&[]);
        assert!(t.nets.cni().status().ready);
        t.nets.setup(&req).await.expect("setup after fix");
        t.nets.teardown(&req).await.expect("teardown");
        assert_nothing_left(&t, "net3-a");
    });
}

#[test]
fn failing_plugin_is_a_clear_error_and_leaves_nothing() {
    // Inside the test's root: created after the clean slate, removed with it.
    let bin = PathBuf::from("/var/tmp/picolet-test/net-4/bin");
    let t = TestNet::with_plugins(
        4,
        &[serde_json::json!({"type": "picolet-test-fail"})],
        std::slice::from_ref(&bin),
    );
    // Fails ADD with a CNI error object and a line on stderr; DEL succeeds.
    let script = "#!/bin/sh\n\
        cat >/dev/null\n\
        if [ \"$CNI_COMMAND\" = ADD ]; then\n\
          echo '{\"cniVersion\":\"1.0.0\",\"code\":100,\"msg\":\"picolet test failure\",\"details\":\"on purpose\"}'\n\
          echo 'failing as told' >&2\n\
          exit 1\n\
        fi\n\
        exit 0\n";
    let plugin = bin.join("picolet-test-fail");
    std::fs::write(&plugin, script).unwrap();
    std::fs::set_permissions(&plugin, PermissionsExt::from_mode(0o755)).unwrap();
    let req = t.request("net4-a", Some(t.host_port()));
    block_on(async {
        let e = t.nets.setup(&req).await.expect_err("setup must fail");
        let msg = e.to_string();
        match &e {
            CniError::PluginFailed {
                plugin,
                command,
                code,
                ..
            } => {
                assert_eq!(
                    (plugin.as_str(), command.as_str(), *code),
                    ("picolet-test-fail", "ADD", Some(100))
                );
            }
            other => panic!("unexpected error: {other}"),
        }
        assert!(msg.contains("picolet test failure: on purpose"), "{msg}");
        assert!(msg.contains("stderr: failing as told"), "{msg}");
        assert!(msg.contains(&t.name), "{msg}");
        // bridge and portmap ran before it; their DEL undid them.
        assert_nothing_left(&t, "net4-a");
    });
}

#[test]
fn no_config_is_network_not_ready() {
    let t = TestNet::new(5);
    std::fs::remove_file(t.conf_dir.join("10-test.conflist")).unwrap();
    let req = t.request("net5-a", None);
    block_on(async {
        let e = t.nets.setup(&req).await.expect_err("no config");
        assert!(
            matches!(&e, CniError::NotReady(m) if m.contains("no network config found")),
            "{e}"
        );
        assert!(
            t.netns_files().is_empty(),
            "netns left: {:?}",
            t.netns_files()
        );
        let st = t.nets.cni().status();
        assert!(!st.ready);
        assert_eq!(st.reason, "NetworkPluginNotReady");
        assert!(st.message.contains(t.conf_dir.to_str().unwrap()), "{st:?}");
        let re: RuntimeError = e.into();
        assert!(
            re.to_string()
                .starts_with("network not ready: no network config found"),
            "{re}"
        );

        // An unparsable file only: still not ready, and the file is named.
        std::fs::write(t.conf_dir.join("05-bad.conflist"), "{not json").unwrap();
        let st = t.nets.cni().status();
        assert!(
            !st.ready && st.message.contains("05-bad.conflist"),
            "{st:?}"
        );
        // Teardown of a pod never set up, with no network: nothing to do.
        t.nets
            .teardown(&req)
            .await
            .expect("teardown without config");

        // A config appearing later is picked up without a restart; the
        // broken lower-sorted file is skipped.
        t.write_conflist(&[]);
        let st = t.nets.cni().status();
        assert!(st.ready, "{st:?}");
        assert!(st.message.contains(&t.name), "{st:?}");

        // Missing conf dir.
        std::fs::remove_dir_all(&t.conf_dir).unwrap();
        assert!(matches!(
            t.nets.cni().load_network(),
            Err(CniError::NotReady(_))
        ));
    });
}

/// Processes whose command line is exactly `args`.
fn processes_running(args: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn hanging_plugin_is_killed_at_the_deadline_and_leaves_nothing() {
    let bin = PathBuf::from("/var/tmp/picolet-test/net-8/bin");
    let t = TestNet::with_plugins(
        8,
        &[serde_json::json!({"type": "picolet-test-hang"})],
        std::slice::from_ref(&bin),
    );
    // Hangs on ADD (as the process itself, so killing it ends it); DEL is fine.
    let plugin = bin.join("picolet-test-hang");
    std::fs::write(
        &plugin,
        "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && exec busybox sleep 38\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, PermissionsExt::from_mode(0o755)).unwrap();
    let mut cfg = t.cfg.clone();
    cfg.kubelet.runtime_request_timeout = Duration::from_secs(2);
    let nets = picolet::network::PodNetworks::new(&cfg);
    let req = t.request("net8-a", Some(t.host_port()));
    block_on(async {
        let t0 = std::time::Instant::now();
        let e = nets.setup(&req).await.expect_err("must time out");
        let took = t0.elapsed();
        assert!(
            matches!(&e, CniError::Timeout { plugin, command, .. } if plugin == "picolet-test-hang" && command == "ADD"),
            "{e}"
        );
        assert!(e.to_string().contains("2s"), "{e}");
        assert!(took < Duration::from_secs(8), "{took:?}");
        assert!(
            processes_running(&["busybox", "sleep", "38"]).is_empty(),
            "plugin not killed"
        );
        assert_nothing_left(&t, "net8-a");
    });
}
