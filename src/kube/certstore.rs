//! Certificates and keys in the cert dir, laid out as upstream's kubelet
//! (client-go's certificate file store) lays them out:
//!
//! | file | what |
//! |---|---|
//! | `<prefix>-<YYYY-MM-DD-HH-MM-SS>.pem` | a certificate chain, then its key (PKCS#8), mode 0600 |
//! | `<prefix>-current.pem` | symlink to the one in use, replaced atomically (rename) |
//! | `<prefix>.key.tmp` | the key of a request still waiting for approval, mode 0600 |
//!
//! with `<prefix>` `kubelet-client` or `kubelet-server`. Older timestamped
//! files are removed on update, the previous one kept. Every write is
//! crash-safe: a temp file created 0600 in the same dir, fsync, rename,
//! fsync of the dir. Nothing here logs key material.

use super::csr::Key;
use super::x509::CertInfo;
use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The client certificate's files.
pub const CLIENT: &str = "kubelet-client";
/// The serving certificate's files.
pub const SERVER: &str = "kubelet-server";

/// One kind of certificate (client or serving) in a cert dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub dir: PathBuf,
    pub prefix: &'static str,
}

/// The pair in use: its chain, facts and when it was written.
#[derive(Debug)]
pub struct Current {
    pub path: PathBuf,
    pub chain: Vec<CertificateDer<'static>>,
    pub info: CertInfo,
    /// When picolet wrote the file (its modification time): a signer
    /// back-dates `notBefore`, this is when the certificate arrived.
    pub written: Option<jiff::Timestamp>,
}

/// Writes `data` to `path` so readers see the old or the new content,
/// created with mode 0600 from the first byte.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{}: no parent directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{}: no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| -> Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        // The umask cannot widen 0600, but a pre-set ACL default could.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
        crate::util::fs::sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Creates `dir` (and parents) with mode 0700 when it does not exist.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

/// The certificates (DER) of a PEM file holding a chain and a key.
pub fn read_chain(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what}: invalid PEM: {e}"))?;
    if chain.is_empty() {
        bail!("{what}: no certificate in PEM");
    }
    Ok(chain)
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>, prefix: &'static str) -> Store {
        Store {
            dir: dir.into(),
            prefix,
        }
    }

    /// `<dir>/<prefix>-current.pem`.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// `<dir>/<prefix>.key.tmp`.
    pub fn pending_key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key.tmp", self.prefix))
    }

    /// The pair in use; `Ok(None)` when there is none yet. A file that
    /// does not parse, holds no key, or whose key is not the
    /// certificate's is an error naming the file.
    pub fn load_current(&self) -> Result<Option<Current>> {
        let path = self.current_path();
        let pem = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let what = path.display().to_string();
        let chain = read_chain(&pem, &what)?;
        let info = super::x509::info(&chain[0]).with_context(|| what.clone())?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| anyhow!("{what}: no private key: {e}"))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .with_context(|| format!("{what}: unusable private key"))?;
        rustls::sign::CertifiedKey::new(chain.clone(), signing)
            .keys_match()
            .with_context(|| format!("{what}: the key is not the certificate's"))?;
        let written = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok());
        Ok(Some(Current {
            path,
            chain,
            info,
            written,
        }))
    }

    /// Writes a new timestamped pair (chain, then key) and points
    /// `-current` at it; removes older pairs but the previous one.
    /// Returns the new file's path.
    pub fn update(&self, chain_pem: &[u8], key: &Key) -> Result<PathBuf> {
        create_dir(&self.dir)?;
        let stamp = jiff::Zoned::now().strftime("%Y-%m-%d-%H-%M-%S").to_string();
        let file = format!("{}-{stamp}.pem", self.prefix);
        let path = self.dir.join(&file);
        let mut data = chain_pem.to_vec();
        if !data.ends_with(b"\n") {
            data.push(b'\n');
        }
        data.extend_from_slice(key.to_pem().as_bytes());
        write_private(&path, &data)?;
        let previous = std::fs::read_link(self.current_path()).ok();
        // A relative link: the dir may be moved or mounted elsewhere.
        let updated = self.dir.join(format!("{}-updated.pem", self.prefix));
        let _ = std::fs::remove_file(&updated);
        std::os::unix::fs::symlink(&file, &updated)
            .with_context(|| format!("symlink {}", updated.display()))?;
        if let Ok(m) = std::fs::symlink_metadata(self.current_path()) {
            if !m.file_type().is_symlink() {
                let _ = std::fs::remove_file(&updated);
                bail!(
                    "{} is a file, not a symlink: not replacing it",
                    self.current_path().display()
                );
            }
        }
        std::fs::rename(&updated, self.current_path())
            .with_context(|| format!("rename to {}", self.current_path().display()))?;
        crate::util::fs::sync_dir(&self.dir)?;
        self.prune(&file, previous.as_deref());
        Ok(path)
    }

    /// Removes timestamped pairs other than `keep` and `previous`.
    fn prune(&self, keep: &str, previous: Option<&Path>) {
        let prev = previous.and_then(|p| p.file_name()).map(|n| n.to_owned());
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let head = format!("{}-", self.prefix);
        for e in rd.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            // <prefix>-YYYY-MM-DD-HH-MM-SS.pem
            let stamped = n.len() == head.len() + 19 + 4
                && n.starts_with(&head)
                && n.ends_with(".pem")
                && n.as_bytes()[head.len()..n.len() - 4]
                    .iter()
                    .all(|b| b.is_ascii_digit() || *b == b'-');
            if stamped && n != keep && prev.as_deref() != Some(name.as_os_str()) {
                if let Err(err) = std::fs::remove_file(e.path()) {
                    log::debug!("remove {}: {err}", e.path().display());
                }
            }
        }
    }

    /// The key of a request still waiting (kept across restarts so the
    /// same request is found again), else a new one written there.
    pub fn pending_key(&self) -> Result<Key> {
        let p = self.pending_key_path();
        match std::fs::read(&p) {
            Ok(pem) => match Key::from_pem(&pem) {
                Ok(k) => return Ok(k),
                Err(e) => log::warn!("{}: {e:#}; making a new key", p.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
        }
        let k = Key::generate()?;
        create_dir(&self.dir)?;
        write_private(&p, k.to_pem().as_bytes())?;
        Ok(k)
    }

    /// Forgets the waiting request's key.
    pub fn remove_pending_key(&self) {
        let p = self.pending_key_path();
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("remove {}: {e}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("picolet-certstore-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const EC_CERT: &[u8] = include_bytes!("../http/testdata/ec.crt");
    const EC_KEY: &[u8] = include_bytes!("../http/testdata/ec-pkcs8.key");

    #[test]
    fn private_writes_are_0600_and_leave_no_temp() {
        let d = tmpdir("w");
        create_dir(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        let p = d.join("secret.pem");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pending_key_survives_until_removed() {
        let d = tmpdir("k");
        let s = Store::new(&d, CLIENT);
        let k1 = s.pending_key().unwrap();
        let k2 = s.pending_key().unwrap();
        assert_eq!(k1.spki(), k2.spki());
        let m = std::fs::metadata(s.pending_key_path()).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        s.remove_pending_key();
        assert!(!s.pending_key_path().exists());
        let k3 = s.pending_key().unwrap();
        assert_ne!(k1.spki(), k3.spki());
        // A corrupt pending key is replaced, not fatal.
        std::fs::write(s.pending_key_path(), "junk").unwrap();
        s.pending_key().unwrap();
        s.remove_pending_key();
        s.remove_pending_key();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn current_file_checks_that_key_and_certificate_match() {
        let d = tmpdir("c");
        let s = Store::new(&d, CLIENT);
        assert!(s.load_current().unwrap().is_none());
        create_dir(&d).unwrap();
        let file = d.join("kubelet-client-2026-01-01-00-00-00.pem");
        std::fs::write(&file, [EC_CERT, EC_KEY].concat()).unwrap();
        std::os::unix::fs::symlink(file.file_name().unwrap(), s.current_path()).unwrap();
        let c = s.load_current().unwrap().unwrap();
        assert_eq!(c.chain.len(), 1);
        assert!(c.written.is_some());
        // A key that is not the certificate's.
        let other = Key::generate().unwrap();
        std::fs::write(&file, [EC_CERT, other.to_pem().as_bytes()].concat()).unwrap();
        let e = format!("{:#}", s.load_current().unwrap_err());
        assert!(e.contains("the key is not the certificate's"), "{e}");
        // Garbage names the file.
        std::fs::write(&file, "garbage").unwrap();
        let e = format!("{:#}", s.load_current().unwrap_err());
        assert!(
            e.contains("kubelet-client-current.pem") && e.contains("no certificate"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn update_swaps_the_symlink_and_prunes() {
        let d = tmpdir("u");
        let s = Store::new(&d, SERVER);
        let k = Key::generate().unwrap();
        // Chains are not checked here (the caller did): any PEM will do.
        for i in 0..3 {
            create_dir(&d).unwrap();
            // Distinct stamps: pretend older files exist.
            std::fs::write(
                d.join(format!("kubelet-server-2020-01-0{}-00-00-00.pem", i + 1)),
                "old",
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("kubelet-server-2020-01-03-00-00-00.pem", s.current_path())
            .unwrap();
        let p = s.update(EC_CERT, &k).unwrap();
        let link = std::fs::read_link(s.current_path()).unwrap();
        assert_eq!(link, PathBuf::from(p.file_name().unwrap()));
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(s.current_path()).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(text.contains("-----BEGIN PRIVATE KEY-----"));
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // The previous target stays, older ones go; no temp files.
        assert_eq!(
            names,
            vec![
                "kubelet-server-2020-01-03-00-00-00.pem".to_string(),
                p.file_name().unwrap().to_string_lossy().into_owned(),
                "kubelet-server-current.pem".into(),
            ]
        );
        // A regular file where the symlink belongs is not replaced.
        std::fs::remove_file(s.current_path()).unwrap();
        std::fs::write(s.current_path(), "x").unwrap();
        let e = format!("{:#}", s.update(EC_CERT, &k).unwrap_err());
        assert!(e.contains("not a symlink"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
