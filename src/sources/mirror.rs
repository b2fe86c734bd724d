//! Mirror pods (upstream `pkg/kubelet/pod/mirror_client.go` and the mirror
//! parts of SyncPod and HandlePodCleanups): each static pod gets a copy in
//! the API server, annotated `kubernetes.io/config.mirror` with the static
//! pod's hash and owned by the Node (NodeRestriction requires both), on
//! which its status is reported. A mirror that someone deletes, or whose
//! hash is not the static pod's any more, is replaced; a mirror whose
//! static pod is gone is deleted.

use super::api::SharedApiPods;
use super::{pod_full_name, PodConfig, CONFIG_HASH, CONFIG_MIRROR, FILE_SOURCE, HTTP_SOURCE};
use crate::api::core::Pod;
use crate::api::meta::OwnerReference;
use crate::kube::{Client, DeleteParams};
use crate::util::Backoff;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(Box<Pod>),
    Delete {
        namespace: String,
        name: String,
        uid: String,
    },
}

fn hash(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(CONFIG_HASH)
        .map(String::as_str)
}

fn mirror_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(CONFIG_MIRROR)
        .map(String::as_str)
}

/// The mirror pod of `stat` (upstream `CreateMirrorPod`): the static pod
/// with the mirror annotation and the Node as controlling owner; the
/// server gives it a UID and a fresh status.
pub fn mirror_of(stat: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut m = stat.clone();
    let h = hash(stat).unwrap_or_default().to_string();
    m.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CONFIG_MIRROR.into(), h);
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    m.metadata.creation_timestamp = None;
    m.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.into(),
        uid: node_uid.into(),
        controller: Some(true),
        ..Default::default()
    }]);
    m.status = None;
    m
}

/// What to do so every static pod has exactly one current mirror. Pure.
pub fn actions(
    statics: &[Rc<Pod>],
    mirrors: &[Rc<Pod>],
    node_name: &str,
    node_uid: &str,
) -> Vec<Action> {
    let mut out = Vec::new();
    let delete = |m: &Pod| Action::Delete {
        namespace: m.metadata.namespace.clone().unwrap_or_default(),
        name: m.metadata.name.clone().unwrap_or_default(),
        uid: m.metadata.uid.clone().unwrap_or_default(),
    };
    for s in statics {
        let name = pod_full_name(s);
        match mirrors.iter().find(|m| pod_full_name(m) == name) {
            None => out.push(Action::Create(Box::new(mirror_of(s, node_name, node_uid)))),
            Some(m) if m.metadata.deletion_timestamp.is_some() || mirror_hash(m) != hash(s) => {
                // Recreated once the old one is gone (the watch says so).
                out.push(delete(m));
            }
            Some(_) => {}
        }
    }
    for m in mirrors {
        let name = pod_full_name(m);
        if !statics.iter().any(|s| pod_full_name(s) == name) {
            out.push(delete(m));
        }
    }
    out
}

/// Keeps the mirror pods in step until dropped. `wake` hears of changes
/// (static pods or mirror pods); `node_uid` is the registered Node's UID.
pub async fn run(
    client: Rc<Client>,
    node_name: String,
    node_uid: Rc<dyn Fn() -> Option<String>>,
    config: Rc<RefCell<PodConfig>>,
    api: SharedApiPods,
    wake: smol::channel::Receiver<()>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 0.5);
    let mut last_err = String::new();
    loop {
        let mut wait = Duration::from_secs(10);
        let uid = node_uid();
        // Not `api.borrow()` in the condition: the borrow would live
        // across the awaits below while the pod watch writes the store.
        let synced = api.borrow().synced();
        if let (true, Some(uid)) = (synced, uid) {
            let statics: Vec<Rc<Pod>> = {
                let cfg = config.borrow();
                [FILE_SOURCE, HTTP_SOURCE]
                    .iter()
                    .flat_map(|s| cfg.source_pods(s))
                    .collect()
            };
            let mirrors = api.borrow().mirrors();
            let mut failed = false;
            for a in actions(&statics, &mirrors, &node_name, &uid) {
                let res = match &a {
                    Action::Create(m) => {
                        let ns = m.metadata.namespace.clone().unwrap_or_default();
                        match client.create(Some(&ns), m.as_ref()).await {
                            Ok(_) => {
                                log::info!(
                                    "created the mirror pod of static pod {}",
                                    pod_full_name(m)
                                );
                                Ok(())
                            }
                            // Ours from before, not yet seen by the watch.
                            Err(e) if e.is_already_exists() => Ok(()),
                            Err(e) => Err(format!("create mirror pod {}: {e}", pod_full_name(m))),
                        }
                    }
                    Action::Delete {
                        namespace,
                        name,
                        uid,
                    } => {
                        let p = DeleteParams {
                            grace_period_seconds: Some(0),
                            uid: Some(uid.clone()),
                            ..Default::default()
                        };
                        match client.delete::<Pod>(Some(namespace), name, &p).await {
                            Ok(()) => {
                                log::info!("deleted mirror pod {namespace}/{name}");
                                Ok(())
                            }
                            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
                            Err(e) => Err(format!("delete mirror pod {namespace}/{name}: {e}")),
                        }
                    }
                };
                if let Err(e) = res {
                    if e != last_err {
                        log::warn!("{e}; retrying");
                        last_err = e;
                    }
                    failed = true;
                }
            }
            if failed {
                wait = backoff.next_delay();
            } else {
                backoff.reset();
                last_err.clear();
            }
        }
        futures_lite::future::or(
            async {
                let _ = wake.recv().await;
            },
            async {
                async_io::Timer::after(wait).await;
            },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stat(name: &str, h: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "kube-system", "uid": h,
                         "annotations": {CONFIG_HASH: h, "kubernetes.io/config.source": "file"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n1"},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn mirror(name: &str, h: &str, uid: &str) -> Rc<Pod> {
        let mut m = mirror_of(&stat(name, h), "n1", "node-uid");
        m.metadata.uid = Some(uid.into());
        Rc::new(m)
    }

    #[test]
    fn mirror_objects_look_like_upstreams() {
        let m = mirror_of(&stat("etcd-n1", "abc"), "n1", "node-uid");
        let a = m.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[CONFIG_MIRROR], "abc");
        assert_eq!(a[CONFIG_HASH], "abc");
        assert_eq!(m.metadata.uid, None);
        assert!(m.status.is_none());
        let o = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            ("Node", "n1", "node-uid")
        );
        assert_eq!(o.controller, Some(true));
    }

    #[test]
    fn creates_replaces_and_deletes() {
        let statics: Vec<Rc<Pod>> = [stat("a-n1", "h1"), stat("b-n1", "h2"), stat("c-n1", "h3")]
            .into_iter()
            .map(Rc::new)
            .collect();
        let mut gone = (*mirror("c-n1", "h3", "m3")).clone();
        gone.metadata.deletion_timestamp = Some(crate::api::meta::Time(jiff::Timestamp::now()));
        let mirrors = vec![
            mirror("a-n1", "h1", "m1"),      // current
            mirror("b-n1", "old", "m2"),     // outdated
            Rc::new(gone),                   // being deleted by a user
            mirror("orphan-n1", "h9", "m9"), // its static pod is gone
        ];
        let acts = actions(&statics, &mirrors, "n1", "u");
        let summary: Vec<String> = acts
            .iter()
            .map(|a| match a {
                Action::Create(p) => format!("create {}", p.metadata.name.as_deref().unwrap()),
                Action::Delete { name, uid, .. } => format!("delete {name} {uid}"),
            })
            .collect();
        assert_eq!(
            summary,
            ["delete b-n1 m2", "delete c-n1 m3", "delete orphan-n1 m9"]
        );
        // Once gone, they are created anew.
        let acts = actions(&statics, &[mirror("a-n1", "h1", "m1")], "n1", "u");
        assert_eq!(acts.len(), 2);
        assert!(acts.iter().all(|a| matches!(a, Action::Create(_))));
    }
}
