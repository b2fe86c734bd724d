//! Certificate signing requests: an ECDSA P-256 key (ring), the PKCS#10
//! request picolet writes itself (RFC 2986, through [`super::der`]), and
//! the `certificates.k8s.io/v1` CertificateSigningRequest that carries it:
//! created, then watched until it is signed, denied, failed or the wait
//! times out.
//!
//! Names are upstream's `node-csr-<digest>` of the public key, subject and
//! usages, so a picolet restarted while a request waits finds its own
//! request again (with the key it kept) instead of filing another.

use super::der;
use super::{Client, Error, ListParams, WatchEvent};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest as Csr, CertificateSigningRequestSpec,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The signer of kubelet client certificates (auto-approved for nodes).
pub const SIGNER_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelet serving certificates (approved by an operator
/// or a controller of the cluster's own).
pub const SIGNER_SERVING: &str = "kubernetes.io/kubelet-serving";

/// Usages of a kubelet client certificate with an ECDSA key.
pub const USAGES_CLIENT: &[&str] = &["digital signature", "client auth"];
/// Usages of a kubelet serving certificate.
pub const USAGES_SERVING: &[&str] = &["digital signature", "key encipherment", "server auth"];

/// The group every node identity is in (the certificate's O).
pub const NODES_GROUP: &str = "system:nodes";

/// `system:node:<name>`: the user a node's certificate names.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// An ECDSA P-256 private key. Its bytes never reach a log: `Debug`
/// shows only the public key's digest.
pub struct Key {
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.spki());
        write!(
            f,
            "Key(ECDSA P-256, public key sha256:{})",
            crate::util::hex(&d.as_ref()[..8])
        )
    }
}

impl Key {
    /// A new key from the system's random source.
    pub fn generate() -> Result<Key> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| anyhow!("generate an ECDSA P-256 key"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// A key from PKCS#8 DER (as [`Key::generate`] makes them).
    pub fn from_pkcs8(der: &[u8]) -> Result<Key> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &SystemRandom::new())
                .map_err(|e| anyhow!("not an ECDSA P-256 PKCS#8 key: {e}"))?;
        Ok(Key {
            pkcs8: der.to_vec(),
            pair,
        })
    }

    /// A key from a PEM `PRIVATE KEY` block (other blocks are skipped).
    pub fn from_pem(pem: &[u8]) -> Result<Key> {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|e| anyhow!("no PKCS#8 private key in PEM: {e}"))?;
        Self::from_pkcs8(der.secret_pkcs8_der())
    }

    /// Another handle on the same key.
    pub fn try_clone(&self) -> Result<Key> {
        Self::from_pkcs8(&self.pkcs8)
    }

    /// PEM `PRIVATE KEY` (PKCS#8).
    pub fn to_pem(&self) -> String {
        der::pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The DER SubjectPublicKeyInfo (id-ecPublicKey, prime256v1).
    pub fn spki(&self) -> Vec<u8> {
        der::seq(&[
            der::seq(&[
                der::oid(&[1, 2, 840, 10045, 2, 1]),
                der::oid(&[1, 2, 840, 10045, 3, 1, 7]),
            ]),
            der::bit_string(self.pair.public_key().as_ref()),
        ])
    }

    /// ECDSA-SHA256 signature (DER `Ecdsa-Sig-Value`) of `msg`.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), msg)
            .map_err(|_| anyhow!("ECDSA signing failed"))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// What a request asks to be certified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

impl Subject {
    /// A node's client certificate: `system:node:<name>`, `system:nodes`,
    /// no SANs.
    pub fn node_client(node: &str) -> Subject {
        Subject {
            common_name: node_user(node),
            organizations: vec![NODES_GROUP.into()],
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }

    /// A node's serving certificate: the same subject, with the node's
    /// host names and addresses as SANs.
    pub fn node_serving(node: &str, dns_names: Vec<String>, ip_addresses: Vec<IpAddr>) -> Subject {
        Subject {
            dns_names,
            ip_addresses,
            ..Subject::node_client(node)
        }
    }
}

/// An X.501 Name: each O, then the CN, one attribute per RDN (the order
/// Go's `pkix.Name` writes them in).
fn name(s: &Subject) -> Vec<u8> {
    let rdn = |arc: u64, v: &str| der::set(&[der::seq(&[der::oid(&[2, 5, 4, arc]), der::utf8(v)])]);
    let mut rdns: Vec<Vec<u8>> = s.organizations.iter().map(|o| rdn(10, o)).collect();
    rdns.push(rdn(3, &s.common_name));
    der::seq(&rdns)
}

/// A PKCS#10 CertificationRequest (DER) for `subject`, signed by `key`;
/// SANs go in an extensionRequest attribute.
pub fn build_request(key: &Key, subject: &Subject) -> Result<Vec<u8>> {
    let mut attrs = Vec::new();
    if !subject.dns_names.is_empty() || !subject.ip_addresses.is_empty() {
        let mut names = Vec::new();
        for d in &subject.dns_names {
            names.push(der::context(2, false, d.as_bytes()));
        }
        for ip in &subject.ip_addresses {
            let b = match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            names.push(der::context(7, false, &b));
        }
        let san = der::seq(&[
            der::oid(&[2, 5, 29, 17]),
            der::octet_string(&der::seq(&names)),
        ]);
        attrs.push(der::seq(&[
            der::oid(&[1, 2, 840, 113549, 1, 9, 14]),
            der::set(&[der::seq(&[san])]),
        ]));
    }
    let info = der::seq(&[
        der::uint(0),
        name(subject),
        key.spki(),
        der::context(0, true, &attrs.concat()),
    ]);
    let sig = key.sign(&info)?;
    Ok(der::seq(&[
        info,
        der::seq(&[der::oid(&[1, 2, 840, 10045, 4, 3, 2])]),
        der::bit_string(&sig),
    ]))
}

/// Upstream's `digestedName`: `node-csr-` and the base64url SHA-512/256
/// of the public key, CN, each O and each usage (each base64url-encoded
/// and followed by `|`).
pub fn digested_name(spki: &[u8], subject: &Subject, usages: &[&str]) -> String {
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512_256);
    let mut write = |b: &[u8]| {
        ctx.update(enc(b).as_bytes());
        ctx.update(b"|");
    };
    write(spki);
    write(subject.common_name.as_bytes());
    for o in &subject.organizations {
        write(o.as_bytes());
    }
    for u in usages {
        write(u.as_bytes());
    }
    format!("node-csr-{}", enc(ctx.finish().as_ref()))
}

/// One request to file: what [`submit`] sends.
#[derive(Debug)]
pub struct Request<'a> {
    pub key: &'a Key,
    pub subject: &'a Subject,
    pub signer: &'a str,
    pub usages: &'a [&'a str],
}

impl Request<'_> {
    pub fn name(&self) -> String {
        digested_name(&self.key.spki(), self.subject, self.usages)
    }
}

/// Creates the CertificateSigningRequest (or finds the one this key
/// already filed); returns its name.
pub async fn submit(client: &Client, r: &Request<'_>) -> Result<String, SubmitError> {
    let name = r.name();
    let der_req = build_request(r.key, r.subject).map_err(SubmitError::Local)?;
    let csr = Csr {
        metadata: crate::api::meta::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(
                der::pem("CERTIFICATE REQUEST", &der_req).into_bytes(),
            ),
            signer_name: r.signer.to_string(),
            usages: Some(r.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    match client.create::<Csr>(None, &csr).await {
        Ok(_) => Ok(name),
        Err(e) if e.is_already_exists() => {
            // Ours from before a restart (same key: same name), or not.
            let old = client
                .get::<Csr>(None, &name)
                .await
                .map_err(SubmitError::Api)?;
            ensure_compatible(&old, r).map_err(SubmitError::Local)?;
            log::info!("certificate signing request {name} exists already: waiting for it");
            Ok(name)
        }
        Err(e) => Err(SubmitError::Api(e)),
    }
}

/// Why a request could not be filed.
#[derive(Debug)]
pub enum SubmitError {
    /// The API server said no or could not be asked.
    Api(Error),
    /// Building the request, or a same-named request that is not ours.
    Local(anyhow::Error),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Api(e) => write!(f, "{e}"),
            SubmitError::Local(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// A same-named request must carry our public key, signer and usages.
fn ensure_compatible(old: &Csr, r: &Request<'_>) -> Result<()> {
    use rustls::pki_types::pem::PemObject;
    let name = old.metadata.name.as_deref().unwrap_or("");
    if old.spec.signer_name != r.signer {
        bail!(
            "certificate signing request {name} exists for signer {}, not {}",
            old.spec.signer_name,
            r.signer
        );
    }
    let der_req =
        rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(&old.spec.request.0)
            .map_err(|e| anyhow!("certificate signing request {name}: {e}"))?;
    let info = super::x509::csr_info(der_req.as_ref())
        .with_context(|| format!("certificate signing request {name}"))?;
    if info.spki != r.key.spki() {
        bail!("certificate signing request {name} exists with another public key");
    }
    let usages: Vec<&str> = old
        .spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if usages != r.usages {
        bail!("certificate signing request {name} exists with other usages {usages:?}");
    }
    Ok(())
}

/// The outcome a request's status shows so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Signed: the certificate chain (PEM).
    Issued(Vec<u8>),
    Pending {
        approved: bool,
    },
    Denied(String),
    Failed(String),
}

/// Reads a request's conditions and certificate.
pub fn outcome(csr: &Csr) -> Outcome {
    let st = csr.status.as_ref();
    let conds = st.and_then(|s| s.conditions.as_ref());
    let find = |t: &str| {
        conds
            .into_iter()
            .flatten()
            .find(|c| c.type_ == t && c.status != "False")
    };
    let describe = |c: &k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition| {
        let mut s = c.reason.clone().unwrap_or_default();
        if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
            if !s.is_empty() {
                s += ": ";
            }
            s += m;
        }
        if s.is_empty() {
            s = "no reason given".into();
        }
        s
    };
    if let Some(c) = find("Denied") {
        return Outcome::Denied(describe(c));
    }
    if let Some(c) = find("Failed") {
        return Outcome::Failed(describe(c));
    }
    if let Some(cert) = st
        .and_then(|s| s.certificate.as_ref())
        .filter(|c| !c.0.is_empty())
    {
        return Outcome::Issued(cert.0.clone());
    }
    Outcome::Pending {
        approved: find("Approved").is_some(),
    }
}

/// How [`wait`] reports a request still waiting.
pub trait PendingNotice {
    /// Called after 30 s of waiting, then every 10 minutes.
    fn pending(&self, name: &str, waited: Duration, approved: bool);
}

impl<F: Fn(&str, Duration, bool)> PendingNotice for F {
    fn pending(&self, name: &str, waited: Duration, approved: bool) {
        self(name, waited, approved)
    }
}

/// Waits until request `name` is signed (returns the certificate chain,
/// PEM), denied or failed (an error saying so), deleted, or `timeout`
/// passes. Watches the one object, reading it again whenever a watch ends.
pub async fn wait(
    client: &Client,
    name: &str,
    timeout: Duration,
    notice: &dyn PendingNotice,
) -> Result<Vec<u8>> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut next_notice = start + Duration::from_secs(30);
    let mut approved = false;
    let mut last_error = String::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            let state = if approved {
                "approved but not signed"
            } else {
                "not approved"
            };
            let mut m = format!(
                "certificate signing request {name} was {state} within {}",
                crate::util::duration::format(timeout)
            );
            if !last_error.is_empty() {
                m += &format!(" (last error: {last_error})");
            }
            bail!(m);
        }
        if now >= next_notice {
            notice.pending(name, now - start, approved);
            next_notice = now + Duration::from_secs(600);
        }
        let remaining = deadline - now;
        let rv = match client.get::<Csr>(None, name).await {
            Ok(csr) => match outcome(&csr) {
                Outcome::Issued(c) => return Ok(c),
                Outcome::Denied(why) => {
                    bail!("certificate signing request {name} was denied: {why}")
                }
                Outcome::Failed(why) => {
                    bail!("certificate signing request {name} failed: {why}")
                }
                Outcome::Pending { approved: a } => {
                    approved = a;
                    csr.metadata.resource_version
                }
            },
            Err(e) if e.is_not_found() => {
                bail!("certificate signing request {name} was deleted before it was signed")
            }
            Err(e) if e.is_unauthorized() || e.is_forbidden() => {
                return Err(anyhow!(e)).with_context(|| format!("read {name}"))
            }
            Err(e) => {
                last_error = e.to_string();
                log::debug!("certificate signing request {name}: {e}");
                async_io::Timer::after(Duration::from_secs(2).min(remaining)).await;
                continue;
            }
        };
        // Watch until something changes, the server ends the watch, or
        // the next notice or the deadline is due.
        let until = deadline.min(next_notice);
        let secs = until.saturating_duration_since(Instant::now()).as_secs();
        let params = ListParams {
            field_selector: Some(format!("metadata.name={name}")),
            resource_version: rv,
            timeout_seconds: Some(secs.clamp(1, 300) as u32),
            ..Default::default()
        };
        let watched = async {
            let mut stream = match client.watch::<Csr>(None, &params).await {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("watch certificate signing request {name}: {e}");
                    async_io::Timer::after(Duration::from_secs(2)).await;
                    return;
                }
            };
            while let Some(ev) = stream.next().await {
                match ev {
                    // A change: read it again (one code path for the result).
                    Ok(WatchEvent::Modified(_) | WatchEvent::Added(_) | WatchEvent::Deleted(_)) => {
                        return
                    }
                    Ok(WatchEvent::Bookmark(_) | WatchEvent::Undecodable { .. }) => {}
                    Ok(WatchEvent::Error(e)) | Err(e) => {
                        log::debug!("watch certificate signing request {name}: {e}");
                        return;
                    }
                }
            }
        };
        futures_lite::future::or(watched, async {
            async_io::Timer::at(until + Duration::from_millis(50)).await;
        })
        .await;
    }
}

/// Checks a signed chain against the key it is for: PEM certificates, the
/// first one for `key`'s public key, within its validity. Returns the
/// leaf's facts and the DER chain.
pub fn check_issued(
    chain_pem: &[u8],
    key: &Key,
) -> Result<(
    super::x509::CertInfo,
    Vec<rustls::pki_types::CertificateDer<'static>>,
)> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the issued certificate is not valid PEM: {e}"))?;
    let leaf = chain
        .first()
        .context("the issued certificate holds no certificate")?;
    let info = super::x509::info(leaf).context("the issued certificate")?;
    if info.spki != key.spki() {
        bail!("the issued certificate is not for the key picolet requested it with");
    }
    if info.validity.not_after <= jiff::Timestamp::now() {
        bail!(
            "the issued certificate expired at {}",
            info.validity.not_after
        );
    }
    Ok((info, chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_pem_and_hides_itself() {
        let k = Key::generate().unwrap();
        let pem = k.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let k2 = Key::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(k.spki(), k2.spki());
        // 91-byte P-256 SPKI: 30 59 30 13 ...
        assert_eq!(k.spki().len(), 91);
        assert_eq!(&k.spki()[..4], &[0x30, 0x59, 0x30, 0x13]);
        let d = format!("{k:?}");
        assert!(d.starts_with("Key(ECDSA P-256, public key sha256:"), "{d}");
        assert!(!d.contains("PRIVATE"));
        assert!(Key::from_pem(b"garbage").is_err());
        assert!(Key::from_pkcs8(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }

    #[test]
    fn requests_read_back_with_subject_key_and_sans() {
        let k = Key::generate().unwrap();
        let s = Subject::node_serving(
            "edge-1",
            vec!["edge-1".into(), "edge-1.local".into()],
            vec!["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
        );
        let der = build_request(&k, &s).unwrap();
        let info = crate::kube::x509::csr_info(&der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("system:node:edge-1"));
        assert_eq!(info.organizations, vec!["system:nodes"]);
        assert_eq!(info.spki, k.spki());
        assert_eq!(info.dns_names, s.dns_names);
        assert_eq!(info.ip_addresses, s.ip_addresses);

        let der = build_request(&k, &Subject::node_client("edge-1")).unwrap();
        let info = crate::kube::x509::csr_info(&der).unwrap();
        assert!(info.dns_names.is_empty() && info.ip_addresses.is_empty());
        // The attributes are present and empty: [0] with no content.
        let n = info.spki.len();
        let pos = der.windows(n).position(|w| w == info.spki).unwrap();
        assert_eq!(&der[pos + n..pos + n + 2], &[0xa0, 0x00]);
    }

    /// `openssl req -verify` checks the signature and the structure.
    #[test]
    fn openssl_verifies_the_requests() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("no openssl: skipped");
            return;
        }
        let k = Key::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("picolet-csr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in [
            Subject::node_client("n1"),
            Subject::node_serving(
                "n1",
                vec!["n1".into()],
                vec!["192.168.1.20".parse().unwrap()],
            ),
        ]
        .iter()
        .enumerate()
        {
            let p = dir.join(format!("r{i}.pem"));
            let der_req = build_request(&k, s).unwrap();
            std::fs::write(&p, der::pem("CERTIFICATE REQUEST", &der_req)).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["req", "-verify", "-noout", "-text", "-in"])
                .arg(&p)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}{text}");
            assert!(
                err.contains("verify OK") || text.contains("verify OK"),
                "{err}"
            );
            assert!(
                text.contains("Subject: O=system:nodes, CN=system:node:n1")
                    || text.contains("Subject: O = system:nodes, CN = system:node:n1"),
                "{text}"
            );
            assert!(
                text.contains("prime256v1") || text.contains("P-256"),
                "{text}"
            );
            if i == 1 {
                assert!(text.contains("DNS:n1, IP Address:192.168.1.20"), "{text}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn digested_names_follow_upstream() {
        // Upstream computes sha512/256 over base64url(x) + "|" for the
        // public key, CN, each O and each usage; recomputed here from the
        // definition, and checked to move with each input.
        let spki = [1u8, 2, 3];
        let s = Subject::node_client("n1");
        let n = digested_name(&spki, &s, USAGES_CLIENT);
        let mut input = Vec::new();
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        for part in [
            &spki[..],
            b"system:node:n1",
            b"system:nodes",
            b"digital signature",
            b"client auth",
        ] {
            input.extend_from_slice(enc(part).as_bytes());
            input.push(b'|');
        }
        let want = enc(ring::digest::digest(&ring::digest::SHA512_256, &input).as_ref());
        assert_eq!(n, format!("node-csr-{want}"));
        assert_eq!(n.len(), "node-csr-".len() + 43);
        assert_ne!(n, digested_name(&[1, 2, 4], &s, USAGES_CLIENT));
        assert_ne!(
            n,
            digested_name(&spki, &Subject::node_client("n2"), USAGES_CLIENT)
        );
        assert_ne!(n, digested_name(&spki, &s, USAGES_SERVING));
    }

    fn csr_with(conds: &[(&str, &str)], cert: Option<&[u8]>) -> Csr {
        use k8s_openapi::api::certificates::v1::{
            CertificateSigningRequestCondition as C, CertificateSigningRequestStatus as S,
        };
        Csr {
            status: Some(S {
                certificate: cert.map(|c| k8s_openapi::ByteString(c.to_vec())),
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, st)| C {
                            type_: t.to_string(),
                            status: st.to_string(),
                            reason: Some(format!("{t}Reason")),
                            message: Some("by the test".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_from_conditions() {
        assert_eq!(
            outcome(&Csr::default()),
            Outcome::Pending { approved: false }
        );
        assert_eq!(
            outcome(&csr_with(&[("Approved", "True")], None)),
            Outcome::Pending { approved: true }
        );
        assert_eq!(
            outcome(&csr_with(&[("Approved", "True")], Some(b"PEM"))),
            Outcome::Issued(b"PEM".to_vec())
        );
        assert_eq!(
            outcome(&csr_with(&[("Denied", "True")], None)),
            Outcome::Denied("DeniedReason: by the test".into())
        );
        assert_eq!(
            outcome(&csr_with(&[("Approved", "True"), ("Failed", "True")], None)),
            Outcome::Failed("FailedReason: by the test".into())
        );
        // A condition with status False does not count.
        assert_eq!(
            outcome(&csr_with(&[("Denied", "False")], None)),
            Outcome::Pending { approved: false }
        );
        // An empty certificate is not one.
        assert_eq!(
            outcome(&csr_with(&[("Approved", "True")], Some(b""))),
            Outcome::Pending { approved: true }
        );
    }
}
