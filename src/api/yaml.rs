//! YAML → JSON values. Kubernetes reads YAML by converting it to JSON first
//! (sigs.k8s.io/yaml); picolet does the same so one decoder handles both.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Parses every document of a YAML (or JSON, which is YAML) stream.
/// Empty documents (`---` with nothing after) are dropped, as kubectl does.
pub fn documents(text: &str) -> Result<Vec<Value>> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    docs.into_iter()
        .filter(|d| !matches!(d, Yaml::Null))
        .map(|d| to_json(d, "").context("YAML document"))
        .collect()
}

/// Parses a stream that must hold exactly one document.
pub fn single(text: &str) -> Result<Value> {
    let mut docs = documents(text)?;
    match docs.len() {
        0 => bail!("empty document"),
        1 => Ok(docs.remove(0)),
        n => bail!("expected one YAML document, found {n}"),
    }
}

fn to_json(y: Yaml, path: &str) -> Result<Value> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(s) => {
            let f: f64 = s
                .parse()
                .with_context(|| format!("{}: bad number {s:?}", show(path)))?;
            match Number::from_f64(f) {
                Some(n) => Value::Number(n),
                None => bail!("{}: number {s:?} is not finite", show(path)),
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s,
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(s) => s,
                    Yaml::Null => "null".to_string(),
                    other => bail!("{}: unsupported map key {other:?}", show(path)),
                };
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let v = to_json(v, &p)?;
                if m.insert(key.clone(), v).is_some() {
                    bail!("{}: duplicate key", show(&p));
                }
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => bail!("{}: unresolved YAML alias", show(path)),
        Yaml::BadValue => bail!("{}: bad YAML value", show(path)),
    })
}

fn show(path: &str) -> &str {
    if path.is_empty() {
        "document"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_scalars_and_nesting() {
        let v = single("a: 1\nb: [x, 2.5, true, null]\nc: {d: \"10\"}\n").unwrap();
        assert_eq!(v, json!({"a":1,"b":["x",2.5,true,null],"c":{"d":"10"}}));
    }

    #[test]
    fn json_is_yaml() {
        let v = single(r#"{"kind":"Pod","spec":{"containers":[]}}"#).unwrap();
        assert_eq!(v["kind"], "Pod");
    }

    #[test]
    fn multi_document_skips_empty() {
        let d = documents("---\na: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(d.len(), 2);
        assert!(single("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = single("a: 1\na: 2\n").unwrap_err();
        assert!(format!("{e:#}").contains("duplicate"), "{e:#}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(single("a: [1, 2").is_err());
        assert!(single("\u{0}\u{1}\u{2}:::\t- ][").is_err());
    }
}
