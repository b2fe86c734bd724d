//! TLS for the API server connection: the kubeconfig's CA (or the system
//! store), its client certificate, `tls-server-name`, and ALPN offering
//! HTTP/2 first, as client-go does.

use super::kubeconfig::Kubeconfig;
use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;

/// What a kubeconfig's TLS settings hold, read from files or inline data.
pub struct TlsMaterial {
    pub ca: Vec<CertificateDer<'static>>,
    pub client_chain: Vec<CertificateDer<'static>>,
    pub client_key: Option<PrivateKeyDer<'static>>,
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let v = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{what}: invalid PEM"))?;
    if v.is_empty() {
        bail!("{what}: no certificate in PEM");
    }
    Ok(v)
}

impl TlsMaterial {
    /// Reads the CA and the client certificate and key now.
    pub fn read(kc: &Kubeconfig) -> Result<TlsMaterial> {
        let ca = match &kc.ca {
            Some(src) => {
                let what = src.describe("certificate-authority");
                certs(&src.read().with_context(|| what.clone())?, &what)?
            }
            None => Vec::new(),
        };
        let (client_chain, client_key) = match &kc.credentials.client_cert {
            Some((c, k)) => {
                let what = c.describe("client-certificate");
                let chain = certs(&c.read().with_context(|| what.clone())?, &what)?;
                let what = k.describe("client-key");
                let key = PrivateKeyDer::from_pem_slice(&k.read().with_context(|| what.clone())?)
                    .with_context(|| {
                    format!("{what}: no RSA, ECDSA or Ed25519 private key in PEM")
                })?;
                (chain, Some(key))
            }
            None => (Vec::new(), None),
        };
        Ok(TlsMaterial {
            ca,
            client_chain,
            client_key,
        })
    }
}

/// The rustls client config for `kc`, offering `alpn` (e.g. h2 then
/// http/1.1), and the name to verify the server's certificate against.
pub fn client_config(
    kc: &Kubeconfig,
    alpn: &[&[u8]],
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>)> {
    let m = TlsMaterial::read(kc)?;
    let url = kc.endpoint()?;
    let host = kc.tls_server_name.clone().unwrap_or(url.host);
    let name = ServerName::try_from(host.clone())
        .with_context(|| format!("invalid TLS server name {host:?}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if kc.insecure_skip_tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(crate::http::insecure_verifier())
    } else if m.ca.is_empty() {
        builder.with_root_certificates(crate::http::system_roots())
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in m.ca {
            roots
                .add(c)
                .context("certificate-authority: unusable CA certificate")?;
        }
        builder.with_root_certificates(roots)
    };
    let mut cfg = match m.client_key {
        Some(key) => builder
            .with_client_auth_cert(m.client_chain, key)
            .context("client certificate and key do not form a usable pair")?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(cfg), name))
}
