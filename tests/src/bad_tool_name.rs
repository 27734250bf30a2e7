//! A plugin whose tool declarations break a rule is refused at load, naming the tool.

use agentbox_host::LoadError;

use crate::harness::host;
use crate::plugin_bytes;
use crate::plugins::BAD_TOOL_NAME;

#[test]
fn bad_tool_name_plugin_is_refused_at_load_naming_the_tool() {
    let host = host();
    let err = host.load_plugin(&plugin_bytes(BAD_TOOL_NAME)).unwrap_err();
    assert!(matches!(err, LoadError::Manifest(_)), "{err}");
    assert_eq!(
        err.to_string(),
        r#"invalid manifest: tool name `Ping-Pong` is not a valid name: use 1 to 64 characters of a-z, 0-9 and `_`, starting with a letter and not ending with `_`"#
    );
    assert!(
        host.plugins().is_empty(),
        "a refused version is never active"
    );
}
