//! KV entries in Redis, each write one run of `kv.lua` in the owner's slot.

use crate::store::error::{BackendError, KvStoreError};
use crate::store::kv::KvStore;
use crate::store::types::{KvWrite, Namespace, Quota, Usage, entry_bytes, increment_value};

use crate::store::redis::RedisStore;
use crate::store::redis::keys::{OWNERS, member, owner_key};
use crate::store::redis::reply::KvReply;

impl KvStore for RedisStore {
    fn kv_get(
        &self,
        ns: &Namespace,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, KvStoreError> {
        let owner = owner_key(&ns.owner);
        let member = member(ns, key);
        let (expires_at_ms, value): (Option<f64>, Option<Vec<u8>>) = self.with(|conn| {
            redis::pipe()
                .zscore(format!("{owner}:expiry"), &member)
                .get(format!("{owner}:e:{member}"))
                .query(conn)
        })?;
        let expired = expires_at_ms.is_some_and(|at| at <= now_ms as f64);
        Ok(value.filter(|_| !expired))
    }

    fn kv_put(
        &self,
        ns: &Namespace,
        key: &str,
        write: &KvWrite<'_>,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<bool, KvStoreError> {
        self.register_owner(&ns.owner)?;
        let member = member(ns, key);
        let (mode, expected) = match write.only_if {
            None => ("always", &[][..]),
            Some(None) => ("absent", &[][..]),
            Some(Some(expected)) => ("equals", expected),
        };
        let (expires_at, ttl) = match write.expires_at_ms {
            None => (String::new(), String::new()),
            Some(at) => (at.to_string(), at.saturating_sub(now_ms).max(1).to_string()),
        };
        let answer: KvReply = self.with(|conn| {
            self.kv_call(ns, &member, "put", now_ms)
                .arg(write.value)
                .arg(entry_bytes(key, write.value))
                .arg(expires_at)
                .arg(ttl)
                .arg(quota.keys)
                .arg(quota.bytes)
                .arg(mode)
                .arg(expected)
                .arg(quota.user_keys)
                .arg(quota.user_bytes)
                .invoke(conn)
        })?;
        match answer {
            KvReply::Stored(stored) => Ok(stored),
            refusal => Err(refusal.refusal(ns, quota, "a put")),
        }
    }

    fn kv_increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: i64,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<i64, KvStoreError> {
        self.register_owner(&ns.owner)?;
        let member = member(ns, key);
        let answer: KvReply = self.with(|conn| {
            self.kv_call(ns, &member, "incr", now_ms)
                .arg(delta)
                .arg(key.len())
                .arg(quota.keys)
                .arg(quota.bytes)
                .arg(quota.user_keys)
                .arg(quota.user_bytes)
                .invoke(conn)
        })?;
        match answer {
            KvReply::Counter(value) => Ok(value),
            KvReply::NotInteger(before) => {
                // Redis refused the increment; name the reason as every backend does.
                increment_value(Some(&before), delta)?;
                Err(KvStoreError::Invalid(format!(
                    "the value {:?} is not an integer in decimal text",
                    String::from_utf8_lossy(&before)
                )))
            }
            refusal => Err(refusal.refusal(ns, quota, "an increment")),
        }
    }

    fn kv_delete(&self, ns: &Namespace, key: &str) -> Result<(), KvStoreError> {
        let member = member(ns, key);
        self.with(|conn| self.kv_call(ns, &member, "delete", 0).invoke::<()>(conn))
            .map_err(Into::into)
    }

    fn kv_keys(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, KvStoreError> {
        let scope = member(ns, "");
        let low = match after {
            Some(after) if after > prefix => format!("({scope}{after}"),
            _ => format!("[{scope}{prefix}"),
        };
        let high = format!("({scope}{prefix}\u{7f}");
        let members: Vec<String> = self.with(|conn| {
            self.kv_call(ns, "", "list", now_ms)
                .arg(low)
                .arg(high)
                .arg(limit)
                .invoke(conn)
        })?;
        Ok(members
            .into_iter()
            .filter_map(|member| member.strip_prefix(&scope).map(str::to_owned))
            .collect())
    }

    fn kv_owners(&self) -> Result<Vec<String>, KvStoreError> {
        self.with(|conn| redis::cmd("SMEMBERS").arg(OWNERS).query(conn))
            .map_err(Into::into)
    }

    fn kv_usage(&self, owner: &str) -> Result<Usage, KvStoreError> {
        let (keys, bytes): (Option<u64>, Option<u64>) = self.with(|conn| {
            redis::cmd("HMGET")
                .arg(format!("{}:usage", owner_key(owner)))
                .arg("#keys")
                .arg("#bytes")
                .query(conn)
        })?;
        Ok(Usage {
            keys: keys.unwrap_or_default(),
            bytes: bytes.unwrap_or_default(),
        })
    }

    fn kv_sweep(&self, now_ms: u64) -> Result<u64, BackendError> {
        let owners: Vec<String> =
            self.with(|conn| redis::cmd("SMEMBERS").arg(OWNERS).query(conn))?;
        let mut swept = 0;
        for owner in owners {
            let ns = Namespace {
                owner,
                scope: String::new(),
            };
            swept +=
                self.with(|conn| self.kv_call(&ns, "", "sweep", now_ms).invoke::<u64>(conn))?;
        }
        Ok(swept)
    }
}
