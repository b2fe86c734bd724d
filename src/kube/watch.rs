//! Watches: the event stream of one watch request, and the generic list +
//! watch loop (client-go's reflector) that keeps a consumer in step with
//! the server across timeouts, broken connections and 410 Gone.

use super::client::{decode_value, object_name, Client, ListParams};
use super::error::{self, Error};
use super::transport::Body;
use crate::api::meta::ObjectMeta;
use crate::util::Backoff;
use k8s_openapi::{Metadata, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;
use smol::channel::Sender;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

/// Largest single watch event accepted (a 1 MiB secret base64-encoded,
/// with room to spare).
const MAX_EVENT: usize = 16 << 20;

/// One event of a watch.
#[derive(Debug)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// Progress: everything up to this resourceVersion has been sent.
    Bookmark(String),
    /// The server ended the watch with a `Status` (410 Gone, ...).
    Error(Error),
    /// An object that does not decode as `K` (wrong types): skipped, the
    /// watch goes on. Unknown fields are not an error.
    Undecodable {
        name: String,
        resource_version: Option<String>,
        error: String,
    },
}

/// The events of one watch response: newline-delimited JSON objects.
pub struct WatchStream<K> {
    body: Body,
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for a newline.
    scanned: usize,
    done: bool,
    _k: PhantomData<K>,
}

impl<K: Resource + DeserializeOwned> WatchStream<K> {
    pub fn new(body: Body) -> Self {
        WatchStream {
            body,
            buf: Vec::new(),
            scanned: 0,
            done: false,
            _k: PhantomData,
        }
    }

    /// The next event; `None` when the server ended the watch cleanly.
    pub async fn next(&mut self) -> Option<Result<WatchEvent<K>, Error>> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + i;
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                self.scanned = 0;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(parse_event(&line));
            }
            self.scanned = self.buf.len();
            if self.done {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                // A last event without its newline.
                let line = std::mem::take(&mut self.buf);
                self.scanned = 0;
                return Some(parse_event(&line));
            }
            match self.body.chunk().await {
                Ok(Some(c)) => {
                    if self.buf.len() + c.len() > MAX_EVENT {
                        self.done = true;
                        self.buf = Vec::new();
                        return Some(Err(Error::Decode {
                            what: format!("{} watch", K::KIND),
                            error: format!("event larger than {MAX_EVENT} bytes"),
                        }));
                    }
                    if self.buf.is_empty() {
                        self.buf = c;
                    } else {
                        self.buf.extend_from_slice(&c);
                    }
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    self.buf = Vec::new();
                    return Some(Err(Error::Transport(format!("{} watch: {e}", K::KIND))));
                }
            }
        }
    }
}

/// Parses one watch event line.
fn parse_event<K: DeserializeOwned + Resource>(line: &[u8]) -> Result<WatchEvent<K>, Error> {
    let what = format!("{} watch event", K::KIND);
    let mut v: Value = serde_json::from_slice(line).map_err(|e| Error::Decode {
        what: what.clone(),
        error: e.to_string(),
    })?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let obj = v.get_mut("object").map(Value::take).unwrap_or(Value::Null);
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    match kind.as_str() {
        "BOOKMARK" => rv.map(WatchEvent::Bookmark).ok_or_else(|| Error::Decode {
            what,
            error: "BOOKMARK without a resourceVersion".into(),
        }),
        "ERROR" => {
            let code = obj.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
            let body = serde_json::to_vec(&obj).unwrap_or_default();
            Ok(WatchEvent::Error(error::from_response(code, &body, None)))
        }
        "ADDED" | "MODIFIED" | "DELETED" => {
            let name = object_name(&obj);
            match decode_value::<K>(K::KIND, obj) {
                Ok(o) => Ok(match kind.as_str() {
                    "ADDED" => WatchEvent::Added(o),
                    "MODIFIED" => WatchEvent::Modified(o),
                    _ => WatchEvent::Deleted(o),
                }),
                Err(e) => Ok(WatchEvent::Undecodable {
                    name,
                    resource_version: rv,
                    error: e.to_string(),
                }),
            }
        }
        other => Err(Error::Decode {
            what,
            error: format!("unknown event type {other:?}"),
        }),
    }
}

/// The longest wait before watching again after the server could not be
/// reached (API errors back off to 30 s, as client-go's reflector).
const TRANSPORT_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the list + watch loop tells its consumer.
#[derive(Debug)]
pub enum Event<K> {
    /// Every object there is now (the first list, or a relist after the
    /// watch could not resume): objects the consumer holds that are not
    /// here are gone.
    Listed(Vec<K>),
    /// Added or changed.
    Applied(K),
    Deleted(K),
}

/// A list + watch of one kind of object, as client-go's reflector:
/// list, then watch from the list's resourceVersion with bookmarks;
/// a watch that ends (server timeout, broken connection) resumes from the
/// last resourceVersion seen (bookmarks included); 410 Gone relists.
pub struct Reflector {
    pub client: Rc<Client>,
    pub namespace: Option<String>,
    /// Selectors only; resourceVersion and timeouts are the loop's.
    pub params: ListParams,
    /// Watch lengths are drawn from [min, 2 × min) as client-go does, so
    /// many watches do not restart together.
    pub min_watch_timeout: Duration,
    pub backoff: Backoff,
}

impl Reflector {
    pub fn new(client: Rc<Client>, namespace: Option<String>, params: ListParams) -> Reflector {
        Reflector {
            client,
            namespace,
            params,
            min_watch_timeout: Duration::from_secs(300),
            backoff: Backoff::new(Duration::from_millis(800), Duration::from_secs(30), 1.0),
        }
    }

    fn describe<K: Resource>(&self) -> String {
        let mut d = K::URL_PATH_SEGMENT.to_string();
        if let Some(ns) = &self.namespace {
            d = format!("{d} in {ns}");
        }
        for s in [&self.params.field_selector, &self.params.label_selector]
            .into_iter()
            .flatten()
        {
            d = format!("{d} ({s})");
        }
        d
    }

    /// Lists every page; returns the items and the resourceVersion.
    async fn list_all<K>(&self, what: &str) -> Result<(Vec<K>, String), Error>
    where
        K: Resource + DeserializeOwned,
    {
        let mut p = self.params.clone();
        p.resource_version = None;
        p.limit = Some(500);
        let mut items = Vec::new();
        loop {
            let page = self.client.list::<K>(self.namespace.as_deref(), &p).await?;
            for bad in &page.undecodable {
                log::warn!("list {what}: skipping an object that does not decode: {bad}");
            }
            items.extend(page.items);
            match page.continue_token {
                Some(c) => p.continue_token = Some(c),
                None => return Ok((items, page.resource_version)),
            }
        }
    }

    /// Runs until the consumer drops its receiver (or the task is dropped,
    /// which cancels the watch stream).
    pub async fn run<K>(mut self, tx: Sender<Event<K>>)
    where
        K: Resource + DeserializeOwned + Metadata<Ty = ObjectMeta>,
    {
        let what = self.describe::<K>();
        let mut rv: Option<String> = None;
        let mut failing = false;
        'watch: loop {
            if tx.is_closed() {
                return;
            }
            let failure: Error = 'attempt: {
                if rv.is_none() {
                    match self.list_all::<K>(&what).await {
                        Ok((items, v)) => {
                            log::debug!("listed {what}: {} object(s) at {v}", items.len());
                            rv = Some(v);
                            if tx.send(Event::Listed(items)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => break 'attempt e,
                    }
                }
                let mut p = self.params.clone();
                p.resource_version = rv.clone();
                p.allow_watch_bookmarks = true;
                let secs =
                    self.min_watch_timeout.as_secs_f64() * (1.0 + crate::util::random_fraction());
                p.timeout_seconds = Some(secs.max(1.0) as u32);
                let mut stream = match self.client.watch::<K>(self.namespace.as_deref(), &p).await {
                    Ok(s) => s,
                    Err(e) => break 'attempt e,
                };
                if failing {
                    log::info!("watch {what}: resumed");
                    failing = false;
                }
                self.backoff.reset();
                loop {
                    let ev = match stream.next().await {
                        None => break,
                        Some(Ok(ev)) => ev,
                        Some(Err(e)) => break 'attempt e,
                    };
                    let out = match ev {
                        WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                            rv = o.metadata().resource_version.clone().or(rv);
                            Event::Applied(o)
                        }
                        WatchEvent::Deleted(o) => {
                            rv = o.metadata().resource_version.clone().or(rv);
                            Event::Deleted(o)
                        }
                        WatchEvent::Bookmark(v) => {
                            rv = Some(v);
                            continue;
                        }
                        WatchEvent::Undecodable {
                            name,
                            resource_version,
                            error,
                        } => {
                            log::warn!(
                                "watch {what}: skipping {name}, which does not decode: {error}"
                            );
                            rv = resource_version.or(rv);
                            continue;
                        }
                        WatchEvent::Error(e) => break 'attempt e,
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
                // The server's timeout: watch again from where we are.
                continue 'watch;
            };
            if failure.is_gone() {
                // Our resourceVersion is too old: start over with a list.
                log::info!("watch {what}: {failure}; listing again");
                rv = None;
                continue;
            }
            // The transport logs its own reachability changes.
            if !failing && !failure.is_transport() {
                log::warn!("watch {what}: {failure}; retrying with back-off");
            } else {
                log::debug!("watch {what}: {failure}");
            }
            failing = true;
            let mut d = self.backoff.next_delay();
            if failure.is_transport() {
                // The server was unreachable: attempts cost it nothing, and
                // the consumer must catch up soon after it returns (the
                // node's own copy of its Node, for one).
                d = d.min(TRANSPORT_RETRY_MAX);
            }
            if let Some(ra) = failure.retry_after() {
                d = d.max(ra);
            }
            async_io::Timer::after(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn ev(line: &str) -> Result<WatchEvent<ConfigMap>, Error> {
        parse_event::<ConfigMap>(line.as_bytes())
    }

    #[test]
    fn parses_each_event_type() {
        let e = ev(r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d","resourceVersion":"5"},"data":{"k":"v"},"futureField":1}}"#).unwrap();
        assert!(
            matches!(&e, WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("a")),
            "{e:?}"
        );
        let e = ev(r#"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"12","annotations":{"k8s.io/initial-events-end":"true"}}}}"#).unwrap();
        assert!(matches!(&e, WatchEvent::Bookmark(v) if v == "12"), "{e:?}");
        let e = ev(r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 1 (5)","reason":"Expired","code":410}}"#).unwrap();
        assert!(
            matches!(&e, WatchEvent::Error(err) if err.is_gone()),
            "{e:?}"
        );
        // Wrong types: skipped with the name and rv, not fatal.
        let e = ev(r#"{"type":"MODIFIED","object":{"metadata":{"name":"b","namespace":"d","resourceVersion":"7"},"data":{"k":5}}}"#).unwrap();
        match e {
            WatchEvent::Undecodable {
                name,
                resource_version,
                error,
            } => {
                assert_eq!(name, "d/b");
                assert_eq!(resource_version.as_deref(), Some("7"));
                assert!(error.contains("data"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(ev("not json").is_err());
        assert!(ev(r#"{"type":"WHAT","object":{}}"#).is_err());
    }
}
