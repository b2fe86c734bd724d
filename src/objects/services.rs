//! Service environment variables (upstream `getServiceEnvVarMap` and
//! pkg/kubelet/envvars): `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT[_<NAME>]`
//! and the docker-link forms for every service of the pod's namespace with
//! a cluster IP (when `enableServiceLinks`), plus the `kubernetes` service
//! of `default` always. The services come from one list + watch of all
//! services (what upstream's service informer holds), kept small: only
//! the fields the variables use.

use crate::api::core::Service;
use crate::kube::{Client, Event, ListParams, Reflector};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// One service port, as the variables need it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Port {
    pub name: String,
    pub port: i32,
    /// `TCP`, `UDP`, `SCTP` (empty: TCP).
    pub protocol: String,
}

/// What the variables need of a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: String,
    pub ports: Vec<Port>,
}

impl ServiceInfo {
    pub fn from_service(s: &Service) -> ServiceInfo {
        let spec = s.spec.as_ref();
        ServiceInfo {
            namespace: s.metadata.namespace.clone().unwrap_or_default(),
            name: s.metadata.name.clone().unwrap_or_default(),
            cluster_ip: spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default(),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .map(|ps| {
                    ps.iter()
                        .map(|p| Port {
                            name: p.name.clone().unwrap_or_default(),
                            port: p.port,
                            protocol: p.protocol.clone().unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Upstream `IsServiceIPSet`.
    fn ip_set(&self) -> bool {
        !self.cluster_ip.is_empty() && self.cluster_ip != "None"
    }
}

/// Services always given to every pod (upstream `masterServices`).
const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// Upstream `makeEnvVariableName`.
fn var_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// `host:port` as Go's `net.JoinHostPort` writes it.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream `envvars.FromServices` for one service.
fn service_vars(s: &ServiceInfo, out: &mut BTreeMap<String, String>) {
    let Some(first) = s.ports.first() else {
        return;
    };
    let prefix = var_name(&s.name);
    out.insert(format!("{prefix}_SERVICE_HOST"), s.cluster_ip.clone());
    let port_var = format!("{prefix}_SERVICE_PORT");
    out.insert(port_var.clone(), first.port.to_string());
    for p in s.ports.iter().filter(|p| !p.name.is_empty()) {
        out.insert(
            format!("{port_var}_{}", var_name(&p.name)),
            p.port.to_string(),
        );
    }
    for (i, p) in s.ports.iter().enumerate() {
        let proto = if p.protocol.is_empty() {
            "TCP"
        } else {
            &p.protocol
        };
        let url = format!(
            "{}://{}",
            proto.to_lowercase(),
            join_host_port(&s.cluster_ip, p.port)
        );
        if i == 0 {
            out.insert(format!("{prefix}_PORT"), url.clone());
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.insert(format!("{pp}_PROTO"), proto.to_lowercase());
        out.insert(format!("{pp}_PORT"), p.port.to_string());
        out.insert(format!("{pp}_ADDR"), s.cluster_ip.clone());
        out.insert(pp, url);
    }
}

/// The service variables of a pod in `ns`.
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a ServiceInfo>,
    ns: &str,
    enable_service_links: bool,
) -> BTreeMap<String, String> {
    let mut chosen: BTreeMap<&str, &ServiceInfo> = BTreeMap::new();
    let mut own: Vec<&ServiceInfo> = Vec::new();
    for s in services.into_iter().filter(|s| s.ip_set()) {
        if s.namespace == "default" && MASTER_SERVICES.contains(&s.name.as_str()) {
            chosen.entry(s.name.as_str()).or_insert(s);
        } else if s.namespace == ns && enable_service_links {
            own.push(s);
        }
    }
    // A service of the pod's own namespace wins over a master service of
    // the same name.
    for s in own {
        chosen.insert(s.name.as_str(), s);
    }
    let mut out = BTreeMap::new();
    for s in chosen.values() {
        service_vars(s, &mut out);
    }
    out
}

/// Every service of the cluster, as the watch last showed them.
#[derive(Debug, Default)]
pub struct ServiceStore {
    pub synced: bool,
    pub services: BTreeMap<(String, String), ServiceInfo>,
}

impl ServiceStore {
    fn apply(&mut self, ev: Event<Service>) {
        let key = |s: &ServiceInfo| (s.namespace.clone(), s.name.clone());
        match ev {
            Event::Listed(items) => {
                self.synced = true;
                self.services = items
                    .iter()
                    .map(ServiceInfo::from_service)
                    .map(|s| (key(&s), s))
                    .collect();
            }
            Event::Applied(s) => {
                let s = ServiceInfo::from_service(&s);
                self.services.insert(key(&s), s);
            }
            Event::Deleted(s) => {
                let s = ServiceInfo::from_service(&s);
                self.services.remove(&key(&s));
            }
        }
    }
}

/// Keeps `store` (and the local copy, when there is one) in step with
/// the cluster's services until dropped.
pub async fn watch(
    client: Rc<Client>,
    store: Rc<RefCell<ServiceStore>>,
    offline: Option<Rc<crate::offline::OfflineStore>>,
) {
    let (tx, rx) = smol::channel::bounded(16);
    let r = Reflector::new(client, None, ListParams::default());
    let _reflector = crate::rt::spawn(r.run::<Service>(tx));
    while let Ok(ev) = rx.recv().await {
        store.borrow_mut().apply(ev);
        if let Some(o) = &offline {
            let st = store.borrow();
            let list: Vec<&ServiceInfo> = st.services.values().collect();
            o.save_services(&list);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> ServiceInfo {
        ServiceInfo {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.into(),
            ports: ports
                .iter()
                .map(|(n, p, proto)| Port {
                    name: n.to_string(),
                    port: *p,
                    protocol: proto.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn variables_as_upstream() {
        let all = [
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[("https", 443, "TCP")],
            ),
            svc(
                "shop",
                "my-db",
                "10.96.0.20",
                &[("", 5432, ""), ("metrics", 9187, "UDP")],
            ),
            svc("shop", "headless", "None", &[("", 80, "")]),
            svc("other", "web", "10.96.0.30", &[("", 80, "")]),
        ];
        let env = service_env(&all, "shop", true);
        let want: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ("MY_DB_SERVICE_HOST", "10.96.0.20"),
            ("MY_DB_SERVICE_PORT", "5432"),
            ("MY_DB_SERVICE_PORT_METRICS", "9187"),
            ("MY_DB_PORT", "tcp://10.96.0.20:5432"),
            ("MY_DB_PORT_5432_TCP", "tcp://10.96.0.20:5432"),
            ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
            ("MY_DB_PORT_5432_TCP_PORT", "5432"),
            ("MY_DB_PORT_5432_TCP_ADDR", "10.96.0.20"),
            ("MY_DB_PORT_9187_UDP", "udp://10.96.0.20:9187"),
            ("MY_DB_PORT_9187_UDP_PROTO", "udp"),
            ("MY_DB_PORT_9187_UDP_PORT", "9187"),
            ("MY_DB_PORT_9187_UDP_ADDR", "10.96.0.20"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
        // Without service links only the master service.
        let env = service_env(&all, "shop", false);
        assert_eq!(env.len(), 8);
        assert!(env.keys().all(|k| k.starts_with("KUBERNETES_")));
        // A "kubernetes" service of the pod's namespace wins.
        let mut more = all.to_vec();
        more.push(svc("shop", "kubernetes", "10.96.0.99", &[("", 8443, "")]));
        assert_eq!(
            service_env(&more, "shop", true)["KUBERNETES_SERVICE_HOST"],
            "10.96.0.99"
        );
        assert_eq!(
            service_env(&more, "shop", false)["KUBERNETES_SERVICE_HOST"],
            "10.96.0.1"
        );
        // IPv6 cluster IPs are bracketed in URLs.
        let v6 = [svc("default", "kubernetes", "fd00::1", &[("", 443, "")])];
        assert_eq!(
            service_env(&v6, "x", true)["KUBERNETES_PORT"],
            "tcp://[fd00::1]:443"
        );
    }

    #[test]
    fn store_follows_events() {
        let mut st = ServiceStore::default();
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}
        }))
        .unwrap();
        st.apply(Event::Listed(vec![s.clone()]));
        assert!(st.synced);
        assert_eq!(st.services.len(), 1);
        st.apply(Event::Deleted(s));
        assert!(st.services.is_empty());
    }
}
