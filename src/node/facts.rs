//! Facts about this machine: its IPs, allocatable resources (upstream
//! `nodestatus` and `ChooseHostInterface`), the OS and kernel it reports,
//! and the eviction signals behind the pressure conditions.

use crate::api::quantity::Quantity;
use crate::config::{parse_threshold, KubeletConfig, Threshold};
use crate::runtime::convert::Allocatable;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The interface of the IPv4 default route in `/proc/net/route` (the one
/// with the lowest metric), as upstream's `ChooseHostInterface`.
pub fn default_route_interface(route: &str) -> Option<String> {
    let mut best: Option<(u32, String)> = None;
    for line in route.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // Iface Destination Gateway Flags RefCnt Use Metric Mask …
        let (iface, dest, flags, metric, mask) = (f[0], f[1], f[3], f[6], f[7]);
        let up = u32::from_str_radix(flags, 16).is_ok_and(|x| x & 1 == 1);
        if dest != "00000000" || mask != "00000000" || !up {
            continue;
        }
        let metric: u32 = metric.parse().unwrap_or(u32::MAX);
        if best.as_ref().is_none_or(|(m, _)| metric < *m) {
            best = Some((metric, iface.to_string()));
        }
    }
    best.map(|(_, i)| i)
}

/// The node's IP: the first global IPv4 address of `iface` among
/// `addrs` (interface name, address), else the first global one of any
/// interface.
pub fn choose_node_ip(iface: Option<&str>, addrs: &[(String, IpAddr)]) -> Option<IpAddr> {
    let global = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(_) => false,
    };
    if let Some(i) = iface {
        if let Some((_, ip)) = addrs.iter().find(|(n, ip)| n == i && global(ip)) {
            return Some(*ip);
        }
    }
    addrs.iter().find(|(_, ip)| global(ip)).map(|(_, ip)| *ip)
}

/// IPv4 addresses of the host's interfaces (getifaddrs).
fn interface_addresses() -> Result<Vec<(String, IpAddr)>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; we only
    // read fields of entries while the list is alive.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(std::io::Error::last_os_error()).context("getifaddrs");
        }
        let mut p = head;
        while !p.is_null() {
            let ifa = &*p;
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                    .to_string_lossy()
                    .into_owned();
                out.push((name, IpAddr::V4(ip)));
            }
            p = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    Ok(out)
}

/// `--node-ip`, or the address of the default-route interface.
pub fn node_ip(flag: Option<IpAddr>) -> Result<IpAddr> {
    if let Some(ip) = flag {
        return Ok(ip);
    }
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let iface = default_route_interface(&route);
    let addrs = interface_addresses()?;
    choose_node_ip(iface.as_deref(), &addrs)
        .context("no global IPv4 address on this host: set --node-ip")
}

fn reserved(m: &BTreeMap<String, String>, key: &str, milli: bool) -> Result<i64> {
    match m.get(key) {
        None => Ok(0),
        Some(s) => {
            let q = Quantity::parse(s).with_context(|| format!("reserved {key}: {s:?}"))?;
            Ok(if milli { q.milli_value() } else { q.value() })
        }
    }
}

fn threshold(cfg: &KubeletConfig, signal: &str, capacity: i64) -> i64 {
    match cfg.eviction_hard.get(signal).map(|s| parse_threshold(s)) {
        Some(Ok(Threshold::Quantity(q))) => q,
        Some(Ok(Threshold::Percent(p))) => (capacity as f64 * p / 100.0) as i64,
        _ => 0,
    }
}

/// Allocatable = capacity − kubeReserved − systemReserved − the hard
/// eviction threshold (upstream `GetNodeAllocatableAbsolute`).
pub fn allocatable(
    cfg: &KubeletConfig,
    cores: usize,
    memory: i64,
    ephemeral: i64,
) -> Result<Allocatable> {
    let r = |key, milli| -> Result<i64> {
        Ok(reserved(&cfg.kube_reserved, key, milli)? + reserved(&cfg.system_reserved, key, milli)?)
    };
    Ok(Allocatable {
        cpu_milli: (cores as i64 * 1000 - r("cpu", true)?).max(0),
        memory: (memory - r("memory", false)? - threshold(cfg, "memory.available", memory)).max(0),
        ephemeral_storage: (ephemeral
            - r("ephemeral-storage", false)?
            - threshold(cfg, "nodefs.available", ephemeral))
        .max(0),
    })
}

/// `PRETTY_NAME` of os-release (upstream `osImage`).
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".into())
}

/// The OS image of this machine, from /etc/os-release (or
/// /usr/lib/os-release).
pub fn read_os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    os_image(&text)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_version() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// The eviction signals picolet reports pressure from (upstream's
/// `memory.available`, `nodefs.available`, `nodefs.inodesFree`,
/// `imagefs.available`, `pid.available`), in bytes, inodes or pids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    pub memory_available: i64,
    pub memory_capacity: i64,
    pub nodefs_available: i64,
    pub nodefs_capacity: i64,
    pub nodefs_inodes_free: i64,
    pub nodefs_inodes: i64,
    pub pid_available: i64,
    pub pid_max: i64,
}

/// (available, capacity) memory from /proc/meminfo. Upstream subtracts the
/// root cgroup's working set from capacity; MemAvailable (the kernel's
/// estimate of what can be had without swapping) is the same idea and
/// reads the same on cgroup v1 and v2. Old kernels: MemFree +
/// Inactive(file).
pub fn memory_signal(meminfo: &str) -> (i64, i64) {
    let get = |k: &str| crate::stats::machine::meminfo_bytes(meminfo, k).unwrap_or(0) as i64;
    let total = get("MemTotal");
    let available = match crate::stats::machine::meminfo_bytes(meminfo, "MemAvailable") {
        Some(a) => a as i64,
        None => get("MemFree") + get("Inactive(file)"),
    };
    (available.min(total), total)
}

/// Reads the signals now: /proc/meminfo, statvfs of `root`, pid_max and
/// the number of tasks (/proc/loadavg's 4th field).
pub fn read_signals(root: &Path) -> Signals {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let (memory_available, memory_capacity) = memory_signal(&meminfo);
    let mut s = Signals {
        memory_available,
        memory_capacity,
        ..Default::default()
    };
    if let Ok(v) = rustix::fs::statvfs(root) {
        let f = v.f_frsize.max(1);
        s.nodefs_available = (v.f_bavail * f) as i64;
        s.nodefs_capacity = (v.f_blocks * f) as i64;
        s.nodefs_inodes_free = v.f_favail as i64;
        s.nodefs_inodes = v.f_files as i64;
    }
    s.pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let tasks = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| {
            let f = t.split_whitespace().nth(3)?;
            f.split_once('/')?.1.parse::<i64>().ok()
        })
        .unwrap_or(0);
    s.pid_available = s.pid_max - tasks;
    s
}

/// Which pressures the hard eviction thresholds signal: (memory, disk,
/// pid). A threshold missing from `evictionHard` signals nothing.
pub fn pressures(cfg: &KubeletConfig, s: &Signals) -> (bool, bool, bool) {
    let below = |signal: &str, available: i64, capacity: i64| -> bool {
        match cfg.eviction_hard.get(signal).map(|v| parse_threshold(v)) {
            Some(Ok(Threshold::Quantity(q))) => capacity > 0 && available < q,
            Some(Ok(Threshold::Percent(p))) => {
                capacity > 0 && (available as f64) < capacity as f64 * p / 100.0
            }
            _ => false,
        }
    };
    let memory = below("memory.available", s.memory_available, s.memory_capacity);
    // The image store shares the root dir's filesystem.
    let disk = below("nodefs.available", s.nodefs_available, s.nodefs_capacity)
        || below("imagefs.available", s.nodefs_available, s.nodefs_capacity)
        || below("nodefs.inodesFree", s.nodefs_inodes_free, s.nodefs_inodes);
    let pid = below("pid.available", s.pid_available, s.pid_max);
    (memory, disk, pid)
}

/// Hugepage sizes the kernel offers, as resource names with their
/// capacity in bytes (`hugepages-2Mi` → pages × size).
pub fn hugepages(m: &crate::stats::machine::MachineInfo) -> BTreeMap<String, i64> {
    m.hugepages
        .iter()
        .map(|h| {
            let size = (h.page_size as i64) * 1024;
            (
                format!("hugepages-{}", crate::api::quantity::format_binary_si(size)),
                size * h.num_pages as i64,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_facts() {
        assert_eq!(
            os_image("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_image(""), "Linux");
        assert!(!kernel_version().is_empty());
    }

    #[test]
    fn pressure_from_hard_thresholds() {
        let cfg = KubeletConfig::default();
        let ok = Signals {
            memory_available: 2 << 30,
            memory_capacity: 4 << 30,
            nodefs_available: 50,
            nodefs_capacity: 100,
            nodefs_inodes_free: 50,
            nodefs_inodes: 100,
            pid_available: 30000,
            pid_max: 32768,
        };
        assert_eq!(pressures(&cfg, &ok), (false, false, false));
        let low_mem = Signals {
            memory_available: 50 << 20,
            ..ok
        };
        assert_eq!(pressures(&cfg, &low_mem), (true, false, false));
        // imagefs.available < 15 % (same filesystem)
        let low_disk = Signals {
            nodefs_available: 14,
            ..ok
        };
        assert_eq!(pressures(&cfg, &low_disk), (false, true, false));
        let mut c2 = cfg.clone();
        c2.eviction_hard
            .insert("pid.available".into(), "10%".into());
        let pids = Signals {
            pid_available: 1000,
            ..ok
        };
        assert_eq!(pressures(&c2, &pids), (false, false, true));
        assert_eq!(pressures(&cfg, &pids), (false, false, false));
        let s = read_signals(Path::new("/"));
        assert!(s.memory_capacity > 0 && s.nodefs_capacity > 0 && s.pid_max > 0);
    }

    #[test]
    fn memory_signal_prefers_mem_available() {
        let mi =
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\nInactive(file): 200 kB\n";
        assert_eq!(memory_signal(mi), (600 * 1024, 1000 * 1024));
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nInactive(file): 200 kB\n";
        assert_eq!(memory_signal(old), (300 * 1024, 1000 * 1024));
    }

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0102A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn default_route_and_node_ip() {
        assert_eq!(default_route_interface(ROUTE).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\n"), None);
        let addrs = vec![
            ("lo".to_string(), "127.0.0.1".parse().unwrap()),
            ("eth1".to_string(), "192.168.2.5".parse().unwrap()),
            ("eth0".to_string(), "169.254.1.1".parse().unwrap()),
            ("eth0".to_string(), "192.168.1.5".parse().unwrap()),
        ];
        assert_eq!(
            choose_node_ip(Some("eth0"), &addrs),
            Some("192.168.1.5".parse().unwrap())
        );
        assert_eq!(
            choose_node_ip(None, &addrs),
            Some("192.168.2.5".parse().unwrap())
        );
        assert_eq!(choose_node_ip(None, &addrs[..1]), None);
        assert_eq!(
            node_ip(Some("10.1.2.3".parse().unwrap())).unwrap(),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn allocatable_subtracts_reservations_and_eviction() {
        let mut cfg = KubeletConfig::default();
        cfg.system_reserved.insert("cpu".into(), "250m".into());
        cfg.kube_reserved.insert("memory".into(), "100Mi".into());
        let a = allocatable(&cfg, 2, 1 << 30, 1000 << 20).unwrap();
        assert_eq!(a.cpu_milli, 1750);
        // 1 GiB − 100Mi reserved − 100Mi memory.available
        assert_eq!(a.memory, (1 << 30) - (200 << 20));
        // 10% nodefs.available
        assert_eq!(a.ephemeral_storage, 900 << 20);
        cfg.kube_reserved.insert("memory".into(), "lots".into());
        assert!(allocatable(&cfg, 2, 1 << 30, 0).is_err());
    }
}
