//! A session's event log as the stores keep it: one event per commit,
//! written in the commit's own transaction, and the *line*, the events that
//! lead to the session's current state.
//!
//! A turn appends an event of turn latest + 1, which goes on the line. A
//! rewind to turn `n` appends an event of turn `n` marked
//! [`LogEntry::rewind`]: it takes the events of later turns off the line,
//! marking them rewound, and stays off the line itself, so the line leads
//! to the state of turn `n` again and the next turn is `n + 1`. Events stay
//! in the log either way. The store keeps each event's JSON as it is; what
//! an event says is the host's business.

use crate::store::error::SessionStoreError;

/// The event a commit, or the creation of a session, appends to the
/// session's log. Its sequence number is the revision the commit makes
/// (1 for a creation), so no two events of a session share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The turn it records.
    pub turn: u64,
    /// Whether it holds the whole state, so that rebuilding the state of a
    /// later turn can start from it.
    pub snapshot: bool,
    /// Whether it sets the session back to `turn`: it takes the events of
    /// later turns off the line and does not go on the line itself.
    pub rewind: bool,
    /// The event, as JSON.
    pub body: String,
}

/// An event as a session's log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Its sequence number: the revision its commit made.
    pub seq: u64,
    /// The turn it records.
    pub turn: u64,
    /// Whether a rewind took the session back past it.
    pub rewound: bool,
    /// The event, as JSON.
    pub body: String,
}

/// A session's event log, read: appended to by [`crate::store::SessionStore`]'s
/// creations and commits, in their own transactions.
///
/// Implementations are safe to call from many threads at once. Methods block
/// the calling thread; the host calls them from blocking worker threads.
pub trait EventLog: Send + Sync + std::fmt::Debug + 'static {
    /// Up to `limit` events of the session's log numbered after `after`,
    /// oldest first, and none after the one whose body brings the page's
    /// bodies to `max_bytes` (so at least one); empty for a session that
    /// does not exist.
    fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedEvent>, SessionStoreError>;

    /// The events on the session's line from the latest one holding a
    /// snapshot at or before `turn` through the one of `turn`, in turn
    /// order: what rebuilds the state of `turn`. Empty when no snapshot on
    /// the line comes at or before `turn`.
    fn line(&self, id: &str, turn: u64) -> Result<Vec<LoggedEvent>, SessionStoreError>;

    /// The events that stood on the session's line, for the `count` turns
    /// before `turn`, when event `seq` (of turn `turn`) was appended: for
    /// each of those turns, the latest event numbered below `seq` that is
    /// not a rewind, in turn order. Where the session has since been
    /// rewound past `seq`, these are events now marked rewound. What a
    /// history is rebuilt from, and a fork's walk into its source.
    fn line_before(
        &self,
        id: &str,
        seq: u64,
        turn: u64,
        count: u64,
    ) -> Result<Vec<LoggedEvent>, SessionStoreError>;
}
