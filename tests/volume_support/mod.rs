//! Shared helpers for the `volume_*` integration tests: a per-test temp
//! root under /var/tmp/picolet-test/vol-<name> that is unmounted and
//! removed on drop (also when the test fails), pods from YAML, mountinfo
//! lookups.
#![allow(dead_code)]

use picolet::api::core::Pod;
use picolet::runtime::convert::Allocatable;
use picolet::util::mountinfo::{self, MountInfo};
use picolet::volume::{VolumeContext, VolumeManager};
use std::path::{Path, PathBuf};

/// One test's world.
pub struct Env {
    pub root: PathBuf,
}

impl Env {
    pub fn new(name: &str) -> Env {
        assert!(
            rustix::process::geteuid().is_root(),
            "test prerequisite missing: root (tmpfs mounts, chown); run the tests as root \
             (scripts/test.sh, after scripts/test-env.sh)"
        );
        let env = Env {
            root: PathBuf::from(format!("/var/tmp/picolet-test/vol-{name}")),
        };
        env.cleanup();
        std::fs::create_dir_all(&env.root).unwrap();
        env
    }

    /// The pods dir the manager works in.
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn manager(&self) -> VolumeManager {
        VolumeManager::new(self.pods_dir())
    }

    /// Unmounts everything under the root (deepest first) and removes it.
    fn cleanup(&self) {
        if let Ok(mounts) = mountinfo::read() {
            let mut mine: Vec<_> = mounts
                .iter()
                .filter(|m| m.mount_point.starts_with(&self.root))
                .map(|m| m.mount_point.clone())
                .collect();
            mine.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for p in mine {
                let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A node with 2 CPUs and 4 GiB allocatable.
pub fn ctx() -> VolumeContext {
    VolumeContext {
        allocatable: Allocatable {
            cpu_milli: 2000,
            memory: 4 << 30,
            ephemeral_storage: 20 << 30,
        },
    }
}

pub fn pod(yaml: &str) -> Pod {
    picolet::api::decode_text::<Pod>(yaml)
        .expect("test pod parses")
        .object
}

/// The mounts whose mount point is exactly `path`.
pub fn mounts_at(path: &Path) -> Vec<MountInfo> {
    mountinfo::read()
        .unwrap()
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect()
}

/// Mount points under `root`.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    mountinfo::read()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(root))
        .collect()
}

pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    picolet::rt::block_on(f)
}
