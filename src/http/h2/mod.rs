//! A minimal HTTP/2 client for one request per connection over cleartext
//! TCP ("h2c with prior knowledge", RFC 9113 §3.3): what a gRPC unary call
//! needs (the grpc probe; upstream dials with insecure credentials).
//!
//! What it does: the connection preface, SETTINGS and their ACK, one
//! stream (id 1) with HEADERS (HPACK literals, no indexing) and DATA, then
//! reads the response HEADERS, DATA and trailers, decoding HPACK with
//! Huffman strings and the dynamic table (RFC 7541). PING is answered,
//! received DATA is credited back with WINDOW_UPDATE, GOAWAY (for our
//! stream or with an error) and RST_STREAM end the call with the peer's
//! error code.
//!
//! What it does not: several streams, server push (disabled in our
//! SETTINGS), request bodies larger than the default window (the request
//! is written whole, before the peer's SETTINGS), priorities. The caller
//! bounds the whole exchange with a timeout.

use anyhow::{bail, Context, Result};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::collections::VecDeque;
use std::sync::OnceLock;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

// Settings identifiers.
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
#[cfg(test)]
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// The protocol defaults, which are also what we advertise for receiving.
const DEFAULT_WINDOW: i64 = 65_535;
const DEFAULT_MAX_FRAME: usize = 16_384;
const HEADER_TABLE_SIZE: usize = 4_096;
/// Largest header block (all fragments) accepted from the peer.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
const STREAM: u32 = 1;

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
    if req.body.len() as i64 > DEFAULT_WINDOW {
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
        let f = read_frame(io).await?;
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

/// A received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> Result<Frame> {
    let mut h = [0u8; 9];
    io.read_exact(&mut h)
        .await
        .context("read HTTP/2 frame header (connection closed?)")?;
    let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
    if len > DEFAULT_MAX_FRAME {
        bail!("HTTP/2 frame of {len} bytes exceeds our SETTINGS_MAX_FRAME_SIZE");
    }
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload)
        .await
        .context("read HTTP/2 frame payload")?;
    Ok(Frame {
        kind: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        payload,
    })
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let n = payload.len();
    out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

fn settings_payload(s: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::with_capacity(s.len() * 6);
    for (id, v) in s {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    p
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

/// "Literal Header Field without Indexing — New Name", raw strings.
fn encode_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    encode_int(out, 7, 0, name.len());
    out.extend_from_slice(name.as_bytes());
    encode_int(out, 7, 0, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix; `first` holds the bits
/// above the prefix.
fn encode_int(out: &mut Vec<u8>, n: u8, first: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
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
                let frag = strip_padding_and_priority(&f)?;
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
                let data = strip_padding_and_priority(&f)?;
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

/// The payload of a DATA or HEADERS frame without padding (and, for
/// HEADERS, the priority fields).
fn strip_padding_and_priority(f: &Frame) -> Result<&[u8]> {
    let mut p = &f.payload[..];
    let mut pad = 0usize;
    if f.flags & PADDED != 0 {
        let Some((&n, rest)) = p.split_first() else {
            bail!("HTTP/2 protocol error: empty padded frame");
        };
        pad = n as usize;
        p = rest;
    }
    if f.kind == HEADERS && f.flags & PRIORITY != 0 {
        if p.len() < 5 {
            bail!("HTTP/2 protocol error: short HEADERS priority");
        }
        p = &p[5..];
    }
    if pad > p.len() {
        bail!("HTTP/2 protocol error: padding longer than the frame");
    }
    Ok(&p[..p.len() - pad])
}

fn error_code_name(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("error code {code:#x}"), |s| s.to_string())
}

// ---------------------------------------------------------------------------
// HPACK decoding (RFC 7541)

/// The static table (Appendix A), 1-based in the protocol.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// An HPACK decoder with its dynamic table.
pub struct Decoder {
    /// Newest first.
    table: VecDeque<(String, String)>,
    size: usize,
    max_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: HEADER_TABLE_SIZE,
        }
    }
}

fn entry_size(n: &str, v: &str) -> usize {
    n.len() + v.len() + 32
}

impl Decoder {
    /// Decodes one complete header block into (name, value) pairs.
    pub fn decode(&mut self, mut b: &[u8]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut size_update_allowed = true;
        while let Some(&first) = b.first() {
            if first & 0x80 != 0 {
                // Indexed Header Field.
                let (i, rest) = decode_int(b, 7)?;
                b = rest;
                out.push(self.lookup(i)?);
            } else if first & 0xc0 == 0x40 {
                // Literal with Incremental Indexing.
                let (name, value, rest) = self.literal(b, 6)?;
                b = rest;
                self.insert(name.clone(), value.clone());
                out.push((name, value));
            } else if first & 0xe0 == 0x20 {
                // Dynamic Table Size Update: only at the block's start.
                if !size_update_allowed {
                    bail!("HPACK: table size update after a header field");
                }
                let (n, rest) = decode_int(b, 5)?;
                b = rest;
                if n > HEADER_TABLE_SIZE {
                    bail!("HPACK: table size {n} above our limit {HEADER_TABLE_SIZE}");
                }
                self.max_size = n;
                self.evict(0);
                continue;
            } else {
                // Literal without Indexing (0000) or Never Indexed (0001).
                let (name, value, rest) = self.literal(b, 4)?;
                b = rest;
                out.push((name, value));
            }
            size_update_allowed = false;
        }
        Ok(out)
    }

    fn literal<'a>(&self, b: &'a [u8], prefix: u8) -> Result<(String, String, &'a [u8])> {
        let (i, b) = decode_int(b, prefix)?;
        let (name, b) = if i == 0 {
            decode_string(b)?
        } else {
            (self.lookup(i)?.0, b)
        };
        let (value, b) = decode_string(b)?;
        Ok((name, value, b))
    }

    fn lookup(&self, i: usize) -> Result<(String, String)> {
        if i == 0 {
            bail!("HPACK: index 0");
        }
        if let Some((n, v)) = STATIC_TABLE.get(i - 1) {
            return Ok((n.to_string(), v.to_string()));
        }
        self.table
            .get(i - 1 - STATIC_TABLE.len())
            .cloned()
            .with_context(|| format!("HPACK: index {i} beyond the dynamic table"))
    }

    fn insert(&mut self, name: String, value: String) {
        let s = entry_size(&name, &value);
        self.evict(s);
        // An entry larger than the table empties it and is not added.
        if s <= self.max_size {
            self.size += s;
            self.table.push_front((name, value));
        }
    }

    /// Evicts the oldest entries until `extra` more bytes fit.
    fn evict(&mut self, extra: usize) {
        while self.size + extra > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// RFC 7541 §5.1: an integer with an `n`-bit prefix.
fn decode_int(b: &[u8], n: u8) -> Result<(usize, &[u8])> {
    let Some((&first, mut rest)) = b.split_first() else {
        bail!("HPACK: truncated integer");
    };
    let max = (1usize << n) - 1;
    let mut v = first as usize & max;
    if v < max {
        return Ok((v, rest));
    }
    let mut shift = 0;
    loop {
        let Some((&c, r)) = rest.split_first() else {
            bail!("HPACK: truncated integer");
        };
        rest = r;
        if shift > 28 {
            bail!("HPACK: integer overflow");
        }
        v += ((c & 0x7f) as usize) << shift;
        shift += 7;
        if c & 0x80 == 0 {
            return Ok((v, rest));
        }
    }
}

/// RFC 7541 §5.2: a string literal, raw or Huffman-coded.
fn decode_string(b: &[u8]) -> Result<(String, &[u8])> {
    let huffman = b.first().is_some_and(|c| c & 0x80 != 0);
    let (len, rest) = decode_int(b, 7)?;
    if len > rest.len() {
        bail!("HPACK: string of {len} bytes, {} left", rest.len());
    }
    let (s, rest) = rest.split_at(len);
    let bytes = if huffman {
        huffman_decode(s)?
    } else {
        s.to_vec()
    };
    // Header values may be any octets; keep them readable.
    let s = String::from_utf8_lossy(&bytes).into_owned();
    Ok((s, rest))
}

/// Code lengths of the Huffman code (RFC 7541 Appendix B) for symbols
/// 0..=255; EOS (256) is 30 bits. The code is canonical: codes follow from
/// the lengths (ordered by length, then symbol), so the code values need
/// not be stored.
const HUFFMAN_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
];
const EOS: u16 = 256;
const MAX_CODE_LEN: usize = 30;

/// Per length: how many codes, and the symbols in canonical order.
struct Canonical {
    count: [u16; MAX_CODE_LEN + 1],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static C: OnceLock<Canonical> = OnceLock::new();
    C.get_or_init(|| {
        let len = |s: u16| {
            if s == EOS {
                MAX_CODE_LEN as u8
            } else {
                HUFFMAN_LENGTHS[s as usize]
            }
        };
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|&s| (len(s), s));
        let mut count = [0u16; MAX_CODE_LEN + 1];
        for s in 0..=EOS {
            count[len(s) as usize] += 1;
        }
        Canonical { count, symbols }
    })
}

/// Decodes a Huffman-coded string (RFC 7541 §5.2): padding must be fewer
/// than 8 bits, all ones; EOS inside the string is an error.
pub fn huffman_decode(input: &[u8]) -> Result<Vec<u8>> {
    let c = canonical();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    // Canonical decoding state (as zlib's puff.c): `code` holds the bits
    // read for the current symbol, `first` the first code of this length,
    // `index` the symbols of shorter lengths.
    let (mut code, mut first, mut index, mut len) = (0u32, 0u32, 0usize, 0usize);
    let mut all_ones = true;
    for byte in input {
        for i in (0..8).rev() {
            let bit = (byte >> i) as u32 & 1;
            code |= bit;
            all_ones &= bit == 1;
            len += 1;
            let count = c.count[len] as u32;
            if code < first + count {
                let sym = c.symbols[index + (code - first) as usize];
                if sym == EOS {
                    bail!("HPACK: EOS symbol inside a Huffman string");
                }
                out.push(sym as u8);
                (code, first, index, len) = (0, 0, 0, 0);
                all_ones = true;
                continue;
            }
            index += count as usize;
            first = (first + count) << 1;
            code <<= 1;
            if len >= MAX_CODE_LEN {
                bail!("HPACK: invalid Huffman code");
            }
        }
    }
    if len > 7 || !all_ones {
        bail!("HPACK: invalid Huffman padding");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn huffman_rfc_vectors() {
        // RFC 7541 Appendix C.4 and C.6.
        for (h, s) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("9bd9 ab", "gzip"),
            (
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ] {
            assert_eq!(huffman_decode(&hex(h)).unwrap(), s.as_bytes(), "{s}");
        }
        assert_eq!(huffman_decode(&[]).unwrap(), b"");
    }

    #[test]
    fn huffman_code_is_complete_and_long_codes_decode() {
        // Kraft equality: the lengths describe a complete prefix code.
        let total: u64 = HUFFMAN_LENGTHS
            .iter()
            .map(|&l| 1u64 << (30 - l))
            .sum::<u64>()
            + 1;
        assert_eq!(total, 1 << 30);
        // Symbol 10 ('\n') has a 30-bit code 0x3ffffffc: with two ones of
        // padding it fills 4 bytes.
        assert_eq!(huffman_decode(&hex("ffff fff3")).unwrap(), b"\n");
        // Symbol 0: 13 bits 0x1ff8, padded with three ones.
        assert_eq!(huffman_decode(&hex("ffc7")).unwrap(), b"\0");
    }

    #[test]
    fn huffman_rejects_bad_padding_and_eos() {
        // 'a' is 00011 (5 bits); padding with zeros is invalid.
        assert!(huffman_decode(&[0b0001_1000]).is_err());
        assert!(huffman_decode(&[0b0001_1111]).is_ok());
        // A full byte of ones is more than 7 bits of padding.
        assert!(huffman_decode(&[0b0001_1111, 0xff]).is_err());
        // EOS (30 ones) inside the string.
        assert!(huffman_decode(&hex("ffff ffff")).is_err());
    }

    #[test]
    fn integers() {
        // RFC 7541 C.1.
        let mut b = Vec::new();
        encode_int(&mut b, 5, 0, 10);
        assert_eq!(b, [10]);
        b.clear();
        encode_int(&mut b, 5, 0, 1337);
        assert_eq!(b, [31, 154, 10]);
        assert_eq!(
            decode_int(&[31, 154, 10, 7], 5).unwrap(),
            (1337, &[7u8][..])
        );
        assert_eq!(decode_int(&[42], 8).unwrap().0, 42);
        assert!(decode_int(&[31, 154], 5).is_err());
        assert!(decode_int(&[31, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 5).is_err());
    }

    #[test]
    fn hpack_requests_without_huffman_rfc_c3() {
        let mut d = Decoder::default();
        let h = d
            .decode(&hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"))
            .unwrap();
        assert_eq!(
            h,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(d.size, 57);
        let h = d
            .decode(&hex("8286 84be 5808 6e6f 2d63 6163 6865"))
            .unwrap();
        assert_eq!(h[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(h[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(d.size, 110);
        let h = d
            .decode(&hex(
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ))
            .unwrap();
        assert_eq!(h[2], (":path".into(), "/index.html".into()));
        assert_eq!(h[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(h[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.size, 164);
    }

    #[test]
    fn hpack_responses_with_huffman_and_eviction_rfc_c6() {
        let mut d = Decoder::default();
        // The RFC's examples use a 256-byte table.
        d.decode(&[0x3f, 0xe1, 0x01]).unwrap();
        assert_eq!(d.max_size, 256);
        let h = d
            .decode(&hex(
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ))
            .unwrap();
        assert_eq!(
            h,
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(d.size, 222);
        let h = d.decode(&hex("4883 640e ff c1c0 bf")).unwrap();
        assert_eq!(h[0], (":status".into(), "307".into()));
        assert_eq!(d.size, 222);
        // ":status: 302" was evicted.
        assert_eq!(d.table.len(), 4);
        let h = d
            .decode(&hex(
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ))
            .unwrap();
        assert_eq!(h[0], (":status".into(), "200".into()));
        assert_eq!(h[4], ("content-encoding".into(), "gzip".into()));
        assert_eq!(
            h[5].1,
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
        );
        assert_eq!(d.size, 215);
    }

    #[test]
    fn hpack_errors() {
        let mut d = Decoder::default();
        assert!(d.decode(&[0x80]).is_err()); // index 0
        assert!(d.decode(&[0xbe]).is_err()); // dynamic index, empty table
        assert!(d.decode(&[0x3f, 0xe2, 0x1f]).is_err()); // size 4097 > 4096
        assert!(d.decode(&[0x82, 0x20]).is_err()); // size update after a field
        assert!(d.decode(&[0x00, 0x05, b'a']).is_err()); // short string
                                                         // Never-indexed literal with a static name.
        let h = d.decode(&[0x14, 0x01, b'/']).unwrap();
        assert_eq!(h, pairs(&[(":path", "/")]));
        assert!(d.table.is_empty());
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
