//! `/exec` and `/attach` (upstream kubelet/pkg/cri/streaming/remotecommand):
//! the request names the pod, container, command and streams; the
//! connection is upgraded to SPDY/3.1 (or WebSocket, see
//! [`super::websocket`]); the client opens one stream per channel
//! (`streamType` error, stdin, stdout, stderr, resize) within 30 s; the
//! process runs with them; its end is reported on the error stream (v4:
//! a JSON `Status`, exit codes as `NonZeroExitCode` causes).

use super::http1::{self, Reply, Request};
use super::spdy::{self, Incoming, Session};
use crate::runtime::logs::Stream;
use crate::runtime::stream::{StreamOptions, StreamProcess};
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::channel;
use std::rc::Rc;
use std::time::Duration;

/// Protocols of the SPDY variant, preferred first (v5 is WebSocket-only).
pub const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How long the client has to open its streams (upstream default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
}

/// A validated `/exec` or `/attach` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    pub kind: Kind,
    pub namespace: String,
    pub pod: String,
    pub uid: Option<String>,
    pub container: String,
    pub command: Vec<String>,
    pub opts: StreamOptions,
}

/// A stream flag: the kubelet's names (`input`, `output`, `error`, as the
/// apiserver sends them) or the PodExecOptions ones.
fn flag(req: &Request, names: &[&str]) -> bool {
    names.iter().any(|n| {
        req.param(n)
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    })
}

/// Path segments after `/exec` or `/attach` and the query, as upstream's
/// `getExecRequestParams` and `NewOptions`.
pub fn parse_request(kind: Kind, segs: &[&str], req: &Request) -> Result<CommandRequest, Reply> {
    let (ns, pod, uid, container) = match segs {
        [ns, pod, container] => (ns, pod, None, container),
        [ns, pod, uid, container] => (ns, pod, Some(uid.to_string()), container),
        _ => return Err(Reply::text(404, "404 page not found\n")),
    };
    let tty = flag(req, &["tty"]);
    let stdin = flag(req, &["input", "stdin"]);
    let stdout = flag(req, &["output", "stdout"]);
    // A terminal has no separate stderr (upstream drops it).
    let stderr = flag(req, &["error", "stderr"]) && !tty;
    if !stdin && !stdout && !stderr {
        return Err(Reply::text(
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let command: Vec<String> = req
        .query_pairs()
        .into_iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v)
        .collect();
    if kind == Kind::Exec && command.is_empty() {
        return Err(Reply::text(400, "you must specify a command"));
    }
    Ok(CommandRequest {
        kind,
        namespace: ns.to_string(),
        pod: pod.to_string(),
        uid,
        container: container.to_string(),
        command,
        opts: StreamOptions {
            stdin,
            stdout,
            stderr,
            tty,
        },
    })
}

/// Upstream `httpstream.Handshake`: the first client protocol the server
/// supports; `Ok("")` when the client names none (legacy clients).
pub fn negotiate(client: &[String], server: &[&str]) -> Result<String, Reply> {
    if client.is_empty() {
        return Ok(String::new());
    }
    for c in client {
        if server.contains(&c.as_str()) {
            return Ok(c.clone());
        }
    }
    let mut r = Reply::text(
        403,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports {client:?}, server accepts {server:?}"
        ),
    );
    r.extra
        .push(("X-Accepted-Stream-Protocol-Versions", server.join(", ")));
    Err(r)
}

/// The `Status` written on the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ExitCode(i32, String),
    Error(String),
}

impl Outcome {
    /// v4+: the JSON `metav1.Status`.
    pub fn json(&self) -> String {
        match self {
            Outcome::Success => r#"{"metadata":{},"status":"Success"}"#.into(),
            Outcome::ExitCode(code, cmd) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command {cmd}, exit code {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
            .to_string(),
            Outcome::Error(m) => {
                let msg = format!("error executing command in container: {m}");
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": format!("Internal error occurred: {msg}"),
                    "reason": "InternalError",
                    "details": {"causes": [{"message": msg}]},
                    "code": 500,
                })
                .to_string()
            }
        }
    }

    /// v1-v3: nothing for success, else the error text.
    pub fn text(&self) -> Option<String> {
        match self {
            Outcome::Success => None,
            Outcome::ExitCode(code, cmd) => Some(format!(
                "command terminated with non-zero exit code: error executing command {cmd}, exit code {code}"
            )),
            Outcome::Error(m) => Some(format!(
                "Internal error occurred: error executing command in container: {m}"
            )),
        }
    }

    pub fn encode(&self, protocol: &str) -> Option<String> {
        if protocol.starts_with("v4.") || protocol.starts_with("v5.") {
            Some(self.json())
        } else {
            self.text()
        }
    }
}

/// Go's `%v` of a string slice: `[sh -c exit 3]`.
pub fn go_list(cmd: &[String]) -> String {
    format!("[{}]", cmd.join(" "))
}

/// `{"Width":80,"Height":24}` objects, one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Takes the complete sizes out of `buf` (what is left is an incomplete
/// object); `Err` on garbage.
pub fn take_sizes(buf: &mut Vec<u8>) -> Result<Vec<TerminalSize>, String> {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TerminalSize>();
    let mut out = Vec::new();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(s)) => {
                out.push(s);
                used = it.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => return Err(e.to_string()),
            None => {
                used = buf.len();
                break;
            }
        }
    }
    buf.drain(..used);
    Ok(out)
}

/// The streams the client opened.
#[derive(Default)]
struct Streams {
    error: Option<u32>,
    stdin: Option<Incoming>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<Incoming>,
}

impl Streams {
    fn ready(&self, o: &StreamOptions, protocol: &str) -> bool {
        let v3 = protocol.starts_with("v3.") || protocol.starts_with("v4.");
        self.error.is_some()
            && (!o.stdin || self.stdin.is_some())
            && (!o.stdout || self.stdout.is_some())
            && (!o.stderr || self.stderr.is_some())
            && (!(o.tty && v3) || self.resize.is_some())
    }
}

/// Runs an upgraded SPDY session of `/exec` or `/attach`: collects the
/// streams, starts the process (`start`), copies, reports, and tears down.
pub async fn serve_spdy<S, F, Fut>(
    io: S,
    buf: Vec<u8>,
    protocol: String,
    req: CommandRequest,
    idle_timeout: Duration,
    start: F,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<StreamProcess>>,
{
    let (r, w) = futures_lite::io::split(io);
    let sess = Session::new(w, idle_timeout);
    let (tx, rx) = channel::bounded(4);
    let mut reader = crate::rt::spawn(spdy::read_loop(r, buf, sess.clone(), tx));

    // The client's streams, within the creation timeout.
    let mut st = Streams::default();
    let collected = future::or(
        async {
            while !st.ready(&req.opts, &protocol) {
                let Ok(s) = rx.recv().await else { return false };
                match s.header("streamtype").unwrap_or("") {
                    "error" => st.error = Some(s.id),
                    "stdin" => st.stdin = Some(s),
                    "stdout" => st.stdout = Some(s.id),
                    "stderr" => st.stderr = Some(s.id),
                    "resize" => st.resize = Some(s),
                    other => {
                        log::debug!("exec: unexpected stream type {other:?}");
                        let _ = sess.reset(s.id, spdy::RST_PROTOCOL_ERROR).await;
                    }
                }
            }
            true
        },
        async {
            async_io::Timer::after(STREAM_CREATION_TIMEOUT).await;
            log::debug!("exec: timed out waiting for client to create streams");
            false
        },
    )
    .await;
    // Later streams are refused (the channel is dropped).
    drop(rx);
    log::debug!(
        "{:?} {}/{}/{} ({protocol}): streams {}",
        req.kind,
        req.namespace,
        req.pod,
        req.container,
        if collected { "ready" } else { "not all opened" }
    );
    if !collected {
        sess.goaway(0, 0).await;
        sess.shutdown().await;
        return;
    }
    let cmd = go_list(&req.command);
    let proc = future::or(async { Some(start().await) }, async {
        let _ = (&mut reader).await;
        None
    })
    .await;
    let outcome = match proc {
        None => return,
        Some(Err(e)) => Outcome::Error(format!("{e:#}")),
        Some(Ok(p)) => {
            let cio = ClientIo {
                out: Rc::new(SpdyOut {
                    sess: sess.clone(),
                    stdout: st.stdout,
                    stderr: st.stderr,
                }),
                stdin: st.stdin.take().map(|s| s.data),
                resize: st.resize.take().map(|s| s.data),
            };
            run(p, cio, &mut reader, req.kind, &cmd)
                .await
                .unwrap_or_else(|| {
                    // The client went away: nothing to report to.
                    Outcome::Error("client disconnected".into())
                })
        }
    };
    for id in [st.stdout, st.stderr].into_iter().flatten() {
        let _ = sess.data(id, &[], true).await;
    }
    if let Some(id) = st.error {
        let body = outcome.encode(&protocol).unwrap_or_default();
        let _ = sess.data(id, body.as_bytes(), true).await;
    }
    sess.goaway(0, 0).await;
    sess.shutdown().await;
}

/// Where process output goes (a SPDY stream or a WebSocket channel).
#[allow(async_fn_in_trait)]
pub trait Out {
    async fn send(&self, s: Stream, data: &[u8]) -> std::io::Result<()>;
}

struct SpdyOut<W> {
    sess: Rc<Session<W>>,
    stdout: Option<u32>,
    stderr: Option<u32>,
}

impl<W: AsyncWrite + Unpin> Out for SpdyOut<W> {
    async fn send(&self, s: Stream, data: &[u8]) -> std::io::Result<()> {
        let id = match s {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        match id {
            Some(id) => self.sess.data(id, data, false).await,
            None => Ok(()),
        }
    }
}

/// The client side of a session: input channels and where output goes.
pub struct ClientIo<O> {
    pub out: Rc<O>,
    pub stdin: Option<channel::Receiver<Vec<u8>>>,
    pub resize: Option<channel::Receiver<Vec<u8>>>,
}

/// Copies until the process is done; `None` when the client went first
/// (`gone` resolves).
pub async fn run<O: Out + 'static>(
    p: StreamProcess,
    io: ClientIo<O>,
    gone: impl std::future::Future,
    kind: Kind,
    cmd: &str,
) -> Option<Outcome> {
    let control = Rc::new(p.control);
    let mut tasks = Vec::new();
    // stdin: client -> process, then EOF.
    if let (Some(rx), Some(w)) = (io.stdin, p.stdin) {
        let control = control.clone();
        tasks.push(crate::rt::spawn(async move {
            while let Ok(chunk) = rx.recv().await {
                let mut wr = &*w;
                if wr.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            drop(w);
            control.close_stdin().await;
        }));
    }
    if let Some(rx) = io.resize {
        let control = control.clone();
        tasks.push(crate::rt::spawn(async move {
            let mut buf = Vec::new();
            while let Ok(chunk) = rx.recv().await {
                buf.extend_from_slice(&chunk);
                match take_sizes(&mut buf) {
                    Ok(sizes) => {
                        for sz in sizes {
                            if let Err(e) = control.resize(sz.width, sz.height).await {
                                log::debug!("{e:#}");
                            }
                        }
                    }
                    Err(e) => {
                        log::debug!("resize stream: {e}");
                        break;
                    }
                }
                if buf.len() > 4096 {
                    break;
                }
            }
        }));
    }
    // output: process -> client (one task per source; writes wait on the
    // socket, reads wait on those writes).
    let mut outs = Vec::new();
    for mut o in p.outputs {
        let out = io.out.clone();
        outs.push(crate::rt::spawn(async move {
            while let Some(Ok((s, data))) = o.next().await {
                if out.send(s, &data).await.is_err() {
                    break;
                }
            }
        }));
    }
    let has_outputs = !outs.is_empty();
    let work = async {
        let exit = match kind {
            Kind::Exec => {
                let code = control.wait().await;
                // The shim closes the output FIFOs once the exec is deleted
                // and its output copied (RUNTIME.md).
                control.delete_exec().await;
                Some(code)
            }
            Kind::Attach if !has_outputs => Some(control.wait().await),
            Kind::Attach => None,
        };
        for t in outs {
            t.await;
        }
        exit
    };
    let done = future::or(async { Some(work.await) }, async {
        gone.await;
        None
    })
    .await;
    drop(tasks);
    if let Ok(c) = Rc::try_unwrap(control) {
        c.finish().await;
    }
    let exit = done?;
    Some(match exit {
        None | Some(Ok(0)) => Outcome::Success,
        Some(Ok(code)) => Outcome::ExitCode(code, cmd.to_string()),
        Some(Err(e)) => Outcome::Error(format!("{e:#}")),
    })
}

/// Runs an upgraded WebSocket session of `/exec` or `/attach`.
pub async fn serve_ws<S, F, Fut>(
    io: S,
    buf: Vec<u8>,
    protocol: String,
    req: CommandRequest,
    idle_timeout: Duration,
    start: F,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<StreamProcess>>,
{
    use super::websocket::{demux, Message, Reader, Writer};
    let (r, w) = futures_lite::io::split(io);
    let w = Writer::new(w, idle_timeout, protocol.contains("base64"));
    let v5 = protocol.starts_with("v5.");
    let (stdin_tx, stdin_rx) = channel::bounded::<Vec<u8>>(8);
    let (resize_tx, resize_rx) = channel::bounded::<Vec<u8>>(8);
    let o = req.opts;
    // Demultiplexes the client's messages until it closes.
    let reader = {
        let w = w.clone();
        crate::rt::spawn(async move {
            let mut rd = Reader::new(r, buf);
            let mut stdin_tx = Some(stdin_tx);
            loop {
                match rd.next(&w).await {
                    Ok(Message::Data { text, payload }) => match demux(text, &payload) {
                        Some((0, d)) => {
                            if let Some(tx) = &stdin_tx {
                                if !d.is_empty() && tx.send(d).await.is_err() {
                                    stdin_tx = None;
                                }
                            }
                        }
                        Some((4, d)) => {
                            let _ = resize_tx.send(d).await;
                        }
                        // v5: close a channel (the client's stdin EOF).
                        Some((255, d)) if v5 && d.first() == Some(&0) => stdin_tx = None,
                        _ => {}
                    },
                    Ok(Message::Close) => return,
                    Err(e) => {
                        log::debug!("WebSocket: {e}");
                        return;
                    }
                }
            }
        })
    };
    let cmd = go_list(&req.command);
    let out = Rc::new(WsOut {
        w: w.clone(),
        opts: o,
    });
    let mut reader = reader;
    let proc = future::or(async { Some(start().await) }, async {
        (&mut reader).await;
        None
    })
    .await;
    let outcome = match proc {
        None => return,
        Some(Err(e)) => Outcome::Error(format!("{e:#}")),
        Some(Ok(p)) => {
            let cio = ClientIo {
                out,
                stdin: o.stdin.then_some(stdin_rx),
                resize: o.tty.then_some(resize_rx),
            };
            run(p, cio, &mut reader, req.kind, &cmd)
                .await
                .unwrap_or_else(|| Outcome::Error("client disconnected".into()))
        }
    };
    if let Some(body) = outcome.encode(&protocol) {
        let _ = w.channel(3, body.as_bytes()).await;
    }
    w.close().await;
}

struct WsOut<W> {
    w: Rc<super::websocket::Writer<W>>,
    opts: StreamOptions,
}

impl<W: AsyncWrite + Unpin> Out for WsOut<W> {
    async fn send(&self, s: Stream, data: &[u8]) -> std::io::Result<()> {
        match s {
            Stream::Stdout if self.opts.stdout => self.w.channel(1, data).await,
            Stream::Stderr if self.opts.stderr => self.w.channel(2, data).await,
            _ => Ok(()),
        }
    }
}

/// The 101 response of an upgrade to `upgrade` with the negotiated protocol.
pub fn switching(upgrade: &str, protocol: &str, extra: &[(&str, String)]) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\nDate: {}\r\n",
        http1::http_date(jiff::Timestamp::now())
    );
    if !protocol.is_empty() {
        h += &format!("X-Stream-Protocol-Version: {protocol}\r\n");
    }
    for (k, v) in extra {
        h += &format!("{k}: {v}\r\n");
    }
    h += "\r\n";
    h.into_bytes()
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
    fn requests_parse_as_upstream() {
        let r = parse_request(
            Kind::Exec,
            &["ns", "p", "c"],
            &req("command=sh&command=-c&command=exit+3&input=1&output=1&error=1&tty=1"),
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "exit 3"]);
        assert_eq!(
            r.opts,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        let r = parse_request(Kind::Attach, &["ns", "p", "uid", "c"], &req("stdout=true")).unwrap();
        assert_eq!((r.uid.as_deref(), r.container.as_str()), (Some("uid"), "c"));
        assert_eq!(
            parse_request(Kind::Exec, &["ns", "p", "c"], &req("command=x"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_request(Kind::Exec, &["ns", "p", "c"], &req("stdout=1"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_request(Kind::Exec, &["ns", "p"], &req("stdout=1"))
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn protocol_negotiation() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(
                &c(&["v4.channel.k8s.io", "v3.channel.k8s.io"]),
                SPDY_PROTOCOLS
            )
            .unwrap(),
            "v4.channel.k8s.io"
        );
        assert_eq!(
            negotiate(
                &c(&["v5.channel.k8s.io", "v2.channel.k8s.io"]),
                SPDY_PROTOCOLS
            )
            .unwrap(),
            "v2.channel.k8s.io"
        );
        assert_eq!(negotiate(&[], SPDY_PROTOCOLS).unwrap(), "");
        let e = negotiate(&c(&["v9"]), SPDY_PROTOCOLS).unwrap_err();
        assert_eq!(e.status, 403);
    }

    #[test]
    fn statuses_as_client_go_decodes_them() {
        assert_eq!(
            Outcome::Success.json(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let v: serde_json::Value = serde_json::from_str(
            &Outcome::ExitCode(3, go_list(&["sh".into(), "-c".into(), "exit 3".into()])).json(),
        )
        .unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(
            v["details"]["causes"][0],
            serde_json::json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(
            v["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        assert_eq!(Outcome::Success.encode("v2.channel.k8s.io"), None);
        assert!(Outcome::Error("x".into())
            .encode("channel.k8s.io")
            .unwrap()
            .contains("x"));
    }

    #[test]
    fn resize_objects_stream() {
        let mut b = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(
            take_sizes(&mut b).unwrap(),
            [TerminalSize {
                width: 80,
                height: 24
            }]
        );
        b.extend_from_slice(
            br#""Height":40}
"#,
        );
        assert_eq!(
            take_sizes(&mut b).unwrap(),
            [TerminalSize {
                width: 100,
                height: 40
            }]
        );
        assert!(b.iter().all(|c| c.is_ascii_whitespace()));
        let mut bad = b"]]".to_vec();
        assert!(take_sizes(&mut bad).is_err());
    }
}
