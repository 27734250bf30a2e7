//! Sessions in one SQLite file: the default store.
//!
//! The database runs in WAL mode with `synchronous = FULL`, so a commit that
//! returned survives a crash of the process or the machine. All writes go
//! through one writer thread that gathers the commits of concurrent turns into
//! one transaction (group commit): each commit still succeeds or fails on its
//! own, inside its own savepoint, but they share the cost of one WAL sync.
//! Reads use a small pool of reader connections, which WAL lets run
//! alongside the writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};

use super::{
    Commit, Execution, KvWrite, Message, Namespace, Quota, Role, SessionRecord, Status, Store,
    StoreError, Swept, ToolOutcome, Usage, backend, ensure_parent, entry_bytes, increment_value,
};

/// Commits gathered into one transaction at most. Bounds how long the first
/// commit of a batch waits for the last one.
const MAX_BATCH: usize = 512;

/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id            TEXT PRIMARY KEY,
    plugin        TEXT NOT NULL,
    digest        TEXT NOT NULL,
    user_id       TEXT,
    variables     TEXT NOT NULL,
    state         TEXT NOT NULL,
    state_version INTEGER NOT NULL,
    revision      INTEGER NOT NULL,
    turn          INTEGER NOT NULL,
    status        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    history_len   INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS history (
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS executions (
    plugin      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    duration_us INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tool_cache (
    key           TEXT PRIMARY KEY,
    value         TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tool_cache_expiry ON tool_cache (expires_at_ms);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (plugin, updated_at_ms);
CREATE INDEX IF NOT EXISTS sessions_created ON sessions (plugin, created_at_ms);
CREATE TABLE IF NOT EXISTS kv (
    owner         TEXT NOT NULL,
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         BLOB NOT NULL,
    expires_at_ms INTEGER,
    PRIMARY KEY (owner, scope, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (owner, expires_at_ms) WHERE expires_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_usage (
    owner TEXT PRIMARY KEY,
    keys  INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plugin_versions (
    digest    TEXT PRIMARY KEY,
    component BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS active_plugins (
    name   TEXT PRIMARY KEY,
    digest TEXT NOT NULL
) STRICT, WITHOUT ROWID;
";

/// Every key of a `kv` scope sorts below its prefix followed by this: keys
/// are printable ASCII, below DEL.
const KEY_END: char = '\u{7f}';

/// A [`Store`] in a SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: Option<mpsc::Sender<Request>>,
    writer_thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
enum Write {
    Create(SessionRecord, Vec<Message>),
    Commit(CommitRow),
    Execution(Execution),
    CachePut {
        key: String,
        value: String,
        expires_at_ms: u64,
    },
    DeleteSession(String),
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
    Sweep {
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
}

/// What a write produced, besides succeeding.
#[derive(Debug)]
enum Applied {
    Done,
    Stored(bool),
    Counter(i64),
    Swept(Swept),
}

/// A [`Commit`] as the writer stores it, its state serialized by the caller
/// so that the one writer thread spends its time on SQL alone.
#[derive(Debug)]
struct CommitRow {
    session: String,
    read_revision: u64,
    state: String,
    turn: u64,
    plugin: String,
    digest: String,
    state_version: u32,
    status: Status,
    messages: Vec<Message>,
    at_ms: u64,
}

#[derive(Debug)]
struct Request {
    write: Write,
    done: mpsc::SyncSender<Result<Applied, StoreError>>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        ensure_parent(path)?;
        let mut conn = connect(path)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let (writer, requests) = mpsc::channel();
        let writer_thread = std::thread::Builder::new()
            .name("agentbox-sqlite-writer".into())
            .spawn(move || write_loop(&mut conn, &requests))
            .map_err(backend)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            readers: Mutex::new(Vec::new()),
            writer: Some(writer),
            writer_thread: Some(writer_thread),
        })
    }

    fn write(&self, write: Write) -> Result<Applied, StoreError> {
        let (done, result) = mpsc::sync_channel(1);
        let writer = self
            .writer
            .as_ref()
            .expect("writer lives as long as the store");
        writer
            .send(Request { write, done })
            .map_err(|_| backend("the SQLite writer thread has stopped"))?;
        result
            .recv()
            .map_err(|_| backend("the SQLite writer thread has stopped"))?
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().expect("reader pool poisoned").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.path)?,
        };
        let result = f(&conn).map_err(backend);
        self.readers
            .lock()
            .expect("reader pool poisoned")
            .push(conn);
        result
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once queued writes are done.
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store for SqliteStore {
    fn create(&self, session: &SessionRecord, messages: &[Message]) -> Result<(), StoreError> {
        self.write(Write::Create(session.clone(), messages.to_vec()))
            .map(drop)
    }

    fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = self.read(|conn| {
            conn.prepare_cached(
                "SELECT id, plugin, digest, user_id, variables, state, state_version, revision, turn,
                        status, created_at_ms, updated_at_ms
                 FROM sessions WHERE id = ?1",
            )?
            .query_row([id], |row| {
                Ok((
                    SessionRecord {
                        id: row.get(0)?,
                        plugin: row.get(1)?,
                        digest: row.get(2)?,
                        user_id: row.get(3)?,
                        variables: Default::default(),
                        state: Default::default(),
                        state_version: row.get(6)?,
                        revision: row.get(7)?,
                        turn: row.get(8)?,
                        status: Status::parse(row.get_ref(9)?.as_str()?).unwrap_or(Status::Ended),
                        created_at_ms: row.get(10)?,
                        updated_at_ms: row.get(11)?,
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

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.write(Write::Commit(CommitRow {
            session: commit.session.clone(),
            read_revision: commit.read_revision,
            state: serde_json::to_string(&commit.state).map_err(backend)?,
            turn: commit.turn,
            plugin: commit.plugin.clone(),
            digest: commit.digest.clone(),
            state_version: commit.state_version,
            status: commit.status,
            messages: commit.messages.clone(),
            at_ms: commit.at_ms,
        }))
        .map(drop)
    }

    fn record_execution(&self, execution: &Execution) -> Result<(), StoreError> {
        self.write(Write::Execution(execution.clone())).map(drop)
    }

    fn executions(&self) -> Result<Vec<Execution>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT plugin, digest, tool, session_id, duration_us, outcome, at_ms FROM executions ORDER BY rowid",
            )?
            .query_map([], |row| {
                Ok(Execution {
                    plugin: row.get(0)?,
                    digest: row.get(1)?,
                    tool: row.get(2)?,
                    session: row.get(3)?,
                    duration_us: row.get(4)?,
                    outcome: ToolOutcome::parse(row.get_ref(5)?.as_str()?).unwrap_or(ToolOutcome::GuestError),
                    at_ms: row.get(6)?,
                })
            })?
            .collect()
        })
    }

    fn cache_get(&self, key: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT value FROM tool_cache WHERE key = ?1 AND expires_at_ms > ?2",
            )?
            .query_row(params![key, ms(now_ms)], |row| row.get(0))
            .optional()
        })
    }

    fn cache_put(
        &self,
        key: &str,
        value: &str,
        expires_at_ms: u64,
        _now_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(Write::CachePut {
            key: key.to_owned(),
            value: value.to_owned(),
            expires_at_ms,
        })
        .map(drop)
    }

    fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, StoreError> {
        let limit = i64::try_from(last).unwrap_or(i64::MAX);
        let mut messages = self.read(|conn| {
            conn.prepare_cached(
                "SELECT role, content FROM history WHERE session_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?
            .query_map(params![id, limit], |row| {
                let role = row.get_ref(0)?.as_str()?;
                Ok(Message { role: Role::parse(role).unwrap_or(Role::System), content: row.get(1)? })
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
    ) -> Result<Vec<String>, StoreError> {
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
    }

    fn live_sessions(&self, plugin: &str) -> Result<u64, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM sessions WHERE plugin = ?1 AND status = 'active'",
            )?
            .query_row(params![plugin], |row| row.get(0))
        })
    }

    fn publish_plugin(&self, digest: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let applied = self.write(Write::PublishPlugin {
            digest: digest.to_owned(),
            component: bytes.to_vec(),
        })?;
        Ok(matches!(applied, Applied::Stored(true)))
    }

    fn published_plugin(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT component FROM plugin_versions WHERE digest = ?1")?
                .query_row([digest], |row| row.get(0))
                .optional()
        })
    }

    fn set_active_plugin(&self, name: &str, digest: &str) -> Result<(), StoreError> {
        self.write(Write::ActivatePlugin {
            name: name.to_owned(),
            digest: digest.to_owned(),
        })
        .map(drop)
    }

    fn active_plugins(&self) -> Result<BTreeMap<String, String>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT name, digest FROM active_plugins")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
    }

    fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.write(Write::DeleteSession(id.to_owned())).map(drop)
    }

    fn kv_get(
        &self,
        ns: &Namespace,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| live_value(conn, ns, key, now_ms))
    }

    fn kv_put(
        &self,
        ns: &Namespace,
        key: &str,
        write: &KvWrite<'_>,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<bool, StoreError> {
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
    ) -> Result<i64, StoreError> {
        match self.write(Write::KvIncrement {
            ns: ns.clone(),
            key: key.to_owned(),
            delta,
            now_ms,
            quota: *quota,
        })? {
            Applied::Counter(value) => Ok(value),
            other => Err(backend(format!(
                "the writer answered an increment with {other:?}"
            ))),
        }
    }

    fn kv_delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError> {
        self.write(Write::KvDelete {
            ns: ns.clone(),
            key: key.to_owned(),
        })
        .map(drop)
    }

    fn kv_keys(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
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
    }

    fn kv_usage(&self, owner: &str) -> Result<Usage, StoreError> {
        self.read(|conn| usage(conn, owner))
    }

    fn sweep(&self, now_ms: u64) -> Result<Swept, StoreError> {
        match self.write(Write::Sweep { now_ms })? {
            Applied::Swept(swept) => Ok(swept),
            other => Err(backend(format!(
                "the writer answered a sweep with {other:?}"
            ))),
        }
    }
}

fn live_value(
    conn: &Connection,
    ns: &Namespace,
    key: &str,
    now_ms: u64,
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(
        "SELECT value FROM kv WHERE owner = ?1 AND scope = ?2 AND key = ?3
           AND (expires_at_ms IS NULL OR expires_at_ms > ?4)",
    )?
    .query_row(params![ns.owner, ns.scope, key, ms(now_ms)], |row| {
        row.get(0)
    })
    .optional()
}

fn usage(conn: &Connection, owner: &str) -> rusqlite::Result<Usage> {
    Ok(conn
        .prepare_cached("SELECT keys, bytes FROM kv_usage WHERE owner = ?1")?
        .query_row([owner], |row| {
            Ok(Usage {
                keys: row.get(0)?,
                bytes: row.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

fn set_usage(conn: &Connection, owner: &str, usage: Usage) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv_usage (owner, keys, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (owner) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
    )?
    .execute(params![owner, usage.keys, usage.bytes])
    .map(drop)
}

/// Stores one KV entry and keeps its owner's usage, within `quota`: an owner
/// that would go over it first loses its expired entries, then is refused.
fn kv_store(
    conn: &Connection,
    ns: &Namespace,
    key: &str,
    value: &[u8],
    expires_at_ms: Option<u64>,
    now_ms: u64,
    quota: &Quota,
) -> Result<(), StoreError> {
    let old: Option<u64> = conn
        .prepare_cached(
            "SELECT octet_length(value) FROM kv WHERE owner = ?1 AND scope = ?2 AND key = ?3",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![ns.owner, ns.scope, key], |row| row.get(0))
                .optional()
        })
        .map_err(backend)?;
    let after = |usage: Usage| Usage {
        keys: usage.keys + u64::from(old.is_none()),
        bytes: usage.bytes + entry_bytes(key, value) - old.map_or(0, |len| key.len() as u64 + len),
    };
    let mut current = usage(conn, &ns.owner).map_err(backend)?;
    if quota.check(&ns.owner, after(current)).is_err() {
        reclaim(conn, &ns.owner, now_ms)?;
        current = usage(conn, &ns.owner).map_err(backend)?;
    }
    let current = after(current);
    quota.check(&ns.owner, current)?;
    conn.prepare_cached(
        "INSERT INTO kv (owner, scope, key, value, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (owner, scope, key) DO UPDATE
         SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            ns.owner,
            ns.scope,
            key,
            value,
            expires_at_ms.map(ms)
        ])
    })
    .map_err(backend)?;
    set_usage(conn, &ns.owner, current).map_err(backend)
}

/// Deletes `owner`'s entries expired at `now_ms` and returns how many.
fn reclaim(conn: &Connection, owner: &str, now_ms: u64) -> Result<u64, StoreError> {
    let freed: Vec<u64> = conn
        .prepare_cached(
            "DELETE FROM kv WHERE owner = ?1 AND expires_at_ms <= ?2
             RETURNING octet_length(key) + octet_length(value)",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![owner, ms(now_ms)], |row| row.get(0))?
                .collect()
        })
        .map_err(backend)?;
    if !freed.is_empty() {
        let mut current = usage(conn, owner).map_err(backend)?;
        current.keys -= freed.len() as u64;
        current.bytes -= freed.iter().sum::<u64>();
        set_usage(conn, owner, current).map_err(backend)?;
    }
    Ok(freed.len() as u64)
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| StoreError::Backend(format!("cannot open {}: {err}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    Ok(conn)
}

/// Applies queued writes until every sender is gone, gathering the writes
/// that are waiting into one transaction.
fn write_loop(conn: &mut Connection, requests: &mpsc::Receiver<Request>) {
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
fn apply_batch(conn: &mut Connection, batch: &[Request]) -> Vec<Result<Applied, StoreError>> {
    let transaction = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(err) => return batch.iter().map(|_| Err(backend(&err))).collect(),
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
            .for_each(|result| *result = Err(backend(&err)));
    }
    results
}

fn apply(conn: &Connection, write: &Write) -> Result<Applied, StoreError> {
    match write {
        Write::Create(session, messages) => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO sessions (id, plugin, digest, user_id, variables, state, state_version,
                        revision, turn, status, created_at_ms, updated_at_ms, history_len)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0)
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
                    ])
                })
                .map_err(backend)?;
            if inserted == 0 {
                return Err(StoreError::Exists(session.id.clone()));
            }
            append_history(conn, &session.id, messages).map(|()| Applied::Done)
        }
        Write::Commit(commit) => {
            let updated = conn
                .prepare_cached(
                    "UPDATE sessions SET state = ?3, revision = revision + 1, turn = ?4, digest = ?5,
                        state_version = ?6, status = ?7, updated_at_ms = ?8, plugin = ?9
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
                    None => StoreError::NotFound(commit.session.clone()),
                    Some(stored) => StoreError::Conflict {
                        session: commit.session.clone(),
                        read: commit.read_revision,
                        stored,
                    },
                });
            }
            append_history(conn, &commit.session, &commit.messages).map(|()| Applied::Done)
        }
        Write::Execution(execution) => conn
            .prepare_cached(
                "INSERT INTO executions (plugin, digest, tool, session_id, duration_us, outcome, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
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
        Write::DeleteSession(id) => conn
            .prepare_cached("DELETE FROM history WHERE session_id = ?1")
            .and_then(|mut statement| statement.execute([id]))
            .and_then(|_| conn.prepare_cached("DELETE FROM sessions WHERE id = ?1"))
            .and_then(|mut statement| statement.execute([id]))
            .map(|_| Applied::Done)
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
        Write::Sweep { now_ms } => {
            let owners: Vec<String> = conn
                .prepare_cached("SELECT owner FROM kv_usage WHERE keys > 0")
                .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
                .map_err(backend)?;
            let mut swept = Swept::default();
            for owner in owners {
                swept.kv_entries += reclaim(conn, &owner, *now_ms)?;
            }
            swept.cache_entries = conn
                .prepare_cached("DELETE FROM tool_cache WHERE expires_at_ms <= ?1")
                .and_then(|mut statement| statement.execute([ms(*now_ms)]))
                .map_err(backend)? as u64;
            Ok(Applied::Swept(swept))
        }
    }
}

fn append_history(
    conn: &Connection,
    session: &str,
    messages: &[Message],
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let end: u64 = conn
        .prepare_cached("UPDATE sessions SET history_len = history_len + ?2 WHERE id = ?1 RETURNING history_len")
        .and_then(|mut statement| statement.query_row(params![session, messages.len()], |row| row.get(0)))
        .map_err(backend)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO history (session_id, seq, role, content) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(backend)?;
    let start = end - messages.len() as u64;
    for (seq, message) in (start..).zip(messages) {
        insert
            .execute(params![
                session,
                seq,
                message.role.as_str(),
                message.content
            ])
            .map_err(backend)?;
    }
    Ok(())
}

/// A time in milliseconds as SQLite stores it: times past `i64::MAX` (the
/// far future) are the far future still.
fn ms(time_ms: u64) -> i64 {
    i64::try_from(time_ms).unwrap_or(i64::MAX)
}

fn to_sql(err: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(err))
}
