//! Kubeconfig files (`clientcmd` v1 `Config`): clusters, users, contexts and
//! `current-context`, resolved to what one connection needs.
//!
//! Paths inside the file resolve against the file's own directory, as
//! client-go does. Files (CA, client certificate and key, token file) are
//! read when a connection is made, not only at load, so a certificate
//! rotated on disk is used at the next reconnect; `load` reads them once
//! too, so a broken file is reported at start naming the file and field.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Bytes given inline (`*-data`, base64 in the file) or read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Inline(Vec<u8>),
    File(PathBuf),
}

impl Source {
    /// The bytes: inline ones, or the file's content now.
    pub fn read(&self) -> Result<Vec<u8>> {
        match self {
            Source::Inline(b) => Ok(b.clone()),
            Source::File(p) => std::fs::read(p).with_context(|| format!("read {}", p.display())),
        }
    }

    /// How to name it in errors.
    pub fn describe(&self, field: &str) -> String {
        match self {
            Source::Inline(_) => format!("{field}-data"),
            Source::File(p) => format!("{field} {}", p.display()),
        }
    }
}

/// A bearer token file, re-read when its modification time changes
/// (projected service-account tokens and rotated bootstrap tokens).
#[derive(Debug)]
pub struct TokenFile {
    pub path: PathBuf,
    cache: RefCell<Option<(SystemTime, String)>>,
}

impl TokenFile {
    pub fn new(path: PathBuf) -> Self {
        TokenFile {
            path,
            cache: RefCell::new(None),
        }
    }

    /// The token, from the cache while the file's mtime is unchanged.
    pub fn token(&self) -> Result<String> {
        let what = || format!("tokenFile {}", self.path.display());
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .with_context(what)?;
        if let Some((t, tok)) = &*self.cache.borrow() {
            if *t == mtime {
                return Ok(tok.clone());
            }
        }
        let tok = std::fs::read_to_string(&self.path).with_context(what)?;
        let tok = tok.trim().to_string();
        if tok.is_empty() {
            bail!("{}: empty", what());
        }
        *self.cache.borrow_mut() = Some((mtime, tok.clone()));
        Ok(tok)
    }
}

impl Clone for TokenFile {
    fn clone(&self) -> Self {
        TokenFile::new(self.path.clone())
    }
}

impl PartialEq for TokenFile {
    fn eq(&self, o: &Self) -> bool {
        self.path == o.path
    }
}

/// How the client proves who it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    /// Certificate chain and private key (PEM).
    pub client_cert: Option<(Source, Source)>,
    pub token: Option<String>,
    pub token_file: Option<TokenFile>,
    /// `username`/`password` (basic auth).
    pub basic: Option<(String, String)>,
}

/// The resolved current context of a kubeconfig.
#[derive(Debug, Clone, PartialEq)]
pub struct Kubeconfig {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub context: String,
    /// `https://host[:port]` (a path prefix is allowed).
    pub server: String,
    /// CA bundle (PEM); `None`: the system store.
    pub ca: Option<Source>,
    pub insecure_skip_tls_verify: bool,
    pub tls_server_name: Option<String>,
    pub credentials: Credentials,
    /// The context's namespace (informational; picolet names namespaces).
    pub namespace: Option<String>,
}

/// A named entry of a kubeconfig list (`clusters`, `users`, `contexts`).
fn named<'a>(root: &'a Value, list: &str, name: &str, inner: &str) -> Result<&'a Value> {
    let items = match root.get(list) {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => &a[..],
        Some(_) => bail!("{list}: expected a list"),
    };
    for (i, it) in items.iter().enumerate() {
        let n = it
            .get("name")
            .and_then(Value::as_str)
            .with_context(|| format!("{list}[{i}]: no name"))?;
        if n == name {
            return it
                .get(inner)
                .filter(|v| v.is_object())
                .with_context(|| format!("{list}[{i}] ({name}): no {inner} mapping"));
        }
    }
    bail!("{list}: no entry named {name:?}")
}

fn opt_str<'a>(obj: &'a Value, key: &str, at: &str) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => bail!("{at}.{key}: expected a string, got {v}"),
    }
}

fn b64(s: &str, at: &str) -> Result<Vec<u8>> {
    // Whitespace sneaks in when people paste base64 by hand.
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .with_context(|| format!("{at}: invalid base64"))
}

/// `X-data` (inline, base64) wins over `X` (a path), as in client-go.
fn source(obj: &Value, key: &str, at: &str, dir: &Path) -> Result<Option<Source>> {
    if let Some(d) = opt_str(obj, &format!("{key}-data"), at)? {
        return Ok(Some(Source::Inline(b64(d, &format!("{at}.{key}-data"))?)));
    }
    Ok(opt_str(obj, key, at)?.map(|p| Source::File(resolve(dir, p))))
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

impl Kubeconfig {
    /// Reads `path` and resolves its current context; also reads the files
    /// it names, so a missing or malformed one fails here, by name.
    pub fn load(path: &Path) -> Result<Kubeconfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read kubeconfig {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let kc = Self::parse(&text, path, dir)
            .with_context(|| format!("kubeconfig {}", path.display()))?;
        kc.check_files()
            .with_context(|| format!("kubeconfig {}", path.display()))?;
        Ok(kc)
    }

    /// Parses kubeconfig YAML; relative paths resolve against `dir`.
    pub fn parse(text: &str, path: &Path, dir: &Path) -> Result<Kubeconfig> {
        let root = crate::api::yaml::single(text)?;
        if !root.is_object() {
            bail!("expected a mapping (apiVersion: v1, kind: Config)");
        }
        if let Some(k) = opt_str(&root, "kind", "")? {
            if k != "Config" {
                bail!("kind: {k:?}, want \"Config\"");
            }
        }
        let context = opt_str(&root, "current-context", "")?
            .context("no current-context set")?
            .to_string();
        let ctx = named(&root, "contexts", &context, "context")?;
        let at = format!("contexts[{context}]");
        let cluster_name =
            opt_str(ctx, "cluster", &at)?.with_context(|| format!("{at}: no cluster"))?;
        let user_name = opt_str(ctx, "user", &at)?.unwrap_or("");
        let namespace = opt_str(ctx, "namespace", &at)?.map(str::to_string);

        let cluster = named(&root, "clusters", cluster_name, "cluster")?;
        let at = format!("clusters[{cluster_name}]");
        let server = opt_str(cluster, "server", &at)?
            .with_context(|| format!("{at}: no server"))?
            .trim_end_matches('/')
            .to_string();
        if !server.starts_with("https://") && !server.starts_with("http://") {
            bail!("{at}.server: {server:?} is not an https:// URL");
        }
        let ca = source(cluster, "certificate-authority", &at, dir)?;
        let insecure = match cluster.get("insecure-skip-tls-verify") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => bail!("{at}.insecure-skip-tls-verify: expected true or false, got {v}"),
        };
        if insecure && ca.is_some() {
            // client-go refuses this combination too.
            bail!(
                "{at}: certificate-authority and insecure-skip-tls-verify are mutually exclusive"
            );
        }
        let tls_server_name = opt_str(cluster, "tls-server-name", &at)?.map(str::to_string);

        let mut credentials = Credentials {
            client_cert: None,
            token: None,
            token_file: None,
            basic: None,
        };
        if !user_name.is_empty() {
            let user = named(&root, "users", user_name, "user")?;
            let at = format!("users[{user_name}]");
            let cert = source(user, "client-certificate", &at, dir)?;
            let key = source(user, "client-key", &at, dir)?;
            credentials.client_cert = match (cert, key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                (Some(_), None) => bail!("{at}: client-certificate without client-key"),
                (None, Some(_)) => bail!("{at}: client-key without client-certificate"),
            };
            credentials.token = opt_str(user, "token", &at)?.map(str::to_string);
            credentials.token_file =
                opt_str(user, "tokenFile", &at)?.map(|p| TokenFile::new(resolve(dir, p)));
            if let Some(u) = opt_str(user, "username", &at)? {
                let p = opt_str(user, "password", &at)?.unwrap_or("");
                credentials.basic = Some((u.to_string(), p.to_string()));
            }
            for unsupported in ["exec", "auth-provider"] {
                if user.get(unsupported).is_some_and(|v| !v.is_null()) {
                    bail!("{at}.{unsupported}: credential plugins are not supported by picolet");
                }
            }
        }
        Ok(Kubeconfig {
            path: path.to_path_buf(),
            context,
            server,
            ca,
            insecure_skip_tls_verify: insecure,
            tls_server_name,
            credentials,
            namespace,
        })
    }

    /// Reads every file the config names and checks that the PEM parses
    /// and the client certificate is within its validity.
    pub fn check_files(&self) -> Result<()> {
        let tls = crate::kube::tls::TlsMaterial::read(self)?;
        if let Some(cert) = tls.client_chain.first() {
            let v = crate::kube::x509::validity(cert)
                .context("client certificate: cannot read its validity")?;
            let now = jiff::Timestamp::now();
            if v.not_after < now {
                bail!(
                    "client certificate expired at {} ({})",
                    v.not_after,
                    self.credentials
                        .client_cert
                        .as_ref()
                        .map(|(c, _)| c.describe("client-certificate"))
                        .unwrap_or_default()
                );
            }
        }
        if let Some(tf) = &self.credentials.token_file {
            tf.token()?;
        }
        Ok(())
    }

    /// `host:port` and whether TLS is used, from `server`.
    pub fn endpoint(&self) -> Result<crate::http::Url> {
        crate::http::Url::parse(&self.server).with_context(|| format!("server {:?}", self.server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KC: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: a
  cluster:
    server: https://10.0.0.1:6443/
    certificate-authority: ca.crt
    tls-server-name: api.local
- name: b
  cluster: {server: "https://b:443", insecure-skip-tls-verify: true}
contexts:
- name: ctx-a
  context: {cluster: a, user: u1, namespace: ns1}
- name: ctx-b
  context: {cluster: b, user: u2}
current-context: ctx-a
users:
- name: u1
  user:
    client-certificate: certs/c.pem
    client-key: /abs/k.pem
- name: u2
  user: {token: abc, tokenFile: tok}
"#;

    fn parse(text: &str) -> Result<Kubeconfig> {
        Kubeconfig::parse(text, Path::new("/etc/kc/kubeconfig"), Path::new("/etc/kc"))
    }

    #[test]
    fn resolves_current_context_and_relative_paths() {
        let k = parse(KC).unwrap();
        assert_eq!(k.context, "ctx-a");
        assert_eq!(k.server, "https://10.0.0.1:6443");
        assert_eq!(k.ca, Some(Source::File("/etc/kc/ca.crt".into())));
        assert_eq!(k.tls_server_name.as_deref(), Some("api.local"));
        assert_eq!(k.namespace.as_deref(), Some("ns1"));
        assert_eq!(
            k.credentials.client_cert,
            Some((
                Source::File("/etc/kc/certs/c.pem".into()),
                Source::File("/abs/k.pem".into())
            ))
        );
        assert!(!k.insecure_skip_tls_verify);
        let u = k.endpoint().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.https), ("10.0.0.1", 6443, true));

        let k = parse(&KC.replace("current-context: ctx-a", "current-context: ctx-b")).unwrap();
        assert!(k.insecure_skip_tls_verify);
        assert_eq!(k.credentials.token.as_deref(), Some("abc"));
        assert_eq!(
            k.credentials.token_file.as_ref().map(|t| t.path.clone()),
            Some(PathBuf::from("/etc/kc/tok"))
        );
    }

    #[test]
    fn inline_data_wins_over_paths() {
        let text = KC.replace(
            "    certificate-authority: ca.crt",
            "    certificate-authority: ca.crt\n    certificate-authority-data: aGVs\n      bG8=",
        );
        let k = parse(&text).unwrap();
        assert_eq!(k.ca, Some(Source::Inline(b"hello".to_vec())));
    }

    #[test]
    fn errors_name_the_field() {
        for (text, want) in [
            ("apiVersion: v1\nkind: Config\n", "no current-context"),
            (
                &KC.replace("current-context: ctx-a", "current-context: nope") as &str,
                "contexts: no entry named \"nope\"",
            ),
            (
                &KC.replace("cluster: a, user", "cluster: zz, user"),
                "clusters: no entry named \"zz\"",
            ),
            (
                &KC.replace("    client-key: /abs/k.pem\n", ""),
                "users[u1]: client-certificate without client-key",
            ),
            (
                &KC.replace("https://10.0.0.1:6443/", "ftp://x"),
                "clusters[a].server",
            ),
            (
                &KC.replace("tls-server-name: api.local", "certificate-authority-data: '%%%'"),
                "clusters[a].certificate-authority-data: invalid base64",
            ),
            (
                &KC.replace(
                    "    client-key: /abs/k.pem",
                    "    client-key: /abs/k.pem\n    exec: {command: aws}",
                ),
                "users[u1].exec: credential plugins are not supported",
            ),
            ("- a\n- b\n", "expected a mapping"),
            (
                &KC.replace("cluster: {server: \"https://b:443\", insecure-skip-tls-verify: true}",
                            "cluster: {server: \"https://b:443\", insecure-skip-tls-verify: true, certificate-authority: x}")
                    .replace("current-context: ctx-a", "current-context: ctx-b"),
                "mutually exclusive",
            ),
        ] {
            let e = parse(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            let m = format!("{e:#}");
            assert!(m.contains(want), "want {want:?} in {m:?}");
        }
    }

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("picolet-kc-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        std::fs::write(&p, "one\n").unwrap();
        let tf = TokenFile::new(p.clone());
        assert_eq!(tf.token().unwrap(), "one");
        // A new mtime (set explicitly: the write may land in the same tick).
        std::fs::write(&p, "two").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert_eq!(tf.token().unwrap(), "two");
        std::fs::write(&p, "").unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(10))
            .unwrap();
        assert!(format!("{:#}", tf.token().unwrap_err()).contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
