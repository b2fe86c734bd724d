//! Machine information as cAdvisor's `MachineInfo` (served at `/spec`):
//! cores, frequency, memory, ids, filesystems, disks, NICs, topology.
//! Parsers are pure functions over file contents; `collect` reads the host.

use crate::util::mountinfo;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MachineInfo {
    pub timestamp: String,
    pub num_cores: usize,
    pub num_physical_cores: usize,
    pub num_sockets: usize,
    pub cpu_frequency_khz: u64,
    pub memory_capacity: u64,
    pub swap_capacity: u64,
    pub memory_by_type: BTreeMap<String, MemoryInfo>,
    pub hugepages: Vec<HugePagesInfo>,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub filesystems: Vec<FsInfo>,
    pub disk_map: BTreeMap<String, DiskInfo>,
    pub network_devices: Vec<NetInfo>,
    pub topology: Vec<Node>,
    pub cloud_provider: String,
    pub instance_type: String,
    pub instance_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemoryInfo {
    pub capacity: u64,
    pub dimm_count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HugePagesInfo {
    /// kB
    pub page_size: u64,
    pub num_pages: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FsInfo {
    pub device: String,
    pub capacity: u64,
    #[serde(rename = "type")]
    pub fs_type: String,
    pub inodes: u64,
    pub has_inodes: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiskInfo {
    pub name: String,
    pub major: u64,
    pub minor: u64,
    pub size: u64,
    pub scheduler: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetInfo {
    pub name: String,
    pub mac_address: String,
    /// Mbit/s
    pub speed: i64,
    pub mtu: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Node {
    pub node_id: usize,
    pub memory: u64,
    pub hugepages: Vec<HugePagesInfo>,
    pub cores: Vec<Core>,
    pub caches: Vec<Cache>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Core {
    pub core_id: usize,
    pub thread_ids: Vec<usize>,
    pub caches: Vec<Cache>,
    pub socket_id: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cache {
    pub size: u64,
    #[serde(rename = "type")]
    pub cache_type: String,
    pub level: u32,
}

/// One logical CPU as sysfs describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    pub id: usize,
    pub core_id: usize,
    pub package_id: usize,
    pub node_id: usize,
}

/// `/proc/meminfo` value of `key` in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        Some(match it.next() {
            Some("kB") => n * 1024,
            _ => n,
        })
    })
}

/// Highest "cpu MHz" in /proc/cpuinfo, in kHz (fallback when cpufreq is absent).
pub fn cpuinfo_max_khz(cpuinfo: &str) -> u64 {
    cpuinfo
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "cpu MHz").then(|| v.trim().parse::<f64>().ok())?
        })
        .map(|mhz| (mhz * 1000.0) as u64)
        .max()
        .unwrap_or(0)
}

/// Parses a sysfs CPU list ("0-3,5,7-8").
pub fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(n) = part.trim().parse() {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// Physical cores (distinct package+core) and sockets (distinct packages).
pub fn count_cores(cpus: &[Cpu]) -> (usize, usize) {
    let cores: BTreeSet<_> = cpus.iter().map(|c| (c.package_id, c.core_id)).collect();
    let sockets: BTreeSet<_> = cpus.iter().map(|c| c.package_id).collect();
    (cores.len(), sockets.len())
}

/// Groups CPUs into NUMA nodes and cores.
pub fn build_topology(cpus: &[Cpu], node_memory: &BTreeMap<usize, u64>) -> Vec<Node> {
    let mut nodes: BTreeMap<usize, Node> = BTreeMap::new();
    for c in cpus {
        let node = nodes.entry(c.node_id).or_insert_with(|| Node {
            node_id: c.node_id,
            memory: node_memory.get(&c.node_id).copied().unwrap_or(0),
            ..Default::default()
        });
        match node
            .cores
            .iter_mut()
            .find(|k| k.core_id == c.core_id && k.socket_id == c.package_id)
        {
            Some(core) => core.thread_ids.push(c.id),
            None => node.cores.push(Core {
                core_id: c.core_id,
                thread_ids: vec![c.id],
                caches: Vec::new(),
                socket_id: c.package_id,
            }),
        }
    }
    nodes.into_values().collect()
}

/// Block-device filesystems from /proc/self/mountinfo: (device, mount point, type),
/// one per device (the first mount wins, as cAdvisor does).
pub fn block_filesystems(mountinfo: &str) -> Vec<(String, String, String)> {
    let mut seen = BTreeSet::new();
    mountinfo::parse(mountinfo)
        .into_iter()
        .filter(|m| m.source.starts_with("/dev/") && seen.insert(m.source.clone()))
        .map(|m| {
            (
                m.source,
                m.mount_point.to_string_lossy().into_owned(),
                m.fs_type,
            )
        })
        .collect()
}

/// The selected scheduler in a sysfs `queue/scheduler` line ("mq-deadline [none]").
pub fn selected_scheduler(s: &str) -> String {
    s.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .unwrap_or("none")
        .to_string()
}

/// Interfaces cAdvisor leaves out: loopback and container/virtual plumbing.
pub fn is_virtual_nic(name: &str) -> bool {
    [
        "lo", "veth", "docker", "nerdctl", "cni", "flannel", "cali", "virbr", "br-",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn read_num<T: std::str::FromStr>(p: impl AsRef<Path>) -> Option<T> {
    read_trim(p)?.parse().ok()
}

fn list_dir(p: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sysfs_cpus() -> Vec<Cpu> {
    let online = read_trim("/sys/devices/system/cpu/online")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default();
    // NUMA membership: node<N>/cpulist
    let mut node_of: BTreeMap<usize, usize> = BTreeMap::new();
    for n in list_dir("/sys/devices/system/node") {
        if let Some(id) = n.strip_prefix("node").and_then(|i| i.parse::<usize>().ok()) {
            if let Some(list) = read_trim(format!("/sys/devices/system/node/{n}/cpulist")) {
                for c in parse_cpu_list(&list) {
                    node_of.insert(c, id);
                }
            }
        }
    }
    online
        .into_iter()
        .map(|id| {
            let t = format!("/sys/devices/system/cpu/cpu{id}/topology");
            Cpu {
                id,
                core_id: read_num(format!("{t}/core_id")).unwrap_or(id),
                package_id: read_num(format!("{t}/physical_package_id")).unwrap_or(0),
                node_id: node_of.get(&id).copied().unwrap_or(0),
            }
        })
        .collect()
}

fn hugepages(dir: &str) -> Vec<HugePagesInfo> {
    list_dir(dir)
        .into_iter()
        .filter_map(|n| {
            let kb: u64 = n
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(HugePagesInfo {
                page_size: kb,
                num_pages: read_num(format!("{dir}/{n}/nr_hugepages")).unwrap_or(0),
            })
        })
        .collect()
}

fn statvfs_info(dev: &str, mount: &str, fstype: &str) -> Option<FsInfo> {
    let st = rustix::fs::statvfs(mount).ok()?;
    Some(FsInfo {
        device: dev.to_string(),
        capacity: st.f_blocks * st.f_frsize,
        fs_type: if fstype == "tmpfs" { "tmpfs" } else { "vfs" }.to_string(),
        inodes: st.f_files,
        has_inodes: st.f_files > 0,
    })
}

/// Reads the host. Missing files give zero values, never an error: /spec
/// must answer on odd boards too.
pub fn collect() -> MachineInfo {
    let cpus = sysfs_cpus();
    let (num_physical_cores, num_sockets) = count_cores(&cpus);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_capacity = meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0);
    let cpu_frequency_khz = read_num("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .unwrap_or_else(|| {
            cpuinfo_max_khz(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
        });

    let mut node_memory = BTreeMap::new();
    for n in list_dir("/sys/devices/system/node") {
        if let Some(id) = n.strip_prefix("node").and_then(|i| i.parse::<usize>().ok()) {
            let mi = fs::read_to_string(format!("/sys/devices/system/node/{n}/meminfo"))
                .unwrap_or_default();
            // "Node 0 MemTotal:  123 kB"
            let total = mi.lines().find_map(|l| {
                let rest = l.split_once("MemTotal:")?.1;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            });
            node_memory.insert(id, total.map(|k| k * 1024).unwrap_or(0));
        }
    }
    if node_memory.is_empty() {
        node_memory.insert(0, memory_capacity);
    }

    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let filesystems = block_filesystems(&mountinfo)
        .iter()
        .filter_map(|(d, m, t)| statvfs_info(d, m, t))
        .collect();

    let mut disk_map = BTreeMap::new();
    for name in list_dir("/sys/block") {
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let dev = read_trim(format!("/sys/block/{name}/dev")).unwrap_or_default();
        let Some((maj, min)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse::<u64>(), min.parse::<u64>()) else {
            continue;
        };
        let sectors: u64 = read_num(format!("/sys/block/{name}/size")).unwrap_or(0);
        disk_map.insert(
            dev.clone(),
            DiskInfo {
                name: name.clone(),
                major,
                minor,
                size: sectors * 512,
                scheduler: read_trim(format!("/sys/block/{name}/queue/scheduler"))
                    .map(|s| selected_scheduler(&s))
                    .unwrap_or_else(|| "none".into()),
            },
        );
    }

    let network_devices = list_dir("/sys/class/net")
        .into_iter()
        .filter(|n| !is_virtual_nic(n))
        .map(|n| NetInfo {
            mac_address: read_trim(format!("/sys/class/net/{n}/address")).unwrap_or_default(),
            speed: read_num(format!("/sys/class/net/{n}/speed")).unwrap_or(0),
            mtu: read_num(format!("/sys/class/net/{n}/mtu")).unwrap_or(0),
            name: n,
        })
        .collect();

    MachineInfo {
        timestamp: jiff::Timestamp::now().to_string(),
        num_cores: cpus.len().max(1),
        num_physical_cores,
        num_sockets,
        cpu_frequency_khz,
        memory_capacity,
        swap_capacity: meminfo_bytes(&meminfo, "SwapTotal").unwrap_or(0),
        memory_by_type: BTreeMap::new(),
        hugepages: hugepages("/sys/kernel/mm/hugepages"),
        machine_id: read_trim("/etc/machine-id")
            .or_else(|| read_trim("/var/lib/dbus/machine-id"))
            .unwrap_or_default(),
        system_uuid: read_trim("/sys/class/dmi/id/product_uuid").unwrap_or_default(),
        boot_id: read_trim("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        filesystems,
        disk_map,
        network_devices,
        topology: build_topology(&cpus, &node_memory),
        cloud_provider: "Unknown".into(),
        instance_type: "Unknown".into(),
        instance_id: "None".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let m =
            "MemTotal:       24563512 kB\nMemFree:  1 kB\nSwapTotal:  0 kB\nHugePages_Total: 0\n";
        assert_eq!(meminfo_bytes(m, "MemTotal"), Some(24563512 * 1024));
        assert_eq!(meminfo_bytes(m, "SwapTotal"), Some(0));
        assert_eq!(meminfo_bytes(m, "HugePages_Total"), Some(0));
        assert_eq!(meminfo_bytes(m, "Mem"), None);
    }

    #[test]
    fn cpuinfo_frequency() {
        let c = "processor\t: 0\ncpu MHz\t\t: 2999.998\nprocessor\t: 1\ncpu MHz\t\t: 3100.5\n";
        assert_eq!(cpuinfo_max_khz(c), 3_100_500);
        assert_eq!(cpuinfo_max_khz("processor : 0\n"), 0); // ARM boards often have none
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5,7-8\n"), vec![0, 1, 2, 3, 5, 7, 8]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert!(parse_cpu_list("").is_empty());
    }

    #[test]
    fn topology_and_counts() {
        let cpus = [
            Cpu {
                id: 0,
                core_id: 0,
                package_id: 0,
                node_id: 0,
            },
            Cpu {
                id: 1,
                core_id: 1,
                package_id: 0,
                node_id: 0,
            },
            Cpu {
                id: 2,
                core_id: 0,
                package_id: 0,
                node_id: 0,
            },
            Cpu {
                id: 3,
                core_id: 0,
                package_id: 1,
                node_id: 1,
            },
        ];
        assert_eq!(count_cores(&cpus), (3, 2));
        let mem = BTreeMap::from([(0, 100), (1, 200)]);
        let t = build_topology(&cpus, &mem);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].memory, 100);
        assert_eq!(t[0].cores.len(), 2);
        assert_eq!(t[0].cores[0].thread_ids, vec![0, 2]);
        assert_eq!(t[1].cores[0].socket_id, 1);
    }

    #[test]
    fn filesystems_from_mountinfo() {
        let mi = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                  23 22 0:5 / /dev rw - devtmpfs udev rw\n\
                  24 22 254:0 /x /mnt/my\\040disk rw - ext4 /dev/vda rw\n\
                  25 22 8:1 / /mnt/my\\040disk rw - vfat /dev/sda1 rw\n";
        let fs = block_filesystems(mi);
        assert_eq!(
            fs,
            vec![
                ("/dev/vda".into(), "/".into(), "ext4".into()),
                ("/dev/sda1".into(), "/mnt/my disk".into(), "vfat".into()),
            ]
        );
    }

    #[test]
    fn scheduler_and_nics() {
        assert_eq!(selected_scheduler("mq-deadline kyber [bfq] none"), "bfq");
        assert_eq!(selected_scheduler("none"), "none");
        assert!(is_virtual_nic("veth1234"));
        assert!(is_virtual_nic("lo"));
        assert!(!is_virtual_nic("eth0"));
        assert!(!is_virtual_nic("wlan0"));
    }

    #[test]
    fn collect_reads_this_machine() {
        let m = collect();
        assert!(m.num_cores >= 1);
        assert!(m.memory_capacity > 0);
        assert!(!m.boot_id.is_empty());
        let j = serde_json::to_value(&m).unwrap();
        for k in [
            "num_cores",
            "cpu_frequency_khz",
            "memory_capacity",
            "machine_id",
            "system_uuid",
            "boot_id",
            "filesystems",
            "disk_map",
            "topology",
        ] {
            assert!(j.get(k).is_some(), "{k}");
        }
    }
}
