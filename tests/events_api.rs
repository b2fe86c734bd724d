//! The event recorder against the real kube-apiserver v1.31 of
//! `../shared/k8s`, writing with a node's credentials (`mknode.sh`) as a
//! kubelet does, and checked with `kubectl` as a user would: identical
//! events counted into one Event, 30 distinct ones aggregated and cut by
//! the spam filter exactly as client-go would, a Warning in `kubectl
//! describe pod`, a deleted Event created anew, node events in `default`.
//!
//! Node names `events-node-<n>`; each test has a namespace of its own
//! (`events-api-<n>-<pid>`), a Node and a pod bound to it, all deleted at
//! the end.

mod cluster_support;

use cluster_support::ControlPlane;
use k8s_openapi::api::core::v1::Pod;
use picolet::events::{messages, reasons, EventRecorder, EventType, ObjectRef, Recorder};
use picolet::kube::{transport::Transport, Client, Kubeconfig};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

struct Fixture {
    cp: ControlPlane,
    node: String,
    ns: String,
}

impl Fixture {
    /// A namespace, a Node `events-node-<n>` (so the pod GC keeps pods
    /// bound to it) and a pod `crashy` bound to it, created as admin.
    fn new(n: u32) -> Fixture {
        let cp = ControlPlane::shared();
        let fx = Fixture {
            cp,
            node: format!("events-node-{n}"),
            ns: format!("events-api-{n}-{}", std::process::id()),
        };
        fx.cleanup_node();
        fx.admin_ok(&["create", "namespace", &fx.ns]);
        fx.create(&json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": fx.node, "labels": {"picolet.test/events": "true"}}
        }));
        fx.create(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "crashy", "namespace": fx.ns},
            "spec": {
                "nodeName": fx.node,
                "containers": [{"name": "app", "image": "busybox:1.36"}],
                "tolerations": [{"operator": "Exists"}]
            }
        }));
        fx
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.cp.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn create(&self, obj: &Value) {
        let path: PathBuf = std::env::temp_dir().join(format!(
            "events-api-{}-{}.json",
            std::process::id(),
            obj["kind"].as_str().unwrap_or("obj")
        ));
        std::fs::write(&path, obj.to_string()).unwrap();
        self.admin_ok(&["create", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(path);
    }

    fn pod(&self, name: &str) -> Pod {
        let v = self
            .cp
            .get_json(&["-n", &self.ns, "get", "pod", name])
            .expect("get pod");
        serde_json::from_value(v).expect("decode pod")
    }

    /// A recorder writing with the node's credentials (its own client on
    /// its own connection, no client-side limit but the recorder's).
    fn recorder(&self) -> Rc<EventRecorder> {
        let rec = EventRecorder::new(&self.node, 50.0, 100);
        rec.attach(self.node_client());
        rec
    }

    fn node_client(&self) -> Rc<Client> {
        let kc = Kubeconfig::load(&self.cp.node_kubeconfig(&self.node)).expect("node kubeconfig");
        let t = Transport::new(kc).expect("transport");
        Rc::new(Client::new(t, 0.0, 1))
    }

    /// `kubectl get events -n ns [--field-selector ...] -o json`, items.
    fn events(&self, ns: &str, selector: Option<&str>) -> Vec<Value> {
        let mut args = vec!["-n", ns, "get", "events"];
        if let Some(s) = selector {
            args.extend(["--field-selector", s]);
        }
        let v = self.cp.get_json(&args).expect("get events");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    fn cleanup_node(&self) {
        let _ = self.cp.kubectl(&[
            "delete",
            "node",
            &self.node,
            "--ignore-not-found",
            "--wait=false",
        ]);
        let sel = format!("involvedObject.name={}", self.node);
        let _ = self.cp.kubectl(&[
            "-n",
            "default",
            "delete",
            "events",
            "--field-selector",
            &sel,
            "--ignore-not-found",
        ]);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // No kubelet confirms the pod's deletion: delete it at once, so the
        // namespace goes without waiting for the pod GC.
        let _ = self.cp.kubectl(&[
            "-n",
            &self.ns,
            "delete",
            "pod",
            "--all",
            "--grace-period=0",
            "--force",
        ]);
        let _ = self.cp.kubectl(&[
            "delete",
            "namespace",
            &self.ns,
            "--ignore-not-found",
            "--wait=false",
        ]);
        self.cleanup_node();
    }
}

fn drain(rec: &EventRecorder) {
    assert!(
        picolet::rt::block_on(rec.drain(Duration::from_secs(60))),
        "events still pending: {:?}",
        rec.counters()
    );
}

fn time(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("time {v}"))
        .parse()
        .unwrap()
}

#[test]
fn identical_events_become_one_event_with_a_count() {
    let fx = Fixture::new(1);
    let pod = fx.pod("crashy");
    let uid = pod.metadata.uid.clone().unwrap();
    let rec = fx.recorder();
    let app = ObjectRef::container(&pod, "app", false);
    let msg = messages::back_off_restart("app", &messages::format_pod("crashy", &fx.ns, &uid));
    picolet::rt::block_on(async {
        for i in 0..3 {
            if i > 0 {
                async_io::Timer::after(Duration::from_millis(1100)).await;
            }
            rec.event(
                &app,
                EventType::Warning,
                reasons::BACK_OFF_START_CONTAINER,
                &msg,
            );
        }
    });
    drain(&rec);
    let c = rec.counters();
    assert_eq!(
        (c.recorded, c.created, c.patched, c.failed),
        (3, 1, 2, 0),
        "{c:?}"
    );

    let evs = fx.events(&fx.ns, None);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    let e = &evs[0];
    assert_eq!(e["count"], 3);
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "BackOff");
    assert_eq!(e["message"], msg.as_str());
    assert_eq!(
        e["source"],
        json!({"component": "kubelet", "host": fx.node})
    );
    assert_eq!(e["reportingComponent"], "kubelet");
    assert_eq!(e["reportingInstance"], fx.node.as_str());
    assert_eq!(e["eventTime"], Value::Null);
    let io = &e["involvedObject"];
    assert_eq!(io["kind"], "Pod");
    assert_eq!(io["apiVersion"], "v1");
    assert_eq!(io["name"], "crashy");
    assert_eq!(io["namespace"], fx.ns.as_str());
    assert_eq!(io["uid"], uid.as_str());
    assert_eq!(io["fieldPath"], "spec.containers{app}");
    let name = e["metadata"]["name"].as_str().unwrap().to_string();
    let suffix = name.strip_prefix("crashy.").expect("name is <pod>.<hex>");
    assert!(i64::from_str_radix(suffix, 16).is_ok(), "{name}");
    assert!(
        time(&e["lastTimestamp"])
            >= time(&e["firstTimestamp"]) + jiff::SignedDuration::from_secs(1)
    );

    // `kubectl describe pod` shows it as a node running upstream's kubelet would.
    let out = fx.admin_ok(&["-n", &fx.ns, "describe", "pod", "crashy"]);
    let line = out
        .lines()
        .find(|l| l.contains("BackOff"))
        .unwrap_or_else(|| panic!("no BackOff event in:\n{out}"));
    eprintln!("kubectl describe pod: {}", line.trim());
    assert!(line.trim_start().starts_with("Warning"), "{line}");
    assert!(line.contains("(x3 over"), "{line}");
    assert!(line.contains("kubelet"), "{line}");
    assert!(line.ends_with(&msg), "{line}");

    // The Event is deleted behind the recorder's back: the next identical
    // event's patch finds nothing and the Event is created anew, with the
    // name and the count so far (as client-go does).
    fx.admin_ok(&["-n", &fx.ns, "delete", "event", &name]);
    rec.event(
        &app,
        EventType::Warning,
        reasons::BACK_OFF_START_CONTAINER,
        &msg,
    );
    drain(&rec);
    let c = rec.counters();
    assert_eq!((c.created, c.patched, c.failed), (2, 2, 0), "{c:?}");
    let evs = fx.events(&fx.ns, None);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0]["metadata"]["name"], name.as_str());
    assert_eq!(evs[0]["count"], 4);
}

#[test]
fn distinct_messages_are_aggregated_and_spam_filtered_as_upstream() {
    let fx = Fixture::new(2);
    let pod = fx.pod("crashy");
    let rec = fx.recorder();
    let app = ObjectRef::container(&pod, "app", false);
    let msg = |i: u32| {
        messages::probe_failed(
            "Liveness",
            &format!("HTTP probe failed with statuscode: {}", 500 + i),
        )
    };
    for i in 1..=30 {
        rec.event(
            &app,
            EventType::Warning,
            reasons::CONTAINER_UNHEALTHY,
            &msg(i),
        );
    }
    // The pod's budget is spent: another reason about it is cut too.
    rec.event(
        &ObjectRef::pod(&pod),
        EventType::Normal,
        reasons::KILLING_CONTAINER,
        &messages::stopping("app"),
    );
    drain(&rec);
    // Events 1..9 are created as they are; the 10th is replaced by an
    // aggregate Event, which events 11..25 patch; 26..30 and the Killing
    // event exceed the burst of 25 for this source + object.
    let c = rec.counters();
    assert_eq!(
        (c.recorded, c.created, c.patched, c.spam_filtered, c.failed),
        (31, 10, 15, 6, 0),
        "{c:?}"
    );

    let evs = fx.events(&fx.ns, None);
    assert_eq!(evs.len(), 10, "{evs:#?}");
    let mut singles: Vec<String> = evs
        .iter()
        .filter(|e| e["count"] == 1)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    singles.sort();
    let mut want: Vec<String> = (1..=9).map(msg).collect();
    want.sort();
    assert_eq!(singles, want);
    let agg: Vec<&Value> = evs.iter().filter(|e| e["count"] != 1).collect();
    assert_eq!(agg.len(), 1, "{evs:#?}");
    let agg = agg[0];
    assert_eq!(agg["count"], 16);
    assert_eq!(
        agg["message"],
        format!("(combined from similar events): {}", msg(25))
    );
    assert_eq!(agg["reason"], "Unhealthy");
    assert_eq!(agg["type"], "Warning");
    assert_eq!(agg["source"]["component"], "kubelet");
    // Upstream's aggregate Event carries no reporting fields.
    assert_eq!(agg["reportingComponent"], "");
    assert!(evs.iter().all(|e| e["reason"] == "Unhealthy"));
}

#[test]
fn node_events_go_to_default_also_when_recorded_before_attach() {
    let fx = Fixture::new(3);
    let rec = EventRecorder::new(&fx.node, 50.0, 100);
    let node = ObjectRef::node(&fx.node, None);
    rec.event(
        &node,
        EventType::Normal,
        reasons::STARTING_KUBELET,
        &messages::starting_kubelet(),
    );
    rec.event(
        &node,
        EventType::Normal,
        reasons::NODE_HAS_SUFFICIENT_MEMORY,
        &messages::node_status(&fx.node, reasons::NODE_HAS_SUFFICIENT_MEMORY),
    );
    assert_eq!(rec.pending(), 2);
    rec.attach(fx.node_client());
    drain(&rec);
    assert_eq!(rec.counters().created, 2);

    let sel = format!("involvedObject.name={},source=kubelet", fx.node);
    let mut evs = fx.events("default", Some(&sel));
    evs.sort_by_key(|e| e["reason"].as_str().unwrap_or("").to_string());
    assert_eq!(evs.len(), 2, "{evs:#?}");
    for e in &evs {
        assert_eq!(e["metadata"]["namespace"], "default");
        let io = &e["involvedObject"];
        assert_eq!(io["kind"], "Node");
        assert_eq!(io["name"], fx.node.as_str());
        assert_eq!(
            io["uid"],
            fx.node.as_str(),
            "the node's name as uid, as upstream"
        );
        assert!(io.get("namespace").is_none(), "{io}");
        assert_eq!(e["type"], "Normal");
    }
    assert_eq!(evs[0]["reason"], "NodeHasSufficientMemory");
    assert_eq!(
        evs[0]["message"],
        format!("Node {} status is now: NodeHasSufficientMemory", fx.node)
    );
    assert_eq!(evs[1]["reason"], "Starting");
    assert_eq!(evs[1]["message"], "Starting kubelet.");

    let out = fx.admin_ok(&["describe", "node", &fx.node]);
    assert!(out.contains("Starting kubelet."), "{out}");
}
