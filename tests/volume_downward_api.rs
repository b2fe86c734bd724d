//! downwardAPI and projected volumes on a real host: files, modes, the
//! atomic writer's layout on a tmpfs, updates on label changes with the
//! `..data` swap, fsGroup, nested mount points, and the API-backed sources
//! that cannot run yet. Run as root.

mod volume_support;

use picolet::volume::VolumeError;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use volume_support::*;

// Modes in decimal: 256 = 0400, 288 = 0440.
const POD: &str = r#"
metadata:
  name: web
  namespace: prod
  uid: uid-dapi
  labels: {app: web, tier: LABEL_TIER}
  annotations: {note: "multi\nline \"quoted\""}
spec:
  securityContext: {fsGroup: 3456}
  containers:
  - name: app
    image: busybox
    resources: {limits: {memory: 64Mi, cpu: 500m}, requests: {cpu: 250m}}
    volumeMounts:
    - {name: podinfo, mountPath: /etc/podinfo}
    - {name: scratch, mountPath: /etc/podinfo/scratch}
  volumes:
  - name: scratch
    emptyDir: {}
  - name: podinfo
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: meta/annotations, fieldRef: {fieldPath: metadata.annotations}, mode: 256}
      - {path: tier, fieldRef: {fieldPath: "metadata.labels['tier']"}}
      - path: mem_limit_mi
        resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}
      - path: cpu_request_m
        resourceFieldRef: {containerName: app, resource: requests.cpu, divisor: 1m}
  - name: all-in-one
    projected:
      defaultMode: 288
      sources:
      - downwardAPI:
          items:
          - {path: ns, fieldRef: {fieldPath: metadata.namespace}}
      - downwardAPI:
          items:
          - {path: uid, fieldRef: {fieldPath: metadata.uid}}
"#;

fn the_pod(tier: &str) -> picolet::api::core::Pod {
    pod(&POD.replace("LABEL_TIER", tier))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn downward_api_files_and_layout() {
    let env = Env::new("downward");
    let vm = env.manager();
    let vols = block_on(vm.setup_pod(&the_pod("front"), &ctx())).expect("setup");
    let dir = &vols["podinfo"].host_path;
    assert_eq!(
        *dir,
        env.pods_dir()
            .join("uid-dapi/volumes/kubernetes.io~downward-api/podinfo")
    );
    assert!(vols["podinfo"].read_only, "mounted read-only as upstream");
    // Upstream wraps a Memory emptyDir: a tmpfs sized to the pod's limit.
    let m = mounts_at(dir);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].fs_type, "tmpfs");
    assert!(m[0].super_options.contains("size=65536k"), "{m:?}");

    assert_eq!(read(&dir.join("name")), "web");
    assert_eq!(read(&dir.join("labels")), "app=\"web\"\ntier=\"front\"");
    assert_eq!(
        read(&dir.join("meta/annotations")),
        "note=\"multi\\nline \\\"quoted\\\"\""
    );
    assert_eq!(read(&dir.join("tier")), "front");
    assert_eq!(read(&dir.join("mem_limit_mi")), "64");
    assert_eq!(read(&dir.join("cpu_request_m")), "250");

    // The atomic writer's layout: visible names are symlinks through ..data,
    // which points at a timestamped directory.
    let data = std::fs::read_link(dir.join("..data")).unwrap();
    let ts = data.to_str().unwrap();
    assert!(ts.starts_with("..20") && ts.len() > 22, "{ts}");
    assert_eq!(
        std::fs::read_link(dir.join("labels")).unwrap().to_str(),
        Some("..data/labels")
    );
    assert_eq!(
        std::fs::read_link(dir.join("meta")).unwrap().to_str(),
        Some("..data/meta")
    );
    assert!(dir.join(ts).join("labels").is_file());
    // Modes: defaultMode 0644, item mode 0400 (256); fsGroup adds group read for
    // a read-only volume and group + setgid on directories.
    assert_eq!(mode(&dir.join(ts).join("labels")), 0o644);
    assert_eq!(mode(&dir.join(ts).join("meta/annotations")), 0o440);
    assert_eq!(mode(&dir.join(ts)), 0o2755);
    assert_eq!(std::fs::metadata(dir.join("labels")).unwrap().gid(), 3456);
    // The nested mount point of the other volume exists in the volume.
    assert!(dir.join("scratch").is_dir());

    // Projected: one tmpfs, both sources, defaultMode 0440.
    let pj = &vols["all-in-one"].host_path;
    assert!(pj.ends_with("kubernetes.io~projected/all-in-one"));
    assert!(vols["all-in-one"].read_only);
    assert_eq!(read(&pj.join("ns")), "prod");
    assert_eq!(read(&pj.join("uid")), "uid-dapi");
    assert_eq!(mode(&std::fs::canonicalize(pj.join("ns")).unwrap()), 0o440);
    assert_eq!(mounts_at(pj).len(), 1);

    // Setting up again with the same pod changes nothing.
    block_on(vm.setup_pod(&the_pod("front"), &ctx())).expect("again");
    assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), data);
    assert_eq!(mounts_at(dir).len(), 1);

    block_on(vm.teardown_pod("uid-dapi")).expect("teardown");
    assert!(mounts_under(&env.pods_dir()).is_empty());
    assert!(!env.pods_dir().join("uid-dapi").exists());
}

#[test]
fn label_change_swaps_data_atomically() {
    let env = Env::new("downward-update");
    let vm = env.manager();
    let vols = block_on(vm.setup_pod(&the_pod("front"), &ctx())).expect("setup");
    let dir = vols["podinfo"].host_path.clone();
    let old_ts = std::fs::read_link(dir.join("..data")).unwrap();

    // A reader that opened the old version before the update.
    let mut old_labels = std::fs::File::open(dir.join("labels")).unwrap();
    let mut old_tier = std::fs::File::open(dir.join("tier")).unwrap();

    block_on(vm.setup_pod(&the_pod("back"), &ctx())).expect("update");

    let new_ts = std::fs::read_link(dir.join("..data")).unwrap();
    assert_ne!(new_ts, old_ts, "..data points at a new version");
    assert!(!dir.join(&old_ts).exists(), "old version removed");
    assert_eq!(read(&dir.join("labels")), "app=\"web\"\ntier=\"back\"");
    assert_eq!(read(&dir.join("tier")), "back");
    // Unchanged items are carried into the new version.
    assert_eq!(read(&dir.join("name")), "web");
    assert_eq!(
        std::fs::read_link(dir.join("labels")).unwrap().to_str(),
        Some("..data/labels")
    );
    // The old reader still sees the old, consistent version.
    let mut s = String::new();
    old_labels.read_to_string(&mut s).unwrap();
    assert_eq!(s, "app=\"web\"\ntier=\"front\"");
    s.clear();
    old_tier.read_to_string(&mut s).unwrap();
    assert_eq!(s, "front");
    // The new version got fsGroup ownership before it was published.
    assert_eq!(std::fs::metadata(dir.join("tier")).unwrap().gid(), 3456);
    // Only one version and the link are left.
    let hidden: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".."))
        .collect();
    assert_eq!(hidden.len(), 2, "{hidden:?}");
    block_on(vm.teardown_pod("uid-dapi")).expect("teardown");
}

#[test]
fn api_backed_sources_are_not_runnable_yet() {
    let env = Env::new("downward-api-backed");
    let vm = env.manager();
    for (volume, text) in [
        (
            "{name: cfg, configMap: {name: app-config}}",
            "couldn't get configMap ns1/app-config for volume \"cfg\", no kubeClient defined",
        ),
        (
            "{name: tls, secret: {secretName: tls}}",
            "couldn't get secret ns1/tls for volume \"tls\", no kubeClient defined",
        ),
        (
            "{name: token, projected: {sources: [{serviceAccountToken: {path: token}}]}}",
            "couldn't get a service account token for volume \"token\", no kubeClient defined",
        ),
        (
            "{name: mixed, projected: {sources: [{downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}}, {secret: {name: s}}]}}",
            "couldn't get secret ns1/s for volume \"mixed\", no kubeClient defined",
        ),
        (
            "{name: bundle, projected: {sources: [{clusterTrustBundle: {signerName: example.com/ca, path: ca.pem}}]}}",
            "couldn't get clusterTrustBundle \"signer example.com/ca\" for volume \"bundle\", no kubeClient defined",
        ),
    ] {
        let p = pod(&format!(
            "metadata: {{name: p, namespace: ns1, uid: uid-api}}\nspec:\n  containers: [{{name: app, image: busybox}}]\n  volumes:\n  - {{name: ok, emptyDir: {{}}}}\n  - {volume}\n"
        ));
        let e = block_on(vm.setup_pod(&p, &ctx())).unwrap_err();
        assert!(matches!(e, VolumeError::NeedsApiServer { .. }), "{e:?}");
        assert_eq!(e.to_string(), text);
        assert_eq!(e.waiting_reason(), "CreateContainerConfigError");
    }
    assert!(!env.pods_dir().join("uid-api").exists());
    // Volume downward API fields are metadata and resources only.
    let p = pod(
        "metadata: {name: p, uid: uid-api}\nspec:\n  containers: [{name: app, image: busybox}]\n  volumes:\n  - {name: ip, downwardAPI: {items: [{path: ip, fieldRef: {fieldPath: status.podIP}}]}}\n",
    );
    let e = block_on(vm.setup_pod(&p, &ctx())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "volume \"ip\": unsupported fieldPath: status.podIP"
    );
}
