//! Kubernetes API types and decoding. The types are k8s-openapi's, so the
//! wire format is the real API's; this module adds YAML input, unknown-field
//! reporting and quantity arithmetic.

pub mod quantity;
pub mod yaml;

pub use k8s_openapi::api::core::v1 as core;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A decoded object plus the JSON paths of fields the type does not know.
/// The API server drops unknown fields; picolet does too, but reports them.
pub struct Decoded<T> {
    pub object: T,
    pub unknown_fields: Vec<String>,
}

/// Decodes a JSON value into `T`, collecting unknown field paths.
/// Type errors name the path of the offending field.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<Decoded<T>> {
    let mut unknown = Vec::new();
    let mut record = |p: serde_ignored::Path| unknown.push(clean_path(&p.to_string()));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let object = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{}: {}", path, e.into_inner())
    })?;
    Ok(Decoded {
        object,
        unknown_fields: unknown,
    })
}

/// Decodes YAML or JSON text holding one object.
pub fn decode_text<T: DeserializeOwned>(text: &str) -> Result<Decoded<T>> {
    let v = yaml::single(text).context("parse")?;
    decode(v)
}

/// serde_ignored renders map keys of k8s-openapi structs as `?`; drop them.
fn clean_path(p: &str) -> String {
    p.split('.')
        .filter(|s| *s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let v = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","bogus":1},
            "spec":{"containers":[{"name":"c","image":"busybox","foo":2}]}});
        let d = decode::<core::Pod>(v).unwrap();
        assert_eq!(d.object.metadata.name.as_deref(), Some("x"));
        assert_eq!(
            d.unknown_fields,
            vec!["metadata.bogus", "spec.containers.0.foo"]
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let v = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},
            "spec":{"containers":[{"name":"c","image":"busybox","ports":[{"containerPort":"eighty"}]}]}});
        let e = decode::<core::Pod>(v).err().unwrap();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("spec.containers[0].ports[0].containerPort"),
            "{msg}"
        );
    }
}
