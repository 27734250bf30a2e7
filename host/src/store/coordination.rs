//! How the processes serving one store share its sessions: a lease on each
//! session's running turns, and announcements of commits and interrupts.
//!
//! A store that one process serves needs none of it: the host's
//! per-session lock serializes turns, the revision check at commit guards
//! the rest, and the host tells its own followers of its own commits. Such
//! a store keeps every default here.

use std::time::Duration;

use crate::store::error::SessionStoreError;

/// Leases and announcements across the processes of one store.
///
/// Implementations are safe to call from many threads at once. Methods block
/// the calling thread; the host calls them from blocking worker threads.
pub trait Coordination: Send + Sync + std::fmt::Debug + 'static {
    /// Takes or renews the lease on running turns of `session` for `holder`
    /// (one host process) for `ttl`, unless another holder's lease is live.
    /// Returns whether `holder` holds it now.
    ///
    /// A backend that only one process can use needs no lease: the host's
    /// per-session lock serializes turns, and the revision check at commit
    /// guards the rest. Such a backend keeps this default, which grants every
    /// lease.
    fn lease(&self, session: &str, holder: &str, ttl: Duration) -> Result<bool, SessionStoreError> {
        let _ = (session, holder, ttl);
        Ok(true)
    }

    /// Gives up `holder`'s lease on `session`, if it holds it.
    fn release(&self, session: &str, holder: &str) -> Result<(), SessionStoreError> {
        let _ = (session, holder);
        Ok(())
    }

    /// Starts telling `sink` of every commit and creation that any process
    /// serving this store makes, and of every interrupt asked of it through
    /// [`Coordination::interrupt`], and answers whether it does. A store
    /// that one process serves answers `false`: the host tells of its own.
    fn announce(&self, sink: AnnouncementSink) -> bool {
        let _ = sink;
        false
    }

    /// Asks every process of the store to interrupt the turn of session
    /// `id`, if a process holds its lease; answers whether one does. A
    /// store that one process serves answers `false`.
    fn interrupt(&self, id: &str) -> Result<bool, SessionStoreError> {
        let _ = id;
        Ok(false)
    }
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
