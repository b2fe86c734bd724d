//! Typed requests: get, create, update, patch (strategic merge, JSON
//! merge, JSON patch), delete, list and watch of any k8s-openapi resource,
//! with the client-side rate limit and per-request timeouts. Knows nothing
//! of what picolet does with the objects.

use super::error::{self, Error, Result};
use super::ratelimit::TokenBucket;
use super::transport::{Request, Response, Transport};
use crate::http::query_escape;
use k8s_openapi::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Protobuf when the server has it (every built-in type), else JSON.
const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf, application/json";

/// Largest non-watch response body accepted (a list of 110 pods with
/// their status is well under this).
pub const MAX_BODY: usize = 64 << 20;

/// A patch and its content type.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `application/strategic-merge-patch+json`
    Strategic(Value),
    /// `application/merge-patch+json` (RFC 7386)
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902)
    Json(Value),
}

impl Patch {
    fn content_type(&self) -> &'static str {
        match self {
            Patch::Strategic(_) => "application/strategic-merge-patch+json",
            Patch::Merge(_) => "application/merge-patch+json",
            Patch::Json(_) => "application/json-patch+json",
        }
    }
    fn value(&self) -> &Value {
        match self {
            Patch::Strategic(v) | Patch::Merge(v) | Patch::Json(v) => v,
        }
    }
}

/// Query parameters of list and watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    pub limit: Option<u32>,
    pub continue_token: Option<String>,
    /// Watch only: the server ends the watch after this long.
    pub timeout_seconds: Option<u32>,
    pub allow_watch_bookmarks: bool,
}

impl ListParams {
    pub fn fields(selector: impl Into<String>) -> Self {
        ListParams {
            field_selector: Some(selector.into()),
            ..Default::default()
        }
    }

    fn query(&self, watch: bool) -> String {
        let mut q: Vec<String> = Vec::new();
        if watch {
            q.push("watch=1".into());
        }
        let mut add = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                q.push(format!("{k}={}", query_escape(v)));
            }
        };
        add("labelSelector", &self.label_selector);
        add("fieldSelector", &self.field_selector);
        add("resourceVersion", &self.resource_version);
        add("continue", &self.continue_token);
        if let Some(l) = self.limit {
            q.push(format!("limit={l}"));
        }
        if watch {
            if let Some(t) = self.timeout_seconds {
                q.push(format!("timeoutSeconds={t}"));
            }
            if self.allow_watch_bookmarks {
                q.push("allowWatchBookmarks=true".into());
            }
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

/// `DeleteOptions` picolet sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    pub grace_period_seconds: Option<i64>,
    /// Delete only if the object still has this UID.
    pub uid: Option<String>,
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
}

/// A list's items and the resourceVersion to watch from. Items that do
/// not decode are reported in `undecodable`, not fatal: one bad object
/// must not hide the others.
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    pub resource_version: String,
    pub continue_token: Option<String>,
    pub items: Vec<K>,
    pub undecodable: Vec<String>,
}

/// The API path of a resource collection or object. `ns` is `None` for
/// cluster-scoped resources.
pub fn resource_path<K: Resource>(ns: Option<&str>, name: Option<&str>) -> String {
    let mut p = if K::GROUP.is_empty() {
        format!("/api/{}", K::VERSION)
    } else {
        format!("/apis/{}/{}", K::GROUP, K::VERSION)
    };
    if let Some(ns) = ns {
        p += "/namespaces/";
        p += &path_escape(ns);
    }
    p += "/";
    p += K::URL_PATH_SEGMENT;
    if let Some(n) = name {
        p += "/";
        p += &path_escape(n);
    }
    p
}

/// Object names are DNS-like, but a path must never be bent by one.
fn path_escape(s: &str) -> String {
    query_escape(s)
}

/// Decodes JSON into `T`, naming the field on a type error. Through a
/// `Value` and [`crate::api::decode`], the one deserializer every
/// Kubernetes object of picolet goes through: each type's (large) serde
/// code is compiled once, not once per input kind.
pub fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::Decode {
        what: what.to_string(),
        error: e.to_string(),
    })?;
    decode_value(what, v)
}

/// Decodes an already-parsed JSON value into `T` (unknown fields are
/// fine: the server may be newer than picolet's types).
pub fn decode_value<T: DeserializeOwned>(what: &str, v: Value) -> Result<T> {
    crate::api::decode(v)
        .map(|d| d.object)
        .map_err(|e| Error::Decode {
            what: what.to_string(),
            error: format!("{e:#}"),
        })
}

pub struct Client {
    transport: Rc<Transport>,
    limiter: RefCell<TokenBucket>,
    /// Bound on one request (headers and body), watches aside.
    pub timeout: Duration,
}

impl Client {
    pub fn new(transport: Rc<Transport>, qps: f64, burst: u32) -> Client {
        Client {
            transport,
            limiter: RefCell::new(TokenBucket::new(qps, burst, Instant::now())),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn transport(&self) -> &Rc<Transport> {
        &self.transport
    }

    async fn throttle(&self) {
        let wait = self.limiter.borrow_mut().reserve(Instant::now());
        if !wait.is_zero() {
            log::debug!("API client rate limit: waiting {wait:?}");
            async_io::Timer::after(wait).await;
        }
    }

    /// Sends a request and returns the response once its headers arrived,
    /// turning a failure status into `Error::Api`.
    pub async fn send(&self, req: Request, timeout: Duration) -> Result<Response> {
        self.throttle().await;
        let what = format!("{} {}", req.method, req.path);
        let mut resp = self
            .transport
            .send(req, timeout)
            .await
            .map_err(Error::Transport)?;
        if !(200..300).contains(&resp.status) {
            let body = crate::http::with_timeout(timeout, async {
                resp.body
                    .read_to_end(1 << 20)
                    .await
                    .map_err(std::io::Error::other)
            })
            .await
            .unwrap_or_default();
            let e = error::from_response(resp.status, &body, resp.header("retry-after"));
            log::debug!("{what}: {e}");
            return Err(e);
        }
        Ok(resp)
    }

    /// A request whose whole answer is read, within `self.timeout`.
    pub async fn call(
        &self,
        method: &'static str,
        path: String,
        content_type: Option<&'static str>,
        body: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.call_accepting(method, path, content_type, None, body)
            .await
    }

    async fn call_accepting(
        &self,
        method: &'static str,
        path: String,
        content_type: Option<&'static str>,
        accept: Option<&'static str>,
        body: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let what = format!("{method} {path}");
        let timeout = self.timeout;
        let fut = async {
            let mut resp = self
                .send(
                    Request {
                        method,
                        path,
                        content_type,
                        accept,
                        body,
                    },
                    timeout,
                )
                .await?;
            resp.body
                .read_to_end(MAX_BODY)
                .await
                .map_err(|e| Error::Transport(format!("{what}: {e}")))
        };
        futures_lite::future::or(fut, async {
            async_io::Timer::after(timeout).await;
            Err(Error::Transport(format!(
                "{what}: timed out after {}",
                crate::util::duration::format(timeout)
            )))
        })
        .await
    }

    pub async fn get<K: Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Result<K> {
        let path = resource_path::<K>(ns, Some(name));
        let b = self.call("GET", path, None, Vec::new()).await?;
        decode(K::KIND, &b)
    }

    pub async fn create<K: Resource + Serialize + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        obj: &K,
    ) -> Result<K> {
        let body = encode(obj)?;
        let path = resource_path::<K>(ns, None);
        let b = self
            .call("POST", path, Some("application/json"), body)
            .await?;
        decode(K::KIND, &b)
    }

    /// PUT of the whole object (its `resourceVersion` makes it a
    /// compare-and-swap).
    pub async fn replace<K: Resource + Serialize + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
        obj: &K,
    ) -> Result<K> {
        let body = encode(obj)?;
        let path = resource_path::<K>(ns, Some(name));
        let b = self
            .call("PUT", path, Some("application/json"), body)
            .await?;
        decode(K::KIND, &b)
    }

    /// PATCH of the object, or of a subresource (`status`).
    pub async fn patch<K: Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        patch: &Patch,
    ) -> Result<K> {
        let body = serde_json::to_vec(patch.value())
            .map_err(|e| Error::Invalid(format!("encode patch: {e}")))?;
        let mut path = resource_path::<K>(ns, Some(name));
        if let Some(s) = subresource {
            path += "/";
            path += s;
        }
        let b = self
            .call("PATCH", path, Some(patch.content_type()), body)
            .await?;
        decode(K::KIND, &b)
    }

    /// PATCH for a caller that needs no answer but success (a Lease
    /// renewal, hundreds an hour): the answer comes as protobuf, about half
    /// the bytes of its JSON on a metered uplink, and is not decoded.
    pub async fn patch_unread<K: Resource>(
        &self,
        ns: Option<&str>,
        name: &str,
        patch: &Patch,
    ) -> Result<()> {
        let body = serde_json::to_vec(patch.value())
            .map_err(|e| Error::Invalid(format!("encode patch: {e}")))?;
        let path = resource_path::<K>(ns, Some(name));
        self.call_accepting(
            "PATCH",
            path,
            Some(patch.content_type()),
            Some(PROTOBUF_FIRST),
            body,
        )
        .await?;
        Ok(())
    }

    pub async fn delete<K: Resource>(
        &self,
        ns: Option<&str>,
        name: &str,
        p: &DeleteParams,
    ) -> Result<()> {
        let mut opts = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(g) = p.grace_period_seconds {
            opts["gracePeriodSeconds"] = g.into();
        }
        if let Some(u) = &p.uid {
            opts["preconditions"] = serde_json::json!({ "uid": u });
        }
        if let Some(pp) = &p.propagation_policy {
            opts["propagationPolicy"] = pp.clone().into();
        }
        let body = serde_json::to_vec(&opts)
            .map_err(|e| Error::Invalid(format!("encode DeleteOptions: {e}")))?;
        let path = resource_path::<K>(ns, Some(name));
        self.call("DELETE", path, Some("application/json"), body)
            .await?;
        Ok(())
    }

    /// One page of a list (all of it unless `p.limit` is set).
    pub async fn list<K: Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        p: &ListParams,
    ) -> Result<ObjectList<K>> {
        let path = resource_path::<K>(ns, None) + &p.query(false);
        let b = self.call("GET", path, None, Vec::new()).await?;
        let what = format!("{} list", K::KIND);
        let mut v: Value = decode(&what, &b)?;
        let resource_version = v
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let continue_token = v
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let items = match v.get_mut("items").map(Value::take) {
            Some(Value::Array(a)) => a,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(Error::Decode {
                    what,
                    error: "items: not a list".into(),
                })
            }
        };
        let mut out = ObjectList {
            resource_version,
            continue_token,
            items: Vec::with_capacity(items.len()),
            undecodable: Vec::new(),
        };
        for it in items {
            let name = object_name(&it);
            match decode_value::<K>(K::KIND, it) {
                Ok(o) => out.items.push(o),
                Err(e) => out.undecodable.push(format!("{name}: {e}")),
            }
        }
        Ok(out)
    }

    /// Opens a watch; events stream from [`super::watch::WatchStream`].
    pub async fn watch<K: Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        p: &ListParams,
    ) -> Result<super::watch::WatchStream<K>> {
        let path = resource_path::<K>(ns, None) + &p.query(true);
        // The server ends the watch at timeoutSeconds; the connection's own
        // liveness checks catch a dead peer before that.
        let wait = Duration::from_secs(u64::from(p.timeout_seconds.unwrap_or(600)) + 60);
        let resp = self
            .send(
                Request {
                    method: "GET",
                    path,
                    content_type: None,
                    accept: None,
                    body: Vec::new(),
                },
                wait,
            )
            .await?;
        Ok(super::watch::WatchStream::new(resp.body))
    }
}

/// Through a `Value`, like every other serialization of API types in
/// picolet: one copy of each type's serde code in the binary.
fn encode<K: Serialize>(obj: &K) -> Result<Vec<u8>> {
    serde_json::to_value(obj)
        .and_then(|v| serde_json::to_vec(&v))
        .map_err(|e| Error::Invalid(format!("encode object: {e}")))
}

/// `namespace/name` of a JSON object, for messages about it.
pub fn object_name(v: &Value) -> String {
    let m = v.get("metadata");
    let get = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_str);
    match (get("namespace"), get("name")) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.to_string(),
        _ => "<unnamed>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Node, Pod};

    #[test]
    fn paths_follow_group_version_and_scope() {
        assert_eq!(resource_path::<Node>(None, Some("n1")), "/api/v1/nodes/n1");
        assert_eq!(
            resource_path::<Pod>(Some("default"), None),
            "/api/v1/namespaces/default/pods"
        );
        assert_eq!(
            resource_path::<Lease>(Some("kube-node-lease"), Some("n1")),
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        );
        assert_eq!(
            resource_path::<Node>(None, Some("a/b c")),
            "/api/v1/nodes/a%2Fb%20c"
        );
    }

    #[test]
    fn list_and_watch_queries() {
        let mut p = ListParams::fields("spec.nodeName=n1");
        assert_eq!(p.query(false), "?fieldSelector=spec.nodeName%3Dn1");
        p.resource_version = Some("42".into());
        p.timeout_seconds = Some(300);
        p.allow_watch_bookmarks = true;
        p.label_selector = Some("a in (x,y)".into());
        assert_eq!(
            p.query(true),
            "?watch=1&labelSelector=a%20in%20%28x%2Cy%29&fieldSelector=spec.nodeName%3Dn1\
             &resourceVersion=42&timeoutSeconds=300&allowWatchBookmarks=true"
        );
        assert_eq!(ListParams::default().query(false), "");
    }

    #[test]
    fn decode_errors_name_the_field() {
        let e = decode::<Node>("Node", br#"{"metadata":{"name":5}}"#).unwrap_err();
        assert!(e.to_string().contains("metadata.name"), "{e}");
        let e = decode::<Node>("Node", b"<html>").unwrap_err();
        assert!(e.to_string().starts_with("decode Node"), "{e}");
    }

    #[test]
    fn object_names_for_messages() {
        let v = serde_json::json!({"metadata": {"namespace": "ns", "name": "p"}});
        assert_eq!(object_name(&v), "ns/p");
        assert_eq!(object_name(&serde_json::json!(3)), "<unnamed>");
    }
}
