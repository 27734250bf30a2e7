//! Published plugin versions, the active ones, tool records and the tool
//! cache in Redis.

use std::collections::BTreeMap;

use crate::store::error::BackendError;
use crate::store::plugins::PluginStore;
use crate::store::tool_log::ToolLog;
use crate::store::types::Execution;

use crate::store::redis::RedisStore;
use crate::store::redis::keys::{
    ACTIVE_PLUGINS, CACHE_EXPIRY, EXECUTIONS, PLUGIN_CONFIG, cache_key, json, plugin_key,
};

/// Tool-call records the retention sweep deletes per script call.
const PURGE_BATCH: u64 = 1024;

impl PluginStore for RedisStore {
    fn publish_plugin(&self, digest: &str, bytes: &[u8]) -> Result<bool, BackendError> {
        self.with(|conn| {
            redis::cmd("SET")
                .arg(plugin_key(digest))
                .arg(bytes)
                .arg("NX")
                .query::<Option<String>>(conn)
        })
        .map(|set| set.is_some())
    }

    fn published_plugin(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.with(|conn| redis::cmd("GET").arg(plugin_key(digest)).query(conn))
    }

    fn set_active_plugin(&self, name: &str, digest: &str) -> Result<(), BackendError> {
        self.with(|conn| {
            redis::cmd("HSET")
                .arg(ACTIVE_PLUGINS)
                .arg(name)
                .arg(digest)
                .query::<()>(conn)
        })
    }

    fn active_plugins(&self) -> Result<BTreeMap<String, String>, BackendError> {
        self.with(|conn| redis::cmd("HGETALL").arg(ACTIVE_PLUGINS).query(conn))
    }

    fn set_plugin_config(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        if config.is_empty() {
            return self.with(|conn| {
                redis::cmd("HDEL")
                    .arg(PLUGIN_CONFIG)
                    .arg(name)
                    .query::<()>(conn)
            });
        }
        let text = serde_json::to_string(config).map_err(json)?;
        self.with(|conn| {
            redis::cmd("HSET")
                .arg(PLUGIN_CONFIG)
                .arg(name)
                .arg(text)
                .query::<()>(conn)
        })
    }

    fn plugin_configs(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, BackendError> {
        let texts: BTreeMap<String, String> =
            self.with(|conn| redis::cmd("HGETALL").arg(PLUGIN_CONFIG).query(conn))?;
        texts
            .into_iter()
            .map(|(name, text)| Ok((name, serde_json::from_str(&text).map_err(json)?)))
            .collect()
    }
}

impl ToolLog for RedisStore {
    fn record_execution(&self, execution: &Execution) -> Result<(), BackendError> {
        let text = serde_json::to_string(execution).map_err(json)?;
        self.with(|conn| {
            redis::cmd("RPUSH")
                .arg(EXECUTIONS)
                .arg(text)
                .query::<()>(conn)
        })
    }

    fn purge_executions(&self, before_ms: u64) -> Result<u64, BackendError> {
        let mut purged = 0;
        loop {
            let deleted: u64 = self.with(|conn| {
                self.purge_records
                    .key(EXECUTIONS)
                    .arg(before_ms)
                    .arg(PURGE_BATCH)
                    .invoke(conn)
            })?;
            purged += deleted;
            if deleted < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    fn executions(&self) -> Result<Vec<Execution>, BackendError> {
        let texts: Vec<String> = self.with(|conn| {
            redis::cmd("LRANGE")
                .arg(EXECUTIONS)
                .arg(0)
                .arg(-1)
                .query(conn)
        })?;
        texts
            .iter()
            .map(|text| serde_json::from_str(text).map_err(json))
            .collect()
    }

    fn cache_get(&self, key: &str, now_ms: u64) -> Result<Option<String>, BackendError> {
        let stored: Option<String> =
            self.with(|conn| redis::cmd("GET").arg(cache_key(key)).query(conn))?;
        Ok(stored.and_then(|stored| {
            let (expires_at_ms, value) = stored.split_once(':')?;
            (expires_at_ms.parse::<u64>().ok()? > now_ms).then(|| value.to_owned())
        }))
    }

    fn cache_put(
        &self,
        key: &str,
        value: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), BackendError> {
        // Redis expires the entry after the same time on its own clock.
        let ttl_ms = expires_at_ms.saturating_sub(now_ms).max(1);
        self.with(|conn| {
            redis::pipe()
                .cmd("SET")
                .arg(cache_key(key))
                .arg(format!("{expires_at_ms}:{value}"))
                .arg("PX")
                .arg(ttl_ms)
                .zadd(CACHE_EXPIRY, key, expires_at_ms)
                .query::<()>(conn)
        })
    }

    fn cache_sweep(&self, now_ms: u64) -> Result<u64, BackendError> {
        let expired: Vec<String> = self.with(|conn| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(CACHE_EXPIRY)
                .arg("-inf")
                .arg(now_ms)
                .query(conn)
        })?;
        if !expired.is_empty() {
            let keys: Vec<String> = expired.iter().map(|key| cache_key(key)).collect();
            self.with(|conn| {
                redis::pipe()
                    .del(&keys)
                    .zrem(CACHE_EXPIRY, &expired)
                    .query::<()>(conn)
            })?;
        }
        Ok(expired.len() as u64)
    }
}
