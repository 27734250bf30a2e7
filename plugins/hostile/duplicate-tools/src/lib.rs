//! A plugin that declares the tool `ping` twice: the host must refuse it at load, naming the tool.

#[path = "../../bad_tools.rs"]
#[macro_use]
mod bad_tools;

use bad_tools::tool;

plugin_declaring!(
    "duplicate-tools",
    vec![
        tool("ping", r#"{"type": "object"}"#),
        tool("ping", r#"{"type": "object"}"#)
    ]
);
