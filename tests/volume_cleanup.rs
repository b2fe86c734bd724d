//! Teardown and orphan cleanup on a real host: tmpfs volumes unmounted,
//! pod dirs removed, a new manager over the same dir (a restart) cleaning
//! what the old one left, and nothing outside the pod dir harmed by a
//! leftover bind mount. Run as root.

mod volume_support;

use std::collections::BTreeSet;
use volume_support::*;

fn pod_with_volumes(uid: &str) -> picolet::api::core::Pod {
    pod(&format!(
        r#"
metadata: {{name: p-{uid}, uid: {uid}, labels: {{a: b}}}}
spec:
  containers: [{{name: app, image: busybox}}]
  volumes:
  - {{name: disk, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 4Mi}}}}
  - name: info
    downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}
"#
    ))
}

#[test]
fn orphans_are_cleaned_after_a_restart() {
    let env = Env::new("orphans");
    {
        let vm = env.manager();
        for uid in ["uid-keep", "uid-gone-1", "uid-gone-2"] {
            let vols = block_on(vm.setup_pod(&pod_with_volumes(uid), &ctx())).expect("setup");
            std::fs::write(vols["disk"].host_path.join("f"), b"data").unwrap();
            std::fs::write(vols["mem"].host_path.join("f"), b"data").unwrap();
        }
        // The pod's other files live in its dir too (spec module's /etc files).
        std::fs::write(
            env.pods_dir().join("uid-gone-1/etc-hosts"),
            b"127.0.0.1 x\n",
        )
        .unwrap();
    }
    let pods = env.pods_dir();
    assert_eq!(mounts_under(&pods).len(), 6, "2 tmpfs per pod");

    // picolet restarts: a new manager, only uid-keep is known.
    let vm = env.manager();
    let known: BTreeSet<String> = ["uid-keep".to_string()].into();
    let report = block_on(vm.cleanup_orphans(&known));
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(removed, vec!["uid-gone-1", "uid-gone-2"]);
    assert!(!pods.join("uid-gone-1").exists());
    assert!(!pods.join("uid-gone-2").exists());
    assert_eq!(mounts_under(&pods).len(), 2, "uid-keep's mounts stay");
    assert!(mounts_under(&pods)
        .iter()
        .all(|m| m.starts_with(pods.join("uid-keep"))));
    let keep = pods.join("uid-keep/volumes/kubernetes.io~empty-dir");
    assert_eq!(std::fs::read(keep.join("mem/f")).unwrap(), b"data");
    assert_eq!(std::fs::read(keep.join("disk/f")).unwrap(), b"data");

    // The known pod carries on: setup reuses what exists.
    let vols = block_on(vm.setup_pod(&pod_with_volumes("uid-keep"), &ctx())).expect("setup");
    assert_eq!(
        std::fs::read(vols["mem"].host_path.join("f")).unwrap(),
        b"data"
    );
    // Nothing left to do on a second pass.
    let again = block_on(vm.cleanup_orphans(&known));
    assert!(again.removed.is_empty() && again.failed.is_empty());
    // Unknown everything: all gone.
    let all = block_on(vm.cleanup_orphans(&BTreeSet::new()));
    assert_eq!(all.removed, vec!["uid-keep"]);
    assert!(mounts_under(&pods).is_empty());
}

#[test]
fn teardown_never_harms_what_is_bind_mounted_below_the_pod() {
    let env = Env::new("teardown-bind");
    let vm = env.manager();
    block_on(vm.setup_pod(&pod_with_volumes("uid-bind"), &ctx())).expect("setup");
    // A host directory bind-mounted into the pod dir (as a leftover subPath
    // bind or a mount propagated back from a container would be), plus a
    // second mount stacked on the tmpfs.
    let outside = env.root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    let pod_dir = env.pods_dir().join("uid-bind");
    let target = pod_dir.join("volumes/kubernetes.io~empty-dir/disk/bound");
    std::fs::create_dir_all(&target).unwrap();
    rustix::mount::mount_bind(&outside, &target).unwrap();
    let mem = pod_dir.join("volumes/kubernetes.io~empty-dir/mem");
    rustix::mount::mount(
        "tmpfs",
        &mem,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();

    block_on(vm.teardown_volumes("uid-bind")).expect("teardown volumes");
    assert!(
        mounts_under(&pod_dir).is_empty(),
        "{:?}",
        mounts_under(&pod_dir)
    );
    assert!(!pod_dir.join("volumes").exists());
    assert!(!pod_dir.join("plugins").exists());
    assert!(pod_dir.exists(), "the pod's other files stay");
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");

    block_on(vm.teardown_pod("uid-bind")).expect("teardown");
    block_on(vm.teardown_pod("uid-bind")).expect("teardown again");
    assert!(!pod_dir.exists());
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");
    // Not a uid: refused, nothing touched.
    assert!(block_on(vm.teardown_pod("..")).is_err());
    assert!(block_on(vm.teardown_pod("")).is_err());
    assert!(env.pods_dir().exists());
}

#[test]
fn a_failed_first_setup_of_a_file_volume_is_undone() {
    let env = Env::new("undo");
    let vm = env.manager();
    // A payload that cannot be written: `a` is both a file and a directory.
    let p = pod(r#"
metadata: {name: p, uid: uid-undo}
spec:
  containers: [{name: app, image: busybox}]
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: a, fieldRef: {fieldPath: metadata.name}}
      - {path: a/b, fieldRef: {fieldPath: metadata.uid}}
"#);
    let e = block_on(vm.setup_pod(&p, &ctx())).unwrap_err();
    assert_eq!(e.waiting_reason(), "ContainerCreating");
    assert!(
        e.to_string()
            .starts_with("MountVolume.SetUp failed for volume \"info\" : "),
        "{e}"
    );
    let dir = env
        .pods_dir()
        .join("uid-undo/volumes/kubernetes.io~downward-api/info");
    assert!(mounts_at(&dir).is_empty(), "tmpfs unmounted again");
    assert!(!dir.exists());
}
