//! The API server's field defaulting for pods (upstream
//! pkg/apis/core/v1/defaults.go), for pods that never pass through an API
//! server: static pods from a file or URL. The kubelet code downstream
//! relies on these being set (restartPolicy, probe timings, pull policy …).

use crate::api::core::{
    Container, HTTPGetAction, Pod, PodSecurityContext, Probe, ResourceRequirements, Volume,
};
use k8s_openapi::api::core::v1::EmptyDirVolumeSource;

pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Mode of files in secret, configMap, downwardAPI and projected volumes.
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;

/// Applies `SetDefaults_Pod` and everything it implies, in place.
pub fn apply(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    set_if_none(&mut spec.dns_policy, "ClusterFirst");
    set_if_none(&mut spec.restart_policy, "Always");
    set_if_none(&mut spec.scheduler_name, DEFAULT_SCHEDULER_NAME);
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    }
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext::default());
    }
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(true);
    }
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        volume(v);
    }
    // Ephemeral containers cannot be in a manifest's create request upstream,
    // but default them alike if present.
    for ec in spec.ephemeral_containers.iter_mut().flatten() {
        set_if_none(
            &mut ec.termination_message_path,
            DEFAULT_TERMINATION_MESSAGE_PATH,
        );
        set_if_none(&mut ec.termination_message_policy, "File");
        let policy = pull_policy_for(ec.image.as_deref().unwrap_or(""));
        set_if_none(&mut ec.image_pull_policy, policy);
    }
}

fn set_if_none(field: &mut Option<String>, value: &str) {
    if field.is_none() {
        *field = Some(value.to_string());
    }
}

fn container(c: &mut Container, host_network: bool) {
    let policy = pull_policy_for(c.image.as_deref().unwrap_or(""));
    set_if_none(&mut c.image_pull_policy, policy);
    set_if_none(
        &mut c.termination_message_path,
        DEFAULT_TERMINATION_MESSAGE_PATH,
    );
    set_if_none(&mut c.termination_message_policy, "File");
    for p in c.ports.iter_mut().flatten() {
        set_if_none(&mut p.protocol, "TCP");
        // With the host's network a container port is a host port.
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    if let Some(r) = c.resources.as_mut() {
        requests_from_limits(r);
    }
    for probe in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        self::probe(probe);
    }
    if let Some(lc) = c.lifecycle.as_mut() {
        for h in [lc.post_start.as_mut(), lc.pre_stop.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(hg) = h.http_get.as_mut() {
                http_get(hg);
            }
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(fr) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_if_none(&mut fr.api_version, "v1");
        }
    }
}

/// `Always` for `:latest` or an untagged name, else `IfNotPresent`
/// (upstream's rule: a digest without a tag is `IfNotPresent`).
pub fn pull_policy_for(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    // A ':' after the last '/' separates the tag (before it: a registry port).
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}

/// Limits without requests give requests equal to the limits.
fn requests_from_limits(r: &mut ResourceRequirements) {
    let Some(limits) = r.limits.as_ref() else {
        return;
    };
    let requests = r.requests.get_or_insert_with(Default::default);
    for (k, v) in limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

fn probe(p: &mut Probe) {
    for (field, value) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(value);
        }
    }
    if let Some(hg) = p.http_get.as_mut() {
        http_get(hg);
    }
    if let Some(g) = p.grpc.as_mut() {
        if g.service.is_none() {
            g.service = Some(String::new());
        }
    }
}

fn http_get(h: &mut HTTPGetAction) {
    set_if_none(&mut h.path, "/");
    set_if_none(&mut h.scheme, "HTTP");
}

fn volume(v: &mut Volume) {
    if let Some(hp) = v.host_path.as_mut() {
        set_if_none(&mut hp.type_, "");
    }
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.config_map.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.downward_api.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for item in s.items.iter_mut().flatten() {
            if let Some(fr) = item.field_ref.as_mut() {
                set_if_none(&mut fr.api_version, "v1");
            }
        }
    }
    if let Some(s) = v.projected.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if crate::sources::validation::volume_sources(v).is_empty() {
        // SetDefaults_Volume: no source at all means an emptyDir.
        v.empty_dir = Some(EmptyDirVolumeSource::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pull_policy_by_tag() {
        for (img, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("localhost:5000/busybox", "Always"),
            ("localhost:5000/busybox:v1", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
            ("busybox:latest@sha256:abcd", "Always"),
        ] {
            assert_eq!(pull_policy_for(img), want, "{img}");
        }
    }

    #[test]
    fn defaults_every_field_the_kubelet_relies_on() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "hostNetwork": true,
                "containers": [{
                    "name": "c", "image": "nginx:1.25",
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Mi"}},
                    "livenessProbe": {"httpGet": {"port": 80}, "periodSeconds": 5},
                    "readinessProbe": {"grpc": {"port": 9000}},
                    "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
                }],
                "initContainers": [{"name": "i", "image": "busybox"}],
                "volumes": [{"name": "v"}, {"name": "h", "hostPath": {"path": "/x"}}]
            }
        }))
        .unwrap();
        apply(&mut pod);
        let v = serde_json::to_value(&pod).unwrap();
        let s = &v["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["enableServiceLinks"], true);
        assert_eq!(s["securityContext"], json!({}));
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 80, "hostPort": 80, "protocol": "TCP"})
        );
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Mi"})
        );
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "periodSeconds": 5,
                   "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(
            c["readinessProbe"]["grpc"],
            json!({"port": 9000, "service": ""})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(s["initContainers"][0]["imagePullPolicy"], "Always");
        assert_eq!(s["volumes"][0], json!({"name": "v", "emptyDir": {}}));
        assert_eq!(
            s["volumes"][1]["hostPath"],
            json!({"path": "/x", "type": ""})
        );
    }

    #[test]
    fn defaulting_is_idempotent() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        apply(&mut pod);
        let once = pod.clone();
        apply(&mut pod);
        assert_eq!(pod, once);
    }
}
