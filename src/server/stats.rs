//! `/stats/summary` (the Summary API, stats/v1alpha1) and
//! `/metrics/resource` (what metrics-server scrapes), from cgroupfs and
//! /proc: the node from the root cgroup, /proc/meminfo, /proc/vmstat,
//! statvfs and /proc/net/dev; pods from their cgroup and their network
//! namespace's /proc/net/dev; containers from the shim's Stats (the same
//! cgroup files).
//!
//! `usageNanoCores` is the rate since the previous scrape (kept per
//! node, pod and container; absent on the first one).

use crate::runtime::cgroups::{keyed_value, CgroupStats, Cgroups};
use crate::runtime::{Container, ContainerState, ContainerStats, ContainerStatus, PodSandbox};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A pod as the runtime has it, and where its usage is read.
#[derive(Debug, Clone, Default)]
pub struct PodInput {
    pub sandbox: PodSandbox,
    pub cgroup_parent: Option<String>,
    pub netns: Option<PathBuf>,
}

/// A running container with its stats and status.
#[derive(Debug, Clone, Default)]
pub struct ContainerInput {
    pub container: Container,
    pub stats: Option<ContainerStats>,
    pub status: Option<ContainerStatus>,
}

#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub pods: Vec<PodInput>,
    pub containers: Vec<ContainerInput>,
}

/// Rates between scrapes.
#[derive(Default)]
pub struct Rates {
    last: RefCell<HashMap<String, (Instant, u64)>>,
}

impl Rates {
    /// ns of CPU per s since the last sample of `key`; stores this one.
    pub fn nano_cores(&self, key: &str, usage_ns: u64, now: Instant) -> Option<u64> {
        let mut m = self.last.borrow_mut();
        let prev = m.insert(key.to_string(), (now, usage_ns));
        let (t, u) = prev?;
        let dt = now.duration_since(t).as_nanos();
        if dt < 1_000_000 || usage_ns < u {
            return None;
        }
        Some(((usage_ns - u) as u128 * 1_000_000_000 / dt) as u64)
    }
    /// Forgets keys not in `keep`.
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        self.last.borrow_mut().retain(|k, _| keep.contains(k));
    }
}

/// RFC 3339 of Unix nanoseconds.
fn time(ns: i64) -> String {
    crate::runtime::logs::rfc3339_nano(ns)
}

/// Cumulative CPU ns of all CPUs from /proc/stat's `cpu` line (user, nice,
/// system, irq, softirq, steal; not idle or iowait).
pub fn proc_stat_cpu_ns(stat: &str, clk_tck: u64) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| v.get(*i))
        .sum::<u64>();
    Some(busy * (1_000_000_000 / clk_tck.max(1)))
}

/// `btime` of /proc/stat: boot time, Unix seconds.
pub fn boot_time(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// One interface of /proc/net/dev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() >= 11).then(|| NetDev {
                name: name.trim().to_string(),
                rx_bytes: v[0],
                rx_errors: v[2],
                tx_bytes: v[8],
                tx_errors: v[10],
            })
        })
        .filter(|d| d.name != "lo")
        .collect()
}

fn net_json(devs: &[NetDev], default: Option<&str>, ts: &str) -> Option<Value> {
    let one = |d: &NetDev| {
        json!({"name": d.name, "rxBytes": d.rx_bytes, "rxErrors": d.rx_errors,
               "txBytes": d.tx_bytes, "txErrors": d.tx_errors})
    };
    let main = default
        .and_then(|n| devs.iter().find(|d| d.name == n))
        .or_else(|| devs.iter().find(|d| d.name == "eth0"))
        .or(devs.first())?;
    let mut v = one(main);
    v["time"] = json!(ts);
    v["interfaces"] = Value::Array(devs.iter().map(one).collect());
    Some(v)
}

fn fs_json(path: &Path, used: Option<u64>, ts: &str) -> Value {
    let mut v = json!({"time": ts});
    if let Ok(s) = rustix::fs::statvfs(path) {
        let f = s.f_frsize.max(1);
        v["availableBytes"] = json!(s.f_bavail * f);
        v["capacityBytes"] = json!(s.f_blocks * f);
        v["usedBytes"] = json!(used.unwrap_or((s.f_blocks - s.f_bfree) * f));
        v["inodesFree"] = json!(s.f_favail);
        v["inodes"] = json!(s.f_files);
        v["inodesUsed"] = json!(s.f_files.saturating_sub(s.f_ffree));
    } else if let Some(u) = used {
        v["usedBytes"] = json!(u);
    }
    v
}

fn cpu_json(ts: &str, usage_ns: u64, rate: Option<u64>) -> Value {
    let mut v = json!({"time": ts, "usageCoreNanoSeconds": usage_ns});
    if let Some(r) = rate {
        v["usageNanoCores"] = json!(r);
    }
    v
}

fn memory_json(
    ts: &str,
    usage: u64,
    ws: u64,
    rss: u64,
    limit: Option<u64>,
    faults: Option<(u64, u64)>,
) -> Value {
    let mut v = json!({"time": ts, "usageBytes": usage, "workingSetBytes": ws, "rssBytes": rss});
    if let Some(l) = limit {
        v["availableBytes"] = json!(l.saturating_sub(ws));
    }
    if let Some((f, m)) = faults {
        v["pageFaults"] = json!(f);
        v["majorPageFaults"] = json!(m);
    }
    v
}

/// What the node-level part needs to know.
pub struct NodeContext<'a> {
    pub node_name: &'a str,
    pub root_dir: &'a Path,
    pub images_dir: &'a Path,
    pub cgroups: Option<&'a Cgroups>,
    /// The pods' parent cgroup (`<cgroupRoot>/kubepods`).
    pub pods_cgroup: &'a str,
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The node's CPU (ns) from the root cgroup, else /proc/stat.
fn node_cpu_ns(cg: Option<&Cgroups>, stat: &str) -> u64 {
    let root = cg.and_then(|c| {
        if c.unified {
            let t = std::fs::read_to_string(c.hierarchies.first()?.mount_point.join("cpu.stat"))
                .ok()?;
            keyed_value(&t, "usage_usec").map(|u| u * 1000)
        } else {
            let h = c
                .hierarchies
                .iter()
                .find(|h| h.controllers.iter().any(|x| x == "cpuacct"))?;
            std::fs::read_to_string(h.mount_point.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok()
        }
    });
    root.filter(|v| *v > 0)
        .or_else(|| proc_stat_cpu_ns(stat, 100))
        .unwrap_or(0)
}

/// Builds the Summary. Pod network figures need the namespaces entered,
/// which the caller does (`pod_net`, keyed by sandbox id).
pub fn summary(
    ctx: &NodeContext<'_>,
    inputs: &Inputs,
    pod_net: &HashMap<String, Vec<NetDev>>,
    rates: &Rates,
) -> Value {
    let now_ns = jiff::Timestamp::now().as_nanosecond() as i64;
    let now = Instant::now();
    let ts = time(now_ns);
    let stat = read("/proc/stat");
    let meminfo = read("/proc/meminfo");
    let vmstat = read("/proc/vmstat");
    let mi = |k: &str| crate::stats::machine::meminfo_bytes(&meminfo, k).unwrap_or(0);
    let mut keep = std::collections::HashSet::new();

    // node
    let cpu = node_cpu_ns(ctx.cgroups, &stat);
    keep.insert("node".to_string());
    let total = mi("MemTotal");
    let usage = total.saturating_sub(mi("MemFree"));
    let ws = usage.saturating_sub(mi("Inactive(file)"));
    let faults = (
        keyed_value(&vmstat, "pgfault").unwrap_or(0),
        keyed_value(&vmstat, "pgmajfault").unwrap_or(0),
    );
    let route = read("/proc/net/route");
    let default_if = crate::node::facts::default_route_interface(&route);
    let start = boot_time(&stat)
        .map(|s| time(s * 1_000_000_000))
        .unwrap_or_else(|| ts.clone());
    let mut node = json!({
        "nodeName": ctx.node_name,
        "startTime": start,
        "cpu": cpu_json(&ts, cpu, rates.nano_cores("node", cpu, now)),
        "memory": memory_json(&ts, usage, ws, mi("AnonPages"), Some(total), Some(faults)),
        "fs": fs_json(ctx.root_dir, None, &ts),
        "runtime": {"imageFs": fs_json(ctx.images_dir, None, &ts), "containerFs": fs_json(ctx.images_dir, None, &ts)},
    });
    if let Some(n) = net_json(
        &parse_net_dev(&read("/proc/net/dev")),
        default_if.as_deref(),
        &ts,
    ) {
        node["network"] = n;
    }
    let pid_max: u64 = read("/proc/sys/kernel/pid_max").trim().parse().unwrap_or(0);
    let procs: u64 = read("/proc/loadavg")
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/')?.1.parse().ok())
        .unwrap_or(0);
    node["rlimit"] = json!({"time": ts, "maxpid": pid_max, "curproc": procs});
    // system containers: this agent, and the pods' parent cgroup
    let mut sys = Vec::new();
    let self_stat = read("/proc/self/stat");
    if let Some((cpu_ns, start_ticks)) = self_cpu(&self_stat) {
        let rss = read("/proc/self/status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024;
        keep.insert("sys/kubelet".into());
        let started = boot_time(&stat).map(|b| time((b * 100 + start_ticks as i64) * 10_000_000));
        sys.push(json!({
            "name": "kubelet",
            "startTime": started.unwrap_or_else(|| ts.clone()),
            "cpu": cpu_json(&ts, cpu_ns, rates.nano_cores("sys/kubelet", cpu_ns, now)),
            "memory": memory_json(&ts, rss, rss, rss, None, None),
        }));
    }
    if let Some(cs) = ctx.cgroups.and_then(|c| c.stats(ctx.pods_cgroup).ok()) {
        keep.insert("sys/pods".into());
        sys.push(json!({
            "name": "pods",
            "startTime": start,
            "cpu": cpu_json(&ts, cs.cpu_usage_ns, rates.nano_cores("sys/pods", cs.cpu_usage_ns, now)),
            "memory": memory_json(&ts, cs.memory_usage, cs.memory_working_set, cs.memory_rss,
                                  cs.memory_limit.or(Some(total)), None),
        }));
    }
    node["systemContainers"] = Value::Array(sys);

    // pods
    let mut pods = Vec::new();
    for p in &inputs.pods {
        let sb = &p.sandbox;
        let mut containers = Vec::new();
        let (mut eph_root, mut eph_logs) = (0u64, 0u64);
        for c in inputs
            .containers
            .iter()
            .filter(|c| c.container.pod_sandbox_id == sb.id)
        {
            if c.container.state != ContainerState::Running {
                continue;
            }
            let cid = &c.container.id;
            let mut v = json!({
                "name": c.container.metadata.name,
                "startTime": time(c.status.as_ref().map_or(c.container.created_at, |s| s.started_at)),
            });
            if let Some(s) = &c.stats {
                let key = format!("ctr/{cid}");
                keep.insert(key.clone());
                let limit = (s.memory_limit_bytes > 0 && s.memory_limit_bytes < (1u64 << 62))
                    .then_some(s.memory_limit_bytes);
                let cts = time(s.timestamp);
                v["cpu"] = cpu_json(
                    &cts,
                    s.cpu_usage_core_nanoseconds,
                    rates.nano_cores(&key, s.cpu_usage_core_nanoseconds, now),
                );
                v["memory"] = memory_json(
                    &cts,
                    s.memory_usage_bytes,
                    s.memory_working_set_bytes,
                    s.memory_rss_bytes,
                    limit,
                    None,
                );
                v["rootfs"] = fs_json(ctx.images_dir, Some(s.writable_layer_bytes), &cts);
                eph_root += s.writable_layer_bytes;
            }
            if let Some(dir) = c.status.as_ref().and_then(|s| s.log_path.parent()) {
                let used = dir_size(dir);
                eph_logs += used;
                v["logs"] = fs_json(ctx.root_dir, Some(used), &ts);
            }
            containers.push(v);
        }
        let mut pv = json!({
            "podRef": {"name": sb.metadata.name, "namespace": sb.metadata.namespace, "uid": sb.metadata.uid},
            "startTime": time(sb.created_at),
            "containers": containers,
            "ephemeral-storage": fs_json(ctx.root_dir, Some(eph_root + eph_logs), &ts),
        });
        if let Some(cs) = p
            .cgroup_parent
            .as_deref()
            .and_then(|cg| ctx.cgroups.and_then(|c| c.stats(cg).ok()))
        {
            let key = format!("pod/{}", sb.metadata.uid);
            keep.insert(key.clone());
            pod_usage(
                &mut pv,
                &ts,
                &cs,
                rates.nano_cores(&key, cs.cpu_usage_ns, now),
            );
        }
        if let Some(devs) = pod_net.get(&sb.id) {
            if let Some(n) = net_json(devs, Some("eth0"), &ts) {
                pv["network"] = n;
            }
        }
        pods.push(pv);
    }
    rates.retain(&keep);
    json!({"node": node, "pods": pods})
}

fn pod_usage(pv: &mut Value, ts: &str, cs: &CgroupStats, rate: Option<u64>) {
    pv["cpu"] = cpu_json(ts, cs.cpu_usage_ns, rate);
    pv["memory"] = memory_json(
        ts,
        cs.memory_usage,
        cs.memory_working_set,
        cs.memory_rss,
        cs.memory_limit,
        None,
    );
    pv["process_stats"] = json!({"process_count": cs.pids});
}

/// (cpu ns, start time in clock ticks since boot) of /proc/self/stat.
pub fn self_cpu(stat: &str) -> Option<(u64, u64)> {
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after the command: state is field 3; utime 14, stime 15, starttime 22
    let get = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(((get(14)? + get(15)?) * 10_000_000, get(22)?))
}

/// The Prometheus text of `/metrics/resource` from a Summary (upstream
/// derives it from the same stats).
pub fn resource_metrics(summary: &Value, error: bool) -> String {
    let mut m = super::metrics::Text::default();
    let ms = |t: &Value| -> Option<i64> {
        let ts: jiff::Timestamp = t.as_str()?.parse().ok()?;
        Some(ts.as_millisecond())
    };
    let secs = |v: &Value| v.as_u64().map(|n| n as f64 / 1e9);
    let node = &summary["node"];
    let mut c_cpu = Vec::new();
    let mut c_mem = Vec::new();
    let mut c_start = Vec::new();
    let mut p_cpu = Vec::new();
    let mut p_mem = Vec::new();
    for p in summary["pods"].as_array().into_iter().flatten() {
        let (pod, ns) = (
            p["podRef"]["name"].as_str().unwrap_or(""),
            p["podRef"]["namespace"].as_str().unwrap_or(""),
        );
        for c in p["containers"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("");
            let l = vec![
                ("container", name.to_string()),
                ("namespace", ns.to_string()),
                ("pod", pod.to_string()),
            ];
            if let Some(v) = secs(&c["cpu"]["usageCoreNanoSeconds"]) {
                c_cpu.push((l.clone(), v, ms(&c["cpu"]["time"])));
            }
            if let Some(v) = c["memory"]["workingSetBytes"].as_u64() {
                c_mem.push((l.clone(), v as f64, ms(&c["memory"]["time"])));
            }
            if let Some(t) = ms(&c["startTime"]) {
                c_start.push((l, t as f64 / 1e3, None));
            }
        }
        let l = vec![("namespace", ns.to_string()), ("pod", pod.to_string())];
        if let Some(v) = secs(&p["cpu"]["usageCoreNanoSeconds"]) {
            p_cpu.push((l.clone(), v, ms(&p["cpu"]["time"])));
        }
        if let Some(v) = p["memory"]["workingSetBytes"].as_u64() {
            p_mem.push((l, v as f64, ms(&p["memory"]["time"])));
        }
    }
    m.family(
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        "counter",
        &c_cpu,
    );
    m.family(
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        "gauge",
        &c_mem,
    );
    m.family(
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        "gauge",
        &c_start,
    );
    let n_cpu: Vec<_> = secs(&node["cpu"]["usageCoreNanoSeconds"])
        .map(|v| (vec![], v, ms(&node["cpu"]["time"])))
        .into_iter()
        .collect();
    let n_mem: Vec<_> = node["memory"]["workingSetBytes"]
        .as_u64()
        .map(|v| (vec![], v as f64, ms(&node["memory"]["time"])))
        .into_iter()
        .collect();
    m.family(
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        "counter",
        &n_cpu,
    );
    m.family(
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        "gauge",
        &n_mem,
    );
    m.family(
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
        &p_cpu,
    );
    m.family(
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        "gauge",
        &p_mem,
    );
    let e = vec![(vec![], if error { 1.0 } else { 0.0 }, None)];
    m.family(
        "resource_scrape_error",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
        &e,
    );
    m.family(
        "scrape_error",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
        &e,
    );
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3\nbtime 1700000000\n";
        assert_eq!(
            proc_stat_cpu_ns(stat, 100),
            Some((100 + 5 + 50 + 1 + 2 + 3) * 10_000_000)
        );
        assert_eq!(boot_time(stat), Some(1_700_000_000));
        let dev = "Inter-|   Receive\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 1000 10 1 0 0 0 0 0 2000 20 2 0 0 0 0 0\n";
        assert_eq!(
            parse_net_dev(dev),
            [NetDev {
                name: "eth0".into(),
                rx_bytes: 1000,
                rx_errors: 1,
                tx_bytes: 2000,
                tx_errors: 2
            }]
        );
        let s = "1234 (pico let) S 1 1 1 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 500 1000 10";
        assert_eq!(self_cpu(s), Some((100_000_000, 500)));
    }

    #[test]
    fn rates_need_two_samples() {
        let r = Rates::default();
        let t = Instant::now();
        assert_eq!(r.nano_cores("a", 1000, t), None);
        assert_eq!(
            r.nano_cores("a", 1_000_001_000, t + std::time::Duration::from_secs(2)),
            Some(500_000_000)
        );
        r.retain(&Default::default());
        assert_eq!(r.nano_cores("a", 5, t), None);
    }

    #[test]
    fn resource_metrics_from_a_summary() {
        let s = json!({
            "node": {"cpu": {"time": "2024-01-01T00:00:00Z", "usageCoreNanoSeconds": 2_500_000_000u64},
                     "memory": {"time": "2024-01-01T00:00:00Z", "workingSetBytes": 1024}},
            "pods": [{"podRef": {"name": "p", "namespace": "ns", "uid": "u"},
                      "cpu": {"time": "2024-01-01T00:00:00Z", "usageCoreNanoSeconds": 1_000_000_000u64},
                      "memory": {"time": "2024-01-01T00:00:00Z", "workingSetBytes": 10},
                      "containers": [{"name": "c", "startTime": "2024-01-01T00:00:00Z",
                                      "cpu": {"time": "2024-01-01T00:00:00Z", "usageCoreNanoSeconds": 500_000_000u64},
                                      "memory": {"time": "2024-01-01T00:00:00Z", "workingSetBytes": 5}}]}]
        });
        let t = resource_metrics(&s, false);
        assert!(
            t.contains("node_cpu_usage_seconds_total 2.5 1704067200000\n"),
            "{t}"
        );
        assert!(t.contains("container_cpu_usage_seconds_total{container=\"c\",namespace=\"ns\",pod=\"p\"} 0.5 1704067200000\n"), "{t}");
        assert!(
            t.contains(
                "pod_memory_working_set_bytes{namespace=\"ns\",pod=\"p\"} 10 1704067200000\n"
            ),
            "{t}"
        );
        assert!(t.contains("container_start_time_seconds{container=\"c\",namespace=\"ns\",pod=\"p\"} 1704067200\n"), "{t}");
        assert!(
            t.contains("# TYPE resource_scrape_error gauge\nresource_scrape_error 0\n"),
            "{t}"
        );
    }
}
