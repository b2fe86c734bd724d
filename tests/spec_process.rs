//! Process args, env, cwd and user from generated specs, run with runc.

mod spec_support;

use serde_json::json;
use spec_support::{pod, Env, RunningPod, SandboxProcess};

#[test]
fn args_env_cwd_and_user() {
    let env = Env::new(1);
    let p = pod(json!({"spec": {
        "securityContext": {"runAsUser": 65534, "supplementalGroups": [1234]},
        "containers": [{"name": "app", "image": "busybox",
            "command": ["sh", "-c"],
            "args": ["echo ARGS $0 $1; id; env; pwd", "$(FOO)", "$$(FOO)"],
            "workingDir": "/tmp",
            "env": [
                {"name": "FOO", "value": "bar"},
                {"name": "BAR", "value": "$(FOO)-x"},
                {"name": "LATER", "value": "$(ZED)"},
                {"name": "ZED", "value": "z"},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
            ]},
            {"name": "img", "image": "busybox", "args": ["sh", "-c", "pwd; id -u"]}]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let (code, out, err) = rp.run("app", "c-app");
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ARGS bar $(FOO)", "{out}");
    assert!(
        lines[1].starts_with("uid=65534(nobody) gid=65534(nogroup) groups="),
        "{out}"
    );
    let groups = lines[1].split("groups=").nth(1).unwrap();
    assert!(
        groups.contains("1234") && groups.contains("65534(nogroup)"),
        "{out}"
    );
    for want in [
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME=web",
        "FOO=bar",
        "BAR=bar-x",
        "LATER=$(ZED)",
        "ZED=z",
        "MY_NAME=web",
        "MY_IP=10.89.99.5",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in {out}");
    }
    assert_eq!(*lines.last().unwrap(), "/tmp");

    // No command: the image's Entrypoint (none) + args, which replace its
    // Cmd; the image's WorkingDir.
    let (code, out, err) = rp.run("img", "c-img");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "/\n65534\n");
    rp.stop();
}

#[test]
fn user_by_name_and_run_as_non_root() {
    let env = Env::new(2);
    let p = pod(json!({"spec": {"containers": [
        {"name": "root", "image": "busybox", "command": ["id"]},
        {"name": "group", "image": "busybox", "command": ["id"],
            "securityContext": {"runAsUser": 0, "runAsGroup": 65534}},
        {"name": "nonroot", "image": "busybox", "command": ["id"],
            "securityContext": {"runAsNonRoot": true}}
    ]}}));
    let rp = RunningPod::start(&env, p, SandboxProcess::Busybox);
    let (code, out, _) = rp.run("root", "c-root");
    assert_eq!(
        (code, out.trim()),
        (0, "uid=0(root) gid=0(root) groups=0(root)")
    );
    let (code, out, _) = rp.run("group", "c-group");
    assert_eq!(code, 0);
    assert!(out.starts_with("uid=0(root) gid=65534(nogroup)"), "{out}");
    let (_, s) = rp.container("nonroot", "c-nonroot", &Default::default());
    match s {
        Err(picolet::runtime::spec::SpecError::Config(m)) => assert_eq!(
            m,
            "container has runAsNonRoot and image will run as root (pod: \"web_ns1(0b2c-test-uid)\", container: nonroot)"
        ),
        other => panic!("want a config error, got {other:?}"),
    }
    rp.stop();
}
