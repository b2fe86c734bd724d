//! The `staticPodPath` source against a real directory and inotify: what
//! the sync loop receives when manifests are added, edited, renamed and
//! removed, and how bad files are reported while good ones still run.
//! No root needed. Temp dirs: /var/tmp/picolet-test/pod-*.

use futures_lite::future;
use picolet::config::KubeletConfig;
use picolet::sources::{self, Op, PodUpdate, Sources};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const NODE: &str = "Node-1";

/// A temp dir removed on drop (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = PathBuf::from(format!(
            "/var/tmp/picolet-test/pod-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir under /var/tmp/picolet-test");
        TempDir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Log lines, to check that problems are reported with file, field and reason.
struct Capture(Arc<Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if let Ok(mut v) = self.0.lock() {
            v.push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

fn logs() -> Arc<Mutex<Vec<String>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let _ = log::set_boxed_logger(Box::new(Capture(lines.clone())));
            log::set_max_level(log::LevelFilter::Info);
            lines
        })
        .clone()
}

fn manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: {image}\n"
    )
}

fn start(path: &Path, period: Duration) -> Sources {
    let cfg = KubeletConfig {
        static_pod_path: Some(path.to_path_buf()),
        file_check_frequency: period,
        ..Default::default()
    };
    sources::start(&cfg, NODE, false, None)
}

async fn next(s: &Sources, within: Duration) -> PodUpdate {
    let started = Instant::now();
    let got = future::or(async { s.updates.recv().await.ok() }, async {
        async_io::Timer::after(within).await;
        None
    })
    .await;
    match got {
        Some(u) => u,
        None => panic!(
            "no pod update within {within:?} (waited {:?})",
            started.elapsed()
        ),
    }
}

async fn quiet(s: &Sources, for_: Duration) {
    let got = future::or(async { s.updates.recv().await.ok() }, async {
        async_io::Timer::after(for_).await;
        None
    })
    .await;
    if let Some(u) = got {
        panic!("unexpected update {:?} {:?}", u.op, names(&u));
    }
}

fn names(u: &PodUpdate) -> Vec<String> {
    u.pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn uid(u: &PodUpdate) -> String {
    u.pods[0].metadata.uid.clone().unwrap_or_default()
}

const FAST: Duration = Duration::from_secs(2);

#[test]
fn add_edit_rename_delete_by_inotify() {
    let dir = TempDir::new("inotify");
    picolet::rt::block_on(async {
        // A long re-read period: every event below must come from inotify.
        let s = start(&dir.0, Duration::from_secs(600));
        let u = next(&s, FAST).await;
        assert_eq!(
            (u.op, u.pods.len()),
            (Op::Add, 0),
            "first empty snapshot marks the source seen"
        );
        assert!(s.seen_all());

        std::fs::write(dir.path("web.yaml"), manifest("web", "busybox:1.36")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!((u.op, names(&u)), (Op::Add, vec!["web-node-1".to_string()]));
        assert_eq!(u.source, "file");
        let first_uid = uid(&u);
        let pod = &u.pods[0];
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann["kubernetes.io/config.source"], "file");
        assert_eq!(ann["kubernetes.io/config.hash"], first_uid);
        assert!(ann.contains_key("kubernetes.io/config.seen"));
        assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));

        // Rewriting the same content: nothing.
        std::fs::write(dir.path("web.yaml"), manifest("web", "busybox:1.36")).unwrap();
        quiet(&s, Duration::from_millis(600)).await;

        // An edit is a new pod: the old one is removed, the new one added.
        std::fs::write(dir.path("web.yaml"), manifest("web", "busybox:1.37")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!((u.op, uid(&u)), (Op::Remove, first_uid.clone()));
        let u = next(&s, FAST).await;
        assert_eq!(u.op, Op::Add);
        let edited_uid = uid(&u);
        assert_ne!(edited_uid, first_uid);

        // An editor-style save (write a temp file, rename over) of the same
        // content: no restart.
        std::fs::write(dir.path(".web.yaml.swp"), manifest("web", "busybox:1.37")).unwrap();
        std::fs::rename(dir.path(".web.yaml.swp"), dir.path("web.yaml")).unwrap();
        quiet(&s, Duration::from_millis(600)).await;

        // A rename: the file is part of the pod's identity, as upstream.
        std::fs::rename(dir.path("web.yaml"), dir.path("web-server.yaml")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!((u.op, uid(&u)), (Op::Remove, edited_uid));
        let u = next(&s, FAST).await;
        assert_eq!((u.op, names(&u)), (Op::Add, vec!["web-node-1".to_string()]));

        // Renamed to a dotfile: ignored, so removed.
        std::fs::rename(dir.path("web-server.yaml"), dir.path(".web-server.yaml")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!(u.op, Op::Remove);

        // JSON and extension-less names are manifests too (upstream reads
        // every non-dot file).
        std::fs::write(
            dir.path("api"),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"api","namespace":"kube-system"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#,
        )
        .unwrap();
        let u = next(&s, FAST).await;
        assert_eq!((u.op, names(&u)), (Op::Add, vec!["api-node-1".to_string()]));
        assert_eq!(u.pods[0].metadata.namespace.as_deref(), Some("kube-system"));

        std::fs::remove_file(dir.path("api")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!(
            (u.op, names(&u)),
            (Op::Remove, vec!["api-node-1".to_string()])
        );
        quiet(&s, Duration::from_millis(600)).await;
    });
}

#[test]
fn periodic_reread_sees_what_inotify_cannot() {
    let dir = TempDir::new("reread");
    let outside = TempDir::new("reread-target");
    picolet::rt::block_on(async {
        std::fs::write(outside.path("real.yaml"), manifest("linked", "busybox:1")).unwrap();
        symlink(outside.path("real.yaml"), dir.path("linked.yaml")).unwrap();
        let s = start(&dir.0, Duration::from_secs(1));
        let u = next(&s, FAST).await;
        assert_eq!(
            (u.op, names(&u)),
            (Op::Add, vec!["linked-node-1".to_string()])
        );
        // Unchanged re-reads send nothing.
        quiet(&s, Duration::from_millis(2500)).await;
        // The link target changes outside the watched directory.
        std::fs::write(outside.path("real.yaml"), manifest("linked", "busybox:2")).unwrap();
        let u = next(&s, Duration::from_millis(2500)).await;
        assert_eq!(u.op, Op::Remove);
        let u = next(&s, FAST).await;
        assert_eq!(u.op, Op::Add);
        let img = u.pods[0].spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(img.as_deref(), Some("busybox:2"));
    });
}

#[test]
fn a_broken_edit_keeps_the_pod_until_the_reread() {
    let dir = TempDir::new("broken-edit");
    picolet::rt::block_on(async {
        std::fs::write(dir.path("web.yaml"), manifest("web", "busybox:1")).unwrap();
        let s = start(&dir.0, Duration::from_secs(3));
        let u = next(&s, FAST).await;
        assert_eq!(u.op, Op::Add);
        let t0 = Instant::now();
        std::fs::write(
            dir.path("web.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web\n",
        )
        .unwrap();
        // The event alone does not remove it; the authoritative re-read does.
        let u = next(&s, Duration::from_secs(5)).await;
        assert_eq!(u.op, Op::Remove);
        assert!(
            t0.elapsed() > Duration::from_millis(500),
            "removed at the event, not the re-read"
        );
        let reports = s.file_reports.as_ref().unwrap().borrow().clone();
        let r = &reports[&dir.path("web.yaml")];
        assert!(
            r.errors[0]
                .reason
                .starts_with("cannot parse as YAML or JSON"),
            "{r:?}"
        );
        // Fixed: back.
        std::fs::write(dir.path("web.yaml"), manifest("web", "busybox:1")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!(u.op, Op::Add);
        assert!(s.file_reports.as_ref().unwrap().borrow().is_empty());
    });
}

#[test]
fn bad_inputs_are_reported_and_valid_pods_still_run() {
    let lines = logs();
    let dir = TempDir::new("bad");
    let d = |n: &str| dir.path(n);
    std::fs::write(d("good.yaml"), manifest("good", "busybox:1")).unwrap();
    std::fs::write(
        d("types.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: types}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    ports:\n    - containerPort: eighty\n",
    )
    .unwrap();
    std::fs::write(
        d("unknown.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: unknown, colour: blue}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePolicy: Always\n",
    )
    .unwrap();
    std::fs::write(
        d("noimage.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers:\n  - name: c\n",
    )
    .unwrap();
    std::fs::write(
        d("badname.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    )
    .unwrap();
    std::fs::write(d("dup-a.yaml"), manifest("dup", "busybox:1")).unwrap();
    std::fs::write(d("dup-b.yaml"), manifest("dup", "busybox:2")).unwrap();
    // 10 MB of YAML comments: a huge but otherwise plausible file.
    let mut big = manifest("big", "busybox");
    big.push_str(&"# padding padding padding padding padding padding padding\n".repeat(180_000));
    assert!(big.len() > 10_000_000);
    std::fs::write(d("big.yaml"), &big).unwrap();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d("garbage.yaml"), &garbage).unwrap();
    symlink("loop.yaml", d("loop.yaml")).unwrap();
    symlink("/nonexistent/pod.yaml", d("dangling.yaml")).unwrap();
    std::fs::create_dir(d("subdir.yaml")).unwrap();
    std::fs::write(d("subdir.yaml/inner.yaml"), manifest("inner", "busybox")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d("fifo.yaml"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    std::fs::write(d(".hidden.yaml"), "not even yaml: [").unwrap();

    picolet::rt::block_on(async {
        let s = start(&dir.0, Duration::from_secs(600));
        let u = next(&s, Duration::from_secs(5)).await;
        assert_eq!(u.op, Op::Add);
        let mut got = names(&u);
        got.sort();
        assert_eq!(got, vec!["dup-node-1", "good-node-1", "unknown-node-1"]);
        let dup = u
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("dup-node-1"))
            .unwrap();
        assert_eq!(
            dup.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("busybox:1"),
            "the first file in name order wins"
        );

        let reports = s.file_reports.as_ref().unwrap().borrow().clone();
        let show = |n: &str| -> Vec<String> {
            let r = reports
                .get(&d(n))
                .unwrap_or_else(|| panic!("no report for {n}: {reports:#?}"));
            r.errors.iter().map(|e| e.to_string()).collect()
        };
        assert!(
            show("types.yaml")[0].starts_with(
                "spec.containers[0].ports[0].containerPort: invalid type: string \"eighty\""
            ),
            "{:?}",
            show("types.yaml")
        );
        assert_eq!(
            reports[&d("unknown.yaml")].unknown_fields,
            vec!["metadata.colour", "spec.containers[0].imagePolicy"]
        );
        assert!(reports[&d("unknown.yaml")].errors.is_empty());
        assert_eq!(
            show("noimage.yaml"),
            vec!["spec.containers[0].image: Required value"]
        );
        assert!(show("badname.yaml")[0].starts_with(
            "metadata.name: Invalid value: \"Bad_Name-node-1\": a lowercase RFC 1123 subdomain"
        ));
        assert!(
            show("dup-b.yaml")[0].starts_with("metadata.name: Duplicate value: \"dup-node-1\": pod dup-node-1_default is already defined in")
                && show("dup-b.yaml")[0].ends_with("dup-a.yaml"),
            "{:?}",
            show("dup-b.yaml")
        );
        assert!(
            show("big.yaml")[0].contains("larger than the 1048576 bytes"),
            "{:?}",
            show("big.yaml")
        );
        assert_eq!(show("garbage.yaml").len(), 1);
        assert!(
            show("garbage.yaml")[0].starts_with("not UTF-8 text (binary data at byte "),
            "{:?}",
            show("garbage.yaml")
        );
        assert!(
            show("loop.yaml")[0].starts_with("cannot stat:"),
            "{:?}",
            show("loop.yaml")
        );
        assert!(
            show("loop.yaml")[0].contains("symbolic links"),
            "{:?}",
            show("loop.yaml")
        );
        assert!(show("dangling.yaml")[0].starts_with("cannot stat:"));
        assert_eq!(
            show("subdir.yaml"),
            vec!["is a directory; not recursing into it"]
        );
        assert_eq!(show("fifo.yaml"), vec!["not a regular file"]);
        assert!(!reports.contains_key(&d(".hidden.yaml")));
        assert!(!reports.contains_key(&d("good.yaml")));

        // Each problem was logged once, with the file, the field and the reason.
        let logged = lines.lock().unwrap().clone();
        let has = |needle: &str| logged.iter().filter(|l| l.contains(needle)).count();
        let noimage = format!(
            "{}: spec.containers[0].image: Required value",
            d("noimage.yaml").display()
        );
        assert_eq!(has(&noimage), 1, "{logged:#?}");
        assert_eq!(
            has(&format!(
                "{}: unknown field spec.containers[0].imagePolicy",
                d("unknown.yaml").display()
            )),
            1
        );
        assert_eq!(
            has(&format!("{}: cannot stat", d("loop.yaml").display())),
            1
        );

        // Fixing a file brings its pod; the other problems stay reported.
        std::fs::write(d("noimage.yaml"), manifest("noimage", "busybox")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!(
            (u.op, names(&u)),
            (Op::Add, vec!["noimage-node-1".to_string()])
        );
        let reports = s.file_reports.as_ref().unwrap().borrow().clone();
        assert!(!reports.contains_key(&d("noimage.yaml")));
        assert!(reports.contains_key(&d("garbage.yaml")));
        // Removing the first duplicate hands the name to the second file.
        std::fs::remove_file(d("dup-a.yaml")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!(u.op, Op::Remove);
        let u = next(&s, FAST).await;
        assert_eq!(u.op, Op::Add);
        assert_eq!(
            u.pods[0].spec.as_ref().unwrap().containers[0]
                .image
                .as_deref(),
            Some("busybox:2")
        );
    });
}

#[test]
fn a_single_file_path() {
    let dir = TempDir::new("single");
    let file = dir.path("pod.yaml");
    std::fs::write(&file, manifest("solo", "busybox:1")).unwrap();
    // Other files next to it are not manifests.
    std::fs::write(dir.path("other.yaml"), manifest("other", "busybox")).unwrap();
    picolet::rt::block_on(async {
        let s = start(&file, Duration::from_secs(600));
        let u = next(&s, FAST).await;
        assert_eq!(
            (u.op, names(&u)),
            (Op::Add, vec!["solo-node-1".to_string()])
        );
        std::fs::write(dir.path("other.yaml"), manifest("other", "busybox:2")).unwrap();
        quiet(&s, Duration::from_millis(600)).await;
        std::fs::write(&file, manifest("solo", "busybox:2")).unwrap();
        assert_eq!(next(&s, FAST).await.op, Op::Remove);
        assert_eq!(next(&s, FAST).await.op, Op::Add);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(next(&s, FAST).await.op, Op::Remove);
        std::fs::write(&file, manifest("solo", "busybox:2")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!(
            (u.op, names(&u)),
            (Op::Add, vec!["solo-node-1".to_string()])
        );
    });
}

#[test]
fn a_missing_directory_is_watched_for_creation() {
    let base = TempDir::new("missing");
    let dir = base.path("manifests");
    picolet::rt::block_on(async {
        let s = start(&dir, Duration::from_secs(600));
        let u = next(&s, FAST).await;
        assert_eq!((u.op, u.pods.len()), (Op::Add, 0));
        assert!(s.seen_all());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("web.yaml"), manifest("web", "busybox")).unwrap();
        // Found by the one-second retry, then by inotify.
        let u = next(&s, Duration::from_secs(3)).await;
        assert_eq!((u.op, names(&u)), (Op::Add, vec!["web-node-1".to_string()]));
        std::fs::write(dir.join("api.yaml"), manifest("api", "busybox")).unwrap();
        let u = next(&s, FAST).await;
        assert_eq!((u.op, names(&u)), (Op::Add, vec!["api-node-1".to_string()]));
        // The directory goes away: its pods are removed.
        std::fs::remove_dir_all(&dir).unwrap();
        let u = next(&s, Duration::from_secs(3)).await;
        assert_eq!(u.op, Op::Remove);
        let mut n = names(&u);
        n.sort();
        assert_eq!(n, vec!["api-node-1", "web-node-1"]);
    });
}
