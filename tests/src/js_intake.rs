//! The intake plugin in JavaScript, built with componentize-js and the
//! helper library in `guest-sdk/js`. Its conversation is checked against
//! the Rust intake's in `languages`; here, what the helper library derives
//! from the agent class.

use serde_json::{Value, json};

use crate::harness::{host, load};
use crate::plugins::JS_INTAKE;

#[test]
fn tool_and_state_schemas_come_from_the_schema_builder() {
    let version = load(&host(), JS_INTAKE);
    let manifest = &version.manifest;
    assert_eq!(
        (
            manifest.name.as_str(),
            manifest.version.as_str(),
            manifest.state_version
        ),
        ("intake", "0.1.0", 1)
    );
    let record = &manifest.tools[0];
    assert_eq!(record.name, "record_information");
    assert_eq!(
        record.description,
        "Records one field of the request, replacing what was there."
    );
    // Every builder is required unless `.optional()`.
    assert_eq!(
        serde_json::from_str::<Value>(&record.parameters).unwrap(),
        json!({
            "type": "object",
            "properties": {
                "field": { "enum": ["name", "email", "reason"], "description": "Which field to record." },
                "value": { "type": "string", "description": "Its value." },
            },
            "required": ["field", "value"],
            "additionalProperties": false,
        })
    );
    assert_eq!(manifest.tools[1].name, "submit_form");
    // An optional state field may be `null`.
    let state: Value = serde_json::from_str(manifest.state_schema.as_deref().unwrap()).unwrap();
    assert_eq!(
        state["properties"]["name"],
        json!({ "type": ["string", "null"], "minLength": 1, "maxLength": 200 })
    );
    assert_eq!(
        state["properties"]["turns"],
        json!({ "type": "integer", "minimum": 0 })
    );
    assert!(
        version.extra_exports.is_empty(),
        "{:?}",
        version.extra_exports
    );
}
