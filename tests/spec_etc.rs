//! The generated /etc/hosts, /etc/resolv.conf and /etc/hostname as a
//! container sees them.

mod spec_support;

use serde_json::json;
use spec_support::{pod, Env, RunningPod, SandboxProcess};

#[test]
fn hosts_resolv_and_hostname() {
    let env = Env::new(7);
    let p = pod(json!({"spec": {
        "hostname": "box", "subdomain": "sub",
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["foo.local", "bar.local"]}],
        "dnsConfig": {"options": [{"name": "edns0"}], "searches": ["extra.example"]},
        "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c",
            "cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; cat /etc/hostname; hostname"]}]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let (code, out, err) = rp.run("c", "c-etc");
    assert_eq!(code, 0, "{err}");
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(
        parts[0],
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
10.89.99.5\tbox.sub.ns1.svc.cluster.local\tbox\n\n# Entries added by HostAliases.\n10.0.0.1\tfoo.local\tbar.local\n"
    );
    assert_eq!(
        parts[1],
        "search ns1.svc.cluster.local svc.cluster.local cluster.local corp.example extra.example\n\
nameserver 10.96.0.10\noptions edns0 ndots:5\n"
    );
    assert_eq!(parts[2], "box\nbox\n");
    rp.stop();
}

#[test]
fn host_network_pod_files() {
    let env = Env::new(8);
    let p = pod(json!({"spec": {"hostNetwork": true, "hostIPC": true,
        "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c",
            "head -n1 /etc/hosts; cat /etc/hostname; hostname; grep -c ' /dev/shm ' /proc/self/mountinfo"]}]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let (code, out, err) = rp.run("c", "c-hn");
    assert_eq!(code, 0, "{err}");
    let host = &env.host.hostname;
    assert_eq!(
        out,
        format!("# Kubernetes-managed hosts file (host network).\n{host}\n{host}\n1\n")
    );
    rp.stop();
}
