//! Sessions pinned to an older version: the active version's `migrate`
//! failed for them, so they stay on the version that last committed them.
//! The failure is remembered per session and active version, and not tried
//! again on every turn (each try is an instance and a warning); a session
//! is tried again when another version becomes active, or when an operator
//! asks ([`PinnedSessions::retry`]) after loading a fixed one.
//!
//! What is remembered is this process's: another server of the same store
//! tries each session once itself.

use crate::host::Host;

pub use crate::session::pinned::PinnedSession;

impl Host {
    /// The sessions pinned to an older version.
    pub fn pinned(&self) -> PinnedSessions<'_> {
        PinnedSessions { host: self }
    }
}

/// The sessions pinned to an older version ([`Host::pinned`]).
#[derive(Debug, Clone, Copy)]
pub struct PinnedSessions<'a> {
    host: &'a Host,
}

impl PinnedSessions<'_> {
    /// The sessions of `plugin` pinned to an older version because the
    /// active version could not migrate them, oldest failure first.
    pub fn sessions(&self, plugin: &str) -> Vec<PinnedSession> {
        self.host.parts.pinned.of(plugin)
    }

    /// Has each pinned session of `plugin` try its migration again at its
    /// next turn (after a fixed version is loaded); returns how many.
    pub fn retry(&self, plugin: &str) -> usize {
        self.host
            .parts
            .pinned
            .retry(plugin, &self.host.parts.metrics)
    }
}
