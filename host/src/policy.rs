//! Limits the host enforces on every plugin, whatever the plugin does.

use std::time::Duration;

/// Resource limits for the turns of a plugin.
///
/// Every limit is enforced by the host outside the guest. A turn that trips
/// one fails with [`crate::session::Cause`] naming the limit, and commits nothing.
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
    /// Turns running at once in this process, across all sessions. Each live
    /// instance holds a few memory mappings and the kernel caps those per
    /// process, so this stays well below the pooling allocator's capacity.
    pub concurrent_turns: usize,
    /// Keys one KV owner (a plugin, or a granted bucket) may hold.
    pub kv_keys: u64,
    /// Bytes of keys plus values one KV owner may hold.
    pub kv_bytes: u64,
    /// A session without a turn for this long is ended by the reaper.
    pub session_idle_ttl: Duration,
    /// A session this old is ended by the reaper, however busy.
    pub session_max_lifetime: Duration,
}

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
            kv_keys: 100_000,
            kv_bytes: 256 << 20,
            session_idle_ttl: Duration::from_secs(30 * 60),
            session_max_lifetime: Duration::from_secs(24 * 60 * 60),
        }
    }
}
