//! YAML → JSON values. Kubernetes reads YAML by converting it to JSON first
//! (sigs.k8s.io/yaml over go-yaml v2); picolet does the same so one decoder
//! handles both, and resolves plain scalars by go-yaml v2's YAML 1.1 rules:
//! `0644` is octal, `yes`/`on` are booleans, `~` is null. Quoted and block
//! scalars are always strings.

use anyhow::{bail, Result};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Parses every document of a YAML (or JSON, which is YAML) stream.
/// Empty documents (`---` with nothing after) are dropped, as kubectl does.
pub fn documents(text: &str) -> Result<Vec<Value>> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut b, true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.docs.into_iter().flatten().collect())
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

enum Node {
    Seq(Vec<Value>),
    /// The map, the pending key once read, and the keys a merge key (`<<`)
    /// supplied (explicit keys may override those).
    Map(Map<String, Value>, Option<String>, Vec<String>),
}

#[derive(Default)]
struct Builder {
    docs: Vec<Option<Value>>,
    stack: Vec<(Node, usize)>,
    anchors: HashMap<usize, Value>,
    error: Option<anyhow::Error>,
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.event(ev, mark) {
            self.error = Some(e);
        }
    }
}

impl Builder {
    fn event(&mut self, ev: Event, mark: Marker) -> Result<()> {
        match ev {
            Event::DocumentStart => self.docs.push(None),
            Event::SequenceStart(anchor, _) => self.stack.push((Node::Seq(Vec::new()), anchor)),
            Event::MappingStart(anchor, _) => self
                .stack
                .push((Node::Map(Map::new(), None, Vec::new()), anchor)),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((node, anchor)) = self.stack.pop() else {
                    bail!("{}: unbalanced YAML structure", at(mark));
                };
                let v = match node {
                    Node::Seq(s) => Value::Array(s),
                    Node::Map(m, _, _) => Value::Object(m),
                };
                self.insert(v, anchor, mark)?;
            }
            Event::Scalar(s, style, anchor, tag) => {
                let v = scalar(s, style, tag.as_ref(), mark)?;
                self.insert(v, anchor, mark)?;
            }
            Event::Alias(id) => {
                let Some(v) = self.anchors.get(&id).cloned() else {
                    bail!("{}: unknown YAML alias", at(mark));
                };
                self.insert(v, 0, mark)?;
            }
            Event::DocumentEnd | Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn insert(&mut self, v: Value, anchor: usize, mark: Marker) -> Result<()> {
        if anchor > 0 {
            self.anchors.insert(anchor, v.clone());
        }
        match self.stack.last_mut() {
            None => match self.docs.last_mut() {
                Some(slot) => *slot = Some(v).filter(|v| !v.is_null()),
                None => self.docs.push(Some(v).filter(|v| !v.is_null())),
            },
            Some((Node::Seq(s), _)) => s.push(v),
            Some((Node::Map(m, key, merged), _)) => match key.take() {
                None => *key = Some(map_key(v, mark)?),
                Some(k) if k == "<<" => merge(m, merged, v, mark)?,
                Some(k) => {
                    if m.contains_key(&k) {
                        match merged.iter().position(|x| *x == k) {
                            Some(i) => {
                                merged.swap_remove(i);
                            }
                            None => bail!("{}: duplicate key {k:?}", at(mark)),
                        }
                    }
                    m.insert(k, v);
                }
            },
        }
        Ok(())
    }
}

fn at(m: Marker) -> String {
    format!("line {} column {}", m.line(), m.col() + 1)
}

/// JSON has only string keys; sigs.k8s.io/yaml stringifies scalar keys.
fn map_key(v: Value, mark: Marker) -> Result<String> {
    Ok(match v {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        _ => bail!("{}: a mapping key must be a scalar", at(mark)),
    })
}

/// YAML merge key (`<<: *base`): keys not already present are copied in.
fn merge(
    into: &mut Map<String, Value>,
    merged: &mut Vec<String>,
    v: Value,
    mark: Marker,
) -> Result<()> {
    let sources = match v {
        Value::Object(m) => vec![m],
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::Object(m) => Ok(m),
                _ => bail!("{}: merge key needs mappings", at(mark)),
            })
            .collect::<Result<_>>()?,
        _ => bail!("{}: merge key needs a mapping", at(mark)),
    };
    for src in sources {
        for (k, val) in src {
            if !into.contains_key(&k) {
                merged.push(k.clone());
                into.insert(k, val);
            }
        }
    }
    Ok(())
}

fn scalar(s: String, style: TScalarStyle, tag: Option<&Tag>, mark: Marker) -> Result<Value> {
    if let Some(t) = tag {
        if t.handle == "tag:yaml.org,2002:" || t.handle == "!!" {
            return match t.suffix.as_str() {
                "str" => Ok(Value::String(s)),
                "null" => Ok(Value::Null),
                "bool" => match resolve_plain(&s) {
                    v @ Value::Bool(_) => Ok(v),
                    _ => bail!("{}: {s:?} is not a bool", at(mark)),
                },
                "int" => match resolve_plain(&s) {
                    v @ Value::Number(_) if v.is_i64() || v.is_u64() => Ok(v),
                    _ => bail!("{}: {s:?} is not an int", at(mark)),
                },
                "float" => match resolve_plain(&s) {
                    Value::Number(n) => Ok(Value::Number(n)),
                    _ => bail!("{}: {s:?} is not a float", at(mark)),
                },
                other => bail!("{}: unsupported YAML tag !!{other}", at(mark)),
            };
        }
        // Local tags (`!foo`): the value as its plain resolution, as go-yaml does.
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::String(s));
    }
    Ok(resolve_plain(&s))
}

/// go-yaml v2's resolution of a plain scalar.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Value::String(s.to_string());
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    if let Some(i) = parse_int(&plain) {
        return Value::Number(i.into());
    }
    if let Some(u) = parse_uint(&plain) {
        return Value::Number(u.into());
    }
    if let Some(f) = parse_float(&plain) {
        if let Some(n) = Number::from_f64(f) {
            return Value::Number(n);
        }
        // .inf/.nan have no JSON form; JSON conversion fails upstream too.
        return Value::String(s.to_string());
    }
    Value::String(s.to_string())
}

/// Go's `strconv.ParseInt(s, 0, 64)`: 0x hex, 0o/0 octal, 0b binary.
fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, h)
    } else if let Some(b) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, b)
    } else if let Some(o) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, o)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if neg { -mag } else { mag }).ok()
}

fn parse_uint(s: &str) -> Option<u64> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.is_empty() || !body.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    body.parse().ok()
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // Rust accepts "inf"/"nan" spellings YAML does not: require a digit.
    if !s.bytes().any(|c| c.is_ascii_digit())
        || s.bytes()
            .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E')
    {
        return None;
    }
    s.parse().ok()
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
        assert!(single("").is_err());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = single("a: 1\na: 2\n").unwrap_err();
        assert!(format!("{e:#}").contains("duplicate key \"a\""), "{e:#}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(single("a: [1, 2").is_err());
        assert!(single("\u{0}\u{1}\u{2}:::\t- ][").is_err());
    }

    #[test]
    fn yaml_1_1_resolution_like_go_yaml_v2() {
        let v = single(
            "octal: 0644\nquoted: \"0644\"\nhex: 0x1F\nbin: 0b101\nunder: 1_000\n\
             yes: yes\noff: off\nshort: Y\ntilde: ~\nneg: -12\nfloat: 1.5e3\nver: 1.2.3\n\
             zero: 0\nstr: hello\nbig: 18446744073709551615\n",
        )
        .unwrap();
        assert_eq!(v["octal"], 420);
        assert_eq!(v["quoted"], "0644");
        assert_eq!(v["hex"], 31);
        assert_eq!(v["bin"], 5);
        assert_eq!(v["under"], 1000);
        // keys are resolved too, then stringified as sigs.k8s.io/yaml does
        assert_eq!(v["true"], true);
        assert_eq!(v["false"], false);
        assert_eq!(v["short"], true);
        assert_eq!(v["tilde"], Value::Null);
        assert_eq!(v["neg"], -12);
        assert_eq!(v["float"], 1500.0);
        assert_eq!(v["ver"], "1.2.3");
        assert_eq!(v["zero"], 0);
        assert_eq!(v["str"], "hello");
        assert_eq!(v["big"], json!(18446744073709551615u64));
    }

    #[test]
    fn block_scalars_and_tags_stay_strings() {
        let v =
            single("a: |\n  line1\n  line2\nb: !!str 123\nc: '0644'\nd: !!int \"7\"\n").unwrap();
        assert_eq!(v["a"], "line1\nline2\n");
        assert_eq!(v["b"], "123");
        assert_eq!(v["c"], "0644");
        assert_eq!(v["d"], 7);
        assert!(single("a: !!int x\n").is_err());
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let v = single("base: &b {x: 1, z: 2}\nuse: *b\nm:\n  <<: *b\n  z: 3\n").unwrap();
        assert_eq!(v["use"], json!({"x":1,"z":2}));
        assert_eq!(v["m"], json!({"x":1,"z":3}));
    }
}
