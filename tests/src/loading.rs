//! Files that are not agentbox plugins are refused with a reason.

use agentbox_host::LoadError;

use crate::harness::host;

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let err = host().load_plugin(b"#!/bin/sh\necho hello\n").unwrap_err();
    assert!(matches!(err, LoadError::NotWasm), "{err}");
    assert_eq!(
        err.to_string(),
        "not a WebAssembly file: it does not start with the `\\0asm` magic number"
    );
}

#[test]
fn a_core_module_is_refused_with_how_to_make_a_component() {
    // The smallest valid core module: the magic number and version 1.
    let err = host().load_plugin(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(err, LoadError::CoreModule), "{err}");
    assert!(err.to_string().starts_with("this is a core WebAssembly module, not a component: build the plugin for the `wasm32-wasip2` target"), "{err}");
}

#[test]
fn a_truncated_component_is_refused_as_invalid() {
    let err = host()
        .load_plugin(b"\0asm\x0d\0\x01\0\x01\x05")
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("invalid WebAssembly component: "),
        "{err}"
    );
}
