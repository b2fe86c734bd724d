//! Helpers for the image integration tests: temp roots, configs, OCI layouts
//! built in the test, pushes with skopeo, extra registries (ports 5100-5199),
//! and a small HTTP proxy that counts, slows or truncates blob responses.
#![allow(dead_code)]

use picolet::config::Config;
use picolet::image::ImageService;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PREREQ: &str = "run scripts/test-env.sh (as root) first";

/// The shared test registry, checked to answer.
pub fn registry() -> String {
    let addr = std::env::var("PICOLET_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let (status, _) = http_get(&addr, "/v2/", &[])
        .unwrap_or_else(|e| panic!("test registry {addr} not reachable ({e}); {PREREQ}"));
    assert_eq!(
        status, 200,
        "test registry {addr}: /v2/ answered {status}; {PREREQ}"
    );
    addr
}

/// A bare HTTP/1.0 GET (status, body).
pub fn http_get(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => buf[i + 4..].to_vec(),
        None => vec![],
    };
    Ok((status, body))
}

pub fn need_tool(t: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {t}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{t} not found; {PREREQ}");
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}; {PREREQ}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temp root under /var/tmp/picolet-test, removed (after unmounting what
/// the test mounted and killing what it started) on drop.
pub struct TestRoot {
    pub dir: PathBuf,
    pub mounts: Mutex<Vec<PathBuf>>,
    pub children: Mutex<Vec<Child>>,
}

impl TestRoot {
    pub fn new(name: &str) -> TestRoot {
        assert!(
            rustix::process::geteuid().is_root(),
            "image tests need root; {PREREQ}"
        );
        let dir = PathBuf::from(format!(
            "/var/tmp/picolet-test/image-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestRoot {
            dir,
            mounts: Mutex::new(vec![]),
            children: Mutex::new(vec![]),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// A Config whose root is `<dir>/root`, with optional registries.yaml,
    /// docker config.json and extra KubeletConfiguration lines.
    pub fn config(&self, registries: Option<&str>, docker: Option<&str>, extra: &str) -> Config {
        let reg = self.path("registries.yaml");
        let dock = self.path("docker-config.json");
        if let Some(r) = registries {
            std::fs::write(&reg, r).unwrap();
        }
        if let Some(d) = docker {
            std::fs::write(&dock, d).unwrap();
        }
        let cfg = self.path("kubelet.yaml");
        std::fs::write(
            &cfg,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{extra}\npicolet:\n  registriesConfig: {}\n  dockerConfig: {}\n",
                reg.display(),
                dock.display()
            ),
        )
        .unwrap();
        Config::new(
            Some(&cfg),
            Some(self.path("root")),
            None,
            Some("image-test".into()),
            None,
        )
        .unwrap()
    }

    /// An ImageService with fast retries (tests must not wait minutes).
    pub fn service(&self, cfg: &Config) -> ImageService {
        let mut s = ImageService::open(cfg).unwrap();
        s.set_retry_policy(3, Duration::from_millis(50));
        s
    }

    pub fn track_mount(&self, p: &Path) {
        self.mounts.lock().unwrap().push(p.to_path_buf());
    }

    pub fn track_child(&self, c: Child) {
        self.children.lock().unwrap().push(c);
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        for c in self.children.lock().unwrap().iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in self.mounts.lock().unwrap().iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    picolet::image::store::hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// Deterministic pseudo-random (incompressible) bytes.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An uncompressed layer tar of regular files (parents implied).
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A ustar entry with any name and link (tar::Builder refuses bad names).
pub fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A layer ready for a layout: compressed bytes + diffID.
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
    pub media_type: &'static str,
}

pub fn gz_layer(tar: &[u8]) -> Layer {
    Layer {
        blob: gzip(tar),
        diff_id: format!("sha256:{}", sha256_hex(tar)),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
    }
}

/// Writes an OCI image layout at `dir` with one image tagged `tag`.
/// `diff_ids` overrides the config's diff_ids (to build broken images).
/// Returns the config digest (the image id).
pub fn write_layout(
    dir: &Path,
    tag: &str,
    layers: &[Layer],
    diff_ids: Option<Vec<String>>,
) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let h = sha256_hex(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        format!("sha256:{h}")
    };
    let diff_ids = diff_ids.unwrap_or_else(|| layers.iter().map(|l| l.diff_id.clone()).collect());
    let arch = picolet::image::registry::host_platform().architecture;
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let cb = serde_json::to_vec(&config).unwrap();
    let cd = put(&cb);
    let ls: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let d = put(&l.blob);
            serde_json::json!({"mediaType": l.media_type, "digest": d, "size": l.blob.len()})
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()},
        "layers": ls,
    });
    let mb = serde_json::to_vec(&m).unwrap();
    let md = put(&mb);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    cd
}

/// Pushes `layout:tag` to `dest` (docker://... without the prefix).
pub fn push(layout: &Path, tag: &str, dest: &str, extra: &[&str]) {
    need_tool("skopeo");
    let src = format!("oci:{}:{tag}", layout.display());
    let dst = format!("docker://{dest}");
    let mut args = vec!["copy", "-q", "--dest-tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(&src);
    args.push(&dst);
    sh("skopeo", &args);
}

/// Path of a blob in the shared registry's filesystem storage.
pub fn registry_blob_data(digest: &str) -> PathBuf {
    let dir = std::env::var("REGISTRY_DIR").unwrap_or_else(|_| "/var/tmp/picolet-registry".into());
    let h = digest.trim_start_matches("sha256:");
    PathBuf::from(dir).join(format!(
        "storage/docker/registry/v2/blobs/sha256/{}/{h}/data",
        &h[..2]
    ))
}

/// Starts Debian's docker-registry on 127.0.0.1:port with `extra` config
/// (auth/tls sections); waits until it answers.
pub fn start_registry(root: &TestRoot, port: u16, http_extra: &str, extra: &str) -> String {
    need_tool("docker-registry");
    let dir = root.path(&format!("registry-{port}"));
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}{extra}",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start docker-registry: {e}; {PREREQ}"));
    root.track_child(child);
    let addr = format!("127.0.0.1:{port}");
    let t = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "registry on {addr} did not start: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    addr
}

/// What the proxy does to blob responses.
#[derive(Default)]
pub struct ProxyRules {
    /// Cut blob bodies after this many bytes, for the first `truncate_times` responses.
    pub truncate_at: Option<usize>,
    pub truncate_times: usize,
    /// Slow blob bodies to about this many bytes per second.
    pub rate: Option<usize>,
    /// Answer the first `fail_first` requests (any path but /v2/) with this
    /// status and `Retry-After: 1`.
    pub fail_status: u16,
    pub fail_first: usize,
}

/// A counting/faulty HTTP proxy to an upstream registry (one thread per connection).
pub struct Proxy {
    pub addr: String,
    pub blob_gets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

impl Proxy {
    pub fn start(port: u16, upstream: &str, rules: ProxyRules) -> Proxy {
        let l = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("proxy port {port}: {e}"));
        let addr = format!("127.0.0.1:{port}");
        let blob_gets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bg, st, up) = (blob_gets.clone(), stop.clone(), upstream.to_string());
        let rules = Arc::new(rules);
        let truncated = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for c in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                let (bg, up, rules) = (bg.clone(), up.clone(), rules.clone());
                let (truncated, failed) = (truncated.clone(), failed.clone());
                std::thread::spawn(move || {
                    let _ = proxy_conn(c, &up, &bg, &rules, &truncated, &failed);
                });
            }
        });
        Proxy {
            addr,
            blob_gets,
            stop,
        }
    }

    pub fn blob_get_count(&self, digest: &str) -> usize {
        self.blob_gets
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(digest))
            .count()
    }
}

fn proxy_conn(
    mut c: TcpStream,
    upstream: &str,
    blob_gets: &Mutex<Vec<String>>,
    rules: &ProxyRules,
    truncated: &AtomicUsize,
    failed: &AtomicUsize,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b)? == 0 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let is_blob = path.contains("/blobs/sha256:");
    if is_blob {
        let range = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("Range:")
                    .or_else(|| l.strip_prefix("range:"))
            })
            .map_or("none".to_string(), |v| v.trim().to_string());
        blob_gets
            .lock()
            .unwrap()
            .push(format!("{path} range={range}"));
    }
    if path != "/v2/"
        && rules.fail_first > 0
        && failed.fetch_add(1, Ordering::SeqCst) < rules.fail_first
    {
        let st = rules.fail_status;
        return c.write_all(
            format!("HTTP/1.1 {st} Failing\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    }
    let mut u = TcpStream::connect(upstream)?;
    // Force Connection: close upstream so the response ends with the socket.
    let mut fwd = String::new();
    for line in text.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") || line.is_empty() {
            continue;
        }
        fwd += line;
        fwd += "\r\n";
    }
    fwd += "Connection: close\r\n\r\n";
    u.write_all(fwd.as_bytes())?;
    let cut = if is_blob
        && rules.truncate_at.is_some()
        && truncated.fetch_add(1, Ordering::SeqCst) < rules.truncate_times
    {
        rules.truncate_at
    } else {
        None
    };
    let mut sent_body = 0usize;
    let mut hdr = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = u.read(&mut buf)?;
        if n == 0 {
            return c.write_all(&hdr);
        }
        hdr.extend_from_slice(&buf[..n]);
        if let Some(i) = hdr.windows(4).position(|w| w == b"\r\n\r\n") {
            c.write_all(&hdr[..i + 4])?;
            let rest = hdr[i + 4..].to_vec();
            return send_body(
                &mut c,
                &mut u,
                rest,
                &mut sent_body,
                cut,
                is_blob,
                rules,
                &mut buf,
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn send_body(
    c: &mut TcpStream,
    u: &mut TcpStream,
    first: Vec<u8>,
    sent: &mut usize,
    cut: Option<usize>,
    is_blob: bool,
    rules: &ProxyRules,
    buf: &mut [u8],
) -> std::io::Result<()> {
    let mut pending = first;
    loop {
        if pending.is_empty() {
            let n = u.read(buf)?;
            if n == 0 {
                return Ok(());
            }
            pending = buf[..n].to_vec();
        }
        let mut take = pending.len();
        if let Some(cut) = cut {
            take = take.min(cut.saturating_sub(*sent));
            if take == 0 {
                // Close mid-body: the client sees a short stream.
                let _ = c.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
        }
        if let (Some(rate), true) = (rules.rate, is_blob) {
            std::thread::sleep(Duration::from_secs_f64(take as f64 / rate as f64));
        }
        c.write_all(&pending[..take])?;
        *sent += take;
        pending.drain(..take);
    }
}

/// Files of an image's rootfs as seen through its overlay mount.
pub fn mount_rootfs(root: &TestRoot, svc: &ImageService, id: &str, name: &str) -> PathBuf {
    let cdir = root.path(&format!("containers/{name}"));
    let m = svc.rootfs_mount(id, &cdir).unwrap();
    let target = cdir.join("rootfs");
    std::fs::create_dir_all(&target).unwrap();
    let data = m.options.join(",");
    rustix::mount::mount(
        m.source.as_str(),
        &target,
        m.fstype.as_str(),
        rustix::mount::MountFlags::empty(),
        Some(std::ffi::CString::new(data).unwrap().as_c_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlay {:?}: {e}", m.options));
    root.track_mount(&target);
    target
}
