//! TLS for the kubelet port: the serving certificate (configured, or
//! self-signed under the root dir as upstream), `tlsMinVersion`,
//! `tlsCipherSuites`, and client certificates against
//! `authentication.x509.clientCAFile`.
//!
//! Client certificates are requested, not required, and any certificate
//! is accepted at the handshake (its signature over the handshake is still
//! checked): the chain is verified afterwards by the authenticator, so a
//! certificate from another CA gets 401 like upstream rather than a failed
//! handshake.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The TLS fields of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Go names: `VersionTLS12`, `VersionTLS13`.
    pub min_version: Option<String>,
    /// Go names of the cipher suites; empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    pub client_ca_file: Option<PathBuf>,
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Protocol versions for a Go `tlsMinVersion` name.
pub fn versions(min: Option<&str>) -> Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    match min.unwrap_or("") {
        "" | "VersionTLS12" => Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]),
        "VersionTLS13" => Ok(vec![&rustls::version::TLS13]),
        v @ ("VersionTLS10" | "VersionTLS11") => {
            log::warn!(
                "tlsMinVersion {v}: picolet speaks TLS 1.2 and 1.3 only; using VersionTLS12"
            );
            Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12])
        }
        v => bail!("tlsMinVersion: unknown value {v:?} (VersionTLS12 or VersionTLS13)"),
    }
}

/// The rustls suites for Go cipher suite names. TLS 1.3 suites are always
/// on (Go does not let them be configured either); TLS 1.2 suites rustls
/// lacks (CBC, RSA key exchange) are skipped with a warning.
pub fn cipher_suites(names: &[String]) -> Result<Vec<rustls::SupportedCipherSuite>> {
    use rustls::crypto::ring::cipher_suite as cs;
    let all = provider().cipher_suites;
    if names.is_empty() {
        return Ok(all);
    }
    let mut out: Vec<rustls::SupportedCipherSuite> = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    for n in names {
        let s = match n.as_str() {
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            }
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            }
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
            | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            }
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
            | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
                cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            }
            "TLS_AES_128_GCM_SHA256"
            | "TLS_AES_256_GCM_SHA384"
            | "TLS_CHACHA20_POLY1305_SHA256" => continue,
            n if n.starts_with("TLS_") => {
                log::warn!("tlsCipherSuites: {n} is not offered by picolet (AEAD suites with ECDHE only); skipped");
                continue;
            }
            n => bail!("tlsCipherSuites: unknown cipher suite {n:?}"),
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Verifies a client chain against the client CA (after the handshake).
pub type ChainVerifier = Arc<dyn ClientCertVerifier>;

/// Accepts any client certificate at the handshake; see the module doc.
#[derive(Debug)]
struct LateVerify(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for LateVerify {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Loads the client CA bundle into a chain verifier.
pub fn client_verifier(ca_file: &Path) -> Result<ChainVerifier> {
    let pem = std::fs::read(ca_file)
        .with_context(|| format!("read clientCAFile {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.with_context(|| format!("clientCAFile {}", ca_file.display()))?;
        roots.add(c).with_context(|| {
            format!("clientCAFile {}: invalid CA certificate", ca_file.display())
        })?;
    }
    if roots.is_empty() {
        bail!("clientCAFile {}: no certificate", ca_file.display());
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(provider()),
    )
    .allow_unauthenticated()
    .build()
    .context("client certificate verifier")
}

/// What the secure port needs: the rustls config and the verifier the
/// authenticator checks client chains with.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub clients: Option<ChainVerifier>,
}

/// Builds the serving TLS config. Without a configured certificate, one is
/// made (or reused) at `cert_dir/kubelet.crt` + `kubelet.key` for `host`
/// and `ips` (plus `localhost`/127.0.0.1).
pub fn server_tls(
    s: &TlsSettings,
    cert_dir: &Path,
    host: &str,
    ips: &[IpAddr],
) -> Result<ServerTls> {
    let (cert_pem, key_pem, configured) = match (&s.cert_file, &s.key_file) {
        (Some(c), Some(k)) => (
            std::fs::read(c).with_context(|| format!("read tlsCertFile {}", c.display()))?,
            std::fs::read(k).with_context(|| format!("read tlsPrivateKeyFile {}", k.display()))?,
            true,
        ),
        (None, None) => {
            let mut ips = ips.to_vec();
            for lo in [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ] {
                if !ips.contains(&lo) {
                    ips.push(lo);
                }
            }
            let (c, k) = super::cert::load_or_create(
                &cert_dir.join("kubelet.crt"),
                &cert_dir.join("kubelet.key"),
                host,
                &[host.to_string(), "localhost".into()],
                &ips,
            )?;
            (c, k, false)
        }
        _ => bail!("tlsCertFile and tlsPrivateKeyFile must be set together"),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .context("serving certificate PEM")?;
    if chain.is_empty() {
        bail!("serving certificate: no certificate in PEM");
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).context("serving key PEM")?;
    let mut p = provider();
    p.cipher_suites = cipher_suites(&s.cipher_suites)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&versions(s.min_version.as_deref())?)
        .context("TLS versions and cipher suites")?;
    let clients = match &s.client_ca_file {
        Some(f) => Some(client_verifier(f)?),
        None => None,
    };
    let builder = match &clients {
        Some(v) => builder.with_client_cert_verifier(Arc::new(LateVerify(v.clone()))),
        None => builder.with_no_client_auth(),
    };
    let mut config = if configured {
        builder
            .with_single_cert(chain, key)
            .context("serving certificate and key do not match")?
    } else {
        // The self-signed pair until the cluster signs one
        // (serverTLSBootstrap); rotations need no rebuild of this config.
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&key).context("serving key")?;
        let ck = Arc::new(rustls::sign::CertifiedKey::new(chain, signing));
        ck.keys_match()
            .context("serving certificate and key do not match")?;
        builder.with_cert_resolver(crate::kube::serving::handle().resolver(Some(ck)))
    };
    // As Go's net/http: HTTP/2 when the client offers it; HTTP/1.1 for
    // the upgrades (exec, attach, port-forward) and clients without ALPN.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        clients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_suites_from_go_names() {
        assert_eq!(versions(None).unwrap().len(), 2);
        assert_eq!(versions(Some("VersionTLS13")).unwrap().len(), 1);
        assert!(versions(Some("TLS1.2")).is_err());
        let s = cipher_suites(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
        ])
        .unwrap();
        assert_eq!(s.len(), 4);
        assert!(cipher_suites(&["bogus".into()]).is_err());
    }

    #[test]
    fn self_signed_config_is_made_once() {
        let d = std::env::temp_dir().join(format!("picolet-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s = TlsSettings::default();
        server_tls(&s, &d, "n1", &["10.0.0.1".parse().unwrap()]).unwrap();
        let first = std::fs::read(d.join("kubelet.crt")).unwrap();
        server_tls(&s, &d, "n1", &[]).unwrap();
        assert_eq!(std::fs::read(d.join("kubelet.crt")).unwrap(), first);
        let _ = std::fs::remove_dir_all(&d);
    }
}
