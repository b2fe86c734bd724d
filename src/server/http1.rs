//! HTTP/1.1 server side: request heads, replies, chunked bodies, query
//! strings and timeouts, over any byte stream (plain TCP or TLS).

use async_io::Timer;
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::time::{Duration, Instant};

/// A parsed request head (header names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    /// Percent-encoded path as sent.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub keep_alive: bool,
    pub content_length: usize,
    pub chunked: bool,
}

impl Request {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated token of every instance of a header, trimmed.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Query parameters, decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        query_pairs(&self.query)
    }

    /// The last value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .next_back()
    }

    /// `Upgrade` requested with this protocol (case-insensitive prefix match).
    pub fn wants_upgrade(&self, proto: &str) -> bool {
        let conn = self
            .header_tokens("connection")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade"));
        conn && self.header("upgrade").is_some_and(|u| {
            u.to_ascii_lowercase()
                .starts_with(&proto.to_ascii_lowercase())
        })
    }
}

/// Parses a complete request head; `Ok(None)` while incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, &'static str> {
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut hdrs);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Err("too many headers"),
        Err(_) => return Err("malformed request"),
    };
    let target = r.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let mut req = Request {
        method: r.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        ..Default::default()
    };
    let conn: Vec<String> = req
        .header_tokens("connection")
        .into_iter()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    req.keep_alive = match r.version {
        Some(1) => !conn.iter().any(|t| t == "close"),
        _ => conn.iter().any(|t| t == "keep-alive"),
    };
    req.content_length = match req.header("content-length") {
        Some(v) => v.parse().map_err(|_| "invalid Content-Length")?,
        None => 0,
    };
    req.chunked = req.header("transfer-encoding").is_some();
    Ok(Some((req, n)))
}

/// Decodes `%XX` escapes (and `+` as space when `plus`); `None` when an
/// escape is malformed.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `a=1&b=x%20y&c` -> [(a,1),(b,"x y"),(c,"")]; malformed pairs are skipped.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// The decoded path segments; `None` if a segment does not decode or is
/// `.`/`..` or holds a `/` (never a way out of the name it stands for).
pub fn segments(path: &str) -> Option<Vec<String>> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let d = percent_decode(s, false)?;
            (d != "." && d != ".." && !d.contains('/') && !d.contains('\0')).then_some(d)
        })
        .collect()
}

/// A response ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub extra: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            extra: vec![("X-Content-Type-Options", "nosniff".into())],
        }
    }
    pub fn json(body: Vec<u8>) -> Self {
        Reply {
            status: 200,
            content_type: "application/json",
            body,
            extra: vec![],
        }
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

pub fn encode(r: &Reply, head_only: bool, keep_alive: bool) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nDate: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len(),
        http_date(jiff::Timestamp::now()),
    );
    for (k, v) in &r.extra {
        h += &format!("{k}: {v}\r\n");
    }
    if !keep_alive {
        h += "Connection: close\r\n";
    }
    h += "\r\n";
    let mut out = h.into_bytes();
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    out
}

/// The head of a chunked streaming response (the connection closes after it).
pub fn chunked_head(status: u16, content_type: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\
         Date: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        reason(status),
        http_date(jiff::Timestamp::now())
    )
    .into_bytes()
}

/// Appends one chunk of a chunked body (nothing for empty data: an empty
/// chunk ends the body).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// RFC 9110 IMF-fixdate.
pub fn http_date(t: jiff::Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

pub async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    future::or(f, async {
        Timer::after(d).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await
}

/// Writes all of `data` and flushes, within `d`.
pub async fn write_all<S: AsyncWrite + Unpin>(
    s: &mut S,
    data: &[u8],
    d: Duration,
) -> std::io::Result<()> {
    timed(d, async {
        s.write_all(data).await?;
        s.flush().await
    })
    .await
}

/// What waiting for the next request head gave.
pub enum Next {
    Request(Request),
    /// The peer closed, or stayed idle too long: end quietly.
    Closed,
    /// A reply to send before closing (400, 408, 431).
    Reject(Reply),
}

/// Reads the next request head into `buf` (which keeps any bytes after
/// it). `first`: the head deadline runs from now, else from its first byte
/// (idle time before that is bounded by `idle`).
pub async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    first: bool,
    head_timeout: Duration,
    idle: Duration,
    max_head: usize,
) -> std::io::Result<Next> {
    let mut deadline = first.then(|| Instant::now() + head_timeout);
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    return Ok(Next::Request(req));
                }
                Ok(None) => {}
                Err(e) => {
                    return Ok(Next::Reject(Reply::text(
                        400,
                        format!("400 Bad Request: {e}\n"),
                    )))
                }
            }
            if buf.len() > max_head {
                return Ok(Next::Reject(Reply::text(
                    431,
                    "431 Request Header Fields Too Large\n",
                )));
            }
            deadline.get_or_insert_with(|| Instant::now() + head_timeout);
        }
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => idle,
        };
        let mut tmp = [0u8; 2048];
        let n = match timed(wait, s.read(&mut tmp)).await {
            Ok(0) => return Ok(Next::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if deadline.is_some() && !buf.is_empty() {
                    return Ok(Next::Reject(Reply::text(408, "408 Request Timeout\n")));
                }
                return Ok(Next::Closed);
            }
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Reads and drops a request body of `len` bytes (bodies are small and
/// unused here), leaving any bytes after it in `buf`.
pub async fn discard_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    len: usize,
    d: Duration,
) -> std::io::Result<bool> {
    while buf.len() < len {
        let mut tmp = [0u8; 2048];
        let n = timed(d, s.read(&mut tmp)).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    buf.drain(..len);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_with_keep_alive_rules() {
        let (h, n) = parse_head(b"GET /healthz?verbose HTTP/1.1\r\nHost: x\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.path.as_str(), h.query.as_str(), h.keep_alive, n),
            ("/healthz", "verbose", true, 42)
        );
        let (h, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let (h, _) = parse_head(b"POST /pods HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.method.as_str(), h.content_length), ("POST", 5));
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        assert!(parse_head(b"\x00\x01 garbage\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn upgrade_and_tokens() {
        let (h, _) = parse_head(
            b"POST /exec/a/b/c HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
              X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io, channel.k8s.io\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.wants_upgrade("spdy/3.1"));
        assert!(!h.wants_upgrade("websocket"));
        assert_eq!(
            h.header_tokens("x-stream-protocol-version"),
            ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]
        );
    }

    #[test]
    fn queries_and_segments_decode() {
        assert_eq!(
            query_pairs("command=sh&command=-c&command=echo+hi%21&tty&x=%zz"),
            vec![
                ("command".to_string(), "sh".to_string()),
                ("command".into(), "-c".into()),
                ("command".into(), "echo hi!".into()),
                ("tty".into(), "".into()),
            ]
        );
        assert_eq!(
            segments("/containerLogs/ns/p%2Dx/c").unwrap(),
            ["containerLogs", "ns", "p-x", "c"]
        );
        assert!(segments("/containerLogs/ns/%2E%2E/c").is_none());
        assert!(segments("/containerLogs/ns/a%2Fb/c").is_none());
        assert!(segments("/x/..").is_none());
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        push_chunk(&mut out, b"hello");
        push_chunk(&mut out, b"");
        assert_eq!(out, b"5\r\nhello\r\n");
    }
}
