//! What every room of the SQLite store shares: opening a connection, the
//! store's internal error and how it is told to each concern, and how
//! times and JSON are kept in SQL.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::store::error::{BackendError, KvStoreError, SessionStoreError};

/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a read or write of this backend fails with, before it is told as
/// the error of the concern that asked.
#[derive(Debug)]
pub(super) enum Failed {
    Session(SessionStoreError),
    Kv(KvStoreError),
    Backend(BackendError),
}

impl From<SessionStoreError> for Failed {
    fn from(err: SessionStoreError) -> Failed {
        Failed::Session(err)
    }
}

impl From<KvStoreError> for Failed {
    fn from(err: KvStoreError) -> Failed {
        Failed::Kv(err)
    }
}

impl From<Failed> for SessionStoreError {
    fn from(failed: Failed) -> SessionStoreError {
        match failed {
            Failed::Session(err) => err,
            Failed::Backend(err) => err.into(),
            Failed::Kv(err) => {
                BackendError::new(format!("a session write failed as KV: {err}")).into()
            }
        }
    }
}

impl From<Failed> for KvStoreError {
    fn from(failed: Failed) -> KvStoreError {
        match failed {
            Failed::Kv(err) => err,
            Failed::Backend(err) => err.into(),
            Failed::Session(err) => {
                BackendError::new(format!("a KV write failed as a session: {err}")).into()
            }
        }
    }
}

impl From<Failed> for BackendError {
    fn from(failed: Failed) -> BackendError {
        match failed {
            Failed::Backend(err) => err,
            Failed::Session(err) => BackendError::new(err.to_string()),
            Failed::Kv(err) => BackendError::new(err.to_string()),
        }
    }
}

/// A failure of SQLite (or of a record it holds), keeping the cause.
pub(super) fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Failed {
    Failed::Backend(BackendError::caused("SQLite", err))
}

/// The writer thread is gone: the store is being dropped, or it panicked.
pub(super) fn writer_stopped() -> Failed {
    Failed::Backend(BackendError::new("the SQLite writer thread has stopped"))
}

pub(super) fn connect(path: &Path) -> Result<Connection, Failed> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| {
        Failed::Backend(BackendError::caused(
            format!("cannot open {}", path.display()),
            err,
        ))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    Ok(conn)
}

/// A time in milliseconds as SQLite stores it: times past `i64::MAX` (the
/// far future) are the far future still.
pub(super) fn ms(time_ms: u64) -> i64 {
    i64::try_from(time_ms).unwrap_or(i64::MAX)
}

pub(super) fn to_sql(err: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(err))
}
