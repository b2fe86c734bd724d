//! The WebSocket variants of `/exec`, `/attach` and `/portForward`
//! (upstream `k8s.io/apimachinery/pkg/util/httpstream/wsstream`): RFC 6455
//! framing, channels as the first byte of each message (binary
//! protocols) or an ASCII digit before base64 (the `base64.` ones).
//!
//! exec/attach channels: 0 stdin, 1 stdout, 2 stderr, 3 error (the
//! status), 4 resize; `v5.channel.k8s.io` adds 255 = "close this
//! channel" (the client's stdin EOF). port-forward: channel 2i carries
//! the data of the i-th `port` query parameter and 2i+1 its errors; each
//! starts with the port as two little-endian bytes.
//!
//! Bounds: a message (reassembled) is at most [`MAX_MESSAGE`]; a client
//! that sends faster than the process reads waits on the socket.

use super::http1::{Reply, Request};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::rc::Rc;
use std::time::Duration;

pub const MAX_MESSAGE: usize = 1 << 20;

/// Protocols of the exec/attach variant (upstream's list, newest first).
pub const COMMAND_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
pub const PORTFORWARD_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    use base64::Engine;
    let mut s = key.trim().as_bytes().to_vec();
    s.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &s);
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

/// The protocol to answer with: the first the client offers that the
/// server has (a bearer token "protocol" is not one); `""` when the
/// client offers none.
pub fn negotiate(req: &Request, server: &[&str]) -> Result<String, Reply> {
    let offered: Vec<String> = req
        .header_tokens("sec-websocket-protocol")
        .into_iter()
        .filter(|p| !p.starts_with("base64url.bearer.authorization.k8s.io."))
        .collect();
    if offered.is_empty() {
        return Ok(String::new());
    }
    offered
        .iter()
        .find(|p| server.contains(&p.as_str()))
        .cloned()
        .ok_or_else(|| {
            Reply::text(
                400,
                format!("unable to upgrade: unsupported WebSocket protocols {offered:?}, server accepts {server:?}"),
            )
        })
}

/// Checks the upgrade request; the 101 response head.
pub fn handshake(req: &Request, protocol: &str) -> Result<Vec<u8>, Reply> {
    if req.header("sec-websocket-version") != Some("13") {
        let mut r = Reply::text(426, "unsupported WebSocket version");
        r.extra.push(("Sec-WebSocket-Version", "13".into()));
        return Err(r);
    }
    let key = req
        .header("sec-websocket-key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Reply::text(400, "missing Sec-WebSocket-Key"))?;
    let mut h = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if !protocol.is_empty() {
        h += &format!("Sec-WebSocket-Protocol: {protocol}\r\n");
    }
    h += "\r\n";
    Ok(h.into_bytes())
}

/// One frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge(u64),
    Unmasked,
    ReservedBits,
    BadControl,
    BadOpcode(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes is too large"),
            FrameError::Unmasked => write!(f, "client frame is not masked"),
            FrameError::ReservedBits => write!(f, "reserved bits set"),
            FrameError::BadControl => write!(f, "control frame fragmented or over 125 bytes"),
            FrameError::BadOpcode(o) => write!(f, "unknown opcode {o}"),
        }
    }
}

/// Parses one client frame (masked) from the front of `buf`; `Ok(None)`
/// while incomplete.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::BadOpcode(opcode));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, mut pos) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE && (!fin || len > 125) {
        return Err(FrameError::BadControl);
    }
    if len > MAX_MESSAGE as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let len = len as usize;
    if buf.len() < pos + 4 + len {
        return Ok(None);
    }
    let mask = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
    pos += 4;
    let payload: Vec<u8> = buf[pos..pos + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        pos + len,
    )))
}

/// An unmasked server frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A message (reassembled) as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Data { text: bool, payload: Vec<u8> },
    Close,
}

/// Reassembles messages from frames; answers pings.
pub struct Reader<R> {
    r: R,
    buf: Vec<u8>,
    partial: Option<(bool, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R, buf: Vec<u8>) -> Self {
        Reader {
            r,
            buf,
            partial: None,
        }
    }

    /// The next message; pings are answered through `w`.
    pub async fn next<W: AsyncWrite + Unpin>(&mut self, w: &Writer<W>) -> Result<Message, String> {
        let mut tmp = vec![0u8; 16 << 10];
        loop {
            let parsed = parse_frame(&self.buf).map_err(|e| e.to_string())?;
            let Some((f, used)) = parsed else {
                let n = self.r.read(&mut tmp).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(Message::Close);
                }
                self.buf.extend_from_slice(&tmp[..n]);
                continue;
            };
            self.buf.drain(..used);
            match f.opcode {
                OP_PING => w
                    .send(OP_PONG, &f.payload)
                    .await
                    .map_err(|e| e.to_string())?,
                OP_PONG => {}
                OP_CLOSE => return Ok(Message::Close),
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err("new message inside a fragmented one".into());
                    }
                    if f.fin {
                        return Ok(Message::Data {
                            text: f.opcode == OP_TEXT,
                            payload: f.payload,
                        });
                    }
                    self.partial = Some((f.opcode == OP_TEXT, f.payload));
                }
                _ => {
                    let Some((text, mut p)) = self.partial.take() else {
                        return Err("continuation without a message".into());
                    };
                    if p.len() + f.payload.len() > MAX_MESSAGE {
                        return Err("message too large".into());
                    }
                    p.extend_from_slice(&f.payload);
                    if f.fin {
                        return Ok(Message::Data { text, payload: p });
                    }
                    self.partial = Some((text, p));
                }
            }
        }
    }
}

/// The shared write side.
pub struct Writer<W> {
    w: smol::lock::Mutex<W>,
    timeout: Duration,
    /// base64 text messages (the `base64.` protocols).
    pub base64: bool,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(w: W, timeout: Duration, base64: bool) -> Rc<Self> {
        Rc::new(Writer {
            w: smol::lock::Mutex::new(w),
            timeout,
            base64,
        })
    }

    pub async fn send(&self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut f = Vec::with_capacity(payload.len() + 10);
        encode_frame(&mut f, opcode, payload);
        let mut w = self.w.lock().await;
        super::http1::timed(self.timeout, async {
            w.write_all(&f).await?;
            w.flush().await
        })
        .await
    }

    /// Data on a channel.
    pub async fn channel(&self, ch: u8, data: &[u8]) -> std::io::Result<()> {
        if self.base64 {
            use base64::Engine;
            let mut p = vec![b'0' + ch];
            p.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            self.send(OP_TEXT, &p).await
        } else {
            let mut p = Vec::with_capacity(data.len() + 1);
            p.push(ch);
            p.extend_from_slice(data);
            self.send(OP_BINARY, &p).await
        }
    }

    pub async fn close(&self) {
        let _ = self.send(OP_CLOSE, &1000u16.to_be_bytes()).await;
        let mut w = self.w.lock().await;
        let _ = super::http1::timed(Duration::from_secs(5), w.close()).await;
    }
}

/// Splits a data message into (channel, payload).
pub fn demux(text: bool, payload: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (&c, rest) = payload.split_first()?;
    if text {
        use base64::Engine;
        let ch = c.checked_sub(b'0').filter(|c| *c <= 9)?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        Some((ch, data))
    } else {
        Some((c, rest.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn rfc6455_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_parse() {
        let f = masked(OP_BINARY, true, b"\x00hello");
        let (fr, n) = parse_frame(&f).unwrap().unwrap();
        assert_eq!(
            (fr.opcode, fr.payload.as_slice(), n),
            (OP_BINARY, &b"\x00hello"[..], f.len())
        );
        assert_eq!(parse_frame(&f[..3]).unwrap(), None);
        let big = masked(OP_BINARY, true, &[7u8; 300]);
        assert_eq!(parse_frame(&big).unwrap().unwrap().0.payload.len(), 300);
        // unmasked, reserved bits, long control, huge
        assert!(parse_frame(&[0x82, 0x01, 0]).is_err());
        assert!(parse_frame(&[0xc2, 0x81, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_frame(&[0x09, 0x80, 0, 0, 0, 0]).is_err());
        assert!(parse_frame(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(parse_frame(&[0x83, 0x80]).is_err());
    }

    #[test]
    fn messages_reassemble_and_pings_answer() {
        let mut input = masked(OP_TEXT, false, b"1aGVs");
        input.extend(masked(OP_PING, true, b"p"));
        input.extend(masked(OP_CONT, true, b"bG8="));
        input.extend(masked(OP_CLOSE, true, &[3, 232]));
        crate::rt::block_on(async {
            let out = Writer::new(Vec::new(), Duration::from_secs(1), true);
            let mut r = Reader::new(futures_lite::io::Cursor::new(input), Vec::new());
            let m = r.next(&out).await.unwrap();
            let Message::Data { text, payload } = m else {
                panic!()
            };
            assert_eq!(demux(text, &payload), Some((1, b"hello".to_vec())));
            assert_eq!(r.next(&out).await.unwrap(), Message::Close);
            let w = out.w.lock().await;
            assert_eq!(w.as_slice(), &[0x8a, 1, b'p']);
        });
        assert_eq!(demux(false, b"\x04{}"), Some((4, b"{}".to_vec())));
        assert_eq!(demux(true, b"x"), None);
        assert_eq!(demux(false, b""), None);
    }

    #[test]
    fn server_frames() {
        let mut f = Vec::new();
        encode_frame(&mut f, OP_BINARY, &[0u8; 200]);
        assert_eq!(&f[..4], &[0x82, 126, 0, 200]);
    }
}
