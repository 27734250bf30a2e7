//! A plugin whose tool declarations break a rule is refused at load, naming the tool.

use agentbox_host::LoadError;

use crate::harness::host;
use crate::plugin_bytes;
use crate::plugins::DUPLICATE_TOOLS;

#[test]
fn duplicate_tools_plugin_is_refused_at_load_naming_the_tool() {
    let host = host();
    let err = host
        .load_plugin(&plugin_bytes(DUPLICATE_TOOLS))
        .unwrap_err();
    assert!(matches!(err, LoadError::Manifest(_)), "{err}");
    assert_eq!(
        err.to_string(),
        r#"invalid manifest: tool `ping` is declared more than once"#
    );
    assert!(
        host.plugins().is_empty(),
        "a refused version is never active"
    );
}
