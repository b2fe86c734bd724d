//! A multiplexed HTTP/2 client connection (RFC 9113): the one connection
//! the kubelet keeps to the API server, carrying every request and every
//! watch, as client-go does.
//!
//! Design, on the single-threaded executor (`crate::rt`):
//! - The state lives in `Rc<RefCell<Inner>>`, shared by the handles
//!   ([`Connection`], [`Body`], pending `send` futures) and three tasks
//!   spawned by [`Connection::handshake`]: a reader (parses frames and
//!   dispatches them), a writer (drains the outbound buffer) and a
//!   keepalive (PING after `ping_idle` of silence). No borrow is held across
//!   an await.
//! - Frames to send are appended to one buffer in `Inner`; the writer takes
//!   it whole. Stream ids are allocated and header blocks HPACK-encoded and
//!   appended in the same borrow, so the blocks reach the peer in the order
//!   the encoder's dynamic table assumes.
//! - Flow control: the request body goes out in DATA frames of at most
//!   16 KiB (and the peer's SETTINGS_MAX_FRAME_SIZE) within its connection
//!   and stream windows, waiting for WINDOW_UPDATE (and for the write buffer to drain
//!   below 64 KiB) when exhausted. Received DATA is credited back when the
//!   reader consumes it ([`Body::chunk`]), not when it arrives: a slow
//!   reader stalls its stream, and a stream buffers at most its window.
//!   Credit goes out once a quarter of the window was consumed, or when the
//!   peer's remaining window is smaller than what we could give back.
//! - GOAWAY from the server: no new streams; streams above its
//!   last-stream-id fail as [`Error::Unprocessed`], the others continue,
//!   and the connection closes when the last of them ends.
//! - Failures (I/O, protocol errors, PING timeout, [`Connection::close`])
//!   end every stream still receiving: [`Error::Unprocessed`] when its
//!   HEADERS never left the write buffer, [`Error::Connection`] otherwise.
//!   Responses already complete stay readable.
//!
//! [`Connection::handshake`] returns at once, without waiting for the
//! server's SETTINGS: until they arrive we assume the protocol defaults and
//! at most 100 concurrent streams (as Go's transport); a peer that does not
//! speak HTTP/2 fails the first request.

use super::frame::*;
use super::hpack::{Decoder, Encoder};
use async_io::Timer;
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::channel::{Receiver, Sender};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Largest response header list we accept (SETTINGS_MAX_HEADER_LIST_SIZE),
/// also the bound on a header block's fragments while they arrive.
const MAX_HEADER_LIST: usize = 256 * 1024;
const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// Request DATA waits while the write buffer holds this much.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// A write buffer kept between writes when no larger than this (idle
/// connections should stay small).
const KEEP_OUT_BUF: usize = 4 * 1024;
/// Concurrent streams assumed before the server's SETTINGS, and when its
/// SETTINGS carry no limit (Go's transport does the same).
const INITIAL_MAX_CONCURRENT: u32 = 100;
const DEFAULT_MAX_CONCURRENT: u32 = 1000;
/// How long a closing connection may still take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    /// Sent as user-agent on every request unless the request has one.
    pub user_agent: String,
    /// Send a PING when nothing was received this long (client-go: 30 s).
    /// Zero disables the keepalive.
    pub ping_idle: Duration,
    /// Close the connection when a PING is not answered in time (15 s).
    pub ping_timeout: Duration,
    /// Our SETTINGS_INITIAL_WINDOW_SIZE: what a stream may have in flight
    /// towards us, and so the most a stream buffers.
    pub initial_stream_window: u32,
    /// Our connection-level receive window.
    pub connection_window: u32,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            user_agent: concat!("picolet/", env!("CARGO_PKG_VERSION")).into(),
            ping_idle: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(15),
            initial_stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request was certainly not processed by the server
    /// (REFUSED_STREAM, GOAWAY with a last-stream-id below ours, connection
    /// closed or failed before our HEADERS were written, or already
    /// closed): the caller may retry it on a new connection.
    #[error("HTTP/2 request not processed: {0}")]
    Unprocessed(String),
    /// The connection failed (I/O error, protocol error, PING timeout,
    /// GOAWAY with an error) after the request may have reached the server.
    #[error("HTTP/2 connection failed: {0}")]
    Connection(String),
    /// The peer reset this stream (RST_STREAM with a code).
    #[error("HTTP/2 stream reset by the server: {name}")]
    Reset { code: u32, name: String },
    /// The response body grew past the caller's limit.
    #[error("HTTP/2 response body larger than {0} bytes")]
    TooLarge(usize),
    /// Anything else (malformed response headers, invalid request, ...).
    #[error("HTTP/2 protocol error: {0}")]
    Protocol(String),
    /// The TLS server did not select ALPN `h2` (nothing was sent): the
    /// caller may speak HTTP/1.1 to it instead.
    #[error("{0} does not offer HTTP/2 (ALPN: {1})")]
    NotOffered(String, String),
}

/// A request. `headers` have lower-case names; connection-specific headers
/// (connection, keep-alive, upgrade, transfer-encoding, host, te other than
/// "trailers") are dropped as HTTP/2 requires. `content-length` is added
/// for a body.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// "https"
    pub scheme: String,
    /// host[:port]
    pub authority: String,
    /// Path with query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A response whose body is still arriving.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response body. Dropping it before the end resets the stream
/// (RST_STREAM CANCEL): this is how a watch is cancelled.
pub struct Body {
    stream: Option<StreamRef>,
    trailers: Vec<(String, String)>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("stream", &self.stream.as_ref().map(|s| s.id))
            .finish()
    }
}

impl Body {
    /// The next DATA payload of the stream; Ok(None) at END_STREAM. What
    /// is consumed is credited back to the stream and connection windows.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let Some(s) = &self.stream else {
            return Ok(None);
        };
        let r = poll_fn(|cx| s.conn.0.borrow_mut().poll_chunk(cx, s.id)).await;
        match &r {
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Some(st) = s.conn.0.borrow_mut().streams.get_mut(&s.id) {
                    self.trailers = std::mem::take(&mut st.trailers);
                }
                // Frees the stream (it is closed: no RST_STREAM).
                self.stream = None;
            }
            Err(_) => self.stream = None,
        }
        r
    }

    /// Reads the whole body; [`Error::TooLarge`] (and the stream reset)
    /// when it grows past `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, Error> {
        let mut v = Vec::new();
        while let Some(c) = self.chunk().await? {
            if v.len() + c.len() > limit {
                self.stream = None;
                return Err(Error::TooLarge(limit));
            }
            if v.is_empty() {
                v = c;
            } else {
                v.extend_from_slice(&c);
            }
        }
        Ok(v)
    }

    /// The trailing header block, once the body has ended.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }
}

/// A handle on the connection; cheap to clone.
///
/// The connection closes (GOAWAY NO_ERROR) when the last handle is gone:
/// every `Connection`, and every [`Body`] and pending `send`, since those
/// keep their stream's connection alive (a watch outlives the handle it
/// was opened with).
#[derive(Clone)]
pub struct Connection {
    h: Rc<Handle>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("open_streams", &self.open_streams())
            .field("closed", &self.is_closed())
            .finish()
    }
}

struct Handle(Rc<RefCell<Inner>>);

impl Drop for Handle {
    fn drop(&mut self) {
        if let Ok(mut i) = self.0.try_borrow_mut() {
            i.close_with_goaway("every handle on the connection was dropped");
        }
    }
}

/// A stream owned by a pending `send` or a [`Body`]; dropping it before
/// the stream closed resets it.
struct StreamRef {
    conn: Rc<Handle>,
    id: u32,
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        if let Ok(mut i) = self.conn.0.try_borrow_mut() {
            i.drop_stream(self.id);
        }
    }
}

impl Connection {
    /// Whether both handles are on the same connection.
    pub fn same(&self, other: &Connection) -> bool {
        Rc::ptr_eq(&self.h, &other.h)
    }

    /// Writes the client preface and our SETTINGS on an already-connected
    /// stream (TLS with ALPN h2, or cleartext for tests), spawns the
    /// connection's tasks on `crate::rt`'s executor and returns at once.
    pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        io: S,
        opts: ConnOptions,
    ) -> Result<Connection, Error> {
        if opts.initial_stream_window > MAX_WINDOW || opts.connection_window > MAX_WINDOW {
            return Err(Error::Protocol("flow-control window above 2^31-1".into()));
        }
        let (r, w) = futures_lite::io::split(io);
        let (tx, rx) = smol::channel::bounded(1);
        let mut i = Inner::new(&opts, tx);
        i.out.extend_from_slice(PREFACE);
        i.queued += PREFACE.len() as u64;
        let settings = settings_payload(&[
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, opts.initial_stream_window),
            (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
        ]);
        i.queue(SETTINGS, 0, 0, &settings);
        if opts.connection_window > DEFAULT_WINDOW {
            let inc = opts.connection_window - DEFAULT_WINDOW;
            i.queue(WINDOW_UPDATE, 0, 0, &inc.to_be_bytes());
        }
        let c = Rc::new(RefCell::new(i));
        crate::rt::spawn(write_loop(c.clone(), w, rx.clone())).detach();
        crate::rt::spawn(read_loop(c.clone(), r, rx.clone())).detach();
        if !opts.ping_idle.is_zero() {
            let k = keepalive(c.clone(), opts.ping_idle, opts.ping_timeout, rx);
            crate::rt::spawn(k).detach();
        }
        Ok(Connection {
            h: Rc::new(Handle(c)),
        })
    }

    /// Opens a stream, sends the request and waits for the response
    /// headers (1xx skipped). Waits for a free stream slot when the peer's
    /// SETTINGS_MAX_CONCURRENT_STREAMS are in use, and for window updates
    /// while the body goes out.
    pub async fn send(&self, req: Request) -> Result<Response, Error> {
        let inner = &self.h.0;
        let ua = inner.borrow().user_agent.clone();
        let fields = request_fields(&req, &ua)?;
        let end = req.body.is_empty();
        let id = poll_fn(|cx| inner.borrow_mut().poll_open(cx, &fields, end)).await?;
        drop(fields);
        let stream = StreamRef {
            conn: self.h.clone(),
            id,
        };
        let mut off = 0;
        while off < req.body.len() {
            let rest = &req.body[off..];
            match poll_fn(|cx| inner.borrow_mut().poll_data(cx, id, rest)).await? {
                Some(n) => off += n,
                // The response is complete: the server needs no more.
                None => break,
            }
        }
        drop(req);
        let (status, headers) = poll_fn(|cx| inner.borrow_mut().poll_head(cx, id)).await?;
        Ok(Response {
            status,
            headers,
            body: Body {
                stream: Some(stream),
                trailers: Vec::new(),
            },
        })
    }

    /// True once no new stream can be opened (GOAWAY received, connection
    /// error, closed by us or by the peer, stream ids exhausted).
    pub fn is_closed(&self) -> bool {
        let i = self.h.0.borrow();
        i.refuse.is_some() || i.dead.is_some()
    }

    /// Sends GOAWAY(NO_ERROR) and shuts the connection; every open stream
    /// ends with an error.
    pub fn close(&self) {
        self.h
            .0
            .borrow_mut()
            .close_with_goaway("connection closed by the client");
    }

    /// Streams with a live handle (a pending send or an unfinished body).
    pub fn open_streams(&self) -> usize {
        self.h.0.borrow().streams.len()
    }

    /// HTTP/2 bytes written to the transport so far (inside TLS: the TLS
    /// records' plaintext).
    pub fn bytes_sent(&self) -> u64 {
        self.h.0.borrow().written
    }

    /// HTTP/2 bytes read from the transport so far (whole frames).
    pub fn bytes_received(&self) -> u64 {
        self.h.0.borrow().received
    }

    #[cfg(test)]
    fn set_next_stream_id(&self, id: u32) {
        self.h.0.borrow_mut().next_id = id;
    }
}

/// Dials `host:port` (TCP, then TLS offering what `tls` offers, which must
/// include ALPN `h2`) and starts an HTTP/2 connection on it. Each step is
/// bounded by `timeout`. Failures are [`Error::Unprocessed`] (nothing was
/// sent), but a server that does not select `h2` is
/// [`Error::NotOffered`].
pub async fn connect_tls(
    host: &str,
    port: u16,
    tls: std::sync::Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
    timeout: Duration,
    opts: ConnOptions,
) -> Result<Connection, Error> {
    if !tls.alpn_protocols.iter().any(|p| p == b"h2") {
        return Err(Error::Protocol(
            "the TLS configuration does not offer ALPN h2".into(),
        ));
    }
    let tcp = crate::http::connect(host, port, timeout)
        .await
        .map_err(|e| Error::Unprocessed(format!("{e:#}")))?;
    let connect = futures_rustls::TlsConnector::from(tls).connect(server_name, tcp);
    let tls = crate::http::with_timeout(timeout, connect)
        .await
        .map_err(|e| Error::Unprocessed(format!("TLS handshake with {host}:{port}: {e}")))?;
    let alpn = tls.get_ref().1.alpn_protocol();
    if alpn != Some(b"h2") {
        let got = alpn.map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned());
        return Err(Error::NotOffered(format!("{host}:{port}"), got));
    }
    Connection::handshake(tls, opts).await
}

/// The header list of a request: pseudo-headers first, then the caller's
/// headers (lower-cased, connection-specific ones dropped), user-agent and
/// content-length when missing.
fn request_fields(req: &Request, ua: &str) -> Result<Vec<(String, String)>, Error> {
    if req.method.is_empty() || req.authority.is_empty() || req.scheme.is_empty() {
        return Err(Error::Protocol(
            "request without method, scheme or authority".into(),
        ));
    }
    if !req.path.starts_with('/') && req.path != "*" {
        return Err(Error::Protocol(format!(
            "invalid request path {:?}",
            req.path
        )));
    }
    let mut f = Vec::with_capacity(req.headers.len() + 6);
    f.push((":method".to_string(), req.method.clone()));
    f.push((":scheme".to_string(), req.scheme.clone()));
    f.push((":authority".to_string(), req.authority.clone()));
    f.push((":path".to_string(), req.path.clone()));
    let (mut has_ua, mut has_len) = (false, false);
    for (k, v) in &req.headers {
        let k = k.to_ascii_lowercase();
        if k.is_empty() || k.starts_with(':') || v.contains(['\r', '\n', '\0']) {
            return Err(Error::Protocol(format!("invalid request header {k:?}")));
        }
        match k.as_str() {
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
            | "host" => continue,
            "te" if !v.eq_ignore_ascii_case("trailers") => continue,
            "user-agent" => has_ua = true,
            "content-length" => has_len = true,
            _ => {}
        }
        f.push((k, v.clone()));
    }
    if !has_ua && !ua.is_empty() {
        f.push(("user-agent".into(), ua.to_string()));
    }
    let body_method = matches!(req.method.as_str(), "POST" | "PUT" | "PATCH");
    if !has_len && (!req.body.is_empty() || body_method) {
        f.push(("content-length".into(), req.body.len().to_string()));
    }
    Ok(f)
}

/// A response's status and headers.
type Head = (u16, Vec<(String, String)>);

struct Stream {
    /// What we may still send (the peer's window for this stream).
    send_window: i64,
    /// What the peer may still send on this stream.
    recv_avail: i64,
    /// Consumed by the reader, not yet credited back.
    recv_unacked: i64,
    /// The response's status and headers, until `send` takes them.
    head: Option<Head>,
    got_head: bool,
    data: VecDeque<Vec<u8>>,
    buffered: usize,
    trailers: Vec<(String, String)>,
    /// END_STREAM received.
    remote_closed: bool,
    /// END_STREAM sent (or the body abandoned).
    local_closed: bool,
    /// RST_STREAM sent or received, or dropped by the server's GOAWAY: no
    /// more frames either way.
    reset: bool,
    error: Option<Error>,
    waker: Option<Waker>,
    /// The write-buffer offset just past our HEADERS: the request reached
    /// the writer iff it is at most `Inner::taken`.
    headers_end: u64,
    /// Counted against the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
    counted: bool,
}

impl Stream {
    fn closed(&self) -> bool {
        self.reset || (self.remote_closed && self.local_closed)
    }
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

struct Continuation {
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
}

struct Inner {
    user_agent: String,
    stream_window: u32,
    conn_window: u32,
    streams: BTreeMap<u32, Stream>,
    next_id: u32,
    /// Streams counted against the peer's limit.
    active: usize,
    seen_settings: bool,
    peer_max_concurrent: u32,
    peer_initial_window: u32,
    peer_max_frame: usize,
    peer_max_header_list: Option<u32>,
    /// What we may still send on the connection.
    send_window: i64,
    /// What the peer may still send on the connection.
    recv_avail: i64,
    recv_unacked: i64,
    encoder: Encoder,
    decoder: Decoder,
    continuation: Option<Continuation>,
    /// Frames waiting for the writer.
    out: Vec<u8>,
    /// Bytes ever appended to `out`, and taken from it by the writer.
    queued: u64,
    taken: u64,
    written: u64,
    received: u64,
    writer: Option<Waker>,
    /// Tasks waiting for a stream slot, connection window or write space.
    waiters: Vec<Waker>,
    /// The server's GOAWAY: last stream id, code, debug data.
    goaway: Option<(u32, u32, String)>,
    /// Why no new stream may open (GOAWAY, ids exhausted, closed).
    refuse: Option<String>,
    /// Why the connection ended; no frame is processed after.
    dead: Option<String>,
    /// The writer flushes what is queued, closes the transport and ends.
    shutdown: bool,
    /// Dropped when the connection ends: the tasks' receivers then fire.
    close_tx: Option<Sender<()>>,
    last_rx: Instant,
    ping: Option<[u8; 8]>,
    ping_seq: u64,
}

impl Inner {
    fn new(o: &ConnOptions, close_tx: Sender<()>) -> Self {
        Inner {
            user_agent: o.user_agent.clone(),
            stream_window: o.initial_stream_window,
            conn_window: o.connection_window.max(DEFAULT_WINDOW),
            streams: BTreeMap::new(),
            next_id: 1,
            active: 0,
            seen_settings: false,
            peer_max_concurrent: INITIAL_MAX_CONCURRENT,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: DEFAULT_MAX_FRAME,
            peer_max_header_list: None,
            send_window: DEFAULT_WINDOW as i64,
            recv_avail: o.connection_window.max(DEFAULT_WINDOW) as i64,
            recv_unacked: 0,
            encoder: Encoder::default(),
            decoder: Decoder::default(),
            continuation: None,
            out: Vec::new(),
            queued: 0,
            taken: 0,
            written: 0,
            received: 0,
            writer: None,
            waiters: Vec::new(),
            goaway: None,
            refuse: None,
            dead: None,
            shutdown: false,
            close_tx: Some(close_tx),
            last_rx: Instant::now(),
            ping: None,
            ping_seq: 0,
        }
    }

    fn queue(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        if self.dead.is_some() {
            return;
        }
        frame(&mut self.out, kind, flags, stream, payload);
        self.queued += 9 + payload.len() as u64;
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    fn wait(&mut self, cx: &Context<'_>) {
        if !self.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            self.waiters.push(cx.waker().clone());
        }
    }

    fn wake_all(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn wake_streams(&mut self) {
        for s in self.streams.values_mut() {
            s.wake();
        }
    }

    /// Frees the stream's slot once it is closed.
    fn release(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            if s.counted && s.closed() {
                s.counted = false;
                self.active = self.active.saturating_sub(1);
                self.wake_all();
            }
        }
    }

    /// Resets a stream on our side: RST_STREAM and the error for its owner.
    fn stream_error(&mut self, id: u32, code: u32, err: Error) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.reset {
            return;
        }
        s.reset = true;
        s.error.get_or_insert(err);
        s.wake();
        self.queue(RST_STREAM, 0, id, &code.to_be_bytes());
        self.release(id);
    }

    /// A connection error we detected: GOAWAY with `code`, then the end.
    fn conn_error(&mut self, code: u32, msg: &str) {
        let debug = format!("{msg} ({})", error_code_name(code));
        let last = 0u32; // we accept no server-initiated streams
        let mut p = last.to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(msg.as_bytes());
        self.fail(debug, Some(p));
    }

    /// Our graceful close: GOAWAY(NO_ERROR), then the end.
    fn close_with_goaway(&mut self, why: &str) {
        let p = [0u8; 8].to_vec();
        self.fail(why.to_string(), Some(p));
    }

    /// Ends the connection: every stream still receiving fails, nothing is
    /// queued after `goaway` (our GOAWAY payload, if any), and the tasks end.
    fn fail(&mut self, reason: String, goaway: Option<Vec<u8>>) {
        if self.dead.is_some() {
            return;
        }
        // What the writer has not taken is never sent: those requests
        // certainly did not reach the server.
        self.out.clear();
        self.queued = self.taken;
        if let Some(p) = goaway {
            self.queue(GOAWAY, 0, 0, &p);
        }
        let reason = match &self.goaway {
            Some((last, code, debug)) => format!(
                "{reason} (after the server's GOAWAY: {}{}, last stream {last})",
                error_code_name(*code),
                if debug.is_empty() {
                    String::new()
                } else {
                    format!(" {debug:?}")
                }
            ),
            None => reason,
        };
        self.dead = Some(reason.clone());
        self.refuse.get_or_insert_with(|| reason.clone());
        self.shutdown = true;
        self.continuation = None;
        let taken = self.taken;
        for s in self.streams.values_mut() {
            if !s.remote_closed && s.error.is_none() {
                s.error = Some(if s.headers_end > taken {
                    Error::Unprocessed(reason.clone())
                } else {
                    Error::Connection(reason.clone())
                });
            }
            s.reset = true;
            s.counted = false;
            s.wake();
        }
        self.active = 0;
        self.close_tx = None;
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        self.wake_all();
    }

    /// Gives `n` bytes (consumed or discarded) back to the connection window.
    fn credit_conn(&mut self, n: i64) {
        if n <= 0 {
            return;
        }
        self.recv_unacked += n;
        if self.recv_unacked >= self.conn_window as i64 / 4 || self.recv_unacked >= self.recv_avail
        {
            let inc = std::mem::take(&mut self.recv_unacked);
            self.recv_avail += inc;
            self.queue(WINDOW_UPDATE, 0, 0, &(inc as u32).to_be_bytes());
        }
    }

    /// Gives `n` bytes back to a stream still receiving.
    fn credit_stream(&mut self, id: u32, n: i64) {
        let quarter = self.stream_window as i64 / 4;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if n <= 0 || s.remote_closed || s.reset {
            return;
        }
        s.recv_unacked += n;
        if s.recv_unacked >= quarter || s.recv_unacked >= s.recv_avail {
            let inc = std::mem::take(&mut s.recv_unacked);
            s.recv_avail += inc;
            self.queue(WINDOW_UPDATE, 0, id, &(inc as u32).to_be_bytes());
        }
    }

    /// Frees a stream whose handle is gone.
    fn drop_stream(&mut self, id: u32) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        if !s.closed() {
            self.queue(RST_STREAM, 0, id, &CANCEL.to_be_bytes());
        }
        if s.counted {
            self.active = self.active.saturating_sub(1);
        }
        // Unread data goes back to the connection window.
        self.credit_conn(s.buffered as i64);
        self.wake_all();
        if self.streams.is_empty() && self.dead.is_none() {
            if let Some(why) = self.refuse.clone() {
                // No new stream can open and the last one ended.
                self.close_with_goaway(&why);
            }
        }
    }

    // --- the handles' side ---------------------------------------------

    fn poll_open(
        &mut self,
        cx: &Context<'_>,
        fields: &[(String, String)],
        end_stream: bool,
    ) -> Poll<Result<u32, Error>> {
        if let Some(r) = &self.refuse {
            return Poll::Ready(Err(Error::Unprocessed(r.clone())));
        }
        if self.active >= self.peer_max_concurrent as usize {
            self.wait(cx);
            return Poll::Pending;
        }
        if self.next_id > MAX_STREAM_ID {
            let why = "stream ids exhausted".to_string();
            self.refuse = Some(why.clone());
            if self.streams.is_empty() {
                self.close_with_goaway(&why);
            }
            return Poll::Ready(Err(Error::Unprocessed(why)));
        }
        // The server's advisory limit, checked before the encoder's table
        // changes for a block that would not be sent.
        if let Some(max) = self.peer_max_header_list {
            let size: usize = fields.iter().map(|(k, v)| k.len() + v.len() + 32).sum();
            if size > max as usize {
                return Poll::Ready(Err(Error::Protocol(format!(
                    "request header list of {size} bytes exceeds the server's limit of {max}"
                ))));
            }
        }
        let id = self.next_id;
        self.next_id += 2;
        let mut block = Vec::new();
        self.encoder.encode(
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mut block,
        );
        // HEADERS, then CONTINUATION frames past the peer's max frame size.
        let max = self.peer_max_frame;
        let mut rest = &block[..];
        let mut first = true;
        loop {
            let n = rest.len().min(max);
            let (part, tail) = rest.split_at(n);
            let mut flags = if tail.is_empty() { END_HEADERS } else { 0 };
            let kind = if first {
                if end_stream {
                    flags |= END_STREAM;
                }
                HEADERS
            } else {
                CONTINUATION
            };
            self.queue(kind, flags, id, part);
            first = false;
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
        let s = Stream {
            send_window: self.peer_initial_window as i64,
            recv_avail: self.stream_window as i64,
            recv_unacked: 0,
            head: None,
            got_head: false,
            data: VecDeque::new(),
            buffered: 0,
            trailers: Vec::new(),
            remote_closed: false,
            local_closed: end_stream,
            reset: false,
            error: None,
            waker: None,
            headers_end: self.queued,
            counted: true,
        };
        self.streams.insert(id, s);
        self.active += 1;
        Poll::Ready(Ok(id))
    }

    /// Queues one DATA frame of `rest`; `None` when the server no longer
    /// wants the body (its response is complete).
    fn poll_data(
        &mut self,
        cx: &Context<'_>,
        id: u32,
        rest: &[u8],
    ) -> Poll<Result<Option<usize>, Error>> {
        let (max_frame, conn_window, out_len) =
            (self.peer_max_frame, self.send_window, self.out.len());
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(Error::Connection("stream state lost".into())));
        };
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        if s.reset || s.remote_closed {
            s.local_closed = true;
            if !s.reset {
                // The response is complete: tell the server we stop
                // (RFC 9113 §8.1) rather than leave the stream half open.
                self.stream_error(id, CANCEL, Error::Protocol("body abandoned".into()));
                // Not an error for our caller: the response is readable.
                if let Some(s) = self.streams.get_mut(&id) {
                    s.error = None;
                }
            }
            self.release(id);
            return Poll::Ready(Ok(None));
        }
        if out_len >= OUT_HIGH_WATER {
            self.wait(cx);
            return Poll::Pending;
        }
        // DATA frames stay at 16 KiB even when the peer allows more: each
        // is copied into the write buffer whole.
        let n = (rest.len() as i64)
            .min(max_frame.min(DEFAULT_MAX_FRAME) as i64)
            .min(conn_window)
            .min(s.send_window);
        if n <= 0 {
            s.waker = Some(cx.waker().clone());
            self.wait(cx);
            return Poll::Pending;
        }
        let n = n as usize;
        s.send_window -= n as i64;
        let end = n == rest.len();
        if end {
            s.local_closed = true;
        }
        self.send_window -= n as i64;
        self.queue(DATA, if end { END_STREAM } else { 0 }, id, &rest[..n]);
        if end {
            self.release(id);
        }
        Poll::Ready(Ok(Some(n)))
    }

    fn poll_head(&mut self, cx: &Context<'_>, id: u32) -> Poll<Result<Head, Error>> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(Error::Connection("stream state lost".into())));
        };
        if let Some(h) = s.head.take() {
            return Poll::Ready(Ok(h));
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        if s.reset || s.remote_closed {
            return Poll::Ready(Err(Error::Protocol(
                "stream ended without a response".into(),
            )));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_chunk(&mut self, cx: &Context<'_>, id: u32) -> Poll<Result<Option<Vec<u8>>, Error>> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(Error::Connection("stream state lost".into())));
        };
        if let Some(d) = s.data.pop_front() {
            s.buffered -= d.len();
            if s.data.is_empty() {
                // An idle watch should not keep a grown queue.
                s.data = VecDeque::new();
            }
            let n = d.len() as i64;
            self.credit_conn(n);
            self.credit_stream(id, n);
            return Poll::Ready(Ok(Some(d)));
        }
        if s.remote_closed {
            return Poll::Ready(Ok(None));
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        if s.reset {
            return Poll::Ready(Err(Error::Protocol("stream reset".into())));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    // --- the reader's side ---------------------------------------------

    fn on_frame(&mut self, f: Frame) -> Result<(), ConnError> {
        if let Some(c) = &self.continuation {
            if f.kind != CONTINUATION || f.stream != c.stream {
                return Err(proto(format!(
                    "frame type {:#x} on stream {} while a header block on stream {} continues",
                    f.kind, f.stream, c.stream
                )));
            }
        }
        if !self.seen_settings && (f.kind != SETTINGS || f.flags & ACK != 0) {
            return Err(proto(format!(
                "the server's first frame is type {:#x}, not SETTINGS: not an HTTP/2 server?",
                f.kind
            )));
        }
        match f.kind {
            DATA => self.on_data(f),
            HEADERS => self.on_headers(f),
            CONTINUATION => self.on_continuation(f),
            PRIORITY_FRAME if f.stream == 0 => Err(proto("PRIORITY on stream 0")),
            RST_STREAM => self.on_rst_stream(f),
            SETTINGS => self.on_settings(f),
            PUSH_PROMISE => Err(proto("PUSH_PROMISE although push is disabled")),
            PING => self.on_ping(f),
            GOAWAY => self.on_goaway(f),
            WINDOW_UPDATE => self.on_window_update(f),
            // PRIORITY is advisory; unknown types are ignored (§5.5).
            _ => Ok(()),
        }
    }

    /// Frames on streams we did not open: stream 0, server-initiated (even)
    /// ids and idle ones are connection errors (§5.1).
    fn check_stream(&self, f: &Frame) -> Result<(), ConnError> {
        let id = f.stream;
        if id == 0 || id % 2 == 0 || id >= self.next_id {
            return Err(proto(format!(
                "frame type {:#x} on stream {id}, which we did not open",
                f.kind
            )));
        }
        Ok(())
    }

    fn on_data(&mut self, f: Frame) -> Result<(), ConnError> {
        self.check_stream(&f)?;
        let id = f.stream;
        let len = f.payload.len() as i64;
        if len > self.recv_avail {
            return Err((
                FLOW_CONTROL_ERROR,
                "DATA beyond the connection window".into(),
            ));
        }
        self.recv_avail -= len;
        let Some(data_len) = strip_padding_and_priority(&f).map(<[u8]>::len) else {
            return Err(proto("DATA with invalid padding"));
        };
        let problem = match self.streams.get(&id) {
            None => Some(None),
            Some(s) if s.reset => Some(None),
            Some(s) if s.remote_closed => Some(Some((STREAM_CLOSED, "DATA after END_STREAM"))),
            Some(s) if len > s.recv_avail => {
                Some(Some((FLOW_CONTROL_ERROR, "DATA beyond the stream window")))
            }
            Some(s) if !s.got_head => Some(Some((PROTOCOL_ERROR, "DATA before the response"))),
            Some(_) => None,
        };
        if let Some(p) = problem {
            // The connection window was spent all the same.
            self.credit_conn(len);
            if let Some((code, msg)) = p {
                self.stream_error(id, code, Error::Protocol(msg.into()));
            }
            return Ok(());
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        s.recv_avail -= len;
        let mut payload = f.payload;
        if f.flags & PADDED != 0 {
            payload.truncate(1 + data_len);
            payload.remove(0);
        }
        if !payload.is_empty() {
            s.buffered += payload.len();
            s.data.push_back(payload);
        }
        if f.flags & END_STREAM != 0 {
            s.remote_closed = true;
        }
        s.wake();
        // Padding never reaches the reader: credit it now.
        let pad = len - data_len as i64;
        self.credit_conn(pad);
        self.credit_stream(id, pad);
        self.release(id);
        Ok(())
    }

    fn on_headers(&mut self, f: Frame) -> Result<(), ConnError> {
        self.check_stream(&f)?;
        let Some(frag) = strip_padding_and_priority(&f) else {
            return Err(proto("HEADERS with invalid padding"));
        };
        let end_stream = f.flags & END_STREAM != 0;
        if f.flags & END_HEADERS == 0 {
            if frag.len() > MAX_HEADER_LIST {
                return Err(proto("header block too large"));
            }
            self.continuation = Some(Continuation {
                stream: f.stream,
                block: frag.to_vec(),
                end_stream,
            });
            return Ok(());
        }
        self.on_header_block(f.stream, frag, end_stream)
    }

    fn on_continuation(&mut self, f: Frame) -> Result<(), ConnError> {
        let Some(mut c) = self.continuation.take() else {
            return Err(proto("CONTINUATION without HEADERS"));
        };
        if c.block.len() + f.payload.len() > MAX_HEADER_LIST {
            return Err(proto(format!(
                "header block larger than {MAX_HEADER_LIST} bytes"
            )));
        }
        c.block.extend_from_slice(&f.payload);
        if f.flags & END_HEADERS == 0 {
            self.continuation = Some(c);
            return Ok(());
        }
        self.on_header_block(c.stream, &c.block, c.end_stream)
    }

    fn on_header_block(
        &mut self,
        id: u32,
        block: &[u8],
        end_stream: bool,
    ) -> Result<(), ConnError> {
        // Decoded even for streams we forgot: the table must stay in step.
        let (fields, over) = self
            .decoder
            .decode_limited(block, MAX_HEADER_LIST)
            .map_err(|e| (COMPRESSION_ERROR, format!("{e:#}")))?;
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.reset {
            return Ok(());
        }
        let bad = |msg: String| Some((PROTOCOL_ERROR, msg));
        let problem = if s.remote_closed {
            Some((STREAM_CLOSED, "HEADERS after END_STREAM".to_string()))
        } else if over {
            bad(format!(
                "response header list larger than {MAX_HEADER_LIST} bytes"
            ))
        } else if !s.got_head {
            match response_head(fields) {
                Err(msg) => bad(msg),
                Ok((101, _)) => bad("101 Switching Protocols in HTTP/2".into()),
                Ok((status, _)) if status < 200 && end_stream => {
                    bad(format!("{status} response with END_STREAM"))
                }
                // Informational (1xx): the final response follows.
                Ok((status, _)) if status < 200 => None,
                Ok(head) => {
                    s.got_head = true;
                    s.head = Some(head);
                    None
                }
            }
        } else if !end_stream {
            bad("trailers without END_STREAM".into())
        } else if fields.iter().any(|(k, _)| k.starts_with(':')) {
            bad("pseudo-header in trailers".into())
        } else {
            s.trailers = fields;
            None
        };
        if let Some((code, msg)) = problem {
            self.stream_error(id, code, Error::Protocol(msg));
            return Ok(());
        }
        if end_stream && s.got_head {
            s.remote_closed = true;
        }
        s.wake();
        self.release(id);
        Ok(())
    }

    fn on_rst_stream(&mut self, f: Frame) -> Result<(), ConnError> {
        if f.payload.len() != 4 {
            return Err((FRAME_SIZE_ERROR, "RST_STREAM of wrong size".into()));
        }
        self.check_stream(&f)?;
        let id = f.stream;
        let code = be32(&f.payload, 0);
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.reset {
            return Ok(());
        }
        s.reset = true;
        s.local_closed = true;
        // NO_ERROR after a complete response only asks us to stop sending.
        if !(code == NO_ERROR && s.remote_closed) {
            s.error.get_or_insert(if code == REFUSED_STREAM {
                Error::Unprocessed("the server refused the stream (REFUSED_STREAM)".into())
            } else {
                Error::Reset {
                    code,
                    name: error_code_name(code),
                }
            });
        }
        s.wake();
        self.release(id);
        Ok(())
    }

    fn on_settings(&mut self, f: Frame) -> Result<(), ConnError> {
        let Some(list) = settings_of(&f)? else {
            return Ok(());
        };
        let first = !self.seen_settings;
        self.seen_settings = true;
        let mut saw_max_concurrent = false;
        for (id, v) in list {
            match id {
                SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_max_table_size(v as usize),
                SETTINGS_ENABLE_PUSH if v != 0 => {
                    return Err(proto("the server set SETTINGS_ENABLE_PUSH"));
                }
                SETTINGS_MAX_CONCURRENT_STREAMS => {
                    self.peer_max_concurrent = v;
                    saw_max_concurrent = true;
                }
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    let windows = self.streams.values_mut().map(|s| &mut s.send_window);
                    set_initial_window(&mut self.peer_initial_window, v, windows)?;
                }
                SETTINGS_MAX_FRAME_SIZE => self.peer_max_frame = max_frame_size(v)?,
                SETTINGS_MAX_HEADER_LIST_SIZE => self.peer_max_header_list = Some(v),
                _ => {}
            }
        }
        if first && !saw_max_concurrent {
            self.peer_max_concurrent = DEFAULT_MAX_CONCURRENT;
        }
        self.queue(SETTINGS, ACK, 0, &[]);
        self.wake_streams();
        self.wake_all();
        Ok(())
    }

    fn on_ping(&mut self, f: Frame) -> Result<(), ConnError> {
        if f.stream != 0 {
            return Err(proto("PING on a stream"));
        }
        let Ok(p) = <[u8; 8]>::try_from(&f.payload[..]) else {
            return Err((FRAME_SIZE_ERROR, "PING of wrong size".into()));
        };
        if f.flags & ACK == 0 {
            self.queue(PING, ACK, 0, &p);
        } else if self.ping == Some(p) {
            self.ping = None;
        }
        Ok(())
    }

    fn on_goaway(&mut self, f: Frame) -> Result<(), ConnError> {
        if f.stream != 0 {
            return Err(proto("GOAWAY on a stream"));
        }
        if f.payload.len() < 8 {
            return Err((FRAME_SIZE_ERROR, "GOAWAY too short".into()));
        }
        let mut last = be32(&f.payload, 0) & 0x7fff_ffff;
        if let Some((prev, _, _)) = self.goaway {
            last = last.min(prev);
        }
        let code = be32(&f.payload, 4);
        let debug: String = String::from_utf8_lossy(&f.payload[8..])
            .chars()
            .take(256)
            .collect();
        let why = format!(
            "the server sent GOAWAY ({}{}, last stream {last})",
            error_code_name(code),
            if debug.is_empty() {
                String::new()
            } else {
                format!(" {debug:?}")
            }
        );
        self.goaway = Some((last, code, debug));
        self.refuse.get_or_insert_with(|| why.clone());
        // Streams above `last` were not processed: retry elsewhere. The
        // server keeps no state for them, so no RST_STREAM either.
        for (_, s) in self.streams.range_mut(last.saturating_add(1)..) {
            if !s.reset {
                s.reset = true;
                s.error
                    .get_or_insert_with(|| Error::Unprocessed(why.clone()));
                if s.counted {
                    s.counted = false;
                    self.active = self.active.saturating_sub(1);
                }
                s.wake();
            }
        }
        self.wake_all();
        if self.streams.is_empty() {
            self.close_with_goaway(&why);
        }
        Ok(())
    }

    fn on_window_update(&mut self, f: Frame) -> Result<(), ConnError> {
        let inc = window_increment(&f)?;
        if f.stream == 0 {
            grow_connection_window(&mut self.send_window, inc)?;
            self.wake_all();
            return Ok(());
        }
        self.check_stream(&f)?;
        let id = f.stream;
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.reset {
            return Ok(());
        }
        if inc == 0 {
            self.stream_error(
                id,
                PROTOCOL_ERROR,
                Error::Protocol("WINDOW_UPDATE of 0".into()),
            );
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > MAX_WINDOW as i64 {
            self.stream_error(
                id,
                FLOW_CONTROL_ERROR,
                Error::Protocol("stream window above 2^31-1".into()),
            );
            return Ok(());
        }
        s.wake();
        Ok(())
    }
}

/// Status and regular headers of a response header block (§8.3.2): one
/// `:status` of three digits, before the regular fields, no other
/// pseudo-header, lower-case names.
fn response_head(fields: Vec<(String, String)>) -> Result<Head, String> {
    let mut status = None;
    let mut headers = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        if k == ":status" {
            if status.is_some() || !headers.is_empty() {
                return Err("misplaced or repeated :status".into());
            }
            let s = (v.len() == 3)
                .then(|| v.parse::<u16>().ok())
                .flatten()
                .filter(|s| (100..=999).contains(s))
                .ok_or_else(|| format!("invalid :status {v:?}"))?;
            status = Some(s);
        } else if k.starts_with(':') {
            return Err(format!("unexpected pseudo-header {k}"));
        } else if k.is_empty() || k.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("invalid header name {k:?}"));
        } else {
            headers.push((k, v));
        }
    }
    let status = status.ok_or("response without :status")?;
    Ok((status, headers))
}

/// Sleeps until `t`; false when the connection ended first.
async fn sleep_until(t: Instant, closed: &Receiver<()>) -> bool {
    future::or(
        async {
            Timer::at(t).await;
            true
        },
        async {
            let _ = closed.recv().await;
            false
        },
    )
    .await
}

async fn write_loop<W: AsyncWrite + Unpin>(c: Rc<RefCell<Inner>>, mut w: W, closed: Receiver<()>) {
    loop {
        let next = poll_fn(|cx| {
            let mut i = c.borrow_mut();
            if !i.out.is_empty() {
                let buf = std::mem::take(&mut i.out);
                i.taken += buf.len() as u64;
                // Space in the buffer for DATA waiting on it.
                i.wake_all();
                return Poll::Ready(Some(buf));
            }
            if i.shutdown {
                return Poll::Ready(None);
            }
            i.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(mut buf) = next else { break };
        // While the connection is open a write waits as long as the peer
        // needs; once it ends (our GOAWAY, a failure), CLOSE_GRACE more.
        let write = async {
            let mut off = 0;
            while off < buf.len() {
                let n = w.write(&buf[off..]).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero));
                }
                off += n;
                c.borrow_mut().written += n as u64;
            }
            w.flush().await
        };
        let deadline = async {
            let _ = closed.recv().await;
            Timer::after(CLOSE_GRACE).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer does not read",
            ))
        };
        let res = future::or(write, deadline).await;
        let mut i = c.borrow_mut();
        match res {
            Ok(()) => {
                if i.out.is_empty() && buf.capacity() <= KEEP_OUT_BUF {
                    buf.clear();
                    i.out = buf;
                }
            }
            Err(e) => {
                i.fail(format!("write: {e}"), None);
                break;
            }
        }
    }
    // TLS close_notify and FIN, bounded: the transport is dropped after.
    let _ = future::or(w.close(), async {
        Timer::after(CLOSE_GRACE).await;
        Ok(())
    })
    .await;
}

async fn read_loop<R: AsyncRead + Unpin>(c: Rc<RefCell<Inner>>, mut r: R, closed: Receiver<()>) {
    loop {
        let res = future::or(
            async { Some(read_frame(&mut r, DEFAULT_MAX_FRAME).await) },
            async {
                let _ = closed.recv().await;
                None
            },
        )
        .await;
        let Some(res) = res else { break };
        let mut i = c.borrow_mut();
        if i.dead.is_some() {
            break;
        }
        match res {
            Ok(f) => {
                i.received += 9 + f.payload.len() as u64;
                i.last_rx = Instant::now();
                if let Err((code, msg)) = i.on_frame(f) {
                    i.conn_error(code, &msg);
                    break;
                }
            }
            Err(e @ ReadError::TooLarge { .. }) => {
                i.conn_error(FRAME_SIZE_ERROR, &e.to_string());
                break;
            }
            Err(e) => {
                i.fail(e.to_string(), None);
                break;
            }
        }
    }
}

async fn keepalive(c: Rc<RefCell<Inner>>, idle: Duration, timeout: Duration, closed: Receiver<()>) {
    loop {
        let due = c.borrow().last_rx + idle;
        if !sleep_until(due, &closed).await {
            return;
        }
        let payload = {
            let mut i = c.borrow_mut();
            if i.dead.is_some() {
                return;
            }
            if i.last_rx + idle > Instant::now() {
                continue;
            }
            i.ping_seq += 1;
            let p = i.ping_seq.to_be_bytes();
            i.ping = Some(p);
            i.queue(PING, 0, 0, &p);
            p
        };
        if !sleep_until(Instant::now() + timeout, &closed).await {
            return;
        }
        let mut i = c.borrow_mut();
        if i.ping == Some(payload) {
            let why = format!(
                "no answer to PING within {}",
                crate::util::duration::format(timeout)
            );
            i.fail(why, None);
            return;
        }
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
