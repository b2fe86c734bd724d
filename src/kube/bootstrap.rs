//! TLS bootstrap (`--bootstrap-kubeconfig`), as upstream's kubelet does
//! it: when the kubeconfig is missing, does not load, or its client
//! certificate expired, picolet makes a key, files a
//! CertificateSigningRequest for `system:node:<name>` (signer
//! `kubernetes.io/kube-apiserver-client-kubelet`) with the bootstrap
//! credentials, waits for it to be approved and signed, writes
//! `<cert-dir>/kubelet-client-current.pem` and a kubeconfig that points at
//! it, and goes on as a member with that.
//!
//! The key of a request still waiting is kept
//! (`kubelet-client.key.tmp`): a restarted picolet finds its request again
//! by name instead of filing another. Every failure (token refused, request
//! denied or not approved in time) removes it, so nothing half-made is left;
//! the kubeconfig is written last, atomically, after the certificate.

use super::certstore::{self, Store};
use super::csr::{self, Key, Subject};
use super::kubeconfig::{Kubeconfig, Source};
use super::transport::Transport;
use super::Client;
use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// Where the bootstrap reads and writes.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `--kubeconfig`: read when usable, else written.
    pub kubeconfig: PathBuf,
    /// `--bootstrap-kubeconfig`: the credentials that may ask for a
    /// client certificate (a bootstrap token, usually).
    pub bootstrap_kubeconfig: PathBuf,
    /// `--cert-dir`.
    pub cert_dir: PathBuf,
    pub node_name: String,
    /// How long a request may wait for approval and signing.
    pub timeout: Duration,
}

/// How an attempt ended when it did not produce a kubeconfig.
#[derive(Debug)]
pub enum Failure {
    /// The bootstrap kubeconfig cannot be read or used.
    Config(anyhow::Error),
    /// The server refused the bootstrap credentials (401/403).
    Refused(anyhow::Error),
    /// The request was denied, failed or not approved in time.
    Request(anyhow::Error),
    /// Anything else (server unreachable, disk).
    Other(anyhow::Error),
}

impl Failure {
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Config(e) | Failure::Refused(e) | Failure::Request(e) | Failure::Other(e) => e,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error())
    }
}

/// The kubeconfig when it can be used as it is, else why not.
pub fn usable_kubeconfig(path: &Path) -> Result<Kubeconfig, String> {
    match Kubeconfig::load(path) {
        Ok(kc) => match not_yet_valid(&kc) {
            None => Ok(kc),
            Some(m) => Err(m),
        },
        Err(e) => Err(format!("{e:#}")),
    }
}

/// A client certificate whose validity has not begun is as useless as an
/// expired one (`Kubeconfig::load` checks only the end).
fn not_yet_valid(kc: &Kubeconfig) -> Option<String> {
    let tls = super::tls::TlsMaterial::read(kc).ok()?;
    let v = super::x509::validity(tls.client_chain.first()?).ok()?;
    (v.not_before > jiff::Timestamp::now())
        .then(|| format!("client certificate not valid before {}", v.not_before))
}

/// A string as a YAML double-quoted scalar (JSON's escaping is YAML's).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The kubeconfig upstream's kubelet writes after bootstrapping: the
/// bootstrap kubeconfig's cluster (server, CA, TLS settings) and the
/// client certificate and key in `pem`.
pub fn member_kubeconfig(boot: &Kubeconfig, pem: &Path) -> String {
    let mut cluster = format!("    server: {}\n", q(&boot.server));
    match &boot.ca {
        Some(Source::File(p)) => {
            cluster += &format!("    certificate-authority: {}\n", q(&p.to_string_lossy()))
        }
        Some(Source::Inline(b)) => {
            let b = base64::engine::general_purpose::STANDARD.encode(b);
            cluster += &format!("    certificate-authority-data: {b}\n");
        }
        None => {}
    }
    if boot.insecure_skip_tls_verify {
        cluster += "    insecure-skip-tls-verify: true\n";
    }
    if let Some(n) = &boot.tls_server_name {
        cluster += &format!("    tls-server-name: {}\n", q(n));
    }
    let pem = q(&pem.to_string_lossy());
    format!(
        "# Written by picolet's TLS bootstrap; the certificate rotates in place.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: default-cluster\n  cluster:\n{cluster}\
         contexts:\n\
         - name: default-context\n  context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\n\
         current-context: default-context\n\
         users:\n\
         - name: default-auth\n  user:\n    client-certificate: {pem}\n    client-key: {pem}\n"
    )
}

/// A client for the bootstrap kubeconfig (its own connection, closed when
/// dropped).
async fn bootstrap_client(path: &Path) -> Result<(Kubeconfig, Client)> {
    let p = path.to_path_buf();
    let kc = crate::rt::unblock(move || Kubeconfig::load(&p)).await?;
    let t = Transport::new(kc.clone())?;
    Ok((kc, Client::new(t, 0.0, 1)))
}

/// Logs a request still waiting, with what to do about it.
fn pending_notice(what: &'static str) -> impl Fn(&str, Duration, bool) {
    move |name: &str, waited: Duration, approved: bool| {
        if approved {
            log::warn!(
                "{what}: certificate signing request {name} approved {} ago but not signed yet: \
                 is the controller-manager's signer running (--cluster-signing-cert-file)?",
                crate::util::duration::format(Duration::from_secs(waited.as_secs()))
            );
        } else {
            log::warn!(
                "{what}: certificate signing request {name} still waiting for approval after {}: \
                 approve it with `kubectl certificate approve {name}`",
                crate::util::duration::format(Duration::from_secs(waited.as_secs()))
            );
        }
    }
}

/// How the TLS bootstrap names itself in messages.
pub const BOOTSTRAP: &str = "TLS bootstrap";

/// Files a client certificate request with `client` for `node`, waits
/// for it and writes the result to `store`. `key` is the request's key;
/// the caller removes a kept key on failure.
pub async fn request_client_certificate(
    client: &Client,
    store: &Store,
    key: &Key,
    node: &str,
    timeout: Duration,
    what: &'static str,
) -> Result<(PathBuf, super::x509::CertInfo), Failure> {
    let subject = Subject::node_client(node);
    let req = csr::Request {
        key,
        subject: &subject,
        signer: csr::SIGNER_CLIENT,
        usages: csr::USAGES_CLIENT,
    };
    let name = match csr::submit(client, &req).await {
        Ok(n) => n,
        Err(csr::SubmitError::Api(e)) if e.is_unauthorized() => {
            return Err(Failure::Refused(if what == BOOTSTRAP {
                anyhow!(
                    "the API server refused the credentials ({e}): \
                     the bootstrap token is wrong, expired or deleted"
                )
            } else {
                anyhow!("the API server refused the client certificate ({e})")
            }))
        }
        Err(csr::SubmitError::Api(e)) if e.is_forbidden() => {
            return Err(Failure::Refused(if what == BOOTSTRAP {
                anyhow!(
                    "the credentials may not request certificates ({e}): \
                     is the token's group bound to system:node-bootstrapper?"
                )
            } else {
                anyhow!("this node may not request certificates ({e})")
            }))
        }
        Err(csr::SubmitError::Api(e)) => {
            return Err(Failure::Other(
                anyhow!(e).context("create the certificate signing request"),
            ))
        }
        Err(csr::SubmitError::Local(e)) => return Err(Failure::Request(e)),
    };
    log::info!(
        "{what}: certificate signing request {name} filed for {} (signer {}); waiting for it to be \
         approved and signed",
        subject.common_name,
        csr::SIGNER_CLIENT
    );
    let notice = pending_notice(what);
    let chain = csr::wait(client, &name, timeout, &notice)
        .await
        .map_err(Failure::Request)?;
    let (info, _) = csr::check_issued(&chain, key)
        .with_context(|| format!("certificate signing request {name}"))
        .map_err(Failure::Request)?;
    if info.common_name.as_deref() != Some(subject.common_name.as_str()) {
        return Err(Failure::Request(anyhow!(
            "certificate signing request {name}: the certificate is for {:?}, not {}",
            info.common_name,
            subject.common_name
        )));
    }
    let s = store.clone();
    let k = key.try_clone().map_err(Failure::Other)?;
    let path = crate::rt::unblock(move || s.update(&chain, &k))
        .await
        .map_err(Failure::Other)?;
    Ok((path, info))
}

impl Bootstrap {
    /// The bootstrap of a `picolet run` with `--bootstrap-kubeconfig`.
    pub fn from_config(cfg: &crate::config::Config, kubeconfig: &Path) -> Option<Bootstrap> {
        Some(Bootstrap {
            kubeconfig: kubeconfig.to_path_buf(),
            bootstrap_kubeconfig: cfg.bootstrap_kubeconfig.clone()?,
            cert_dir: cfg.cert_dir(),
            node_name: cfg.node_name.clone(),
            timeout: cfg.kubelet.picolet.certificate_request_timeout,
        })
    }

    fn store(&self) -> Store {
        Store::new(&self.cert_dir, certstore::CLIENT)
    }

    /// One attempt: request a certificate with the bootstrap credentials
    /// and write it and the kubeconfig. Leaves no key behind on failure.
    pub async fn attempt(&self) -> Result<Kubeconfig, Failure> {
        let (boot, client) = bootstrap_client(&self.bootstrap_kubeconfig)
            .await
            .map_err(|e| Failure::Config(e.context("bootstrap kubeconfig")))?;
        let store = self.store();
        let s = store.clone();
        let key = crate::rt::unblock(move || s.pending_key())
            .await
            .map_err(Failure::Other)?;
        let res = request_client_certificate(
            &client,
            &store,
            &key,
            &self.node_name,
            self.timeout,
            BOOTSTRAP,
        )
        .await;
        let (_, info) = match res {
            Ok(r) => r,
            Err(e) => {
                // A request the server still holds as pending is resumed
                // only by a restart in the middle of the wait; an error
                // here ends it.
                store.remove_pending_key();
                return Err(e);
            }
        };
        store.remove_pending_key();
        // Absolute: the kubeconfig resolves relative paths against its own dir.
        let pem =
            std::path::absolute(store.current_path()).unwrap_or_else(|_| store.current_path());
        let text = member_kubeconfig(&boot, &pem);
        let path = self.kubeconfig.clone();
        crate::rt::unblock(move || {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            }
            certstore::write_private(&path, text.as_bytes())?;
            Kubeconfig::load(&path)
        })
        .await
        .inspect(|kc| {
            log::info!(
                "TLS bootstrap: client certificate for {} valid until {}; wrote {} and {}",
                info.common_name.as_deref().unwrap_or("?"),
                info.validity.not_after,
                store.current_path().display(),
                kc.path.display()
            );
        })
        .map_err(Failure::Other)
    }

    /// The kubeconfig, bootstrapped when it cannot be used as it is;
    /// tries again until it works (every 30 s, longer after a denial),
    /// logging each new problem once. Local pods run meanwhile.
    pub async fn obtain(&self) -> Kubeconfig {
        let mut last = String::new();
        let mut denied =
            crate::util::Backoff::new(Duration::from_secs(30), Duration::from_secs(3600), 0.2);
        loop {
            let p = self.kubeconfig.clone();
            let problem = match crate::rt::unblock(move || usable_kubeconfig(&p)).await {
                Ok(kc) => return kc,
                Err(m) => m,
            };
            let msg = format!("kubeconfig {}: {problem}", self.kubeconfig.display());
            if msg != last {
                log::info!(
                    "{msg}; requesting a client certificate with the bootstrap kubeconfig {}",
                    self.bootstrap_kubeconfig.display()
                );
                last = msg;
            }
            let retry = match self.attempt().await {
                Ok(kc) => return kc,
                Err(f) => {
                    let (retry, hint) = match &f {
                        Failure::Request(_) => (denied.next_delay(), ""),
                        Failure::Refused(_) => (
                            Duration::from_secs(30),
                            " (a new token: `kubeadm token create`, then a new \
                             bootstrap kubeconfig or `picolet join`)",
                        ),
                        _ => (Duration::from_secs(30), ""),
                    };
                    log::error!(
                        "TLS bootstrap failed: {f}{hint}; not joining the cluster, trying again \
                         in {}; local pods keep running",
                        crate::util::duration::format(Duration::from_secs(retry.as_secs()))
                    );
                    retry
                }
            };
            async_io::Timer::after(retry).await;
        }
    }
}

/// Builds the bootstrap client's transport lazily for the rotation's
/// fallback (an expired certificate cannot renew itself).
pub async fn fallback_client(bootstrap_kubeconfig: &Path) -> Result<Rc<Client>> {
    let (_, c) = bootstrap_client(bootstrap_kubeconfig).await?;
    Ok(Rc::new(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_kubeconfig_keeps_the_cluster_and_points_at_the_pem() {
        let boot = Kubeconfig::parse(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             contexts: [{name: c, context: {cluster: k, user: u}}]\n\
             clusters: [{name: k, cluster: {server: 'https://10.0.0.1:6443', \
             certificate-authority-data: aGVsbG8=, tls-server-name: api}}]\n\
             users: [{name: u, user: {token: abcdef.0123456789abcdef}}]\n",
            Path::new("/etc/picolet/bootstrap-kubeconfig"),
            Path::new("/etc/picolet"),
        )
        .unwrap();
        let text = member_kubeconfig(
            &boot,
            Path::new("/var/lib/picolet/pki/kubelet-client-current.pem"),
        );
        assert!(
            !text.contains("0123456789abcdef"),
            "the token must not be copied"
        );
        let kc = Kubeconfig::parse(&text, Path::new("/x/kubeconfig"), Path::new("/x")).unwrap();
        assert_eq!(kc.server, "https://10.0.0.1:6443");
        assert_eq!(kc.ca, Some(Source::Inline(b"hello".to_vec())));
        assert_eq!(kc.tls_server_name.as_deref(), Some("api"));
        let pem = PathBuf::from("/var/lib/picolet/pki/kubelet-client-current.pem");
        assert_eq!(
            kc.credentials.client_cert,
            Some((Source::File(pem.clone()), Source::File(pem)))
        );
        assert_eq!(kc.credentials.token, None);
        assert_eq!(kc.namespace.as_deref(), Some("default"));

        // A CA file stays a file reference.
        let boot = Kubeconfig {
            ca: Some(Source::File("/etc/picolet/pki/ca.crt".into())),
            ..boot
        };
        let text = member_kubeconfig(&boot, Path::new("/p/c.pem"));
        let kc = Kubeconfig::parse(&text, Path::new("/x/kubeconfig"), Path::new("/x")).unwrap();
        assert_eq!(kc.ca, Some(Source::File("/etc/picolet/pki/ca.crt".into())));
    }

    #[test]
    fn problems_of_a_kubeconfig_are_named() {
        let d = std::env::temp_dir().join(format!("picolet-boot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("kubeconfig");
        let m = usable_kubeconfig(&p).unwrap_err();
        assert!(m.contains("read kubeconfig"), "{m}");
        // Points at a corrupt certificate file.
        std::fs::write(d.join("c.pem"), "garbage").unwrap();
        let boot = Kubeconfig::parse(
            "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n\
             clusters: [{name: k, cluster: {server: 'https://h:1'}}]\n",
            &p,
            &d,
        )
        .unwrap();
        std::fs::write(&p, member_kubeconfig(&boot, &d.join("c.pem"))).unwrap();
        let m = usable_kubeconfig(&p).unwrap_err();
        assert!(m.contains("c.pem"), "{m}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
