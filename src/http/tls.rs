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
#[derive(Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra PEM CA bundles trusted besides the system store.
    pub ca_files: Vec<PathBuf>,
    /// Extra PEM CA bundles held in memory (kubeconfig
    /// `certificate-authority-data`).
    pub ca_pem: Vec<Vec<u8>>,
    /// Client certificate chain and key (PEM files).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Client certificate chain and key as PEM bytes (kubeconfig
    /// `client-certificate-data`, `client-key-data`); used instead of
    /// `client_cert` when both are set. The key may be PKCS#1, PKCS#8 or
    /// SEC1 (RSA or ECDSA).
    pub client_cert_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Accept any server certificate (still encrypts). Never the default.
    pub insecure_skip_verify: bool,
    /// Do not load the system store (only `ca_files` and `ca_pem`).
    pub no_system_roots: bool,
    /// Verify the server certificate for this name instead of the host
    /// dialled (kubeconfig `tls-server-name`); also sent as SNI.
    pub server_name: Option<String>,
    /// ALPN protocols offered, preferred first (`h2` for the API server's
    /// HTTP/2 connection). Default: `http/1.1`. The HTTP/1.1 [`Client`]
    /// always offers `http/1.1` alone.
    ///
    /// [`Client`]: super::Client
    pub alpn: Vec<Vec<u8>>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            ca_files: Vec::new(),
            ca_pem: Vec::new(),
            client_cert: None,
            client_cert_pem: None,
            insecure_skip_verify: false,
            no_system_roots: false,
            server_name: None,
            alpn: vec![b"http/1.1".to_vec()],
        }
    }
}

// By hand: a key in memory must not reach a log through `{:?}`.
impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_files", &self.ca_files)
            .field("ca_pem", &format_args!("{} bundle(s)", self.ca_pem.len()))
            .field("client_cert", &self.client_cert)
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|_| "<in memory>"),
            )
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("no_system_roots", &self.no_system_roots)
            .field("server_name", &self.server_name)
            .field(
                "alpn",
                &self
                    .alpn
                    .iter()
                    .map(|p| String::from_utf8_lossy(p))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TlsOptions {
    /// The name the server certificate is verified for: `server_name`
    /// when set, else `host` (a DNS name or an IP address).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string())
            .with_context(|| format!("invalid TLS server name {name:?}"))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration (ring provider) for `o`: roots, client
/// certificate, ALPN.
pub fn client_config(o: &TlsOptions) -> Result<rustls::ClientConfig> {
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
        for (i, pem) in o.ca_pem.iter().enumerate() {
            let what = format!("CA data #{}", i + 1);
            let mut n = 0;
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.with_context(|| what.clone())?;
                roots
                    .add(c)
                    .with_context(|| format!("{what}: invalid CA certificate"))?;
                n += 1;
            }
            if n == 0 {
                bail!("{what}: no certificate in PEM");
            }
        }
        builder.with_root_certificates(roots)
    };
    let pair = match (&o.client_cert_pem, &o.client_cert) {
        (Some((c, k)), _) => Some((
            c.clone(),
            "client certificate".to_string(),
            k.clone(),
            "client key".to_string(),
        )),
        (None, Some((c, k))) => Some((
            std::fs::read(c).with_context(|| format!("client certificate {}", c.display()))?,
            format!("client certificate {}", c.display()),
            std::fs::read(k).with_context(|| format!("client key {}", k.display()))?,
            format!("client key {}", k.display()),
        )),
        (None, None) => None,
    };
    let mut cfg = match pair {
        Some((cert, cert_what, key, key_what)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| cert_what.clone())?;
            if chain.is_empty() {
                bail!("{cert_what}: no certificate in PEM");
            }
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    anyhow::anyhow!("{key_what}: no private key in PEM")
                }
                e => anyhow::anyhow!("{key_what}: {e}"),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .with_context(|| format!("{cert_what} and key"))?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = o.alpn.clone();
    Ok(cfg)
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

#[cfg(test)]
mod tests {
    use super::*;

    // A test CA and client certificates it signed (EC P-256 with the key as
    // SEC1 and PKCS#8, RSA 2048 with a PKCS#1 key), made with openssl.
    const CA: &[u8] = include_bytes!("testdata/ca.crt");
    const EC_CERT: &[u8] = include_bytes!("testdata/ec.crt");
    const EC_SEC1: &[u8] = include_bytes!("testdata/ec-sec1.key");
    const EC_PKCS8: &[u8] = include_bytes!("testdata/ec-pkcs8.key");
    const RSA_CERT: &[u8] = include_bytes!("testdata/rsa.crt");
    const RSA_PKCS1: &[u8] = include_bytes!("testdata/rsa-pkcs1.key");

    fn mem(cert: &[u8], key: &[u8]) -> TlsOptions {
        TlsOptions {
            ca_pem: vec![CA.to_vec()],
            no_system_roots: true,
            client_cert_pem: Some((cert.to_vec(), key.to_vec())),
            ..Default::default()
        }
    }

    fn err(o: &TlsOptions) -> String {
        format!("{:#}", client_config(o).unwrap_err())
    }

    #[test]
    fn in_memory_pem_with_every_key_format() {
        for (cert, key) in [
            (EC_CERT, EC_SEC1),
            (EC_CERT, EC_PKCS8),
            (RSA_CERT, RSA_PKCS1),
        ] {
            let cfg = client_config(&mem(cert, key)).unwrap();
            assert!(cfg.client_auth_cert_resolver.has_certs());
            assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        }
        let o = TlsOptions {
            alpn: vec![b"h2".to_vec()],
            ..mem(EC_CERT, EC_SEC1)
        };
        assert_eq!(
            client_config(&o).unwrap().alpn_protocols,
            vec![b"h2".to_vec()]
        );
    }

    #[test]
    fn errors_name_what_failed() {
        let e = err(&mem(b"", EC_SEC1));
        assert_eq!(e, "client certificate: no certificate in PEM");
        let e = err(&mem(EC_CERT, b"not a key"));
        assert_eq!(e, "client key: no private key in PEM");
        let e = err(&mem(
            EC_CERT,
            b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
        ));
        assert!(e.starts_with("client key: "), "{e}");
        // The key of another certificate.
        let e = err(&mem(EC_CERT, RSA_PKCS1));
        assert!(e.starts_with("client certificate and key"), "{e}");
        let o = TlsOptions {
            ca_pem: vec![b"garbage".to_vec()],
            ..mem(EC_CERT, EC_SEC1)
        };
        assert_eq!(err(&o), "CA data #1: no certificate in PEM");
        let o = TlsOptions {
            client_cert: Some(("/nonexistent/c.crt".into(), "/nonexistent/c.key".into())),
            ..Default::default()
        };
        assert!(err(&o).starts_with("client certificate /nonexistent/c.crt"));
    }

    #[test]
    fn files_work_as_before_and_memory_wins() {
        let dir = std::env::temp_dir().join(format!("picolet-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = (dir.join("c.crt"), dir.join("c.key"));
        std::fs::write(&c, RSA_CERT).unwrap();
        std::fs::write(&k, RSA_PKCS1).unwrap();
        std::fs::write(dir.join("ca.crt"), CA).unwrap();
        let o = TlsOptions {
            ca_files: vec![dir.join("ca.crt")],
            client_cert: Some((c.clone(), k.clone())),
            no_system_roots: true,
            ..Default::default()
        };
        client_config(&o).unwrap();
        // An empty key file is named.
        std::fs::write(&k, "").unwrap();
        let e = err(&o);
        assert_eq!(
            e,
            format!("client key {}: no private key in PEM", k.display())
        );
        // In-memory PEM takes precedence over the (broken) files.
        let o = TlsOptions {
            client_cert_pem: Some((EC_CERT.to_vec(), EC_SEC1.to_vec())),
            ..o
        };
        client_config(&o).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_name_override_and_redacted_debug() {
        let o = mem(EC_CERT, EC_SEC1);
        assert_eq!(
            o.server_name("127.0.0.1").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        let o = TlsOptions {
            server_name: Some("kubernetes.default.svc".into()),
            ..o
        };
        assert_eq!(
            o.server_name("127.0.0.1").unwrap(),
            ServerName::try_from("kubernetes.default.svc").unwrap()
        );
        let d = format!("{o:?}");
        assert!(d.contains("<in memory>") && !d.contains("PRIVATE"), "{d}");
    }
}
