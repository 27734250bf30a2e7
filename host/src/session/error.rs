//! Why a session operation failed: the [`Cause`], and the [`SessionError`]
//! that names the session, plugin and turn it happened to.

use std::time::Duration;

use crate::instance::call::Failure;
use crate::limits::{Limit, Tripped};
use crate::plugin::tools::Violation;
use crate::store::{BackendError, SessionRecord, SessionStoreError, ToolOutcome};

/// Why a turn failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// No session has this id.
    #[error("no such session")]
    NotFound,
    /// The session has ended and takes no more turns.
    #[error("the session has ended")]
    Ended,
    /// A session with this id exists already.
    #[error("a session with this id exists already")]
    Exists,
    /// The plugin is not loaded in this host.
    #[error("plugin `{0}` is not loaded")]
    PluginNotLoaded(String),
    /// The plugin handed the conversation to a plugin its policy does not
    /// let it hand to.
    #[error(
        "the plugin may not hand the conversation to `{0}`: the policy's may_hand_off for it does not grant it"
    )]
    HandOffDenied(String),
    /// The session's event log holds as much as its limit allows.
    #[error(
        "the session's event log holds {held} bytes of its limit of {limit} ([sessions] log_bytes), too many for another event; fork the session to go on with a log of its own"
    )]
    LogFull {
        /// Bytes the log holds.
        held: u64,
        /// The limit.
        limit: u64,
    },
    /// The caller passed something invalid (an id, variables, a message).
    #[error("{0}")]
    BadRequest(String),
    /// The plugin has no tool of this name.
    #[error("plugin `{plugin}` has no tool `{tool}`")]
    UnknownTool {
        /// The plugin.
        plugin: String,
        /// The tool asked for.
        tool: String,
    },
    /// The arguments broke the tool's parameter schema; the guest was not entered.
    #[error("invalid arguments for tool `{tool}`: {}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// Every violation, with its JSON pointer.
        violations: Vec<Violation>,
    },
    /// Session fields the tool requires are not set; the guest was not entered.
    #[error("tool `{tool}` requires session state that is not set: {}", missing.join(", "))]
    Precondition {
        /// The tool.
        tool: String,
        /// The required keys that are absent, `null` or `false`.
        missing: Vec<String>,
    },
    /// The tool's result is not JSON, too large, or breaks its result schema.
    #[error("tool `{tool}` returned an invalid result: {reason}")]
    InvalidResult {
        /// The tool.
        tool: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The turn ran into a limit, or was refused for one before it ran.
    #[error(transparent)]
    Limit(Tripped),
    /// The guest trapped.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The guest returned an error.
    #[error("plugin returned an error: {0}")]
    Guest(String),
    /// The state the turn would commit breaks a rule.
    #[error("invalid session state: {0}")]
    InvalidState(String),
    /// Another turn committed first (another process holds the session).
    #[error("{0}")]
    Conflict(SessionStoreError),
    /// The active version could not migrate the session's state, and the
    /// version that last committed it is not loaded.
    #[error("cannot migrate the session state from state version {from} to {to}: {cause}")]
    Migration {
        /// The state version of the stored state.
        from: u32,
        /// The state version of the active plugin version.
        to: u32,
        /// Why `migrate` failed.
        cause: Box<Cause>,
    },
    /// The caller interrupted the turn.
    #[error("the turn was interrupted by its caller")]
    Interrupted,
    /// No turn of the session is running to interrupt.
    #[error("no turn of the session is running")]
    Idle,
    /// Another host process is running a turn of the session and did not
    /// finish within the wait.
    #[error("another host is running a turn of this session; it did not finish within {} ms", .0.as_millis())]
    Busy(Duration),
    /// The store failed.
    #[error("{0}")]
    Store(BackendError),
}

impl Cause {
    /// A short, stable name of the kind of failure, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::NotFound => "not-found",
            Cause::Ended => "ended",
            Cause::Exists => "exists",
            Cause::PluginNotLoaded(_) => "plugin-not-loaded",
            Cause::HandOffDenied(_) => "hand-off-denied",
            Cause::LogFull { .. } => "log-full",
            Cause::BadRequest(_) => "bad-request",
            Cause::UnknownTool { .. } => "unknown-tool",
            Cause::InvalidArguments { .. } => "invalid-arguments",
            Cause::Precondition { .. } => "precondition",
            Cause::InvalidResult { .. } => "invalid-result",
            Cause::Limit(tripped) => tripped.kind(),
            Cause::Trap(_) => "trap",
            Cause::Guest(_) => "guest-error",
            Cause::InvalidState(_) => "invalid-state",
            Cause::Conflict(_) => "conflict",
            Cause::Busy(_) => "busy",
            Cause::Interrupted => "interrupted",
            Cause::Idle => "idle",
            Cause::Migration { .. } => "migration",
            Cause::Store(_) => "unavailable",
        }
    }
}

impl Cause {
    /// The limit that stopped the call, if a limit did.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Cause::Limit(tripped) => Some(tripped.limit()),
            Cause::Migration { cause, .. } => cause.limit(),
            _ => None,
        }
    }

    /// How a tool call that failed this way is recorded.
    pub(crate) fn tool_outcome(&self) -> ToolOutcome {
        match self {
            Cause::InvalidArguments { .. } => ToolOutcome::InvalidArgs,
            Cause::Precondition { .. } => ToolOutcome::Precondition,
            Cause::Limit(Tripped::Deadline(_)) => ToolOutcome::Timeout,
            Cause::Interrupted => ToolOutcome::Interrupted,
            Cause::Limit(
                Tripped::Memory(_) | Tripped::Output(_) | Tripped::HostCalls(_) | Tripped::Fuel(_),
            )
            | Cause::Trap(_) => ToolOutcome::Trap,
            _ => ToolOutcome::GuestError,
        }
    }
}

impl From<Failure> for Cause {
    fn from(failure: Failure) -> Cause {
        match failure {
            Failure::Guest(message) => Cause::Guest(message),
            Failure::Trap(reason) => Cause::Trap(reason),
            Failure::Limit(tripped) => Cause::Limit(tripped),
            Failure::Interrupted => Cause::Interrupted,
        }
    }
}

impl From<SessionStoreError> for Cause {
    fn from(err: SessionStoreError) -> Cause {
        match err {
            SessionStoreError::NotFound(_) => Cause::NotFound,
            SessionStoreError::Exists(_) => Cause::Exists,
            err @ SessionStoreError::Conflict { .. } => Cause::Conflict(err),
            err @ SessionStoreError::BadCursor(_) => Cause::BadRequest(err.to_string()),
            SessionStoreError::Backend(err) => Cause::Store(err),
        }
    }
}

impl From<BackendError> for Cause {
    fn from(err: BackendError) -> Cause {
        Cause::Store(err)
    }
}

/// A failed session operation: which session, plugin and turn, and why.
/// Nothing of the failed turn was committed.
#[derive(Debug, thiserror::Error)]
#[error("session `{session}`{}{}: {cause}",
    plugin.as_ref().map(|p| format!(" (plugin `{p}`)")).unwrap_or_default(),
    turn.map(|t| format!(", turn {t}")).unwrap_or_default())]
pub struct SessionError {
    /// The session. (This and `plugin` are boxed strings, and so is the
    /// guest's output, to keep every `Result` carrying this error small.)
    pub session: Box<str>,
    /// The plugin serving it, when known.
    pub plugin: Option<Box<str>>,
    /// The turn that failed, when one ran.
    pub turn: Option<u64>,
    /// Why. Said in the message, and so not a `source` as well: a chain
    /// printed whole would say it twice.
    pub cause: Cause,
    /// The tail of what the guest wrote during the failed call, at most
    /// [`crate::limits::GUEST_OUTPUT_BYTES`], when its limits say so
    /// ([`crate::Limits::guest_output`]).
    pub guest_output: Option<Box<str>>,
}

impl SessionError {
    /// This error, carrying the guest's `output`.
    pub(crate) fn with_guest_output(self, output: Option<String>) -> SessionError {
        SessionError {
            guest_output: output.map(String::into_boxed_str),
            ..self
        }
    }
}

/// The error of turn `turn` of `record` failing for a cause.
pub(crate) fn turn_error(
    record: &SessionRecord,
    turn: u64,
) -> impl Fn(Cause) -> SessionError + Copy + '_ {
    session_error(&record.id, Some(&record.plugin), Some(turn))
}

/// The error of an operation on session `id`, served by `plugin` and
/// running `turn` where known, failing for a cause.
pub(crate) fn session_error<'a>(
    id: &'a str,
    plugin: Option<&'a str>,
    turn: Option<u64>,
) -> impl Fn(Cause) -> SessionError + Copy + 'a {
    move |cause| SessionError {
        session: id.into(),
        plugin: plugin.map(Box::from),
        turn,
        cause,
        guest_output: None,
    }
}
