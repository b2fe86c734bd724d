//! Helpers for the shim integration tests (root, real shim and runc).
//! Each test gets its own number `n`: runtime namespace `pltest-shim-<n>`,
//! bundles under /var/tmp/picolet-test/shim-<n>/, events socket under
//! /run/picolet-test/shim-<n>/, cgroup parent /picolet-test-shim-<n>.
//! [`TestEnv`]'s Drop kills and removes whatever the test left.

#![allow(dead_code)]

use picolet::runtime::events::{Event, EventServer};
use picolet::runtime::shim::{Bundle, RootfsMount, ShimConfig};
use smol::channel::Receiver;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const SHIM: &str = "containerd-shim-runc-v2";

pub struct TestEnv {
    pub n: u32,
    pub ns: String,
    pub root: PathBuf,
    pub bundles: PathBuf,
    pub run: PathBuf,
    pub cgroup_parent: String,
    pub cfg: ShimConfig,
    pub events: Option<(EventServer, Receiver<Event>)>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "missing prerequisite: {what}; run scripts/test-env.sh (as root)"
    );
}

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

impl TestEnv {
    /// Checks prerequisites, clears leftovers of an earlier run with the
    /// same number, and starts the events server (before any shim).
    pub fn new(n: u32) -> TestEnv {
        require(rustix::process::geteuid().is_root(), "root");
        for b in [SHIM, "runc", "umoci", "jq"] {
            require(in_path(b), b);
        }
        require(
            Path::new("/var/tmp/picolet-images/oci/index.json").exists(),
            "test images in /var/tmp/picolet-images/oci",
        );
        let ns = format!("pltest-shim-{n}");
        let root = PathBuf::from(format!("/var/tmp/picolet-test/shim-{n}"));
        let run = PathBuf::from(format!("/run/picolet-test/shim-{n}"));
        let mut env = TestEnv {
            n,
            cfg: ShimConfig {
                binary: SHIM.into(),
                namespace: ns.clone(),
                address: run.join("picolet.sock"),
                events_socket: run.join("events.sock"),
                debug: true,
                call_timeout: Duration::from_secs(30),
            },
            ns,
            bundles: root.join("bundles"),
            root,
            run,
            cgroup_parent: format!("/picolet-test-shim-{n}"),
            events: None,
        };
        env.cleanup();
        std::fs::create_dir_all(&env.bundles).unwrap();
        std::fs::create_dir_all(&env.run).unwrap();
        env.events = Some(EventServer::start(&env.cfg.events_socket).expect("events server"));
        env
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.events.as_ref().unwrap().1
    }

    pub fn id(&self, name: &str) -> String {
        format!("pltest-shim-{}-{name}", self.n)
    }

    /// An OCI bundle from the test images (scripts/runtime/prepare-bundle.sh).
    pub fn bundle(
        &self,
        name: &str,
        tag: &str,
        args: &[&str],
        group: Option<&str>,
        memory: Option<u64>,
    ) -> Bundle {
        let id = self.id(name);
        let mut c = Command::new(repo().join("scripts/runtime/prepare-bundle.sh"));
        c.arg(&id).arg(tag).args(args);
        c.env("BUNDLES_DIR", &self.bundles)
            .env("CGROUP_PARENT", &self.cgroup_parent);
        if let Some(g) = group {
            c.env("GROUP", g);
        }
        if let Some(m) = memory {
            c.env("MEMORY_LIMIT", m.to_string());
        }
        let out = c.output().expect("run prepare-bundle.sh");
        assert!(
            out.status.success(),
            "prepare-bundle.sh {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let b = Bundle::new(&self.bundles, &id).unwrap();
        b.prepare().unwrap();
        b
    }

    /// Moves the unpacked rootfs aside and returns an overlay mount of it
    /// for `Create` (the shim mounts it, as with picolet's own images).
    pub fn overlay_rootfs(&self, b: &Bundle) -> RootfsMount {
        let lower = b.dir.join("image");
        std::fs::rename(b.rootfs(), &lower).unwrap();
        for d in ["upper", "work"] {
            std::fs::create_dir_all(b.dir.join(d)).unwrap();
        }
        RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", lower.display()),
                format!("upperdir={}", b.dir.join("upper").display()),
                format!("workdir={}", b.dir.join("work").display()),
                "index=off".into(),
            ],
        }
    }

    pub fn runc_root(&self) -> String {
        format!("/run/containerd/runc/{}", self.ns)
    }

    /// Container ids runc knows in this namespace.
    pub fn runc_list(&self) -> Vec<String> {
        let out = Command::new("runc")
            .args(["--root", &self.runc_root(), "list", "-q"])
            .output()
            .expect("runc list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Pids of live shim processes of this namespace (zombies excluded).
    pub fn shim_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let is_ours = args.first().is_some_and(|a| a.ends_with(SHIM.as_bytes()))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-namespace" && w[1] == self.ns.as_bytes());
            if is_ours && !is_zombie(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Mount points under this test's root.
    pub fn mounts(&self) -> Vec<String> {
        // By path component: `x-1` must not match `x-10`'s mounts.
        picolet::util::mountinfo::read()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&self.root))
            .map(|m| m.mount_point.to_string_lossy().into_owned())
            .collect()
    }

    /// Kills and removes everything this test number may have left.
    pub fn cleanup(&mut self) {
        for pid in self.shim_pids() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        for id in self.runc_list() {
            let _ = Command::new("runc")
                .args(["--root", &self.runc_root(), "delete", "--force", &id])
                .output();
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        // Shim sockets named in the bundles' address files.
        if let Ok(dir) = std::fs::read_dir(&self.bundles) {
            for e in dir.flatten() {
                if let Ok(a) = std::fs::read_to_string(e.path().join("address")) {
                    if let Some(p) = a.trim().strip_prefix("unix://") {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        self.events = None;
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_dir_all(self.runc_root());
        for h in cgroup_hierarchies() {
            remove_cgroup_tree(&h.join(self.cgroup_parent.trim_start_matches('/')));
        }
    }

    /// The v1 cgroup dir of a container in hierarchy `ctrl`.
    pub fn cgroup(&self, ctrl: &str, id: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join(self.cgroup_parent.trim_start_matches('/'))
            .join(id)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn remove_cgroup_tree(p: &Path) {
    if let Ok(d) = std::fs::read_dir(p) {
        for e in d.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

/// Polls `f` until true or `timeout`.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        async_io::Timer::after(Duration::from_millis(20)).await;
    }
    f()
}

/// Next event for `container_id` with the given topic, within `timeout`.
pub async fn next_event(
    rx: &Receiver<Event>,
    container_id: &str,
    topic: &str,
    timeout: Duration,
) -> Option<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let ev = futures_lite::future::or(async { rx.recv().await.ok() }, async {
            async_io::Timer::after(left).await;
            None
        })
        .await?;
        if ev.event.container_id() == container_id && ev.topic == topic {
            return Some(ev);
        }
    }
}
