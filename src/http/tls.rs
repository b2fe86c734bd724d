//! rustls client configuration: system roots (`/etc/ssl/certs`, or
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus configured CA files, an optional
//! client certificate, and an opt-in "skip verification" mode.

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS settings of a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra PEM CA bundles trusted besides the system store.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate chain and key (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate (still encrypts). Never the default.
    pub insecure_skip_verify: bool,
    /// Do not load the system store (only `ca_files`).
    pub no_system_roots: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn client_config(o: &TlsOptions) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if o.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if !o.no_system_roots {
            load_system_roots(&mut roots);
        }
        for f in &o.ca_files {
            let n = add_pem_file(&mut roots, f)?;
            if n == 0 {
                bail!("CA file {}: no certificates", f.display());
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut cfg = match &o.client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("client certificate {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("client key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate and key")?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A verifier that accepts any server certificate (kubeconfig's
/// `insecure-skip-tls-verify`); handshake signatures are still checked.
pub fn insecure_verifier() -> Arc<dyn ServerCertVerifier> {
    Arc::new(NoVerify(provider()))
}

/// The system's CA store.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    load_system_roots(&mut roots);
    roots
}

/// Adds every certificate of a PEM file; returns how many were added.
fn add_pem_file(roots: &mut rustls::RootCertStore, f: &Path) -> Result<usize> {
    let mut n = 0;
    for c in CertificateDer::pem_file_iter(f).with_context(|| format!("CA file {}", f.display()))? {
        let c = c.with_context(|| format!("CA file {}", f.display()))?;
        if roots.add(c).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// The system store the way OpenSSL finds it on Linux distributions.
fn load_system_roots(roots: &mut rustls::RootCertStore) {
    let file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let files = file.map(|f| vec![f]).unwrap_or_else(|| {
        [
            "/etc/ssl/certs/ca-certificates.crt", // Debian, Alpine, OpenWrt
            "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
            "/etc/ssl/ca-bundle.pem",             // openSUSE
            "/etc/ssl/cert.pem",                  // Yocto, BSDs
        ]
        .iter()
        .map(PathBuf::from)
        .collect()
    });
    for f in files {
        if f.is_file() {
            match add_pem_file(roots, &f) {
                Ok(n) if n > 0 => return,
                Ok(_) => {}
                Err(e) => log::warn!("system CA store: {e:#}"),
            }
        }
    }
    // No bundle file: every PEM in the certificate directory.
    let dir = std::env::var_os("SSL_CERT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/etc/ssl/certs".into());
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pem" || x == "crt") {
                let _ = add_pem_file(roots, &p);
            }
        }
    }
}

/// Accepts any server certificate but still checks handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
