//! The intake plugin in Python, built with componentize-py and the helper
//! library in `guest-sdk/python`. Its conversation is checked against the
//! Rust intake's in `languages`; here, what the helper library derives from
//! the agent class, and the memory an interpreter needs.

use crate::harness::{host, host_builder, load};
use crate::languages::derived_intake_manifest;
use crate::plugin_bytes;
use crate::plugins::{INTAKE, PYTHON_INTAKE};
use agentbox_host::{Clock, Limits};

#[test]
fn tool_and_state_schemas_come_from_type_hints_and_docstrings() {
    let version = load(&host(), PYTHON_INTAKE);
    derived_intake_manifest(&version);
    // componentize-py's own export, listed and never called.
    assert_eq!(version.extra_exports, ["exports"]);
}

#[test]
fn an_interpreter_instance_is_counted_whole_against_the_pool() {
    let python = load(&host(), PYTHON_INTAKE).footprint;
    let rust = load(&host(), INTAKE).footprint;
    // The interpreter is several core modules linked together, each an
    // instance: more than the 4 a slot once held, which suits Rust.
    assert!(python.core_instances > 4, "{python}");
    assert!(rust.core_instances <= 4, "{rust}");
    assert!(python.over_slot().is_empty(), "a slot holds it: {python}");
    assert_eq!((python.memories, rust.memories), (1, 1));
}

#[test]
fn an_interpreters_memory_at_start_is_checked_against_the_plugins_limit() {
    let bytes = plugin_bytes(PYTHON_INTAKE);
    let needs = load(&host(), PYTHON_INTAKE).initial_memory;
    assert!(
        needs > 8 << 20,
        "a CPython snapshot is larger than 8 MiB: {needs}"
    );
    let limited = host_builder(Clock::system())
        .plugin_limits(
            "intake",
            Limits {
                memory_bytes: 8 << 20,
                ..Limits::default()
            },
        )
        .build()
        .unwrap();
    let message = limited.load_plugin(&bytes).unwrap_err().to_string();
    // What it needs, in MiB to a tenth and rounded up.
    let tenths = (needs * 10).div_ceil(1 << 20);
    let needs = match tenths % 10 {
        0 => format!("{}", tenths / 10),
        tenth => format!("{}.{tenth}", tenths / 10),
    };
    assert_eq!(
        message,
        format!(
            "plugin `intake` needs at least {needs} MiB of memory at start; the limit for `intake` is 8 MiB"
        )
    );
}
