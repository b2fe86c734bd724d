//! The node's heartbeat: a Lease in `kube-node-lease` named after the node,
//! renewed every quarter of its duration (upstream's lease controller).
//! The control plane marks the node unreachable when it stops being
//! renewed, so a stopped picolet shows as NotReady after the duration.
//!
//! Renewal is a JSON merge patch of the spec (a small request), its answer
//! taken as protobuf and not read (half the bytes of the JSON Lease, 360
//! times an hour); a Lease that is gone
//! (deleted, or collected with a deleted Node) is created again with the
//! Node as owner.

use crate::api::meta::{MicroTime, ObjectMeta, OwnerReference};
use crate::kube::{Client, Error, Patch};
use crate::util::Backoff;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const NAMESPACE: &str = "kube-node-lease";

/// Upstream `renewIntervalFraction`.
pub fn renew_interval(duration_seconds: u32) -> Duration {
    Duration::from_secs_f64(f64::from(duration_seconds) * 0.25)
}

fn owner(node: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: uid.into(),
        ..Default::default()
    }
}

/// A fresh Lease held by `node`.
pub fn lease_object(node: &str, duration: i32, now: MicroTime, node_uid: Option<&str>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.into()),
            namespace: Some(NAMESPACE.into()),
            owner_references: node_uid.map(|u| vec![owner(node, u)]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(now),
            ..Default::default()
        }),
    }
}

/// The renewal patch; `owner_uid` when the Lease must (also) get the Node
/// as owner.
pub fn renew_patch(node: &str, duration: i32, now: &MicroTime, owner_uid: Option<&str>) -> Value {
    let mut p = json!({"spec": {
        "holderIdentity": node,
        "leaseDurationSeconds": duration,
        "renewTime": now,
    }});
    if let Some(uid) = owner_uid {
        p["metadata"] = json!({"ownerReferences": [owner(node, uid)]});
    }
    p
}

/// Whether `lease` is owned by the Node with `uid`.
pub fn owned_by(lease: &Lease, uid: &str) -> bool {
    lease
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "Node" && r.uid == uid))
}

/// Whether a renewal may be left out: the node's status was written
/// since the last one (its Ready heartbeat is a heartbeat to the node
/// lifecycle controller as much as the Lease), the last renewal worked,
/// and the one before was not left out, so the Lease is never older than
/// two intervals (half its duration). Saves the request the status write
/// makes redundant.
pub fn may_skip(
    status_written: Option<Instant>,
    last_renewal: Option<Instant>,
    skipped_last: bool,
    failing: bool,
) -> bool {
    match (status_written, last_renewal) {
        (Some(s), Some(r)) => !skipped_last && !failing && s > r,
        _ => false,
    }
}

/// Renews the Lease until the task is dropped. `node_uid` is the Node's
/// UID once it is registered (the node manager updates it when the Node is
/// created again).
/// `status_written` is when the node manager last wrote the status.
pub async fn run(
    client: Rc<Client>,
    node: String,
    duration_seconds: u32,
    node_uid: Rc<RefCell<Option<String>>>,
    status_written: Rc<std::cell::Cell<Option<Instant>>>,
) {
    let duration = duration_seconds.min(i32::MAX as u32) as i32;
    let interval = renew_interval(duration_seconds);
    // Upstream's ensureLease back-off: 200 ms doubling to 7 s.
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(7), 0.2);
    // The UID the Lease is known to be owned by.
    let mut owned: Option<String> = None;
    let mut failing = false;
    let mut last_renewal: Option<Instant> = None;
    let mut skipped_last = false;
    loop {
        let uid = node_uid.borrow().clone();
        let needs_owner = uid.is_some() && uid != owned;
        if !needs_owner && may_skip(status_written.get(), last_renewal, skipped_last, failing) {
            skipped_last = true;
            async_io::Timer::after(interval).await;
            continue;
        }
        skipped_last = false;
        let now = MicroTime(jiff::Timestamp::now());
        let patch = renew_patch(
            &node,
            duration,
            &now,
            uid.as_deref().filter(|_| needs_owner),
        );
        let mut res = if needs_owner {
            client
                .patch::<Lease>(Some(NAMESPACE), &node, None, &Patch::Merge(patch))
                .await
                .map(Some)
        } else {
            // A plain renewal: only success matters, the Lease is not read.
            client
                .patch_unread::<Lease>(Some(NAMESPACE), &node, &Patch::Merge(patch))
                .await
                .map(|()| None)
        };
        if matches!(&res, Err(e) if e.is_not_found()) {
            let l = lease_object(&node, duration, now, uid.as_deref());
            res = client.create(Some(NAMESPACE), &l).await.map(Some);
            if res.is_ok() {
                log::info!("created the node lease {NAMESPACE}/{node}");
            }
        }
        let wait = match res {
            Ok(lease) => {
                if let Some(lease) = lease {
                    owned = uid.filter(|u| owned_by(&lease, u));
                }
                last_renewal = Some(Instant::now());
                if failing {
                    log::info!("node lease {NAMESPACE}/{node} renewed again");
                    failing = false;
                }
                backoff.reset();
                interval
            }
            Err(e) => {
                log_failure(&node, &e, &mut failing);
                backoff.next_delay().min(interval)
            }
        };
        async_io::Timer::after(wait).await;
    }
}

fn log_failure(node: &str, e: &Error, failing: &mut bool) {
    // The transport logs reachability changes itself.
    if !*failing && !e.is_transport() {
        log::warn!("node lease {NAMESPACE}/{node}: {e}; retrying");
    } else {
        log::debug!("node lease {NAMESPACE}/{node}: {e}");
    }
    *failing = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_shapes() {
        assert_eq!(renew_interval(40), Duration::from_secs(10));
        let now = MicroTime("2026-12-06T10:00:00.123456Z".parse().unwrap());
        let l = lease_object("n1", 40, now.clone(), Some("u-1"));
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["metadata"]["namespace"], NAMESPACE);
        assert_eq!(v["spec"]["holderIdentity"], "n1");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(v["spec"]["renewTime"], "2026-12-06T10:00:00.123456Z");
        assert_eq!(
            v["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u-1"}])
        );
        assert!(owned_by(&l, "u-1") && !owned_by(&l, "u-2"));
        let p = renew_patch("n1", 40, &now, None);
        assert!(p.get("metadata").is_none());
        assert_eq!(p["spec"]["renewTime"], "2026-12-06T10:00:00.123456Z");
        let p = renew_patch("n1", 40, &now, Some("u-2"));
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u-2");
    }

    #[test]
    fn a_renewal_is_left_out_only_after_a_status_write_and_never_twice() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(3);
        // The status was written after the last renewal: skip once.
        assert!(may_skip(Some(t1), Some(t0), false, false));
        assert!(!may_skip(Some(t1), Some(t0), true, false));
        // Not when the status is older, never written, or renewals fail.
        assert!(!may_skip(Some(t0), Some(t1), false, false));
        assert!(!may_skip(None, Some(t0), false, false));
        assert!(!may_skip(Some(t1), None, false, false));
        assert!(!may_skip(Some(t1), Some(t0), false, true));
    }
}
