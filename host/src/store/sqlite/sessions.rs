//! Sessions in SQLite: reads from the reader pool, writes through the
//! writer thread.

use rusqlite::{OptionalExtension as _, params};

use crate::store::error::{BackendError, SessionStoreError};
use crate::store::sessions::SessionStore;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::sql::{backend, ms};
use crate::store::sqlite::writer::{CommitRow, Write};
use crate::store::timeline::LogEntry;
use crate::store::types::{
    Commit, Message, Role, SessionFilter, SessionPage, SessionRecord, Status,
};

impl SessionStore for SqliteStore {
    fn create(
        &self,
        session: &SessionRecord,
        messages: &[Message],
        event: &LogEntry,
    ) -> Result<(), SessionStoreError> {
        self.write(Write::Create(
            session.clone(),
            messages.to_vec(),
            event.clone(),
        ))
        .map(drop)
        .map_err(Into::into)
    }

    fn load(&self, id: &str) -> Result<Option<SessionRecord>, SessionStoreError> {
        let row = self.read(|conn| {
            conn.prepare_cached(
                "SELECT id, plugin, digest, user_id, variables, state, state_version, revision, turn,
                        status, created_at_ms, updated_at_ms, owner, delegate, log_bytes
                 FROM sessions WHERE id = ?1",
            )?
            .query_row([id], |row| {
                Ok((
                    SessionRecord {
                        id: row.get(0)?,
                        plugin: row.get(1)?,
                        digest: row.get(2)?,
                        user_id: row.get(3)?,
                        owner: row.get(12)?,
                        variables: Default::default(),
                        state: Default::default(),
                        state_version: row.get(6)?,
                        revision: row.get(7)?,
                        turn: row.get(8)?,
                        status: Status::parse(row.get_ref(9)?.as_str()?).unwrap_or(Status::Ended),
                        created_at_ms: row.get(10)?,
                        updated_at_ms: row.get(11)?,
                        delegate: row.get(13)?,
                        log_bytes: row.get(14)?,
                    },
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })
            .optional()
        })?;
        let Some((mut record, variables, state)) = row else {
            return Ok(None);
        };
        record.variables = serde_json::from_str(&variables).map_err(backend)?;
        record.state = serde_json::from_str(&state).map_err(backend)?;
        Ok(Some(record))
    }

    fn commit(&self, commit: &Commit) -> Result<(), SessionStoreError> {
        self.write(Write::Commit(CommitRow {
            session: commit.session.clone(),
            read_revision: commit.read_revision,
            state: serde_json::to_string(&commit.state).map_err(backend)?,
            turn: commit.turn,
            plugin: commit.plugin.clone(),
            delegate: commit.delegate.clone(),
            digest: commit.digest.clone(),
            state_version: commit.state_version,
            status: commit.status,
            dropped_messages: commit.dropped_messages,
            messages: commit.messages.clone(),
            history_cap: commit.history_cap,
            at_ms: commit.at_ms,
            event: commit.event.clone(),
        }))
        .map(drop)
        .map_err(Into::into)
    }

    fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, SessionStoreError> {
        let limit = i64::try_from(last).unwrap_or(i64::MAX);
        let mut messages = self.read(|conn| {
            conn.prepare_cached(
                "SELECT role, content, interrupted FROM history WHERE session_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?
            .query_map(params![id, limit], |row| {
                let role = row.get_ref(0)?.as_str()?;
                Ok(Message {
                    role: Role::parse(role).unwrap_or(Role::System),
                    content: row.get(1)?,
                    interrupted: row.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        messages.reverse();
        Ok(messages)
    }

    fn expired_sessions(
        &self,
        plugin: &str,
        idle_since_ms: u64,
        created_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, SessionStoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT id FROM sessions WHERE plugin = ?1 AND updated_at_ms <= ?2 AND status = 'active'
                 UNION
                 SELECT id FROM sessions WHERE plugin = ?1 AND created_at_ms <= ?3 AND status = 'active'
                 LIMIT ?4",
            )?
            .query_map(
                params![plugin, ms(idle_since_ms), ms(created_since_ms), limit],
                |row| row.get(0),
            )?
            .collect()
        })
            .map_err(Into::into)
    }

    fn live_sessions(&self, plugin: &str) -> Result<u64, SessionStoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM sessions WHERE plugin = ?1 AND status = 'active'",
            )?
            .query_row(params![plugin], |row| row.get(0))
        })
        .map_err(Into::into)
    }

    fn list_sessions(
        &self,
        filter: &SessionFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, SessionStoreError> {
        let ids: Vec<String> = self.read(|conn| {
            conn.prepare_cached(
                "SELECT id FROM sessions WHERE id > ?1
                   AND (?2 IS NULL OR plugin = ?2) AND (?3 IS NULL OR user_id = ?3)
                   AND (?4 IS NULL OR status = ?4)
                 ORDER BY id LIMIT ?5",
            )?
            .query_map(
                params![
                    cursor.unwrap_or(""),
                    filter.plugin,
                    filter.user,
                    filter.status.map(Status::as_str),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| row.get(0),
            )?
            .collect()
        })?;
        let next = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
        let mut sessions = Vec::with_capacity(ids.len());
        for id in ids {
            // One deleted since it was listed is left out.
            sessions.extend(self.load(&id)?);
        }
        Ok(SessionPage { sessions, next })
    }

    fn sessions_of_user(&self, user: &str) -> Result<Vec<String>, SessionStoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT id FROM sessions WHERE user_id = ?1 ORDER BY id")?
                .query_map([user], |row| row.get(0))?
                .collect()
        })
        .map_err(Into::into)
    }

    fn live_sessions_of(&self, owner: &str) -> Result<u64, SessionStoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM sessions WHERE owner = ?1 AND status = 'active'",
            )?
            .query_row(params![owner], |row| row.get(0))
        })
        .map_err(Into::into)
    }

    fn purge_ended(&self, ended_before_ms: u64) -> Result<u64, BackendError> {
        self.swept(Write::PurgeEnded { ended_before_ms })
    }

    fn delete_session(&self, id: &str) -> Result<(), SessionStoreError> {
        self.write(Write::DeleteSession(id.to_owned()))
            .map(drop)
            .map_err(Into::into)
    }
}
