//! Per-key exponential back-off, as upstream's `flowcontrol.Backoff`
//! (client-go/util/flowcontrol/backoff.go), used for container restarts
//! (CrashLoopBackOff) and image pulls (ImagePullBackOff).
//!
//! The rules, as upstream:
//! - `next(key, event_time)`: the first call (or one after the entry
//!   expired) sets the delay to the initial value; each further call doubles
//!   it, capped at the maximum. `last_update` becomes now.
//! - `in_backoff_since(key, event_time)`: true while `now - event_time` is
//!   shorter than the current delay. The event time of a container is when
//!   it last finished, so it waits `delay` after its exit.
//! - An entry expires when the event came more than the reset period after
//!   the last update (upstream: 2 × max = 10 min): a container that ran that
//!   long before failing starts over at the initial delay.
//! - `gc` drops entries not updated for the reset period.
//!
//! The state is plain data (serde) so the caller can persist it and a
//! restarted picolet does not reset anybody's back-off.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffParams {
    /// Upstream 10 s (`picolet.back_off_initial`).
    pub initial: Duration,
    /// Upstream 5 min (`crashLoopBackOff.maxContainerRestartPeriod`).
    pub max: Duration,
    /// Upstream 2 × max = 10 min (`picolet.back_off_reset`).
    pub reset: Duration,
}

impl BackoffParams {
    pub fn from_config(cfg: &crate::config::KubeletConfig) -> Self {
        BackoffParams {
            initial: cfg.picolet.back_off_initial,
            max: cfg.max_container_restart_period,
            reset: cfg.picolet.back_off_reset,
        }
    }
}

/// One key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffEntry {
    /// The current delay, in milliseconds.
    pub delay_ms: u64,
    pub last_update: Timestamp,
}

/// The persisted part of a [`Backoff`].
pub type BackoffEntries = BTreeMap<String, BackoffEntry>;

#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    params: BackoffParams,
    entries: BackoffEntries,
}

fn since(later: Timestamp, earlier: Timestamp) -> SignedDuration {
    later.duration_since(earlier)
}

fn longer_than(d: SignedDuration, limit: Duration) -> bool {
    match SignedDuration::try_from(limit) {
        Ok(l) => d > l,
        Err(_) => false,
    }
}

impl Backoff {
    pub fn new(params: BackoffParams) -> Self {
        Backoff {
            params,
            entries: BTreeMap::new(),
        }
    }

    /// A back-off with state read back from disk.
    pub fn restore(params: BackoffParams, entries: BackoffEntries) -> Self {
        Backoff { params, entries }
    }

    /// The state to persist.
    pub fn entries(&self) -> &BackoffEntries {
        &self.entries
    }

    pub fn params(&self) -> BackoffParams {
        self.params
    }

    /// The current delay of `key` (zero when it has none).
    pub fn get(&self, key: &str) -> Duration {
        self.entries
            .get(key)
            .map_or(Duration::ZERO, |e| Duration::from_millis(e.delay_ms))
    }

    fn expired(&self, e: &BackoffEntry, event_time: Timestamp) -> bool {
        longer_than(since(event_time, e.last_update), self.params.reset)
    }

    /// Moves `key` to its next delay (see the module docs).
    pub fn next(&mut self, key: &str, event_time: Timestamp, now: Timestamp) {
        let initial = self.params.initial.as_millis() as u64;
        let max = self.params.max.as_millis() as u64;
        let delay = match self.entries.get(key) {
            Some(e) if !self.expired(e, event_time) => e.delay_ms.saturating_mul(2).min(max),
            _ => initial,
        };
        self.entries.insert(
            key.to_string(),
            BackoffEntry {
                delay_ms: delay,
                last_update: now,
            },
        );
    }

    /// Whether an event at `event_time` is still inside the delay of `key`.
    pub fn in_backoff_since(&self, key: &str, event_time: Timestamp, now: Timestamp) -> bool {
        match self.entries.get(key) {
            None => false,
            Some(e) if self.expired(e, event_time) => false,
            Some(e) => !longer_than_or_eq_ms(since(now, event_time), e.delay_ms),
        }
    }

    /// Whether `now` is inside the delay since the last `next` (image pulls).
    pub fn in_backoff_since_update(&self, key: &str, now: Timestamp) -> bool {
        match self.entries.get(key) {
            None => false,
            Some(e) if self.expired(e, now) => false,
            Some(e) => !longer_than_or_eq_ms(since(now, e.last_update), e.delay_ms),
        }
    }

    /// When the delay of `key` that started at `event_time` ends.
    pub fn until(&self, key: &str, event_time: Timestamp) -> Timestamp {
        let d = SignedDuration::from_millis(self.get(key).as_millis() as i64);
        event_time.checked_add(d).unwrap_or(event_time)
    }

    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Drops entries not updated for the reset period.
    pub fn gc(&mut self, now: Timestamp) {
        let reset = self.params.reset;
        self.entries
            .retain(|_, e| !longer_than(since(now, e.last_update), reset));
    }
}

/// The image pull back-off key (upstream image manager): per pod and image
/// reference (with the default `:latest` tag applied by the caller). While
/// `in_backoff_since_update(key, now)`, the container waits with
/// ImagePullBackOff (`Back-off pulling image "<ref>"`); each failed pull
/// calls `next(key, now, now)` and reports ErrImagePull.
pub fn image_backoff_key(pod_uid: &str, image_ref: &str) -> String {
    format!("{pod_uid}_{image_ref}")
}

fn longer_than_or_eq_ms(d: SignedDuration, ms: u64) -> bool {
    d >= SignedDuration::from_millis(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BackoffParams {
        BackoffParams {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset: Duration::from_secs(600),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn doubles_from_initial_to_max() {
        let mut b = Backoff::new(params());
        let mut delays = Vec::new();
        for now in 0..8 {
            b.next("k", t(now), t(now));
            delays.push(b.get("k").as_secs());
        }
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn crash_loop_timeline() {
        // A container that exits right after each start.
        let mut b = Backoff::new(params());
        // first exit at 0: no entry → restart now, entry 10 s
        assert!(!b.in_backoff_since("k", t(0), t(0)));
        b.next("k", t(0), t(0));
        // second exit at 1: waits 10 s after the exit
        assert!(b.in_backoff_since("k", t(1), t(1)));
        assert!(b.in_backoff_since("k", t(1), t(10)));
        assert!(!b.in_backoff_since("k", t(1), t(11)));
        assert_eq!(b.until("k", t(1)), t(11));
        b.next("k", t(1), t(11));
        assert_eq!(b.get("k"), Duration::from_secs(20));
        // third exit at 12: waits 20 s
        assert!(b.in_backoff_since("k", t(12), t(31)));
        assert!(!b.in_backoff_since("k", t(12), t(32)));
    }

    #[test]
    fn a_long_run_resets_the_delay() {
        let mut b = Backoff::new(params());
        for i in 0..5 {
            b.next("k", t(i), t(i));
        }
        assert_eq!(b.get("k"), Duration::from_secs(160));
        // Restarted at 4, ran for exactly 600 s: not yet reset (upstream: > 2×max).
        assert!(b.in_backoff_since("k", t(604), t(605)));
        // Ran longer than 10 min: the exit is not in back-off and the next
        // delay is the initial one.
        assert!(!b.in_backoff_since("k", t(605), t(605)));
        b.next("k", t(605), t(605));
        assert_eq!(b.get("k"), Duration::from_secs(10));
    }

    #[test]
    fn image_pull_backoff_since_update() {
        let mut b = Backoff::new(params());
        assert_eq!(
            image_backoff_key("u1", "busybox:latest"),
            "u1_busybox:latest"
        );
        assert!(!b.in_backoff_since_update("img", t(0)));
        b.next("img", t(0), t(0));
        assert!(b.in_backoff_since_update("img", t(9)));
        assert!(!b.in_backoff_since_update("img", t(10)));
        b.next("img", t(10), t(10));
        assert!(b.in_backoff_since_update("img", t(29)));
        assert!(!b.in_backoff_since_update("img", t(30)));
    }

    #[test]
    fn gc_and_persistence() {
        let mut b = Backoff::new(params());
        b.next("old", t(0), t(0));
        b.next("new", t(500), t(500));
        let json = serde_json::to_string(b.entries()).unwrap();
        let restored = Backoff::restore(params(), serde_json::from_str(&json).unwrap());
        assert_eq!(restored, b);
        b.gc(t(601));
        assert_eq!(b.get("old"), Duration::ZERO);
        assert_eq!(b.get("new"), Duration::from_secs(10));
        b.reset("new");
        assert!(b.entries().is_empty());
    }

    #[test]
    fn scaled_down_parameters_keep_the_rule() {
        let mut b = Backoff::new(BackoffParams {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(2),
            reset: Duration::from_secs(4),
        });
        let mut delays = Vec::new();
        for i in 0..5 {
            b.next("k", t(i), t(i));
            delays.push(b.get("k").as_millis());
        }
        assert_eq!(delays, vec![500, 1000, 2000, 2000, 2000]);
    }
}
