//! API errors: the server's `Status` answers decoded into a typed error,
//! and the transport's failures kept apart from them, so callers can tell
//! "the server said no" from "the server could not be asked".

use std::time::Duration;

/// A `metav1.Status` failure from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiStatus {
    /// HTTP status code (`Status.code`, else the response's).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Gone`,
    /// `Expired`, `Invalid`, `TooManyRequests`, `Forbidden`, ...).
    pub reason: String,
    pub message: String,
    /// `Retry-After` (429, some 5xx) or `details.retryAfterSeconds`.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a failure status.
    #[error("{}", fmt_status(.0))]
    Api(ApiStatus),
    /// The server could not be reached or the connection broke; the request
    /// may or may not have been processed.
    #[error("{0}")]
    Transport(String),
    /// The answer could not be decoded.
    #[error("decode {what}: {error}")]
    Decode { what: String, error: String },
    /// Bad input from picolet's side (an object that will not encode, a
    /// name that cannot be in a path).
    #[error("{0}")]
    Invalid(String),
}

fn fmt_status(s: &ApiStatus) -> String {
    let mut m = format!("{} {}", s.code, s.reason);
    if !s.message.is_empty() {
        m += ": ";
        m += &s.message;
    }
    m
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn status(&self) -> Option<&ApiStatus> {
        match self {
            Error::Api(s) => Some(s),
            _ => None,
        }
    }
    fn code(&self) -> u16 {
        self.status().map_or(0, |s| s.code)
    }
    pub fn is_not_found(&self) -> bool {
        self.code() == 404
    }
    pub fn is_already_exists(&self) -> bool {
        self.code() == 409 && self.status().is_some_and(|s| s.reason == "AlreadyExists")
    }
    /// 409 Conflict (a resourceVersion or UID precondition failed).
    pub fn is_conflict(&self) -> bool {
        self.code() == 409 && !self.is_already_exists()
    }
    /// 410 Gone / `Expired`: a watch or list from a resourceVersion that
    /// the server no longer has.
    pub fn is_gone(&self) -> bool {
        self.code() == 410 || self.status().is_some_and(|s| s.reason == "Expired")
    }
    pub fn is_invalid(&self) -> bool {
        self.code() == 422
    }
    pub fn is_unauthorized(&self) -> bool {
        self.code() == 401
    }
    pub fn is_forbidden(&self) -> bool {
        self.code() == 403
    }
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Transport(_))
    }
    /// Worth trying again later: transport failures, 429, 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Api(s) => s.code == 429 || s.code >= 500,
            _ => false,
        }
    }
    pub fn retry_after(&self) -> Option<Duration> {
        self.status().and_then(|s| s.retry_after)
    }
}

/// Builds the error of a non-2xx answer from its body (a `Status` when the
/// server sent one) and its `Retry-After` header.
pub fn from_response(code: u16, body: &[u8], retry_after: Option<&str>) -> Error {
    let mut st = ApiStatus {
        code,
        reason: default_reason(code).to_string(),
        message: String::new(),
        retry_after: retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs),
    };
    if let Some(pb) = protobuf::status(body) {
        if let Some(c) = pb.code.filter(|c| (100..600).contains(c)) {
            st.code = c as u16;
        }
        if !pb.reason.is_empty() {
            st.reason = pb.reason;
        }
        st.message = pb.message;
        if st.retry_after.is_none() {
            st.retry_after = pb.retry_after.filter(|s| *s > 0).map(Duration::from_secs);
        }
        return Error::Api(st);
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.get("kind").and_then(|k| k.as_str()) == Some("Status") => {
            if let Some(c) = v.get("code").and_then(|c| c.as_u64()) {
                if (100..600).contains(&c) {
                    st.code = c as u16;
                }
            }
            if let Some(r) = v.get("reason").and_then(|r| r.as_str()) {
                if !r.is_empty() {
                    st.reason = r.to_string();
                }
            }
            if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
                st.message = m.to_string();
            }
            if st.retry_after.is_none() {
                st.retry_after = v
                    .pointer("/details/retryAfterSeconds")
                    .and_then(|s| s.as_u64())
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs);
            }
        }
        _ => {
            // Not a Status (a proxy's page, garbage): keep a short excerpt.
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            st.message = text.trim().to_string();
        }
    }
    Error::Api(st)
}

/// `metav1.StatusReason` for a bare HTTP code.
fn default_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Gone",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_are_decoded() {
        let e = from_response(
            404,
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"nodes \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"nodes"},"code":404}"#,
            None,
        );
        assert!(e.is_not_found() && !e.is_retryable());
        assert_eq!(e.to_string(), "404 NotFound: nodes \"x\" not found");

        let e = from_response(
            409,
            br#"{"kind":"Status","reason":"AlreadyExists","code":409}"#,
            None,
        );
        assert!(e.is_already_exists() && !e.is_conflict());
        let e = from_response(409, br#"{"kind":"Status","reason":"Conflict","code":409,"message":"Precondition failed: UID in precondition: 1, UID in object meta: 2"}"#, None);
        assert!(e.is_conflict());

        let e = from_response(
            429,
            br#"{"kind":"Status","reason":"TooManyRequests","code":429,"details":{"retryAfterSeconds":3}}"#,
            Some("1"),
        );
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        let e = from_response(
            429,
            br#"{"kind":"Status","reason":"TooManyRequests","code":429,"details":{"retryAfterSeconds":3}}"#,
            None,
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));

        let e = from_response(
            200,
            br#"{"kind":"Status","reason":"Expired","code":410,"message":"too old resource version: 1 (200)"}"#,
            None,
        );
        assert!(e.is_gone());
        assert_eq!(e.status().map(|s| s.code), Some(410));

        let e = from_response(
            422,
            br#"{"kind":"Status","reason":"Invalid","code":422}"#,
            None,
        );
        assert!(e.is_invalid());
    }

    #[test]
    fn non_status_bodies_keep_an_excerpt() {
        let e = from_response(502, b"<html>bad gateway</html>", None);
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "502 Unknown: <html>bad gateway</html>");
        let e = from_response(401, &[0xff; 500], None);
        assert!(e.is_unauthorized());
        assert!(e.to_string().len() < 700);
    }
}

/// A `Status` in the API's protobuf encoding (the answer to a request that
/// accepted protobuf): just enough of the wire format to read it.
mod protobuf {
    #[derive(Debug, Default, PartialEq)]
    pub struct Status {
        pub code: Option<u64>,
        pub reason: String,
        pub message: String,
        pub retry_after: Option<u64>,
    }

    /// The envelope: magic `k8s\0`, then `runtime.Unknown` whose field 1
    /// is the type (`kind` is its field 2) and field 2 the object.
    pub fn status(body: &[u8]) -> Option<Status> {
        let unknown = body.strip_prefix(b"k8s\0")?;
        let mut kind = None;
        let mut raw = None;
        for (n, v) in fields(unknown)? {
            match (n, v) {
                (1, Value::Bytes(t)) => {
                    for (n, v) in fields(t)? {
                        if let (2, Value::Bytes(k)) = (n, v) {
                            kind = Some(k);
                        }
                    }
                }
                (2, Value::Bytes(r)) => raw = Some(r),
                _ => {}
            }
        }
        if kind != Some(b"Status".as_slice()) {
            return None;
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut st = Status::default();
        for (n, v) in fields(raw?)? {
            match (n, v) {
                (3, Value::Bytes(m)) => st.message = text(m),
                (4, Value::Bytes(r)) => st.reason = text(r),
                (6, Value::Varint(c)) => st.code = Some(c),
                (5, Value::Bytes(d)) => {
                    for (n, v) in fields(d)? {
                        if let (5, Value::Varint(s)) = (n, v) {
                            st.retry_after = Some(s);
                        }
                    }
                }
                _ => {}
            }
        }
        Some(st)
    }

    enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Fixed,
    }

    /// The fields of one message; `None` when it is not well formed.
    fn fields(mut b: &[u8]) -> Option<Vec<(u64, Value<'_>)>> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b)?;
            let v = match key & 7 {
                0 => Value::Varint(varint(&mut b)?),
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    b = b.get(n..)?;
                    Value::Fixed
                }
                2 => {
                    let n = usize::try_from(varint(&mut b)?).ok()?;
                    let v = b.get(..n)?;
                    b = &b[n..];
                    Value::Bytes(v)
                }
                _ => return None,
            };
            out.push((key >> 3, v));
        }
        Some(out)
    }

    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(x & 0x7f) << (7 * i);
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn ld(field: u8, b: &[u8]) -> Vec<u8> {
            let mut v = vec![field << 3 | 2, b.len() as u8];
            v.extend_from_slice(b);
            v
        }

        #[test]
        fn reads_a_status_and_refuses_other_bytes() {
            let type_meta = [ld(1, b"v1"), ld(2, b"Status")].concat();
            let details = vec![5 << 3, 7];
            let st = [
                ld(2, b"Failure"),
                ld(3, b"leases \"n1\" not found"),
                ld(4, b"NotFound"),
                ld(5, &details),
                vec![6 << 3, 0x94, 0x03],
            ]
            .concat();
            let body = [b"k8s\0".to_vec(), ld(1, &type_meta), ld(2, &st)].concat();
            assert_eq!(
                status(&body),
                Some(Status {
                    code: Some(404),
                    reason: "NotFound".into(),
                    message: "leases \"n1\" not found".into(),
                    retry_after: Some(7),
                })
            );
            // Another kind, a torn body, JSON: not a protobuf Status.
            let lease = [b"k8s\0".to_vec(), ld(1, &ld(2, b"Lease")), ld(2, b"")].concat();
            assert_eq!(status(&lease), None);
            assert_eq!(status(&body[..body.len() - 2]), None);
            assert_eq!(status(br#"{"kind":"Status"}"#), None);
        }
    }
}
