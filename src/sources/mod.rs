//! Pod sources: the static pod directory (and later the manifest URL and the
//! API server), merged into one stream of ADD / UPDATE / DELETE / REMOVE /
//! RECONCILE per pod, as upstream's pod config (pkg/kubelet/config/config.go)
//! does in its incremental mode.
//!
//! Every source sends [`SourceUpdate`]s: a full snapshot (upstream's SET) of
//! the pods it currently wants, on one shared channel. [`PodConfig::merge`]
//! diffs each snapshot against that source's previous one, pod by pod (keyed
//! by UID), and yields the [`PodUpdate`]s the sync loop acts on. A source only
//! needs to produce snapshots; the URL source (`http.go` polls, decodes a
//! pod or a pod list, keeps the last good state on errors) and the API-server
//! source (a list-watch of this node's pods feeding a snapshot store, as
//! upstream's reflector + UndeltaStore) plug in by sending on the same
//! channel with their own source name.

pub mod api;
pub mod decode;
pub mod defaults;
pub mod file;
pub mod mirror;
pub mod url;
pub mod validation;

use crate::api::core::Pod;
use jiff::Timestamp;
use smol::channel::{Receiver, Sender};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// Source names, as upstream (`kubernetes.io/config.source` values).
pub const FILE_SOURCE: &str = "file";
pub const HTTP_SOURCE: &str = "http";
pub const API_SOURCE: &str = "api";

/// Which source a pod came from.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// Static pods: the content hash (equal to the UID).
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// When the kubelet first saw the pod (RFC 3339 with nanoseconds).
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";
/// On a mirror pod in the API server: the config hash of its static pod.
/// Set when the mirror pod is created (API-server task), never on the
/// static pod itself.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// Annotations the kubelet owns: changes to them alone are not updates.
const LOCAL_ANNOTATIONS: &[&str] = &[CONFIG_SOURCE, CONFIG_MIRROR, CONFIG_SEEN];

/// A full snapshot of one source's pods (upstream's SET).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceUpdate {
    pub source: &'static str,
    pub pods: Vec<Pod>,
    /// The API source's local copy at start (offline autonomy): run, but
    /// the source does not count as seen, so nothing is removed as
    /// unwanted until the API itself answered.
    pub provisional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A pod the kubelet has not seen.
    Add,
    /// The spec, labels or annotations changed.
    Update,
    /// The source asks for a graceful delete (deletionTimestamp set; API pods).
    Delete,
    /// The source no longer has the pod: stop it and forget it.
    Remove,
    /// Only the status differs: the kubelet's own status wins; re-sync.
    Reconcile,
}

/// A change to some pods of one source. The pods are the ones
/// [`PodConfig`] stores: the sync loop, workers, status and probes share
/// them rather than each keeping a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUpdate {
    pub op: Op,
    pub source: &'static str,
    pub pods: Vec<Rc<Pod>>,
}

/// The merged desired state of every source (upstream's podStorage).
#[derive(Debug, Default)]
pub struct PodConfig {
    /// source → pod UID → pod as last delivered
    pods: BTreeMap<&'static str, BTreeMap<String, Rc<Pod>>>,
    /// Sources that have sent at least one snapshot.
    seen: BTreeSet<&'static str>,
}

/// The per-pod differences between two snapshots of one source.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diff {
    pub adds: Vec<Rc<Pod>>,
    pub updates: Vec<Rc<Pod>>,
    pub deletes: Vec<Rc<Pod>>,
    pub removes: Vec<Rc<Pod>>,
    pub reconciles: Vec<Rc<Pod>>,
}

impl PodConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a snapshot and returns the updates to deliver, in upstream's
    /// order: REMOVE, ADD, UPDATE, DELETE, RECONCILE. The first snapshot of
    /// a source always yields at least an (empty) ADD so the sync loop
    /// learns the source is ready.
    pub fn merge(&mut self, update: SourceUpdate, now: Timestamp) -> Vec<PodUpdate> {
        let source = update.source;
        let first = !update.provisional && self.seen.insert(source);
        let old = self.pods.remove(source).unwrap_or_default();
        let (new, diff) = diff_snapshot(source, &old, update.pods, now);
        self.pods.insert(source, new);

        let quiet = diff.adds.is_empty() && diff.updates.is_empty() && diff.deletes.is_empty();
        let mut out: Vec<PodUpdate> = [
            (Op::Remove, diff.removes),
            (Op::Add, diff.adds),
            (Op::Update, diff.updates),
            (Op::Delete, diff.deletes),
        ]
        .into_iter()
        .filter(|(_, pods)| !pods.is_empty())
        .map(|(op, pods)| PodUpdate { op, source, pods })
        .collect();
        if first && quiet {
            out.push(PodUpdate {
                op: Op::Add,
                source,
                pods: Vec::new(),
            });
        }
        if !diff.reconciles.is_empty() {
            out.push(PodUpdate {
                op: Op::Reconcile,
                source,
                pods: diff.reconciles,
            });
        }
        out
    }

    /// Whether every named source has sent a snapshot (upstream's
    /// SeenAllSources): only then may the kubelet remove pods it finds
    /// running but no source wants.
    pub fn seen_all_sources(&self, sources: &[&str]) -> bool {
        sources.iter().all(|s| self.seen.contains(s))
    }

    /// Every pod of every source.
    pub fn pods(&self) -> Vec<Rc<Pod>> {
        self.pods
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The pods of one source.
    pub fn source_pods(&self, source: &str) -> Vec<Rc<Pod>> {
        self.pods
            .get(source)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or("")
}

/// `<name>_<namespace>`, upstream's GetPodFullName.
pub fn pod_full_name(p: &Pod) -> String {
    format!(
        "{}_{}",
        p.metadata.name.as_deref().unwrap_or(""),
        p.metadata.namespace.as_deref().unwrap_or("")
    )
}

/// Diffs a source's new snapshot against its previous one (upstream's
/// `podStorage.merge` for SET). Returns the new stored snapshot and the
/// per-pod changes. Pure.
pub fn diff_snapshot(
    source: &'static str,
    old: &BTreeMap<String, Rc<Pod>>,
    pods: Vec<Pod>,
    now: Timestamp,
) -> (BTreeMap<String, Rc<Pod>>, Diff) {
    let mut diff = Diff::default();
    let mut new = BTreeMap::new();
    for mut pod in filter_duplicates(source, pods) {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(CONFIG_SOURCE.into(), source.into());
        let key = uid(&pod).to_string();
        match old.get(&key) {
            Some(existing) => {
                let mut changed = (**existing).clone();
                let list = match check_and_update(&mut changed, pod) {
                    Change::Update => &mut diff.updates,
                    Change::Reconcile => &mut diff.reconciles,
                    Change::GracefulDelete => &mut diff.deletes,
                    Change::None => {
                        // Unchanged: everyone keeps sharing the stored copy.
                        new.insert(key, existing.clone());
                        continue;
                    }
                };
                let changed = Rc::new(changed);
                list.push(changed.clone());
                new.insert(key, changed);
            }
            None => {
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(CONFIG_SEEN.into(), seen_timestamp(now));
                let pod = Rc::new(pod);
                diff.adds.push(pod.clone());
                new.insert(key, pod);
            }
        }
    }
    for (key, existing) in old {
        if !new.contains_key(key) {
            diff.removes.push(existing.clone());
        }
    }
    (new, diff)
}

/// RFC 3339 with nanoseconds, as upstream's `Timestamp.GetString`.
fn seen_timestamp(now: Timestamp) -> String {
    format!("{now:.9}")
}

/// Pods from one source must have unique names (and UIDs); later ones are
/// dropped and reported, as upstream's `filterInvalidPods`.
fn filter_duplicates(source: &str, pods: Vec<Pod>) -> Vec<Pod> {
    let mut names = BTreeSet::new();
    let mut uids = BTreeSet::new();
    let mut out = Vec::with_capacity(pods.len());
    for (i, pod) in pods.into_iter().enumerate() {
        let name = pod_full_name(&pod);
        if !names.insert(name.clone()) || !uids.insert(uid(&pod).to_string()) {
            log::warn!(
                "pod {name} (index {i}) from source {source}: duplicate pod name or UID, ignored"
            );
            continue;
        }
        out.push(pod);
    }
    out
}

enum Change {
    None,
    Update,
    Reconcile,
    GracefulDelete,
}

fn annotations_equal_ignoring_local(a: &Pod, b: &Pod) -> bool {
    let filtered = |p: &Pod| -> BTreeMap<String, String> {
        p.metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| !LOCAL_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    filtered(a) == filtered(b)
}

fn differ_semantically(existing: &Pod, new: &Pod) -> bool {
    let labels = |p: &Pod| p.metadata.labels.clone().unwrap_or_default();
    !(existing.spec == new.spec
        && labels(existing) == labels(new)
        && existing.metadata.deletion_timestamp == new.metadata.deletion_timestamp
        && existing.metadata.deletion_grace_period_seconds
            == new.metadata.deletion_grace_period_seconds
        && annotations_equal_ignoring_local(existing, new))
}

/// Upstream `checkAndUpdatePod`: folds `new` into `existing`, keeping the
/// kubelet's own annotations, and says what kind of change it was.
fn check_and_update(existing: &mut Pod, new: Pod) -> Change {
    if !differ_semantically(existing, &new) {
        if existing.status != new.status {
            existing.status = new.status;
            return Change::Reconcile;
        }
        return Change::None;
    }
    let mut annotations = new.metadata.annotations.clone().unwrap_or_default();
    for k in LOCAL_ANNOTATIONS {
        // The source annotation was just set on `new`; the others are ours.
        if *k == CONFIG_SOURCE {
            continue;
        }
        match existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(*k))
        {
            Some(v) => {
                annotations.insert(k.to_string(), v.clone());
            }
            None => {
                annotations.remove(*k);
            }
        }
    }
    existing.spec = new.spec;
    existing.metadata.labels = new.metadata.labels;
    existing.metadata.deletion_timestamp = new.metadata.deletion_timestamp.clone();
    existing.metadata.deletion_grace_period_seconds = new.metadata.deletion_grace_period_seconds;
    existing.status = new.status;
    existing.metadata.annotations = Some(annotations);
    if new.metadata.deletion_timestamp.is_some() {
        Change::GracefulDelete
    } else {
        Change::Update
    }
}

/// Merges snapshots from every source into per-pod updates until every
/// sender is gone or the receiver of updates is.
pub async fn run_merger(
    config: Rc<RefCell<PodConfig>>,
    snapshots: Receiver<SourceUpdate>,
    updates: Sender<PodUpdate>,
    changed: Option<Sender<()>>,
) {
    while let Ok(snapshot) = snapshots.recv().await {
        let out = config.borrow_mut().merge(snapshot, Timestamp::now());
        if let Some(c) = &changed {
            let _ = c.try_send(());
        }
        for u in out {
            log::debug!(
                "pod config: {:?} from {}: {:?}",
                u.op,
                u.source,
                u.pods.iter().map(|p| pod_full_name(p)).collect::<Vec<_>>()
            );
            if updates.send(u).await.is_err() {
                return;
            }
        }
    }
}

/// The running sources and the merged stream the sync loop reads.
pub struct Sources {
    /// Per-pod updates, in order.
    pub updates: Receiver<PodUpdate>,
    /// The merged state (for `seen_all_sources`, and the pods of `/pods`).
    pub config: Rc<RefCell<PodConfig>>,
    /// The names of the configured sources.
    pub names: Vec<&'static str>,
    /// Problems with static pod files, by file (for status and events).
    pub file_reports: Option<file::ManifestReports>,
    /// The state of the `staticPodURL` source (last error, failures).
    pub url_report: Option<url::UrlReports>,
    /// Where the API-server source sends its snapshots, once it runs.
    pub api_snapshots: Option<Sender<SourceUpdate>>,
    _tasks: Vec<smol::Task<()>>,
}

impl Sources {
    /// Whether every configured source has delivered its first snapshot.
    pub fn seen_all(&self) -> bool {
        self.config.borrow().seen_all_sources(&self.names)
    }
}

/// Starts the configured sources (`staticPodPath`, `staticPodURL`) and the merger on
/// the current thread's executor. Dropping the returned value stops them.
/// With `api`, the API-server source counts among the sources (nothing is
/// removed as unwanted until it has listed once) and its snapshots go to
/// [`Sources::api_snapshots`]; `changed` hears of every merged snapshot.
pub fn start(
    cfg: &crate::config::KubeletConfig,
    node_name: &str,
    api: bool,
    changed: Option<Sender<()>>,
) -> Sources {
    let (snap_tx, snap_rx) = smol::channel::unbounded();
    // Bounded like upstream's 50-slot channel: a slow sync loop applies
    // back-pressure to the merger rather than queueing without end.
    let (upd_tx, upd_rx) = smol::channel::bounded(50);
    let config = Rc::new(RefCell::new(PodConfig::new()));
    let mut tasks = Vec::new();
    let mut names = Vec::new();
    let mut file_reports = None;
    if let Some(path) = &cfg.static_pod_path {
        let src = file::FileSource::new(
            path.clone(),
            node_name,
            cfg.file_check_frequency,
            snap_tx.clone(),
        );
        file_reports = Some(src.reports());
        names.push(FILE_SOURCE);
        tasks.push(crate::rt::spawn(src.run()));
    }
    let mut url_report = None;
    if let Some(u) = &cfg.static_pod_url {
        let src = url::UrlSource::new(
            u,
            &cfg.static_pod_url_header,
            node_name,
            cfg.http_check_frequency,
            snap_tx.clone(),
        );
        url_report = Some(src.reports());
        names.push(HTTP_SOURCE);
        tasks.push(crate::rt::spawn(src.run()));
    }
    let api_snapshots = api.then(|| {
        names.push(API_SOURCE);
        snap_tx.clone()
    });
    drop(snap_tx);
    tasks.push(crate::rt::spawn(run_merger(
        config.clone(),
        snap_rx,
        upd_tx,
        changed,
    )));
    Sources {
        updates: upd_rx,
        config,
        names,
        file_reports,
        url_report,
        api_snapshots,
        _tasks: tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, uid: &str, image: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid,
                         "annotations": {CONFIG_HASH: uid}},
            "spec": {"containers": [{"name": "c", "image": image}]},
            "status": {"phase": "Pending"}
        }))
        .unwrap()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn set(pods: Vec<Pod>) -> SourceUpdate {
        SourceUpdate {
            source: FILE_SOURCE,
            pods,
            provisional: false,
        }
    }

    fn summary(u: &[PodUpdate]) -> Vec<(Op, Vec<String>)> {
        u.iter()
            .map(|u| {
                (
                    u.op,
                    u.pods
                        .iter()
                        .map(|p| p.metadata.name.clone().unwrap())
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn first_empty_snapshot_marks_the_source_seen() {
        let mut c = PodConfig::new();
        assert!(!c.seen_all_sources(&[FILE_SOURCE]));
        let u = c.merge(set(vec![]), t(0));
        assert_eq!(summary(&u), vec![(Op::Add, vec![])]);
        assert!(c.seen_all_sources(&[FILE_SOURCE]));
        // The second empty snapshot is silent.
        assert!(c.merge(set(vec![]), t(1)).is_empty());
    }

    #[test]
    fn add_then_same_snapshot_is_silent() {
        let mut c = PodConfig::new();
        let u = c.merge(set(vec![pod("a", "1", "x"), pod("b", "2", "x")]), t(0));
        assert_eq!(summary(&u), vec![(Op::Add, vec!["a".into(), "b".into()])]);
        let added = &u[0].pods[0];
        let ann = added.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_SOURCE], "file");
        assert_eq!(ann[CONFIG_SEEN], "2023-11-14T22:13:20.000000000Z");
        assert!(c
            .merge(set(vec![pod("a", "1", "x"), pod("b", "2", "x")]), t(5))
            .is_empty());
        // config.seen of the stored pod is the first one.
        let stored = c.pods();
        assert_eq!(
            stored[0].metadata.annotations.as_ref().unwrap()[CONFIG_SEEN],
            "2023-11-14T22:13:20.000000000Z"
        );
    }

    #[test]
    fn edited_static_pod_is_remove_plus_add() {
        // An edited manifest has a new UID.
        let mut c = PodConfig::new();
        c.merge(set(vec![pod("a", "1", "x")]), t(0));
        let u = c.merge(set(vec![pod("a", "9", "y")]), t(1));
        assert_eq!(
            summary(&u),
            vec![(Op::Remove, vec!["a".into()]), (Op::Add, vec!["a".into()])]
        );
        assert_eq!(u[0].pods[0].metadata.uid.as_deref(), Some("1"));
        assert_eq!(u[1].pods[0].metadata.uid.as_deref(), Some("9"));
    }

    #[test]
    fn same_uid_spec_change_is_update_and_keeps_local_annotations() {
        let mut c = PodConfig::new();
        c.merge(set(vec![pod("a", "1", "x")]), t(0));
        let u = c.merge(set(vec![pod("a", "1", "y")]), t(9));
        assert_eq!(summary(&u), vec![(Op::Update, vec!["a".into()])]);
        let p = &u[0].pods[0];
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("y")
        );
        let ann = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_SEEN], "2023-11-14T22:13:20.000000000Z");
    }

    #[test]
    fn local_annotation_changes_are_not_updates_but_status_is_reconcile() {
        let mut c = PodConfig::new();
        c.merge(set(vec![pod("a", "1", "x")]), t(0));
        let mut p = pod("a", "1", "x");
        let ann = p.metadata.annotations.as_mut().unwrap();
        ann.insert(CONFIG_SEEN.into(), "yesterday".into());
        ann.insert(CONFIG_MIRROR.into(), "h".into());
        assert!(c.merge(set(vec![p.clone()]), t(1)).is_empty());
        // A user annotation is an update.
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("team".into(), "x".into());
        assert_eq!(
            summary(&c.merge(set(vec![p.clone()]), t(2))),
            vec![(Op::Update, vec!["a".into()])]
        );
        p.status.as_mut().unwrap().phase = Some("Running".into());
        assert_eq!(
            summary(&c.merge(set(vec![p]), t(3))),
            vec![(Op::Reconcile, vec!["a".into()])]
        );
    }

    #[test]
    fn deletion_timestamp_is_graceful_delete() {
        let mut c = PodConfig::new();
        c.merge(set(vec![pod("a", "1", "x")]), t(0));
        let mut p = pod("a", "1", "x");
        p.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(1)));
        p.metadata.deletion_grace_period_seconds = Some(5);
        let u = c.merge(set(vec![p]), t(1));
        assert_eq!(summary(&u), vec![(Op::Delete, vec!["a".into()])]);
        assert_eq!(u[0].pods[0].metadata.deletion_grace_period_seconds, Some(5));
    }

    #[test]
    fn removal_and_order_of_ops() {
        let mut c = PodConfig::new();
        c.merge(set(vec![pod("a", "1", "x"), pod("b", "2", "x")]), t(0));
        let mut b = pod("b", "2", "y");
        b.metadata.uid = Some("2".into());
        let u = c.merge(set(vec![pod("c", "3", "x"), b]), t(1));
        assert_eq!(
            summary(&u),
            vec![
                (Op::Remove, vec!["a".into()]),
                (Op::Add, vec!["c".into()]),
                (Op::Update, vec!["b".into()]),
            ]
        );
        assert!(c.merge(set(vec![]), t(2))[0].op == Op::Remove);
        assert!(c.pods().is_empty());
    }

    #[test]
    fn a_provisional_snapshot_runs_pods_but_the_source_is_not_seen() {
        let mut c = PodConfig::new();
        let local = SourceUpdate {
            source: API_SOURCE,
            pods: vec![pod("a", "1", "x"), pod("b", "2", "x")],
            provisional: true,
        };
        let u = c.merge(local, t(0));
        assert_eq!(summary(&u), vec![(Op::Add, vec!["a".into(), "b".into()])]);
        // Nothing may be removed as unwanted on the local copy's word.
        assert!(!c.seen_all_sources(&[API_SOURCE]));
        // The API's answer wins: b was deleted meanwhile, a changed, c is new.
        let api = SourceUpdate {
            source: API_SOURCE,
            pods: vec![pod("a", "1", "y"), pod("c", "3", "x")],
            provisional: false,
        };
        let u = c.merge(api, t(1));
        assert_eq!(
            summary(&u),
            vec![
                (Op::Remove, vec!["b".into()]),
                (Op::Add, vec!["c".into()]),
                (Op::Update, vec!["a".into()]),
            ]
        );
        assert!(c.seen_all_sources(&[API_SOURCE]));
    }

    #[test]
    fn duplicates_within_a_source_keep_the_first() {
        let mut c = PodConfig::new();
        let u = c.merge(set(vec![pod("a", "1", "x"), pod("a", "2", "y")]), t(0));
        assert_eq!(summary(&u), vec![(Op::Add, vec!["a".into()])]);
        assert_eq!(u[0].pods[0].metadata.uid.as_deref(), Some("1"));
    }

    #[test]
    fn sources_are_independent() {
        let mut c = PodConfig::new();
        c.merge(set(vec![pod("a", "1", "x")]), t(0));
        let u = c.merge(
            SourceUpdate {
                source: HTTP_SOURCE,
                pods: vec![],
                provisional: false,
            },
            t(1),
        );
        assert_eq!(summary(&u), vec![(Op::Add, vec![])]);
        assert_eq!(c.pods().len(), 1);
        assert!(c.seen_all_sources(&[FILE_SOURCE, HTTP_SOURCE]));
        assert!(!c.seen_all_sources(&[API_SOURCE]));
    }
}
