//! HTTP/2 on the secure port (RFC 9113), for TLS clients that negotiate
//! ALPN `h2` (Go's net/http clients: metrics-server, Prometheus, the
//! apiserver's log requests). Framing and HPACK are `crate::http::h2`'s.
//!
//! - [`Core`] is the connection's state without I/O: frames in, frames
//!   out (`out`), requests to serve. The reader task feeds it, one writer
//!   drains `out`, and each request is a task of its own on this thread's
//!   executor ([`StreamIo`]), sharing it through `Rc<RefCell<_>>` with no
//!   borrow held across an await.
//! - Limits as HTTP/1.1: the header list (`max_head_bytes`: 431), the
//!   body (`max_body_bytes`: 413, bodies are read and dropped), the first
//!   request within `head_timeout`, an idle connection (no stream open)
//!   closed after `idle_timeout`, each write and each wait for the
//!   client's window within `io_timeout`; at most [`MAX_STREAMS`] streams.
//! - Back-pressure: DATA goes out only within the client's connection and
//!   stream windows and while the write buffer holds less than
//!   [`HIGH_WATER`]; the reader stops reading when the buffer holds four
//!   times that (a client that sends but does not read).
//! - A client's RST_STREAM cancels its request's task (a `logs -f` ends).
//! - Upgrades (exec, attach, port-forward) cannot be made over HTTP/2:
//!   they get RST_STREAM HTTP_1_1_REQUIRED (§8.6) and the client retries
//!   on HTTP/1.1 (Go's clients only ever ask for them over HTTP/1.1).

use super::http1::{self, Reply, Request};
use super::{logs, Action, Ctx, Host, PendingGuard};
use crate::http::h2::frame::*;
use crate::http::h2::hpack::{Decoder, Encoder};
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::pki_types::CertificateDer;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// SETTINGS_MAX_CONCURRENT_STREAMS (Go's server: 250; 100 is plenty for
/// scrapers and keeps a connection's tasks few).
pub const MAX_STREAMS: usize = 100;
/// DATA waits while the write buffer holds this much.
pub const HIGH_WATER: usize = 64 << 10;
/// Largest DATA frame we send (the client may allow more; smaller frames
/// share the connection more fairly).
const MAX_DATA_FRAME: usize = DEFAULT_MAX_FRAME;
/// Received window credit goes back in steps of this.
const CREDIT_STEP: i64 = 16 << 10;

/// A request to serve, or the reply it gets without being served.
pub type Opened = (u32, Result<Request, Reply>);

struct Stream {
    send_window: i64,
    recv_window: i64,
    recv_unacked: i64,
    /// END_STREAM received: the request is complete.
    req_done: bool,
    /// Body bytes so far, and the declared length.
    body: usize,
    content_length: Option<usize>,
    too_large: bool,
    waker: Option<Waker>,
    task: Option<smol::Task<()>>,
}

impl Stream {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The state of one server connection (see the module doc).
pub struct Core {
    /// Frames to write.
    pub out: Vec<u8>,
    decoder: Decoder,
    encoder: Encoder,
    streams: BTreeMap<u32, Stream>,
    /// The highest stream id the client opened, and the highest we serve.
    last_id: u32,
    last_served: u32,
    /// A header block still arriving: stream, fragments, END_STREAM.
    continuation: Option<(u32, Vec<u8>, bool)>,
    seen_settings: bool,
    peer_initial_window: u32,
    peer_max_frame: usize,
    send_window: i64,
    recv_window: i64,
    recv_unacked: i64,
    max_header_list: usize,
    max_body: usize,
    /// The client sent GOAWAY: the connection ends with its last stream.
    peer_goaway: bool,
    /// The connection is over: the writer flushes `out` and stops.
    pub done: bool,
    /// When the last stream opened or closed (the idle timeout).
    pub last_activity: Instant,
    writer: Option<Waker>,
    reader: Option<Waker>,
}

impl Core {
    /// A connection whose preface arrived; our SETTINGS are queued.
    pub fn new(max_header_list: usize, max_body: usize) -> Core {
        let mut c = Core {
            out: Vec::new(),
            decoder: Decoder::default(),
            encoder: Encoder::default(),
            streams: BTreeMap::new(),
            last_id: 0,
            last_served: 0,
            continuation: None,
            seen_settings: false,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: DEFAULT_MAX_FRAME,
            send_window: DEFAULT_WINDOW as i64,
            recv_window: DEFAULT_WINDOW as i64,
            recv_unacked: 0,
            max_header_list,
            max_body,
            peer_goaway: false,
            done: false,
            last_activity: Instant::now(),
            writer: None,
            reader: None,
        };
        let s = settings_payload(&[
            (SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
            (SETTINGS_MAX_HEADER_LIST_SIZE, max_header_list as u32),
        ]);
        c.queue(SETTINGS, 0, 0, &s);
        c
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether a request was ever opened (the idle timeout then applies,
    /// not the head timeout).
    pub fn had_request(&self) -> bool {
        self.last_id != 0
    }

    fn queue(&mut self, kind: u8, flags: u8, id: u32, payload: &[u8]) {
        if self.done {
            return;
        }
        frame(&mut self.out, kind, flags, id, payload);
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Ends the connection: GOAWAY with `code` (and `msg` as debug data),
    /// every stream's task cancelled.
    pub fn goaway(&mut self, code: u32, msg: &str) {
        let mut p = self.last_served.to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(msg.as_bytes());
        self.queue(GOAWAY, 0, 0, &p);
        self.end();
    }

    /// Ends the connection without a word (the client closed, or failed).
    pub fn end(&mut self) {
        self.done = true;
        // Dropping a task cancels it; the executor drops its future later,
        // outside this borrow.
        self.streams.clear();
        self.continuation = None;
        for w in [self.writer.take(), self.reader.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }

    /// Resets a stream: RST_STREAM with `code`, and its task cancelled
    /// unless `detach` (the task itself resets it and returns).
    fn reset(&mut self, id: u32, code: u32, detach: bool) {
        if let Some(mut s) = self.streams.remove(&id) {
            if let (true, Some(t)) = (detach, s.task.take()) {
                t.detach();
            }
            self.stream_closed();
        }
        self.queue(RST_STREAM, 0, id, &code.to_be_bytes());
    }

    fn stream_closed(&mut self) {
        self.last_activity = Instant::now();
        if self.peer_goaway && self.streams.is_empty() {
            self.goaway(NO_ERROR, "");
        }
    }

    fn wake_streams(&mut self) {
        self.streams.values_mut().for_each(Stream::wake);
    }

    /// Attaches the task serving a stream (it is cancelled with the stream).
    pub fn set_task(&mut self, id: u32, t: smol::Task<()>) {
        match self.streams.get_mut(&id) {
            Some(s) => s.task = Some(t),
            None => t.detach(),
        }
    }

    // --- the reader's side ---------------------------------------------

    /// Takes one frame; a request when one is complete enough to serve.
    pub fn on_frame(&mut self, f: Frame) -> Result<Option<Opened>, ConnError> {
        if let Some((id, _, _)) = &self.continuation {
            if f.kind != CONTINUATION || f.stream != *id {
                return Err(proto("frame interleaved with a header block"));
            }
        }
        if !self.seen_settings && f.kind != SETTINGS {
            return Err(proto("the client's first frame is not SETTINGS"));
        }
        let idle = f.stream % 2 == 0 || f.stream > self.last_id;
        match f.kind {
            DATA if f.stream == 0 || idle => Err(proto("DATA on an idle stream")),
            DATA => self.on_data(f).map(|()| None),
            HEADERS => self.on_headers(f),
            CONTINUATION => self.on_continuation(f),
            PRIORITY_FRAME if f.stream == 0 => Err(proto("PRIORITY on stream 0")),
            PRIORITY_FRAME if f.payload.len() != 5 => {
                self.reset(f.stream, FRAME_SIZE_ERROR, false);
                Ok(None)
            }
            RST_STREAM if f.payload.len() != 4 => {
                Err((FRAME_SIZE_ERROR, "RST_STREAM of wrong size".into()))
            }
            RST_STREAM if f.stream == 0 || idle => Err(proto("RST_STREAM on an idle stream")),
            RST_STREAM => {
                // The client gave up: its task is cancelled (no reply).
                if self.streams.remove(&f.stream).is_some() {
                    self.stream_closed();
                }
                Ok(None)
            }
            SETTINGS => self.on_settings(f).map(|()| None),
            PUSH_PROMISE => Err(proto("PUSH_PROMISE from a client")),
            PING if f.stream != 0 => Err(proto("PING on a stream")),
            PING if f.payload.len() != 8 => Err((FRAME_SIZE_ERROR, "PING of wrong size".into())),
            PING => {
                if f.flags & ACK == 0 {
                    self.queue(PING, ACK, 0, &f.payload);
                }
                Ok(None)
            }
            GOAWAY if f.stream != 0 => Err(proto("GOAWAY on a stream")),
            GOAWAY => {
                self.peer_goaway = true;
                if self.streams.is_empty() {
                    self.goaway(NO_ERROR, "");
                }
                Ok(None)
            }
            WINDOW_UPDATE => self.on_window_update(f, idle).map(|()| None),
            // Unknown types are ignored (§5.5).
            _ => Ok(None),
        }
    }

    fn on_data(&mut self, f: Frame) -> Result<(), ConnError> {
        let len = f.payload.len() as i64;
        if len > self.recv_window {
            return Err((FLOW_CONTROL_ERROR, "DATA beyond the window".into()));
        }
        let Some(data_len) = strip_padding_and_priority(&f).map(<[u8]>::len) else {
            return Err(proto("DATA with invalid padding"));
        };
        // Bodies are dropped as they come: credit the connection at once.
        self.recv_window -= len;
        self.recv_unacked += len;
        if self.recv_unacked >= CREDIT_STEP {
            let inc = std::mem::take(&mut self.recv_unacked);
            self.recv_window += inc;
            self.queue(WINDOW_UPDATE, 0, 0, &(inc as u32).to_be_bytes());
        }
        let id = f.stream;
        let end = f.flags & END_STREAM != 0;
        let max_body = self.max_body;
        // A stream we closed (or reset) gets nothing more.
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.req_done {
            self.reset(id, STREAM_CLOSED, false);
            return Ok(());
        }
        if len > s.recv_window {
            self.reset(id, FLOW_CONTROL_ERROR, false);
            return Ok(());
        }
        s.recv_window -= len;
        s.body = s.body.saturating_add(data_len);
        s.too_large |= s.body > max_body;
        if end {
            s.req_done = true;
            if s.content_length.is_some_and(|n| n != s.body) && !s.too_large {
                self.reset(id, PROTOCOL_ERROR, false);
                return Ok(());
            }
        } else {
            s.recv_unacked += len;
            if s.recv_unacked >= CREDIT_STEP {
                let inc = std::mem::take(&mut s.recv_unacked);
                s.recv_window += inc;
                self.queue(WINDOW_UPDATE, 0, id, &(inc as u32).to_be_bytes());
            }
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.wake();
        }
        Ok(())
    }

    fn on_headers(&mut self, f: Frame) -> Result<Option<Opened>, ConnError> {
        if f.stream == 0 || f.stream % 2 == 0 {
            return Err(proto("HEADERS on a stream a client cannot open"));
        }
        let Some(frag) = strip_padding_and_priority(&f) else {
            return Err(proto("HEADERS with invalid padding"));
        };
        let end = f.flags & END_STREAM != 0;
        if f.flags & END_HEADERS == 0 {
            self.check_block_size(frag.len())?;
            self.continuation = Some((f.stream, frag.to_vec(), end));
            return Ok(None);
        }
        self.on_header_block(f.stream, frag, end)
    }

    fn on_continuation(&mut self, f: Frame) -> Result<Option<Opened>, ConnError> {
        let Some((id, mut block, end)) = self.continuation.take() else {
            return Err(proto("CONTINUATION without HEADERS"));
        };
        self.check_block_size(block.len() + f.payload.len())?;
        block.extend_from_slice(&f.payload);
        if f.flags & END_HEADERS == 0 {
            self.continuation = Some((id, block, end));
            return Ok(None);
        }
        self.on_header_block(id, &block, end)
    }

    /// Encoded blocks are held up to 4 times the header list limit (HPACK
    /// rarely grows a field); beyond, the block cannot be decoded for a
    /// 431 and the connection ends.
    fn check_block_size(&self, n: usize) -> Result<(), ConnError> {
        if n > 4 * self.max_header_list {
            return Err((ENHANCE_YOUR_CALM, "header block too large".into()));
        }
        Ok(())
    }

    fn on_header_block(
        &mut self,
        id: u32,
        block: &[u8],
        end: bool,
    ) -> Result<Option<Opened>, ConnError> {
        // Decoded whatever becomes of it: the table must stay in step.
        let (fields, over) = self
            .decoder
            .decode_limited(block, self.max_header_list)
            .map_err(|e| (COMPRESSION_ERROR, format!("{e:#}")))?;
        if id <= self.last_id {
            // Trailers end the request; a closed stream ignores them.
            let Some(s) = self.streams.get_mut(&id) else {
                return Ok(None);
            };
            if s.req_done || !end || fields.iter().any(|(k, _)| k.starts_with(':')) {
                self.reset(id, PROTOCOL_ERROR, false);
            } else {
                s.req_done = true;
                s.wake();
            }
            return Ok(None);
        }
        self.last_id = id;
        if self.peer_goaway || self.streams.len() >= MAX_STREAMS {
            self.queue(RST_STREAM, 0, id, &REFUSED_STREAM.to_be_bytes());
            return Ok(None);
        }
        let req = if over {
            Err(Reply::text(431, "431 Request Header Fields Too Large\n"))
        } else {
            match request(fields) {
                Ok(r) => Ok(r),
                Err(msg) => {
                    log::debug!("HTTP/2 stream {id}: {msg}");
                    self.queue(RST_STREAM, 0, id, &PROTOCOL_ERROR.to_be_bytes());
                    return Ok(None);
                }
            }
        };
        let content_length = req.as_ref().ok().and_then(|r| {
            r.header("content-length")
                .is_some()
                .then_some(r.content_length)
        });
        self.streams.insert(
            id,
            Stream {
                send_window: self.peer_initial_window as i64,
                recv_window: DEFAULT_WINDOW as i64,
                recv_unacked: 0,
                req_done: end,
                body: 0,
                content_length,
                too_large: content_length.is_some_and(|n| n > self.max_body),
                waker: None,
                task: None,
            },
        );
        self.last_served = id;
        self.last_activity = Instant::now();
        Ok(Some((id, req)))
    }

    fn on_settings(&mut self, f: Frame) -> Result<(), ConnError> {
        let Some(list) = settings_of(&f)? else {
            return Ok(());
        };
        self.seen_settings = true;
        for (id, v) in list {
            match id {
                SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_max_table_size(v as usize),
                SETTINGS_ENABLE_PUSH if v > 1 => return Err(proto("SETTINGS_ENABLE_PUSH above 1")),
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    let windows = self.streams.values_mut().map(|s| &mut s.send_window);
                    set_initial_window(&mut self.peer_initial_window, v, windows)?;
                }
                SETTINGS_MAX_FRAME_SIZE => self.peer_max_frame = max_frame_size(v)?,
                _ => {}
            }
        }
        self.queue(SETTINGS, ACK, 0, &[]);
        self.wake_streams();
        Ok(())
    }

    fn on_window_update(&mut self, f: Frame, idle: bool) -> Result<(), ConnError> {
        let inc = window_increment(&f)?;
        if f.stream == 0 {
            grow_connection_window(&mut self.send_window, inc)?;
            self.wake_streams();
            return Ok(());
        }
        if idle {
            return Err(proto("WINDOW_UPDATE on an idle stream"));
        }
        let Some(s) = self.streams.get_mut(&f.stream) else {
            return Ok(());
        };
        s.send_window += inc;
        if inc == 0 {
            self.reset(f.stream, PROTOCOL_ERROR, false);
        } else if s.send_window > MAX_WINDOW as i64 {
            self.reset(f.stream, FLOW_CONTROL_ERROR, false);
        } else {
            s.wake();
        }
        Ok(())
    }

    // --- the request tasks' side ----------------------------------------

    /// Ready once the request is complete: `Some(too_large)`; `None` when
    /// the stream is gone.
    fn poll_body(&mut self, cx: &Context<'_>, id: u32) -> Poll<Option<bool>> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(None);
        };
        if s.req_done || s.too_large {
            return Poll::Ready(Some(s.too_large));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues a response head (HEADERS, then CONTINUATION as the client's
    /// frame size needs); false when the stream is gone.
    pub fn send_head(&mut self, id: u32, fields: &[(&str, &str)], end: bool) -> bool {
        if self.done || !self.streams.contains_key(&id) {
            return false;
        }
        let mut block = Vec::new();
        self.encoder.encode(fields.iter().copied(), &mut block);
        let mut chunks = block.chunks(self.peer_max_frame).peekable();
        let mut kind = HEADERS;
        while let Some(c) = chunks.next() {
            let mut flags = if kind == HEADERS && end {
                END_STREAM
            } else {
                0
            };
            if chunks.peek().is_none() {
                flags |= END_HEADERS;
            }
            self.queue(kind, flags, id, c);
            kind = CONTINUATION;
        }
        if end {
            self.finish(id);
        }
        true
    }

    /// Queues what the windows allow of `data` (END_STREAM with its last
    /// byte when `end`): the bytes taken, `None` when the stream is gone.
    pub fn poll_data(
        &mut self,
        cx: &Context<'_>,
        id: u32,
        data: &[u8],
        end: bool,
    ) -> Poll<Option<usize>> {
        let (conn_window, full, max) = (
            self.send_window,
            self.out.len() >= HIGH_WATER,
            self.peer_max_frame.min(MAX_DATA_FRAME),
        );
        let Some(s) = self.streams.get_mut(&id).filter(|_| !self.done) else {
            return Poll::Ready(None);
        };
        let n = (data.len() as i64)
            .min(conn_window)
            .min(s.send_window)
            .min(max as i64);
        if full || (n <= 0 && !data.is_empty()) {
            s.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = n.max(0) as usize;
        s.send_window -= n as i64;
        self.send_window -= n as i64;
        let last = end && n == data.len();
        self.queue(DATA, if last { END_STREAM } else { 0 }, id, &data[..n]);
        if last {
            self.finish(id);
        }
        Poll::Ready(Some(n))
    }

    /// Our END_STREAM went out: the stream closes, or, when the request is
    /// still arriving, is reset with NO_ERROR (§8.1: the client may stop).
    fn finish(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.req_done {
            if let Some(t) = self.streams.remove(&id).and_then(|mut s| s.task.take()) {
                t.detach();
            }
            self.stream_closed();
        } else {
            self.reset(id, NO_ERROR, true);
        }
    }
}

/// The request of a header block (§8.3.1): `:method`, `:scheme` and
/// `:path` once each, before the regular fields, lower-case names, none of
/// the connection-specific fields (§8.2.2).
pub fn request(fields: Vec<(String, String)>) -> Result<Request, &'static str> {
    let mut req = Request {
        keep_alive: true,
        ..Default::default()
    };
    let (mut method, mut scheme, mut path, mut authority) = (None, None, None, None);
    for (k, v) in fields {
        if let Some(p) = k.strip_prefix(':') {
            let slot = match p {
                "method" => &mut method,
                "scheme" => &mut scheme,
                "path" => &mut path,
                "authority" => &mut authority,
                _ => return Err("unknown pseudo-header"),
            };
            if slot.is_some() || !req.headers.is_empty() {
                return Err("repeated or misplaced pseudo-header");
            }
            *slot = Some(v);
            continue;
        }
        if k.is_empty() || k.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("invalid header name");
        }
        if matches!(
            k.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
        ) || (k == "te" && v != "trailers")
        {
            return Err("connection-specific header");
        }
        req.headers.push((k, v));
    }
    let (Some(method), Some(_), Some(target)) = (method, scheme, path) else {
        return Err("missing :method, :scheme or :path");
    };
    if !target.starts_with('/') {
        return Err("invalid :path");
    }
    let (p, q) = target.split_once('?').unwrap_or((&target, ""));
    (req.method, req.path, req.query) = (method, p.to_string(), q.to_string());
    if let Some(a) = authority.filter(|_| req.header("host").is_none()) {
        req.headers.push(("host".into(), a));
    }
    if let Some(v) = req.header("content-length") {
        req.content_length = v.parse().map_err(|_| "invalid content-length")?;
    }
    Ok(req)
}

/// Serves one TLS connection that negotiated `h2`.
pub(super) async fn serve<S, H>(
    io: S,
    ctx: &Rc<Ctx<H>>,
    peer: Option<Vec<CertificateDer<'static>>>,
    pending: &mut PendingGuard<H>,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    H: Host + 'static,
{
    let limits = ctx.limits;
    let (mut r, w) = futures_lite::io::split(io);
    let mut preface = [0u8; 24];
    http1::timed(limits.head_timeout, r.read_exact(&mut preface)).await?;
    if preface != PREFACE {
        anyhow::bail!("no HTTP/2 connection preface");
    }
    let core = Rc::new(RefCell::new(Core::new(
        limits.max_head_bytes,
        limits.max_body_bytes,
    )));
    let peer = Rc::new(peer);
    let reader = async {
        let res = read_loop(&core, &mut r, ctx, &peer, pending).await;
        core.borrow_mut().end();
        res
    };
    let (res, ()) = future::zip(reader, write_loop(&core, w, limits.io_timeout)).await;
    res
}

async fn read_loop<R, H>(
    core: &Rc<RefCell<Core>>,
    r: &mut R,
    ctx: &Rc<Ctx<H>>,
    peer: &Rc<Option<Vec<CertificateDer<'static>>>>,
    pending: &mut PendingGuard<H>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    H: Host + 'static,
{
    let limits = ctx.limits;
    loop {
        // A client that does not read its replies is not read either.
        let go = poll_fn(|cx| {
            let mut c = core.borrow_mut();
            if c.done || c.out.len() < 4 * HIGH_WATER {
                return Poll::Ready(!c.done);
            }
            c.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if !go {
            return Ok(());
        }
        let stop = async {
            future::or(
                idle(core, limits.head_timeout, limits.idle_timeout),
                async {
                    poll_fn(|cx| {
                        let mut c = core.borrow_mut();
                        if c.done {
                            return Poll::Ready(());
                        }
                        c.reader = Some(cx.waker().clone());
                        Poll::Pending
                    })
                    .await;
                },
            )
            .await;
            None
        };
        let f = match future::or(async { Some(read_frame(r, DEFAULT_MAX_FRAME).await) }, stop).await
        {
            None => {
                // Idle (or ended by the writer): a polite GOAWAY.
                core.borrow_mut().goaway(NO_ERROR, "idle");
                return Ok(());
            }
            Some(Ok(f)) => f,
            Some(Err(ReadError::TooLarge { .. })) => {
                core.borrow_mut()
                    .goaway(FRAME_SIZE_ERROR, "frame too large");
                anyhow::bail!("frame larger than SETTINGS_MAX_FRAME_SIZE");
            }
            Some(Err(ReadError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(());
            }
            Some(Err(ReadError::Io(e))) => return Err(e.into()),
        };
        let opened = core.borrow_mut().on_frame(f);
        match opened {
            Ok(None) => {}
            Ok(Some((id, req))) => {
                pending.done();
                let s = StreamIo {
                    core: core.clone(),
                    id,
                    timeout: limits.io_timeout,
                };
                let t = crate::rt::spawn(handle(ctx.clone(), s, req, peer.clone()));
                core.borrow_mut().set_task(id, t);
            }
            Err((code, msg)) => {
                core.borrow_mut().goaway(code, &msg);
                anyhow::bail!("HTTP/2 {}: {msg}", error_code_name(code));
            }
        }
    }
}

/// Ready when the connection has been idle (no stream open) too long:
/// `first` before the first request, `idle` after.
async fn idle(core: &Rc<RefCell<Core>>, first: Duration, idle: Duration) {
    loop {
        let (at, busy) = {
            let c = core.borrow();
            let limit = if c.had_request() { idle } else { first };
            (c.last_activity + limit, c.open_streams() > 0)
        };
        if busy {
            async_io::Timer::after(idle).await;
            continue;
        }
        if at <= Instant::now() {
            return;
        }
        async_io::Timer::at(at).await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    core: &Rc<RefCell<Core>>,
    mut w: W,
    io_timeout: Duration,
) {
    loop {
        let next = poll_fn(|cx| {
            let mut c = core.borrow_mut();
            if !c.out.is_empty() {
                let buf = std::mem::take(&mut c.out);
                // Room in the buffer: DATA and the reader may go on.
                c.wake_streams();
                if let Some(r) = c.reader.take() {
                    r.wake();
                }
                return Poll::Ready(Some(buf));
            }
            if c.done {
                return Poll::Ready(None);
            }
            c.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(buf) = next else { break };
        if let Err(e) = http1::write_all(&mut w, &buf, io_timeout).await {
            log::debug!("HTTP/2 write: {e}");
            core.borrow_mut().end();
            return;
        }
    }
    // TLS close_notify, bounded.
    let _ = http1::timed(io_timeout, w.close()).await;
}

/// A request task's handle on its stream; dropped before the response
/// ended (the task failed or was cancelled with the connection) it resets
/// the stream.
pub struct StreamIo {
    core: Rc<RefCell<Core>>,
    id: u32,
    timeout: Duration,
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        if let Ok(mut c) = self.core.try_borrow_mut() {
            if c.streams.contains_key(&self.id) {
                c.reset(self.id, CANCEL, true);
            }
        }
    }
}

impl StreamIo {
    async fn body(&self) -> Option<bool> {
        poll_fn(|cx| self.core.borrow_mut().poll_body(cx, self.id)).await
    }

    fn reset(&self, code: u32) {
        self.core.borrow_mut().reset(self.id, code, true);
    }

    fn head(
        &self,
        status: u16,
        ctype: &str,
        len: Option<usize>,
        extra: &[(&str, String)],
        end: bool,
    ) -> bool {
        let (status, len) = (status.to_string(), len.map(|n| n.to_string()));
        let date = http1::http_date(jiff::Timestamp::now());
        let extra: Vec<(String, &str)> = extra
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        let mut f: Vec<(&str, &str)> = vec![(":status", &status), ("content-type", ctype)];
        if let Some(n) = &len {
            f.push(("content-length", n));
        }
        f.push(("date", &date));
        f.extend(extra.iter().map(|(k, v)| (k.as_str(), *v)));
        self.core.borrow_mut().send_head(self.id, &f, end)
    }

    /// Sends `data` within the client's windows; each wait for window
    /// lasts at most the I/O timeout, after which the stream is reset.
    async fn data(&self, mut data: &[u8], end: bool) -> std::io::Result<()> {
        loop {
            let sent = poll_fn(|cx| self.core.borrow_mut().poll_data(cx, self.id, data, end));
            match http1::timed(self.timeout, async { Ok(sent.await) }).await {
                Ok(Some(n)) if n == data.len() => return Ok(()),
                Ok(Some(n)) => data = &data[n..],
                Ok(None) => return Err(std::io::ErrorKind::BrokenPipe.into()),
                Err(e) => {
                    self.reset(CANCEL);
                    return Err(e);
                }
            }
        }
    }

    async fn reply(&self, r: &Reply, head_only: bool) -> std::io::Result<()> {
        let end = head_only || r.body.is_empty();
        if !self.head(r.status, r.content_type, Some(r.body.len()), &r.extra, end) {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        if end {
            return Ok(());
        }
        self.data(&r.body, true).await
    }
}

impl logs::Sink for &StreamIo {
    async fn reply(&mut self, r: Reply) -> std::io::Result<()> {
        StreamIo::reply(self, &r, false).await
    }
    async fn start(&mut self) -> std::io::Result<()> {
        let extra = [("x-content-type-options", "nosniff".to_string())];
        match self.head(200, "text/plain", None, &extra, false) {
            true => Ok(()),
            false => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
    async fn data(&mut self, b: &[u8]) -> std::io::Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        StreamIo::data(self, b, false).await
    }
    async fn finish(&mut self) -> std::io::Result<()> {
        StreamIo::data(self, &[], true).await
    }
    async fn gone_within(&mut self, d: Duration) -> bool {
        // A client that resets the stream cancels this task instead.
        async_io::Timer::after(d).await;
        false
    }
}

/// One request, from its complete head to the end of its response.
async fn handle<H: Host + 'static>(
    ctx: Rc<Ctx<H>>,
    s: StreamIo,
    req: Result<Request, Reply>,
    peer: Rc<Option<Vec<CertificateDer<'static>>>>,
) {
    let req = match req {
        Ok(r) => r,
        Err(reply) => {
            let _ = s.reply(&reply, false).await;
            return;
        }
    };
    let reply = match http1::timed(ctx.limits.io_timeout, async { Ok(s.body().await) }).await {
        Ok(Some(false)) => None,
        Ok(Some(true)) => Some(Reply::text(413, "413 Request Entity Too Large\n")),
        Ok(None) => return,
        Err(_) => Some(Reply::text(408, "408 Request Timeout\n")),
    };
    if let Some(r) = reply {
        let _ = s.reply(&r, false).await;
        return;
    }
    match super::dispatch(&ctx, (*peer).as_deref(), &req).await {
        Action::Reply(r) => {
            let _ = s.reply(&r, req.method == "HEAD").await;
        }
        Action::Logs {
            path,
            opts,
            container_id,
        } => {
            let mut sink = &s;
            let r = super::stream_logs(&ctx.host, &mut sink, path, &opts, container_id).await;
            if let Err(e) = r {
                log::debug!("HTTP/2 stream {}: logs: {e}", s.id);
            }
        }
        // Upgrades need HTTP/1.1 (§8.6): the client retries there.
        Action::Command { .. } | Action::PortForward { .. } => s.reset(HTTP_1_1_REQUIRED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    fn f(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Frame {
        Frame {
            kind,
            flags,
            stream,
            payload: payload.to_vec(),
        }
    }

    /// The frames `c` queued since the last call.
    fn sent(c: &mut Core) -> Vec<Frame> {
        let mut r = futures_lite::io::Cursor::new(std::mem::take(&mut c.out));
        let mut v = Vec::new();
        while let Ok(fr) = block_on(read_frame(&mut r, 1 << 20)) {
            v.push(fr);
        }
        v
    }

    fn kinds(v: &[Frame]) -> Vec<(u8, u8, u32)> {
        v.iter().map(|f| (f.kind, f.flags, f.stream)).collect()
    }

    fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        let mut e = Encoder::default();
        e.set_huffman(false);
        e.encode(fields.iter().copied(), &mut b);
        b
    }

    const GET: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/pods?x=1"),
        (":authority", "n:10250"),
    ];

    /// A core past the client's SETTINGS (with `settings`).
    fn core(settings: &[(u16, u32)]) -> Core {
        let mut c = Core::new(16 << 10, 64 << 10);
        c.on_frame(f(SETTINGS, 0, 0, &settings_payload(settings)))
            .unwrap();
        let v = sent(&mut c);
        assert_eq!(kinds(&v), [(SETTINGS, 0, 0), (SETTINGS, ACK, 0)]);
        c
    }

    fn open(c: &mut Core, id: u32, flags: u8) -> Opened {
        let o = c
            .on_frame(f(HEADERS, END_HEADERS | flags, id, &block(GET)))
            .unwrap();
        o.expect("a request")
    }

    fn data(c: &mut Core, id: u32, d: &[u8], end: bool) -> Poll<Option<usize>> {
        block_on(poll_once(poll_fn(|cx| {
            Poll::Ready(c.poll_data(cx, id, d, end))
        })))
        .unwrap()
    }

    #[test]
    fn request_heads_follow_the_rules() {
        let own = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        let r = request(own(GET)).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("GET", "/pods", "x=1")
        );
        assert_eq!(r.header("host"), Some("n:10250"));
        let mut bad = own(GET);
        bad.push(("te".into(), "trailers".into()));
        assert!(request(bad.clone()).is_ok());
        for (k, v) in [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("X-Up", "a"),
            (":path", "/again"),
            (":status", "200"),
            ("content-length", "x"),
        ] {
            let mut b = own(GET);
            b.push((k.into(), v.into()));
            assert!(request(b).is_err(), "{k}");
        }
        assert!(request(own(&[(":method", "GET"), (":path", "/")])).is_err());
        assert!(request(own(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "x")
        ]))
        .is_err());
        // A pseudo-header after a regular one.
        let mut late = own(&[(":method", "GET"), (":scheme", "https"), ("a", "b")]);
        late.push((":path".into(), "/".into()));
        assert!(request(late).is_err());
    }

    #[test]
    fn the_first_frame_must_be_settings_and_ping_is_answered() {
        let mut c = Core::new(1024, 1024);
        assert_eq!(
            c.on_frame(f(PING, 0, 0, &[1; 8])).unwrap_err().0,
            PROTOCOL_ERROR
        );
        let mut c = core(&[]);
        c.on_frame(f(PING, 0, 0, &[7; 8])).unwrap();
        c.on_frame(f(PING, ACK, 0, &[7; 8])).unwrap();
        let v = sent(&mut c);
        assert_eq!(kinds(&v), [(PING, ACK, 0)]);
        assert_eq!(v[0].payload, [7; 8]);
        for (fr, code) in [
            (f(PING, 0, 0, &[0; 7]), FRAME_SIZE_ERROR),
            (f(PING, 0, 1, &[0; 8]), PROTOCOL_ERROR),
            (f(DATA, 0, 1, b"x"), PROTOCOL_ERROR),
            (f(RST_STREAM, 0, 3, &[0; 4]), PROTOCOL_ERROR),
            (f(WINDOW_UPDATE, 0, 0, &[0; 4]), PROTOCOL_ERROR),
            (f(PUSH_PROMISE, END_HEADERS, 1, &[0; 4]), PROTOCOL_ERROR),
            (f(HEADERS, END_HEADERS, 2, &[0x82]), PROTOCOL_ERROR),
            (f(SETTINGS, 0, 0, &[0; 5]), FRAME_SIZE_ERROR),
            (f(HEADERS, END_HEADERS, 1, &[0xff, 0xff]), COMPRESSION_ERROR),
        ] {
            let mut c = core(&[]);
            assert_eq!(c.on_frame(fr.clone()).unwrap_err().0, code, "{fr:?}");
        }
    }

    #[test]
    fn responses_respect_both_windows() {
        let mut c = core(&[(SETTINGS_INITIAL_WINDOW_SIZE, 10)]);
        let (id, req) = open(&mut c, 1, END_STREAM);
        assert_eq!(req.unwrap().path, "/pods");
        assert!(c.send_head(id, &[(":status", "200")], false));
        assert_eq!(data(&mut c, id, &[b'a'; 25], true), Poll::Ready(Some(10)));
        assert_eq!(data(&mut c, id, &[b'a'; 15], true), Poll::Pending);
        c.on_frame(f(WINDOW_UPDATE, 0, 1, &20u32.to_be_bytes()))
            .unwrap();
        assert_eq!(data(&mut c, id, &[b'a'; 15], true), Poll::Ready(Some(15)));
        let v = sent(&mut c);
        assert_eq!(
            kinds(&v),
            [
                (HEADERS, END_HEADERS, 1),
                (DATA, 0, 1),
                (DATA, END_STREAM, 1)
            ]
        );
        // Ended both ways: closed, and nothing more goes out on it.
        assert_eq!(c.open_streams(), 0);
        assert_eq!(data(&mut c, id, b"x", true), Poll::Ready(None));

        // The connection window: 65535 shared; a larger stream window
        // (SETTINGS mid-stream) does not lift it.
        let mut c = core(&[]);
        let _ = open(&mut c, 1, END_STREAM);
        let _ = open(&mut c, 3, END_STREAM);
        let big = vec![0u8; 70_000];
        let mut total = 0;
        while let Poll::Ready(Some(n)) = data(&mut c, 1, &big[total..], false) {
            total += n;
            sent(&mut c);
        }
        assert_eq!(total, 65_535);
        assert_eq!(data(&mut c, 3, b"x", false), Poll::Pending);
        c.on_frame(f(WINDOW_UPDATE, 0, 0, &5u32.to_be_bytes()))
            .unwrap();
        assert_eq!(data(&mut c, 3, b"xyz", false), Poll::Ready(Some(3)));
        // Overflowing a window: a stream error, then a connection error.
        c.on_frame(f(WINDOW_UPDATE, 0, 3, &MAX_WINDOW.to_be_bytes()))
            .unwrap();
        assert_eq!(kinds(&sent(&mut c)), [(DATA, 0, 3), (RST_STREAM, 0, 3)]);
        c.on_frame(f(WINDOW_UPDATE, 0, 0, &MAX_WINDOW.to_be_bytes()))
            .unwrap_err();
    }

    #[test]
    fn a_full_write_buffer_holds_data_back() {
        let mut c = core(&[(SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW)]);
        c.on_frame(f(WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes()))
            .unwrap();
        let _ = open(&mut c, 1, END_STREAM);
        let big = vec![0u8; 4 * HIGH_WATER];
        let mut total = 0;
        while let Poll::Ready(Some(n)) = data(&mut c, 1, &big[total..], false) {
            total += n;
        }
        assert!((HIGH_WATER..HIGH_WATER + 2 * MAX_DATA_FRAME).contains(&total));
        sent(&mut c);
        assert!(matches!(data(&mut c, 1, &big, false), Poll::Ready(Some(_))));
    }

    #[test]
    fn streams_are_limited_refused_and_reset() {
        let mut c = core(&[]);
        for i in 0..MAX_STREAMS as u32 {
            let _ = open(&mut c, 1 + 2 * i, END_STREAM);
        }
        let id = 1 + 2 * MAX_STREAMS as u32;
        let o = c
            .on_frame(f(HEADERS, END_HEADERS | END_STREAM, id, &block(GET)))
            .unwrap();
        assert!(o.is_none());
        let v = sent(&mut c);
        assert_eq!(kinds(&v), [(RST_STREAM, 0, id)]);
        assert_eq!(be32(&v[0].payload, 0), REFUSED_STREAM);
        // The client cancels one: it is gone, and a new one fits.
        c.on_frame(f(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()))
            .unwrap();
        assert_eq!(c.open_streams(), MAX_STREAMS - 1);
        assert!(!c.send_head(1, &[(":status", "200")], true));
        let _ = open(&mut c, id + 2, END_STREAM);
        // Stream ids only go up.
        let o = c.on_frame(f(HEADERS, END_HEADERS, 5, &block(GET))).unwrap();
        assert!(o.is_none());
        assert_eq!(kinds(&sent(&mut c)), [(RST_STREAM, 0, 5)]);
    }

    #[test]
    fn continuation_padding_and_header_limits() {
        let mut c = core(&[]);
        let b = block(GET);
        let (a, rest) = b.split_at(5);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0; 3]);
        assert!(c
            .on_frame(f(HEADERS, PADDED | END_STREAM, 1, &padded))
            .unwrap()
            .is_none());
        // Nothing may come between the fragments.
        let mut c2 = core(&[]);
        c2.on_frame(f(HEADERS, END_STREAM, 1, a)).unwrap();
        assert!(c2.on_frame(f(PING, 0, 0, &[0; 8])).is_err());
        let (id, req) = c
            .on_frame(f(CONTINUATION, END_HEADERS, 1, rest))
            .unwrap()
            .unwrap();
        assert_eq!((id, req.unwrap().method.as_str()), (1, "GET"));

        // A header list over the limit: 431 (the stream stays usable);
        // an encoded block far over it: the connection ends.
        let long = "x".repeat(20 << 10);
        let mut fields = GET.to_vec();
        fields.push(("x-long", &long));
        let (_, r) = open_block(&mut c, 3, &block(&fields));
        assert_eq!(r.unwrap_err().status, 431);
        let huge = vec![0u8; 70 << 10];
        let mut c = core(&[]);
        let mut e = Ok(None);
        for chunk in huge.chunks(16 << 10) {
            let kind = if c.continuation.is_some() {
                CONTINUATION
            } else {
                HEADERS
            };
            e = c.on_frame(f(kind, 0, 1, chunk));
            if e.is_err() {
                break;
            }
        }
        assert_eq!(e.unwrap_err().0, ENHANCE_YOUR_CALM);
    }

    fn open_block(c: &mut Core, id: u32, b: &[u8]) -> Opened {
        let mut frag = b;
        let first = frag.len().min(16 << 10);
        let mut o = c
            .on_frame(f(
                HEADERS,
                END_STREAM | if first == b.len() { END_HEADERS } else { 0 },
                id,
                &frag[..first],
            ))
            .unwrap();
        frag = &frag[first..];
        while !frag.is_empty() {
            let n = frag.len().min(16 << 10);
            let fl = if n == frag.len() { END_HEADERS } else { 0 };
            o = c.on_frame(f(CONTINUATION, fl, id, &frag[..n])).unwrap();
            frag = &frag[n..];
        }
        o.unwrap()
    }

    #[test]
    fn bodies_are_bounded_and_credited() {
        let mut c = core(&[]);
        let (id, _) = open(&mut c, 1, 0);
        let poll = |c: &mut Core| {
            block_on(poll_once(poll_fn(|cx| Poll::Ready(c.poll_body(cx, id))))).unwrap()
        };
        assert_eq!(poll(&mut c), Poll::Pending);
        c.on_frame(f(DATA, 0, 1, &[0; 16 << 10])).unwrap();
        // Dropped as it comes: both windows credited back.
        assert_eq!(
            kinds(&sent(&mut c)),
            [(WINDOW_UPDATE, 0, 0), (WINDOW_UPDATE, 0, 1)]
        );
        for _ in 0..3 {
            c.on_frame(f(DATA, 0, 1, &[0; 16 << 10])).unwrap();
        }
        assert_eq!(poll(&mut c), Poll::Pending);
        c.on_frame(f(DATA, 0, 1, b"x")).unwrap();
        assert_eq!(poll(&mut c), Poll::Ready(Some(true)));
        // The 413 goes out before the request ended: then RST NO_ERROR.
        sent(&mut c);
        assert!(c.send_head(id, &[(":status", "413")], true));
        let v = sent(&mut c);
        assert_eq!(
            kinds(&v),
            [(HEADERS, END_HEADERS | END_STREAM, 1), (RST_STREAM, 0, 1)]
        );
        assert_eq!(be32(&v[1].payload, 0), NO_ERROR);
        // Later DATA for it is ignored (the window still counts).
        c.on_frame(f(DATA, END_STREAM, 1, b"late")).unwrap();

        // A declared length that the body does not match: reset.
        let mut fields = GET.to_vec();
        fields.push(("content-length", "3"));
        let mut c = core(&[]);
        c.on_frame(f(HEADERS, END_HEADERS, 1, &block(&fields)))
            .unwrap();
        c.on_frame(f(DATA, END_STREAM, 1, b"ab")).unwrap();
        assert_eq!(kinds(&sent(&mut c)), [(RST_STREAM, 0, 1)]);
        // DATA beyond the stream's window: a stream error.
        let mut c = core(&[]);
        let _ = open(&mut c, 1, 0);
        c.recv_window = i64::MAX;
        if let Some(s) = c.streams.get_mut(&1) {
            s.recv_window = 3;
        }
        c.on_frame(f(DATA, 0, 1, b"abcd")).unwrap();
        let v = sent(&mut c);
        assert_eq!(be32(&v.last().unwrap().payload, 0), FLOW_CONTROL_ERROR);
    }

    #[test]
    fn goaway_from_the_client_ends_with_the_last_stream() {
        let mut c = core(&[]);
        let (id, _) = open(&mut c, 1, END_STREAM);
        c.on_frame(f(GOAWAY, 0, 0, &[0; 8])).unwrap();
        assert!(!c.done);
        // New streams are refused (the client may retry them elsewhere).
        assert!(c
            .on_frame(f(HEADERS, END_HEADERS | END_STREAM, 3, &block(GET)))
            .unwrap()
            .is_none());
        assert!(c.send_head(id, &[(":status", "200")], true));
        assert!(c.done);
        let v = sent(&mut c);
        assert_eq!(
            kinds(&v),
            [
                (RST_STREAM, 0, 3),
                (HEADERS, END_HEADERS | END_STREAM, 1),
                (GOAWAY, 0, 0)
            ]
        );
        assert_eq!(be32(&v[2].payload, 0), 1);
    }
}
