//! What a plugin's exports exchange with the host, whatever version of the
//! world it targets: each versioned binding converts its generated types
//! to these.

/// What a plugin says about itself in `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its name: `a-z 0-9 -`.
    pub name: String,
    /// Its version, a semantic version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// The layout version of its session state; a change makes the host
    /// call `migrate` before a session's first turn on it.
    pub state_version: u32,
    /// JSON Schema of its session state, checked at every commit.
    pub state_schema: Option<String>,
    /// Its tools.
    pub tools: Vec<ToolSpec>,
}

/// A tool as a plugin declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    /// Its name: `a-z 0-9 _`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: String,
    /// JSON Schema of its result.
    pub result_schema: Option<String>,
    /// Session-state keys that must be set before it may run.
    pub requires: Vec<String>,
    /// How long its results may be cached, in milliseconds.
    pub cache_ttl_ms: Option<u64>,
    /// Who may be served a cached result.
    pub cache_scope: CacheScope,
}

/// Who may be served a tool's cached result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheScope {
    /// Only the session whose call it answered (all a 0.1.0 plugin has).
    #[default]
    Session,
    /// Every session of the same user; a session without a user id alone.
    User,
    /// Every caller.
    Global,
}

impl CacheScope {
    /// Its name in the WIT: `session`, `user` or `global`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Session => "session",
            CacheScope::User => "user",
            CacheScope::Global => "global",
        }
    }
}

/// How a plugin's `on-message` says the conversation goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestOutcome {
    /// Open for the next message.
    Continue,
    /// Hand the session to the plugin named.
    HandOff(String),
    /// End the session.
    End,
}

/// Why a session ends, as `on-end` is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller ended it.
    Caller,
    /// The plugin ended it from `on-message`.
    Agent,
    /// The reaper ended it: idle too long, or too old.
    Expired,
}
