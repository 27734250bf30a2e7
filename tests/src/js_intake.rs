//! The intake plugin in JavaScript, built with componentize-js and the
//! helper library in `guest-sdk/js`. Its conversation is checked against
//! the Rust intake's in `languages`; here, what the helper library derives
//! from the agent class and its schema builders.

use crate::harness::{host, load};
use crate::languages::derived_intake_manifest;
use crate::plugins::JS_INTAKE;

#[test]
fn tool_and_state_schemas_come_from_the_schema_builder() {
    let version = load(&host(), JS_INTAKE);
    derived_intake_manifest(&version);
    assert!(
        version.extra_exports.is_empty(),
        "{:?}",
        version.extra_exports
    );
}
