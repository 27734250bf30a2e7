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
//! The rooms: [`writer`] (the one writer thread and every write it applies),
//! [`sessions`], [`kv`] and [`records`] (plugin records and the tool log):
//! each concern's trait, implemented on this store.

mod entries;
mod kv;
mod records;
mod sessions;
mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

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

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once queued writes are done.
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}
