//! client-go's `EventCorrelator` (tools/record/events_cache.go) with its
//! defaults, as a pure state machine driven by the caller's clock:
//!
//! 1. the **aggregator** groups events that differ only in message (same
//!    source, object, type, reason, reporting controller and instance):
//!    once 10 different messages were seen within 10 minutes of each
//!    other, the event is replaced by one aggregate Event whose message is
//!    `(combined from similar events): <latest message>`;
//! 2. the **logger** remembers every event it let through (LRU, 4096
//!    keys): an identical one seen again becomes a strategic-merge PATCH
//!    of the first Event's `count`, `lastTimestamp` and `message`;
//! 3. the **spam filter** allows a burst of 25 events per source + object,
//!    refilled by one every 5 minutes; events over that are skipped (after
//!    the logger counted them, as upstream: the next patch's count includes
//!    them).
//!
//! Caches are bounded LRUs keyed by a 128-bit digest of upstream's key
//! strings, so a long message costs no memory in a key.

use super::{EventType, ObjectRef};
use jiff::Timestamp;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Entries in each LRU cache (`maxLruCacheEntries`).
pub const MAX_LRU_CACHE_ENTRIES: usize = 4096;
/// Similar events seen before aggregation (`defaultAggregateMaxEvents`).
pub const AGGREGATE_MAX_EVENTS: usize = 10;
/// Window of the aggregation (`defaultAggregateIntervalInSeconds`).
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);
/// Events a source may send about one object at once (`defaultSpamBurst`).
pub const SPAM_BURST: u32 = 25;
/// One more event per object every this long (`defaultSpamQPS` = 1/300).
pub const SPAM_REFILL_PERIOD: Duration = Duration::from_secs(300);
/// `EventAggregatorByReasonMessageFunc`'s prefix.
pub const AGGREGATE_PREFIX: &str = "(combined from similar events): ";

/// One event as the recorder builds it and the correlator passes it on:
/// the fields of a core/v1 Event that picolet sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub name: String,
    pub namespace: String,
    pub involved: ObjectRef,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    /// `source.component` / `source.host`.
    pub source_component: String,
    pub source_host: String,
    /// `reportingComponent` / `reportingInstance` (empty: not set, as on
    /// upstream's aggregate events).
    pub reporting_controller: String,
    pub reporting_instance: String,
    pub first_timestamp: Timestamp,
    pub last_timestamp: Timestamp,
    pub count: i32,
    pub resource_version: Option<String>,
}

impl EventRecord {
    /// A new event (client-go `makeEvent` + `generateEvent`): named
    /// [`event_name`], in the object's namespace (or `default`), count 1,
    /// first = last timestamp = `now`, reported by `component` on `host`.
    pub fn new(
        obj: &ObjectRef,
        type_: EventType,
        reason: &str,
        message: &str,
        component: &str,
        host: &str,
        now: Timestamp,
    ) -> EventRecord {
        EventRecord {
            name: event_name(&obj.name, now),
            namespace: obj.event_namespace().to_string(),
            involved: obj.clone(),
            type_,
            reason: reason.into(),
            message: message.into(),
            source_component: component.into(),
            source_host: host.into(),
            reporting_controller: component.into(),
            reporting_instance: host.into(),
            first_timestamp: now,
            last_timestamp: now,
            count: 1,
            resource_version: None,
        }
    }

    /// The core/v1 Event to create.
    pub fn to_event(&self) -> k8s_openapi::api::core::v1::Event {
        use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let o = &self.involved;
        Event {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: self.resource_version.clone(),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: some(&o.kind),
                api_version: some(&o.api_version),
                namespace: o.namespace.clone().filter(|s| !s.is_empty()),
                name: some(&o.name),
                uid: some(&o.uid),
                resource_version: o.resource_version.clone().filter(|s| !s.is_empty()),
                field_path: o.field_path.clone().filter(|s| !s.is_empty()),
            },
            reason: some(&self.reason),
            message: some(&self.message),
            source: Some(EventSource {
                component: some(&self.source_component),
                host: some(&self.source_host),
            }),
            first_timestamp: Some(Time(self.first_timestamp)),
            last_timestamp: Some(Time(self.last_timestamp)),
            count: Some(self.count),
            type_: Some(self.type_.as_str().to_string()),
            reporting_component: some(&self.reporting_controller),
            reporting_instance: some(&self.reporting_instance),
            ..Default::default()
        }
    }
}

/// `<object name>.<unix nanoseconds in hex>` (`fmt.Sprintf("%v.%x", ...)`).
pub fn event_name(object_name: &str, at: Timestamp) -> String {
    let ns = at.as_nanosecond();
    if ns < 0 {
        format!("{object_name}.-{:x}", ns.unsigned_abs())
    } else {
        format!("{object_name}.{ns:x}")
    }
}

/// `getEventKey`: everything that makes two events identical.
pub fn event_key(e: &EventRecord) -> String {
    let o = &e.involved;
    [
        e.source_component.as_str(),
        &e.source_host,
        &o.kind,
        o.namespace.as_deref().unwrap_or(""),
        &o.name,
        o.field_path.as_deref().unwrap_or(""),
        &o.uid,
        &o.api_version,
        e.type_.as_str(),
        &e.reason,
        &e.message,
    ]
    .concat()
}

/// `getSpamKey`: the source and the object (no field path: a pod's
/// containers share their pod's budget).
pub fn spam_key(e: &EventRecord) -> String {
    let o = &e.involved;
    [
        e.source_component.as_str(),
        &e.source_host,
        &o.kind,
        o.namespace.as_deref().unwrap_or(""),
        &o.name,
        &o.uid,
        &o.api_version,
    ]
    .concat()
}

/// `EventAggregatorByReasonFunc`: (aggregate key, local key = message).
pub fn aggregate_keys(e: &EventRecord) -> (String, String) {
    let o = &e.involved;
    let agg = [
        e.source_component.as_str(),
        &e.source_host,
        &o.kind,
        o.namespace.as_deref().unwrap_or(""),
        &o.name,
        &o.uid,
        &o.api_version,
        e.type_.as_str(),
        &e.reason,
        &e.reporting_controller,
        &e.reporting_instance,
    ]
    .concat();
    (agg, e.message.clone())
}

/// `EventAggregatorByReasonMessageFunc`.
pub fn aggregate_message(message: &str) -> String {
    format!("{AGGREGATE_PREFIX}{message}")
}

/// A cache key: the first 128 bits of the SHA-256 of upstream's key.
pub type Digest = u128;

pub fn digest(key: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    u128::from_be_bytes(b)
}

/// A least-recently-used map of bounded size (groupcache's `lru.Cache`:
/// `get` and `add` make an entry the most recent; adding past the bound
/// evicts the least recent).
#[derive(Debug)]
pub struct Lru<V> {
    cap: usize,
    tick: u64,
    map: HashMap<Digest, (V, u64)>,
    order: BTreeMap<u64, Digest>,
}

impl<V> Lru<V> {
    pub fn new(cap: usize) -> Lru<V> {
        Lru {
            cap: cap.max(1),
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn touch(&mut self, k: Digest) -> u64 {
        self.tick += 1;
        if let Some((_, t)) = self.map.get_mut(&k) {
            self.order.remove(t);
            *t = self.tick;
        }
        self.order.insert(self.tick, k);
        self.tick
    }

    pub fn get(&mut self, k: Digest) -> Option<&mut V> {
        if !self.map.contains_key(&k) {
            return None;
        }
        self.touch(k);
        self.map.get_mut(&k).map(|(v, _)| v)
    }

    pub fn add(&mut self, k: Digest, v: V) {
        if let Some(e) = self.map.get_mut(&k) {
            e.0 = v;
            self.touch(k);
            return;
        }
        let t = self.touch(k);
        self.map.insert(k, (v, t));
        while self.map.len() > self.cap {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&old);
        }
    }

    pub fn contains(&self, k: Digest) -> bool {
        self.map.contains_key(&k)
    }
}

/// A token bucket in exact integer time: `burst` tokens, one more every
/// `period` (x/time/rate's limiter as client-go's spam filter uses it: full
/// at first, `TryAccept` takes a token when there is a whole one).
#[derive(Debug, Clone)]
struct Bucket {
    /// Tokens in nanoseconds of refill: one token = `period` nanoseconds.
    level: u128,
    last: Timestamp,
}

/// `EventSourceObjectSpamFilter`: a token bucket per source + object.
#[derive(Debug)]
pub struct SpamFilter {
    burst: u32,
    period: Duration,
    cache: Lru<Bucket>,
}

impl SpamFilter {
    pub fn new(cache_size: usize, burst: u32, period: Duration) -> SpamFilter {
        SpamFilter {
            burst: burst.max(1),
            period: period.max(Duration::from_nanos(1)),
            cache: Lru::new(cache_size),
        }
    }

    /// True when the event must be skipped.
    pub fn filter(&mut self, e: &EventRecord, now: Timestamp) -> bool {
        let period = self.period.as_nanos();
        let cap = u128::from(self.burst) * period;
        let k = digest(&spam_key(e));
        let mut b = match self.cache.get(k) {
            Some(b) => b.clone(),
            None => Bucket {
                level: cap,
                last: now,
            },
        };
        // A clock that went back refills nothing (x/time/rate).
        let elapsed = now.as_nanosecond().saturating_sub(b.last.as_nanosecond());
        let elapsed = u128::try_from(elapsed).unwrap_or(0);
        if now > b.last {
            b.last = now;
        }
        b.level = b.level.saturating_add(elapsed).min(cap);
        let skip = if b.level >= period {
            b.level -= period;
            false
        } else {
            true
        };
        self.cache.add(k, b);
        skip
    }
}

#[derive(Debug)]
struct AggregateRecord {
    /// Digests of the messages seen (at most max-1 kept between events).
    local_keys: BTreeSet<Digest>,
    last_timestamp: Timestamp,
}

/// `EventAggregator` with `EventAggregatorByReasonFunc`.
#[derive(Debug)]
pub struct Aggregator {
    max_events: usize,
    max_interval: Duration,
    cache: Lru<AggregateRecord>,
}

impl Aggregator {
    pub fn new(cache_size: usize, max_events: usize, max_interval: Duration) -> Aggregator {
        Aggregator {
            max_events: max_events.max(1),
            max_interval,
            cache: Lru::new(cache_size),
        }
    }

    /// `EventAggregate`: the event to go on with (itself, or a new
    /// aggregate event) and its logger key.
    pub fn aggregate(&mut self, e: EventRecord, now: Timestamp) -> (EventRecord, String) {
        let event_key = event_key(&e);
        let (agg_key, local_key) = aggregate_keys(&e);
        let k = digest(&agg_key);
        let fresh = match self.cache.get(k) {
            // A record not seen for longer than the interval starts over.
            Some(r) => {
                let since = now.duration_since(r.last_timestamp);
                since.is_positive() && since.unsigned_abs() > self.max_interval
            }
            None => true,
        };
        if fresh {
            self.cache.add(
                k,
                AggregateRecord {
                    local_keys: BTreeSet::new(),
                    last_timestamp: now,
                },
            );
        }
        let Some(r) = self.cache.get(k) else {
            return (e, event_key);
        };
        r.local_keys.insert(digest(&local_key));
        r.last_timestamp = now;
        if r.local_keys.len() < self.max_events {
            return (e, event_key);
        }
        // Do not grow the set past the bound (upstream pops an arbitrary
        // key; the smallest digest is as arbitrary and reproducible).
        r.local_keys.pop_first();
        let agg = EventRecord {
            name: event_name(&e.involved.name, now),
            namespace: e.namespace.clone(),
            message: aggregate_message(&e.message),
            first_timestamp: now,
            last_timestamp: now,
            count: 1,
            resource_version: None,
            // Upstream's aggregate copy sets no reporting fields.
            reporting_controller: String::new(),
            reporting_instance: String::new(),
            ..e
        };
        (agg, agg_key)
    }
}

/// `eventLog`: what the logger remembers of an Event it sent.
#[derive(Debug, Clone)]
struct EventLog {
    count: i32,
    first_timestamp: Timestamp,
    name: String,
    resource_version: Option<String>,
}

/// The result of correlating one event: the event to write and, when it
/// repeats one sent before, the strategic-merge patch to send instead of
/// creating it (`EventCorrelateResult`).
#[derive(Debug, Clone, PartialEq)]
pub struct Correlated {
    pub event: EventRecord,
    pub patch: Option<Value>,
}

/// Knobs of the correlator (`CorrelatorOptions`); defaults are upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelatorOptions {
    pub lru_cache_size: usize,
    pub burst: u32,
    pub refill_period: Duration,
    pub max_events: usize,
    pub max_interval: Duration,
}

impl Default for CorrelatorOptions {
    fn default() -> Self {
        CorrelatorOptions {
            lru_cache_size: MAX_LRU_CACHE_ENTRIES,
            burst: SPAM_BURST,
            refill_period: SPAM_REFILL_PERIOD,
            max_events: AGGREGATE_MAX_EVENTS,
            max_interval: AGGREGATE_INTERVAL,
        }
    }
}

/// `EventCorrelator`.
#[derive(Debug)]
pub struct Correlator {
    spam: SpamFilter,
    aggregator: Aggregator,
    logger: Lru<EventLog>,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new(CorrelatorOptions::default())
    }
}

impl Correlator {
    pub fn new(o: CorrelatorOptions) -> Correlator {
        Correlator {
            spam: SpamFilter::new(o.lru_cache_size, o.burst, o.refill_period),
            aggregator: Aggregator::new(o.lru_cache_size, o.max_events, o.max_interval),
            logger: Lru::new(o.lru_cache_size),
        }
    }

    /// `EventCorrelate`: aggregate, observe, filter. `None`: skip the
    /// event (the spam filter said so).
    pub fn correlate(&mut self, e: EventRecord, now: Timestamp) -> Option<Correlated> {
        let (e, key) = self.aggregator.aggregate(e, now);
        let (e, patch) = self.observe(e, &key);
        if self.spam.filter(&e, now) {
            return None;
        }
        Some(Correlated { event: e, patch })
    }

    /// `eventObserve`: an event seen before takes the first one's name,
    /// resourceVersion and firstTimestamp and the next count, and becomes
    /// a patch of count, lastTimestamp and message.
    fn observe(&mut self, mut e: EventRecord, key: &str) -> (EventRecord, Option<Value>) {
        let k = digest(key);
        let mut patch = None;
        if let Some(last) = self.logger.get(k).filter(|l| l.count > 0) {
            e.name = last.name.clone();
            e.resource_version = last.resource_version.clone();
            e.first_timestamp = last.first_timestamp;
            e.count = last.count.saturating_add(1);
            patch = Some(count_patch(&e));
        }
        self.logger.add(
            k,
            EventLog {
                count: e.count,
                first_timestamp: e.first_timestamp,
                name: e.name.clone(),
                resource_version: e.resource_version.clone(),
            },
        );
        (e, patch)
    }

    /// `UpdateState`: what the server answered for an event written.
    pub fn update_state(
        &mut self,
        e: &EventRecord,
        name: &str,
        count: i32,
        first_timestamp: Timestamp,
        resource_version: Option<String>,
    ) {
        self.logger.add(
            digest(&event_key(e)),
            EventLog {
                count,
                first_timestamp,
                name: name.into(),
                resource_version,
            },
        );
    }
}

/// The strategic-merge patch client-go computes between the event with
/// count 0, lastTimestamp at the epoch and no message, and the event:
/// `{"count", "lastTimestamp", "message"}` (message only when not empty).
pub fn count_patch(e: &EventRecord) -> Value {
    let mut p = json!({
        "count": e.count,
        "lastTimestamp": rfc3339_seconds(e.last_timestamp),
    });
    if !e.message.is_empty() {
        p["message"] = Value::String(e.message.clone());
    }
    p
}

/// `metav1.Time`'s JSON form: RFC 3339 in UTC, whole seconds.
pub fn rfc3339_seconds(t: Timestamp) -> String {
    // Same as k8s-openapi's Time serialization.
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        t0() + jiff::SignedDuration::from_secs(secs)
    }

    fn pod_ref(name: &str) -> ObjectRef {
        ObjectRef {
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespace: Some("ns".into()),
            name: name.into(),
            uid: format!("uid-{name}"),
            resource_version: Some("7".into()),
            field_path: Some("spec.containers{app}".into()),
        }
    }

    fn ev(obj: &ObjectRef, reason: &str, msg: &str, now: Timestamp) -> EventRecord {
        EventRecord::new(obj, EventType::Warning, reason, msg, "kubelet", "n1", now)
    }

    #[test]
    fn names_are_object_name_dot_hex_nanos() {
        let t = Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap();
        assert_eq!(event_name("web", t), "web.17979cfe3d85cd15");
        assert_eq!(
            format!("{:x}", 1_700_000_000_123_456_789i64),
            "17979cfe3d85cd15"
        );
        let e = ev(&pod_ref("web"), "BackOff", "m", t);
        assert_eq!(e.name, "web.17979cfe3d85cd15");
        assert_eq!(e.namespace, "ns");
        assert_eq!((e.count, e.first_timestamp, e.last_timestamp), (1, t, t));
        assert_eq!(
            (
                e.reporting_controller.as_str(),
                e.reporting_instance.as_str()
            ),
            ("kubelet", "n1")
        );
        let n = ev(&ObjectRef::node("n1", None), "Starting", "m", t);
        assert_eq!(n.namespace, "default");
    }

    #[test]
    fn keys_follow_upstream() {
        let e = ev(&pod_ref("web"), "BackOff", "msg", t0());
        assert_eq!(
            event_key(&e),
            "kubeletn1Podnswebspec.containers{app}uid-webv1WarningBackOffmsg"
        );
        assert_eq!(spam_key(&e), "kubeletn1Podnswebuid-webv1");
        assert_eq!(
            aggregate_keys(&e),
            (
                "kubeletn1Podnswebuid-webv1WarningBackOffkubeletn1".to_string(),
                "msg".to_string()
            )
        );
        assert_eq!(aggregate_message("x"), "(combined from similar events): x");
    }

    #[test]
    fn event_object_and_patch() {
        let t = Timestamp::from_nanosecond(1_700_000_000_900_000_000).unwrap();
        let e = ev(&pod_ref("web"), "BackOff", "msg", t);
        let v = serde_json::to_value(e.to_event()).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["metadata"]["namespace"], "ns");
        assert_eq!(v["involvedObject"]["fieldPath"], "spec.containers{app}");
        assert_eq!(v["involvedObject"]["resourceVersion"], "7");
        assert_eq!(v["source"], json!({"component": "kubelet", "host": "n1"}));
        assert_eq!(v["firstTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["count"], 1);
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["reportingComponent"], "kubelet");
        assert_eq!(v["reportingInstance"], "n1");
        assert!(v.get("eventTime").is_none());
        let n =
            serde_json::to_value(ev(&ObjectRef::node("n1", None), "R", "m", t).to_event()).unwrap();
        assert!(n["involvedObject"].get("namespace").is_none());
        assert!(n["involvedObject"].get("apiVersion").is_none());
        assert_eq!(n["involvedObject"]["uid"], "n1");

        let mut e2 = e.clone();
        e2.count = 3;
        assert_eq!(
            count_patch(&e2),
            json!({"count": 3, "lastTimestamp": "2023-11-14T22:13:20Z", "message": "msg"})
        );
    }

    #[test]
    fn identical_events_become_patches_of_the_first() {
        let mut c = Correlator::default();
        let obj = pod_ref("web");
        let first = c.correlate(ev(&obj, "BackOff", "m", at(0)), at(0)).unwrap();
        assert_eq!(first.patch, None);
        assert_eq!(first.event.count, 1);
        let second = c.correlate(ev(&obj, "BackOff", "m", at(5)), at(5)).unwrap();
        assert_eq!(second.event.name, first.event.name);
        assert_eq!(second.event.count, 2);
        assert_eq!(second.event.first_timestamp, at(0));
        assert_eq!(second.event.last_timestamp, at(5));
        assert_eq!(
            second.patch,
            Some(json!({"count": 2, "lastTimestamp": rfc3339_seconds(at(5)), "message": "m"}))
        );
        // What the server answered wins (its resourceVersion, its count).
        c.update_state(
            &second.event,
            &second.event.name,
            2,
            at(0),
            Some("99".into()),
        );
        let third = c.correlate(ev(&obj, "BackOff", "m", at(9)), at(9)).unwrap();
        assert_eq!(third.event.count, 3);
        assert_eq!(third.event.resource_version.as_deref(), Some("99"));
        // Another reason, another Event.
        let other = c.correlate(ev(&obj, "Killing", "m", at(9)), at(9)).unwrap();
        assert_eq!((other.event.count, other.patch), (1, None));
        assert_ne!(other.event.name, first.event.name);
        // Another container (fieldPath) is another Event too.
        let mut obj2 = obj.clone();
        obj2.field_path = Some("spec.containers{side}".into());
        let side = c
            .correlate(ev(&obj2, "BackOff", "m", at(9)), at(9))
            .unwrap();
        assert_eq!(side.event.count, 1);
    }

    #[test]
    fn ten_similar_events_are_aggregated() {
        let mut c = Correlator::default();
        let obj = pod_ref("web");
        let mut out = Vec::new();
        for i in 1..=12 {
            let now = at(i);
            out.push(
                c.correlate(
                    ev(&obj, "Unhealthy", &format!("probe failed {i}"), now),
                    now,
                )
                .unwrap(),
            );
        }
        // 1..9 go as they are.
        for (i, r) in out[..9].iter().enumerate() {
            assert_eq!(r.event.message, format!("probe failed {}", i + 1));
            assert_eq!((r.event.count, r.patch.is_none()), (1, true));
        }
        // The 10th is a new aggregate event, the 11th and 12th patch it.
        let agg = &out[9];
        assert_eq!(
            agg.event.message,
            "(combined from similar events): probe failed 10"
        );
        assert_eq!((agg.event.count, agg.patch.is_none()), (1, true));
        assert_eq!(agg.event.reason, "Unhealthy");
        assert_eq!(agg.event.reporting_controller, "");
        assert_eq!(agg.event.first_timestamp, at(10));
        for (n, r) in out[10..].iter().enumerate() {
            assert_eq!(r.event.name, agg.event.name);
            assert_eq!(r.event.count, 2 + n as i32);
            assert_eq!(
                r.patch.as_ref().unwrap()["message"],
                format!("(combined from similar events): probe failed {}", 11 + n)
            );
        }
        // Another reason is aggregated apart.
        let k = c
            .correlate(ev(&obj, "Killing", "x", at(13)), at(13))
            .unwrap();
        assert_eq!(k.event.message, "x");
    }

    #[test]
    fn aggregation_starts_over_after_the_interval() {
        let mut c = Correlator::default();
        let obj = pod_ref("web");
        for i in 0..9 {
            let now = at(i * 60);
            let r = c
                .correlate(ev(&obj, "Unhealthy", &format!("m{i}"), now), now)
                .unwrap();
            assert!(!r.event.message.starts_with(AGGREGATE_PREFIX));
        }
        // Exactly 10 minutes after the 9th: still within the window
        // (upstream starts over only when the interval is longer).
        let now = at(8 * 60 + 600);
        let r = c.correlate(ev(&obj, "Unhealthy", "m9", now), now).unwrap();
        assert!(r.event.message.starts_with(AGGREGATE_PREFIX));
        // More than 10 minutes of quiet: a fresh record, messages go as they are.
        let now = now + jiff::SignedDuration::from_secs(601);
        let r = c.correlate(ev(&obj, "Unhealthy", "m10", now), now).unwrap();
        assert_eq!(r.event.message, "m10");
        // The same with a bound of 2.
        let mut a = Aggregator::new(16, 2, AGGREGATE_INTERVAL);
        let (e, _) = a.aggregate(ev(&obj, "U", "a", at(0)), at(0));
        assert_eq!(e.message, "a");
        let (e, _) = a.aggregate(ev(&obj, "U", "b", at(600)), at(600));
        assert!(e.message.starts_with(AGGREGATE_PREFIX));
    }

    #[test]
    fn spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let mut f = SpamFilter::new(MAX_LRU_CACHE_ENTRIES, SPAM_BURST, SPAM_REFILL_PERIOD);
        let obj = pod_ref("web");
        let e = ev(&obj, "BackOff", "m", at(0));
        for i in 0..25 {
            assert!(!f.filter(&e, at(0)), "event {i} filtered");
        }
        assert!(f.filter(&e, at(0)));
        assert!(f.filter(&e, at(299)));
        assert!(!f.filter(&e, at(300)), "one token after 5 minutes");
        assert!(f.filter(&e, at(301)));
        // Another object has its own bucket; another reason does not.
        assert!(!f.filter(&ev(&pod_ref("db"), "BackOff", "m", at(301)), at(301)));
        assert!(f.filter(&ev(&obj, "Killing", "x", at(301)), at(301)));
        // A container of the same pod shares the pod's bucket.
        let mut c = obj.clone();
        c.field_path = Some("spec.containers{other}".into());
        assert!(f.filter(&ev(&c, "BackOff", "m", at(301)), at(301)));
        // After a long quiet the bucket is full again, not fuller.
        let later = at(301 + 300 * 100);
        for _ in 0..25 {
            assert!(!f.filter(&e, later));
        }
        assert!(f.filter(&e, later));
        // A clock that goes back refills nothing.
        assert!(f.filter(&e, at(0)));
    }

    #[test]
    fn correlator_counts_filtered_events_as_upstream() {
        let mut c = Correlator::default();
        let obj = pod_ref("web");
        let mut sent = Vec::new();
        for i in 0..30 {
            if let Some(r) = c.correlate(ev(&obj, "BackOff", "same", at(i)), at(i)) {
                sent.push(r);
            }
        }
        assert_eq!(sent.len(), 25);
        assert_eq!(sent.last().unwrap().event.count, 25);
        // Five skipped, but the logger counted them: the next one that
        // passes (5 minutes later) patches count 31.
        let r = c
            .correlate(ev(&obj, "BackOff", "same", at(330)), at(330))
            .unwrap();
        assert_eq!(r.event.count, 31);
    }

    #[test]
    fn thirty_distinct_messages_give_upstreams_outcome() {
        // What the integration test checks against the API server.
        let mut c = Correlator::default();
        let obj = pod_ref("web");
        let (mut creates, mut patches, mut skipped) = (0, 0, 0);
        let mut last = None;
        for i in 1..=30 {
            match c.correlate(ev(&obj, "Unhealthy", &format!("m{i}"), at(i)), at(i)) {
                None => skipped += 1,
                Some(r) if r.patch.is_some() => {
                    patches += 1;
                    last = Some(r);
                }
                Some(_) => creates += 1,
            }
        }
        assert_eq!((creates, patches, skipped), (10, 15, 5));
        let last = last.unwrap();
        assert_eq!(last.event.count, 16);
        assert_eq!(last.event.message, "(combined from similar events): m25");
    }

    #[test]
    fn lru_is_bounded_and_evicts_the_least_recent() {
        let mut l: Lru<u32> = Lru::new(3);
        for k in 0..3u128 {
            l.add(k, k as u32);
        }
        assert!(l.get(0).is_some()); // 0 is now the most recent
        l.add(3, 3);
        assert_eq!(l.len(), 3);
        assert!(!l.contains(1), "least recent evicted");
        assert!(l.contains(0) && l.contains(2) && l.contains(3));
        l.add(2, 20); // replace, no growth
        assert_eq!(l.len(), 3);
        assert_eq!(l.get(2).copied(), Some(20));
        let mut big: Lru<()> = Lru::new(MAX_LRU_CACHE_ENTRIES);
        for k in 0..(MAX_LRU_CACHE_ENTRIES as u128 + 100) {
            big.add(k, ());
        }
        assert_eq!(big.len(), MAX_LRU_CACHE_ENTRIES);
        assert_eq!(big.order.len(), MAX_LRU_CACHE_ENTRIES);
        assert!(!big.contains(99) && big.contains(100));
    }

    #[test]
    fn correlator_memory_is_bounded() {
        let o = CorrelatorOptions {
            lru_cache_size: 8,
            ..Default::default()
        };
        let mut c = Correlator::new(o);
        for i in 0..100 {
            let obj = pod_ref(&format!("p{i}"));
            c.correlate(ev(&obj, "R", &format!("m{i}"), at(i)), at(i));
        }
        assert_eq!(c.logger.len(), 8);
        assert_eq!(c.spam.cache.len(), 8);
        assert_eq!(c.aggregator.cache.len(), 8);
    }
}
