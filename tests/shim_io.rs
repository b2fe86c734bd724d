//! Events, exec and container logs through picolet's shim layer, including
//! a picolet-side restart (every client and reader dropped and reopened).
//! Root, real shim/runc.

mod shim_support;

use picolet::rt;
use picolet::runtime::events::TaskEvent;
use picolet::runtime::exec::{exec_sync, ExecError};
use picolet::runtime::logs::{ContainerLog, LogPolicy, MAX_LINE};
use picolet::runtime::shim::{CreateTask, Shims, TaskStatus};
use picolet::runtime::RuntimeEvent;
use shim_support::*;
use std::time::Duration;

const EV_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn events_create_start_oom_exit_delete() {
    rt::block_on(async {
        let env = TestEnv::new(4);
        let b = env.bundle(
            "hog",
            "busybox",
            &["tail", "/dev/zero"],
            None,
            Some(16 << 20),
        );
        let _drain = b.drain_log().unwrap();
        let shims = Shims::new(env.cfg.clone());
        let shim = shims.start(&b).await.unwrap();
        let req = CreateTask {
            id: b.id.clone(),
            bundle: b.dir.clone(),
            ..Default::default()
        };
        let pid = shim.create(&req).await.unwrap();
        let rx = env.events();
        let ev = next_event(rx, &b.id, "/tasks/create", EV_TIMEOUT)
            .await
            .expect("create event");
        assert_eq!(ev.namespace, env.ns);
        assert!(
            matches!(ev.event, TaskEvent::Create { pid: p, .. } if p == pid),
            "{ev:?}"
        );
        shim.start(&b.id, None).await.unwrap();
        let ev = next_event(rx, &b.id, "/tasks/start", EV_TIMEOUT)
            .await
            .expect("start event");
        assert_eq!(
            ev.event.to_runtime_event(),
            Some(RuntimeEvent::ContainerStarted { id: b.id.clone() })
        );

        let exit = shim.wait(&b.id, None).await.unwrap();
        assert_eq!(exit.exit_status, 137);
        // The OOM event comes before the exit's.
        let ev = next_event(rx, &b.id, "/tasks/oom", EV_TIMEOUT)
            .await
            .expect("oom event");
        assert_eq!(
            ev.event.to_runtime_event(),
            Some(RuntimeEvent::ContainerOom { id: b.id.clone() })
        );
        let ev = next_event(rx, &b.id, "/tasks/exit", EV_TIMEOUT)
            .await
            .expect("exit event");
        assert_eq!(
            ev.event.to_runtime_event(),
            Some(RuntimeEvent::ContainerExited {
                id: b.id.clone(),
                exit_code: 137,
                finished_at: exit.exited_at
            })
        );
        shim.delete(&b.id, None).await.unwrap();
        let ev = next_event(rx, &b.id, "/tasks/delete", EV_TIMEOUT)
            .await
            .expect("delete event");
        assert_eq!(
            ev.event.to_runtime_event(),
            Some(RuntimeEvent::ContainerDeleted { id: b.id.clone() })
        );
        shims.shutdown(&shim, &b.id).await.unwrap();
        assert!(eventually(Duration::from_secs(5), || env.shim_pids().is_empty()).await);
    });
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn exec_output_exit_codes_timeout_and_missing_binary() {
    rt::block_on(async {
        let env = TestEnv::new(5);
        let b = env.bundle("c", "busybox", &["sleep", "1000"], None, None);
        let _drain = b.drain_log().unwrap();
        let shims = Shims::new(env.cfg.clone());
        let shim = shims.start(&b).await.unwrap();
        let req = CreateTask {
            id: b.id.clone(),
            bundle: b.dir.clone(),
            ..Default::default()
        };
        let init = shim.create(&req).await.unwrap();
        shim.start(&b.id, None).await.unwrap();
        let t = Duration::from_secs(10);

        let r = exec_sync(
            &shim,
            &b,
            &args(&["sh", "-c", "echo hi; echo oops >&2; exit 3"]),
            t,
        )
        .await
        .unwrap();
        assert_eq!(
            (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
            (3, &b"hi\n"[..], &b"oops\n"[..])
        );
        let r = exec_sync(&shim, &b, &args(&["true"]), t).await.unwrap();
        assert_eq!(r.exit_code, 0);
        // Larger output than a pipe holds.
        let r = exec_sync(&shim, &b, &args(&["sh", "-c", "seq 1 100000"]), t)
            .await
            .unwrap();
        assert_eq!(r.stdout.iter().filter(|&&c| c == b'\n').count(), 100000);

        let t0 = std::time::Instant::now();
        let e = exec_sync(
            &shim,
            &b,
            &args(&["sleep", "30"]),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ExecError::Timeout(_)), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));

        let e = exec_sync(&shim, &b, &args(&["/no/such/binary"]), t)
            .await
            .unwrap_err();
        let ExecError::Start(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("no such file or directory"), "{msg}");

        // Every exec was deleted and killed: only the init process is left,
        // and no FIFO lingers in the bundle.
        assert_eq!(shim.pids(&b.id).await.unwrap(), vec![init]);
        let leftovers: Vec<_> = std::fs::read_dir(&b.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("exec-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        shim.kill(&b.id, None, 9, true).await.unwrap();
        shim.wait(&b.id, None).await.unwrap();
        shim.delete(&b.id, None).await.unwrap();
        shims.shutdown(&shim, &b.id).await.unwrap();
    });
}

#[test]
fn logs_and_shim_survive_a_picolet_side_restart_without_losing_lines() {
    rt::block_on(async {
        let env = TestEnv::new(6);
        const N: usize = 400;
        let script = format!("i=0; while [ $i -lt {N} ]; do echo line$i; echo err$i >&2; i=$((i+1)); usleep 3000; done");
        let b = env.bundle("c", "busybox", &["sh", "-c", &script], None, None);
        let log = env.root.join("logs/c/0.log");
        let policy = LogPolicy {
            max_size: 10 << 20,
            max_files: 5,
            max_line: MAX_LINE,
        };
        let id = b.id.clone();
        {
            let _drain = b.drain_log().unwrap();
            let shims = Shims::new(env.cfg.clone());
            let shim = shims.start(&b).await.unwrap();
            let logs =
                ContainerLog::open(Some(&b.stdout_fifo()), Some(&b.stderr_fifo()), &log, policy)
                    .unwrap();
            let req = CreateTask {
                id: id.clone(),
                bundle: b.dir.clone(),
                stdout: b.stdout_fifo().to_string_lossy().into_owned(),
                stderr: b.stderr_fifo().to_string_lossy().into_owned(),
                ..Default::default()
            };
            shim.create(&req).await.unwrap();
            let _copy = logs.start();
            shim.start(&id, None).await.unwrap();
            async_io::Timer::after(Duration::from_millis(300)).await;
            // Everything of "picolet" goes away here: clients, FIFO readers.
        }
        async_io::Timer::after(Duration::from_millis(400)).await;

        let _drain = b.drain_log().unwrap();
        let shims = Shims::new(env.cfg.clone());
        let shim = shims.reconnect(&b).unwrap().expect("address file");
        assert_eq!(
            shim.state(&id, None).await.unwrap().status,
            TaskStatus::Running
        );
        let copy = ContainerLog::open(Some(&b.stdout_fifo()), Some(&b.stderr_fifo()), &log, policy)
            .unwrap()
            .start();
        assert_eq!(shim.wait(&id, None).await.unwrap().exit_status, 0);
        shim.delete(&id, None).await.unwrap();
        copy.wait().await;

        let text = std::fs::read_to_string(&log).unwrap();
        for (stream, prefix) in [("stdout", "line"), ("stderr", "err")] {
            let got: Vec<String> = text
                .lines()
                .filter_map(|l| l.split_once(' ').map(|x| x.1))
                .filter_map(|l| l.strip_prefix(&format!("{stream} F ")))
                .map(str::to_string)
                .collect();
            let want: Vec<String> = (0..N).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(got, want, "{stream} lines lost, duplicated or reordered");
        }
        assert!(
            text.lines().all(|l| !l.contains(" P ")),
            "no partial entries expected"
        );
        // The reader really was gone while the container kept writing: the
        // lines written meanwhile were logged late, in one burst.
        let stamps: Vec<i128> = text
            .lines()
            .map(|l| {
                l.split(' ')
                    .next()
                    .unwrap()
                    .parse::<jiff::Timestamp>()
                    .unwrap()
                    .as_nanosecond()
            })
            .collect();
        let gap = stamps.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(gap >= 300_000_000, "largest gap between entries {gap} ns");
        shims.shutdown(&shim, &id).await.unwrap();
        assert!(eventually(Duration::from_secs(5), || env.shim_pids().is_empty()).await);
    });
}
