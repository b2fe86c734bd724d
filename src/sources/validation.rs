//! Pod validation: a port of upstream `ValidatePodCreate`
//! (pkg/apis/core/validation) for the fields a kubelet acts on. Errors read
//! like the API server's (`spec.containers[0].image: Required value`), so a
//! user can search for them.
//!
//! Left out: fields only the control plane acts on (affinity, topology spread,
//! scheduling gates, resource claims, ephemeral containers' update rules),
//! Windows options and volume types picolet does not mount (cloud disks,
//! NFS, …); those are accepted unchecked.

use crate::api::core::{
    Container, ContainerPort, EnvVar, LifecycleHandler, PodSpec, Probe, ResourceRequirements,
    Volume,
};
use crate::api::quantity::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One validation error: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.containers[0].image`
    pub field: String,
    /// `Required value`, `Invalid value: "x": …`, as upstream prints them.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// A value as Go's `field.Error` prints it: strings quoted, numbers bare.
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(i) => write!(f, "{i}"),
        }
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Str(s)
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(s: &'a String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value<'_> {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<i32> for Value<'_> {
    fn from(i: i32) -> Self {
        Value::Int(i as i64)
    }
}

pub fn required(field: &Path) -> FieldError {
    err(field, "Required value".into())
}
pub fn forbidden(field: &Path, detail: &str) -> FieldError {
    err(field, format!("Forbidden: {detail}"))
}
pub fn invalid<'a>(field: &Path, value: impl Into<Value<'a>>, detail: &str) -> FieldError {
    err(field, format!("Invalid value: {}: {detail}", value.into()))
}
pub fn duplicate<'a>(field: &Path, value: impl Into<Value<'a>>) -> FieldError {
    err(field, format!("Duplicate value: {}", value.into()))
}
pub fn not_found<'a>(field: &Path, value: impl Into<Value<'a>>) -> FieldError {
    err(field, format!("Not found: {}", value.into()))
}
pub fn not_supported(field: &Path, value: &str, supported: &[&str]) -> FieldError {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    err(
        field,
        format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
    )
}
pub fn too_long(field: &Path, max: usize) -> FieldError {
    err(field, format!("Too long: may not be more than {max} bytes"))
}

fn err(field: &Path, reason: String) -> FieldError {
    FieldError {
        field: field.0.clone(),
        reason,
    }
}

/// A field path being built: `spec.containers[0].ports[1].name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }
    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }
    pub fn key(&self, k: &str) -> Self {
        Path(format!("{}[{k}]", self.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// ---- name formats (k8s.io/apimachinery/pkg/util/validation) ----

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_dns1123_label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_alnum_lower(b[0])
        && is_alnum_lower(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
}

/// Messages for a value that is not a DNS-1123 label (empty: valid).
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns1123_label_shape(s) {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .into(),
        );
    }
    errs
}

/// Messages for a value that is not a DNS-1123 subdomain (empty: valid).
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if s.is_empty() || !s.split('.').all(is_dns1123_label_shape) {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .into(),
        );
    }
    errs
}

/// IANA service names (named ports).
fn iana_svc_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push("must be no more than 15 characters".into());
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= 63
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
}

/// Label and annotation keys: `[prefix/]name`.
fn qualified_name(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".into());
        } else {
            errs.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
    }
    if !is_qualified_name_part(name) {
        errs.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
             '123-abc', regex used for validation is \
             '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                .into(),
        );
    }
    errs
}

fn label_value(s: &str) -> Vec<String> {
    if s.is_empty() || is_qualified_name_part(s) {
        Vec::new()
    } else {
        vec![
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
              '_' or '.', and must start and end with an alphanumeric character (e.g. \
              'MyValue',  or 'my_value',  or '12345', regex used for validation is \
              '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .into(),
        ]
    }
}

fn push_all(errs: &mut Vec<FieldError>, field: &Path, value: &str, msgs: Vec<String>) {
    for m in msgs {
        errs.push(invalid(field, value, &m));
    }
}

// ---- the pod ----

/// Validates a decoded and defaulted pod as the API server does on create.
/// Returns every error found (empty: valid).
pub fn validate_pod(pod: &crate::api::core::Pod) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = Path::new("metadata");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        errs.push(required(&meta.child("name")));
    } else {
        push_all(
            &mut errs,
            &meta.child("name"),
            name,
            dns1123_subdomain(name),
        );
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    if ns.is_empty() {
        errs.push(required(&meta.child("namespace")));
    } else {
        push_all(&mut errs, &meta.child("namespace"), ns, dns1123_label(ns));
    }
    if let Some(labels) = &pod.metadata.labels {
        let p = meta.child("labels");
        for (k, v) in labels {
            push_all(&mut errs, &p, k, qualified_name(k));
            push_all(&mut errs, &p, v, label_value(v));
        }
    }
    if let Some(annotations) = &pod.metadata.annotations {
        let p = meta.child("annotations");
        let mut total = 0usize;
        for (k, v) in annotations {
            push_all(&mut errs, &p, k, qualified_name(&k.to_ascii_lowercase()));
            total += k.len() + v.len();
        }
        // TotalAnnotationSizeLimitB
        if total > 256 * 1024 {
            errs.push(too_long(&p, 256 * 1024));
        }
    }
    match &pod.spec {
        Some(spec) => validate_spec(spec, &Path::new("spec"), &mut errs),
        None => errs.push(required(&Path::new("spec"))),
    }
    errs
}

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];

fn validate_spec(spec: &PodSpec, p: &Path, errs: &mut Vec<FieldError>) {
    let volumes = validate_volumes(
        spec.volumes.as_deref().unwrap_or(&[]),
        &p.child("volumes"),
        errs,
    );
    let host_network = spec.host_network.unwrap_or(false);
    let grace = spec.termination_grace_period_seconds;

    // Regular containers first: init containers are checked against their names.
    let mut names = BTreeSet::new();
    let cp = p.child("containers");
    if spec.containers.is_empty() {
        errs.push(required(&cp));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let ip = cp.index(i);
        validate_container_common(c, &ip, &volumes, grace, errs);
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            errs.push(duplicate(&ip.child("name"), &c.name));
        }
        if c.restart_policy.is_some() {
            errs.push(forbidden(
                &ip.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
        if let Some(probe) = &c.liveness_probe {
            validate_success_threshold_is_one(probe, &ip.child("livenessProbe"), errs);
        }
        if let Some(probe) = &c.startup_probe {
            validate_success_threshold_is_one(probe, &ip.child("startupProbe"), errs);
        }
    }
    let icp = p.child("initContainers");
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let ip = icp.index(i);
        validate_container_common(c, &ip, &volumes, grace, errs);
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            errs.push(duplicate(&ip.child("name"), &c.name));
        }
        let sidecar = match c.restart_policy.as_deref() {
            None => false,
            Some("Always") => true,
            Some(other) => {
                errs.push(not_supported(
                    &ip.child("restartPolicy"),
                    other,
                    &["Always"],
                ));
                false
            }
        };
        if sidecar {
            if let Some(probe) = &c.liveness_probe {
                validate_success_threshold_is_one(probe, &ip.child("livenessProbe"), errs);
            }
            if let Some(probe) = &c.startup_probe {
                validate_success_threshold_is_one(probe, &ip.child("startupProbe"), errs);
            }
        } else {
            let msg = "may not be set for init containers without restartPolicy=Always";
            if c.lifecycle.is_some() {
                errs.push(forbidden(&ip.child("lifecycle"), msg));
            }
            if c.liveness_probe.is_some() {
                errs.push(forbidden(&ip.child("livenessProbe"), msg));
            }
            if c.readiness_probe.is_some() {
                errs.push(forbidden(&ip.child("readinessProbe"), msg));
            }
            if c.startup_probe.is_some() {
                errs.push(forbidden(&ip.child("startupProbe"), msg));
            }
        }
    }

    validate_host_ports(spec, p, errs);
    if host_network {
        let mut check = |list: &[Container], lp: &Path| {
            for (i, c) in list.iter().enumerate() {
                for (j, port) in c.ports.iter().flatten().enumerate() {
                    let hp = port.host_port.unwrap_or(0);
                    if hp != port.container_port {
                        errs.push(invalid(
                            &lp.index(i).child("ports").index(j).child("hostPort"),
                            hp,
                            "must match `containerPort` when `hostNetwork` is true",
                        ));
                    }
                }
            }
        };
        check(&spec.containers, &cp);
        check(spec.init_containers.as_deref().unwrap_or(&[]), &icp);
    }

    match spec.restart_policy.as_deref() {
        None => errs.push(required(&p.child("restartPolicy"))),
        Some(rp) if !RESTART_POLICIES.contains(&rp) => errs.push(not_supported(
            &p.child("restartPolicy"),
            rp,
            RESTART_POLICIES,
        )),
        _ => {}
    }
    match spec.dns_policy.as_deref() {
        None => errs.push(required(&p.child("dnsPolicy"))),
        Some(d) if !DNS_POLICIES.contains(&d) => {
            errs.push(not_supported(&p.child("dnsPolicy"), d, DNS_POLICIES))
        }
        Some("None") => {
            let servers = spec
                .dns_config
                .as_ref()
                .and_then(|c| c.nameservers.as_ref())
                .map_or(0, |n| n.len());
            if servers == 0 {
                errs.push(
                    required(&p.child("dnsConfig").child("nameservers")).with_detail(
                        "must provide at least one DNS nameserver when DNSPolicy is None",
                    ),
                );
            }
        }
        _ => {}
    }
    if let Some(cfg) = &spec.dns_config {
        let dp = p.child("dnsConfig");
        let ns = cfg.nameservers.as_deref().unwrap_or(&[]);
        if ns.len() > 3 {
            errs.push(invalid(
                &dp.child("nameservers"),
                &ns.join(","),
                "must not have more than 3 nameservers",
            ));
        }
        for (i, s) in ns.iter().enumerate() {
            if s.parse::<std::net::IpAddr>().is_err() {
                errs.push(invalid(
                    &dp.child("nameservers").index(i),
                    s,
                    "must be valid IP address",
                ));
            }
        }
        if cfg.searches.as_ref().map_or(0, |s| s.len()) > 32 {
            errs.push(invalid(
                &dp.child("searches"),
                &cfg.searches.as_deref().unwrap_or(&[]).join(" "),
                "must not have more than 32 search paths",
            ));
        }
    }
    if let Some(ads) = spec.active_deadline_seconds {
        if !(1..=i32::MAX as i64).contains(&ads) {
            errs.push(invalid(
                &p.child("activeDeadlineSeconds"),
                ads,
                &format!("must be between 1 and {}, inclusive", i32::MAX),
            ));
        }
    }
    if let Some(g) = grace {
        if g < 0 {
            errs.push(invalid(
                &p.child("terminationGracePeriodSeconds"),
                g,
                "must be greater than or equal to 0",
            ));
        }
    }
    for (field, v) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            push_all(errs, &p.child(field), v, dns1123_label(v));
        }
    }
    if spec.share_process_namespace == Some(true) && spec.host_pid == Some(true) {
        errs.push(invalid(
            &p.child("shareProcessNamespace"),
            "true",
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
}

impl FieldError {
    fn with_detail(mut self, detail: &str) -> Self {
        self.reason = format!("{}: {detail}", self.reason);
        self
    }
}

/// Every volume name, and whether it is a valid one (mounts referring to an
/// invalid volume are not reported twice).
fn validate_volumes(vols: &[Volume], p: &Path, errs: &mut Vec<FieldError>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in vols.iter().enumerate() {
        let vp = p.index(i);
        if v.name.is_empty() {
            errs.push(required(&vp.child("name")));
        } else {
            push_all(errs, &vp.child("name"), &v.name, dns1123_label(&v.name));
            if !names.insert(v.name.clone()) {
                errs.push(duplicate(&vp.child("name"), &v.name));
            }
        }
        let sources = volume_sources(v);
        if sources.is_empty() {
            errs.push(required(&vp).with_detail("must specify a volume type"));
        }
        for extra in sources.iter().skip(1) {
            errs.push(forbidden(
                &vp.child(extra),
                "may not specify more than 1 volume type",
            ));
        }
        if let Some(hp) = &v.host_path {
            let hpp = vp.child("hostPath");
            if hp.path.is_empty() {
                errs.push(required(&hpp.child("path")));
            } else if hp.path.split('/').any(|c| c == "..") {
                errs.push(invalid(
                    &hpp.child("path"),
                    &hp.path,
                    "must not contain '..'",
                ));
            }
            const TYPES: &[&str] = &[
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ];
            if let Some(t) = hp.type_.as_deref() {
                if !TYPES.contains(&t) {
                    errs.push(not_supported(&hpp.child("type"), t, &TYPES[1..]));
                }
            }
        }
        if let Some(ed) = &v.empty_dir {
            let edp = vp.child("emptyDir");
            if let Some(m) = ed.medium.as_deref() {
                if !(m.is_empty() || m == "Memory" || m.starts_with("HugePages")) {
                    errs.push(not_supported(
                        &edp.child("medium"),
                        m,
                        &["", "Memory", "HugePages"],
                    ));
                }
            }
            if let Some(sl) = &ed.size_limit {
                validate_quantity(&sl.0, &edp.child("sizeLimit"), errs);
            }
        }
    }
    names
}

/// The volume sources a volume names, in upstream's checking order.
pub(crate) fn volume_sources(v: &Volume) -> Vec<&'static str> {
    [
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("secret", v.secret.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("flocker", v.flocker.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("rbd", v.rbd.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("cinder", v.cinder.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("fc", v.fc.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("configMap", v.config_map.is_some()),
        ("storageos", v.storageos.is_some()),
        ("projected", v.projected.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(name, _)| name)
    .collect()
}

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];

fn validate_container_common(
    c: &Container,
    p: &Path,
    volumes: &BTreeSet<String>,
    grace: Option<i64>,
    errs: &mut Vec<FieldError>,
) {
    if c.name.is_empty() {
        errs.push(required(&p.child("name")));
    } else {
        push_all(errs, &p.child("name"), &c.name, dns1123_label(&c.name));
    }
    match c.image.as_deref() {
        None | Some("") => errs.push(required(&p.child("image"))),
        Some(img) if img.trim() != img => errs.push(invalid(
            &p.child("image"),
            img,
            "must not have leading or trailing whitespace",
        )),
        _ => {}
    }
    match c.image_pull_policy.as_deref() {
        None => errs.push(required(&p.child("imagePullPolicy"))),
        Some(v) if !PULL_POLICIES.contains(&v) => {
            errs.push(not_supported(&p.child("imagePullPolicy"), v, PULL_POLICIES))
        }
        _ => {}
    }
    match c.termination_message_policy.as_deref() {
        None => errs.push(required(&p.child("terminationMessagePolicy"))),
        Some(v) if !TERMINATION_MESSAGE_POLICIES.contains(&v) => errs.push(not_supported(
            &p.child("terminationMessagePolicy"),
            v,
            TERMINATION_MESSAGE_POLICIES,
        )),
        _ => {}
    }
    validate_ports(c.ports.as_deref().unwrap_or(&[]), &p.child("ports"), errs);
    validate_env(c.env.as_deref().unwrap_or(&[]), &p.child("env"), errs);
    validate_mounts(c, p, volumes, errs);
    if let Some(r) = &c.resources {
        validate_resources(r, &p.child("resources"), errs);
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(probe) = probe {
            validate_probe(probe, &p.child(field), errs);
        }
    }
    if let Some(lc) = &c.lifecycle {
        let lp = p.child("lifecycle");
        for (field, h) in [("postStart", &lc.post_start), ("preStop", &lc.pre_stop)] {
            if let Some(h) = h {
                validate_lifecycle_handler(h, &lp.child(field), grace, errs);
            }
        }
    }
}

fn validate_ports(ports: &[ContainerPort], p: &Path, errs: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = p.index(i);
        if let Some(n) = port.name.as_deref().filter(|n| !n.is_empty()) {
            push_all(errs, &pp.child("name"), n, iana_svc_name(n));
            if !names.insert(n.to_string()) {
                errs.push(duplicate(&pp.child("name"), n));
            }
        }
        if port.container_port == 0 {
            errs.push(required(&pp.child("containerPort")));
        } else if !(1..=65535).contains(&port.container_port) {
            errs.push(invalid(
                &pp.child("containerPort"),
                port.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(hp) = port.host_port.filter(|hp| *hp != 0) {
            if !(1..=65535).contains(&hp) {
                errs.push(invalid(
                    &pp.child("hostPort"),
                    hp,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        match port.protocol.as_deref() {
            None => errs.push(required(&pp.child("protocol"))),
            Some("TCP" | "UDP" | "SCTP") => {}
            Some(other) => errs.push(not_supported(
                &pp.child("protocol"),
                other,
                &["SCTP", "TCP", "UDP"],
            )),
        }
        if let Some(ip) = port.host_ip.as_deref().filter(|s| !s.is_empty()) {
            if ip.parse::<std::net::IpAddr>().is_err() {
                errs.push(invalid(
                    &pp.child("hostIP"),
                    ip,
                    "must be a valid IP address",
                ));
            }
        }
    }
}

/// Host ports must be unique per (hostIP, port, protocol) across the pod.
fn validate_host_ports(spec: &PodSpec, p: &Path, errs: &mut Vec<FieldError>) {
    let mut seen: BTreeSet<(String, i32, String)> = BTreeSet::new();
    let lists = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
        ),
        ("containers", &spec.containers[..]),
    ];
    for (field, list) in lists {
        for (i, c) in list.iter().enumerate() {
            for (j, port) in c.ports.iter().flatten().enumerate() {
                let hp = port.host_port.unwrap_or(0);
                if hp == 0 {
                    continue;
                }
                let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
                let ip = port.host_ip.clone().unwrap_or_default();
                if !seen.insert((ip, hp, proto.clone())) {
                    errs.push(duplicate(
                        &p.child(field)
                            .index(i)
                            .child("ports")
                            .index(j)
                            .child("hostPort"),
                        format!("{hp}/{proto}").as_str(),
                    ));
                }
            }
        }
    }
}

/// Env var names: printable ASCII except '=' (upstream's relaxed rule, GA in 1.34).
fn env_var_name(s: &str) -> Vec<String> {
    if !s.is_empty() && s.bytes().all(|c| (32..=126).contains(&c) && c != b'=') {
        Vec::new()
    } else {
        vec![
            "a valid environment variable name must consist only of printable ASCII \
              characters other than '='"
                .into(),
        ]
    }
}

const FIELD_REF_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELD_REFS: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
];

fn validate_env(env: &[EnvVar], p: &Path, errs: &mut Vec<FieldError>) {
    for (i, e) in env.iter().enumerate() {
        let ep = p.index(i);
        if e.name.is_empty() {
            errs.push(required(&ep.child("name")));
        } else {
            push_all(errs, &ep.child("name"), &e.name, env_var_name(&e.name));
        }
        let Some(vf) = &e.value_from else { continue };
        let vp = ep.child("valueFrom");
        let n = [
            vf.field_ref.is_some(),
            vf.resource_field_ref.is_some(),
            vf.config_map_key_ref.is_some(),
            vf.secret_key_ref.is_some(),
            vf.file_key_ref.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) && n != 0 {
            errs.push(invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        if n == 0 {
            errs.push(invalid(&vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
        } else if n > 1 {
            errs.push(invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        if let Some(fr) = &vf.field_ref {
            let fp = vp.child("fieldRef").child("fieldPath");
            let path = fr.field_path.as_str();
            // Whole label/annotation maps only work in downwardAPI volumes.
            let ok = FIELD_REF_PATHS.contains(&path)
                || is_subscript_path(path, "metadata.labels")
                || is_subscript_path(path, "metadata.annotations");
            if path.is_empty() {
                errs.push(required(&fp));
            } else if !ok {
                errs.push(not_supported(&fp, path, FIELD_REF_PATHS));
            }
        }
        if let Some(rr) = &vf.resource_field_ref {
            let rp = vp.child("resourceFieldRef").child("resource");
            if !RESOURCE_FIELD_REFS.contains(&rr.resource.as_str())
                && !rr.resource.starts_with("limits.hugepages-")
                && !rr.resource.starts_with("requests.hugepages-")
            {
                errs.push(not_supported(&rp, &rr.resource, RESOURCE_FIELD_REFS));
            }
        }
        for (field, key) in [
            (
                "configMapKeyRef",
                vf.config_map_key_ref.as_ref().map(|r| &r.key),
            ),
            ("secretKeyRef", vf.secret_key_ref.as_ref().map(|r| &r.key)),
        ] {
            if let Some(k) = key {
                if k.is_empty() {
                    errs.push(required(&vp.child(field).child("key")));
                }
            }
        }
    }
}

/// `metadata.labels['key']`
fn is_subscript_path(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .and_then(|r| r.strip_prefix("['"))
        .and_then(|r| r.strip_suffix("']"))
        .is_some_and(|k| qualified_name(k).is_empty())
}

fn validate_mounts(
    c: &Container,
    p: &Path,
    volumes: &BTreeSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let mp = p.child("volumeMounts");
    let mut paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let ip = mp.index(i);
        if m.name.is_empty() {
            errs.push(required(&ip.child("name")));
        } else if !volumes.contains(&m.name) {
            errs.push(not_found(&ip.child("name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(required(&ip.child("mountPath")));
        } else if !paths.insert(m.mount_path.clone()) {
            errs.push(invalid(
                &ip.child("mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        let sub = m.sub_path.as_deref().unwrap_or("");
        let sub_expr = m.sub_path_expr.as_deref().unwrap_or("");
        if !sub.is_empty() && !sub_expr.is_empty() {
            errs.push(invalid(
                &ip.child("subPathExpr"),
                sub_expr,
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
        for (field, v) in [("subPath", sub), ("subPathExpr", sub_expr)] {
            if v.is_empty() {
                continue;
            }
            if v.starts_with('/') {
                errs.push(invalid(&ip.child(field), v, "must be a relative path"));
            }
            if v.split('/').any(|c| c == "..") {
                errs.push(invalid(&ip.child(field), v, "must not contain '..'"));
            }
        }
        if let Some(prop) = m.mount_propagation.as_deref() {
            const MODES: &[&str] = &["Bidirectional", "HostToContainer", "None"];
            if !MODES.contains(&prop) {
                errs.push(not_supported(&ip.child("mountPropagation"), prop, MODES));
            } else if prop == "Bidirectional"
                && !c
                    .security_context
                    .as_ref()
                    .and_then(|s| s.privileged)
                    .unwrap_or(false)
            {
                errs.push(forbidden(
                    &ip.child("mountPropagation"),
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
    }
}

const QUANTITY_RE: &str = "quantities must match the regular expression \
                           '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

fn validate_quantity(s: &str, p: &Path, errs: &mut Vec<FieldError>) -> Option<Quantity> {
    match Quantity::parse(s) {
        Ok(q) if q < Quantity::parse("0").ok()? => {
            errs.push(invalid(p, s, "must be greater than or equal to 0"));
            None
        }
        Ok(q) => Some(q),
        Err(_) => {
            errs.push(invalid(p, s, QUANTITY_RE));
            None
        }
    }
}

fn is_standard_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage" | "storage")
        || name.starts_with("hugepages-")
        // extended resources are domain-qualified
        || (name.contains('/') && qualified_name(name).is_empty())
}

fn validate_resources(r: &ResourceRequirements, p: &Path, errs: &mut Vec<FieldError>) {
    let mut parsed: [BTreeMap<&str, Quantity>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for (slot, (field, list)) in [("limits", &r.limits), ("requests", &r.requests)]
        .into_iter()
        .enumerate()
    {
        for (name, q) in list.iter().flatten() {
            let kp = p.child(field).key(name);
            if !is_standard_resource(name) {
                errs.push(invalid(
                    &kp,
                    name,
                    "must be a standard resource type or fully qualified",
                ));
                continue;
            }
            if let Some(v) = validate_quantity(&q.0, &kp, errs) {
                parsed[slot].insert(name, v);
            }
        }
    }
    let [limits, requests] = &parsed;
    for (name, req) in requests {
        if let Some(lim) = limits.get(name) {
            if req > lim {
                let raw_req = r
                    .requests
                    .as_ref()
                    .and_then(|m| m.get(*name))
                    .map_or("", |q| &q.0);
                let raw_lim = r
                    .limits
                    .as_ref()
                    .and_then(|m| m.get(*name))
                    .map_or("", |q| &q.0);
                errs.push(invalid(
                    &p.child("requests").key(name),
                    raw_req,
                    &format!("must be less than or equal to {name} limit of {raw_lim}"),
                ));
            }
        }
    }
}

/// Exactly one handler: none is "Required", every one after the first is
/// "Forbidden" at its own path (upstream `validateHandler`).
fn validate_one_handler(handlers: &[(&str, bool)], p: &Path, errs: &mut Vec<FieldError>) {
    let mut n = 0;
    for (name, present) in handlers {
        if *present {
            n += 1;
            if n > 1 {
                errs.push(forbidden(
                    &p.child(name),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    }
    if n == 0 {
        errs.push(required(p).with_detail("must specify a handler type"));
    }
}

fn validate_probe(probe: &Probe, p: &Path, errs: &mut Vec<FieldError>) {
    validate_one_handler(
        &[
            ("exec", probe.exec.is_some()),
            ("httpGet", probe.http_get.is_some()),
            ("tcpSocket", probe.tcp_socket.is_some()),
            ("grpc", probe.grpc.is_some()),
        ],
        p,
        errs,
    );
    if let Some(e) = &probe.exec {
        if e.command.as_ref().is_none_or(|c| c.is_empty()) {
            errs.push(required(&p.child("exec").child("command")));
        }
    }
    if let Some(h) = &probe.http_get {
        validate_http_get(&h.port, h.scheme.as_deref(), &p.child("httpGet"), errs);
    }
    if let Some(t) = &probe.tcp_socket {
        validate_port_ref(&t.port, &p.child("tcpSocket").child("port"), errs);
    }
    if let Some(g) = &probe.grpc {
        if !(1..=65535).contains(&g.port) {
            errs.push(invalid(
                &p.child("grpc").child("port"),
                g.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    for (field, v) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            errs.push(invalid(
                &p.child(field),
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(g) = probe.termination_grace_period_seconds {
        if g <= 0 {
            errs.push(invalid(
                &p.child("terminationGracePeriodSeconds"),
                g,
                "must be greater than 0",
            ));
        }
    }
}

fn validate_success_threshold_is_one(probe: &Probe, p: &Path, errs: &mut Vec<FieldError>) {
    if let Some(st) = probe.success_threshold.filter(|s| *s != 1) {
        errs.push(invalid(&p.child("successThreshold"), st, "must be 1"));
    }
}

fn validate_lifecycle_handler(
    h: &LifecycleHandler,
    p: &Path,
    grace: Option<i64>,
    errs: &mut Vec<FieldError>,
) {
    validate_one_handler(
        &[
            ("exec", h.exec.is_some()),
            ("httpGet", h.http_get.is_some()),
            ("tcpSocket", h.tcp_socket.is_some()),
            ("sleep", h.sleep.is_some()),
        ],
        p,
        errs,
    );
    if let Some(e) = &h.exec {
        if e.command.as_ref().is_none_or(|c| c.is_empty()) {
            errs.push(required(&p.child("exec").child("command")));
        }
    }
    if let Some(hg) = &h.http_get {
        validate_http_get(&hg.port, hg.scheme.as_deref(), &p.child("httpGet"), errs);
    }
    if let Some(t) = &h.tcp_socket {
        validate_port_ref(&t.port, &p.child("tcpSocket").child("port"), errs);
    }
    if let Some(s) = &h.sleep {
        let g = grace.unwrap_or(30);
        if s.seconds < 0 || s.seconds > g {
            errs.push(invalid(
                &p.child("sleep").child("seconds"),
                s.seconds,
                &format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
            ));
        }
    }
}

fn validate_http_get(
    port: &IntOrString,
    scheme: Option<&str>,
    p: &Path,
    errs: &mut Vec<FieldError>,
) {
    validate_port_ref(port, &p.child("port"), errs);
    if let Some(s) = scheme {
        if s != "HTTP" && s != "HTTPS" {
            errs.push(not_supported(&p.child("scheme"), s, &["HTTP", "HTTPS"]));
        }
    }
}

/// A probe or hook port: a number, or the name of one of the container's ports.
fn validate_port_ref(port: &IntOrString, p: &Path, errs: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(n) => {
            if !(1..=65535).contains(n) {
                errs.push(invalid(p, *n, "must be between 1 and 65535, inclusive"));
            }
        }
        IntOrString::String(s) => push_all(errs, p, s, iana_svc_name(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::core::Pod;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        let mut p: Pod = serde_json::from_value(v).unwrap();
        crate::sources::defaults::apply(&mut p);
        p
    }

    fn errors(v: serde_json::Value) -> Vec<String> {
        validate_pod(&pod(v))
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn base() -> serde_json::Value {
        json!({"apiVersion":"v1","kind":"Pod",
            "metadata":{"name":"web","namespace":"default"},
            "spec":{"containers":[{"name":"c","image":"busybox"}]}})
    }

    #[test]
    fn minimal_pod_is_valid() {
        assert_eq!(errors(base()), Vec::<String>::new());
    }

    #[test]
    fn missing_image_is_required() {
        let mut v = base();
        v["spec"]["containers"][0]["image"] = json!(null);
        assert_eq!(errors(v), vec!["spec.containers[0].image: Required value"]);
    }

    #[test]
    fn bad_names() {
        let mut v = base();
        v["metadata"]["name"] = json!("Web_1");
        v["spec"]["containers"][0]["name"] = json!("C");
        let e = errors(v);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with(
                "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain"
            ),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(
                "spec.containers[0].name: Invalid value: \"C\": a lowercase RFC 1123 label"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn container_names_unique_across_init_and_regular() {
        let mut v = base();
        v["spec"]["initContainers"] = json!([{"name":"c","image":"busybox"}]);
        assert_eq!(
            errors(v),
            vec!["spec.initContainers[0].name: Duplicate value: \"c\""]
        );
    }

    #[test]
    fn restart_policy_values() {
        let mut v = base();
        v["spec"]["restartPolicy"] = json!("Sometimes");
        assert_eq!(
            errors(v),
            vec!["spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""]
        );
    }

    #[test]
    fn ports() {
        let mut v = base();
        v["spec"]["containers"][0]["ports"] = json!([
            {"containerPort": 80, "name": "http"},
            {"containerPort": 70000, "name": "http"},
            {"containerPort": 81, "protocol": "ICMP", "hostPort": 8080},
        ]);
        v["spec"]["containers"].as_array_mut().unwrap().push(
            json!({"name":"d","image":"busybox","ports":[{"containerPort":82,"hostPort":8080}]}),
        );
        assert_eq!(
            errors(v),
            vec![
                "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
                "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ]
        );
        // Duplicate host ports are per protocol: 8080/ICMP vs 8080/TCP differ.
        let mut v = base();
        v["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
        v["spec"]["containers"].as_array_mut().unwrap().push(
            json!({"name":"d","image":"busybox","ports":[{"containerPort":82,"hostPort":8080}]}),
        );
        assert_eq!(
            errors(v),
            vec!["spec.containers[1].ports[0].hostPort: Duplicate value: \"8080/TCP\""]
        );
    }

    #[test]
    fn host_network_ports_must_match() {
        let mut v = base();
        v["spec"]["hostNetwork"] = json!(true);
        v["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 81}]);
        assert_eq!(
            errors(v),
            vec!["spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true"]
        );
        // hostPort defaults to containerPort with hostNetwork
        let mut v = base();
        v["spec"]["hostNetwork"] = json!(true);
        v["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        assert_eq!(errors(v), Vec::<String>::new());
    }

    #[test]
    fn probes() {
        let mut v = base();
        v["spec"]["containers"][0]["livenessProbe"] = json!({"exec":{"command":["true"]},"tcpSocket":{"port":80},"periodSeconds":-1,"successThreshold":2});
        v["spec"]["containers"][0]["readinessProbe"] = json!({"periodSeconds": 5});
        v["spec"]["containers"][0]["startupProbe"] = json!({"httpGet":{"port":"no_such--"}});
        let e = errors(v);
        assert_eq!(
            e,
            vec![
                "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.containers[0].readinessProbe: Required value: must specify a handler type",
                "spec.containers[0].startupProbe.httpGet.port: Invalid value: \"no_such--\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.containers[0].startupProbe.httpGet.port: Invalid value: \"no_such--\": must not contain consecutive hyphens",
                "spec.containers[0].startupProbe.httpGet.port: Invalid value: \"no_such--\": must not begin or end with a hyphen",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            ]
        );
    }

    #[test]
    fn init_container_rules() {
        let mut v = base();
        v["spec"]["initContainers"] = json!([
            {"name":"i","image":"busybox","livenessProbe":{"exec":{"command":["true"]}}},
            {"name":"s","image":"busybox","restartPolicy":"Always",
             "readinessProbe":{"exec":{"command":["true"]}},
             "startupProbe":{"exec":{"command":["true"]}}},
            {"name":"x","image":"busybox","restartPolicy":"Never"},
        ]);
        v["spec"]["containers"][0]["restartPolicy"] = json!("Always");
        assert_eq!(
            errors(v),
            vec![
                "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
                "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.initContainers[2].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
    }

    #[test]
    fn volumes_and_mounts() {
        let mut v = base();
        v["spec"]["volumes"] = json!([
            {"name":"data","emptyDir":{}},
            {"name":"data","hostPath":{"path":"/srv","type":"Nope"}},
            {"name":"both","emptyDir":{},"hostPath":{"path":"/x"}},
        ]);
        v["spec"]["containers"][0]["volumeMounts"] = json!([
            {"name":"data","mountPath":"/a"},
            {"name":"missing","mountPath":"/a","subPath":"../x"},
        ]);
        assert_eq!(
            errors(v),
            vec![
                "spec.volumes[1].name: Duplicate value: \"data\"",
                "spec.volumes[1].hostPath.type: Unsupported value: \"Nope\": supported values: \"DirectoryOrCreate\", \"Directory\", \"FileOrCreate\", \"File\", \"Socket\", \"CharDevice\", \"BlockDevice\"",
                "spec.volumes[2].hostPath: Forbidden: may not specify more than 1 volume type",
                "spec.containers[0].volumeMounts[1].name: Not found: \"missing\"",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
                "spec.containers[0].volumeMounts[1].subPath: Invalid value: \"../x\": must not contain '..'",
            ]
        );
    }

    #[test]
    fn env_and_resources() {
        let mut v = base();
        v["spec"]["containers"][0]["env"] = json!([
            {"name":"A=B","value":"x"},
            {"name":"POD","valueFrom":{"fieldRef":{"fieldPath":"spec.bogus"}}},
            {"name":"OK","valueFrom":{"fieldRef":{"fieldPath":"metadata.labels['app']"}}},
        ]);
        v["spec"]["containers"][0]["resources"] =
            json!({"limits":{"cpu":"1","memory":"lots"},"requests":{"cpu":"2"}});
        let e = errors(v);
        // The bad memory limit was also defaulted into the requests.
        assert_eq!(e.len(), 5, "{e:#?}");
        assert_eq!(e[0], "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='");
        assert!(e[1].starts_with("spec.containers[0].env[1].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.bogus\""), "{e:#?}");
        assert!(e[2].starts_with("spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match"), "{e:#?}");
        assert!(
            e[3].starts_with(
                "spec.containers[0].resources.requests[memory]: Invalid value: \"lots\""
            ),
            "{e:#?}"
        );
        assert_eq!(e[4], "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1");
    }

    #[test]
    fn active_deadline_and_dns() {
        let mut v = base();
        v["spec"]["activeDeadlineSeconds"] = json!(0);
        v["spec"]["dnsPolicy"] = json!("None");
        assert_eq!(
            errors(v),
            vec![
                "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when DNSPolicy is None",
                "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
            ]
        );
    }
}
