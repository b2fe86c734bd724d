//! The kubelet's event recorder: logs every event, queues it (bounded,
//! never blocking the caller), and one task sends the queue to the API
//! server through the [`Correlator`], as client-go's broadcaster +
//! `StartRecordingToSink` + `recordToSink` do for upstream's kubelet:
//!
//! - queue of 1000 events (`maxQueuedEvents`); a full queue drops the new
//!   event (`DropIfChannelFull`);
//! - client-side rate limit of its own (`eventRecordQPS` 50 /
//!   `eventBurst` 100 in the kubelet's config);
//! - each event tried up to 12 times (`maxTriesPerEvent`), 10 s apart
//!   (`defaultSleepDuration`; the first wait randomized) while the server
//!   cannot be reached or answers 429/5xx; a server that rejects the event
//!   otherwise is not asked again (an `AlreadyExists` quietly); a patch of
//!   an Event that is gone (404) creates it anew;
//! - failures are logged when they start and when they end, not per event.
//!
//! Upstream gives the recorder a client of its own; here the caller may
//! pass a [`Client`] that shares the agent's connection but not its rate
//! limit (`Client::new(transport.clone(), 0.0, 1)`): the recorder applies
//! its own.

use super::correlator::{Correlated, Correlator, CorrelatorOptions, EventRecord};
use super::{EventType, ObjectRef, Recorder};
use crate::kube::error::{Error, Result};
use crate::kube::ratelimit::TokenBucket;
use crate::kube::{Client, Patch};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use serde_json::Value;
use smol::channel::{Receiver, Sender, TrySendError};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// `maxQueuedEvents`.
pub const MAX_QUEUED_EVENTS: usize = 1000;
/// `maxTriesPerEvent`.
pub const MAX_TRIES_PER_EVENT: u32 = 12;
/// `defaultSleepDuration`.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// The kubelet's `eventRecordQPS` / `eventBurst` defaults.
pub const DEFAULT_QPS: f64 = 50.0;
pub const DEFAULT_BURST: u32 = 100;
/// `source.component` and `reportingComponent` of the kubelet's events.
pub const COMPONENT: &str = "kubelet";

/// The recorder's knobs; defaults are upstream's.
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderOptions {
    /// Event writes per second (`eventRecordQPS`; <= 0: no limit).
    pub qps: f64,
    /// `eventBurst`.
    pub burst: u32,
    pub queue_len: usize,
    pub max_tries: u32,
    pub retry_interval: Duration,
    pub correlator: CorrelatorOptions,
    pub component: String,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
            queue_len: MAX_QUEUED_EVENTS,
            max_tries: MAX_TRIES_PER_EVENT,
            retry_interval: RETRY_INTERVAL,
            correlator: CorrelatorOptions::default(),
            component: COMPONENT.into(),
        }
    }
}

/// What became of the events recorded so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounters {
    /// Every call of [`Recorder::event`].
    pub recorded: u64,
    /// Events created on the API server.
    pub created: u64,
    /// Events that updated an Event already there (PATCH of its count).
    pub patched: u64,
    /// Skipped by the spam filter.
    pub spam_filtered: u64,
    /// Dropped because the queue was full.
    pub queue_full: u64,
    /// Given up: rejected by the server, or still failing after
    /// [`RecorderOptions::max_tries`] (an `AlreadyExists` is not counted).
    pub failed: u64,
}

struct Shared {
    counters: Cell<EventCounters>,
    busy: Cell<bool>,
    client: RefCell<Option<Rc<Client>>>,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut EventCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }
}

/// The kubelet's recorder (see the module's documentation).
pub struct EventRecorder {
    node_name: String,
    opts: RecorderOptions,
    tx: Sender<EventRecord>,
    rx: RefCell<Option<Receiver<EventRecord>>>,
    shared: Rc<Shared>,
    overflowing: Cell<bool>,
    task: RefCell<Option<smol::Task<()>>>,
}

impl EventRecorder {
    /// A recorder for node `node_name` (the events' `source.host` and
    /// `reportingInstance`), sending at most `qps` events per second with
    /// bursts of `burst` once attached.
    pub fn new(node_name: &str, qps: f64, burst: u32) -> Rc<EventRecorder> {
        EventRecorder::with_options(
            node_name,
            RecorderOptions {
                qps,
                burst,
                ..Default::default()
            },
        )
    }

    pub fn with_options(node_name: &str, opts: RecorderOptions) -> Rc<EventRecorder> {
        let (tx, rx) = smol::channel::bounded(opts.queue_len.max(1));
        Rc::new(EventRecorder {
            node_name: node_name.into(),
            opts,
            tx,
            rx: RefCell::new(Some(rx)),
            shared: Rc::new(Shared {
                counters: Cell::new(EventCounters::default()),
                busy: Cell::new(false),
                client: RefCell::new(None),
            }),
            overflowing: Cell::new(false),
            task: RefCell::new(None),
        })
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Starts sending to the API server through `client` (events recorded
    /// before are kept, up to the queue's bound, and sent now). Attaching
    /// again replaces the client. The sending task lives on this thread's
    /// executor ([`crate::rt::spawn`]) until the recorder is dropped.
    pub fn attach(self: &Rc<Self>, client: Rc<Client>) {
        *self.shared.client.borrow_mut() = Some(client);
        self.start(ClientSink(self.shared.clone()));
    }

    fn start<S: Sink + 'static>(&self, sink: S) {
        if self.task.borrow().is_some() {
            return;
        }
        let Some(rx) = self.rx.borrow_mut().take() else {
            return;
        };
        let writer = Writer {
            correlator: Correlator::new(self.opts.correlator.clone()),
            limiter: TokenBucket::new(self.opts.qps, self.opts.burst, Instant::now()),
            log: WriteLog::default(),
            shared: self.shared.clone(),
            max_tries: self.opts.max_tries.max(1),
            retry_interval: self.opts.retry_interval,
        };
        *self.task.borrow_mut() = Some(crate::rt::spawn(writer.run(sink, rx)));
    }

    pub fn is_attached(&self) -> bool {
        self.task.borrow().is_some()
    }

    /// For tests and benchmarks: what became of the events so far.
    pub fn counters(&self) -> EventCounters {
        self.shared.counters.get()
    }

    /// Events queued or being written.
    pub fn pending(&self) -> usize {
        self.tx.len() + usize::from(self.shared.busy.get())
    }

    /// Waits until every queued event was written (or given up), for at
    /// most `within`; false when some are still pending (or the recorder
    /// is not attached and holds some).
    pub async fn drain(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while self.pending() > 0 {
            if Instant::now() >= end {
                return false;
            }
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Recorder for EventRecorder {
    fn event(&self, obj: &ObjectRef, kind: EventType, reason: &str, message: &str) {
        super::log_event(obj, kind, reason, message);
        let what = obj.describe();
        self.shared.count(|c| c.recorded += 1);
        let rec = EventRecord::new(
            obj,
            kind,
            reason,
            message,
            &self.opts.component,
            &self.node_name,
            Timestamp::now(),
        );
        match self.tx.try_send(rec) {
            Ok(()) => self.overflowing.set(false),
            Err(TrySendError::Full(_)) => {
                self.shared.count(|c| c.queue_full += 1);
                // Say it once per overflow while sending; before a client
                // is attached (a standalone node) a full queue is expected.
                if !self.overflowing.replace(true) && self.is_attached() {
                    log::warn!(
                        "events: {} events wait to be sent; dropping new ones until some are",
                        self.opts.queue_len
                    );
                } else {
                    log::debug!("events: queue full, event {reason} about {what} dropped");
                }
            }
            Err(TrySendError::Closed(_)) => {
                log::debug!("events: recorder closed, event {reason} about {what} dropped");
            }
        }
    }
}

/// Where events are written: the API server, or a fake in unit tests.
pub(crate) trait Sink {
    async fn create(&self, ns: &str, ev: &Event) -> Result<Event>;
    async fn patch(&self, ns: &str, name: &str, patch: &Value) -> Result<Event>;
}

impl<T: Sink> Sink for Rc<T> {
    async fn create(&self, ns: &str, ev: &Event) -> Result<Event> {
        (**self).create(ns, ev).await
    }
    async fn patch(&self, ns: &str, name: &str, patch: &Value) -> Result<Event> {
        (**self).patch(ns, name, patch).await
    }
}

/// The attached client (read per request: attaching again switches).
struct ClientSink(Rc<Shared>);

impl ClientSink {
    fn client(&self) -> Result<Rc<Client>> {
        self.0
            .client
            .borrow()
            .clone()
            .ok_or_else(|| Error::Transport("no API client attached".into()))
    }
}

impl Sink for ClientSink {
    async fn create(&self, ns: &str, ev: &Event) -> Result<Event> {
        self.client()?.create(Some(ns), ev).await
    }
    async fn patch(&self, ns: &str, name: &str, patch: &Value) -> Result<Event> {
        self.client()?
            .patch(Some(ns), name, None, &Patch::Strategic(patch.clone()))
            .await
    }
}

/// Logs write failures when they start and end, not once per event.
#[derive(Debug, Default)]
pub(crate) struct WriteLog {
    failing: Option<String>,
}

impl WriteLog {
    /// A failed write of class `class`: true when this is news.
    pub(crate) fn failed(&mut self, class: &str) -> bool {
        if self.failing.as_deref() == Some(class) {
            return false;
        }
        self.failing = Some(class.into());
        true
    }

    /// A write went through: the failure it ends, if any.
    pub(crate) fn succeeded(&mut self) -> Option<String> {
        self.failing.take()
    }
}

/// The kind of a failure, for [`WriteLog`].
fn error_class(e: &Error) -> String {
    match e {
        Error::Api(s) => format!("{} {}", s.code, s.reason),
        Error::Transport(_) => "unreachable".into(),
        Error::Decode { .. } => "undecodable answer".into(),
        Error::Invalid(_) => "invalid event".into(),
    }
}

/// What to do after a failed write (`recordEvent`'s error switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server could not be asked, or asks to come back: try again.
    Retry,
    /// The server will not take this event: drop it (quietly: it exists
    /// already, or its namespace is going away).
    Drop { quiet: bool },
}

pub(crate) fn classify(e: &Error) -> Failure {
    match e {
        // client-go's REST client retries 429 and 5xx answers itself;
        // picolet's client does not, so they are retried here.
        e if e.is_retryable() => Failure::Retry,
        e if e.is_already_exists() => Failure::Drop { quiet: true },
        Error::Api(s) if s.code == 403 && s.message.contains("because it is being terminated") => {
            Failure::Drop { quiet: true }
        }
        _ => Failure::Drop { quiet: false },
    }
}

enum Outcome {
    Done,
    Retry,
}

struct Writer {
    correlator: Correlator,
    limiter: TokenBucket,
    log: WriteLog,
    shared: Rc<Shared>,
    max_tries: u32,
    retry_interval: Duration,
}

impl Writer {
    async fn run<S: Sink>(mut self, sink: S, rx: Receiver<EventRecord>) {
        while let Ok(ev) = rx.recv().await {
            self.shared.busy.set(true);
            self.record_to_sink(&sink, ev).await;
            self.shared.busy.set(false);
        }
    }

    async fn throttle(&mut self) {
        let wait = self.limiter.reserve(Instant::now());
        if !wait.is_zero() {
            async_io::Timer::after(wait).await;
        }
    }

    /// `recordToSink`.
    async fn record_to_sink<S: Sink>(&mut self, sink: &S, ev: EventRecord) {
        let Some(mut c) = self.correlator.correlate(ev, Timestamp::now()) else {
            self.shared.count(|c| c.spam_filtered += 1);
            return;
        };
        let mut tries = 0;
        loop {
            if let Outcome::Done = self.record_event(sink, &mut c).await {
                return;
            }
            tries += 1;
            if tries >= self.max_tries {
                log::warn!(
                    "events: gave up on event {}/{} ({} {}) after {tries} tries",
                    c.event.namespace,
                    c.event.name,
                    c.event.type_,
                    c.event.reason
                );
                self.shared.count(|c| c.failed += 1);
                return;
            }
            // The first wait is randomized, so that clients do not all
            // come back together.
            let mut delay = self.retry_interval;
            if tries == 1 {
                delay = delay.mul_f64(crate::util::random_fraction());
            }
            async_io::Timer::after(delay).await;
        }
    }

    /// `recordEvent`: one try.
    async fn record_event<S: Sink>(&mut self, sink: &S, c: &mut Correlated) -> Outcome {
        let mut result = None;
        if let Some(p) = &c.patch {
            self.throttle().await;
            let r = sink.patch(&c.event.namespace, &c.event.name, p).await;
            // The Event may have been deleted (or expired): create it anew.
            if !matches!(&r, Err(e) if e.is_not_found()) {
                result = Some((r, true));
            }
        }
        let (result, patched) = match result {
            Some(r) => r,
            None => {
                c.event.resource_version = None;
                self.throttle().await;
                (
                    sink.create(&c.event.namespace, &c.event.to_event()).await,
                    false,
                )
            }
        };
        let e = &c.event;
        let what = format!("{}/{} ({} {})", e.namespace, e.name, e.type_, e.reason);
        match result {
            Ok(answer) => {
                let m = &answer.metadata;
                self.correlator.update_state(
                    e,
                    m.name.as_deref().unwrap_or(&e.name),
                    answer.count.unwrap_or(e.count),
                    answer.first_timestamp.map_or(e.first_timestamp, |t| t.0),
                    m.resource_version.clone(),
                );
                self.written(patched);
                log::debug!(
                    "events: {} {what}",
                    if patched { "patched" } else { "created" }
                );
                Outcome::Done
            }
            // Written, but the answer did not decode: trying again would
            // write it twice. Remember what was sent.
            Err(err @ Error::Decode { .. }) => {
                self.correlator
                    .update_state(e, &e.name, e.count, e.first_timestamp, None);
                self.written(patched);
                log::debug!("events: wrote {what}, answer unreadable: {err}");
                Outcome::Done
            }
            Err(err) => {
                let failure = classify(&err);
                let news = self.log.failed(&error_class(&err));
                match failure {
                    Failure::Retry if news => log::warn!(
                        "events: cannot write events to the API server ({err}); \
                         each is tried {} times, {}s apart",
                        self.max_tries,
                        self.retry_interval.as_secs()
                    ),
                    Failure::Drop { quiet: false } if news => log::warn!(
                        "events: the API server rejected event {what}: {err}; not retried \
                         (further rejections are logged at debug level)"
                    ),
                    _ => log::debug!("events: writing {what}: {err}"),
                }
                match failure {
                    Failure::Retry => Outcome::Retry,
                    Failure::Drop { quiet } => {
                        if !quiet {
                            self.shared.count(|c| c.failed += 1);
                        }
                        Outcome::Done
                    }
                }
            }
        }
    }

    fn written(&mut self, patched: bool) {
        if let Some(was) = self.log.succeeded() {
            log::info!("events: writing to the API server again (it failed with {was})");
        }
        self.shared.count(|c| {
            if patched {
                c.patched += 1
            } else {
                c.created += 1
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::ApiStatus;
    use std::collections::VecDeque;

    /// Answers from a script; records every call.
    #[derive(Default)]
    struct FakeSink {
        /// `None`: echo the request as the server would.
        script: RefCell<VecDeque<Option<Error>>>,
        calls: RefCell<Vec<String>>,
        rv: Cell<u64>,
    }

    impl FakeSink {
        fn answer(&self) -> Option<Error> {
            self.script.borrow_mut().pop_front().flatten()
        }
        fn echo(&self, mut ev: Event) -> Event {
            self.rv.set(self.rv.get() + 1);
            ev.metadata.resource_version = Some(self.rv.get().to_string());
            ev
        }
    }

    impl Sink for FakeSink {
        async fn create(&self, ns: &str, ev: &Event) -> Result<Event> {
            self.calls.borrow_mut().push(format!(
                "create {ns}/{} count={} rv={:?}",
                ev.metadata.name.as_deref().unwrap_or(""),
                ev.count.unwrap_or(0),
                ev.metadata.resource_version
            ));
            match self.answer() {
                Some(e) => Err(e),
                None => Ok(self.echo(ev.clone())),
            }
        }
        async fn patch(&self, ns: &str, name: &str, patch: &Value) -> Result<Event> {
            self.calls
                .borrow_mut()
                .push(format!("patch {ns}/{name} count={}", patch["count"]));
            match self.answer() {
                Some(e) => Err(e),
                None => Ok(self.echo(Event {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(name.into()),
                        ..Default::default()
                    },
                    count: patch["count"].as_i64().map(|c| c as i32),
                    ..Default::default()
                })),
            }
        }
    }

    fn api(code: u16, reason: &str, message: &str) -> Error {
        Error::Api(ApiStatus {
            code,
            reason: reason.into(),
            message: message.into(),
            retry_after: None,
        })
    }

    fn recorder(queue_len: usize) -> Rc<EventRecorder> {
        EventRecorder::with_options(
            "n1",
            RecorderOptions {
                queue_len,
                retry_interval: Duration::from_millis(1),
                qps: 0.0,
                ..Default::default()
            },
        )
    }

    fn obj() -> ObjectRef {
        ObjectRef {
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespace: Some("ns".into()),
            name: "web".into(),
            uid: "u1".into(),
            resource_version: None,
            field_path: None,
        }
    }

    /// Records `events` (reason, message) through a fake sink answering
    /// `script`; returns the sink's calls and the counters.
    fn run(script: Vec<Option<Error>>, events: &[(&str, &str)]) -> (Vec<String>, EventCounters) {
        let r = recorder(100);
        let sink = Rc::new(FakeSink::default());
        *sink.script.borrow_mut() = script.into();
        for (reason, msg) in events {
            r.event(&obj(), EventType::Warning, reason, msg);
        }
        r.start(sink.clone());
        assert!(crate::rt::block_on(r.drain(Duration::from_secs(10))));
        let calls = sink.calls.borrow().clone();
        (calls, r.counters())
    }

    #[test]
    fn the_queue_is_bounded() {
        let r = recorder(3);
        for i in 0..5 {
            r.event(&obj(), EventType::Normal, "R", &format!("m{i}"));
        }
        let c = r.counters();
        assert_eq!((c.recorded, c.queue_full), (5, 2));
        assert_eq!(r.pending(), 3);
        assert!(!r.is_attached());
        // Kept until attached, then sent.
        let sink = Rc::new(FakeSink::default());
        r.start(sink.clone());
        assert!(crate::rt::block_on(r.drain(Duration::from_secs(10))));
        assert_eq!(r.counters().created, 3);
        assert_eq!(sink.calls.borrow().len(), 3);
    }

    #[test]
    fn identical_events_are_created_then_patched() {
        let (calls, c) = run(
            vec![],
            &[("BackOff", "m"), ("BackOff", "m"), ("BackOff", "m")],
        );
        assert_eq!(calls.len(), 3);
        assert!(calls[0].starts_with("create ns/web.") && calls[0].ends_with("count=1 rv=None"));
        let name = calls[0]["create ns/".len()..].split(' ').next().unwrap();
        assert_eq!(calls[1], format!("patch ns/{name} count=2"));
        assert_eq!(calls[2], format!("patch ns/{name} count=3"));
        assert_eq!((c.created, c.patched, c.failed), (1, 2, 0));
    }

    #[test]
    fn a_patch_of_a_deleted_event_creates_it_anew() {
        let (calls, c) = run(
            vec![None, Some(api(404, "NotFound", "events \"x\" not found"))],
            &[("BackOff", "m"), ("BackOff", "m")],
        );
        assert_eq!(calls.len(), 3, "{calls:?}");
        let name = calls[0]["create ns/".len()..].split(' ').next().unwrap();
        assert_eq!(calls[1], format!("patch ns/{name} count=2"));
        // Same name, the count so far, no resourceVersion.
        assert_eq!(calls[2], format!("create ns/{name} count=2 rv=None"));
        assert_eq!((c.created, c.patched), (2, 0));
    }

    #[test]
    fn already_exists_is_dropped_quietly_and_rejections_are_not_retried() {
        let (calls, c) = run(
            vec![
                Some(api(409, "AlreadyExists", "exists")),
                Some(api(403, "Forbidden", "no")),
                Some(api(
                    403,
                    "Forbidden",
                    "unable to create new content in namespace ns because it is being terminated",
                )),
                Some(api(422, "Invalid", "bad")),
            ],
            &[("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")],
        );
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert_eq!((c.created, c.failed), (0, 2));
    }

    #[test]
    fn unreachable_servers_and_5xx_are_retried_up_to_the_limit() {
        let down = || Some(Error::Transport("connection refused".into()));
        let (calls, c) = run(
            vec![
                down(),
                Some(api(503, "ServiceUnavailable", "")),
                Some(api(429, "TooManyRequests", "")),
            ],
            &[("A", "1")],
        );
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert_eq!((c.created, c.failed), (1, 0));

        let (calls, c) = run((0..24).map(|_| down()).collect(), &[("A", "1"), ("B", "2")]);
        assert_eq!(calls.len(), 2 * MAX_TRIES_PER_EVENT as usize);
        assert_eq!((c.created, c.failed), (0, 2));
    }

    #[test]
    fn the_spam_filter_drops_events_before_the_server() {
        let events: Vec<(String, String)> = (0..30)
            .map(|i| ("Unhealthy".to_string(), format!("m{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = events
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let (calls, c) = run(vec![], &refs);
        assert_eq!(calls.len(), 25);
        assert_eq!((c.created, c.patched, c.spam_filtered), (10, 15, 5));
    }

    #[test]
    fn failures_are_logged_when_they_start_and_end() {
        let mut l = WriteLog::default();
        assert!(l.failed("unreachable"));
        assert!(!l.failed("unreachable"));
        assert!(l.failed("403 Forbidden"));
        assert_eq!(l.succeeded().as_deref(), Some("403 Forbidden"));
        assert_eq!(l.succeeded(), None);
        assert!(l.failed("unreachable"));
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&Error::Transport("x".into())), Failure::Retry);
        assert_eq!(classify(&api(500, "InternalError", "")), Failure::Retry);
        assert_eq!(
            classify(&api(409, "AlreadyExists", "")),
            Failure::Drop { quiet: true }
        );
        assert_eq!(
            classify(&api(409, "Conflict", "")),
            Failure::Drop { quiet: false }
        );
        assert_eq!(
            classify(&api(404, "NotFound", "")),
            Failure::Drop { quiet: false }
        );
        assert_eq!(
            classify(&Error::Invalid("x".into())),
            Failure::Drop { quiet: false }
        );
    }
}
