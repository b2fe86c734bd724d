//! ttrpc (containerd's small RPC protocol) over `async_io::Async<UnixStream>`.
//!
//! Wire format: every message is a 10-byte header (`u32` body length BE,
//! `u32` stream id BE, `u8` type: 1 request / 2 response / 3 data, `u8`
//! flags) and a protobuf body (`ttrpc.Request` / `ttrpc.Response`), at most
//! 4 MiB. Client stream ids are odd and grow by 2; the server answers on the
//! request's id and serves calls concurrently, so one connection carries
//! every call to a shim: [`Client`] keeps a map stream id -> waiter.
//!
//! We do not use the `ttrpc` crate: its async client needs tokio and its
//! sync client runs OS threads; the framing is a page of code.

use super::proto::ttrpc::ttrpc::{KeyValue, Request, Response, Status};
use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use protobuf::Message;
use smol::channel;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use async_io::{Async, Timer};

pub const HEADER_LEN: usize = 10;
/// Largest message body either side accepts (ttrpc's `messageLengthMax`).
pub const MAX_MESSAGE: usize = 4 << 20;
pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;
/// Metadata key containerd puts the namespace in.
pub const NAMESPACE_KEY: &str = "containerd-namespace-ttrpc";

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind;
        b[9] = self.flags;
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
        }
    }
}

/// Header and body in one buffer, so one write sends the whole frame.
fn frame(stream_id: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let h = Header {
        length: body.len() as u32,
        stream_id,
        kind,
        flags: 0,
    };
    let mut v = Vec::with_capacity(HEADER_LEN + body.len());
    v.extend_from_slice(&h.encode());
    v.extend_from_slice(body);
    v
}

/// What `read_frame` got.
enum Frame {
    Message(Header, Vec<u8>),
    /// A body over [`MAX_MESSAGE`], read and thrown away.
    TooLarge(Header),
}

/// Reads one frame; `None` on a clean EOF between frames.
async fn read_frame(mut r: impl futures_lite::AsyncRead + Unpin) -> io::Result<Option<Frame>> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut hb[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let h = Header::decode(&hb);
    let len = h.length as usize;
    if len > MAX_MESSAGE {
        // Keep the stream in sync: skip the body in small pieces. On the
        // heap: an array here would make every connection's reader future
        // (one per shim, alive for the pod's life) 8 KiB larger.
        let mut left = len;
        let mut sink = vec![0u8; 8192];
        while left > 0 {
            let n = left.min(sink.len());
            r.read_exact(&mut sink[..n]).await?;
            left -= n;
        }
        return Ok(Some(Frame::TooLarge(h)));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(Frame::Message(h, body)))
}

/// gRPC status codes (google.rpc.Code) as ttrpc servers return them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
    Other(i32),
}

impl Code {
    pub fn from_i32(c: i32) -> Code {
        use Code::*;
        match c {
            0 => Ok,
            1 => Cancelled,
            2 => Unknown,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            n => Other(n),
        }
    }

    pub fn as_i32(self) -> i32 {
        use Code::*;
        match self {
            Ok => 0,
            Cancelled => 1,
            Unknown => 2,
            InvalidArgument => 3,
            DeadlineExceeded => 4,
            NotFound => 5,
            AlreadyExists => 6,
            PermissionDenied => 7,
            ResourceExhausted => 8,
            FailedPrecondition => 9,
            Aborted => 10,
            OutOfRange => 11,
            Unimplemented => 12,
            Internal => 13,
            Unavailable => 14,
            DataLoss => 15,
            Unauthenticated => 16,
            Other(n) => n,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Other(n) => write!(f, "code {n}"),
            c => write!(f, "{c:?}"),
        }
    }
}

/// Why a call failed. `method` is `service/method`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-OK status.
    #[error("{method}: {code}: {message}")]
    Status {
        method: String,
        code: Code,
        message: String,
    },
    /// No answer within the call's timeout (the call may still complete
    /// on the server).
    #[error("{method}: no answer within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    /// The socket could not be reached (server gone, stale socket).
    #[error("connect {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    /// The connection broke while the call was in flight; whether the
    /// server acted on it is unknown.
    #[error("{method}: connection to {path} lost")]
    Closed { method: String, path: PathBuf },
    /// Undecodable or oversized message.
    #[error("{method}: {message}")]
    Protocol { method: String, message: String },
}

impl Error {
    /// The status code, with local failures mapped as gRPC does
    /// (timeout: DeadlineExceeded; unreachable or lost: Unavailable).
    pub fn code(&self) -> Code {
        match self {
            Error::Status { code, .. } => *code,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::Connect { .. } | Error::Closed { .. } => Code::Unavailable,
            Error::Protocol { .. } => Code::Internal,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }
    /// The server's message for a status error, else the display text.
    pub fn message(&self) -> String {
        match self {
            Error::Status { message, .. } => message.clone(),
            e => e.to_string(),
        }
    }
}

type Waiter = channel::Sender<Result<Response, String>>;

/// State shared by a connection's reader task and its callers.
struct Shared {
    pending: RefCell<HashMap<u32, Waiter>>,
    closed: Cell<bool>,
}

impl Shared {
    fn fail_all(&self) {
        self.closed.set(true);
        for (_, w) in self.pending.borrow_mut().drain() {
            // A waiter whose sender is dropped sees the connection as lost.
            drop(w);
        }
    }
}

struct Conn {
    shared: Rc<Shared>,
    /// Whole frames to send: a single writer task keeps frames from
    /// interleaving, and a call dropped mid-way cannot cut a frame.
    writes: channel::Sender<Vec<u8>>,
    next_id: Cell<u32>,
    _reader: smol::Task<()>,
    _writer: smol::Task<()>,
}

impl Conn {
    async fn open(path: &Path) -> Result<Conn, Error> {
        let stream = Async::<UnixStream>::connect(path)
            .await
            .map_err(|source| Error::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let stream = Rc::new(stream);
        let shared = Rc::new(Shared {
            pending: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
        });
        let (writes, frames) = channel::unbounded::<Vec<u8>>();
        let reader = {
            let (stream, shared) = (stream.clone(), shared.clone());
            let path = path.to_path_buf();
            crate::rt::spawn(async move {
                loop {
                    match read_frame(&*stream).await {
                        Ok(Some(Frame::Message(h, body))) if h.kind == TYPE_RESPONSE => {
                            let w = shared.pending.borrow_mut().remove(&h.stream_id);
                            let Some(w) = w else {
                                log::debug!(
                                    "ttrpc {}: response for unknown stream {}",
                                    path.display(),
                                    h.stream_id
                                );
                                continue;
                            };
                            let r = Response::parse_from_bytes(&body)
                                .map_err(|e| format!("bad response: {e}"));
                            let _ = w.try_send(r);
                        }
                        Ok(Some(Frame::Message(h, _))) => {
                            log::debug!(
                                "ttrpc {}: ignoring frame type {} on stream {}",
                                path.display(),
                                h.kind,
                                h.stream_id
                            );
                        }
                        Ok(Some(Frame::TooLarge(h))) => {
                            let w = shared.pending.borrow_mut().remove(&h.stream_id);
                            if let Some(w) = w {
                                let _ = w.try_send(Err(format!(
                                    "response of {} bytes exceeds the {MAX_MESSAGE} byte limit",
                                    h.length
                                )));
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            log::debug!("ttrpc {}: read: {e}", path.display());
                            break;
                        }
                    }
                }
                shared.fail_all();
            })
        };
        let writer = {
            let (stream, shared) = (stream.clone(), shared.clone());
            crate::rt::spawn(async move {
                while let Ok(f) = frames.recv().await {
                    if let Err(e) = (&*stream).write_all(&f).await {
                        log::debug!("ttrpc write: {e}");
                        break;
                    }
                }
                // Wake the reader too: the connection is done.
                let _ = stream.get_ref().shutdown(std::net::Shutdown::Both);
                shared.fail_all();
            })
        };
        Ok(Conn {
            shared,
            writes,
            next_id: Cell::new(1),
            _reader: reader,
            _writer: writer,
        })
    }

    fn alloc_id(&self) -> u32 {
        let pending = self.shared.pending.borrow();
        loop {
            let id = self.next_id.get();
            self.next_id.set(id.wrapping_add(2));
            if !pending.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Removes a call's waiter when the call ends (answered, timed out, or
/// dropped), so late answers are discarded.
struct PendingGuard<'a>(&'a Shared, u32);
impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending.borrow_mut().remove(&self.1);
    }
}

struct ClientInner {
    path: PathBuf,
    metadata: Vec<(String, String)>,
    conn: RefCell<Option<Rc<Conn>>>,
    connecting: smol::lock::Mutex<()>,
}

/// A ttrpc client for one server socket. Cheap to clone (one shared
/// connection). Connects lazily and reconnects on the next call after the
/// connection broke; a call in flight when it broke fails with
/// [`Error::Closed`] and is never re-sent (it may have had effects).
#[derive(Clone)]
pub struct Client {
    inner: Rc<ClientInner>,
}

impl Client {
    /// `metadata` goes with every request (e.g. the namespace key).
    pub fn new(path: impl Into<PathBuf>, metadata: Vec<(String, String)>) -> Client {
        Client {
            inner: Rc::new(ClientInner {
                path: path.into(),
                metadata,
                conn: RefCell::new(None),
                connecting: smol::lock::Mutex::new(()),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Connects now if not connected (calls do this themselves).
    pub async fn connect(&self) -> Result<(), Error> {
        self.conn().await.map(|_| ())
    }

    /// Drops the connection; the next call reconnects.
    pub fn disconnect(&self) {
        self.inner.conn.borrow_mut().take();
    }

    async fn conn(&self) -> Result<Rc<Conn>, Error> {
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let _g = self.inner.connecting.lock().await;
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let c = Rc::new(Conn::open(&self.inner.path).await?);
        *self.inner.conn.borrow_mut() = Some(c.clone());
        Ok(c)
    }

    fn live_conn(&self) -> Option<Rc<Conn>> {
        let c = self.inner.conn.borrow();
        c.as_ref().filter(|c| !c.shared.closed.get()).cloned()
    }

    /// A unary call with raw payloads. `timeout` goes to the server as
    /// `timeout_nano` and bounds the local wait; `None`: wait forever.
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        let full = || format!("{service}/{method}");
        let conn = self.conn().await?;
        let mut req = Request::new();
        req.service = service.to_string();
        req.method = method.to_string();
        req.payload = payload;
        req.timeout_nano = timeout.map_or(0, |t| t.as_nanos().min(i64::MAX as u128) as i64);
        for (k, v) in &self.inner.metadata {
            let mut kv = KeyValue::new();
            kv.key = k.clone();
            kv.value = v.clone();
            req.metadata.push(kv);
        }
        let body = req.write_to_bytes().map_err(|e| Error::Protocol {
            method: full(),
            message: format!("encode request: {e}"),
        })?;
        if body.len() > MAX_MESSAGE {
            return Err(Error::Protocol {
                method: full(),
                message: format!("request of {} bytes exceeds the limit", body.len()),
            });
        }
        let id = conn.alloc_id();
        let (tx, rx) = channel::bounded(1);
        conn.shared.pending.borrow_mut().insert(id, tx);
        let _guard = PendingGuard(&conn.shared, id);
        let closed = || Error::Closed {
            method: full(),
            path: self.inner.path.clone(),
        };
        if conn
            .writes
            .try_send(frame(id, TYPE_REQUEST, &body))
            .is_err()
        {
            return Err(closed());
        }
        let answer = async { rx.recv().await.map_err(|_| closed()) };
        let answer = match timeout {
            None => answer.await?,
            Some(t) => {
                let timer = async {
                    Timer::after(t).await;
                    Err(Error::Timeout {
                        method: full(),
                        timeout: t,
                    })
                };
                future::or(answer, timer).await?
            }
        };
        let resp = answer.map_err(|message| Error::Protocol {
            method: full(),
            message,
        })?;
        if let Some(st) = resp.status.as_ref() {
            if st.code != 0 {
                return Err(Error::Status {
                    method: full(),
                    code: Code::from_i32(st.code),
                    message: st.message.clone(),
                });
            }
        }
        Ok(resp.payload)
    }

    /// A unary call with protobuf messages.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, Error> {
        let payload = req.write_to_bytes().map_err(|e| Error::Protocol {
            method: format!("{service}/{method}"),
            message: format!("encode: {e}"),
        })?;
        let out = self.call_raw(service, method, payload, timeout).await?;
        Resp::parse_from_bytes(&out).map_err(|e| Error::Protocol {
            method: format!("{service}/{method}"),
            message: format!("decode response: {e}"),
        })
    }
}

/// A status a server handler returns instead of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: Code,
    pub message: String,
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, ServerError>>>>;
type Handler = Rc<dyn Fn(Vec<u8>) -> HandlerFuture>;

/// A small ttrpc server for unary methods. Requests of one connection are
/// handled one after the other, in order (event delivery keeps its order);
/// connections are served concurrently.
#[derive(Default)]
pub struct Server {
    methods: HashMap<String, Handler>,
}

impl Server {
    pub fn new() -> Server {
        Server::default()
    }

    /// Registers `service/method`; the handler gets the request payload
    /// and returns the response payload.
    pub fn register<F, Fut>(&mut self, service: &str, method: &str, handler: F)
    where
        F: Fn(Vec<u8>) -> Fut + 'static,
        Fut: Future<Output = Result<Vec<u8>, ServerError>> + 'static,
    {
        let h: Handler = Rc::new(move |p| Box::pin(handler(p)));
        self.methods.insert(format!("{service}/{method}"), h);
    }

    /// Accepts connections until the returned future is dropped (which
    /// also ends the connections it accepted).
    pub async fn serve(self, listener: Async<UnixListener>) -> io::Result<()> {
        let methods = Rc::new(self.methods);
        // Dropped with this future: closes `stop`, which ends every connection.
        let (_stop_tx, stop) = channel::bounded::<()>(1);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                // Out of fds or an aborted connection: keep serving.
                Err(e) if e.kind() != io::ErrorKind::InvalidInput => {
                    log::warn!("ttrpc accept: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let methods = methods.clone();
            let stop = stop.clone();
            crate::rt::spawn(async move {
                let serve = serve_conn(stream, methods);
                let stopped = async {
                    let _ = stop.recv().await;
                    Ok(())
                };
                if let Err(e) = future::or(serve, stopped).await {
                    log::debug!("ttrpc server connection: {e}");
                }
            })
            .detach();
        }
    }
}

async fn serve_conn(
    stream: Async<UnixStream>,
    methods: Rc<HashMap<String, Handler>>,
) -> io::Result<()> {
    loop {
        let (h, body) = match read_frame(&stream).await? {
            None => return Ok(()),
            Some(Frame::Message(h, body)) => (h, body),
            Some(Frame::TooLarge(h)) => {
                let st = ServerError {
                    code: Code::ResourceExhausted,
                    message: format!("message length {} exceeds maximum {MAX_MESSAGE}", h.length),
                };
                respond(&stream, h.stream_id, Err(st)).await?;
                continue;
            }
        };
        if h.kind != TYPE_REQUEST {
            continue;
        }
        let result = match Request::parse_from_bytes(&body) {
            Err(e) => Err(ServerError {
                code: Code::InvalidArgument,
                message: format!("bad request: {e}"),
            }),
            Ok(req) => match methods.get(&format!("{}/{}", req.service, req.method)) {
                // ttrpc-go's answer for an unknown service or method.
                None => Err(ServerError {
                    code: Code::Unimplemented,
                    message: format!("service {}: method {}", req.service, req.method),
                }),
                Some(handler) => handler(req.payload).await,
            },
        };
        respond(&stream, h.stream_id, result).await?;
    }
}

async fn respond(
    stream: &Async<UnixStream>,
    stream_id: u32,
    result: Result<Vec<u8>, ServerError>,
) -> io::Result<()> {
    let mut resp = Response::new();
    match result {
        Ok(p) => resp.payload = p,
        Err(e) => {
            let mut st = Status::new();
            st.code = e.code.as_i32();
            st.message = e.message;
            resp.status = protobuf::MessageField::some(st);
        }
    }
    let body = resp.write_to_bytes().map_err(io::Error::other)?;
    let mut w = stream;
    w.write_all(&frame(stream_id, TYPE_RESPONSE, &body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_big_endian() {
        let h = Header {
            length: 0x0102_0304,
            stream_id: 7,
            kind: TYPE_REQUEST,
            flags: 0,
        };
        let b = h.encode();
        assert_eq!(b, [1, 2, 3, 4, 0, 0, 0, 7, 1, 0]);
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn codes_map_both_ways() {
        for n in 0..=17 {
            assert_eq!(Code::from_i32(n).as_i32(), n);
        }
        assert_eq!(Code::from_i32(5), Code::NotFound);
        assert_eq!(Code::from_i32(12), Code::Unimplemented);
    }

    fn serve_pair(server: Server) -> (tempdir::Dir, smol::Task<io::Result<()>>, Client) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("s.sock");
        let l = Async::<UnixListener>::bind(&path).unwrap();
        let task = crate::rt::spawn(server.serve(l));
        let client = Client::new(&path, vec![(NAMESPACE_KEY.into(), "t".into())]);
        (dir, task, client)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "picolet-ttrpc-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn unary_calls_status_and_unknown_methods() {
        crate::rt::block_on(async {
            let mut s = Server::new();
            s.register("svc", "Echo", |p| async move { Ok(p) });
            s.register("svc", "Fail", |_| async {
                Err(ServerError {
                    code: Code::NotFound,
                    message: "nope".into(),
                })
            });
            let (_d, _t, c) = serve_pair(s);
            let out = c
                .call_raw("svc", "Echo", b"hi".to_vec(), None)
                .await
                .unwrap();
            assert_eq!(out, b"hi");
            let e = c.call_raw("svc", "Fail", vec![], None).await.unwrap_err();
            assert!(e.is_not_found(), "{e}");
            assert_eq!(e.message(), "nope");
            let e = c
                .call_raw("svc", "Missing", vec![], None)
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unimplemented);
        });
    }

    #[test]
    fn concurrent_calls_and_timeouts_on_one_connection() {
        crate::rt::block_on(async {
            // Server handles requests of a connection in order, so use two
            // clients to check that a slow call does not hold up another
            // connection, and one client to check a local timeout.
            let mut s = Server::new();
            s.register("svc", "Slow", |_| async {
                Timer::after(Duration::from_millis(300)).await;
                Ok(b"slow".to_vec())
            });
            s.register("svc", "Fast", |_| async { Ok(b"fast".to_vec()) });
            let (_d, _t, c) = serve_pair(s);
            let c2 = Client::new(c.path(), vec![]);
            let slow = crate::rt::spawn({
                let c = c.clone();
                async move { c.call_raw("svc", "Slow", vec![], None).await }
            });
            Timer::after(Duration::from_millis(20)).await;
            let t0 = std::time::Instant::now();
            assert_eq!(
                c2.call_raw("svc", "Fast", vec![], None).await.unwrap(),
                b"fast"
            );
            assert!(t0.elapsed() < Duration::from_millis(250));
            assert_eq!(slow.await.unwrap(), b"slow");
            let e = c
                .call_raw("svc", "Slow", vec![], Some(Duration::from_millis(50)))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::DeadlineExceeded);
            // The late answer is dropped; the connection stays usable.
            Timer::after(Duration::from_millis(350)).await;
            assert_eq!(
                c.call_raw("svc", "Fast", vec![], None).await.unwrap(),
                b"fast"
            );
        });
    }

    #[test]
    fn reconnects_after_the_server_restarts() {
        crate::rt::block_on(async {
            let mut s = Server::new();
            s.register("svc", "Echo", |p| async move { Ok(p) });
            let (d, t, c) = serve_pair(s);
            assert_eq!(
                c.call_raw("svc", "Echo", b"1".to_vec(), None)
                    .await
                    .unwrap(),
                b"1"
            );
            drop(t);
            // The server's connections end with it; the client sees EOF.
            Timer::after(Duration::from_millis(50)).await;
            let path = d.0.join("s.sock");
            std::fs::remove_file(&path).unwrap();
            let e = c.call_raw("svc", "Echo", vec![], None).await.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e}");
            let mut s = Server::new();
            s.register("svc", "Echo", |p| async move { Ok(p) });
            let l = Async::<UnixListener>::bind(&path).unwrap();
            let _t = crate::rt::spawn(s.serve(l));
            assert_eq!(
                c.call_raw("svc", "Echo", b"2".to_vec(), None)
                    .await
                    .unwrap(),
                b"2"
            );
        });
    }
}
