//! configMap, secret and the API-backed sources of projected volumes
//! (upstream pkg/volume/configmap, secret, projected): what the object
//! manager fetched for a pod ([`ApiData`], gathered by [`fetch`]) and the
//! payloads made from it (upstream `MakePayload`), pure so the planner
//! stays testable.

use super::atomic::{clean_path, FileProjection};
use super::downward::file_mode;
use crate::api::core::{ConfigMap, KeyToPath, Pod, Secret};
use crate::objects::token::{TokenSpec, DEFAULT_EXPIRATION_SECONDS};
use crate::objects::{GetError, ObjectManager};
use std::collections::BTreeMap;
use std::rc::Rc;

/// What the API server holds for one pod's volumes.
#[derive(Debug, Clone, Default)]
pub struct ApiData {
    /// The pod may use API objects (an API pod, with a client); when
    /// `false` the planner refuses API-backed volumes as before.
    pub available: bool,
    pub config_maps: BTreeMap<String, Result<Rc<ConfigMap>, GetError>>,
    pub secrets: BTreeMap<String, Result<Rc<Secret>, GetError>>,
    /// Service account tokens by (volume, index of the projected source).
    pub tokens: BTreeMap<(String, usize), Result<String, String>>,
    /// Volumes set up before whose new contents cannot be had: kept as
    /// they are (upstream keeps a mounted volume when a remount fails, so
    /// a running pod is not held up by a deleted configMap).
    pub keep: std::collections::BTreeSet<String>,
}

/// The token a projected `serviceAccountToken` source asks for.
pub fn token_spec(pod: &Pod, src: &crate::api::core::ServiceAccountTokenProjection) -> TokenSpec {
    let spec = pod.spec.as_ref();
    TokenSpec {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        audiences: src
            .audience
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect(),
        expiration_seconds: src.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
        pod_name: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// Fetches every configMap, secret and token the pod's volumes need.
pub async fn fetch(objects: &ObjectManager, pod: &Pod) -> ApiData {
    let mut out = ApiData::default();
    if !objects.serves(pod) {
        return out;
    }
    out.available = true;
    objects.register_pod(pod);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let mut cms: Vec<&str> = Vec::new();
        let mut secrets: Vec<&str> = Vec::new();
        if let Some(c) = &v.config_map {
            cms.push(&c.name);
        }
        if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            secrets.push(n);
        }
        for (i, p) in v
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .enumerate()
        {
            if let Some(c) = &p.config_map {
                cms.push(&c.name);
            }
            if let Some(s) = &p.secret {
                secrets.push(&s.name);
            }
            if let Some(t) = &p.service_account_token {
                let tok = objects.token(&token_spec(pod, t)).await;
                out.tokens.insert((v.name.clone(), i), tok);
            }
        }
        for n in cms {
            if !out.config_maps.contains_key(n) {
                let r = objects.config_map(ns, n).await;
                out.config_maps.insert(n.to_string(), r);
            }
        }
        for n in secrets {
            if !out.secrets.contains_key(n) {
                let r = objects.secret(ns, n).await;
                out.secrets.insert(n.to_string(), r);
            }
        }
    }
    out
}

/// One payload file at a checked path.
fn put(
    out: &mut BTreeMap<String, FileProjection>,
    path: &str,
    data: Vec<u8>,
    mode: u32,
) -> Result<(), String> {
    let p = clean_path(path)?;
    out.insert(p, FileProjection { data, mode });
    Ok(())
}

fn item_mode(item: &KeyToPath, default_mode: u32) -> Result<u32, String> {
    match item.mode {
        Some(m) => file_mode(m, &format!("items[{}].mode", item.key)),
        None => Ok(default_mode),
    }
}

/// Upstream configmap `MakePayload`: every key of `data` and `binaryData`
/// as a file, or the listed items (a missing key fails unless optional).
pub fn config_map_payload(
    items: &[KeyToPath],
    cm: &ConfigMap,
    default_mode: u32,
    optional: bool,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let text = |k: &str| {
        cm.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| v.as_bytes().to_vec())
    };
    let binary = |k: &str| {
        cm.binary_data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| v.0.clone())
    };
    let mut out = BTreeMap::new();
    if items.is_empty() {
        for (k, v) in cm.data.iter().flatten() {
            put(&mut out, k, v.as_bytes().to_vec(), default_mode)?;
        }
        for (k, v) in cm.binary_data.iter().flatten() {
            put(&mut out, k, v.0.clone(), default_mode)?;
        }
        return Ok(out);
    }
    for item in items {
        let Some(data) = text(&item.key).or_else(|| binary(&item.key)) else {
            if optional {
                continue;
            }
            return Err(format!(
                "configmap references non-existent config key: {}",
                item.key
            ));
        };
        put(&mut out, &item.path, data, item_mode(item, default_mode)?)?;
    }
    Ok(out)
}

/// Upstream secret `MakePayload`.
pub fn secret_payload(
    items: &[KeyToPath],
    s: &Secret,
    default_mode: u32,
    optional: bool,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let mut out = BTreeMap::new();
    if items.is_empty() {
        for (k, v) in s.data.iter().flatten() {
            put(&mut out, k, v.0.clone(), default_mode)?;
        }
        return Ok(out);
    }
    for item in items {
        let Some(data) = s.data.as_ref().and_then(|d| d.get(&item.key)) else {
            if optional {
                continue;
            }
            return Err(format!("references non-existent secret key: {}", item.key));
        };
        put(
            &mut out,
            &item.path,
            data.0.clone(),
            item_mode(item, default_mode)?,
        )?;
    }
    Ok(out)
}

/// The object a volume source names: `Ok(None)` when it is missing and
/// optional (an empty object then, as upstream).
pub fn lookup<'a, T>(
    map: &'a BTreeMap<String, Result<Rc<T>, GetError>>,
    name: &str,
    optional: bool,
) -> Result<Option<&'a T>, String> {
    match map.get(name) {
        Some(Ok(o)) => Ok(Some(o)),
        Some(Err(e)) if e.is_not_found() && optional => Ok(None),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("object {name:?} was not fetched")),
    }
}

/// Upstream `utilerrors.NewAggregate(...).Error()`.
pub fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn cm() -> ConfigMap {
        ConfigMap {
            data: Some(
                [("app.conf", "a=1"), ("other", "x")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            binary_data: Some([("blob".to_string(), ByteString(vec![0, 159, 255]))].into()),
            ..Default::default()
        }
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    #[test]
    fn config_map_payloads() {
        let all = config_map_payload(&[], &cm(), 0o644, false).unwrap();
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            ["app.conf", "blob", "other"]
        );
        assert_eq!(all["blob"].data, vec![0, 159, 255]);
        assert!(all.values().all(|f| f.mode == 0o644));
        let some = config_map_payload(
            &[
                item("app.conf", "conf/app.conf", Some(0o400)),
                item("blob", "b", None),
            ],
            &cm(),
            0o640,
            false,
        )
        .unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), ["b", "conf/app.conf"]);
        assert_eq!(some["conf/app.conf"].mode, 0o400);
        assert_eq!(some["b"].mode, 0o640);
        assert_eq!(
            config_map_payload(&[item("nope", "n", None)], &cm(), 0o644, false).unwrap_err(),
            "configmap references non-existent config key: nope"
        );
        assert!(
            config_map_payload(&[item("nope", "n", None)], &cm(), 0o644, true)
                .unwrap()
                .is_empty()
        );
        // A path escaping the volume is refused, nothing else written.
        assert!(
            config_map_payload(&[item("other", "../x", None)], &cm(), 0o644, false)
                .unwrap_err()
                .contains("must not contain '..'")
        );
        assert!(
            config_map_payload(&[item("other", "/etc/x", None)], &cm(), 0o644, false)
                .unwrap_err()
                .contains("must be relative")
        );
        assert!(
            config_map_payload(&[item("other", "x", Some(0o1777))], &cm(), 0o644, false).is_err()
        );
    }

    #[test]
    fn secret_payloads() {
        let s = Secret {
            data: Some([("tls.key".to_string(), ByteString(b"k".to_vec()))].into()),
            ..Default::default()
        };
        let p = secret_payload(&[], &s, 0o400, false).unwrap();
        assert_eq!(p["tls.key"].mode, 0o400);
        assert_eq!(
            secret_payload(&[item("x", "x", None)], &s, 0o644, false).unwrap_err(),
            "references non-existent secret key: x"
        );
        let bad = Secret {
            data: Some([("..data".to_string(), ByteString(vec![]))].into()),
            ..Default::default()
        };
        assert!(secret_payload(&[], &bad, 0o644, false).is_err());
    }

    #[test]
    fn lookups_and_aggregates() {
        let mut m: BTreeMap<String, Result<Rc<ConfigMap>, GetError>> = BTreeMap::new();
        m.insert(
            "a".into(),
            Err(GetError::NotFound("configmap \"a\" not found".into())),
        );
        m.insert("b".into(), Err(GetError::Other("failed to sync".into())));
        assert!(lookup(&m, "a", true).unwrap().is_none());
        assert_eq!(
            lookup(&m, "a", false).unwrap_err(),
            "configmap \"a\" not found"
        );
        assert_eq!(lookup(&m, "b", true).unwrap_err(), "failed to sync");
        assert_eq!(aggregate(&["x".into()]), "x");
        assert_eq!(aggregate(&["x".into(), "y".into()]), "[x, y]");
    }
}
