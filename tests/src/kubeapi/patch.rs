//! How the fake API server changes a stored object for a PATCH: JSON merge patch (RFC 7386)
//! and the subset of server-side apply weftd and weftctl rely on.
//!
//! Server-side apply here: the applied configuration is merged into the live object (maps
//! field by field, recursively; a list replaced as a whole, which is what the real server
//! does for a list one manager owns alone); `metadata.managedFields` gets an entry per
//! manager. Not modelled: conflicts between managers (every apply behaves as if forced),
//! removing a field a manager applied before and leaves out now, associative lists merged
//! by key between managers.

use serde_json::{Map, Value, json};

/// RFC 7386: `null` removes a field, an object merges into an object, anything else
/// replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let fields = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Server-side apply's merge: the applied configuration's fields set on the live object.
/// Unlike a merge patch, `null` in an applied configuration means "no opinion".
pub(crate) fn apply_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(fields), Value::Object(applied)) => {
            for (key, value) in applied {
                if value.is_null() {
                    continue;
                }
                match fields.get_mut(key) {
                    Some(current) if current.is_object() && value.is_object() => apply_merge(current, value),
                    _ => {
                        fields.insert(key.clone(), without_nulls(value));
                    }
                }
            }
        }
        (target, applied) => *target = without_nulls(applied),
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Records that `manager` wrote the object with `operation` ("Apply" or "Update"), as one
/// `metadata.managedFields` entry per manager and operation (the field sets themselves are
/// not tracked). `subresource` is "status" for a status write.
pub(crate) fn record_manager(
    object: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let entries = object["metadata"]
        .as_object_mut()
        .map(|m| m.entry("managedFields").or_insert_with(|| json!([])))
        .and_then(Value::as_array_mut);
    let Some(entries) = entries else { return };
    entries.retain(|e| {
        !(e["manager"] == manager && e["operation"] == operation && e["subresource"].as_str() == subresource)
    });
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    });
    if let Some(subresource) = subresource {
        entry["subresource"] = subresource.into();
    }
    entries.push(entry);
}

/// The object without what the server maintains itself, to tell whether a write changed
/// anything (the real server does not bump the resourceVersion of an object a write left
/// as it was).
pub(crate) fn content(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["resourceVersion", "managedFields", "generation"] {
            metadata.remove(field);
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({ "a": "b", "c": { "d": "e", "f": "g" }, "l": [1, 2] });
        merge_patch(&mut target, &json!({ "a": "z", "c": { "f": null }, "l": [3], "n": { "x": 1 } }));
        assert_eq!(target, json!({ "a": "z", "c": { "d": "e" }, "l": [3], "n": { "x": 1 } }));
        let mut scalar = json!("x");
        merge_patch(&mut scalar, &json!({ "a": 1 }));
        assert_eq!(scalar, json!({ "a": 1 }));
    }

    #[test]
    fn apply_merges_maps_replaces_lists_and_ignores_nulls() {
        let mut live = json!({
            "metadata": { "labels": { "a": "1" }, "annotations": { "keep": "x" } },
            "spec": { "ports": [{ "port": 1 }, { "port": 2 }], "other": "kept" },
        });
        apply_merge(
            &mut live,
            &json!({
                "metadata": { "labels": { "b": "2" }, "annotations": null },
                "spec": { "ports": [{ "port": 3, "name": null }] },
            }),
        );
        assert_eq!(
            live,
            json!({
                "metadata": { "labels": { "a": "1", "b": "2" }, "annotations": { "keep": "x" } },
                "spec": { "ports": [{ "port": 3 }], "other": "kept" },
            })
        );
    }

    #[test]
    fn one_managed_fields_entry_per_manager() {
        let mut object = json!({ "metadata": { "name": "x" } });
        record_manager(&mut object, "weftd", "Apply", "v1", None);
        record_manager(&mut object, "weftd", "Apply", "v1", None);
        record_manager(&mut object, "weftd", "Apply", "v1", Some("status"));
        record_manager(&mut object, "kubectl", "Update", "v1", None);
        let managers: Vec<(&str, Option<&str>)> = object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["manager"].as_str().unwrap(), e["subresource"].as_str()))
            .collect();
        assert_eq!(managers, [("weftd", None), ("weftd", Some("status")), ("kubectl", None)]);
        assert!(content(&object)["metadata"].get("managedFields").is_none());
    }
}
