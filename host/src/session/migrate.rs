//! Migration: a session whose state was written under another
//! `state-version` than the active version's gets `migrate` before its
//! next turn, or stays on the version that committed it
//! ([`super::pinned`]).

use std::sync::Arc;

use serde_json::Value;

use crate::names::check_value;
use crate::plugin::PluginVersion;
use crate::session::call::call_alone;
use crate::session::error::Cause;
use crate::session::event::{Migration, diff};
use crate::session::parts::Parts;
use crate::session::pinned::PinnedSession;
use crate::store::{SessionRecord, State};

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
    let digest = active.digest_hex();
    let pinned = &parts.pinned;
    if pinned.holds(&record.id, digest)
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
                    digest: digest.to_owned(),
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

/// Checks a state about to be committed, a turn's or a migration's,
/// against the plugin's state schema.
/// (Every rule a single write can break was checked at the write.)
pub(crate) fn check_state(plugin: &PluginVersion, state: &State) -> Result<(), Cause> {
    plugin.tools.check_state(state).map_err(|violations| {
        Cause::InvalidState(format!(
            "breaks the state schema of `{}`: {}",
            plugin.name(),
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })
}
