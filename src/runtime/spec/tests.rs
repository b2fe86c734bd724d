use super::*;
use crate::runtime::types::{Capabilities, LinuxContainerResources, PodSandboxMetadata};

fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
    ImageConfig {
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn v(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

fn host() -> HostInfo {
    HostInfo {
        capabilities: capability_names(0x1fffeffffff),
        sys_resource: false,
        oom_score_adj: 0,
        cgroup_unified: false,
        swap_accounting: true,
        cgroup_missing: Vec::new(),
        hostname: "node1".into(),
    }
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("picolet-spec-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn args_by_kubernetes_rules() {
    let img = image(&["/entry", "-x"], &["cmd1", "cmd2"]);
    let args = |c: &[&str], a: &[&str], i: &ImageConfig| process_args(&v(c), &v(a), i).unwrap();
    assert_eq!(args(&[], &[], &img), ["/entry", "-x", "cmd1", "cmd2"]);
    assert_eq!(
        args(&["/bin/sh"], &[], &img),
        ["/bin/sh"],
        "command drops Cmd"
    );
    assert_eq!(
        args(&[], &["a1"], &img),
        ["/entry", "-x", "a1"],
        "args replace Cmd"
    );
    assert_eq!(
        args(&["/bin/sh"], &["-c", "x"], &img),
        ["/bin/sh", "-c", "x"]
    );
    assert_eq!(
        args(&[], &[], &image(&[""], &["sh"])),
        ["sh"],
        "Entrypoint [\"\"] means none"
    );
    assert_eq!(args(&[], &["only"], &image(&[], &["sh"])), ["only"]);
    let e = process_args(&[], &[], &image(&[], &[])).unwrap_err();
    assert!(e.to_string().contains("no command specified"));
}

#[test]
fn env_and_cwd_rules() {
    let image_env = v(&["PATH=/image/bin", "A=image", "B=image", "UNSET_ME"]);
    let envs = vec![
        ("B".to_string(), "container".to_string()),
        ("C".to_string(), "c=1".to_string()),
    ];
    let env = process_env("pod-host", &image_env, &envs);
    assert_eq!(
        env,
        [
            "PATH=/image/bin",
            "HOSTNAME=pod-host",
            "A=image",
            "B=container",
            "C=c=1"
        ]
    );
    let env = process_env("h", &[], &[]);
    assert_eq!(env, [DEFAULT_PATH_ENV, "HOSTNAME=h"]);
    let mut img = ImageConfig::default();
    assert_eq!(process_cwd("", &img), "/");
    img.working_dir = "/img".into();
    assert_eq!(process_cwd("", &img), "/img");
    assert_eq!(process_cwd("/mine", &img), "/mine");
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\napp:x:1000:1001::/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:root\nextra:x:60:app\nnogroup:x:65534:\n";

fn meta() -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: "web".into(),
        uid: "u1".into(),
        namespace: "ns".into(),
        attempt: 0,
    }
}

fn user(sc: &LinuxContainerSecurityContext, image_user: &str) -> Result<User, SpecError> {
    let m = meta();
    let who = PodRef {
        pod: &m,
        container: "c",
    };
    resolve_user(sc, image_user, Some(PASSWD), Some(GROUP), &who)
}

#[test]
fn user_resolution() {
    let sc = LinuxContainerSecurityContext::default();
    let u = |uid, gid, extra: &[u32]| User {
        uid,
        gid,
        additional_gids: extra.to_vec(),
    };
    assert_eq!(
        user(&sc, "").unwrap(),
        u(0, 0, &[0, 10]),
        "root: primary + wheel"
    );
    assert_eq!(user(&sc, "app").unwrap(), u(1000, 1001, &[50, 60, 1001]));
    assert_eq!(user(&sc, "1000").unwrap(), u(1000, 1001, &[50, 60, 1001]));
    // the image's group part is ignored, as upstream
    assert_eq!(user(&sc, "1000:7").unwrap(), u(1000, 1001, &[50, 60, 1001]));
    // unknown uid: gid 0, no memberships
    assert_eq!(user(&sc, "4242").unwrap(), u(4242, 0, &[0]));
    let mut sc2 = sc.clone();
    sc2.run_as_user = Some(65534);
    sc2.supplemental_groups = vec![2000, 65534];
    assert_eq!(user(&sc2, "app").unwrap(), u(65534, 65534, &[2000, 65534]));
    sc2.run_as_group = Some(3000);
    assert_eq!(
        user(&sc2, "").unwrap(),
        u(65534, 3000, &[2000, 3000, 65534])
    );
    let mut sc3 = sc.clone();
    sc3.run_as_username = "app".into();
    sc3.run_as_group = Some(5);
    assert_eq!(user(&sc3, "").unwrap(), u(1000, 5, &[5, 50, 60]));
    let e = user(&sc, "ghost").unwrap_err();
    assert!(
        matches!(e, SpecError::Other(_)) && e.to_string().contains("unable to find user ghost"),
        "{e}"
    );
    let m = meta();
    let who = PodRef {
        pod: &m,
        container: "c",
    };
    let e = resolve_user(&sc, "app", None, None, &who).unwrap_err();
    assert!(e.to_string().contains("no /etc/passwd"), "{e}");
    assert_eq!(
        resolve_user(&sc, "", None, None, &who).unwrap(),
        u(0, 0, &[0])
    );
}

#[test]
fn run_as_non_root() {
    let mut sc = LinuxContainerSecurityContext {
        run_as_non_root: true,
        ..Default::default()
    };
    let cfg = |e: Result<User, SpecError>| match e {
        Err(SpecError::Config(m)) => m,
        other => panic!("want a config error, got {other:?}"),
    };
    let m = cfg(user(&sc, ""));
    assert_eq!(
        m,
        "container has runAsNonRoot and image will run as root (pod: \"web_ns(u1)\", container: c)"
    );
    assert!(cfg(user(&sc, "app"))
        .contains("image has non-numeric user (app), cannot verify user is non-root"));
    assert!(user(&sc, "1000").is_ok());
    sc.run_as_user = Some(0);
    assert!(cfg(user(&sc, "1000")).starts_with("container's runAsUser breaks non-root policy"));
    sc.run_as_user = Some(7);
    assert!(user(&sc, "").is_ok());
}

#[test]
fn rootfs_reads_stay_inside() {
    let t = TempDir::new("rootfs");
    let root = t.0.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(t.0.join("outside")).unwrap();
    std::fs::write(t.0.join("outside/passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
    std::fs::write(root.join("real-passwd"), PASSWD).unwrap();
    // absolute and relative escapes both land inside the root
    std::os::unix::fs::symlink("/real-passwd", root.join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink("../../../outside/passwd", root.join("etc/group")).unwrap();
    std::os::unix::fs::symlink("loop2", root.join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", root.join("loop2")).unwrap();
    assert_eq!(
        read_rootfs_file(&root, "/etc/passwd").unwrap().as_deref(),
        Some(PASSWD)
    );
    assert_eq!(
        resolve_in_root(&root, "/etc/group").unwrap(),
        root.join("outside/passwd")
    );
    assert_eq!(read_rootfs_file(&root, "/etc/group").unwrap(), None);
    assert_eq!(read_rootfs_file(&root, "/etc/shadow").unwrap(), None);
    assert!(read_rootfs_file(&root, "/loop1").is_err());
}

#[test]
fn capability_sets() {
    let h = host();
    let sc = |add: &[&str], drop: &[&str]| LinuxContainerSecurityContext {
        capabilities: Capabilities {
            add: v(add),
            drop: v(drop),
        },
        ..Default::default()
    };
    assert_eq!(
        capabilities(&sc(&[], &[]), &h).unwrap(),
        DEFAULT_CAPABILITIES
    );
    let c = capabilities(
        &sc(&["NET_ADMIN", "cap_sys_ptrace"], &["CAP_CHOWN", "mknod"]),
        &h,
    )
    .unwrap();
    assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && c.contains(&"CAP_SYS_PTRACE".to_string()));
    assert!(!c.contains(&"CAP_CHOWN".to_string()) && !c.contains(&"CAP_MKNOD".to_string()));
    assert_eq!(c.len(), 14);
    assert_eq!(
        capabilities(&sc(&["NET_BIND_SERVICE"], &["ALL"]), &h).unwrap(),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert!(capabilities(&sc(&[], &["all"]), &h).unwrap().is_empty());
    let all = capabilities(&sc(&["ALL"], &["SYS_ADMIN"]), &h).unwrap();
    assert_eq!(all.len(), h.capabilities.len() - 1);
    assert!(
        !all.contains(&"CAP_SYS_RESOURCE".to_string()),
        "the host lacks it"
    );
    let e = capabilities(&sc(&["SYS_RESOURCE"], &[]), &h)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CAP_SYS_RESOURCE is not in picolet's own capability set"),
        "{e}"
    );
    assert!(capabilities(&sc(&["BOGUS"], &[]), &h).is_err());
    let p = LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    assert_eq!(capabilities(&p, &h).unwrap(), h.capabilities);
}

#[test]
fn status_caps_and_clamp() {
    let (eff, bnd) =
        parse_status_caps("Name:\tx\nCapEff:\t000001fffeffffff\nCapBnd:\t000001ffffffffff\n")
            .unwrap();
    assert_eq!((eff, bnd), (0x1fffeffffff, 0x1ffffffffff));
    let names = capability_names(eff);
    assert_eq!(names.len(), 40);
    assert!(!names.contains(&"CAP_SYS_RESOURCE".to_string()));
    assert_eq!(names.last().unwrap(), "CAP_CHECKPOINT_RESTORE");
    assert!(parse_status_caps("CapEff:\tzz\n").is_err());
    let mut h = host();
    h.oom_score_adj = -10;
    assert_eq!(clamp_oom_score_adj(-997, &h), -10);
    assert_eq!(clamp_oom_score_adj(1000, &h), 1000);
    h.sys_resource = true;
    assert_eq!(clamp_oom_score_adj(-997, &h), -997);
}

#[test]
fn masked_and_readonly_paths() {
    let mut sc = LinuxContainerSecurityContext::default();
    let (m, r) = masked_paths(&sc);
    assert_eq!(m, DEFAULT_MASKED_PATHS);
    assert_eq!(r, DEFAULT_READONLY_PATHS);
    sc.masked_paths = v(&["/proc/x"]);
    assert_eq!(masked_paths(&sc).0, ["/proc/x"]);
    sc.unmasked_proc = true;
    assert_eq!(masked_paths(&sc), (vec![], vec![]));
    let p = LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    assert_eq!(masked_paths(&p), (vec![], vec![]));
}

#[test]
fn sysctl_rules() {
    let pod_ns = NamespaceOptions::default();
    let m = |k: &str| StringMap::from([(k.to_string(), "1".to_string())]);
    assert_eq!(
        check_sysctls(&m("net/ipv4/ip_forward"), &pod_ns).unwrap()["net.ipv4.ip_forward"],
        "1"
    );
    assert_eq!(
        normalize_sysctl("net/ipv4/conf/eth0.100/forwarding"),
        "net.ipv4.conf.eth0/100.forwarding"
    );
    assert!(check_sysctls(&m("kernel.shm_rmid_forced"), &pod_ns).is_ok());
    assert!(check_sysctls(&m("kernel.sem"), &pod_ns).is_ok());
    assert!(check_sysctls(&m("fs.mqueue.msg_max"), &pod_ns).is_ok());
    let e = check_sysctls(&m("vm.swappiness"), &pod_ns)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not namespaced"), "{e}");
    let host_net = NamespaceOptions {
        network: NamespaceMode::Node,
        ..Default::default()
    };
    assert!(check_sysctls(&m("net.core.somaxconn"), &host_net)
        .unwrap_err()
        .to_string()
        .contains("host net"));
    let host_ipc = NamespaceOptions {
        ipc: NamespaceMode::Node,
        ..Default::default()
    };
    assert!(check_sysctls(&m("kernel.msgmax"), &host_ipc)
        .unwrap_err()
        .to_string()
        .contains("host ipc"));
}

#[test]
fn hosts_and_resolv_files() {
    let aliases = vec![("10.0.0.1".to_string(), v(&["foo", "bar"]))];
    let h = managed_hosts(
        &v(&["10.1.0.5", "fd00::5"]),
        "web",
        "sub.ns.svc.cluster.local",
        &aliases,
    );
    assert_eq!(
        h,
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
10.1.0.5\tweb.sub.ns.svc.cluster.local\tweb\nfd00::5\tweb.sub.ns.svc.cluster.local\tweb\n\
\n# Entries added by HostAliases.\n10.0.0.1\tfoo\tbar\n"
    );
    let h = managed_hosts(&v(&["10.1.0.5"]), "web", "", &[]);
    assert!(
        h.ends_with("fe00::2\tip6-allrouters\n10.1.0.5\tweb\n"),
        "{h}"
    );
    assert_eq!(
        node_hosts("127.0.0.1 localhost\n", &[]),
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
    );
    assert_eq!(short_hostname("web.sub.ns.svc.c", "sub.ns.svc.c"), "web");
    assert_eq!(short_hostname("web", "sub.ns.svc.c"), "web");
    let d = DnsConfig {
        servers: v(&["10.96.0.10", "1.1.1.1"]),
        searches: v(&["a.b", "c"]),
        options: v(&["ndots:5"]),
    };
    assert_eq!(
        resolv_conf(&d),
        "search a.b c\nnameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:5\n"
    );
    assert_eq!(resolv_conf(&DnsConfig::default()), "");
}

#[test]
fn mount_merging() {
    let m = |dst: &str, src: &str, ro: bool, p: MountPropagation| types::Mount {
        container_path: dst.into(),
        host_path: src.into(),
        readonly: ro,
        propagation: p,
    };
    let cri = vec![
        m("/data/sub", "/h/sub", false, MountPropagation::Private),
        m("/data", "/h/data", true, MountPropagation::HostToContainer),
        m("/dev/shm/", "/pod/shm", false, MountPropagation::Private),
    ];
    let out = merge_mounts(default_mounts(), &cri);
    let dsts: Vec<&str> = out.iter().map(|m| m.destination.as_str()).collect();
    assert_eq!(
        dsts,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/data",
            "/data/sub",
            "/dev/shm/"
        ]
    );
    assert_eq!(out[6].options, ["rbind", "rslave", "ro"]);
    assert_eq!(out[7].options, ["rbind", "rprivate", "rw"]);
    assert_eq!(rootfs_propagation(&cri).as_deref(), Some("rslave"));
    let dev = vec![m(
        "/dev",
        "/host/dev",
        false,
        MountPropagation::Bidirectional,
    )];
    let out = merge_mounts(default_mounts(), &dev);
    assert!(
        !out.iter().any(|m| m.destination.starts_with("/dev/")),
        "everything under a given /dev goes"
    );
    assert_eq!(rootfs_propagation(&dev).as_deref(), Some("rshared"));
}

#[test]
fn resource_conversion() {
    let r = LinuxContainerResources {
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 1 << 24,
        pids_limit: 64,
        ..Default::default()
    };
    let o = resources(&r, false, true);
    assert_eq!(o.cpu.as_ref().unwrap().shares, Some(512));
    assert_eq!(
        (
            o.cpu.as_ref().unwrap().quota,
            o.cpu.as_ref().unwrap().period
        ),
        (Some(50_000), Some(100_000))
    );
    assert_eq!(
        o.memory,
        Some(Memory {
            limit: Some(1 << 24),
            swap: Some(1 << 24)
        })
    );
    assert_eq!(o.pids, Some(Pids { limit: 64 }));
    assert_eq!(
        o.devices,
        [DeviceCgroup {
            allow: false,
            access: "rwm".into(),
            ..Default::default()
        }]
    );
    let o = resources(&LinuxContainerResources::default(), true, false);
    assert_eq!((o.cpu, o.memory, o.pids), (None, None, None));
    assert!(o.devices[0].allow);
}

#[test]
fn namespaces_by_mode() {
    let ctx = SandboxContext {
        netns_path: Some("/run/netns/p".into()),
        pause_pid: Some(42),
        pod_dir: "/p".into(),
    };
    let kinds = |ns: &[Namespace]| -> Vec<String> {
        ns.iter()
            .map(|n| format!("{}={}", n.kind, n.path.clone().unwrap_or_default()))
            .collect()
    };
    let pod = NamespaceOptions {
        network: NamespaceMode::Pod,
        pid: NamespaceMode::Container,
        ipc: NamespaceMode::Pod,
    };
    assert_eq!(
        kinds(&container_namespaces(&pod, &ctx, 42, false)),
        [
            "pid=",
            "network=/run/netns/p",
            "uts=/proc/42/ns/uts",
            "ipc=/proc/42/ns/ipc",
            "mount="
        ]
    );
    let shared = NamespaceOptions {
        pid: NamespaceMode::Pod,
        ..pod
    };
    assert_eq!(
        kinds(&container_namespaces(&shared, &ctx, 42, true))[0],
        "pid=/proc/42/ns/pid"
    );
    assert_eq!(
        kinds(&container_namespaces(&shared, &ctx, 42, true))
            .last()
            .unwrap(),
        "cgroup="
    );
    let host = NamespaceOptions {
        network: NamespaceMode::Node,
        pid: NamespaceMode::Node,
        ipc: NamespaceMode::Node,
    };
    assert_eq!(
        kinds(&container_namespaces(&host, &ctx, 42, false)),
        ["mount="]
    );
    let no_path = SandboxContext {
        netns_path: None,
        ..ctx
    };
    assert_eq!(
        kinds(&container_namespaces(&pod, &no_path, 7, false))[1],
        "network=/proc/7/ns/net"
    );
}

fn sandbox_cfg() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: meta(),
        hostname: "web".into(),
        cgroup_parent: "/kubepods/besteffort/podu1".into(),
        ..Default::default()
    }
}

#[test]
fn container_spec_assembly() {
    let t = TempDir::new("cspec");
    let rootfs = t.0.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
    let ctx = SandboxContext {
        netns_path: None,
        pause_pid: Some(99),
        pod_dir: t.0.join("pod"),
    };
    let files = PodFiles::new(&ctx.pod_dir);
    let mut c = ContainerConfig {
        metadata: types::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        },
        args: v(&["-c", "id"]),
        envs: vec![("K".into(), "V".into())],
        termination_message_path: "/dev/termination-log".into(),
        resources: LinuxContainerResources {
            oom_score_adj: -997,
            memory_limit_in_bytes: 1 << 24,
            ..Default::default()
        },
        security_context: LinuxContainerSecurityContext {
            readonly_rootfs: true,
            run_as_user: Some(1000),
            ..Default::default()
        },
        ..Default::default()
    };
    c.mounts.push(types::Mount {
        container_path: "/etc/hosts".into(),
        host_path: t.0.join("my-hosts"),
        ..Default::default()
    });
    let img = ImageConfig {
        entrypoint: v(&["/bin/sh"]),
        env: v(&["PATH=/bin"]),
        ..Default::default()
    };
    let e = container_spec("cid1", &sandbox_cfg(), &c, &img, &ctx, &rootfs, &host()).unwrap_err();
    assert!(
        e.to_string().contains("the pod's files are not written"),
        "{e}"
    );
    std::fs::create_dir_all(&files.dir).unwrap();
    for f in [files.hosts(), files.hostname(), files.resolv_conf()] {
        std::fs::write(f, "").unwrap();
    }
    let s = container_spec("cid1", &sandbox_cfg(), &c, &img, &ctx, &rootfs, &host()).unwrap();
    assert_eq!(s.process.args, ["/bin/sh", "-c", "id"]);
    assert_eq!(s.process.env, ["PATH=/bin", "HOSTNAME=web", "K=V"]);
    assert_eq!(
        s.process.user,
        User {
            uid: 1000,
            gid: 1001,
            additional_gids: vec![50, 60, 1001]
        }
    );
    assert_eq!(
        s.process.oom_score_adj,
        Some(0),
        "clamped without CAP_SYS_RESOURCE"
    );
    assert!(s.root.readonly && s.root.path == "rootfs");
    assert_eq!(s.linux.cgroups_path, "/kubepods/besteffort/podu1/cid1");
    assert!(s.annotations.is_empty(), "the runtime sets the shim group");
    assert_eq!(s.hostname, None);
    let hosts: Vec<&Mount> = s
        .mounts
        .iter()
        .filter(|m| m.destination == "/etc/hosts")
        .collect();
    assert_eq!(hosts.len(), 1, "the container's own /etc/hosts wins");
    assert_eq!(hosts[0].source, t.0.join("my-hosts").to_string_lossy());
    let resolv = s
        .mounts
        .iter()
        .find(|m| m.destination == "/etc/resolv.conf")
        .unwrap();
    assert!(
        resolv.options.contains(&"ro".to_string()),
        "read-only with a read-only rootfs"
    );
    let term = s
        .mounts
        .iter()
        .find(|m| m.destination == "/dev/termination-log")
        .unwrap();
    let term_file = t.0.join("pod/containers/app/cid1");
    assert_eq!(term.source, term_file.to_string_lossy());
    assert_eq!(
        std::fs::metadata(&term_file).unwrap().permissions().mode() & 0o777,
        0o666
    );
    assert_eq!(s.linux.masked_paths, DEFAULT_MASKED_PATHS);
    let json: serde_json::Value = serde_json::from_slice(&s.to_json().unwrap()).unwrap();
    assert_eq!(
        json["linux"]["cgroupsPath"],
        "/kubepods/besteffort/podu1/cid1"
    );
    assert_eq!(json["process"]["user"]["additionalGids"][0], 50);
    assert_eq!(json["linux"]["resources"]["memory"]["limit"], 1 << 24);
    assert_eq!(json["mounts"][0]["type"], "proc");

    // privileged: all caps, no masks, writable sysfs, all devices
    c.security_context.privileged = true;
    let s = container_spec("cid2", &sandbox_cfg(), &c, &img, &ctx, &rootfs, &host()).unwrap();
    assert_eq!(
        s.process.capabilities.as_ref().unwrap().bounding,
        host().capabilities
    );
    assert!(s.linux.masked_paths.is_empty() && s.linux.readonly_paths.is_empty());
    let sys = s.mounts.iter().find(|m| m.destination == "/sys").unwrap();
    assert!(sys.options.contains(&"rw".to_string()) && !sys.options.contains(&"ro".to_string()));
    assert!(s.linux.resources.as_ref().unwrap().devices[0].allow);
    assert!(s.linux.devices.iter().any(|d| d.path == "/dev/null"));

    let no_pause = SandboxContext {
        pause_pid: None,
        ..ctx
    };
    assert!(container_spec("x", &sandbox_cfg(), &c, &img, &no_pause, &rootfs, &host()).is_err());
}

#[test]
fn sandbox_spec_assembly() {
    let mut cfg = sandbox_cfg();
    cfg.run_as_user = Some(65534);
    cfg.supplemental_groups = vec![5];
    cfg.sysctls
        .insert("net.ipv4.ping_group_range".into(), "0 1".into());
    let ctx = SandboxContext {
        netns_path: Some("/run/netns/x".into()),
        pause_pid: None,
        pod_dir: "/pods/u1".into(),
    };
    let pause = PauseBinary {
        path: "/usr/bin/picolet".into(),
        binds: vec![crate::pause::BindMount {
            source: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
            destination: "/lib64/ld-linux-x86-64.so.2".into(),
        }],
        library_path: Some("/usr/lib/x86_64-linux-gnu".into()),
    };
    let s = sandbox_spec(
        "sb1",
        &cfg,
        &ctx,
        Path::new("/var/lib/picolet/pause-root"),
        &pause,
        &host(),
    )
    .unwrap();
    assert_eq!(s.process.args, ["/pause", "pause"]);
    assert_eq!(
        s.process.user,
        User {
            uid: 65534,
            gid: 0,
            additional_gids: vec![0, 5]
        }
    );
    assert!(s.process.no_new_privileges && s.root.readonly);
    assert_eq!(s.root.path, "/var/lib/picolet/pause-root");
    assert_eq!(s.process.oom_score_adj, Some(0));
    assert_eq!(s.hostname.as_deref(), Some("web"));
    let ns: Vec<_> = s.linux.namespaces.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(ns, ["pid", "ipc", "uts", "network", "mount"]);
    assert_eq!(s.linux.namespaces[3].path.as_deref(), Some("/run/netns/x"));
    assert_eq!(s.linux.cgroups_path, "/kubepods/besteffort/podu1/sb1");
    assert_eq!(s.linux.sysctl["net.ipv4.ping_group_range"], "0 1");
    let shm = s
        .mounts
        .iter()
        .find(|m| m.destination == "/dev/shm")
        .unwrap();
    assert_eq!(
        (shm.kind.as_str(), shm.source.as_str()),
        ("bind", "/pods/u1/shm")
    );
    let pause_mount = s.mounts.iter().find(|m| m.destination == "/pause").unwrap();
    assert_eq!(pause_mount.source, "/usr/bin/picolet");
    assert!(pause_mount.options.contains(&"ro".to_string()));
    let ld = s
        .mounts
        .iter()
        .find(|m| m.destination == "/lib64/ld-linux-x86-64.so.2")
        .unwrap();
    assert_eq!(ld.source, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    assert_eq!(
        s.process.env,
        [
            DEFAULT_PATH_ENV,
            "LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu"
        ]
    );
    assert!(s.annotations.is_empty(), "the runtime sets the shim group");

    cfg.namespace_options = NamespaceOptions {
        network: NamespaceMode::Node,
        pid: NamespaceMode::Node,
        ipc: NamespaceMode::Node,
    };
    cfg.hostname.clear();
    cfg.sysctls.clear();
    let s = sandbox_spec(
        "sb2",
        &cfg,
        &SandboxContext {
            netns_path: None,
            ..ctx
        },
        Path::new("/r"),
        &pause,
        &host(),
    )
    .unwrap();
    let ns: Vec<_> = s.linux.namespaces.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(ns, ["mount"]);
    assert_eq!(s.hostname, None);
    assert_eq!(
        s.mounts
            .iter()
            .find(|m| m.destination == "/dev/shm")
            .unwrap()
            .source,
        "/dev/shm"
    );
}
