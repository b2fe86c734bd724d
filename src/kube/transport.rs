//! The connection to the API server: one TLS connection carrying every
//! request and watch as HTTP/2 streams (ALPN `h2`, as client-go), or, when
//! the server does not offer HTTP/2, HTTP/1.1 with a connection per
//! request. Credentials are attached here; reconnects back off with
//! jitter; the server's reachability is logged once per change, not once
//! per attempt.

use super::kubeconfig::Kubeconfig;
use crate::http::h2::conn as h2;
use crate::http::{self, Url};
use crate::util::Backoff;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// `picolet/<version> (linux/<arch>)`, as client-go's default agent.
pub fn user_agent() -> String {
    format!(
        "picolet/{} (linux/{})",
        env!("CARGO_PKG_VERSION"),
        crate::kube::go_arch()
    )
}

/// One request to the API server.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    /// Path and query, e.g. `/api/v1/nodes/n1`.
    pub path: String,
    pub content_type: Option<&'static str>,
    /// The `Accept` header; `None`: JSON.
    pub accept: Option<&'static str>,
    pub body: Vec<u8>,
}

/// An answer whose body may still be arriving (a watch).
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Body {
    H2(h2::Body),
    H1(http::Body),
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Body::H2(b) => b.chunk().await.map_err(|e| e.to_string()),
            Body::H1(b) => {
                let mut buf = vec![0u8; 16 * 1024];
                let n = b.read(&mut buf).await.map_err(|e| format!("{e}"))?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(buf))
            }
        }
    }

    /// The whole body, failing past `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, String> {
        let mut v = Vec::new();
        while let Some(c) = self.chunk().await? {
            if v.len() + c.len() > limit {
                return Err(format!("response body larger than {limit} bytes"));
            }
            v.extend_from_slice(&c);
        }
        Ok(v)
    }
}

/// Whether the server answers, for the once-per-change log lines.
#[derive(Debug)]
struct Health {
    up: bool,
    /// When the current state began.
    since: Instant,
    backoff: Backoff,
    /// No new connection attempt before this (after a failure).
    next_attempt: Option<Instant>,
    last_error: String,
}

/// How long a connection attempt (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Transport {
    kc: Kubeconfig,
    url: Url,
    ua: String,
    health: RefCell<Health>,
    requests: Cell<u64>,
    /// How many times the server became unreachable.
    outages: Cell<u64>,
    /// The HTTP/2 connection every request shares.
    conn: RefCell<Option<h2::Connection>>,
    /// One dial at a time: requests arriving meanwhile wait for it.
    dialing: smol::lock::Mutex<()>,
    /// The server did not offer HTTP/2: HTTP/1.1, a connection per request.
    http1: Cell<bool>,
    /// Bytes of connections already closed.
    old_sent: Cell<u64>,
    old_received: Cell<u64>,
}

impl Transport {
    pub fn new(kc: Kubeconfig) -> anyhow::Result<Rc<Transport>> {
        let url = kc.endpoint()?;
        Ok(Rc::new(Transport {
            kc,
            url,
            ua: user_agent(),
            health: RefCell::new(Health {
                up: true,
                since: Instant::now(),
                // Short: callers retry on their own schedules (the Lease every
                // few seconds); this only keeps a burst of them off a dead server.
                backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(4), 0.5),
                next_attempt: None,
                last_error: String::new(),
            }),
            requests: Cell::new(0),
            outages: Cell::new(0),
            conn: RefCell::new(None),
            dialing: smol::lock::Mutex::new(()),
            http1: Cell::new(false),
            old_sent: Cell::new(0),
            old_received: Cell::new(0),
        }))
    }

    /// Bytes written to the server over HTTP/2 so far (TLS records
    /// included), for benchmarks.
    pub fn bytes_sent(&self) -> u64 {
        self.old_sent.get() + self.conn.borrow().as_ref().map_or(0, |c| c.bytes_sent())
    }

    /// Bytes read from the server over HTTP/2 so far.
    pub fn bytes_received(&self) -> u64 {
        self.old_received.get()
            + self
                .conn
                .borrow()
                .as_ref()
                .map_or(0, |c| c.bytes_received())
    }

    /// Whether requests go over one HTTP/2 connection (not HTTP/1.1).
    pub fn uses_http2(&self) -> bool {
        self.url.https && !self.http1.get()
    }

    /// Forgets the current connection (it failed, or the server is
    /// draining it). Not closed here: watches still on a draining
    /// connection run to their end, and a failed one is closed already.
    fn retire(&self, old: &h2::Connection) {
        let mut cur = self.conn.borrow_mut();
        if cur.as_ref().is_some_and(|c| c.same(old)) {
            self.old_sent.set(self.old_sent.get() + old.bytes_sent());
            self.old_received
                .set(self.old_received.get() + old.bytes_received());
            *cur = None;
        }
    }

    /// Makes the next request dial a new connection, which reads the
    /// kubeconfig's credential files again (a rotated client
    /// certificate). The current connection is retired, not closed: the
    /// watches on it run to their end and it closes with the last of them.
    pub fn reconnect(&self) {
        let old = self.conn.borrow().clone();
        if let Some(old) = old {
            log::debug!(
                "API server {}: new requests go to a new connection",
                self.kc.server
            );
            self.retire(&old);
        }
    }

    /// The live HTTP/2 connection, dialled when there is none; `None` when
    /// the server speaks only HTTP/1.1.
    async fn http2(&self) -> Result<Option<h2::Connection>, String> {
        if !self.uses_http2() {
            return Ok(None);
        }
        let live = || {
            self.conn
                .borrow()
                .as_ref()
                .filter(|c| !c.is_closed())
                .cloned()
        };
        if let Some(c) = live() {
            return Ok(Some(c));
        }
        let _dial = self.dialing.lock().await;
        if let Some(c) = live() {
            return Ok(Some(c));
        }
        let old = self.conn.borrow().clone();
        if let Some(old) = old {
            self.retire(&old);
        }
        let (cfg, name) = super::tls::client_config(&self.kc, &[b"h2", b"http/1.1"])
            .map_err(|e| format!("{e:#}"))?;
        let opts = h2::ConnOptions {
            user_agent: self.ua.clone(),
            ..Default::default()
        };
        match h2::connect_tls(
            &self.url.host,
            self.url.port,
            cfg,
            name,
            CONNECT_TIMEOUT,
            opts,
        )
        .await
        {
            Ok(c) => {
                log::debug!("API server {}: connected (HTTP/2)", self.kc.server);
                *self.conn.borrow_mut() = Some(c.clone());
                Ok(Some(c))
            }
            Err(h2::Error::NotOffered(..)) => {
                log::info!(
                    "API server {} does not offer HTTP/2: using HTTP/1.1, a connection per request",
                    self.kc.server
                );
                self.http1.set(true);
                Ok(None)
            }
            Err(e) => Err(format!("{} ({})", e, self.kc.server)),
        }
    }

    pub fn server(&self) -> &str {
        &self.kc.server
    }

    pub fn kubeconfig(&self) -> &Kubeconfig {
        &self.kc
    }

    /// Requests sent so far (for benchmarks).
    pub fn requests_sent(&self) -> u64 {
        self.requests.get()
    }

    /// Headers every request carries: credentials and content negotiation.
    fn auth_header(&self) -> Result<Option<String>, String> {
        let c = &self.kc.credentials;
        if let Some(tf) = &c.token_file {
            return tf
                .token()
                .map(|t| Some(format!("Bearer {t}")))
                .map_err(|e| format!("{e:#}"));
        }
        if let Some(t) = &c.token {
            return Ok(Some(format!("Bearer {t}")));
        }
        if let Some((u, p)) = &c.basic {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            return Ok(Some(format!("Basic {b}")));
        }
        Ok(None)
    }

    /// Fails fast while a back-off after a failed connection runs.
    fn check_backoff(&self) -> Result<(), String> {
        let h = self.health.borrow();
        match h.next_attempt {
            Some(t) if Instant::now() < t => Err(format!(
                "API server {} unavailable (next attempt in {}): {}",
                self.kc.server,
                crate::util::duration::format(t - Instant::now()),
                h.last_error
            )),
            _ => Ok(()),
        }
    }

    fn mark_up(&self) {
        let mut h = self.health.borrow_mut();
        if !h.up {
            log::info!(
                "API server {} reachable again (after {})",
                self.kc.server,
                crate::util::duration::format(Duration::from_secs(h.since.elapsed().as_secs()))
            );
            h.up = true;
            h.since = Instant::now();
        }
        h.backoff.reset();
        h.next_attempt = None;
    }

    fn mark_down(&self, err: &str) {
        let mut h = self.health.borrow_mut();
        if h.up {
            log::warn!(
                "API server {} unreachable: {err}; retrying with back-off",
                self.kc.server
            );
            h.up = false;
            h.since = Instant::now();
            self.outages.set(self.outages.get() + 1);
        } else {
            log::debug!("API server {}: {err}", self.kc.server);
        }
        let d = h.backoff.next_delay();
        h.next_attempt = Some(Instant::now() + d);
        h.last_error = err.to_string();
    }

    /// How many times the server became unreachable: a caller that caches
    /// server state compares it to know that others may have changed
    /// things meanwhile.
    pub fn outages(&self) -> u64 {
        self.outages.get()
    }

    /// Sends `req`; returns once the response headers arrived. `timeout`
    /// bounds the wait for the headers (and each later read for HTTP/1.1).
    pub async fn send(&self, req: Request, timeout: Duration) -> Result<Response, String> {
        self.check_backoff()?;
        let auth = self.auth_header()?;
        self.requests.set(self.requests.get() + 1);
        // A request the server certainly did not see (refused stream, a
        // connection that went away first) is sent once more on a new one.
        for attempt in 0..2 {
            let conn = match self.http2().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    self.mark_down(&e);
                    return Err(e);
                }
            };
            match self.send_h2(&conn, &req, auth.clone(), timeout).await {
                Ok(r) => {
                    self.mark_up();
                    return Ok(r);
                }
                Err(h2::Error::Unprocessed(e)) if attempt == 0 => {
                    log::debug!("API server {}: {e}; sending again", self.kc.server);
                    self.retire(&conn);
                }
                Err(e @ (h2::Error::Unprocessed(_) | h2::Error::Connection(_))) => {
                    self.retire(&conn);
                    let e = format!("{} {}: {e}", req.method, req.path);
                    self.mark_down(&e);
                    return Err(e);
                }
                Err(e) => return Err(format!("{} {}: {e}", req.method, req.path)),
            }
        }
        let res = self.send_h1(&req, auth, timeout).await;
        match &res {
            Ok(_) => self.mark_up(),
            Err(e) => self.mark_down(e),
        }
        res
    }

    async fn send_h2(
        &self,
        conn: &h2::Connection,
        req: &Request,
        auth: Option<String>,
        timeout: Duration,
    ) -> Result<Response, h2::Error> {
        let accept = req.accept.unwrap_or("application/json");
        let mut headers = vec![("accept".to_string(), accept.to_string())];
        if let Some(ct) = req.content_type {
            headers.push(("content-type".into(), ct.into()));
        }
        if let Some(a) = auth {
            headers.push(("authorization".into(), a));
        }
        let r = h2::Request {
            method: req.method.into(),
            scheme: "https".into(),
            authority: self.url.authority(),
            path: join_path(&self.url.path_and_query, &req.path),
            headers,
            body: req.body.clone(),
        };
        let send = async { conn.send(r).await.map(Some) };
        let resp = futures_lite::future::or(send, async {
            async_io::Timer::after(timeout).await;
            Ok(None)
        })
        .await?
        .ok_or_else(|| {
            h2::Error::Connection(format!(
                "no response within {}",
                crate::util::duration::format(timeout)
            ))
        })?;
        Ok(Response {
            status: resp.status,
            headers: resp.headers,
            body: Body::H2(resp.body),
        })
    }

    async fn send_h1(
        &self,
        req: &Request,
        auth: Option<String>,
        timeout: Duration,
    ) -> Result<Response, String> {
        let opts = http::ClientOptions {
            connect_timeout: CONNECT_TIMEOUT,
            read_timeout: timeout,
            tls: http::TlsOptions::default(),
            user_agent: self.ua.clone(),
        };
        let client = if self.url.https {
            let (cfg, name) = super::tls::client_config(&self.kc, &[b"http/1.1"])
                .map_err(|e| format!("{e:#}"))?;
            http::Client::with_tls_config(opts, cfg, Some(name))
        } else {
            http::Client::new(opts)
        };
        let mut url = self.url.clone();
        url.path_and_query = join_path(&self.url.path_and_query, &req.path);
        let mut r = http::Request::new(req.method, url)
            .header("Accept", req.accept.unwrap_or("application/json"));
        if let Some(ct) = req.content_type {
            r = r.header("Content-Type", ct);
        }
        if let Some(a) = auth {
            r = r.header("Authorization", &a);
        }
        let r = r.body(req.body.clone());
        let resp = client.send(r).await.map_err(|e| format!("{e:#}"))?;
        Ok(Response {
            status: resp.status,
            headers: resp.headers,
            body: Body::H1(resp.body),
        })
    }
}

/// The server URL's path prefix (a proxy may serve the API under one)
/// joined with the request path.
fn join_path(prefix: &str, path: &str) -> String {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        path.to_string()
    } else {
        format!("{p}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_under_a_prefix() {
        assert_eq!(join_path("/", "/api/v1/nodes"), "/api/v1/nodes");
        assert_eq!(join_path("/k8s/", "/api/v1/nodes"), "/k8s/api/v1/nodes");
    }

    #[test]
    fn user_agent_names_version_and_arch() {
        let ua = user_agent();
        assert!(ua.starts_with(concat!("picolet/", env!("CARGO_PKG_VERSION"), " (linux/")));
        assert!(ua.ends_with(')'));
    }
}
