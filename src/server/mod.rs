//! The local HTTP API (upstream pkg/kubelet/server): `/healthz` on
//! `healthzBindAddress:healthzPort`, and on the read-only port (`address`:
//! `readOnlyPort`, when set) `/healthz`, `/pods`, `/spec` and
//! `/runningpods`.
//!
//! A small HTTP/1.1 server on async-io: one task per connection on this
//! thread's executor, keep-alive, bounded request heads and bodies, and
//! timeouts for every read and write so a slow client holds nothing but
//! its own connection slot (and is dropped when it dawdles).

use crate::api::core::{Container, Pod, PodSpec, PodStatus};
use crate::api::meta::ObjectMeta;
use crate::runtime::{keys, ContainerState, SandboxState};
use crate::stats::machine::MachineInfo;
use anyhow::{Context, Result};
use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What the API shows; the sync loop provides it.
#[allow(async_fn_in_trait)]
pub trait Host {
    /// The sync loop's health (upstream `SyncLoopHealthCheck`): `Err` with
    /// the reason when it has not run for too long.
    fn sync_loop_health(&self) -> Result<(), String>;
    /// The pods bound to this node, each with its current status (`/pods`).
    fn pods(&self) -> Vec<Pod>;
    /// What the runtime runs (`/runningpods`); [`running_pods`] builds the
    /// list from the runtime's sandboxes and containers.
    async fn running_pods(&self) -> Result<Vec<Pod>>;
    /// Machine information (`/spec`).
    fn machine_info(&self) -> MachineInfo {
        crate::stats::machine::collect()
    }
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/healthz` only (the healthz port).
    Healthz,
    /// `/healthz`, `/pods`, `/spec`, `/runningpods` (the read-only port).
    ReadOnly,
}

/// Limits that keep a connection from holding resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head must arrive within this after its first byte (or
    /// after the connection opened).
    pub head_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// Each write (and a request body) must complete within this.
    pub io_timeout: Duration,
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
            max_head_bytes: 16 << 10,
            max_body_bytes: 64 << 10,
            max_connections: 64,
        }
    }
}

/// A running listener; dropping it stops accepting (open connections
/// finish their current request).
pub struct Server {
    pub local_addr: SocketAddr,
    pub api: Api,
    _task: smol::Task<()>,
}

/// Starts the listeners the configuration asks for: the healthz port
/// (unless 0) and, with `enableServer`, the read-only port (unless 0).
pub fn start<H: Host + 'static>(
    cfg: &crate::config::KubeletConfig,
    host: Rc<H>,
) -> Result<Vec<Server>> {
    let mut servers = Vec::new();
    if cfg.healthz_port != 0 {
        let addr = SocketAddr::new(cfg.healthz_bind_address, cfg.healthz_port);
        servers.push(listen(addr, Api::Healthz, host.clone(), Limits::default())?);
    }
    if cfg.enable_server && cfg.read_only_port != 0 {
        let addr = SocketAddr::new(cfg.address, cfg.read_only_port);
        servers.push(listen(addr, Api::ReadOnly, host, Limits::default())?);
    }
    Ok(servers)
}

/// Binds `addr` and serves `api` on this thread's executor.
pub fn listen<H: Host + 'static>(
    addr: SocketAddr,
    api: Api,
    host: Rc<H>,
    limits: Limits,
) -> Result<Server> {
    let l = Async::<TcpListener>::bind(addr).with_context(|| format!("listen on {addr}"))?;
    let local_addr = l.get_ref().local_addr().context("listener address")?;
    log::info!("serving {api:?} API on {local_addr}");
    let task = crate::rt::spawn(accept_loop(l, api, host, limits));
    Ok(Server {
        local_addr,
        api,
        _task: task,
    })
}

async fn accept_loop<H: Host + 'static>(
    l: Async<TcpListener>,
    api: Api,
    host: Rc<H>,
    limits: Limits,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let (stream, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept on {:?}: {e}", l.get_ref().local_addr().ok());
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.get() >= limits.max_connections {
            log::debug!("{api:?} API: too many connections, dropping {peer}");
            continue;
        }
        active.set(active.get() + 1);
        let (host, active) = (host.clone(), active.clone());
        crate::rt::spawn(async move {
            if let Err(e) = serve_conn(stream, api, &*host, limits).await {
                log::debug!("{api:?} API connection from {peer}: {e:#}");
            }
            active.set(active.get() - 1);
        })
        .detach();
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    query: String,
    keep_alive: bool,
    content_length: usize,
    chunked: bool,
}

/// Parses a complete request head; `Ok(None)` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, &'static str> {
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
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let conn = header("connection").unwrap_or_default();
    let keep_alive = match r.version {
        Some(1) => !conn.split(',').any(|t| t.trim() == "close"),
        _ => conn.split(',').any(|t| t.trim() == "keep-alive"),
    };
    let content_length = match header("content-length") {
        Some(v) => v.parse().map_err(|_| "invalid Content-Length")?,
        None => 0,
    };
    Ok(Some((
        Head {
            method: r.method.unwrap_or("").to_string(),
            path: path.to_string(),
            query: query.to_string(),
            keep_alive,
            content_length,
            chunked: header("transfer-encoding").is_some(),
        },
        n,
    )))
}

/// A response ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    extra: Vec<(&'static str, String)>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            extra: vec![("X-Content-Type-Options", "nosniff".into())],
        }
    }
    fn json(body: Vec<u8>) -> Self {
        Reply {
            status: 200,
            content_type: "application/json",
            body,
            extra: vec![],
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "",
    }
}

fn encode(r: &Reply, head_only: bool, keep_alive: bool) -> Vec<u8> {
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

/// RFC 9110 IMF-fixdate.
fn http_date(t: jiff::Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    future::or(f, async {
        Timer::after(d).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await
}

async fn serve_conn<H: Host>(
    mut s: Async<TcpStream>,
    api: Api,
    host: &H,
    limits: Limits,
) -> Result<()> {
    let _ = s.get_ref().set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut first_request = true;
    loop {
        // Wait for a request: the head deadline runs from its first byte
        // (from the accept for the first request), idle time before that.
        let mut deadline = if first_request {
            Some(Instant::now() + limits.head_timeout)
        } else {
            None
        };
        first_request = false;
        let (head, used) = loop {
            if !buf.is_empty() {
                match parse_head(&buf) {
                    Ok(Some(x)) => break x,
                    Ok(None) => {}
                    Err(e) => {
                        let r = Reply::text(400, format!("400 Bad Request: {e}\n"));
                        let _ =
                            timed(limits.io_timeout, s.write_all(&encode(&r, false, false))).await;
                        return Ok(());
                    }
                }
                if buf.len() > limits.max_head_bytes {
                    let r = Reply::text(431, "431 Request Header Fields Too Large\n");
                    let _ = timed(limits.io_timeout, s.write_all(&encode(&r, false, false))).await;
                    return Ok(());
                }
                deadline.get_or_insert_with(|| Instant::now() + limits.head_timeout);
            }
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => limits.idle_timeout,
            };
            let mut tmp = [0u8; 2048];
            let n = match timed(wait, s.read(&mut tmp)).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    if deadline.is_some() && !buf.is_empty() {
                        let r = Reply::text(408, "408 Request Timeout\n");
                        let _ =
                            timed(limits.io_timeout, s.write_all(&encode(&r, false, false))).await;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            buf.extend_from_slice(&tmp[..n]);
        };
        buf.drain(..used);
        if head.chunked {
            let r = Reply::text(501, "501 Not Implemented: chunked request bodies\n");
            timed(limits.io_timeout, s.write_all(&encode(&r, false, false))).await?;
            return Ok(());
        }
        if head.content_length > limits.max_body_bytes {
            let r = Reply::text(413, "413 Request Entity Too Large\n");
            timed(limits.io_timeout, s.write_all(&encode(&r, false, false))).await?;
            return Ok(());
        }
        // Discard a (small) body; the API takes none.
        while buf.len() < head.content_length {
            let mut tmp = [0u8; 2048];
            let n = timed(limits.io_timeout, s.read(&mut tmp)).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        buf.drain(..head.content_length);

        let reply = route(api, host, &head).await;
        let head_only = head.method == "HEAD";
        let out = encode(&reply, head_only, head.keep_alive);
        timed(limits.io_timeout, s.write_all(&out)).await?;
        timed(limits.io_timeout, s.flush()).await?;
        if !head.keep_alive {
            return Ok(());
        }
    }
}

/// Where a request goes (upstream's routes on the two servers).
async fn route<H: Host>(api: Api, host: &H, h: &Head) -> Reply {
    let path = h.path.as_str();
    let known = match api {
        Api::Healthz => path == "/healthz",
        Api::ReadOnly => matches!(
            path,
            "/healthz" | "/pods" | "/pods/" | "/spec" | "/spec/" | "/runningpods" | "/runningpods/"
        ),
    };
    if !known {
        return Reply::text(404, "404 page not found\n");
    }
    if h.method != "GET" && h.method != "HEAD" {
        let mut r = Reply::text(405, "405: Method Not Allowed\n");
        r.extra.push(("Allow", "GET, HEAD".into()));
        return r;
    }
    match path {
        "/healthz" => {
            let checks: &[&str] = match api {
                Api::Healthz => &["syncloop"],
                Api::ReadOnly => &["ping", "syncloop"],
            };
            let verbose = h
                .query
                .split('&')
                .any(|kv| kv.split('=').next() == Some("verbose"));
            healthz(checks, host.sync_loop_health(), verbose)
        }
        "/pods" | "/pods/" => match pod_list_json(host.pods()) {
            Ok(b) => Reply::json(b),
            Err(e) => Reply::text(500, format!("{e:#}\n")),
        },
        "/spec" | "/spec/" => match serde_json::to_vec(&host.machine_info()) {
            Ok(b) => Reply::json(b),
            Err(e) => Reply::text(500, format!("{e}\n")),
        },
        _ => match host.running_pods().await {
            Ok(pods) => match pod_list_json(pods) {
                Ok(b) => Reply::json(b),
                Err(e) => Reply::text(500, format!("{e:#}\n")),
            },
            Err(e) => Reply::text(500, format!("{e:#}\n")),
        },
    }
}

/// Upstream's healthz handler output: `ok`, or the per-check lines and
/// "healthz check failed" with 500 (reasons withheld, as upstream).
fn healthz(checks: &[&str], syncloop: Result<(), String>, verbose: bool) -> Reply {
    let failed = syncloop.is_err();
    if let Err(reason) = &syncloop {
        log::warn!("healthz: syncloop check failed: {reason}");
    }
    if !failed && !verbose {
        return Reply::text(200, "ok");
    }
    let mut out = String::new();
    for c in checks {
        if *c == "syncloop" && failed {
            out += "[-]syncloop failed: reason withheld\n";
        } else {
            out += &format!("[+]{c} ok\n");
        }
    }
    if failed {
        out += "healthz check failed\n";
        Reply::text(500, out)
    } else {
        out += "healthz check passed\n";
        Reply::text(200, out)
    }
}

/// `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[…]}`
pub fn pod_list_json(items: Vec<Pod>) -> Result<Vec<u8>> {
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    });
    serde_json::to_vec(&list).context("encode PodList")
}

/// The pods the runtime runs, as upstream's `GetRunningPods` shows them:
/// ready sandboxes and running containers grouped by pod UID (labels),
/// each pod with only name, namespace and UID, each container with only
/// name and image; newest sandbox first.
pub fn running_pods(
    sandboxes: &[crate::runtime::PodSandbox],
    containers: &[crate::runtime::Container],
) -> Vec<Pod> {
    struct P {
        name: String,
        namespace: String,
        created: i64,
        containers: Vec<Container>,
    }
    let mut pods: BTreeMap<String, P> = BTreeMap::new();
    for s in sandboxes.iter().filter(|s| s.state == SandboxState::Ready) {
        let p = pods.entry(s.metadata.uid.clone()).or_insert_with(|| P {
            name: s.metadata.name.clone(),
            namespace: s.metadata.namespace.clone(),
            created: 0,
            containers: vec![],
        });
        p.created = s.created_at;
    }
    for c in containers
        .iter()
        .filter(|c| c.state == ContainerState::Running)
    {
        let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let p = pods.entry(label(keys::POD_UID)).or_insert_with(|| P {
            name: label(keys::POD_NAME),
            namespace: label(keys::POD_NAMESPACE),
            created: 0,
            containers: vec![],
        });
        let name = if c.metadata.name.is_empty() {
            label(keys::CONTAINER_NAME)
        } else {
            c.metadata.name.clone()
        };
        p.containers.push(Container {
            name,
            image: Some(c.image.clone()),
            ..Default::default()
        });
    }
    let mut list: Vec<(String, P)> = pods.into_iter().collect();
    list.sort_by_key(|(_, p)| std::cmp::Reverse(p.created));
    list.into_iter()
        .map(|(uid, p)| Pod {
            metadata: ObjectMeta {
                name: Some(p.name),
                namespace: Some(p.namespace),
                uid: Some(uid),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: p.containers,
                ..Default::default()
            }),
            status: Some(PodStatus::default()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerMetadata, PodSandbox, PodSandboxMetadata};

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
    fn healthz_output_as_upstream() {
        let r = healthz(&["syncloop"], Ok(()), false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = healthz(&["ping", "syncloop"], Ok(()), true);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "[+]ping ok\n[+]syncloop ok\nhealthz check passed\n"
        );
        let r = healthz(
            &["ping", "syncloop"],
            Err("sync loop stuck for 5m".into()),
            false,
        );
        assert_eq!(r.status, 500);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "[+]ping ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"
        );
    }

    #[test]
    fn pod_list_shape() {
        let v: serde_json::Value = serde_json::from_slice(&pod_list_json(vec![]).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        );
    }

    #[test]
    fn running_pods_group_ready_sandboxes_and_running_containers() {
        let sb = |uid: &str, name: &str, state, created| PodSandbox {
            id: format!("sb-{uid}"),
            metadata: PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: "default".into(),
                attempt: 0,
            },
            state,
            created_at: created,
            ..Default::default()
        };
        let ctr = |uid: &str, name: &str, state| crate::runtime::Container {
            id: format!("{uid}-{name}"),
            metadata: ContainerMetadata {
                name: name.into(),
                attempt: 0,
            },
            image: "busybox:1.36".into(),
            state,
            labels: [
                (keys::POD_UID.to_string(), uid.to_string()),
                (keys::POD_NAME.to_string(), format!("pod-{uid}")),
                (keys::POD_NAMESPACE.to_string(), "kube-system".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let pods = running_pods(
            &[
                sb("a", "old", SandboxState::Ready, 1),
                sb("b", "new", SandboxState::Ready, 5),
                sb("c", "gone", SandboxState::NotReady, 9),
            ],
            &[
                ctr("a", "app", ContainerState::Running),
                ctr("a", "done", ContainerState::Exited),
                ctr("d", "orphan", ContainerState::Running),
            ],
        );
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["new", "old", "pod-d"]);
        let old = serde_json::to_value(&pods[1]).unwrap();
        assert_eq!(
            old,
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "old", "namespace": "default", "uid": "a"},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
                "status": {}})
        );
        assert_eq!(pods[2].metadata.namespace.as_deref(), Some("kube-system"));
    }
}
