//! The `kv` capability: persistent buckets that outlive sessions, scoped by
//! the host.
//!
//! A guest names a bucket and keys; the host decides where they live. `user`
//! is the session's user within the plugin, `global` is plugin-wide, and any
//! other name is a bucket the operator granted, shared by the plugins granted
//! it. The guest never sees or forms a [`Namespace`], so no key it writes can
//! land outside its own. Each operation is atomic on its own and reaches the
//! store at once: KV writes are not part of the turn's transaction.

use std::cell::RefCell;
use std::sync::Arc;

use crate::capability::bucket::Bucket;
use crate::capability::error::GuestError;
use crate::clock::Clock;
use crate::limits::Limit;
use crate::metrics::Metrics;
use crate::names::{check_bucket_name, check_kv_key, check_kv_prefix};
use crate::policy::Grants;
use crate::store::{KvStore, KvStoreError, KvWrite, Namespace, Quota};

/// Most keys one `list-keys` call returns.
pub const PAGE_SIZE: usize = 100;

/// Most buckets one turn may hold open at once.
pub const MAX_OPEN_BUCKETS: usize = 64;

/// Distinct keys a turn's record of its KV writes names; the writes past
/// them are counted only.
pub const WRITES_KEPT: usize = 100;

/// A key a turn wrote (set, swapped, incremented or deleted): the bucket as
/// the guest named it, and the key, never the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvKey {
    /// The bucket: `user`, `global` or a granted one.
    pub bucket: String,
    /// The key.
    pub key: String,
}

/// The keys a turn wrote: the first [`WRITES_KEPT`] distinct ones, and how
/// many writes of other keys there were past them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvWrites {
    /// The keys, in the order first written.
    pub keys: Vec<KvKey>,
    /// Writes past the keys kept.
    #[serde(default)]
    pub more: u64,
}

impl KvWrites {
    /// Notes a write of `key` in `bucket`.
    fn note(&mut self, bucket: &str, key: &str) {
        let kept = |written: &KvKey| written.bucket == bucket && written.key == key;
        if self.keys.iter().any(kept) {
            return;
        }
        if self.keys.len() < WRITES_KEPT {
            self.keys.push(KvKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        } else {
            self.more += 1;
        }
    }

    /// Whether no key was written.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.more == 0
    }

    /// These writes, then `other`'s.
    pub(crate) fn extend(&mut self, other: KvWrites) {
        for key in other.keys {
            self.note(&key.bucket, &key.key);
        }
        self.more += other.more;
    }
}

/// Whom a turn's KV operations act for.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    /// The plugin whose namespaces `user` and `global` are.
    pub(crate) plugin: String,
    /// The session, for log lines and messages.
    pub(crate) session: String,
    /// The session's user, whose bucket `user` is.
    pub(crate) user: Option<String>,
}

/// A page of keys and the cursor of the next, if there is one.
pub(crate) struct KeyPage {
    pub(crate) keys: Vec<String>,
    pub(crate) cursor: Option<String>,
}

/// A turn's KV: where its buckets live, whom they belong to, and how much
/// they may hold.
pub(crate) struct KvCtx {
    scope: Scope,
    store: Arc<dyn KvStore>,
    clock: Clock,
    grants: Arc<Grants>,
    metrics: Arc<Metrics>,
    quota: Quota,
    /// Largest value, in bytes.
    value_bytes: usize,
    open: usize,
    /// The keys the turn wrote.
    written: RefCell<KvWrites>,
}

impl KvCtx {
    /// KV for a turn acting for `scope`.
    pub(crate) fn new(
        scope: Scope,
        store: Arc<dyn KvStore>,
        clock: Clock,
        grants: Arc<Grants>,
        metrics: Arc<Metrics>,
        quota: Quota,
        value_bytes: usize,
    ) -> KvCtx {
        KvCtx {
            scope,
            store,
            clock,
            grants,
            metrics,
            quota,
            value_bytes,
            open: 0,
            written: RefCell::default(),
        }
    }

    /// The keys the turn wrote.
    pub(crate) fn into_written(self) -> KvWrites {
        self.written.into_inner()
    }

    /// Counts a call of `function`.
    pub(crate) fn count(&self, function: &'static str) {
        self.metrics.kv_operation(&self.scope.plugin, function);
    }

    /// Opens the bucket `name`: `user`, `global`, or one the operator granted.
    pub(crate) fn open(&mut self, name: String) -> Result<Bucket, GuestError> {
        let scope = &self.scope;
        let ns = match name.as_str() {
            "user" => match &scope.user {
                Some(user) => Namespace {
                    owner: scope.plugin.clone(),
                    scope: format!("user/{user}"),
                },
                None => {
                    return Err(GuestError::Denied(format!(
                        "bucket `user` needs a session with a user id, and session `{}` was started without one",
                        scope.session
                    )));
                }
            },
            "global" => Namespace {
                owner: scope.plugin.clone(),
                scope: "global".into(),
            },
            other => {
                check_bucket_name(other).map_err(GuestError::Invalid)?;
                if !self.grants.allows(&scope.plugin, other) {
                    return Err(GuestError::Denied(format!(
                        "plugin `{}` is not granted bucket `{other}` (the operator grants buckets in the policy file)",
                        scope.plugin
                    )));
                }
                Namespace {
                    owner: format!("@{other}"),
                    scope: "shared".into(),
                }
            }
        };
        if self.open >= MAX_OPEN_BUCKETS {
            return Err(GuestError::QuotaExceeded(format!(
                "{MAX_OPEN_BUCKETS} buckets are open in this turn already; drop one first"
            )));
        }
        self.open += 1;
        Ok(Bucket { name, ns })
    }

    /// Notes that the guest dropped one of its buckets.
    pub(crate) fn close(&mut self) {
        self.open -= 1;
    }

    pub(crate) fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, GuestError> {
        check_key(key)?;
        self.store
            .kv_get(&bucket.ns, key, self.clock.now_ms())
            .map_err(|err| self.guest_error(bucket, err))
    }

    pub(crate) fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), GuestError> {
        check_key(key)?;
        self.store
            .kv_delete(&bucket.ns, key)
            .map_err(|err| self.guest_error(bucket, err))?;
        self.written.borrow_mut().note(&bucket.name, key);
        Ok(())
    }

    pub(crate) fn list_keys(
        &self,
        bucket: &Bucket,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<KeyPage, GuestError> {
        check_kv_prefix(prefix)
            .map_err(|reason| GuestError::Invalid(format!("prefix {reason}")))?;
        if let Some(Err(reason)) = cursor.map(check_kv_key) {
            return Err(GuestError::Invalid(format!("cursor {reason}")));
        }
        // One more than a page tells whether there is a next one.
        let mut keys = self
            .store
            .kv_keys(
                &bucket.ns,
                prefix,
                cursor,
                PAGE_SIZE + 1,
                self.clock.now_ms(),
            )
            .map_err(|err| self.guest_error(bucket, err))?;
        let more = keys.len() > PAGE_SIZE;
        keys.truncate(PAGE_SIZE);
        Ok(KeyPage {
            cursor: more.then(|| keys.last().cloned()).flatten(),
            keys,
        })
    }

    pub(crate) fn increment(
        &self,
        bucket: &Bucket,
        key: &str,
        delta: i64,
    ) -> Result<i64, GuestError> {
        check_key(key)?;
        let value = self
            .store
            .kv_increment(&bucket.ns, key, delta, self.clock.now_ms(), &self.quota)
            .map_err(|err| self.guest_error(bucket, err))?;
        self.written.borrow_mut().note(&bucket.name, key);
        Ok(value)
    }

    /// A checked `set` (`only_if` is `None`) or `compare-and-swap`; returns
    /// whether it stored.
    pub(crate) fn put(
        &self,
        bucket: &Bucket,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        only_if: Option<Option<&[u8]>>,
    ) -> Result<bool, GuestError> {
        check_key(key)?;
        if value.len() > self.value_bytes {
            return Err(GuestError::Invalid(format!(
                "value is {} bytes, over the limit of {} bytes",
                value.len(),
                self.value_bytes
            )));
        }
        let now_ms = self.clock.now_ms();
        let write = KvWrite {
            value,
            expires_at_ms: expiry(now_ms, ttl_ms)?,
            only_if,
        };
        let stored = self
            .store
            .kv_put(&bucket.ns, key, &write, now_ms, &self.quota)
            .map_err(|err| self.guest_error(bucket, err))?;
        if stored {
            self.written.borrow_mut().note(&bucket.name, key);
        }
        Ok(stored)
    }

    /// What the guest gets when the store refuses or fails.
    fn guest_error(&self, bucket: &Bucket, err: KvStoreError) -> GuestError {
        match err {
            KvStoreError::QuotaExceeded(reason) => {
                self.metrics.limit_trip(&self.scope.plugin, Limit::KvQuota);
                GuestError::QuotaExceeded(format!("bucket `{}`: {reason}", bucket.name))
            }
            KvStoreError::Invalid(reason) => {
                GuestError::Invalid(format!("bucket `{}`: {reason}", bucket.name))
            }
            err => {
                tracing::warn!(plugin = self.scope.plugin, session = self.scope.session, bucket = bucket.name, error = %err, "KV operation failed");
                GuestError::Unavailable(err.to_string())
            }
        }
    }
}

/// Checks a key, or says why it is refused.
fn check_key(key: &str) -> Result<(), GuestError> {
    check_kv_key(key).map_err(|reason| GuestError::Invalid(format!("key {reason}")))
}

/// The expiry of a write with `ttl_ms`, or why the TTL is refused.
fn expiry(now_ms: u64, ttl_ms: Option<u64>) -> Result<Option<u64>, GuestError> {
    match ttl_ms {
        None => Ok(None),
        Some(0) => Err(GuestError::Invalid(
            "ttl-ms is 0; give at least 1, or none for a key that never expires".into(),
        )),
        Some(ttl) => Ok(Some(now_ms.saturating_add(ttl))),
    }
}
