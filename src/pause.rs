//! `picolet pause`: the pod's infra process.
//!
//! It holds the pod's namespaces (IPC, UTS, and PID when the pod shares its
//! process namespace), reaps the zombies it inherits as PID 1, and exits 0 on
//! SIGTERM or SIGINT. PID 1 of a PID namespace ignores every signal it has no
//! handler for, so both handlers are installed explicitly.
//!
//! The signal handlers only store to an atomic; all work happens in normal
//! context between `sigsuspend` calls (the three signals stay blocked
//! otherwise, so none is lost between the check and the sleep). No executor,
//! no threads, no allocation after start-up.
//!
//! The binary picolet runs as is bind-mounted into the sandbox container (an
//! otherwise empty rootfs). A static build needs nothing else; a dynamically
//! linked dev build also needs its ELF interpreter and libraries:
//! [`PauseBinary::current`] lists the bind mounts for that.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// Where the spec builder mounts the binary inside the sandbox rootfs.
pub const PAUSE_PATH: &str = "/pause";

/// The signal that asked us to stop (0: none yet).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst);
}

/// Only there so SIGCHLD interrupts `sigsuspend`; reaping is done outside.
extern "C" fn on_child(_sig: libc::c_int) {}

/// Runs the pause loop; returns when SIGTERM or SIGINT arrived.
pub fn run() -> std::io::Result<()> {
    // SAFETY: plain libc signal calls on zeroed, properly initialised sets;
    // the handlers are async-signal-safe (an atomic store, or nothing).
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut block, s);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        check(libc::sigprocmask(libc::SIG_BLOCK, &block, &mut old))?;
        for (sig, handler, flags) in [
            (libc::SIGTERM, on_stop as extern "C" fn(libc::c_int), 0),
            (libc::SIGINT, on_stop, 0),
            (libc::SIGCHLD, on_child, libc::SA_NOCLDSTOP),
        ] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            sa.sa_flags = flags | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            check(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
        // While sleeping, the three signals are deliverable.
        let mut wait = old;
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigdelset(&mut wait, s);
        }
        loop {
            reap();
            let sig = STOP.load(Ordering::SeqCst);
            if sig != 0 {
                let _ = writeln!(
                    std::io::stderr(),
                    "picolet pause: shutting down, got signal {sig}"
                );
                return Ok(());
            }
            // Always returns -1/EINTR after a handler ran.
            libc::sigsuspend(&wait);
        }
    }
}

/// Collects every exited child (orphans re-parented to PID 1 included).
fn reap() {
    loop {
        // SAFETY: waitpid with a null status pointer is always valid.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            // 0: children left but none exited; -1/ECHILD: no children.
            return;
        }
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A read-only bind mount the sandbox container needs to run the pause binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: PathBuf,
}

/// What the sandbox spec needs to run `picolet pause` from this very binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseBinary {
    /// Host path of the binary; bind it read-only at [`PAUSE_PATH`].
    pub path: PathBuf,
    /// Extra read-only bind mounts: empty for a static binary; for a
    /// dynamically linked one, the host's library directories (at the same
    /// paths) and the ELF interpreter at its `PT_INTERP` path.
    pub binds: Vec<BindMount>,
    /// `LD_LIBRARY_PATH` for the process (dynamic builds only), so libraries
    /// outside the loader's default directories are found without the host's
    /// `/etc/ld.so.cache`.
    pub library_path: Option<String>,
}

impl PauseBinary {
    /// Describes the running executable (`picolet run` execs the same binary
    /// as pause, so its loaded libraries are exactly the ones pause needs).
    pub fn current() -> Result<PauseBinary> {
        PauseBinary::of_process(std::process::id())
    }

    /// Describes the executable of a running process, from
    /// `/proc/<pid>/exe` and the libraries mapped in `/proc/<pid>/maps`.
    pub fn of_process(pid: u32) -> Result<PauseBinary> {
        let proc_exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let exe = std::fs::read_link(&proc_exe)
            .with_context(|| format!("read {}", proc_exe.display()))?;
        // A binary replaced on disk (upgrade) shows as "... (deleted)"; the
        // magic link of the process still reaches the old file.
        let path = if exe.to_string_lossy().ends_with(" (deleted)") {
            proc_exe.clone()
        } else {
            exe.clone()
        };
        let file = File::open(&proc_exe).with_context(|| format!("open {}", proc_exe.display()))?;
        let interp = elf_interp(&file)
            .with_context(|| format!("read the ELF program headers of {}", exe.display()))?;
        let Some(interp) = interp else {
            return Ok(PauseBinary {
                path,
                binds: Vec::new(),
                library_path: None,
            });
        };
        let maps_path = format!("/proc/{pid}/maps");
        let maps =
            std::fs::read_to_string(&maps_path).with_context(|| format!("read {maps_path}"))?;
        let dirs = library_dirs(&maps, &exe);
        let real_interp = std::fs::canonicalize(&interp)
            .with_context(|| format!("resolve the ELF interpreter {}", interp.display()))?;
        Ok(PauseBinary {
            path,
            binds: dynamic_binds(&dirs, &interp, &real_interp),
            library_path: (!dirs.is_empty()).then(|| {
                dirs.iter()
                    .map(|d| d.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(":")
            }),
        })
    }

    /// Describes the binary at `path`. This process's own executable is
    /// described from `/proc/self`; a static binary needs nothing; another
    /// dynamically linked binary (tests run the `picolet` binary built next
    /// to the test executable) is started once as `<path> pause` and
    /// described from its `/proc/<pid>` once it sleeps (the loader has
    /// mapped every library by then), then stopped. Blocks for that run
    /// (tens of milliseconds): call it once at start-up, off the executor.
    pub fn for_path(path: &Path) -> Result<PauseBinary> {
        let real = std::fs::canonicalize(path)
            .with_context(|| format!("resolve pause binary {}", path.display()))?;
        if std::fs::canonicalize("/proc/self/exe").ok().as_deref() == Some(real.as_path()) {
            return PauseBinary::current();
        }
        let file = File::open(&real).with_context(|| format!("open {}", real.display()))?;
        let interp = elf_interp(&file)
            .with_context(|| format!("read the ELF program headers of {}", real.display()))?;
        if interp.is_none() {
            return Ok(PauseBinary {
                path: real,
                binds: Vec::new(),
                library_path: None,
            });
        }
        probe_running(&real)
    }

    /// The process args of the sandbox container (multi-call binary).
    pub fn args() -> Vec<String> {
        vec![PAUSE_PATH.to_string(), "pause".to_string()]
    }
}

/// Runs `<exe> pause` until it sleeps and describes it (see
/// [`PauseBinary::for_path`]); the probe is always killed and reaped.
fn probe_running(exe: &Path) -> Result<PauseBinary> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(exe)
        .arg("pause")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {} pause", exe.display()))?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let res = loop {
        // Sleeping in sigsuspend, as this binary: the loader is done.
        let exec_done = std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe);
        let sleeping = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .and_then(|i| s.get(i + 2..i + 3))
                    .map(|c| c == "S")
            })
            .unwrap_or(false);
        if exec_done && sleeping {
            break PauseBinary::of_process(pid);
        }
        if let Ok(Some(st)) = child.try_wait() {
            break Err(anyhow::anyhow!(
                "{} pause exited early: {st}",
                exe.display()
            ));
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "{} pause did not start within 10s",
                exe.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = child.kill();
    let _ = child.wait();
    res
}

/// Directory binds at the same paths, then the interpreter (a file bind) at
/// the path the kernel opens, unless a directory bind already provides it.
fn dynamic_binds(dirs: &BTreeSet<PathBuf>, interp: &Path, real_interp: &Path) -> Vec<BindMount> {
    let mut binds: Vec<BindMount> = dirs
        .iter()
        .map(|d| BindMount {
            source: d.clone(),
            destination: d.clone(),
        })
        .collect();
    let covered = interp == real_interp && interp.parent().is_some_and(|p| dirs.contains(p));
    if !covered {
        binds.push(BindMount {
            source: real_interp.to_path_buf(),
            destination: interp.to_path_buf(),
        });
    }
    binds
}

/// Directories of the executable file mappings in `/proc/self/maps` (the
/// loader and the shared libraries), without the executable itself.
fn library_dirs(maps: &str, exe: &Path) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname (the path may hold spaces)
        let mut f = line.splitn(6, ' ');
        let (Some(_), Some(perms), Some(_), Some(_), Some(_), Some(rest)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let p = rest.trim_start();
        if !perms.contains('x') || !p.starts_with('/') || p.ends_with(" (deleted)") {
            continue;
        }
        let p = Path::new(p);
        if p == exe {
            continue;
        }
        if let Some(d) = p.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    dirs
}

const PT_INTERP: u32 = 3;

/// The `PT_INTERP` path of an ELF file (`None` for a static binary).
pub fn elf_interp(file: &File) -> Result<Option<PathBuf>> {
    let mut hdr = [0u8; 64];
    file.read_exact_at(&mut hdr, 0).context("read ELF header")?;
    let h = ElfHeader::parse(&hdr)?;
    let mut ph = vec![0u8; h.phentsize * h.phnum];
    file.read_exact_at(&mut ph, h.phoff)
        .context("read program headers")?;
    let Some((off, len)) = h.find_interp(&ph)? else {
        return Ok(None);
    };
    if len == 0 || len > 4096 {
        bail!("PT_INTERP of implausible size {len}");
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, off)
        .context("read PT_INTERP")?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let s = std::str::from_utf8(&buf[..end]).context("PT_INTERP is not UTF-8")?;
    Ok(Some(PathBuf::from(s)))
}

#[derive(Debug, PartialEq)]
struct ElfHeader {
    is64: bool,
    le: bool,
    phoff: u64,
    phentsize: usize,
    phnum: usize,
}

impl ElfHeader {
    fn parse(h: &[u8; 64]) -> Result<ElfHeader> {
        if h[..4] != *b"\x7fELF" {
            bail!("not an ELF file");
        }
        let is64 = match h[4] {
            1 => false,
            2 => true,
            c => bail!("unknown ELF class {c}"),
        };
        let le = match h[5] {
            1 => true,
            2 => false,
            d => bail!("unknown ELF data encoding {d}"),
        };
        let (phoff, phentsize, phnum) = if is64 {
            (rd(h, 0x20, 8, le), rd(h, 0x36, 2, le), rd(h, 0x38, 2, le))
        } else {
            (rd(h, 0x1c, 4, le), rd(h, 0x2a, 2, le), rd(h, 0x2c, 2, le))
        };
        let min = if is64 { 56 } else { 32 };
        if (phentsize as usize) < min {
            bail!("program header entry size {phentsize} too small");
        }
        Ok(ElfHeader {
            is64,
            le,
            phoff,
            phentsize: phentsize as usize,
            phnum: phnum as usize,
        })
    }

    /// (file offset, size) of the PT_INTERP segment.
    fn find_interp(&self, ph: &[u8]) -> Result<Option<(u64, u64)>> {
        for e in ph.chunks_exact(self.phentsize) {
            if rd(e, 0, 4, self.le) as u32 != PT_INTERP {
                continue;
            }
            return Ok(Some(if self.is64 {
                (rd(e, 8, 8, self.le), rd(e, 32, 8, self.le))
            } else {
                (rd(e, 4, 4, self.le), rd(e, 16, 4, self.le))
            }));
        }
        Ok(None)
    }
}

/// Reads an unsigned integer of `n` bytes at `off` (callers stay in bounds).
fn rd(b: &[u8], off: usize, n: usize, le: bool) -> u64 {
    let s = &b[off..off + n];
    let mut v = 0u64;
    if le {
        for &x in s.iter().rev() {
            v = v << 8 | x as u64;
        }
    } else {
        for &x in s {
            v = v << 8 | x as u64;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_header_64_and_32() {
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[0x20] = 64;
        h[0x36] = 56;
        h[0x38] = 13;
        let e = ElfHeader::parse(&h).unwrap();
        assert_eq!(
            e,
            ElfHeader {
                is64: true,
                le: true,
                phoff: 64,
                phentsize: 56,
                phnum: 13
            }
        );
        // 32-bit big endian
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 1;
        h[5] = 2;
        h[0x1f] = 52;
        h[0x2b] = 32;
        h[0x2d] = 2;
        let e = ElfHeader::parse(&h).unwrap();
        assert_eq!((e.is64, e.le, e.phoff, e.phnum), (false, false, 52, 2));
        // PT_INTERP in the second entry
        let mut ph = vec![0u8; 64];
        ph[32 + 3] = 3;
        ph[32 + 7] = 0x34; // p_offset
        ph[32 + 19] = 19; // p_filesz
        assert_eq!(e.find_interp(&ph).unwrap(), Some((0x34, 19)));
        assert!(ElfHeader::parse(&[0u8; 64]).is_err());
    }

    #[test]
    fn interp_of_real_binaries() {
        // The test binary itself is dynamically linked in dev builds (glibc);
        // busybox-static has no interpreter.
        let me = File::open("/proc/self/exe").unwrap();
        let i = elf_interp(&me).unwrap();
        if cfg!(target_env = "gnu") {
            let i = i.expect("dynamic test binary");
            assert!(i.to_string_lossy().contains("ld-linux"), "{i:?}");
        }
        if let Ok(f) = File::open("/bin/busybox") {
            assert_eq!(elf_interp(&f).unwrap(), None);
        }
    }

    #[test]
    fn for_path_of_own_and_static_binaries() {
        let me = std::fs::canonicalize("/proc/self/exe").unwrap();
        let d = PauseBinary::for_path(&me).unwrap();
        assert_eq!(d, PauseBinary::current().unwrap());
        if Path::new("/bin/busybox").exists() {
            // busybox-static: nothing to bind, nothing run.
            let b = PauseBinary::for_path(Path::new("/bin/busybox")).unwrap();
            assert!(b.binds.is_empty() && b.library_path.is_none(), "{b:?}");
        }
        assert!(PauseBinary::for_path(Path::new("/no/such/picolet")).is_err());
    }

    #[test]
    fn maps_to_library_dirs() {
        let maps = "\
55d0-55d1 r--p 00000000 08:01 123 /usr/local/bin/picolet
55d1-55d2 r-xp 00001000 08:01 123 /usr/local/bin/picolet
7f00-7f01 r--p 00000000 08:01 7 /usr/lib/locale/locale-archive
7f01-7f02 r-xp 00028000 08:01 8 /usr/lib/x86_64-linux-gnu/libc.so.6
7f02-7f03 r-xp 00001000 08:01 9 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f03-7f04 r-xp 00001000 08:01 10 /opt/my libs/libx.so
7f04-7f05 rw-p 00000000 00:00 0 
7ffc-7ffd r-xp 00000000 00:00 0                          [vdso]
";
        let d = library_dirs(maps, Path::new("/usr/local/bin/picolet"));
        let want: BTreeSet<PathBuf> = ["/usr/lib/x86_64-linux-gnu", "/opt/my libs"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(d, want);
    }

    #[test]
    fn binds_for_dynamic_builds() {
        let dirs: BTreeSet<PathBuf> = [PathBuf::from("/usr/lib/x86_64-linux-gnu")].into();
        // Debian: /lib64/ld-linux-x86-64.so.2 is a symlink into the lib dir.
        let b = dynamic_binds(
            &dirs,
            Path::new("/lib64/ld-linux-x86-64.so.2"),
            Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        );
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].destination, Path::new("/lib64/ld-linux-x86-64.so.2"));
        // Alpine-like: the interpreter sits in a bound directory already.
        let dirs: BTreeSet<PathBuf> = [PathBuf::from("/lib")].into();
        let b = dynamic_binds(
            &dirs,
            Path::new("/lib/ld-musl-x86_64.so.1"),
            Path::new("/lib/ld-musl-x86_64.so.1"),
        );
        assert_eq!(b.len(), 1);
    }
}
