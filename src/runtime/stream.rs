//! Interactive processes for `kubectl exec` and `kubectl attach`: the
//! shim's `Exec` with stdin and a terminal (`terminal: true`; the shim
//! makes the console socket and copies the pty), `ResizePty`, `CloseIO`,
//! and attaching to a running container's stdio.
//!
//! Everything is streamed: output is read from the FIFOs (or the log
//! copier's attach hub) only as fast as the caller takes it, and stdin is
//! written to a FIFO with non-blocking writes, so a slow peer blocks the
//! process, never picolet's memory.

use super::logs::{AttachHub, Stream};
use super::shim::{open_fifo_reader, ExecProcess, Shim};
use anyhow::{Context, Result};
use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt};
use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// Which streams a session wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The write end of a process's stdin FIFO.
pub type Stdin = Rc<Async<File>>;

/// A source of output chunks.
pub enum Output {
    /// A FIFO the shim writes one stream into.
    Fifo(Stream, Async<File>),
    /// A running container's output, both streams tagged.
    Attached(smol::channel::Receiver<(Stream, Vec<u8>)>),
}

impl Output {
    /// The next chunk; `None` at the end of the output.
    pub async fn next(&mut self) -> Option<std::io::Result<(Stream, Vec<u8>)>> {
        match self {
            Output::Fifo(s, f) => {
                let mut buf = vec![0u8; 32 << 10];
                match f.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(Ok((*s, buf)))
                    }
                    Err(e) => Some(Err(e)),
                }
            }
            Output::Attached(rx) => rx.recv().await.ok().map(Ok),
        }
    }
}

/// A process being streamed.
pub struct StreamProcess {
    pub stdin: Option<Stdin>,
    pub outputs: Vec<Output>,
    pub control: Control,
}

/// Resize, close stdin, wait, and clean up.
pub struct Control {
    shim: Shim,
    id: String,
    exec_id: Option<String>,
    fifos: Vec<PathBuf>,
    /// Attach: the container's stdin writer slot, closed at the end when
    /// the container asked for `stdinOnce`.
    stdin_once: Option<Rc<RefCell<Option<Stdin>>>>,
}

/// How long a killed exec may take to go.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Control {
    pub async fn resize(&self, width: u16, height: u16) -> Result<()> {
        self.shim
            .resize_pty(
                &self.id,
                self.exec_id.as_deref(),
                u32::from(width),
                u32::from(height),
            )
            .await
            .with_context(|| format!("resize the terminal of {}", self.id))
    }

    /// The client closed its stdin: the process sees EOF (the caller drops
    /// its writer first).
    pub async fn close_stdin(&self) {
        if let Some(slot) = &self.stdin_once {
            slot.borrow_mut().take();
        }
        if self.exec_id.is_some() || self.stdin_once.is_some() {
            if let Err(e) = self
                .shim
                .close_stdin(&self.id, self.exec_id.as_deref())
                .await
            {
                log::debug!("close stdin of {}: {e}", self.id);
            }
        }
    }

    /// The exit status (the container's, for an attach).
    pub async fn wait(&self) -> Result<i32> {
        let e = self
            .shim
            .wait(&self.id, self.exec_id.as_deref())
            .await
            .with_context(|| format!("wait for {}", self.id))?;
        Ok(e.exit_status as i32)
    }

    /// Deletes an exited exec: the shim then closes its output FIFOs once
    /// everything is copied.
    pub async fn delete_exec(&self) {
        if let Some(exec_id) = self.exec_id.as_deref() {
            if let Err(e) = self.shim.delete(&self.id, Some(exec_id)).await {
                if !e.is_not_found() {
                    log::debug!("delete exec {exec_id} in {}: {e}", self.id);
                }
            }
        }
    }

    /// Ends the session: an exec still running is killed (as containerd's
    /// CRI does when the client goes) and deleted, its FIFOs removed.
    pub async fn finish(self) {
        if let Some(slot) = &self.stdin_once {
            slot.borrow_mut().take();
        }
        if let Some(exec_id) = self.exec_id.as_deref() {
            let id = self.id.as_str();
            let running = self
                .shim
                .state(id, Some(exec_id))
                .await
                .is_ok_and(|s| s.status != super::shim::TaskStatus::Stopped);
            if running {
                if let Err(e) = self.shim.kill(id, Some(exec_id), 9, false).await {
                    log::debug!("kill exec {exec_id} in {id}: {e}");
                }
                let _ = future::or(
                    async {
                        let _ = self.shim.wait(id, Some(exec_id)).await;
                    },
                    async {
                        Timer::after(KILL_WAIT).await;
                    },
                )
                .await;
            }
            if let Err(e) = self.shim.delete(id, Some(exec_id)).await {
                if !e.is_not_found() {
                    log::warn!("delete exec {exec_id} in {id}: {e}");
                }
            }
        }
        for p in &self.fifos {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Opens a FIFO for writing without waiting for a reader (`O_RDWR`: the
/// shim's reader sees EOF once this is dropped).
pub fn open_fifo_writer(path: &Path) -> Result<Stdin> {
    super::shim::mkfifo(path)?;
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .with_context(|| format!("open FIFO {}", path.display()))?;
    Ok(Rc::new(Async::new(File::from(fd)).with_context(|| {
        format!("register FIFO {}", path.display())
    })?))
}

fn fifo_reader(path: &Path) -> Result<Async<File>> {
    Async::new(File::from(open_fifo_reader(path)?))
        .with_context(|| format!("register FIFO {}", path.display()))
}

/// The exec's process: the container's with `cmd`, and with a terminal
/// `TERM=xterm` (as containerd's CRI).
pub fn stream_spec(
    container_process: &serde_json::Value,
    cmd: &[String],
    tty: bool,
) -> serde_json::Value {
    let mut p = super::exec::exec_spec(container_process, cmd);
    p["terminal"] = serde_json::Value::Bool(tty);
    if tty {
        let mut env: Vec<serde_json::Value> = p["env"].as_array().cloned().unwrap_or_default();
        env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with("TERM=")));
        env.push("TERM=xterm".into());
        p["env"] = env.into();
    }
    p
}

/// Starts `cmd` in a container with the streams of `o`; FIFOs go in
/// `fifo_dir`. A process that cannot start is deleted and its runtime
/// message returned.
pub async fn exec(
    shim: &Shim,
    container_id: &str,
    fifo_dir: &Path,
    spec: serde_json::Value,
    o: StreamOptions,
) -> Result<StreamProcess, super::exec::ExecError> {
    let exec_id = super::exec::new_exec_id();
    let path = |s: &str| fifo_dir.join(format!("{exec_id}.{s}"));
    let mut fifos = Vec::new();
    let mut outputs = Vec::new();
    let mut req = ExecProcess {
        id: container_id.to_string(),
        exec_id: exec_id.clone(),
        terminal: o.tty,
        spec,
        ..Default::default()
    };
    let cleanup = |fifos: &[PathBuf]| {
        for p in fifos {
            let _ = std::fs::remove_file(p);
        }
    };
    // Readers (and the stdin writer) before `Exec`: the shim opens its
    // ends at once.
    let mut stdin = None;
    let setup = (|| -> Result<()> {
        if o.stdin {
            let p = path("stdin");
            fifos.push(p.clone());
            stdin = Some(open_fifo_writer(&p)?);
            req.stdin = p.to_string_lossy().into_owned();
        }
        // A terminal merges stderr into stdout. Without one both FIFOs are
        // made even when a stream was not asked for (the runc shim fails
        // an exec with only one of them); the caller drops what nobody
        // asked for.
        for (want, s) in [(true, Stream::Stdout), (!o.tty, Stream::Stderr)] {
            if !want {
                continue;
            }
            let p = path(s.as_str());
            fifos.push(p.clone());
            outputs.push(Output::Fifo(s, fifo_reader(&p)?));
            let v = p.to_string_lossy().into_owned();
            match s {
                Stream::Stdout => req.stdout = v,
                Stream::Stderr => req.stderr = v,
            }
        }
        Ok(())
    })();
    if let Err(e) = setup {
        cleanup(&fifos);
        return Err(e.into());
    }
    if let Err(e) = shim.exec(&req).await {
        cleanup(&fifos);
        return Err(anyhow::Error::new(e)
            .context(format!("exec in {container_id}"))
            .into());
    }
    if let Err(e) = shim.start(container_id, Some(&exec_id)).await {
        if let Err(d) = shim.delete(container_id, Some(&exec_id)).await {
            log::debug!("delete exec {exec_id}: {d}");
        }
        cleanup(&fifos);
        return Err(super::exec::ExecError::Start(e.message()));
    }
    Ok(StreamProcess {
        stdin,
        outputs,
        control: Control {
            shim: shim.clone(),
            id: container_id.to_string(),
            exec_id: Some(exec_id),
            fifos,
            stdin_once: None,
        },
    })
}

/// Attaches to a running container's output (from now on) and, when it
/// has one, its stdin.
pub fn attach(
    shim: &Shim,
    container_id: &str,
    hub: &AttachHub,
    stdin_slot: Rc<RefCell<Option<Stdin>>>,
    stdin_once: bool,
    o: StreamOptions,
) -> Result<StreamProcess> {
    let rx = hub
        .subscribe()
        .with_context(|| format!("container {container_id} is not running"))?;
    let stdin = if o.stdin {
        stdin_slot.borrow().clone()
    } else {
        None
    };
    Ok(StreamProcess {
        stdin,
        outputs: if o.stdout || o.stderr {
            vec![Output::Attached(rx)]
        } else {
            vec![]
        },
        control: Control {
            shim: shim.clone(),
            id: container_id.to_string(),
            exec_id: None,
            fifos: vec![],
            stdin_once: (stdin_once && o.stdin).then_some(stdin_slot),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terminal_spec_sets_term() {
        let base = json!({"args": ["httpd"], "env": ["A=1", "TERM=dumb"], "terminal": false});
        let p = stream_spec(&base, &["sh".into()], true);
        assert_eq!(p["terminal"], true);
        assert_eq!(p["env"], json!(["A=1", "TERM=xterm"]));
        let p = stream_spec(&base, &["sh".into()], false);
        assert_eq!(p["terminal"], false);
        assert_eq!(p["env"], json!(["A=1", "TERM=dumb"]));
    }
}
