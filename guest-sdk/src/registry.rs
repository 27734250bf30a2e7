//! The tool registry: find and call tools through the host, this plugin's
//! own and the ones the operator's policy grants it (`may_call`).
//!
//! ```no_run
//! use agentbox_sdk::registry;
//! use serde_json::json;
//!
//! let product: serde_json::Value =
//!     registry::call("shop/get_product", &json!({ "product_id": "book" }))?;
//! # Ok::<(), registry::CallError>(())
//! ```
//!
//! The host checks the call as it checks a caller's: the arguments against
//! the tool's schema, its `requires`, its result. A tool of this plugin runs
//! on this turn's state and its writes are this turn's; a tool of another
//! plugin runs in that plugin's own session of this conversation, which
//! keeps what the call wrote even if this turn fails later. A tool of an MCP
//! server the operator declares is `mcp:server/tool`: checked against its
//! schema here, then sent over this conversation's own MCP session.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::agentbox::plugin::registry as wit;

/// A tool this plugin may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// Its address: `plugin/tool`, or `mcp:server/tool`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
    /// JSON Schema of its result, when declared.
    pub result_schema: Option<Value>,
}

/// One way the arguments broke the tool's schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
pub struct Violation {
    /// JSON pointer to the part of the arguments at fault.
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

/// Why a call returned no result. It serializes as
/// `{"kind": "denied", "detail": "…"}`, to hand on as a tool's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum CallError {
    /// No loaded plugin or declared MCP server offers the tool.
    NotFound(String),
    /// The policy does not grant the call, or it would close a cycle.
    Denied(String),
    /// The arguments break the tool's schema; the tool did not run.
    InvalidArguments(Vec<Violation>),
    /// Session state the tool requires is not set: these keys. The tool
    /// did not run.
    Precondition(Vec<String>),
    /// The tool failed; nothing of it was committed.
    Failed(String),
    /// A limit stopped the call (a deadline, memory, the depth of calls).
    Limit(String),
    /// The tool cannot be reached now; the same call may succeed later.
    Unavailable(String),
    /// The result did not deserialize as the type asked for.
    Result(String),
}

impl CallError {
    /// A short name of the kind of error: `not-found`, `denied`,
    /// `invalid-arguments`, `precondition`, `failed`, `limit`,
    /// `unavailable` or `result`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NotFound(_) => "not-found",
            CallError::Denied(_) => "denied",
            CallError::InvalidArguments(_) => "invalid-arguments",
            CallError::Precondition(_) => "precondition",
            CallError::Failed(_) => "failed",
            CallError::Limit(_) => "limit",
            CallError::Unavailable(_) => "unavailable",
            CallError::Result(_) => "result",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::InvalidArguments(violations) => {
                f.write_str("invalid arguments: ")?;
                for (index, violation) in violations.iter().enumerate() {
                    let separator = if index == 0 { "" } else { "; " };
                    let pointer = if violation.pointer.is_empty() {
                        "/"
                    } else {
                        &violation.pointer
                    };
                    write!(f, "{separator}{pointer}: {}", violation.message)?;
                }
                Ok(())
            }
            CallError::Precondition(keys) => {
                write!(
                    f,
                    "requires session state that is not set: {}",
                    keys.join(", ")
                )
            }
            CallError::NotFound(text)
            | CallError::Denied(text)
            | CallError::Failed(text)
            | CallError::Limit(text)
            | CallError::Unavailable(text) => f.write_str(text),
            CallError::Result(text) => write!(f, "the result has another shape: {text}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<wit::CallError> for CallError {
    fn from(err: wit::CallError) -> CallError {
        match err {
            wit::CallError::NotFound(text) => CallError::NotFound(text),
            wit::CallError::Denied(text) => CallError::Denied(text),
            wit::CallError::InvalidArguments(text) => {
                CallError::InvalidArguments(serde_json::from_str(&text).unwrap_or_else(|_| {
                    vec![Violation {
                        pointer: String::new(),
                        message: text,
                    }]
                }))
            }
            wit::CallError::Precondition(keys) => {
                CallError::Precondition(keys.split(", ").map(str::to_owned).collect())
            }
            wit::CallError::Failed(text) => CallError::Failed(text),
            wit::CallError::Limit(text) => CallError::Limit(text),
            wit::CallError::Unavailable(text) => CallError::Unavailable(text),
        }
    }
}

/// The tools this plugin may call whose address starts with `prefix`
/// (`""` for all, `"shop/"` for one plugin's).
pub fn list(prefix: &str) -> Vec<ToolInfo> {
    wit::list(prefix)
        .into_iter()
        .map(|tool| ToolInfo {
            name: tool.name,
            description: tool.description,
            // The host hands over the schemas it compiled: always JSON.
            parameters: serde_json::from_str(&tool.parameters).unwrap_or(Value::Null),
            result_schema: tool
                .result_schema
                .and_then(|schema| serde_json::from_str(&schema).ok()),
        })
        .collect()
}

/// Calls the tool at `name` (`plugin/tool`) with `args` and deserializes
/// its result as `T` (`serde_json::Value` takes any).
pub fn call<T: DeserializeOwned>(name: &str, args: &impl Serialize) -> Result<T, CallError> {
    let args = serde_json::to_string(args).map_err(|err| {
        CallError::InvalidArguments(vec![Violation {
            pointer: String::new(),
            message: format!("the arguments do not serialize: {err}"),
        }])
    })?;
    let result = wit::call(name, &args)?;
    serde_json::from_str(&result).map_err(|err| CallError::Result(err.to_string()))
}
