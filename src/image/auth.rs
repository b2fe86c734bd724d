//! Registry authentication: anonymous, Basic, and the Bearer token flow
//! driven by `WWW-Authenticate` (realm/service/scope), with tokens cached per
//! (realm, service, scope). Credentials come from a docker `config.json`-style
//! file or from registries.yaml.

use anyhow::{Context, Result};
use base64::Engine;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// A user name and password (or token used as password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` value for Basic auth.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// A short digest naming these credentials in cache keys (never the
    /// secret itself).
    pub fn fingerprint(&self) -> String {
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{}\0{}", self.username, self.password).as_bytes(),
        );
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Decodes a docker `auth` field (base64 of `user:password`).
    pub fn from_auth_field(auth: &str) -> Result<Credentials> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .context("auth: not base64")?;
        let s = String::from_utf8(raw).context("auth: not UTF-8")?;
        let (u, p) = s.split_once(':').context("auth: expected user:password")?;
        Ok(Credentials {
            username: u.into(),
            password: p.into(),
        })
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased: `basic`, `bearer`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="...",service="...",scope="..."` (and several
/// challenges in one header). Parameter names are lower-cased.
pub fn parse_challenges(h: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = h.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !matches!(b[i], b' ' | b'=' | b',') {
            i += 1;
        }
        let token = &h[start..i];
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            // name=value of the current challenge
            j += 1;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let mut val = String::new();
            if j < b.len() && b[j] == b'"' {
                j += 1;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' && j + 1 < b.len() {
                        j += 1;
                    }
                    val.push(b[j] as char);
                    j += 1;
                }
                j += 1;
            } else {
                let s = j;
                while j < b.len() && b[j] != b',' {
                    j += 1;
                }
                val = h[s..j].trim().to_string();
            }
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), val);
            }
            i = j;
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

/// Bearer tokens cached per (realm, service, scope) until shortly before expiry.
#[derive(Default)]
pub struct TokenCache {
    tokens: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    pub fn key(realm: &str, service: &str, scope: &str) -> String {
        format!("{realm}\n{service}\n{scope}")
    }
    pub fn get(&self, key: &str, now: Instant) -> Option<&str> {
        self.tokens
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(t, _)| t.as_str())
    }
    pub fn put(&mut self, key: String, token: String, expires_in: Duration, now: Instant) {
        // Keep a margin so a token does not expire mid-request.
        let life = expires_in.saturating_sub(Duration::from_secs(10));
        self.tokens.insert(key, (token, now + life));
    }
}

/// The token server's answer (distribution token spec).
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Returns the token and its lifetime (default 60 s, as the spec says).
pub fn parse_token_response(body: &[u8]) -> Result<(String, Duration)> {
    let r: TokenResponse = serde_json::from_slice(body).context("token response: not JSON")?;
    let t = if r.token.is_empty() {
        r.access_token
    } else {
        r.token
    };
    if t.is_empty() {
        anyhow::bail!("token response without a token");
    }
    Ok((t, Duration::from_secs(r.expires_in.unwrap_or(60).max(1))))
}

/// A docker `config.json` (only `auths` is read; credential helpers are not run).
#[derive(Debug, Default, Clone)]
pub struct DockerConfig {
    /// Host (no scheme, no path) -> credentials.
    auths: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct RawDockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawAuth {
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

impl RawAuth {
    pub(crate) fn credentials(&self) -> Result<Option<Credentials>> {
        if !self.username.is_empty() {
            return Ok(Some(Credentials {
                username: self.username.clone(),
                password: self.password.clone(),
            }));
        }
        if !self.auth.is_empty() {
            return Credentials::from_auth_field(&self.auth).map(Some);
        }
        Ok(None)
    }
}

impl DockerConfig {
    /// Loads the file; an absent file means no credentials.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        match crate::util::fs::read_optional(path)? {
            None => Ok(DockerConfig::default()),
            Some(b) => Self::parse(&b).with_context(|| format!("docker config {}", path.display())),
        }
    }

    pub fn parse(b: &[u8]) -> Result<DockerConfig> {
        let raw: RawDockerConfig = serde_json::from_slice(b).context("invalid JSON")?;
        let mut auths = BTreeMap::new();
        for (k, v) in raw.auths {
            let c = v.credentials().with_context(|| format!("auths[{k}]"))?;
            if let Some(c) = c {
                auths.insert(normalize_key(&k), c);
            }
        }
        Ok(DockerConfig { auths })
    }

    /// Upstream `MakeDockerKeyring` for one pull secret: the
    /// `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` secret or
    /// the `.dockercfg` (the `auths` map alone) of a `kubernetes.io/dockercfg`
    /// one. `Ok(None)`: a secret of another type, or without that key.
    pub fn from_secret(s: &crate::api::core::Secret) -> Result<Option<DockerConfig>> {
        let data = |k: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.as_slice())
                .filter(|b| !b.is_empty())
        };
        match s.type_.as_deref() {
            Some("kubernetes.io/dockerconfigjson") => match data(".dockerconfigjson") {
                Some(b) => Self::parse(b).map(Some),
                None => Ok(None),
            },
            Some("kubernetes.io/dockercfg") => match data(".dockercfg") {
                Some(b) => Self::parse_dockercfg(b).map(Some),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// The legacy `.dockercfg` format: the `auths` map without the wrapper.
    pub fn parse_dockercfg(b: &[u8]) -> Result<DockerConfig> {
        let raw: BTreeMap<String, RawAuth> = serde_json::from_slice(b).context("invalid JSON")?;
        let mut auths = BTreeMap::new();
        for (k, v) in raw {
            if let Some(c) = v.credentials().with_context(|| format!("[{k}]"))? {
                auths.insert(normalize_key(&k), c);
            }
        }
        Ok(DockerConfig { auths })
    }

    /// Credentials for a registry domain (`docker.io` also matches the
    /// historical `https://index.docker.io/v1/` key).
    pub fn credentials_for(&self, domain: &str) -> Option<&Credentials> {
        if let Some(c) = self.auths.get(domain) {
            return Some(c);
        }
        if domain == "docker.io" || domain == "registry-1.docker.io" {
            for k in ["index.docker.io", "docker.io", "registry-1.docker.io"] {
                if let Some(c) = self.auths.get(k) {
                    return Some(c);
                }
            }
        }
        None
    }
}

/// The credentials to try for a pull from `domain`, in order (upstream's
/// `UnionDockerKeyring` of the pod's pull secrets and the node's
/// credentials): each distinct match of the secrets, then picolet's own;
/// `None` (anonymous) only when nothing matched.
pub fn pull_candidates(
    secrets: &[DockerConfig],
    own: &DockerConfig,
    domain: &str,
) -> Vec<Option<Credentials>> {
    let mut out: Vec<Option<Credentials>> = Vec::new();
    let found = secrets
        .iter()
        .filter_map(|s| s.credentials_for(domain))
        .chain(own.credentials_for(domain));
    for c in found {
        if !out.iter().any(|x| x.as_ref() == Some(c)) {
            out.push(Some(c.clone()));
        }
    }
    if out.is_empty() {
        out.push(None);
    }
    out
}

/// `https://index.docker.io/v1/` -> `index.docker.io`.
fn normalize_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or(k).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");
        let c = parse_challenges(r#"Basic realm="Registry Realm", Bearer realm=x"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");
        assert_eq!(c[1].params["realm"], "x");
    }

    #[test]
    fn token_cache_expires() {
        let mut tc = TokenCache::default();
        let now = Instant::now();
        let k = TokenCache::key("r", "s", "repository:a:pull");
        tc.put(k.clone(), "t".into(), Duration::from_secs(60), now);
        assert_eq!(tc.get(&k, now), Some("t"));
        assert_eq!(tc.get(&k, now + Duration::from_secs(55)), None);
        assert_eq!(tc.get("other", now), None);
    }

    #[test]
    fn token_response() {
        let (t, d) = parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.as_str(), d.as_secs()), ("abc", 300));
        let (t, d) = parse_token_response(br#"{"access_token":"x"}"#).unwrap();
        assert_eq!((t.as_str(), d.as_secs()), ("x", 60));
        assert!(parse_token_response(b"{}").is_err());
    }

    #[test]
    fn docker_config_lookup() {
        let c = DockerConfig::parse(
            br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
                "127.0.0.1:5101":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        let d = c.credentials_for("docker.io").unwrap();
        assert_eq!((d.username.as_str(), d.password.as_str()), ("u", "p"));
        assert_eq!(c.credentials_for("127.0.0.1:5101").unwrap().username, "a");
        assert!(c.credentials_for("ghcr.io").is_none());
        assert_eq!(
            d.basic(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("u:p")
            )
        );
        assert!(DockerConfig::parse(br#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
    }

    #[test]
    fn pull_credentials_in_keyring_order() {
        let cfg = |u: &str| {
            DockerConfig::parse(
                format!(r#"{{"auths":{{"reg:5000":{{"username":"{u}","password":"p"}}}}}}"#)
                    .as_bytes(),
            )
            .unwrap()
        };
        let names = |v: Vec<Option<Credentials>>| -> Vec<String> {
            v.into_iter()
                .map(|c| c.map_or("-".into(), |c| c.username))
                .collect()
        };
        let none = DockerConfig::default();
        assert_eq!(names(pull_candidates(&[], &none, "reg:5000")), ["-"]);
        assert_eq!(
            names(pull_candidates(
                &[cfg("a"), cfg("b"), cfg("a")],
                &none,
                "reg:5000"
            )),
            ["a", "b"]
        );
        assert_eq!(
            names(pull_candidates(&[cfg("a")], &cfg("node"), "reg:5000")),
            ["a", "node"]
        );
        assert_eq!(
            names(pull_candidates(&[], &cfg("node"), "reg:5000")),
            ["node"]
        );
        assert_eq!(names(pull_candidates(&[cfg("a")], &none, "other")), ["-"]);
    }

    #[test]
    fn pull_secrets_of_both_types() {
        use k8s_openapi::ByteString;
        let secret = |t: &str, k: &str, v: &str| crate::api::core::Secret {
            type_: Some(t.into()),
            data: Some([(k.to_string(), ByteString(v.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        let c = DockerConfig::from_secret(&secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            r#"{"auths":{"https://reg.example:5001/v2/":{"username":"u","password":"p"}}}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.credentials_for("reg.example:5001").unwrap().username, "u");
        let c = DockerConfig::from_secret(&secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            r#"{"reg.example":{"auth":"dTpw"}}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.credentials_for("reg.example").unwrap().password, "p");
        assert!(
            DockerConfig::from_secret(&secret("Opaque", ".dockercfg", "{}"))
                .unwrap()
                .is_none()
        );
        assert!(DockerConfig::from_secret(&secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            "nope"
        ))
        .is_err());
    }
}
