//! Two-way strategic merge patches (upstream `CreateTwoWayMergePatch`) for
//! the objects picolet writes: the patch that turns `old` into `new` when
//! the server applies it, with list merge keys given by the caller (the
//! `patchMergeKey` tags of the Go types).
//!
//! Rules: maps carry changed keys (removed ones as null, nested maps
//! recursively); a list with a merge key carries changed and new items
//! (only their changed fields, plus the key), `{"$patch": "delete"}` items
//! for removed ones, and `$setElementOrder/<field>` with the new order;
//! other lists are replaced whole.

use serde_json::{json, Map, Value};

/// The merge key of the list at `path` (field names from the root, e.g.
/// `["status", "conditions"]`), or `None` for a list replaced whole.
pub type MergeKeys<'a> = &'a dyn Fn(&[&str]) -> Option<&'static str>;

/// The patch from `old` to `new` (both JSON objects); an empty object when
/// they are equal.
pub fn two_way(old: &Value, new: &Value, keys: MergeKeys<'_>) -> Value {
    Value::Object(diff_maps(old, new, keys, &mut Vec::new()))
}

fn diff_maps<'a>(
    old: &'a Value,
    new: &'a Value,
    keys: MergeKeys<'_>,
    path: &mut Vec<&'a str>,
) -> Map<String, Value> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    let o = old.as_object().unwrap_or(&EMPTY);
    let n = new.as_object().unwrap_or(&EMPTY);
    let mut out = Map::new();
    for (k, nv) in n {
        let ov = o.get(k);
        if ov == Some(nv) {
            continue;
        }
        path.push(k);
        match (ov, nv) {
            (Some(ov @ Value::Object(_)), Value::Object(_)) => {
                let d = diff_maps(ov, nv, keys, path);
                if !d.is_empty() {
                    out.insert(k.clone(), Value::Object(d));
                }
            }
            (Some(Value::Array(oa)), Value::Array(na)) => {
                if let Some(key) = keys(path) {
                    diff_keyed_list(&mut out, k, oa, na, key, keys, path);
                } else {
                    out.insert(k.clone(), nv.clone());
                }
            }
            (None, Value::Array(na)) => {
                if let Some(key) = keys(path) {
                    diff_keyed_list(&mut out, k, &[], na, key, keys, path);
                } else {
                    out.insert(k.clone(), nv.clone());
                }
            }
            _ => {
                out.insert(k.clone(), nv.clone());
            }
        }
        path.pop();
    }
    for k in o.keys() {
        if !n.contains_key(k) {
            out.insert(k.clone(), Value::Null);
        }
    }
    out
}

fn diff_keyed_list<'a>(
    out: &mut Map<String, Value>,
    field: &str,
    old: &'a [Value],
    new: &'a [Value],
    key: &str,
    keys: MergeKeys<'_>,
    path: &mut Vec<&'a str>,
) {
    let key_of = |v: &Value| v.get(key).cloned().unwrap_or(Value::Null);
    let mut items = Vec::new();
    for nv in new {
        let k = key_of(nv);
        match old.iter().find(|ov| key_of(ov) == k) {
            Some(ov) if ov == nv => {}
            Some(ov) => {
                let mut d = diff_maps(ov, nv, keys, path);
                d.insert(key.to_string(), k);
                items.push(Value::Object(d));
            }
            None => items.push(nv.clone()),
        }
    }
    for ov in old {
        let k = key_of(ov);
        if !new.iter().any(|nv| key_of(nv) == k) {
            items.push(json!({ key: k, "$patch": "delete" }));
        }
    }
    let old_order: Vec<Value> = old.iter().map(key_of).collect();
    let new_order: Vec<Value> = new.iter().map(key_of).collect();
    if items.is_empty() && old_order == new_order {
        return;
    }
    out.insert(
        format!("$setElementOrder/{field}"),
        Value::Array(new_order.into_iter().map(|k| json!({ key: k })).collect()),
    );
    if !items.is_empty() {
        out.insert(field.to_string(), Value::Array(items));
    }
}

/// Merge keys of a Pod's lists that picolet writes (`status`): conditions
/// by type, pod and host IPs by ip; container statuses are replaced.
pub fn pod_keys(path: &[&str]) -> Option<&'static str> {
    match path {
        ["status", "conditions"] => Some("type"),
        ["status", "podIPs"] | ["status", "hostIPs"] => Some("ip"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(old: Value, new: Value) -> Value {
        two_way(&old, &new, &pod_keys)
    }

    #[test]
    fn maps_carry_changes_and_nulls() {
        assert_eq!(patch(json!({"a": 1}), json!({"a": 1})), json!({}));
        assert_eq!(
            patch(
                json!({"status": {"phase": "Pending", "message": "x", "qosClass": "BestEffort"}}),
                json!({"status": {"phase": "Running", "qosClass": "BestEffort"}})
            ),
            json!({"status": {"phase": "Running", "message": null}})
        );
    }

    #[test]
    fn conditions_merge_by_type_with_element_order() {
        let old = json!({"status": {"conditions": [
            {"type": "DisruptionTarget", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            {"type": "Gone", "status": "True"}
        ]}});
        let new = json!({"status": {"conditions": [
            {"type": "DisruptionTarget", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "Initialized", "status": "True"}
        ]}});
        assert_eq!(
            patch(old, new),
            json!({"status": {
                "$setElementOrder/conditions": [
                    {"type": "DisruptionTarget"}, {"type": "Ready"}, {"type": "Initialized"}],
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": null},
                    {"type": "Initialized", "status": "True"},
                    {"type": "Gone", "$patch": "delete"}
                ]
            }})
        );
    }

    #[test]
    fn other_lists_are_replaced_and_first_reports_are_whole() {
        let old = json!({"status": {"containerStatuses": [{"name": "a", "ready": false}]}});
        let new = json!({"status": {"containerStatuses": [{"name": "a", "ready": true}],
                                    "podIPs": [{"ip": "10.0.0.2"}]}});
        assert_eq!(
            patch(old, new),
            json!({"status": {
                "containerStatuses": [{"name": "a", "ready": true}],
                "$setElementOrder/podIPs": [{"ip": "10.0.0.2"}],
                "podIPs": [{"ip": "10.0.0.2"}]
            }})
        );
        // Only the order changed.
        let old = json!({"status": {"podIPs": [{"ip": "a"}, {"ip": "b"}]}});
        let new = json!({"status": {"podIPs": [{"ip": "b"}, {"ip": "a"}]}});
        assert_eq!(
            patch(old, new),
            json!({"status": {"$setElementOrder/podIPs": [{"ip": "b"}, {"ip": "a"}]}})
        );
    }
}
