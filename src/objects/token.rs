//! Service account tokens for projected volumes (upstream
//! pkg/kubelet/token/token_manager.go): a TokenRequest per (service
//! account, audiences, lifetime, bound pod), cached and requested again
//! once 80 % of its lifetime has passed or it is older than 24 h (a few
//! seconds of jitter earlier, so many pods do not ask at once). A failed
//! request keeps the cached token while it is still valid.

use crate::kube::Client;
use crate::offline::OfflineStore;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Upstream `maxTTL`: a token older than this is replaced.
pub const MAX_TTL: SignedDuration = SignedDuration::from_hours(24);
/// Upstream `maxJitter`.
pub const MAX_JITTER_SECS: f64 = 10.0;
/// The API default of `serviceAccountToken.expirationSeconds`.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// What one projected token is requested with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub namespace: String,
    pub service_account: String,
    /// Empty: the API server's own audiences.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod_name: String,
    pub pod_uid: String,
}

impl TokenSpec {
    /// The cache key (upstream `keyFunc`: name, namespace, audiences,
    /// expiration and the bound object).
    pub fn key(&self) -> String {
        format!(
            "{:?}/{:?}/{:?}/{}/{}/{}",
            self.service_account,
            self.namespace,
            self.audiences,
            self.expiration_seconds,
            self.pod_name,
            self.pod_uid
        )
    }

    /// The TokenRequest body.
    pub fn request(&self) -> Value {
        let mut spec = json!({
            "expirationSeconds": self.expiration_seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": self.pod_name, "uid": self.pod_uid},
        });
        if !self.audiences.is_empty() {
            spec["audiences"] = json!(self.audiences);
        }
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    }

    /// `POST .../serviceaccounts/<sa>/token`.
    pub fn path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/serviceaccounts/{}/token",
            crate::http::query_escape(&self.namespace),
            crate::http::query_escape(&self.service_account)
        )
    }
}

/// A token as the API server issued it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Issued {
    pub token: String,
    /// `status.expirationTimestamp`.
    pub expires: Timestamp,
    /// The lifetime it was requested with.
    pub expiration_seconds: i64,
    pub pod_uid: String,
}

/// Upstream `requiresRefresh`: older than [`MAX_TTL`], or within 20 % of
/// its lifetime of expiring, each `jitter_secs` (0..[`MAX_JITTER_SECS`])
/// early.
pub fn requires_refresh(now: Timestamp, t: &Issued, jitter_secs: f64) -> bool {
    let jitter = SignedDuration::from_secs(jitter_secs.max(0.0) as i64);
    let life = SignedDuration::from_secs(t.expiration_seconds);
    let iat = t.expires - life;
    if now > iat + MAX_TTL - jitter {
        return true;
    }
    let margin = SignedDuration::from_secs(t.expiration_seconds * 20 / 100);
    now > t.expires - margin - jitter
}

/// Parses a TokenRequest answer.
pub fn parse_issued(spec: &TokenSpec, body: &[u8]) -> Result<Issued, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("TokenRequest answer: {e}"))?;
    let token = v
        .pointer("/status/token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("TokenRequest answer without a token")?
        .to_string();
    let expires: Timestamp = v
        .pointer("/status/expirationTimestamp")
        .and_then(Value::as_str)
        .ok_or("TokenRequest answer without an expirationTimestamp")?
        .parse()
        .map_err(|e| format!("TokenRequest answer: expirationTimestamp: {e}"))?;
    Ok(Issued {
        token,
        expires,
        expiration_seconds: spec.expiration_seconds,
        pod_uid: spec.pod_uid.clone(),
    })
}

/// The token cache.
#[derive(Default)]
pub struct TokenManager {
    cache: RefCell<BTreeMap<String, Issued>>,
    requests: Cell<u64>,
    /// The local copy (offline autonomy): the cache is kept there.
    offline: RefCell<Option<Rc<OfflineStore>>>,
}

impl TokenManager {
    /// Keeps the tokens in `store`, starting from the ones it has: a
    /// restarted node serves them while the API server is unreachable.
    pub fn set_offline(&self, store: Rc<OfflineStore>) {
        if let Some(t) = store.tokens::<BTreeMap<String, Issued>>() {
            log::debug!("{} service account token(s) from the local copy", t.len());
            self.cache.borrow_mut().extend(t);
        }
        *self.offline.borrow_mut() = Some(store);
    }

    fn save(&self) {
        if let Some(o) = &*self.offline.borrow() {
            o.save_tokens(&*self.cache.borrow());
        }
    }

    /// A valid token for `spec`: the cached one unless it needs a refresh.
    pub async fn get(&self, client: &Client, spec: &TokenSpec) -> Result<String, String> {
        let key = spec.key();
        let now = Timestamp::now();
        let cached = self.cache.borrow().get(&key).cloned();
        if let Some(t) = &cached {
            if !requires_refresh(now, t, crate::util::random_fraction() * MAX_JITTER_SECS) {
                return Ok(t.token.clone());
            }
        }
        self.requests.set(self.requests.get() + 1);
        let body = serde_json::to_vec(&spec.request()).map_err(|e| e.to_string())?;
        let res = client
            .call("POST", spec.path(), Some("application/json"), body)
            .await
            .map_err(|e| format!("failed to fetch token: {e}"))
            .and_then(|b| parse_issued(spec, &b));
        match res {
            Ok(t) => {
                log::debug!(
                    "service account token for {}/{} (pod {}), valid until {}",
                    spec.namespace,
                    spec.service_account,
                    spec.pod_name,
                    t.expires
                );
                let token = t.token.clone();
                self.cache.borrow_mut().insert(key, t);
                self.save();
                Ok(token)
            }
            Err(e) => match cached {
                // Still valid: keep serving it, as upstream does.
                Some(t) if t.expires > Timestamp::now() => {
                    log::warn!(
                        "service account token for {}/{} (pod {}): {e}; keeping the current one",
                        spec.namespace,
                        spec.service_account,
                        spec.pod_name
                    );
                    Ok(t.token)
                }
                // Started from the local copy with the API unreachable:
                // the API server may have issued it for longer than it
                // said (`--service-account-extend-token-expiration`), and
                // nothing better can be had until it answers.
                Some(t) if self.offline.borrow().as_ref().is_some_and(|o| o.active()) => {
                    log::warn!(
                        "service account token for {}/{} (pod {}): {e}; the API server is unreachable, \
                         using the stored one (expired {})",
                        spec.namespace,
                        spec.service_account,
                        spec.pod_name,
                        t.expires
                    );
                    Ok(t.token)
                }
                _ => Err(e),
            },
        }
    }

    /// Forgets the tokens bound to a pod (upstream
    /// `DeleteServiceAccountToken`), and any that expired.
    pub fn forget_pod(&self, uid: &str) {
        let now = Timestamp::now();
        let before = self.cache.borrow().len();
        self.cache
            .borrow_mut()
            .retain(|_, t| t.pod_uid != uid && t.expires > now);
        if self.cache.borrow().len() != before {
            self.save();
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.cache.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// TokenRequests sent since the start.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(at: Timestamp, secs: i64) -> Issued {
        Issued {
            token: "t".into(),
            expires: at + SignedDuration::from_secs(secs),
            expiration_seconds: secs,
            pod_uid: "u".into(),
        }
    }

    #[test]
    fn tokens_survive_a_restart_in_the_local_copy() {
        let d = std::env::temp_dir().join(format!("picolet-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        crate::rt::block_on(async {
            let store = OfflineStore::open(&d).unwrap();
            let m = TokenManager::default();
            m.set_offline(store.clone());
            m.cache.borrow_mut().insert("k".into(), issued(t0, 3600));
            m.save();
            store.flush().await;
            let raw = std::fs::read(d.join("offline/tokens")).unwrap();
            assert!(raw.starts_with(b"picolet-offline/1 chacha20poly1305 "));
        });
        let m = TokenManager::default();
        m.set_offline(OfflineStore::open(&d).unwrap());
        assert_eq!(m.cache.borrow().get("k"), Some(&issued(t0, 3600)));
        // forget_pod drops the pod's tokens from the copy too.
        crate::rt::block_on(async {
            m.forget_pod("u");
            let o = m.offline.borrow().clone().unwrap();
            o.flush().await;
        });
        let m = TokenManager::default();
        m.set_offline(OfflineStore::open(&d).unwrap());
        assert!(m.is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refreshes_at_eighty_percent() {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let t = issued(t0, 3600);
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        assert!(!requires_refresh(at(0), &t, 0.0));
        assert!(!requires_refresh(at(2880), &t, 0.0), "exactly 80 %");
        assert!(requires_refresh(at(2881), &t, 0.0));
        // Jitter moves it earlier by up to 10 s.
        assert!(!requires_refresh(at(2870), &t, 9.9));
        assert!(requires_refresh(at(2872), &t, 9.9));
        // The shortest lifetime the API allows: 600 s -> 480 s.
        let t = issued(t0, 600);
        assert!(!requires_refresh(at(480), &t, 0.0));
        assert!(requires_refresh(at(481), &t, 0.0));
    }

    #[test]
    fn refreshes_after_a_day_whatever_the_lifetime() {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let week = 7 * 24 * 3600;
        let t = issued(t0, week);
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        assert!(!requires_refresh(at(24 * 3600), &t, 0.0));
        assert!(requires_refresh(at(24 * 3600 + 1), &t, 0.0));
        assert!(requires_refresh(at(24 * 3600 - 5), &t, 10.0));
    }

    #[test]
    fn request_and_answer() {
        let spec = TokenSpec {
            namespace: "ns".into(),
            service_account: "default".into(),
            audiences: vec![],
            expiration_seconds: 3607,
            pod_name: "p".into(),
            pod_uid: "u-1".into(),
        };
        assert_eq!(
            spec.path(),
            "/api/v1/namespaces/ns/serviceaccounts/default/token"
        );
        let r = spec.request();
        assert_eq!(r["spec"]["expirationSeconds"], 3607);
        assert_eq!(r["spec"]["boundObjectRef"]["uid"], "u-1");
        assert!(r["spec"].get("audiences").is_none());
        let mut aud = spec.clone();
        aud.audiences = vec!["vault".into()];
        assert_eq!(aud.request()["spec"]["audiences"], json!(["vault"]));
        assert_ne!(aud.key(), spec.key());
        let t = parse_issued(
            &spec,
            br#"{"status":{"token":"abc","expirationTimestamp":"2024-01-01T01:00:07Z"}}"#,
        )
        .unwrap();
        assert_eq!(t.token, "abc");
        assert_eq!(t.expiration_seconds, 3607);
        assert!(parse_issued(&spec, br#"{"status":{}}"#).is_err());
        assert!(parse_issued(&spec, b"nope").is_err());
    }
}
