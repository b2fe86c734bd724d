//! What the node contributes to every pod: its IPs, allocatable resources
//! and the host's DNS settings (upstream `nodestatus` and
//! `ChooseHostInterface`).

use crate::api::quantity::Quantity;
use crate::config::{parse_threshold, KubeletConfig, Threshold};
use crate::runtime::convert::Allocatable;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

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

#[cfg(test)]
mod tests {
    use super::*;

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
