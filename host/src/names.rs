//! Every rule for a name, id or key the host accepts, one function and one
//! message per rule. Each error completes a phrase that names what was
//! checked ("plugin name ...", "key ..."), so callers add only that.

use serde_json::Value;

use crate::limits::Limits;

/// Longest session-state key, in bytes.
pub const MAX_STATE_KEY_BYTES: usize = 128;

/// Longest KV key, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 256;

/// Longest session id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Longest user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;

/// Longest plugin, tool or bucket name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Checks a plugin, bucket (`separator` `-`) or tool (`_`) name: 1 to 64
/// characters of `a-z`, `0-9` and `separator`, starting with a letter and
/// not ending with the separator.
fn check_name(name: &str, separator: char) -> Result<(), String> {
    let valid = (1..=MAX_NAME_BYTES).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with(separator)
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == separator);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid name: use 1 to {MAX_NAME_BYTES} characters of a-z, 0-9 and `{separator}`, starting with a letter and not ending with `{separator}`",
            name.escape_debug()
        ))
    }
}

/// Checks a plugin name.
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    check_name(name, '-')
}

/// Checks a tool name.
pub fn check_tool_name(name: &str) -> Result<(), String> {
    check_name(name, '_')
}

/// The longest tool name MCP clients accept: many enforce
/// `^[a-zA-Z0-9_-]{1,64}$` and refuse a whole server for one name past it.
pub const MAX_MCP_NAME_BYTES: usize = 64;

/// The name MCP clients see for `plugin`'s tool `tool`: `plugin_tool`. A
/// plugin name has no `_`, so the name splits back at its first `_`.
pub fn mcp_tool_name(plugin: &str, tool: &str) -> String {
    format!("{plugin}_{tool}")
}

/// The name MCP clients see for a conversation with `plugin`:
/// `plugin__chat`, which no tool's name can take (a tool name starts with
/// a letter).
pub fn mcp_conversation_name(plugin: &str) -> String {
    format!("{plugin}__chat")
}

/// The name MCP clients see for re-exported MCP server `server`'s tool
/// `tool`: `server__mcp_tool`, which no plugin's tool or conversation can
/// take (a tool name starts with a letter).
pub fn mcp_remote_name(server: &str, tool: &str) -> String {
    format!("{server}__mcp_{tool}")
}

/// Whether every MCP client accepts `name` as a tool name: at most
/// [`MAX_MCP_NAME_BYTES`] of `A-Z a-z 0-9 _ -`.
pub fn is_strict_mcp_name(name: &str) -> bool {
    (1..=MAX_MCP_NAME_BYTES).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What an MCP tool name of this host names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpName<'a> {
    /// A plugin's tool: `plugin_tool`.
    Tool {
        /// The plugin.
        plugin: &'a str,
        /// Its tool.
        tool: &'a str,
    },
    /// A plugin's conversation: `plugin__chat`.
    Conversation {
        /// The plugin.
        plugin: &'a str,
    },
    /// A re-exported MCP server's tool: `server__mcp_tool`.
    Remote {
        /// The server, as the policy names it.
        server: &'a str,
        /// Its tool.
        tool: &'a str,
    },
}

/// What an MCP tool name names, if it is one this host gives.
pub fn parse_mcp_name(name: &str) -> Option<McpName<'_>> {
    let (source, rest) = name.split_once('_')?;
    if rest == "_chat" {
        return Some(McpName::Conversation { plugin: source });
    }
    if let Some(tool) = rest.strip_prefix("_mcp_") {
        return (!tool.is_empty()).then_some(McpName::Remote {
            server: source,
            tool,
        });
    }
    (!rest.starts_with('_')).then_some(McpName::Tool {
        plugin: source,
        tool: rest,
    })
}

/// Checks that `plugin`'s conversation and its tool `tool` (if any) have
/// MCP names within [`MAX_MCP_NAME_BYTES`].
pub fn check_mcp_name(plugin: &str, tool: Option<&str>) -> Result<(), String> {
    let name = match tool {
        Some(tool) => mcp_tool_name(plugin, tool),
        None => mcp_conversation_name(plugin),
    };
    if name.len() > MAX_MCP_NAME_BYTES {
        return Err(format!(
            "its name over MCP, `{name}`, is {} characters, over the {MAX_MCP_NAME_BYTES} MCP clients accept; shorten the {}",
            name.len(),
            if tool.is_some() {
                "plugin's or the tool's name"
            } else {
                "plugin's name"
            }
        ));
    }
    Ok(())
}

/// The longest tool name MCP's specification allows.
pub const MAX_REMOTE_TOOL_BYTES: usize = 128;

/// The prefix of the registry addresses of remote MCP servers' tools.
pub const REMOTE_PREFIX: &str = "mcp:";

/// Checks the name of a remote MCP server's tool as MCP's specification
/// has it: 1 to 128 characters of `A-Z a-z 0-9 _ - .`.
pub fn check_remote_tool_name(name: &str) -> Result<(), String> {
    check_ascii_id("MCP tool name", name, MAX_REMOTE_TOOL_BYTES, "_-.")
}

/// The registry address of MCP server `server`'s tool `tool`:
/// `mcp:server/tool`.
pub fn remote_tool_address(server: &str, tool: &str) -> String {
    format!("{REMOTE_PREFIX}{server}/{tool}")
}

/// Checks a bucket name: the rules of plugin names.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    check_name(name, '-').map_err(|reason| format!("bucket name {reason}"))
}

/// Checks an id of 1 to `max` bytes of ASCII letters, digits and the
/// characters of `punctuation`; the message names it as `what`.
fn check_ascii_id(what: &str, id: &str, max: usize, punctuation: &str) -> Result<(), String> {
    let valid = (1..=max).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || punctuation.contains(c));
    if valid {
        return Ok(());
    }
    let listed: Vec<String> = punctuation.chars().map(String::from).collect();
    Err(format!(
        "{what} `{}` is invalid: use 1 to {max} characters of A-Z, a-z, 0-9 and {}",
        id.escape_debug(),
        listed.join(" ")
    ))
}

/// Checks a session id the caller chose: 1 to 128 bytes of ASCII letters,
/// digits and `_ . : -`.
pub fn check_session_id(id: &str) -> Result<(), String> {
    check_ascii_id("session id", id, MAX_ID_BYTES, "_.:-")
}

/// Checks a user id: 1 to 256 bytes of ASCII letters, digits and
/// `_ . : - + @`, so that an E.164 phone number (`+15551234567`) or an
/// e-mail address (`ada@example.com`) is a user id as it is.
pub fn check_user_id(id: &str) -> Result<(), String> {
    check_ascii_id("user id", id, MAX_USER_ID_BYTES, "_.:-+@").map_err(|reason| {
        format!("{reason} (a phone number in E.164 form or an e-mail address is one)")
    })
}

/// Checks a session-state key: 1 to [`MAX_STATE_KEY_BYTES`] bytes of ASCII
/// letters, digits and `_ . : / -`.
pub fn check_state_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".into());
    }
    if key.len() > MAX_STATE_KEY_BYTES {
        return Err(format!(
            "key of {} bytes is longer than {MAX_STATE_KEY_BYTES}",
            key.len()
        ));
    }
    match key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:/-".contains(*c)))
    {
        Some(bad) => Err(format!(
            "key `{}` contains {bad:?}; keys use A-Z, a-z, 0-9 and _ . : / -",
            key.escape_debug()
        )),
        None => Ok(()),
    }
}

/// Checks a KV key: 1 to [`MAX_KV_KEY_BYTES`] bytes of printable ASCII
/// without spaces. The error completes "key ...".
pub fn check_kv_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("is empty".into());
    }
    check_kv_prefix(key)
}

/// Checks a KV key prefix: the rules of [`check_kv_key`] but for emptiness,
/// which a prefix may be. The error completes "prefix ...".
pub fn check_kv_prefix(text: &str) -> Result<(), String> {
    if text.len() > MAX_KV_KEY_BYTES {
        return Err(format!(
            "of {} bytes is longer than {MAX_KV_KEY_BYTES}",
            text.len()
        ));
    }
    match text.chars().find(|c| !c.is_ascii_graphic()) {
        Some(bad) => Err(format!(
            "`{}` contains {bad:?}; keys are printable ASCII without spaces",
            text.escape_debug()
        )),
        None => Ok(()),
    }
}

/// Checks a JSON value's nesting depth and size, and returns its size: the
/// bytes of its compact form, which is what the limits count.
///
/// The error completes the phrase "value ...": "is 70000 bytes, ...".
pub fn check_value(value: &Value, limits: &Limits) -> Result<usize, String> {
    let depth = depth(value);
    if depth > limits.json_depth {
        return Err(format!(
            "is nested {depth} levels deep, over the limit of {}",
            limits.json_depth
        ));
    }
    let size = value.to_string().len();
    if size > limits.value_bytes {
        return Err(format!(
            "is {size} bytes, over the limit of {} bytes",
            limits.value_bytes
        ));
    }
    Ok(size)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(entries) => 1 + entries.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mcp_name_this_host_gives_reads_back_as_what_it_names() {
        for (name, named) in [
            (
                mcp_tool_name("shop", "add_to_cart"),
                McpName::Tool {
                    plugin: "shop",
                    tool: "add_to_cart",
                },
            ),
            (
                mcp_conversation_name("shop"),
                McpName::Conversation { plugin: "shop" },
            ),
            (
                mcp_remote_name("weather", "get_forecast"),
                McpName::Remote {
                    server: "weather",
                    tool: "get_forecast",
                },
            ),
            (
                mcp_remote_name("weather", "chat"),
                McpName::Remote {
                    server: "weather",
                    tool: "chat",
                },
            ),
        ] {
            assert_eq!(parse_mcp_name(&name), Some(named), "{name}");
        }
        for name in ["shop", "shop__", "shop__mcp_", "shop___x"] {
            assert_eq!(parse_mcp_name(name), None, "{name}");
        }
        assert!(is_strict_mcp_name("weather__mcp_get-forecast"));
        assert!(!is_strict_mcp_name("weather__mcp_get.forecast"));
        assert!(!is_strict_mcp_name(&"x".repeat(65)));
    }
}
