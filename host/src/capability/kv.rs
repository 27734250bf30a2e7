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
use crate::limits::{Limit, Limits};
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

/// The `kv` capability as the host holds it: where buckets live, the
/// clock their entries expire by, the buckets the policy grants, and what
/// is counted. A call's [`KvCtx`] is made from it.
#[derive(Clone)]
pub(crate) struct KvService {
    store: Arc<dyn KvStore>,
    clock: Clock,
    grants: Arc<Grants>,
    metrics: Arc<Metrics>,
}

impl KvService {
    pub(crate) fn new(
        store: Arc<dyn KvStore>,
        clock: Clock,
        grants: Grants,
        metrics: Arc<Metrics>,
    ) -> KvService {
        KvService {
            store,
            clock,
            grants: Arc::new(grants),
            metrics,
        }
    }

    /// KV for one call acting for `scope`, within the quotas and value
    /// bound of `limits`.
    pub(crate) fn for_call(&self, scope: Scope, limits: &Limits) -> KvCtx {
        KvCtx {
            scope,
            service: self.clone(),
            quota: Quota {
                keys: limits.kv_keys,
                bytes: limits.kv_bytes,
                user_keys: limits.kv_user_keys,
                user_bytes: limits.kv_user_bytes,
            },
            value_bytes: limits.value_bytes,
            open: 0,
            written: RefCell::default(),
        }
    }
}

/// A call's KV: whom its buckets belong to, and how much they may hold.
pub(crate) struct KvCtx {
    scope: Scope,
    service: KvService,
    quota: Quota,
    /// Largest value, in bytes.
    value_bytes: usize,
    open: usize,
    /// The keys the turn wrote.
    written: RefCell<KvWrites>,
}

impl KvCtx {
    /// The keys the turn wrote.
    pub(crate) fn into_written(self) -> KvWrites {
        self.written.into_inner()
    }

    /// Counts a call of `function`.
    pub(crate) fn count(&self, function: &'static str) {
        self.service
            .metrics
            .kv_operation(&self.scope.plugin, function);
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
                if !self.service.grants.allows(&scope.plugin, other) {
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
        self.service
            .store
            .kv_get(&bucket.ns, key, self.service.clock.now_ms())
            .map_err(|err| self.guest_error(bucket, err))
    }

    pub(crate) fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), GuestError> {
        check_key(key)?;
        self.service
            .store
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
            .service
            .store
            .kv_keys(
                &bucket.ns,
                prefix,
                cursor,
                PAGE_SIZE + 1,
                self.service.clock.now_ms(),
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
            .service
            .store
            .kv_increment(
                &bucket.ns,
                key,
                delta,
                self.service.clock.now_ms(),
                &self.quota,
            )
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
        let now_ms = self.service.clock.now_ms();
        let write = KvWrite {
            value,
            expires_at_ms: expiry(now_ms, ttl_ms)?,
            only_if,
        };
        let stored = self
            .service
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
                self.service
                    .metrics
                    .limit_trip(&self.scope.plugin, Limit::KvQuota);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::MemoryStore;

    /// KV over one memory store on a test clock, bucket `crm` granted to
    /// plugins `shop` and `desk`.
    fn service() -> (KvService, Clock) {
        let clock = Clock::manual(1_000);
        let mut grants = Grants::default();
        for plugin in ["shop", "desk"] {
            grants.grant(plugin, "crm").unwrap();
        }
        let store = Arc::new(MemoryStore::default());
        let service = KvService::new(store, clock.clone(), grants, Arc::default());
        (service, clock)
    }

    /// A call's KV for `plugin` in session `s1` of `user`.
    fn call(service: &KvService, plugin: &str, user: Option<&str>, limits: &Limits) -> KvCtx {
        let scope = Scope {
            plugin: plugin.to_owned(),
            session: "s1".to_owned(),
            user: user.map(str::to_owned),
        };
        service.for_call(scope, limits)
    }

    fn set(kv: &KvCtx, bucket: &Bucket, key: &str, value: &[u8]) -> Result<bool, GuestError> {
        kv.put(bucket, key, value, None, None)
    }

    #[test]
    fn bucket_user_is_the_sessions_users_and_needs_a_user() {
        let (service, _) = service();
        let limits = Limits::default();
        let mut ann = call(&service, "shop", Some("ann"), &limits);
        let mut bob = call(&service, "shop", Some("bob"), &limits);
        let (ann_bucket, bob_bucket) = (
            ann.open("user".into()).unwrap(),
            bob.open("user".into()).unwrap(),
        );
        set(&ann, &ann_bucket, "cart", b"socks").unwrap();
        assert_eq!(
            ann.get(&ann_bucket, "cart").unwrap(),
            Some(b"socks".to_vec())
        );
        assert_eq!(bob.get(&bob_bucket, "cart").unwrap(), None);

        let mut anonymous = call(&service, "shop", None, &limits);
        let err = anonymous.open("user".into()).unwrap_err();
        assert!(
            matches!(&err, GuestError::Denied(reason) if reason.contains("session `s1`")),
            "{err:?}"
        );
    }

    #[test]
    fn bucket_global_is_each_plugins_own_and_a_named_bucket_needs_the_policys_grant() {
        let (service, _) = service();
        let limits = Limits::default();
        let mut shop = call(&service, "shop", None, &limits);
        let mut desk = call(&service, "desk", None, &limits);
        let shop_global = shop.open("global".into()).unwrap();
        set(&shop, &shop_global, "motd", b"hello").unwrap();
        let desk_global = desk.open("global".into()).unwrap();
        assert_eq!(desk.get(&desk_global, "motd").unwrap(), None);

        // A granted bucket is one for every plugin granted it.
        let shop_crm = shop.open("crm".into()).unwrap();
        set(&shop, &shop_crm, "customer:7", b"gold").unwrap();
        let desk_crm = desk.open("crm".into()).unwrap();
        assert_eq!(
            desk.get(&desk_crm, "customer:7").unwrap(),
            Some(b"gold".to_vec())
        );

        let mut intruder = call(&service, "intruder", None, &limits);
        let err = intruder.open("crm".into()).unwrap_err();
        assert!(
            matches!(&err, GuestError::Denied(reason) if reason.contains("not granted bucket `crm`")),
            "{err:?}"
        );
        let err = intruder.open("Not A Name".into()).unwrap_err();
        assert!(matches!(err, GuestError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn a_write_past_the_value_bound_or_a_quota_is_refused_and_stores_nothing() {
        let (service, _) = service();
        let limits = Limits {
            value_bytes: 8,
            kv_keys: 2,
            ..Limits::default()
        };
        let mut kv = call(&service, "shop", None, &limits);
        let bucket = kv.open("global".into()).unwrap();
        let err = set(&kv, &bucket, "big", b"nine byte").unwrap_err();
        assert!(
            matches!(&err, GuestError::Invalid(reason) if reason.contains("over the limit of 8 bytes")),
            "{err:?}"
        );
        assert_eq!(kv.get(&bucket, "big").unwrap(), None);

        set(&kv, &bucket, "a", b"1").unwrap();
        set(&kv, &bucket, "b", b"2").unwrap();
        let err = set(&kv, &bucket, "c", b"3").unwrap_err();
        assert!(matches!(err, GuestError::QuotaExceeded(_)), "{err:?}");
        assert_eq!(kv.get(&bucket, "c").unwrap(), None);
        // Replacing a key adds none.
        set(&kv, &bucket, "a", b"one").unwrap();
        assert_eq!(kv.get(&bucket, "a").unwrap(), Some(b"one".to_vec()));
    }

    #[test]
    fn keys_are_listed_a_page_at_a_time_from_a_cursor() {
        let (service, _) = service();
        let limits = Limits::default();
        let mut kv = call(&service, "shop", None, &limits);
        let bucket = kv.open("global".into()).unwrap();
        let wanted: Vec<String> = (0..250).map(|n| format!("order:{n:03}")).collect();
        for key in &wanted {
            set(&kv, &bucket, key, b"x").unwrap();
        }
        set(&kv, &bucket, "profile", b"x").unwrap();

        let (mut listed, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = kv.list_keys(&bucket, "order:", cursor.as_deref()).unwrap();
            assert!(page.keys.len() <= PAGE_SIZE);
            listed.extend(page.keys);
            pages += 1;
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!((pages, listed), (3, wanted));

        let err = kv.list_keys(&bucket, "", Some("")).err().unwrap();
        assert!(
            matches!(&err, GuestError::Invalid(reason) if reason.starts_with("cursor")),
            "{err:?}"
        );
    }

    #[test]
    fn an_entry_expires_by_the_hosts_clock_and_a_ttl_of_zero_is_refused() {
        let (service, clock) = service();
        let limits = Limits::default();
        let mut kv = call(&service, "shop", None, &limits);
        let bucket = kv.open("global".into()).unwrap();
        kv.put(&bucket, "code", b"1234", Some(60_000), None)
            .unwrap();
        clock.advance(Duration::from_secs(59));
        assert_eq!(kv.get(&bucket, "code").unwrap(), Some(b"1234".to_vec()));
        clock.advance(Duration::from_secs(2));
        assert_eq!(kv.get(&bucket, "code").unwrap(), None);

        let err = kv.put(&bucket, "code", b"1", Some(0), None).unwrap_err();
        assert!(matches!(err, GuestError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn the_keys_written_are_noted_once_each_and_counted_past_the_kept() {
        let (service, _) = service();
        let limits = Limits::default();
        let mut kv = call(&service, "shop", Some("ann"), &limits);
        let (global, user) = (
            kv.open("global".into()).unwrap(),
            kv.open("user".into()).unwrap(),
        );
        set(&kv, &global, "a", b"1").unwrap();
        set(&kv, &global, "a", b"2").unwrap();
        kv.increment(&user, "visits", 1).unwrap();
        kv.delete(&global, "gone").unwrap();
        // A swap that finds another value stores nothing, and is no write.
        let swapped = kv
            .put(&global, "a", b"3", None, Some(Some(b"1".as_slice())))
            .unwrap();
        assert!(!swapped);
        for n in 0..WRITES_KEPT {
            set(&kv, &global, &format!("k{n}"), b"x").unwrap();
        }
        let written = kv.into_written();
        let first: Vec<(&str, &str)> = written.keys[..3]
            .iter()
            .map(|key| (key.bucket.as_str(), key.key.as_str()))
            .collect();
        assert_eq!(
            first,
            [("global", "a"), ("user", "visits"), ("global", "gone")]
        );
        assert_eq!((written.keys.len(), written.more), (WRITES_KEPT, 3));
    }

    #[test]
    fn a_call_holds_a_bounded_number_of_buckets_open() {
        let (service, _) = service();
        let limits = Limits::default();
        let mut kv = call(&service, "shop", None, &limits);
        for _ in 0..MAX_OPEN_BUCKETS {
            kv.open("global".into()).unwrap();
        }
        let err = kv.open("global".into()).unwrap_err();
        assert!(matches!(err, GuestError::QuotaExceeded(_)), "{err:?}");
        kv.close();
        kv.open("global".into()).unwrap();
    }
}
