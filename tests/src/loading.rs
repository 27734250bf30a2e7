//! Files that are not agentbox plugins are refused with a reason.

use agentbox_host::engine::CompilerProcess;
use agentbox_host::{Clock, Limits, LoadError};

use crate::harness::{host, host_builder};
use crate::plugin_bytes;
use crate::plugins::{COUNTER, INTAKE};

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

#[test]
fn a_component_for_another_world_is_refused_before_it_is_compiled() {
    // A component holding one core module whose function returns nothing
    // where it declares an i32: it does not compile, and it exports nothing.
    let module: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // core module, version 1
        0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: func () -> i32
        0x03, 0x02, 0x01, 0x00, // one function of that type
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // its body: just `end`
    ];
    let mut component = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    component.extend([0x01, module.len() as u8]);
    component.extend_from_slice(module);
    let err = host().load_plugin(&component).unwrap_err();
    assert!(
        matches!(err, LoadError::WrongWorld(_)),
        "refused for its world, not for failing to compile: {err}"
    );
    assert!(
        err.to_string()
            .ends_with("it does not export `agentbox:plugin/agent@0.2.0` (its exports: none)"),
        "{err}"
    );
}

#[test]
fn only_an_accepted_version_is_kept_in_the_artifact_cache() {
    let cache = tempfile::tempdir().unwrap();
    let host = agentbox_host::Host::builder()
        .artifact_cache(
            cap_std::fs::Dir::open_ambient_dir(cache.path(), cap_std::ambient_authority()).unwrap(),
        )
        .build()
        .unwrap();
    let artifacts = || std::fs::read_dir(cache.path()).unwrap().count();
    let err = host
        .load_plugin(&crate::plugin_bytes(crate::plugins::BROKEN_SCHEMA))
        .unwrap_err();
    assert!(matches!(err, LoadError::Manifest(_)), "{err}");
    assert_eq!(artifacts(), 0, "a refused version leaves no artifact");
    host.load_plugin(&crate::plugin_bytes(crate::plugins::COUNTER))
        .unwrap();
    assert_eq!(artifacts(), 1);
}

/// A component that needs more memory at start than a limit allows is
/// refused when it loads, saying what it needs and what the limit is: the
/// host's before anything is compiled, a plugin's own once its manifest
/// names it. No turn is left to fail on it.
#[test]
fn a_component_that_needs_more_memory_at_start_than_its_limit_is_refused_at_load() {
    let intake = plugin_bytes(INTAKE);
    let needs = host().load_plugin(&intake).unwrap().initial_memory;
    assert!(
        needs > 1 << 20,
        "a Rust guest starts with its 1 MiB stack: {needs}"
    );
    let tight = Limits {
        memory_bytes: 1 << 20,
        ..Limits::default()
    };

    // The host's own limit, checked before compiling: this host's compiler
    // cannot run, so getting that far would fail otherwise.
    let host_limited = host_builder(Clock::system())
        .limits(tight.clone())
        .compiler(CompilerProcess {
            program: "/nonexistent/compiler".into(),
            args: Vec::new(),
            budget: std::time::Duration::from_secs(1),
            memory_budget: 1 << 30,
            functions: None,
        })
        .build()
        .unwrap();
    let err = host_limited.load_plugin(&intake).unwrap_err();
    assert!(
        matches!(err, LoadError::Memory { plugin: None, needs: n, limit } if n == needs && limit == 1 << 20),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("the component needs at least ")
            && message.ends_with(
                " MiB of memory at start; the most any plugin of this host may have is 1 MiB (--memory-mib, or memory_mib in the policy)"
            ),
        "{message}"
    );

    // A plugin's own limit, checked once its manifest names it; the
    // host's other plugins load as before.
    let plugin_limited = host_builder(Clock::system())
        .plugin_limits("intake", tight)
        .build()
        .unwrap();
    let err = plugin_limited.load_plugin(&intake).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("plugin `intake` needs at least ")
            && message.ends_with(" MiB of memory at start; the limit for `intake` is 1 MiB"),
        "{message}"
    );
    assert!(plugin_limited.plugins().is_empty());
    plugin_limited
        .load_plugin(&plugin_bytes(COUNTER))
        .expect("another plugin is held to the host's limit");
}
