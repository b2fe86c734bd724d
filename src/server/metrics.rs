//! Prometheus text format (0.0.4) and picolet's own `/metrics`, with the
//! upstream kubelet's metric names where one exists.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

/// Labels, value, optional timestamp (ms).
pub type Sample = (Vec<(&'static str, String)>, f64, Option<i64>);

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn labels(l: &[(&str, String)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// A text exposition being written.
#[derive(Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// A metric family with its samples (the HELP and TYPE lines even
    /// when there is no sample).
    pub fn family(&mut self, name: &str, help: &str, kind: &str, samples: &[Sample]) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (l, v, ts) in samples {
            let _ = write!(self.out, "{name}{} {}", labels(l), fmt_value(*v));
            if let Some(t) = ts {
                let _ = write!(self.out, " {t}");
            }
            self.out.push('\n');
        }
    }

    /// A histogram without labels.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            cum += c;
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{}\"}} {cum}", fmt_value(*b));
        }
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(self.out, "{name}_sum {}", fmt_value(h.sum));
        let _ = writeln!(self.out, "{name}_count {}", h.count);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Per bucket (not cumulative); values above the last bound only count.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }
    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Upstream `kubelet_pod_start_duration_seconds` buckets.
pub const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// Method, path, server type, long running.
pub type HttpKey = (String, String, &'static str, bool);

/// State of picolet's own metrics held by the server.
pub struct Registry {
    /// (method, path, server_type, long_running) -> count.
    pub http: RefCell<BTreeMap<HttpKey, u64>>,
    pub pod_start: RefCell<Histogram>,
    started_seen: RefCell<HashSet<String>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            http: RefCell::default(),
            pod_start: RefCell::new(Histogram::new(POD_START_BUCKETS)),
            started_seen: RefCell::default(),
        }
    }
}

impl Registry {
    /// Counts a request (upstream `kubelet_http_requests_total`: the first
    /// path segment).
    pub fn request(&self, method: &str, path: &str, server_type: &'static str, long_running: bool) {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let p = format!("/{first}");
        *self
            .http
            .borrow_mut()
            .entry((method.to_string(), p, server_type, long_running))
            .or_default() += 1;
    }

    /// Observes the start duration of each pod once: from the pod's
    /// `startTime` (when the kubelet took it) to its last container start.
    pub fn observe_pods(&self, pods: &[crate::api::core::Pod]) {
        let mut seen = self.started_seen.borrow_mut();
        let mut live = HashSet::new();
        for p in pods {
            let Some(uid) = p.metadata.uid.clone() else {
                continue;
            };
            live.insert(uid.clone());
            if seen.contains(&uid) {
                continue;
            }
            let Some(st) = &p.status else { continue };
            let Some(start) = &st.start_time else {
                continue;
            };
            let cs = st.container_statuses.as_deref().unwrap_or_default();
            if cs.is_empty() {
                continue;
            }
            let mut last = None;
            for c in cs {
                match c
                    .state
                    .as_ref()
                    .and_then(|s| s.running.as_ref())
                    .and_then(|r| r.started_at.as_ref())
                {
                    Some(t) => last = last.max(Some(t.0)),
                    None => {
                        last = None;
                        break;
                    }
                }
            }
            if let Some(l) = last {
                let d = l.duration_since(start.0).as_secs_f64().max(0.0);
                self.pod_start.borrow_mut().observe(d);
                seen.insert(uid);
            }
        }
        seen.retain(|u| live.contains(u));
    }
}

/// The process's own figures (Go client's process collector names).
pub fn process(t: &mut Text) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |k: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            * 1024.0
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let pstat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (cpu_ns, start_ticks) = super::stats::self_cpu(&stat).unwrap_or((0, 0));
    let boot = super::stats::boot_time(&pstat).unwrap_or(0) as f64;
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0) as f64;
    let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(0) as f64;
    let one = |v: f64| vec![(vec![], v, None)];
    t.family(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        &one(cpu_ns as f64 / 1e9),
    );
    t.family(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        "gauge",
        &one(max_fds),
    );
    t.family(
        "process_open_fds",
        "Number of open file descriptors.",
        "gauge",
        &one(fds),
    );
    t.family(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
        &one(kb("VmRSS:")),
    );
    t.family(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        &one(boot + start_ticks as f64 / 100.0),
    );
    t.family(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        "gauge",
        &one(kb("VmSize:")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let mut t = Text::default();
        t.family(
            "a_total",
            "A thing.",
            "counter",
            &[
                (vec![("k", "x\"y".into())], 3.0, None),
                (vec![], 0.25, Some(5)),
            ],
        );
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(9.0);
        t.histogram("h_seconds", "H.", &h);
        assert_eq!(
            t.finish(),
            "# HELP a_total A thing.\n# TYPE a_total counter\na_total{k=\"x\\\"y\"} 3\na_total 0.25 5\n\
             # HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"1\"} 1\nh_seconds_bucket{le=\"2\"} 2\n\
             h_seconds_bucket{le=\"+Inf\"} 3\nh_seconds_sum 11\nh_seconds_count 3\n"
        );
    }

    #[test]
    fn pod_start_observed_once() {
        let pod: crate::api::core::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "u"},
            "status": {"startTime": "2024-01-01T00:00:00Z", "containerStatuses": [
                {"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {"startedAt": "2024-01-01T00:00:03Z"}}}]}
        }))
        .unwrap();
        let r = Registry::default();
        r.observe_pods(std::slice::from_ref(&pod));
        r.observe_pods(std::slice::from_ref(&pod));
        let h = r.pod_start.borrow();
        assert_eq!((h.count, h.sum), (1, 3.0));
        r.request("GET", "/stats/summary", "readwrite", false);
        assert_eq!(r.http.borrow().values().sum::<u64>(), 1);
    }
}
