//! The grpc probe (upstream pkg/probe/grpc): `grpc.health.v1.Health/Check`
//! over cleartext HTTP/2, success iff the answer is SERVING. Every problem
//! is a failure with upstream's message; this probe never errors.

use super::handlers::{connect, user_agent, Outcome, Output};
use crate::http::h2;
use async_io::Timer;
use futures_lite::future;
use std::time::{Duration, Instant};

const PATH: &str = "/grpc.health.v1.Health/Check";
/// A health response is a few bytes; anything large is not one.
const MAX_BODY: usize = 64 * 1024;

/// `HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingStatus {
    Unknown,
    Serving,
    NotServing,
    ServiceUnknown,
    Other(u64),
}

impl ServingStatus {
    fn from_wire(v: u64) -> Self {
        match v {
            0 => ServingStatus::Unknown,
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            n => ServingStatus::Other(n),
        }
    }
    fn name(self) -> String {
        match self {
            ServingStatus::Unknown => "UNKNOWN".into(),
            ServingStatus::Serving => "SERVING".into(),
            ServingStatus::NotServing => "NOT_SERVING".into(),
            ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN".into(),
            ServingStatus::Other(n) => n.to_string(),
        }
    }
}

/// Runs the health check against `host:port` for `service` ("" = the
/// server as a whole) within `timeout`.
pub async fn check(host: &str, port: u16, service: &str, timeout: Duration) -> Output {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let deadline = Instant::now() + timeout;
    let t = crate::util::duration::format(timeout);
    let mut conn = match connect(host, port, timeout).await {
        Ok(c) => c,
        Err(e) if e == "i/o timeout" => {
            return fail(format!(
                "timeout: failed to connect service {addr:?} within {t}: context deadline exceeded"
            ))
        }
        Err(e) => {
            return fail(format!(
                "error: failed to connect service at {addr:?}: dial tcp {addr}: {e}"
            ))
        }
    };
    let _ = conn.set_nodelay(true);
    let left = deadline.saturating_duration_since(Instant::now());
    let req = h2::Request {
        method: "POST".into(),
        scheme: "http".into(),
        authority: addr.clone(),
        path: PATH.into(),
        headers: vec![
            ("content-type".into(), "application/grpc".into()),
            ("te".into(), "trailers".into()),
            ("user-agent".into(), user_agent("probe")),
            (
                "grpc-timeout".into(),
                format!("{}m", left.as_millis().max(1)),
            ),
        ],
        body: grpc_frame(&encode_request(service)),
        max_body: MAX_BODY,
    };
    let resp = future::or(async { Some(h2::request(&mut conn, &req).await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await;
    match resp {
        None => fail(format!("timeout: health rpc did not complete within {t}")),
        Some(Err(e)) => fail(format!(
            "error: health rpc probe failed: rpc error: code = Unavailable desc = {e:#}"
        )),
        Some(Ok(r)) => decide(&r, &t),
    }
}

fn fail(msg: String) -> Output {
    Output {
        outcome: Outcome::Failure,
        message: msg,
    }
}

/// What the response means (pure).
pub fn decide(r: &h2::Response, timeout: &str) -> Output {
    if r.status != 200 {
        // grpc-go's mapping of HTTP statuses to codes.
        let code = match r.status {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502 | 503 | 504 => 14,
            _ => 2,
        };
        let desc = format!(
            "unexpected HTTP status code received from server: {}",
            r.status
        );
        return rpc_error(code, &desc, timeout);
    }
    let code = r
        .trailer_or_header("grpc-status")
        .and_then(|s| s.trim().parse::<u32>().ok());
    let Some(code) = code else {
        return rpc_error(
            13,
            "server closed the stream without sending trailers",
            timeout,
        );
    };
    if code != 0 {
        let msg = percent_decode(r.trailer_or_header("grpc-message").unwrap_or(""));
        return rpc_error(code, &msg, timeout);
    }
    match decode_response(&r.body) {
        Ok(ServingStatus::Serving) => Output {
            outcome: Outcome::Success,
            message: "service healthy".into(),
        },
        Ok(s) => fail(format!("service unhealthy (responded with {:?})", s.name())),
        Err(e) => rpc_error(13, &e, timeout),
    }
}

/// Upstream's messages for a failed RPC.
fn rpc_error(code: u32, desc: &str, timeout: &str) -> Output {
    match code {
        12 => fail(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {desc}"
        )),
        4 => fail(format!("timeout: health rpc did not complete within {timeout}")),
        _ => fail(format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {desc}",
            code_name(code)
        )),
    }
}

fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |s| s.to_string())
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `HealthCheckRequest { string service = 1; }`
pub fn encode_request(service: &str) -> Vec<u8> {
    let mut m = Vec::new();
    if !service.is_empty() {
        m.push(0x0a);
        put_varint(&mut m, service.len() as u64);
        m.extend_from_slice(service.as_bytes());
    }
    m
}

/// The gRPC length-prefixed message: not compressed, big-endian length.
pub fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + msg.len());
    v.push(0);
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&c, rest)) = b.split_first() else {
            return Err("truncated varint".into());
        };
        *b = rest;
        v |= ((c & 0x7f) as u64) << shift;
        if c & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// Decodes the one length-prefixed `HealthCheckResponse` of the body and
/// its `status` (field 1); unknown fields are skipped.
pub fn decode_response(body: &[u8]) -> Result<ServingStatus, String> {
    if body.len() < 5 {
        return Err(format!(
            "response body of {} bytes is no gRPC message",
            body.len()
        ));
    }
    if body[0] != 0 {
        return Err("compressed response messages are not supported".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let Some(mut m) = body.get(5..5 + len) else {
        return Err("truncated gRPC message".into());
    };
    let mut status = ServingStatus::Unknown;
    while !m.is_empty() {
        let key = get_varint(&mut m)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = get_varint(&mut m)?;
                if field == 1 {
                    status = ServingStatus::from_wire(v);
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                m = m.get(n..).ok_or("truncated fixed field")?;
            }
            2 => {
                let n = get_varint(&mut m)? as usize;
                m = m.get(n..).ok_or("truncated length-delimited field")?;
            }
            w => return Err(format!("unsupported protobuf wire type {w}")),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: Vec<u8>, trailers: &[(&str, &str)]) -> h2::Response {
        h2::Response {
            status,
            headers: vec![],
            body,
            trailers: trailers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn request_encoding() {
        assert_eq!(encode_request(""), Vec::<u8>::new());
        assert_eq!(encode_request("db"), vec![0x0a, 2, b'd', b'b']);
        assert_eq!(grpc_frame(&[7]), vec![0, 0, 0, 0, 1, 7]);
        let long = "s".repeat(200);
        assert_eq!(&encode_request(&long)[..3], &[0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn response_decoding() {
        assert_eq!(
            decode_response(&grpc_frame(&[0x08, 1])),
            Ok(ServingStatus::Serving)
        );
        // Default status (field absent) is UNKNOWN; unknown fields skipped.
        assert_eq!(
            decode_response(&grpc_frame(&[0x12, 1, b'x', 0x08, 2])),
            Ok(ServingStatus::NotServing)
        );
        assert_eq!(
            decode_response(&grpc_frame(&[])),
            Ok(ServingStatus::Unknown)
        );
        assert!(decode_response(&[0, 0, 0, 0, 9, 8]).is_err());
        assert!(decode_response(&[1, 0, 0, 0, 0]).is_err());
        assert!(decode_response(&grpc_frame(&[0x08])).is_err());
    }

    #[test]
    fn decisions_and_messages() {
        let ok = decide(
            &resp(200, grpc_frame(&[0x08, 1]), &[("grpc-status", "0")]),
            "1s",
        );
        assert_eq!(
            (ok.outcome, ok.message.as_str()),
            (Outcome::Success, "service healthy")
        );
        let ns = decide(
            &resp(200, grpc_frame(&[0x08, 2]), &[("grpc-status", "0")]),
            "1s",
        );
        assert_eq!(ns.outcome, Outcome::Failure);
        assert_eq!(
            ns.message,
            "service unhealthy (responded with \"NOT_SERVING\")"
        );
        let nf = decide(
            &resp(
                200,
                vec![],
                &[("grpc-status", "5"), ("grpc-message", "unknown%20service")],
            ),
            "1s",
        );
        assert_eq!(
            nf.message,
            "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
        );
        let un = decide(
            &resp(200, vec![], &[("grpc-status", "12"), ("grpc-message", "x")]),
            "1s",
        );
        assert_eq!(
            un.message,
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): x"
        );
        let h404 = decide(&resp(404, vec![], &[]), "1s");
        assert!(h404
            .message
            .starts_with("error: this server does not implement"));
        let de = decide(&resp(200, vec![], &[("grpc-status", "4")]), "2s");
        assert_eq!(de.message, "timeout: health rpc did not complete within 2s");
        let none = decide(&resp(200, vec![], &[]), "1s");
        assert_eq!(none.outcome, Outcome::Failure);
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
