//! Tool calls: the host checks the arguments and the tool's requirements
//! before the guest is entered, answers from the cache when it may, checks
//! the result, commits the call as a turn, and records every call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::instrument;

use crate::capability::output::Sink;
use crate::clock::micros_since;
use crate::limits::Limits;
use crate::plugin::PluginVersion;
use crate::plugin::tools::Tool;
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError};
use crate::session::event::{EventKind, Input};
use crate::session::lifecycle;
use crate::session::parts::Parts;
use crate::session::report::{Outcome, ToolReport, TurnReport};
use crate::session::turns::Turn;
use crate::store::{Execution, OutboundUse, State, ToolOutcome};

/// A tool of a loaded plugin, addressed as `plugin/tool`.
#[derive(Debug, Clone)]
pub struct ToolRef {
    /// The active version of the plugin that offers it.
    pub plugin: Arc<PluginVersion>,
    /// The tool's name.
    pub name: String,
}

impl ToolRef {
    /// The tool's address: `plugin/tool`.
    pub fn address(&self) -> String {
        format!("{}/{}", self.plugin.name(), self.name)
    }

    /// The tool's declaration.
    pub fn tool(&self) -> &Tool {
        self.plugin
            .tools
            .get(&self.name)
            .expect("a ToolRef names a tool of its plugin")
    }
}

/// What the host does around a tool's guest, the same for a caller's call
/// and a plugin's call of its own tool through the registry: check the
/// arguments and requirements, answer from the cache, check the result,
/// cache it, and record the call.
pub(crate) struct ToolCall<'a> {
    parts: &'a Parts,
    plugin: &'a PluginVersion,
    pub(crate) tool: &'a Tool,
    session: &'a str,
    started: Instant,
    cache: Option<(String, Duration)>,
    /// Its record's id.
    id: String,
    /// The record of the registry call it answers, if one made it.
    called_by: Option<String>,
}

impl<'a> ToolCall<'a> {
    /// A call of `tool` of `plugin` with `arguments`, in `session` of `user`,
    /// answering the registry call recorded as `called_by`, if any.
    pub(crate) fn new(
        parts: &'a Parts,
        plugin: &'a PluginVersion,
        tool: &'a Tool,
        session: &'a str,
        user: Option<&str>,
        arguments: &Value,
        called_by: Option<&str>,
    ) -> Self {
        let cache = tool.cache_ttl.map(|ttl| {
            (
                tool.cache_key(plugin.digest_hex(), session, user, arguments),
                ttl,
            )
        });
        ToolCall {
            parts,
            plugin,
            tool,
            session,
            started: Instant::now(),
            cache,
            id: uuid::Uuid::new_v4().to_string(),
            called_by: called_by.map(str::to_owned),
        }
    }

    /// Checks `arguments` against the tool's schema and `state` against
    /// its requirements: what must hold before the guest is entered.
    pub(crate) fn check(&self, state: &State, arguments: &Value) -> Result<(), Cause> {
        let tool = &self.tool.name;
        self.tool
            .check_arguments(arguments)
            .map_err(|violations| Cause::InvalidArguments {
                tool: tool.clone(),
                violations,
            })?;
        let missing = self.tool.missing_requirements(state);
        if !missing.is_empty() {
            return Err(Cause::Precondition {
                tool: tool.clone(),
                missing,
            });
        }
        Ok(())
    }

    /// The cached result of the same call, if the tool caches and one is
    /// live; recorded as a hit.
    pub(crate) fn cached(&self) -> Result<Option<Value>, Cause> {
        let Some((key, _)) = &self.cache else {
            return Ok(None);
        };
        let store = &self.parts.store;
        let hit = store.cache_get(key, self.parts.clock.now_ms())?;
        let Some(result) = hit.and_then(|text| serde_json::from_str(&text).ok()) else {
            return Ok(None);
        };
        self.record(ToolOutcome::CacheHit, OutboundUse::default())?;
        Ok(Some(result))
    }

    /// The guest's result `text`, checked.
    pub(crate) fn result(&self, text: &str) -> Result<Value, Cause> {
        check_result(self.tool, text, self.parts.limits_for(self.plugin.name()))
    }

    /// Caches the result `text`, if the tool caches.
    pub(crate) fn remember(&self, text: &str) -> Result<(), Cause> {
        if let Some((key, ttl)) = &self.cache {
            let now_ms = self.parts.clock.now_ms();
            let expires_at_ms =
                now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            self.parts
                .store
                .cache_put(key, text, expires_at_ms, now_ms)?;
        }
        Ok(())
    }

    /// Records the call with its outcome.
    pub(crate) fn record(&self, outcome: ToolOutcome, outbound: OutboundUse) -> Result<(), Cause> {
        let execution = Execution {
            id: self.id.clone(),
            called_by: self.called_by.clone(),
            plugin: self.plugin.name().to_owned(),
            digest: self.plugin.digest_hex().to_owned(),
            tool: self.tool.name.clone(),
            session: self.session.to_owned(),
            duration_us: micros_since(self.started),
            outcome,
            at_ms: self.parts.clock.now_ms(),
            outbound,
        };
        Ok(self.parts.store.record_execution(&execution)?)
    }

    /// Records the call as refused for `cause`, and returns it.
    pub(crate) fn refuse(&self, cause: Cause, outbound: OutboundUse) -> Cause {
        match self.record(cause.tool_outcome(), outbound) {
            Ok(()) => cause,
            Err(unrecorded) => unrecorded,
        }
    }
}

/// Calls the tool `name` of session `id`'s plugin with `arguments`, as a
/// turn of the session.
#[instrument(skip_all, fields(session = id, tool = name, plugin, version))]
pub(crate) fn tool(
    parts: &Arc<Parts>,
    id: &str,
    name: &str,
    arguments: Value,
    sink: Option<Sink>,
    within: &Within,
) -> Result<ToolReport, SessionError> {
    let turn = Turn::open(parts, id, EventKind::Tool, sink, within)?;
    let (record, plugin) = (&turn.record, &turn.plugin);
    let fail = turn.fail();
    let tool = plugin.tools.get(name).ok_or_else(|| {
        fail(Cause::UnknownTool {
            plugin: record.plugin.clone(),
            tool: name.to_owned(),
        })
    })?;
    let call = ToolCall::new(
        parts,
        plugin,
        tool,
        id,
        record.user_id.as_deref(),
        &arguments,
        within.call(),
    );
    if let Err(cause) = call.check(&record.state, &arguments) {
        return Err(fail(call.refuse(cause, OutboundUse::default())));
    }
    if let Some(result) = call.cached().map_err(fail)? {
        let unchanged = TurnReport {
            session: id.to_owned(),
            plugin: record.plugin.clone(),
            turn: record.turn,
            said: Vec::new(),
            before: record.state.clone(),
            state: record.state.clone(),
            outcome: Outcome::Continue,
        };
        return Ok(ToolReport {
            turn: unchanged,
            result,
            cached: true,
        });
    }

    let arguments_text = arguments.to_string();
    let ran = turn.call(record.state.clone(), |agent, store| {
        agent.call_tool(store, name, arguments_text)
    });
    let (said, outbound) = (ran.said, ran.outbound);
    let state = ran.session.into_state();
    let (result_text, result) = match ran
        .result
        .and_then(|text| call.result(&text).map(|value| (text, value)))
    {
        Ok(result) => result,
        Err(cause) => {
            return Err(fail(call.refuse(cause, outbound)).with_guest_output(ran.guest_output));
        }
    };
    let input = Input::Tool {
        tool: name.to_owned(),
        arguments: tool.redacted(arguments),
        result: result.clone(),
    };
    let ending = turn.ending(said, state, Outcome::Continue);
    if let Err(cause) = turn.commit(input, &ending) {
        return Err(fail(match cause {
            Cause::InvalidState(_) => call.refuse(cause, outbound),
            cause => cause,
        }));
    }
    call.remember(&result_text).map_err(fail)?;
    call.record(ToolOutcome::Ok, outbound).map_err(fail)?;
    Ok(ToolReport {
        turn: lifecycle::close(turn, ending),
        result,
        cached: false,
    })
}

/// Parses and checks a tool's result: JSON, within the output limit, and
/// matching the tool's result schema if it declared one.
fn check_result(tool: &Tool, text: &str, limits: &Limits) -> Result<Value, Cause> {
    let invalid = |reason| Cause::InvalidResult {
        tool: tool.name.clone(),
        reason,
    };
    if text.len() > limits.output_bytes {
        return Err(invalid(format!(
            "it is {} bytes, over the output limit of {} bytes",
            text.len(),
            limits.output_bytes
        )));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|err| invalid(format!("it is not JSON: {err}")))?;
    tool.check_result(&value).map_err(|violations| {
        invalid(format!(
            "it breaks the result schema: {}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    Ok(value)
}
