//! Node registration (upstream `registerWithAPIServer`): the initial Node
//! object, the labels picolet owns, and the reconciliation of a Node that
//! already exists (picolet restarted, or the name was registered before).

use crate::api::core::{Node, NodeSpec, Taint};
use crate::api::meta::ObjectMeta;
use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_OS: &str = "kubernetes.io/os";
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_OS_BETA: &str = "beta.kubernetes.io/os";
pub const LABEL_ARCH_BETA: &str = "beta.kubernetes.io/arch";
/// Upstream `ControllerManagedAttachAnnotation` (enableControllerAttachDetach,
/// default true).
pub const ANNOTATION_CMAD: &str = "volumes.kubernetes.io/controller-managed-attach-detach";

/// Labels in the kubernetes.io namespace a node may set on itself
/// (NodeRestriction; upstream `kubeletapis.IsKubeletLabel`); also the
/// labels the kubelet keeps on its Node (upstream `updateDefaultLabels`).
const KUBELET_LABELS: [&str; 11] = [
    LABEL_HOSTNAME,
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    LABEL_OS_BETA,
    LABEL_ARCH_BETA,
    LABEL_OS,
    LABEL_ARCH,
];
const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

/// What the initial Node is made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registration {
    pub name: String,
    pub hostname: String,
    /// `--node-labels`.
    pub labels: BTreeMap<String, String>,
    /// `registerWithTaints`.
    pub taints: Vec<Taint>,
    pub provider_id: String,
}

fn label_namespace(key: &str) -> Option<&str> {
    key.split_once('/').map(|(ns, _)| ns)
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.ends_with(&format!(".{domain}"))
}

/// Upstream's check of `--node-labels`: labels in the kubernetes.io and
/// k8s.io namespaces must be ones a kubelet may set, since NodeRestriction
/// would refuse the whole Node otherwise.
pub fn validate_node_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    let bad: Vec<&str> = labels
        .keys()
        .map(String::as_str)
        .filter(|k| {
            let Some(ns) = label_namespace(k) else {
                return false;
            };
            let restricted = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
            restricted
                && !KUBELET_LABELS.contains(k)
                && !KUBELET_LABEL_NAMESPACES.iter().any(|d| in_namespace(ns, d))
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: {bad:?}; \
             --node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix \
             ({}) or be in the specifically allowed set ({})",
            KUBELET_LABEL_NAMESPACES.join(", "),
            KUBELET_LABELS.join(", ")
        );
    }
    Ok(())
}

/// Parses `--node-labels key=value,key2=value2`.
pub fn parse_node_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for kv in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--node-labels: {kv:?} is not key=value");
        };
        if k.is_empty() {
            bail!("--node-labels: empty key in {kv:?}");
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

/// The Node picolet creates (upstream `initialNode`, without cloud
/// provider): default labels, `--node-labels` over them, taints, the
/// attach-detach annotation, providerID.
pub fn initial_node(r: &Registration) -> Node {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_HOSTNAME.to_string(), r.hostname.clone());
    labels.insert(LABEL_OS.to_string(), "linux".to_string());
    labels.insert(LABEL_ARCH.to_string(), crate::kube::go_arch().to_string());
    labels.insert(LABEL_OS_BETA.to_string(), "linux".to_string());
    labels.insert(
        LABEL_ARCH_BETA.to_string(),
        crate::kube::go_arch().to_string(),
    );
    for (k, v) in &r.labels {
        if let Some(old) = labels.get(k) {
            log::warn!("the node label {k}={v} will overwrite default setting {old}");
        }
        labels.insert(k.clone(), v.clone());
    }
    Node {
        metadata: ObjectMeta {
            name: Some(r.name.clone()),
            labels: Some(labels),
            annotations: Some([(ANNOTATION_CMAD.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!r.taints.is_empty()).then(|| r.taints.clone()),
            provider_id: (!r.provider_id.is_empty()).then(|| r.provider_id.clone()),
            ..Default::default()
        }),
        status: None,
    }
}

/// What an existing Node needs so it carries what picolet owns (upstream
/// `reconcileCMADAnnotationWithExistingNode` + `updateDefaultLabels`): a
/// strategic merge patch of its metadata, or `None` when it is right.
/// Labels an operator added are kept: only picolet's own keys are set.
pub fn reconcile_existing(initial: &Node, existing: &Node) -> Option<Value> {
    let want_labels = initial.metadata.labels.clone().unwrap_or_default();
    let have_labels = existing.metadata.labels.clone().unwrap_or_default();
    let mut labels = Map::new();
    for key in KUBELET_LABELS {
        let Some(want) = want_labels.get(key) else {
            continue;
        };
        if have_labels.get(key) != Some(want) {
            labels.insert(
                key.to_string(),
                if want.is_empty() {
                    Value::Null
                } else {
                    want.clone().into()
                },
            );
        }
    }
    let mut annotations = Map::new();
    let want_cmad = initial
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CMAD));
    let have_cmad = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CMAD));
    if want_cmad != have_cmad {
        annotations.insert(
            ANNOTATION_CMAD.to_string(),
            want_cmad.map_or(Value::Null, |v| v.clone().into()),
        );
    }
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut meta = Map::new();
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Some(json!({ "metadata": Value::Object(meta) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registration {
        Registration {
            name: "edge-1".into(),
            hostname: "edge-1".into(),
            labels: parse_node_labels("site=hall-3, node.kubernetes.io/role=edge").unwrap(),
            taints: vec![Taint {
                key: "dedicated".into(),
                value: Some("edge".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            }],
            provider_id: "picolet://edge-1".into(),
        }
    }

    #[test]
    fn initial_node_has_default_labels_taints_and_annotation() {
        let n = initial_node(&reg());
        let l = n.metadata.labels.as_ref().unwrap();
        assert_eq!(l[LABEL_HOSTNAME], "edge-1");
        assert_eq!(l[LABEL_OS], "linux");
        assert_eq!(l[LABEL_OS_BETA], "linux");
        assert_eq!(l[LABEL_ARCH], crate::kube::go_arch());
        assert_eq!(l[LABEL_ARCH_BETA], crate::kube::go_arch());
        assert_eq!(l["site"], "hall-3");
        assert_eq!(l["node.kubernetes.io/role"], "edge");
        assert_eq!(
            n.metadata.annotations.as_ref().unwrap()[ANNOTATION_CMAD],
            "true"
        );
        let spec = n.spec.unwrap();
        assert_eq!(spec.taints.unwrap()[0].key, "dedicated");
        assert_eq!(spec.provider_id.as_deref(), Some("picolet://edge-1"));
    }

    #[test]
    fn existing_node_gets_only_picolets_keys() {
        let init = initial_node(&reg());
        let mut existing = init.clone();
        // An operator's label and a changed hostname label; no annotation.
        let l = existing.metadata.labels.as_mut().unwrap();
        l.insert("team".into(), "ops".into());
        l.insert(LABEL_HOSTNAME.into(), "old-name".into());
        l.remove("site");
        existing.metadata.annotations = None;
        let p = reconcile_existing(&init, &existing).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"labels": {LABEL_HOSTNAME: "edge-1"},
                                "annotations": {ANNOTATION_CMAD: "true"}}})
        );
        // --node-labels apply at creation only, as upstream; nothing to do
        // when picolet's own keys match.
        assert_eq!(reconcile_existing(&init, &init), None);
    }

    #[test]
    fn node_labels_are_checked_like_upstream() {
        assert!(validate_node_labels(&parse_node_labels("a=b,example.com/x=y").unwrap()).is_ok());
        assert!(validate_node_labels(
            &parse_node_labels("node.kubernetes.io/exclude-from-external-load-balancers=true,kubernetes.io/arch=arm64,x.kubelet.kubernetes.io/y=1").unwrap()
        )
        .is_ok());
        let e = validate_node_labels(
            &parse_node_labels("node-role.kubernetes.io/master=,foo.k8s.io/bar=1").unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("node-role.kubernetes.io/master") && e.contains("foo.k8s.io/bar"),
            "{e}"
        );
        assert!(parse_node_labels("novalue").is_err());
        assert!(parse_node_labels("=x").is_err());
        assert!(parse_node_labels("").unwrap().is_empty());
    }
}
