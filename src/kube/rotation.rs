//! Certificate rotation (`rotateCertificates`, `serverTLSBootstrap`), as
//! client-go's certificate manager: each certificate is renewed at a
//! random point between 70 % and 90 % of its lifetime, with a new key,
//! through a new CertificateSigningRequest.
//!
//! * Client: the request is authenticated by the current certificate
//!   (kubeadm's `selfnodeclient` rule approves it), or by the bootstrap
//!   kubeconfig once the current one expired. The new pair replaces
//!   `kubelet-client-current.pem`, then [`Transport::reconnect`] moves new
//!   requests to a connection made with it; watches on the old connection
//!   run on to their end, so nothing is interrupted.
//! * Serving: a `kubernetes.io/kubelet-serving` request for the node's
//!   names and addresses, renewed the same way and also when those change;
//!   the result goes to `kubelet-server-current.pem` and to
//!   [`super::serving::handle`].
//!
//! The lifetime counts from `notBefore`, except that a signer back-dates
//! `notBefore` (kube-controller-manager by 5 min) and a certificate
//! counts from when picolet wrote it when that is up to 15 min later:
//! otherwise a 10-minute certificate would be due for renewal the moment
//! it arrives.
//!
//! [`Transport::reconnect`]: super::transport::Transport::reconnect

use super::certstore::{self, Current, Store};
use super::csr::{self, Key, Subject};
use super::Client;
use crate::util::Backoff;
use anyhow::{anyhow, Context, Result};
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// The share of the lifetime at which to renew, for a uniform `r` in
/// [0, 1): [0.7, 0.9), as client-go's `jitteryDuration` (70 % plus up to
/// 20 %).
pub fn fraction(r: f64) -> f64 {
    0.7 + 0.2 * r.clamp(0.0, 1.0)
}

/// How much later than `notBefore` a certificate may have been written
/// and still count from when it was written (a signer's back-dating).
pub const BACKDATE_ALLOWANCE: Duration = Duration::from_secs(15 * 60);

/// When to renew a certificate valid from `not_before` to `not_after`,
/// written at `written`, at `fraction` of its lifetime.
pub fn deadline(
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
    written: Option<jiff::Timestamp>,
    fraction: f64,
) -> jiff::Timestamp {
    let allowance = jiff::SignedDuration::try_from(BACKDATE_ALLOWANCE).unwrap_or_default();
    let start = match written {
        Some(w) if w > not_before && w < not_after && w.duration_since(not_before) <= allowance => {
            w
        }
        _ => not_before,
    };
    let life = not_after.duration_since(start).as_secs_f64().max(0.0);
    let at = jiff::SignedDuration::try_from_secs_f64(life * fraction).unwrap_or_default();
    start.checked_add(at).unwrap_or(not_after)
}

/// Sleeps until `at` (wall clock), in steps of at most 10 minutes so a
/// clock change or a suspended machine is noticed.
async fn sleep_until(at: jiff::Timestamp) {
    loop {
        let left = at.duration_since(jiff::Timestamp::now());
        if left <= jiff::SignedDuration::ZERO {
            return;
        }
        let d = Duration::try_from(left)
            .unwrap_or_default()
            .min(Duration::from_secs(600));
        async_io::Timer::after(d).await;
    }
}

fn describe(d: jiff::SignedDuration) -> String {
    crate::util::duration::format(Duration::from_secs(u64::try_from(d.as_secs()).unwrap_or(0)))
}

async fn load(store: &Store) -> Result<Option<Current>> {
    let s = store.clone();
    crate::rt::unblock(move || s.load_current()).await
}

/// What the client rotation needs.
pub struct ClientRotation {
    /// The node's client: requests go through it, and its transport is
    /// reconnected after each rotation.
    pub client: Rc<Client>,
    pub store: Store,
    pub node_name: String,
    /// Asked instead once the current certificate expired.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// How long a request may wait for approval and signing.
    pub timeout: Duration,
}

/// Whether the kubeconfig's client certificate is `store`'s current pair
/// (what the bootstrap writes): only then does picolet rotate it.
pub fn manages(kc: &super::Kubeconfig, store: &Store) -> bool {
    use super::kubeconfig::Source;
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let cur = abs(&store.current_path());
    matches!(&kc.credentials.client_cert,
        Some((Source::File(c), Source::File(k))) if abs(c) == cur && abs(k) == cur)
}

impl ClientRotation {
    /// Renews the client certificate before it expires, forever.
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(300), 0.5);
        let mut announced: Option<PathBuf> = None;
        let mut fresh = false;
        loop {
            let expired = match load(&self.store).await {
                Ok(Some(c)) => {
                    let at = deadline(
                        c.info.validity.not_before,
                        c.info.validity.not_after,
                        c.written,
                        fraction(crate::util::random_fraction()),
                    );
                    let now = jiff::Timestamp::now();
                    let target = std::fs::read_link(&c.path).ok();
                    if at > now {
                        if announced != target {
                            log::info!(
                                "client certificate valid until {}; renewal in {}",
                                c.info.validity.not_after,
                                describe(at.duration_since(now))
                            );
                            announced = target;
                        }
                        sleep_until(at).await;
                        // Read again: it may have changed meanwhile.
                        fresh = false;
                        continue;
                    }
                    if std::mem::take(&mut fresh) {
                        // Due the moment it arrived: never renew in a loop.
                        log::warn!(
                            "client certificate valid until {} is due for renewal already",
                            c.info.validity.not_after
                        );
                        async_io::Timer::after(Duration::from_secs(10)).await;
                    }
                    c.info.validity.not_after <= now
                }
                Ok(None) => {
                    log::warn!(
                        "client certificate rotation: {} is gone; requesting a new certificate",
                        self.store.current_path().display()
                    );
                    true
                }
                Err(e) => {
                    log::warn!("client certificate rotation: {e:#}; requesting a new certificate");
                    false
                }
            };
            match self.rotate(expired).await {
                Ok(()) => {
                    backoff.reset();
                    fresh = true;
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    log::warn!(
                        "client certificate rotation failed: {e:#}; trying again in {}",
                        crate::util::duration::format(Duration::from_secs(d.as_secs()))
                    );
                    async_io::Timer::after(d).await;
                }
            }
        }
    }

    async fn rotate(&self, expired: bool) -> Result<()> {
        let key = Key::generate()?;
        let client = match (&self.bootstrap_kubeconfig, expired) {
            (Some(b), true) => {
                log::info!(
                    "client certificate rotation: the certificate expired; asking with the \
                     bootstrap kubeconfig {}",
                    b.display()
                );
                super::bootstrap::fallback_client(b).await?
            }
            _ => self.client.clone(),
        };
        let (path, info) = super::bootstrap::request_client_certificate(
            &client,
            &self.store,
            &key,
            &self.node_name,
            self.timeout,
            "client certificate rotation",
        )
        .await
        .map_err(|f| anyhow!("{f}"))?;
        self.client.transport().reconnect();
        log::info!(
            "client certificate rotated: {} valid until {}; new requests use it",
            path.display(),
            info.validity.not_after
        );
        Ok(())
    }
}

/// What the serving certificate manager needs.
pub struct ServingRotation {
    pub client: Rc<Client>,
    pub store: Store,
    pub node_name: String,
    /// The node's host names and addresses: the certificate's SANs.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub handle: super::serving::ServingCert,
}

/// The chain and key PEM of a `-current.pem` file, apart.
fn split_pem(pem: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    use rustls::pki_types::pem::{PemObject, SectionKind};
    let mut chain = String::new();
    let mut key = String::new();
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| anyhow!("invalid PEM: {e}"))?;
        match kind {
            SectionKind::Certificate => chain += &super::der::pem("CERTIFICATE", &der),
            SectionKind::PrivateKey => key += &super::der::pem("PRIVATE KEY", &der),
            SectionKind::EcPrivateKey => key += &super::der::pem("EC PRIVATE KEY", &der),
            SectionKind::RsaPrivateKey => key += &super::der::pem("RSA PRIVATE KEY", &der),
            _ => {}
        }
    }
    Ok((chain.into_bytes(), key.into_bytes()))
}

fn same_names(c: &Current, dns: &[String], ips: &[IpAddr]) -> bool {
    let Ok((mut d, mut i)) = super::x509::subject_alt_names(&c.chain[0]) else {
        return false;
    };
    let (mut wd, mut wi) = (dns.to_vec(), ips.to_vec());
    for v in [&mut d, &mut wd] {
        v.sort();
        v.dedup();
    }
    for v in [&mut i, &mut wi] {
        v.sort();
        v.dedup();
    }
    d == wd && i == wi
}

impl ServingRotation {
    /// Publishes the current serving certificate and renews it before it
    /// expires (or when the node's names change), forever.
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(1800), 0.5);
        let mut published: Option<(PathBuf, Option<jiff::Timestamp>)> = None;
        let mut fresh = false;
        loop {
            match load(&self.store).await {
                Ok(Some(c)) if same_names(&c, &self.dns_names, &self.ip_addresses) => {
                    let now = jiff::Timestamp::now();
                    if c.info.validity.not_after > now {
                        let target = std::fs::read_link(&c.path).unwrap_or_default();
                        if published.as_ref() != Some(&(target.clone(), c.written)) {
                            match std::fs::read(&c.path)
                                .context("read")
                                .and_then(|p| split_pem(&p))
                                .and_then(|(chain, key)| self.handle.set(&chain, &key))
                            {
                                Ok(()) => log::info!(
                                    "serving certificate {} valid until {} in use",
                                    c.path.display(),
                                    c.info.validity.not_after
                                ),
                                Err(e) => log::warn!("serving certificate {}: {e:#}", c.path.display()),
                            }
                            published = Some((target, c.written));
                        }
                    }
                    let at = deadline(
                        c.info.validity.not_before,
                        c.info.validity.not_after,
                        c.written,
                        fraction(crate::util::random_fraction()),
                    );
                    if at > now {
                        log::debug!(
                            "serving certificate: renewal in {}",
                            describe(at.duration_since(now))
                        );
                        sleep_until(at).await;
                        fresh = false;
                        continue;
                    }
                    if std::mem::take(&mut fresh) {
                        // Due the moment it arrived: never renew in a loop.
                        async_io::Timer::after(Duration::from_secs(10)).await;
                    }
                }
                Ok(Some(_)) => log::info!(
                    "serving certificate: the node's names changed ({:?}, {:?}); requesting a new one",
                    self.dns_names,
                    self.ip_addresses
                ),
                Ok(None) => {}
                Err(e) => log::warn!("serving certificate: {e:#}; requesting a new one"),
            }
            match self.request().await {
                Ok(()) => {
                    backoff.reset();
                    fresh = true;
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    log::warn!(
                        "serving certificate: {e:#}; trying again in {}",
                        crate::util::duration::format(Duration::from_secs(d.as_secs()))
                    );
                    async_io::Timer::after(d).await;
                }
            }
        }
    }

    async fn request(&self) -> Result<()> {
        let s = self.store.clone();
        let key = crate::rt::unblock(move || s.pending_key()).await?;
        let res = self.request_with(&key).await;
        if res.is_err() {
            self.store.remove_pending_key();
        }
        res
    }

    async fn request_with(&self, key: &Key) -> Result<()> {
        let subject = Subject::node_serving(
            &self.node_name,
            self.dns_names.clone(),
            self.ip_addresses.clone(),
        );
        let req = csr::Request {
            key,
            subject: &subject,
            signer: csr::SIGNER_SERVING,
            usages: csr::USAGES_SERVING,
        };
        let name = csr::submit(&self.client, &req)
            .await
            .map_err(|e| anyhow!("create the certificate signing request: {e}"))?;
        log::info!(
            "serving certificate: certificate signing request {name} filed for {:?} {:?} \
             (signer {}); it needs approval: `kubectl certificate approve {name}`",
            self.dns_names,
            self.ip_addresses,
            csr::SIGNER_SERVING
        );
        let notice = |n: &str, waited: Duration, approved: bool| {
            if !approved {
                log::info!(
                    "serving certificate: {n} still waiting for approval after {} \
                     (`kubectl certificate approve {n}`)",
                    crate::util::duration::format(Duration::from_secs(waited.as_secs()))
                );
            }
        };
        // Serving requests wait for a person: no end but a long one.
        let chain = csr::wait(
            &self.client,
            &name,
            Duration::from_secs(7 * 24 * 3600),
            &notice,
        )
        .await?;
        let (info, _) = csr::check_issued(&chain, key)?;
        let s = self.store.clone();
        let k = key.try_clone()?;
        let path = crate::rt::unblock(move || s.update(&chain, &k)).await?;
        self.store.remove_pending_key();
        log::info!(
            "serving certificate: {name} signed; {} valid until {}",
            path.display(),
            info.validity.not_after
        );
        Ok(())
    }
}

/// Starts what `rotateCertificates` and `serverTLSBootstrap` ask for on
/// a member with `client`; the tasks run while the handles live.
pub fn start(
    cfg: &crate::config::Config,
    client: &Rc<Client>,
    node_ip: IpAddr,
) -> Vec<smol::Task<()>> {
    let mut tasks = Vec::new();
    let kc = &cfg.kubelet;
    let store = Store::new(cfg.cert_dir(), certstore::CLIENT);
    let kubeconfig = client.transport().kubeconfig();
    if kc.rotate_certificates && kubeconfig.credentials.client_cert.is_some() {
        if manages(kubeconfig, &store) {
            tasks.push(crate::rt::spawn(
                ClientRotation {
                    client: client.clone(),
                    store,
                    node_name: cfg.node_name.clone(),
                    bootstrap_kubeconfig: cfg.bootstrap_kubeconfig.clone(),
                    timeout: kc.picolet.certificate_request_timeout,
                }
                .run(),
            ));
        } else {
            log::info!(
                "rotateCertificates: the client certificate of {} is not {}: it is not rotated                  (a TLS bootstrap with --bootstrap-kubeconfig writes one that is)",
                kubeconfig.path.display(),
                store.current_path().display()
            );
        }
    }
    if kc.server_tls_bootstrap && kc.enable_server {
        tasks.push(crate::rt::spawn(
            ServingRotation {
                client: client.clone(),
                store: serving_store(&cfg.cert_dir()),
                node_name: cfg.node_name.clone(),
                dns_names: vec![cfg.node_name.clone()],
                ip_addresses: vec![node_ip],
                handle: super::serving::handle(),
            }
            .run(),
        ));
    }
    tasks
}

/// The serving certificate's store in `cert_dir`.
pub fn serving_store(cert_dir: &std::path::Path) -> Store {
    Store::new(cert_dir, certstore::SERVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn fractions_span_70_to_90_percent() {
        assert_eq!(fraction(0.0), 0.7);
        assert!((fraction(0.5) - 0.8).abs() < 1e-12);
        assert!(fraction(0.999_999) < 0.9);
        assert_eq!(fraction(-1.0), 0.7);
        assert!((fraction(7.0) - 0.9).abs() < 1e-12);
        for _ in 0..1000 {
            let f = fraction(crate::util::random_fraction());
            assert!((0.7..0.9).contains(&f), "{f}");
        }
    }

    #[test]
    fn deadlines_follow_upstream_for_long_certificates() {
        // A year from notBefore: 70 % is 255.5 days, 90 % 328.5 days.
        let nb = ts("2026-01-01T00:00:00Z");
        let na = ts("2027-01-01T00:00:00Z");
        assert_eq!(deadline(nb, na, None, 0.7), ts("2026-09-13T12:00:00Z"));
        assert_eq!(deadline(nb, na, None, 0.9), ts("2026-11-25T12:00:00Z"));
        // Written 5 minutes after notBefore (back-dated): from then.
        let w = ts("2026-01-01T00:05:00Z");
        let d = deadline(nb, na, Some(w), 0.7);
        let life = na.duration_since(w).as_secs_f64();
        assert_eq!(
            d,
            w.checked_add(jiff::SignedDuration::from_secs_f64(life * 0.7))
                .unwrap()
        );
        // Written long after (copied in later): upstream's rule.
        let w = ts("2026-06-01T00:00:00Z");
        assert_eq!(deadline(nb, na, Some(w), 0.7), ts("2026-09-13T12:00:00Z"));
        // A write time outside the validity is ignored.
        assert_eq!(
            deadline(nb, na, Some(ts("2025-01-01T00:00:00Z")), 0.7),
            ts("2026-09-13T12:00:00Z")
        );
    }

    #[test]
    fn short_backdated_certificates_are_not_due_on_arrival() {
        // kube-controller-manager with --cluster-signing-duration=10m:
        // notBefore = now - 5 min, notAfter = now + 10 min.
        let issued = ts("2026-03-01T12:00:00Z");
        let nb = ts("2026-03-01T11:55:00Z");
        let na = ts("2026-03-01T12:10:00Z");
        // Upstream's rule would renew at 11:55 + 10.5..13.5 min: 12:05:30
        // at the earliest; counting from arrival: 12:07..12:09.
        assert_eq!(
            deadline(nb, na, Some(issued), 0.7),
            ts("2026-03-01T12:07:00Z")
        );
        assert_eq!(
            deadline(nb, na, Some(issued), 0.9),
            ts("2026-03-01T12:09:00Z")
        );
        // With a 1-minute certificate the deadline is still ahead.
        let na = ts("2026-03-01T12:01:00Z");
        let d = deadline(nb, na, Some(issued), 0.7);
        assert_eq!(d, ts("2026-03-01T12:00:42Z"));
        assert!(d > issued);
    }

    #[test]
    fn pem_files_split_into_chain_and_key() {
        let cert = include_bytes!("../http/testdata/ec.crt");
        let key = include_bytes!("../http/testdata/ec-pkcs8.key");
        let (c, k) = split_pem(&[&cert[..], &key[..]].concat()).unwrap();
        let der = |p: &[u8]| {
            use rustls::pki_types::pem::{PemObject, SectionKind};
            <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(p)
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(der(&c), der(cert));
        assert_eq!(der(&k), der(key));
        let s = super::super::serving::ServingCert::default();
        s.set(&c, &k).unwrap();
    }
}
