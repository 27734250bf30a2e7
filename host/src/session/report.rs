//! What the session operations return: the report of a committed turn or
//! tool call, and how to start a session.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::plugin::tools::Violation;
use crate::session::error::{Cause, SessionError};
use crate::store::{Message, Role, State};

/// How the conversation goes on after a turn.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "to")]
pub enum Outcome {
    /// Open for the next message.
    Continue,
    /// Handed to another plugin, which serves the next turn.
    HandOff(String),
    /// The session has ended.
    End,
    /// The caller interrupted the turn: no state was committed, and the
    /// agent's words so far were recorded, marked interrupted.
    Interrupted,
}

/// What a committed turn did.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnReport {
    /// The session.
    pub session: String,
    /// The plugin that ran the turn.
    pub plugin: String,
    /// The committed turn number.
    pub turn: u64,
    /// Everything the agent said, one entry per `say`.
    pub said: Vec<String>,
    /// The state before the turn.
    pub before: State,
    /// The committed state.
    pub state: State,
    /// How the conversation goes on.
    pub outcome: Outcome,
}

/// What a tool call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolReport {
    /// The turn the call ran as; for a cached result, the session's latest
    /// committed turn, unchanged.
    pub turn: TurnReport,
    /// The tool's result.
    pub result: Value,
    /// Whether the result came from the cache without entering the guest.
    pub cached: bool,
}

/// How to start a session.
#[derive(Debug, Clone, Default)]
pub struct SessionStart {
    /// The plugin that serves it.
    pub plugin: String,
    /// Its id; a random one when `None`.
    pub id: Option<String>,
    /// The user it belongs to, if any.
    pub user_id: Option<String>,
    /// The caller that starts it, who alone may reach it when callers
    /// authenticate (see [`SessionRecord::owner`](crate::store::SessionRecord::owner)).
    pub owner: Option<String>,
    /// Variables the plugin reads with `session.initial-variables`.
    pub variables: Map<String, Value>,
}

/// One thing a turn tells its caller, in the order it happens. Every front
/// end serializes this one type: the HTTP reply stream (JSON lines), the
/// WebSocket's text frames and `agentbox run --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum TurnEvent {
    /// The agent said something, while the turn runs.
    Say {
        /// What it said.
        text: String,
    },
    /// The turn committed.
    Committed {
        /// The session.
        session: String,
        /// The committed turn number.
        turn: u64,
        /// How the conversation goes on.
        outcome: Outcome,
        /// The committed state.
        state: State,
    },
    /// A tool call returned.
    ToolResult {
        /// The tool.
        tool: String,
        /// What it returned.
        result: Value,
        /// Whether it came from the cache.
        cached: bool,
        /// The turn the call committed as (the latest, for a cached result).
        turn: u64,
    },
    /// The turn failed, or the request was refused; nothing was committed.
    Error {
        /// A short, stable name of the kind of failure.
        kind: &'static str,
        /// What went wrong.
        message: String,
        /// The tail of what the plugin wrote in the failed call, when its
        /// limits say so.
        #[serde(skip_serializing_if = "Option::is_none")]
        guest_output: Option<String>,
        /// Each violation of invalid arguments, with its JSON pointer.
        #[serde(skip_serializing_if = "Option::is_none")]
        violations: Option<Vec<Violation>>,
    },
}

impl TurnEvent {
    /// The event of a committed turn.
    pub fn committed(report: &TurnReport) -> TurnEvent {
        TurnEvent::Committed {
            session: report.session.clone(),
            turn: report.turn,
            outcome: report.outcome.clone(),
            state: report.state.clone(),
        }
    }

    /// The event of a tool call of `tool` that returned.
    pub fn tool_result(tool: &str, report: &ToolReport) -> TurnEvent {
        TurnEvent::ToolResult {
            tool: tool.to_owned(),
            result: report.result.clone(),
            cached: report.cached,
            turn: report.turn.turn,
        }
    }

    /// The event of a request refused before any turn ran.
    pub fn refused(kind: &'static str, message: String) -> TurnEvent {
        TurnEvent::Error {
            kind,
            message,
            guest_output: None,
            violations: None,
        }
    }

    /// The event of a failed turn or call.
    pub fn failed(err: &SessionError) -> TurnEvent {
        TurnEvent::Error {
            kind: err.cause.kind(),
            message: err.to_string(),
            guest_output: err.guest_output.as_deref().map(str::to_owned),
            violations: match &err.cause {
                Cause::InvalidArguments { violations, .. } => Some(violations.clone()),
                _ => None,
            },
        }
    }

    /// Whether the session ended with this event.
    pub fn ends_session(&self) -> bool {
        matches!(
            self,
            TurnEvent::Committed {
                outcome: Outcome::End,
                ..
            }
        )
    }
}

/// The history entry for what the agent said in a turn, if it said
/// anything, and whether its caller interrupted it.
pub(crate) fn assistant_message(said: &[String], interrupted: bool) -> Option<Message> {
    (!said.is_empty()).then(|| Message {
        role: Role::Assistant,
        content: said.join("\n"),
        interrupted,
    })
}
