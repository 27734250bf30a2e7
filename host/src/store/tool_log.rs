//! Where tool calls are recorded, and tool results cached.

use crate::store::error::BackendError;
use crate::store::types::Execution;

/// The record of every tool call, and the cache of tool results.
pub trait ToolLog: Send + Sync + std::fmt::Debug + 'static {
    /// Records one tool call, for statistics.
    fn record_execution(&self, execution: &Execution) -> Result<(), BackendError>;

    /// Deletes the records of tool calls made at or before `before_ms`;
    /// returns how many.
    fn purge_executions(&self, before_ms: u64) -> Result<u64, BackendError>;

    /// Every recorded tool call, oldest first.
    fn executions(&self) -> Result<Vec<Execution>, BackendError>;

    /// The cached result under `key`, unless it expired at or before `now_ms`.
    /// An expired entry is invisible at once, whether or not it was removed.
    fn cache_get(&self, key: &str, now_ms: u64) -> Result<Option<String>, BackendError>;

    /// Caches `value` under `key` until `expires_at_ms`, replacing any entry;
    /// `now_ms` is the time of the host clock when it does.
    fn cache_put(
        &self,
        key: &str,
        value: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), BackendError>;

    /// Reclaims every cache entry expired at `now_ms`; returns how many.
    fn cache_sweep(&self, now_ms: u64) -> Result<u64, BackendError>;
}
