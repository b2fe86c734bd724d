//! What a pod's volumes need, decided without touching the host: the
//! volume kinds picolet can run without an API server, tmpfs sizes, the
//! hostPath type check table, downward API payloads, nested mount points.

use super::api::{self, ApiData};
use super::atomic::FileProjection;
use super::downward::{self, file_mode, DEFAULT_MODE};
use super::{VolumeContext, VolumeError};
use crate::api::core::{Pod, Volume, VolumeMount};
use crate::api::quantity::Quantity;
use crate::runtime::convert::{pod_cgroup_resources, qos_class};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Plugin directory names under `<pod>/volumes/` (upstream's escaped
/// plugin names).
pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
pub const PROJECTED: &str = "kubernetes.io~projected";
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
pub const SECRET: &str = "kubernetes.io~secret";

/// Where an emptyDir lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// A directory on the node's disk.
    Disk,
    /// A tmpfs; `size` in bytes (`None`: the kernel's default, half of RAM).
    Memory { size: Option<u64> },
}

/// `hostPath.type` (upstream `HostPathType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: no check.
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        Ok(match s.unwrap_or("") {
            "" => HostPathType::Unset,
            "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
            "Directory" => HostPathType::Directory,
            "FileOrCreate" => HostPathType::FileOrCreate,
            "File" => HostPathType::File,
            "Socket" => HostPathType::Socket,
            "CharDevice" => HostPathType::CharDevice,
            "BlockDevice" => HostPathType::BlockDevice,
            other => return Err(format!("{other} is an invalid volume type")),
        })
    }
}

/// What `stat` (following symlinks) says a host path is, named as upstream
/// `hostutil.FileType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Directory => "Directory",
            FileKind::File => "File",
            FileKind::Socket => "Socket",
            FileKind::CharDevice => "CharDevice",
            FileKind::BlockDevice => "BlockDevice",
        }
    }
}

/// What the host path looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// `stat` failed (upstream treats every error as "doesn't exist").
    Missing,
    Kind(FileKind),
    /// Exists but is none of the kinds (a FIFO, ...): the reason.
    Unknown(String),
}

/// The next step of a hostPath type check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeCheck {
    Ok,
    /// Create a directory (mode 0755) then check again.
    CreateDir,
    /// Create an empty file (mode 0644; the parent must exist) then check again.
    CreateFile,
    Fail(String),
}

/// Upstream `checkType` as a decision: `may_create` is false on the check
/// after a creation attempt.
pub fn check_host_path(
    path: &str,
    want: HostPathType,
    observed: &Observed,
    may_create: bool,
) -> TypeCheck {
    let (expected, description) = match want {
        HostPathType::Unset => return TypeCheck::Ok,
        HostPathType::DirectoryOrCreate if may_create && *observed == Observed::Missing => {
            return TypeCheck::CreateDir
        }
        HostPathType::FileOrCreate if may_create && *observed == Observed::Missing => {
            return TypeCheck::CreateFile
        }
        HostPathType::DirectoryOrCreate | HostPathType::Directory => {
            (FileKind::Directory, "directory")
        }
        HostPathType::FileOrCreate | HostPathType::File => (FileKind::File, "file"),
        HostPathType::Socket => (FileKind::Socket, "socket file"),
        HostPathType::CharDevice => (FileKind::CharDevice, "character device"),
        HostPathType::BlockDevice => (FileKind::BlockDevice, "block device"),
    };
    match observed {
        Observed::Missing => TypeCheck::Fail(format!("hostPath {path} doesn't exist")),
        Observed::Unknown(why) => TypeCheck::Fail(format!(
            "hostPath type check failed, {path} is not a {description}, unable to determine its type: {why}"
        )),
        Observed::Kind(k) if *k == expected => TypeCheck::Ok,
        Observed::Kind(k) => TypeCheck::Fail(format!(
            "hostPath type check failed: {path} is not a {description}, it's a {}",
            k.as_str()
        )),
    }
}

/// The tmpfs size of a Memory emptyDir (upstream
/// `calculateEmptyDirMemorySize`): node allocatable memory, lowered to the
/// pod's memory limit, lowered to the volume's `sizeLimit` — each only when
/// positive and not larger. picolet reads an allocatable of 0 as unknown
/// rather than as a size (upstream always has one).
pub fn tmpfs_size(allocatable: i64, pod_limit: i64, size_limit: Option<i64>) -> Option<u64> {
    let mut size: Option<i64> = (allocatable > 0).then_some(allocatable);
    for cand in [Some(pod_limit), size_limit].into_iter().flatten() {
        if cand > 0 && size.is_none_or(|s| cand <= s) {
            size = Some(cand);
        }
    }
    size.map(|s| s as u64)
}

/// One volume to make available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumePlan {
    EmptyDir {
        name: String,
        medium: Medium,
    },
    HostPath {
        name: String,
        path: PathBuf,
        kind: HostPathType,
    },
    /// A downwardAPI, projected, secret or configMap volume: a wrapped
    /// emptyDir (tmpfs, on disk for configMaps as upstream) holding
    /// `payload` through the atomic writer, with the `nested` mount point
    /// directories other volumes need inside it.
    Files {
        name: String,
        plugin: &'static str,
        medium: Medium,
        payload: BTreeMap<String, FileProjection>,
        nested: Vec<String>,
    },
    /// A file volume set up before, left as it is (see [`ApiData::keep`]).
    Kept {
        name: String,
        plugin: &'static str,
    },
}

impl VolumePlan {
    pub fn name(&self) -> &str {
        match self {
            VolumePlan::EmptyDir { name, .. }
            | VolumePlan::HostPath { name, .. }
            | VolumePlan::Files { name, .. }
            | VolumePlan::Kept { name, .. } => name,
        }
    }
}

/// The plugin directory of an API-backed file volume kind.
pub fn api_plugin(kind: &str) -> Option<&'static str> {
    match kind {
        "configMap" => Some(CONFIG_MAP),
        "secret" => Some(SECRET),
        "projected" => Some(PROJECTED),
        _ => None,
    }
}

/// Everything the effects need for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub uid: String,
    /// `securityContext.fsGroup`.
    pub fs_group: Option<u32>,
    pub volumes: Vec<VolumePlan>,
}

/// A path component picolet may create under its own directories.
fn safe_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// The volume sources set on `v`, by their API field names.
fn source_kinds(v: &Volume) -> Vec<&'static str> {
    let set = [
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("cinder", v.cinder.is_some()),
        ("configMap", v.config_map.is_some()),
        ("csi", v.csi.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("emptyDir", v.empty_dir.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("flocker", v.flocker.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("image", v.image.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("nfs", v.nfs.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("projected", v.projected.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("rbd", v.rbd.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("secret", v.secret.is_some()),
        ("storageos", v.storageos.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
    ];
    set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect()
}

/// Go's `path.Clean`.
fn go_clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

fn all_mount_lists(pod: &Pod) -> Vec<&[VolumeMount]> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<&[VolumeMount]> = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        out.push(c.volume_mounts.as_deref().unwrap_or(&[]));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        out.push(c.volume_mounts.as_deref().unwrap_or(&[]));
    }
    out
}

/// Directories to create inside volume `name` because some container
/// mounts another volume beneath it (upstream `getNestedMountpoints`):
/// the volume is read-only in the container, so the runtime could not
/// create them there.
pub fn nested_mountpoints(pod: &Pod, name: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for mounts in all_mount_lists(pod) {
        let mut all: Vec<String> = mounts.iter().map(|m| go_clean(&m.mount_path)).collect();
        all.sort();
        let mine = mounts
            .iter()
            .filter(|m| m.name == name)
            .map(|m| go_clean(&m.mount_path));
        for my in mine {
            if my.starts_with("../") {
                return Err(format!("invalid container mount point {my}"));
            }
            let prefix = format!("{}/", my.trim_end_matches('/'));
            let mut seen: Vec<String> = Vec::new();
            for mp in &all {
                if !mp.starts_with(&prefix) || seen.iter().any(|s| mp.starts_with(s)) {
                    continue;
                }
                seen.push(format!("{mp}/"));
                out.push(mp[prefix.len()..].to_string());
            }
        }
    }
    Ok(out)
}

fn parse_bytes(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Result<i64, String> {
    Quantity::parse(&q.0)
        .map(|v| v.value())
        .map_err(|e| format!("invalid quantity {:?}: {e}", q.0))
}

fn needs_api(volume: &str, what: String) -> VolumeError {
    VolumeError::NeedsApiServer {
        volume: volume.to_string(),
        message: format!("couldn't get {what} for volume {volume:?}, no kubeClient defined"),
    }
}

fn invalid(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::Invalid {
        volume: volume.to_string(),
        message: message.into(),
    }
}

fn unsupported(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::Unsupported {
        volume: volume.to_string(),
        message: message.into(),
    }
}

fn setup_err(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::SetUp {
        volume: volume.to_string(),
        message: message.into(),
    }
}

/// Plans every volume of the pod, or says why the pod's volumes cannot be
/// set up (checked before anything touches the host), without API
/// objects.
pub fn plan_pod(pod: &Pod, ctx: &VolumeContext) -> Result<PodPlan, VolumeError> {
    plan_pod_with(pod, ctx, &ApiData::default())
}

/// [`plan_pod`] with the configMaps, secrets and tokens fetched for the
/// pod. A missing object or a bad payload is a set-up failure (upstream's
/// FailedMount, retried), not a spec error.
pub fn plan_pod_with(
    pod: &Pod,
    ctx: &VolumeContext,
    data: &ApiData,
) -> Result<PodPlan, VolumeError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !safe_component(&uid) {
        return Err(invalid("", format!("pod has an unusable uid {uid:?}")));
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let fs_group = match spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
    {
        None => None,
        Some(g) => Some(u32::try_from(g).map_err(|_| {
            invalid(
                "",
                format!("securityContext.fsGroup {g} is not a valid group id"),
            )
        })?),
    };
    // The pod-level memory limit caps every Memory-backed volume.
    let pod_memory_limit = || -> Result<i64, String> {
        pod_cgroup_resources(pod, qos_class(pod), 0)
            .map(|r| r.memory_limit_in_bytes)
            .map_err(|e| e.0)
    };
    let mut volumes = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for v in spec.and_then(|s| s.volumes.as_deref()).unwrap_or(&[]) {
        let name = v.name.as_str();
        if !safe_component(name) {
            return Err(invalid(name, format!("invalid volume name {name:?}")));
        }
        if !names.insert(name) {
            return Err(invalid(name, format!("duplicate volume name {name:?}")));
        }
        let kinds = source_kinds(v);
        if kinds.len() > 1 {
            return Err(invalid(name, "may not specify more than 1 volume type"));
        }
        // API defaulting: a volume with no source is an emptyDir.
        let kind = kinds.first().copied().unwrap_or("emptyDir");
        if let Some(plugin) = api_plugin(kind).filter(|_| data.keep.contains(name)) {
            volumes.push(VolumePlan::Kept {
                name: name.into(),
                plugin,
            });
            continue;
        }
        let plan = match kind {
            "emptyDir" => {
                let src = v.empty_dir.as_ref();
                let limit = src
                    .and_then(|s| s.size_limit.as_ref())
                    .map(parse_bytes)
                    .transpose()
                    .map_err(|e| invalid(name, format!("sizeLimit: {e}")))?;
                let medium = match src.and_then(|s| s.medium.as_deref()).unwrap_or("") {
                    "" => Medium::Disk,
                    "Memory" => {
                        let pod_limit = pod_memory_limit().map_err(|e| invalid(name, e))?;
                        Medium::Memory {
                            size: tmpfs_size(ctx.allocatable.memory, pod_limit, limit),
                        }
                    }
                    m if m == "HugePages" || m.starts_with("HugePages-") => {
                        return Err(unsupported(
                            name,
                            format!(
                                "emptyDir medium {m:?} (hugetlbfs) is not supported by picolet"
                            ),
                        ))
                    }
                    m => return Err(invalid(name, format!("unknown storage medium {m:?}"))),
                };
                VolumePlan::EmptyDir {
                    name: name.into(),
                    medium,
                }
            }
            "hostPath" => {
                let Some(src) = v.host_path.as_ref() else {
                    return Err(invalid(name, "hostPath source missing"));
                };
                if src.path.split('/').any(|p| p == "..") {
                    return Err(invalid(
                        name,
                        format!("invalid HostPath `{}`: must not contain '..'", src.path),
                    ));
                }
                if src.path.is_empty() {
                    return Err(invalid(name, "hostPath.path: Required value"));
                }
                let kind =
                    HostPathType::parse(src.type_.as_deref()).map_err(|e| invalid(name, e))?;
                VolumePlan::HostPath {
                    name: name.into(),
                    path: PathBuf::from(&src.path),
                    kind,
                }
            }
            "downwardAPI" => {
                let Some(src) = v.downward_api.as_ref() else {
                    return Err(invalid(name, "downwardAPI source missing"));
                };
                let mode = file_mode(src.default_mode.unwrap_or(DEFAULT_MODE), "defaultMode")
                    .map_err(|e| invalid(name, e))?;
                let payload = downward::collect(
                    src.items.as_deref().unwrap_or(&[]),
                    pod,
                    &ctx.allocatable,
                    mode,
                )
                .map_err(|e| invalid(name, e))?;
                files_plan(
                    pod,
                    name,
                    DOWNWARD_API,
                    payload,
                    ctx,
                    &pod_memory_limit,
                    false,
                )?
            }
            "projected" => {
                let Some(src) = v.projected.as_ref() else {
                    return Err(invalid(name, "projected source missing"));
                };
                let mode = file_mode(src.default_mode.unwrap_or(DEFAULT_MODE), "defaultMode")
                    .map_err(|e| invalid(name, e))?;
                let mut payload = BTreeMap::new();
                let mut errs: Vec<String> = Vec::new();
                for (i, s) in src.sources.iter().flatten().enumerate() {
                    if let Some(c) = &s.config_map {
                        if !data.available {
                            return Err(needs_api(name, format!("configMap {ns}/{}", c.name)));
                        }
                        let optional = c.optional.unwrap_or(false);
                        let empty = crate::api::core::ConfigMap::default();
                        let files =
                            api::lookup(&data.config_maps, &c.name, optional).and_then(|cm| {
                                api::config_map_payload(
                                    c.items.as_deref().unwrap_or(&[]),
                                    cm.unwrap_or(&empty),
                                    mode,
                                    optional,
                                )
                            });
                        match files {
                            Ok(f) => payload.extend(f),
                            Err(e) => errs.push(e),
                        }
                        continue;
                    }
                    if let Some(c) = &s.secret {
                        if !data.available {
                            return Err(needs_api(name, format!("secret {ns}/{}", c.name)));
                        }
                        let optional = c.optional.unwrap_or(false);
                        let empty = crate::api::core::Secret::default();
                        let files = api::lookup(&data.secrets, &c.name, optional).and_then(|s| {
                            api::secret_payload(
                                c.items.as_deref().unwrap_or(&[]),
                                s.unwrap_or(&empty),
                                mode,
                                optional,
                            )
                        });
                        match files {
                            Ok(f) => payload.extend(f),
                            Err(e) => errs.push(e),
                        }
                        continue;
                    }
                    if let Some(t) = &s.service_account_token {
                        if !data.available {
                            return Err(needs_api(name, "a service account token".into()));
                        }
                        // With fsGroup the ownership change makes it 0640.
                        let tmode = if fs_group.is_some() { 0o600 } else { mode };
                        match data.tokens.get(&(name.to_string(), i)) {
                            Some(Ok(tok)) => {
                                let path = super::atomic::clean_path(&t.path)
                                    .map_err(|e| invalid(name, e))?;
                                payload.insert(
                                    path,
                                    FileProjection {
                                        data: tok.clone().into_bytes(),
                                        mode: tmode,
                                    },
                                );
                            }
                            Some(Err(e)) => errs.push(e.clone()),
                            None => errs.push("service account token was not fetched".into()),
                        }
                        continue;
                    }
                    if let Some(c) = &s.cluster_trust_bundle {
                        let which = c
                            .name
                            .clone()
                            .or_else(|| c.signer_name.as_ref().map(|s| format!("signer {s}")))
                            .unwrap_or_default();
                        if !data.available {
                            return Err(needs_api(name, format!("clusterTrustBundle {which:?}")));
                        }
                        return Err(unsupported(
                            name,
                            format!("clusterTrustBundle {which:?} projections are not supported by picolet"),
                        ));
                    }
                    if let Some(c) = &s.pod_certificate {
                        if !data.available {
                            return Err(needs_api(
                                name,
                                format!("a pod certificate from signer {:?}", c.signer_name),
                            ));
                        }
                        return Err(unsupported(
                            name,
                            format!(
                                "pod certificate projections (signer {:?}) are not supported by picolet",
                                c.signer_name
                            ),
                        ));
                    }
                    let Some(d) = &s.downward_api else {
                        return Err(invalid(
                            name,
                            format!("sources[{i}]: must specify exactly 1 projection"),
                        ));
                    };
                    let files = downward::collect(
                        d.items.as_deref().unwrap_or(&[]),
                        pod,
                        &ctx.allocatable,
                        mode,
                    )
                    .map_err(|e| invalid(name, format!("sources[{i}].downwardAPI.{e}")))?;
                    payload.extend(files);
                }
                if !errs.is_empty() {
                    return Err(setup_err(name, api::aggregate(&errs)));
                }
                files_plan(pod, name, PROJECTED, payload, ctx, &pod_memory_limit, false)?
            }
            "configMap" => {
                let Some(c) = v.config_map.as_ref() else {
                    return Err(invalid(name, "configMap source missing"));
                };
                if !data.available {
                    return Err(needs_api(name, format!("configMap {ns}/{}", c.name)));
                }
                let mode = file_mode(c.default_mode.unwrap_or(DEFAULT_MODE), "defaultMode")
                    .map_err(|e| invalid(name, e))?;
                let optional = c.optional.unwrap_or(false);
                let empty = crate::api::core::ConfigMap::default();
                let payload = api::lookup(&data.config_maps, &c.name, optional)
                    .and_then(|cm| {
                        api::config_map_payload(
                            c.items.as_deref().unwrap_or(&[]),
                            cm.unwrap_or(&empty),
                            mode,
                            optional,
                        )
                    })
                    .map_err(|e| setup_err(name, e))?;
                files_plan(pod, name, CONFIG_MAP, payload, ctx, &pod_memory_limit, true)?
            }
            "secret" => {
                let Some(src) = v.secret.as_ref() else {
                    return Err(invalid(name, "secret source missing"));
                };
                let sname = src.secret_name.as_deref().unwrap_or("");
                if !data.available {
                    return Err(needs_api(name, format!("secret {ns}/{sname}")));
                }
                let mode = file_mode(src.default_mode.unwrap_or(DEFAULT_MODE), "defaultMode")
                    .map_err(|e| invalid(name, e))?;
                let optional = src.optional.unwrap_or(false);
                let empty = crate::api::core::Secret::default();
                let payload = api::lookup(&data.secrets, sname, optional)
                    .and_then(|s| {
                        api::secret_payload(
                            src.items.as_deref().unwrap_or(&[]),
                            s.unwrap_or(&empty),
                            mode,
                            optional,
                        )
                    })
                    .map_err(|e| setup_err(name, e))?;
                files_plan(pod, name, SECRET, payload, ctx, &pod_memory_limit, false)?
            }
            other => {
                return Err(unsupported(
                    name,
                    format!("volume type {other:?} is not supported by picolet"),
                ))
            }
        };
        volumes.push(plan);
    }
    Ok(PodPlan {
        uid,
        fs_group,
        volumes,
    })
}

fn files_plan(
    pod: &Pod,
    name: &str,
    plugin: &'static str,
    payload: BTreeMap<String, FileProjection>,
    ctx: &VolumeContext,
    pod_memory_limit: &dyn Fn() -> Result<i64, String>,
    on_disk: bool,
) -> Result<VolumePlan, VolumeError> {
    let medium = if on_disk {
        Medium::Disk
    } else {
        let pod_limit = pod_memory_limit().map_err(|e| invalid(name, e))?;
        Medium::Memory {
            size: tmpfs_size(ctx.allocatable.memory, pod_limit, None),
        }
    };
    Ok(VolumePlan::Files {
        name: name.into(),
        plugin,
        medium,
        payload,
        nested: nested_mountpoints(pod, name).map_err(|e| invalid(name, e))?,
    })
}

/// An emptyDir over its `sizeLimit` (upstream eviction manager's
/// `emptyDirLimitEviction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeLimitExceeded {
    pub volume: String,
    /// `sizeLimit` as written in the spec.
    pub limit: String,
    pub used: u64,
}

impl SizeLimitExceeded {
    /// The pod status reason upstream sets on an evicted pod.
    pub const REASON: &'static str = "Evicted";

    /// Upstream's eviction message (`emptyDirMessageFmt`).
    pub fn message(&self) -> String {
        format!(
            "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
            self.volume, self.limit
        )
    }
}

/// The first emptyDir of `pod` whose measured usage (see
/// [`super::VolumeManager::usage`]) is over its positive `sizeLimit`, disk
/// or Memory medium alike. Volumes without a measurement are skipped.
pub fn exceeds_size_limit(pod: &Pod, usage: &BTreeMap<String, u64>) -> Option<SizeLimitExceeded> {
    let volumes = pod.spec.as_ref()?.volumes.as_deref().unwrap_or(&[]);
    volumes.iter().find_map(|v| {
        let q = v.empty_dir.as_ref()?.size_limit.as_ref()?;
        let limit = Quantity::parse(&q.0).ok()?.value();
        let used = *usage.get(&v.name)?;
        (limit > 0 && used > limit as u64).then(|| SizeLimitExceeded {
            volume: v.name.clone(),
            limit: q.0.clone(),
            used,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::core::{
        ConfigMapProjection, ConfigMapVolumeSource, Container, DownwardAPIProjection,
        DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource,
        NFSVolumeSource, ObjectFieldSelector, PodSecurityContext, PodSpec, ProjectedVolumeSource,
        ResourceRequirements, SecretVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
    };
    use crate::runtime::convert::Allocatable;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    const GI: i64 = 1 << 30;
    const MI: i64 = 1 << 20;

    fn ctx() -> VolumeContext {
        VolumeContext {
            allocatable: Allocatable {
                cpu_milli: 2000,
                memory: 4 * GI,
                ephemeral_storage: 0,
            },
        }
    }

    fn pod(volumes: Vec<Volume>, memory_limit: Option<&str>) -> Pod {
        let mut c = Container {
            name: "app".into(),
            ..Default::default()
        };
        if let Some(l) = memory_limit {
            c.resources = Some(ResourceRequirements {
                limits: Some([("memory".to_string(), Q(l.into()))].into_iter().collect()),
                ..Default::default()
            });
        }
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.metadata.uid = Some("uid-1".into());
        p.spec = Some(PodSpec {
            containers: vec![c],
            volumes: Some(volumes),
            ..Default::default()
        });
        p
    }

    fn vol(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ..Default::default()
        }
    }

    fn empty_dir(name: &str, medium: Option<&str>, limit: Option<&str>) -> Volume {
        Volume {
            empty_dir: Some(EmptyDirVolumeSource {
                medium: medium.map(Into::into),
                size_limit: limit.map(|l| Q(l.into())),
            }),
            ..vol(name)
        }
    }

    #[test]
    fn tmpfs_size_decision() {
        // Nothing lower: node allocatable.
        assert_eq!(tmpfs_size(4 * GI, 0, None), Some(4 * GI as u64));
        // Pod limit below allocatable wins, sizeLimit below that wins.
        assert_eq!(tmpfs_size(4 * GI, GI, None), Some(GI as u64));
        assert_eq!(tmpfs_size(4 * GI, GI, Some(64 * MI)), Some(64 * MI as u64));
        // A sizeLimit above the pod limit is ignored (the pod cannot use it).
        assert_eq!(tmpfs_size(4 * GI, GI, Some(2 * GI)), Some(GI as u64));
        // Above allocatable: ignored; zero: ignored.
        assert_eq!(tmpfs_size(4 * GI, 8 * GI, Some(0)), Some(4 * GI as u64));
        assert_eq!(tmpfs_size(4 * GI, 4 * GI, None), Some(4 * GI as u64));
        // Allocatable unknown: the smallest positive bound, else the kernel default.
        assert_eq!(tmpfs_size(0, 0, Some(MI)), Some(MI as u64));
        assert_eq!(tmpfs_size(0, GI, Some(2 * GI)), Some(GI as u64));
        assert_eq!(tmpfs_size(0, 0, None), None);
    }

    #[test]
    fn host_path_type_table() {
        use FileKind::*;
        use HostPathType as T;
        let ok = TypeCheck::Ok;
        let k = Observed::Kind;
        let p = "/x";
        // Unset never checks.
        assert_eq!(check_host_path(p, T::Unset, &Observed::Missing, true), ok);
        // *OrCreate create when missing, then check the type.
        assert_eq!(
            check_host_path(p, T::DirectoryOrCreate, &Observed::Missing, true),
            TypeCheck::CreateDir
        );
        assert_eq!(
            check_host_path(p, T::FileOrCreate, &Observed::Missing, true),
            TypeCheck::CreateFile
        );
        assert_eq!(
            check_host_path(p, T::DirectoryOrCreate, &Observed::Missing, false),
            TypeCheck::Fail("hostPath /x doesn't exist".into())
        );
        assert_eq!(
            check_host_path(p, T::DirectoryOrCreate, &k(Directory), true),
            ok
        );
        assert_eq!(
            check_host_path(p, T::DirectoryOrCreate, &k(File), true),
            TypeCheck::Fail(
                "hostPath type check failed: /x is not a directory, it's a File".into()
            )
        );
        assert_eq!(
            check_host_path(p, T::FileOrCreate, &k(Directory), true),
            TypeCheck::Fail(
                "hostPath type check failed: /x is not a file, it's a Directory".into()
            )
        );
        let table = [
            (T::Directory, Directory, "directory"),
            (T::File, File, "file"),
            (T::Socket, Socket, "socket file"),
            (T::CharDevice, CharDevice, "character device"),
            (T::BlockDevice, BlockDevice, "block device"),
        ];
        for (want, kind, desc) in table {
            assert_eq!(check_host_path(p, want, &k(kind), true), ok, "{want:?}");
            assert_eq!(
                check_host_path(p, want, &Observed::Missing, true),
                TypeCheck::Fail("hostPath /x doesn't exist".into())
            );
            for (_, other, _) in table.iter().filter(|(_, o, _)| *o != kind) {
                assert_eq!(
                    check_host_path(p, want, &k(*other), true),
                    TypeCheck::Fail(format!(
                        "hostPath type check failed: /x is not a {desc}, it's a {}",
                        other.as_str()
                    ))
                );
            }
        }
        assert_eq!(
            check_host_path(p, T::Socket, &Observed::Unknown("fifo".into()), true),
            TypeCheck::Fail(
                "hostPath type check failed, /x is not a socket file, unable to determine its type: fifo"
                    .into()
            )
        );
        assert_eq!(
            HostPathType::parse(Some("Fancy")).unwrap_err(),
            "Fancy is an invalid volume type"
        );
        assert_eq!(HostPathType::parse(Some("")).unwrap(), T::Unset);
        assert_eq!(HostPathType::parse(None).unwrap(), T::Unset);
    }

    #[test]
    fn plans_empty_dirs() {
        let p = pod(
            vec![
                vol("default"),
                empty_dir("disk", None, Some("1Gi")),
                empty_dir("mem", Some("Memory"), None),
                empty_dir("small", Some("Memory"), Some("16Mi")),
            ],
            Some("256Mi"),
        );
        let plan = plan_pod(&p, &ctx()).unwrap();
        assert_eq!(plan.uid, "uid-1");
        let media: Vec<_> = plan
            .volumes
            .iter()
            .map(|v| match v {
                VolumePlan::EmptyDir { medium, .. } => *medium,
                _ => panic!("{v:?}"),
            })
            .collect();
        assert_eq!(
            media,
            vec![
                Medium::Disk,
                Medium::Disk,
                Medium::Memory {
                    size: Some(256 * MI as u64)
                },
                Medium::Memory {
                    size: Some(16 * MI as u64)
                },
            ]
        );
        // Without a pod limit (BestEffort): node allocatable.
        let p = pod(vec![empty_dir("mem", Some("Memory"), None)], None);
        assert_eq!(
            plan_pod(&p, &ctx()).unwrap().volumes[0],
            VolumePlan::EmptyDir {
                name: "mem".into(),
                medium: Medium::Memory {
                    size: Some(4 * GI as u64)
                }
            }
        );
    }

    #[test]
    fn rejects_what_cannot_run() {
        let err = |v: Volume| plan_pod(&pod(vec![v], None), &ctx()).unwrap_err();
        let e = err(empty_dir("h", Some("HugePages-2Mi"), None));
        assert!(matches!(e, VolumeError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("HugePages-2Mi"), "{e}");
        let e = err(empty_dir("x", Some("Tape"), None));
        assert_eq!(
            e,
            VolumeError::Invalid {
                volume: "x".into(),
                message: "unknown storage medium \"Tape\"".into()
            }
        );
        let e = err(Volume {
            nfs: Some(NFSVolumeSource {
                server: "s".into(),
                path: "/".into(),
                ..Default::default()
            }),
            ..vol("share")
        });
        assert_eq!(
            e.to_string(),
            "volume \"share\": volume type \"nfs\" is not supported by picolet"
        );
        let e = err(Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "app-config".into(),
                ..Default::default()
            }),
            ..vol("cfg")
        });
        assert_eq!(
            e.to_string(),
            "couldn't get configMap default/app-config for volume \"cfg\", no kubeClient defined"
        );
        assert_eq!(e.waiting_reason(), "CreateContainerConfigError");
        let e = err(Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some("tls".into()),
                ..Default::default()
            }),
            ..vol("certs")
        });
        assert!(matches!(e, VolumeError::NeedsApiServer { .. }));
        assert!(e.to_string().contains("secret default/tls"));
        let e = err(Volume {
            empty_dir: Some(Default::default()),
            nfs: Some(Default::default()),
            ..vol("two")
        });
        assert!(e.to_string().contains("more than 1 volume type"));
        let e = err(Volume {
            host_path: Some(HostPathVolumeSource {
                path: "/a/../etc".into(),
                type_: None,
            }),
            ..vol("hp")
        });
        assert_eq!(
            e.to_string(),
            "volume \"hp\": invalid HostPath `/a/../etc`: must not contain '..'"
        );
        let e = err(vol("../escape"));
        assert!(matches!(e, VolumeError::Invalid { .. }));
        let e = plan_pod(&pod(vec![vol("a"), vol("a")], None), &ctx()).unwrap_err();
        assert!(e.to_string().contains("duplicate"));
        let mut p = pod(vec![], None);
        p.metadata.uid = None;
        assert!(plan_pod(&p, &ctx()).is_err());
    }

    fn downward_item(path: &str, field: &str) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: field.into(),
                api_version: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn plans_projected_downward_api_only() {
        let projected = |sources: Vec<VolumeProjection>| Volume {
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(sources),
            }),
            ..vol("info")
        };
        let dapi = |items| VolumeProjection {
            downward_api: Some(DownwardAPIProjection { items: Some(items) }),
            ..Default::default()
        };
        let p = pod(
            vec![projected(vec![
                dapi(vec![downward_item("name", "metadata.name")]),
                dapi(vec![downward_item("sub/uid", "metadata.uid")]),
            ])],
            Some("128Mi"),
        );
        let plan = plan_pod(&p, &ctx()).unwrap();
        let VolumePlan::Files {
            plugin,
            payload,
            medium,
            ..
        } = &plan.volumes[0]
        else {
            panic!()
        };
        assert_eq!(*plugin, PROJECTED);
        assert_eq!(
            *medium,
            Medium::Memory {
                size: Some(128 * MI as u64)
            }
        );
        assert_eq!(payload["name"].data, b"p");
        assert_eq!(payload["sub/uid"].data, b"uid-1");
        assert_eq!(payload["name"].mode, 0o440);
        for (src, what) in [
            (
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "c".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "configMap default/c",
            ),
            (
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "a service account token",
            ),
        ] {
            let p = pod(
                vec![projected(vec![
                    dapi(vec![downward_item("name", "metadata.name")]),
                    src,
                ])],
                None,
            );
            let e = plan_pod(&p, &ctx()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("couldn't get {what} for volume \"info\", no kubeClient defined")
            );
        }
    }

    #[test]
    fn plans_downward_api_with_default_mode_and_fs_group() {
        let mut p = pod(
            vec![Volume {
                downward_api: Some(DownwardAPIVolumeSource {
                    default_mode: None,
                    items: Some(vec![downward_item("labels", "metadata.labels")]),
                }),
                ..vol("podinfo")
            }],
            None,
        );
        p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
            fs_group: Some(2000),
            ..Default::default()
        });
        let plan = plan_pod(&p, &ctx()).unwrap();
        assert_eq!(plan.fs_group, Some(2000));
        let VolumePlan::Files {
            payload, plugin, ..
        } = &plan.volumes[0]
        else {
            panic!()
        };
        assert_eq!(*plugin, DOWNWARD_API);
        assert_eq!(payload["labels"].mode, 0o644);
        assert_eq!(payload["labels"].data, b"");
    }

    #[test]
    fn nested_mount_points() {
        let m = |name: &str, path: &str| VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        };
        let mut p = pod(vec![], None);
        p.spec.as_mut().unwrap().containers[0].volume_mounts = Some(vec![
            m("info", "/etc/info/"),
            m("a", "/etc/info/nested"),
            m("b", "/etc/info/nested/deeper"),
            m("c", "/etc/info/nested-vol"),
            m("d", "/etc/information"),
            m("e", "/etc/info/x/./y"),
        ]);
        assert_eq!(
            nested_mountpoints(&p, "info").unwrap(),
            vec!["nested", "nested-vol", "x/y"]
        );
        assert!(nested_mountpoints(&p, "a").unwrap() == vec!["deeper"]);
        assert!(nested_mountpoints(&p, "d").unwrap().is_empty());
        assert_eq!(go_clean("a/../../b"), "../b");
        assert_eq!(go_clean("/../x/"), "/x");
        assert_eq!(go_clean(""), ".");
    }

    #[test]
    fn size_limit_check() {
        let p = pod(
            vec![
                empty_dir("nolimit", None, None),
                empty_dir("zero", None, Some("0")),
                empty_dir("scratch", None, Some("1Mi")),
                empty_dir("mem", Some("Memory"), Some("2Mi")),
            ],
            None,
        );
        let usage = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(
            exceeds_size_limit(
                &p,
                &usage(&[("nolimit", 1 << 40), ("zero", 5), ("scratch", 1 << 20)])
            ),
            None,
            "equal to the limit is fine"
        );
        let e = exceeds_size_limit(&p, &usage(&[("scratch", (1 << 20) + 1)])).unwrap();
        assert_eq!(e.volume, "scratch");
        assert_eq!(
            e.message(),
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
        );
        let e = exceeds_size_limit(&p, &usage(&[("mem", 3 << 20)])).unwrap();
        assert_eq!(e.volume, "mem");
        assert_eq!(e.used, 3 << 20);
    }

    fn api_pod(volumes: serde_json::Value, fs_group: Option<i64>) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "uid-1"},
            "spec": {"containers": [{"name": "c"}], "volumes": volumes}
        }))
        .unwrap();
        if let Some(g) = fs_group {
            p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
                fs_group: Some(g),
                ..Default::default()
            });
        }
        p
    }

    fn data() -> ApiData {
        use crate::objects::GetError;
        use std::rc::Rc;
        let cm: crate::api::core::ConfigMap = serde_json::from_value(serde_json::json!({
            "data": {"app.conf": "v1"}, "binaryData": {"b": "AAE="}
        }))
        .unwrap();
        let secret: crate::api::core::Secret = serde_json::from_value(serde_json::json!({
            "data": {"pass": "czNjcmV0"}
        }))
        .unwrap();
        let mut d = ApiData {
            available: true,
            ..Default::default()
        };
        d.config_maps.insert("app".into(), Ok(Rc::new(cm)));
        d.config_maps.insert(
            "gone".into(),
            Err(GetError::NotFound("configmap \"gone\" not found".into())),
        );
        d.secrets.insert("db".into(), Ok(Rc::new(secret)));
        d.secrets.insert(
            "gone".into(),
            Err(GetError::NotFound("secret \"gone\" not found".into())),
        );
        d.tokens.insert(("tok".into(), 0), Ok("jwt".into()));
        d.tokens.insert(
            ("bad".into(), 0),
            Err("failed to fetch token: 404 NotFound: serviceaccounts \"sa\" not found".into()),
        );
        d
    }

    fn files(
        plan: &PodPlan,
        i: usize,
    ) -> (&'static str, Medium, &BTreeMap<String, FileProjection>) {
        match &plan.volumes[i] {
            VolumePlan::Files {
                plugin,
                medium,
                payload,
                ..
            } => (plugin, *medium, payload),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn plans_api_volumes() {
        let p = api_pod(
            serde_json::json!([
                {"name": "cfg", "configMap": {"name": "app"}},
                {"name": "sec", "secret": {"secretName": "db", "defaultMode": 256,
                    "items": [{"key": "pass", "path": "db/pass", "mode": 288}]}},
                {"name": "opt", "configMap": {"name": "gone", "optional": true}},
                {"name": "tok", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "app", "items": [{"key": "app.conf", "path": "ca.crt"}]}},
                    {"secret": {"name": "gone", "optional": true}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
            ]),
            Some(2000),
        );
        let plan = plan_pod_with(&p, &ctx(), &data()).unwrap();
        let (plugin, medium, payload) = files(&plan, 0);
        assert_eq!((plugin, medium), (CONFIG_MAP, Medium::Disk));
        assert_eq!(payload["app.conf"].data, b"v1");
        assert_eq!(payload["b"].data, vec![0, 1]);
        let (plugin, medium, payload) = files(&plan, 1);
        assert_eq!(plugin, SECRET);
        assert!(matches!(medium, Medium::Memory { .. }), "secrets on tmpfs");
        assert_eq!(payload.keys().collect::<Vec<_>>(), ["db/pass"]);
        assert_eq!(payload["db/pass"].mode, 0o440);
        let (_, _, payload) = files(&plan, 2);
        assert!(payload.is_empty(), "optional and missing: empty");
        let (plugin, medium, payload) = files(&plan, 3);
        assert_eq!(plugin, PROJECTED);
        assert!(matches!(medium, Medium::Memory { .. }));
        assert_eq!(payload["token"].data, b"jwt");
        assert_eq!(
            payload["token"].mode, 0o600,
            "fsGroup: 0600, group read added later"
        );
        assert_eq!(payload["ca.crt"].mode, 0o644);
        assert_eq!(payload["namespace"].data, b"ns");
    }

    #[test]
    fn api_volume_failures_are_set_up_errors() {
        let err = |vols: serde_json::Value| {
            plan_pod_with(&api_pod(vols, None), &ctx(), &data()).unwrap_err()
        };
        let e = err(serde_json::json!([{"name": "cfg", "configMap": {"name": "gone"}}]));
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"gone\" not found"
        );
        assert_eq!(e.waiting_reason(), "ContainerCreating");
        let e = err(
            serde_json::json!([{"name": "s", "secret": {"secretName": "db",
            "items": [{"key": "nope", "path": "x"}]}}]),
        );
        assert!(
            e.to_string()
                .ends_with("references non-existent secret key: nope"),
            "{e}"
        );
        let e = err(
            serde_json::json!([{"name": "s", "secret": {"secretName": "db",
            "items": [{"key": "pass", "path": "../x"}]}}]),
        );
        assert!(e.to_string().contains("must not contain '..'"), "{e}");
        let e = err(
            serde_json::json!([{"name": "bad", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}},
            {"configMap": {"name": "gone"}}]}}]),
        );
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"bad\" : [failed to fetch token: 404 NotFound: \
             serviceaccounts \"sa\" not found, configmap \"gone\" not found]"
        );
        // Set up before: kept as it is.
        let mut d = data();
        d.keep.insert("cfg".into());
        let p = api_pod(
            serde_json::json!([{"name": "cfg", "configMap": {"name": "gone"}}]),
            None,
        );
        assert_eq!(
            plan_pod_with(&p, &ctx(), &d).unwrap().volumes,
            vec![VolumePlan::Kept {
                name: "cfg".into(),
                plugin: CONFIG_MAP
            }]
        );
        // Without API objects (a static pod): refused as before.
        let p = api_pod(
            serde_json::json!([{"name": "cfg", "configMap": {"name": "app"}}]),
            None,
        );
        let e = plan_pod_with(&p, &ctx(), &ApiData::default()).unwrap_err();
        assert!(matches!(e, VolumeError::NeedsApiServer { .. }), "{e:?}");
    }
}
