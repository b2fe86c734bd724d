//! The OpenWrt init script (`cross/openwrt/picolet/files/picolet.init`)
//! run by `sh` against stand-ins of rc.common's UCI and procd helpers: the
//! settings of /etc/config/picolet become the flags of `picolet run`.

use std::process::Command;

const INIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/cross/openwrt/picolet/files/picolet.init"
);

/// The command procd would run, for UCI settings `uci` (option, value).
fn command_for(uci: &[(&str, &str)]) -> String {
    // config_get VAR SECTION OPTION [DEFAULT]: the value from UCI_<option>.
    let harness = r#"
config_load() { :; }
config_get() { eval "v=\${UCI_$3-}"; [ -n "$v" ] || v="$4"; eval "$1=\$v"; }
config_get_bool() { config_get "$@"; }
procd_open_instance() { CMD=; }
procd_set_param() { [ "$1" = command ] || return 0; shift; CMD="$*"; }
procd_append_param() { [ "$1" = command ] || return 0; shift; CMD="$CMD $*"; }
procd_close_instance() { echo "$CMD"; }
mkdir() { :; }
. "$INIT"
start_service
"#;
    let mut c = Command::new("sh");
    c.arg("-c").arg(harness).env("INIT", INIT);
    for (k, v) in uci {
        c.env(format!("UCI_{k}"), v);
    }
    let out = c.output().expect("sh");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn defaults_run_standalone() {
    let cmd = command_for(&[]);
    assert!(
        cmd.ends_with(
            "/usr/bin/picolet run --config /etc/picolet/config.yaml --root-dir /opt/picolet --v 2"
        ),
        "{cmd}"
    );
    assert!(!cmd.contains("--kubeconfig"), "{cmd}");
}

#[test]
fn cluster_settings_become_flags() {
    let cmd = command_for(&[
        ("kubeconfig", "/etc/picolet/kubeconfig"),
        ("bootstrap_kubeconfig", "/etc/picolet/bootstrap-kubeconfig"),
        ("cert_dir", "/srv/pki"),
        ("node_ip", "192.168.1.10"),
        ("hostname_override", "gw-1"),
        ("node_labels", "site=north,role=gateway"),
        ("root_dir", "/mnt/usb/picolet"),
    ]);
    for want in [
        "--root-dir /mnt/usb/picolet",
        "--kubeconfig /etc/picolet/kubeconfig",
        "--bootstrap-kubeconfig /etc/picolet/bootstrap-kubeconfig",
        "--cert-dir /srv/pki",
        "--node-ip 192.168.1.10",
        "--hostname-override gw-1",
        "--node-labels site=north,role=gateway",
    ] {
        assert!(cmd.contains(want), "{want} not in {cmd}");
    }
}

#[test]
fn disabled_service_starts_nothing() {
    assert_eq!(command_for(&[("enabled", "0")]), "");
}
