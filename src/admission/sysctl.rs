//! The kubelet's sysctl admission (upstream pkg/kubelet/sysctl: the
//! `patternAllowlist` built from `SafeSysctlAllowlist()` plus
//! `allowedUnsafeSysctls`). picolet has no `allowedUnsafeSysctls` setting,
//! so the allowlist is the safe set.

use crate::api::core::Pod;
use crate::runtime::spec::normalize_sysctl;

/// Upstream `ForbiddenReason`.
pub const REASON_SYSCTL_FORBIDDEN: &str = "SysctlForbidden";

/// Upstream's safe sysctls as of v1.29–v1.31. Upstream drops
/// `ip_local_reserved_ports` below kernel 3.16, `tcp_keepalive_*` below
/// 4.5 and `tcp_fin_timeout` below 4.6 from the list at start; picolet
/// keeps them all (on such a kernel the runtime then fails to set them).
pub const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Upstream `NamespacedBy` for the allowlisted names: "ipc" or "net".
fn namespace(name: &str) -> &'static str {
    if name == "kernel.sem"
        || name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name.starts_with("fs.mqueue.")
    {
        "ipc"
    } else {
        "net"
    }
}

/// Upstream `patternAllowlist.validateSysctl`.
fn validate(name: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
    let name = normalize_sysctl(name);
    if !SAFE_SYSCTLS.contains(&name.as_str()) {
        return Err(format!("{name:?} not allowlisted"));
    }
    let ns = namespace(&name);
    if (ns == "ipc" && host_ipc) || (ns == "net" && host_net) {
        return Err(format!("{name:?} not allowed with host {ns} enabled"));
    }
    Ok(())
}

/// Upstream `patternAllowlist.Admit`: the first pod sysctl not allowed
/// rejects the pod with `forbidden sysctl: …`.
pub fn check(pod: &Pod) -> Result<(), String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref());
    let host_net = spec.host_network.unwrap_or(false);
    let host_ipc = spec.host_ipc.unwrap_or(false);
    for s in sysctls.into_iter().flatten() {
        validate(&s.name, host_net, host_ipc).map_err(|e| format!("forbidden sysctl: {e}"))?;
    }
    Ok(())
}
