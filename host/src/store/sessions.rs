//! Where sessions live: their records, commits and history. Their event
//! logs are read through [`crate::store::EventLog`], and the processes of a
//! store take turns on them through [`crate::store::Coordination`].

use crate::store::error::{BackendError, SessionStoreError};
use crate::store::timeline::LogEntry;
use crate::store::types::{Commit, Message, SessionFilter, SessionPage, SessionRecord};

/// Sessions, committed one turn at a time.
///
/// Implementations are safe to call from many threads at once. Methods block
/// the calling thread; the host calls them from blocking worker threads.
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new session with its first messages and the first event of
    /// its log (sequence number `session.revision`), atomically.
    ///
    /// Fails with [`SessionStoreError::Exists`] if the id is taken; nothing
    /// changes then.
    fn create(
        &self,
        session: &SessionRecord,
        messages: &[Message],
        event: &LogEntry,
    ) -> Result<(), SessionStoreError>;

    /// The session with this id, as last committed, or `None`.
    fn load(&self, id: &str) -> Result<Option<SessionRecord>, SessionStoreError>;

    /// Commits one turn atomically: state, revision + 1, turn, status,
    /// digest, state version, updated time, the history's newest
    /// `commit.dropped_messages` dropped and `commit.messages` appended, the
    /// history then trimmed to `commit.history_cap`, and `commit.event`
    /// appended to the log as event number revision + 1 (see
    /// [`crate::store::timeline`]), or nothing at all.
    ///
    /// Fails with [`SessionStoreError::Conflict`] if the stored revision is
    /// not `commit.read_revision`, and with [`SessionStoreError::NotFound`]
    /// if the session does not exist. Once this returns `Ok`, the commit
    /// survives a crash of the process.
    fn commit(&self, commit: &Commit) -> Result<(), SessionStoreError>;

    /// The newest `last` messages of the session's history, oldest first;
    /// empty for a session that does not exist.
    fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, SessionStoreError>;

    /// Up to `limit` active sessions of `plugin` last committed at or before
    /// `idle_since_ms` or created at or before `created_since_ms`: the ones
    /// the reaper ends. (A host reaps the sessions of the plugins it has
    /// loaded, since their `on-end` must run first.)
    fn expired_sessions(
        &self,
        plugin: &str,
        idle_since_ms: u64,
        created_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, SessionStoreError>;

    /// How many sessions of `plugin` are active (not ended, not deleted).
    fn live_sessions(&self, plugin: &str) -> Result<u64, SessionStoreError>;

    /// A page of the sessions `filter` admits, from `cursor` (`None` for
    /// the first page; else the `next` of the page before), about `limit`
    /// of them.
    fn list_sessions(
        &self,
        filter: &SessionFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, SessionStoreError>;

    /// The ids of every session started for `user`, whatever its status.
    fn sessions_of_user(&self, user: &str) -> Result<Vec<String>, SessionStoreError>;

    /// How many sessions `owner` started are active, of any plugin.
    fn live_sessions_of(&self, owner: &str) -> Result<u64, SessionStoreError>;

    /// Deletes every ended session that ended (made its last commit) at or
    /// before `ended_before_ms`, with its history and log; returns how many.
    fn purge_ended(&self, ended_before_ms: u64) -> Result<u64, BackendError>;

    /// Deletes a session's record, history and log; deleting an absent one
    /// does nothing.
    fn delete_session(&self, id: &str) -> Result<(), SessionStoreError>;
}
