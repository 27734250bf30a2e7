//! The registry's calls, answered: a plugin lists and calls the tools it
//! may, its own and those the policy grants it (`may_call`).
//!
//! A call of the plugin's own tool runs nested in the calling turn, on its
//! working state. A call of another plugin's tool runs a tool turn of a
//! child session: the caller's session's own session of that plugin, with
//! the same user, started at the first call and ended with its parent, and
//! committed when the call succeeds. Either way the callee is checked as a
//! caller's call is ([`ToolCall`]), runs in a fresh instance under its own
//! limits and at most until the caller's deadline, and may itself call
//! tools, as deep as [`Limits::call_depth`] allows and never back into a
//! plugin the chain is already inside.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::capability::output::OutputCtx;
use crate::capability::registry::{CallError, RegistryCall, RegistryCalls, ToolHub, ToolInfo};
use crate::capability::session::SessionCtx;
use crate::clock::micros_since;
use crate::limits::Tripped;
use crate::names::{REMOTE_PREFIX, remote_tool_address};
use crate::plugin::PluginVersion;
use crate::remote::RemoteError;
use crate::session::call::call_on;
use crate::session::chain::Within;
use crate::session::error::{Cause, session_error};
use crate::session::lifecycle::{self, child_record, child_session_id};
use crate::session::parts::Parts;
use crate::session::report::SessionStart;
use crate::session::tool_call::{self, ToolCall};
use crate::store::{Execution, OutboundUse, Status, ToolOutcome};

/// The registry of one call of an export: who calls, where in a chain of
/// calls, until when.
pub(crate) struct Caller {
    parts: Arc<Parts>,
    plugin: Arc<PluginVersion>,
    /// Who started the caller's session: its children are theirs too.
    owner: Option<String>,
    within: Within,
    deadline: Instant,
    /// The time the call was given, which a registry call that runs out of
    /// it reports.
    budget: Duration,
    /// The calls made through it.
    made: Mutex<RegistryCalls>,
}

impl Caller {
    /// The registry of a call of `plugin`'s export in a session `owner`
    /// started, running `within` a chain of calls until `deadline`, `budget`
    /// after it began. The host's parts make each call's registry with it
    /// (their [`Registry`](crate::session::parts::Registry)).
    pub(crate) fn registry(
        parts: Arc<Parts>,
        plugin: Arc<PluginVersion>,
        owner: Option<String>,
        within: &Within,
        deadline: Instant,
        budget: Duration,
    ) -> Box<dyn ToolHub> {
        Box::new(Caller {
            parts,
            plugin,
            owner,
            within: within.clone(),
            deadline,
            budget,
            made: Mutex::default(),
        })
    }

    /// Whether the policy lets this plugin call `plugin`'s tool `tool`.
    fn may_call(&self, plugin: &str, tool: &str) -> bool {
        plugin == self.plugin.name()
            || self
                .parts
                .calls
                .get(self.plugin.name())
                .is_some_and(|may| may.allows(plugin, tool))
    }

    /// Whether the policy lets this plugin call MCP server `server`'s tool `tool`.
    fn may_call_remote(&self, server: &str, tool: &str) -> bool {
        self.parts
            .calls
            .get(self.plugin.name())
            .is_some_and(|may| may.allows_remote(server, tool))
    }

    /// Refuses a call of `plugin` that would go deeper than the limit or
    /// back into a plugin the chain is inside.
    fn check_chain(&self, address: &str, plugin: &str) -> Result<(), CallError> {
        let depth = self.within.above().len() + 1;
        let most = self.parts.limits_for(self.plugin.name()).call_depth;
        if depth > most {
            return Err(CallError::Limit(format!(
                "calling `{address}` would nest registry calls {depth} deep, over the limit of {most}"
            )));
        }
        if plugin != self.plugin.name() && self.within.above().iter().any(|above| above == plugin) {
            let chain: Vec<&str> = self
                .within
                .above()
                .iter()
                .map(String::as_str)
                .chain([self.plugin.name(), plugin])
                .collect();
            return Err(CallError::Denied(format!(
                "calling `{address}` would close a cycle: {}",
                chain.join(" → ")
            )));
        }
        if self.deadline <= Instant::now() {
            return Err(CallError::Limit(format!(
                "calling `{address}`: the caller's deadline has passed"
            )));
        }
        Ok(())
    }

    /// Runs this plugin's own tool nested in the calling turn, on its
    /// working `session`; what it says is said through `output`.
    fn call_own(
        &self,
        address: &str,
        name: &str,
        arguments: Value,
        session: &mut SessionCtx,
        output: &mut OutputCtx,
        record: &str,
    ) -> Result<Result<String, CallError>, Tripped> {
        let plugin = &self.plugin;
        let Some(tool) = plugin.tools.get(name) else {
            return Ok(Err(not_found(address)));
        };
        let call = ToolCall::new(
            &self.parts,
            plugin,
            tool,
            session.id(),
            session.user_id(),
            &arguments,
            Some(record),
        );
        let outcome = (|| {
            call.check(session.state(), &arguments)
                .map_err(|cause| call.refuse(cause, OutboundUse::default()))?;
            if let Some(result) = call.cached()? {
                return Ok((result.to_string(), Vec::new(), None));
            }
            let within = self.within.below(plugin.name(), self.deadline, record);
            let ran = call_on(
                &self.parts,
                plugin,
                session.fork(),
                self.owner.clone(),
                None,
                &within,
                |agent, store| agent.call_tool(store, name, arguments.to_string()),
            );
            let text = ran
                .result
                .and_then(|text| call.result(&text).map(|_| text))
                .map_err(|cause| call.refuse(cause, ran.outbound))?;
            call.remember(&text)?;
            call.record(ToolOutcome::Ok, ran.outbound)?;
            Ok((text, ran.said, Some(ran.session)))
        })();
        match outcome {
            // It had what was left of this call's time, and used it up.
            Err(Cause::Limit(Tripped::Deadline(_))) => Err(Tripped::Deadline(self.budget)),
            Ok((text, said, worked)) => {
                if let Some(worked) = worked {
                    session.adopt(worked);
                }
                for text in said {
                    output.say(text)?;
                }
                Ok(Ok(text))
            }
            Err(cause) => Ok(Err(call_error(address, &cause, &cause.to_string()))),
        }
    }

    /// Runs `plugin`'s tool `name` as a tool turn of the child session of
    /// `session` that `plugin` keeps, starting it first if there is none.
    fn call_other(
        &self,
        address: &str,
        plugin: &str,
        name: &str,
        arguments: Value,
        session: &SessionCtx,
        record: &str,
    ) -> Result<Result<String, CallError>, Tripped> {
        let parts = &self.parts;
        let Some(callee) = parts.plugins.active(plugin) else {
            return Ok(Err(not_found(address)));
        };
        if callee.tools.get(name).is_none() {
            return Ok(Err(not_found(address)));
        }
        // Whether what is left of this call's time bounds the callee.
        let cut = Instant::now() + parts.limits_for(plugin).deadline >= self.deadline;
        let within = self.within.below(self.plugin.name(), self.deadline, record);
        let child = child_session_id(session.id(), plugin);
        let started = Instant::now();
        let result = parts.in_child(&child, |id| {
            let start = SessionStart {
                plugin: plugin.to_owned(),
                id: Some(id.to_owned()),
                user_id: session.user_id().map(str::to_owned),
                owner: self.owner.clone(),
                variables: session.variables().clone(),
            };
            match child_record(parts, &start)? {
                None => {
                    lifecycle::start(parts, id, start, None, &within)?;
                }
                Some(record) if record.status == Status::Ended => {
                    return Err(session_error(id, Some(plugin), None)(Cause::Ended));
                }
                Some(_) => {}
            }
            tool_call::tool(parts, id, name, arguments, None, &within)
        });
        parts.observe("tool", started, &result, |report| &report.turn.plugin);
        match result {
            Ok(report) => Ok(Ok(report.result.to_string())),
            Err(err) if cut && matches!(err.cause, Cause::Limit(Tripped::Deadline(_))) => {
                Err(Tripped::Deadline(self.budget))
            }
            Err(err) => Ok(Err(call_error(address, &err.cause, &err.to_string()))),
        }
    }

    /// Answers the registry call of `name` with `args`, recorded as `record`.
    fn answer(
        &self,
        name: &str,
        args: &str,
        session: &mut SessionCtx,
        output: &mut OutputCtx,
        record: &str,
    ) -> Result<Result<String, CallError>, Tripped> {
        let Some((plugin, tool)) = name.split_once('/') else {
            return Ok(Err(CallError::NotFound(format!(
                "`{name}` is not a tool address: tools are called as `plugin/tool` or `mcp:server/tool`"
            ))));
        };
        if let Some(server) = plugin.strip_prefix(REMOTE_PREFIX) {
            return self.call_remote(session.id(), name, server, tool, args);
        }
        if !self.may_call(plugin, tool) {
            return Ok(Err(CallError::Denied(format!(
                "plugin `{}` may not call `{name}`: the policy's may_call for it does not grant it",
                self.plugin.name()
            ))));
        }
        if let Err(err) = self.check_chain(name, plugin) {
            return Ok(Err(err));
        }
        let arguments = match parse_arguments(args) {
            Ok(arguments) => arguments,
            Err(err) => return Ok(Err(err)),
        };
        if plugin == self.plugin.name() {
            return self.call_own(name, tool, arguments, session, output, record);
        }
        self.call_other(name, plugin, tool, arguments, session, record)
    }

    /// Calls MCP server `server`'s tool `tool` at `address` with the JSON
    /// text `args`, if the policy grants it, until the caller's deadline;
    /// a result larger than the caller may say is refused.
    fn call_remote(
        &self,
        session: &str,
        address: &str,
        server: &str,
        tool: &str,
        args: &str,
    ) -> Result<Result<String, CallError>, Tripped> {
        if !self.may_call_remote(server, tool) {
            return Ok(Err(CallError::Denied(format!(
                "plugin `{}` may not call `{address}`: the policy's may_call for it does not grant it",
                self.plugin.name()
            ))));
        }
        // No plugin is entered: the chain bounds its depth and deadline.
        let checked = self
            .check_chain(address, address)
            .and_then(|()| parse_arguments(args));
        let arguments = match checked {
            Ok(arguments) => arguments,
            Err(err) => return Ok(Err(err)),
        };
        let most = self.parts.limits_for(self.plugin.name()).output_bytes;
        let remotes = &self.parts.remotes;
        let calling = remotes.call(session, server, tool, &arguments, Some(self.deadline), most);
        // A turn runs on a blocking thread of the runtime the link's
        // connections are driven by.
        let called = tokio::runtime::Handle::current().block_on(calling);
        let message = |reason: String| format!("`{address}`: {reason}");
        Ok(Err(match called {
            Ok(result) => return Ok(Ok(result.to_string())),
            Err(RemoteError::Deadline) => return Err(Tripped::Deadline(self.budget)),
            Err(RemoteError::NotFound(reason)) => CallError::NotFound(message(reason)),
            Err(RemoteError::InvalidArguments(violations)) => CallError::InvalidArguments(
                serde_json::to_string(&violations).expect("violations serialize"),
            ),
            Err(RemoteError::Unavailable(reason)) => CallError::Unavailable(message(reason)),
            Err(RemoteError::Failed(reason)) => CallError::Failed(message(reason)),
            Err(RemoteError::TooLarge(reason)) => CallError::Limit(message(reason)),
        }))
    }
}

impl ToolHub for Caller {
    fn list(&self, prefix: &str) -> Vec<ToolInfo> {
        let remotes = &self.parts.remotes;
        remotes.connect();
        let plugins = self.parts.plugins.all();
        let offered = plugins.iter().flat_map(|plugin| {
            plugin
                .tools
                .iter()
                .filter(|tool| self.may_call(plugin.name(), &tool.name))
                .map(|tool| ToolInfo {
                    name: format!("{}/{}", plugin.name(), tool.name),
                    description: tool.description.clone(),
                    parameters: tool.parameters.to_string(),
                    result_schema: tool.result_schema.as_ref().map(Value::to_string),
                })
        });
        let remote = remotes.tools().into_iter().flat_map(|(server, tools)| {
            tools
                .into_iter()
                .filter(move |tool| self.may_call_remote(server, &tool.name))
                .map(move |tool| ToolInfo {
                    name: remote_tool_address(server, &tool.name),
                    description: tool.description.clone(),
                    parameters: tool.parameters.to_string(),
                    result_schema: tool.result_schema.as_ref().map(Value::to_string),
                })
        });
        offered
            .chain(remote)
            .filter(|tool| tool.name.starts_with(prefix))
            .collect()
    }

    fn call(
        &self,
        name: &str,
        args: &str,
        session: &mut SessionCtx,
        output: &mut OutputCtx,
    ) -> Result<Result<String, CallError>, Tripped> {
        let record = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let answer = self.answer(name, args, session, output, &record);
        let outcome = match &answer {
            Ok(Ok(_)) => ToolOutcome::Ok,
            Ok(Err(err)) => outcome_of(err),
            Err(Tripped::Deadline(_)) => ToolOutcome::Timeout,
            Err(_) => ToolOutcome::Limit,
        };
        self.made
            .lock()
            .expect("a turn's registry calls poisoned")
            .note(RegistryCall {
                record: record.clone(),
                tool: name.to_owned(),
                outcome,
            });
        let execution = Execution {
            id: record,
            called_by: None,
            plugin: self.plugin.name().to_owned(),
            digest: self.plugin.digest_hex().to_owned(),
            tool: name.to_owned(),
            session: session.id().to_owned(),
            duration_us: micros_since(started),
            outcome,
            at_ms: self.parts.clock.now_ms(),
            outbound: OutboundUse::default(),
        };
        if let Err(err) = self.parts.store.record_execution(&execution) {
            tracing::warn!(plugin = execution.plugin, tool = name, error = %err, "a registry call went unrecorded");
        }
        answer
    }

    fn into_calls(self: Box<Self>) -> RegistryCalls {
        self.made
            .into_inner()
            .expect("a turn's registry calls poisoned")
    }
}

/// How a registry call that answered `err` is recorded.
fn outcome_of(err: &CallError) -> ToolOutcome {
    match err {
        CallError::NotFound(_) => ToolOutcome::NotFound,
        CallError::Denied(_) => ToolOutcome::Denied,
        CallError::InvalidArguments(_) => ToolOutcome::InvalidArgs,
        CallError::Precondition(_) => ToolOutcome::Precondition,
        CallError::Failed(_) => ToolOutcome::GuestError,
        CallError::Limit(_) => ToolOutcome::Limit,
        CallError::Unavailable(_) => ToolOutcome::Unavailable,
    }
}

/// The arguments of a registry call, read from their JSON text.
fn parse_arguments(args: &str) -> Result<Value, CallError> {
    serde_json::from_str(args).map_err(|err| {
        let violations = serde_json::json!([{
            "pointer": "",
            "message": format!("the arguments are not JSON: {err}"),
        }]);
        CallError::InvalidArguments(violations.to_string())
    })
}

/// The answer to a call of an address no loaded plugin offers.
fn not_found(address: &str) -> CallError {
    CallError::NotFound(format!("no loaded plugin offers the tool `{address}`"))
}

/// The registry's error for a call of `address` that failed for `cause`,
/// said as `message`.
fn call_error(address: &str, cause: &Cause, message: &str) -> CallError {
    let message = format!("`{address}`: {message}");
    match cause {
        Cause::InvalidArguments { violations, .. } => CallError::InvalidArguments(
            serde_json::to_string(violations).expect("violations serialize"),
        ),
        Cause::Precondition { missing, .. } => CallError::Precondition(missing.join(", ")),
        Cause::NotFound | Cause::UnknownTool { .. } | Cause::PluginNotLoaded(_) => {
            CallError::NotFound(message)
        }
        Cause::Store(_) | Cause::Busy(_) | Cause::Conflict(_) => CallError::Unavailable(message),
        cause if cause.limit().is_some() => CallError::Limit(message),
        _ => CallError::Failed(message),
    }
}
