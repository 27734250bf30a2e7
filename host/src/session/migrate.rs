//! Migration: a session whose state was written under another
//! `state-version` than the active version's gets `migrate` before its
//! next turn, or stays on the version that committed it ([`Pinned`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::names::check_value;
use crate::plugin::PluginVersion;
use crate::session::call::call_alone;
use crate::session::error::Cause;
use crate::session::event::{Migration, diff};
use crate::session::parts::Parts;
use crate::session::turns::check_state;
use crate::store::SessionRecord;

/// The version to run `record`'s next turn on, and the record to run it
/// from: the active version, after it migrated the state if the state's
/// layout (`state-version`) differs from its own. If the migration fails,
/// the session stays on the version that last committed it, if that is
/// loaded here or published in the store. A session committed by the
/// version the store records active, while this host is still behind,
/// stays on it (see [`crate::plugin::versions::Plugins::catch_up`]).
pub(crate) fn migrated(
    parts: &Arc<Parts>,
    mut record: SessionRecord,
    active: Arc<PluginVersion>,
) -> Result<(SessionRecord, Arc<PluginVersion>, Option<Migration>), Cause> {
    let active = parts.plugins.catch_up(&record, active);
    let (from, to) = (record.state_version, active.manifest.state_version);
    if from == to {
        return Ok((record, active, None));
    }
    let digest = active.digest.to_string();
    let pinned = &parts.pinned;
    if pinned.holds(&record.id, &digest)
        && let Some(previous) = previous_version(parts, &record)
    {
        // This version failed to migrate it already.
        return Ok((record, previous, None));
    }
    let state = serde_json::to_string(&record.state).map_err(|err| Cause::Trap(err.to_string()))?;
    let call = call_alone(
        parts,
        &active,
        &record,
        record.turn + 1,
        record.state.clone(),
        |agent, store| agent.migrate(store, from, state),
    );
    let migrated = call.result.and_then(|text| {
        let invalid = |reason: String| Cause::InvalidState(format!("`migrate` returned {reason}"));
        let value: Value = serde_json::from_str(&text)
            .map_err(|err| invalid(format!("something that is not JSON: {err}")))?;
        check_value(&value, parts.limits_for(active.name()))
            .map_err(|reason| invalid(format!("a state that {reason}")))?;
        let Value::Object(state) = value else {
            return Err(invalid("a state that is not a JSON object".into()));
        };
        check_state(&active, &state)?;
        Ok(state)
    });
    parts.metrics.migration(&record.plugin, migrated.is_ok());
    match migrated {
        Ok(state) => {
            tracing::info!(
                plugin = record.plugin,
                session = record.id,
                from,
                to,
                "state migrated"
            );
            pinned.forget(&record.id, &parts.metrics);
            let migration = Migration {
                from,
                to,
                patch: diff(&record.state, &state),
            };
            record.state = state;
            record.state_version = to;
            Ok((record, active, Some(migration)))
        }
        Err(cause) => {
            let stays = previous_version(parts, &record);
            if stays.is_some() {
                let session = PinnedSession {
                    session: record.id.clone(),
                    plugin: record.plugin.clone(),
                    digest,
                    from,
                    to,
                    error: cause.to_string(),
                    at_ms: parts.clock.now_ms(),
                };
                pinned.pin(session, &parts.metrics);
            }
            tracing::warn!(
                plugin = record.plugin,
                session = record.id,
                from,
                to,
                error = %cause,
                stays_on = stays.as_ref().map(|previous| previous.manifest.version.as_str()),
                "state migration failed"
            );
            match stays {
                Some(previous) => Ok((record, previous, None)),
                None => Err(Cause::Migration {
                    from,
                    to,
                    cause: Box::new(cause),
                }),
            }
        }
    }
}

/// The version that last committed `record`, if it is loaded here or
/// published in the store and its state layout is `record`'s.
fn previous_version(parts: &Parts, record: &SessionRecord) -> Option<Arc<PluginVersion>> {
    parts
        .plugins
        .version(&record.plugin, &record.digest)
        .ok()
        .filter(|previous| previous.manifest.state_version == record.state_version)
}

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
