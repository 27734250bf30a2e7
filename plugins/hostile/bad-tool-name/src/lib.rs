//! A plugin that declares a tool named `Ping-Pong`: the host must refuse it at load, naming the tool.

#[path = "../../bad_tools.rs"]
#[macro_use]
mod bad_tools;

use bad_tools::tool;

plugin_declaring!(
    "bad-tool-name",
    vec![tool("Ping-Pong", r#"{"type": "object"}"#)]
);
