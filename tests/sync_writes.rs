//! Flash-friendly writes: with pods idle, `picolet run` itself writes
//! (next to) nothing to disk. Measured as the kernel counts it for the
//! picolet process (`write_bytes` of `/proc/<pid>/io`: pages it dirtied),
//! with picolet's log going through a pipe as under journald, and pods
//! that print nothing (container logs aside). The sync period is cut to
//! 2 s, so 40 s here hold as many pod syncs as 10 minutes of 5 pods do
//! at the default 60 s: a file rewritten per sync shows at once.
//! (`scripts/bench/writes.sh` measures the real thing: 30 pods, default
//! periods, 10 minutes; budget 1 MiB/hour.)

mod sync_support;

use std::time::Duration;
use sync_support::*;

const PODS: usize = 5;
const WINDOW: Duration = Duration::from_secs(40);
const SYNC_PERIOD_S: u64 = 2;

/// The budget over the window: 1 MiB/hour at 30 pods is ~580 bytes per
/// pod sync at the default 60 s period; the window holds PODS x 20 syncs.
/// One 4 KiB page per sync of any pod would be 7 times over.
fn budget() -> u64 {
    let per_pod_sync = (1024 * 1024) / (30 * 60);
    let syncs = PODS as u64 * WINDOW.as_secs() / SYNC_PERIOD_S;
    per_pod_sync * syncs
}

fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/<pid>/io");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes in /proc/<pid>/io")
}

#[test]
fn idle_pods_cost_next_to_no_disk_writes() {
    let mut node = Node::new(
        38,
        Opts {
            extra: format!("syncFrequency: {SYNC_PERIOD_S}s\n"),
            ..Default::default()
        },
    );
    node.log_through_pipe = true;
    node.start();
    let names: Vec<String> = (0..PODS).map(|i| format!("idle-{i}")).collect();
    for n in &names {
        node.put_manifest(
            &format!("{n}.yaml"),
            &busybox_pod(n, "Always", "exec sleep 3600"),
        );
    }
    for n in &names {
        node.wait_pod(n, Duration::from_secs(90), |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs.iter().all(running))
        });
    }
    // Let start-up writes (checkpoints, bundles, first syncs) pass.
    std::thread::sleep(Duration::from_secs(15));
    let pid = node.pid().expect("picolet runs");
    let w0 = write_bytes(pid);
    std::thread::sleep(WINDOW);
    let w1 = write_bytes(pid);
    let written = w1 - w0;
    eprintln!(
        "picolet wrote {written} bytes in {WINDOW:?} with {PODS} idle pods (budget {})",
        budget()
    );
    for n in &names {
        let p = node.pod(n).expect("pod listed");
        let c = container(&p, "main");
        assert!(running(c) && c.restart_count == 0, "{n} ran on: {c:?}");
    }
    assert!(
        written <= budget(),
        "picolet wrote {written} bytes in {WINDOW:?} with {PODS} idle pods, over {} (see the log for what syncs did)\n{}",
        budget(),
        node.log_tail(30)
    );
}
