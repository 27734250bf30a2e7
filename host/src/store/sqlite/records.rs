//! Published plugin versions, the active ones, tool records and the tool
//! cache in SQLite.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension as _, params};

use crate::store::error::BackendError;
use crate::store::plugins::PluginStore;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::sql::ms;
use crate::store::sqlite::writer::{Applied, Write};
use crate::store::tool_log::ToolLog;
use crate::store::types::{Execution, OutboundUse, ToolOutcome};

impl PluginStore for SqliteStore {
    fn publish_plugin(&self, digest: &str, bytes: &[u8]) -> Result<bool, BackendError> {
        let applied = self.write(Write::PublishPlugin {
            digest: digest.to_owned(),
            component: bytes.to_vec(),
        })?;
        Ok(matches!(applied, Applied::Stored(true)))
    }

    fn published_plugin(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT component FROM plugin_versions WHERE digest = ?1")?
                .query_row([digest], |row| row.get(0))
                .optional()
        })
        .map_err(Into::into)
    }

    fn set_active_plugin(&self, name: &str, digest: &str) -> Result<(), BackendError> {
        self.write(Write::ActivatePlugin {
            name: name.to_owned(),
            digest: digest.to_owned(),
        })
        .map(drop)
        .map_err(Into::into)
    }

    fn active_plugins(&self) -> Result<BTreeMap<String, String>, BackendError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT name, digest FROM active_plugins")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(Into::into)
    }

    fn set_plugin_config(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let config = (!config.is_empty())
            .then(|| serde_json::to_string(config).expect("a map of strings is JSON"));
        self.write(Write::PluginConfig {
            name: name.to_owned(),
            config,
        })
        .map(drop)
        .map_err(Into::into)
    }

    fn plugin_configs(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, BackendError> {
        let rows: Vec<(String, String)> = self.read(|conn| {
            conn.prepare_cached("SELECT name, config FROM plugin_config")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })?;
        rows.into_iter()
            .map(|(name, config)| {
                serde_json::from_str(&config)
                    .map(|config| (name, config))
                    .map_err(|err| {
                        BackendError::caused("a plugin's configuration is malformed", err)
                    })
            })
            .collect()
    }
}

impl ToolLog for SqliteStore {
    fn record_execution(&self, execution: &Execution) -> Result<(), BackendError> {
        self.write(Write::Execution(execution.clone()))
            .map(drop)
            .map_err(Into::into)
    }

    fn purge_executions(&self, before_ms: u64) -> Result<u64, BackendError> {
        self.swept(Write::PurgeExecutions { before_ms })
    }

    fn executions(&self) -> Result<Vec<Execution>, BackendError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT plugin, digest, tool, session_id, duration_us, outcome, at_ms,
                        outbound_requests, outbound_refused, outbound_bytes, id, called_by
                 FROM executions ORDER BY rowid",
            )?
            .query_map([], |row| {
                Ok(Execution {
                    id: row.get(10)?,
                    called_by: row.get(11)?,
                    plugin: row.get(0)?,
                    digest: row.get(1)?,
                    tool: row.get(2)?,
                    session: row.get(3)?,
                    duration_us: row.get(4)?,
                    outcome: ToolOutcome::parse(row.get_ref(5)?.as_str()?)
                        .unwrap_or(ToolOutcome::GuestError),
                    at_ms: row.get(6)?,
                    outbound: OutboundUse {
                        requests: row.get(7)?,
                        refused: row.get(8)?,
                        response_bytes: row.get(9)?,
                    },
                })
            })?
            .collect()
        })
        .map_err(Into::into)
    }

    fn cache_get(&self, key: &str, now_ms: u64) -> Result<Option<String>, BackendError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT value FROM tool_cache WHERE key = ?1 AND expires_at_ms > ?2",
            )?
            .query_row(params![key, ms(now_ms)], |row| row.get(0))
            .optional()
        })
        .map_err(Into::into)
    }

    fn cache_put(
        &self,
        key: &str,
        value: &str,
        expires_at_ms: u64,
        _now_ms: u64,
    ) -> Result<(), BackendError> {
        self.write(Write::CachePut {
            key: key.to_owned(),
            value: value.to_owned(),
            expires_at_ms,
        })
        .map(drop)
        .map_err(Into::into)
    }

    fn cache_sweep(&self, now_ms: u64) -> Result<u64, BackendError> {
        self.swept(Write::CacheSweep { now_ms })
    }
}
