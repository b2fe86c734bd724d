//! Layer unpacking: one snapshot per diffID (`snapshots/<hex>/fs`), checked
//! against the config's `rootfs.diff_ids` while extracting, committed by
//! rename only when it matches. Blocking code: run it on the blocking pool.
//!
//! Every path is resolved relative to the snapshot root with
//! `openat2(RESOLVE_BENEATH)` (or an equivalent walk on kernels without
//! openat2): `..`, absolute names and writes through symlinks that leave the
//! root are rejected. OCI whiteouts become overlayfs whiteouts.

use super::store::{hex, lock_blocking, remove_tree};
use anyhow::{bail, Context, Result};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

const OPAQUE: &str = ".wh..wh..opq";
const WH_PREFIX: &str = ".wh.";

/// Layer compression, from the media type or, failing that, the magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Sniffs the first bytes of a layer blob.
pub fn sniff(b: &[u8]) -> Compression {
    if b.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Layer media types we unpack (compression itself is sniffed).
pub fn check_layer_media_type(mt: &str) -> Result<()> {
    let ok = mt.is_empty()
        || mt.starts_with("application/vnd.oci.image.layer.")
        || mt.starts_with("application/vnd.docker.image.rootfs.");
    if !ok || mt.contains("encrypted") || mt.ends_with("+encrypted") {
        bail!("unsupported layer media type {mt:?}");
    }
    Ok(())
}

/// A zstd stream reader that keeps memory at one window plus one block:
/// it decodes one block at a time and hands out everything beyond the
/// window (ruzstd's StreamingDecoder lets its buffer double past the window,
/// ~16 MiB for the common 8 MiB window). Handles several and skippable frames.
pub struct ZstdReader<R: BufRead> {
    src: R,
    dec: Option<ruzstd::decoding::FrameDecoder>,
    started: bool,
}

thread_local! {
    /// One decoder (and its window buffer) per blocking thread, reused for
    /// every layer: allocating a fresh 8 MiB window per layer fragmented the
    /// heap and doubled peak RSS.
    static ZSTD: std::cell::RefCell<Option<ruzstd::decoding::FrameDecoder>> =
        const { std::cell::RefCell::new(None) };
}

impl<R: BufRead> Drop for ZstdReader<R> {
    fn drop(&mut self) {
        if let Some(d) = self.dec.take() {
            ZSTD.with(|z| *z.borrow_mut() = Some(d));
        }
    }
}

impl<R: BufRead> ZstdReader<R> {
    pub fn new(src: R) -> ZstdReader<R> {
        let dec = ZSTD.with(|z| z.borrow_mut().take()).unwrap_or_default();
        ZstdReader {
            src,
            dec: Some(dec),
            started: false,
        }
    }

    fn dec(&mut self) -> &mut ruzstd::decoding::FrameDecoder {
        // Only `drop` takes it out.
        self.dec.get_or_insert_with(Default::default)
    }

    /// Starts the next frame; `false` at the end of the input.
    fn next_frame(&mut self) -> io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.src.fill_buf()?.is_empty() {
                return Ok(false);
            }
            let src = &mut self.src;
            let dec = self.dec.get_or_insert_with(Default::default);
            match dec.reset(src) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    io::copy(&mut (&mut self.src).take(length as u64), &mut io::sink())?;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("zstd: {e}"),
                    ))
                }
            }
        }
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.started {
                let n = self.dec().read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
            }
            if !self.started || self.dec().is_finished() {
                if !self.next_frame()? {
                    if !self.started {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "zstd: empty stream",
                        ));
                    }
                    return Ok(0);
                }
                self.started = true;
                continue;
            }
            let src = &mut self.src;
            let dec = self.dec.get_or_insert_with(Default::default);
            dec.decode_blocks(src, ruzstd::decoding::BlockDecodingStrategy::UptoBlocks(1))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
        }
    }
}

/// What a tar entry name means for the snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// The root itself (`./`).
    Root,
    /// A normal entry: parent components and name.
    Path(Vec<OsString>, OsString),
    /// `dir/.wh.NAME`: hide NAME of lower layers.
    Whiteout(Vec<OsString>, OsString),
    /// `dir/.wh..wh..opq`: hide the lower contents of dir.
    Opaque(Vec<OsString>),
}

/// Validates and classifies an entry name. Rejects `..` and absolute names.
pub fn classify(p: &Path) -> Result<Target> {
    let mut comps = split_clean(p)?;
    let Some(name) = comps.pop() else {
        return Ok(Target::Root);
    };
    let nb = name.as_bytes();
    if nb == OPAQUE.as_bytes() {
        return Ok(Target::Opaque(comps));
    }
    if let Some(rest) = nb.strip_prefix(WH_PREFIX.as_bytes()) {
        if rest.is_empty() || rest.starts_with(WH_PREFIX.as_bytes()) {
            bail!("invalid whiteout {}", p.display());
        }
        return Ok(Target::Whiteout(comps, OsString::from_vec(rest.to_vec())));
    }
    Ok(Target::Path(comps, name))
}

/// Normal components of a relative path; `.` dropped; `..`/absolute rejected.
pub fn split_clean(p: &Path) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => bail!("path traversal: {:?} contains \"..\"", p),
            Component::RootDir | Component::Prefix(_) => {
                bail!("absolute path {:?} in layer", p)
            }
        }
    }
    Ok(out)
}

fn join(c: &[OsString]) -> PathBuf {
    if c.is_empty() {
        return PathBuf::from(".");
    }
    c.iter().collect()
}

/// Hashes everything read through it.
struct HashRead<R> {
    inner: R,
    ctx: ring::digest::Context,
    n: u64,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.ctx.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// Unpacks the layer blob at `blob` into `snapshots/<hex(diff_id)>/fs`, once.
/// `snapshots` is the snapshots directory of the store.
pub fn unpack_layer(blob: &Path, diff_id: &str, snapshots: &Path) -> Result<()> {
    let h = super::store::digest_hex(diff_id)?.to_string();
    let final_dir = snapshots.join(&h);
    let _lock = lock_blocking(&snapshots.join(format!(".lock-{h}")))?;
    if final_dir.join("fs").is_dir() {
        return Ok(());
    }
    let tmp = snapshots.join(format!(".tmp-{h}"));
    remove_tree(&tmp)?; // a previous attempt that died
    let fs_dir = tmp.join("fs");
    std::fs::create_dir_all(&fs_dir).with_context(|| format!("create {}", fs_dir.display()))?;
    let res = extract_verified(blob, diff_id, &fs_dir);
    if let Err(e) = res {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    let commit = (|| -> Result<()> {
        let d = File::open(&fs_dir).with_context(|| format!("open {}", fs_dir.display()))?;
        rustix::fs::syncfs(&d).with_context(|| format!("syncfs {}", fs_dir.display()))?;
        std::fs::rename(&tmp, &final_dir)
            .with_context(|| format!("rename to {}", final_dir.display()))?;
        crate::util::fs::sync_dir(snapshots)
    })();
    if commit.is_err() {
        let _ = remove_tree(&tmp);
    }
    commit
}

fn extract_verified(blob: &Path, diff_id: &str, root: &Path) -> Result<()> {
    let f = File::open(blob).with_context(|| format!("open {}", blob.display()))?;
    let mut br = BufReader::with_capacity(64 << 10, f);
    let head = br
        .fill_buf()
        .with_context(|| format!("read {}", blob.display()))?;
    let comp = sniff(head);
    let reader: Box<dyn Read> = match comp {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(ZstdReader::new(br)),
        Compression::None => Box::new(br),
    };
    let mut hr = HashRead {
        inner: reader,
        ctx: ring::digest::Context::new(&ring::digest::SHA256),
        n: 0,
    };
    let rootf = File::open(root).with_context(|| format!("open {}", root.display()))?;
    extract(&mut hr, rootf.as_fd()).with_context(|| format!("layer {diff_id}"))?;
    // The digest covers the whole stream, padding after the end blocks included.
    io::copy(&mut hr, &mut io::sink()).with_context(|| format!("layer {diff_id}: read"))?;
    let got = format!("sha256:{}", hex(hr.ctx.finish().as_ref()));
    if got != diff_id {
        bail!(
            "layer diffID mismatch: the image config says {diff_id}, the uncompressed layer is {got}"
        );
    }
    Ok(())
}

/// Extracts a tar stream into the directory `root`.
pub fn extract<R: Read>(r: R, root: BorrowedFd<'_>) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    let mut dirs: Vec<(Vec<OsString>, u64)> = Vec::new();
    for entry in ar.entries().context("read tar")? {
        let mut e = entry.context("read tar entry")?;
        let path = e.path().context("tar entry path")?.into_owned();
        apply(&mut e, &path, root, &mut dirs).with_context(|| format!("tar entry {:?}", path))?;
    }
    // Directory mtimes last, deepest first: creating children changes them.
    dirs.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    for (c, mtime) in dirs {
        if let Some((name, parent)) = c.split_last() {
            let p = open_dir(root, parent, false)?;
            set_times(p.as_fd(), name, mtime)?;
        }
    }
    Ok(())
}

fn apply<R: Read>(
    e: &mut tar::Entry<'_, R>,
    path: &Path,
    root: BorrowedFd<'_>,
    dirs: &mut Vec<(Vec<OsString>, u64)>,
) -> Result<()> {
    let kind = e.header().entry_type();
    if matches!(
        kind,
        tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
    ) {
        return Ok(());
    }
    let (parent, name) = match classify(path)? {
        Target::Root => return Ok(()),
        Target::Opaque(parent) => {
            let d = open_dir(root, &parent, true)?;
            let fd = rustix::fs::openat(
                d.as_fd(),
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fsetxattr(
                &fd,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .context("set trusted.overlay.opaque")?;
            return Ok(());
        }
        Target::Whiteout(parent, name) => {
            let d = open_dir(root, &parent, true)?;
            remove_existing(d.as_fd(), &name, true)?;
            rustix::fs::mknodat(
                d.as_fd(),
                &*name,
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .context("create whiteout")?;
            return Ok(());
        }
        Target::Path(parent, name) => (parent, name),
    };
    let xattrs = pax_xattrs(e)?;
    let h = e.header().clone();
    let mode = Mode::from_raw_mode(h.mode().context("mode")? & 0o7777);
    let uid = h.uid().context("uid")? as u32;
    let gid = h.gid().context("gid")? as u32;
    let mtime = h.mtime().unwrap_or(0);
    let d = open_dir(root, &parent, true)?;
    let dfd = d.as_fd();
    match kind {
        tar::EntryType::Directory => {
            match rustix::fs::statat(dfd, &*name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                Ok(_) => {
                    remove_existing(dfd, &name, false)?;
                    rustix::fs::mkdirat(dfd, &*name, Mode::from_raw_mode(0o700))?;
                }
                Err(Errno::NOENT) => rustix::fs::mkdirat(dfd, &*name, Mode::from_raw_mode(0o700))?,
                Err(err) => return Err(err.into()),
            }
            rustix::fs::chownat(
                dfd,
                &*name,
                Some(uid_of(uid)),
                Some(gid_of(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            rustix::fs::chmodat(dfd, &*name, mode, AtFlags::empty())?;
            if !xattrs.is_empty() {
                let fd = rustix::fs::openat(
                    dfd,
                    &*name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                for (k, v) in &xattrs {
                    rustix::fs::fsetxattr(&fd, k.as_os_str(), v, rustix::fs::XattrFlags::empty())
                        .with_context(|| format!("set xattr {k:?}"))?;
                }
            }
            let mut c = parent.clone();
            c.push(name);
            dirs.push((c, mtime));
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            if kind == tar::EntryType::GNUSparse {
                bail!("GNU sparse files are not supported");
            }
            remove_existing(dfd, &name, false)?;
            let fd = rustix::fs::openat(
                dfd,
                &*name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut f = File::from(fd);
            io::copy(e, &mut f).map_err(|err| super::store::io_err(err, "write file"))?;
            rustix::fs::fchown(&f, Some(uid_of(uid)), Some(gid_of(gid)))?;
            rustix::fs::fchmod(&f, mode)?; // after chown, which clears set-id bits
            for (k, v) in &xattrs {
                rustix::fs::fsetxattr(&f, k.as_os_str(), v, rustix::fs::XattrFlags::empty())
                    .with_context(|| format!("set xattr {k:?}"))?;
            }
            let t = ts(mtime);
            rustix::fs::futimens(&f, &t)?;
        }
        tar::EntryType::Symlink => {
            let target = e
                .link_name()
                .context("symlink target")?
                .context("symlink without target")?
                .into_owned();
            remove_existing(dfd, &name, false)?;
            rustix::fs::symlinkat(target.as_os_str(), dfd, &*name)?;
            rustix::fs::chownat(
                dfd,
                &*name,
                Some(uid_of(uid)),
                Some(gid_of(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            set_times(dfd, &name, mtime)?;
        }
        tar::EntryType::Link => {
            let target = e
                .link_name()
                .context("hard link target")?
                .context("hard link without target")?
                .into_owned();
            let mut tc = split_clean(&target)?;
            let tname = tc.pop().context("hard link to the root")?;
            let td = open_dir(root, &tc, false)
                .with_context(|| format!("hard link target {:?}", target))?;
            remove_existing(dfd, &name, false)?;
            rustix::fs::linkat(td.as_fd(), &*tname, dfd, &*name, AtFlags::empty())
                .with_context(|| format!("hard link to {:?}", target))?;
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let ft = match kind {
                tar::EntryType::Char => FileType::CharacterDevice,
                tar::EntryType::Block => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            let dev = rustix::fs::makedev(
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            );
            remove_existing(dfd, &name, false)?;
            rustix::fs::mknodat(dfd, &*name, ft, mode, dev)?;
            rustix::fs::chownat(
                dfd,
                &*name,
                Some(uid_of(uid)),
                Some(gid_of(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            rustix::fs::chmodat(dfd, &*name, mode, AtFlags::empty())?;
            if !xattrs.is_empty() {
                // No fd for a device node without opening it: go through the parent's fd.
                let p = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    rustix::fd::AsRawFd::as_raw_fd(&d)
                ))
                .join(&name);
                for (k, v) in &xattrs {
                    rustix::fs::lsetxattr(&p, k.as_os_str(), v, rustix::fs::XattrFlags::empty())
                        .with_context(|| format!("set xattr {k:?}"))?;
                }
            }
            set_times(dfd, &name, mtime)?;
        }
        other => log::warn!("tar entry {:?}: type {other:?} skipped", path),
    }
    Ok(())
}

/// `SCHILY.xattr.*` PAX records. overlayfs' own `trusted.overlay.*` are not
/// taken from layers (they would change how the overlay resolves paths).
fn pax_xattrs<R: Read>(e: &mut tar::Entry<'_, R>) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = e.pax_extensions().context("PAX headers")? {
        for x in exts {
            let x = x.context("PAX record")?;
            let Ok(k) = x.key() else { continue };
            if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                if name.starts_with("trusted.overlay.") {
                    continue;
                }
                out.push((OsString::from(name), x.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn uid_of(u: u32) -> rustix::fs::Uid {
    // SAFETY-free: rustix only wraps the number.
    rustix::fs::Uid::from_raw(u)
}
fn gid_of(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

fn ts(mtime: u64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_times(d: BorrowedFd<'_>, name: &OsString, mtime: u64) -> Result<()> {
    rustix::fs::utimensat(d, &**name, &ts(mtime), AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("set mtime of {name:?}"))
}

/// Removes what is at `name` so an entry can replace it. Directories are
/// only replaced by directories (handled by the caller) unless `any`.
fn remove_existing(d: BorrowedFd<'_>, name: &OsString, any: bool) -> Result<()> {
    match rustix::fs::statat(d, &**name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            if !any {
                match rustix::fs::unlinkat(d, &**name, AtFlags::REMOVEDIR) {
                    Ok(()) => return Ok(()),
                    Err(_) => bail!("{name:?}: a non-empty directory would be replaced"),
                }
            }
            let p = PathBuf::from(format!(
                "/proc/self/fd/{}",
                rustix::fd::AsRawFd::as_raw_fd(&d)
            ))
            .join(name);
            remove_tree(&p)
        }
        Ok(_) => Ok(rustix::fs::unlinkat(d, &**name, AtFlags::empty())?),
    }
}

/// Opens directory `comps` under `root` without leaving it; with `create`,
/// missing directories are made (0755, like other unpackers).
fn open_dir(root: BorrowedFd<'_>, comps: &[OsString], create: bool) -> Result<OwnedFd> {
    match open_beneath(root, &join(comps)) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) if create => {}
        Err(e) => return Err(resolve_err(e, comps)),
    }
    for i in 1..=comps.len() {
        match open_beneath(root, &join(&comps[..i])) {
            Ok(_) => continue,
            Err(Errno::NOENT) => {
                let p = open_beneath(root, &join(&comps[..i - 1]))
                    .map_err(|e| resolve_err(e, &comps[..i - 1]))?;
                match rustix::fs::mkdirat(p.as_fd(), &*comps[i - 1], Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(resolve_err(e, &comps[..i])),
                }
            }
            Err(e) => return Err(resolve_err(e, &comps[..i])),
        }
    }
    open_beneath(root, &join(comps)).map_err(|e| resolve_err(e, comps))
}

fn resolve_err(e: Errno, comps: &[OsString]) -> anyhow::Error {
    let p = join(comps);
    match e {
        Errno::XDEV | Errno::LOOP => {
            anyhow::anyhow!(
                "path escape: {:?} resolves outside the layer root through a symlink",
                p
            )
        }
        Errno::NOTDIR => anyhow::anyhow!("{:?}: not a directory", p),
        e => anyhow::Error::new(e).context(format!("open {:?}", p)),
    }
}

/// `openat2(RESOLVE_BENEATH)`; a component walk where the kernel lacks it.
fn open_beneath(root: BorrowedFd<'_>, p: &Path) -> Result<OwnedFd, Errno> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::openat2(
        root,
        p,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(Errno::NOSYS) => open_beneath_walk(root, p),
        r => r,
    }
}

/// Resolves `p` one component at a time with O_NOFOLLOW, following
/// relative symlinks by hand and refusing to climb above `root`.
pub fn open_beneath_walk(root: BorrowedFd<'_>, p: &Path) -> Result<OwnedFd, Errno> {
    let mut todo: std::collections::VecDeque<OsString> =
        p.iter().map(|c| c.to_os_string()).collect();
    let mut chain: Vec<OwnedFd> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        let cb = c.as_bytes();
        if cb.is_empty() || cb == b"." || cb == b"/" {
            continue;
        }
        if cb == b".." {
            if chain.pop().is_none() {
                return Err(Errno::XDEV);
            }
            continue;
        }
        let dir = chain.last().map_or(root, |f| f.as_fd());
        let fd = rustix::fs::openat(
            dir,
            &*c,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => chain.push(fd),
            FileType::Symlink => {
                hops += 1;
                if hops > 40 {
                    return Err(Errno::LOOP);
                }
                let t = rustix::fs::readlinkat(dir, &*c, Vec::new())?;
                let t = t.as_bytes();
                if t.starts_with(b"/") {
                    return Err(Errno::XDEV);
                }
                for part in Path::new(std::ffi::OsStr::from_bytes(t)).iter().rev() {
                    todo.push_front(part.to_os_string());
                }
            }
            _ => return Err(Errno::NOTDIR),
        }
    }
    match chain.pop() {
        Some(f) => Ok(f),
        None => rustix::fs::openat(
            root,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_reader_handles_frames() {
        let a = vec![7u8; 300_000];
        let mut z =
            ruzstd::encoding::compress_to_vec(&a[..], ruzstd::encoding::CompressionLevel::Fastest);
        // a skippable frame, then a second frame
        z.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        z.extend(ruzstd::encoding::compress_to_vec(
            &b"tail"[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        let mut out = Vec::new();
        ZstdReader::new(&z[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 300_004);
        assert_eq!(&out[300_000..], b"tail");
        assert!(ZstdReader::new(&b""[..])
            .read_to_end(&mut Vec::new())
            .is_err());
        assert!(ZstdReader::new(&z[..20])
            .read_to_end(&mut Vec::new())
            .is_err());
    }

    #[test]
    fn classifies_names() {
        let p = |s: &str| classify(Path::new(s));
        assert_eq!(p("./").unwrap(), Target::Root);
        assert_eq!(
            p("./etc/.wh.motd").unwrap(),
            Target::Whiteout(vec!["etc".into()], "motd".into())
        );
        assert_eq!(
            p("a/b/.wh..wh..opq").unwrap(),
            Target::Opaque(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            p("a/./b").unwrap(),
            Target::Path(vec!["a".into()], "b".into())
        );
        assert!(p("../x").is_err());
        assert!(p("a/../../x").is_err());
        assert!(p("/etc/passwd").is_err());
        assert!(p("a/.wh.").is_err());
    }

    #[test]
    fn sniffs_and_media_types() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"etc/"), Compression::None);
        assert!(check_layer_media_type("application/vnd.oci.image.layer.v1.tar+zstd").is_ok());
        assert!(
            check_layer_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").is_ok()
        );
        assert!(
            check_layer_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
                .is_err()
        );
        assert!(check_layer_media_type("application/x-foo").is_err());
    }

    /// A raw ustar header with any name (tar::Builder refuses bad names).
    fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_mtime(1_000_000);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = PathBuf::from(format!(
            "/var/tmp/picolet-test/image-unit-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root")).unwrap();
        d
    }

    fn run(d: &Path, tar: &[u8]) -> Result<()> {
        let r = File::open(d.join("root")).unwrap();
        extract(tar, r.as_fd())
    }

    #[test]
    fn rejects_escapes() {
        let d = tmpdir("escape");
        let mut t = Vec::new();
        raw_entry(&mut t, "../evil", b'0', "", b"x");
        assert!(format!("{:#}", run(&d, &t).unwrap_err()).contains("traversal"));
        let mut t = Vec::new();
        raw_entry(&mut t, "/evil", b'0', "", b"x");
        assert!(format!("{:#}", run(&d, &t).unwrap_err()).contains("absolute"));
        // symlink pointing out, then a write through it
        for target in ["/tmp", "../../..", "./../x"] {
            let mut t = Vec::new();
            raw_entry(&mut t, "link", b'2', target, b"");
            raw_entry(&mut t, "link/evil", b'0', "", b"x");
            let e = format!("{:#}", run(&d, &t).unwrap_err());
            assert!(e.contains("escape"), "{target}: {e}");
            std::fs::remove_file(d.join("root/link")).unwrap();
        }
        // a hard link to a file outside
        let mut t = Vec::new();
        raw_entry(&mut t, "h", b'1', "../../etc/passwd", b"");
        assert!(run(&d, &t).is_err());
        assert!(!d.join("evil").exists() && !Path::new("/tmp/evil").exists());
        // the manual walk agrees with openat2
        let r = File::open(d.join("root")).unwrap();
        std::os::unix::fs::symlink("../..", d.join("root/up")).unwrap();
        std::fs::create_dir_all(d.join("root/x/y")).unwrap();
        std::os::unix::fs::symlink("../../x", d.join("root/x/y/back")).unwrap();
        assert_eq!(
            open_beneath_walk(r.as_fd(), Path::new("up/x")).unwrap_err(),
            Errno::XDEV
        );
        assert!(open_beneath_walk(r.as_fd(), Path::new("x/y/back/y")).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn extracts_entries_and_whiteouts() {
        let d = tmpdir("extract");
        let mut t = Vec::new();
        raw_entry(&mut t, "a/b/file", b'0', "", b"hello"); // parents missing
        raw_entry(&mut t, "a/rel", b'2', "b/file", b"");
        raw_entry(&mut t, "a/rel2", b'2', "b", b"");
        raw_entry(&mut t, "a/rel2/through", b'0', "", b"inside"); // stays inside
        raw_entry(&mut t, "a/hard", b'1', "a/b/file", b"");
        raw_entry(&mut t, "fifo", b'6', "", b"");
        raw_entry(&mut t, "etc/.wh.motd", b'0', "", b"");
        raw_entry(&mut t, "opq/.wh..wh..opq", b'0', "", b"");
        t.extend_from_slice(&[0u8; 1024]);
        run(&d, &t).unwrap();
        let r = d.join("root");
        assert_eq!(std::fs::read(r.join("a/b/file")).unwrap(), b"hello");
        assert_eq!(std::fs::read(r.join("a/b/through")).unwrap(), b"inside");
        assert_eq!(
            std::fs::read_link(r.join("a/rel")).unwrap(),
            Path::new("b/file")
        );
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(r.join("a/hard")).unwrap();
        assert_eq!(m.nlink(), 2);
        assert_eq!(m.mtime(), 1_000_000);
        assert!(std::fs::symlink_metadata(r.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        let wh = std::fs::symlink_metadata(r.join("etc/motd")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        let mut v = vec![0u8; 4];
        let n = rustix::fs::getxattr(r.join("opq"), "trusted.overlay.opaque", &mut v).unwrap();
        assert_eq!(&v[..n], b"y");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
