//! A plugin whose manifest has an invalid name is refused at load.

use agentbox_host::LoadError;

use crate::harness::host;
use crate::plugin_bytes;
use crate::plugins::BAD_NAME;

#[test]
fn plugin_with_an_invalid_name_is_refused_saying_why() {
    let host = host();
    let err = host.load_plugin(&plugin_bytes(BAD_NAME)).unwrap_err();
    assert!(matches!(err, LoadError::Manifest(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "invalid manifest: plugin name `Bad Name!` is not a valid name: use 1 to 64 characters of a-z, 0-9 and `-`, \
         starting with a letter and not ending with `-`"
    );
    assert!(
        host.plugins().is_empty(),
        "a refused version is never active"
    );
}
