//! Container stdout/stderr into the CRI log file
//! (`<RFC3339Nano> stdout|stderr F|P <content>\n`), as containerd's CRI
//! writes it: `\n` and `\r\n` are stripped; a line longer than the max line
//! size becomes `P` entries of exactly that size and a final `F` entry; an
//! unterminated line at EOF is written as `P`.
//!
//! Transport: the shim writes into FIFOs in the bundle (it keeps a read end
//! itself, so output waits in the pipe while picolet is down). picolet
//! never holds output only in memory: it **peeks** the FIFO with `tee(2)`
//! into a private pipe, writes the complete lines it saw to the log file,
//! and only then consumes those bytes from the FIFO. An unterminated tail
//! stays in the FIFO until its newline comes. So dropping the copier or a
//! `kill -9` of picolet at any point loses nothing; the worst case (killed
//! between the file write and the consume, a window of one syscall) writes
//! those lines twice.
//!
//! Rotation like the kubelet's: when the file would pass
//! `containerLogMaxSize`, `N.log` is renamed to `N.log.<YYYYmmdd-HHMMSS>`
//! and the oldest rotated files are removed so at most
//! `containerLogMaxFiles` files exist. (The kubelet also gzips older
//! rotated files; picolet does not, to keep compression off the loop.)

use super::shim::open_fifo_reader;
use anyhow::{Context, Result};
use async_io::{Async, Timer};
use futures_lite::future;
use rustix::fd::{AsFd, OwnedFd};
use smol::channel;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPolicy {
    /// Rotate before the file passes this size (0: never).
    pub max_size: u64,
    /// Files kept, the live one included (< 2: never rotate).
    pub max_files: u32,
    pub max_line: usize,
}

impl LogPolicy {
    pub fn from_config(cfg: &crate::config::Config) -> LogPolicy {
        LogPolicy {
            max_size: cfg.kubelet.container_log_max_size,
            max_files: cfg.kubelet.container_log_max_files,
            max_line: MAX_LINE,
        }
    }
}

/// The CRI log path of a container:
/// `<pod_logs_dir>/<ns>_<name>_<uid>/<container>/<restartCount>.log`.
pub fn log_path(
    pod_logs_dir: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart_count: u32,
) -> PathBuf {
    pod_logs_dir
        .join(format!("{namespace}_{pod}_{uid}"))
        .join(container)
        .join(format!("{restart_count}.log"))
}

/// Entries found in a peeked buffer, and how many bytes they account for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// (partial, content range in the buffer)
    pub entries: Vec<(bool, Range<usize>)>,
    /// Bytes to consume from the stream (entries plus their terminators).
    pub consumed: usize,
}

/// Splits `buf` (the unconsumed head of a stream) into CRI entries.
/// Complete lines always; an unterminated tail only when it exceeds
/// `max_line` (as `P` pieces of `max_line`), when it reaches `flush_at`
/// (the pipe is about to fill: the writer would block), or at `eof`
/// (the rest as `P`).
pub fn split_lines(buf: &[u8], max_line: usize, flush_at: usize, eof: bool) -> Split {
    let max_line = max_line.max(1);
    let mut entries = Vec::new();
    let mut pos = 0;
    let pieces = |entries: &mut Vec<(bool, Range<usize>)>,
                  mut start: usize,
                  end: usize,
                  last_partial: bool| {
        while end - start > max_line {
            entries.push((true, start..start + max_line));
            start += max_line;
        }
        entries.push((last_partial, start..end));
    };
    while let Some(i) = buf[pos..].iter().position(|&b| b == b'\n') {
        let nl = pos + i;
        let end = if nl > pos && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        pieces(&mut entries, pos, end, false);
        pos = nl + 1;
    }
    let rest = buf.len() - pos;
    if rest > 0 {
        if eof || rest >= flush_at {
            pieces(&mut entries, pos, buf.len(), true);
            pos = buf.len();
        } else {
            while buf.len() - pos > max_line {
                entries.push((true, pos..pos + max_line));
                pos += max_line;
            }
        }
    }
    Split {
        entries,
        consumed: pos,
    }
}

/// RFC 3339 with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano), UTC.
pub fn rfc3339_nano(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let base = jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00".into());
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Appends the CRI lines for `split` of `buf` to `out`.
pub fn format_entries(out: &mut Vec<u8>, ts: &str, stream: Stream, buf: &[u8], split: &Split) {
    for (partial, r) in &split.entries {
        out.extend_from_slice(ts.as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.as_str().as_bytes());
        out.extend_from_slice(if *partial { b" P " } else { b" F " });
        out.extend_from_slice(&buf[r.clone()]);
        out.push(b'\n');
    }
}

/// Which rotated files to delete before rotating once more, so that the
/// live file, the file about to be rotated and the survivors make at most
/// `max_files`. `rotated`: names (any order) of `<log>.*` files.
pub fn rotation_deletes(rotated: &[String], max_files: u32) -> Vec<String> {
    let mut names: Vec<&String> = rotated.iter().collect();
    names.sort();
    let keep = (max_files as usize).saturating_sub(2);
    let excess = names.len().saturating_sub(keep);
    names[..excess].iter().map(|s| s.to_string()).collect()
}

/// The live log file (shared by a container's two streams).
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    policy: LogPolicy,
}

impl LogFile {
    fn open(path: &Path, policy: LogPolicy) -> Result<LogFile> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .with_context(|| format!("open log {}", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            policy,
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let p = self.policy;
        if p.max_size > 0
            && p.max_files >= 2
            && self.size > 0
            && self.size + data.len() as u64 > p.max_size
        {
            if let Err(e) = self.rotate() {
                log::warn!("rotate {}: {e:#}", self.path.display());
            }
        }
        self.file
            .write_all(data)
            .with_context(|| format!("write {}", self.path.display()))?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let dir = self.path.parent().context("log path without directory")?;
        let base = self
            .path
            .file_name()
            .context("log path without file name")?
            .to_string_lossy()
            .into_owned();
        let prefix = format!("{base}.");
        let mut rotated = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                rotated.push(name);
            }
        }
        for name in rotation_deletes(&rotated, self.policy.max_files) {
            let p = dir.join(&name);
            std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
        }
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let mut target = dir.join(format!("{base}.{stamp}"));
        let mut n = 1;
        while target.exists() {
            target = dir.join(format!("{base}.{stamp}-{n}"));
            n += 1;
        }
        std::fs::rename(&self.path, &target)
            .with_context(|| format!("rename {} to {}", self.path.display(), target.display()))?;
        *self = LogFile::open(&self.path, self.policy)?;
        Ok(())
    }
}

/// Output a container writes, as `kubectl attach` sessions receive it:
/// every byte the copier peeks is offered to each subscriber as soon as it
/// is seen (partial lines too: a shell prompt has no newline). A
/// subscriber that falls more than [`ATTACH_QUEUE`] chunks behind is
/// dropped (its session ends) so it never slows the container or the log.
#[derive(Default)]
pub struct AttachHub {
    subs: RefCell<Vec<channel::Sender<Chunk>>>,
    open: std::cell::Cell<usize>,
    closed: std::cell::Cell<bool>,
}

/// A piece of output and the stream it came on.
pub type Chunk = (Stream, Vec<u8>);

/// Chunks (each at most a pipe's worth) an attach session may lag behind.
pub const ATTACH_QUEUE: usize = 32;

impl AttachHub {
    /// A new subscriber; `None` when the output already ended.
    pub fn subscribe(&self) -> Option<channel::Receiver<Chunk>> {
        if self.closed.get() {
            return None;
        }
        let (tx, rx) = channel::bounded(ATTACH_QUEUE);
        self.subs.borrow_mut().push(tx);
        Some(rx)
    }

    fn broadcast(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.subs
            .borrow_mut()
            .retain(|tx| match tx.try_send((stream, data.to_vec())) {
                Ok(()) => true,
                Err(channel::TrySendError::Full(_)) => {
                    log::info!("attach: a client fell behind the container's output; dropping it");
                    false
                }
                Err(channel::TrySendError::Closed(_)) => false,
            });
    }

    fn stream_ended(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        if self.open.get() == 0 {
            self.closed.set(true);
            self.subs.borrow_mut().clear();
        }
    }
}

/// A container's log FIFOs opened for reading and its log file; not yet
/// copying. See [`ContainerLog::open`].
pub struct ContainerLog {
    streams: Vec<(Stream, Async<OwnedFd>)>,
    file: Rc<RefCell<LogFile>>,
    max_line: usize,
    hub: Rc<AttachHub>,
}

impl ContainerLog {
    /// Creates the FIFOs if missing and opens them `O_RDONLY|O_NONBLOCK`,
    /// and opens (appends to) the log file. Call **before** `Create` (the
    /// shim's Create blocks until the FIFOs have a reader), and again after
    /// a picolet restart to reattach. `None` for a stream not captured.
    pub fn open(
        stdout: Option<&Path>,
        stderr: Option<&Path>,
        log_path: &Path,
        policy: LogPolicy,
    ) -> Result<ContainerLog> {
        let mut streams = Vec::new();
        for (s, p) in [(Stream::Stdout, stdout), (Stream::Stderr, stderr)] {
            if let Some(p) = p {
                streams.push((s, fifo_reader(p)?));
            }
        }
        let hub = Rc::new(AttachHub::default());
        hub.open.set(streams.len());
        Ok(ContainerLog {
            streams,
            file: Rc::new(RefCell::new(LogFile::open(log_path, policy)?)),
            max_line: policy.max_line,
            hub,
        })
    }

    /// Starts copying. Call once `Create` returned (the shim then holds the
    /// writers; before that a FIFO reads as EOF), or at once when
    /// reattaching to an existing task.
    pub fn start(self) -> LogCopy {
        let (finish_tx, finish_rx) = channel::bounded::<()>(1);
        let hub = self.hub.clone();
        let tasks = self
            .streams
            .into_iter()
            .map(|(stream, fifo)| {
                let file = self.file.clone();
                let finish = finish_rx.clone();
                let max_line = self.max_line;
                let hub = hub.clone();
                crate::rt::spawn(async move {
                    let r = copy_stream(fifo, stream, &file, max_line, finish, &hub).await;
                    hub.stream_ended();
                    if let Err(e) = r {
                        log::warn!(
                            "container log {} ({}): {e:#}",
                            file.borrow().path.display(),
                            stream.as_str()
                        );
                    }
                })
            })
            .collect();
        LogCopy {
            tasks,
            finish: finish_tx,
            hub,
        }
    }
}

/// Copying in progress. Dropping it stops copying without losing output
/// (what was not written stays in the FIFO for the next reader).
pub struct LogCopy {
    tasks: Vec<smol::Task<()>>,
    finish: channel::Sender<()>,
    hub: Rc<AttachHub>,
}

impl LogCopy {
    /// Where attach sessions subscribe to the output.
    pub fn hub(&self) -> Rc<AttachHub> {
        self.hub.clone()
    }

    /// Resolves when every stream reached EOF: the shim closed its writers
    /// (the process exited and its output was copied).
    pub async fn wait(self) {
        for t in self.tasks {
            t.await;
        }
    }

    /// For a task that is deleted (its writers are surely closed): copy
    /// what is left, an unterminated last line as `P`, and stop. Needed
    /// when picolet reattached after the writers had closed: then the FIFO
    /// never reports the hang-up.
    pub async fn finish(self) {
        self.finish.close();
        for t in self.tasks {
            t.await;
        }
    }
}

/// Whether the FIFO's writers have all gone (after one had connected).
fn hung_up(fd: impl AsFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).is_ok() && fds[0].revents().contains(PollFlags::HUP)
}

/// Reads exactly `buf.len()` bytes that are known to be in the pipe.
fn read_available(fd: impl AsFd, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(&fd, &mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

enum Wake {
    Ready,
    Finish,
}

async fn copy_stream(
    fifo: Async<OwnedFd>,
    stream: Stream,
    file: &RefCell<LogFile>,
    max_line: usize,
    finish: channel::Receiver<()>,
    hub: &AttachHub,
) -> Result<()> {
    use rustix::pipe::{
        fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, tee, PipeFlags, SpliceFlags,
    };
    let (peek_r, peek_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).context("pipe")?;
    let cap = fcntl_getpipe_size(fifo.get_ref())
        .unwrap_or(64 << 10)
        .max(4096);
    // The private pipe must take a whole FIFO's worth in one tee.
    let cap = fcntl_setpipe_size(&peek_w, cap)
        .unwrap_or(64 << 10)
        .min(cap);
    // Flush an unterminated tail before the FIFO fills and blocks the writer.
    let flush_at = (max_line + 1).min(cap / 2).max(1);
    // Sized on demand and dropped when nothing is held: an idle container
    // keeps no buffer (a pipe's worth per stream adds up over many pods).
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut held = 0usize;
    let mut backoff = Duration::from_millis(10);
    let mut finishing = false;
    loop {
        if !finishing {
            let wake = if held == 0 {
                future::or(
                    async { fifo.readable().await.map(|_| Wake::Ready) },
                    async {
                        let _ = finish.recv().await;
                        Ok(Wake::Finish)
                    },
                )
                .await?
            } else {
                // The tail is still there, so the FIFO reads as ready: poll.
                future::or(
                    async {
                        Timer::after(backoff).await;
                        Wake::Ready
                    },
                    async {
                        let _ = finish.recv().await;
                        Wake::Finish
                    },
                )
                .await
            };
            finishing = matches!(wake, Wake::Finish);
        }
        let n = match tee(fifo.get_ref(), &peek_w, cap, SpliceFlags::NONBLOCK) {
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN) if finishing => return Ok(()),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).context("tee"),
        };
        if n == 0 {
            // Empty and no writer: EOF.
            return Ok(());
        }
        buf.resize(n, 0);
        read_available(&peek_r, &mut buf[..n]).context("read peeked data")?;
        // The first `held` bytes were offered at an earlier peek.
        hub.broadcast(stream, &buf[held.min(n)..n]);
        let stalled = n == held;
        let eof = finishing || (stalled && hung_up(fifo.get_ref()));
        let split = split_lines(&buf[..n], max_line, flush_at, eof);
        if !split.entries.is_empty() {
            out.clear();
            format_entries(
                &mut out,
                &rfc3339_nano(now_nanos()),
                stream,
                &buf[..n],
                &split,
            );
            // Write first, consume second: a crash in between duplicates, never loses.
            if let Err(e) = file.borrow_mut().write(&out) {
                // Like containerd: keep draining so the container does not block.
                log::warn!("{e:#}");
            }
        }
        let left = n - split.consumed;
        if split.consumed > 0 {
            // The peeked copy is written out: read the same bytes over it.
            read_available(fifo.get_ref(), &mut buf[..split.consumed]).context("consume FIFO")?;
        }
        if left == 0 {
            buf = Vec::new();
            out = Vec::new();
        }
        backoff = if left > 0 && left == held {
            (backoff * 2).min(Duration::from_millis(250))
        } else {
            Duration::from_millis(10)
        };
        held = left;
    }
}

fn fifo_reader(path: &Path) -> Result<Async<OwnedFd>> {
    Async::new(open_fifo_reader(path)?).with_context(|| format!("register FIFO {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(buf: &[u8], s: &Split) -> Vec<(bool, String)> {
        s.entries
            .iter()
            .map(|(p, r)| (*p, String::from_utf8_lossy(&buf[r.clone()]).into_owned()))
            .collect()
    }

    #[test]
    fn complete_lines_only_until_eof() {
        let b = b"one\ntwo\r\nthr";
        let s = split_lines(b, 16, 100, false);
        assert_eq!(
            texts(b, &s),
            vec![(false, "one".into()), (false, "two".into())]
        );
        assert_eq!(s.consumed, 9);
        let s = split_lines(b, 16, 100, true);
        assert_eq!(texts(b, &s).last().unwrap(), &(true, "thr".to_string()));
        assert_eq!(s.consumed, b.len());
    }

    #[test]
    fn long_lines_split_like_containerd() {
        // Exactly max_line: one F entry; longer: P pieces then F.
        let b = b"abcd\nabcdefghij\n";
        let s = split_lines(b, 4, 100, false);
        assert_eq!(
            texts(b, &s),
            vec![
                (false, "abcd".into()),
                (true, "abcd".into()),
                (true, "efgh".into()),
                (false, "ij".into())
            ]
        );
        // An unterminated long tail: P pieces while more than max_line remain.
        let b = b"abcdefghij";
        let s = split_lines(b, 4, 100, false);
        assert_eq!(
            texts(b, &s),
            vec![(true, "abcd".into()), (true, "efgh".into())]
        );
        assert_eq!(s.consumed, 8);
        // Empty lines are entries too.
        let s = split_lines(b"\n", 4, 100, false);
        assert_eq!(texts(b"\n", &s), vec![(false, String::new())]);
    }

    #[test]
    fn a_nearly_full_pipe_flushes_the_tail() {
        let b = b"abc";
        assert_eq!(split_lines(b, 16, 3, false).consumed, 3);
        assert_eq!(split_lines(b, 16, 4, false).consumed, 0);
    }

    #[test]
    fn timestamps_are_rfc3339_nano() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_500_000_000_120_000_000),
            "2017-07-14T02:40:00.12Z"
        );
        assert_eq!(
            rfc3339_nano(1_500_000_000_000_000_001),
            "2017-07-14T02:40:00.000000001Z"
        );
    }

    #[test]
    fn entries_format() {
        let b = b"hi\nlong";
        let s = split_lines(b, 16, 100, true);
        let mut out = Vec::new();
        format_entries(&mut out, "T", Stream::Stderr, b, &s);
        assert_eq!(out, b"T stderr F hi\nT stderr P long\n");
    }

    #[test]
    fn rotation_keeps_max_files() {
        let names: Vec<String> = [
            "0.log.20240102-000000",
            "0.log.20240101-000000",
            "0.log.20240103-000000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // 3 files: live + the one rotating now + 1 old one.
        assert_eq!(
            rotation_deletes(&names, 3),
            vec!["0.log.20240101-000000", "0.log.20240102-000000"]
        );
        assert_eq!(rotation_deletes(&names, 5), Vec::<String>::new());
        assert_eq!(rotation_deletes(&names, 2).len(), 3);
    }

    #[test]
    fn log_paths() {
        assert_eq!(
            log_path(Path::new("/var/log/pods"), "ns", "p", "u1", "c", 2),
            Path::new("/var/log/pods/ns_p_u1/c/2.log")
        );
    }

    #[test]
    fn fifo_copy_survives_a_dropped_reader_and_keeps_partial_lines() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("picolet-logfifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("stdout");
        let log = dir.join("0.log");
        let policy = LogPolicy {
            max_size: 0,
            max_files: 0,
            max_line: MAX_LINE,
        };
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        crate::rt::block_on(async {
            let cl = ContainerLog::open(Some(&fifo), None, &log, policy).unwrap();
            let mut w = OpenOptions::new().write(true).open(&fifo).unwrap();
            // Like the shim, hold a read end (never read) so the pipe lives on.
            let _keep = fifo_reader(&fifo).unwrap();
            let copy = cl.start();
            w.write_all(b"a\nb").unwrap();
            Timer::after(Duration::from_millis(100)).await;
            assert!(read_log().ends_with(" stdout F a\n"), "{}", read_log());
            // Reader gone: "b" must still be in the FIFO, and so is "c\n".
            drop(copy);
            Timer::after(Duration::from_millis(20)).await;
            w.write_all(b"c\n").unwrap();
            let copy = ContainerLog::open(Some(&fifo), None, &log, policy)
                .unwrap()
                .start();
            Timer::after(Duration::from_millis(100)).await;
            w.write_all(b"tail").unwrap();
            drop(w);
            copy.wait().await;
        });
        let lines: Vec<String> = read_log()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect();
        assert_eq!(lines, vec!["stdout F a", "stdout F bc", "stdout P tail"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn finish_flushes_a_tail_whose_writer_closed_before_reattach() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("picolet-logfin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("stdout");
        let log = dir.join("0.log");
        let policy = LogPolicy {
            max_size: 0,
            max_files: 0,
            max_line: MAX_LINE,
        };
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        crate::rt::block_on(async {
            super::super::shim::mkfifo(&fifo).unwrap();
            let _keep = fifo_reader(&fifo).unwrap(); // the shim's read end
            let mut w = OpenOptions::new().write(true).open(&fifo).unwrap();
            w.write_all(b"x\ntail").unwrap();
            drop(w); // the process exited while picolet was down
            let copy = ContainerLog::open(Some(&fifo), None, &log, policy)
                .unwrap()
                .start();
            Timer::after(Duration::from_millis(100)).await;
            assert!(read_log().ends_with(" stdout F x\n"), "{}", read_log());
            copy.finish().await;
        });
        assert!(read_log().ends_with(" stdout P tail\n"), "{}", read_log());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("picolet-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c/0.log");
        let policy = LogPolicy {
            max_size: 10,
            max_files: 3,
            max_line: 16,
        };
        let mut f = LogFile::open(&path, policy).unwrap();
        for i in 0..5 {
            f.write(format!("line{i}\n").as_bytes()).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line4\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
