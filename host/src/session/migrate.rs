//! Migration: a session whose state was written under another
//! `state-version` than the active version's gets `migrate` before its
//! next turn, or stays on the version that committed it.

use std::sync::Arc;

use serde_json::Value;

use crate::host::Host;
use crate::host::pinned::PinnedSession;
use crate::names::check_value;
use crate::plugin::PluginVersion;
use crate::session::chain::Within;
use crate::session::error::Cause;
use crate::session::event::{Migration, diff};
use crate::session::turns::check_state;
use crate::store::SessionRecord;

impl Host {
    /// The version to run `record`'s next turn on, and the record to run it
    /// from: the active version, after it migrated the state if the state's
    /// layout (`state-version`) differs from its own. If the migration fails,
    /// the session stays on the version that last committed it, if that is
    /// loaded here or published in the store. A session committed by the
    /// version the store records active, while this host is still behind,
    /// stays on it (see [`crate::plugin::versions::Plugins::catch_up`]).
    pub(crate) fn migrated(
        &self,
        mut record: SessionRecord,
        active: Arc<PluginVersion>,
    ) -> Result<(SessionRecord, Arc<PluginVersion>, Option<Migration>), Cause> {
        let active = self.inner.plugins.catch_up(&record, active);
        let (from, to) = (record.state_version, active.manifest.state_version);
        if from == to {
            return Ok((record, active, None));
        }
        let digest = active.digest.to_string();
        let pinned = &self.inner.pinned;
        if pinned.holds(&record.id, &digest)
            && let Some(previous) = self.previous_version(&record)
        {
            // This version failed to migrate it already.
            return Ok((record, previous, None));
        }
        let state =
            serde_json::to_string(&record.state).map_err(|err| Cause::Trap(err.to_string()))?;
        let call = self.call_in_session(
            &active,
            &record,
            record.turn + 1,
            record.state.clone(),
            None,
            &Within::TOP,
            |agent, store| agent.migrate(store, from, state),
        );
        let migrated = call.result.and_then(|text| {
            let invalid =
                |reason: String| Cause::InvalidState(format!("`migrate` returned {reason}"));
            let value: Value = serde_json::from_str(&text)
                .map_err(|err| invalid(format!("something that is not JSON: {err}")))?;
            check_value(&value, self.limits_for(active.name()))
                .map_err(|reason| invalid(format!("a state that {reason}")))?;
            let Value::Object(state) = value else {
                return Err(invalid("a state that is not a JSON object".into()));
            };
            check_state(&active, &state)?;
            Ok(state)
        });
        self.inner
            .metrics
            .migration(&record.plugin, migrated.is_ok());
        match migrated {
            Ok(state) => {
                tracing::info!(
                    plugin = record.plugin,
                    session = record.id,
                    from,
                    to,
                    "state migrated"
                );
                pinned.forget(&record.id, &self.inner.metrics);
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
                let stays = self.previous_version(&record);
                if stays.is_some() {
                    let session = PinnedSession {
                        session: record.id.clone(),
                        plugin: record.plugin.clone(),
                        digest,
                        from,
                        to,
                        error: cause.to_string(),
                        at_ms: self.inner.clock.now_ms(),
                    };
                    pinned.pin(session, &self.inner.metrics);
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
    fn previous_version(&self, record: &SessionRecord) -> Option<Arc<PluginVersion>> {
        self.inner
            .plugins
            .version(&record.plugin, &record.digest)
            .ok()
            .filter(|previous| previous.manifest.state_version == record.state_version)
    }
}
