//! hostPath type checks against real files, directories, a listening unix
//! socket, /dev/null and a block device node. Run as root.

mod volume_support;

use picolet::volume::VolumeError;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use volume_support::*;

/// Sets up a pod with one hostPath volume.
fn check(env: &Env, path: &Path, ty: &str) -> Result<(), VolumeError> {
    let p = pod(&format!(
        r#"
metadata: {{name: hp, uid: uid-hp}}
spec:
  containers: [{{name: app, image: busybox}}]
  volumes:
  - name: host
    hostPath: {{path: "{}", type: "{ty}"}}
"#,
        path.display()
    ));
    let vols = block_on(env.manager().setup_pod(&p, &ctx()))?;
    assert_eq!(vols["host"].host_path, path, "the host path as given");
    assert!(!vols["host"].read_only);
    Ok(())
}

fn setup_error(r: Result<(), VolumeError>) -> String {
    match r {
        Err(e @ VolumeError::SetUp { .. }) => {
            assert_eq!(e.volume(), "host");
            assert_eq!(e.waiting_reason(), "ContainerCreating");
            match e {
                VolumeError::SetUp { message, .. } => message,
                _ => unreachable!(),
            }
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
}

#[test]
fn each_type_is_checked_like_upstream() {
    let env = Env::new("hostpath");
    let dir = env.root.join("dir");
    let file = env.root.join("file");
    let sock = env.root.join("sock");
    let blk = env.root.join("blk");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(&file, b"x").unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &blk,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(7, 200),
    )
    .unwrap();
    let null = Path::new("/dev/null");
    let kinds = [
        ("Directory", dir.as_path(), "directory", "Directory"),
        ("File", file.as_path(), "file", "File"),
        ("Socket", sock.as_path(), "socket file", "Socket"),
        ("CharDevice", null, "character device", "CharDevice"),
        ("BlockDevice", blk.as_path(), "block device", "BlockDevice"),
    ];
    for (ty, good, desc, _) in kinds {
        check(&env, good, ty).unwrap_or_else(|e| panic!("{ty} on {}: {e}", good.display()));
        for (_, other, _, other_kind) in kinds.iter().filter(|k| k.0 != ty) {
            assert_eq!(
                setup_error(check(&env, other, ty)),
                format!(
                    "hostPath type check failed: {} is not a {desc}, it's a {other_kind}",
                    other.display()
                )
            );
        }
        let missing = env.root.join("missing");
        assert_eq!(
            setup_error(check(&env, &missing, ty)),
            format!("hostPath {} doesn't exist", missing.display())
        );
    }
    // The full upstream message for a FailedMount event.
    let e = check(&env, &file, "Directory").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "MountVolume.SetUp failed for volume \"host\" : hostPath type check failed: {} is not a directory, it's a File",
            file.display()
        )
    );
    // Unset type: anything, even nothing.
    check(&env, &env.root.join("nothing-here"), "").unwrap();
    assert!(!env.root.join("nothing-here").exists());
    // A FIFO is none of the kinds.
    let fifo = env.root.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert_eq!(
        setup_error(check(&env, &fifo, "File")),
        format!(
            "hostPath type check failed, {} is not a file, unable to determine its type: \
             only recognise file, directory, socket, block device and character device",
            fifo.display()
        )
    );
    // A symlink is checked by what it points at.
    let link = env.root.join("link-to-dir");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    check(&env, &link, "Directory").unwrap();
}

#[test]
fn or_create_types_create_what_is_missing() {
    let env = Env::new("hostpath-create");
    // DirectoryOrCreate: parents too, 0755.
    let d = env.root.join("a/b/c");
    check(&env, &d, "DirectoryOrCreate").unwrap();
    assert!(d.is_dir());
    assert_eq!(mode(&d), 0o755 & !umask());
    // Existing: fine; a file there: type error.
    check(&env, &d, "DirectoryOrCreate").unwrap();
    let f = env.root.join("f");
    std::fs::write(&f, b"keep").unwrap();
    assert!(setup_error(check(&env, &f, "DirectoryOrCreate")).contains("is not a directory"));
    // FileOrCreate: an empty 0644 file; the content of an existing one is kept.
    let nf = env.root.join("a/new-file");
    check(&env, &nf, "FileOrCreate").unwrap();
    assert!(nf.is_file());
    assert_eq!(std::fs::read(&nf).unwrap(), b"");
    assert_eq!(mode(&nf), 0o644 & !umask());
    check(&env, &f, "FileOrCreate").unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"keep");
    // The parent must exist (upstream opens with O_CREAT only).
    let orphan = env.root.join("no/such/parent/file");
    let msg = setup_error(check(&env, &orphan, "FileOrCreate"));
    assert!(
        msg.starts_with(&format!("open {}: ", orphan.display())),
        "{msg}"
    );
    assert!(!env.root.join("no").exists());
    // A directory there: type error, nothing changed.
    assert!(
        setup_error(check(&env, &d, "FileOrCreate")).contains("is not a file, it's a Directory")
    );
    // An unknown type is a spec error.
    let e = check(&env, &d, "Folder").unwrap_err();
    assert_eq!(e.waiting_reason(), "CreateContainerConfigError");
    assert_eq!(
        e.to_string(),
        "volume \"host\": Folder is an invalid volume type"
    );
    // A read-only parent makes creation fail with the cause.
    let ro = env.root.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root ignores permissions: use a read-only bind mount instead.
    rustix::mount::mount_bind(&ro, &ro).unwrap();
    rustix::mount::mount_remount(
        &ro,
        rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
        "",
    )
    .unwrap();
    let msg = setup_error(check(&env, &ro.join("x"), "DirectoryOrCreate"));
    assert!(msg.contains("Read-only file system"), "{msg}");
    rustix::mount::unmount(&ro, rustix::mount::UnmountFlags::empty()).unwrap();
}

/// The process umask, read without changing it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}
