//! CrashLoopBackOff with scaled-down timings (`picolet.backOffInitial` 1s,
//! `crashLoopBackOff.maxContainerRestartPeriod` 4s): the delay doubles to
//! the maximum, the waiting reason and message are upstream's, and a
//! picolet restart (kill -9) neither restarts early nor resets the delay.

mod sync_support;

use picolet::api::core::Pod;
use std::time::{Duration, Instant};
use sync_support::*;

fn waiting_message(p: &Pod) -> Option<String> {
    container(p, "main")
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
}

fn ts(t: &picolet::api::meta::Time) -> f64 {
    t.0.as_millisecond() as f64 / 1000.0
}

/// (startedAt of the current run, finishedAt of the last one) in seconds.
fn gap(p: &Pod) -> Option<f64> {
    let c = container(p, "main");
    let started = c.state.as_ref()?.running.as_ref()?.started_at.as_ref()?;
    let finished = c
        .last_state
        .as_ref()?
        .terminated
        .as_ref()?
        .finished_at
        .as_ref()?;
    Some(ts(started) - ts(finished))
}

#[test]
fn crash_loop_back_off_doubles_to_the_maximum() {
    let mut node = Node::new(2, Opts::default());
    node.start();
    node.put_manifest("crash.yaml", &busybox_pod("crash", "Always", "exit 1"));
    let uid_msg = |p: &Pod| {
        format!(
            "pod={}_default({})",
            p.metadata.name.clone().unwrap(),
            p.metadata.uid.clone().unwrap()
        )
    };
    // Watch the restarts: the gap between an exit and the next start, and
    // the back-off messages.
    let mut gaps: Vec<(i32, f64)> = Vec::new();
    let mut messages: Vec<String> = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    let mut last_count = -1;
    while Instant::now() < end {
        if let Some(p) = node.pod("crash").filter(generated) {
            let c = container(&p, "main");
            if c.restart_count > 0 {
                // Pending only before the first start.
                assert_eq!(phase(&p), "Running");
            }
            if let Some(m) = waiting_message(&p) {
                assert_eq!(waiting_reason(c), Some("CrashLoopBackOff"));
                assert!(
                    m.ends_with(&format!("restarting failed container=main {}", uid_msg(&p))),
                    "{m}"
                );
                assert_eq!(last_terminated(c), Some((1, "Error".into())));
                if !messages.contains(&m) {
                    messages.push(m);
                }
            }
            if c.restart_count != last_count {
                last_count = c.restart_count;
                if let Some(g) = gap(&p) {
                    gaps.push((c.restart_count, g));
                }
            }
            if c.restart_count >= 6 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        last_count >= 6,
        "too few restarts: {last_count}\n{}",
        node.log_tail(40)
    );
    let short: Vec<String> = messages
        .iter()
        .map(|m| m.split(" restarting").next().unwrap().to_string())
        .collect();
    for want in ["back-off 1s", "back-off 2s", "back-off 4s"] {
        assert!(
            short.contains(&want.to_string()),
            "{want} not seen: {short:?}"
        );
    }
    assert!(
        !short.iter().any(|m| m == "back-off 8s"),
        "the maximum is 4s: {short:?}"
    );
    // Each observed restart waited at least the delay in force (the
    // container runs for a few ms; starts are timed to the second).
    for (count, g) in &gaps {
        let want = match count {
            1 => 0.0,
            2 => 1.0,
            3 => 2.0,
            _ => 4.0,
        };
        assert!(
            *g >= want - 1.0 && *g <= want + 3.0,
            "restart {count}: {g:.1}s after the exit, want about {want}s ({gaps:?})"
        );
    }
}

#[test]
fn back_off_survives_a_picolet_restart() {
    let mut node = Node::new(
        3,
        Opts {
            back_off_initial: "2s".into(),
            max_restart_period: "8s".into(),
            ..Default::default()
        },
    );
    node.start();
    node.put_manifest("crash.yaml", &busybox_pod("crash", "Always", "exit 1"));
    // Let the delay grow to 8 s (restart 4 waits 8 s).
    let p = node.wait_pod("crash", Duration::from_secs(60), |p| {
        waiting_message(p).is_some_and(|m| m.starts_with("back-off 8s"))
    });
    let count = container(&p, "main").restart_count;
    let finished = container(&p, "main")
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.clone())
        .expect("a finished instance");
    node.kill9();
    node.start();
    // Not restarted at once: still backing off with the same delay.
    let p = node.wait_pod("crash", Duration::from_secs(20), |p| p.status.is_some());
    let c = container(&p, "main");
    assert!(
        c.restart_count >= count,
        "restart count went back: {} < {count}",
        c.restart_count
    );
    // The next start comes 8 s after the exit, not right after the restart.
    let p = node.wait_pod("crash", Duration::from_secs(30), |p| {
        container(p, "main").restart_count > count
    });
    let c = container(&p, "main");
    assert_eq!(c.restart_count, count + 1, "one restart, counted on");
    // The instance counted last: running, or already exited (terminated,
    // or waiting again with it as the last state).
    let started = c
        .state
        .as_ref()
        .and_then(|s| {
            s.running
                .as_ref()
                .and_then(|r| r.started_at.clone())
                .or_else(|| s.terminated.as_ref().and_then(|t| t.started_at.clone()))
        })
        .or_else(|| {
            c.last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.started_at.clone())
        })
        .expect("the new instance's start time");
    let waited = ts(&started) - ts(&finished);
    assert!(
        waited >= 7.0,
        "restarted {waited:.1}s after the exit; the back-off is 8s"
    );
    // And the delay goes on at the maximum.
    node.wait_pod("crash", Duration::from_secs(30), |p| {
        waiting_message(p).is_some_and(|m| m.starts_with("back-off 8s"))
            && container(p, "main").restart_count > count
    });
}
