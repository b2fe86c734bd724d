//! Decoding a static pod manifest the way upstream's `tryDecodeSinglePod`
//! and `applyDefaults` (pkg/kubelet/config/common.go) do: YAML or JSON →
//! `v1.Pod`, API defaults, a UID derived from the content, the node-suffixed
//! name, the config annotations and the static-pod toleration, then
//! `ValidatePodCreate`.

use super::validation::{self, FieldError, Path};
use super::{CONFIG_HASH, FILE_SOURCE, HTTP_SOURCE};
use crate::api::core::{Pod, PodStatus, Toleration};

/// Where a manifest came from: it goes into the UID, as upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A file (path as configured, e.g. `/etc/kubernetes/manifests/web.yaml`).
    File(&'a str),
    /// A manifest URL.
    Url(&'a str),
}

impl Origin<'_> {
    pub fn source(&self) -> &'static str {
        match self {
            Origin::File(_) => FILE_SOURCE,
            Origin::Url(_) => HTTP_SOURCE,
        }
    }
}

/// A pod ready for the pod config, plus what was dropped on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPod {
    pub pod: Pod,
    /// Fields the v1 Pod type does not know (`spec.containers[0].foo`):
    /// dropped, as the API server does, and reported.
    pub unknown_fields: Vec<String>,
}

/// Decodes one manifest. Errors name the field and the reason; a document
/// that is not even YAML gets one error with an empty field.
pub fn decode_pod(
    data: &[u8],
    origin: Origin,
    node_name: &str,
) -> Result<DecodedPod, Vec<FieldError>> {
    let doc = |reason: String| {
        vec![FieldError {
            field: String::new(),
            reason,
        }]
    };
    let text = std::str::from_utf8(data).map_err(|e| {
        doc(format!(
            "not UTF-8 text (binary data at byte {})",
            e.valid_up_to()
        ))
    })?;
    let value = crate::api::yaml::single(text)
        .map_err(|e| doc(format!("cannot parse as YAML or JSON: {e:#}")))?;
    let Some(obj) = value.as_object() else {
        return Err(doc("a pod manifest must be a mapping".into()));
    };
    let mut errs = Vec::new();
    for (field, want) in [("apiVersion", "v1"), ("kind", "Pod")] {
        match obj.get(field).and_then(|v| v.as_str()) {
            None | Some("") => errs.push(validation::required(&Path::new(field))),
            Some(v) if v != want => {
                errs.push(validation::not_supported(&Path::new(field), v, &[want]))
            }
            _ => {}
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let decoded = crate::api::decode::<Pod>(value).map_err(|e| {
        let msg = format!("{e:#}");
        let (field, reason) = msg.split_once(": ").unwrap_or(("", msg.as_str()));
        vec![FieldError {
            field: field.to_string(),
            reason: reason.to_string(),
        }]
    })?;
    let mut pod = decoded.object;
    if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(vec![validation::required(&Path::new("metadata.name"))]);
    }
    super::defaults::apply(&mut pod);
    apply_static_defaults(&mut pod, origin, node_name);
    let errs = validation::validate_pod(&pod);
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(DecodedPod {
        pod,
        unknown_fields: decoded
            .unknown_fields
            .iter()
            .map(|p| bracket_indexes(p))
            .collect(),
    })
}

/// `spec.containers.0.foo` → `spec.containers[0].foo`
fn bracket_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for (i, seg) in path.split('.').enumerate() {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Upstream `applyDefaults`: what makes a manifest a static pod of this node.
fn apply_static_defaults(pod: &mut Pod, origin: Origin, node_name: &str) {
    if pod.metadata.uid.as_deref().unwrap_or("").is_empty() {
        pod.metadata.uid = Some(static_pod_uid(pod, origin, node_name));
    }
    let name = pod.metadata.name.take().unwrap_or_default();
    pod.metadata.name = Some(static_pod_name(&name, node_name));
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CONFIG_HASH.into(), uid);
    if let Origin::File(_) = origin {
        // So that node problems (NoExecute taints) never evict a static pod.
        let t = Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        };
        let list = spec.tolerations.get_or_insert_with(Vec::new);
        if !list.iter().any(|x| same_toleration(x, &t)) {
            list.push(t);
        }
    }
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
}

fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    s(&a.key) == s(&b.key)
        && s(&a.operator) == s(&b.operator)
        && s(&a.value) == s(&b.value)
        && s(&a.effect) == s(&b.effect)
}

/// `<name>-<nodeName>`, the node name lowercased, as upstream.
pub fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{}", node_name.to_ascii_lowercase())
}

/// The UID of a static pod: a hash of the decoded, defaulted object (so an
/// edited manifest is a new pod and an unchanged one keeps its UID across
/// restarts), then of the node and the source, as upstream does with MD5.
/// picolet hashes with SHA-256 and keeps 128 bits: the same 32 hex digits.
pub fn static_pod_uid(pod: &Pod, origin: Origin, node_name: &str) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    // serde_json of the k8s-openapi types is deterministic: fields in a fixed
    // order, maps sorted.
    match serde_json::to_vec(pod) {
        Ok(json) => h.update(&json),
        // Serializing plain data cannot fail; fall back to the Debug form.
        Err(_) => h.update(format!("{pod:?}").as_bytes()),
    }
    h.update(b"\n");
    match origin {
        Origin::File(path) => {
            h.update(format!("host:{node_name}").as_bytes());
            h.update(format!("file:{path}").as_bytes());
        }
        Origin::Url(url) => h.update(format!("url:{url}").as_bytes()),
    }
    crate::util::hex(&h.finish().as_ref()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n";

    fn ok(text: &str) -> DecodedPod {
        decode_pod(text.as_bytes(), Origin::File("/etc/m/web.yaml"), "Node-1").unwrap()
    }

    fn errs(text: &[u8]) -> Vec<String> {
        decode_pod(text, Origin::File("/etc/m/x.yaml"), "node-1")
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn static_pod_fields() {
        let d = ok(POD);
        let p = &d.pod;
        assert!(d.unknown_fields.is_empty());
        assert_eq!(p.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
        let ann = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.get(CONFIG_HASH), Some(&uid));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node-1"));
        assert_eq!(
            spec.tolerations.as_ref().unwrap(),
            &vec![Toleration {
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                ..Default::default()
            }]
        );
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn uid_is_stable_and_follows_content_node_and_file() {
        let a = ok(POD).pod.metadata.uid;
        assert_eq!(a, ok(POD).pod.metadata.uid);
        // The same pod written as JSON decodes to the same object.
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"web"},"name":"web"},
            "spec":{"containers":[{"image":"busybox:1.36","name":"c"}]}}"#;
        assert_eq!(a, ok(json).pod.metadata.uid);
        let edited = POD.replace("1.36", "1.37");
        assert_ne!(a, ok(&edited).pod.metadata.uid);
        let other_node =
            decode_pod(POD.as_bytes(), Origin::File("/etc/m/web.yaml"), "node-2").unwrap();
        assert_ne!(a, other_node.pod.metadata.uid);
        let other_file =
            decode_pod(POD.as_bytes(), Origin::File("/etc/m/web2.yaml"), "Node-1").unwrap();
        assert_ne!(a, other_file.pod.metadata.uid);
        // An explicit UID is kept.
        let with_uid = POD.replace("  name: web\n", "  name: web\n  uid: abc\n");
        assert_eq!(ok(&with_uid).pod.metadata.uid.as_deref(), Some("abc"));
    }

    #[test]
    fn url_pods_get_no_toleration() {
        let d = decode_pod(POD.as_bytes(), Origin::Url("http://x/pods"), "n").unwrap();
        assert!(d.pod.spec.unwrap().tolerations.is_none());
    }

    #[test]
    fn unknown_fields_are_reported_with_bracketed_paths() {
        let d = ok(&format!("{POD}    bogus: 1\n  extra: {{a: 1}}\n"));
        assert_eq!(
            d.unknown_fields,
            vec!["spec.containers[0].bogus", "spec.extra"]
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let t = format!("{POD}    ports:\n    - containerPort: eighty\n");
        let e = errs(t.as_bytes());
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "spec.containers[0].ports[0].containerPort: invalid type: string \"eighty\""
            ),
            "{e:?}"
        );
    }

    #[test]
    fn kind_and_version_are_required() {
        assert_eq!(
            errs(b"metadata: {name: x}\n"),
            vec!["apiVersion: Required value", "kind: Required value"]
        );
        assert_eq!(
            errs(b"apiVersion: apps/v1\nkind: Deployment\n"),
            vec![
                "apiVersion: Unsupported value: \"apps/v1\": supported values: \"v1\"",
                "kind: Unsupported value: \"Deployment\": supported values: \"Pod\""
            ]
        );
        assert_eq!(
            errs(b"apiVersion: v1\nkind: Pod\nspec: {containers: [{name: c, image: i}]}\n"),
            vec!["metadata.name: Required value"]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let e = errs(&[0xff, 0xfe, 0x00, 0x12, 0x80]);
        assert_eq!(e, vec!["not UTF-8 text (binary data at byte 0)"]);
        let e = errs(b"\x01\x02: [");
        assert!(e[0].starts_with("cannot parse as YAML or JSON"), "{e:?}");
        assert_eq!(
            errs(b"- a\n- b\n"),
            vec!["a pod manifest must be a mapping"]
        );
        assert!(errs(b"").join("").contains("empty document"));
    }

    #[test]
    fn validation_errors_come_back_all_at_once() {
        let t =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Web}\nspec:\n  containers:\n  - name: c\n";
        assert_eq!(
            errs(t.as_bytes()),
            vec![
                "metadata.name: Invalid value: \"Web-node-1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                "spec.containers[0].image: Required value",
            ]
        );
    }

    #[test]
    fn bracket_paths() {
        assert_eq!(bracket_indexes("a.0.b.12"), "a[0].b[12]");
        assert_eq!(bracket_indexes("metadata.x"), "metadata.x");
    }
}
