//! Drives picolet's runtime layer for `scripts/bench/runtime.sh`: starts N
//! pods (sandbox + one busybox container) through `ShimRuntime`, timing
//! each start, first with a CNI pod network (bridge), then N hostNetwork
//! pods; reports start latencies, the RSS of this process holding the
//! runtime with the N networked pods, and each shim's RSS/PSS; then
//! removes everything. Prints one JSON line per figure:
//! `{"bench":"runtime","metric":...,"value":...,"unit":...,"tool":"picolet"}`.
//!
//! Usage: runtime-bench --root DIR --run DIR --registry ADDR --pause BIN [--pods N]

use picolet::api::core::Pod;
use picolet::config::Config;
use picolet::image::ImageService;
use picolet::runtime::convert::{self, Allocatable, ContainerInputs, NodeContext};
use picolet::runtime::{Runtime, RuntimeOptions, ShimRuntime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "picolet-bench";
const CGROUP_ROOT: &str = "/picolet-bench";
const BRIDGE: &str = "plbench0";
const SUBNET: &str = "10.89.200.0/24";

struct Args {
    root: PathBuf,
    run: PathBuf,
    registry: String,
    pause: PathBuf,
    pods: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = std::env::args().skip(1);
    let mut m = BTreeMap::new();
    while let Some(k) = a.next() {
        let v = a
            .next()
            .ok_or_else(|| anyhow::anyhow!("{k} needs a value"))?;
        m.insert(k, v);
    }
    let get = |k: &str| {
        m.get(k)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("missing {k}"))
    };
    Ok(Args {
        root: get("--root")?.into(),
        run: get("--run")?.into(),
        registry: get("--registry")?,
        pause: get("--pause")?.into(),
        pods: m.get("--pods").map_or(Ok(30), |v| v.parse())?,
    })
}

fn emit(metric: &str, value: f64, unit: &str) {
    println!(
        "{{\"bench\":\"runtime\",\"metric\":\"{metric}\",\"value\":{value:.1},\"unit\":\"{unit}\",\"tool\":\"picolet\"}}"
    );
}

/// Nearest-rank percentile of durations, in ms.
fn pct(v: &[Duration], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// A `kB` field of a /proc status-like file, in KiB.
fn kib(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn shim_pids() -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args
            .first()
            .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
            && args
                .windows(2)
                .any(|w| w[0] == b"-namespace" && w[1] == NAMESPACE.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn node(root: &Path) -> NodeContext {
    NodeContext {
        node_name: "bench".into(),
        cluster_domain: "cluster.local".into(),
        cluster_dns: vec!["10.96.0.10".parse().expect("ip")],
        host_dns: None,
        node_ips: vec!["192.0.2.10".parse().expect("ip")],
        cgroup_root: CGROUP_ROOT.into(),
        cgroups_per_qos: true,
        pod_pids_limit: -1,
        pod_logs_dir: root.join("logs"),
        memory_capacity: 8 << 30,
        allocatable: Allocatable {
            cpu_milli: 2000,
            memory: 7 << 30,
            ephemeral_storage: 20 << 30,
        },
    }
}

fn pod(i: usize, host_network: bool) -> anyhow::Result<Pod> {
    let name = if host_network {
        format!("hostnet-{i}")
    } else {
        format!("pod-{i}")
    };
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "bench", "uid": format!("bench-{name}")},
        "spec": {"hostNetwork": host_network, "containers": [
            {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}
        ]}
    }))?)
}

/// Starts one pod; (sandbox id, time to a running sandbox, time to a
/// running container after that, of which in `start_container`).
async fn start(
    rt: &ShimRuntime,
    node: &NodeContext,
    p: &Pod,
    image_id: &str,
) -> anyhow::Result<(String, Duration, Duration, Duration)> {
    let t0 = Instant::now();
    let sc = convert::sandbox_config(p, node, 0)?.config;
    let sid = rt.run_pod_sandbox(&sc).await?;
    let t1 = Instant::now();
    let ip = rt.pod_sandbox_status(&sid).await?.network.ip;
    let ips: Vec<String> = [ip].into_iter().filter(|s| !s.is_empty()).collect();
    let volumes = BTreeMap::new();
    let c = &p.spec.as_ref().expect("spec").containers[0];
    let inputs = ContainerInputs {
        restart_count: 0,
        hash: "0",
        image_id,
        pod_ips: &ips,
        volumes: &volumes,
    };
    let cc = convert::container_config(p, c, node, &inputs)?;
    let id = rt.create_container(&sid, &cc, &sc).await?;
    let t2 = Instant::now();
    rt.start_container(&id).await?;
    Ok((sid, t1 - t0, t1.elapsed(), t2.elapsed()))
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let mut cfg = Config::new(
        None,
        Some(a.root.join("root")),
        None,
        Some("bench".into()),
        None,
    )?;
    let k = &mut cfg.kubelet;
    k.cgroup_root = CGROUP_ROOT.into();
    k.pod_logs_dir = a.root.join("logs");
    let p = &mut k.picolet;
    p.runtime_namespace = NAMESPACE.into();
    p.run_dir = a.run.clone();
    p.cni_conf_dir = a.root.join("net.d");
    p.cni_bin_dirs = vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()];
    p.registries_config = a.root.join("registries.yaml");
    p.docker_config = a.root.join("docker-config.json");
    std::fs::create_dir_all(a.root.join("net.d"))?;
    let net = serde_json::json!({"cniVersion": "1.0.0", "name": "picolet-bench", "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": a.root.join("ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
    ]});
    std::fs::write(a.root.join("net.d/10-bench.conflist"), net.to_string())?;
    let images = Rc::new(ImageService::open(&cfg)?);
    picolet::rt::block_on(async {
        let image = images
            .pull(&format!("{}/picolet/busybox:latest", a.registry))
            .await?;
        let opts = RuntimeOptions {
            pause_binary: a.pause.clone(),
        };
        let (rt, _events) = ShimRuntime::new(&cfg, opts, images.clone()).await?;
        let status = std::fs::read_to_string("/proc/self/status")?;
        emit(
            "rss_no_pods_kib",
            kib(&status, "VmRSS:").unwrap_or(0.0),
            "KiB",
        );
        let node = node(&a.root);
        let (mut total, mut sandbox, mut container, mut started, mut ids) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..a.pods {
            let (sid, s, c, st) = start(&rt, &node, &pod(i, false)?, &image.id).await?;
            total.push(s + c);
            sandbox.push(s);
            container.push(c);
            started.push(st);
            ids.push(sid);
        }
        emit("start_p50_ms", pct(&total, 50.0), "ms");
        emit("start_p99_ms", pct(&total, 99.0), "ms");
        emit("sandbox_start_p50_ms", pct(&sandbox, 50.0), "ms");
        emit("container_start_p50_ms", pct(&container, 50.0), "ms");
        emit("container_start_only_p50_ms", pct(&started, 50.0), "ms");
        // Let the pods settle before measuring memory.
        async_io::Timer::after(Duration::from_secs(2)).await;
        let status = std::fs::read_to_string("/proc/self/status")?;
        emit(
            &format!("rss_with_{}_pods_kib", a.pods),
            kib(&status, "VmRSS:").unwrap_or(0.0),
            "KiB",
        );
        emit("peak_rss_kib", kib(&status, "VmHWM:").unwrap_or(0.0), "KiB");
        let (mut rss, mut pss) = (Vec::new(), Vec::new());
        for pid in shim_pids() {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                rss.extend(kib(&s, "Rss:"));
                pss.extend(kib(&s, "Pss:"));
            }
        }
        emit("shims", rss.len() as f64, "count");
        emit("shim_rss_median_kib", median(rss), "KiB");
        emit("shim_pss_median_kib", median(pss), "KiB");

        let mut hostnet = Vec::new();
        for i in 0..a.pods {
            let (sid, s, c, _) = start(&rt, &node, &pod(i, true)?, &image.id).await?;
            hostnet.push(s + c);
            ids.push(sid);
        }
        emit("start_hostnet_p50_ms", pct(&hostnet, 50.0), "ms");
        emit("start_hostnet_p99_ms", pct(&hostnet, 99.0), "ms");

        let mut removal = Vec::new();
        for sid in &ids {
            let t0 = Instant::now();
            rt.remove_pod_sandbox(sid).await?;
            removal.push(t0.elapsed());
        }
        emit("remove_p50_ms", pct(&removal, 50.0), "ms");
        anyhow::Ok(())
    })?;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
    let cg = picolet::runtime::cgroups::Cgroups::detect()?;
    cg.remove(CGROUP_ROOT)?;
    Ok(())
}
