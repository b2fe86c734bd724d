//! k3s `registries.yaml` semantics: `mirrors` (endpoints tried in order, the
//! registry's own endpoint last) and `configs` (per-host `auth` and `tls`).
//! An endpoint written `http://...` is plain HTTP. The default endpoint of a
//! loopback registry (`localhost`, `127.0.0.0/8`, `::1`) is plain HTTP too,
//! as containerd does; every other default endpoint is HTTPS.
//! `rewrite` rules are not supported (warned and ignored).

use super::auth::{Credentials, RawAuth};
use super::reference::DOCKER_IO_ENDPOINT;
use crate::http::{TlsOptions, Url};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistriesConfig {
    /// Registry domain (or `*`) -> mirror endpoint URLs.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// `host[:port]` -> auth and TLS.
    pub configs: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfig {
    pub auth: Option<Credentials>,
    /// `Some` when a `tls` section exists (forces HTTPS on a default endpoint).
    pub tls: Option<TlsOptions>,
}

/// One place to fetch a repository from.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Scheme, host, port; `path_and_query` is the API base (`/v2`).
    pub base: Url,
    pub tls: TlsOptions,
    pub auth: Option<Credentials>,
    /// A mirror (not the registry's own endpoint).
    pub mirror: bool,
}

impl Endpoint {
    /// `base` + `/<repo path>/<rest>`.
    pub fn url(&self, rest: &str) -> Url {
        let mut u = self.base.clone();
        u.path_and_query = format!("{}/{rest}", self.base.path_and_query);
        u
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    mirrors: BTreeMap<String, RawMirror>,
    #[serde(default)]
    configs: BTreeMap<String, RawHost>,
}

#[derive(Deserialize, Default)]
struct RawMirror {
    #[serde(default)]
    endpoint: Vec<String>,
    #[serde(default)]
    rewrite: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct RawHost {
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Deserialize, Default)]
struct RawTls {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

impl RegistriesConfig {
    /// Loads the file; an absent file means no mirrors and no configs.
    pub fn load(path: &Path) -> Result<RegistriesConfig> {
        match crate::util::fs::read_optional(path)? {
            None => Ok(RegistriesConfig::default()),
            Some(b) => {
                let text = String::from_utf8_lossy(&b);
                Self::parse(&text).with_context(|| format!("registries config {}", path.display()))
            }
        }
    }

    pub fn parse(text: &str) -> Result<RegistriesConfig> {
        if text.trim().is_empty() {
            return Ok(RegistriesConfig::default());
        }
        let v = crate::api::yaml::single(text)?;
        if v.is_null() {
            return Ok(RegistriesConfig::default());
        }
        let raw: Raw = serde_json::from_value(v).context("invalid registries.yaml")?;
        let mut c = RegistriesConfig::default();
        for (k, m) in raw.mirrors {
            if !m.rewrite.is_empty() {
                log::warn!("registries config: mirrors[{k}].rewrite is not supported; ignored");
            }
            for e in &m.endpoint {
                endpoint_url(e).with_context(|| format!("mirrors[{k}].endpoint {e:?}"))?;
            }
            c.mirrors.insert(k, m.endpoint);
        }
        for (k, h) in raw.configs {
            let auth = match h.auth {
                Some(a) => a
                    .credentials()
                    .with_context(|| format!("configs[{k}].auth"))?,
                None => None,
            };
            let tls = h.tls.map(|t| {
                let client_cert = match (t.cert_file, t.key_file) {
                    (Some(c), Some(k)) => Some((c, k)),
                    _ => None,
                };
                Ok::<_, anyhow::Error>(TlsOptions {
                    ca_files: t.ca_file.into_iter().collect(),
                    client_cert,
                    insecure_skip_verify: t.insecure_skip_verify,
                    no_system_roots: false,
                    ..Default::default()
                })
            });
            let tls = tls.transpose()?;
            c.configs
                .insert(normalize_host(&k), HostConfig { auth, tls });
        }
        Ok(c)
    }

    /// The endpoints to try for a registry domain, in order: its mirrors (or
    /// the `*` mirrors), then the registry's own endpoint.
    pub fn endpoints(&self, domain: &str) -> Result<Vec<Endpoint>> {
        let mirrors = self
            .mirrors
            .get(domain)
            .or_else(|| self.mirrors.get("*"))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut out = Vec::new();
        for m in mirrors {
            let base = endpoint_url(m).with_context(|| format!("mirror endpoint {m:?}"))?;
            out.push(self.endpoint(base, true, &[]));
        }
        let host = if domain == "docker.io" {
            DOCKER_IO_ENDPOINT
        } else {
            domain
        };
        let cfg = self.configs.get(host).or_else(|| self.configs.get(domain));
        let https = cfg.is_some_and(|c| c.tls.is_some()) || !is_loopback(host);
        let scheme = if https { "https" } else { "http" };
        let base = endpoint_url(&format!("{scheme}://{host}"))?;
        let own = self.endpoint(base, false, &[domain]);
        if !out.iter().any(|e| e.base == own.base) {
            out.push(own);
        }
        Ok(out)
    }

    fn endpoint(&self, base: Url, mirror: bool, aliases: &[&str]) -> Endpoint {
        let auth_key = base.authority();
        let host_only = base.host.clone();
        let cfg = std::iter::once(auth_key.as_str())
            .chain(std::iter::once(host_only.as_str()))
            .chain(aliases.iter().copied())
            .find_map(|k| self.configs.get(k));
        Endpoint {
            tls: cfg.and_then(|c| c.tls.clone()).unwrap_or_default(),
            auth: cfg.and_then(|c| c.auth.clone()),
            base,
            mirror,
        }
    }
}

/// `https://mirror:5000[/prefix]` -> base URL ending in `/v2`; no scheme means https.
fn endpoint_url(e: &str) -> Result<Url> {
    let full = if e.contains("://") {
        e.to_string()
    } else {
        format!("https://{e}")
    };
    let mut u = Url::parse(&full)?;
    if u.path_and_query.contains('?') {
        bail!("endpoint must not have a query");
    }
    let p = u.path_and_query.trim_end_matches('/');
    u.path_and_query = if p.ends_with("/v2") {
        p.to_string()
    } else {
        format!("{p}/v2")
    };
    Ok(u)
}

/// Config keys may be written with a scheme; compare by `host[:port]`.
fn normalize_host(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.trim_end_matches('/').to_string()
}

fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or(r),
        None => host_port.split(':').next().unwrap_or(host_port),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_endpoints() {
        let c = RegistriesConfig::default();
        let e = c.endpoints("docker.io").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].base.to_string(), "https://registry-1.docker.io:443/v2");
        assert_eq!(
            e[0].url("library/busybox/manifests/latest").path_and_query,
            "/v2/library/busybox/manifests/latest"
        );
        let e = c.endpoints("127.0.0.1:5000").unwrap();
        assert_eq!(e[0].base.to_string(), "http://127.0.0.1:5000/v2");
        let e = c.endpoints("localhost:5000").unwrap();
        assert!(!e[0].base.https);
        assert!(c.endpoints("ghcr.io").unwrap()[0].base.https);
    }

    #[test]
    fn mirrors_and_configs() {
        let c = RegistriesConfig::parse(
            r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5150", "mirror.example:5443/prefix"]
  "*":
    endpoint: ["https://all.example"]
configs:
  "mirror.example:5443":
    auth: {username: u, password: p}
    tls: {ca_file: /etc/ca.pem, insecure_skip_verify: false}
  "127.0.0.1:5101":
    tls: {insecure_skip_verify: true}
"#,
        )
        .unwrap();
        let e = c.endpoints("docker.io").unwrap();
        let urls: Vec<String> = e.iter().map(|e| e.base.to_string()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5150/v2",
                "https://mirror.example:5443/prefix/v2",
                "https://registry-1.docker.io:443/v2"
            ]
        );
        assert!(e[0].mirror && !e[2].mirror);
        assert_eq!(e[1].auth.as_ref().unwrap().username, "u");
        assert_eq!(e[1].tls.ca_files, vec![PathBuf::from("/etc/ca.pem")]);
        // wildcard mirror for other registries
        let e = c.endpoints("quay.io").unwrap();
        assert_eq!(e[0].base.host, "all.example");
        // a tls section makes a loopback registry HTTPS
        let e = c.endpoints("127.0.0.1:5101").unwrap();
        let own = e.last().unwrap();
        assert!(own.base.https && own.tls.insecure_skip_verify);
        assert!(RegistriesConfig::parse("mirrors: {a: {endpoint: [\"ftp://x\"]}}").is_err());
        assert!(RegistriesConfig::parse("bogus: 1").is_err());
        assert_eq!(
            RegistriesConfig::parse("").unwrap(),
            RegistriesConfig::default()
        );
    }
}
