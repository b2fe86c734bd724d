//! Pod network namespaces: bind-mounted, idempotent, `lo` up, removable.
//! Root. Uses `/run/picolet-test/net-6/` only (no bridge, no CNI).

mod network_support;

use network_support::{require_prereqs, stdout_of};
use picolet::network::netns;
use picolet::rt::block_on;
use std::path::{Path, PathBuf};

/// The test's run dir; its netns mounts and the dir go on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.0.join("netns")) {
            for e in rd.flatten() {
                let _ = netns::remove(&e.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mounts_at(p: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.to_string_lossy();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*want))
        .count()
}

fn own_netns() -> PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

#[test]
fn create_is_idempotent_brings_lo_up_and_remove_cleans() {
    require_prereqs();
    let run = Dir(PathBuf::from("/run/picolet-test/net-6"));
    let _ = std::fs::remove_dir_all(&run.0);
    let dir = run.0.join("netns");
    let before = own_netns();
    block_on(async {
        let p = netns::create(&dir, "net6-a").await.expect("create");
        assert_eq!(p, dir.join("net6-a"));
        assert!(netns::is_mounted(&p).unwrap());
        assert_eq!(mounts_at(&p), 1);
        // Again: the existing mount is reused, not stacked.
        let p2 = netns::create(&dir, "net6-a").await.expect("create again");
        assert_eq!(p2, p);
        assert_eq!(mounts_at(&p), 1);
        // The calling thread never changed namespace.
        assert_eq!(own_netns(), before);

        // A different namespace from the host's, with lo up and nothing else.
        let ns_arg = format!("--net={}", p.display());
        let links = stdout_of("nsenter", &[&ns_arg, "ip", "-o", "link"]);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:") && links.contains(",UP"), "{links}");
        let inode = netns::run_in(&p, || {
            std::fs::read_link("/proc/thread-self/ns/net").map(|l| l.to_string_lossy().into_owned())
        })
        .await
        .expect("run_in")
        .expect("readlink inside");
        assert_ne!(PathBuf::from(&inode), before);
        let stat_ino = std::fs::metadata(&p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        assert_eq!(inode, format!("net:[{}]", stat_ino.unwrap()));

        // A second pod gets its own namespace.
        let q = netns::create(&dir, "net6-b").await.expect("create b");
        let ino = |x: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(x).unwrap());
        assert_ne!(ino(&p), ino(&q));

        assert_eq!(netns::list(&dir).unwrap(), ["net6-a", "net6-b"]);

        // A file left unmounted (crash between touch and mount) is reused.
        netns::remove(&q).unwrap();
        std::fs::write(&q, b"").unwrap();
        assert!(!netns::is_mounted(&q).unwrap());
        netns::create(&dir, "net6-b")
            .await
            .expect("create over stale file");
        assert!(netns::is_mounted(&q).unwrap());

        for x in [&p, &q] {
            netns::remove(x).expect("remove");
            assert!(!netns::is_mounted(x).unwrap());
            assert!(!x.exists());
            assert_eq!(mounts_at(x), 0);
            netns::remove(x).expect("remove twice");
        }
        assert!(netns::list(&dir).unwrap().is_empty());
        assert!(netns::create(&dir, "../evil").await.is_err());
        assert!(
            netns::run_in(&p, || ()).await.is_err(),
            "run_in on a removed netns"
        );
    });
}
