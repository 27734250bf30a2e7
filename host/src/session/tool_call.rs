//! Tool calls: the host checks the arguments and the tool's requirements
//! before the guest is entered, answers from the cache when it may, checks
//! the result, commits the call as a turn, and records every call.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tracing::instrument;

use crate::capability::output::Sink;
use crate::limits::Limits;
use crate::plugin::PluginVersion;
use crate::plugin::tools::Tool;
use crate::session::Host;
use crate::session::error::{Cause, SessionError};
use crate::session::report::{Outcome, ToolReport, TurnReport, assistant_message};
use crate::store::{Execution, Message, OutboundUse, Role, ToolOutcome};

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

impl Host {
    #[instrument(skip_all, fields(session = id, tool = name, plugin, version))]
    pub(crate) fn run_tool(
        &self,
        id: &str,
        name: &str,
        arguments: Value,
        sink: Option<Sink>,
    ) -> Result<ToolReport, SessionError> {
        let started = Instant::now();
        let turn = self.open(id, true)?;
        let (record, plugin) = (&turn.record, &turn.plugin);
        let fail = turn.fail();
        let tool = plugin.tools.get(name).ok_or_else(|| {
            fail(Cause::UnknownTool {
                plugin: record.plugin.clone(),
                tool: name.to_owned(),
            })
        })?;
        let digest = plugin.digest.to_string();
        let record_execution = |outcome, outbound| {
            let execution = Execution {
                plugin: record.plugin.clone(),
                digest: digest.clone(),
                tool: name.to_owned(),
                session: id.to_owned(),
                duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                outcome,
                at_ms: self.inner.clock.now_ms(),
                outbound,
            };
            self.inner
                .store
                .record_execution(&execution)
                .map_err(|err| fail(err.into()))
        };
        let refuse = |cause: Cause, outbound| {
            record_execution(cause.tool_outcome(), outbound)?;
            Err(fail(cause))
        };

        if let Err(violations) = tool.check_arguments(&arguments) {
            return refuse(
                Cause::InvalidArguments {
                    tool: name.to_owned(),
                    violations,
                },
                OutboundUse::default(),
            );
        }
        let missing = tool.missing_requirements(&record.state);
        if !missing.is_empty() {
            return refuse(
                Cause::Precondition {
                    tool: name.to_owned(),
                    missing,
                },
                OutboundUse::default(),
            );
        }
        let cache = tool.cache_ttl.map(|ttl| {
            let key = tool.cache_key(&digest, id, record.user_id.as_deref(), &arguments);
            (key, ttl)
        });
        if let Some((key, _)) = &cache {
            let hit = self
                .inner
                .store
                .cache_get(key, self.inner.clock.now_ms())
                .map_err(|err| fail(err.into()))?;
            if let Some(result) = hit.and_then(|text| serde_json::from_str(&text).ok()) {
                record_execution(ToolOutcome::CacheHit, OutboundUse::default())?;
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
        }

        let arguments_text = arguments.to_string();
        let call = self.call_in_session(
            plugin,
            record,
            turn.number,
            record.state.clone(),
            sink,
            |agent, store| agent.call_tool(store, name, arguments_text),
        );
        let (said, outbound) = (call.said, call.outbound);
        let state = call.session.into_state();
        let result = match call.result.and_then(|text| {
            check_result(tool, &text, self.limits_for(plugin.name())).map(|value| (text, value))
        }) {
            Ok(result) => result,
            Err(cause) => {
                return refuse(cause, outbound)
                    .map_err(|err| err.with_guest_output(call.guest_output));
            }
        };
        let (result_text, result) = result;
        let mut messages = vec![Message {
            role: Role::Tool,
            content: serde_json::json!({
                "tool": name,
                "arguments": tool.redacted(arguments),
                "result": result,
            })
            .to_string(),
        }];
        messages.extend(assistant_message(&said));
        if let Err(cause) = self.commit(&turn, &state, &Outcome::Continue, messages) {
            return match cause {
                Cause::InvalidState(_) => refuse(cause, outbound),
                cause => Err(fail(cause)),
            };
        }
        if let Some((key, ttl)) = &cache {
            let now_ms = self.inner.clock.now_ms();
            let expires_at_ms =
                now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            self.inner
                .store
                .cache_put(key, &result_text, expires_at_ms, now_ms)
                .map_err(|err| fail(err.into()))?;
        }
        record_execution(ToolOutcome::Ok, outbound)?;
        Ok(ToolReport {
            turn: turn.report(state, said, Outcome::Continue),
            result,
            cached: false,
        })
    }
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
