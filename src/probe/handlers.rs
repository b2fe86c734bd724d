//! The probe handlers (upstream pkg/probe/{exec,http,tcp,grpc} and
//! prober.runProbe): each turns one probe attempt into an [`Output`], or
//! an error when the probe could not be run at all (upstream's `err`: the
//! attempt is retried, then its result thrown away).
//!
//! Network probes go from the host to the pod IP (for hostNetwork pods the
//! status carries the host IP), as the kubelet does.

use super::{CommandRunner, Target};
use crate::api::core::{Container, EnvVar, HTTPGetAction, Probe};
use crate::http::{Client, ClientOptions, Request, TlsOptions, Url};
use crate::runtime::exec::ExecError;
use crate::runtime::RuntimeError;
use anyhow::{anyhow, bail, Result};
use async_io::Timer;
use futures_lite::future;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;

/// The Kubernetes minor version picolet implements (the API types it is
/// built with); probes send `User-Agent: kube-probe/<this>` as upstream.
pub const KUBE_VERSION: &str = "1.35";
/// Bodies and exec output beyond this are cut (upstream's 10 KiB).
pub const MAX_OUTPUT: usize = 10 << 10;
/// Upstream `maxProbeRetries`: attempts when a probe errors.
const MAX_RETRIES: usize = 3;
/// Upstream's redirect checker stops after this many.
const MAX_REDIRECTS: usize = 10;

/// Upstream `probe.Result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Success, with something to report (an HTTP redirect not followed).
    Warning,
    Failure,
    Unknown,
}

/// One probe attempt: the outcome and its message (exec output, response
/// body, or what went wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub outcome: Outcome,
    pub message: String,
}

impl Output {
    fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Output {
            outcome,
            message: message.into(),
        }
    }
}

/// `kube-<purpose>/<major.minor>`, upstream's user agent for probes
/// ("probe") and lifecycle hooks ("lifecycle").
pub fn user_agent(purpose: &str) -> String {
    format!("kube-{purpose}/{KUBE_VERSION}")
}

/// Runs a probe, retrying up to three times while it errors (upstream
/// `runProbeWithRetries`).
pub async fn run_with_retries<R: CommandRunner>(
    rt: &R,
    probe: &Probe,
    t: &Target<'_>,
) -> Result<Output> {
    let mut last = Err(anyhow!("probe not run"));
    for _ in 0..MAX_RETRIES {
        last = run(rt, probe, t).await;
        if last.is_ok() {
            break;
        }
    }
    last
}

/// One probe attempt (upstream `runProbe`).
pub async fn run<R: CommandRunner>(rt: &R, probe: &Probe, t: &Target<'_>) -> Result<Output> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &probe.exec {
        let cmd = expand_static(e.command.as_deref().unwrap_or(&[]), t.container);
        return exec(rt, t.container_id, &cmd, timeout).await;
    }
    if let Some(h) = &probe.http_get {
        let req = http_request(h, t.container, t.pod_ip, "probe")?;
        return Ok(http_get(req, timeout).await);
    }
    if let Some(s) = &probe.tcp_socket {
        let port = resolve_port(&s.port, t.container)?;
        let host = s
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(t.pod_ip);
        return Ok(tcp(host, port, timeout).await);
    }
    if let Some(g) = &probe.grpc {
        let port = u16::try_from(g.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| anyhow!("invalid port number: {}", g.port))?;
        let service = g.service.as_deref().unwrap_or("");
        return Ok(super::grpc::check(t.pod_ip, port, service, timeout).await);
    }
    bail!(
        "missing probe handler for {}:{}",
        crate::sync::actions::format_pod(t.pod),
        t.container.name
    )
}

/// Upstream `ExpandContainerCommandOnlyStatic`: `$(VAR)` from the
/// container's literal `env` values only (an exec probe does not see the
/// pod's full environment).
pub fn expand_static(cmd: &[String], c: &Container) -> Vec<String> {
    let env: &[EnvVar] = c.env.as_deref().unwrap_or(&[]);
    let lookup = |k: &str| {
        env.iter()
            .rev()
            .find(|e| e.name == k)
            .map(|e| e.value.clone().unwrap_or_default())
    };
    cmd.iter()
        .map(|s| crate::runtime::convert::expand(s, &lookup))
        .collect()
}

/// Upstream `probe.ResolveContainerPort`: a number, or the name of one of
/// the container's ports (a numeric string as a last resort).
pub fn resolve_port(p: &IntOrString, c: &Container) -> Result<u16> {
    let port: i64 = match p {
        IntOrString::Int(n) => *n as i64,
        IntOrString::String(name) => {
            let named = c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port as i64);
            match named {
                Some(n) => n,
                None => name
                    .parse::<i64>()
                    .map_err(|_| anyhow!("port {name} not found"))?,
            }
        }
    };
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow!("invalid port number: {port}"))
}

/// `host:port`, IPv6 in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream `NewRequestForHTTPGetAction`: the URL from scheme, host (the
/// pod IP by default), port and path; the action's headers, then
/// `User-Agent: kube-<purpose>/…` and `Accept: */*` unless given (an empty
/// Accept removes it).
pub fn http_request(
    h: &HTTPGetAction,
    c: &Container,
    pod_ip: &str,
    purpose: &str,
) -> Result<Request> {
    let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
    let scheme = if scheme.is_empty() {
        "http".into()
    } else {
        scheme
    };
    let host = h
        .host
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(pod_ip);
    if host.is_empty() {
        bail!("no host: the pod has no IP yet");
    }
    let port = resolve_port(&h.port, c)?;
    let path = h.path.as_deref().unwrap_or("");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let raw = format!("{scheme}://{}{path}", join_host_port(host, port));
    let url = Url::parse(&raw)
        .map_err(|_| anyhow!("Get {raw:?}: unsupported protocol scheme {scheme:?}"))?;
    let mut req = Request::get(url);
    let headers = h.http_headers.as_deref().unwrap_or(&[]);
    for hd in headers {
        if hd.name.eq_ignore_ascii_case("accept") && hd.value.is_empty() {
            continue;
        }
        req.headers.push((hd.name.clone(), hd.value.clone()));
    }
    let has = |n: &str| headers.iter().any(|x| x.name.eq_ignore_ascii_case(n));
    if !has("user-agent") {
        req.headers.push(("User-Agent".into(), user_agent(purpose)));
    }
    if !has("accept") {
        req.headers.push(("Accept".into(), "*/*".into()));
    }
    Ok(req)
}

/// A client for probes and hooks: TLS without verification (as upstream),
/// every read bounded by `timeout`.
pub(crate) fn client(timeout: Duration) -> Client {
    Client::new(ClientOptions {
        connect_timeout: timeout,
        read_timeout: timeout,
        tls: TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        },
        user_agent: user_agent("probe"),
    })
}

/// What an HTTP GET ended with, after the redirects upstream follows.
pub(crate) struct Fetched {
    pub status: u16,
    /// At most [`MAX_OUTPUT`] bytes.
    pub body: String,
}

/// GET with upstream's redirect rule (`RedirectChecker(false)`): follow
/// redirects to the same host name, up to 10; a redirect elsewhere ends
/// the chain with that 3xx response. Errors carry Go's wording
/// (`Get "<url>": …`).
pub(crate) async fn fetch(client: &Client, mut req: Request) -> Result<Fetched> {
    let first_host = req.url.host.clone();
    for hop in 0..=MAX_REDIRECTS {
        let url = req.url.to_string();
        let mut resp = client
            .send(req.clone())
            .await
            .map_err(|e| anyhow!("Get {url:?}: {}", cause(&e)))?;
        let location = resp.header("location").map(str::to_string);
        let redirect = matches!(resp.status, 301 | 302 | 303 | 307 | 308);
        if let (true, Some(loc)) = (redirect, location) {
            let next = req
                .url
                .join(&loc)
                .map_err(|e| anyhow!("Get {url:?}: {e:#}"))?;
            if next.host == first_host {
                if hop == MAX_REDIRECTS {
                    bail!("Get {:?}: stopped after 10 redirects", next.to_string());
                }
                // Go keeps a custom Host header only for relative locations.
                if loc.starts_with("http://")
                    || loc.starts_with("https://")
                    || loc.starts_with("//")
                {
                    req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("host"));
                }
                req.url = next;
                continue;
            }
        }
        let body = read_at_most(&mut resp.body, MAX_OUTPUT)
            .await
            .map_err(|e| anyhow!("Get {url:?}: {e:#}"))?;
        return Ok(Fetched {
            status: resp.status,
            body,
        });
    }
    unreachable!("the loop returns or bails on its last hop")
}

/// The error chain below the first context ("GET <url>"), joined.
fn cause(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// Reads up to `limit` bytes of a body; the rest is left unread (upstream
/// `ReadAtMost`: truncation is not an error).
async fn read_at_most(body: &mut crate::http::Body, limit: usize) -> Result<String> {
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    while v.len() < limit {
        let n = body.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        v.extend_from_slice(&buf[..n.min(limit - v.len())]);
    }
    Ok(String::from_utf8_lossy(&v).into_owned())
}

/// Upstream `DoHTTPProbe`: 200 ≤ code < 300 succeeds with the body as
/// message, 300–399 (a redirect not followed) succeeds with a warning,
/// anything else fails; transport errors and the timeout fail.
pub async fn http_get(req: Request, timeout: Duration) -> Output {
    let url = req.url.to_string();
    // The whole exchange is bounded below; single reads get a little more
    // so that bound is what ends a slow request.
    let client = client(timeout + Duration::from_secs(1));
    let fetched = future::or(async { Some(fetch(&client, req).await) }, async {
        Timer::after(timeout).await;
        None
    })
    .await;
    match fetched {
        None => Output::new(
            Outcome::Failure,
            format!(
                "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ),
        ),
        Some(Err(e)) => Output::new(Outcome::Failure, format!("{e:#}")),
        Some(Ok(f)) => http_outcome(f.status, f.body),
    }
}

/// The decision of `DoHTTPProbe` on a response.
pub fn http_outcome(status: u16, body: String) -> Output {
    match status {
        200..=299 => Output::new(Outcome::Success, body),
        300..=399 => Output::new(
            Outcome::Warning,
            format!("Probe terminated redirects, Response body: {body}"),
        ),
        // The body stays out of the message (it may hold secrets).
        _ => Output::new(
            Outcome::Failure,
            format!("HTTP probe failed with statuscode: {status}"),
        ),
    }
}

/// Upstream `DoTCPProbe`: success when a connection opens in time.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Output {
    let addr = join_host_port(host, port);
    match connect(host, port, timeout).await {
        Ok(_) => Output::new(Outcome::Success, ""),
        Err(e) => Output::new(Outcome::Failure, format!("dial tcp {addr}: {e}")),
    }
}

/// Opens a TCP connection to `host:port` within `timeout`.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> std::result::Result<smol::net::TcpStream, String> {
    let attempt = async {
        let addrs = smol::net::resolve((host, port))
            .await
            .map_err(|e| format!("lookup {host}: {e}"))?;
        let mut last = format!("lookup {host}: no addresses");
        for a in addrs {
            match smol::net::TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("connect: {}", io_text(&e)),
            }
        }
        Err(last)
    };
    future::or(attempt, async {
        Timer::after(timeout).await;
        Err("i/o timeout".to_string())
    })
    .await
}

/// An I/O error the way Go prints syscall errors ("connection refused").
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Upstream exec probe: exit 0 succeeds, another exit code fails, both
/// with the combined output (at most 10 KiB); a timeout fails; a command
/// that could not be run is an error.
pub async fn exec<R: CommandRunner>(
    rt: &R,
    container_id: &str,
    cmd: &[String],
    timeout: Duration,
) -> Result<Output> {
    match rt.run_in_container(container_id, cmd, timeout).await {
        Ok(r) => {
            let mut out = r.stdout;
            out.extend_from_slice(&r.stderr);
            out.truncate(MAX_OUTPUT);
            let text = String::from_utf8_lossy(&out).into_owned();
            let outcome = if r.exit_code == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            Ok(Output::new(outcome, text))
        }
        Err(e) if is_timeout(&e) => Ok(Output::new(
            Outcome::Failure,
            format!(
                "command {:?} timed out after {}",
                cmd.join(" "),
                crate::util::duration::format(timeout)
            ),
        )),
        Err(e) => Err(anyhow::Error::new(e)),
    }
}

/// Whether an exec failed because it ran past its timeout: the runtime
/// reports that as [`ExecError::Timeout`] somewhere in the error chain.
pub fn is_timeout(e: &RuntimeError) -> bool {
    match e {
        RuntimeError::Other(err) => err
            .chain()
            .any(|c| matches!(c.downcast_ref::<ExecError>(), Some(ExecError::Timeout(_)))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ports_resolve_by_name_then_number() {
        let c = container(json!({"name": "c", "ports": [
            {"name": "http", "containerPort": 8080}, {"name": "big", "containerPort": 70000}]}));
        assert_eq!(resolve_port(&IntOrString::Int(81), &c).unwrap(), 81);
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c).unwrap(),
            8080
        );
        assert_eq!(
            resolve_port(&IntOrString::String("9090".into()), &c).unwrap(),
            9090
        );
        let e = resolve_port(&IntOrString::String("web".into()), &c).unwrap_err();
        assert_eq!(e.to_string(), "port web not found");
        for bad in [IntOrString::Int(0), IntOrString::String("big".into())] {
            assert!(resolve_port(&bad, &c)
                .unwrap_err()
                .to_string()
                .starts_with("invalid port number"));
        }
    }

    fn action(v: serde_json::Value) -> HTTPGetAction {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn http_requests_as_upstream() {
        let c = container(json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}));
        let r = http_request(
            &action(json!({"port": "http", "path": "healthz?x=1", "scheme": "HTTPS"})),
            &c,
            "10.1.0.5",
            "probe",
        )
        .unwrap();
        assert_eq!(r.url.to_string(), "https://10.1.0.5:8080/healthz?x=1");
        assert_eq!(
            r.headers,
            vec![
                ("User-Agent".to_string(), "kube-probe/1.35".to_string()),
                ("Accept".to_string(), "*/*".to_string()),
            ]
        );
        let r = http_request(
            &action(json!({"port": 80, "host": "fd00::1", "httpHeaders": [
                {"name": "accept", "value": ""}, {"name": "user-agent", "value": "me"},
                {"name": "X-A", "value": "1"}, {"name": "X-A", "value": "2"}]})),
            &c,
            "10.1.0.5",
            "lifecycle",
        )
        .unwrap();
        assert_eq!(r.url.to_string(), "http://[fd00::1]:80/");
        assert_eq!(
            r.headers
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            vec!["user-agent=me", "X-A=1", "X-A=2"]
        );
        assert!(http_request(&action(json!({"port": 80})), &c, "", "probe").is_err());
        let e = http_request(
            &action(json!({"port": 80, "scheme": "FTP"})),
            &c,
            "10.0.0.1",
            "probe",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unsupported protocol scheme"), "{e}");
    }

    #[test]
    fn http_status_decisions() {
        assert_eq!(http_outcome(200, "ok".into()).outcome, Outcome::Success);
        assert_eq!(http_outcome(200, "ok".into()).message, "ok");
        assert_eq!(http_outcome(399, "x".into()).outcome, Outcome::Warning);
        assert_eq!(
            http_outcome(302, "moved".into()).message,
            "Probe terminated redirects, Response body: moved"
        );
        let f = http_outcome(503, "secret".into());
        assert_eq!(f.outcome, Outcome::Failure);
        assert_eq!(f.message, "HTTP probe failed with statuscode: 503");
        assert_eq!(http_outcome(199, String::new()).outcome, Outcome::Failure);
    }

    #[test]
    fn exec_commands_expand_static_env_only() {
        let c = container(json!({"name": "c", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "A", "value": "2"}]}));
        let cmd: Vec<String> = ["echo", "$(A)", "$(B)", "$(C)", "$$(A)"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(expand_static(&cmd, &c), ["echo", "2", "", "$(C)", "$(A)"]);
    }

    #[test]
    fn timeouts_are_recognised_in_the_error_chain() {
        let e = RuntimeError::Other(
            anyhow::Error::new(ExecError::Timeout(Duration::from_secs(1))).context("exec in c1"),
        );
        assert!(is_timeout(&e));
        assert!(!is_timeout(&RuntimeError::NotFound("c1".into())));
        assert!(!is_timeout(&RuntimeError::Other(anyhow!("boom"))));
    }
}
