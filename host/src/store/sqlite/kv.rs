//! KV entries in SQLite: reads from the reader pool, writes through the
//! writer thread.

use rusqlite::params;

use crate::store::error::{BackendError, KvStoreError};
use crate::store::kv::KvStore;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::entries::{KEY_END, live_value, usage};
use crate::store::sqlite::sql::ms;
use crate::store::sqlite::writer::{Applied, Write};
use crate::store::types::{KvWrite, Namespace, Quota, Usage};

impl KvStore for SqliteStore {
    fn kv_get(
        &self,
        ns: &Namespace,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, KvStoreError> {
        self.read(|conn| live_value(conn, ns, key, now_ms))
            .map_err(Into::into)
    }

    fn kv_put(
        &self,
        ns: &Namespace,
        key: &str,
        write: &KvWrite<'_>,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<bool, KvStoreError> {
        let applied = self.write(Write::KvPut {
            ns: ns.clone(),
            key: key.to_owned(),
            value: write.value.to_vec(),
            expires_at_ms: write.expires_at_ms,
            only_if: write.only_if.map(|expected| expected.map(<[u8]>::to_vec)),
            now_ms,
            quota: *quota,
        })?;
        Ok(matches!(applied, Applied::Stored(true)))
    }

    fn kv_increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: i64,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<i64, KvStoreError> {
        match self.write(Write::KvIncrement {
            ns: ns.clone(),
            key: key.to_owned(),
            delta,
            now_ms,
            quota: *quota,
        })? {
            Applied::Counter(value) => Ok(value),
            other => Err(BackendError::new(format!(
                "the writer answered an increment with {other:?}"
            ))
            .into()),
        }
    }

    fn kv_delete(&self, ns: &Namespace, key: &str) -> Result<(), KvStoreError> {
        self.write(Write::KvDelete {
            ns: ns.clone(),
            key: key.to_owned(),
        })
        .map(drop)
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let end = format!("{prefix}{KEY_END}");
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT key FROM kv
                 WHERE owner = ?1 AND scope = ?2 AND key >= ?3 AND key < ?4
                   AND (?5 IS NULL OR key > ?5)
                   AND (expires_at_ms IS NULL OR expires_at_ms > ?6)
                 ORDER BY key LIMIT ?7",
            )?
            .query_map(
                params![ns.owner, ns.scope, prefix, end, after, ms(now_ms), limit],
                |row| row.get(0),
            )?
            .collect()
        })
        .map_err(Into::into)
    }

    fn kv_owners(&self) -> Result<Vec<String>, KvStoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT owner FROM kv_usage")?
                .query_map([], |row| row.get(0))?
                .collect()
        })
        .map_err(Into::into)
    }

    fn kv_usage(&self, owner: &str) -> Result<Usage, KvStoreError> {
        self.read(|conn| usage(conn, owner)).map_err(Into::into)
    }

    fn kv_sweep(&self, now_ms: u64) -> Result<u64, BackendError> {
        self.swept(Write::KvSweep { now_ms })
    }
}
