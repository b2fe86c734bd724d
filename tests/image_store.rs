//! The store: image GC on a small real filesystem, air-gapped import (OCI
//! layout tarball, `docker save` archive, the import dir), and concurrent
//! pulls of one image coalescing into one download (in one process and
//! across two processes).

mod image_support;
use image_support::*;
use picolet::rt::block_on;
use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

const COALESCE_PORT: u16 = 5107;
const COALESCE_PROC_PORT: u16 = 5109;

fn uniq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ ((std::process::id() as u64) << 20)
}

fn push_noise(root: &TestRoot, reg: &str, repo: &str, size: usize, seed: u64) -> (String, String) {
    let tar = layer_tar(&[("data.bin", &noise(seed, size))]);
    let l = gz_layer(&tar);
    let digest = format!("sha256:{}", sha256_hex(&l.blob));
    let dir = root.path(&format!("layout-{repo}-{seed}"));
    write_layout(&dir, "t", &[l], None);
    let r = format!("{reg}/picolet-img/{repo}:t{seed}");
    push(&dir, "t", &r, &[]);
    (r, digest)
}

fn snapshot_exists(root: &TestRoot, diff_id: &str) -> bool {
    root.path(&format!("root/images/snapshots/{}/fs", &diff_id[7..]))
        .is_dir()
}

#[test]
fn gc_frees_least_recently_used_and_keeps_used_images() {
    let reg = registry();
    let root = TestRoot::new("gc");
    // A 10 MiB tmpfs holds the whole picolet root, so usage is real.
    let rd = root.path("root");
    std::fs::create_dir_all(&rd).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &rd,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=10m"),
    )
    .unwrap();
    root.track_mount(&rd);
    let seed = uniq();
    let refs: Vec<(String, String)> = (0..3)
        .map(|i| push_noise(&root, &reg, "gc", 1_600_000, seed + i))
        .collect();
    let svc = root.service(&root.config(None, None, "imageMinimumGCAge: 0s"));
    let imgs: Vec<_> = refs
        .iter()
        .map(|(r, _)| block_on(svc.pull(r)).unwrap())
        .collect();
    let (a, b, c) = (&imgs[0], &imgs[1], &imgs[2]);
    std::thread::sleep(Duration::from_millis(1100));
    svc.rootfs_mount(&c.id, &root.path("containers/c")).unwrap(); // C used recently
    let u = svc.fs_usage().unwrap();
    let pct = 100 - u.available_bytes * 100 / u.capacity_bytes;
    assert!(
        pct >= 85,
        "usage {pct}% is below the high threshold: the test needs it above"
    );
    let in_use: HashSet<String> = [a.id.clone()].into();

    // The upstream default minimum age (2 min) protects freshly pulled images.
    let young = root.service(&root.config(None, None, ""));
    let e = format!(
        "{:#}",
        block_on(young.garbage_collect(&in_use)).unwrap_err()
    );
    assert!(
        e.contains("Failed to garbage collect required amount of images"),
        "{e}"
    );
    assert_eq!(svc.list().unwrap().len(), 3);

    let rep = block_on(svc.garbage_collect(&in_use)).unwrap();
    assert_eq!(
        rep.removed,
        vec![b.id.clone()],
        "GC removed the wrong images"
    );
    assert!(rep.freed_bytes >= 3_000_000, "{rep:?}");
    let ids: Vec<String> = svc.list().unwrap().into_iter().map(|i| i.id).collect();
    assert!(ids.contains(&a.id) && ids.contains(&c.id) && !ids.contains(&b.id));
    assert!(!snapshot_exists(&root, &b.diff_ids[0]));
    assert!(snapshot_exists(&root, &a.diff_ids[0]) && snapshot_exists(&root, &c.diff_ids[0]));
    assert!(!root
        .path(&format!("root/images/blobs/sha256/{}", &refs[1].1[7..]))
        .exists());
    let u = svc.fs_usage().unwrap();
    assert!(100 - u.available_bytes * 100 / u.capacity_bytes < 80);
    // below the threshold nothing more goes
    let rep = block_on(svc.garbage_collect(&HashSet::new())).unwrap();
    assert!(rep.removed.is_empty());
}

fn tar_dir(src: &std::path::Path, out: &std::path::Path) {
    sh(
        "tar",
        &[
            "-C",
            src.to_str().unwrap(),
            "-cf",
            out.to_str().unwrap(),
            ".",
        ],
    );
}

/// A `docker save` archive of the busybox image, built from the OCI layout:
/// `<config>.json`, `<id>/layer.tar` (uncompressed), manifest.json, repositories.
fn docker_save_archive(out: &std::path::Path, tag: &str) -> String {
    let l = std::path::Path::new("/var/tmp/picolet-images/oci");
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.join("index.json")).unwrap()).unwrap();
    let md = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "busybox")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| std::fs::read(l.join("blobs/sha256").join(&d[7..])).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&blob(&md)).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&format!("{}.json", &cd[7..]), &blob(&cd));
    let mut layers = Vec::new();
    for (i, layer) in m["layers"].as_array().unwrap().iter().enumerate() {
        let gz = blob(layer["digest"].as_str().unwrap());
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let name = format!("layer{i}/layer.tar");
        add(&name, &raw);
        add(&format!("layer{i}/VERSION"), b"1.0");
        layers.push(name);
    }
    let manifest = serde_json::json!([{"Config": format!("{}.json", &cd[7..]), "RepoTags": [tag], "Layers": layers}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add("repositories", b"{}");
    let t = b.into_inner().unwrap();
    std::fs::write(out, gzip(&t)).unwrap();
    cd
}

#[test]
fn imports_oci_layout_docker_save_and_import_dir() {
    registry(); // the test images are built by the same setup
    let root = TestRoot::new("import");
    let oci_tar = root.path("oci.tar");
    tar_dir(
        std::path::Path::new("/var/tmp/picolet-images/oci"),
        &oci_tar,
    );
    let cfg = root.config(None, None, "");
    let svc = root.service(&cfg);
    let imgs = block_on(svc.import(&oci_tar)).unwrap();
    assert_eq!(imgs.len(), 3, "{imgs:?}");
    let bb = svc.get("busybox").unwrap().expect("busybox imported");
    assert!(bb
        .repo_tags
        .contains(&"docker.io/library/busybox:latest".to_string()));
    // the index entry resolves to the same image
    assert!(
        bb.repo_tags
            .contains(&"docker.io/library/busybox-index:latest".to_string()),
        "{:?}",
        bb.repo_tags
    );
    let httpd = svc.get("httpd").unwrap().expect("httpd imported");
    assert_eq!(httpd.diff_ids.len(), 3);
    let rootfs = mount_rootfs(&root, &svc, &httpd.id, "h");
    assert!(rootfs.join("www/index.html").is_file() && !rootfs.join("etc/motd").exists());
    assert_eq!(svc.list().unwrap().len(), 2);
    // unused files of the archive did not stay in the store
    let blobs = std::fs::read_dir(root.path("root/images/blobs/sha256"))
        .unwrap()
        .count();
    assert!(blobs <= 12, "{blobs} blobs");

    // docker save (gzip-compressed), imported through the CLI
    let saved = root.path("saved.tar.gz");
    let cd = docker_save_archive(&saved, "picolet-test/saved:1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picolet"))
        .args([
            "images",
            "--root-dir",
            root.path("root2").to_str().unwrap(),
            "import",
            saved.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(
        o.contains(&cd) && o.contains("docker.io/picolet-test/saved:1"),
        "{o}"
    );
    assert_eq!(
        cd, bb.id,
        "docker save and OCI import disagree on the image id"
    );
    let blobs2 = std::fs::read_dir(root.path("root2/images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs2, 2, "config + one layer expected");

    // the import dir: imported once, remembered
    let root3 = TestRoot::new("import-dir");
    let cfg3 = root3.config(None, None, "");
    let svc3 = root3.service(&cfg3);
    std::fs::create_dir_all(cfg3.import_dir()).unwrap();
    std::fs::copy(&saved, cfg3.import_dir().join("saved.tar.gz")).unwrap();
    std::fs::write(cfg3.import_dir().join("notes.txt"), "not an image").unwrap();
    let got = block_on(svc3.import_dir()).unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        block_on(svc3.import_dir()).unwrap().is_empty(),
        "imported twice"
    );
    assert!(svc3.get("picolet-test/saved:1").unwrap().is_some());
    // a broken archive fails with its name
    let bad = root.path("bad.tar");
    std::fs::write(&bad, b"not a tarball at all").unwrap();
    let e = format!("{:#}", block_on(svc.import(&bad)).unwrap_err());
    assert!(e.contains("bad.tar"), "{e}");
}

#[test]
fn concurrent_pulls_coalesce_into_one_download() {
    let reg = registry();
    let root = TestRoot::new("coalesce");
    let seed = uniq();
    let (r, digest) = push_noise(&root, &reg, "coalesce", 3_000_000, seed);
    let path = r.split_once('/').unwrap().1.to_string();
    let p = Proxy::start(
        COALESCE_PORT,
        &reg,
        ProxyRules {
            rate: Some(4 << 20),
            ..Default::default()
        },
    );
    let svc = root.service(&root.config(None, None, ""));
    let via = format!("{}/{path}", p.addr);
    let (x, y) = block_on(futures_lite::future::zip(svc.pull(&via), svc.pull(&via)));
    assert_eq!(x.unwrap().id, y.unwrap().id);
    assert_eq!(
        p.blob_get_count(&digest),
        1,
        "{:?}",
        p.blob_gets.lock().unwrap()
    );

    // Two processes on one root: the blob lock makes the second wait for the first.
    let (r2, d2) = push_noise(&root, &reg, "coalesce", 3_000_000, seed + 1);
    let path2 = r2.split_once('/').unwrap().1.to_string();
    let p2 = Proxy::start(
        COALESCE_PROC_PORT,
        &reg,
        ProxyRules {
            rate: Some(4 << 20),
            ..Default::default()
        },
    );
    let via2 = format!("{}/{path2}", p2.addr);
    let rd = root.path("root");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_picolet"))
            .args(["images", "--root-dir", rd.to_str().unwrap(), "pull", &via2])
            .output()
    };
    let t1 = std::thread::scope(|s| {
        let h1 = s.spawn(spawn);
        let h2 = s.spawn(spawn);
        (h1.join().unwrap().unwrap(), h2.join().unwrap().unwrap())
    });
    for o in [&t1.0, &t1.1] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(t1.0.stdout, t1.1.stdout);
    assert_eq!(
        p2.blob_get_count(&d2),
        1,
        "{:?}",
        p2.blob_gets.lock().unwrap()
    );
    assert_eq!(svc.list().unwrap().len(), 2);
}

/// An archive for a mixed fleet: an index with no manifest for this machine
/// is skipped with a warning and the other images still come in; an archive
/// holding only such an index fails, naming the platforms it has.
#[test]
fn images_for_other_platforms_are_skipped() {
    registry(); // the test images are built by the same setup
    let root = TestRoot::new("import-foreign");
    let src = std::path::Path::new("/var/tmp/picolet-images/oci");
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
    let entries = idx["manifests"].as_array().unwrap();
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == n)
            .unwrap()
            .clone()
    };
    // the busybox index, re-labelled as s390x only
    let bi = by_name("busybox-index");
    let bdig = bi["digest"].as_str().unwrap();
    let mut inner: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("blobs/sha256").join(&bdig[7..])).unwrap())
            .unwrap();
    inner["manifests"][0]["platform"] = serde_json::json!({"architecture": "s390x", "os": "linux"});
    let body = serde_json::to_vec(&inner).unwrap();
    let fdig = format!("sha256:{}", sha256_hex(&body));
    let mut foreign = bi.clone();
    foreign["digest"] = fdig.clone().into();
    foreign["size"] = body.len().into();
    foreign["annotations"]["org.opencontainers.image.ref.name"] = "foreign".into();

    let layout = |dir: &str, list: Vec<serde_json::Value>| {
        let d = root.path(dir);
        sh("cp", &["-a", src.to_str().unwrap(), d.to_str().unwrap()]);
        std::fs::write(d.join("blobs/sha256").join(&fdig[7..]), &body).unwrap();
        let ix = serde_json::json!({"schemaVersion": 2, "manifests": list});
        std::fs::write(d.join("index.json"), serde_json::to_vec(&ix).unwrap()).unwrap();
        let t = root.path(&format!("{dir}.tar"));
        tar_dir(&d, &t);
        t
    };
    let mixed = layout("mixed", vec![by_name("httpd"), foreign.clone()]);
    let only = layout("only", vec![foreign]);

    let cfg = root.config(None, None, "");
    let svc = root.service(&cfg);
    let imgs = block_on(svc.import(&mixed)).unwrap();
    assert_eq!(imgs.len(), 1, "{imgs:?}");
    assert!(svc.get("httpd").unwrap().is_some());
    assert!(svc.get("foreign").unwrap().is_none());

    let e = format!("{:#}", block_on(svc.import(&only)).unwrap_err());
    assert!(
        e.contains("(foreign): no manifest for linux/") && e.contains("has linux/s390x"),
        "{e}"
    );
}
