//! HTTP/2 framing (RFC 9113 §4 and §6): frame types, flags, settings and
//! error codes, reading one frame and appending frames to a write buffer.

use futures_lite::{AsyncRead, AsyncReadExt};
use std::io;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (§6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY_FRAME: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

// Settings identifiers (§6.5.2).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

// Error codes (§7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
pub const HTTP_1_1_REQUIRED: u32 = 0xd;

/// The protocol's initial flow-control window (§6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The protocol's initial SETTINGS_MAX_FRAME_SIZE, which we keep for receiving.
pub const DEFAULT_MAX_FRAME: usize = 16_384;
/// Largest value of SETTINGS_MAX_FRAME_SIZE (§6.5.2).
pub const MAX_MAX_FRAME: u32 = (1 << 24) - 1;
/// Largest flow-control window (§6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// A received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// Why reading a frame failed.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// The frame is larger than our SETTINGS_MAX_FRAME_SIZE (FRAME_SIZE_ERROR).
    TooLarge {
        len: usize,
        kind: u8,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "connection closed by the peer")
            }
            ReadError::Io(e) => write!(f, "read: {e}"),
            ReadError::TooLarge { len, kind } => write!(
                f,
                "frame of {len} bytes (type {kind:#x}) exceeds our SETTINGS_MAX_FRAME_SIZE"
            ),
        }
    }
}

/// Reads one frame; the payload is allocated at its exact size, which is
/// bounded by `max_len` (checked before allocating).
pub async fn read_frame<S: AsyncRead + Unpin>(
    io: &mut S,
    max_len: usize,
) -> Result<Frame, ReadError> {
    let mut h = [0u8; 9];
    io.read_exact(&mut h).await.map_err(ReadError::Io)?;
    let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
    if len > max_len {
        return Err(ReadError::TooLarge { len, kind: h[3] });
    }
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.map_err(ReadError::Io)?;
    Ok(Frame {
        kind: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// Appends a frame to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    frame_header(out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
}

/// Appends the 9-byte frame header for a payload of `len` bytes.
pub fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

pub fn settings_payload(s: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::with_capacity(s.len() * 6);
    for (id, v) in s {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    p
}

/// The (identifier, value) pairs of a SETTINGS payload; `None` when its
/// length is not a multiple of 6.
pub fn parse_settings(p: &[u8]) -> Option<Vec<(u16, u32)>> {
    if p.len() % 6 != 0 {
        return None;
    }
    Some(
        p.chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect(),
    )
}

/// A big-endian u32 at `at` (callers check the length first).
pub fn be32(p: &[u8], at: usize) -> u32 {
    p.get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The payload of a DATA or HEADERS frame without padding (and, for
/// HEADERS, the priority fields); `None` when the frame is malformed.
pub fn strip_padding_and_priority(f: &Frame) -> Option<&[u8]> {
    let mut p = &f.payload[..];
    let mut pad = 0usize;
    if f.flags & PADDED != 0 {
        let (&n, rest) = p.split_first()?;
        pad = n as usize;
        p = rest;
    }
    if f.kind == HEADERS && f.flags & PRIORITY != 0 {
        p = p.get(5..)?;
    }
    if pad > p.len() {
        return None;
    }
    Some(&p[..p.len() - pad])
}

/// A connection error: the GOAWAY code and why.
pub type ConnError = (u32, String);

pub fn proto(msg: impl Into<String>) -> ConnError {
    (PROTOCOL_ERROR, msg.into())
}

/// The values of a SETTINGS frame, checked (§6.5); `None` for an ACK.
pub fn settings_of(f: &Frame) -> Result<Option<Vec<(u16, u32)>>, ConnError> {
    if f.stream != 0 {
        return Err(proto("SETTINGS on a stream"));
    }
    if f.flags & ACK != 0 {
        if !f.payload.is_empty() {
            return Err((FRAME_SIZE_ERROR, "SETTINGS ACK with a payload".into()));
        }
        return Ok(None);
    }
    match parse_settings(&f.payload) {
        Some(list) => Ok(Some(list)),
        None => Err((FRAME_SIZE_ERROR, "SETTINGS of wrong size".into())),
    }
}

/// The increment of a WINDOW_UPDATE (§6.9), its size checked.
pub fn window_increment(f: &Frame) -> Result<i64, ConnError> {
    if f.payload.len() != 4 {
        return Err((FRAME_SIZE_ERROR, "WINDOW_UPDATE of wrong size".into()));
    }
    Ok((be32(&f.payload, 0) & 0x7fff_ffff) as i64)
}

/// Adds a WINDOW_UPDATE on stream 0 to the connection's send window: 0
/// and overflow are connection errors (§6.9, §6.9.1).
pub fn grow_connection_window(w: &mut i64, inc: i64) -> Result<(), ConnError> {
    if inc == 0 {
        return Err(proto("WINDOW_UPDATE of 0 on the connection"));
    }
    *w += inc;
    if *w > MAX_WINDOW as i64 {
        return Err((FLOW_CONTROL_ERROR, "connection window above 2^31-1".into()));
    }
    Ok(())
}

/// A new SETTINGS_INITIAL_WINDOW_SIZE: `initial` becomes `v`, and the
/// change applies to every open stream's send window (§6.9.2), possibly
/// making one negative.
pub fn set_initial_window<'a>(
    initial: &mut u32,
    v: u32,
    windows: impl Iterator<Item = &'a mut i64>,
) -> Result<(), ConnError> {
    if v > MAX_WINDOW {
        return Err((
            FLOW_CONTROL_ERROR,
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1".into(),
        ));
    }
    let delta = v as i64 - *initial as i64;
    *initial = v;
    for w in windows {
        *w += delta;
        if *w > MAX_WINDOW as i64 {
            return Err((FLOW_CONTROL_ERROR, "stream window above 2^31-1".into()));
        }
    }
    Ok(())
}

/// A SETTINGS_MAX_FRAME_SIZE value, checked (§6.5.2).
pub fn max_frame_size(v: u32) -> Result<usize, ConnError> {
    if !(DEFAULT_MAX_FRAME as u32..=MAX_MAX_FRAME).contains(&v) {
        return Err(proto(format!("SETTINGS_MAX_FRAME_SIZE of {v}")));
    }
    Ok(v as usize)
}

pub fn error_code_name(code: u32) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits() {
        let mut b = Vec::new();
        frame(&mut b, HEADERS, END_HEADERS, 3, b"abc");
        frame(&mut b, DATA, 0, 5, &[0; 20]);
        let mut r = futures_lite::io::Cursor::new(b);
        let f = futures_lite::future::block_on(read_frame(&mut r, 16)).unwrap();
        assert_eq!((f.kind, f.flags, f.stream), (HEADERS, END_HEADERS, 3));
        assert_eq!(f.payload, b"abc");
        let e = futures_lite::future::block_on(read_frame(&mut r, 16)).unwrap_err();
        assert!(matches!(
            e,
            ReadError::TooLarge {
                len: 20,
                kind: DATA
            }
        ));
        let mut r = futures_lite::io::Cursor::new(vec![0, 0]);
        let e = futures_lite::future::block_on(read_frame(&mut r, 16)).unwrap_err();
        assert_eq!(e.to_string(), "connection closed by the peer");
    }

    #[test]
    fn settings_and_padding() {
        let p = settings_payload(&[
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_MAX_FRAME_SIZE, 1 << 20),
        ]);
        assert_eq!(
            parse_settings(&p).unwrap(),
            vec![
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_MAX_FRAME_SIZE, 1 << 20)
            ]
        );
        assert!(parse_settings(&p[..5]).is_none());
        let f = |kind, flags, payload: &[u8]| Frame {
            kind,
            flags,
            stream: 1,
            payload: payload.to_vec(),
        };
        assert_eq!(
            strip_padding_and_priority(&f(DATA, PADDED, &[2, b'x', 0, 0])),
            Some(&b"x"[..])
        );
        assert_eq!(
            strip_padding_and_priority(&f(DATA, PADDED, &[3, 0, 0])),
            None
        );
        assert_eq!(strip_padding_and_priority(&f(DATA, PADDED, &[])), None);
        assert_eq!(
            strip_padding_and_priority(&f(HEADERS, PRIORITY, &[0, 0, 0, 0, 9, 0x88])),
            Some(&[0x88u8][..])
        );
        assert_eq!(
            strip_padding_and_priority(&f(HEADERS, PRIORITY, &[0])),
            None
        );
        assert_eq!(error_code_name(7), "REFUSED_STREAM");
        assert_eq!(error_code_name(0x99), "error code 0x99");
    }
}
