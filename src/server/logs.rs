//! `/containerLogs/{ns}/{pod}/{container}`: the CRI log file of a
//! container read as upstream's `ReadLogs` does: `tailLines` counted from
//! the end of the live file, `sinceSeconds`/`sinceTime`, `timestamps`,
//! `limitBytes`, `previous`, and `follow`, which keeps reading while the
//! container runs and moves to the new file when the log rotates.
//!
//! Memory is bounded whatever the file holds: reads go by 64 KiB, an
//! over-long line is cut, and output waits on the socket (a client that
//! stops reading stops the reader).

use super::http1::{self, Request};
use crate::api::core::{ContainerStatus, Pod};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PodLogOptions` as the kubelet takes them from the query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Lines from the end; `None`: all.
    pub tail_lines: Option<u64>,
    /// Output stops after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Only entries at or after this Unix time (ns).
    pub since_nanos: Option<i64>,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" | "t" | "T" => Some(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" => Some(false),
        _ => None,
    }
}

/// The query's options, or the reply upstream gives (400 undecodable,
/// 422 invalid). `now_nanos` resolves `sinceSeconds`.
pub fn parse_options(req: &Request, now_nanos: i64) -> Result<LogOptions, (u16, &'static str)> {
    const DECODE: (u16, &str) = (400, r#"{"message": "Unable to decode query."}"#);
    const INVALID: (u16, &str) = (422, r#"{"message": "Invalid request."}"#);
    let mut o = LogOptions::default();
    let (mut since_seconds, mut since_time) = (None, None);
    let mut tail: Option<i64> = None;
    let mut limit: Option<i64> = None;
    for (k, v) in req.query_pairs() {
        match k.as_str() {
            "follow" => o.follow = parse_bool(&v).ok_or(DECODE)?,
            "previous" => o.previous = parse_bool(&v).ok_or(DECODE)?,
            "timestamps" => o.timestamps = parse_bool(&v).ok_or(DECODE)?,
            // the legacy "tail" wins, "all" is no tail
            "tail" => {
                tail = if v == "all" {
                    None
                } else {
                    Some(v.parse().map_err(|_| DECODE)?)
                }
            }
            "tailLines" if req.param("tail").is_none() => {
                tail = Some(v.parse().map_err(|_| DECODE)?)
            }
            "limitBytes" => limit = Some(v.parse().map_err(|_| DECODE)?),
            "sinceSeconds" => since_seconds = Some(v.parse::<i64>().map_err(|_| DECODE)?),
            "sinceTime" => {
                since_time = Some(v.parse::<jiff::Timestamp>().map_err(|_| DECODE)?);
            }
            _ => {}
        }
    }
    if tail.is_some_and(|t| t < 0) || limit.is_some_and(|l| l < 1) {
        return Err(INVALID);
    }
    o.tail_lines = tail.map(|t| t as u64);
    o.limit_bytes = limit.map(|l| l as u64);
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => return Err(INVALID),
        (Some(s), None) if s < 1 => return Err(INVALID),
        (Some(s), None) => {
            o.since_nanos = Some(now_nanos.saturating_sub(s.saturating_mul(1_000_000_000)))
        }
        (None, Some(t)) => o.since_nanos = Some(t.as_nanosecond() as i64),
        (None, None) => {}
    }
    Ok(o)
}

/// One CRI log line: `<RFC3339Nano> <stream> <P|F> <content>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub timestamp: &'a [u8],
    pub stream: &'a [u8],
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses a line (without its `\n`); `None` when it is not a CRI line.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut it = line.splitn(4, |b| *b == b' ');
    let timestamp = it.next()?;
    let stream = it.next()?;
    if stream != b"stdout" && stream != b"stderr" {
        return None;
    }
    let tag = it.next()?;
    let content = it.next().unwrap_or(b"");
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    Some(Entry {
        timestamp,
        stream,
        partial,
        content,
    })
}

fn entry_nanos(ts: &[u8]) -> Option<i64> {
    let t: jiff::Timestamp = std::str::from_utf8(ts).ok()?.parse().ok()?;
    Some(t.as_nanosecond() as i64)
}

/// Turns CRI lines into what the user sees, applying `since`,
/// `timestamps` and `limitBytes`.
#[derive(Debug)]
pub struct Formatter {
    timestamps: bool,
    since: Option<i64>,
    left: Option<u64>,
    /// Log records still to read with `tailLines` and no `follow`: the
    /// tail's records and no more, though the container writes on
    /// (upstream's `limitedNum`).
    records_left: Option<u64>,
}

impl Formatter {
    pub fn new(o: &LogOptions) -> Formatter {
        Formatter {
            timestamps: o.timestamps,
            since: o.since_nanos,
            left: o.limit_bytes,
            records_left: o.tail_lines.filter(|_| !o.follow),
        }
    }

    /// Appends the output of one line to `out`; `false` once the byte
    /// or the record limit is reached (stop reading).
    pub fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        if self.left == Some(0) || self.records_left == Some(0) {
            return false;
        }
        let Some(e) = parse_line(line) else {
            log::debug!("container log: skipping a line that is not in the CRI format");
            return true;
        };
        if let Some(n) = &mut self.records_left {
            *n -= 1;
        }
        let more = self.records_left != Some(0);
        if let Some(since) = self.since {
            if entry_nanos(e.timestamp).is_some_and(|t| t < since) {
                return more;
            }
        }
        let start = out.len();
        if self.timestamps {
            out.extend_from_slice(e.timestamp);
            out.push(b' ');
        }
        out.extend_from_slice(e.content);
        if !e.partial {
            out.push(b'\n');
        }
        if let Some(left) = &mut self.left {
            let n = (out.len() - start) as u64;
            if n >= *left {
                out.truncate(start + *left as usize);
                *left = 0;
                return false;
            }
            *left -= n;
        }
        more
    }
}

/// The byte offset where the last `n` lines of `f` start (upstream
/// `FindTailLineStartIndex`: a final line without `\n` counts as one).
pub fn tail_offset<R: Read + Seek>(f: &mut R, n: u64) -> std::io::Result<u64> {
    let size = f.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(size);
    }
    let mut pos = size;
    let mut found = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    // A trailing newline ends the last line; it does not start a new one.
    let mut skip_last = true;
    while pos > 0 {
        let len = (pos.min(buf.len() as u64)) as usize;
        pos -= len as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..len])?;
        for i in (0..len).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == size - 1 {
                    continue;
                }
                found += 1;
                if found == n {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
        skip_last = false;
    }
    Ok(0)
}

/// Longest line kept whole; longer ones are cut (picolet writes at most
/// 16 KiB of content per line, so only a foreign file gets here).
const MAX_LINE: usize = 256 << 10;
const READ: usize = 64 << 10;

/// Splits complete lines out of `pending` (consumed), feeding the
/// formatter; `false` when it is done.
fn drain_lines(pending: &mut Vec<u8>, f: &mut Formatter, out: &mut Vec<u8>, eof: bool) -> bool {
    let mut start = 0;
    let mut go = true;
    while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
        go = f.line(&pending[start..start + i], out);
        start += i + 1;
        if !go {
            break;
        }
    }
    if go && (eof || pending.len() - start > MAX_LINE) && start < pending.len() {
        go = f.line(&pending[start..], out);
        start = pending.len();
    }
    pending.drain(..start);
    go
}

/// Which container instance's log, from the pod status (upstream
/// `validateContainerLogStatus`): the runtime id, or the 400 message.
pub fn pick_container(pod: &Pod, container: &str, previous: bool) -> Result<String, String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let st = pod.status.as_ref();
    let all = st.into_iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten())
    });
    let cs: Option<&ContainerStatus> = all.into_iter().find(|c| c.name == container);
    let Some(cs) = cs else {
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: ContainerCreating"
        ));
    };
    let strip = |id: &str| id.split_once("://").map_or(id, |(_, b)| b).to_string();
    let last = cs.last_state.as_ref().and_then(|l| l.terminated.as_ref());
    let state = cs.state.as_ref();
    let id_of = |id: &Option<String>| id.as_deref().filter(|s| !s.is_empty()).map(strip);
    if previous {
        return last.and_then(|t| id_of(&t.container_id)).ok_or_else(|| {
            format!("previous terminated container {container:?} in pod {pod_name:?} not found")
        });
    }
    if let Some(id) = state
        .and_then(|s| s.running.as_ref())
        .and(cs.container_id.as_ref())
        .filter(|s| !s.is_empty())
    {
        return Ok(strip(id));
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        return id_of(&t.container_id)
            .or_else(|| last.and_then(|l| id_of(&l.container_id)))
            .ok_or_else(|| format!("container {container:?} in pod {pod_name:?} is terminated"));
    }
    if let Some(l) = last {
        return id_of(&l.container_id)
            .ok_or_else(|| format!("container {container:?} in pod {pod_name:?} is terminated"));
    }
    let reason = state
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
        .unwrap_or_else(|| "ContainerCreating".into());
    Err(match reason.as_str() {
        "ErrImagePull" => format!("container {container:?} in pod {pod_name:?} is waiting to start: image can't be pulled"),
        "ImagePullBackOff" => format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image"
        ),
        r => format!("container {container:?} in pod {pod_name:?} is waiting to start: {r}"),
    })
}

/// Whether the container still runs (follow ends when it does not).
pub type RunningFn<'a> =
    &'a dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + 'a>>;

/// Where a streamed log goes: an HTTP/1.1 chunked body ([`Chunked`]) or
/// an HTTP/2 stream (`super::h2`). Each write waits for the client (the
/// back-pressure that stops the reader).
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// An error reply instead of the log.
    async fn reply(&mut self, r: http1::Reply) -> std::io::Result<()>;
    /// The 200 head (`text/plain`).
    async fn start(&mut self) -> std::io::Result<()>;
    /// Body bytes (nothing for an empty slice).
    async fn data(&mut self, b: &[u8]) -> std::io::Result<()>;
    /// The end of the body.
    async fn finish(&mut self) -> std::io::Result<()>;
    /// Waits up to `d`; true when the client went away meanwhile.
    async fn gone_within(&mut self, d: Duration) -> bool;
}

/// An HTTP/1.1 chunked response on a connection that closes after it.
pub struct Chunked<'a, S> {
    pub io: &'a mut S,
    pub io_timeout: Duration,
}

impl<S> Sink for Chunked<'_, S>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    async fn reply(&mut self, r: http1::Reply) -> std::io::Result<()> {
        http1::write_all(self.io, &http1::encode(&r, false, false), self.io_timeout).await
    }
    async fn start(&mut self) -> std::io::Result<()> {
        let head = http1::chunked_head(200, "text/plain");
        http1::write_all(self.io, &head, self.io_timeout).await
    }
    async fn data(&mut self, b: &[u8]) -> std::io::Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let mut chunk = Vec::with_capacity(b.len() + 12);
        http1::push_chunk(&mut chunk, b);
        http1::write_all(self.io, &chunk, self.io_timeout).await
    }
    async fn finish(&mut self) -> std::io::Result<()> {
        http1::write_all(self.io, http1::LAST_CHUNK, self.io_timeout).await
    }
    async fn gone_within(&mut self, d: Duration) -> bool {
        use futures_lite::AsyncReadExt;
        let mut b = [0u8; 1];
        futures_lite::future::or(
            async { matches!(self.io.read(&mut b).await, Ok(0) | Err(_)) },
            async {
                async_io::Timer::after(d).await;
                false
            },
        )
        .await
    }
}

/// Streams the log at `path` to `out` as a 200 response.
pub async fn stream<K: Sink>(
    out: &mut K,
    path: PathBuf,
    opts: &LogOptions,
    running: RunningFn<'_>,
) -> std::io::Result<()> {
    let p = path.clone();
    let tail = opts.tail_lines;
    let opened = crate::rt::unblock(move || -> std::io::Result<(File, u64)> {
        let mut f = File::open(&p)?;
        let start = match tail {
            Some(n) => tail_offset(&mut f, n)?,
            None => 0,
        };
        f.seek(SeekFrom::Start(start))?;
        Ok((f, start))
    })
    .await;
    let (mut file, _) = match opened {
        Ok(x) => x,
        Err(e) => {
            let r = http1::Reply::text(
                400,
                format!(
                    "failed to open log file {:?}: {e}",
                    path.display().to_string()
                ),
            );
            return out.reply(r).await;
        }
    };
    out.start().await?;
    let mut fmt = Formatter::new(opts);
    let mut pending: Vec<u8> = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    let mut last_check = std::time::Instant::now();
    let mut finishing = false;
    loop {
        let (f, buf, n) = read_some(file, pending).await;
        file = f;
        pending = buf;
        let n = n?;
        if n > 0 {
            text.clear();
            let go = drain_lines(&mut pending, &mut fmt, &mut text, false);
            out.data(&text).await?;
            if !go {
                break;
            }
            continue;
        }
        // At the end of the file.
        if !opts.follow || finishing {
            text.clear();
            drain_lines(&mut pending, &mut fmt, &mut text, true);
            out.data(&text).await?;
            break;
        }
        if rotated(&path, &file) {
            // The old file is read to its end; go on with the new one.
            match File::open(&path) {
                Ok(f) => {
                    text.clear();
                    drain_lines(&mut pending, &mut fmt, &mut text, true);
                    out.data(&text).await?;
                    file = f;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = std::time::Instant::now();
            if !running().await {
                // One more pass for what was written before the exit.
                finishing = true;
                continue;
            }
        }
        // Wait a little, noticing a client that went away meanwhile.
        if out.gone_within(Duration::from_millis(100)).await {
            return Ok(());
        }
    }
    out.finish().await
}

/// Reads up to 64 KiB more onto `buf` on the blocking pool.
async fn read_some(mut f: File, mut buf: Vec<u8>) -> (File, Vec<u8>, std::io::Result<usize>) {
    crate::rt::unblock(move || {
        let old = buf.len();
        buf.resize(old + READ, 0);
        let r = f.read(&mut buf[old..]);
        buf.truncate(old + *r.as_ref().unwrap_or(&0));
        (f, buf, r)
    })
    .await
}

/// The path now names another file than the one open.
fn rotated(path: &Path, f: &File) -> bool {
    match (std::fs::metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => a.ino() != b.ino() || a.dev() != b.dev(),
        (Err(_), _) => false,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> Request {
        Request {
            query: q.into(),
            ..Default::default()
        }
    }

    #[test]
    fn options_decode_and_validate_as_upstream() {
        let now = 1_000 * 1_000_000_000;
        let o = parse_options(
            &req("follow=true&tailLines=5&timestamps=1&limitBytes=10"),
            now,
        )
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                timestamps: true,
                tail_lines: Some(5),
                limit_bytes: Some(10),
                ..Default::default()
            }
        );
        assert_eq!(
            parse_options(&req("tail=all&tailLines=3"), now)
                .unwrap()
                .tail_lines,
            None
        );
        assert_eq!(
            parse_options(&req("tail=2&tailLines=3"), now)
                .unwrap()
                .tail_lines,
            Some(2)
        );
        assert_eq!(
            parse_options(&req("sinceSeconds=10"), now)
                .unwrap()
                .since_nanos,
            Some(990 * 1_000_000_000)
        );
        assert_eq!(
            parse_options(&req("sinceTime=1970-01-01T00:00:05Z"), now)
                .unwrap()
                .since_nanos,
            Some(5_000_000_000)
        );
        assert_eq!(parse_options(&req("follow=maybe"), now).unwrap_err().0, 400);
        assert_eq!(parse_options(&req("tailLines=x"), now).unwrap_err().0, 400);
        assert_eq!(parse_options(&req("tailLines=-1"), now).unwrap_err().0, 422);
        assert_eq!(parse_options(&req("limitBytes=0"), now).unwrap_err().0, 422);
        assert_eq!(
            parse_options(&req("sinceSeconds=0"), now).unwrap_err().0,
            422
        );
        assert_eq!(
            parse_options(&req("sinceSeconds=1&sinceTime=1970-01-01T00:00:05Z"), now)
                .unwrap_err()
                .0,
            422
        );
        // a huge tail is just "everything"
        assert_eq!(
            parse_options(&req("tailLines=99999999999999"), now)
                .unwrap()
                .tail_lines,
            Some(99999999999999)
        );
    }

    #[test]
    fn lines_format_with_partials_timestamps_since_and_limit() {
        let mut out = Vec::new();
        let mut f = Formatter::new(&LogOptions::default());
        assert!(f.line(b"2024-01-01T00:00:00.5Z stdout P hel", &mut out));
        assert!(f.line(b"2024-01-01T00:00:00.6Z stdout F lo", &mut out));
        assert!(f.line(b"garbage", &mut out));
        assert!(f.line(b"2024-01-01T00:00:01Z stderr F", &mut out));
        assert_eq!(out, b"hello\n\n");

        let mut out = Vec::new();
        let mut f = Formatter::new(&LogOptions {
            timestamps: true,
            since_nanos: Some(entry_nanos(b"2024-01-01T00:00:01Z").unwrap()),
            ..Default::default()
        });
        f.line(b"2024-01-01T00:00:00.9Z stdout F old", &mut out);
        f.line(b"2024-01-01T00:00:01Z stdout F new", &mut out);
        assert_eq!(out, b"2024-01-01T00:00:01Z new\n");

        let mut out = Vec::new();
        let mut f = Formatter::new(&LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        });
        assert!(f.line(b"T stdout F abc", &mut out));
        assert!(!f.line(b"T stdout F defgh", &mut out));
        assert!(!f.line(b"T stdout F x", &mut out));
        assert_eq!(out, b"abc\nde");

        // tailLines without follow: that many records and no more, though
        // more came after the tail was found; with follow, all of them.
        let mut out = Vec::new();
        let mut f = Formatter::new(&LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        });
        assert!(f.line(b"T stdout F one", &mut out));
        assert!(f.line(b"garbage", &mut out));
        assert!(!f.line(b"T stdout F two", &mut out));
        assert!(!f.line(b"T stdout F written-since", &mut out));
        assert_eq!(out, b"one\ntwo\n");
        let mut f = Formatter::new(&LogOptions {
            tail_lines: Some(1),
            follow: true,
            ..Default::default()
        });
        assert!(f.line(b"T stdout F a", &mut out));
        assert!(f.line(b"T stdout F b", &mut out));
    }

    #[test]
    fn tail_offsets() {
        let mut c = std::io::Cursor::new(b"a\nb\nc\n".to_vec());
        assert_eq!(tail_offset(&mut c, 1).unwrap(), 4);
        assert_eq!(tail_offset(&mut c, 2).unwrap(), 2);
        assert_eq!(tail_offset(&mut c, 3).unwrap(), 0);
        assert_eq!(tail_offset(&mut c, 1_000_000_000_000).unwrap(), 0);
        assert_eq!(tail_offset(&mut c, 0).unwrap(), 6);
        let mut c = std::io::Cursor::new(b"a\nb\nc".to_vec());
        assert_eq!(tail_offset(&mut c, 1).unwrap(), 4);
        // across read blocks
        let mut big = Vec::new();
        for i in 0..100_000 {
            big.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let len = big.len() as u64;
        let mut c = std::io::Cursor::new(big);
        let off = tail_offset(&mut c, 3).unwrap();
        assert_eq!(
            len - off,
            "line 99997\nline 99998\nline 99999\n".len() as u64
        );
    }

    #[test]
    fn draining_keeps_incomplete_lines_and_cuts_huge_ones() {
        let mut f = Formatter::new(&LogOptions::default());
        let mut out = Vec::new();
        let mut p = b"T stdout F a\nT stdout F b".to_vec();
        assert!(drain_lines(&mut p, &mut f, &mut out, false));
        assert_eq!(
            (out.as_slice(), p.as_slice()),
            (&b"a\n"[..], &b"T stdout F b"[..])
        );
        drain_lines(&mut p, &mut f, &mut out, true);
        assert_eq!(out, b"a\nb\n");
        let mut p = b"T stdout F ".to_vec();
        p.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        let mut out = Vec::new();
        drain_lines(&mut p, &mut f, &mut out, false);
        assert!(p.is_empty());
    }

    #[test]
    fn container_choice_follows_the_status() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [
                {"name": "run", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
                 "containerID": "containerd://new", "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://old"}}},
                {"name": "wait", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                {"name": "done", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "containerID": "containerd://d", "state": {"terminated": {"exitCode": 0, "containerID": "containerd://d"}}}
            ]}
        }))
        .unwrap();
        assert_eq!(pick_container(&pod, "run", false).unwrap(), "new");
        assert_eq!(pick_container(&pod, "run", true).unwrap(), "old");
        assert_eq!(pick_container(&pod, "done", false).unwrap(), "d");
        assert_eq!(
            pick_container(&pod, "done", true).unwrap_err(),
            "previous terminated container \"done\" in pod \"p\" not found"
        );
        assert_eq!(
            pick_container(&pod, "wait", false).unwrap_err(),
            "container \"wait\" in pod \"p\" is waiting to start: trying and failing to pull image"
        );
        assert!(pick_container(&pod, "nope", false).is_err());
    }
}
