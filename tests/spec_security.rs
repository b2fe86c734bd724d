//! Capabilities, privileged, read-only rootfs, masked paths, no_new_privs
//! and oom_score_adj clamping, checked inside real containers.

mod spec_support;

use picolet::runtime::spec::DEFAULT_CAPABILITIES;
use serde_json::json;
use spec_support::{cap_mask, pod, Env, RunningPod, SandboxProcess};

fn status_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .trim()
        .to_string()
}

#[test]
fn capabilities_and_no_new_privs() {
    let env = Env::new(3);
    let status = "cat /proc/self/status";
    let p = pod(json!({"spec": {"containers": [
        {"name": "default", "image": "busybox", "command": ["sh", "-c", status]},
        {"name": "tuned", "image": "busybox", "command": ["sh", "-c", status],
            "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMIN", "CAP_SYS_PTRACE"], "drop": ["chown", "CAP_KILL"]}}},
        {"name": "minimal", "image": "busybox", "command": ["sh", "-c", status],
            "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}}
    ]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let default: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();

    let (code, out, err) = rp.run("default", "c-default");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        status_field(&out, "CapEff:"),
        format!("{:016x}", cap_mask(&default))
    );
    assert_eq!(
        status_field(&out, "CapBnd:"),
        format!("{:016x}", cap_mask(&default))
    );
    assert_eq!(status_field(&out, "NoNewPrivs:"), "0");

    let (code, out, err) = rp.run("tuned", "c-tuned");
    assert_eq!(code, 0, "{err}");
    let mut want: Vec<String> = default
        .iter()
        .filter(|c| *c != "CAP_CHOWN" && *c != "CAP_KILL")
        .cloned()
        .collect();
    want.push("CAP_NET_ADMIN".into());
    want.push("CAP_SYS_PTRACE".into());
    assert_eq!(
        status_field(&out, "CapEff:"),
        format!("{:016x}", cap_mask(&want))
    );
    assert_eq!(status_field(&out, "NoNewPrivs:"), "1");

    let (code, out, _) = rp.run("minimal", "c-minimal");
    assert_eq!(code, 0);
    assert_eq!(
        status_field(&out, "CapEff:"),
        format!("{:016x}", cap_mask(&["CAP_NET_BIND_SERVICE".to_string()]))
    );
    rp.stop();
}

#[test]
fn privileged_gets_all_caps_devices_and_no_masks() {
    let env = Env::new(4);
    let script = "grep CapEff /proc/self/status; grep -c -e /proc/keys -e /sys/firmware /proc/self/mountinfo; \
                  grep ' /sys ' /proc/self/mountinfo | grep -c ' rw,'; ls /dev/kmsg";
    let p = pod(json!({"spec": {"containers": [
        {"name": "priv", "image": "busybox", "command": ["sh", "-c", script],
            "securityContext": {"privileged": true}},
        {"name": "plain", "image": "busybox", "command": ["sh", "-c", script]}
    ]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let (code, out, err) = rp.run("priv", "c-priv");
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().nth(1).unwrap(),
        format!("{:016x}", cap_mask(&env.host.capabilities))
    );
    assert_eq!(lines[1], "0", "nothing masked");
    assert_eq!(lines[2], "1", "sysfs writable");
    assert_eq!(lines[3], "/dev/kmsg", "host devices present");

    let (code, out, _) = rp.run("plain", "c-plain");
    assert_ne!(code, 0, "no /dev/kmsg without privileges: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "2", "/proc/keys and /sys/firmware masked: {out}");
    assert_eq!(lines[2], "0", "sysfs read-only");
    rp.stop();
}

#[test]
fn read_only_rootfs_and_masked_paths() {
    let env = Env::new(5);
    let p = pod(json!({"spec": {"containers": [
        {"name": "ro", "image": "busybox", "command": ["sh", "-c",
            "touch /x 2>&1; touch /tmp/y 2>&1; echo ok > /dev/termination-log && echo term-ok; \
             wc -c < /proc/keys; ls -A /sys/firmware | wc -l; ( echo x > /proc/sys/kernel/domainname ) 2>&1; \
             cat /proc/self/oom_score_adj"],
            "securityContext": {"readOnlyRootFilesystem": true}},
        {"name": "unmasked", "image": "busybox", "command": ["sh", "-c",
            "grep -c /proc/keys /proc/self/mountinfo"],
            "securityContext": {"procMount": "Unmasked"}}
    ]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let (_, out, err) = rp.run("ro", "c-ro");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("Read-only file system"), "{out}{err}");
    assert!(lines[1].contains("Read-only file system"), "{out}");
    assert_eq!(lines[2], "term-ok", "the termination log stays writable");
    assert_eq!(lines[3], "0", "/proc/keys is /dev/null");
    assert_eq!(lines[4], "0", "/sys/firmware is empty");
    assert!(lines[5].contains("Read-only file system"), "{out}");
    // BestEffort 1000
    assert_eq!(lines[6], "1000");
    let term = rp.ctx.pod_dir.join("containers/ro/c-ro");
    assert_eq!(std::fs::read_to_string(term).unwrap(), "ok\n");

    let (code, out, _) = rp.run("unmasked", "c-unmasked");
    assert_eq!(
        (code, out.trim()),
        (1, "0"),
        "procMount Unmasked masks nothing"
    );
    rp.stop();
}

#[test]
fn guaranteed_oom_score_adj_is_clamped_where_refused() {
    let env = Env::new(6);
    let p = pod(json!({"spec": {"containers": [
        {"name": "g", "image": "busybox", "command": ["cat", "/proc/self/oom_score_adj"],
            "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let (code, out, err) = rp.run("g", "c-g");
    assert_eq!(code, 0, "the container starts: {err}");
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = if env.host.sys_resource {
        -997
    } else {
        own.max(-997)
    };
    assert_eq!(out.trim(), want.to_string());
    rp.stop();
}
