//! Running one CNI plugin: a child process with the `CNI_*` environment,
//! the configuration on stdin, the result (or the error object) on stdout.

use super::result::failure_message;
use super::CniError;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::process::{Command, Stdio};
use std::path::Path;
use std::time::{Duration, Instant};

/// One plugin invocation.
pub struct Invocation<'a> {
    pub network: &'a str,
    /// The plugin `type` (for messages).
    pub plugin: &'a str,
    pub path: &'a Path,
    pub command: &'a str,
    pub container_id: &'a str,
    /// Empty when the namespace is gone (DEL after a crash or reboot).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    /// `CNI_PATH`: the bin dirs joined by ':'.
    pub cni_path: &'a str,
    pub stdin: Vec<u8>,
    pub deadline: Instant,
    /// The whole operation's time budget (for the timeout message).
    pub budget: Duration,
}

/// Runs the plugin and returns its stdout on success. The child inherits
/// picolet's environment (plugins need `PATH` for iptables) minus any
/// `CNI_*` variables, and is killed when the deadline passes.
pub async fn run(inv: Invocation<'_>) -> Result<Vec<u8>, CniError> {
    let mut cmd = Command::new(inv.path);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", inv.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let failed = |message: String| CniError::PluginFailed {
        network: inv.network.to_string(),
        plugin: inv.plugin.to_string(),
        command: inv.command.to_string(),
        code: None,
        message,
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", inv.path.display())))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.status().await;
        return Err(failed("child pipes missing".into()));
    };
    let input = inv.stdin;
    let work = async {
        let write = async {
            // A plugin that exits without reading gives EPIPE: its exit
            // status and output tell the story, so the write error is moot.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let read_out = async {
            let mut b = Vec::new();
            stdout.read_to_end(&mut b).await.map(|_| b)
        };
        let read_err = async {
            let mut b = Vec::new();
            stderr.read_to_end(&mut b).await.map(|_| b)
        };
        let ((_, out), err) = future::zip(future::zip(write, read_out), read_err).await;
        let status = child.status().await;
        Some((out, err, status))
    };
    let timeout = async {
        async_io::Timer::at(inv.deadline).await;
        None
    };
    let Some((out, err, status)) = future::or(work, timeout).await else {
        let _ = child.kill();
        let _ = child.status().await;
        return Err(CniError::Timeout {
            network: inv.network.to_string(),
            plugin: inv.plugin.to_string(),
            command: inv.command.to_string(),
            after: inv.budget,
        });
    };
    let out = out.map_err(|e| failed(format!("read stdout: {e}")))?;
    let err = err.unwrap_or_default();
    let status = status.map_err(|e| failed(format!("wait: {e}")))?;
    if status.success() {
        if !err.is_empty() {
            log::debug!(
                "CNI plugin {} ({}) stderr: {}",
                inv.plugin,
                inv.command,
                String::from_utf8_lossy(&err).trim()
            );
        }
        return Ok(out);
    }
    let (code, msg) = failure_message(&out, &err);
    Err(CniError::PluginFailed {
        network: inv.network.to_string(),
        plugin: inv.plugin.to_string(),
        command: inv.command.to_string(),
        code,
        message: format!("{status}: {msg}"),
    })
}
