//! A plugin that traps in `describe()` is refused at load and replaces nothing.

use agentbox_host::LoadError;

use crate::harness::host;
use crate::plugin_bytes;
use crate::plugins::{COUNTER, DESCRIBE_TRAP};

#[test]
fn a_plugin_that_traps_in_describe_is_refused_and_the_active_version_stays() {
    let host = host();
    let counter = host.load_plugin(&plugin_bytes(COUNTER)).unwrap();
    let err = host.load_plugin(&plugin_bytes(DESCRIBE_TRAP)).unwrap_err();
    assert!(matches!(err, LoadError::Describe(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("`describe()` failed: plugin trapped: ")
            && message.contains("no schema today"),
        "{message}"
    );
    let active = host.plugin("counter").unwrap();
    assert_eq!(active.digest, counter.digest);
    assert_eq!(host.plugin_versions("counter").len(), 1);
}
