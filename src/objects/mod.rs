//! What pods take from the API server: the configMaps and secrets they
//! reference (one watch per object, see [`cache`]), service account tokens
//! ([`token`]) and the cluster's services for the service environment
//! variables ([`services`]).
//!
//! Only pods that came from the API server (`kubernetes.io/config.source:
//! api`) may use these, as upstream (static pods cannot reference API
//! objects). The manager exists from the start; the cluster side attaches
//! the API client once the kubeconfig loaded ([`ObjectManager::attach`]).
//! The volume manager registers a pod on every sync (its references may
//! change with an update) and unregisters it when its volumes go.

pub mod cache;
pub mod refs;
pub mod services;
pub mod token;

use crate::api::core::{ConfigMap, Container, Pod, Secret};
use crate::kube::Client;
use cache::{CacheStats, ObjectCache};
use refs::PodRefs;
use services::ServiceStore;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use token::{TokenManager, TokenSpec};

/// Why an object could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetError {
    /// The API server has no such object (`configmap "x" not found`).
    NotFound(String),
    /// Anything else (not synced yet, not registered, no client).
    Other(String),
}

impl GetError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, GetError::NotFound(_))
    }
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GetError::NotFound(m) | GetError::Other(m) => f.write_str(m),
        }
    }
}

/// Whether the pod came from the API server.
pub fn is_api_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::sources::CONFIG_SOURCE))
        .is_some_and(|s| s == crate::sources::API_SOURCE)
}

/// Counters of what the manager holds (tests, benches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub pods: usize,
    pub config_maps: CacheStats,
    pub secrets: CacheStats,
    pub tokens: usize,
    pub token_requests: u64,
    pub services: usize,
}

struct Registered {
    namespace: String,
    refs: PodRefs,
}

/// The object manager; share as `Rc<ObjectManager>`.
pub struct ObjectManager {
    client: RefCell<Option<Rc<Client>>>,
    config_maps: ObjectCache<ConfigMap>,
    secrets: ObjectCache<Secret>,
    tokens: TokenManager,
    services: Rc<RefCell<ServiceStore>>,
    services_watch: RefCell<Option<smol::Task<()>>>,
    pods: RefCell<BTreeMap<String, Registered>>,
    /// The local copy (offline autonomy).
    offline: RefCell<Option<Rc<crate::offline::OfflineStore>>>,
    /// The services as last stored, for the variables while the API is
    /// unreachable at start.
    stored_services: RefCell<Option<Vec<services::ServiceInfo>>>,
}

impl ObjectManager {
    pub fn new() -> Rc<ObjectManager> {
        Rc::new(ObjectManager {
            client: RefCell::new(None),
            config_maps: ObjectCache::new("configmap"),
            secrets: ObjectCache::new("secret"),
            tokens: TokenManager::default(),
            services: Rc::default(),
            services_watch: RefCell::new(None),
            pods: RefCell::new(BTreeMap::new()),
            offline: RefCell::new(None),
            stored_services: RefCell::new(None),
        })
    }

    /// Offline autonomy: keep what pods use in `store` and serve it from
    /// there while the API is unreachable at start. Before [`Self::attach`].
    pub fn set_offline(&self, store: Rc<crate::offline::OfflineStore>) {
        self.config_maps.set_offline(store.clone());
        self.secrets.set_offline(store.clone());
        self.tokens.set_offline(store.clone());
        *self.stored_services.borrow_mut() = store.services();
        *self.offline.borrow_mut() = Some(store);
    }

    /// The API client is there: start watching services (upstream's
    /// kubelet has its service informer from the start).
    pub fn attach(&self, client: Rc<Client>) {
        *self.services_watch.borrow_mut() = Some(crate::rt::spawn(services::watch(
            client.clone(),
            self.services.clone(),
            self.offline.borrow().clone(),
        )));
        *self.client.borrow_mut() = Some(client);
    }

    pub fn client(&self) -> Option<Rc<Client>> {
        self.client.borrow().clone()
    }

    /// Whether `pod` may use API objects now: an API pod, with a client.
    pub fn serves(&self, pod: &Pod) -> bool {
        is_api_pod(pod) && self.client.borrow().is_some()
    }

    /// Records what `pod` references now, starting and stopping watches
    /// by difference. Pods that are not the API's register nothing.
    pub fn register_pod(&self, pod: &Pod) {
        let Some(client) = self.client() else { return };
        if !is_api_pod(pod) {
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            return;
        }
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let new = refs::pod_refs(pod);
        let old = self.pods.borrow_mut().insert(
            uid.clone(),
            Registered {
                namespace: ns.clone(),
                refs: new.clone(),
            },
        );
        for n in &new.config_maps {
            self.config_maps.add_reference(&client, &ns, n, &uid);
        }
        for n in &new.secrets {
            self.secrets.add_reference(&client, &ns, n, &uid);
        }
        if let Some(old) = old {
            for n in old.refs.config_maps.difference(&new.config_maps) {
                self.config_maps.delete_reference(&old.namespace, n, &uid);
            }
            for n in old.refs.secrets.difference(&new.secrets) {
                self.secrets.delete_reference(&old.namespace, n, &uid);
            }
        }
    }

    /// The pod is gone (or its volumes are): drop its references and
    /// its tokens.
    pub fn unregister_pod(&self, uid: &str) {
        self.tokens.forget_pod(uid);
        let Some(old) = self.pods.borrow_mut().remove(uid) else {
            return;
        };
        for n in &old.refs.config_maps {
            self.config_maps.delete_reference(&old.namespace, n, uid);
        }
        for n in &old.refs.secrets {
            self.secrets.delete_reference(&old.namespace, n, uid);
        }
    }

    /// Unregisters every pod not in `known`.
    pub fn retain_pods(&self, known: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .pods
            .borrow()
            .keys()
            .filter(|u| !known.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            self.unregister_pod(&uid);
        }
    }

    pub async fn config_map(&self, ns: &str, name: &str) -> Result<Rc<ConfigMap>, GetError> {
        self.config_maps.get(ns, name).await
    }

    pub async fn secret(&self, ns: &str, name: &str) -> Result<Rc<Secret>, GetError> {
        self.secrets.get(ns, name).await
    }

    /// A service account token bound to the pod.
    pub async fn token(&self, spec: &TokenSpec) -> Result<String, String> {
        let Some(client) = self.client() else {
            return Err("no kubeClient defined".into());
        };
        self.tokens.get(&client, spec).await
    }

    /// The service variables for a pod in `ns` (upstream
    /// `getServiceEnvVarMap`); an API pod waits for the first list of
    /// services. Without a client: none.
    pub fn service_env(
        &self,
        pod: &Pod,
        enable_service_links: bool,
    ) -> Result<BTreeMap<String, String>, String> {
        if self.client.borrow().is_none() {
            return Ok(BTreeMap::new());
        }
        let store = self.services.borrow();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let offline = self.offline.borrow().as_ref().is_some_and(|o| o.active());
        if !store.synced && offline {
            if let Some(stored) = &*self.stored_services.borrow() {
                return Ok(services::service_env(
                    stored.iter(),
                    ns,
                    enable_service_links,
                ));
            }
        }
        if !store.synced && is_api_pod(pod) {
            return Err(
                "services have not yet been read at least once, cannot construct envvars".into(),
            );
        }
        Ok(services::service_env(
            store.services.values(),
            ns,
            enable_service_links,
        ))
    }

    /// What a container's environment takes from the API server. `None`
    /// for a pod that may not use API objects (static pods, no client):
    /// the env code then refuses configMap and secret references as
    /// upstream without a client does.
    pub async fn env_inputs(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Option<crate::runtime::convert::ApiEnv> {
        let has_client = self.client.borrow().is_some();
        // API defaulting sets enableServiceLinks; a static pod may not.
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let services = has_client.then(|| self.service_env(pod, links));
        if !self.serves(pod) {
            return services.map(|services| crate::runtime::convert::ApiEnv {
                api_objects: false,
                services,
                ..Default::default()
            });
        }
        self.register_pod(pod);
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let r = refs::container_refs(c);
        let mut out = crate::runtime::convert::ApiEnv {
            api_objects: true,
            services: services.unwrap_or_else(|| Ok(BTreeMap::new())),
            ..Default::default()
        };
        for n in &r.config_maps {
            out.config_maps
                .insert(n.clone(), self.config_map(ns, n).await);
        }
        for n in &r.secrets {
            out.secrets.insert(n.clone(), self.secret(ns, n).await);
        }
        Some(out)
    }

    /// The pod's imagePullSecrets that hold registry credentials, in the
    /// pod's order (upstream `getPullSecretsForPod` + `MakeDockerKeyring`):
    /// missing or unreadable ones are logged and skipped.
    pub async fn pull_secrets(&self, pod: &Pod) -> Vec<crate::image::auth::DockerConfig> {
        let names: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() || !self.serves(pod) {
            return Vec::new();
        }
        self.register_pod(pod);
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut out = Vec::new();
        for n in names {
            match self.secret(ns, &n).await {
                Ok(s) => match crate::image::auth::DockerConfig::from_secret(&s) {
                    Ok(Some(c)) => out.push(c),
                    Ok(None) => log::warn!(
                        "pull secret {ns}/{n} is not of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg: ignored"
                    ),
                    Err(e) => log::warn!("pull secret {ns}/{n}: {e:#}: ignored"),
                },
                Err(e) => log::info!(
                    "unable to retrieve pull secret {ns}/{n}, the image pull may not succeed: {e}"
                ),
            }
        }
        out
    }

    pub fn stats(&self) -> Stats {
        Stats {
            pods: self.pods.borrow().len(),
            config_maps: self.config_maps.stats(),
            secrets: self.secrets.stats(),
            tokens: self.tokens.len(),
            token_requests: self.tokens.requests(),
            services: self.services.borrow().services.len(),
        }
    }
}
