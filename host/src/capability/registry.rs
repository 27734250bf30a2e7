//! The `registry` capability: a turn's way to the tools it may call.
//!
//! This floor knows what a call asks and what it may answer; the session
//! floor (`session::calls`) answers it, since a call runs a
//! turn of its own.

use crate::capability::output::OutputCtx;
use crate::capability::session::SessionCtx;
use crate::limits::Tripped;
use crate::store::ToolOutcome;

/// A tool a plugin may call, as `registry.list` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolInfo {
    /// Its address: `plugin/tool`.
    pub(crate) name: String,
    /// What it does.
    pub(crate) description: String,
    /// JSON Schema of its arguments, as text.
    pub(crate) parameters: String,
    /// JSON Schema of its result, as text, when it declares one.
    pub(crate) result_schema: Option<String>,
}

/// Why a registry call returned no result; each names the tool and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// No loaded plugin offers the tool.
    #[error("{0}")]
    NotFound(String),
    /// The policy does not grant the call, or it would close a cycle.
    #[error("{0}")]
    Denied(String),
    /// The arguments break the tool's schema: a JSON array of violations.
    #[error("{0}")]
    InvalidArguments(String),
    /// Session state the tool requires is not set.
    #[error("{0}")]
    Precondition(String),
    /// The callee failed; nothing of it was committed.
    #[error("{0}")]
    Failed(String),
    /// A limit stopped the call.
    #[error("{0}")]
    Limit(String),
    /// The callee's plugin or store cannot serve the call now.
    #[error("{0}")]
    Unavailable(String),
}

/// Answers a turn's registry calls: built by the session floor for each
/// call of an export, knowing the calling plugin and how deep it runs.
/// Registry calls one turn's record names, at most; the calls past them
/// are counted only.
pub const CALLS_KEPT: usize = 100;

/// A registry call a turn made: the id of its tool record (where its
/// duration and outcome are), and the address it called.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryCall {
    /// The id of the call's tool record, which the callee's record names
    /// as its `called_by`.
    pub record: String,
    /// The address called: `plugin/tool` or `mcp:server/tool`.
    pub tool: String,
    /// How it ended, as the tool record says.
    pub outcome: ToolOutcome,
}

/// The registry calls a turn made: the first [`CALLS_KEPT`], and how many
/// there were past them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryCalls {
    /// The calls, in the order made.
    pub calls: Vec<RegistryCall>,
    /// Calls past the ones kept.
    #[serde(default)]
    pub more: u64,
}

impl RegistryCalls {
    /// Notes `call`.
    pub(crate) fn note(&mut self, call: RegistryCall) {
        if self.calls.len() < CALLS_KEPT {
            self.calls.push(call);
        } else {
            self.more += 1;
        }
    }

    /// These calls, then `other`'s.
    pub(crate) fn extend(&mut self, other: RegistryCalls) {
        for call in other.calls {
            self.note(call);
        }
        self.more += other.more;
    }

    /// Whether no call was made.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.more == 0
    }
}

pub(crate) trait ToolHub: Send + Sync {
    /// The tools the calling plugin may call whose address starts with `prefix`.
    fn list(&self, prefix: &str) -> Vec<ToolInfo>;

    /// Calls the tool at `name` with the JSON text `args`. A tool of the
    /// calling plugin runs on `session`'s working state and says what it
    /// says through `output`; the error is the output limit that saying it
    /// tripped.
    fn call(
        &self,
        name: &str,
        args: &str,
        session: &mut SessionCtx,
        output: &mut OutputCtx,
    ) -> Result<Result<String, CallError>, Tripped>;

    /// The calls made through this registry.
    fn into_calls(self: Box<Self>) -> RegistryCalls;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(n: usize) -> RegistryCall {
        RegistryCall {
            record: format!("r{n}"),
            tool: "shop/find".to_owned(),
            outcome: ToolOutcome::Ok,
        }
    }

    #[test]
    fn the_calls_made_are_kept_in_order_and_counted_past_the_kept() {
        let mut first = RegistryCalls::default();
        assert!(first.is_empty());
        for n in 0..CALLS_KEPT - 1 {
            first.note(made(n));
        }
        let mut later = RegistryCalls::default();
        for n in 0..3 {
            later.note(made(CALLS_KEPT + n));
        }
        first.extend(later);
        assert_eq!(first.calls.len(), CALLS_KEPT);
        assert_eq!(first.calls[CALLS_KEPT - 1].record, format!("r{CALLS_KEPT}"));
        assert_eq!(first.more, 2);
    }
}
