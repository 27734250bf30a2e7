//! What the SDK's macros expand to. Not a public API: it may change in any release.

use std::fmt::Display;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::CacheScope;
use crate::runtime::Dispatch;
pub use crate::schema_for as schema_of;
use crate::{ToolSpec, Tools};

pub use {schemars, serde, serde_json};

/// A tool's declaration.
pub fn tool_spec(
    parameters: Value,
    name: &str,
    description: &str,
    requires: &[&str],
    cache_ttl_ms: Option<u64>,
    cache_scope: CacheScope,
    result_schema: Option<Value>,
) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        parameters: parameters.to_string(),
        result_schema: result_schema.map(|schema| schema.to_string()),
        requires: requires.iter().map(|key| (*key).to_owned()).collect(),
        cache_ttl_ms,
        cache_scope,
    }
}

/// A tool's arguments, from the JSON object the host validated.
pub fn tool_arguments<T: DeserializeOwned>(tool: &str, arguments: Value) -> Result<T, String> {
    serde_json::from_value(arguments).map_err(|err| format!("tool `{tool}`: {err}"))
}

/// A tool's return value as the JSON result or the error text.
pub fn tool_result<T: Serialize, E: Display>(
    tool: &str,
    returned: Result<T, E>,
) -> Result<Value, String> {
    let value = returned.map_err(|err| err.to_string())?;
    serde_json::to_value(value)
        .map_err(|err| format!("tool `{tool}`: cannot serialize its result: {err}"))
}

/// Finds an agent's tools whether or not it has any (autoref specialization:
/// `(&Probe::<A>::new()).tool_specs()` picks [`WithTools`] when `A: Tools`,
/// else [`WithoutTools`]).
#[derive(Debug)]
pub struct Probe<A>(PhantomData<A>);

impl<A> Probe<A> {
    /// A probe for `A`.
    pub fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<A> Default for Probe<A> {
    fn default() -> Self {
        Probe::new()
    }
}

/// Chosen for agents that implement [`Tools`].
pub trait WithTools<A> {
    /// The tools' declarations.
    fn tool_specs(&self) -> Vec<ToolSpec>;
    /// How calls reach the tools.
    fn dispatch(&self) -> Dispatch<A>;
}

impl<A: Tools> WithTools<A> for Probe<A> {
    fn tool_specs(&self) -> Vec<ToolSpec> {
        A::tool_specs()
    }

    fn dispatch(&self) -> Dispatch<A> {
        |agent, name, arguments| agent.call_tool(name, arguments)
    }
}

/// Chosen for agents without tools.
pub trait WithoutTools<A> {
    /// No tools.
    fn tool_specs(&self) -> Vec<ToolSpec>;
    /// Calls reach nothing.
    fn dispatch(&self) -> Dispatch<A>;
}

impl<A> WithoutTools<A> for &Probe<A> {
    fn tool_specs(&self) -> Vec<ToolSpec> {
        Vec::new()
    }

    fn dispatch(&self) -> Dispatch<A> {
        |_, _, _| None
    }
}
