//! The kubelet's HTTP API (upstream pkg/kubelet/server):
//! - `/healthz` on `healthzBindAddress:healthzPort`;
//! - the read-only port (`address:readOnlyPort`, when set): `/healthz`,
//!   `/pods`, `/spec`, `/runningpods`;
//! - the secure port (`address:port`, TLS, authenticated and authorized):
//!   the above plus `/configz`, `/containerLogs`, `/exec`, `/attach`,
//!   `/portForward`, `/stats/summary`, `/metrics`, `/metrics/resource`,
//!   `/metrics/probes`.
//!
//! A small HTTP/1.1 server on async-io: one task per connection on this
//! thread's executor, keep-alive, bounded request heads and bodies, and
//! timeouts for every read and write so a slow client holds nothing but
//! its own connection slot (and is dropped when it dawdles). Streams
//! (logs, exec, attach, port-forward) apply back-pressure to their source
//! instead of buffering.
//!
//! The secure port also serves HTTP/2 ([`h2`]) to TLS clients that offer
//! ALPN `h2` (as Go's net/http kubelet does): every endpoint but the
//! upgrades (exec, attach, port-forward stay HTTP/1.1), with the same
//! authentication, limits and timeouts. The read-only and healthz ports
//! are HTTP/1.1 only.

pub mod auth;
pub mod cert;
pub mod h2;
pub mod http1;
pub mod logs;
pub mod metrics;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod stats;
pub mod tls;
pub mod websocket;

use crate::api::core::{Container, Pod, PodSpec, PodStatus};
use crate::api::meta::ObjectMeta;
use crate::runtime::{keys, ContainerState, SandboxState};
use crate::stats::machine::MachineInfo;
use anyhow::{Context, Result};
use async_io::{Async, Timer};
use futures_lite::{AsyncRead, AsyncWrite};
use http1::{Next, Reply, Request};
use rustls::pki_types::CertificateDer;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

/// What the API shows and does; the agent provides it.
#[allow(async_fn_in_trait)]
pub trait Host {
    /// The sync loop's health (upstream `SyncLoopHealthCheck`): `Err` with
    /// the reason when it has not run for too long.
    fn sync_loop_health(&self) -> Result<(), String>;
    /// The pods bound to this node, each with its current status (`/pods`).
    fn pods(&self) -> Vec<Pod>;
    /// `/pods` as JSON: a `PodList` of [`Host::pods`]. The agent writes it
    /// from its stored pods and statuses without copying each pod first.
    fn pods_json(&self) -> Result<Vec<u8>> {
        pod_list_json(self.pods())
    }
    /// What the runtime runs (`/runningpods`); [`running_pods`] builds the
    /// list from the runtime's sandboxes and containers.
    async fn running_pods(&self) -> Result<Vec<Pod>>;
    /// Machine information (`/spec`).
    fn machine_info(&self) -> MachineInfo {
        crate::stats::machine::collect()
    }
    /// A container's runtime status (log path, state).
    async fn container_status(&self, id: &str) -> Result<crate::runtime::ContainerStatus> {
        anyhow::bail!("container {id}: no runtime behind this API")
    }
    /// Starts `cmd` in a running container with streamed stdio.
    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        opts: crate::runtime::stream::StreamOptions,
    ) -> Result<crate::runtime::stream::StreamProcess> {
        let _ = (cmd, opts);
        anyhow::bail!("container {container_id}: no runtime behind this API")
    }
    /// Attaches to a running container's stdio.
    async fn attach(
        &self,
        container_id: &str,
        opts: crate::runtime::stream::StreamOptions,
    ) -> Result<crate::runtime::stream::StreamProcess> {
        let _ = opts;
        anyhow::bail!("container {container_id}: no runtime behind this API")
    }
    /// A connection to `localhost:port` in the network namespace of the
    /// pod with this UID.
    async fn port_forward(&self, pod_uid: &str, port: u16) -> Result<std::net::TcpStream> {
        anyhow::bail!("pod {pod_uid} port {port}: no runtime behind this API")
    }
    /// The pods, containers and stats `/stats/summary` and the metrics
    /// are made of.
    async fn stats_inputs(&self) -> Result<stats::Inputs> {
        Ok(stats::Inputs::default())
    }
    /// The API client, once picolet is a cluster member (token and access
    /// reviews).
    fn api_client(&self) -> Option<Rc<crate::kube::Client>> {
        None
    }
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/healthz` only (the healthz port).
    Healthz,
    /// `/healthz`, `/pods`, `/spec`, `/runningpods` (the read-only port).
    ReadOnly,
    /// Everything, behind TLS, authentication and authorization.
    Secure,
}

/// Limits that keep a connection from holding resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head must arrive within this after its first byte (or
    /// after the connection opened); also bounds the TLS handshake.
    pub head_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// Each write (and a request body) must complete within this.
    pub io_timeout: Duration,
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Connections still in the TLS handshake or before their first
    /// request; more are refused at once (a flood of half-open
    /// connections cannot take every slot for long).
    pub max_pending: usize,
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
            max_pending: 64,
        }
    }
}

impl Limits {
    /// The secure port: long-lived streams (logs -f, exec) need more slots.
    pub fn secure() -> Self {
        Limits {
            max_connections: 1024,
            max_pending: 256,
            ..Limits::default()
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

/// Shared by every connection of a listener.
struct Ctx<H> {
    api: Api,
    host: Rc<H>,
    limits: Limits,
    auth: Option<Rc<auth::Auth>>,
    /// `enableDebuggingHandlers`: logs, exec, attach, port-forward.
    debugging: bool,
    configz: serde_json::Value,
    /// `streamingConnectionIdleTimeout`.
    stream_idle: Duration,
    node: NodePaths,
    cgroups: Option<crate::runtime::cgroups::Cgroups>,
    rates: stats::Rates,
    registry: metrics::Registry,
    active: Cell<usize>,
    pending: Cell<usize>,
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

/// Binds `addr` and serves `api` on this thread's executor (plain HTTP).
pub fn listen<H: Host + 'static>(
    addr: SocketAddr,
    api: Api,
    host: Rc<H>,
    limits: Limits,
) -> Result<Server> {
    let l = Async::<TcpListener>::bind(addr).with_context(|| format!("listen on {addr}"))?;
    let local_addr = l.get_ref().local_addr().context("listener address")?;
    log::info!("serving {api:?} API on {local_addr}");
    let ctx = Rc::new(Ctx {
        api,
        host,
        limits,
        auth: None,
        debugging: false,
        configz: serde_json::Value::Null,
        stream_idle: Duration::from_secs(4 * 3600),
        node: NodePaths::default(),
        cgroups: None,
        rates: stats::Rates::default(),
        registry: metrics::Registry::default(),
        active: Cell::new(0),
        pending: Cell::new(0),
    });
    let task = crate::rt::spawn(accept_loop(l, ctx, None));
    Ok(Server {
        local_addr,
        api,
        _task: task,
    })
}

/// The secure port's settings.
pub struct SecureOptions {
    pub addr: SocketAddr,
    pub tls: tls::ServerTls,
    pub auth: auth::AuthConfig,
    pub node_name: String,
    pub debugging: bool,
    pub configz: serde_json::Value,
    pub limits: Limits,
    pub stream_idle: Duration,
    pub node: NodePaths,
}

/// Where the node's figures come from.
#[derive(Debug, Clone, Default)]
pub struct NodePaths {
    pub node_name: String,
    pub root_dir: std::path::PathBuf,
    pub images_dir: std::path::PathBuf,
    /// The pods' parent cgroup (`<cgroupRoot>/kubepods`).
    pub pods_cgroup: String,
}

impl SecureOptions {
    /// From the configuration: the serving certificate (made under
    /// `<root>/pki` when none is configured) for the node's name and IPs.
    pub fn from_config(cfg: &crate::config::Config, node_ips: &[IpAddr]) -> Result<SecureOptions> {
        let k = &cfg.kubelet;
        let settings = tls::TlsSettings {
            cert_file: k.tls_cert_file.clone(),
            key_file: k.tls_private_key_file.clone(),
            min_version: k.tls_min_version.clone(),
            cipher_suites: k.tls_cipher_suites.clone(),
            client_ca_file: k.authentication.client_ca_file.clone(),
        };
        let server_tls = tls::server_tls(
            &settings,
            &cfg.root_dir.join("pki"),
            &cfg.node_name,
            node_ips,
        )?;
        let a = &k.authentication;
        let z = &k.authorization;
        let auth = auth::AuthConfig {
            anonymous: a.anonymous,
            webhook: a.webhook_enabled,
            cache_ttl: a.webhook_cache_ttl,
            mode: if z.mode == "AlwaysAllow" {
                auth::AuthzMode::AlwaysAllow
            } else {
                auth::AuthzMode::Webhook
            },
            authorized_ttl: z.cache_authorized_ttl,
            unauthorized_ttl: z.cache_unauthorized_ttl,
        };
        Ok(SecureOptions {
            addr: SocketAddr::new(k.address, k.port),
            tls: server_tls,
            auth,
            node_name: cfg.node_name.clone(),
            debugging: k.enable_debugging_handlers,
            configz: configz(k),
            limits: Limits::secure(),
            stream_idle: k.streaming_connection_idle_timeout,
            node: NodePaths {
                node_name: cfg.node_name.clone(),
                root_dir: cfg.root_dir.clone(),
                images_dir: cfg.images_dir(),
                pods_cgroup: if k.cgroups_per_qos {
                    crate::runtime::convert::qos_cgroups(&k.cgroup_root)[0].clone()
                } else {
                    k.cgroup_root.clone()
                },
            },
        })
    }
}

/// Binds the secure port and serves the full API over TLS.
pub fn listen_secure<H: Host + 'static>(o: SecureOptions, host: Rc<H>) -> Result<Server> {
    let addr = o.addr;
    let l = Async::<TcpListener>::bind(addr).with_context(|| format!("listen on {addr}"))?;
    let local_addr = l.get_ref().local_addr().context("listener address")?;
    log::info!("serving the kubelet API (TLS) on {local_addr}");
    let h = host.clone();
    let client: auth::ClientFn = Rc::new(move || h.api_client());
    let auth = Rc::new(auth::Auth::new(
        o.auth,
        &o.node_name,
        o.tls.clients.clone(),
        client,
    ));
    let ctx = Rc::new(Ctx {
        api: Api::Secure,
        host,
        limits: o.limits,
        auth: Some(auth),
        debugging: o.debugging,
        configz: o.configz,
        stream_idle: o.stream_idle,
        cgroups: crate::runtime::cgroups::Cgroups::detect().ok(),
        node: o.node,
        rates: stats::Rates::default(),
        registry: metrics::Registry::default(),
        active: Cell::new(0),
        pending: Cell::new(0),
    });
    let acceptor = futures_rustls::TlsAcceptor::from(o.tls.config.clone());
    let task = crate::rt::spawn(accept_loop(l, ctx, Some(acceptor)));
    Ok(Server {
        local_addr,
        api: Api::Secure,
        _task: task,
    })
}

async fn accept_loop<H: Host + 'static>(
    l: Async<TcpListener>,
    ctx: Rc<Ctx<H>>,
    tls: Option<futures_rustls::TlsAcceptor>,
) {
    let api = ctx.api;
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
        if ctx.active.get() >= ctx.limits.max_connections
            || ctx.pending.get() >= ctx.limits.max_pending
        {
            log::debug!("{api:?} API: too many connections, dropping {peer}");
            continue;
        }
        ctx.active.set(ctx.active.get() + 1);
        ctx.pending.set(ctx.pending.get() + 1);
        let ctx = ctx.clone();
        let tls = tls.clone();
        crate::rt::spawn(async move {
            let _ = stream.get_ref().set_nodelay(true);
            let mut pending = PendingGuard(Some(ctx.clone()));
            let r = match tls {
                None => serve_conn(stream, &ctx, None, &mut pending).await,
                Some(acc) => {
                    let hs = http1::timed(ctx.limits.head_timeout, acc.accept(stream)).await;
                    match hs {
                        Ok(s) => {
                            let tls = s.get_ref().1;
                            let certs = tls.peer_certificates().map(|c| c.to_vec());
                            if tls.alpn_protocol() == Some(b"h2") {
                                h2::serve(s, &ctx, certs, &mut pending).await
                            } else {
                                serve_conn(s, &ctx, certs, &mut pending).await
                            }
                        }
                        Err(e) => Err(anyhow::Error::new(e).context("TLS handshake")),
                    }
                }
            };
            if let Err(e) = r {
                log::debug!("{api:?} API connection from {peer}: {e:#}");
            }
            drop(pending);
            ctx.active.set(ctx.active.get() - 1);
        })
        .detach();
    }
}

/// Counts a connection as pending until its first request arrived.
struct PendingGuard<H>(Option<Rc<Ctx<H>>>);
impl<H> PendingGuard<H> {
    fn done(&mut self) {
        if let Some(c) = self.0.take() {
            c.pending.set(c.pending.get() - 1);
        }
    }
}
impl<H> Drop for PendingGuard<H> {
    fn drop(&mut self) {
        self.done();
    }
}

/// What a request turned into.
enum Action {
    Reply(Reply),
    /// A streamed container log.
    Logs {
        path: std::path::PathBuf,
        opts: logs::LogOptions,
        container_id: String,
    },
    /// An exec or attach session (an upgrade).
    Command {
        req: remotecommand::CommandRequest,
        container_id: String,
    },
    /// A port-forward session (an upgrade).
    PortForward {
        pod: String,
        uid: String,
    },
}

async fn serve_conn<S, H>(
    mut s: S,
    ctx: &Rc<Ctx<H>>,
    peer_certs: Option<Vec<CertificateDer<'static>>>,
    pending: &mut PendingGuard<H>,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    H: Host + 'static,
{
    let limits = ctx.limits;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        let next = http1::read_head(
            &mut s,
            &mut buf,
            first,
            limits.head_timeout,
            limits.idle_timeout,
            limits.max_head_bytes,
        )
        .await?;
        first = false;
        pending.done();
        let req = match next {
            Next::Request(r) => r,
            Next::Closed => return Ok(()),
            Next::Reject(r) => {
                let _ =
                    http1::write_all(&mut s, &http1::encode(&r, false, false), limits.io_timeout)
                        .await;
                return Ok(());
            }
        };
        if req.chunked {
            let r = Reply::text(501, "501 Not Implemented: chunked request bodies\n");
            http1::write_all(&mut s, &http1::encode(&r, false, false), limits.io_timeout).await?;
            return Ok(());
        }
        if req.content_length > limits.max_body_bytes {
            let r = Reply::text(413, "413 Request Entity Too Large\n");
            http1::write_all(&mut s, &http1::encode(&r, false, false), limits.io_timeout).await?;
            return Ok(());
        }
        // A (small) body: the API takes none.
        if !http1::discard_body(&mut s, &mut buf, req.content_length, limits.io_timeout).await? {
            return Ok(());
        }
        let action = dispatch(ctx, peer_certs.as_deref(), &req).await;
        match action {
            Action::Reply(reply) => {
                let out = http1::encode(&reply, req.method == "HEAD", req.keep_alive);
                http1::write_all(&mut s, &out, limits.io_timeout).await?;
                if !req.keep_alive {
                    return Ok(());
                }
            }
            Action::Logs {
                path,
                opts,
                container_id,
            } => {
                let mut out = logs::Chunked {
                    io: &mut s,
                    io_timeout: limits.io_timeout,
                };
                stream_logs(&ctx.host, &mut out, path, &opts, container_id).await?;
                return Ok(());
            }
            Action::Command {
                req: cmd,
                container_id,
            } => {
                if req.wants_upgrade("websocket") {
                    let protocol = match websocket::negotiate(&req, websocket::COMMAND_PROTOCOLS)
                        .and_then(|p| websocket::handshake(&req, &p).map(|h| (p, h)))
                    {
                        Ok(x) => x,
                        Err(r) => {
                            http1::write_all(
                                &mut s,
                                &http1::encode(&r, false, false),
                                limits.io_timeout,
                            )
                            .await?;
                            return Ok(());
                        }
                    };
                    http1::write_all(&mut s, &protocol.1, limits.io_timeout).await?;
                    let host = ctx.host.clone();
                    let (kind, command, opts) = (cmd.kind, cmd.command.clone(), cmd.opts);
                    let start = move || async move {
                        match kind {
                            remotecommand::Kind::Exec => {
                                host.exec(&container_id, &command, opts).await
                            }
                            remotecommand::Kind::Attach => host.attach(&container_id, opts).await,
                        }
                    };
                    remotecommand::serve_ws(
                        s,
                        std::mem::take(&mut buf),
                        protocol.0,
                        cmd,
                        ctx.stream_idle,
                        start,
                    )
                    .await;
                    return Ok(());
                }
                let Some(protocol) =
                    upgrade_spdy(&mut s, &req, remotecommand::SPDY_PROTOCOLS, limits).await?
                else {
                    return Ok(());
                };
                let host = ctx.host.clone();
                let (kind, command, opts) = (cmd.kind, cmd.command.clone(), cmd.opts);
                let start = move || async move {
                    match kind {
                        remotecommand::Kind::Exec => host.exec(&container_id, &command, opts).await,
                        remotecommand::Kind::Attach => host.attach(&container_id, opts).await,
                    }
                };
                remotecommand::serve_spdy(
                    s,
                    std::mem::take(&mut buf),
                    protocol,
                    cmd,
                    ctx.stream_idle,
                    start,
                )
                .await;
                return Ok(());
            }
            Action::PortForward { pod, uid } => {
                let host = ctx.host.clone();
                let pod_uid = uid.clone();
                let connect: portforward::Connect = Rc::new(move |port| {
                    let host = host.clone();
                    let pod_uid = pod_uid.clone();
                    Box::pin(async move { host.port_forward(&pod_uid, port).await })
                });
                if req.wants_upgrade("websocket") {
                    let ready = portforward::query_ports(&req).and_then(|ports| {
                        let p = websocket::negotiate(&req, websocket::PORTFORWARD_PROTOCOLS)?;
                        let h = websocket::handshake(&req, &p)?;
                        Ok((ports, p, h))
                    });
                    let (ports, protocol, head) = match ready {
                        Ok(x) => x,
                        Err(r) => {
                            http1::write_all(
                                &mut s,
                                &http1::encode(&r, false, false),
                                limits.io_timeout,
                            )
                            .await?;
                            return Ok(());
                        }
                    };
                    http1::write_all(&mut s, &head, limits.io_timeout).await?;
                    let b = std::mem::take(&mut buf);
                    let target = portforward::Target {
                        pod,
                        uid,
                        idle: ctx.stream_idle,
                        connect,
                    };
                    portforward::serve_ws(s, b, protocol, ports, target).await;
                    return Ok(());
                }
                if upgrade_spdy(&mut s, &req, &[portforward::PROTOCOL], limits)
                    .await?
                    .is_none()
                {
                    return Ok(());
                }
                portforward::serve_spdy(
                    s,
                    std::mem::take(&mut buf),
                    pod,
                    uid,
                    ctx.stream_idle,
                    connect,
                )
                .await;
                return Ok(());
            }
        }
    }
}

/// Counts a request, authenticates and authorizes it (the secure port)
/// and routes it: the same for HTTP/1.1 and HTTP/2.
async fn dispatch<H: Host>(
    ctx: &Ctx<H>,
    peer: Option<&[CertificateDer<'static>]>,
    req: &Request,
) -> Action {
    if ctx.api == Api::Secure {
        let long = matches!(
            req.path.trim_start_matches('/').split('/').next(),
            Some("exec" | "attach" | "portForward")
        ) || (req.path.starts_with("/containerLogs")
            && req.query.contains("follow=true"));
        ctx.registry
            .request(&req.method, &req.path, "readwrite", long);
    }
    match &ctx.auth {
        Some(auth) => match authorize(auth, peer, req).await {
            Ok(()) => route(ctx, req).await,
            Err(r) => Action::Reply(r),
        },
        None => route(ctx, req).await,
    }
}

/// Streams a container's log; `follow` ends once the container stops.
async fn stream_logs<H: Host, K: logs::Sink>(
    host: &Rc<H>,
    out: &mut K,
    path: std::path::PathBuf,
    opts: &logs::LogOptions,
    container_id: String,
) -> std::io::Result<()> {
    let host = host.clone();
    let running = move || -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + '_>> {
        let host = host.clone();
        let id = container_id.clone();
        Box::pin(async move {
            host.container_status(&id)
                .await
                .is_ok_and(|st| st.state == ContainerState::Running)
        })
    };
    logs::stream(out, path, opts, &running).await
}

/// The SPDY/3.1 upgrade: answers 101 with the negotiated stream protocol
/// (`None` once an error reply went out instead).
async fn upgrade_spdy<S: AsyncWrite + Unpin>(
    s: &mut S,
    req: &http1::Request,
    protocols: &[&str],
    limits: Limits,
) -> Result<Option<String>> {
    let reply = if !req.wants_upgrade("spdy/3.1") {
        Reply::text(400, "unable to upgrade: missing upgrade headers in request")
    } else {
        match remotecommand::negotiate(&req.header_tokens("x-stream-protocol-version"), protocols) {
            Ok(p) => {
                let head = remotecommand::switching("SPDY/3.1", &p, &[]);
                http1::write_all(s, &head, limits.io_timeout).await?;
                return Ok(Some(p));
            }
            Err(r) => r,
        }
    };
    http1::write_all(s, &http1::encode(&reply, false, false), limits.io_timeout).await?;
    Ok(None)
}

/// Authenticates and authorizes a request of the secure port; the 401,
/// 403 or 500 reply otherwise (upstream's texts).
async fn authorize(
    auth: &auth::Auth,
    peer: Option<&[CertificateDer<'static>]>,
    req: &Request,
) -> Result<(), Reply> {
    let Some(user) = auth.authenticate(peer, req).await else {
        return Err(Reply::text(401, "Unauthorized"));
    };
    let attrs = auth::attributes(&req.method, &req.path, auth.node());
    match auth.authorize(&user, &attrs).await {
        auth::Decision::Allow => Ok(()),
        auth::Decision::Deny(m) => Err(Reply::text(403, m)),
        auth::Decision::Error(m) => Err(Reply::text(500, m)),
    }
}

fn not_found() -> Reply {
    Reply::text(404, "404 page not found\n")
}

/// Where a request goes (upstream's routes on the three servers).
async fn route<H: Host>(ctx: &Ctx<H>, h: &Request) -> Action {
    let Some(segs) = http1::segments(&h.path) else {
        return Action::Reply(Reply::text(400, "400 Bad Request: invalid path\n"));
    };
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let api = ctx.api;
    let host = &*ctx.host;
    let first = segs.first().copied().unwrap_or("");
    let get_only = |h: &Request| -> Option<Reply> {
        if h.method != "GET" && h.method != "HEAD" {
            let mut r = Reply::text(405, "405: Method Not Allowed\n");
            r.extra.push(("Allow", "GET, HEAD".into()));
            return Some(r);
        }
        None
    };
    match (api, first) {
        (_, "healthz") => {
            if api == Api::Healthz && segs.len() > 1 || h.path.ends_with('/') && segs.len() == 1 {
                return Action::Reply(not_found());
            }
            if let Some(r) = get_only(h) {
                return Action::Reply(r);
            }
            let checks: &[&str] = match api {
                Api::Healthz => &["syncloop"],
                Api::ReadOnly => &["ping", "syncloop"],
                Api::Secure => &["ping", "log", "syncloop"],
            };
            if let Some(&one) = segs.get(1) {
                if segs.len() > 2 || !checks.contains(&one) {
                    return Action::Reply(not_found());
                }
                return Action::Reply(match (one, host.sync_loop_health()) {
                    ("syncloop", Err(e)) => {
                        Reply::text(500, format!("internal server error: {e}\n"))
                    }
                    _ => Reply::text(200, "ok"),
                });
            }
            let verbose = h
                .query
                .split('&')
                .any(|kv| kv.split('=').next() == Some("verbose"));
            Action::Reply(healthz(checks, host.sync_loop_health(), verbose))
        }
        (Api::ReadOnly | Api::Secure, "pods" | "spec" | "runningpods") if segs.len() == 1 => {
            if let Some(r) = get_only(h) {
                return Action::Reply(r);
            }
            Action::Reply(match first {
                "pods" => match host.pods_json() {
                    Ok(b) => Reply::json(b),
                    Err(e) => Reply::text(500, format!("{e:#}\n")),
                },
                "spec" => match serde_json::to_vec(&host.machine_info()) {
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
            })
        }
        (Api::Secure, "configz") if segs.len() == 1 => {
            if let Some(r) = get_only(h) {
                return Action::Reply(r);
            }
            let body = serde_json::json!({ "kubeletconfig": ctx.configz });
            Action::Reply(Reply::json(body.to_string().into_bytes()))
        }
        (Api::Secure, "exec" | "attach") if ctx.debugging => {
            if h.method != "GET" && h.method != "POST" {
                let mut r = Reply::text(405, "405: Method Not Allowed\n");
                r.extra.push(("Allow", "GET, POST".into()));
                return Action::Reply(r);
            }
            let kind = if first == "exec" {
                remotecommand::Kind::Exec
            } else {
                remotecommand::Kind::Attach
            };
            let req = match remotecommand::parse_request(kind, &segs[1..], h) {
                Ok(r) => r,
                Err(r) => return Action::Reply(r),
            };
            let pods = host.pods();
            let Some(pod) = find_pod(&pods, &req.namespace, &req.pod, req.uid.as_deref()) else {
                return error_text(404, "pod does not exist");
            };
            match running_container(pod, &req.container) {
                Some(container_id) => Action::Command { req, container_id },
                None => error_text(500, format!("container not found ({:?})", req.container)),
            }
        }
        (Api::Secure, "portForward") if ctx.debugging => {
            if h.method != "GET" && h.method != "POST" {
                let mut r = Reply::text(405, "405: Method Not Allowed\n");
                r.extra.push(("Allow", "GET, POST".into()));
                return Action::Reply(r);
            }
            let req = match portforward::parse_request(&segs[1..]) {
                Ok(r) => r,
                Err(r) => return Action::Reply(r),
            };
            let pods = host.pods();
            let Some(pod) = find_pod(&pods, &req.namespace, &req.pod, req.uid.as_deref()) else {
                return error_text(404, "pod does not exist");
            };
            Action::PortForward {
                pod: req.pod,
                uid: pod.metadata.uid.clone().unwrap_or_default(),
            }
        }
        (Api::Secure, "stats") if segs.get(1) == Some(&"summary") && segs.len() == 2 => {
            if h.method != "GET" && h.method != "POST" && h.method != "HEAD" {
                return Action::Reply(Reply::text(405, "405: Method Not Allowed\n"));
            }
            match summary(ctx).await {
                Ok(v) => {
                    let v = if h.param("only_cpu_and_memory").as_deref() == Some("true") {
                        only_cpu_and_memory(v)
                    } else {
                        v
                    };
                    Action::Reply(Reply::json(v.to_string().into_bytes()))
                }
                Err(e) => error_text(
                    500,
                    format!("Internal Error: failed to get node info: {e:#}"),
                ),
            }
        }
        (Api::Secure, "metrics") if segs.len() <= 2 => {
            if let Some(r) = get_only(h) {
                return Action::Reply(r);
            }
            let text = match segs.get(1).copied() {
                None => own_metrics(ctx).await,
                Some("resource") => match summary(ctx).await {
                    Ok(v) => stats::resource_metrics(&v, false),
                    Err(e) => {
                        log::warn!("resource metrics: {e:#}");
                        stats::resource_metrics(&serde_json::json!({}), true)
                    }
                },
                Some("probes") => {
                    let mut t = metrics::Text::default();
                    t.family(
                        "prober_probe_total",
                        "[ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result.",
                        "counter",
                        &[],
                    );
                    t.finish()
                }
                _ => return Action::Reply(not_found()),
            };
            let mut r = Reply::text(200, text);
            r.content_type = "text/plain; version=0.0.4; charset=utf-8";
            Action::Reply(r)
        }
        (Api::Secure, "containerLogs") if ctx.debugging => {
            if let Some(r) = get_only(h) {
                return Action::Reply(r);
            }
            container_logs(host, &segs[1..], h).await
        }
        _ => Action::Reply(not_found()),
    }
}

fn error_text(status: u16, msg: impl Into<String>) -> Action {
    Action::Reply(Reply::text(status, msg))
}

/// `/containerLogs/{ns}/{pod}/{container}` (upstream `getContainerLogs`).
async fn container_logs<H: Host>(host: &H, p: &[&str], h: &Request) -> Action {
    let [ns, pod_name, container] = p else {
        return match p.len() {
            0 | 1 => error_text(400, r#"{"message": "Missing podID."}"#),
            2 => error_text(400, r#"{"message": "Missing container name."}"#),
            _ => Action::Reply(not_found()),
        };
    };
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    let opts = match logs::parse_options(h, now) {
        Ok(o) => o,
        Err((code, msg)) => return error_text(code, msg),
    };
    let pods = host.pods();
    let Some(pod) = pods.iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(pod_name)
    }) else {
        return error_text(404, format!("pod {pod_name:?} does not exist\n"));
    };
    if !pod_has_container(pod, container) {
        return error_text(
            404,
            format!("container {container:?} not found in pod {pod_name:?}\n"),
        );
    }
    let id = match logs::pick_container(pod, container, opts.previous) {
        Ok(id) => id,
        Err(m) => return error_text(400, m),
    };
    let status = match host.container_status(&id).await {
        Ok(s) => s,
        Err(e) => return error_text(400, format!("failed to get container status {id:?}: {e:#}")),
    };
    // A previous instance is never followed (it does not run).
    let follow = opts.follow && status.state == ContainerState::Running;
    Action::Logs {
        path: status.log_path,
        opts: logs::LogOptions { follow, ..opts },
        container_id: id,
    }
}

/// The Summary now: the host's pods and containers, their cgroups, and
/// each pod's network namespace counters (read on a thread inside it).
async fn summary<H: Host>(ctx: &Ctx<H>) -> Result<serde_json::Value> {
    let inputs = ctx.host.stats_inputs().await?;
    let mut net = std::collections::HashMap::new();
    for p in &inputs.pods {
        if let (Some(ns), SandboxState::Ready) = (&p.netns, p.sandbox.state) {
            let r = crate::network::netns::run_in(ns, || {
                std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default()
            })
            .await;
            if let Ok(text) = r {
                net.insert(p.sandbox.id.clone(), stats::parse_net_dev(&text));
            }
        }
    }
    let n = &ctx.node;
    let nc = stats::NodeContext {
        node_name: &n.node_name,
        root_dir: &n.root_dir,
        images_dir: &n.images_dir,
        cgroups: ctx.cgroups.as_ref(),
        pods_cgroup: &n.pods_cgroup,
    };
    Ok(stats::summary(&nc, &inputs, &net, &ctx.rates))
}

/// `only_cpu_and_memory=true`: what the resource metrics need.
fn only_cpu_and_memory(mut v: serde_json::Value) -> serde_json::Value {
    let keep = |o: &mut serde_json::Value, keys: &[&str]| {
        if let Some(m) = o.as_object_mut() {
            m.retain(|k, _| keys.contains(&k.as_str()));
        }
    };
    keep(
        &mut v["node"],
        &["nodeName", "startTime", "cpu", "memory", "systemContainers"],
    );
    if let Some(pods) = v["pods"].as_array_mut() {
        for p in pods {
            keep(p, &["podRef", "startTime", "cpu", "memory", "containers"]);
            if let Some(cs) = p["containers"].as_array_mut() {
                for c in cs {
                    keep(c, &["name", "startTime", "cpu", "memory"]);
                }
            }
        }
    }
    v
}

/// picolet's `/metrics`.
async fn own_metrics<H: Host>(ctx: &Ctx<H>) -> String {
    let host = &*ctx.host;
    let pods = host.pods();
    ctx.registry.observe_pods(&pods);
    let inputs = host.stats_inputs().await.unwrap_or_default();
    let mut t = metrics::Text::default();
    let one = |v: f64| vec![(vec![], v, None)];
    let running = inputs
        .pods
        .iter()
        .filter(|p| p.sandbox.state == SandboxState::Ready)
        .count();
    t.family(
        "kubelet_running_pods",
        "[ALPHA] Number of pods that have a running pod sandbox",
        "gauge",
        &one(running as f64),
    );
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &inputs.containers {
        let s = match c.container.state {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        };
        *by_state.entry(s).or_default() += 1;
    }
    let samples: Vec<metrics::Sample> = by_state
        .into_iter()
        .map(|(s, n)| (vec![("container_state", s.to_string())], n as f64, None))
        .collect();
    t.family(
        "kubelet_running_containers",
        "[ALPHA] Number of containers currently running",
        "gauge",
        &samples,
    );
    t.histogram(
        "kubelet_pod_start_duration_seconds",
        "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
        &ctx.registry.pod_start.borrow(),
    );
    let http: Vec<metrics::Sample> = ctx
        .registry
        .http
        .borrow()
        .iter()
        .map(|((m, p, st, long), n)| {
            (
                vec![
                    ("long_running", long.to_string()),
                    ("method", m.clone()),
                    ("path", p.clone()),
                    ("server_type", st.to_string()),
                ],
                *n as f64,
                None,
            )
        })
        .collect();
    t.family(
        "kubelet_http_requests_total",
        "[ALPHA] Number of the http requests received since the server started",
        "counter",
        &http,
    );
    t.family(
        "kubelet_node_name",
        "[ALPHA] The node's name. The count is always 1.",
        "gauge",
        &[(vec![("node", ctx.node.node_name.clone())], 1.0, None)],
    );
    let rest: Vec<metrics::Sample> = host
        .api_client()
        .map(|c| {
            let tr = c.transport();
            vec![(
                vec![(
                    "host",
                    tr.server().trim_start_matches("https://").to_string(),
                )],
                tr.requests_sent() as f64,
                None,
            )]
        })
        .unwrap_or_default();
    t.family(
        "rest_client_requests_total",
        "[ALPHA] Number of HTTP requests sent to the API server",
        "counter",
        &rest,
    );
    // What the uplink costs (metered links at the edge) and how often it
    // dropped: TLS bytes of the one API connection, reconnects included.
    if let Some(c) = host.api_client() {
        let tr = c.transport();
        for (name, help, v) in [
            (
                "picolet_apiserver_sent_bytes_total",
                "Bytes sent to the API server",
                tr.bytes_sent(),
            ),
            (
                "picolet_apiserver_received_bytes_total",
                "Bytes received from the API server",
                tr.bytes_received(),
            ),
            (
                "picolet_apiserver_outages_total",
                "Times the API server became unreachable",
                tr.outages(),
            ),
        ] {
            t.family(name, help, "counter", &one(v as f64));
        }
    }
    if let Some(a) = &ctx.auth {
        t.family(
            "picolet_token_reviews_total",
            "TokenReviews sent to authenticate requests",
            "counter",
            &one(a.token_reviews.get() as f64),
        );
        t.family(
            "picolet_subject_access_reviews_total",
            "SubjectAccessReviews sent to authorize requests",
            "counter",
            &one(a.access_reviews.get() as f64),
        );
    }
    metrics::process(&mut t);
    t.finish()
}

fn find_pod<'a>(pods: &'a [Pod], ns: &str, name: &str, uid: Option<&str>) -> Option<&'a Pod> {
    pods.iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(ns)
            && p.metadata.name.as_deref() == Some(name)
            && uid.is_none_or(|u| p.metadata.uid.as_deref() == Some(u))
    })
}

/// The runtime id of the running instance of a container, from the status.
fn running_container(pod: &Pod, name: &str) -> Option<String> {
    let st = pod.status.as_ref()?;
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .chain(st.ephemeral_container_statuses.iter().flatten())
        .find(|c| c.name == name && c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .and_then(|c| c.container_id.as_deref())
        .map(|id| id.split_once("://").map_or(id, |(_, b)| b).to_string())
}

fn pod_has_container(pod: &Pod, name: &str) -> bool {
    let Some(s) = &pod.spec else { return false };
    s.containers.iter().any(|c| c.name == name)
        || s.init_containers.iter().flatten().any(|c| c.name == name)
        || s.ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
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

/// The configuration as `/configz` shows it (upstream field names).
pub fn configz(k: &crate::config::KubeletConfig) -> serde_json::Value {
    let d = crate::util::duration::format;
    serde_json::json!({
        "enableServer": k.enable_server,
        "staticPodPath": k.static_pod_path,
        "syncFrequency": d(k.sync_frequency),
        "fileCheckFrequency": d(k.file_check_frequency),
        "httpCheckFrequency": d(k.http_check_frequency),
        "address": k.address.to_string(),
        "port": k.port,
        "readOnlyPort": k.read_only_port,
        "tlsCertFile": k.tls_cert_file,
        "tlsPrivateKeyFile": k.tls_private_key_file,
        "tlsMinVersion": k.tls_min_version,
        "tlsCipherSuites": k.tls_cipher_suites,
        "authentication": {
            "x509": {"clientCAFile": k.authentication.client_ca_file},
            "webhook": {"enabled": k.authentication.webhook_enabled,
                        "cacheTTL": d(k.authentication.webhook_cache_ttl)},
            "anonymous": {"enabled": k.authentication.anonymous},
        },
        "authorization": {
            "mode": k.authorization.mode,
            "webhook": {"cacheAuthorizedTTL": d(k.authorization.cache_authorized_ttl),
                        "cacheUnauthorizedTTL": d(k.authorization.cache_unauthorized_ttl)},
        },
        "healthzPort": k.healthz_port,
        "healthzBindAddress": k.healthz_bind_address.to_string(),
        "clusterDomain": k.cluster_domain,
        "clusterDNS": k.cluster_dns.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "streamingConnectionIdleTimeout": d(k.streaming_connection_idle_timeout),
        "nodeStatusUpdateFrequency": d(k.node_status_update_frequency),
        "nodeStatusReportFrequency": d(k.node_status_report_frequency),
        "nodeLeaseDurationSeconds": k.node_lease_duration_seconds,
        "cgroupRoot": k.cgroup_root,
        "cgroupsPerQOS": k.cgroups_per_qos,
        "cgroupDriver": k.cgroup_driver,
        "maxPods": k.max_pods,
        "podPidsLimit": k.pod_pids_limit,
        "resolvConf": k.resolv_conf,
        "runtimeRequestTimeout": d(k.runtime_request_timeout),
        "evictionHard": k.eviction_hard,
        "containerLogMaxSize": k.container_log_max_size.to_string(),
        "containerLogMaxFiles": k.container_log_max_files,
        "podLogsDir": k.pod_logs_dir,
        "kubeAPIQPS": k.kube_api_qps,
        "kubeAPIBurst": k.kube_api_burst,
        "registerNode": k.register_node,
        "enableDebuggingHandlers": k.enable_debugging_handlers,
        "systemReserved": k.system_reserved,
        "kubeReserved": k.kube_reserved,
    })
}

/// `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[…]}`
/// Written straight to bytes: a `serde_json::Value` of 110 pods first
/// would cost a few MiB of short-lived heap per request.
pub fn pod_list_json(items: Vec<Pod>) -> Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct PodList {
        kind: &'static str,
        api_version: &'static str,
        metadata: Empty,
        items: Vec<Pod>,
    }
    #[derive(serde::Serialize)]
    struct Empty {}
    serde_json::to_vec(&PodList {
        kind: "PodList",
        api_version: "v1",
        metadata: Empty {},
        items,
    })
    .context("encode PodList")
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
