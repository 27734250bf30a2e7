//! A plugin whose tool `lookup` declares a parameter schema that does not compile: the host must refuse it at load, naming the tool.

use agentbox_sdk::{Agent, ToolSpec, Tools, Value};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Plugin {}

impl Agent for Plugin {
    const NAME: &'static str = "broken-schema";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
}

/// Declared by hand, as the `#[tools]` macro would never declare them.
impl Tools for Plugin {
    fn tool_specs() -> Vec<ToolSpec> {
        vec![
            tool("ping", r#"{"type": "object"}"#),
            tool(
                "lookup",
                r#"{"type": "object", "properties": {"id": {"type": "identifier"}}}"#,
            ),
        ]
    }

    fn call_tool(&mut self, _name: &str, _arguments: Value) -> Option<Result<Value, String>> {
        None
    }
}

fn tool(name: &str, parameters: &str) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: String::new(),
        parameters: parameters.to_owned(),
        result_schema: None,
        requires: Vec::new(),
        cache_ttl_ms: None,
    }
}

agentbox_sdk::export_agent!(Plugin);
