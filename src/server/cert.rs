//! A self-signed serving certificate for the kubelet port (what the
//! upstream kubelet makes when no `tlsCertFile` is given): ECDSA P-256
//! with ring, written as DER by hand (a few fixed structures of RFC 5280;
//! a certificate crate would add more than this file).

use anyhow::{Context, Result};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use std::net::IpAddr;

use crate::kube::der::{bit_string, oid, pem, seq, tlv, uint_bytes as uint, utf8, SEQUENCE};

fn name(cn: &str) -> Vec<u8> {
    seq(&[crate::kube::der::set(&[seq(&[
        oid(&[2, 5, 4, 3]),
        utf8(cn),
    ])])])
}

/// UTCTime up to 2049, GeneralizedTime after (RFC 5280 4.1.2.5).
fn time(t: jiff::Timestamp) -> Vec<u8> {
    let year = t.to_zoned(jiff::tz::TimeZone::UTC).year();
    if year < 2050 {
        tlv(0x17, t.strftime("%y%m%d%H%M%SZ").to_string().as_bytes())
    } else {
        tlv(0x18, t.strftime("%Y%m%d%H%M%SZ").to_string().as_bytes())
    }
}

fn extension(id: &[u64], critical: bool, value: Vec<u8>) -> Vec<u8> {
    let mut parts = vec![oid(id)];
    if critical {
        parts.push(tlv(0x01, &[0xff]));
    }
    parts.push(tlv(0x04, &value));
    seq(&parts)
}

/// A certificate and its PKCS#8 key, PEM-encoded.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

/// Makes a self-signed serving certificate for `host` (CN
/// `<host>@<unix time>`, as upstream) valid for a year, with the DNS
/// names and IP addresses as subject alternative names.
pub fn self_signed(host: &str, dns: &[String], ips: &[IpAddr]) -> Result<SelfSigned> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generate an ECDSA P-256 key"))?;
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("load the generated key"))?;
    let now = jiff::Timestamp::now();
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&rng, &mut serial)
        .map_err(|_| anyhow::anyhow!("random serial number"))?;
    serial[0] &= 0x7f;
    let sig_alg = seq(&[oid(&[1, 2, 840, 10045, 4, 3, 2])]);
    let cn = format!("{host}@{}", now.as_second());
    let spki = seq(&[
        seq(&[
            oid(&[1, 2, 840, 10045, 2, 1]),
            oid(&[1, 2, 840, 10045, 3, 1, 7]),
        ]),
        bit_string(kp.public_key().as_ref()),
    ]);
    let mut san = Vec::new();
    for d in dns {
        san.extend_from_slice(&tlv(0x82, d.as_bytes()));
    }
    for ip in ips {
        match ip {
            IpAddr::V4(a) => san.extend_from_slice(&tlv(0x87, &a.octets())),
            IpAddr::V6(a) => san.extend_from_slice(&tlv(0x87, &a.octets())),
        }
    }
    let exts = seq(&[
        // digitalSignature, keyEncipherment
        extension(
            &[2, 5, 29, 15],
            true,
            tlv(crate::kube::der::BIT_STRING, &[5, 0xa0]),
        ),
        // serverAuth
        extension(
            &[2, 5, 29, 37],
            false,
            seq(&[oid(&[1, 3, 6, 1, 5, 5, 7, 3, 1])]),
        ),
        extension(&[2, 5, 29, 19], true, seq(&[])),
        extension(&[2, 5, 29, 17], false, tlv(SEQUENCE, &san)),
    ]);
    let tbs = seq(&[
        tlv(0xa0, &uint(&[2])),
        uint(&serial),
        sig_alg.clone(),
        name(&cn),
        seq(&[
            time(now - jiff::SignedDuration::from_hours(1)),
            time(now + jiff::SignedDuration::from_hours(24 * 365)),
        ]),
        name(&cn),
        spki,
        tlv(0xa3, &exts),
    ]);
    let sig = kp
        .sign(&rng, &tbs)
        .map_err(|_| anyhow::anyhow!("sign the certificate"))?;
    let cert = seq(&[tbs, sig_alg, bit_string(sig.as_ref())]);
    Ok(SelfSigned {
        cert_pem: pem("CERTIFICATE", &cert),
        key_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
        cert_der: cert,
    })
}

/// Loads `cert`/`key` when both exist, parse and are not expired; else
/// makes a new pair and writes it there (key 0600). Returns the PEMs.
pub fn load_or_create(
    cert: &std::path::Path,
    key: &std::path::Path,
    host: &str,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<(Vec<u8>, Vec<u8>)> {
    if let (Ok(c), Ok(k)) = (std::fs::read(cert), std::fs::read(key)) {
        use rustls::pki_types::pem::PemObject;
        let first = rustls::pki_types::CertificateDer::pem_slice_iter(&c).next();
        let valid = first
            .and_then(|r| r.ok())
            .and_then(|d| crate::kube::x509::validity(&d).ok())
            .is_some_and(|v| v.not_after > jiff::Timestamp::now());
        if valid {
            return Ok((c, k));
        }
        log::warn!(
            "serving certificate {} is unreadable or expired: making a new one",
            cert.display()
        );
    }
    let s = self_signed(host, dns, ips)?;
    if let Some(d) = cert.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    crate::util::fs::write_atomic(key, s.key_pem.as_bytes())
        .with_context(|| format!("write {}", key.display()))?;
    std::fs::set_permissions(key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("chmod {}", key.display()))?;
    crate::util::fs::write_atomic(cert, s.cert_pem.as_bytes())
        .with_context(|| format!("write {}", cert.display()))?;
    log::info!("made a self-signed serving certificate {}", cert.display());
    Ok((s.cert_pem.into_bytes(), s.key_pem.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_encode() {
        assert_eq!(
            oid(&[1, 2, 840, 10045, 4, 3, 2]),
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        );
        assert_eq!(oid(&[2, 5, 29, 17]), [0x06, 0x03, 0x55, 0x1d, 0x11]);
        assert_eq!(uint(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(tlv(0x04, &[0u8; 200])[..3], [0x04, 0x81, 200]);
    }

    #[test]
    fn certificate_parses_and_serves() {
        let s = self_signed(
            "node-a",
            &["node-a".into(), "localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
        let info = crate::kube::x509::info(&s.cert_der).unwrap();
        assert!(info.common_name.unwrap().starts_with("node-a@"));
        assert!(info.validity.not_after > jiff::Timestamp::now());
        // rustls takes the pair (the key matches the certificate).
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> =
            rustls::pki_types::CertificateDer::pem_slice_iter(s.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(s.key_pem.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key);
        assert!(cfg.is_ok(), "{:?}", cfg.err());
        // webpki reads it as an end-entity certificate with our SANs.
        let ee = webpki_check(&certs[0]);
        assert!(ee, "not a parsable end-entity certificate");
    }

    fn webpki_check(c: &rustls::pki_types::CertificateDer<'_>) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(c.clone()).is_ok()
    }
}
