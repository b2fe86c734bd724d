//! SPDY/3.1 as Kubernetes' streaming protocols use it (the server side of
//! `k8s.io/apimachinery/pkg/util/httpstream/spdy` over moby/spdystream):
//! the client opens streams with SYN_STREAM (headers say what each is),
//! the server answers each with an empty SYN_REPLY, data flows in DATA
//! frames, FIN half-closes, PINGs are echoed. No flow control: spdystream
//! neither sends nor honours WINDOW_UPDATE, TCP paces both sides.
//!
//! Header blocks are one zlib stream per direction with SPDY's preset
//! dictionary. Incoming blocks are inflated with miniz_oxide's core
//! (the dictionary pre-loaded into its window, the zlib header parsed
//! here); outgoing blocks are stored (uncompressed) deflate blocks behind
//! a zlib header naming the dictionary, which every inflater reads.
//!
//! Bounds: frames over [`MAX_FRAME`] end the session (GOAWAY protocol
//! error), a header block inflates to at most [`MAX_HEADERS`], a stream's
//! inbound data waits in a short queue and then the reader stops reading
//! the socket (back-pressure to the client).

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use smol::channel::{self, Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

/// Largest frame payload accepted.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest inflated header block.
pub const MAX_HEADERS: usize = 64 << 10;
/// DATA frames queued per stream before the reader waits.
const STREAM_QUEUE: usize = 8;
/// Largest DATA frame written.
pub const MAX_DATA: usize = 32 << 10;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 1;

/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// The SPDY/3 header dictionary (draft 3, 2.6.10.1): length-prefixed
/// words, then a run of bare text.
pub fn dictionary() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TEXT: &str = "100101201202205206300302303304305306307402405406407408409410411412413\
414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently\
400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec \
00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,\
image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivate\
max-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
        let mut d = Vec::with_capacity(1500);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TEXT.as_bytes());
        d
    })
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// A frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream: u32,
        fin: bool,
        block: Vec<u8>,
    },
    SynReply {
        stream: u32,
        fin: bool,
        block: Vec<u8>,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        block: Vec<u8>,
    },
    /// SETTINGS, WINDOW_UPDATE, unknown types: ignored (as spdystream).
    Ignored {
        kind: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge(usize),
    UnsupportedVersion(u16),
    /// A control frame too short for its type.
    Malformed(u16),
    ZeroStream,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes is too large"),
            FrameError::UnsupportedVersion(v) => write!(f, "SPDY version {v} is not supported"),
            FrameError::Malformed(t) => write!(f, "malformed control frame of type {t}"),
            FrameError::ZeroStream => write!(f, "stream id zero is disallowed"),
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses one frame from the front of `buf`; `Ok(None)` while incomplete.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let flags = buf[4];
    let p = &buf[8..8 + len];
    let fin = flags & FLAG_FIN != 0;
    let id31 = |b: &[u8]| be32(b) & 0x7fff_ffff;
    let frame = if buf[0] & 0x80 == 0 {
        let stream = id31(&buf[0..4]);
        if stream == 0 {
            return Err(FrameError::ZeroStream);
        }
        Frame::Data {
            stream,
            fin,
            data: p.to_vec(),
        }
    } else {
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != 3 {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let need = |n: usize| {
            if p.len() < n {
                Err(FrameError::Malformed(kind))
            } else {
                Ok(())
            }
        };
        match kind {
            SYN_STREAM => {
                need(10)?;
                let stream = id31(&p[0..4]);
                if stream == 0 {
                    return Err(FrameError::ZeroStream);
                }
                Frame::SynStream {
                    stream,
                    fin,
                    block: p[10..].to_vec(),
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let stream = id31(&p[0..4]);
                let block = p[4..].to_vec();
                if kind == SYN_REPLY {
                    Frame::SynReply { stream, fin, block }
                } else {
                    Frame::Headers { stream, fin, block }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream: id31(&p[0..4]),
                    status: be32(&p[4..8]),
                }
            }
            PING => {
                need(4)?;
                Frame::Ping { id: be32(&p[0..4]) }
            }
            GOAWAY => {
                need(8)?;
                Frame::GoAway {
                    last: id31(&p[0..4]),
                    status: be32(&p[4..8]),
                }
            }
            k => Frame::Ignored { kind: k },
        }
    };
    Ok(Some((frame, 8 + len)))
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&[0x80, 3]);
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
}

pub fn encode_data(out: &mut Vec<u8>, stream: u32, fin: bool, data: &[u8]) {
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(data);
}

pub fn encode_syn_reply(out: &mut Vec<u8>, stream: u32, fin: bool, block: &[u8]) {
    let mut p = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(block);
    control(out, SYN_REPLY, if fin { FLAG_FIN } else { 0 }, &p);
}

pub fn encode_rst(out: &mut Vec<u8>, stream: u32, status: u32) {
    let mut p = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(&status.to_be_bytes());
    control(out, RST_STREAM, 0, &p);
}

pub fn encode_ping(out: &mut Vec<u8>, id: u32) {
    control(out, PING, 0, &id.to_be_bytes());
}

pub fn encode_goaway(out: &mut Vec<u8>, last: u32, status: u32) {
    let mut p = (last & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(&status.to_be_bytes());
    control(out, GOAWAY, 0, &p);
}

/// Builds the uncompressed name/value block.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k.to_ascii_lowercase().as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// Parses an inflated name/value block (values may hold several
/// NUL-separated values).
pub fn parse_header_block(b: &[u8]) -> Option<Vec<(String, String)>> {
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (x, rest) = b.split_at(n);
        *b = rest;
        Some(x.to_vec())
    };
    let mut b = b;
    let n = be32(&take(&mut b, 4)?) as usize;
    if n > 1024 {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let kl = be32(&take(&mut b, 4)?) as usize;
        let k = String::from_utf8(take(&mut b, kl)?).ok()?;
        let vl = be32(&take(&mut b, 4)?) as usize;
        let v = String::from_utf8(take(&mut b, vl)?).ok()?;
        for v in v.split('\0') {
            out.push((k.clone(), v.to_string()));
        }
    }
    Some(out)
}

/// The zlib writer for outgoing header blocks: stored blocks, each
/// followed by an empty one as a sync flush would end it; no compression
/// (the blocks are tiny: not worth a compressor).
#[derive(Default)]
pub struct Deflater {
    started: bool,
}

impl Deflater {
    pub fn block(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 16);
        if !self.started {
            self.started = true;
            // CMF: deflate, 32 KiB window; FLG: FDICT, FCHECK making the
            // pair a multiple of 31.
            let cmf: u16 = 0x78;
            let mut flg: u16 = 0x20;
            flg += 31 - ((cmf << 8) | flg) % 31;
            out.push(cmf as u8);
            out.push(flg as u8);
            out.extend_from_slice(&adler32(dictionary()).to_be_bytes());
        }
        for chunk in raw.chunks(0xffff) {
            // BFINAL=0, BTYPE=00, padded to the byte; LEN, NLEN.
            out.push(0);
            let n = chunk.len() as u16;
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(!n).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block (a sync flush): Go's inflater hands out a
        // stored block's bytes only when the next block begins.
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        out
    }
}

/// The zlib reader for incoming header blocks (one per session).
pub struct Inflater {
    d: Box<DecompressorOxide>,
    window: Vec<u8>,
    pos: usize,
    /// zlib header bytes still to read (2, or 6 with a dictionary id).
    header: Vec<u8>,
    header_done: bool,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        let dict = dictionary();
        let mut window = vec![0u8; 32 << 10];
        window[..dict.len()].copy_from_slice(dict);
        Inflater {
            d: Box::default(),
            window,
            pos: dict.len(),
            header: Vec::new(),
            header_done: false,
        }
    }

    /// Inflates the next header block of the stream.
    pub fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, &'static str> {
        if !self.header_done {
            while self.header.len() < 2 && !input.is_empty() {
                self.header.push(input[0]);
                input = &input[1..];
            }
            if self.header.len() < 2 {
                return Err("truncated zlib header");
            }
            let (cmf, flg) = (self.header[0], self.header[1]);
            if cmf & 0x0f != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 {
                return Err("bad zlib header");
            }
            let want = if flg & 0x20 != 0 { 6 } else { 2 };
            while self.header.len() < want && !input.is_empty() {
                self.header.push(input[0]);
                input = &input[1..];
            }
            if self.header.len() < want {
                return Err("truncated zlib header");
            }
            if want == 6 && be32(&self.header[2..6]) != adler32(dictionary()) {
                return Err("unknown zlib dictionary");
            }
            self.header_done = true;
        }
        let mut out = Vec::new();
        loop {
            let (status, used, wrote) = decompress(
                &mut self.d,
                input,
                &mut self.window,
                self.pos,
                inflate_flags::TINFL_FLAG_HAS_MORE_INPUT,
            );
            out.extend_from_slice(&self.window[self.pos..self.pos + wrote]);
            if out.len() > MAX_HEADERS {
                return Err("header block too large");
            }
            self.pos = (self.pos + wrote) & (self.window.len() - 1);
            input = &input[used..];
            match status {
                TINFLStatus::NeedsMoreInput if input.is_empty() => return Ok(out),
                TINFLStatus::NeedsMoreInput | TINFLStatus::HasMoreOutput => {
                    if used == 0 && wrote == 0 {
                        return Err("inflate made no progress");
                    }
                }
                TINFLStatus::Done => return Err("header compression stream ended"),
                _ => return Err("corrupt header block"),
            }
        }
    }
}

// ---------------------------------------------------------------------
// The session

/// A stream the client opened.
pub struct Incoming {
    pub id: u32,
    pub headers: Vec<(String, String)>,
    /// Its data; closed at the client's FIN or RST_STREAM.
    pub data: Receiver<Vec<u8>>,
}

impl Incoming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The writing side of a session, shared by its streams.
pub struct Session<W> {
    w: smol::lock::Mutex<W>,
    deflater: RefCell<Deflater>,
    closed: Cell<bool>,
    /// Bytes moved either way (the idle timeout watches it).
    pub activity: Cell<u64>,
    write_timeout: Duration,
}

impl<W: AsyncWrite + Unpin> Session<W> {
    pub fn new(w: W, write_timeout: Duration) -> Rc<Session<W>> {
        Rc::new(Session {
            w: smol::lock::Mutex::new(w),
            deflater: RefCell::default(),
            closed: Cell::new(false),
            activity: Cell::new(0),
            write_timeout,
        })
    }

    async fn send(&self, frame: Vec<u8>) -> std::io::Result<()> {
        if self.closed.get() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let mut w = self.w.lock().await;
        let r = super::http1::timed(self.write_timeout, async {
            w.write_all(&frame).await?;
            w.flush().await
        })
        .await;
        if r.is_err() {
            self.closed.set(true);
        } else {
            self.activity.set(self.activity.get() + frame.len() as u64);
        }
        r
    }

    /// Data on a stream, in frames of at most [`MAX_DATA`]; `fin` closes
    /// our side after it.
    pub async fn data(&self, stream: u32, data: &[u8], fin: bool) -> std::io::Result<()> {
        let mut chunks = data.chunks(MAX_DATA).peekable();
        if chunks.peek().is_none() {
            let mut f = Vec::new();
            encode_data(&mut f, stream, fin, &[]);
            return self.send(f).await;
        }
        while let Some(c) = chunks.next() {
            let mut f = Vec::with_capacity(c.len() + 8);
            encode_data(&mut f, stream, fin && chunks.peek().is_none(), c);
            self.send(f).await?;
        }
        Ok(())
    }

    pub async fn reply(&self, stream: u32) -> std::io::Result<()> {
        let block = self.deflater.borrow_mut().block(&header_block(&[]));
        let mut f = Vec::new();
        encode_syn_reply(&mut f, stream, false, &block);
        self.send(f).await
    }

    pub async fn reset(&self, stream: u32, status: u32) -> std::io::Result<()> {
        let mut f = Vec::new();
        encode_rst(&mut f, stream, status);
        self.send(f).await
    }

    pub async fn ping(&self, id: u32) -> std::io::Result<()> {
        let mut f = Vec::new();
        encode_ping(&mut f, id);
        self.send(f).await
    }

    pub async fn goaway(&self, last: u32, status: u32) {
        let mut f = Vec::new();
        encode_goaway(&mut f, last, status);
        let _ = self.send(f).await;
        self.closed.set(true);
    }

    /// Closes the connection's write side.
    pub async fn shutdown(&self) {
        self.closed.set(true);
        let mut w = self.w.lock().await;
        let _ = super::http1::timed(Duration::from_secs(5), w.close()).await;
    }
}

/// Reads frames until the client goes: every SYN_STREAM is answered and
/// handed on `streams` (the handler decides what it is), DATA goes to its
/// stream's queue. Ends with the reason the session ended.
pub async fn read_loop<R, W>(
    mut r: R,
    mut buf: Vec<u8>,
    sess: Rc<Session<W>>,
    streams: Sender<Incoming>,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut inflater = Inflater::new();
    let mut open: HashMap<u32, Sender<Vec<u8>>> = HashMap::new();
    let mut last_stream = 0u32;
    let mut tmp = vec![0u8; 16 << 10];
    loop {
        let parsed = match parse_frame(&buf) {
            Ok(p) => p,
            Err(e) => {
                sess.goaway(last_stream, 1).await;
                return Err(format!("SPDY: {e}"));
            }
        };
        let Some((frame, used)) = parsed else {
            let n = r.read(&mut tmp).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            sess.activity.set(sess.activity.get() + n as u64);
            buf.extend_from_slice(&tmp[..n]);
            continue;
        };
        buf.drain(..used);
        if buf.is_empty() && buf.capacity() > 64 << 10 {
            buf = Vec::new();
        }
        match frame {
            Frame::SynStream { stream, fin, block } => {
                let headers = match inflater
                    .inflate(&block)
                    .ok()
                    .and_then(|b| parse_header_block(&b))
                {
                    Some(h) => h,
                    None => {
                        log::debug!("SPDY: undecodable header block {block:02x?}");
                        // The compression context is lost: nothing after
                        // this can be read.
                        sess.goaway(last_stream, 1).await;
                        return Err("SPDY: undecodable header block".into());
                    }
                };
                if stream % 2 == 0 || stream <= last_stream || open.len() >= 64 {
                    let _ = sess.reset(stream, RST_PROTOCOL_ERROR).await;
                    continue;
                }
                last_stream = stream;
                log::trace!("SPDY: stream {stream} opened: {headers:?}");
                let (tx, rx) = channel::bounded(STREAM_QUEUE);
                if fin {
                    drop(tx);
                } else {
                    open.insert(stream, tx);
                }
                sess.reply(stream).await.map_err(|e| e.to_string())?;
                if streams
                    .send(Incoming {
                        id: stream,
                        headers,
                        data: rx,
                    })
                    .await
                    .is_err()
                {
                    // The handler stopped taking streams.
                    let _ = sess.reset(stream, RST_REFUSED_STREAM).await;
                }
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = open.get(&stream) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        open.remove(&stream);
                    }
                }
                if fin {
                    open.remove(&stream);
                }
            }
            Frame::RstStream { stream, .. } => {
                open.remove(&stream);
            }
            Frame::Headers { stream, fin, block } => {
                if inflater.inflate(&block).is_err() {
                    sess.goaway(last_stream, 1).await;
                    return Err("SPDY: undecodable header block".into());
                }
                if fin {
                    open.remove(&stream);
                }
            }
            Frame::Ping { id } => {
                // Only the client's pings (odd ids) are answered.
                if id % 2 == 1 {
                    sess.ping(id).await.map_err(|e| e.to_string())?;
                }
            }
            Frame::GoAway { .. } => return Ok(()),
            Frame::SynReply { .. } | Frame::Ignored { .. } => {}
        }
    }
}

/// The data of a client stream, read as bytes.
pub struct StreamReader {
    rx: Receiver<Vec<u8>>,
}

impl StreamReader {
    pub fn new(rx: Receiver<Vec<u8>>) -> Self {
        StreamReader { rx }
    }
    /// The next chunk; `None` once the client closed its side.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\x00\x00\x00\x07options");
        assert!(d.ends_with(b",enq=0."));
    }

    #[test]
    fn frames_round_trip() {
        let mut b = Vec::new();
        encode_data(&mut b, 5, true, b"hello");
        encode_ping(&mut b, 7);
        encode_rst(&mut b, 3, RST_CANCEL);
        encode_goaway(&mut b, 9, 0);
        let (f, n) = parse_frame(&b).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Data {
                stream: 5,
                fin: true,
                data: b"hello".to_vec()
            }
        );
        let b2 = &b[n..];
        let (f, n2) = parse_frame(b2).unwrap().unwrap();
        assert_eq!(f, Frame::Ping { id: 7 });
        let (f, n3) = parse_frame(&b2[n2..]).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::RstStream {
                stream: 3,
                status: RST_CANCEL
            }
        );
        let (f, _) = parse_frame(&b2[n2 + n3..]).unwrap().unwrap();
        assert_eq!(f, Frame::GoAway { last: 9, status: 0 });
        assert_eq!(parse_frame(&b[..10]).unwrap(), None);
    }

    #[test]
    fn bad_frames_are_errors() {
        // version 2
        assert!(parse_frame(&[0x80, 2, 0, 1, 0, 0, 0, 0]).is_err());
        // too large
        assert!(parse_frame(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff]).is_err());
        // data on stream 0
        assert!(parse_frame(&[0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // SYN_STREAM too short
        assert!(parse_frame(&[0x80, 3, 0, 1, 0, 0, 0, 2, 0, 1]).is_err());
        // unknown control types are skipped
        assert_eq!(
            parse_frame(&[0x80, 3, 0, 0x20, 0, 0, 0, 1, 9])
                .unwrap()
                .unwrap()
                .0,
            Frame::Ignored { kind: 0x20 }
        );
    }

    #[test]
    fn header_blocks_round_trip_through_our_zlib() {
        let mut d = Deflater::default();
        let mut i = Inflater::new();
        for h in [
            &[("streamType", "error")][..],
            &[("streamtype", "stdout"), ("a", "b\0c")],
            &[],
        ] {
            let raw = header_block(h);
            let z = d.block(&raw);
            let back = i.inflate(&z).unwrap();
            assert_eq!(back, raw);
        }
        let p = parse_header_block(&header_block(&[("k", "v1\0v2")])).unwrap();
        assert_eq!(
            p,
            [
                ("k".to_string(), "v1".to_string()),
                ("k".into(), "v2".into())
            ]
        );
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']).is_none());
        assert!(parse_header_block(&[0xff, 0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn inflates_real_compression_with_the_dictionary() {
        // What Go's zlib writer with SPDY's dictionary makes of a header
        // block (made here with flate2's raw deflate, which lacks
        // dictionaries, so the block refers to nothing in the window):
        // header + raw deflate + sync flush.
        use flate2::write::DeflateEncoder;
        use std::io::Write;
        let raw = header_block(&[("streamtype", "error"), ("port", "8080")]);
        let mut e = DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&raw).unwrap();
        e.flush().unwrap();
        let body = e.get_ref().clone();
        let mut z = vec![0x78, 0xbb];
        z.extend_from_slice(&adler32(dictionary()).to_be_bytes());
        z.extend_from_slice(&body);
        let mut i = Inflater::new();
        assert_eq!(i.inflate(&z).unwrap(), raw);
        // A second block continues the same stream.
        let mut e2 = e;
        let before = e2.get_ref().len();
        e2.write_all(&raw).unwrap();
        e2.flush().unwrap();
        let more = e2.get_ref()[before..].to_vec();
        assert_eq!(i.inflate(&more).unwrap(), raw);
    }

    #[test]
    fn inflater_rejects_garbage() {
        let mut i = Inflater::new();
        assert!(i.inflate(&[0x78, 0x01, 1, 2, 3, 4]).is_err() || i.inflate(&[0xff; 32]).is_err());
        let mut i = Inflater::new();
        assert!(i.inflate(&[0x12, 0x34]).is_err());
    }
}
