//! Downward API volume contents (upstream `downwardapi.CollectData` and
//! `fieldpath.ExtractFieldPathAsString`): one file per item, from a
//! metadata field or a container resource.

use super::atomic::{clean_path, FileProjection};
use crate::api::core::{DownwardAPIVolumeFile, Pod};
use crate::runtime::convert::{field_ref_value, resource_field_value, Allocatable};
use std::collections::BTreeMap;
use std::fmt::Write;

/// `defaultMode` when the pod leaves it unset (API defaulting).
pub const DEFAULT_MODE: i32 = 0o644;

/// Field paths a downward API *volume* may use (upstream validation:
/// `validVolumeDownwardAPIFieldPathExpressions`, plus the subscripted
/// label/annotation forms).
fn volume_field_allowed(path: &str) -> bool {
    matches!(
        path,
        "metadata.name"
            | "metadata.namespace"
            | "metadata.uid"
            | "metadata.labels"
            | "metadata.annotations"
    ) || ((path.starts_with("metadata.labels['") || path.starts_with("metadata.annotations['"))
        && path.ends_with("']"))
}

/// Go's `strconv.Quote` (what `%q` prints), for the map rendering. Printable
/// is approximated without Unicode tables: controls, non-ASCII spaces,
/// common format characters and private use are escaped as Go would.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !go_printable(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn go_printable(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    let u = c as u32;
    !(c.is_control()
        || c.is_whitespace()
        || u == 0xad
        || (0x600..=0x605).contains(&u)
        || (0x200b..=0x200f).contains(&u)
        || (0x202a..=0x202e).contains(&u)
        || (0x2060..=0x206f).contains(&u)
        || u == 0xfeff
        || (0xfff9..=0xfffb).contains(&u)
        || (0xe000..=0xf8ff).contains(&u)
        || (0xf0000..=0x10ffff).contains(&u)
        || (u & 0xfffe) == 0xfffe)
}

/// Upstream `fieldpath.FormatMap`: `key="value"` lines sorted by key, no
/// trailing newline.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (k, v) in m.into_iter().flatten() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&go_quote(v));
    }
    out
}

/// A mode field as file permission bits (API validation: 0..=0777).
pub fn file_mode(mode: i32, field: &str) -> Result<u32, String> {
    if !(0..=0o777).contains(&mode) {
        return Err(format!(
            "{field}: Invalid value: {mode}: must be a number between 0 and 0777 (octal), both inclusive"
        ));
    }
    Ok(mode as u32)
}

fn field_value(pod: &Pod, api_version: Option<&str>, path: &str) -> Result<String, String> {
    if !volume_field_allowed(path) {
        return Err(format!("unsupported fieldPath: {path}"));
    }
    match path {
        "metadata.labels" => Ok(format_map(pod.metadata.labels.as_ref())),
        "metadata.annotations" => Ok(format_map(pod.metadata.annotations.as_ref())),
        _ => field_ref_value(pod, api_version, path, &[], "", &[]).map_err(|e| e.0),
    }
}

fn resource_value(
    pod: &Pod,
    r: &crate::api::core::ResourceFieldSelector,
    allocatable: &Allocatable,
) -> Result<String, String> {
    let name = r.container_name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err("resourceFieldRef.containerName: Required value".into());
    }
    let spec = pod.spec.as_ref();
    let c = spec
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .chain(
            spec.into_iter()
                .flat_map(|s| s.init_containers.iter().flatten()),
        )
        .find(|c| c.name == name)
        .ok_or_else(|| format!("container {name} not found"))?;
    resource_field_value(
        c,
        &r.resource,
        r.divisor.as_ref().map(|d| d.0.as_str()),
        allocatable,
    )
    .map_err(|e| e.0)
}

/// The files of a downward API item list, keyed by clean relative path.
/// `default_mode` is the volume's (already validated) `defaultMode`.
pub fn collect(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    allocatable: &Allocatable,
    default_mode: u32,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let mut out = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = clean_path(&item.path).map_err(|e| format!("items[{i}].path: {e}"))?;
        let mode = match item.mode {
            Some(m) => file_mode(m, &format!("items[{i}].mode"))?,
            None => default_mode,
        };
        let data = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), None) => field_value(pod, f.api_version.as_deref(), &f.field_path)?,
            (None, Some(r)) => resource_value(pod, r, allocatable)?,
            _ => {
                return Err(format!(
                    "items[{i}]: must specify exactly one of fieldRef and resourceFieldRef"
                ))
            }
        };
        out.insert(
            path,
            FileProjection {
                data: data.into_bytes(),
                mode,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::core::{
        Container, ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("prod".into());
        p.metadata.uid = Some("u-1".into());
        p.metadata.labels = Some(
            [("b", "2"), ("a", "x\"y"), ("a.b", "1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.metadata.annotations = Some(
            [("note", "line1\nline2\ttab\\ é \u{200b}")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let mut c = Container {
            name: "app".into(),
            ..Default::default()
        };
        c.resources = Some(ResourceRequirements {
            limits: Some(
                [("memory".to_string(), Q("64Mi".into()))]
                    .into_iter()
                    .collect(),
            ),
            requests: Some(
                [("cpu".to_string(), Q("250m".into()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        });
        p.spec = Some(PodSpec {
            containers: vec![c],
            ..Default::default()
        });
        p
    }

    fn field(path: &str, field_path: &str) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                api_version: None,
            }),
            ..Default::default()
        }
    }

    fn resource(path: &str, res: &str, divisor: Option<&str>) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("app".into()),
                resource: res.into(),
                divisor: divisor.map(|d| Q(d.into())),
            }),
            ..Default::default()
        }
    }

    fn text(m: &BTreeMap<String, FileProjection>, k: &str) -> String {
        String::from_utf8(m[k].data.clone()).unwrap()
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            go_quote("\n\t\r\x07\x08\x0b\x0c"),
            "\"\\n\\t\\r\\a\\b\\v\\f\""
        );
        assert_eq!(go_quote("\x01\x7f"), "\"\\x01\\x7f\"");
        assert_eq!(go_quote("é日本"), "\"é日本\"");
        assert_eq!(
            go_quote("\u{85}\u{a0}\u{200b}\u{feff}"),
            "\"\\u0085\\u00a0\\u200b\\ufeff\""
        );
        assert_eq!(go_quote("\u{10ffff}"), "\"\\U0010ffff\"");
        assert_eq!(go_quote("😀"), "\"😀\"");
    }

    #[test]
    fn renders_maps_sorted_by_key() {
        let p = pod();
        assert_eq!(
            format_map(p.metadata.labels.as_ref()),
            "a=\"x\\\"y\"\na.b=\"1\"\nb=\"2\""
        );
        assert_eq!(format_map(None), "");
    }

    #[test]
    fn collects_metadata_fields() {
        let p = pod();
        let items = vec![
            field("name", "metadata.name"),
            field("ns", "metadata.namespace"),
            field("uid", "metadata.uid"),
            field("./meta//labels", "metadata.labels"),
            field("annotations", "metadata.annotations"),
            field("one", "metadata.labels['b']"),
            field("missing", "metadata.annotations['nope']"),
        ];
        let m = collect(&items, &p, &Allocatable::default(), 0o644).unwrap();
        assert_eq!(text(&m, "name"), "web");
        assert_eq!(text(&m, "ns"), "prod");
        assert_eq!(text(&m, "uid"), "u-1");
        assert_eq!(text(&m, "meta/labels"), "a=\"x\\\"y\"\na.b=\"1\"\nb=\"2\"");
        assert_eq!(
            text(&m, "annotations"),
            "note=\"line1\\nline2\\ttab\\\\ é \\u200b\""
        );
        assert_eq!(text(&m, "one"), "2");
        assert_eq!(text(&m, "missing"), "");
        assert!(m.values().all(|f| f.mode == 0o644));
    }

    #[test]
    fn collects_resources_with_divisor_and_allocatable_fallback() {
        let p = pod();
        let alloc = Allocatable {
            cpu_milli: 2000,
            memory: 1 << 30,
            ephemeral_storage: 0,
        };
        let items = vec![
            resource("mem", "limits.memory", None),
            resource("mem-mi", "limits.memory", Some("1Mi")),
            resource("cpu-limit", "limits.cpu", None),
            resource("cpu-req-m", "requests.cpu", Some("1m")),
            resource("cpu-req", "requests.cpu", None),
        ];
        let m = collect(&items, &p, &alloc, 0o644).unwrap();
        assert_eq!(text(&m, "mem"), (64u64 << 20).to_string());
        assert_eq!(text(&m, "mem-mi"), "64");
        assert_eq!(text(&m, "cpu-limit"), "2", "no limit: node allocatable");
        assert_eq!(text(&m, "cpu-req-m"), "250");
        assert_eq!(text(&m, "cpu-req"), "1", "rounded up");
    }

    #[test]
    fn modes_and_errors() {
        let p = pod();
        let mut f = field("n", "metadata.name");
        f.mode = Some(0o400);
        let m = collect(
            &[f, field("d", "metadata.name")],
            &p,
            &Allocatable::default(),
            0o600,
        )
        .unwrap();
        assert_eq!(m["n"].mode, 0o400);
        assert_eq!(m["d"].mode, 0o600);
        let mut bad = field("n", "metadata.name");
        bad.mode = Some(0o1000);
        assert!(collect(&[bad], &p, &Allocatable::default(), 0o644)
            .unwrap_err()
            .contains("between 0 and 0777"));
        assert_eq!(
            collect(
                &[field("ip", "status.podIP")],
                &p,
                &Allocatable::default(),
                0o644
            )
            .unwrap_err(),
            "unsupported fieldPath: status.podIP"
        );
        assert!(collect(
            &[field("../x", "metadata.name")],
            &p,
            &Allocatable::default(),
            0o644
        )
        .unwrap_err()
        .contains("must not contain '..'"));
        let mut no_container = resource("x", "limits.cpu", None);
        no_container
            .resource_field_ref
            .as_mut()
            .unwrap()
            .container_name = Some("nope".into());
        assert_eq!(
            collect(&[no_container], &p, &Allocatable::default(), 0o644).unwrap_err(),
            "container nope not found"
        );
        let both = DownwardAPIVolumeFile {
            path: "x".into(),
            ..Default::default()
        };
        assert!(collect(&[both], &p, &Allocatable::default(), 0o644).is_err());
    }
}
