//! ExecSync over the shim (probes, hooks; `kubectl exec` later):
//! `Exec` -> `Start` -> `Wait` (bounded) -> `Delete`, output captured from
//! FIFOs into memory (capped like CRI at 16 MiB per stream). The exec is
//! always deleted, also when `Start` failed or the command timed out
//! (then it is killed first).

use super::shim::{open_fifo_reader, Bundle, ExecProcess, Shim};
use super::ExecSyncResponse;
use anyhow::{Context, Result};
use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt};
use serde_json::Value;
use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Per-stream output cap (CRI's `maxStreamSize`); the rest is drained and dropped.
pub const MAX_OUTPUT: usize = 16 << 20;
/// How long to wait for a killed exec to go, and for its output to end.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The command ran past its timeout and was killed.
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    /// The process could not be started (missing binary, exec format
    /// error, ...): the runtime's message.
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The exec's process: the container's own `process` (user, env, cwd,
/// capabilities: as containerd's CRI does) with `cmd` as args, no terminal.
pub fn exec_spec(container_process: &Value, cmd: &[String]) -> Value {
    let mut p = container_process.clone();
    if !p.is_object() {
        p = Value::Object(Default::default());
    }
    p["args"] = Value::from(cmd.to_vec());
    p["terminal"] = Value::Bool(false);
    if p.get("cwd").is_none() {
        p["cwd"] = Value::from("/");
    }
    p
}

/// Reads the `process` object of a bundle's config.json.
pub fn container_process(bundle: &Bundle) -> Result<Value> {
    let path = bundle.config_path();
    let text = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut spec: Value =
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
    spec.get_mut("process")
        .map(Value::take)
        .with_context(|| format!("{}: no process", path.display()))
}

thread_local! {
    static SEQ: Cell<u64> = const { Cell::new(0) };
}

/// An exec id unique in this process and across restarts (time + counter).
pub fn new_exec_id() -> String {
    let n = SEQ.with(|s| {
        let v = s.get();
        s.set(v + 1);
        v
    });
    format!("exec-{:x}-{n}", jiff::Timestamp::now().as_nanosecond())
}

/// Runs `cmd` in the container of `bundle` (its process spec as the base)
/// and returns its output and exit code. `timeout` zero: no timeout.
pub async fn exec_sync(
    shim: &Shim,
    bundle: &Bundle,
    cmd: &[String],
    timeout: Duration,
) -> Result<ExecSyncResponse, ExecError> {
    let spec = exec_spec(&container_process(bundle)?, cmd);
    exec_sync_spec(shim, &bundle.id, &bundle.dir, spec, timeout).await
}

/// [`exec_sync`] with a ready process spec; the output FIFOs go in `fifo_dir`.
pub async fn exec_sync_spec(
    shim: &Shim,
    container_id: &str,
    fifo_dir: &Path,
    spec: Value,
    timeout: Duration,
) -> Result<ExecSyncResponse, ExecError> {
    let exec_id = new_exec_id();
    let out_path = fifo_dir.join(format!("{exec_id}.stdout"));
    let err_path = fifo_dir.join(format!("{exec_id}.stderr"));
    let _cleanup = RemoveOnDrop(vec![out_path.clone(), err_path.clone()]);
    // Readers first: the shim opens the FIFOs for writing and blocks until
    // a reader exists.
    let out_fifo = fifo_reader(&out_path)?;
    let err_fifo = fifo_reader(&err_path)?;
    let req = ExecProcess {
        id: container_id.to_string(),
        exec_id: exec_id.clone(),
        stdout: out_path.to_string_lossy().into_owned(),
        stderr: err_path.to_string_lossy().into_owned(),
        spec,
        ..Default::default()
    };
    shim.exec(&req)
        .await
        .with_context(|| format!("exec in {container_id}"))?;
    let id = Some(exec_id.as_str());
    if let Err(e) = shim.start(container_id, id).await {
        delete_exec(shim, container_id, &exec_id).await;
        return Err(ExecError::Start(e.message()));
    }
    // The shim holds the writers now: EOF means the output ended.
    let stdout = crate::rt::spawn(read_capped(out_fifo));
    let stderr = crate::rt::spawn(read_capped(err_fifo));
    let waited = if timeout.is_zero() {
        Some(shim.wait(container_id, id).await)
    } else {
        future::or(async { Some(shim.wait(container_id, id).await) }, async {
            Timer::after(timeout).await;
            None
        })
        .await
    };
    let exit = match waited {
        Some(Ok(exit)) => exit,
        Some(Err(e)) => {
            delete_exec(shim, container_id, &exec_id).await;
            return Err(anyhow::Error::new(e)
                .context(format!("wait for exec in {container_id}"))
                .into());
        }
        None => {
            if let Err(e) = shim.kill(container_id, id, 9, false).await {
                log::debug!("kill exec {exec_id} in {container_id}: {e}");
            }
            let _ = future::or(
                async { shim.wait(container_id, id).await.map(|_| ()) },
                async {
                    Timer::after(GRACE).await;
                    Ok(())
                },
            )
            .await;
            delete_exec(shim, container_id, &exec_id).await;
            return Err(ExecError::Timeout(timeout));
        }
    };
    // Delete first: the shim closes the FIFO writers once the output is copied.
    delete_exec(shim, container_id, &exec_id).await;
    let collect = async { (stdout.await, stderr.await) };
    let (stdout, stderr) = future::or(async { Some(collect.await) }, async {
        Timer::after(GRACE).await;
        None
    })
    .await
    .context("exec output did not end")?;
    Ok(ExecSyncResponse {
        stdout: stdout?,
        stderr: stderr?,
        exit_code: exit.exit_status as i32,
    })
}

async fn delete_exec(shim: &Shim, container_id: &str, exec_id: &str) {
    if let Err(e) = shim.delete(container_id, Some(exec_id)).await {
        if !e.is_not_found() {
            log::warn!("delete exec {exec_id} in {container_id}: {e}");
        }
    }
}

fn fifo_reader(path: &Path) -> Result<Async<File>> {
    Async::new(File::from(open_fifo_reader(path)?))
        .with_context(|| format!("register FIFO {}", path.display()))
}

async fn read_capped(mut f: Async<File>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = f.read(&mut buf).await.context("read exec output")?;
        if n == 0 {
            return Ok(out);
        }
        let room = MAX_OUTPUT - out.len();
        out.extend_from_slice(&buf[..n.min(room)]);
    }
}

struct RemoveOnDrop(Vec<PathBuf>);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_takes_the_container_process_with_new_args() {
        let base = json!({"args": ["httpd"], "env": ["A=1"], "cwd": "/www", "terminal": true, "user": {"uid": 5, "gid": 5}});
        let p = exec_spec(&base, &["cat".into(), "/x".into()]);
        assert_eq!(p["args"], json!(["cat", "/x"]));
        assert_eq!(p["env"], json!(["A=1"]));
        assert_eq!(p["cwd"], "/www");
        assert_eq!(p["terminal"], false);
        assert_eq!(p["user"]["uid"], 5);
        assert_eq!(exec_spec(&Value::Null, &["x".into()])["cwd"], "/");
    }

    #[test]
    fn exec_ids_are_unique() {
        let a = new_exec_id();
        let b = new_exec_id();
        assert_ne!(a, b);
        assert!(super::super::shim::validate_id(&a).is_ok());
    }
}
