//! What [`export_agent!`](crate::export_agent) calls: the glue between the
//! WIT `agent` interface and an [`Agent`].
//!
//! Public so the macro can reach it; plugins do not call it directly.

use serde_json::{Map, Value};

use crate::{Agent, Manifest, ToolSpec, session};

/// How a tool call reaches an agent's tools: [`crate::Tools::call_tool`], or
/// nothing for an agent without tools.
pub type Dispatch<A> = fn(&mut A, &str, Value) -> Option<Result<Value, String>>;

/// The manifest of `A`, from its constants, hooks and `tools`.
pub fn describe<A: Agent>(tools: Vec<ToolSpec>) -> Manifest {
    Manifest {
        name: A::NAME.to_owned(),
        version: A::VERSION.to_owned(),
        description: A::DESCRIPTION.to_owned(),
        state_version: A::STATE_VERSION,
        state_schema: A::state_schema().map(|schema| schema.to_string()),
        tools,
    }
}

/// Runs one hook on the agent loaded from session state, then saves the
/// fields that changed. Nothing is saved if the hook fails.
pub fn turn<A: Agent, R>(hook: impl FnOnce(&mut A) -> Result<R, String>) -> Result<R, String> {
    let stored = session::state();
    let mut agent = load::<A>(&stored)?;
    let result = hook(&mut agent)?;
    save(&stored, &agent)?;
    Ok(result)
}

/// Runs a tool: parses the arguments the host validated, dispatches them
/// inside a [`turn`], and returns the result as JSON.
pub fn call_tool<A: Agent>(
    name: &str,
    args: &str,
    dispatch: Dispatch<A>,
) -> Result<String, String> {
    let args: Value = serde_json::from_str(args)
        .map_err(|err| format!("tool `{name}`: arguments are not JSON: {err}"))?;
    let result = turn::<A, _>(|agent| {
        dispatch(agent, name, args)
            .unwrap_or_else(|| Err(format!("{} has no tool `{name}`", A::NAME)))
    })?;
    Ok(result.to_string())
}

/// Runs [`Agent::migrate`] on a state given as JSON text.
pub fn migrate<A: Agent>(from: u32, state: &str) -> Result<String, String> {
    let state: Value = serde_json::from_str(state)
        .map_err(|err| format!("state to migrate is not JSON: {err}"))?;
    Ok(A::migrate(from, state)?.to_string())
}

/// The agent whose fields are stored in `stored`; fields that are not
/// stored keep their [`Default`] values.
fn load<A: Agent>(stored: &Map<String, Value>) -> Result<A, String> {
    let mut fields = fields(&A::default())?;
    for (name, value) in fields.iter_mut() {
        if let Some(stored) = stored.get(name) {
            *value = stored.clone();
        }
    }
    serde_json::from_value(Value::Object(fields)).map_err(|err| {
        format!(
            "cannot load the fields of {} from session state: {err}",
            A::NAME
        )
    })
}

/// Writes the fields of `agent` that differ from `stored`.
fn save<A: Agent>(stored: &Map<String, Value>, agent: &A) -> Result<(), String> {
    for (name, value) in fields(agent)? {
        if stored.get(&name) == Some(&value) || (value.is_null() && !stored.contains_key(&name)) {
            continue;
        }
        if value.is_null() {
            session::delete(&name);
        } else {
            session::set(&name, &value)
                .map_err(|err| format!("cannot save field `{name}`: {err}"))?;
        }
    }
    Ok(())
}

fn fields<A: Agent>(agent: &A) -> Result<Map<String, Value>, String> {
    match serde_json::to_value(agent) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(format!(
            "{} must serialize to a JSON object: a struct with named fields",
            A::NAME
        )),
        Err(err) => Err(format!("cannot serialize {}: {err}", A::NAME)),
    }
}
