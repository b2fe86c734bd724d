//! `/portForward/{ns}/{pod}[/{uid}]` (upstream kubelet/pkg/cri/streaming/
//! portforward): after the upgrade (`portforward.k8s.io`) the client opens
//! a pair of streams per connection, `streamType: error` then `data`,
//! both with `port` and `requestID`; the server connects to
//! `localhost:<port>` inside the pod's network namespace and copies both
//! ways. A failure is written to the pair's error stream.
//!
//! Each pair is its own task; copies wait on the peer (socket or client),
//! so nothing is buffered beyond a frame per direction.

use super::http1::Reply;
use super::spdy::{self, Incoming, Session};
use async_io::Async;
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::channel;
use std::collections::HashMap;
use std::future::Future;
use std::net::TcpStream;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

pub const PROTOCOL: &str = "portforward.k8s.io";
/// Pairs waiting for their second stream, and pairs open, per session.
const MAX_PAIRS: usize = 128;

/// A `/portForward` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub namespace: String,
    pub pod: String,
    pub uid: Option<String>,
}

pub fn parse_request(segs: &[&str]) -> Result<PortForwardRequest, Reply> {
    match segs {
        [ns, pod] => Ok(PortForwardRequest {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            uid: None,
        }),
        [ns, pod, uid] => Ok(PortForwardRequest {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            uid: Some(uid.to_string()),
        }),
        _ => Err(Reply::text(404, "404 page not found\n")),
    }
}

/// Opens a connection to a port of the pod.
pub type Connect = Rc<dyn Fn(u16) -> Pin<Box<dyn Future<Output = anyhow::Result<TcpStream>>>>>;

/// The pair a stream belongs to: its `requestID`, or for old clients one
/// derived from the stream id (the data stream follows its error stream).
pub fn request_id(s: &Incoming) -> String {
    match s.header("requestid") {
        Some(r) if !r.is_empty() => r.to_string(),
        _ if s.header("streamtype") == Some("data") => s.id.saturating_sub(2).to_string(),
        _ => s.id.to_string(),
    }
}

/// `port` header: 1..=65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {s:?}")),
    }
}

#[derive(Default)]
struct Pair {
    error: Option<Incoming>,
    data: Option<Incoming>,
}

/// Runs an upgraded SPDY port-forward session until the client goes.
pub async fn serve_spdy<S>(
    io: S,
    buf: Vec<u8>,
    pod: String,
    uid: String,
    idle: Duration,
    connect: Connect,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (r, w) = futures_lite::io::split(io);
    let sess = Session::new(w, idle);
    let (tx, rx) = channel::bounded(4);
    let reader = crate::rt::spawn(spdy::read_loop(r, buf, sess.clone(), tx));
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut running: Vec<smol::Task<()>> = Vec::new();
    let accept = async {
        while let Ok(s) = rx.recv().await {
            running.retain(|t| !t.is_finished());
            let id = request_id(&s);
            let kind = s.header("streamtype").unwrap_or("").to_string();
            if (pending.len() + running.len() >= MAX_PAIRS && !pending.contains_key(&id))
                || (kind != "error" && kind != "data")
            {
                let _ = sess.reset(s.id, spdy::RST_REFUSED_STREAM).await;
                continue;
            }
            let p = pending.entry(id.clone()).or_default();
            if kind == "error" {
                p.error = Some(s);
            } else {
                p.data = Some(s);
            }
            if p.error.is_some() && p.data.is_some() {
                let Some(Pair {
                    error: Some(e),
                    data: Some(d),
                }) = pending.remove(&id)
                else {
                    continue;
                };
                let sess = sess.clone();
                let connect = connect.clone();
                let (pod, uid) = (pod.clone(), uid.clone());
                running.push(crate::rt::spawn(async move {
                    forward(e, d, &sess, &pod, &uid, connect).await;
                }));
            }
        }
    };
    // Ends when the client closes the connection (the reader ends and
    // drops the stream channel's sender).
    future::or(accept, async {
        let _ = reader.await;
    })
    .await;
    drop(running);
    sess.goaway(0, 0).await;
    sess.shutdown().await;
}

async fn forward<W: AsyncWrite + Unpin + 'static>(
    e: Incoming,
    d: Incoming,
    sess: &Rc<Session<W>>,
    pod: &str,
    uid: &str,
    connect: Connect,
) {
    let port = match d.header("port").map(parse_port) {
        Some(Ok(p)) => p,
        Some(Err(m)) => {
            let _ = sess.data(e.id, m.as_bytes(), true).await;
            let _ = sess.data(d.id, &[], true).await;
            return;
        }
        None => {
            let _ = sess.data(e.id, b"missing port", true).await;
            let _ = sess.data(d.id, &[], true).await;
            return;
        }
    };
    let conn = match connect(port).await.and_then(|c| Ok(Async::new(c)?)) {
        Ok(c) => Rc::new(c),
        Err(err) => {
            let msg = format!("error forwarding port {port} to pod {pod}, uid {uid}: {err:#}");
            log::debug!("{msg}");
            let _ = sess.data(e.id, msg.as_bytes(), true).await;
            let _ = sess.data(d.id, &[], true).await;
            return;
        }
    };
    // client -> pod; the client's FIN half-closes the connection.
    let up = {
        let conn = conn.clone();
        let mut rd = spdy::StreamReader::new(d.data);
        async move {
            while let Some(chunk) = rd.next().await {
                let mut w = &*conn;
                if w.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = conn.get_ref().shutdown(std::net::Shutdown::Write);
        }
    };
    let up = crate::rt::spawn(up);
    // pod -> client, until the pod closes its side.
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let mut r = &*conn;
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sess.data(d.id, &buf[..n], false).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = sess.data(d.id, &[], true).await;
    let _ = sess.data(e.id, &[], true).await;
    drop(up);
}

/// The `port` query parameters of the WebSocket variant.
pub fn query_ports(req: &super::http1::Request) -> Result<Vec<u16>, Reply> {
    let ports: Vec<String> = req
        .query_pairs()
        .into_iter()
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| v)
        .collect();
    if ports.is_empty() {
        return Err(Reply::text(400, "query parameter \"port\" is required"));
    }
    ports
        .iter()
        .map(|p| {
            parse_port(p)
                .map_err(|e| Reply::text(400, format!("unable to parse {p:?} as a port: {e}")))
        })
        .collect()
}

/// The pod a session forwards to.
pub struct Target {
    pub pod: String,
    pub uid: String,
    pub idle: Duration,
    pub connect: Connect,
}

/// Runs an upgraded WebSocket port-forward session: channel 2i carries
/// the i-th port's data, 2i+1 its errors; each channel starts with the
/// port (2 bytes, little-endian).
pub async fn serve_ws<S>(io: S, buf: Vec<u8>, protocol: String, ports: Vec<u16>, t: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    use super::websocket::{demux, Message, Reader, Writer};
    let Target {
        pod,
        uid,
        idle,
        connect,
    } = t;
    let (r, w) = futures_lite::io::split(io);
    let w = Writer::new(w, idle, protocol.contains("base64"));
    let mut inputs = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data, err) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data, err] {
            if w.channel(ch, &port.to_le_bytes()).await.is_err() {
                return;
            }
        }
        let (tx, rx) = channel::bounded::<Vec<u8>>(8);
        inputs.push(tx);
        let (w, connect, pod, uid) = (w.clone(), connect.clone(), pod.clone(), uid.clone());
        tasks.push(crate::rt::spawn(async move {
            let conn = match connect(port).await.and_then(|c| Ok(Async::new(c)?)) {
                Ok(c) => Rc::new(c),
                Err(e) => {
                    let msg =
                        format!("error forwarding port {port} to pod {pod}, uid {uid}: {e:#}");
                    let _ = w.channel(err, msg.as_bytes()).await;
                    return;
                }
            };
            let up = {
                let conn = conn.clone();
                crate::rt::spawn(async move {
                    while let Ok(chunk) = rx.recv().await {
                        let mut c = &*conn;
                        if c.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = conn.get_ref().shutdown(std::net::Shutdown::Write);
                })
            };
            let mut b = vec![0u8; 32 << 10];
            loop {
                let mut c = &*conn;
                match c.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if w.channel(data, &b[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            drop(up);
        }));
    }
    let mut rd = Reader::new(r, buf);
    loop {
        match rd.next(&w).await {
            Ok(Message::Data { text, payload }) => {
                if let Some((ch, d)) = demux(text, &payload) {
                    let i = usize::from(ch / 2);
                    // Data channels only; writes to error channels are ignored.
                    if ch % 2 == 0
                        && i < inputs.len()
                        && !d.is_empty()
                        && inputs[i].send(d).await.is_err()
                    {
                        log::debug!("port-forward: port {} closed", ports[i]);
                    }
                }
            }
            Ok(Message::Close) => break,
            Err(e) => {
                log::debug!("WebSocket port-forward: {e}");
                break;
            }
        }
    }
    drop(inputs);
    drop(tasks);
    w.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(id: u32, h: &[(&str, &str)]) -> Incoming {
        Incoming {
            id,
            headers: h
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data: channel::bounded(1).1,
        }
    }

    #[test]
    fn pairs_by_request_id_or_stream_id() {
        assert_eq!(
            request_id(&inc(5, &[("streamtype", "data"), ("requestid", "7")])),
            "7"
        );
        assert_eq!(request_id(&inc(1, &[("streamtype", "error")])), "1");
        assert_eq!(request_id(&inc(3, &[("streamtype", "data")])), "1");
        assert_eq!(parse_port("8080"), Ok(8080));
        assert!(
            parse_port("0").is_err() && parse_port("70000").is_err() && parse_port("x").is_err()
        );
        assert!(parse_request(&["ns"]).is_err());
        assert_eq!(
            parse_request(&["ns", "p", "u"]).unwrap().uid.as_deref(),
            Some("u")
        );
    }
}
