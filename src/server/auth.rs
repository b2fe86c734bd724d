//! Authentication and authorization of the kubelet port, as upstream's
//! delegated auth: x509 client certificates against the client CA, bearer
//! tokens through the API server's TokenReview (cached `cacheTTL`),
//! anonymous only when enabled; then `AlwaysAllow` or a SubjectAccessReview
//! for `nodes/<subresource>` of this node (allowed cached
//! `cacheAuthorizedTTL`, denied `cacheUnauthorizedTTL`).
//!
//! The API client is reached through a closure: the server does not know
//! the agent, and the client exists only once picolet joined a cluster
//! (until then webhook decisions fail closed).

use super::http1::Request;
use crate::kube::Client;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }
    /// Upstream's AuthenticatedGroupAdder.
    fn authenticated(mut self) -> User {
        if !self.groups.iter().any(|g| g == "system:authenticated") {
            self.groups.push("system:authenticated".into());
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzMode {
    AlwaysAllow,
    Webhook,
}

/// `authentication` and `authorization` of the KubeletConfiguration.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub anonymous: bool,
    pub webhook: bool,
    pub cache_ttl: Duration,
    pub mode: AuthzMode,
    pub authorized_ttl: Duration,
    pub unauthorized_ttl: Duration,
}

impl Default for AuthConfig {
    /// The v1beta1 KubeletConfiguration defaults.
    fn default() -> Self {
        AuthConfig {
            anonymous: false,
            webhook: true,
            cache_ttl: Duration::from_secs(120),
            mode: AuthzMode::Webhook,
            authorized_ttl: Duration::from_secs(300),
            unauthorized_ttl: Duration::from_secs(30),
        }
    }
}

/// The authorization attributes of a request (upstream
/// `nodeAuthorizerAttributesGetter`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
    pub node: String,
    pub path: String,
}

fn is_subpath(path: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    path == base || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

pub fn attributes(method: &str, path: &str, node: &str) -> Attributes {
    let verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    };
    let subresource = if is_subpath(path, "/stats") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs") {
        "log"
    } else {
        "proxy"
    };
    Attributes {
        verb,
        subresource,
        node: node.to_string(),
        path: path.to_string(),
    }
}

/// A bounded map whose entries expire.
pub struct TtlCache<K, V> {
    map: HashMap<K, (V, Instant)>,
    max: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(max: usize) -> Self {
        TtlCache {
            map: HashMap::new(),
            max,
        }
    }
    pub fn get(&self, k: &K, now: Instant) -> Option<V> {
        self.map
            .get(k)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone())
    }
    pub fn put(&mut self, k: K, v: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        if self.map.len() >= self.max {
            self.map.retain(|_, (_, exp)| *exp > now);
            if self.map.len() >= self.max {
                // Still full of live entries (a flood of distinct tokens):
                // start over rather than grow.
                self.map.clear();
            }
        }
        self.map.insert(k, (v, now + ttl));
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The outcome of authorizing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 403 with this body.
    Deny(String),
    /// 500 with this body (the review could not be made).
    Error(String),
}

/// Gives the API client once there is one.
pub type ClientFn = Rc<dyn Fn() -> Option<Rc<Client>>>;

const CACHE_MAX: usize = 4096;

/// User, groups, verb, subresource.
type DecisionKey = (String, Vec<String>, &'static str, &'static str);

pub struct Auth {
    pub cfg: AuthConfig,
    node: String,
    clients: Option<super::tls::ChainVerifier>,
    api: ClientFn,
    tokens: RefCell<TtlCache<[u8; 32], Option<User>>>,
    decisions: RefCell<TtlCache<DecisionKey, bool>>,
    /// TokenReviews and SubjectAccessReviews sent (tests, metrics).
    pub token_reviews: Cell<u64>,
    pub access_reviews: Cell<u64>,
}

impl Auth {
    pub fn new(
        cfg: AuthConfig,
        node: &str,
        clients: Option<super::tls::ChainVerifier>,
        api: ClientFn,
    ) -> Auth {
        Auth {
            cfg,
            node: node.to_string(),
            clients,
            api,
            tokens: RefCell::new(TtlCache::new(CACHE_MAX)),
            decisions: RefCell::new(TtlCache::new(CACHE_MAX)),
            token_reviews: Cell::new(0),
            access_reviews: Cell::new(0),
        }
    }

    /// The user of a request: `None` for 401.
    pub async fn authenticate(
        &self,
        peer: Option<&[CertificateDer<'static>]>,
        req: &Request,
    ) -> Option<User> {
        if let (Some(v), Some([ee, rest @ ..])) = (&self.clients, peer) {
            match v.verify_client_cert(ee, rest, UnixTime::now()) {
                Ok(_) => match crate::kube::x509::info(ee) {
                    Ok(i) => {
                        return Some(
                            User {
                                name: i.common_name.unwrap_or_default(),
                                groups: i.organizations,
                                ..Default::default()
                            }
                            .authenticated(),
                        )
                    }
                    Err(e) => log::debug!("client certificate: {e:#}"),
                },
                Err(e) => log::debug!("client certificate rejected: {e}"),
            }
        }
        if self.cfg.webhook {
            if let Some(token) = bearer_token(req) {
                if let Some(u) = self.review_token(&token).await {
                    return Some(u.authenticated());
                }
            }
        }
        self.cfg.anonymous.then(User::anonymous)
    }

    async fn review_token(&self, token: &str) -> Option<User> {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .ok()?;
        let now = Instant::now();
        if let Some(hit) = self.tokens.borrow().get(&key, now) {
            return hit;
        }
        let client = (self.api)()?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        self.token_reviews.set(self.token_reviews.get() + 1);
        let status = match client.create(None, &review).await {
            Ok(r) => r.status.unwrap_or_default(),
            Err(e) => {
                // Not cached: the next request asks again.
                log::warn!("TokenReview: {e}");
                return None;
            }
        };
        let user = (status.authenticated == Some(true))
            .then_some(status.user)
            .flatten()
            .map(|u| User {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            });
        log::debug!(
            "TokenReview: {}",
            user.as_ref()
                .map_or("not authenticated", |u| u.name.as_str())
        );
        if user.is_none() {
            log::debug!(
                "TokenReview: not authenticated: {}",
                status.error.unwrap_or_default()
            );
        }
        self.tokens
            .borrow_mut()
            .put(key, user.clone(), self.cfg.cache_ttl, Instant::now());
        user
    }

    pub async fn authorize(&self, user: &User, a: &Attributes) -> Decision {
        if self.cfg.mode == AuthzMode::AlwaysAllow {
            return Decision::Allow;
        }
        let what = format!(
            "(user={}, verb={}, resource=nodes, subresource={})",
            user.name, a.verb, a.subresource
        );
        let key = (
            user.name.clone(),
            user.groups.clone(),
            a.verb,
            a.subresource,
        );
        let cached = self.decisions.borrow().get(&key, Instant::now());
        let allowed = match cached {
            Some(v) => v,
            None => {
                let Some(client) = (self.api)() else {
                    log::warn!("authorization {what}: not connected to an API server yet");
                    return Decision::Error(format!("Authorization error {what}"));
                };
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some(user.name.clone()),
                        uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                        groups: Some(user.groups.clone()),
                        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                        resource_attributes: Some(ResourceAttributes {
                            verb: Some(a.verb.to_string()),
                            version: Some("v1".into()),
                            resource: Some("nodes".into()),
                            subresource: Some(a.subresource.to_string()),
                            name: Some(a.node.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                self.access_reviews.set(self.access_reviews.get() + 1);
                let allowed = match client.create(None, &review).await {
                    Ok(r) => r.status.map(|s| s.allowed).unwrap_or(false),
                    Err(e) => {
                        log::warn!("SubjectAccessReview {what}: {e}");
                        return Decision::Error(format!("Authorization error {what}"));
                    }
                };
                log::debug!("SubjectAccessReview {what}: allowed={allowed}");
                let ttl = if allowed {
                    self.cfg.authorized_ttl
                } else {
                    self.cfg.unauthorized_ttl
                };
                self.decisions
                    .borrow_mut()
                    .put(key, allowed, ttl, Instant::now());
                allowed
            }
        };
        if allowed {
            Decision::Allow
        } else {
            log::debug!("Forbidden {what}");
            Decision::Deny(format!("Forbidden {what}"))
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

/// The bearer token of `Authorization`, or of a WebSocket subprotocol
/// `base64url.bearer.authorization.k8s.io.<token>` (upstream accepts both).
pub fn bearer_token(req: &Request) -> Option<String> {
    if let Some(h) = req.header("authorization") {
        let mut parts = h.splitn(2, ' ');
        if parts
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        {
            let t = parts.next().unwrap_or("").trim();
            if !t.is_empty() {
                return Some(t.to_string());
            }
        }
    }
    const PREFIX: &str = "base64url.bearer.authorization.k8s.io.";
    req.header_tokens("sec-websocket-protocol")
        .into_iter()
        .find_map(|p| {
            use base64::Engine;
            let b = p.strip_prefix(PREFIX)?;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b.trim_end_matches('='))
                .ok()?;
            String::from_utf8(raw).ok().filter(|t| !t.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_as_upstream() {
        let a = attributes("GET", "/stats/summary", "n1");
        assert_eq!(
            (a.verb, a.subresource, a.node.as_str()),
            ("get", "stats", "n1")
        );
        assert_eq!(
            attributes("GET", "/metrics/resource", "n").subresource,
            "metrics"
        );
        assert_eq!(attributes("GET", "/metrics", "n").subresource, "metrics");
        assert_eq!(attributes("GET", "/metricsx", "n").subresource, "proxy");
        assert_eq!(attributes("GET", "/logs/syslog", "n").subresource, "log");
        assert_eq!(
            attributes("GET", "/containerLogs/a/b/c", "n").subresource,
            "proxy"
        );
        assert_eq!(attributes("POST", "/exec/a/b/c", "n").verb, "create");
        assert_eq!(attributes("GET", "/spec/", "n").subresource, "proxy");
        assert_eq!(attributes("OPTIONS", "/pods", "n").verb, "");
    }

    #[test]
    fn ttl_cache_expires_and_stays_bounded() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(3);
        c.put(1, "a", Duration::from_secs(10), t0);
        assert_eq!(c.get(&1, t0), Some("a"));
        assert_eq!(c.get(&1, t0 + Duration::from_secs(11)), None);
        c.put(2, "b", Duration::ZERO, t0);
        assert_eq!(c.get(&2, t0), None);
        for i in 10..100 {
            c.put(i, "x", Duration::from_secs(10), t0);
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn bearer_tokens_from_header_or_websocket_protocol() {
        let req = |h: &[(&str, &str)]| Request {
            headers: h
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            bearer_token(&req(&[("authorization", "Bearer abc")])).as_deref(),
            Some("abc")
        );
        assert_eq!(bearer_token(&req(&[("authorization", "Basic abc")])), None);
        assert_eq!(
            bearer_token(&req(&[(
                "sec-websocket-protocol",
                "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9rZW4"
            )]))
            .as_deref(),
            Some("token")
        );
    }
}
