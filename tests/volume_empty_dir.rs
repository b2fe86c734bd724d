//! emptyDir volumes on a real host: disk directories and tmpfs mounts
//! (size, options, teardown), fsGroup, usage for sizeLimit. Run as root.

mod volume_support;

use picolet::volume::exceeds_size_limit;
use std::os::unix::fs::MetadataExt;
use volume_support::*;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, uid: POD_UID}
spec:
  securityContext: {fsGroup: 2345}
  containers:
  - name: app
    image: busybox
    resources: {limits: {memory: 96Mi}}
  volumes:
  - name: scratch
    emptyDir: {sizeLimit: 1Mi}
  - name: cache
    emptyDir: {medium: Memory, sizeLimit: 8Mi}
  - name: shm
    emptyDir: {medium: Memory}
  - name: nosource
"#;

fn the_pod(uid: &str) -> picolet::api::core::Pod {
    pod(&POD.replace("POD_UID", uid))
}

#[test]
fn disk_and_memory_empty_dirs_set_up_and_tear_down() {
    let env = Env::new("emptydir");
    let vm = env.manager();
    let p = the_pod("uid-ed-1");
    let vols = block_on(vm.setup_pod(&p, &ctx())).expect("setup");
    assert_eq!(
        vols.keys().collect::<Vec<_>>(),
        vec!["cache", "nosource", "scratch", "shm"]
    );
    let pod_dir = env.pods_dir().join("uid-ed-1");
    let scratch = pod_dir.join("volumes/kubernetes.io~empty-dir/scratch");
    assert_eq!(vols["scratch"].host_path, scratch);
    assert!(!vols["scratch"].read_only);
    assert!(scratch.is_dir());
    // 0777 whatever the umask, plus fsGroup's setgid; group is the fsGroup.
    assert_eq!(mode(&scratch), 0o2777);
    assert_eq!(std::fs::metadata(&scratch).unwrap().gid(), 2345);
    assert!(mounts_at(&scratch).is_empty(), "disk medium is not a mount");
    assert!(vols["nosource"].host_path.is_dir(), "no source = emptyDir");

    // Memory: a tmpfs of the sizeLimit (below the pod's 96Mi limit),
    // nodev+nosuid; without sizeLimit, the pod's memory limit.
    let cache = &vols["cache"].host_path;
    let m = mounts_at(cache);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].fs_type, "tmpfs");
    assert!(m[0].super_options.contains("size=8192k"), "{m:?}");
    for opt in ["nodev", "nosuid"] {
        assert!(m[0].options.split(',').any(|o| o == opt), "{opt}: {m:?}");
    }
    let shm = mounts_at(&vols["shm"].host_path);
    assert!(shm[0].super_options.contains("size=98304k"), "{shm:?}");
    // tmpfs root (1777) with fsGroup applied.
    assert_eq!(mode(cache), 0o3777);
    assert_eq!(std::fs::metadata(cache).unwrap().gid(), 2345);

    // Idempotent: files survive, no second mount.
    std::fs::write(scratch.join("keep"), b"x").unwrap();
    std::fs::write(cache.join("keep"), b"y").unwrap();
    let again = block_on(vm.setup_pod(&p, &ctx())).expect("second setup");
    assert_eq!(again, vols);
    assert_eq!(std::fs::read(scratch.join("keep")).unwrap(), b"x");
    assert_eq!(std::fs::read(cache.join("keep")).unwrap(), b"y");
    assert_eq!(mounts_at(cache).len(), 1);

    // A tmpfs lost (as after a reboot) is mounted again.
    rustix::mount::unmount(cache, rustix::mount::UnmountFlags::empty()).unwrap();
    block_on(vm.setup_pod(&p, &ctx())).expect("setup after reboot");
    assert_eq!(mounts_at(cache).len(), 1);

    // Teardown: every mount gone, the pod dir gone; again is fine.
    block_on(vm.teardown_pod("uid-ed-1")).expect("teardown");
    assert!(mounts_under(&pod_dir).is_empty());
    assert!(!pod_dir.exists());
    block_on(vm.teardown_pod("uid-ed-1")).expect("second teardown");
}

#[test]
fn usage_measures_disk_and_memory_empty_dirs() {
    let env = Env::new("usage");
    let vm = env.manager();
    let p = the_pod("uid-ed-2");
    let vols = block_on(vm.setup_pod(&p, &ctx())).expect("setup");
    let before = block_on(vm.usage("uid-ed-2")).unwrap();
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        vec!["cache", "nosource", "scratch", "shm"]
    );
    assert_eq!(exceeds_size_limit(&p, &before), None);

    // 3 MiB of real data in the 1Mi disk volume, 2 MiB in the 8Mi tmpfs; a
    // hard link is counted once, a sparse file by its blocks.
    let data = vec![7u8; 3 << 20];
    std::fs::write(vols["scratch"].host_path.join("big"), &data).unwrap();
    std::fs::hard_link(
        vols["scratch"].host_path.join("big"),
        vols["scratch"].host_path.join("big-link"),
    )
    .unwrap();
    let f = std::fs::File::create(vols["scratch"].host_path.join("sparse")).unwrap();
    f.set_len(100 << 20).unwrap();
    std::fs::write(vols["cache"].host_path.join("mem"), &data[..2 << 20]).unwrap();

    let u = block_on(vm.usage("uid-ed-2")).unwrap();
    let scratch = u["scratch"];
    assert!(
        ((3 << 20)..(3 << 20) + (64 << 10)).contains(&scratch),
        "scratch usage {scratch}"
    );
    let cache = u["cache"];
    assert!(
        ((2 << 20)..(2 << 20) + (64 << 10)).contains(&cache),
        "cache usage {cache}"
    );
    let over = exceeds_size_limit(&p, &u).expect("scratch is over 1Mi");
    assert_eq!(over.volume, "scratch");
    assert_eq!(
        over.message(),
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    // A tmpfs cannot grow past its size: writing 9 MiB into the 8Mi cache fails.
    let err = std::fs::write(vols["cache"].host_path.join("huge"), vec![1u8; 9 << 20]);
    assert!(err.is_err(), "tmpfs size enforced");
    block_on(vm.teardown_pod("uid-ed-2")).expect("teardown");
    assert!(block_on(vm.usage("uid-ed-2")).unwrap().is_empty());
}

#[test]
fn hugepages_and_unsupported_types_touch_nothing() {
    let env = Env::new("unsupported");
    let vm = env.manager();
    let p = pod(r#"
metadata: {name: h, uid: uid-ed-3}
spec:
  containers: [{name: app, image: busybox}]
  volumes:
  - {name: ok, emptyDir: {}}
  - {name: huge, emptyDir: {medium: HugePages}}
"#);
    let e = block_on(vm.setup_pod(&p, &ctx())).unwrap_err();
    assert_eq!(e.volume(), "huge");
    assert_eq!(e.waiting_reason(), "CreateContainerConfigError");
    assert!(e.to_string().contains("not supported"), "{e}");
    assert!(
        !env.pods_dir().join("uid-ed-3").exists(),
        "the pod is checked before anything is created"
    );
    let p = pod(r#"
metadata: {name: h, uid: uid-ed-3}
spec:
  containers: [{name: app, image: busybox}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
"#);
    let e = block_on(vm.setup_pod(&p, &ctx())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "volume \"data\": volume type \"persistentVolumeClaim\" is not supported by picolet"
    );
}
