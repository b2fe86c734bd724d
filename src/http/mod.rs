//! HTTP/1.1 over TCP and TLS (rustls with the `ring` provider): the client
//! used for registries, and later the static pod URL, httpGet probes and the
//! API server.
//!
//! One connection per request (`Connection: close`): simple, and a registry
//! pull makes few requests. Response bodies stream (`Body::read`); nothing
//! buffers a whole body unless the caller asks (`read_to_end` with a limit).
//! Redirects are not followed here: the caller decides (a registry client
//! must not send credentials to another host).

pub mod h2;
mod tls;
mod url;

pub use self::tls::{client_config, TlsOptions};
pub use self::url::{query_escape, Url};

use anyhow::{bail, Context, Result};
use async_io::Timer;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::cell::OnceCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};
use std::time::Duration;

/// Client settings. `Default`: 30 s connect and read timeouts, system roots.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Longest wait for any single read (headers or a body chunk).
    pub read_timeout: Duration,
    pub tls: TlsOptions,
    /// Sent as `User-Agent`.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            tls: TlsOptions::default(),
            user_agent: concat!("picolet/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// An HTTP/1.1 client. Cheap to keep; the TLS config is built on first use.
pub struct Client {
    opts: ClientOptions,
    tls: OnceCell<Arc<rustls::ClientConfig>>,
    /// Verify the server's certificate for this name instead of the URL's
    /// host (kubeconfig `tls-server-name`).
    tls_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// A request: method, URL, headers and an optional in-memory body.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, url: Url) -> Self {
        Request {
            method: method.into(),
            url,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn get(url: Url) -> Self {
        Self::new("GET", url)
    }
    /// Adds a header (builder style).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Sets an in-memory body (builder style); Content-Length is added.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

/// A response whose body is still on the wire.
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Header names lower-cased, in arrival order.
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
    /// All values of a header.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Content-Length, when the server sent one.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }
}

impl Client {
    pub fn new(opts: ClientOptions) -> Self {
        Client {
            opts,
            tls: OnceCell::new(),
            tls_name: None,
        }
    }

    /// A client with a ready TLS config (its own CA, client certificate,
    /// ALPN) and optionally a server name to verify instead of the host.
    pub fn with_tls_config(
        opts: ClientOptions,
        cfg: Arc<rustls::ClientConfig>,
        name: Option<rustls::pki_types::ServerName<'static>>,
    ) -> Self {
        Client {
            opts,
            tls: OnceCell::from(cfg),
            tls_name: name,
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        if let Some(c) = self.tls.get() {
            return Ok(c.clone());
        }
        let mut c = tls::client_config(&self.opts.tls)?;
        // This client speaks HTTP/1.1 only, whatever else the options offer.
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        let c = Arc::new(c);
        Ok(self.tls.get_or_init(|| c).clone())
    }

    /// Sends `req` and returns once the status line and headers arrived.
    /// The body streams from `Response::body`.
    pub async fn send(&self, req: Request) -> Result<Response> {
        let url = &req.url;
        let what = format!("{} {}", req.method, url);
        let tcp = connect(&url.host, url.port, self.opts.connect_timeout)
            .await
            .with_context(|| what.clone())?;
        let mut stream = if url.https {
            let cfg = self.tls_config()?;
            let name = match &self.tls_name {
                Some(n) => n.clone(),
                None => self
                    .opts
                    .tls
                    .server_name(&url.host)
                    .with_context(|| what.clone())?,
            };
            let conn = futures_rustls::TlsConnector::from(cfg).connect(name, tcp);
            let tls = with_timeout(self.opts.connect_timeout, conn)
                .await
                .with_context(|| format!("{what}: TLS handshake"))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        let head = request_head(&req, &self.opts.user_agent);
        let write = async {
            stream.write_all(head.as_bytes()).await?;
            if !req.body.is_empty() {
                stream.write_all(&req.body).await?;
            }
            stream.flush().await
        };
        with_timeout(self.opts.read_timeout, write)
            .await
            .with_context(|| format!("{what}: send request"))?;
        let mut buf = Vec::with_capacity(4096);
        let (status, reason, headers, used) = loop {
            let mut tmp = [0u8; 4096];
            let n = with_timeout(self.opts.read_timeout, stream.read(&mut tmp))
                .await
                .with_context(|| format!("{what}: read response"))?;
            if n == 0 {
                bail!("{what}: connection closed before the response headers");
            }
            buf.extend_from_slice(&tmp[..n]);
            if let Some(parsed) = parse_head(&buf).with_context(|| what.clone())? {
                break parsed;
            }
            if buf.len() > 64 * 1024 {
                bail!("{what}: response headers larger than 64 KiB");
            }
        };
        let rest = buf.split_off(used);
        let framing = framing(&req.method, status, &headers).with_context(|| what.clone())?;
        Ok(Response {
            status,
            reason,
            headers,
            body: Body {
                stream: Some(stream),
                buf: rest,
                pos: 0,
                framing,
                timeout: self.opts.read_timeout,
                what,
            },
        })
    }
}

fn request_head(req: &Request, ua: &str) -> String {
    let u = &req.url;
    let default_port = if u.https { 443 } else { 80 };
    let host = if u.host.contains(':') {
        format!("[{}]", u.host)
    } else {
        u.host.clone()
    };
    let has = |n: &str| req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut h = format!("{} {} HTTP/1.1\r\n", req.method, u.path_and_query);
    // A caller's Host header (probes allow one) replaces the URL's.
    if !has("host") {
        h += &format!("Host: {host}");
        if u.port != default_port {
            h += &format!(":{}", u.port);
        }
        h += "\r\n";
    }
    if !has("user-agent") {
        h += &format!("User-Agent: {ua}\r\n");
    }
    for (k, v) in &req.headers {
        h += &format!("{k}: {v}\r\n");
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        h += &format!("Content-Length: {}\r\n", req.body.len());
    }
    h += "Connection: close\r\n\r\n";
    h
}

type Head = (u16, String, Vec<(String, String)>, usize);

/// Parses the status line and headers; `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let mut hdrs = [httparse::EMPTY_HEADER; 96];
    let mut r = httparse::Response::new(&mut hdrs);
    match r.parse(buf).context("malformed HTTP response")? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(n) => {
            let headers = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect();
            Ok(Some((
                r.code.unwrap_or(0),
                r.reason.unwrap_or("").to_string(),
                headers,
                n,
            )))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes remain.
    Length(u64),
    /// Chunked: bytes left in the current chunk, or waiting for a chunk header.
    Chunked { left: u64, done: bool },
    /// Until the server closes the connection.
    Close,
}

/// How the body is delimited (RFC 9112 §6.3).
fn framing(method: &str, status: u16, headers: &[(String, String)]) -> Result<Framing> {
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Framing::Length(0));
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if let Some(te) = get("transfer-encoding") {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|l| l.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked {
                left: 0,
                done: false,
            });
        }
        return Ok(Framing::Close);
    }
    if let Some(cl) = get("content-length") {
        let n = cl
            .trim()
            .parse::<u64>()
            .with_context(|| format!("invalid Content-Length {cl:?}"))?;
        return Ok(Framing::Length(n));
    }
    Ok(Framing::Close)
}

/// A streaming response body. Reads time out after the client's read timeout.
pub struct Body {
    stream: Option<Stream>,
    buf: Vec<u8>,
    pos: usize,
    framing: Framing,
    timeout: Duration,
    what: String,
}

impl Body {
    /// Reads up to `out.len()` bytes of the body; 0 means the body ended.
    /// A connection that closes early is an `UnexpectedEof` error.
    pub async fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.framing {
                Framing::Length(0) => return Ok(0),
                Framing::Length(left) => {
                    let max = out.len().min(left.min(usize::MAX as u64) as usize);
                    let n = self.raw_read(&mut out[..max]).await?;
                    if n == 0 {
                        return Err(self.eof(left));
                    }
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(n);
                }
                Framing::Close => return self.raw_read(out).await,
                Framing::Chunked { done: true, .. } => return Ok(0),
                Framing::Chunked { left: 0, .. } => {
                    let line = self.read_line().await?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: bad chunk size {line:?}", self.what),
                        )
                    })?;
                    if size == 0 {
                        // trailers, then the empty line
                        while !self.read_line().await?.is_empty() {}
                        self.framing = Framing::Chunked {
                            left: 0,
                            done: true,
                        };
                        return Ok(0);
                    }
                    self.framing = Framing::Chunked {
                        left: size,
                        done: false,
                    };
                }
                Framing::Chunked { left, .. } => {
                    let max = out.len().min(left.min(usize::MAX as u64) as usize);
                    let n = self.raw_read(&mut out[..max]).await?;
                    if n == 0 {
                        return Err(self.eof(left));
                    }
                    let left = left - n as u64;
                    if left == 0 {
                        let l = self.read_line().await?;
                        if !l.is_empty() {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("{}: missing CRLF after chunk", self.what),
                            ));
                        }
                    }
                    self.framing = Framing::Chunked { left, done: false };
                    return Ok(n);
                }
            }
        }
    }

    /// Reads the whole body, failing when it exceeds `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        let mut tmp = [0u8; 8192];
        loop {
            let n = self
                .read(&mut tmp)
                .await
                .with_context(|| format!("{}: read body", self.what))?;
            if n == 0 {
                return Ok(v);
            }
            if v.len() + n > limit {
                bail!("{}: body larger than {limit} bytes", self.what);
            }
            v.extend_from_slice(&tmp[..n]);
        }
    }

    /// Reads the whole body as UTF-8 (lossy), up to `limit` bytes.
    pub async fn read_to_string(&mut self, limit: usize) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read_to_end(limit).await?).into_owned())
    }

    fn eof(&self, left: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{}: connection closed with {left} body bytes missing",
                self.what
            ),
        )
    }

    /// Reads from the buffer first, then from the connection.
    async fn raw_read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.buf.len() {
            let n = out.len().min(self.buf.len() - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.buf.len() {
                self.buf = Vec::new();
                self.pos = 0;
            }
            return Ok(n);
        }
        let Some(s) = self.stream.as_mut() else {
            return Ok(0);
        };
        match with_timeout(self.timeout, s.read(out)).await {
            Ok(n) => Ok(n),
            // A TLS peer that closes without close_notify: treat as EOF, the
            // framing decides whether the body is complete.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", self.what))),
        }
    }

    /// One CRLF-terminated line (without the CRLF), at most 4 KiB.
    async fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if self.raw_read(&mut b).await? == 0 {
                return Err(self.eof(1));
            }
            if b[0] == b'\n' {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            line.push(b[0]);
            if line.len() > 4096 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: chunk header too long", self.what),
                ));
            }
        }
    }
}

/// Runs `fut`, failing with `TimedOut` after `d`.
pub(crate) async fn with_timeout<T>(
    d: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    futures_lite::future::or(fut, async {
        Timer::after(d).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("timed out after {}", crate::util::duration::format(d)),
        ))
    })
    .await
}

pub(crate) async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<smol::net::TcpStream> {
    let addrs = with_timeout(timeout, smol::net::resolve((host, port)))
        .await
        .with_context(|| format!("resolve host {host:?}"))?;
    if addrs.is_empty() {
        bail!("resolve host {host:?}: no addresses");
    }
    let mut last = None;
    for a in addrs {
        match with_timeout(timeout, smol::net::TcpStream::connect(a)).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("connect {a}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("connect {host}:{port}")))
}

enum Stream {
    Plain(smol::net::TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<smol::net::TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_rules() {
        let h = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            framing("GET", 200, &h(&[("content-length", "5")])).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            framing("HEAD", 200, &h(&[("content-length", "5")])).unwrap(),
            Framing::Length(0)
        );
        assert_eq!(
            framing(
                "GET",
                200,
                &h(&[
                    ("transfer-encoding", "gzip, chunked"),
                    ("content-length", "5")
                ])
            )
            .unwrap(),
            Framing::Chunked {
                left: 0,
                done: false
            }
        );
        assert_eq!(framing("GET", 200, &[]).unwrap(), Framing::Close);
        assert!(framing("GET", 200, &h(&[("content-length", "x")])).is_err());
    }

    #[test]
    fn head_parsing() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nA: b").unwrap().is_none());
        let (s, r, h, n) = parse_head(b"HTTP/1.1 404 Not Found\r\nX-Y: z \r\n\r\nbody")
            .unwrap()
            .unwrap();
        assert_eq!((s, r.as_str(), n), (404, "Not Found", 35));
        assert_eq!(h, vec![("x-y".to_string(), "z".to_string())]);
    }

    #[test]
    fn request_head_has_host_and_close() {
        let u = Url::parse("http://127.0.0.1:5000/v2/?a=b").unwrap();
        let r = Request::get(u).header("Accept", "x");
        let h = request_head(&r, "ua");
        assert!(h.starts_with("GET /v2/?a=b HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"));
        assert!(h.contains("Accept: x\r\n") && h.ends_with("Connection: close\r\n\r\n"));
        let u = Url::parse("https://example.com/x").unwrap();
        assert!(request_head(&Request::get(u), "ua").contains("Host: example.com\r\n"));
        let u = Url::parse("http://10.0.0.1:8080/x").unwrap();
        let h = request_head(&Request::get(u).header("Host", "web.local"), "ua");
        assert!(
            h.contains("\r\nHost: web.local\r\n") && !h.contains("10.0.0.1"),
            "{h}"
        );
    }

    /// Serves one canned response on an ephemeral loopback port.
    fn serve_once(resp: &'static [u8], hold: Duration) -> Url {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 4096];
            let _ = c.read(&mut b);
            let _ = c.write_all(resp);
            std::thread::sleep(hold);
        });
        Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap()
    }

    fn client() -> Client {
        Client::new(ClientOptions {
            read_timeout: Duration::from_millis(150),
            ..Default::default()
        })
    }

    #[test]
    fn reads_chunked_bodies() {
        let u = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nT: x\r\n\r\n",
            Duration::ZERO,
        );
        let body = crate::rt::block_on(async {
            let mut r = client().send(Request::get(u)).await.unwrap();
            assert_eq!(r.status, 200);
            r.body.read_to_string(100).await.unwrap()
        });
        assert_eq!(body, "hello world");
    }

    #[test]
    fn short_body_is_an_error_and_limits_hold() {
        let u = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            Duration::ZERO,
        );
        let e = crate::rt::block_on(async {
            let mut r = client().send(Request::get(u)).await.unwrap();
            assert_eq!(r.content_length(), Some(10));
            r.body.read_to_end(100).await.unwrap_err()
        });
        assert!(format!("{e:#}").contains("7 body bytes missing"), "{e:#}");
        let u = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            Duration::ZERO,
        );
        let e = crate::rt::block_on(async {
            let mut r = client().send(Request::get(u)).await.unwrap();
            r.body.read_to_end(5).await.unwrap_err()
        });
        assert!(format!("{e:#}").contains("larger than 5"), "{e:#}");
    }

    #[test]
    fn stalled_server_times_out() {
        let u = serve_once(b"HTTP/1.1 200 OK\r\n", Duration::from_millis(600));
        let e = crate::rt::block_on(async { client().send(Request::get(u)).await.err().unwrap() });
        assert!(format!("{e:#}").contains("timed out"), "{e:#}");
    }
}
