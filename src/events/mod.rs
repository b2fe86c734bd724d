//! Kubernetes Events, as the kubelet records them: what the sync code
//! calls ([`Recorder`]), the kubelet's recorder that logs every event and
//! sends it to the API server as a core/v1 Event ([`EventRecorder`]), and
//! the reasons and messages upstream's kubelet uses ([`reasons`],
//! [`messages`]), so `kubectl describe pod` reads as on a node running
//! upstream's kubelet.
//!
//! Events go through upstream's correlator (client-go `tools/record`,
//! [`correlator`]): identical events become one Event whose `count` grows,
//! ten similar ones (differing only in message) within ten minutes become
//! one "(combined from similar events)" Event, and a token bucket per
//! source + object (burst 25, one more every 5 minutes) keeps a crash
//! looping pod from flooding the API server.
//!
//! Wiring (the agent's side):
//!
//! ```ignore
//! // At start, before any pod is synced (events are logged at once and
//! // queued, up to 1000, until a client is attached):
//! let rec = EventRecorder::new(&cfg.node_name, DEFAULT_QPS, DEFAULT_BURST); // eventRecordQPS, eventBurst
//! let recorder: Rc<dyn Recorder> = rec.clone();
//! rec.event(&ObjectRef::node(&cfg.node_name, None), EventType::Normal,
//!           reasons::STARTING_KUBELET, &messages::starting_kubelet());
//! // Once the API client exists: the same connection, the recorder's own
//! // rate limit (upstream gives events a client of their own).
//! rec.attach(Rc::new(Client::new(client.transport().clone(), 0.0, 1)));
//! // In a pod worker:
//! recorder.event(&ObjectRef::container(&pod, "app", false), EventType::Normal,
//!                reasons::PULLING_IMAGE, &messages::pulling(image));
//! ```
//!
//! Unit tests of code that records use [`MemoryRecorder`].

pub mod correlator;
pub mod messages;
pub mod reasons;
pub mod recorder;

pub use correlator::{Correlated, Correlator, CorrelatorOptions, EventRecord};
pub use recorder::{EventCounters, EventRecorder, RecorderOptions, DEFAULT_BURST, DEFAULT_QPS};

use k8s_openapi::api::core::v1::Pod;
use std::cell::RefCell;

/// `Event.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object an event is about (core v1 `ObjectReference` fields; empty
/// strings stand for unset ones, as in Go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: String,
    pub api_version: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: Option<String>,
    pub field_path: Option<String>,
}

impl ObjectRef {
    /// The pod itself (client-go `reference.GetReference`: kind `Pod`,
    /// apiVersion `v1`, namespace, name, uid and resourceVersion).
    pub fn pod(pod: &Pod) -> ObjectRef {
        let m = &pod.metadata;
        ObjectRef {
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespace: m.namespace.clone().filter(|s| !s.is_empty()),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            resource_version: m.resource_version.clone().filter(|s| !s.is_empty()),
            field_path: None,
        }
    }

    /// A container of the pod (the kubelet's `GenerateContainerRef`): the
    /// pod's reference with fieldPath `spec.containers{name}` or
    /// `spec.initContainers{name}`.
    pub fn container(pod: &Pod, container_name: &str, init: bool) -> ObjectRef {
        let list = if init {
            "spec.initContainers"
        } else {
            "spec.containers"
        };
        ObjectRef {
            field_path: Some(format!("{list}{{{container_name}}}")),
            ..ObjectRef::pod(pod)
        }
    }

    /// The node, as the kubelet's `nodeRef`: kind `Node`, no apiVersion,
    /// no namespace (its events go to `default`), and the node's *name* as
    /// uid (upstream's kubelet does not know its Node's uid when it starts;
    /// `kubectl describe node` looks events up by that name-uid too).
    /// `uid` overrides that.
    pub fn node(name: &str, uid: Option<&str>) -> ObjectRef {
        ObjectRef {
            kind: "Node".into(),
            api_version: String::new(),
            namespace: None,
            name: name.into(),
            uid: uid.unwrap_or(name).into(),
            resource_version: None,
            field_path: None,
        }
    }

    /// The namespace its events are created in: its own, else `default`.
    pub fn event_namespace(&self) -> &str {
        match self.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => "default",
        }
    }

    /// `pod ns/name`, `pod ns/name spec.containers{app}`, `node n1`: how
    /// log lines name the object.
    pub fn describe(&self) -> String {
        let mut s = self.kind.to_ascii_lowercase();
        s.push(' ');
        if let Some(ns) = self.namespace.as_deref().filter(|n| !n.is_empty()) {
            s += ns;
            s.push('/');
        }
        s += &self.name;
        if let Some(f) = self.field_path.as_deref().filter(|f| !f.is_empty()) {
            s.push(' ');
            s += f;
        }
        s
    }
}

/// What code that records events calls: cheap, never blocks, never fails.
pub trait Recorder {
    fn event(&self, obj: &ObjectRef, kind: EventType, reason: &str, message: &str);
}

/// Keeps events in memory: for unit tests of code that records events.
#[derive(Debug, Default)]
pub struct MemoryRecorder {
    pub events: RefCell<Vec<(ObjectRef, EventType, String, String)>>,
}

impl MemoryRecorder {
    pub fn new() -> MemoryRecorder {
        MemoryRecorder::default()
    }

    /// The reasons recorded so far, in order.
    pub fn reasons(&self) -> Vec<String> {
        self.events
            .borrow()
            .iter()
            .map(|(_, _, r, _)| r.clone())
            .collect()
    }

    /// `(type, reason, message)` of the events recorded so far.
    pub fn summaries(&self) -> Vec<(EventType, String, String)> {
        self.events
            .borrow()
            .iter()
            .map(|(_, t, r, m)| (*t, r.clone(), m.clone()))
            .collect()
    }

    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<(ObjectRef, EventType, String, String)> {
        std::mem::take(&mut *self.events.borrow_mut())
    }
}

impl Recorder for MemoryRecorder {
    fn event(&self, obj: &ObjectRef, kind: EventType, reason: &str, message: &str) {
        self.events
            .borrow_mut()
            .push((obj.clone(), kind, reason.into(), message.into()));
    }
}

/// Writes events to the log only (a node without an API server: the log
/// is where its events go).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogRecorder;

/// The log line of an event (the API recorder writes the same).
pub fn log_event(obj: &ObjectRef, kind: EventType, reason: &str, message: &str) {
    let what = obj.describe();
    match kind {
        EventType::Normal => log::info!("event: {what}: {kind} {reason}: {message}"),
        EventType::Warning => log::warn!("event: {what}: {kind} {reason}: {message}"),
    }
}

impl Recorder for LogRecorder {
    fn event(&self, obj: &ObjectRef, kind: EventType, reason: &str, message: &str) {
        log_event(obj, kind, reason, message);
    }
}

/// Drops every event (for code paths that must record but have nowhere
/// to).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopRecorder;

impl Recorder for NoopRecorder {
    fn event(&self, _: &ObjectRef, _: EventType, _: &str, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn references_follow_upstream() {
        let p = ObjectRef::pod(&pod());
        assert_eq!(
            p,
            ObjectRef {
                kind: "Pod".into(),
                api_version: "v1".into(),
                namespace: Some("shop".into()),
                name: "web".into(),
                uid: "u-1".into(),
                resource_version: Some("42".into()),
                field_path: None,
            }
        );
        assert_eq!(p.event_namespace(), "shop");
        assert_eq!(p.describe(), "pod shop/web");

        let c = ObjectRef::container(&pod(), "app", false);
        assert_eq!(c.field_path.as_deref(), Some("spec.containers{app}"));
        assert_eq!(c.describe(), "pod shop/web spec.containers{app}");
        let i = ObjectRef::container(&pod(), "setup", true);
        assert_eq!(i.field_path.as_deref(), Some("spec.initContainers{setup}"));
        assert_eq!(i.uid, "u-1");

        let n = ObjectRef::node("n1", None);
        assert_eq!((n.kind.as_str(), n.uid.as_str()), ("Node", "n1"));
        assert_eq!(n.api_version, "");
        assert_eq!(n.namespace, None);
        assert_eq!(n.event_namespace(), "default");
        assert_eq!(n.describe(), "node n1");
        assert_eq!(ObjectRef::node("n1", Some("abc")).uid, "abc");
    }

    #[test]
    fn memory_recorder_keeps_events() {
        let r = MemoryRecorder::new();
        let p = ObjectRef::pod(&pod());
        r.event(&p, EventType::Warning, "BackOff", "m1");
        r.event(&p, EventType::Normal, "Pulled", "m2");
        assert_eq!(r.reasons(), ["BackOff", "Pulled"]);
        assert_eq!(
            r.summaries()[0],
            (EventType::Warning, "BackOff".into(), "m1".into())
        );
        assert_eq!(r.take().len(), 2);
        assert!(r.events.borrow().is_empty());
        NoopRecorder.event(&p, EventType::Normal, "x", "y");
    }
}
