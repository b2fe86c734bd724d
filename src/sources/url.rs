//! The `staticPodURL` source (upstream pkg/kubelet/config/http.go).
//!
//! As upstream: the URL is read every `httpCheckFrequency` with the
//! `staticPodURLHeader` headers and a 10 s timeout; the body is one pod or
//! a `v1` `PodList`, in JSON or YAML; every pod is defaulted and validated
//! as a static pod of this node (its UID hashes the content and the URL);
//! one invalid pod rejects the whole response. A response that is not 200,
//! a timeout, or a body that cannot be used is reported and changes
//! nothing: the pods of the last good response keep running. An empty 200
//! body means "no pods" (an empty snapshot, also reported). A body equal to
//! the previous one is not decoded again (and, unlike upstream, a bad one
//! stays reported rather than counting as a success).
//!
//! Differences, on purpose: a YAML stream of several documents is refused
//! (upstream silently reads only the first); bodies above
//! [`MAX_BODY_BYTES`] are refused.

use super::decode::{decode_pod, Origin};
use super::{SourceUpdate, HTTP_SOURCE};
use crate::api::core::Pod;
use crate::http::{Client, ClientOptions, Request, Url};
use async_io::Timer;
use futures_lite::future;
use smol::channel::Sender;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// Upstream's client timeout for the manifest URL.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest body read.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// How many failures in a row are logged as warnings (upstream: 3).
const LOUD_FAILURES: u32 = 3;

/// The source's state, shared with whoever shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlReport {
    /// Why the last read was not used (`None`: it was).
    pub last_error: Option<String>,
    /// Failed reads in a row.
    pub failures: u32,
    /// Fields the pod type does not know, dropped from the last good
    /// response (`pods[1].spec.foo`).
    pub unknown_fields: Vec<String>,
    /// Pods in the last snapshot sent.
    pub pods: usize,
}

pub type UrlReports = Rc<RefCell<UrlReport>>;

/// The `staticPodURL` source.
pub struct UrlSource {
    url: String,
    headers: Vec<(String, String)>,
    node_name: String,
    period: Duration,
    tx: Sender<SourceUpdate>,
    report: UrlReports,
    last_data: Option<Vec<u8>>,
    /// Why `last_data` could not be used, if it could not.
    last_data_error: Option<String>,
}

/// What one read gave.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    /// A snapshot to send, plus whether it should also be reported as a
    /// problem (the empty body).
    Pods(Vec<Pod>, Vec<String>, Option<String>),
    /// Same body as last time: nothing to do.
    Unchanged,
}

impl UrlSource {
    pub fn new(
        url: &str,
        headers: &BTreeMap<String, Vec<String>>,
        node_name: &str,
        period: Duration,
        tx: Sender<SourceUpdate>,
    ) -> Self {
        let headers = headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
            .collect();
        UrlSource {
            url: url.to_string(),
            headers,
            node_name: node_name.to_string(),
            period: if period.is_zero() {
                Duration::from_secs(20)
            } else {
                period
            },
            tx,
            report: Rc::new(RefCell::new(UrlReport::default())),
            last_data: None,
            last_data_error: None,
        }
    }

    pub fn reports(&self) -> UrlReports {
        self.report.clone()
    }

    /// Reads the URL now and then every period, until the receiver goes.
    pub async fn run(mut self) {
        log::info!("watching static pod URL {}", self.url);
        let client = Client::new(ClientOptions {
            connect_timeout: TIMEOUT,
            read_timeout: TIMEOUT,
            ..Default::default()
        });
        loop {
            let timed_out = format!(
                "Get {:?}: context deadline exceeded (Client.Timeout exceeded)",
                self.url
            );
            let r = future::or(self.read(&client), async {
                Timer::after(TIMEOUT).await;
                Err(timed_out)
            })
            .await;
            match r {
                // The same body again: its verdict stands (a bad body stays
                // reported without being logged every period).
                Ok(Read::Unchanged) => {
                    if self.last_data_error.is_none() {
                        self.succeeded();
                    }
                }
                Ok(Read::Pods(pods, unknown, problem)) => {
                    let n = pods.len();
                    let update = SourceUpdate {
                        source: HTTP_SOURCE,
                        pods,
                        provisional: false,
                    };
                    if self.tx.send(update).await.is_err() {
                        return;
                    }
                    {
                        let mut rep = self.report.borrow_mut();
                        rep.pods = n;
                        if rep.unknown_fields != unknown {
                            for f in &unknown {
                                log::warn!(
                                    "static pod URL {}: unknown field {f}; ignored",
                                    self.url
                                );
                            }
                            rep.unknown_fields = unknown;
                        }
                    }
                    match problem {
                        Some(p) => self.failed(p),
                        None => self.succeeded(),
                    }
                }
                Err(e) => self.failed(e),
            }
            Timer::after(self.period).await;
        }
    }

    fn succeeded(&self) {
        let mut rep = self.report.borrow_mut();
        if rep.failures > 0 {
            log::info!("static pod URL {}: read pods successfully again", self.url);
        }
        rep.failures = 0;
        rep.last_error = None;
    }

    /// Logs like upstream: the first few failures loudly, then quietly.
    fn failed(&self, e: String) {
        let mut rep = self.report.borrow_mut();
        if rep.failures < LOUD_FAILURES {
            log::warn!("failed to read pods from URL: {e}");
        } else if rep.failures == LOUD_FAILURES {
            log::warn!(
                "failed to read pods from URL (further failures logged at debug level): {e}"
            );
        } else {
            log::debug!("failed to read pods from URL: {e}");
        }
        rep.failures += 1;
        rep.last_error = Some(e);
    }

    async fn read(&mut self, client: &Client) -> Result<Read, String> {
        let url = Url::parse(&self.url).map_err(|e| format!("{e:#}"))?;
        let mut req = Request::get(url);
        req.headers = self.headers.clone();
        let mut resp = client.send(req).await.map_err(|e| format!("{e:#}"))?;
        let data = resp
            .body
            .read_to_end(MAX_BODY_BYTES)
            .await
            .map_err(|e| format!("{e:#}"))?;
        if resp.status != 200 {
            return Err(format!("{}: {} {}", self.url, resp.status, resp.reason));
        }
        if data.is_empty() {
            // Upstream: an empty list, so the source counts as seen.
            self.last_data = Some(data);
            self.last_data_error = None;
            return Ok(Read::Pods(
                Vec::new(),
                Vec::new(),
                Some(format!("zero-length data received from {}", self.url)),
            ));
        }
        if self.last_data.as_deref() == Some(&data[..]) {
            return Ok(Read::Unchanged);
        }
        // Remembered before decoding, as upstream: the same bad body is
        // reported once, not decoded again every period.
        self.last_data = Some(data.clone());
        match decode_body(&data, &self.url, &self.node_name) {
            Ok((pods, unknown)) => {
                self.last_data_error = None;
                Ok(Read::Pods(pods, unknown, None))
            }
            Err(e) => {
                self.last_data_error = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// Decodes a body: one pod or a `v1` `PodList` (pure). Returns the pods and
/// the unknown fields, or why the body cannot be used.
pub fn decode_body(
    data: &[u8],
    url: &str,
    node_name: &str,
) -> Result<(Vec<Pod>, Vec<String>), String> {
    let text = std::str::from_utf8(data).map_err(|e| {
        format!(
            "{url}: not UTF-8 text (binary data at byte {})",
            e.valid_up_to()
        )
    })?;
    let mut docs = crate::api::yaml::documents(text)
        .map_err(|e| format!("{url}: cannot parse as YAML or JSON: {e:#}"))?;
    let doc = match docs.len() {
        1 => docs.remove(0),
        0 => return Err(format!("{url}: no document in the response")),
        n => {
            return Err(format!(
                "{url}: {n} YAML documents; serve one pod or a v1 PodList"
            ))
        }
    };
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let origin = Origin::Url(url);
    let problems = |errs: Vec<super::validation::FieldError>| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match kind {
        "Pod" => {
            let d = decode_pod(data, origin, node_name)
                .map_err(|e| format!("{url}: invalid pod: {}", problems(e)))?;
            Ok((vec![d.pod], d.unknown_fields))
        }
        "PodList" => {
            let api = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
            if api != "v1" {
                return Err(format!(
                    "{url}: PodList of apiVersion {api:?}, expected \"v1\""
                ));
            }
            let items = match doc.get("items") {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(serde_json::Value::Array(a)) => a.clone(),
                Some(_) => return Err(format!("{url}: PodList items: not a list")),
            };
            let mut pods = Vec::with_capacity(items.len());
            let mut unknown = Vec::new();
            for (i, mut item) in items.into_iter().enumerate() {
                // List items carry no type of their own.
                if let Some(o) = item.as_object_mut() {
                    o.entry("apiVersion").or_insert_with(|| "v1".into());
                    o.entry("kind").or_insert_with(|| "Pod".into());
                }
                let bytes = serde_json::to_vec(&item).map_err(|e| format!("{url}: {e}"))?;
                let d = decode_pod(&bytes, origin, node_name)
                    .map_err(|e| format!("{url}: invalid pod (items[{i}]): {}", problems(e)))?;
                unknown.extend(d.unknown_fields.iter().map(|f| format!("items[{i}].{f}")));
                pods.push(d.pod);
            }
            Ok((pods, unknown))
        }
        _ => {
            let shown: String = text.chars().take(200).collect();
            Err(format!(
                "{url}: received {shown:?}, but couldn't parse as single pod or PodList (kind {kind:?})"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://10.0.0.1/pods";

    #[test]
    fn single_pod_in_yaml_or_json() {
        let y = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n";
        let (pods, unknown) = decode_body(y.as_bytes(), URL, "node-1").unwrap();
        assert_eq!(pods.len(), 1);
        assert!(unknown.is_empty());
        let p = &pods[0];
        assert_eq!(p.metadata.name.as_deref(), Some("web-node-1"));
        let ann = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            ann[super::super::CONFIG_HASH],
            p.metadata.uid.clone().unwrap()
        );
        let j = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
        let (pj, _) = decode_body(j.as_bytes(), URL, "node-1").unwrap();
        // Same content, same URL: same UID; another URL: another.
        assert_eq!(pj[0].metadata.uid, p.metadata.uid);
        let (other, _) = decode_body(j.as_bytes(), "http://x/", "node-1").unwrap();
        assert_ne!(other[0].metadata.uid, p.metadata.uid);
    }

    #[test]
    fn pod_lists_and_their_errors() {
        let list = r#"{"apiVersion":"v1","kind":"PodList","metadata":{},"items":[
            {"metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"busybox","bogus":1}]}},
            {"metadata":{"name":"b"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}]}"#;
        let (pods, unknown) = decode_body(list.as_bytes(), URL, "n").unwrap();
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a-n", "b-n"]);
        assert_eq!(unknown, ["items[0].spec.containers[0].bogus"]);
        let empty = r#"{"apiVersion":"v1","kind":"PodList","items":[]}"#;
        assert!(decode_body(empty.as_bytes(), URL, "n")
            .unwrap()
            .0
            .is_empty());
        // One invalid pod rejects the list.
        let bad = r#"{"apiVersion":"v1","kind":"PodList","items":[
            {"metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"busybox"}]}},
            {"metadata":{"name":"b"},"spec":{"containers":[{"name":"c"}]}}]}"#;
        let e = decode_body(bad.as_bytes(), URL, "n").unwrap_err();
        assert!(
            e.contains("invalid pod (items[1])") && e.contains("image"),
            "{e}"
        );
    }

    #[test]
    fn garbage_is_reported() {
        for (body, want) in [
            (&b"\xff\xfe\x00garbage"[..], "not UTF-8"),
            (b"{not: [valid", "cannot parse"),
            (
                b"apiVersion: apps/v1\nkind: Deployment\n",
                "couldn't parse as single pod or PodList",
            ),
            (b"just text", "couldn't parse"),
            (b"kind: Pod\n---\nkind: Pod\n", "2 YAML documents"),
            (
                b"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n",
                "invalid pod",
            ),
            (
                b"apiVersion: v2\nkind: PodList\nitems: []\n",
                "PodList of apiVersion",
            ),
        ] {
            let e = decode_body(body, URL, "n").unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.starts_with(URL), "{e}");
        }
    }
}
