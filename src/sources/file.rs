//! The `staticPodPath` source (upstream pkg/kubelet/config/file.go and
//! file_linux.go): one pod per file in a directory, or one file.
//!
//! As upstream:
//! - every entry whose name does not start with a dot is read, whatever its
//!   extension (`web.yaml`, `web.json`, `web`); sub-directories are not
//!   entered; entries are taken in byte order of their names;
//! - a path that does not exist is no error: the source reports no pods and
//!   looks again every second until it appears;
//! - changes are seen through inotify, and the whole path is re-read every
//!   `fileCheckFrequency`; the periodic re-read is authoritative;
//! - a file that cannot be used is reported (file, field, reason) and
//!   skipped; the others run. Two files defining the same pod: the first in
//!   name order wins, the other is reported.
//!
//! Differences, on purpose: files larger than [`MAX_MANIFEST_BYTES`] are
//! refused (upstream allows 10 MiB; no API server would store a pod that
//! large, and parsing it costs memory small boards do not have). Events are
//! taken on close-after-write, create, rename and delete (not on every
//! write), and a burst is handled once after [`SETTLE`], so an editor's
//! save sequence (rename to backup, write, delete backup) does not restart
//! the pod; a file that is unreadable at an event keeps its last good pod
//! until the next periodic re-read.

use super::decode::{decode_pod, Origin};
use super::validation::FieldError;
use super::{pod_full_name, SourceUpdate, FILE_SOURCE};
use crate::api::core::Pod;
use async_io::{Async, Timer};
use futures_lite::FutureExt;
use rustix::fs::inotify;
use smol::channel::Sender;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The largest manifest picolet reads.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// How often a missing path (or a failed watch) is retried, as upstream.
const RETRY: Duration = Duration::from_secs(1);
/// Events are handled this long after the first of a burst.
const SETTLE: Duration = Duration::from_millis(100);

/// What is wrong with one manifest file (absent when nothing is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestReport {
    /// Why the file is not used (empty: it is used).
    pub errors: Vec<FieldError>,
    /// Fields the pod type does not know; dropped, the pod runs.
    pub unknown_fields: Vec<String>,
}

/// Reports by file, shared with whoever shows them (status, events).
pub type ManifestReports = Rc<RefCell<BTreeMap<PathBuf, ManifestReport>>>;

/// The `staticPodPath` source.
pub struct FileSource {
    path: PathBuf,
    node_name: String,
    period: Duration,
    tx: Sender<SourceUpdate>,
    reports: ManifestReports,
}

impl FileSource {
    pub fn new(path: PathBuf, node_name: &str, period: Duration, tx: Sender<SourceUpdate>) -> Self {
        // inotify and upstream's matching want no trailing slash.
        let s = path.to_string_lossy();
        let trimmed = s.trim_end_matches('/');
        let path = if trimmed.is_empty() {
            PathBuf::from("/")
        } else {
            PathBuf::from(trimmed)
        };
        FileSource {
            path,
            node_name: node_name.to_string(),
            period: if period.is_zero() {
                Duration::from_secs(20)
            } else {
                period
            },
            tx,
            reports: Rc::new(RefCell::new(BTreeMap::new())),
        }
    }

    pub fn reports(&self) -> ManifestReports {
        self.reports.clone()
    }

    /// Watches and re-reads the path until the receiver goes away.
    pub async fn run(self) {
        log::info!("watching static pod path {}", self.path.display());
        let mut scanner = Some(Scanner::new(self.path.clone(), self.node_name.clone()));
        let mut watch: Option<Watch> = None;
        let mut next_full = Instant::now();
        loop {
            if watch.is_none() {
                match Watch::new(&self.path) {
                    Ok(w) => {
                        log::debug!("inotify watch on {}", w.dir.display());
                        watch = Some(w);
                        // Whatever happened before the watch is seen now.
                        next_full = Instant::now();
                    }
                    Err(e) => log::debug!("no inotify watch on {} yet: {e:#}", self.path.display()),
                }
            }
            let mut mode = None;
            if Instant::now() >= next_full {
                mode = Some(Mode::Full);
                next_full = Instant::now() + self.period;
            } else {
                let wake = if watch.is_none() {
                    next_full.min(Instant::now() + RETRY)
                } else {
                    next_full
                };
                let timer = async {
                    Timer::at(wake).await;
                    None
                };
                let event = async {
                    match &watch {
                        Some(w) => Some(w.wait().await),
                        None => std::future::pending().await,
                    }
                };
                match event.or(timer).await {
                    None => {}
                    Some(Ok(ev)) => {
                        // Let the burst settle, then take what else came.
                        Timer::after(SETTLE).await;
                        let more = watch
                            .as_ref()
                            .map(|w| w.drain())
                            .unwrap_or(Ok(Events::default()));
                        let ev = match more {
                            Ok(m) => ev.merge(m),
                            Err(e) => {
                                log::warn!("inotify on {}: {e:#}", self.path.display());
                                Events { gone: true, ..ev }
                            }
                        };
                        if ev.gone {
                            // The directory (or the file's parent) went away.
                            watch = None;
                            mode = Some(Mode::Full);
                        } else if ev.overflow {
                            mode = Some(Mode::Full);
                        } else if ev.relevant {
                            mode = Some(Mode::Event);
                        }
                    }
                    Some(Err(e)) => {
                        log::warn!("inotify on {}: {e:#}", self.path.display());
                        watch = None;
                    }
                }
            }
            let Some(mode) = mode else { continue };
            let Some(mut sc) = scanner.take() else { return };
            let (sc, result) = crate::rt::unblock(move || {
                let r = sc.scan(mode);
                (sc, r)
            })
            .await;
            scanner = Some(sc);
            let r = match result {
                Ok(r) => r,
                Err(e) => {
                    // Upstream keeps the last state when the path cannot be read.
                    log::error!("static pod path {}: {e:#}", self.path.display());
                    continue;
                }
            };
            self.publish_reports(r.reports);
            if let Some(pods) = r.pods {
                let update = SourceUpdate {
                    source: FILE_SOURCE,
                    pods,
                    provisional: false,
                };
                if self.tx.send(update).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Logs what changed in the reports and stores them.
    fn publish_reports(&self, new: BTreeMap<PathBuf, ManifestReport>) {
        let mut old = self.reports.borrow_mut();
        for (path, report) in &new {
            if old.get(path) == Some(report) {
                continue;
            }
            for e in &report.errors {
                log::error!("static pod file {}: {e}; skipped", path.display());
            }
            for f in &report.unknown_fields {
                log::warn!(
                    "static pod file {}: unknown field {f}; ignored",
                    path.display()
                );
            }
        }
        for path in old.keys() {
            if !new.contains_key(path) && path.exists() {
                log::info!("static pod file {}: ok now", path.display());
            }
        }
        *old = new;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Periodic: what the files say now is the truth.
    Full,
    /// After inotify events: a file that fails to decode keeps its last good pod.
    Event,
}

/// Identity of a file's content as far as stat can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Fingerprint {
    fn of(m: &std::fs::Metadata) -> Self {
        Fingerprint {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

struct Entry {
    fingerprint: Fingerprint,
    /// What the last read of the file gave (errors, unknown fields).
    report: ManifestReport,
    /// The bytes of the file's pod: the last read's when it decoded, or
    /// (in event mode) the last good read's while it does not. The pod is
    /// decoded again from them for a later snapshot: 110 decoded pods
    /// kept here cost ~1.3 MiB, their manifests a few KiB.
    good: Option<Good>,
}

struct Good {
    bytes: Box<[u8]>,
    /// `<name>_<namespace>` of its pod, to find duplicates without decoding.
    full_name: String,
    /// The pod as this scan's read decoded it, until the scan's snapshot
    /// takes it (a changed file is decoded once).
    fresh: Option<Pod>,
}

struct ScanResult {
    /// The snapshot, when it may differ from the previous one.
    pods: Option<Vec<Pod>>,
    reports: BTreeMap<PathBuf, ManifestReport>,
}

/// Reads the path; keeps per-file results so unchanged files are not
/// decoded again. Blocking: runs on the blocking pool.
struct Scanner {
    root: PathBuf,
    node_name: String,
    files: BTreeMap<PathBuf, Entry>,
    /// Something that decides the snapshot changed since the last scan.
    dirty: bool,
}

fn problem(reason: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError {
        field: String::new(),
        reason: reason.into(),
    }]
}

impl Scanner {
    fn new(root: PathBuf, node_name: String) -> Self {
        Scanner {
            root,
            node_name,
            files: BTreeMap::new(),
            dirty: true,
        }
    }

    fn scan(&mut self, mode: Mode) -> anyhow::Result<ScanResult> {
        let mut candidates: Vec<(PathBuf, std::io::Result<std::fs::Metadata>)> = Vec::new();
        match std::fs::metadata(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("stat: {e}")),
            Ok(m) if m.is_dir() => {
                let rd = std::fs::read_dir(&self.root)
                    .map_err(|e| anyhow::anyhow!("read directory: {e}"))?;
                let mut names = Vec::new();
                for ent in rd {
                    let ent = ent.map_err(|e| anyhow::anyhow!("read directory: {e}"))?;
                    let name = ent.file_name();
                    if name.as_encoded_bytes().first() == Some(&b'.') {
                        continue;
                    }
                    names.push(name);
                }
                names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
                for n in names {
                    let p = self.root.join(n);
                    let m = std::fs::metadata(&p);
                    candidates.push((p, m));
                }
            }
            Ok(m) if m.is_file() => candidates.push((self.root.clone(), Ok(m))),
            Ok(_) => return Err(anyhow::anyhow!("not a directory or a regular file")),
        }

        let mut reports = BTreeMap::new();
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut used = Vec::new();
        let mut keep = std::collections::BTreeSet::new();
        for (path, meta) in candidates {
            keep.insert(path.clone());
            let errs = match meta {
                Err(e) => Some(problem(format!("cannot stat: {e}"))),
                Ok(m) if m.is_dir() => Some(problem("is a directory; not recursing into it")),
                Ok(m) if !m.is_file() => Some(problem("not a regular file")),
                Ok(m) => {
                    self.refresh(&path, &m, mode);
                    None
                }
            };
            if let Some(errors) = errs {
                self.dirty |= self.files.remove(&path).is_some();
                reports.insert(
                    path,
                    ManifestReport {
                        errors,
                        unknown_fields: Vec::new(),
                    },
                );
                continue;
            }
            let Some(entry) = self.files.get(&path) else {
                continue;
            };
            let mut report = entry.report.clone();
            if let Some(good) = &entry.good {
                // Names and namespaces hold no '_': the full name splits.
                let name = good.full_name.split('_').next().unwrap_or_default();
                match seen.get(&good.full_name) {
                    Some(first) => report.errors.push(FieldError {
                        field: "metadata.name".into(),
                        reason: format!(
                            "Duplicate value: {name:?}: pod {} is already defined in {}",
                            good.full_name,
                            first.display()
                        ),
                    }),
                    None => {
                        seen.insert(good.full_name.clone(), path.clone());
                        used.push(path.clone());
                    }
                }
            }
            if !report.errors.is_empty() || !report.unknown_fields.is_empty() {
                reports.insert(path, report);
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| keep.contains(p));
        self.dirty |= self.files.len() != before;
        let changed = std::mem::take(&mut self.dirty);
        let pods = changed.then(|| {
            used.iter()
                .filter_map(|path| {
                    let good = self.files.get_mut(path)?.good.as_mut()?;
                    if let Some(pod) = good.fresh.take() {
                        return Some(pod);
                    }
                    let origin = path.to_string_lossy();
                    match decode_pod(&good.bytes, Origin::File(&origin), &self.node_name) {
                        Ok(d) => Some(d.pod),
                        // The same bytes decoded before: cannot happen.
                        Err(e) => {
                            log::error!("static pod file {}: {e:?}", path.display());
                            None
                        }
                    }
                })
                .collect()
        });
        // Duplicates' pods were not taken; a read always makes the scan's
        // snapshot (it sets `dirty`), so nothing fresh outlives the scan.
        for e in self.files.values_mut() {
            if let Some(g) = &mut e.good {
                g.fresh = None;
            }
        }
        Ok(ScanResult { pods, reports })
    }

    /// Decodes the file again if it changed since last time.
    fn refresh(&mut self, path: &Path, meta: &std::fs::Metadata, mode: Mode) {
        let fp = Fingerprint::of(meta);
        if let Some(e) = self.files.get_mut(path) {
            if e.fingerprint == fp {
                if mode == Mode::Full && !e.report.errors.is_empty() && e.good.is_some() {
                    e.good = None;
                    self.dirty = true;
                }
                return;
            }
        }
        let origin = path.to_string_lossy();
        let data = read_capped(path).map_err(problem);
        let result = data
            .as_deref()
            .map_err(Clone::clone)
            .and_then(|data| decode_pod(data, Origin::File(&origin), &self.node_name));
        let prev = self.files.remove(path).and_then(|e| e.good);
        let (report, good) = match (result, data) {
            (Ok(d), Ok(bytes)) => (
                ManifestReport {
                    errors: Vec::new(),
                    unknown_fields: d.unknown_fields,
                },
                Some(Good {
                    bytes: bytes.into_boxed_slice(),
                    full_name: pod_full_name(&d.pod),
                    fresh: Some(d.pod),
                }),
            ),
            (Ok(_), Err(errors)) | (Err(errors), _) => (
                ManifestReport {
                    errors,
                    unknown_fields: Vec::new(),
                },
                match mode {
                    Mode::Event => prev,
                    Mode::Full => None,
                },
            ),
        };
        self.dirty = true;
        self.files.insert(
            path.to_path_buf(),
            Entry {
                fingerprint: fp,
                report,
                good,
            },
        );
    }
}

/// Reads at most [`MAX_MANIFEST_BYTES`]; a larger file is an error.
fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    // O_NONBLOCK: a FIFO swapped in after the stat must not hang the reader.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "file is {} bytes, larger than the {MAX_MANIFEST_BYTES} bytes a manifest may have; not read",
            meta.len()
        ));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read: {e}"))?;
    if data.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "file grew past the {MAX_MANIFEST_BYTES} bytes a manifest may have; not read"
        ));
    }
    Ok(data)
}

/// What a batch of inotify events means.
#[derive(Debug, Default, Clone, Copy)]
struct Events {
    /// Something happened to an entry that matters.
    relevant: bool,
    /// The watched directory itself is gone (deleted, moved, unmounted).
    gone: bool,
    /// The kernel dropped events.
    overflow: bool,
}

impl Events {
    fn merge(self, o: Events) -> Events {
        Events {
            relevant: self.relevant || o.relevant,
            gone: self.gone || o.gone,
            overflow: self.overflow || o.overflow,
        }
    }
}

/// An inotify watch on the directory (or on the file's parent directory).
struct Watch {
    fd: Async<OwnedFd>,
    dir: PathBuf,
    /// In single-file mode: the only name that matters.
    only: Option<std::ffi::OsString>,
}

impl Watch {
    fn new(path: &Path) -> anyhow::Result<Watch> {
        let meta = std::fs::metadata(path)?;
        let (dir, only) = if meta.is_dir() {
            (path.to_path_buf(), None)
        } else {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (parent, path.file_name().map(|n| n.to_os_string()))
        };
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        use inotify::WatchFlags as W;
        let flags = W::CREATE
            | W::CLOSE_WRITE
            | W::ATTRIB
            | W::DELETE
            | W::MOVED_FROM
            | W::MOVED_TO
            | W::DELETE_SELF
            | W::MOVE_SELF
            | W::ONLYDIR;
        inotify::add_watch(&fd, &dir, flags)?;
        Ok(Watch {
            fd: Async::new(fd)?,
            dir,
            only,
        })
    }

    /// Waits for at least one event and reads what is there.
    async fn wait(&self) -> anyhow::Result<Events> {
        loop {
            self.fd.readable().await?;
            let ev = self.drain()?;
            if ev.relevant || ev.gone || ev.overflow {
                return Ok(ev);
            }
        }
    }

    /// Reads every pending event without waiting.
    fn drain(&self) -> anyhow::Result<Events> {
        use inotify::ReadFlags as R;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buf);
        let mut ev = Events::default();
        loop {
            match reader.next() {
                Ok(e) => {
                    let flags = e.events();
                    if flags.contains(R::QUEUE_OVERFLOW) {
                        ev.overflow = true;
                    }
                    if flags.intersects(R::DELETE_SELF | R::MOVE_SELF | R::IGNORED | R::UNMOUNT) {
                        ev.gone = true;
                    }
                    if let Some(name) = e.file_name() {
                        let name = std::ffi::OsStr::from_bytes(name.to_bytes());
                        let wanted = match &self.only {
                            Some(only) => name == only.as_os_str(),
                            None => name.as_encoded_bytes().first() != Some(&b'.'),
                        };
                        if wanted {
                            ev.relevant = true;
                        }
                    }
                }
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(ev),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(name: &str) -> Dir {
        let d = PathBuf::from(format!(
            "/var/tmp/picolet-test/pod-unit-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn manifest(name: &str, image: &str) -> String {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: {image}}}]\n")
    }
    fn names(r: &ScanResult) -> Vec<String> {
        r.pods
            .iter()
            .flatten()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn event_mode_keeps_last_good_pod_full_mode_drops_it() {
        let d = tmp("lastgood");
        let f = d.0.join("a.yaml");
        std::fs::write(&f, manifest("a", "busybox")).unwrap();
        let mut s = Scanner::new(d.0.clone(), "n".into());
        assert_eq!(names(&s.scan(Mode::Full).unwrap()), vec!["a-n"]);
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{nam",
        )
        .unwrap();
        let r = s.scan(Mode::Event).unwrap();
        assert_eq!(names(&r), vec!["a-n"]);
        assert!(
            r.reports[&f].errors[0].reason.starts_with("cannot parse"),
            "{:?}",
            r.reports
        );
        let r = s.scan(Mode::Full).unwrap();
        assert_eq!(r.pods, Some(vec![]));
        assert_eq!(r.reports.len(), 1);
        // Nothing changed since: no new snapshot, the error stays reported.
        let r = s.scan(Mode::Event).unwrap();
        assert_eq!(r.pods, None);
        assert_eq!(r.reports.len(), 1);
        // A failing edit after the drop brings nothing back.
        std::fs::write(&f, "kind: Pod\n").unwrap();
        let r = s.scan(Mode::Event).unwrap();
        assert_eq!(r.pods, Some(vec![]));
    }

    #[test]
    fn unchanged_files_are_not_decoded_again() {
        let d = tmp("unchanged");
        std::fs::write(d.0.join("a.yaml"), manifest("a", "busybox")).unwrap();
        std::fs::write(d.0.join("b.yaml"), manifest("b", "busybox")).unwrap();
        let mut s = Scanner::new(d.0.clone(), "n".into());
        assert_eq!(names(&s.scan(Mode::Full).unwrap()), vec!["a-n", "b-n"]);
        assert_eq!(s.scan(Mode::Full).unwrap().pods, None);
        std::fs::remove_file(d.0.join("a.yaml")).unwrap();
        assert_eq!(names(&s.scan(Mode::Full).unwrap()), vec!["b-n"]);
        assert_eq!(s.scan(Mode::Event).unwrap().pods, None);
    }

    #[test]
    fn snapshots_keep_no_decoded_pods_and_rebuild_the_same_ones() {
        let d = tmp("fresh");
        std::fs::write(d.0.join("a.yaml"), manifest("a", "busybox")).unwrap();
        std::fs::write(d.0.join("b.yaml"), manifest("a", "httpd")).unwrap(); // duplicate of a
        let mut s = Scanner::new(d.0.clone(), "n".into());
        let first = s.scan(Mode::Full).unwrap();
        let held = |s: &Scanner| {
            s.files
                .values()
                .filter(|e| e.good.as_ref().is_some_and(|g| g.fresh.is_some()))
                .count()
        };
        assert_eq!(held(&s), 0, "decoded pods outlive the scan");
        assert!(first.reports[&d.0.join("b.yaml")].errors[0]
            .reason
            .starts_with("Duplicate value: \"a-n\""));
        // c is new (decoded by its read); a comes from its kept bytes.
        std::fs::write(d.0.join("c.yaml"), manifest("c", "busybox")).unwrap();
        let second = s.scan(Mode::Event).unwrap().pods.unwrap();
        assert_eq!(second.len(), 2);
        assert_eq!(second[0], first.pods.unwrap()[0]);
        assert_eq!(held(&s), 0);
    }

    #[test]
    fn single_file_path_and_missing_path() {
        let d = tmp("single");
        let f = d.0.join("only.json");
        std::fs::write(&f, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#).unwrap();
        let mut s = Scanner::new(f.clone(), "n".into());
        assert_eq!(names(&s.scan(Mode::Full).unwrap()), vec!["x-n"]);
        let mut s = Scanner::new(d.0.join("nope"), "n".into());
        let r = s.scan(Mode::Full).unwrap();
        assert_eq!(r.pods, Some(vec![]));
        assert!(r.reports.is_empty());
    }

    #[test]
    fn size_cap() {
        let d = tmp("cap");
        let f = d.0.join("big.yaml");
        std::fs::write(&f, vec![b'#'; MAX_MANIFEST_BYTES as usize + 1]).unwrap();
        let e = read_capped(&f).unwrap_err();
        assert!(e.contains("larger than the 1048576 bytes"), "{e}");
        std::fs::write(&f, vec![b'#'; 10]).unwrap();
        assert_eq!(read_capped(&f).unwrap().len(), 10);
    }
}
