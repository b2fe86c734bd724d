//! The events socket: shims call `containerd.services.events.ttrpc.v1.Events/Forward`
//! on `$TTRPC_ADDRESS` once per task event. picolet serves it on
//! `Config::events_socket()` and hands decoded events to the runtime on a
//! channel.
//!
//! Rules (RUNTIME.md §4): bind before any shim starts; never unlink the
//! socket while shims live (a missing path stalls the shim 5 s per event);
//! a stale file from a previous run is replaced at start-up. Events are a
//! hint: after a restart the runtime relists with `State`.

use super::proto::{self, events as pb};
use super::ttrpc::{Code, Server, ServerError};
use super::RuntimeEvent;
use anyhow::{bail, Context, Result};
use async_io::Async;
use protobuf::Message;
use smol::channel;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

pub const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

/// A task event as the runc shim sends it. Times are Unix nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Create {
        container_id: String,
        bundle: String,
        pid: u32,
    },
    Start {
        container_id: String,
        pid: u32,
    },
    /// `id` is the exec id, or the container id for the init process.
    Exit {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: i64,
    },
    Oom {
        container_id: String,
    },
    /// `id` is the exec id; empty or the container id for the init process.
    Delete {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: i64,
    },
    ExecAdded {
        container_id: String,
        exec_id: String,
    },
    ExecStarted {
        container_id: String,
        exec_id: String,
        pid: u32,
    },
}

/// One forwarded event with its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub namespace: String,
    pub topic: String,
    /// Unix nanoseconds the shim stamped.
    pub timestamp: i64,
    pub event: TaskEvent,
}

impl TaskEvent {
    pub fn container_id(&self) -> &str {
        match self {
            TaskEvent::Create { container_id, .. }
            | TaskEvent::Start { container_id, .. }
            | TaskEvent::Exit { container_id, .. }
            | TaskEvent::Oom { container_id }
            | TaskEvent::Delete { container_id, .. }
            | TaskEvent::ExecAdded { container_id, .. }
            | TaskEvent::ExecStarted { container_id, .. } => container_id,
        }
    }

    /// What the sync loop cares about: init-process changes only (exec
    /// events and Create are not container state changes it acts on).
    /// Sandbox containers map like any other; the runtime, which knows
    /// which ids are sandboxes, turns those into `SandboxChanged`.
    pub fn to_runtime_event(&self) -> Option<RuntimeEvent> {
        match self {
            TaskEvent::Start { container_id, .. } => Some(RuntimeEvent::ContainerStarted {
                id: container_id.clone(),
            }),
            TaskEvent::Exit {
                container_id,
                id,
                exit_status,
                exited_at,
                ..
            } if id == container_id || id.is_empty() => Some(RuntimeEvent::ContainerExited {
                id: container_id.clone(),
                exit_code: *exit_status as i32,
                finished_at: *exited_at,
            }),
            TaskEvent::Oom { container_id } => Some(RuntimeEvent::ContainerOom {
                id: container_id.clone(),
            }),
            TaskEvent::Delete {
                container_id, id, ..
            } if id == container_id || id.is_empty() => Some(RuntimeEvent::ContainerDeleted {
                id: container_id.clone(),
            }),
            _ => None,
        }
    }
}

pub(crate) fn timestamp_nanos(
    t: &protobuf::MessageField<protobuf::well_known_types::timestamp::Timestamp>,
) -> i64 {
    t.as_ref().map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(t.nanos as i64)
    })
}

/// Decodes a `ForwardRequest` payload. `Ok(None)`: a well-formed event of
/// a kind picolet does not use (paused, checkpointed, ...).
pub fn decode_forward(payload: &[u8]) -> Result<Option<Event>> {
    let req =
        pb::events::ForwardRequest::parse_from_bytes(payload).context("decode ForwardRequest")?;
    let env = req
        .envelope
        .as_ref()
        .context("ForwardRequest without envelope")?;
    let any = env.event.as_ref().context("envelope without event")?;
    let name = proto::type_name(&any.type_url);
    let event = match name {
        "containerd.events.TaskCreate" => {
            let e: pb::task::TaskCreate = proto::unpack(any, name)?;
            TaskEvent::Create {
                container_id: e.container_id,
                bundle: e.bundle,
                pid: e.pid,
            }
        }
        "containerd.events.TaskStart" => {
            let e: pb::task::TaskStart = proto::unpack(any, name)?;
            TaskEvent::Start {
                container_id: e.container_id,
                pid: e.pid,
            }
        }
        "containerd.events.TaskExit" => {
            let e: pb::task::TaskExit = proto::unpack(any, name)?;
            TaskEvent::Exit {
                exited_at: timestamp_nanos(&e.exited_at),
                container_id: e.container_id,
                id: e.id,
                pid: e.pid,
                exit_status: e.exit_status,
            }
        }
        "containerd.events.TaskOOM" => {
            let e: pb::task::TaskOOM = proto::unpack(any, name)?;
            TaskEvent::Oom {
                container_id: e.container_id,
            }
        }
        "containerd.events.TaskDelete" => {
            let e: pb::task::TaskDelete = proto::unpack(any, name)?;
            TaskEvent::Delete {
                exited_at: timestamp_nanos(&e.exited_at),
                container_id: e.container_id,
                id: e.id,
                pid: e.pid,
                exit_status: e.exit_status,
            }
        }
        "containerd.events.TaskExecAdded" => {
            let e: pb::task::TaskExecAdded = proto::unpack(any, name)?;
            TaskEvent::ExecAdded {
                container_id: e.container_id,
                exec_id: e.exec_id,
            }
        }
        "containerd.events.TaskExecStarted" => {
            let e: pb::task::TaskExecStarted = proto::unpack(any, name)?;
            TaskEvent::ExecStarted {
                container_id: e.container_id,
                exec_id: e.exec_id,
                pid: e.pid,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Event {
        namespace: env.namespace.clone(),
        topic: env.topic.clone(),
        timestamp: timestamp_nanos(&env.timestamp),
        event,
    }))
}

/// Binds `path` for the events server: creates the parent directory,
/// replaces a stale socket file (nobody answers on it), refuses to take
/// over a socket someone still serves, and restricts it to root (0600).
pub fn bind_socket(path: &Path) -> Result<Async<UnixListener>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "events socket {} is served by another process",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("remove stale events socket {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("bind events socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Async::new(l).with_context(|| format!("register {}", path.display()))
}

/// The running events server. Dropping it stops serving (the socket file
/// stays: shims keep dialling that path).
pub struct EventServer {
    path: PathBuf,
    _task: smol::Task<()>,
}

impl EventServer {
    /// Binds `path` and serves `Events/Forward`; decoded events arrive on
    /// the returned channel (unbounded, so a slow consumer never stalls a
    /// shim's event loop).
    pub fn start(path: &Path) -> Result<(EventServer, channel::Receiver<Event>)> {
        let listener = bind_socket(path)?;
        let (tx, rx) = channel::unbounded();
        let mut server = Server::new();
        server.register(EVENTS_SERVICE, "Forward", move |payload| {
            let r = match decode_forward(&payload) {
                Ok(Some(ev)) => {
                    log::debug!("shim event {} {:?}", ev.topic, ev.event);
                    // Nobody listening any more is not the shim's problem.
                    let _ = tx.try_send(ev);
                    Ok(Vec::new())
                }
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(ServerError {
                    code: Code::InvalidArgument,
                    message: format!("{e:#}"),
                }),
            };
            async move { r }
        });
        let p = path.to_path_buf();
        let task = crate::rt::spawn(async move {
            if let Err(e) = server.serve(listener).await {
                log::error!("events server on {}: {e}", p.display());
            }
        });
        Ok((
            EventServer {
                path: path.to_path_buf(),
                _task: task,
            },
            rx,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::well_known_types::timestamp::Timestamp;

    fn forward(type_url: &str, msg: &impl Message, topic: &str) -> Vec<u8> {
        let mut env = pb::event::Envelope::new();
        env.namespace = "ns".into();
        env.topic = topic.into();
        let mut ts = Timestamp::new();
        ts.seconds = 2;
        ts.nanos = 5;
        env.timestamp = protobuf::MessageField::some(ts);
        env.event = protobuf::MessageField::some(proto::pack(type_url, msg).unwrap());
        let mut req = pb::events::ForwardRequest::new();
        req.envelope = protobuf::MessageField::some(env);
        req.write_to_bytes().unwrap()
    }

    #[test]
    fn decodes_exit_and_maps_init_exits_only() {
        let mut e = pb::task::TaskExit::new();
        e.container_id = "c1".into();
        e.id = "c1".into();
        e.pid = 42;
        e.exit_status = 137;
        let mut ts = Timestamp::new();
        ts.seconds = 10;
        e.exited_at = protobuf::MessageField::some(ts);
        let ev = decode_forward(&forward("containerd.events.TaskExit", &e, "/tasks/exit"))
            .unwrap()
            .unwrap();
        assert_eq!(ev.namespace, "ns");
        assert_eq!(ev.topic, "/tasks/exit");
        assert_eq!(ev.timestamp, 2_000_000_005);
        assert_eq!(
            ev.event.to_runtime_event(),
            Some(RuntimeEvent::ContainerExited {
                id: "c1".into(),
                exit_code: 137,
                finished_at: 10_000_000_000
            })
        );
        e.id = "exec-1".into();
        let ev = decode_forward(&forward("containerd.events.TaskExit", &e, "/tasks/exit"))
            .unwrap()
            .unwrap();
        assert_eq!(ev.event.to_runtime_event(), None);
    }

    #[test]
    fn decodes_oom_and_ignores_other_kinds() {
        let mut e = pb::task::TaskOOM::new();
        e.container_id = "c2".into();
        let ev = decode_forward(&forward("containerd.events.TaskOOM", &e, "/tasks/oom"))
            .unwrap()
            .unwrap();
        assert_eq!(
            ev.event,
            TaskEvent::Oom {
                container_id: "c2".into()
            }
        );
        let p = pb::task::TaskPaused::new();
        assert_eq!(
            decode_forward(&forward(
                "containerd.events.TaskPaused",
                &p,
                "/tasks/paused"
            ))
            .unwrap(),
            None
        );
        assert!(decode_forward(b"\x0a\x03xyz").is_err());
    }

    #[test]
    fn bind_replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = std::env::temp_dir().join(format!("picolet-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("run/events.sock");
        let live = bind_socket(&path).unwrap();
        let e = bind_socket(&path).unwrap_err();
        assert!(e.to_string().contains("served by another process"), "{e:#}");
        drop(live); // the file stays, nobody listens: stale
        assert!(path.exists());
        let _again = bind_socket(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn server_delivers_forwarded_events() {
        crate::rt::block_on(async {
            let dir =
                std::env::temp_dir().join(format!("picolet-events-srv-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let path = dir.join("events.sock");
            let (_srv, rx) = EventServer::start(&path).unwrap();
            let c = crate::runtime::ttrpc::Client::new(&path, vec![]);
            let mut e = pb::task::TaskStart::new();
            e.container_id = "c9".into();
            e.pid = 9;
            let payload = forward("containerd.events.TaskStart", &e, "/tasks/start");
            let out = c
                .call_raw(EVENTS_SERVICE, "Forward", payload, None)
                .await
                .unwrap();
            assert!(out.is_empty());
            let ev = rx.recv().await.unwrap();
            assert_eq!(
                ev.event,
                TaskEvent::Start {
                    container_id: "c9".into(),
                    pid: 9
                }
            );
            let bad = c
                .call_raw(EVENTS_SERVICE, "Forward", b"\x0a\x03xyz".to_vec(), None)
                .await;
            assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
