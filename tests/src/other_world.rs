//! A component of another world is refused at load.

use agentbox_host::LoadError;

use crate::harness::host;
use crate::plugin_bytes;
use crate::plugins::OTHER_WORLD;

#[test]
fn component_of_another_world_is_refused_naming_the_missing_export() {
    let err = host().load_plugin(&plugin_bytes(OTHER_WORLD)).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "not an agentbox plugin for world agentbox:plugin@0.1.0 or @0.2.0: it does not export \
         `agentbox:plugin/agent@0.2.0` (its exports: greet)"
    );
}
