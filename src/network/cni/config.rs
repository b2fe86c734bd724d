//! CNI network configuration: loading the conf dir as libcni and containerd
//! do, and deriving each plugin's stdin (CNI spec 1.0, section 3).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// picolet's default network (`configs/cni/10-picolet.conflist`), for a conf
/// dir that has none and for the docs.
pub const DEFAULT_CONFLIST: &str = include_str!("../../../configs/cni/10-picolet.conflist");

/// Highest spec version picolet speaks (ADD/DEL/CHECK are unchanged in 1.1).
const MAX_VERSION: (u32, u32, u32) = (1, 1, 0);

/// A network configuration list, normalised: single-plugin `.conf`/`.json`
/// files are wrapped as a one-plugin list, as libcni does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    #[serde(default)]
    pub disable_check: bool,
    /// Plugin configuration objects as written (each has a string `type`).
    pub plugins: Vec<Map<String, Value>>,
}

impl NetworkList {
    /// Parses a `.conflist` document.
    pub fn from_conflist(data: &[u8]) -> Result<NetworkList, String> {
        let v: Value = serde_json::from_slice(data).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or("no string \"name\"")?
            .to_string();
        validate_name(&name).map_err(|e| format!("name {name:?}: {e}"))?;
        let mut cni_version = match obj.get("cniVersion") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(o) => return Err(format!("cniVersion: not a string: {o}")),
        };
        if !cni_version.is_empty() {
            parse_version(&cni_version).ok_or(format!("invalid cniVersion {cni_version:?}"))?;
        }
        // cniVersions (spec 1.1): the highest listed version picolet speaks wins.
        if let Some(vs) = obj.get("cniVersions") {
            let vs = vs.as_array().ok_or("cniVersions: not a list")?;
            let mut best = parse_version(&cni_version).filter(|v| *v <= MAX_VERSION);
            for v in vs {
                let s = v.as_str().ok_or("cniVersions: not a list of strings")?;
                let p = parse_version(s).ok_or(format!("invalid cniVersions entry {s:?}"))?;
                if p <= MAX_VERSION && best.is_none_or(|b| p > b) {
                    best = Some(p);
                    cni_version = s.to_string();
                }
            }
        }
        let disable_check = match obj.get("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(o) => return Err(format!("disableCheck: invalid value {o}")),
        };
        let plugins = obj
            .get("plugins")
            .and_then(Value::as_array)
            .ok_or("no \"plugins\" list")?;
        if plugins.is_empty() {
            return Err("no plugins in list".into());
        }
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = p
                    .as_object()
                    .ok_or(format!("plugins[{i}]: not an object"))?;
                plugin_type(p).map_err(|e| format!("plugins[{i}]: {e}"))?;
                Ok(p.clone())
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(NetworkList {
            name,
            cni_version,
            disable_check,
            plugins,
        })
    }

    /// Parses a single-plugin `.conf`/`.json` and wraps it as a list.
    pub fn from_conf(data: &[u8]) -> Result<NetworkList, String> {
        let v: Value = serde_json::from_slice(data).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        if obj.contains_key("plugins") {
            // Some tools write lists with a .conf name; libcni would reject
            // the file as a plugin without "type": accept it as what it is.
            return NetworkList::from_conflist(data);
        }
        plugin_type(obj)?;
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut list = Map::new();
        list.insert("name".into(), Value::String(name.to_string()));
        if let Some(v) = obj.get("cniVersion") {
            list.insert("cniVersion".into(), v.clone());
        }
        list.insert("plugins".into(), Value::Array(vec![v.clone()]));
        NetworkList::from_conflist(Value::Object(list).to_string().as_bytes())
    }

    /// The version as a triple; an empty version is 0.1.0 (as plugins read it).
    pub fn version(&self) -> (u32, u32, u32) {
        parse_version(&self.cni_version).unwrap_or((0, 1, 0))
    }

    /// `prevResult` on DEL and the CHECK verb exist from spec 0.4.0 on.
    pub fn supports_check_and_prev_on_del(&self) -> bool {
        self.version() >= (0, 4, 0)
    }

    /// Every executable the list needs: plugin types and their IPAM types,
    /// with the plugin that uses each.
    pub fn binaries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in &self.plugins {
            let Ok(t) = plugin_type(p) else { continue };
            out.push((t.to_string(), t.to_string()));
            if let Some(ipam) = p
                .get("ipam")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str)
            {
                out.push((ipam.to_string(), t.to_string()));
            }
        }
        out
    }
}

/// The `type` of a plugin configuration: the executable's file name.
pub fn plugin_type(p: &Map<String, Value>) -> Result<&str, String> {
    let t = p
        .get("type")
        .and_then(Value::as_str)
        .ok_or("no string \"type\"")?;
    if t.is_empty() || t.contains('/') || t.starts_with('.') {
        return Err(format!("invalid plugin type {t:?}"));
    }
    Ok(t)
}

/// Network names and container ids (spec): an alphanumeric first
/// character, then alphanumerics, `_`, `.` or `-`.
pub fn validate_name(s: &str) -> Result<(), String> {
    let mut c = s.chars();
    match c.next() {
        Some(f) if f.is_ascii_alphanumeric() => {}
        _ => return Err("must start with a letter or digit".into()),
    }
    if c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err("may only contain letters, digits, '_', '.' and '-'".into())
    }
}

/// "1.0.0" -> (1, 0, 0); also accepts "0.1" style short forms.
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next().map_or(Some(0), |x| x.parse().ok())?;
    let c = it.next().map_or(Some(0), |x| x.parse().ok())?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

/// Config file candidates in a conf dir: `.conf`, `.conflist`, `.json`,
/// sorted by name (the lowest wins, as in containerd and the kubelet).
pub fn candidate_files(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = names
        .into_iter()
        .filter(|n| {
            matches!(
                Path::new(n).extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    v.sort();
    v
}

/// Parses one candidate file by its extension.
pub fn parse_file(name: &str, data: &[u8]) -> Result<NetworkList, String> {
    if name.ends_with(".conflist") {
        NetworkList::from_conflist(data)
    } else {
        NetworkList::from_conf(data)
    }
}

/// The stdin of plugin `idx` of `list`: its own object plus `name`,
/// `cniVersion`, `prevResult` (when given) and `runtimeConfig` holding only
/// the capabilities the plugin declares (libcni's `buildOneConfig`).
pub fn plugin_stdin(
    list: &NetworkList,
    idx: usize,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Value {
    let mut p = list.plugins[idx].clone();
    p.insert("name".into(), Value::String(list.name.clone()));
    p.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        p.insert("prevResult".into(), prev.clone());
    }
    let mut rc = Map::new();
    if let Some(caps) = p.get("capabilities").and_then(Value::as_object) {
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = capability_args.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        p.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(p)
}

/// Where the plugin of `kind` lives: the first bin dir holding an
/// executable file of that name.
pub fn find_plugin(kind: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    bin_dirs.iter().map(|d| d.join(kind)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_conflist_is_valid() {
        let l = NetworkList::from_conflist(DEFAULT_CONFLIST.as_bytes()).unwrap();
        assert_eq!(l.name, "picolet");
        assert_eq!(l.cni_version, "1.0.0");
        let kinds: Vec<_> = l.binaries().into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, ["bridge", "host-local", "portmap"]);
    }

    #[test]
    fn conflist_fields_and_errors() {
        let l = NetworkList::from_conflist(
            br#"{"cniVersion":"0.4.0","name":"n1","disableCheck":"true",
                 "plugins":[{"type":"bridge","ipam":{"type":"host-local"}},{"type":"portmap"}]}"#,
        )
        .unwrap();
        assert!(l.disable_check);
        assert_eq!(l.plugins.len(), 2);
        assert!(l.supports_check_and_prev_on_del());
        assert_eq!(
            l.binaries(),
            [
                ("bridge".to_string(), "bridge".to_string()),
                ("host-local".into(), "bridge".into()),
                ("portmap".into(), "portmap".into())
            ]
        );
        for (doc, want) in [
            (r#"{"name":"n","plugins":[]}"#, "no plugins"),
            (r#"{"name":"n"}"#, "no \"plugins\""),
            (r#"{"plugins":[{"type":"x"}]}"#, "name"),
            (r#"{"name":"-n","plugins":[{"type":"x"}]}"#, "must start"),
            (r#"{"name":"n","plugins":[{"kind":"x"}]}"#, "plugins[0]"),
            (
                r#"{"name":"n","plugins":[{"type":"../x"}]}"#,
                "invalid plugin type",
            ),
            (
                r#"{"name":"n","cniVersion":"one","plugins":[{"type":"x"}]}"#,
                "cniVersion",
            ),
            ("[1]", "not a JSON object"),
            ("{", "invalid JSON"),
        ] {
            let e = NetworkList::from_conflist(doc.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
        }
    }

    #[test]
    fn cni_versions_picks_highest_supported() {
        let l = NetworkList::from_conflist(
            br#"{"name":"n","cniVersion":"0.3.1","cniVersions":["1.0.0","0.4.0","9.0.0"],
                 "plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(l.cni_version, "1.0.0");
        let old = NetworkList::from_conflist(br#"{"name":"n","plugins":[{"type":"x"}]}"#).unwrap();
        assert_eq!(old.version(), (0, 1, 0));
        assert!(!old.supports_check_and_prev_on_del());
    }

    #[test]
    fn single_conf_is_wrapped() {
        let l = parse_file(
            "10-br.conf",
            br#"{"cniVersion":"0.3.1","name":"br","type":"bridge","bridge":"b0"}"#,
        )
        .unwrap();
        assert_eq!(l.name, "br");
        assert_eq!(l.cni_version, "0.3.1");
        assert_eq!(l.plugins[0]["bridge"], "b0");
        assert!(parse_file("x.json", br#"{"name":"br"}"#).is_err());
        // a list behind a .conf name
        let l = parse_file("x.conf", br#"{"name":"n","plugins":[{"type":"x"}]}"#).unwrap();
        assert_eq!(l.plugins.len(), 1);
    }

    #[test]
    fn candidates_sorted_by_name() {
        let names = [
            "99-z.conf",
            "10-a.conflist",
            "README",
            "20-b.json",
            "05-x.conf.bak",
        ]
        .map(String::from);
        assert_eq!(
            candidate_files(names),
            ["10-a.conflist", "20-b.json", "99-z.conf"]
        );
    }

    #[test]
    fn stdin_injects_name_version_prev_and_declared_capabilities() {
        let l = NetworkList::from_conflist(
            br#"{"cniVersion":"1.0.0","name":"net",
                 "plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}"#,
        )
        .unwrap();
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": 1, "containerPort": 2}]),
        );
        caps.insert("bandwidth".into(), json!({"ingressRate": 1}));
        let s0 = plugin_stdin(&l, 0, None, &caps);
        assert_eq!(
            s0,
            json!({"type":"bridge","name":"net","cniVersion":"1.0.0"})
        );
        let prev = json!({"cniVersion":"1.0.0","ips":[]});
        let s1 = plugin_stdin(&l, 1, Some(&prev), &caps);
        assert_eq!(s1["prevResult"], prev);
        assert_eq!(
            s1["runtimeConfig"],
            json!({"portMappings":[{"hostPort":1,"containerPort":2}]})
        );
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.0.0"), Some((1, 0, 0)));
        assert_eq!(parse_version("0.1"), Some((0, 1, 0)));
        assert_eq!(parse_version("1.0.0.0"), None);
        assert_eq!(parse_version(""), None);
        assert!(parse_version("0.4.0") > parse_version("0.3.1"));
    }
}
