//! The `kv` capability: persistent buckets that outlive sessions, scoped by
//! the host.
//!
//! A guest names a bucket and keys; the host decides where they live. `user`
//! is the session's user within the plugin, `global` is plugin-wide, and any
//! other name is a bucket the operator granted, shared by the plugins granted
//! it. The guest never sees or forms a [`Namespace`], so no key it writes can
//! land outside its own. Each operation is atomic on its own and reaches the
//! store at once: KV writes are not part of the turn's transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::instrument;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::GuestError;
use crate::bindings::agentbox::plugin::kv as wit;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::plugin::check_name;
use crate::policy::Limits;
use crate::session::SessionCtx;
use crate::store::{KvWrite, Namespace, Quota, Store, StoreError};

/// Longest KV key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Most keys one `list-keys` call returns.
pub const PAGE_SIZE: usize = 100;

/// Most buckets one turn may hold open at once.
pub const MAX_OPEN_BUCKETS: usize = 64;

/// Which named buckets the operator granted to which plugins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    buckets: BTreeMap<String, BTreeSet<String>>,
}

impl Grants {
    /// Grants the bucket `bucket` to the plugin `plugin`.
    ///
    /// Bucket names follow the rules of plugin names (`a-z 0-9 -`); `user`
    /// and `global` are not grantable, every plugin has its own.
    pub fn grant(&mut self, plugin: &str, bucket: &str) -> Result<(), String> {
        check_bucket_name(bucket)?;
        if matches!(bucket, "user" | "global") {
            return Err(format!(
                "bucket `{bucket}` is every plugin's own and cannot be granted"
            ));
        }
        self.buckets
            .entry(plugin.to_owned())
            .or_default()
            .insert(bucket.to_owned());
        Ok(())
    }

    /// Whether `plugin` may open `bucket`.
    pub fn allows(&self, plugin: &str, bucket: &str) -> bool {
        self.buckets
            .get(plugin)
            .is_some_and(|buckets| buckets.contains(bucket))
    }
}

/// An open bucket, as the guest's `bucket` resource.
#[derive(Debug)]
pub struct Bucket {
    name: String,
    ns: Namespace,
}

/// A turn's view of KV: what KV adds to the turn's session view.
pub(crate) struct KvCtx {
    /// Absent while a plugin is described.
    plugin: Option<PluginScope>,
    open: usize,
}

struct PluginScope {
    name: String,
    clock: Clock,
    grants: Arc<Grants>,
    metrics: Arc<Metrics>,
}

impl KvCtx {
    /// KV for a turn of the plugin `plugin`.
    pub(crate) fn new(
        plugin: &str,
        clock: Clock,
        grants: Arc<Grants>,
        metrics: Arc<Metrics>,
    ) -> KvCtx {
        KvCtx {
            plugin: Some(PluginScope {
                name: plugin.to_owned(),
                clock,
                grants,
                metrics,
            }),
            open: 0,
        }
    }

    /// KV outside a session, for calling `describe`: every function traps.
    pub(crate) fn detached() -> KvCtx {
        KvCtx {
            plugin: None,
            open: 0,
        }
    }
}

/// What the `kv` functions reach: the turn's KV view, its session view (for
/// the session, its user, the store and the limits), and the resource table
/// its buckets live in.
pub(crate) struct KvView<'a> {
    pub(crate) ctx: &'a mut KvCtx,
    pub(crate) session: &'a SessionCtx,
    pub(crate) table: &'a mut ResourceTable,
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Adds the `kv` interface to `linker`, reaching the view through `get`.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasKv>(linker, get)
}

/// Everything a KV function running inside a session uses.
struct Live<'a> {
    plugin: &'a str,
    session: &'a str,
    user_id: Option<&'a str>,
    store: &'a Arc<dyn Store>,
    clock: &'a Clock,
    limits: &'a Limits,
    grants: &'a Grants,
    metrics: &'a Metrics,
}

impl KvView<'_> {
    /// Everything `function` uses, after counting its call.
    fn live(&self, function: &'static str) -> wasmtime::Result<Live<'_>> {
        let scope = self.ctx.plugin.as_ref();
        let session = self.session.live_session();
        let (Some(scope), Some(session)) = (scope, session) else {
            wasmtime::bail!(
                "`kv.{function}` was called outside a session (plugins must not use KV in `describe`)"
            );
        };
        scope.metrics.kv_operation(&scope.name, function);
        Ok(Live {
            plugin: &scope.name,
            session: session.id,
            user_id: session.user_id,
            store: session.store,
            clock: &scope.clock,
            limits: self.session.limits(),
            grants: &scope.grants,
            metrics: &scope.metrics,
        })
    }

    /// The bucket behind `bucket`, and the live view, for running `function`.
    fn bucket(
        &self,
        bucket: &Resource<Bucket>,
        function: &'static str,
    ) -> wasmtime::Result<(Live<'_>, &Bucket)> {
        let live = self.live(function)?;
        Ok((live, self.table.get(bucket)?))
    }
}

/// What the guest gets when the store refuses or fails.
fn guest_error(live: &Live<'_>, bucket: &Bucket, err: StoreError) -> GuestError {
    match err {
        StoreError::QuotaExceeded(reason) => {
            live.metrics.limit_trip(live.plugin, "kv-quota");
            GuestError::QuotaExceeded(format!("bucket `{}`: {reason}", bucket.name))
        }
        StoreError::Invalid(reason) => {
            GuestError::Invalid(format!("bucket `{}`: {reason}", bucket.name))
        }
        err => {
            tracing::warn!(plugin = live.plugin, session = live.session, bucket = bucket.name, error = %err, "KV operation failed");
            GuestError::Unavailable(err.to_string())
        }
    }
}

fn quota(limits: &Limits) -> Quota {
    Quota {
        keys: limits.kv_keys,
        bytes: limits.kv_bytes,
    }
}

/// Checks a bucket name: the rules of plugin names.
fn check_bucket_name(name: &str) -> Result<(), String> {
    check_name(name, '-').map_err(|reason| format!("bucket name {reason}"))
}

/// Checks a KV key: 1 to [`MAX_KEY_BYTES`] bytes of printable ASCII without
/// spaces. The error completes "key ...".
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("is empty".into());
    }
    check_key_text(key)
}

/// The rules of [`check_key`] but for emptiness, which a prefix may be.
fn check_key_text(text: &str) -> Result<(), String> {
    if text.len() > MAX_KEY_BYTES {
        return Err(format!(
            "of {} bytes is longer than {MAX_KEY_BYTES}",
            text.len()
        ));
    }
    match text.chars().find(|c| !c.is_ascii_graphic()) {
        Some(bad) => Err(format!(
            "`{}` contains {bad:?}; keys are printable ASCII without spaces",
            text.escape_debug()
        )),
        None => Ok(()),
    }
}

/// Checks a key, or says why it is refused.
fn refuse_key(key: &str) -> Option<GuestError> {
    check_key(key)
        .err()
        .map(|reason| GuestError::Invalid(format!("key {reason}")))
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

fn check_size(live: &Live<'_>, value: &[u8]) -> Result<(), GuestError> {
    if value.len() > live.limits.value_bytes {
        return Err(GuestError::Invalid(format!(
            "value is {} bytes, over the limit of {} bytes",
            value.len(),
            live.limits.value_bytes
        )));
    }
    Ok(())
}

impl wit::Host for KvView<'_> {
    #[instrument(skip_all, fields(bucket = name))]
    fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<Bucket>, GuestError>> {
        let live = self.live("open")?;
        let ns = match name.as_str() {
            "user" => match live.user_id {
                Some(user) => Namespace {
                    owner: live.plugin.to_owned(),
                    scope: format!("user/{user}"),
                },
                None => {
                    return Ok(Err(GuestError::Denied(format!(
                        "bucket `user` needs a session with a user id, and session `{}` was started without one",
                        live.session
                    ))));
                }
            },
            "global" => Namespace {
                owner: live.plugin.to_owned(),
                scope: "global".into(),
            },
            other => {
                if let Err(reason) = check_bucket_name(other) {
                    return Ok(Err(GuestError::Invalid(reason)));
                }
                if !live.grants.allows(live.plugin, other) {
                    return Ok(Err(GuestError::Denied(format!(
                        "plugin `{}` is not granted bucket `{other}` (the operator grants buckets in the policy file)",
                        live.plugin
                    ))));
                }
                Namespace {
                    owner: format!("@{other}"),
                    scope: "shared".into(),
                }
            }
        };
        if self.ctx.open >= MAX_OPEN_BUCKETS {
            return Ok(Err(GuestError::QuotaExceeded(format!(
                "{MAX_OPEN_BUCKETS} buckets are open in this turn already; drop one first"
            ))));
        }
        self.ctx.open += 1;
        Ok(Ok(self.table.push(Bucket { name, ns })?))
    }
}

impl wit::HostBucket for KvView<'_> {
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, GuestError>> {
        let (live, bucket) = self.bucket(&bucket, "bucket.get")?;
        if let Some(err) = refuse_key(&key) {
            return Ok(Err(err));
        }
        Ok(live
            .store
            .kv_get(&bucket.ns, &key, live.clock.now_ms())
            .map_err(|err| guest_error(&live, bucket, err)))
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let (live, bucket) = self.bucket(&bucket, "bucket.set")?;
        Ok(put(&live, bucket, &key, &value, ttl_ms, None).map(drop))
    }

    fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let (live, bucket) = self.bucket(&bucket, "bucket.delete")?;
        if let Some(err) = refuse_key(&key) {
            return Ok(Err(err));
        }
        Ok(live
            .store
            .kv_delete(&bucket.ns, &key)
            .map_err(|err| guest_error(&live, bucket, err)))
    }

    fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, GuestError>> {
        self.get(bucket, key)
            .map(|result| result.map(|value| value.is_some()))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        prefix: String,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wit::KeyPage, GuestError>> {
        let (live, bucket) = self.bucket(&bucket, "bucket.list-keys")?;
        if let Err(reason) = check_key_text(&prefix) {
            return Ok(Err(GuestError::Invalid(format!("prefix {reason}"))));
        }
        if let Some(Err(reason)) = cursor.as_deref().map(check_key) {
            return Ok(Err(GuestError::Invalid(format!("cursor {reason}"))));
        }
        let keys = live.store.kv_keys(
            &bucket.ns,
            &prefix,
            cursor.as_deref(),
            PAGE_SIZE + 1,
            live.clock.now_ms(),
        );
        Ok(match keys {
            Ok(mut keys) => {
                let more = keys.len() > PAGE_SIZE;
                keys.truncate(PAGE_SIZE);
                Ok(wit::KeyPage {
                    cursor: more.then(|| keys.last().cloned()).flatten(),
                    keys,
                })
            }
            Err(err) => Err(guest_error(&live, bucket, err)),
        })
    }

    fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, GuestError>> {
        let (live, bucket) = self.bucket(&bucket, "bucket.compare-and-swap")?;
        Ok(put(
            &live,
            bucket,
            &key,
            &value,
            ttl_ms,
            Some(expected.as_deref()),
        ))
    }

    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, GuestError>> {
        let (live, bucket) = self.bucket(&bucket, "bucket.increment")?;
        if let Some(err) = refuse_key(&key) {
            return Ok(Err(err));
        }
        Ok(live
            .store
            .kv_increment(
                &bucket.ns,
                &key,
                delta,
                live.clock.now_ms(),
                &quota(live.limits),
            )
            .map_err(|err| guest_error(&live, bucket, err)))
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.ctx.open -= 1;
        Ok(())
    }
}

/// A checked `set` or `compare-and-swap`.
fn put(
    live: &Live<'_>,
    bucket: &Bucket,
    key: &str,
    value: &[u8],
    ttl_ms: Option<u64>,
    only_if: Option<Option<&[u8]>>,
) -> Result<bool, GuestError> {
    if let Some(err) = refuse_key(key) {
        return Err(err);
    }
    check_size(live, value)?;
    let now_ms = live.clock.now_ms();
    let write = KvWrite {
        value,
        expires_at_ms: expiry(now_ms, ttl_ms)?,
        only_if,
    };
    live.store
        .kv_put(&bucket.ns, key, &write, now_ms, &quota(live.limits))
        .map_err(|err| guest_error(live, bucket, err))
}
