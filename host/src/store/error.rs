//! Why a store operation failed, one error type per concern: the failure
//! of the backend itself ([`BackendError`], with its cause kept as the
//! source), and what sessions ([`SessionStoreError`]) and KV
//! ([`KvStoreError`]) refuse on top of it.

/// The cause of a backend failure: the error of the database or client.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The backend failed (a connection, a disk, a malformed record); the
/// operation may succeed if retried.
#[derive(Debug, thiserror::Error)]
#[error("store backend failed: {what}")]
pub struct BackendError {
    what: String,
    #[source]
    source: Option<Cause>,
}

impl BackendError {
    /// A failure described by `what`, with no underlying error.
    pub fn new(what: impl Into<String>) -> BackendError {
        BackendError {
            what: what.into(),
            source: None,
        }
    }

    /// A failure of `context` ("SQLite", "Redis at HOST:PORT", ...) caused
    /// by `source`, which is kept.
    pub fn caused(
        context: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BackendError {
        BackendError {
            what: format!("{context}: {source}"),
            source: Some(Box::new(source)),
        }
    }
}

/// Why an operation on sessions failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionStoreError {
    /// A session with this id exists already.
    #[error("a session with id `{0}` exists already")]
    Exists(String),
    /// No session has this id.
    #[error("no session has id `{0}`")]
    NotFound(String),
    /// Another commit changed the session since this turn read it.
    #[error(
        "session `{session}` changed while the turn ran (read revision {read}, stored revision {stored})"
    )]
    Conflict {
        /// The session.
        session: String,
        /// The revision the turn read.
        read: u64,
        /// The revision in the store.
        stored: u64,
    },
    /// A listing's cursor is not one this store hands out.
    #[error("`{0}` is not a cursor of this listing; pass the `next` of the page before")]
    BadCursor(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Why a KV operation failed; nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvStoreError {
    /// The write would take its owner over its quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The operation does not apply to the value stored (an increment of a
    /// value that is not an integer, or one that would overflow).
    #[error("{0}")]
    Invalid(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}
