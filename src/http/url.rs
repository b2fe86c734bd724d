//! The small URL subset HTTP needs: `http(s)://host[:port][/path][?query]`.

use anyhow::{bail, Result};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path plus `?query`, always starting with `/`.
    pub path_and_query: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("URL {s:?}: only http:// and https:// are supported");
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            bail!("URL {s:?}: user info is not supported");
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| anyhow::anyhow!("URL {s:?}: invalid host or port"))?;
        let tail = tail.split('#').next().unwrap_or("");
        let path_and_query = if tail.starts_with('/') {
            tail.to_string()
        } else {
            format!("/{tail}")
        };
        Ok(Url {
            https,
            host: host.to_string(),
            port: port.unwrap_or(if https { 443 } else { 80 }),
            path_and_query,
        })
    }

    /// `host:port` as written in URLs (IPv6 in brackets), port always shown.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves a `Location` header value against this URL.
    pub fn join(&self, location: &str) -> Result<Url> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Url::parse(location);
        }
        let scheme = if self.https { "https" } else { "http" };
        if let Some(r) = location.strip_prefix("//") {
            return Url::parse(&format!("{scheme}://{r}"));
        }
        let mut u = self.clone();
        if location.starts_with('/') {
            u.path_and_query = location.to_string();
        } else {
            let path = self.path_and_query.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            u.path_and_query = format!("{dir}{location}");
        }
        Ok(u)
    }
}

fn split_host_port(a: &str) -> Option<(&str, Option<u16>)> {
    if let Some(r) = a.strip_prefix('[') {
        let (h, rest) = r.split_once(']')?;
        return match rest.strip_prefix(':') {
            Some(p) => Some((h, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((h, None)),
            None => None,
        };
    }
    let (h, p) = match a.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (a, None),
    };
    if h.is_empty() || h.contains(':') {
        return None;
    }
    Some((h, p))
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

/// Percent-encodes a query component (RFC 3986 unreserved kept).
pub fn query_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o += &format!("%{b:02X}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("https://reg.example:5443/v2/x?y=1#frag").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path_and_query.as_str()),
            (true, "reg.example", 5443, "/v2/x?y=1")
        );
        let u = Url::parse("http://[::1]:80").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("::1", 80, "/")
        );
        assert_eq!(u.authority(), "[::1]:80");
        assert_eq!(Url::parse("https://a").unwrap().port, 443);
        for bad in [
            "ftp://a",
            "http://",
            "http://a:x",
            "http://u@a/",
            "http://a:99999",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn joins_locations() {
        let u = Url::parse("http://a:1/v2/r/blobs/x").unwrap();
        assert_eq!(u.join("/b?c").unwrap().to_string(), "http://a:1/b?c");
        assert_eq!(u.join("y").unwrap().to_string(), "http://a:1/v2/r/blobs/y");
        assert_eq!(u.join("//cdn/z").unwrap().to_string(), "http://cdn:80/z");
        assert_eq!(u.join("https://cdn/z").unwrap().host, "cdn");
    }

    #[test]
    fn escapes() {
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
