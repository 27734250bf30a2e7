//! The operator's view of KV: read, write, delete and list the entries of
//! a plugin's bucket (`global`, `user` for one user id, or a named bucket),
//! to preload or inspect data such as a CRM profile under `customer:ID`,
//! under the same key rules, value bound and quotas as a plugin's writes.

use crate::host::Host;
use crate::names::{check_bucket_name, check_kv_key, check_plugin_name, check_user_id};
use crate::store::{KvStoreError, KvWrite, Namespace, Quota};

/// Why the operator's KV request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorKvError {
    /// The plugin, bucket, user, key or value breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The write would go over a quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(KvStoreError),
}

impl From<KvStoreError> for OperatorKvError {
    fn from(err: KvStoreError) -> Self {
        match err {
            KvStoreError::QuotaExceeded(reason) => OperatorKvError::QuotaExceeded(reason),
            KvStoreError::Invalid(reason) => OperatorKvError::Invalid(reason),
            err => OperatorKvError::Store(err),
        }
    }
}

/// A bucket of a plugin as the operator names it.
#[derive(Debug, Clone)]
pub struct BucketRef {
    /// The plugin.
    pub plugin: String,
    /// `global`, `user`, or a named bucket.
    pub bucket: String,
    /// The user, for the `user` bucket.
    pub user: Option<String>,
}

impl BucketRef {
    /// The store namespace of this bucket, as the plugin's turns reach it.
    fn namespace(&self) -> Result<Namespace, OperatorKvError> {
        let invalid = OperatorKvError::Invalid;
        check_plugin_name(&self.plugin)
            .map_err(|reason| invalid(format!("the plugin name {reason}")))?;
        match (self.bucket.as_str(), &self.user) {
            ("user", Some(user)) => {
                check_user_id(user).map_err(invalid)?;
                Ok(Namespace {
                    owner: self.plugin.clone(),
                    scope: format!("user/{user}"),
                })
            }
            ("user", None) => Err(invalid(
                "bucket `user` needs the user: add `?user=ID`".to_owned(),
            )),
            (_, Some(_)) => Err(invalid(format!(
                "only bucket `user` takes a user, not `{}`",
                self.bucket
            ))),
            ("global", None) => Ok(Namespace {
                owner: self.plugin.clone(),
                scope: "global".to_owned(),
            }),
            (name, None) => {
                check_bucket_name(name).map_err(invalid)?;
                Ok(Namespace {
                    owner: format!("@{name}"),
                    scope: "shared".to_owned(),
                })
            }
        }
    }
}

impl Host {
    /// The operator's reads and writes of KV.
    pub fn operator_kv(&self) -> OperatorKv<'_> {
        OperatorKv { host: self }
    }
}

/// The operator's reads and writes of KV ([`Host::operator_kv`]).
#[derive(Debug, Clone, Copy)]
pub struct OperatorKv<'a> {
    host: &'a Host,
}

impl OperatorKv<'_> {
    /// The live value under `key` in `bucket`.
    pub async fn get(
        &self,
        bucket: &BucketRef,
        key: &str,
    ) -> Result<Option<Vec<u8>>, OperatorKvError> {
        let (ns, key) = (bucket.namespace()?, checked_key(key)?);
        let now_ms = self.host.parts.clock.now_ms();
        self.host
            .parts
            .on_store(move |store| Ok(store.kv_get(&ns, &key, now_ms)?))
            .await
    }

    /// Stores `value` under `key` in `bucket`, expiring after `ttl_ms` if
    /// given, within the value bound and quotas of the plugin.
    pub async fn put(
        &self,
        bucket: &BucketRef,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), OperatorKvError> {
        let (ns, key) = (bucket.namespace()?, checked_key(key)?);
        let limits = self.host.parts.limits_for(&bucket.plugin).clone();
        if value.len() > limits.value_bytes {
            return Err(OperatorKvError::Invalid(format!(
                "the value is {} bytes, over the limit of {} bytes",
                value.len(),
                limits.value_bytes
            )));
        }
        if ttl_ms == Some(0) {
            return Err(OperatorKvError::Invalid(
                "ttl_ms must be at least 1".to_owned(),
            ));
        }
        let now_ms = self.host.parts.clock.now_ms();
        let quota = Quota {
            keys: limits.kv_keys,
            bytes: limits.kv_bytes,
            user_keys: limits.kv_user_keys,
            user_bytes: limits.kv_user_bytes,
        };
        self.host
            .parts
            .on_store(move |store| {
                let write = KvWrite {
                    value: &value,
                    expires_at_ms: ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
                    only_if: None,
                };
                store.kv_put(&ns, &key, &write, now_ms, &quota)?;
                Ok(())
            })
            .await
    }

    /// Removes `key` from `bucket`; removing an absent key does nothing.
    pub async fn delete(&self, bucket: &BucketRef, key: &str) -> Result<(), OperatorKvError> {
        let (ns, key) = (bucket.namespace()?, checked_key(key)?);
        self.host
            .parts
            .on_store(move |store| Ok(store.kv_delete(&ns, &key)?))
            .await
    }

    /// Up to `limit` live keys of `bucket` starting with `prefix`, after
    /// `after`, in order.
    pub async fn keys(
        &self,
        bucket: &BucketRef,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, OperatorKvError> {
        let ns = bucket.namespace()?;
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        let now_ms = self.host.parts.clock.now_ms();
        self.host
            .parts
            .on_store(move |store| {
                Ok(store.kv_keys(&ns, &prefix, after.as_deref(), limit, now_ms)?)
            })
            .await
    }
}

fn checked_key(key: &str) -> Result<String, OperatorKvError> {
    check_kv_key(key).map_err(OperatorKvError::Invalid)?;
    Ok(key.to_owned())
}
