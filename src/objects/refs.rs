//! Which configMaps and secrets a pod references (upstream
//! `podutil.VisitPodConfigmapNames` / `VisitPodSecretNames`): volumes,
//! projected sources, env and envFrom of every container (init and
//! ephemeral too), and imagePullSecrets.

use crate::api::core::{Container, EnvFromSource, EnvVar, Pod};
use std::collections::BTreeSet;

/// The names a pod references, in its own namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

impl PodRefs {
    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty() && self.secrets.is_empty()
    }
}

fn env_refs(env: Option<&Vec<EnvVar>>, from: Option<&Vec<EnvFromSource>>, out: &mut PodRefs) {
    for e in from.into_iter().flatten() {
        if let Some(r) = &e.config_map_ref {
            out.config_maps.insert(r.name.clone());
        }
        if let Some(r) = &e.secret_ref {
            out.secrets.insert(r.name.clone());
        }
    }
    for e in env.into_iter().flatten() {
        let Some(src) = &e.value_from else { continue };
        if let Some(r) = &src.config_map_key_ref {
            out.config_maps.insert(r.name.clone());
        }
        if let Some(r) = &src.secret_key_ref {
            out.secrets.insert(r.name.clone());
        }
    }
}

/// The names one container's env and envFrom reference.
pub fn container_refs(c: &Container) -> PodRefs {
    let mut out = PodRefs::default();
    env_refs(c.env.as_ref(), c.env_from.as_ref(), &mut out);
    out.config_maps.remove("");
    out.secrets.remove("");
    out
}

/// Every configMap and secret name the pod references. Empty names (which
/// API validation lets through for imagePullSecrets) are left out.
pub fn pod_refs(pod: &Pod) -> PodRefs {
    let mut out = PodRefs::default();
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        env_refs(c.env.as_ref(), c.env_from.as_ref(), &mut out);
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        env_refs(c.env.as_ref(), c.env_from.as_ref(), &mut out);
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        out.secrets.insert(s.name.clone());
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            out.config_maps.insert(c.name.clone());
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.secrets.insert(name);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                out.config_maps.insert(c.name.clone());
            }
            if let Some(s) = &p.secret {
                out.secrets.insert(s.name.clone());
            }
        }
    }
    out.config_maps.remove("");
    out.secrets.remove("");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_reference() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {
                "imagePullSecrets": [{"name": "pull"}, {"name": ""}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
                "containers": [{"name": "c",
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-key", "key": "k"}}},
                            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-key", "key": "k"}}},
                            {"name": "C", "value": "x"}],
                    "envFrom": [{"configMapRef": {"name": "cm-env"}, "prefix": "P_"}]}],
                "ephemeralContainers": [{"name": "e", "envFrom": [{"configMapRef": {"name": "eph"}}]}],
                "volumes": [
                    {"name": "v1", "configMap": {"name": "cm-vol"}},
                    {"name": "v2", "secret": {"secretName": "s-vol"}},
                    {"name": "v3", "projected": {"sources": [
                        {"configMap": {"name": "kube-root-ca.crt"}},
                        {"secret": {"name": "s-proj"}},
                        {"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "v4", "emptyDir": {}}]
            }
        }))
        .unwrap();
        let r = pod_refs(&pod);
        let v = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            v(&r.config_maps),
            ["cm-env", "cm-key", "cm-vol", "eph", "kube-root-ca.crt"]
        );
        assert_eq!(
            v(&r.secrets),
            ["init-env", "pull", "s-key", "s-proj", "s-vol"]
        );
        assert!(pod_refs(&Pod::default()).is_empty());
    }
}
