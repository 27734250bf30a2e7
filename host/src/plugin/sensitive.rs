//! Sensitive arguments: the parts of a tool's arguments its parameter
//! schema marks `"writeOnly": true` reach the guest as given, and are
//! replaced by [`REDACTED`] everywhere the host keeps or shows them
//! (history, error messages, logs).
//!
//! The walk follows `properties`, `additionalProperties`,
//! `patternProperties`, `items`, `prefixItems`, local `$ref`s and every
//! branch of `allOf`, `anyOf`, `oneOf` and `if`/`then`/`else` (a `$ref`
//! to a URI other than this schema's own `#…` is not followed). Where it
//! cannot tell which subschema a part answers to (a `patternProperties`
//! pattern, one branch of several) it redacts if any of them says
//! write-only: a value is hidden once too often rather than kept once.

use serde_json::Value;

/// What a sensitive value is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Whether `schema` marks any part of a value write-only.
pub fn marks_sensitive(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            map.get("writeOnly") == Some(&Value::Bool(true)) || map.values().any(marks_sensitive)
        }
        Value::Array(items) => items.iter().any(marks_sensitive),
        _ => false,
    }
}

/// Replaces every part of `value` that `schema` marks write-only by
/// [`REDACTED`], returning the JSON pointers of the parts replaced with
/// what they held.
pub fn redact(schema: &Value, value: &mut Value) -> Vec<(String, Value)> {
    let mut walk = Walk {
        root: schema,
        found: Vec::new(),
    };
    walk.visit(schema, value, &mut String::new(), &mut Vec::new());
    walk.found
}

/// A message about `value` with every sensitive part that `redacted`
/// lists (from [`redact`]) taken out: each part's JSON text is replaced by
/// `"[redacted]"`; if a part still shows, the whole message is replaced.
pub fn scrub(message: &str, pointer: &str, redacted: &[(String, Value)]) -> String {
    let mut message = message.to_owned();
    let hidden = Value::String(REDACTED.to_owned()).to_string();
    for (_, secret) in redacted {
        message = message.replace(&secret.to_string(), &hidden);
    }
    let still_shows = redacted.iter().any(|(_, secret)| match secret {
        Value::String(text) => !text.is_empty() && message.contains(text.as_str()),
        _ => false,
    });
    if still_shows {
        format!("the value at `{pointer}` breaks the schema; it is sensitive and not shown")
    } else {
        message
    }
}

struct Walk<'a> {
    root: &'a Value,
    found: Vec<(String, Value)>,
}

impl<'a> Walk<'a> {
    /// Visits `value` under `schema`; `followed` lists the `$ref`s already
    /// followed at this place in the value, each followed once so that a
    /// recursive schema ends.
    fn visit(
        &mut self,
        schema: &'a Value,
        value: &mut Value,
        pointer: &mut String,
        followed: &mut Vec<&'a str>,
    ) {
        let Value::Object(schema) = schema else {
            return;
        };
        if schema.get("writeOnly") == Some(&Value::Bool(true)) {
            let secret = std::mem::replace(value, Value::String(REDACTED.to_owned()));
            self.found.push((pointer.clone(), secret));
            return;
        }
        if let Some(Value::String(reference)) = schema.get("$ref")
            && !followed.contains(&reference.as_str())
            && let Some(target) = reference
                .strip_prefix('#')
                .and_then(|path| self.root.pointer(path))
        {
            followed.push(reference);
            self.visit(target, value, pointer, followed);
        }
        for keyword in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = schema.get(keyword) {
                for branch in branches {
                    self.visit(branch, value, pointer, followed);
                }
            }
        }
        for keyword in ["if", "then", "else"] {
            if let Some(branch) = schema.get(keyword) {
                self.visit(branch, value, pointer, followed);
            }
        }
        match value {
            Value::Object(members) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                for (name, member) in members.iter_mut() {
                    let mut subschemas: Vec<&'a Value> = Vec::new();
                    match properties.and_then(|properties| properties.get(name)) {
                        Some(listed) => subschemas.push(listed),
                        None => {
                            if let Some(Value::Object(patterns)) = schema.get("patternProperties") {
                                subschemas.extend(patterns.values());
                            }
                            subschemas.extend(schema.get("additionalProperties"));
                        }
                    }
                    for subschema in subschemas {
                        self.descend(subschema, member, pointer, name);
                    }
                }
            }
            Value::Array(elements) => {
                let prefix = schema.get("prefixItems").and_then(Value::as_array);
                for (index, element) in elements.iter_mut().enumerate() {
                    let subschema = match prefix.and_then(|prefix| prefix.get(index)) {
                        Some(listed) => Some(listed),
                        None => schema.get("items"),
                    };
                    if let Some(subschema) = subschema {
                        self.descend(subschema, element, pointer, &index.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    fn descend(&mut self, schema: &'a Value, value: &mut Value, pointer: &mut String, token: &str) {
        let len = pointer.len();
        pointer.push('/');
        pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
        self.visit(schema, value, pointer, &mut Vec::new());
        pointer.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn redacts_properties_refs_items_and_branches() {
        let schema = json!({
            "type": "object",
            "properties": {
                "user": { "type": "string" },
                "password": { "type": "string", "writeOnly": true },
                "card": { "$ref": "#/$defs/Card" },
                "pins": { "type": "array", "items": { "type": "integer", "writeOnly": true } },
                "either": { "anyOf": [ { "type": "null" }, { "type": "string", "writeOnly": true } ] },
                "a/b": { "writeOnly": true }
            },
            "patternProperties": { "^x-": { "writeOnly": true } },
            "$defs": { "Card": { "properties": { "number": { "writeOnly": true }, "brand": {} } } }
        });
        assert!(marks_sensitive(&schema));
        let mut value = json!({
            "user": "ada",
            "password": "lovelace",
            "card": { "number": "4111", "brand": "visa" },
            "pins": [1, 2],
            "either": "secret",
            "x-token": "t0k",
            "a/b": "slash"
        });
        let found = redact(&schema, &mut value);
        assert_eq!(
            value,
            json!({
                "user": "ada",
                "password": REDACTED,
                "card": { "number": REDACTED, "brand": "visa" },
                "pins": [REDACTED, REDACTED],
                "either": REDACTED,
                "x-token": REDACTED,
                "a/b": REDACTED
            })
        );
        let pointers: Vec<&str> = found.iter().map(|(pointer, _)| pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/a~1b",
                "/card/number",
                "/either",
                "/password",
                "/pins/0",
                "/pins/1",
                "/x-token"
            ]
        );
        assert_eq!(found[3].1, json!("lovelace"));
    }

    #[test]
    fn a_member_no_pattern_names_is_redacted_if_any_pattern_says_write_only() {
        let schema = json!({
            "properties": { "user": {} },
            "patternProperties": { "^x-": { "writeOnly": true }, "^y-": {} }
        });
        let mut value = json!({ "user": "ada", "other": "hidden too" });
        redact(&schema, &mut value);
        assert_eq!(value, json!({ "user": "ada", "other": REDACTED }));
    }

    #[test]
    fn a_recursive_schema_ends() {
        let schema = json!({ "$ref": "#", "properties": { "next": { "$ref": "#" } } });
        let mut value = json!({ "next": { "next": { "next": 1 } } });
        assert!(redact(&schema, &mut value).is_empty());
        assert!(!marks_sensitive(&schema));
    }

    #[test]
    fn scrub_takes_secrets_out_of_messages() {
        let found = vec![("/password".to_owned(), json!("lovelace"))];
        assert_eq!(
            scrub(
                r#""lovelace" is shorter than 10 characters"#,
                "/password",
                &found
            ),
            r#""[redacted]" is shorter than 10 characters"#
        );
        assert_eq!(
            scrub("lovelace is wrong", "/password", &found),
            "the value at `/password` breaks the schema; it is sensitive and not shown"
        );
        assert_eq!(
            scrub("/user: 3 is not a string", "/user", &found),
            "/user: 3 is not a string"
        );
    }
}
