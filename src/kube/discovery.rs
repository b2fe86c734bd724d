//! kubeadm's token discovery, as `kubeadm join --token ...
//! --discovery-token-ca-cert-hash sha256:...` does it: read the
//! `kube-public/cluster-info` ConfigMap without credentials and without
//! trusting the server yet, check its detached JWS signature for the token
//! (`jws-kubeconfig-<token id>`, HS256 keyed with the token secret; the
//! controller-manager's bootstrapsigner writes one per signing token), pin
//! the CA it names by the SHA-256 of its public key, then read the
//! ConfigMap again over TLS verified with that CA and require the same
//! content. The result is the CA and a bootstrap kubeconfig.
//!
//! The token secret is never logged or shown: [`Token`]'s `Debug` shows
//! the ID only.

use super::kubeconfig::{Credentials, Kubeconfig, Source};
use super::transport::Transport;
use super::Client;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use k8s_openapi::api::core::v1::ConfigMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}.<secret>)", self.id)
    }
}

impl Token {
    pub fn parse(s: &str) -> Result<Token> {
        let ok = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match s.trim().split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(Token {
                id: id.into(),
                secret: secret.into(),
            }),
            // Not echoed: it may be a real secret with a typo.
            _ => bail!("the token is not a bootstrap token: want [a-z0-9]{{6}}.[a-z0-9]{{16}}"),
        }
    }

    /// `id.secret`, for the bootstrap kubeconfig.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

fn b64url(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| anyhow!("invalid base64url"))
}

/// Checks `jws` (compact serialization with the payload left out:
/// `header..signature`) over `content` for `token`: header `alg` HS256,
/// `kid` the token ID, and the HMAC-SHA256 keyed with the token secret
/// (zero-padded to 32 bytes, as kubeadm's signer pads it).
pub fn verify_detached_jws(jws: &str, content: &[u8], token: &Token) -> Result<()> {
    let parts: Vec<&str> = jws.trim().split('.').collect();
    let [header, payload, sig] = parts[..] else {
        bail!("not a compact JWS (want header..signature)");
    };
    if !payload.is_empty() {
        bail!("not a detached JWS (it carries a payload)");
    }
    let h: serde_json::Value = serde_json::from_slice(&b64url(header).context("JWS header")?)
        .context("JWS header is not JSON")?;
    match h.get("alg").and_then(|a| a.as_str()) {
        Some("HS256") => {}
        other => bail!("JWS algorithm {other:?}, want \"HS256\""),
    }
    if let Some(kid) = h.get("kid") {
        if kid.as_str() != Some(token.id.as_str()) {
            bail!("JWS key ID {kid} is not the token ID {:?}", token.id);
        }
    }
    let sig = b64url(sig).context("JWS signature")?;
    let mut key = token.secret.as_bytes().to_vec();
    if key.len() < 32 {
        key.resize(32, 0);
    }
    let input = format!(
        "{header}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(content)
    );
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        input.as_bytes(),
        &sig,
    )
    .map_err(|_| anyhow!("the signature does not verify with this token's secret"))
}

/// `sha256:<hex>` of a DER SubjectPublicKeyInfo: kubeadm's CA pin.
pub fn ca_cert_hash(spki: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, spki);
    format!("sha256:{}", crate::util::hex(d.as_ref()))
}

/// Parses `--discovery-token-ca-cert-hash` values (`sha256:` and 64 hex
/// digits).
pub fn parse_pins(pins: &[String]) -> Result<Vec<String>> {
    pins.iter()
        .map(|p| {
            let Some((alg, hex)) = p.trim().split_once(':') else {
                bail!("CA hash {p:?}: want \"sha256:<64 hex digits>\"");
            };
            if !alg.eq_ignore_ascii_case("sha256") {
                bail!("CA hash {p:?}: unsupported hash {alg:?} (only sha256)");
            }
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("CA hash {p:?}: want 64 hex digits after \"sha256:\"");
            }
            Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
        })
        .collect()
}

/// The CA certificates of a PEM bundle, each with its pin.
pub fn ca_hashes(ca_pem: &[u8]) -> Result<Vec<String>> {
    let certs = super::certstore::read_chain(ca_pem, "cluster CA")?;
    certs
        .iter()
        .map(|c| {
            Ok(ca_cert_hash(
                &super::x509::info(c).context("cluster CA")?.spki,
            ))
        })
        .collect()
}

/// What discovery found: a CA to trust and the endpoint to use.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The API server as given (`https://host:port`).
    pub server: String,
    /// The cluster CA (PEM) from cluster-info.
    pub ca_pem: Vec<u8>,
    /// The server cluster-info names (informational).
    pub advertised_server: Option<String>,
}

/// `https://host:port` from `host:port` or a URL.
pub fn normalize_server(s: &str) -> Result<String> {
    let s = s.trim().trim_end_matches('/');
    let url = if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    };
    if !url.starts_with("https://") {
        bail!("--server {s:?}: the API server must be an https:// URL or host:port");
    }
    crate::http::Url::parse(&url).with_context(|| format!("--server {s:?}"))?;
    Ok(url)
}

fn anonymous(server: &str, ca: Option<Vec<u8>>) -> Result<Client> {
    let kc = Kubeconfig {
        path: PathBuf::from("<discovery>"),
        context: "discovery".into(),
        server: server.to_string(),
        insecure_skip_tls_verify: ca.is_none(),
        ca: ca.map(Source::Inline),
        tls_server_name: None,
        credentials: Credentials {
            client_cert: None,
            token: None,
            token_file: None,
            basic: None,
        },
        namespace: None,
    };
    Ok(Client::new(Transport::new(kc)?, 0.0, 1))
}

/// A failed read of cluster-info: worth another try (the server is not
/// up yet, the signer has not signed yet) or not.
enum Read {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

/// Reads kube-public/cluster-info; the error says what is wrong in words.
async fn cluster_info(client: &Client, server: &str) -> Result<ConfigMap, Read> {
    match client
        .get::<ConfigMap>(Some("kube-public"), "cluster-info")
        .await
    {
        Ok(cm) => Ok(cm),
        Err(e) if e.is_not_found() => Err(Read::Retry(anyhow!(
            "{server} has no ConfigMap kube-public/cluster-info: the cluster does not publish \
             discovery information (kubeadm init does)"
        ))),
        Err(e) if e.is_unauthorized() || e.is_forbidden() => Err(Read::Fatal(anyhow!(
            "{server} does not let anonymous users read kube-public/cluster-info ({e}): \
             anonymous auth or kubeadm's discovery RBAC is missing"
        ))),
        Err(e) => Err(Read::Retry(
            anyhow!(e).context(format!("read cluster-info from {server}")),
        )),
    }
}

/// cluster-info's kubeconfig with its signature for `token` checked.
async fn signed_kubeconfig(client: &Client, server: &str, token: &Token) -> Result<String, Read> {
    let cm = cluster_info(client, server).await?;
    let data = cm.data.unwrap_or_default();
    let kubeconfig = data
        .get("kubeconfig")
        .ok_or_else(|| Read::Retry(anyhow!("cluster-info has no kubeconfig")))?
        .clone();
    // The bootstrapsigner adds signatures a moment after a token appears.
    let jws = data
        .get(&format!("jws-kubeconfig-{}", token.id))
        .ok_or_else(|| {
            Read::Retry(anyhow!(
                "cluster-info has no signature for token ID {:?}: the token does not exist, \
                 expired, or may not sign (usage-bootstrap-signing); make a new one \
                 (`kubeadm token create`)",
                token.id
            ))
        })?;
    verify_detached_jws(jws, kubeconfig.as_bytes(), token)
        .with_context(|| {
            format!(
                "cluster-info's signature for token ID {:?} is not valid: the token secret is wrong",
                token.id
            )
        })
        .map_err(Read::Fatal)?;
    Ok(kubeconfig)
}

/// The first cluster's CA and server of cluster-info's kubeconfig.
fn ca_of(kubeconfig: &str) -> Result<(Vec<u8>, Option<String>)> {
    let v = crate::api::yaml::single(kubeconfig).context("cluster-info kubeconfig")?;
    let cluster = v
        .pointer("/clusters/0/cluster")
        .context("cluster-info kubeconfig: no cluster")?;
    let data = cluster
        .get("certificate-authority-data")
        .and_then(|d| d.as_str())
        .context("cluster-info kubeconfig: no certificate-authority-data")?;
    let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let ca = base64::engine::general_purpose::STANDARD
        .decode(clean)
        .context("cluster-info kubeconfig: certificate-authority-data is not base64")?;
    let server = cluster
        .get("server")
        .and_then(|s| s.as_str())
        .map(str::to_string);
    Ok((ca, server))
}

/// How often discovery reads cluster-info again (kubeadm: 5 s).
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Token discovery against `server`. With `pins` empty, `unsafe_skip`
/// must be set (kubeadm's `--discovery-token-unsafe-skip-ca-verification`).
/// An unreachable server, a missing ConfigMap or signature are tried again
/// every 5 s for `timeout` (as kubeadm's `--discovery-timeout`); a wrong
/// signature or CA is final.
pub async fn discover(
    server: &str,
    token: &Token,
    pins: &[String],
    unsafe_skip: bool,
    timeout: Duration,
) -> Result<Discovered> {
    let server = normalize_server(server)?;
    let pins = parse_pins(pins)?;
    if pins.is_empty() && !unsafe_skip {
        bail!(
            "give --discovery-token-ca-cert-hash sha256:... (the cluster CA's public key hash) \
             or, insecurely, --discovery-token-unsafe-skip-ca-verification"
        );
    }
    // Not trusted yet: the signature and the pin decide.
    let insecure = anonymous(&server, None)?;
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let kubeconfig = loop {
        match signed_kubeconfig(&insecure, &server, token).await {
            Ok(k) => break k,
            Err(Read::Fatal(e)) => return Err(e),
            Err(Read::Retry(e)) if Instant::now() + DISCOVERY_RETRY > deadline => {
                return Err(e.context(format!(
                    "discovery gave up after {}",
                    crate::util::duration::format(timeout)
                )))
            }
            Err(Read::Retry(e)) => {
                let m = format!("{e:#}");
                if m != last {
                    log::info!("{m}; trying again every {}s", DISCOVERY_RETRY.as_secs());
                    last = m;
                }
                async_io::Timer::after(DISCOVERY_RETRY).await;
            }
        }
    };
    let (ca_pem, advertised_server) = ca_of(&kubeconfig)?;
    let have = ca_hashes(&ca_pem)?;
    if pins.is_empty() {
        log::warn!(
            "joining without CA verification (--discovery-token-unsafe-skip-ca-verification): \
             the cluster CA is {}",
            have.join(", ")
        );
    } else if !have.iter().any(|h| pins.contains(h)) {
        bail!(
            "the cluster CA's public key hash {} is not the one given ({}): refusing to trust \
             this server",
            have.join(", "),
            pins.join(", ")
        );
    }
    // Again, now verifying the server with that CA: the same content.
    let secure = anonymous(&server, Some(ca_pem.clone()))?;
    let again = match signed_kubeconfig(&secure, &server, token).await {
        Ok(k) => k,
        Err(Read::Retry(e) | Read::Fatal(e)) => {
            return Err(e.context("read cluster-info again over TLS verified with the cluster CA"))
        }
    };
    if again != kubeconfig {
        bail!("cluster-info read over verified TLS differs from the first read: refusing it");
    }
    Ok(Discovered {
        server,
        ca_pem,
        advertised_server,
    })
}

/// A bootstrap kubeconfig for `token` against `d` (the CA inline).
pub fn bootstrap_kubeconfig(d: &Discovered, token: &Token) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(&d.ca_pem);
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "# Written by `picolet join`: the bootstrap token, for TLS bootstrapping only.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kubernetes\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         contexts:\n\
         - name: tls-bootstrap-token-user@kubernetes\n  context:\n    cluster: kubernetes\n    user: tls-bootstrap-token-user\n\
         current-context: tls-bootstrap-token-user@kubernetes\n\
         users:\n\
         - name: tls-bootstrap-token-user\n  user:\n    token: {token}\n",
        server = q(&d.server),
        token = q(&token.expose()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // cluster-bootstrap/token/jws's test vectors.
    const CONTENT: &str = "Hello from the other side. I must have called a thousand times.";

    fn joshua(secret: &str) -> Token {
        Token {
            id: "joshua".into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn upstream_jws_vectors_verify() {
        let t = joshua("my voice is my passcode");
        let sig =
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8";
        verify_detached_jws(sig, CONTENT.as_bytes(), &t).unwrap();
        let empty =
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk";
        verify_detached_jws(empty, b"", &t).unwrap();
        let nosecret =
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..UfkqvDGiIFxrMnFseDj9LYJOLNrvjW8aHhF71mvvAs8";
        verify_detached_jws(nosecret, CONTENT.as_bytes(), &joshua("")).unwrap();

        // Wrong content, secret, signature, kid, alg, shape.
        assert!(verify_detached_jws(sig, b"other", &t).is_err());
        let e = verify_detached_jws(sig, CONTENT.as_bytes(), &joshua("wrong")).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        assert!(verify_detached_jws(&format!("{sig}foo"), CONTENT.as_bytes(), &t).is_err());
        let other_kid = Token {
            id: "abcdef".into(),
            secret: "my voice is my passcode".into(),
        };
        let e = verify_detached_jws(sig, CONTENT.as_bytes(), &other_kid).unwrap_err();
        assert!(e.to_string().contains("key ID"), "{e}");
        // {"alg":"none","kid":"joshua"}
        let none = format!(
            "{}..",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"alg":"none","kid":"joshua"}"#)
        );
        assert!(verify_detached_jws(&none, CONTENT.as_bytes(), &t).is_err());
        assert!(verify_detached_jws("a.b.c", CONTENT.as_bytes(), &t).is_err());
        assert!(verify_detached_jws("abc", CONTENT.as_bytes(), &t).is_err());
        assert!(verify_detached_jws("", CONTENT.as_bytes(), &t).is_err());
    }

    #[test]
    fn tokens_parse_and_hide_their_secret() {
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.id, "abcdef");
        assert_eq!(t.expose(), "abcdef.0123456789abcdef");
        assert_eq!(format!("{t:?}"), "Token(abcdef.<secret>)");
        for bad in [
            "abcdef0123456789abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef0",
            "",
        ] {
            let e = Token::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("0123456789"), "{e}");
        }
    }

    #[test]
    fn pins_parse_and_match_the_ca() {
        let ca = include_bytes!("../http/testdata/ca.crt");
        let have = ca_hashes(ca).unwrap();
        assert_eq!(have.len(), 1);
        assert!(have[0].starts_with("sha256:") && have[0].len() == 71);
        // The same hash as openssl computes (checked at the time of
        // writing): x509 -pubkey | pkey -pubin -outform der | sha256.
        let upper = format!("sha256:{}", have[0]["sha256:".len()..].to_uppercase());
        assert_eq!(parse_pins(&[upper]).unwrap(), have);
        for bad in ["sha1:abcd", "abcd", "sha256:xyz", "sha256:00"] {
            assert!(parse_pins(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn pin_matches_openssl() {
        let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/testdata/ca.crt");
        let sh = format!(
            "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | sha256sum",
            ca.display()
        );
        let Ok(out) = std::process::Command::new("sh").args(["-c", &sh]).output() else {
            return;
        };
        let hex = String::from_utf8_lossy(&out.stdout);
        let hex = hex.split_whitespace().next().unwrap_or("");
        if !out.status.success() || hex.len() != 64 {
            eprintln!("no openssl: skipped");
            return;
        }
        let have = ca_hashes(&std::fs::read(ca).unwrap()).unwrap();
        assert_eq!(have, vec![format!("sha256:{hex}")]);
    }

    #[test]
    fn servers_normalize() {
        assert_eq!(
            normalize_server("10.0.0.1:6443").unwrap(),
            "https://10.0.0.1:6443"
        );
        assert_eq!(
            normalize_server("https://api.example:6443/").unwrap(),
            "https://api.example:6443"
        );
        assert!(normalize_server("http://10.0.0.1:6443").is_err());
    }

    #[test]
    fn cluster_info_ca_and_bootstrap_kubeconfig() {
        let ca = include_bytes!("../http/testdata/ca.crt");
        let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
        let ci = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {b64}\ncontexts: []\nusers: []\n"
        );
        let (got, server) = ca_of(&ci).unwrap();
        assert_eq!(got, ca.to_vec());
        assert_eq!(server.as_deref(), Some("https://127.0.0.1:6443"));
        assert!(ca_of("clusters: []").is_err());

        let d = Discovered {
            server: "https://10.1.2.3:6443".into(),
            ca_pem: ca.to_vec(),
            advertised_server: server,
        };
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        let text = bootstrap_kubeconfig(&d, &t);
        let kc = Kubeconfig::parse(&text, std::path::Path::new("/b"), std::path::Path::new("/"))
            .unwrap();
        assert_eq!(kc.server, "https://10.1.2.3:6443");
        assert_eq!(kc.ca, Some(Source::Inline(ca.to_vec())));
        assert_eq!(
            kc.credentials.token.as_deref(),
            Some("abcdef.0123456789abcdef")
        );
    }
}
