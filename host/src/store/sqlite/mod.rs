//! Sessions in one SQLite file: the default store.
//!
//! The database runs in WAL mode with `synchronous = FULL`, so a commit that
//! returned survives a crash of the process or the machine. All writes go
//! through one writer thread that gathers the commits of concurrent turns into
//! one transaction (group commit): each commit still succeeds or fails on its
//! own, inside its own savepoint, but they share the cost of one WAL sync.
//! Reads use a small pool of reader connections, which WAL lets run
//! alongside the writer.
//!
//! The rooms: [`writer`] (the one writer thread and every write it applies,
//! with [`entries`], [`events`] and [`removal`], the SQL of KV entries, of
//! the event log and of deletion),
//! [`sessions`], [`kv`], [`records`] (plugin records and the tool log) and
//! [`users`] (a user's data): each concern's trait, implemented on this
//! store.

mod entries;
mod events;
mod kv;
mod log;
mod records;
mod removal;
mod sessions;
mod sql;
mod users;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::store::coordination::Coordination;
use crate::store::ensure_parent;
use crate::store::error::BackendError;
use crate::store::sqlite::sql::{Failed, backend, connect, writer_stopped};
use crate::store::sqlite::writer::{Applied, Request, Write, write_loop};

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

/// The changes made to [`SCHEMA`] since it was first laid out, in order: a
/// database whose `user_version` is N has had the first N applied.
const MIGRATIONS: &[&str] = &[
    "ALTER TABLE sessions ADD COLUMN owner TEXT",
    // Content bytes of the history kept, for its cap; the indexes find
    // ended sessions and old tool records for retention.
    "ALTER TABLE sessions ADD COLUMN history_bytes INTEGER NOT NULL DEFAULT 0;
     UPDATE sessions SET history_bytes = (
         SELECT COALESCE(SUM(octet_length(content)), 0) FROM history WHERE session_id = sessions.id);
     CREATE INDEX sessions_ended ON sessions (status, updated_at_ms);
     CREATE INDEX executions_at ON executions (at_ms);",
    // Counts a caller's live sessions.
    "CREATE INDEX sessions_owner ON sessions (owner, status) WHERE owner IS NOT NULL;",
    // What each user's scope of a KV owner holds, for the per-user quota.
    "CREATE TABLE kv_user_usage (
         owner TEXT NOT NULL,
         scope TEXT NOT NULL,
         keys  INTEGER NOT NULL,
         bytes INTEGER NOT NULL,
         PRIMARY KEY (owner, scope)
     ) STRICT, WITHOUT ROWID;
     INSERT INTO kv_user_usage (owner, scope, keys, bytes)
         SELECT owner, scope, COUNT(*), SUM(octet_length(key) + octet_length(value))
         FROM kv WHERE scope LIKE 'user/%' GROUP BY owner, scope;",
    // Finds a user's sessions, for export and erasure.
    "CREATE INDEX sessions_user ON sessions (user_id) WHERE user_id IS NOT NULL;",
    // What each tool call sent through outbound HTTP.
    "ALTER TABLE executions ADD COLUMN outbound_requests INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE executions ADD COLUMN outbound_refused INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE executions ADD COLUMN outbound_bytes INTEGER NOT NULL DEFAULT 0;",
    // The configuration operators set for each plugin, as a JSON object.
    "CREATE TABLE plugin_config (
         name   TEXT PRIMARY KEY,
         config TEXT NOT NULL
     ) STRICT, WITHOUT ROWID;",
    // The plugin a session handed its conversation to.
    "ALTER TABLE sessions ADD COLUMN delegate TEXT;",
    // Each tool record's id, and the registry call's record it answered.
    "ALTER TABLE executions ADD COLUMN id TEXT NOT NULL DEFAULT '';
     ALTER TABLE executions ADD COLUMN called_by TEXT;",
    // Each session's event log, one event per commit; `on_line` marks the
    // events that lead to the session's current state. Only the line's
    // snapshots are indexed by turn: a line is read from one of them on,
    // by number, so no turn pays for an index of every event. (A table
    // without rowid, its bodies in a tree keyed by session, measured slower.)
    "CREATE TABLE events (
         session_id TEXT NOT NULL,
         seq        INTEGER NOT NULL,
         turn       INTEGER NOT NULL,
         on_line    INTEGER NOT NULL,
         snapshot   INTEGER NOT NULL,
         rewound    INTEGER NOT NULL,
         body       TEXT NOT NULL,
         PRIMARY KEY (session_id, seq)
     ) STRICT;
     CREATE INDEX events_snapshots ON events (session_id, turn) WHERE on_line AND snapshot;",
    // An assistant message its caller interrupted.
    "ALTER TABLE history ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;",
    // Bytes of each session's log, for its limit.
    "ALTER TABLE sessions ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
     UPDATE sessions SET log_bytes = (
         SELECT COALESCE(SUM(octet_length(body)), 0) FROM events WHERE session_id = sessions.id);",
];

/// Brings a database laid out by [`SCHEMA`] up to date, each migration in
/// its own transaction with the version it reaches.
fn migrate(conn: &mut Connection) -> Result<(), Failed> {
    let applied: usize = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(backend)?;
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(migration).map_err(backend)?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

/// A [`crate::store::Store`] in a SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: Option<mpsc::Sender<Request>>,
    writer_thread: Option<JoinHandle<()>>,
}

impl SqliteStore {
    /// What a sweep `write` reclaimed.
    fn swept(&self, write: Write) -> Result<u64, BackendError> {
        match self.write(write)? {
            Applied::Swept(swept) => Ok(swept),
            other => Err(BackendError::new(format!(
                "the writer answered a sweep with {other:?}"
            ))),
        }
    }

    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, BackendError> {
        ensure_parent(path)?;
        let mut conn = connect(path)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        migrate(&mut conn)?;
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

    /// Applies `write` on the writer thread.
    fn write(&self, write: Write) -> Result<Applied, Failed> {
        let (done, result) = mpsc::sync_channel(1);
        let writer = self
            .writer
            .as_ref()
            .expect("writer lives as long as the store");
        writer
            .send(Request { write, done })
            .map_err(|_| writer_stopped())?;
        result.recv().map_err(|_| writer_stopped())?
    }

    /// Runs `f` on a pooled reader connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Failed> {
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

/// One process serves the file: every default.
impl Coordination for SqliteStore {}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once queued writes are done.
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sessions::SessionStore as _;

    /// A database written before sessions had owners opens with its
    /// sessions intact and ownerless, and new sessions keep their owner.
    #[test]
    fn a_database_from_before_owners_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.execute(
            "INSERT INTO sessions VALUES ('s1', 'intake', 'aa', 'ada', '{}', '{\"n\":1}', 1, 1, 0,
                                          'active', 5, 5, 0)",
            [],
        )
        .unwrap();
        drop(old);

        let store = SqliteStore::open(&path).unwrap();
        let kept = store.load("s1").unwrap().unwrap();
        assert_eq!(
            (kept.user_id.as_deref(), kept.owner.as_deref()),
            (Some("ada"), None)
        );
        assert_eq!(kept.state["n"], 1);
        let mut owned = kept.clone();
        owned.id = "s2".into();
        owned.owner = Some("key/app".into());
        let start = crate::store::LogEntry {
            turn: 0,
            snapshot: true,
            rewind: false,
            body: "{}".into(),
        };
        store.create(&owned, &[], &start).unwrap();
        drop(store);

        let reopened = SqliteStore::open(&path).unwrap();
        // The store counts the start event's two bytes.
        owned.log_bytes = 2;
        assert_eq!(reopened.load("s2").unwrap(), Some(owned));
        let version: usize = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }
}
