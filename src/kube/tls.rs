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

/// The rustls client config for `kc`, offering `alpn` (h2 then
/// http/1.1), and the name to verify the server's certificate against. A
/// kubeconfig CA replaces the system store, as in client-go.
pub fn client_config(
    kc: &Kubeconfig,
    alpn: &[&[u8]],
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>)> {
    let read = |src: &super::kubeconfig::Source, field: &str| {
        src.read().with_context(|| src.describe(field))
    };
    let ca = kc
        .ca
        .as_ref()
        .map(|c| read(c, "certificate-authority"))
        .transpose()?;
    let client_cert_pem = match &kc.credentials.client_cert {
        Some((c, k)) => Some((read(c, "client-certificate")?, read(k, "client-key")?)),
        None => None,
    };
    let opts = crate::http::TlsOptions {
        no_system_roots: ca.is_some(),
        ca_pem: ca.into_iter().collect(),
        client_cert_pem,
        insecure_skip_verify: kc.insecure_skip_tls_verify,
        server_name: kc.tls_server_name.clone(),
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        ..Default::default()
    };
    let name = opts.server_name(&kc.endpoint()?.host)?;
    Ok((Arc::new(crate::http::client_config(&opts)?), name))
}
