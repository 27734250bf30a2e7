//! The reaper: sessions past their time-to-live get `on-end(expired)` and
//! are deleted, expired KV and cache entries are reclaimed, and ended
//! sessions and tool-call records past their retention are deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::instrument;

use crate::host::Host;
use crate::instance::world::EndReason;
use crate::metrics::NO_PLUGIN;
use crate::session::call::call_alone;
use crate::session::error::{SessionError, session_error, turn_error};
use crate::session::lifecycle::end_children;
use crate::session::migrate::migrated;
use crate::session::parts::Parts;
use crate::session::turns::record_version;
use crate::store::{Retention, SessionStoreError, Status, Swept};

/// Most sessions one round of the background reaper ends.
const REAP_BATCH: usize = 256;

/// What one [`Host::reap`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The sessions that expired and were deleted.
    pub ended: Vec<String>,
    /// How many of them failed in `on-end` (and were deleted all the same).
    pub on_end_failures: usize,
    /// The expired KV and cache entries reclaimed.
    pub swept: Swept,
}

/// What became of a session the reaper found expired.
pub(crate) enum Expired {
    /// It was touched in time, is gone already, or its plugin is not loaded here.
    Lives,
    /// `on-end` of the plugin named ran and the session was deleted.
    Ended(String),
    /// `on-end` failed, and the session was deleted all the same.
    EndFailed(SessionError),
}

/// The cutoffs a session is expired by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expiry {
    idle_since_ms: u64,
    created_since_ms: u64,
}

impl Host {
    /// Ends the sessions of the loaded plugins that have been idle longer than
    /// [`Limits::session_idle_ttl`] or live longer than
    /// [`Limits::session_max_lifetime`] by the host clock, at most
    /// `limit` of them, and reclaims expired KV and cache entries.
    ///
    /// Each expired session gets `on-end(expired)` under the turn deadline,
    /// so the plugin can keep what it wants in KV; then its state and history
    /// are deleted, whether `on-end` succeeded or not. A session that
    /// committed a turn since it was found expired lives on.
    pub async fn reap(&self, limit: usize) -> Result<Reaped, SessionStoreError> {
        let now = self.parts.clock.now_ms();
        let cutoff =
            |ttl: Duration| now.saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let expiry = Expiry {
            idle_since_ms: cutoff(self.parts.limits.session_idle_ttl),
            created_since_ms: cutoff(self.parts.limits.session_max_lifetime),
        };
        let store = self.parts.store.clone();
        let plugins: Vec<String> = self
            .plugins()
            .iter()
            .map(|plugin| plugin.name().to_owned())
            .collect();
        let expired = tokio::task::spawn_blocking(move || {
            let mut expired = Vec::new();
            for plugin in plugins {
                let left = limit - expired.len();
                expired.extend(store.expired_sessions(
                    &plugin,
                    expiry.idle_since_ms,
                    expiry.created_since_ms,
                    left,
                )?);
                if expired.len() >= limit {
                    break;
                }
            }
            Ok::<_, SessionStoreError>(expired)
        })
        .await
        .expect("listing expired sessions panicked")?;
        let mut reaped = Reaped::default();
        for id in expired {
            let started = Instant::now();
            let result = self
                .serialized(&id, move |parts, id, _| expire(parts, id, expiry))
                .await;
            match result {
                Ok(Expired::Lives) => {}
                Ok(Expired::Ended(plugin)) => {
                    self.parts
                        .metrics
                        .turn(&plugin, "expire", None, started.elapsed());
                    reaped.ended.push(id);
                }
                Ok(Expired::EndFailed(err)) => {
                    tracing::warn!(session = id, error = %err, "on-end failed as the session expired; it was deleted all the same");
                    self.parts
                        .observe::<()>("expire", started, &Err(err), |()| NO_PLUGIN);
                    reaped.ended.push(id);
                    reaped.on_end_failures += 1;
                }
                Err(err) => tracing::warn!(session = id, error = %err, "cannot expire the session"),
            }
        }
        let store = self.parts.store.clone();
        let retention = Retention {
            ended_before_ms: cutoff(self.parts.limits.retain_ended),
            records_before_ms: cutoff(self.parts.limits.retain_records),
        };
        reaped.swept = tokio::task::spawn_blocking(move || store.sweep(now, retention))
            .await
            .expect("the sweep panicked")?;
        Ok(reaped)
    }

    /// Runs [`Host::reap`] every `every` until the host is dropped by
    /// everyone else, logging what each round did.
    pub fn spawn_reaper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let host = Arc::downgrade(&self.parts);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let Some(parts) = host.upgrade() else { return };
                let host = Host { parts };
                match host.reap(REAP_BATCH).await {
                    Ok(reaped) if reaped.ended.is_empty() && reaped.swept == Swept::default() => {}
                    Ok(reaped) => tracing::info!(
                        ended = reaped.ended.len(),
                        on_end_failures = reaped.on_end_failures,
                        kv_entries = reaped.swept.kv_entries,
                        cache_entries = reaped.swept.cache_entries,
                        ended_sessions_deleted = reaped.swept.ended_sessions,
                        tool_records_deleted = reaped.swept.executions,
                        "reaped expired sessions and entries, and data past its retention"
                    ),
                    Err(err) => tracing::warn!(error = %err, "the reaper could not run"),
                }
            }
        })
    }
}

/// Ends session `id` if it is still expired: `on-end(expired)`, then deletion.
#[instrument(skip_all, fields(session = id, plugin, version))]
fn expire(parts: &Arc<Parts>, id: &str, expiry: Expiry) -> Result<Expired, SessionError> {
    let store = &parts.store;
    let fail = session_error(id, None, None);
    let Some(record) = store.load(id).map_err(|err| fail(err.into()))? else {
        // A stale index entry: clear it.
        store.delete_session(id).map_err(|err| fail(err.into()))?;
        return Ok(Expired::Lives);
    };
    let expired = record.updated_at_ms <= expiry.idle_since_ms
        || record.created_at_ms <= expiry.created_since_ms;
    if record.status != Status::Active || !expired {
        return Ok(Expired::Lives);
    }
    let Some(active) = parts.plugins.active(&record.plugin) else {
        // Handed off to a plugin this host has not loaded: another host
        // may have it.
        return Ok(Expired::Lives);
    };
    let (record, plugin) = match migrated(parts, record, active) {
        Ok((record, plugin, _)) => {
            record_version(&plugin);
            (record, plugin)
        }
        Err(cause) => {
            // No version can run on-end; the session ends without it.
            store.delete_session(id).map_err(|err| fail(err.into()))?;
            return Ok(Expired::EndFailed(fail(cause)));
        }
    };
    let turn = record.turn + 1;
    let call = call_alone(
        parts,
        &plugin,
        &record,
        turn,
        record.state.clone(),
        |agent, store| agent.on_end(store, EndReason::Expired),
    );
    store.delete_session(id).map_err(|err| fail(err.into()))?;
    end_children(parts, &record);
    Ok(match call.result {
        Ok(()) => Expired::Ended(record.plugin),
        Err(cause) => Expired::EndFailed(turn_error(&record, turn)(cause)),
    })
}
