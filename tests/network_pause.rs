//! `picolet pause` as PID 1 of new PID + network namespaces: reaps orphaned
//! zombies, exits 0 on SIGTERM/SIGINT, and runs from an otherwise empty
//! rootfs with the mounts `PauseBinary` lists. Root.

mod network_support;

use network_support::{require_prereqs, wait_until};
use picolet::pause::{PauseBinary, PAUSE_PATH};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PICOLET: &str = env!("CARGO_BIN_EXE_picolet");

/// (ppid, state) of a process, from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(u32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...; comm may hold spaces: split after ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((ppid, state))
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| stat(*p).is_some_and(|(pp, _)| pp == pid))
        .collect()
}

/// `unshare` running pause (or a wrapper that execs it) as PID 1 of new
/// namespaces; SIGKILLs what is left on drop.
struct Sandbox {
    unshare: Child,
    pause: u32,
}

impl Sandbox {
    fn start(cmd: &mut Command) -> Sandbox {
        let unshare = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start unshare");
        let upid = unshare.id();
        let mut pause = 0;
        let started = wait_until(Duration::from_secs(5), || {
            pause = children_of(upid).first().copied().unwrap_or(0);
            pause != 0
        });
        let mut sb = Sandbox { unshare, pause };
        if !started {
            let (code, err) = sb.wait_exit(Duration::from_secs(5));
            panic!("unshare started no child: exit {code:?}: {err}");
        }
        sb
    }

    /// Waits for unshare (which returns the child's status) for at most
    /// `within`; the exit code and stderr.
    fn wait_exit(&mut self, within: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + within;
        loop {
            if let Some(st) = self.unshare.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = self.unshare.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return (st.code(), err);
            }
            assert!(Instant::now() < end, "pause did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.unshare.try_wait().ok().flatten().is_none() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(self.pause as i32).expect("pid"),
                rustix::process::Signal::KILL,
            );
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig)
        .expect("kill");
}

fn pause_in_new_namespaces() -> Sandbox {
    Sandbox::start(Command::new("unshare").args([
        "--pid",
        "--net",
        "--fork",
        "--kill-child",
        PICOLET,
        "pause",
    ]))
}

#[test]
fn pause_reaps_orphans_and_exits_zero_on_sigterm() {
    require_prereqs();
    let mut sb = pause_in_new_namespaces();
    // Wait until pause has exec'd and installed its handlers (it sleeps).
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_link(format!("/proc/{}/exe", sb.pause)).is_ok_and(|e| e == Path::new(PICOLET))
            && stat(sb.pause).is_some_and(|(_, s)| s == 'S')
    }));
    // Surviving an unhandled signal would prove nothing; SIGCHLD without
    // children must not end it either.
    signal(sb.pause, rustix::process::Signal::CHILD);

    // A shell in the pod's PID namespace starts a sleeper and exits: the
    // sleeper is re-parented to PID 1 (pause) and must be reaped on exit.
    let st = Command::new("nsenter")
        .args(["--target", &sb.pause.to_string(), "--pid", "--net", "--"])
        .args(["busybox", "sh", "-c", "busybox sleep 1 & exit 0"])
        .status()
        .expect("nsenter");
    assert!(st.success());
    let mut orphan = 0;
    assert!(
        wait_until(Duration::from_secs(2), || {
            orphan = children_of(sb.pause).first().copied().unwrap_or(0);
            orphan != 0
        }),
        "the orphan was not re-parented to pause"
    );
    assert_eq!(stat(orphan).map(|s| s.0), Some(sb.pause));
    // After the sleep it must disappear, not linger as a zombie.
    let gone = wait_until(Duration::from_secs(5), || match stat(orphan) {
        None => true,
        Some((ppid, _)) => ppid != sb.pause,
    });
    assert!(gone, "orphan {orphan} left as {:?}", stat(orphan));
    assert!(children_of(sb.pause).is_empty());

    let t0 = Instant::now();
    signal(sb.pause, rustix::process::Signal::TERM);
    let (code, err) = sb.wait_exit(Duration::from_secs(2));
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(err.contains("got signal 15"), "{err}");
}

#[test]
fn pause_exits_zero_on_sigint() {
    require_prereqs();
    let mut sb = pause_in_new_namespaces();
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_link(format!("/proc/{}/exe", sb.pause)).is_ok_and(|e| e == Path::new(PICOLET))
            && stat(sb.pause).is_some_and(|(_, s)| s == 'S')
    }));
    signal(sb.pause, rustix::process::Signal::INT);
    let (code, err) = sb.wait_exit(Duration::from_secs(2));
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(err.contains("got signal 2"), "{err}");
}

/// Removes the test rootfs (its bind mounts live in the private mount
/// namespace of unshare and vanish with it).
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        // Never recurse into a bind mount of host library dirs: only remove
        // the tree when nothing is mounted below it in this namespace.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.0.to_string_lossy().into_owned();
        let mounted = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| m.starts_with(&prefix));
        if !mounted {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn pause_runs_in_an_empty_rootfs_with_the_listed_mounts() {
    require_prereqs();
    // What the spec builder gets for this build of picolet: ask about a
    // running picolet process (the agent would ask about itself).
    let mut probe = Command::new(PICOLET)
        .arg("pause")
        .stderr(Stdio::null())
        .spawn()
        .expect("start picolet pause");
    let pid = probe.id();
    let mut info = None;
    assert!(wait_until(Duration::from_secs(5), || {
        // Once it sleeps, the loader has mapped every library.
        let ready = std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|e| e == Path::new(PICOLET))
            && stat(pid).is_some_and(|(_, s)| s == 'S');
        info = ready.then(|| PauseBinary::of_process(pid).ok()).flatten();
        info.is_some()
    }));
    let _ = probe.kill();
    let _ = probe.wait();
    let info = info.expect("PauseBinary");
    assert_eq!(info.path, Path::new(PICOLET));
    if cfg!(target_env = "gnu") {
        // The dev build is dynamically linked: loader and libc must be listed.
        assert!(!info.binds.is_empty(), "{info:?}");
        assert!(info.library_path.is_some());
    }

    let base = Root(PathBuf::from("/var/tmp/picolet-test/net-7"));
    let _ = std::fs::remove_dir_all(&base.0);
    let root = base.0.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    // Apply the mounts the way runc would (read-only binds into the empty
    // root), then chroot: nothing else of the host is visible.
    let mut script = String::from("set -e\n");
    let r = root.display();
    let mut binds = vec![(info.path.clone(), PathBuf::from(PAUSE_PATH))];
    binds.extend(
        info.binds
            .iter()
            .map(|b| (b.source.clone(), b.destination.clone())),
    );
    for (src, dst) in &binds {
        let (src, dst) = (src.display(), dst.display());
        if Path::new(&src.to_string()).is_dir() {
            script += &format!("mkdir -p '{r}{dst}'\n");
        } else {
            script += &format!("mkdir -p \"$(dirname '{r}{dst}')\"; touch '{r}{dst}'\n");
        }
        script +=
            &format!("mount --bind '{src}' '{r}{dst}'\nmount -o remount,bind,ro '{r}{dst}'\n");
    }
    let lib = info.library_path.clone().unwrap_or_default();
    script += &format!(
        "c=$(command -v chroot)\nexec env -i LD_LIBRARY_PATH='{lib}' \"$c\" '{r}' {PAUSE_PATH} pause\n"
    );
    let mut sb = Sandbox::start(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--net",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
        &script,
    ]));
    // The child of unshare execs its way to /pause (sh -> env -> chroot).
    let running = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/comm", sb.pause))
            .is_ok_and(|c| c.trim() == "pause")
            && stat(sb.pause).is_some_and(|(_, s)| s == 'S')
    });
    if !running {
        let (code, err) = sb.wait_exit(Duration::from_secs(5));
        panic!("pause did not start in the empty rootfs: exit {code:?}: {err}");
    }
    signal(sb.pause, rustix::process::Signal::TERM);
    let (code, err) = sb.wait_exit(Duration::from_secs(2));
    assert_eq!(code, Some(0), "stderr: {err}");
}
