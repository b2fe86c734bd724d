//! Lifecycle hook handlers (upstream pkg/kubelet/lifecycle/handlers.go):
//! `exec` runs the command in the container through the runtime,
//! `httpGet` sends a GET to the pod (or `host`) from the node, `sleep`
//! waits. Every handler is bounded by the caller's timeout.
//!
//! As upstream: an exec hook fails on a non-zero exit code; an httpGet hook
//! fails only when the request cannot be made (the status code is not
//! checked); TLS certificates are not verified; a `tcpSocket` handler is
//! not supported and fails.

use super::actions::format_pod;
use super::kubelet::{HookCall, Hooks};
use crate::api::core::{Container, HTTPGetAction};
use crate::runtime::Runtime;
use futures_lite::future::BoxedLocal;
use futures_lite::FutureExt;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::rc::Rc;
use std::time::Duration;

/// Runs hooks with the runtime (exec) and picolet's HTTP client (httpGet).
pub struct RuntimeHooks<R: Runtime> {
    runtime: Rc<R>,
    http: Rc<crate::http::Client>,
}

impl<R: Runtime> RuntimeHooks<R> {
    pub fn new(runtime: Rc<R>) -> Self {
        let opts = crate::http::ClientOptions {
            tls: crate::http::TlsOptions {
                insecure_skip_verify: true,
                ..Default::default()
            },
            ..Default::default()
        };
        RuntimeHooks {
            runtime,
            http: Rc::new(crate::http::Client::new(opts)),
        }
    }
}

/// The port of an httpGet handler: a number, or the name of one of the
/// container's ports.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name:?} in container {}", c.name))
        }
    }
}

/// The URL an httpGet handler requests.
pub fn http_url(h: &HTTPGetAction, c: &Container, pod_ip: Option<&str>) -> Result<String, String> {
    let host = match h.host.as_deref().filter(|s| !s.is_empty()) {
        Some(host) => host.to_string(),
        None => pod_ip
            .filter(|s| !s.is_empty())
            .ok_or("the pod has no IP")?
            .to_string(),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let port = resolve_port(&h.port, c)?;
    let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
    let path = h.path.as_deref().unwrap_or("");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(format!("{scheme}://{host}:{port}{path}"))
}

impl<R: Runtime + 'static> Hooks for RuntimeHooks<R> {
    fn run(&self, call: HookCall) -> BoxedLocal<Result<(), String>> {
        let runtime = self.runtime.clone();
        let http = self.http.clone();
        let timeout = call.timeout;
        let work = async move {
            let h = &call.handler;
            let pod = format_pod(&call.pod);
            let name = &call.container.name;
            if let Some(e) = &h.exec {
                let cmd = e.command.clone().unwrap_or_default();
                return match runtime.exec_sync(&call.container_id, &cmd, timeout).await {
                    Ok(r) if r.exit_code == 0 => Ok(()),
                    Ok(r) => {
                        let mut out = r.stdout;
                        out.extend_from_slice(&r.stderr);
                        Err(format!(
                            "Exec lifecycle hook ({cmd:?}) for Container {name:?} in Pod {pod:?} failed - error: command exited with {}, message: {:?}",
                            r.exit_code,
                            String::from_utf8_lossy(&out)
                        ))
                    }
                    Err(e) => Err(format!(
                        "Exec lifecycle hook ({cmd:?}) for Container {name:?} in Pod {pod:?} failed - error: {e}"
                    )),
                };
            }
            if let Some(g) = &h.http_get {
                let url = http_url(g, &call.container, call.pod_ip.as_deref())
                    .map_err(|e| format!("HTTP lifecycle hook for Container {name:?} in Pod {pod:?} failed - error: {e}"))?;
                let parsed = crate::http::Url::parse(&url).map_err(|e| format!("{e:#}"))?;
                let mut req = crate::http::Request::get(parsed);
                for hd in g.http_headers.iter().flatten() {
                    req = req.header(&hd.name, &hd.value);
                }
                return match http.send(req).await {
                    Ok(mut resp) => {
                        // Drain a little; the status does not matter.
                        let _ = resp.body.read_to_end(10 << 10).await;
                        Ok(())
                    }
                    Err(e) => Err(format!(
                        "HTTP lifecycle hook ({url}) for Container {name:?} in Pod {pod:?} failed - error: {e:#}"
                    )),
                };
            }
            if let Some(s) = &h.sleep {
                async_io::Timer::after(Duration::from_secs(s.seconds.max(0) as u64)).await;
                return Ok(());
            }
            Err(format!(
                "lifecycle hook for Container {name:?} in Pod {pod:?}: no supported handler (exec, httpGet or sleep)"
            ))
        };
        Box::pin(work.or(async move {
            async_io::Timer::after(timeout).await;
            Err(format!(
                "lifecycle hook timed out after {}s",
                timeout.as_secs()
            ))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(json!({"name": "c", "image": "x",
            "ports": [{"name": "http", "containerPort": 8080}]}))
        .unwrap()
    }

    #[test]
    fn urls_and_ports() {
        let c = container();
        let g = |v: serde_json::Value| -> HTTPGetAction { serde_json::from_value(v).unwrap() };
        assert_eq!(
            http_url(
                &g(json!({"port": "http", "path": "stop"})),
                &c,
                Some("10.0.0.2")
            )
            .unwrap(),
            "http://10.0.0.2:8080/stop"
        );
        assert_eq!(
            http_url(
                &g(json!({"port": 9, "host": "::1", "scheme": "HTTPS"})),
                &c,
                Some("10.0.0.2")
            )
            .unwrap(),
            "https://[::1]:9/"
        );
        assert!(http_url(&g(json!({"port": "nope"})), &c, Some("10.0.0.2")).is_err());
        assert!(http_url(&g(json!({"port": 80})), &c, None).is_err());
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
    }
}
