//! What the host bounds: the [`Limits`] of a plugin's turns, and the
//! [`Limit`] a call can trip, named the same way in errors, metrics labels
//! and the policy file.

use std::time::Duration;

/// The most turns a host may run at once: the pool's slots, less those kept
/// for loading plugins (see `engine`).
pub const MAX_CONCURRENT_TURNS: usize = 960;

/// The largest component the host takes, in bytes: an upload to the admin
/// API or a file in the plugin folder.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Checks a bound on turns running at once against what the pool holds.
/// The error completes "concurrent turns ...".
pub fn check_concurrent_turns(turns: usize) -> Result<(), String> {
    if (1..=MAX_CONCURRENT_TURNS).contains(&turns) {
        Ok(())
    } else {
        Err(format!(
            "must be from 1 to {MAX_CONCURRENT_TURNS}, the instances this host can hold at once, not {turns}"
        ))
    }
}

/// A limit that stopped a call: the label it is counted under in
/// `agentbox_limit_trips_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::deadline`].
    Deadline,
    /// [`Limits::memory_bytes`].
    Memory,
    /// [`Limits::output_bytes`].
    Output,
    /// [`Limits::host_calls`].
    HostCalls,
    /// [`Limits::fuel`].
    Fuel,
    /// [`Limits::live_sessions`].
    LiveSessions,
    /// [`Limits::plugin_turns`].
    ConcurrentTurns,
    /// [`Limits::kv_keys`], [`Limits::kv_bytes`] or their per-user bounds.
    KvQuota,
}

impl Limit {
    /// Every limit, in a fixed order.
    pub const ALL: [Limit; 8] = [
        Limit::Deadline,
        Limit::Memory,
        Limit::Output,
        Limit::HostCalls,
        Limit::Fuel,
        Limit::LiveSessions,
        Limit::ConcurrentTurns,
        Limit::KvQuota,
    ];

    /// The limit's label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Deadline => "deadline",
            Limit::Memory => "memory",
            Limit::Output => "output",
            Limit::HostCalls => "host-calls",
            Limit::Fuel => "fuel",
            Limit::LiveSessions => "live-sessions",
            Limit::ConcurrentTurns => "concurrent-turns",
            Limit::KvQuota => "kv-quota",
        }
    }
}

/// A limit a turn ran into, with the amount it was held to: the one way a
/// tripped limit is told, whether a host call found it (carried by the
/// trap), the engine did (deadline, fuel) or the host refused the turn
/// before it ran (live sessions, turns at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Tripped {
    /// The call ran past its deadline; a registry call's callee that was
    /// stopped by its caller's deadline passes it on.
    #[error("deadline of {} ms exceeded", .0.as_millis())]
    Deadline(Duration),
    /// The instance tried to grow its memory past this many bytes.
    #[error("memory limit of {0} bytes exceeded")]
    Memory(usize),
    /// The turn said more than this many bytes.
    #[error("output limit of {0} bytes per turn exceeded")]
    Output(usize),
    /// The guest called into the host more than this many times.
    #[error("limit of {0} host calls per call of an export exceeded")]
    HostCalls(u64),
    /// The guest burned all of this much fuel.
    #[error("fuel limit of {0} per call of an export exhausted")]
    Fuel(u64),
    /// The plugin has this many active sessions, its limit.
    #[error("the plugin already has its limit of {0} active sessions")]
    LiveSessions(u64),
    /// The plugin is running this many turns at once, its limit.
    #[error(
        "the plugin is already running its limit of {0} turns at once; try again when one has finished"
    )]
    ConcurrentTurns(usize),
}

impl Tripped {
    /// The limit it is.
    pub fn limit(self) -> Limit {
        match self {
            Tripped::Deadline(_) => Limit::Deadline,
            Tripped::Memory(_) => Limit::Memory,
            Tripped::Output(_) => Limit::Output,
            Tripped::HostCalls(_) => Limit::HostCalls,
            Tripped::Fuel(_) => Limit::Fuel,
            Tripped::LiveSessions(_) => Limit::LiveSessions,
            Tripped::ConcurrentTurns(_) => Limit::ConcurrentTurns,
        }
    }

    /// The failure's kind in the API.
    pub fn kind(self) -> &'static str {
        match self {
            Tripped::Deadline(_) => "deadline",
            Tripped::Memory(_) => "memory-limit",
            Tripped::Output(_) => "output-limit",
            Tripped::HostCalls(_) => "host-call-limit",
            Tripped::Fuel(_) => "fuel-limit",
            Tripped::LiveSessions(_) => "live-sessions",
            Tripped::ConcurrentTurns(_) => "concurrent-turns",
        }
    }
}

/// Resource limits for the turns of a plugin.
///
/// Every limit is enforced by the host outside the guest. A turn that trips
/// one fails with [`Tripped`] naming the limit, and commits nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one turn may run inside the guest (epoch interruption,
    /// about 1 ms granularity).
    pub deadline: Duration,
    /// Linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Bytes one turn may send with `output.say`, and bytes of guest
    /// stdout/stderr kept for the log.
    pub output_bytes: usize,
    /// Size in bytes of one session-state value (compact JSON) or KV value.
    pub value_bytes: usize,
    /// Size in bytes of the whole session state (keys plus compact values).
    pub state_bytes: usize,
    /// Nesting depth of one JSON value.
    pub json_depth: usize,
    /// Turns running at once in this process, across all plugins; later
    /// turns wait. Each live instance holds a few memory mappings and the
    /// kernel caps those per process, so this stays well below the pooling
    /// allocator's capacity (at most [`MAX_CONCURRENT_TURNS`]).
    pub concurrent_turns: usize,
    /// Turns of one plugin running at once; a turn past it is refused with
    /// [`Tripped::ConcurrentTurns`]. `None`: only
    /// `concurrent_turns` bounds them.
    pub plugin_turns: Option<usize>,
    /// Keys one KV owner (a plugin, or a granted bucket) may hold.
    pub kv_keys: u64,
    /// Bytes of keys plus values one KV owner may hold.
    pub kv_bytes: u64,
    /// Keys one user's scope of a KV owner may hold, so that no user (or
    /// made-up user id) takes the owner's quota from the others.
    pub kv_user_keys: u64,
    /// Bytes of keys plus values one user's scope of a KV owner may hold.
    pub kv_user_bytes: u64,
    /// A session without a turn for this long is ended by the reaper.
    pub session_idle_ttl: Duration,
    /// A session this old is ended by the reaper, however busy.
    pub session_max_lifetime: Duration,
    /// An ended session, with its history, is deleted by the reaper this
    /// long after it ended.
    pub retain_ended: Duration,
    /// A tool-call record is deleted by the reaper this long after the call.
    pub retain_records: Duration,
    /// Messages one session's history keeps; each commit drops the oldest
    /// beyond it.
    pub history_messages: u64,
    /// Bytes of message content one session's history keeps; each commit
    /// drops the oldest messages beyond it, but never the newest.
    pub history_bytes: u64,
    /// Bytes an event of a session's log keeps of each text: the message,
    /// a tool's arguments and result, and what was said in all. Past it, the
    /// event keeps the text's start with the size and digest of the whole;
    /// the history keeps the whole under its own caps.
    pub log_text_bytes: usize,
    /// Bytes of events one session's log may hold: a turn or rewind whose
    /// event would take it past is refused with [`crate::Cause::LogFull`].
    pub log_bytes: u64,
    /// Every this many turns, a session's event holds the whole state, so
    /// that the state of any turn is rebuilt from at most this many
    /// events.
    pub snapshot_turns: u64,
    /// Every time a session's log grows past another multiple of this many
    /// bytes, its event holds the whole state too, so that rebuilding the
    /// state of any turn reads a snapshot and at most about this many
    /// bytes of events after it, however large its patches.
    pub snapshot_bytes: u64,
    /// Calls from the guest into the host (the world's functions and WASI)
    /// one call of an export may make.
    pub host_calls: u64,
    /// Registry calls nested in one turn: a turn's call of a tool is at
    /// depth 1, a call that tool makes at depth 2, and so on. Each level
    /// holds one more instance while it runs.
    pub call_depth: usize,
    /// Active sessions one plugin may have at once; `None` for no bound.
    pub live_sessions: Option<u64>,
    /// Fuel one call of an export may burn (about one unit per WebAssembly
    /// instruction); `None`: unmetered. Metering is compiled into every
    /// plugin of a host once any plugin has this limit, at a cost to each
    /// (`BENCHMARKS.md`).
    pub fuel: Option<u64>,
    /// Whether a failed call's error carries the tail of what the guest
    /// wrote ([`GUEST_OUTPUT_BYTES`] at most): a traceback or panic message
    /// for the plugin's author. Off unless asked for, since a plugin may
    /// write what its callers should not read.
    pub guest_output: bool,
}

/// The most of a guest's output a failed call's error carries.
pub const GUEST_OUTPUT_BYTES: usize = 4 << 10;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
            value_bytes: 64 << 10,
            state_bytes: 1 << 20,
            json_depth: 32,
            concurrent_turns: 256,
            plugin_turns: None,
            kv_keys: 100_000,
            kv_bytes: 256 << 20,
            kv_user_keys: 10_000,
            kv_user_bytes: 16 << 20,
            session_idle_ttl: Duration::from_secs(30 * 60),
            session_max_lifetime: Duration::from_secs(24 * 60 * 60),
            retain_ended: Duration::from_secs(7 * 24 * 60 * 60),
            retain_records: Duration::from_secs(7 * 24 * 60 * 60),
            history_messages: 1_000,
            history_bytes: 4 << 20,
            log_text_bytes: 64 << 10,
            log_bytes: 256 << 20,
            snapshot_turns: 100,
            snapshot_bytes: 4 << 20,
            host_calls: 1_000_000,
            call_depth: 4,
            live_sessions: None,
            fuel: None,
            guest_output: false,
        }
    }
}
