//! Where KV entries live: by namespace, with expiry and quotas.

use crate::store::error::{BackendError, KvStoreError};
use crate::store::types::{KvWrite, Namespace, Quota, Usage};

/// Persistent key-value entries that outlive sessions.
///
/// Each operation is atomic on its own. An expired entry is invisible at
/// once, whether or not it was reclaimed yet.
pub trait KvStore: Send + Sync + std::fmt::Debug + 'static {
    /// The live value under `key` in `ns`.
    fn kv_get(
        &self,
        ns: &Namespace,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, KvStoreError>;

    /// Stores a value under `key` in `ns`, atomically, if its condition holds;
    /// returns whether it stored. An expired entry counts as absent. Fails
    /// with [`KvStoreError::QuotaExceeded`], changing nothing, if the owner
    /// would go over `quota` even after its expired entries are reclaimed.
    fn kv_put(
        &self,
        ns: &Namespace,
        key: &str,
        write: &KvWrite<'_>,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<bool, KvStoreError>;

    /// Adds `delta` to the integer under `key` in `ns` (see
    /// [`crate::store::increment_value`]), keeping the key's expiry, and
    /// returns the new value.
    fn kv_increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: i64,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<i64, KvStoreError>;

    /// Removes `key` from `ns`; removing an absent key does nothing.
    fn kv_delete(&self, ns: &Namespace, key: &str) -> Result<(), KvStoreError>;

    /// Up to `limit` live keys of `ns` that start with `prefix` and sort
    /// after `after` (bytewise), in ascending order.
    fn kv_keys(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, KvStoreError>;

    /// Every owner that holds, or has held, KV entries.
    fn kv_owners(&self) -> Result<Vec<String>, KvStoreError>;

    /// What `owner` holds, expired entries not yet reclaimed included.
    fn kv_usage(&self, owner: &str) -> Result<Usage, KvStoreError>;

    /// Reclaims every KV entry expired at `now_ms`; returns how many.
    fn kv_sweep(&self, now_ms: u64) -> Result<u64, BackendError>;
}
