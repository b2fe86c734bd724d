//! Pulls from the real local registry: OCI, Docker schema2, an index with a
//! platform choice, the whiteout layer through a real overlay mount, a zstd
//! layer, and the error texts of bad input.

mod image_support;
use image_support::*;
use picolet::rt::block_on;

#[test]
fn pulls_oci_docker_and_index_as_one_image() {
    let reg = registry();
    let root = TestRoot::new("kinds");
    let svc = root.service(&root.config(None, None, ""));
    block_on(async {
        let oci = svc
            .pull(&format!("{reg}/picolet/busybox:latest"))
            .await
            .unwrap();
        let docker = svc
            .pull(&format!("{reg}/picolet/busybox:docker"))
            .await
            .unwrap();
        let multi = svc
            .pull(&format!("{reg}/picolet/busybox:multi"))
            .await
            .unwrap();
        // Same config => same image id, whatever the manifest kind.
        assert_eq!(oci.id, docker.id);
        assert_eq!(oci.id, multi.id);
        assert_eq!(oci.config.cmd, vec!["sh"]);
        assert_eq!(oci.diff_ids.len(), 1);
        let img = svc.get(&oci.id).unwrap().unwrap();
        for t in ["latest", "docker", "multi"] {
            assert!(
                img.repo_tags
                    .contains(&format!("{reg}/picolet/busybox:{t}")),
                "{:?}",
                img.repo_tags
            );
        }
        // three distinct manifests: OCI, Docker v2, the index
        assert_eq!(img.repo_digests.len(), 3, "{:?}", img.repo_digests);
        let idx_digest = img.repo_digests[2].split('@').nth(1).unwrap().to_string();
        assert!(svc
            .get(&format!("{reg}/picolet/busybox@{idx_digest}"))
            .unwrap()
            .is_some());
        assert!(svc.get(&oci.id[7..19]).unwrap().is_some(), "short id");
        assert_eq!(svc.list().unwrap().len(), 1);
        // the layer was unpacked once
        let snaps = std::fs::read_dir(root.path("root/images/snapshots"))
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(snaps, 1);
        // by digest only: no tag added
        let by_digest = svc
            .pull(&format!("{reg}/picolet/busybox@{idx_digest}"))
            .await
            .unwrap();
        assert_eq!(by_digest.repo_tags.len(), 3);
        // rm by one tag only untags; by id removes everything
        svc.remove(&format!("{reg}/picolet/busybox:docker"))
            .await
            .unwrap();
        assert_eq!(svc.get(&oci.id).unwrap().unwrap().repo_tags.len(), 2);
        svc.remove(&oci.id).await.unwrap();
        assert!(svc.list().unwrap().is_empty());
        let left = std::fs::read_dir(root.path("root/images/blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(left, 0, "blobs left after rm");
    });
}

#[test]
fn whiteout_layer_hides_motd_in_the_overlay() {
    let reg = registry();
    let root = TestRoot::new("whiteout");
    let svc = root.service(&root.config(None, None, ""));
    let img = block_on(svc.pull(&format!("{reg}/picolet/httpd:latest"))).unwrap();
    assert_eq!(img.diff_ids.len(), 3);
    assert_eq!(img.config.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(img.config.entrypoint[0], "httpd");
    let m = svc
        .rootfs_mount(&img.id, &root.path("containers/probe"))
        .unwrap();
    assert_eq!(m.fstype, "overlay");
    assert!(m.options.contains(&"index=off".to_string()));
    // topmost layer first
    let lower = m.options[0].strip_prefix("lowerdir=").unwrap();
    assert!(lower
        .split(':')
        .next()
        .unwrap()
        .contains(&img.diff_ids[2][7..]));
    let rootfs = mount_rootfs(&root, &svc, &img.id, "c1");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("www/healthz")).unwrap(),
        "ok\n"
    );
    assert!(
        !rootfs.join("etc/motd").exists(),
        "whiteout did not hide /etc/motd"
    );
    assert!(rootfs.join("etc/passwd").is_file());
    // the base image still has it
    let base = block_on(svc.pull(&format!("{reg}/picolet/busybox:latest"))).unwrap();
    let b = mount_rootfs(&root, &svc, &base.id, "c2");
    assert!(b.join("etc/motd").is_file());
    // writes go to the container's upper dir
    std::fs::write(rootfs.join("tmp/x"), "y").unwrap();
    assert!(root.path("containers/c1/fs/tmp/x").is_file());
}

#[test]
fn zstd_layer() {
    let reg = registry();
    need_tool("skopeo");
    let root = TestRoot::new("zstd");
    // Recompress the busybox image with zstd (via a dir: copy, which really
    // recompresses) and push it to its own repository.
    let dir = root.path("zstd-dir");
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            "--dest-compress",
            "--dest-compress-format",
            "zstd",
            "oci:/var/tmp/picolet-images/oci:busybox",
            &format!("dir:{}", dir.display()),
        ],
    );
    let dest = format!("{reg}/picolet-img/zstd:latest");
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-compress-format",
            "zstd",
            &format!("dir:{}", dir.display()),
            &format!("docker://{dest}"),
        ],
    );
    let acc = picolet::image::registry::ACCEPT;
    let (st, body) = http_get(
        &reg,
        "/v2/picolet-img/zstd/manifests/latest",
        &[("Accept", acc)],
    )
    .unwrap();
    assert_eq!(st, 200);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("tar+zstd"), "not a zstd layer: {body}");
    let svc = root.service(&root.config(None, None, ""));
    let img = block_on(svc.pull(&dest)).unwrap();
    let rootfs = mount_rootfs(&root, &svc, &img.id, "z");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh"))
            .unwrap()
            .to_string_lossy(),
        "/bin/busybox"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
        "picolet test image\n"
    );
}

#[test]
fn errors_name_the_reference_and_cause() {
    let reg = registry();
    let root = TestRoot::new("errors");
    let svc = root.service(&root.config(None, None, ""));
    let err = |r: String| format!("{:#}", block_on(svc.pull(&r)).unwrap_err());
    let e = err("Bad/Name".into());
    assert!(
        e.contains("\"Bad/Name\"") && e.contains("invalid reference"),
        "{e}"
    );
    let e = err(format!("{reg}/picolet/busybox:nope"));
    assert!(
        e.contains("picolet/busybox:nope") && e.contains("not found (404)"),
        "{e}"
    );
    assert!(e.contains("MANIFEST_UNKNOWN"), "{e}");
    let e = err(format!("{reg}/picolet-img/never-pushed:1"));
    assert!(e.contains("not found (404)"), "{e}");
    let e = err("no-such-host.invalid/x:1".into());
    assert!(
        e.contains("no-such-host.invalid") && e.contains("resolve host"),
        "{e}"
    );
    // connection refused on a port nobody listens on (loopback => plain HTTP)
    let e = err("127.0.0.1:5199/x:1".into());
    assert!(
        e.contains("127.0.0.1:5199/x:1") && e.contains("connect"),
        "{e}"
    );
    assert!(svc.list().unwrap().is_empty());
}

#[test]
fn cli_pull_list_rm_prune() {
    let reg = registry();
    let root = TestRoot::new("cli");
    let bin = env!("CARGO_BIN_EXE_picolet");
    let rd = root.path("root");
    let run = |args: &[&str]| {
        let mut a = vec!["images", "--root-dir", rd.to_str().unwrap()];
        a.extend_from_slice(args);
        std::process::Command::new(bin).args(&a).output().unwrap()
    };
    let out = run(&["pull", &format!("{reg}/picolet/httpd")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"));
    let out = run(&["list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains(&format!("{reg}/picolet/httpd:latest")) && list.contains(&id[7..19]),
        "{list}"
    );
    let out = run(&["pull", &format!("{reg}/picolet/httpd:missing")]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("picolet/httpd:missing") && e.contains("404"),
        "{e}"
    );
    let out = run(&["rm", &id[7..19]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["rm", &id[7..19]]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = run(&["prune"]);
    assert!(out.status.success());
}

#[test]
fn mirrors_are_tried_in_order() {
    let reg = registry();
    let root = TestRoot::new("mirror");
    let p = Proxy::start(5110, &reg, ProxyRules::default());
    // first mirror refuses connections, the second (a proxy to the test
    // registry) serves; the registry's own host does not even resolve
    let yaml = format!(
        "mirrors:\n  registry.picolet.invalid:\n    endpoint: [\"http://127.0.0.1:5197\", \"http://{}\"]\n",
        p.addr
    );
    let svc = root.service(&root.config(Some(&yaml), None, ""));
    let r = "registry.picolet.invalid/picolet/busybox:latest";
    let img = block_on(svc.pull(r)).unwrap();
    assert!(
        img.repo_tags.contains(&r.to_string()),
        "{:?}",
        img.repo_tags
    );
    assert!(
        !p.blob_gets.lock().unwrap().is_empty(),
        "blobs did not come from the mirror"
    );
    // without mirrors the same name fails on DNS
    let root2 = TestRoot::new("mirror-none");
    let svc2 = root2.service(&root2.config(None, None, ""));
    let e = format!("{:#}", block_on(svc2.pull(r)).unwrap_err());
    assert!(e.contains("registry.picolet.invalid"), "{e}");
}
