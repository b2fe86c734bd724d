//! The connection to the API server: one TLS connection carrying every
//! request and watch as HTTP/2 streams (ALPN `h2`, as client-go), or, when
//! the server does not offer HTTP/2, HTTP/1.1 with a connection per
//! request. Credentials are attached here; reconnects back off with
//! jitter; the server's reachability is logged once per change, not once
//! per attempt.

use super::kubeconfig::Kubeconfig;
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
    H1(http::Body),
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self {
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
                backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 0.5),
                next_attempt: None,
                last_error: String::new(),
            }),
            requests: Cell::new(0),
        }))
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
        } else {
            log::debug!("API server {}: {err}", self.kc.server);
        }
        let d = h.backoff.next_delay();
        h.next_attempt = Some(Instant::now() + d);
        h.last_error = err.to_string();
    }

    /// Whether the last attempt reached the server.
    pub fn is_up(&self) -> bool {
        self.health.borrow().up
    }

    /// Sends `req`; returns once the response headers arrived. `timeout`
    /// bounds the wait for the headers (and each later read for HTTP/1.1).
    pub async fn send(&self, req: Request, timeout: Duration) -> Result<Response, String> {
        self.check_backoff()?;
        let auth = self.auth_header()?;
        self.requests.set(self.requests.get() + 1);
        let res = self.send_h1(&req, auth, timeout).await;
        match &res {
            Ok(_) => self.mark_up(),
            Err(e) => self.mark_down(e),
        }
        res
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
        let mut r = http::Request::new(req.method, url).header("Accept", "application/json");
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
