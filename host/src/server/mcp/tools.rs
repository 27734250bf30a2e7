//! The tools an MCP client sees, and a call's answer as MCP carries it.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{Value, json};

use crate::host::Host;
use crate::names::{
    REMOTE_PREFIX, is_strict_mcp_name, mcp_conversation_name, mcp_remote_name, mcp_tool_name,
};
use crate::server::auth::Caller;
use crate::session::error::Cause;

/// Every tool of `host`'s active plugins `caller` may use, each such
/// plugin's conversation, and the tools of the MCP servers the host
/// re-exports that `caller` may use, as MCP describes them.
pub(crate) fn tools_for(host: &Host, caller: &Caller) -> Vec<Tool> {
    let mut tools = Vec::new();
    for plugin in host.plugins() {
        let name = plugin.name();
        if !caller.may_use(name) {
            continue;
        }
        tools.extend(plugin.tools.iter().filter_map(|tool| {
            described(
                mcp_tool_name(name, &tool.name),
                &tool.description,
                &tool.parameters,
                tool.result_schema.as_ref(),
            )
        }));
        let Value::Object(text) = json!({
            "type": "object",
            "properties": { "text": { "type": "string", "description": "What the caller says" } },
            "required": ["text"],
            "additionalProperties": false,
        }) else {
            unreachable!("an object literal is an object")
        };
        tools.push(Tool::new(
            mcp_conversation_name(name),
            format!(
                "Say something to the `{name}` agent ({}) and get its answer; it remembers the conversation",
                plugin.manifest.description
            ),
            Arc::new(text),
        ));
    }
    for (server, offered) in host.mcp().reexported_tools() {
        if !caller.may_use(&format!("{REMOTE_PREFIX}{server}")) {
            continue;
        }
        tools.extend(offered.iter().filter_map(|tool| {
            let name = mcp_remote_name(&server, &tool.name);
            // A name some clients refuse would cost the whole server.
            is_strict_mcp_name(&name).then_some(())?;
            described(
                name,
                &tool.description,
                &tool.parameters,
                tool.result_schema.as_ref(),
            )
        }));
    }
    tools
}

/// A tool as MCP describes it, if its parameters' schema is an object.
fn described(
    name: String,
    description: &str,
    parameters: &Value,
    result: Option<&Value>,
) -> Option<Tool> {
    let Value::Object(parameters) = parameters.clone() else {
        return None;
    };
    let mut tool = Tool::new(name, description.to_owned(), Arc::new(parameters));
    if let Some(Value::Object(result)) = result.cloned() {
        tool.output_schema = Some(Arc::new(result));
    }
    Some(tool)
}

/// A tool's result: as structured content when it is an object, as JSON
/// text always.
pub(super) fn answer(result: Value) -> CallToolResult {
    match result {
        Value::Object(_) => CallToolResult::structured(result),
        other => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
    }
}

/// A call refused before it ran, as a tool error the model can read.
pub(super) fn refusal(kind: &str, message: String) -> CallToolResult {
    CallToolResult::structured_error(json!({ "kind": kind, "message": message }))
}

/// A turn that failed, as a tool error: its kind, its message, and each
/// violation of invalid arguments with its JSON pointer.
pub(super) fn failure(cause: &Cause, message: String) -> CallToolResult {
    let mut error = json!({ "kind": cause.kind(), "message": message });
    if let Cause::InvalidArguments { violations, .. } = cause {
        error["violations"] = json!(violations);
    }
    CallToolResult::structured_error(error)
}
