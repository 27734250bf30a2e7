//! What the plugins with bad tool declarations share: an agent without
//! behaviour whose `Tools` are declared by hand, as `#[tools]` never would.
//! Each of them includes this file and states its declarations.

/// A tool declaration with this name and parameter schema.
pub fn tool(name: &str, parameters: &str) -> agentbox_sdk::ToolSpec {
    agentbox_sdk::ToolSpec {
        name: name.to_owned(),
        description: String::new(),
        parameters: parameters.to_owned(),
        result_schema: None,
        requires: Vec::new(),
        cache_ttl_ms: None,
        cache_scope: agentbox_sdk::CacheScope::Session,
    }
}

/// Exports a plugin called `$name` that declares the tools `$specs`.
macro_rules! plugin_declaring {
    ($name:literal, $specs:expr) => {
        #[derive(Default, serde::Serialize, serde::Deserialize)]
        struct Plugin {}

        impl agentbox_sdk::Agent for Plugin {
            const NAME: &'static str = $name;
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }

        impl agentbox_sdk::Tools for Plugin {
            fn tool_specs() -> Vec<agentbox_sdk::ToolSpec> {
                $specs
            }

            fn call_tool(
                &mut self,
                _name: &str,
                _arguments: agentbox_sdk::Value,
            ) -> Option<Result<agentbox_sdk::Value, String>> {
                None
            }
        }

        agentbox_sdk::export_agent!(Plugin);
    };
}
