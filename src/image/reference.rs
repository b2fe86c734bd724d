//! Image references, normalised exactly like the docker/containerd reference
//! library (`ParseNormalizedNamed` + `TagNameOnly`):
//! `busybox` -> `docker.io/library/busybox:latest`.

use anyhow::{bail, Result};
use std::fmt;

pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Where `docker.io` is actually served.
pub const DOCKER_IO_ENDPOINT: &str = "registry-1.docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const NAME_TOTAL_MAX: usize = 255;

/// A normalised reference: domain, repository path, tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `127.0.0.1:5000`, `ghcr.io`...
    pub domain: String,
    /// `library/busybox`, `picolet/httpd`...
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises; a reference with neither tag nor digest gets `:latest`.
    pub fn parse(s: &str) -> Result<Reference> {
        let mut r = Self::parse_named(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".into());
        }
        Ok(r)
    }

    /// Parses and normalises without adding a default tag.
    pub fn parse_named(s: &str) -> Result<Reference> {
        if s.is_empty() {
            bail!("invalid reference format: repository name must have at least one component");
        }
        if is_hex64(s) {
            bail!("invalid repository name ({s}), cannot specify 64-byte hexadecimal strings");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((n, d)) => {
                check_digest(d).map_err(|e| anyhow::anyhow!("invalid reference {s:?}: {e}"))?;
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                bail!("invalid reference format {s:?}: invalid tag {t:?}");
            }
        }
        let (domain, path) = split_domain(name);
        if name.chars().any(|c| c.is_ascii_uppercase()) && !domain_has_upper_only(name) {
            bail!("invalid reference format {s:?}: repository name must be lowercase");
        }
        if !valid_domain(&domain) {
            bail!("invalid reference format {s:?}: invalid domain {domain:?}");
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            bail!("invalid reference format {s:?}: invalid repository name {path:?}");
        }
        if domain.len() + 1 + path.len() > NAME_TOTAL_MAX {
            bail!("invalid reference format {s:?}: repository name must not be more than {NAME_TOTAL_MAX} characters");
        }
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// What to ask the registry for: the digest if any, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `name:tag` when there is a tag (the form stored in `repo_tags`).
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// The host that serves this domain (`docker.io` -> `registry-1.docker.io`).
    pub fn default_endpoint_host(&self) -> &str {
        if self.domain == DEFAULT_DOMAIN {
            DOCKER_IO_ENDPOINT
        } else {
            &self.domain
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Upstream `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((d, r)) if d.contains(['.', ':']) || d == "localhost" || d.to_lowercase() != d => {
            (d.to_string(), r.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DOMAIN {
        domain = DEFAULT_DOMAIN.into();
    }
    if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

/// Upper case is allowed in the domain part only.
fn domain_has_upper_only(name: &str) -> bool {
    match name.split_once('/') {
        Some((d, r)) => d.to_lowercase() != d && !r.chars().any(|c| c.is_ascii_uppercase()),
        None => false,
    }
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.strip_prefix('[') {
        Some(r) => match r.split_once(']') {
            Some((h, p)) => {
                if h.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, p)
            }
            None => return false,
        },
        None => match d.rsplit_once(':') {
            Some((h, _)) => (Some(h), &d[h.len()..]),
            None => (Some(d), ""),
        },
    };
    if !port.is_empty() {
        let p = port.strip_prefix(':').unwrap_or("x");
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Only sha256 digests are accepted (what registries and the store use).
pub fn check_digest(d: &str) -> Result<()> {
    match d.split_once(':') {
        Some(("sha256", h)) if is_hex64(h) => Ok(()),
        Some((alg, _)) if alg != "sha256" => bail!("unsupported digest algorithm {alg:?}"),
        _ => bail!("invalid digest {d:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("rancher/pause:3.6"), "docker.io/rancher/pause:3.6");
        assert_eq!(n("index.docker.io/foo"), "docker.io/library/foo:latest");
        assert_eq!(n("docker.io/foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(n("localhost/foo"), "localhost/foo:latest");
        assert_eq!(n("localhost:5000/foo:1"), "localhost:5000/foo:1");
        assert_eq!(
            n("127.0.0.1:5000/picolet/busybox:latest"),
            "127.0.0.1:5000/picolet/busybox:latest"
        );
        assert_eq!(n("ghcr.io/a/b/c:v1.0_x-y"), "ghcr.io/a/b/c:v1.0_x-y");
        assert_eq!(n("[::1]:5000/x"), "[::1]:5000/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            n(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
        assert_eq!(n("Registry.Example/a"), "Registry.Example/a:latest");
    }

    #[test]
    fn parts_and_endpoint() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.default_endpoint_host(), "registry-1.docker.io");
        assert_eq!(r.object(), "latest");
        assert_eq!(r.tagged().unwrap(), "docker.io/library/busybox:latest");
        let r = Reference::parse(&format!("quay.io/x/y@sha256:{}", "0".repeat(64))).unwrap();
        assert_eq!(r.default_endpoint_host(), "quay.io");
        assert!(r.tag.is_none());
        assert!(r.object().starts_with("sha256:"));
        assert!(Reference::parse_named("busybox").unwrap().tag.is_none());
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "a/-b",
            "a/b-",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            ":tag",
            "a b",
            "a/b/",
            "host:port/x",
            &"a".repeat(64).replace('a', "f"),
            &format!("x/{}", "a".repeat(260)),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
