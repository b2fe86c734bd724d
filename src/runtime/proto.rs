//! Protobuf messages generated at build time from `proto/` (see build.rs):
//! the shim's task API v2, the events it forwards, cgroup metrics, and the
//! ttrpc framing. Lite runtime: no reflection, so `Any` payloads are packed
//! and unpacked by type URL with [`pack`] / [`unpack`].

#![allow(clippy::all, missing_docs, unused_qualifications)]

use anyhow::{bail, Context, Result};
use protobuf::well_known_types::any::Any;
use protobuf::Message;

/// `ttrpc.Request`, `ttrpc.Response`, `ttrpc.Status`, `ttrpc.KeyValue`.
pub mod ttrpc {
    include!(concat!(env!("OUT_DIR"), "/ttrpc/mod.rs"));
}

/// `containerd.task.v2` (module `shim`), `containerd.types.Mount` (`mount`),
/// `containerd.v1.types` Status/ProcessInfo (`task`).
pub mod task {
    include!(concat!(env!("OUT_DIR"), "/task/mod.rs"));
}

/// `containerd.services.events.ttrpc.v1.ForwardRequest` (module `events`),
/// `containerd.types.Envelope` (`event`), `containerd.events.Task*` (`task`).
pub mod events {
    include!(concat!(env!("OUT_DIR"), "/events/mod.rs"));
}

/// `io.containerd.cgroups.v1.Metrics` (module `metrics`).
pub mod cgroups_v1 {
    include!(concat!(env!("OUT_DIR"), "/cgroups_v1/mod.rs"));
}

/// `io.containerd.cgroups.v2.Metrics` (module `metrics`).
pub mod cgroups_v2 {
    include!(concat!(env!("OUT_DIR"), "/cgroups_v2/mod.rs"));
}

/// The name part of a type URL: `types.containerd.io/a/b/Name` -> `Name`,
/// `containerd.events.TaskExit` -> itself (the shim sends bare names).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Packs `msg` into an `Any` with the given full type name or URL.
pub fn pack(type_url: &str, msg: &impl Message) -> Result<Any> {
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = msg
        .write_to_bytes()
        .with_context(|| format!("encode {type_url}"))?;
    Ok(any)
}

/// Decodes `any` as `M` if its type name is `want` (a full protobuf name).
pub fn unpack<M: Message>(any: &Any, want: &str) -> Result<M> {
    let got = type_name(&any.type_url);
    if got != want {
        bail!("unexpected Any type {:?}, want {want}", any.type_url);
    }
    M::parse_from_bytes(&any.value).with_context(|| format!("decode {want}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(
            type_name("containerd.events.TaskExit"),
            "containerd.events.TaskExit"
        );
        assert_eq!(
            type_name("types.containerd.io/opencontainers/runtime-spec/1/Process"),
            "Process"
        );
    }

    #[test]
    fn any_round_trip_checks_type() {
        let mut exit = events::task::TaskExit::new();
        exit.container_id = "c1".into();
        exit.exit_status = 137;
        let any = pack("containerd.events.TaskExit", &exit).unwrap();
        let back: events::task::TaskExit = unpack(&any, "containerd.events.TaskExit").unwrap();
        assert_eq!(back, exit);
        assert!(unpack::<events::task::TaskOOM>(&any, "containerd.events.TaskOOM").is_err());
    }
}
