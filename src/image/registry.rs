//! The distribution API client: manifests (OCI and Docker schema2, indexes
//! and manifest lists with a platform choice), blobs, auth and retries.

use super::auth::{self, Credentials, TokenCache};
use super::reference::Reference;
use super::registries::Endpoint;
use crate::http::{self, Client, ClientOptions, Request, Response, Url};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Every manifest type we understand; without the OCI ones registry 2.8
/// answers 404 for OCI content, without any it down-converts to schema1.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or config we hold in memory.
pub const MAX_DOC: usize = 4 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone)]
pub enum Parsed {
    Index(Index),
    Manifest(Manifest),
}

/// Parses a manifest document. The media type comes from Content-Type (umoci
/// omits `mediaType`); generic types fall back to the document's own field or shape.
pub fn parse_manifest(content_type: &str, body: &[u8]) -> Result<Parsed> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let v: serde_json::Value = serde_json::from_slice(body).context("manifest is not JSON")?;
    let mt = match ct {
        "" | "application/json" | "text/plain" | "application/octet-stream" => v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_string(),
        other => other.to_string(),
    };
    let is_index = match mt.as_str() {
        MT_OCI_INDEX | MT_DOCKER_LIST => true,
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => false,
        m if m.contains("distribution.manifest.v1") => {
            bail!("Docker schema1 manifests are not supported ({m})")
        }
        "" => v.get("manifests").is_some(),
        m => bail!("unsupported manifest media type {m:?}"),
    };
    if is_index {
        Ok(Parsed::Index(
            serde_json::from_value(v).context("invalid image index")?,
        ))
    } else {
        Ok(Parsed::Manifest(
            serde_json::from_value(v).context("invalid image manifest")?,
        ))
    }
}

/// This machine's platform in OCI terms.
pub fn host_platform() -> Platform {
    platform_for_arch(std::env::consts::ARCH)
}

/// Rust's target arch -> OCI architecture/variant.
pub fn platform_for_arch(arch: &str) -> Platform {
    let (a, v) = match arch {
        "x86_64" => ("amd64", ""),
        "x86" => ("386", ""),
        "aarch64" => ("arm64", "v8"),
        "arm" => ("arm", "v7"),
        "riscv64" => ("riscv64", ""),
        "powerpc64" => ("ppc64le", ""),
        "s390x" => ("s390x", ""),
        other => (other, ""),
    };
    Platform {
        architecture: a.into(),
        os: "linux".into(),
        variant: v.into(),
    }
}

/// How well an index entry fits `want` (lower is better), or `None`.
/// arm64: "" and "v8" are the same; arm v7 runs v6 and v5 images too
/// (exact variant preferred), as containerd's platform matcher does.
pub fn platform_rank(p: &Platform, want: &Platform) -> Option<u8> {
    if p.os != want.os || p.architecture != want.architecture {
        return None;
    }
    let norm = |v: &str| match (want.architecture.as_str(), v) {
        ("arm64", "") => "v8".to_string(),
        ("amd64", "v1") => String::new(),
        ("arm", "") => "v7".to_string(),
        _ => v.to_string(),
    };
    let (have, w) = (norm(&p.variant), norm(&want.variant));
    if have == w {
        return Some(0);
    }
    if want.architecture == "arm" {
        let order = ["v7", "v6", "v5"];
        let wi = order.iter().position(|x| *x == w)?;
        let hi = order.iter().position(|x| *x == have)?;
        if hi > wi {
            return Some(hi as u8);
        }
    }
    None
}

/// Picks the best entry for `want`; ties keep index order.
pub fn choose_platform(entries: &[Descriptor], want: &Platform) -> Option<usize> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((platform_rank(d.platform.as_ref()?, want)?, i)))
        .min()
        .map(|(_, i)| i)
}

/// A readable error for a registry status, with the registry's own message.
pub fn status_error(status: u16, body: &[u8]) -> anyhow::Error {
    #[derive(Deserialize)]
    struct Errs {
        #[serde(default)]
        errors: Vec<Err1>,
    }
    #[derive(Deserialize)]
    struct Err1 {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let detail = serde_json::from_slice::<Errs>(body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| format!(": {} {}", e.code, e.message))
        .unwrap_or_default();
    let what = match status {
        401 => "unauthorized (401): authentication required or credentials rejected",
        403 => "forbidden (403): access denied",
        404 => "not found (404)",
        429 => "too many requests (429)",
        500..=599 => "registry server error",
        _ => "unexpected response",
    };
    if (500..=599).contains(&status) {
        anyhow!("{what} ({status}){detail}")
    } else if matches!(status, 401 | 403 | 404 | 429) {
        anyhow!("{what}{detail}")
    } else {
        anyhow!("{what} ({status}){detail}")
    }
}

/// Statuses worth retrying.
pub fn retryable_status(s: u16) -> bool {
    matches!(s, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Back-off before retry `attempt` (1-based): base * 2^(attempt-1), capped;
/// `Retry-After` (seconds) wins when present, capped at one minute.
pub fn backoff(attempt: u32, base: Duration, retry_after: Option<&str>) -> Duration {
    if let Some(s) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Duration::from_secs(s.min(60));
    }
    let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    exp.min(Duration::from_secs(30))
}

/// Retry policy (tests shorten it).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(500),
        }
    }
}

/// How an endpoint wants to be authenticated, learnt from its 401.
#[derive(Debug, Clone)]
enum AuthMode {
    Basic,
    Bearer { realm: String, service: String },
}

/// A token's cache scope: tokens got with one pod's pull secret must not
/// serve a pull with other (or no) credentials.
fn cred_scope(scope: &str, creds: Option<&Credentials>) -> String {
    match creds {
        Some(c) => format!("{scope}\n{}", c.fingerprint()),
        None => scope.to_string(),
    }
}

/// Shared across pulls: tokens and learnt auth modes per endpoint.
#[derive(Default)]
pub struct AuthState {
    tokens: RefCell<TokenCache>,
    modes: RefCell<HashMap<String, AuthMode>>,
}

/// A client for one repository, over its endpoints (mirrors first).
pub struct Registry {
    reference: Reference,
    endpoints: Vec<(Endpoint, Client)>,
    /// Credentials from the docker config for the registry's own domain.
    docker_creds: Option<Credentials>,
    auth: Rc<AuthState>,
    retry: RetryPolicy,
    /// The endpoint that served the manifest; blobs come from it first.
    current: Cell<usize>,
}

impl Registry {
    pub fn new(
        reference: Reference,
        endpoints: Vec<Endpoint>,
        docker_creds: Option<Credentials>,
        auth: Rc<AuthState>,
        retry: RetryPolicy,
    ) -> Registry {
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                let c = Client::new(ClientOptions {
                    tls: e.tls.clone(),
                    read_timeout: Duration::from_secs(60),
                    ..Default::default()
                });
                (e, c)
            })
            .collect();
        Registry {
            reference,
            endpoints,
            docker_creds,
            auth,
            retry,
            current: Cell::new(0),
        }
    }

    /// Fetches a manifest by tag or digest: (media type, bytes, digest).
    /// The digest is computed from the bytes and checked against a requested digest.
    pub async fn manifest(&self, object: &str) -> Result<(String, Vec<u8>, String)> {
        let path = format!("{}/manifests/{object}", self.reference.path);
        let mut resp = self.get(&path, &[("Accept", ACCEPT)], true).await?;
        let ct = resp.header("content-type").unwrap_or("").to_string();
        let body = resp.body.read_to_end(MAX_DOC).await?;
        let digest = super::store::sha256_digest(&body);
        if object.starts_with("sha256:") && object != digest {
            bail!("manifest digest mismatch: asked for {object}, got {digest}");
        }
        Ok((ct, body, digest))
    }

    /// Starts a blob download at `offset` (a `Range` request when > 0).
    /// Returns the response and the offset it actually starts at (0 when
    /// the server ignored the range).
    pub async fn blob(&self, digest: &str, offset: u64) -> Result<(Response, u64)> {
        let path = format!("{}/blobs/{digest}", self.reference.path);
        let range = format!("bytes={offset}-");
        let headers: Vec<(&str, &str)> = if offset > 0 {
            vec![("Range", range.as_str())]
        } else {
            vec![]
        };
        let resp = self.get(&path, &headers, false).await?;
        if resp.status == 206 {
            let start = resp
                .header("content-range")
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if start != Some(offset) {
                bail!("blob {digest}: server sent an unexpected Content-Range");
            }
            return Ok((resp, offset));
        }
        Ok((resp, 0))
    }

    /// A small blob held in memory (the image config), verified.
    pub async fn small_blob(&self, d: &Descriptor) -> Result<Vec<u8>> {
        if d.size > MAX_DOC as u64 {
            bail!("blob {} too large ({} bytes)", d.digest, d.size);
        }
        let (mut resp, _) = self.blob(&d.digest, 0).await?;
        let body = resp.body.read_to_end(MAX_DOC).await?;
        super::store::verify_bytes(&body, &d.digest, d.size)?;
        Ok(body)
    }

    /// GET over the endpoints: the current one first, then the others in
    /// order. Returns a 2xx response or the error of the last endpoint.
    async fn get(&self, path: &str, headers: &[(&str, &str)], manifest: bool) -> Result<Response> {
        let n = self.endpoints.len();
        let first = self.current.get();
        let mut last_err = None;
        for k in 0..n {
            let i = (first + k) % n;
            let (ep, _) = &self.endpoints[i];
            match self.get_on(i, path, headers).await {
                Ok(r) => {
                    if manifest {
                        self.current.set(i);
                    }
                    return Ok(r);
                }
                Err(e) => {
                    if k + 1 < n {
                        log::info!(
                            "{}: endpoint {} failed ({e:#}); trying the next endpoint",
                            self.reference,
                            ep.base
                        );
                    }
                    last_err = Some(e)
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no registry endpoint")))
    }

    /// One endpoint: auth challenges, redirects and retries.
    async fn get_on(&self, i: usize, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        let (ep, client) = &self.endpoints[i];
        let key = ep.base.authority();
        let creds = ep.auth.clone().or_else(|| {
            if ep.mirror {
                None
            } else {
                self.docker_creds.clone()
            }
        });
        let scope = format!("repository:{}:pull", self.reference.path);
        let start_url = ep.url(path);
        let mut attempt = 0;
        let mut auth_tries = 0;
        loop {
            attempt += 1;
            let authz = self.authorization(&key, creds.as_ref(), &scope);
            let res = self
                .send_following(client, &start_url, headers, authz.as_deref())
                .await;
            let resp = match res {
                Ok(r) => r,
                Err(e) => {
                    if attempt >= self.retry.attempts {
                        return Err(e);
                    }
                    let d = backoff(attempt, self.retry.base, None);
                    log::warn!("{}: {e:#}; retrying in {d:?}", self.reference);
                    async_io::Timer::after(d).await;
                    continue;
                }
            };
            match resp.status {
                200..=299 => return Ok(resp),
                401 if auth_tries == 0 => {
                    auth_tries += 1;
                    let chal = auth::parse_challenges(
                        &resp
                            .header_all("www-authenticate")
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                    self.learn_auth(client, &key, &chal, creds.as_ref(), &scope)
                        .await
                        .with_context(|| format!("authenticate to {key}"))?;
                    attempt -= 1;
                }
                s if retryable_status(s) && attempt < self.retry.attempts => {
                    let d = backoff(attempt, self.retry.base, resp.header("retry-after"));
                    log::warn!(
                        "{}: {} answered {s}; retrying in {d:?}",
                        self.reference,
                        ep.base
                    );
                    drop(resp);
                    async_io::Timer::after(d).await;
                }
                s => {
                    let mut resp = resp;
                    let body = resp.body.read_to_end(64 << 10).await.unwrap_or_default();
                    let mut e = status_error(s, &body);
                    if s == 401 && creds.is_none() {
                        e = e.context(format!("no credentials configured for {key}"));
                    }
                    return Err(e.context(format!("GET {}", ep.url(path))));
                }
            }
        }
    }

    /// The Authorization header for this endpoint and scope, if known.
    fn authorization(&self, key: &str, creds: Option<&Credentials>, scope: &str) -> Option<String> {
        match self.auth.modes.borrow().get(key)? {
            AuthMode::Basic => creds.map(|c| c.basic()),
            AuthMode::Bearer { realm, service } => {
                let k = TokenCache::key(realm, service, &cred_scope(scope, creds));
                self.auth
                    .tokens
                    .borrow()
                    .get(&k, Instant::now())
                    .map(|t| format!("Bearer {t}"))
            }
        }
    }

    /// Handles a 401: Basic needs credentials; Bearer fetches a token.
    async fn learn_auth(
        &self,
        client: &Client,
        key: &str,
        chal: &[auth::Challenge],
        creds: Option<&Credentials>,
        scope: &str,
    ) -> Result<()> {
        if let Some(c) = chal.iter().find(|c| c.scheme == "bearer") {
            let realm = c
                .params
                .get("realm")
                .context("Bearer challenge without realm")?
                .clone();
            let service = c.params.get("service").cloned().unwrap_or_default();
            let scope = c.params.get("scope").map_or(scope, |s| s.as_str());
            let mut url = Url::parse(&realm).with_context(|| format!("token realm {realm:?}"))?;
            let sep = if url.path_and_query.contains('?') {
                '&'
            } else {
                '?'
            };
            url.path_and_query += &format!(
                "{sep}service={}&scope={}&client_id=picolet",
                http::query_escape(&service),
                http::query_escape(scope)
            );
            let mut req = Request::get(url.clone());
            if let Some(c) = creds {
                req = req.header("Authorization", &c.basic());
            }
            let mut resp = client
                .send(req)
                .await
                .with_context(|| format!("token request to {realm}"))?;
            let body = resp.body.read_to_end(1 << 20).await?;
            if resp.status != 200 {
                return Err(status_error(resp.status, &body))
                    .with_context(|| format!("token request to {realm}"));
            }
            let (token, life) = auth::parse_token_response(&body)?;
            let k = TokenCache::key(&realm, &service, &cred_scope(scope, creds));
            self.auth
                .tokens
                .borrow_mut()
                .put(k, token, life, Instant::now());
            self.auth
                .modes
                .borrow_mut()
                .insert(key.to_string(), AuthMode::Bearer { realm, service });
            return Ok(());
        }
        if chal.iter().any(|c| c.scheme == "basic") {
            if creds.is_none() {
                bail!("unauthorized (401): the registry wants Basic auth and no credentials are configured for {key}");
            }
            self.auth
                .modes
                .borrow_mut()
                .insert(key.to_string(), AuthMode::Basic);
            return Ok(());
        }
        bail!("unauthorized (401) without a usable WWW-Authenticate challenge")
    }

    /// Sends a GET, following up to 5 redirects. Credentials are only sent
    /// to the endpoint's own host.
    async fn send_following(
        &self,
        client: &Client,
        url: &Url,
        headers: &[(&str, &str)],
        authz: Option<&str>,
    ) -> Result<Response> {
        let origin = url.authority();
        let mut url = url.clone();
        for _ in 0..6 {
            let mut req = Request::get(url.clone());
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let (Some(a), true) = (authz, url.authority() == origin) {
                req = req.header("Authorization", a);
            }
            let resp = if url.authority() == origin {
                client.send(req).await?
            } else {
                // Another host (a CDN): default TLS settings, no credentials.
                Client::new(ClientOptions::default()).send(req).await?
            };
            if matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
                let loc = resp
                    .header("location")
                    .context("redirect without Location")?;
                url = url.join(loc)?;
                continue;
            }
            return Ok(resp);
        }
        bail!("too many redirects from {origin}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: &str, os: &str) -> Descriptor {
        Descriptor {
            digest: format!("sha256:{arch}{variant}"),
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn host_platforms() {
        assert_eq!(platform_for_arch("x86_64").architecture, "amd64");
        let p = platform_for_arch("aarch64");
        assert_eq!(
            (p.architecture.as_str(), p.variant.as_str()),
            ("arm64", "v8")
        );
        let p = platform_for_arch("arm");
        assert_eq!((p.architecture.as_str(), p.variant.as_str()), ("arm", "v7"));
    }

    #[test]
    fn chooses_platform() {
        let list = vec![
            desc("arm", "v6", "linux"),
            desc("amd64", "", "windows"),
            desc("arm", "v7", "linux"),
            desc("arm64", "", "linux"),
            desc("amd64", "", "linux"),
        ];
        let pick = |arch| choose_platform(&list, &platform_for_arch(arch));
        assert_eq!(pick("x86_64"), Some(4));
        assert_eq!(pick("aarch64"), Some(3)); // "" == v8
        assert_eq!(pick("arm"), Some(2)); // exact v7 before v6
        assert_eq!(pick("riscv64"), None);
        // arm v7 falls back to v6, never the other way
        let only_v6 = vec![desc("arm", "v6", "linux")];
        assert_eq!(
            choose_platform(&only_v6, &platform_for_arch("arm")),
            Some(0)
        );
        let only_v7 = vec![desc("arm", "v7", "linux")];
        let v6 = Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: "v6".into(),
        };
        assert_eq!(choose_platform(&only_v7, &v6), None);
        // entries without a platform are never chosen
        let none = vec![Descriptor::default()];
        assert_eq!(choose_platform(&none, &platform_for_arch("x86_64")), None);
    }

    #[test]
    fn parses_manifest_kinds() {
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:a","size":1},"layers":[]}"#;
        assert!(matches!(
            parse_manifest(MT_OCI_MANIFEST, m).unwrap(),
            Parsed::Manifest(_)
        ));
        assert!(matches!(
            parse_manifest("application/json", br#"{"manifests":[]}"#).unwrap(),
            Parsed::Index(_)
        ));
        let dl = format!(r#"{{"mediaType":"{MT_DOCKER_LIST}","manifests":[]}}"#);
        assert!(matches!(
            parse_manifest("", dl.as_bytes()).unwrap(),
            Parsed::Index(_)
        ));
        assert!(parse_manifest(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b"{}"
        )
        .is_err());
        assert!(parse_manifest(MT_OCI_MANIFEST, b"nope").is_err());
    }

    #[test]
    fn retry_rules() {
        assert!(retryable_status(429) && retryable_status(503) && !retryable_status(404));
        let b = Duration::from_millis(500);
        assert_eq!(backoff(1, b, None), b);
        assert_eq!(backoff(3, b, None), Duration::from_secs(2));
        assert_eq!(backoff(20, b, None), Duration::from_secs(30));
        assert_eq!(backoff(1, b, Some("7")), Duration::from_secs(7));
        assert_eq!(backoff(1, b, Some("600")), Duration::from_secs(60));
        let e = status_error(
            404,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "not found (404): MANIFEST_UNKNOWN manifest unknown"
        );
        assert!(status_error(503, b"").to_string().contains("503"));
    }
}
