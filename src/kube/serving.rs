//! The kubelet port's serving certificate as the cluster signed it
//! (`serverTLSBootstrap: true`), for the server on port 10250.
//!
//! Two ways to use it, pick either:
//!
//! * In memory: [`handle()`] is this process's one [`ServingCert`].
//!   [`ServingCert::resolver`] gives a rustls `ResolvesServerCert` that
//!   answers every handshake with the current certificate (falling back to
//!   the one given, e.g. the self-signed certificate, until the cluster
//!   signed one); build the `ServerConfig` with
//!   `.with_cert_resolver(handle().resolver(Some(self_signed)))` once and
//!   rotation needs nothing more. [`ServingCert::subscribe`] wakes a task
//!   on each change; [`ServingCert::current_pem`] gives the PEM pair.
//! * On disk: `<cert-dir>/kubelet-server-current.pem` (certificate chain,
//!   then the PKCS#8 key; mode 0600), a symlink replaced atomically on each
//!   rotation, as upstream's kubelet writes it. A server that reloads files
//!   re-reads it when the symlink changes.
//!
//! Without `serverTLSBootstrap` nothing is published here and the handle
//! stays empty: the server keeps its self-signed certificate.

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, RwLock};

type Slot = Arc<RwLock<Option<Arc<CertifiedKey>>>>;

/// The current serving certificate and whoever waits for changes.
#[derive(Clone, Default)]
pub struct ServingCert {
    slot: Slot,
    inner: Rc<RefCell<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// The PEM chain and key (never logged).
    pem: Option<(Vec<u8>, Vec<u8>)>,
    subscribers: Vec<smol::channel::Sender<()>>,
    /// Changes so far.
    generation: u64,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.inner.borrow();
        f.debug_struct("ServingCert")
            .field("set", &i.pem.is_some())
            .field("generation", &i.generation)
            .finish()
    }
}

thread_local! {
    static HANDLE: ServingCert = ServingCert::default();
}

/// This process's serving certificate (the agent runs on one thread).
pub fn handle() -> ServingCert {
    HANDLE.with(ServingCert::clone)
}

impl ServingCert {
    /// Replaces the certificate: `chain_pem` (leaf first) and `key_pem`.
    pub fn set(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("serving certificate: {e}"))?;
        if chain.is_empty() {
            return Err(anyhow!("serving certificate: no certificate in PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| anyhow!("serving certificate key: {e}"))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .context("serving certificate key")?;
        let ck = Arc::new(CertifiedKey::new(chain, signing));
        ck.keys_match().context("serving certificate and key")?;
        match self.slot.write() {
            Ok(mut g) => *g = Some(ck),
            Err(p) => *p.into_inner() = Some(ck),
        }
        let mut i = self.inner.borrow_mut();
        i.pem = Some((chain_pem.to_vec(), key_pem.to_vec()));
        i.generation += 1;
        i.subscribers.retain(|s| match s.try_send(()) {
            Ok(()) | Err(smol::channel::TrySendError::Full(())) => true,
            Err(smol::channel::TrySendError::Closed(())) => false,
        });
        Ok(())
    }

    /// The current chain and key (PEM), once the cluster signed one.
    pub fn current_pem(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.inner.borrow().pem.clone()
    }

    /// How many times the certificate changed.
    pub fn generation(&self) -> u64 {
        self.inner.borrow().generation
    }

    /// A receiver that gets a message after each change (changes while
    /// one is unread coalesce).
    pub fn subscribe(&self) -> smol::channel::Receiver<()> {
        let (tx, rx) = smol::channel::bounded(1);
        self.inner.borrow_mut().subscribers.push(tx);
        rx
    }

    /// A rustls certificate resolver that always answers with the current
    /// certificate, else with `fallback`; with neither, the handshake
    /// fails (as upstream's kubelet with `serverTLSBootstrap` does before
    /// its certificate is approved).
    pub fn resolver(&self, fallback: Option<Arc<CertifiedKey>>) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver {
            slot: self.slot.clone(),
            fallback,
        })
    }
}

#[derive(Debug)]
struct Resolver {
    slot: Slot,
    fallback: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cur = match self.slot.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        cur.or_else(|| self.fallback.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_CERT: &[u8] = include_bytes!("../http/testdata/ec.crt");
    const EC_KEY: &[u8] = include_bytes!("../http/testdata/ec-pkcs8.key");
    const RSA_KEY: &[u8] = include_bytes!("../http/testdata/rsa-pkcs1.key");

    #[test]
    fn set_notifies_and_rejects_mismatched_pairs() {
        let s = ServingCert::default();
        assert!(s.current_pem().is_none());
        let rx = s.subscribe();
        s.set(EC_CERT, EC_KEY).unwrap();
        assert_eq!(s.generation(), 1);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        assert_eq!(s.current_pem().unwrap().0, EC_CERT);
        // Two changes unread coalesce into one message.
        s.set(EC_CERT, EC_KEY).unwrap();
        s.set(EC_CERT, EC_KEY).unwrap();
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        let e = s.set(EC_CERT, RSA_KEY).unwrap_err();
        assert!(
            format!("{e:#}").contains("serving certificate and key"),
            "{e:#}"
        );
        assert!(s.set(b"", EC_KEY).is_err());
        assert_eq!(s.generation(), 3);
        // A dropped subscriber is forgotten.
        drop(rx);
        s.set(EC_CERT, EC_KEY).unwrap();
        assert!(s.inner.borrow().subscribers.is_empty());
        // Debug output shows no key material.
        assert!(!format!("{s:?}").contains("PRIVATE"));
    }

    /// A self-signed P-256 certificate for `n1` made by openssl: (cert, key).
    fn openssl_pair(dir: &std::path::Path, tag: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let (c, k) = (
            dir.join(format!("{tag}.crt")),
            dir.join(format!("{tag}.key")),
        );
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-subj",
                "/CN=n1",
                "-addext",
                "subjectAltName=DNS:n1",
                "-days",
                "1",
            ])
            // An end-entity certificate (openssl's default is a CA one).
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&k)
            .arg("-out")
            .arg(&c)
            .output()
            .ok()?
            .status
            .success();
        ok.then(|| (std::fs::read(c).unwrap(), std::fs::read(k).unwrap()))
    }

    /// The certificate a TLS client is shown, handshaking in memory with a
    /// server that resolves through `r`; `None` when the handshake fails.
    fn presented(r: Arc<dyn ResolvesServerCert>, roots: &[&[u8]]) -> Option<Vec<u8>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(r);
        let mut store = rustls::RootCertStore::empty();
        for pem in roots {
            for c in CertificateDer::pem_slice_iter(pem) {
                store.add(c.unwrap()).unwrap();
            }
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("n1").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..20 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            if let Err(e) = s.process_new_packets() {
                eprintln!("server: {e}");
                return None;
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            if let Err(e) = c.process_new_packets() {
                eprintln!("client: {e}");
                return None;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return c.peer_certificates().map(|p| p[0].to_vec());
            }
        }
        None
    }

    #[test]
    fn the_resolver_presents_the_current_certificate() {
        let dir = std::env::temp_dir().join(format!("picolet-serving-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (Some(a), Some(b)) = (openssl_pair(&dir, "a"), openssl_pair(&dir, "b")) else {
            eprintln!("no openssl: skipped");
            return;
        };
        let der = |pem: &[u8]| CertificateDer::from_pem_slice(pem).unwrap().to_vec();
        let roots = [&a.0[..], &b.0[..]];
        let s = ServingCert::default();
        // Nothing yet and no fallback: no certificate, no handshake.
        assert_eq!(presented(s.resolver(None), &roots), None);
        // The fallback (the self-signed one) until the cluster's arrives.
        let key = PrivateKeyDer::from_pem_slice(&b.1).unwrap();
        let fallback = Arc::new(CertifiedKey::new(
            vec![CertificateDer::from_pem_slice(&b.0).unwrap()],
            rustls::crypto::ring::sign::any_supported_type(&key).unwrap(),
        ));
        let r = s.resolver(Some(fallback));
        assert_eq!(presented(r.clone(), &roots), Some(der(&b.0)));
        // The same resolver follows each change.
        s.set(&a.0, &a.1).unwrap();
        assert_eq!(presented(r.clone(), &roots), Some(der(&a.0)));
        s.set(&b.0, &b.1).unwrap();
        assert_eq!(presented(r, &roots), Some(der(&b.0)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handle_is_one_per_thread() {
        let a = handle();
        let b = handle();
        assert!(Rc::ptr_eq(&a.inner, &b.inner));
    }
}
