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

/// A commit of a session, as the processes serving a store hear of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    /// The session.
    pub session: String,
    /// The plugin that serves it.
    pub plugin: String,
    /// Who started it, if a caller was named.
    #[serde(default)]
    pub owner: Option<String>,
    /// The number of the event the commit appended.
    pub seq: u64,
}

/// What the processes serving a store tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// A session committed.
    Committed(Committed),
    /// A caller asked to interrupt the running turn of this session.
    Interrupt(String),
}

/// Where a store tells what it hears; it stops telling once this answers
/// `false`.
pub type AnnouncementSink = std::sync::Arc<dyn Fn(Announcement) -> bool + Send + Sync>;
