//! HTTP/2 clients (RFC 9113, HPACK RFC 7541).
//!
//! - [`conn`]: the multiplexed connection the API client keeps to the API
//!   server (every request and watch on one TLS connection, ALPN `h2`).
//! - [`request`] (here): one request on a fresh cleartext connection ("h2c
//!   with prior knowledge", §3.3), what a gRPC unary call needs (the grpc
//!   probe; upstream dials with insecure credentials).
//! - [`frame`] and [`hpack`]: framing and header compression for both,
//!   and for the kubelet port's HTTP/2 server (`crate::server::h2`).
//!
//! The one-request client: the connection preface, SETTINGS and their ACK,
//! one stream (id 1) with HEADERS (HPACK literals, no indexing) and DATA,
//! then the response HEADERS, DATA and trailers. PING is answered, received
//! DATA is credited back with WINDOW_UPDATE, GOAWAY (for our stream or with
//! an error) and RST_STREAM end the call with the peer's error code. It does
//! not do server push (disabled in our SETTINGS), request bodies larger than
//! the default window (the request is written whole, before the peer's
//! SETTINGS), or priorities. The caller bounds the exchange with a timeout.

pub mod conn;
pub mod frame;
pub mod hpack;

pub use conn::{connect_tls, Body, ConnOptions, Connection};

use self::frame::*;
use self::hpack::{encode_literal, Decoder};
use anyhow::{bail, Context, Result};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Stream of the one request.
const STREAM: u32 = 1;
/// Largest header block (all fragments) accepted from the peer.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// One request on a fresh connection.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// `http` (this client does not do TLS).
    pub scheme: String,
    /// `host:port`
    pub authority: String,
    pub path: String,
    /// Regular headers, lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Fail when the response body grows past this.
    pub max_body: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The first header block (pseudo-headers removed).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The trailing header block, if any.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// A header from the trailers, else from the headers (gRPC's
    /// trailers-only responses put `grpc-status` in the headers).
    pub fn trailer_or_header(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .chain(self.headers.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `req` as stream 1 on a connection that has just been opened and
/// reads the whole response. The caller owns timeouts.
pub async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    req: &Request,
) -> Result<Response> {
    let mut out = Vec::with_capacity(256 + req.body.len());
    out.extend_from_slice(PREFACE);
    frame(
        &mut out,
        SETTINGS,
        0,
        0,
        &settings_payload(&[(SETTINGS_ENABLE_PUSH, 0)]),
    );
    let block = encode_request_headers(req);
    let end = if req.body.is_empty() { END_STREAM } else { 0 };
    // One HEADERS frame (no CONTINUATION): our blocks are small.
    if block.len() > DEFAULT_MAX_FRAME {
        bail!("HTTP/2 request headers larger than {DEFAULT_MAX_FRAME} bytes");
    }
    frame(&mut out, HEADERS, END_HEADERS | end, STREAM, &block);
    if req.body.len() > DEFAULT_WINDOW as usize {
        bail!("HTTP/2 request body larger than the initial flow-control window");
    }
    let chunks: Vec<&[u8]> = req.body.chunks(DEFAULT_MAX_FRAME).collect();
    for (i, c) in chunks.iter().enumerate() {
        let f = if i + 1 == chunks.len() { END_STREAM } else { 0 };
        frame(&mut out, DATA, f, STREAM, c);
    }
    io.write_all(&out).await.context("write HTTP/2 request")?;
    io.flush().await.context("write HTTP/2 request")?;

    let mut conn = Conn::default();
    loop {
        let f = read_frame(io, DEFAULT_MAX_FRAME)
            .await
            .map_err(|e| anyhow::anyhow!("HTTP/2: {e}"))?;
        let mut reply = Vec::new();
        let done = conn.on_frame(f, &mut reply, req.max_body)?;
        if !reply.is_empty() {
            io.write_all(&reply).await.context("write HTTP/2 frame")?;
            io.flush().await.context("write HTTP/2 frame")?;
        }
        if done {
            break;
        }
    }
    // Politely end the connection; errors here do not matter.
    let mut bye = Vec::new();
    frame(&mut bye, GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
    let _ = io.write_all(&bye).await;
    let _ = io.flush().await;
    conn.response
        .context("HTTP/2 stream ended without a response")
}

fn encode_request_headers(req: &Request) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in [
        (":method", req.method.as_str()),
        (":scheme", req.scheme.as_str()),
        (":authority", req.authority.as_str()),
        (":path", req.path.as_str()),
    ] {
        encode_literal(&mut b, k, v);
    }
    for (k, v) in &req.headers {
        encode_literal(&mut b, &k.to_ascii_lowercase(), v);
    }
    b
}

/// Connection and stream state while reading the response.
#[derive(Default)]
struct Conn {
    decoder: Decoder,
    /// Header block fragments of the HEADERS being continued.
    pending: Option<(Vec<u8>, bool)>,
    got_headers: bool,
    response: Option<Response>,
}

impl Conn {
    /// Handles one frame; appends frames to send to `reply`. Returns true
    /// when the stream is complete.
    fn on_frame(&mut self, f: Frame, reply: &mut Vec<u8>, max_body: usize) -> Result<bool> {
        if self.pending.is_some() && f.kind != CONTINUATION {
            bail!("HTTP/2 protocol error: expected CONTINUATION");
        }
        match f.kind {
            SETTINGS => {
                if f.stream != 0 || f.payload.len() % 6 != 0 {
                    bail!("HTTP/2 protocol error: malformed SETTINGS");
                }
                if f.flags & ACK == 0 {
                    // Nothing to apply: the request went out whole with the
                    // preface (it fits the default window and frame size),
                    // and we never index headers, so the peer's table size
                    // does not matter.
                    frame(reply, SETTINGS, ACK, 0, &[]);
                }
                Ok(false)
            }
            PING => {
                if f.payload.len() != 8 {
                    bail!("HTTP/2 protocol error: PING of {} bytes", f.payload.len());
                }
                if f.flags & ACK == 0 {
                    frame(reply, PING, ACK, 0, &f.payload);
                }
                Ok(false)
            }
            WINDOW_UPDATE => {
                // Credit for sending; our request is already sent whole.
                if f.payload.len() != 4 {
                    bail!("HTTP/2 protocol error: malformed WINDOW_UPDATE");
                }
                Ok(false)
            }
            GOAWAY => {
                if f.payload.len() < 8 {
                    bail!("HTTP/2 protocol error: malformed GOAWAY");
                }
                let last =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
                        & 0x7fff_ffff;
                let code =
                    u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
                if last < STREAM || code != 0 {
                    let debug = String::from_utf8_lossy(&f.payload[8..]);
                    bail!(
                        "HTTP/2 GOAWAY from the server: {} {debug}",
                        error_code_name(code)
                    );
                }
                // Our stream was accepted: keep reading its response.
                Ok(false)
            }
            RST_STREAM if f.stream == STREAM => {
                let code = f
                    .payload
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                bail!(
                    "HTTP/2 stream reset by the server: {}",
                    error_code_name(code)
                )
            }
            PUSH_PROMISE => bail!("HTTP/2 protocol error: PUSH_PROMISE although push is disabled"),
            HEADERS => {
                let end_stream = f.flags & END_STREAM != 0;
                let frag = strip_padding_and_priority(&f)
                    .context("HTTP/2 protocol error: malformed HEADERS padding")?;
                if f.stream != STREAM {
                    // Keep the HPACK state in step, ignore the content.
                    self.decoder.decode(frag)?;
                    return Ok(false);
                }
                if f.flags & END_HEADERS == 0 {
                    self.pending = Some((frag.to_vec(), end_stream));
                    return Ok(false);
                }
                let block = frag.to_vec();
                self.on_header_block(&block, end_stream)
            }
            CONTINUATION => {
                let Some((mut block, end_stream)) = self.pending.take() else {
                    bail!("HTTP/2 protocol error: unexpected CONTINUATION");
                };
                block.extend_from_slice(&f.payload);
                if block.len() > MAX_HEADER_BLOCK {
                    bail!("HTTP/2 header block larger than {MAX_HEADER_BLOCK} bytes");
                }
                if f.flags & END_HEADERS == 0 {
                    self.pending = Some((block, end_stream));
                    return Ok(false);
                }
                self.on_header_block(&block, end_stream)
            }
            DATA if f.stream == STREAM => {
                let data = strip_padding_and_priority(&f)
                    .context("HTTP/2 protocol error: malformed DATA padding")?;
                let Some(resp) = self.response.as_mut() else {
                    bail!("HTTP/2 protocol error: DATA before HEADERS");
                };
                if resp.body.len() + data.len() > max_body {
                    bail!("HTTP/2 response body larger than {max_body} bytes");
                }
                resp.body.extend_from_slice(data);
                let end = f.flags & END_STREAM != 0;
                // Credit the whole frame (padding included) back, so a
                // large body keeps flowing.
                let n = f.payload.len() as u32;
                if n > 0 && !end {
                    frame(reply, WINDOW_UPDATE, 0, 0, &n.to_be_bytes());
                    frame(reply, WINDOW_UPDATE, 0, STREAM, &n.to_be_bytes());
                }
                Ok(end)
            }
            // Frames of other streams and unknown types are ignored.
            _ => Ok(false),
        }
    }

    fn on_header_block(&mut self, block: &[u8], end_stream: bool) -> Result<bool> {
        let fields = self.decoder.decode(block)?;
        if !self.got_headers {
            self.got_headers = true;
            let mut resp = Response::default();
            for (k, v) in fields {
                if k == ":status" {
                    resp.status = v
                        .parse()
                        .with_context(|| format!("HTTP/2 invalid :status {v:?}"))?;
                } else if !k.starts_with(':') {
                    resp.headers.push((k, v));
                }
            }
            if resp.status == 0 {
                bail!("HTTP/2 response without :status");
            }
            self.response = Some(resp);
        } else {
            if !end_stream {
                bail!("HTTP/2 protocol error: trailers without END_STREAM");
            }
            if let Some(r) = self.response.as_mut() {
                r.trailers = fields
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with(':'))
                    .collect();
            }
        }
        Ok(end_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn literals_round_trip_through_the_decoder() {
        let req = Request {
            method: "POST".into(),
            scheme: "http".into(),
            authority: "10.0.0.1:50051".into(),
            path: "/grpc.health.v1.Health/Check".into(),
            headers: vec![("TE".into(), "trailers".into())],
            body: vec![],
            max_body: 0,
        };
        let mut long = "x".repeat(300);
        long.push('y');
        let mut b = encode_request_headers(&req);
        encode_literal(&mut b, "x-long", &long);
        let h = Decoder::default().decode(&b).unwrap();
        assert_eq!(h[0], (":method".into(), "POST".into()));
        assert_eq!(
            h[3],
            (":path".into(), "/grpc.health.v1.Health/Check".into())
        );
        assert_eq!(h[4], ("te".into(), "trailers".into()));
        assert_eq!(h[5].1, long);
    }

    /// Frames a server would send, as bytes.
    fn server_frames(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (k, f, s, p) in frames {
            frame(&mut v, *k, *f, *s, p);
        }
        v
    }

    /// A duplex in-memory stream: reads from `input`, records writes.
    struct Mock {
        input: std::io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }
    impl AsyncRead for Mock {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(std::io::Read::read(&mut self.input, buf))
        }
    }
    impl AsyncWrite for Mock {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.written.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn req() -> Request {
        Request {
            method: "POST".into(),
            scheme: "http".into(),
            authority: "a:1".into(),
            path: "/p".into(),
            headers: vec![],
            body: b"hello".to_vec(),
            max_body: 1024,
        }
    }

    fn run(input: Vec<u8>) -> (Result<Response>, Vec<u8>) {
        let mut m = Mock {
            input: std::io::Cursor::new(input),
            written: Vec::new(),
        };
        let r = futures_lite::future::block_on(request(&mut m, &req()));
        (r, m.written)
    }

    fn lit(name: &str, value: &str) -> Vec<u8> {
        let mut b = Vec::new();
        encode_literal(&mut b, name, value);
        b
    }

    #[test]
    fn exchange_with_padding_continuation_ping_and_trailers() {
        let mut hdr = vec![0x88]; // :status 200 (static)
        hdr.extend(lit("content-type", "application/grpc"));
        let (h1, h2) = hdr.split_at(3);
        let mut padded_data = vec![2u8];
        padded_data.extend_from_slice(b"body");
        padded_data.extend_from_slice(&[0, 0]);
        let input = server_frames(&[
            (
                SETTINGS,
                0,
                0,
                settings_payload(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]),
            ),
            (SETTINGS, ACK, 0, vec![]),
            (PING, 0, 0, b"12345678".to_vec()),
            (HEADERS, 0, STREAM, h1.to_vec()),
            (CONTINUATION, END_HEADERS, STREAM, h2.to_vec()),
            (DATA, PADDED, STREAM, padded_data),
            (0xfa, 0, 0, vec![1, 2, 3]), // unknown type: ignored
            (
                HEADERS,
                END_HEADERS | END_STREAM,
                STREAM,
                lit("grpc-status", "0"),
            ),
        ]);
        let (r, written) = run(input);
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers, pairs(&[("content-type", "application/grpc")]));
        assert_eq!(r.body, b"body");
        assert_eq!(r.trailer_or_header("grpc-status"), Some("0"));
        assert!(written.starts_with(PREFACE));
        // Our SETTINGS ACK and PING ACK were sent, and the DATA credited.
        let acks = server_frames(&[(SETTINGS, ACK, 0, vec![])]);
        assert!(written.windows(acks.len()).any(|w| w == acks));
        let pong = server_frames(&[(PING, ACK, 0, b"12345678".to_vec())]);
        assert!(written.windows(pong.len()).any(|w| w == pong));
        let wu = server_frames(&[(WINDOW_UPDATE, 0, STREAM, 7u32.to_be_bytes().to_vec())]);
        assert!(written.windows(wu.len()).any(|w| w == wu));
        // The request body went out with END_STREAM.
        let data = server_frames(&[(DATA, END_STREAM, STREAM, b"hello".to_vec())]);
        assert!(written.windows(data.len()).any(|w| w == data));
    }

    #[test]
    fn trailers_only_response() {
        let mut hdr = vec![0x88];
        hdr.extend(lit("grpc-status", "12"));
        let (r, _) = run(server_frames(&[(
            HEADERS,
            END_HEADERS | END_STREAM,
            STREAM,
            hdr,
        )]));
        let r = r.unwrap();
        assert_eq!(r.trailer_or_header("grpc-status"), Some("12"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn resets_goaway_and_eof_are_errors() {
        let (r, _) = run(server_frames(&[(
            RST_STREAM,
            0,
            STREAM,
            7u32.to_be_bytes().to_vec(),
        )]));
        assert!(format!("{:#}", r.unwrap_err()).contains("REFUSED_STREAM"));
        let (r, _) = run(server_frames(&[(
            GOAWAY,
            0,
            0,
            [0, 0, 0, 0, 0, 0, 0, 1, b'x'].to_vec(),
        )]));
        assert!(format!("{:#}", r.unwrap_err()).contains("PROTOCOL_ERROR x"));
        let (r, _) = run(server_frames(&[(SETTINGS, 0, 0, vec![])]));
        assert!(format!("{:#}", r.unwrap_err()).contains("connection closed"));
        // Body limit.
        let mut big = server_frames(&[(HEADERS, END_HEADERS, STREAM, vec![0x88])]);
        big.extend(server_frames(&[(DATA, 0, STREAM, vec![0; 2000])]));
        let (r, _) = run(big);
        assert!(format!("{:#}", r.unwrap_err()).contains("larger than 1024"));
    }
}
