//! Pure decisions of the runtime service (kept apart so unit tests drive
//! them): container ids, stop signals, exit reasons, the termination message
//! as the upstream kubelet builds it, and runc's exec-failure signature.

use anyhow::{bail, Result};

/// Reason of a container that exited 0.
pub const REASON_COMPLETED: &str = "Completed";
/// Reason of a container that exited non-zero.
pub const REASON_ERROR: &str = "Error";
/// Reason when the kernel OOM-killed a process of the container.
pub const REASON_OOM: &str = "OOMKilled";
/// containerd's reason for a container whose start failed (exit code 128,
/// Docker's convention).
pub const REASON_START_ERROR: &str = "StartError";
pub const START_ERROR_EXIT_CODE: i32 = 128;
/// containerd's reason and code when the exit status is unknown (the task
/// vanished while nobody watched).
pub const REASON_UNKNOWN: &str = "Unknown";
pub const UNKNOWN_EXIT_CODE: i32 = 255;

/// Upstream `MaxContainerTerminationMessageLength`: the file's last 4 KiB.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// Upstream `MaxContainerTerminationMessageLogLines` / `...LogLength`.
pub const MAX_TERMINATION_LOG_LINES: usize = 80;
pub const MAX_TERMINATION_LOG_BYTES: usize = 2048;

/// Policies of `terminationMessagePolicy`.
pub const POLICY_FALLBACK_TO_LOGS: &str = "FallbackToLogsOnError";

/// A fresh sandbox or container id: 64 hex digits, as containerd makes them.
pub fn new_id() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("no randomness from the system for a container id"))?;
    Ok(crate::util::hex(&b))
}

/// Unix nanoseconds now.
pub fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Parses a stop signal as Kubernetes and images write it: `SIGTERM`,
/// `TERM`, `15`, `SIGRTMIN+3`, `RTMAX-1` (case-insensitive names).
pub fn parse_signal(s: &str) -> Result<u32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("signal {s:?} out of range");
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let rt = |base: i32, off: &str, neg: bool| -> Result<u32> {
        let off: i32 = if off.is_empty() {
            0
        } else {
            off.parse()
                .map_err(|_| anyhow::anyhow!("bad signal {s:?}"))?
        };
        let n = if neg { base - off } else { base + off };
        if !(libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) {
            bail!("signal {s:?} out of range");
        }
        Ok(n as u32)
    };
    if let Some(off) = name.strip_prefix("RTMIN") {
        return rt(libc::SIGRTMIN(), off.trim_start_matches('+'), false);
    }
    if let Some(off) = name.strip_prefix("RTMAX") {
        return rt(libc::SIGRTMAX(), off.trim_start_matches('-'), true);
    }
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => bail!("unknown signal {s:?}"),
    };
    Ok(n as u32)
}

/// The signal that stops a container: its own `stopSignal`, else the
/// image's `STOPSIGNAL`, else SIGTERM (as containerd). A bad value falls
/// back to SIGTERM with the reason, so a stop never fails on it.
pub fn stop_signal(container: Option<&str>, image: Option<&str>) -> (u32, Option<String>) {
    let pick = container
        .filter(|s| !s.is_empty())
        .or(image.filter(|s| !s.is_empty()));
    match pick.map(parse_signal) {
        None => (libc::SIGTERM as u32, None),
        Some(Ok(n)) => (n, None),
        Some(Err(e)) => (libc::SIGTERM as u32, Some(format!("{e:#}; using SIGTERM"))),
    }
}

/// The reason of an exited container, as containerd reports it: an OOM
/// kill wins, then the exit code.
pub fn exit_reason(exit_code: i32, oom: bool) -> &'static str {
    if oom {
        REASON_OOM
    } else if exit_code == 0 {
        REASON_COMPLETED
    } else {
        REASON_ERROR
    }
}

/// What the termination-message file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminationFile {
    /// No path configured, or the file does not exist.
    Absent,
    /// Its last [`MAX_TERMINATION_MESSAGE`] bytes.
    Content(Vec<u8>),
    /// It could not be read: upstream reports the error as the message.
    Unreadable(String),
}

/// The status message of an exited container, as the upstream kubelet
/// builds it (`convertToKubeContainerStatus`): the runtime's own message,
/// then `": "` and the termination message: the file's content, or with
/// `FallbackToLogsOnError`, a non-zero exit and an empty or absent file,
/// the tail of the log (`log_tail`, read only then).
pub fn termination_message(
    runtime_message: &str,
    policy: &str,
    exit_code: i32,
    reason: &str,
    file: TerminationFile,
    log_tail: impl FnOnce() -> String,
) -> String {
    // "If a container cannot even be started, it certainly does not have
    // logs" (upstream's ContainerCannotRun exception).
    let fallback =
        policy == POLICY_FALLBACK_TO_LOGS && exit_code != 0 && reason != "ContainerCannotRun";
    let t = match file {
        TerminationFile::Absent if fallback => log_tail(),
        TerminationFile::Absent => String::new(),
        TerminationFile::Content(d) if d.is_empty() && fallback => log_tail(),
        TerminationFile::Content(d) => String::from_utf8_lossy(&d).into_owned(),
        TerminationFile::Unreadable(e) => e,
    };
    match (runtime_message.is_empty(), t.is_empty()) {
        (_, true) => runtime_message.to_string(),
        (true, false) => t,
        (false, false) => format!("{runtime_message}: {t}"),
    }
}

/// The last `max` bytes of `data` (upstream `tail.ReadAtMost`).
pub fn last_bytes(data: &[u8], max: usize) -> &[u8] {
    &data[data.len().saturating_sub(max)..]
}

/// One parsed CRI log line: (stream, partial, content).
fn parse_cri_line(line: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let mut it = line.splitn(4, |&b| b == b' ');
    let _ts = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let content = it.next().unwrap_or(&[]);
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some((stream, partial, content))
}

/// The termination message taken from a CRI log (upstream
/// `readLastStringFromContainerLogs`): the content of the last
/// [`MAX_TERMINATION_LOG_LINES`] entries, a full entry ending in a
/// newline, both streams, then the last [`MAX_TERMINATION_LOG_BYTES`].
/// `tail` is the end of the file; its first line is dropped as possibly
/// cut unless `from_start`.
pub fn log_tail_message(tail: &[u8], from_start: bool) -> String {
    let mut lines: Vec<&[u8]> = tail.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if !from_start && !lines.is_empty() {
        lines.remove(0);
    }
    let start = lines.len().saturating_sub(MAX_TERMINATION_LOG_LINES);
    let mut out = Vec::new();
    for l in &lines[start..] {
        if let Some((_, partial, content)) = parse_cri_line(l) {
            out.extend_from_slice(content);
            if !partial {
                out.push(b'\n');
            }
        }
    }
    String::from_utf8_lossy(last_bytes(&out, MAX_TERMINATION_LOG_BYTES)).into_owned()
}

/// The last stderr entry of a CRI log tail (without the newline).
pub fn last_stderr_line(tail: &[u8]) -> Option<String> {
    tail.split(|&b| b == b'\n')
        .filter_map(parse_cri_line)
        .rfind(|(s, _, _)| *s == b"stderr")
        .map(|(_, _, c)| String::from_utf8_lossy(c).into_owned())
}

/// Whether an early exit is runc failing to exec the process after
/// `start` (e.g. exec format error): runc's init then prints
/// `exec <path>: <error>` on the container's stderr and exits 1.
pub fn is_runc_exec_failure(exit_code: i32, last_stderr: Option<&str>) -> bool {
    exit_code == 1
        && last_stderr.is_some_and(|l| {
            l.strip_prefix("exec ")
                .and_then(|r| r.split_once(": "))
                .is_some_and(|(path, err)| !path.is_empty() && !err.is_empty())
        })
}

/// Whether `/proc/<pid>/cmdline` still shows runc's init (the process has
/// not exec'd the container's command yet).
pub fn is_runc_init(cmdline: &[u8]) -> bool {
    let args: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    args.len() == 2
        && args[1] == b"init"
        && args[0]
            .rsplit(|&b| b == b'/')
            .next()
            .is_some_and(|n| n.starts_with(b"runc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let a = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_id().unwrap());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("term").unwrap(), 15);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGQUIT").unwrap(), 3);
        assert_eq!(parse_signal("SIGWINCH").unwrap(), 28);
        assert_eq!(
            parse_signal("SIGRTMIN+3").unwrap(),
            libc::SIGRTMIN() as u32 + 3
        );
        assert_eq!(
            parse_signal("RTMAX-1").unwrap(),
            libc::SIGRTMAX() as u32 - 1
        );
        assert_eq!(parse_signal("SIGRTMIN").unwrap(), libc::SIGRTMIN() as u32);
        for bad in ["SIGFOO", "0", "65", "RTMIN+99", "RTMIN+x", ""] {
            assert!(parse_signal(bad).is_err(), "{bad:?}");
        }
        assert_eq!(stop_signal(None, None), (15, None));
        assert_eq!(stop_signal(Some("SIGINT"), Some("SIGQUIT")), (2, None));
        assert_eq!(stop_signal(None, Some("SIGQUIT")), (3, None));
        assert_eq!(stop_signal(Some(""), Some("SIGQUIT")), (3, None));
        let (n, why) = stop_signal(Some("SIGNOPE"), None);
        assert_eq!(n, 15);
        assert!(why.unwrap().contains("SIGNOPE"));
    }

    #[test]
    fn reasons() {
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(3, false), "Error");
        assert_eq!(exit_reason(137, true), "OOMKilled");
        assert_eq!(exit_reason(0, true), "OOMKilled");
    }

    fn tail() -> String {
        "from logs".to_string()
    }

    #[test]
    fn termination_messages_by_policy() {
        use TerminationFile::*;
        let f = |s: &str| Content(s.as_bytes().to_vec());
        // The file wins whenever it has content.
        assert_eq!(
            termination_message("", "File", 0, "Completed", f("bye"), tail),
            "bye"
        );
        assert_eq!(
            termination_message("", POLICY_FALLBACK_TO_LOGS, 1, "Error", f("bye"), tail),
            "bye"
        );
        // Logs only with the policy, a non-zero exit and nothing in the file.
        assert_eq!(
            termination_message("", POLICY_FALLBACK_TO_LOGS, 1, "Error", f(""), tail),
            "from logs"
        );
        assert_eq!(
            termination_message("", POLICY_FALLBACK_TO_LOGS, 2, "Error", Absent, tail),
            "from logs"
        );
        assert_eq!(
            termination_message(
                "",
                POLICY_FALLBACK_TO_LOGS,
                0,
                "Completed",
                f(""),
                || panic!("no logs on success")
            ),
            ""
        );
        assert_eq!(
            termination_message("", "File", 1, "Error", Absent, || panic!("File policy")),
            ""
        );
        assert_eq!(
            termination_message(
                "",
                POLICY_FALLBACK_TO_LOGS,
                1,
                "ContainerCannotRun",
                Absent,
                || panic!("cannot run")
            ),
            ""
        );
        // The runtime's message comes first.
        assert_eq!(
            termination_message("runc failed", "File", 128, "StartError", f("m"), tail),
            "runc failed: m"
        );
        assert_eq!(
            termination_message("runc failed", "File", 128, "StartError", Absent, tail),
            "runc failed"
        );
        assert_eq!(
            termination_message(
                "",
                "File",
                1,
                "Error",
                Unreadable("Error on reading".into()),
                tail
            ),
            "Error on reading"
        );
        assert_eq!(last_bytes(b"abcdef", 4), b"cdef");
        assert_eq!(last_bytes(b"ab", 4), b"ab");
    }

    #[test]
    fn log_tails_like_the_kubelet() {
        let log = b"2024-01-01T00:00:00Z stdout F one\n\
2024-01-01T00:00:00Z stderr P par\n\
2024-01-01T00:00:00Z stderr F tial\n\
2024-01-01T00:00:00Z stdout F \n";
        assert_eq!(log_tail_message(log, true), "one\npartial\n\n");
        // A cut first line is dropped.
        assert_eq!(log_tail_message(&log[5..], false), "partial\n\n");
        let mut many = Vec::new();
        for i in 0..100 {
            many.extend_from_slice(format!("T stdout F l{i}\n").as_bytes());
        }
        let m = log_tail_message(&many, true);
        assert!(m.starts_with("l20\n") && m.ends_with("l99\n"), "{m}");
        let mut long = Vec::new();
        for _ in 0..10 {
            long.extend_from_slice(format!("T stdout F {}\n", "x".repeat(500)).as_bytes());
        }
        assert_eq!(
            log_tail_message(&long, true).len(),
            MAX_TERMINATION_LOG_BYTES
        );
        assert_eq!(log_tail_message(b"", true), "");
        assert_eq!(
            last_stderr_line(log).as_deref(),
            Some("tial"),
            "the last stderr entry"
        );
        assert_eq!(last_stderr_line(b"T stdout F x\n"), None);
    }

    #[test]
    fn runc_exec_failures() {
        assert!(is_runc_exec_failure(
            1,
            Some("exec /bad: exec format error")
        ));
        assert!(!is_runc_exec_failure(
            2,
            Some("exec /bad: exec format error")
        ));
        assert!(!is_runc_exec_failure(1, Some("something else")));
        assert!(!is_runc_exec_failure(1, Some("exec : x")));
        assert!(!is_runc_exec_failure(1, None));
        assert!(is_runc_init(b"runc\0init\0"));
        assert!(is_runc_init(b"/usr/sbin/runc\0init\0"));
        assert!(!is_runc_init(b"sh\0-c\0init\0"));
        assert!(!is_runc_init(b"httpd\0-f\0"));
        assert!(!is_runc_init(b""));
    }
}
