//! Lifecycle hooks (upstream pkg/kubelet/lifecycle/handlers.go and the
//! hook parts of kuberuntime_container.go): postStart after a container
//! starts, preStop before its stop signal.
//!
//! Handlers: `exec` (through the runtime, output captured), `httpGet` (to
//! the pod IP by default; TLS unverified; same-host redirects followed;
//! only a transport error fails the hook, any HTTP status is fine; an HTTPS
//! hook answered in plain HTTP is retried over HTTP) and `sleep`.
//!
//! postStart has no time bound (as upstream: the start waits for it). A
//! failure returns [`PostStartFailure`]: the caller records the event, kills
//! the container with reason `FailedPostStartHook` and reports the start
//! as failed with `PostStartHookError`. preStop runs for at most the grace
//! period; its failure is only reported; the time it took comes off the
//! grace period left for the stop signal ([`grace_after_pre_stop`]).

use super::handlers;
use super::{CommandRunner, Target};
use crate::api::core::LifecycleHandler;
use crate::sync::actions::{format_pod, KillReason, MIN_GRACE_PERIOD_SECONDS};
use anyhow::{anyhow, bail, Result};
use async_io::Timer;
use futures_lite::future;
use std::time::{Duration, Instant};

/// Event reasons, as upstream (`events.FailedPostStartHook`, …).
pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
/// Event warning when an HTTPS hook fell back to HTTP.
pub const LIFECYCLE_HTTP_FALLBACK: &str = "LifecycleHTTPFallback";

/// What to do after a failed postStart hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostStartFailure {
    /// Upstream's message (`Exec lifecycle hook ([…]) for Container "c" in
    /// Pod "p_ns(uid)" failed - error: …, message: "…"`): for the log and
    /// the container's waiting message, not for events.
    pub message: String,
}

impl PostStartFailure {
    /// Event: reason and message (the details stay out of events, as
    /// upstream, so secrets in output do not leak).
    pub const EVENT_REASON: &'static str = FAILED_POST_START_HOOK;
    pub const EVENT_MESSAGE: &'static str = "PostStartHook failed";
    /// The container is killed with this reason and message.
    pub const KILL_REASON: KillReason = KillReason::FailedPostStartHook;
    pub const KILL_MESSAGE: &'static str = "FailedPostStartHook";
    /// The start fails with this error (upstream `ErrPostStartHook`); it is
    /// the waiting reason until the next start.
    pub const ERROR: &'static str = "PostStartHookError";

    /// `PostStartHookError: <message>`, as the kubelet logs the failed start.
    pub fn error_string(&self) -> String {
        format!("{}: {}", Self::ERROR, self.message)
    }
}

/// How a preStop hook went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreStopOutcome {
    /// Seconds left for the stop signal (never below the minimum).
    pub grace_left: i64,
    /// The hook failed: event `FailedPreStopHook` ("PreStopHook failed");
    /// this is the detailed message for the log.
    pub failure: Option<String>,
    /// The hook was still running when the grace period ran out.
    pub timed_out: bool,
}

/// Runs the container's postStart hook, if it has one.
pub async fn run_post_start<R: CommandRunner>(
    rt: &R,
    t: &Target<'_>,
) -> Result<(), PostStartFailure> {
    let Some(h) = t
        .container
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
    else {
        return Ok(());
    };
    match run_handler(rt, t, h, None).await {
        Ok(()) => Ok(()),
        Err(message) => {
            log::warn!(
                "postStart hook of {} in pod {} failed: {message}",
                t.container.name,
                format_pod(t.pod)
            );
            Err(PostStartFailure { message })
        }
    }
}

/// Runs the container's preStop hook (if any and `grace_seconds` > 0) for
/// at most `grace_seconds`, and says how much grace is left.
pub async fn run_pre_stop<R: CommandRunner>(
    rt: &R,
    t: &Target<'_>,
    grace_seconds: i64,
) -> PreStopOutcome {
    let hook = t
        .container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref());
    let Some(h) = hook.filter(|_| grace_seconds > 0) else {
        return PreStopOutcome {
            grace_left: grace_after_pre_stop(grace_seconds, None),
            failure: None,
            timed_out: false,
        };
    };
    let limit = Duration::from_secs(grace_seconds as u64);
    let start = Instant::now();
    let r = future::or(
        async { Some(run_handler(rt, t, h, Some(limit)).await) },
        async {
            Timer::after(limit).await;
            None
        },
    )
    .await;
    let elapsed = start.elapsed().as_secs() as i64;
    let (failure, timed_out) = match r {
        Some(Ok(())) => (None, false),
        Some(Err(m)) => (Some(m), false),
        None => {
            log::info!(
                "preStop hook of {} in pod {} not completed in the grace period of {grace_seconds}s",
                t.container.name,
                format_pod(t.pod)
            );
            (None, true)
        }
    };
    if let Some(m) = &failure {
        log::warn!(
            "preStop hook of {} in pod {} failed: {m}",
            t.container.name,
            format_pod(t.pod)
        );
    }
    PreStopOutcome {
        grace_left: grace_after_pre_stop(grace_seconds, Some(elapsed)),
        failure,
        timed_out,
    }
}

/// The grace period for the stop signal (upstream `killContainer`): the
/// preStop hook's whole seconds come off it, and it never goes below
/// [`MIN_GRACE_PERIOD_SECONDS`].
pub fn grace_after_pre_stop(grace_seconds: i64, hook_elapsed_secs: Option<i64>) -> i64 {
    let left = match hook_elapsed_secs {
        Some(e) if grace_seconds > 0 => grace_seconds - e,
        _ => grace_seconds,
    };
    left.max(MIN_GRACE_PERIOD_SECONDS)
}

/// Runs one handler (upstream `handlerRunner.Run`); the error is the
/// message the kubelet reports. `limit` bounds exec commands and sleeps.
pub async fn run_handler<R: CommandRunner>(
    rt: &R,
    t: &Target<'_>,
    h: &LifecycleHandler,
    limit: Option<Duration>,
) -> Result<(), String> {
    let pod = format_pod(t.pod);
    let name = &t.container.name;
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match exec_hook(rt, t.container_id, &cmd, limit).await {
            Ok(()) => Ok(()),
            Err((err, output)) => Err(format!(
                "Exec lifecycle hook ({}) for Container {name:?} in Pod {pod:?} failed - error: {err}, message: {output:?}",
                go_list(&cmd)
            )),
        };
    }
    if let Some(g) = &h.http_get {
        return http_hook(t, g).await.map_err(|e| {
            format!(
                "HTTP lifecycle hook ({}) for Container {name:?} in Pod {pod:?} failed - error: {e:#}",
                g.path.as_deref().unwrap_or("")
            )
        });
    }
    if let Some(s) = &h.sleep {
        let d = Duration::from_secs(s.seconds.max(0) as u64);
        Timer::after(limit.map_or(d, |l| d.min(l))).await;
        return Ok(());
    }
    Err("Cannot run handler: invalid handler: no exec, httpGet or sleep action".into())
}

/// `[a b c]`, how Go prints a string slice.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Upstream `RunInContainer` + CRI `ExecSync`: a non-zero exit is an error
/// `command 'a b' exited with N: <stderr>`; the output is stdout+stderr.
async fn exec_hook<R: CommandRunner>(
    rt: &R,
    id: &str,
    cmd: &[String],
    limit: Option<Duration>,
) -> Result<(), (String, String)> {
    match rt
        .run_in_container(id, cmd, limit.unwrap_or(Duration::ZERO))
        .await
    {
        Ok(r) if r.exit_code == 0 => Ok(()),
        Ok(r) => {
            let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
            let mut out = r.stdout;
            out.extend_from_slice(&r.stderr);
            Err((
                format!(
                    "command '{}' exited with {}: {stderr}",
                    cmd.join(" "),
                    r.exit_code
                ),
                String::from_utf8_lossy(&out).into_owned(),
            ))
        }
        Err(e) if handlers::is_timeout(&e) => Err((
            format!("command {:?} timed out", cmd.join(" ")),
            String::new(),
        )),
        Err(e) => Err((e.to_string(), String::new())),
    }
}

/// Upstream `runHTTPHandler`.
async fn http_hook(t: &Target<'_>, g: &crate::api::core::HTTPGetAction) -> Result<()> {
    if g.host.as_deref().unwrap_or("").is_empty() && t.pod_ip.is_empty() {
        bail!("failed to find networking container: the pod has no IP");
    }
    let req = handlers::http_request(g, t.container, t.pod_ip, "lifecycle")?;
    // The hook is bounded by its caller; each read by the client default.
    let client = handlers::client(Duration::from_secs(30));
    match handlers::fetch(&client, req.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if req.url.https && plain_http_answer(&e) => {
            log::info!(
                "HTTPS lifecycle hook {} got an HTTP response; retrying with HTTP",
                req.url.authority()
            );
            let mut plain = req;
            plain.url.https = false;
            plain
                .headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
            let authority = plain.url.authority();
            handlers::fetch(&client, plain).await.map_err(|_| e)?;
            log::warn!(
                "{LIFECYCLE_HTTP_FALLBACK}: request to HTTPS lifecycle hook {authority} got HTTP response, retry with HTTP succeeded"
            );
            Ok(())
        }
        Err(e) => Err(anyhow!("{e:#}")),
    }
}

/// Whether a TLS handshake failed because the server spoke plain HTTP
/// (Go: "server gave HTTP response to HTTPS client"): rustls sees a record
/// of an invalid content type.
fn plain_http_answer(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("InvalidContentType") || text.contains("invalid content type")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::core::{Container, Pod};
    use crate::runtime::{ExecSyncResponse, RuntimeError};
    use serde_json::json;
    use std::cell::RefCell;

    #[test]
    fn grace_left_after_pre_stop() {
        assert_eq!(grace_after_pre_stop(30, Some(5)), 25);
        assert_eq!(grace_after_pre_stop(30, Some(29)), MIN_GRACE_PERIOD_SECONDS);
        assert_eq!(grace_after_pre_stop(30, None), 30);
        assert_eq!(grace_after_pre_stop(0, Some(3)), MIN_GRACE_PERIOD_SECONDS);
        assert_eq!(grace_after_pre_stop(1, None), MIN_GRACE_PERIOD_SECONDS);
    }

    struct Fake {
        exit: i32,
        calls: RefCell<Vec<(Vec<String>, Duration)>>,
    }

    impl CommandRunner for Fake {
        async fn run_in_container(
            &self,
            _id: &str,
            cmd: &[String],
            timeout: Duration,
        ) -> Result<ExecSyncResponse, RuntimeError> {
            self.calls.borrow_mut().push((cmd.to_vec(), timeout));
            Ok(ExecSyncResponse {
                stdout: b"out\n".to_vec(),
                stderr: b"err\n".to_vec(),
                exit_code: self.exit,
            })
        }
    }

    fn pod_and_container(lifecycle: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "lifecycle": lifecycle}]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn exec_post_start_failure_message_as_upstream() {
        let (pod, c) =
            pod_and_container(json!({"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}}));
        let t = Target {
            pod: &pod,
            container: &c,
            container_id: "c1",
            pod_ip: "10.0.0.2",
        };
        let fake = Fake {
            exit: 3,
            calls: RefCell::new(vec![]),
        };
        let e = crate::rt::block_on(run_post_start(&fake, &t)).unwrap_err();
        assert_eq!(
            e.message,
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"c\" in Pod \"web_ns(u1)\" failed - error: command 'sh -c exit 3' exited with 3: err\n, message: \"out\\nerr\\n\""
        );
        assert!(e
            .error_string()
            .starts_with("PostStartHookError: Exec lifecycle hook"));
        // postStart exec runs without a timeout.
        assert_eq!(fake.calls.borrow()[0].1, Duration::ZERO);
        let ok = Fake {
            exit: 0,
            calls: RefCell::new(vec![]),
        };
        assert!(crate::rt::block_on(run_post_start(&ok, &t)).is_ok());
    }

    #[test]
    fn pre_stop_exec_gets_the_grace_period_and_sleep_is_bounded() {
        let (pod, c) = pod_and_container(json!({"preStop": {"exec": {"command": ["true"]}}}));
        let t = Target {
            pod: &pod,
            container: &c,
            container_id: "c1",
            pod_ip: "",
        };
        let fake = Fake {
            exit: 0,
            calls: RefCell::new(vec![]),
        };
        let o = crate::rt::block_on(run_pre_stop(&fake, &t, 7));
        assert_eq!(
            o,
            PreStopOutcome {
                grace_left: 7,
                failure: None,
                timed_out: false
            }
        );
        assert_eq!(fake.calls.borrow()[0].1, Duration::from_secs(7));
        // No hook run with a zero grace period.
        let o = crate::rt::block_on(run_pre_stop(&fake, &t, 0));
        assert_eq!(o.grace_left, MIN_GRACE_PERIOD_SECONDS);
        assert_eq!(fake.calls.borrow().len(), 1);

        // sleep 30 under a 1 s grace period: cut at 1 s.
        let (pod, c) = pod_and_container(json!({"preStop": {"sleep": {"seconds": 30}}}));
        let t = Target {
            pod: &pod,
            container: &c,
            container_id: "c1",
            pod_ip: "",
        };
        let start = Instant::now();
        let o = crate::rt::block_on(run_pre_stop(&fake, &t, 1));
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(o.grace_left, MIN_GRACE_PERIOD_SECONDS);
    }

    #[test]
    fn http_hook_without_ip_fails_with_message() {
        let (pod, c) =
            pod_and_container(json!({"postStart": {"httpGet": {"path": "/hook", "port": 80}}}));
        let t = Target {
            pod: &pod,
            container: &c,
            container_id: "c1",
            pod_ip: "",
        };
        let fake = Fake {
            exit: 0,
            calls: RefCell::new(vec![]),
        };
        let e = crate::rt::block_on(run_post_start(&fake, &t)).unwrap_err();
        assert!(
            e.message.starts_with("HTTP lifecycle hook (/hook) for Container \"c\" in Pod \"web_ns(u1)\" failed - error: failed to find networking container"),
            "{}",
            e.message
        );
    }
}
