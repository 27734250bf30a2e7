//! A plugin that imports an interface the host does not provide is refused
//! at load, with the import named, before any of its code runs.

use agentbox_host::LoadError;

use crate::harness::host;
use crate::plugin_bytes;
use crate::plugins::FOREIGN_IMPORT;

#[test]
fn an_import_the_host_does_not_provide_is_refused_at_load_and_named() {
    let host = host();
    let err = host.load_plugin(&plugin_bytes(FOREIGN_IMPORT)).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "not an agentbox plugin for world agentbox:plugin@0.1.0 or @0.2.0: it imports \
         `wasi:keyvalue/store@0.2.0-draft`, which this host does not provide; a plugin may \
         import agentbox:plugin's session, kv, output, WASI 0.2's cli, clocks, filesystem, io, \
         random, sockets (with nothing granted) and, from world 0.2.0, wasi:http and \
         wasi:config (under its policy)"
    );
    assert!(host.plugins().is_empty());
}
