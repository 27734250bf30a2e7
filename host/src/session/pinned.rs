//! Sessions pinned to an older version: the active version's `migrate`
//! failed for them, so they stay on the version that last committed them
//! (`migrate`). The failure is remembered per session and active
//! version, this process's, and not tried again on every turn.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::metrics::Metrics;

/// A session whose migration to the active version failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedSession {
    /// The session.
    pub session: String,
    /// Its plugin.
    pub plugin: String,
    /// Hex sha256 of the active version whose `migrate` failed.
    pub digest: String,
    /// The state version the session's state has.
    pub from: u32,
    /// The state version the active version wanted.
    pub to: u32,
    /// Why the migration failed.
    pub error: String,
    /// When it failed, in milliseconds of the host clock.
    pub at_ms: u64,
}

/// The pinned sessions of this process, by session id.
#[derive(Debug, Default)]
pub(crate) struct Pinned {
    sessions: Mutex<HashMap<String, PinnedSession>>,
}

impl Pinned {
    /// Whether `session`'s migration to the version `digest` failed already.
    pub(crate) fn holds(&self, session: &str, digest: &str) -> bool {
        self.lock()
            .get(session)
            .is_some_and(|pinned| pinned.digest == digest)
    }

    /// Remembers that `pinned`'s migration failed.
    pub(crate) fn pin(&self, pinned: PinnedSession, metrics: &Metrics) {
        let plugin = pinned.plugin.clone();
        let mut sessions = self.lock();
        sessions.insert(pinned.session.clone(), pinned);
        count(&sessions, &plugin, metrics);
    }

    /// Forgets `session`: it migrated, or it ended.
    pub(crate) fn forget(&self, session: &str, metrics: &Metrics) {
        let mut sessions = self.lock();
        if let Some(pinned) = sessions.remove(session) {
            count(&sessions, &pinned.plugin, metrics);
        }
    }

    /// The sessions of `plugin` pinned, oldest failure first.
    pub(crate) fn of(&self, plugin: &str) -> Vec<PinnedSession> {
        let mut pinned: Vec<PinnedSession> = self
            .lock()
            .values()
            .filter(|pinned| pinned.plugin == plugin)
            .cloned()
            .collect();
        pinned.sort_by(|a, b| (a.at_ms, &a.session).cmp(&(b.at_ms, &b.session)));
        pinned
    }

    /// Forgets every pinned session of `plugin`, so that each tries its
    /// migration again at its next turn; returns how many.
    pub(crate) fn retry(&self, plugin: &str, metrics: &Metrics) -> usize {
        let mut sessions = self.lock();
        let before = sessions.len();
        sessions.retain(|_, pinned| pinned.plugin != plugin);
        count(&sessions, plugin, metrics);
        before - sessions.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PinnedSession>> {
        self.sessions.lock().expect("the pinned sessions' lock")
    }
}

/// Sets the gauge of `plugin`'s pinned sessions from `sessions`.
fn count(sessions: &HashMap<String, PinnedSession>, plugin: &str, metrics: &Metrics) {
    let pinned = sessions
        .values()
        .filter(|pinned| pinned.plugin == plugin)
        .count();
    metrics.set_pinned_sessions(plugin, pinned as u64);
}
