//! The one writer thread: every write of the SQLite store goes through it,
//! and the writes waiting at once share one transaction (group commit),
//! each inside a savepoint of its own so that one failing leaves the
//! others whole.

use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use crate::store::error::{BackendError, SessionStoreError};
use crate::store::sqlite::entries::{
    kv_store, live_value, reclaim, set_usage, uncount_user, usage,
};
use crate::store::sqlite::events::{append_event, drop_newest_messages};
use crate::store::sqlite::removal::{delete_session, erase_user};
use crate::store::sqlite::sql::{Failed, backend, ms, to_sql};
use crate::store::timeline::LogEntry;
use crate::store::types::{
    Execution, HistoryCap, Message, Namespace, Quota, SessionRecord, Status, increment_value,
};
use crate::store::users::Erased;

/// Commits gathered into one transaction at most. Bounds how long the first
/// commit of a batch waits for the last one.
const MAX_BATCH: usize = 512;

#[derive(Debug)]
pub(super) enum Write {
    Create(SessionRecord, Vec<Message>, LogEntry),
    Commit(CommitRow),
    Execution(Execution),
    CachePut {
        key: String,
        value: String,
        expires_at_ms: u64,
    },
    DeleteSession(String),
    EraseUser(String),
    PurgeEnded {
        ended_before_ms: u64,
    },
    PurgeExecutions {
        before_ms: u64,
    },
    KvPut {
        ns: Namespace,
        key: String,
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
        only_if: Option<Option<Vec<u8>>>,
        now_ms: u64,
        quota: Quota,
    },
    KvIncrement {
        ns: Namespace,
        key: String,
        delta: i64,
        now_ms: u64,
        quota: Quota,
    },
    KvDelete {
        ns: Namespace,
        key: String,
    },
    KvSweep {
        now_ms: u64,
    },
    CacheSweep {
        now_ms: u64,
    },
    PublishPlugin {
        digest: String,
        component: Vec<u8>,
    },
    ActivatePlugin {
        name: String,
        digest: String,
    },
    /// An operator's configuration of a plugin, as JSON; `None` removes it.
    PluginConfig {
        name: String,
        config: Option<String>,
    },
}

/// What a write produced, besides succeeding.
#[derive(Debug)]
pub(super) enum Applied {
    Done,
    Stored(bool),
    Counter(i64),
    Swept(u64),
    Erased(Erased),
}

/// A [`Commit`] as the writer stores it, its state serialized by the caller
/// so that the one writer thread spends its time on SQL alone.
#[derive(Debug)]
pub(super) struct CommitRow {
    pub(super) session: String,
    pub(super) read_revision: u64,
    pub(super) state: String,
    pub(super) turn: u64,
    pub(super) plugin: String,
    pub(super) delegate: Option<String>,
    pub(super) digest: String,
    pub(super) state_version: u32,
    pub(super) status: Status,
    pub(super) dropped_messages: u64,
    pub(super) messages: Vec<Message>,
    pub(super) history_cap: HistoryCap,
    pub(super) at_ms: u64,
    pub(super) event: LogEntry,
}

#[derive(Debug)]
pub(super) struct Request {
    pub(super) write: Write,
    pub(super) done: mpsc::SyncSender<Result<Applied, Failed>>,
}

/// Applies queued writes until every sender is gone, gathering the writes
/// that are waiting into one transaction.
pub(super) fn write_loop(conn: &mut Connection, requests: &mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter().take(MAX_BATCH - 1));
        let results = apply_batch(conn, &batch);
        for (request, result) in batch.into_iter().zip(results) {
            // A caller that gave up waiting has nobody left to tell.
            let _ = request.done.send(result);
        }
    }
}

/// Applies each write in its own savepoint of one transaction, so a failed
/// write leaves no trace and does not fail the others.
fn apply_batch(conn: &mut Connection, batch: &[Request]) -> Vec<Result<Applied, Failed>> {
    let transaction = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(err) => {
            return batch
                .iter()
                .map(|_| Err(Failed::Backend(BackendError::new(format!("SQLite: {err}")))))
                .collect();
        }
    };
    let mut transaction = transaction;
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        let result = transaction
            .savepoint()
            .map_err(backend)
            .and_then(|savepoint| {
                let applied = apply(&savepoint, &request.write)?;
                savepoint.commit().map_err(backend)?;
                Ok(applied)
            });
        results.push(result);
    }
    if let Err(err) = transaction.commit() {
        let err = err.to_string();
        results
            .iter_mut()
            .filter(|result| result.is_ok())
            .for_each(|result| {
                *result = Err(Failed::Backend(BackendError::new(format!("SQLite: {err}"))))
            });
    }
    results
}

fn apply(conn: &Connection, write: &Write) -> Result<Applied, Failed> {
    match write {
        Write::Create(session, messages, event) => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO sessions (id, plugin, digest, user_id, variables, state, state_version,
                        revision, turn, status, created_at_ms, updated_at_ms, history_len, owner,
                        delegate, log_bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0, ?13, ?14, ?15)
                     ON CONFLICT (id) DO NOTHING",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        session.id,
                        session.plugin,
                        session.digest,
                        session.user_id,
                        serde_json::to_string(&session.variables).map_err(to_sql)?,
                        serde_json::to_string(&session.state).map_err(to_sql)?,
                        session.state_version,
                        session.revision,
                        session.turn,
                        session.status.as_str(),
                        session.created_at_ms,
                        session.updated_at_ms,
                        session.owner,
                        session.delegate,
                        event.body.len(),
                    ])
                })
                .map_err(backend)?;
            if inserted == 0 {
                return Err(SessionStoreError::Exists(session.id.clone()).into());
            }
            append_event(conn, &session.id, session.revision, event).map_err(backend)?;
            append_history(conn, &session.id, messages, None).map(|()| Applied::Done)
        }
        Write::Commit(commit) => {
            let updated = conn
                .prepare_cached(
                    "UPDATE sessions SET state = ?3, revision = revision + 1, turn = ?4, digest = ?5,
                        state_version = ?6, status = ?7, updated_at_ms = ?8, plugin = ?9,
                        delegate = ?10, log_bytes = log_bytes + ?11
                     WHERE id = ?1 AND revision = ?2",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        commit.session,
                        commit.read_revision,
                        commit.state,
                        commit.turn,
                        commit.digest,
                        commit.state_version,
                        commit.status.as_str(),
                        commit.at_ms,
                        commit.plugin,
                        commit.delegate,
                        commit.event.body.len(),
                    ])
                })
                .map_err(backend)?;
            if updated == 0 {
                let stored: Option<u64> = conn
                    .prepare_cached("SELECT revision FROM sessions WHERE id = ?1")
                    .and_then(|mut statement| {
                        statement
                            .query_row([&commit.session], |row| row.get(0))
                            .optional()
                    })
                    .map_err(backend)?;
                return Err(match stored {
                    None => SessionStoreError::NotFound(commit.session.clone()),
                    Some(stored) => SessionStoreError::Conflict {
                        session: commit.session.clone(),
                        read: commit.read_revision,
                        stored,
                    },
                }
                .into());
            }
            append_event(conn, &commit.session, commit.read_revision + 1, &commit.event)
                .and_then(|()| {
                    drop_newest_messages(conn, &commit.session, commit.dropped_messages)
                })
                .map_err(backend)?;
            append_history(
                conn,
                &commit.session,
                &commit.messages,
                Some(commit.history_cap),
            )
            .map(|()| Applied::Done)
        }
        Write::Execution(execution) => conn
            .prepare_cached(
                "INSERT INTO executions (plugin, digest, tool, session_id, duration_us, outcome, at_ms,
                                         outbound_requests, outbound_refused, outbound_bytes,
                                         id, called_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    execution.plugin,
                    execution.digest,
                    execution.tool,
                    execution.session,
                    execution.duration_us,
                    execution.outcome.as_str(),
                    execution.at_ms,
                    execution.outbound.requests,
                    execution.outbound.refused,
                    execution.outbound.response_bytes,
                    execution.id,
                    execution.called_by,
                ])
            })
            .map(|_| Applied::Done)
            .map_err(backend),
        Write::CachePut { key, value, expires_at_ms } => conn
            .prepare_cached(
                "INSERT INTO tool_cache (key, value, expires_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
            )
            .and_then(|mut statement| statement.execute(params![key, value, ms(*expires_at_ms)]))
            .map(|_| Applied::Done)
            .map_err(backend),
        Write::DeleteSession(id) => delete_session(conn, id)
            .map(|()| Applied::Done)
            .map_err(backend),
        Write::EraseUser(user) => erase_user(conn, user).map(Applied::Erased),
        Write::PurgeEnded { ended_before_ms } => {
            let ended: Vec<String> = conn
                .prepare_cached(
                    "SELECT id FROM sessions WHERE status = 'ended' AND updated_at_ms <= ?1",
                )
                .and_then(|mut statement| {
                    statement
                        .query_map([ms(*ended_before_ms)], |row| row.get(0))?
                        .collect()
                })
                .map_err(backend)?;
            for id in &ended {
                delete_session(conn, id).map_err(backend)?;
            }
            Ok(Applied::Swept(ended.len() as u64))
        }
        Write::PurgeExecutions { before_ms } => conn
            .prepare_cached("DELETE FROM executions WHERE at_ms <= ?1")
            .and_then(|mut statement| statement.execute([ms(*before_ms)]))
            .map(|deleted| Applied::Swept(deleted as u64))
            .map_err(backend),
        Write::KvPut {
            ns,
            key,
            value,
            expires_at_ms,
            only_if,
            now_ms,
            quota,
        } => {
            if let Some(expected) = only_if {
                let current = live_value(conn, ns, key, *now_ms).map_err(backend)?;
                if current.as_deref() != expected.as_deref() {
                    return Ok(Applied::Stored(false));
                }
            }
            kv_store(conn, ns, key, value, *expires_at_ms, *now_ms, quota)?;
            Ok(Applied::Stored(true))
        }
        Write::KvIncrement {
            ns,
            key,
            delta,
            now_ms,
            quota,
        } => {
            let current: Option<(Vec<u8>, Option<u64>)> = conn
                .prepare_cached(
                    "SELECT value, expires_at_ms FROM kv WHERE owner = ?1 AND scope = ?2 AND key = ?3
                       AND (expires_at_ms IS NULL OR expires_at_ms > ?4)",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(params![ns.owner, ns.scope, key, ms(*now_ms)], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                })
                .map_err(backend)?;
            let value = increment_value(current.as_ref().map(|(value, _)| &value[..]), *delta)?;
            let expires_at_ms = current.and_then(|(_, expires_at_ms)| expires_at_ms);
            let text = value.to_string();
            kv_store(conn, ns, key, text.as_bytes(), expires_at_ms, *now_ms, quota)?;
            Ok(Applied::Counter(value))
        }
        Write::KvDelete { ns, key } => {
            let freed: Option<u64> = conn
                .prepare_cached(
                    "DELETE FROM kv WHERE owner = ?1 AND scope = ?2 AND key = ?3
                     RETURNING octet_length(key) + octet_length(value)",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(params![ns.owner, ns.scope, key], |row| row.get(0))
                        .optional()
                })
                .map_err(backend)?;
            if let Some(freed) = freed {
                let mut current = usage(conn, &ns.owner).map_err(backend)?;
                current.keys -= 1;
                current.bytes -= freed;
                set_usage(conn, &ns.owner, current).map_err(backend)?;
                uncount_user(conn, &ns.owner, &ns.scope, &[freed]).map_err(backend)?;
            }
            Ok(Applied::Done)
        }
        Write::PublishPlugin { digest, component } => conn
            .prepare_cached(
                "INSERT INTO plugin_versions (digest, component) VALUES (?1, ?2)
                 ON CONFLICT (digest) DO NOTHING",
            )
            .and_then(|mut statement| statement.execute(params![digest, component]))
            .map(|inserted| Applied::Stored(inserted == 1))
            .map_err(backend),
        Write::ActivatePlugin { name, digest } => conn
            .prepare_cached(
                "INSERT INTO active_plugins (name, digest) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET digest = excluded.digest",
            )
            .and_then(|mut statement| statement.execute([name, digest]))
            .map(|_| Applied::Done)
            .map_err(backend),
        Write::PluginConfig { name, config: Some(config) } => conn
            .prepare_cached(
                "INSERT INTO plugin_config (name, config) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET config = excluded.config",
            )
            .and_then(|mut statement| statement.execute([name, config]))
            .map(|_| Applied::Done)
            .map_err(backend),
        Write::PluginConfig { name, config: None } => conn
            .prepare_cached("DELETE FROM plugin_config WHERE name = ?1")
            .and_then(|mut statement| statement.execute([name]))
            .map(|_| Applied::Done)
            .map_err(backend),
        Write::KvSweep { now_ms } => {
            let owners: Vec<String> = conn
                .prepare_cached("SELECT owner FROM kv_usage WHERE keys > 0")
                .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
                .map_err(backend)?;
            let mut swept = 0;
            for owner in owners {
                swept += reclaim(conn, &owner, *now_ms)?;
            }
            Ok(Applied::Swept(swept))
        }
        Write::CacheSweep { now_ms } => conn
            .prepare_cached("DELETE FROM tool_cache WHERE expires_at_ms <= ?1")
            .and_then(|mut statement| statement.execute([ms(*now_ms)]))
            .map(|deleted| Applied::Swept(deleted as u64))
            .map_err(backend),
    }
}

/// Appends `messages` to the history of `session`, then trims it to `cap`.
fn append_history(
    conn: &Connection,
    session: &str,
    messages: &[Message],
    cap: Option<HistoryCap>,
) -> Result<(), Failed> {
    if messages.is_empty() {
        return Ok(());
    }
    let added: usize = messages.iter().map(|message| message.content.len()).sum();
    let (end, bytes): (u64, u64) = conn
        .prepare_cached(
            "UPDATE sessions SET history_len = history_len + ?2, history_bytes = history_bytes + ?3
             WHERE id = ?1 RETURNING history_len, history_bytes",
        )
        .and_then(|mut statement| {
            statement.query_row(params![session, messages.len(), added], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
        })
        .map_err(backend)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO history (session_id, seq, role, content, interrupted) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(backend)?;
    let start = end - messages.len() as u64;
    for (seq, message) in (start..).zip(messages) {
        insert
            .execute(params![
                session,
                seq,
                message.role.as_str(),
                message.content,
                message.interrupted
            ])
            .map_err(backend)?;
    }
    match cap {
        Some(cap) if end > cap.messages || bytes > cap.bytes => {
            trim_history(conn, session, end, bytes, cap).map_err(backend)
        }
        _ => Ok(()),
    }
}

/// Drops the oldest messages of `session`'s history, whose last message
/// is number `end - 1` and whose content adds up to `bytes`, beyond `cap`,
/// and records the bytes kept.
fn trim_history(
    conn: &Connection,
    session: &str,
    end: u64,
    bytes: u64,
    cap: HistoryCap,
) -> rusqlite::Result<()> {
    // Beyond the message bound, drop by number (an index probe when
    // nothing is); only if the bytes are still over, read the lengths of
    // what is left.
    let dropped: u64 = conn
        .prepare_cached(
            "DELETE FROM history WHERE session_id = ?1 AND seq < ?2 RETURNING octet_length(content)",
        )?
        .query_map(params![session, end.saturating_sub(cap.messages)], |row| {
            row.get::<_, u64>(0)
        })?
        .sum::<rusqlite::Result<u64>>()?;
    let mut bytes = bytes.saturating_sub(dropped);
    if bytes > cap.bytes {
        let lengths: Vec<u64> = conn
            .prepare_cached(
                "SELECT octet_length(content) FROM history WHERE session_id = ?1 ORDER BY seq DESC",
            )?
            .query_map([session], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let kept = cap.kept(lengths.iter().copied());
        conn.prepare_cached("DELETE FROM history WHERE session_id = ?1 AND seq < ?2")?
            .execute(params![session, end - kept])?;
        bytes = lengths.iter().take(kept as usize).sum();
    }
    conn.prepare_cached("UPDATE sessions SET history_bytes = ?2 WHERE id = ?1")?
        .execute(params![session, bytes])?;
    Ok(())
}
