//! A plugin whose tool `lookup` declares a parameter schema that does not compile: the host must refuse it at load, naming the tool.

#[path = "../../bad_tools.rs"]
#[macro_use]
mod bad_tools;

use bad_tools::tool;

plugin_declaring!(
    "broken-schema",
    vec![
        tool("ping", r#"{"type": "object"}"#),
        tool(
            "lookup",
            r#"{"type": "object", "properties": {"id": {"type": "identifier"}}}"#
        ),
    ]
);
