//! CNI results and errors as plugins print them: the 0.3.0+ form
//! (`interfaces`, `ips`, as in 0.4.0 and 1.0.0) and the 0.1/0.2 form
//! (`ip4`, `ip6`), and the error object `{code, msg, details}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address with its prefix length, e.g. `10.85.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or(format!("{s:?}: no prefix length"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: invalid address"))?;
        let prefix_len: u8 = p.parse().map_err(|_| format!("{s:?}: invalid prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(IpCidr { addr, prefix_len })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// What the runtime needs from a pod's CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetworkResult {
    /// Addresses of the pod's interface, IPv4 first (the pod IP is the first).
    pub ips: Vec<IpCidr>,
    /// Gateway of the first address, when the plugins give one.
    pub gateway: Option<IpAddr>,
    /// The interface inside the pod (normally `eth0`), when the result names it.
    pub interface: Option<String>,
}

impl PodNetworkResult {
    /// The pod IP (`status.podIP`).
    pub fn pod_ip(&self) -> Option<IpAddr> {
        self.ips.first().map(|c| c.addr)
    }
}

struct Ip {
    cidr: IpCidr,
    gateway: Option<IpAddr>,
    interface: Option<usize>,
}

struct Iface {
    name: String,
    sandbox: bool,
}

/// Extracts the pod's addresses from a final ADD result. Addresses on the
/// sandbox interface named `ifname` win; then any sandbox interface; then
/// all addresses (results that index no interface).
pub fn pod_result(v: &Value, ifname: &str) -> Result<PodNetworkResult, String> {
    let obj = v.as_object().ok_or("result is not a JSON object")?;
    let (ifaces, ips) = if obj.contains_key("ips") || obj.contains_key("interfaces") {
        current_form(obj)?
    } else {
        (Vec::new(), legacy_form(obj)?)
    };
    let on = |pred: &dyn Fn(&Iface) -> bool| -> Vec<&Ip> {
        ips.iter()
            .filter(|ip| ip.interface.and_then(|i| ifaces.get(i)).is_some_and(pred))
            .collect()
    };
    let mut chosen = on(&|i| i.sandbox && i.name == ifname);
    if chosen.is_empty() {
        chosen = on(&|i| i.sandbox);
    }
    if chosen.is_empty() {
        chosen = ips.iter().collect();
    }
    // Stable: IPv4 before IPv6, as the kubelet reports dual-stack pods.
    chosen.sort_by_key(|ip| ip.cidr.addr.is_ipv6());
    let first = chosen.first();
    Ok(PodNetworkResult {
        ips: chosen.iter().map(|ip| ip.cidr).collect(),
        gateway: first.and_then(|ip| ip.gateway),
        interface: first
            .and_then(|ip| ip.interface)
            .and_then(|i| ifaces.get(i))
            .map(|i| i.name.clone()),
    })
}

fn current_form(obj: &serde_json::Map<String, Value>) -> Result<(Vec<Iface>, Vec<Ip>), String> {
    let mut ifaces = Vec::new();
    for (n, i) in arr(obj, "interfaces")?.iter().enumerate() {
        let name = i
            .get("name")
            .and_then(Value::as_str)
            .ok_or(format!("interfaces[{n}]: no name"))?;
        let sandbox = i
            .get("sandbox")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        ifaces.push(Iface {
            name: name.to_string(),
            sandbox,
        });
    }
    let mut ips = Vec::new();
    for (n, ip) in arr(obj, "ips")?.iter().enumerate() {
        let cidr = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or(format!("ips[{n}]: no address"))?
            .parse::<IpCidr>()
            .map_err(|e| format!("ips[{n}].address: {e}"))?;
        ips.push(Ip {
            cidr,
            gateway: gateway(ip, "gateway", n)?,
            interface: ip
                .get("interface")
                .and_then(Value::as_u64)
                .map(|i| i as usize),
        });
    }
    Ok((ifaces, ips))
}

fn legacy_form(obj: &serde_json::Map<String, Value>) -> Result<Vec<Ip>, String> {
    let mut ips = Vec::new();
    for (n, key) in ["ip4", "ip6"].into_iter().enumerate() {
        let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let cidr = v
            .get("ip")
            .and_then(Value::as_str)
            .ok_or(format!("{key}: no ip"))?
            .parse::<IpCidr>()
            .map_err(|e| format!("{key}.ip: {e}"))?;
        ips.push(Ip {
            cidr,
            gateway: gateway(v, "gateway", n)?,
            interface: None,
        });
    }
    Ok(ips)
}

fn arr<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{key}: not a list")),
    }
}

fn gateway(v: &Value, key: &str, n: usize) -> Result<Option<IpAddr>, String> {
    match v.get(key).and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(g) => g
            .parse()
            .map(Some)
            .map_err(|_| format!("[{n}].{key}: invalid address {g:?}")),
    }
}

/// Describes a failed plugin run from its stdout (the CNI error object,
/// when there is one) and stderr.
pub fn failure_message(stdout: &[u8], stderr: &[u8]) -> (Option<u64>, String) {
    let mut code = None;
    let mut parts = Vec::new();
    match serde_json::from_slice::<Value>(stdout) {
        Ok(v) if v.get("code").is_some() || v.get("msg").is_some() => {
            code = v.get("code").and_then(Value::as_u64);
            let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
            let mut m = msg.to_string();
            if let Some(d) = v
                .get("details")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
            {
                m = if m.is_empty() {
                    d.to_string()
                } else {
                    format!("{m}: {d}")
                };
            }
            if let Some(c) = code {
                m = format!(
                    "{m} (code {c}{})",
                    code_name(c).map(|n| format!(", {n}")).unwrap_or_default()
                );
            }
            parts.push(m);
        }
        _ => {
            let out = clip(stdout);
            if !out.is_empty() {
                parts.push(format!("stdout: {out}"));
            }
        }
    }
    let err = clip(stderr);
    if !err.is_empty() {
        parts.push(format!("stderr: {err}"));
    }
    if parts.is_empty() {
        parts.push("no output".into());
    }
    (code, parts.join("; "))
}

/// The spec's well-known error codes.
fn code_name(c: u64) -> Option<&'static str> {
    Some(match c {
        1 => "incompatible CNI version",
        2 => "unsupported field in network configuration",
        3 => "container unknown or does not exist",
        4 => "invalid necessary environment variables",
        5 => "I/O failure",
        6 => "failed to decode content",
        7 => "invalid network config",
        11 => "try again later",
        _ => return None,
    })
}

/// Trimmed, length-capped text of a plugin's output for error messages.
fn clip(b: &[u8]) -> String {
    const MAX: usize = 2048;
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bridge_result_v1() {
        // As the bridge plugin prints it (1.0.0): bridge, host veth, eth0.
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "pltn0", "mac": "aa:bb:cc:00:00:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:00:00:02"},
                {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/run/picolet/netns/p"}
            ],
            "ips": [
                {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
                {"interface": 2, "address": "10.89.16.2/24", "gateway": "10.89.16.1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let p = pod_result(&r, "eth0").unwrap();
        assert_eq!(p.pod_ip(), Some("10.89.16.2".parse().unwrap()));
        assert_eq!(p.ips[0].to_string(), "10.89.16.2/24");
        assert_eq!(p.ips[1].to_string(), "fd00::5/64");
        assert_eq!(p.gateway, Some("10.89.16.1".parse().unwrap()));
        assert_eq!(p.interface.as_deref(), Some("eth0"));
    }

    #[test]
    fn v04_with_version_fields_and_no_interface_index() {
        let r = json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.1.0.7/16", "gateway": "10.1.0.1"}]
        });
        let p = pod_result(&r, "eth0").unwrap();
        assert_eq!(p.ips, vec!["10.1.0.7/16".parse().unwrap()]);
        assert_eq!(p.interface, None);
    }

    #[test]
    fn host_side_ips_are_not_pod_ips() {
        let r = json!({
            "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/ns"}],
            "ips": [
                {"interface": 0, "address": "10.0.0.1/24"},
                {"interface": 1, "address": "10.0.0.9/24"}
            ]
        });
        let p = pod_result(&r, "eth0").unwrap();
        assert_eq!(p.ips.len(), 1);
        assert_eq!(p.pod_ip(), Some("10.0.0.9".parse().unwrap()));
    }

    #[test]
    fn legacy_v02() {
        let r = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.2.0.3/24", "gateway": "10.2.0.1"}});
        let p = pod_result(&r, "eth0").unwrap();
        assert_eq!(p.pod_ip(), Some("10.2.0.3".parse().unwrap()));
        assert_eq!(p.gateway, Some("10.2.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_results() {
        assert!(pod_result(&json!([]), "eth0").is_err());
        assert!(pod_result(&json!({"ips": [{"address": "10.0.0.1"}]}), "eth0").is_err());
        assert!(pod_result(&json!({"ips": [{"address": "10.0.0.1/33"}]}), "eth0").is_err());
        assert!(pod_result(&json!({"ips": {}}), "eth0").is_err());
        assert!(pod_result(&json!({}), "eth0").unwrap().ips.is_empty());
    }

    #[test]
    fn error_messages() {
        let (c, m) = failure_message(
            br#"{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"no subnet"}"#,
            b"  trace line\n",
        );
        assert_eq!(c, Some(7));
        assert_eq!(
            m,
            "bad config: no subnet (code 7, invalid network config); stderr: trace line"
        );
        let (c, m) = failure_message(b"panic: boom", b"");
        assert_eq!((c, m.as_str()), (None, "stdout: panic: boom"));
        assert_eq!(failure_message(b"", b"").1, "no output");
        let long = vec![b'x'; 5000];
        assert!(failure_message(b"", &long).1.len() < 2100);
    }
}
