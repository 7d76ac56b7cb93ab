//! Event payload schemas (feature `schema`): each event type's JSON Schema, derived with
//! `schemars`, recorded in a committed file with its schema version, and a check that the
//! code's schemas are compatible with the recorded ones, in both directions that matter:
//! new code must read old events, and consumers built on the old schemas must read new
//! events. Adding an optional field passes; removing or renaming a field, changing its
//! type, or adding or making one required fails, unless the event's schema version was
//! bumped and an upcaster from the recorded version is registered.

use std::fmt;

use serde_json::{Map, Value};

/// A change between an event type's recorded schema and the code's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaChange {
    /// The persisted event type.
    pub event_type: String,
    /// The field (`a.b`, `items[]`), empty for the event as a whole.
    pub field: String,
    /// What changed.
    pub change: String,
}

impl fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.event_type, self.change)
        } else {
            write!(
                f,
                "{}: field `{}` {}",
                self.event_type, self.field, self.change
            )
        }
    }
}

/// The payload schema of each variant of a derived enum schema, by serde name, with
/// `$ref`s inlined (a unit variant's payload is `null`).
#[cfg(feature = "schema")]
pub(crate) fn variants(root: &Value) -> std::collections::BTreeMap<String, Value> {
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for variant in root
        .get("oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(names) = variant.get("enum").and_then(Value::as_array) {
            for name in names.iter().filter_map(Value::as_str) {
                out.insert(name.to_owned(), serde_json::json!({ "type": "null" }));
            }
            continue;
        }
        if let Some(name) = variant.get("const").and_then(Value::as_str) {
            out.insert(name.to_owned(), serde_json::json!({ "type": "null" }));
            continue;
        }
        if let Some(props) = variant.get("properties").and_then(Value::as_object) {
            for (name, payload) in props {
                out.insert(name.clone(), inline(payload, &defs, 0));
            }
        }
    }
    out
}

#[cfg(feature = "schema")]
fn inline(value: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    match value {
        Value::Object(object) => {
            if let Some(target) = object.get("$ref").and_then(Value::as_str) {
                let name = target.rsplit('/').next().unwrap_or_default();
                return match defs.get(name) {
                    // Recursive types: stop expanding, keep the reference.
                    Some(def) if depth < 16 => inline(def, defs, depth + 1),
                    _ => value.clone(),
                };
            }
            Value::Object(
                object
                    .iter()
                    .map(|(k, v)| (k.clone(), inline(v, defs, depth)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| inline(v, defs, depth)).collect()),
        other => other.clone(),
    }
}

/// The JSON types a schema admits (`null` included when it is nullable).
fn types(schema: &Value) -> Vec<String> {
    let mut out: Vec<String> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    // `anyOf: [X, {type: null}]`, as schemars writes an optional struct.
    for alternative in schema
        .get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(types(alternative));
    }
    out.sort();
    out.dedup();
    out
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The object schema among `schema`'s alternatives, if any.
fn object(schema: &Value) -> Option<&Value> {
    if schema.get("properties").is_some() {
        return Some(schema);
    }
    schema
        .get("anyOf")
        .and_then(Value::as_array)?
        .iter()
        .find(|s| s.get("properties").is_some())
}

/// Appends to `out` the incompatible changes from `old` to `new` at `path`.
pub(crate) fn compare(
    event_type: &str,
    path: &str,
    old: &Value,
    new: &Value,
    out: &mut Vec<SchemaChange>,
) {
    let change = |field: &str, change: String| SchemaChange {
        event_type: event_type.to_owned(),
        field: field.to_owned(),
        change,
    };
    let (old_types, new_types) = (types(old), types(new));
    let widened_to_null = old_types.iter().all(|t| new_types.contains(t))
        && new_types
            .iter()
            .all(|t| old_types.contains(t) || t == "null");
    if !old_types.is_empty() && !new_types.is_empty() && !widened_to_null {
        out.push(change(
            path,
            format!(
                "changed type from {} to {}",
                old_types.join("|"),
                new_types.join("|")
            ),
        ));
        return;
    }
    if let (Some(old), Some(new)) = (object(old), object(new)) {
        let empty = Map::new();
        let old_props = old
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let new_props = new
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let (old_required, new_required) = (required(old), required(new));
        let at = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        for (name, old_field) in old_props {
            match new_props.get(name) {
                None => out.push(change(&at(name), "was removed (or renamed)".to_owned())),
                Some(new_field) => {
                    if new_required.contains(&name.as_str())
                        && !old_required.contains(&name.as_str())
                    {
                        out.push(change(&at(name), "became required".to_owned()));
                    }
                    compare(event_type, &at(name), old_field, new_field, out);
                }
            }
        }
        for name in new_props.keys().filter(|n| !old_props.contains_key(*n)) {
            if new_required.contains(&name.as_str()) {
                out.push(change(
                    &at(name),
                    "was added as required (old events lack it)".to_owned(),
                ));
            }
        }
    }
    if let (Some(old_items), Some(new_items)) = (old.get("items"), new.get("items")) {
        compare(event_type, &format!("{path}[]"), old_items, new_items, out);
    }
}

#[cfg(all(test, feature = "schema"))]
mod tests;
