//! What a turn is run with: the store, the plugins, the limits, the
//! policy's grants, the clock and the metrics, and the parts that keep
//! turns in order and tell of their commits. The front door
//! ([`Host`](crate::Host)) holds them and hands them to each turn.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, broadcast};

use crate::capability::http::HttpService;
use crate::capability::kv::KvService;
use crate::capability::registry::ToolHub;
use crate::clock::Clock;
use crate::limits::{Limits, Tripped};
use crate::metrics::{Metrics, NO_PLUGIN};
use crate::plugin::PluginVersion;
use crate::plugin::versions::Plugins;
use crate::policy::MayCall;
use crate::remote::McpServers;
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError};
use crate::session::interrupt::Running;
use crate::session::pinned::Pinned;
use crate::session::serial::{PluginSlot, PluginTurns, SessionLocks, leased};
use crate::store::{
    Announcement, AnnouncementSink, Committed, HistoryCap, LogEntry, SessionRecord, Store,
};
use crate::webhook::Webhooks;

/// Commits heard of that a slow follower may still catch up on.
pub(crate) const HEARD_COMMITS: usize = 1024;

/// Makes the registry of one call of an export: for a call of `plugin`'s
/// export in a session its owner started, running within a chain of calls
/// until a deadline, with the time it was given. The registry runs turns,
/// and turns make registries: the front door, which builds the parts,
/// names the one maker (`Caller::registry` in `session/calls.rs`),
/// so that the turn's files import one another in one direction.
pub(crate) type Registry = fn(
    Arc<Parts>,
    Arc<PluginVersion>,
    Option<String>,
    &Within,
    Instant,
    Duration,
) -> Box<dyn ToolHub>;

/// The host's parts, shared by every turn.
pub(crate) struct Parts {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) plugins: Plugins,
    pub(crate) limits: Arc<Limits>,
    pub(crate) plugin_limits: HashMap<String, Arc<Limits>>,
    /// How long a session lease lasts: a turn may run on-message and
    /// on-end, each under the longest deadline, plus a margin.
    pub(crate) lease_ttl: Duration,
    /// The `kv` capability, which every call's KV is made from.
    pub(crate) kv: KvService,
    /// The tools of other plugins and MCP servers each plugin may call.
    pub(crate) calls: HashMap<String, MayCall>,
    /// The operator's MCP servers, whose tools join the registry.
    pub(crate) remotes: McpServers,
    /// What answers each call's registry calls.
    pub(crate) registry: Registry,
    /// Sessions the active version could not migrate, not tried again.
    pub(crate) pinned: Pinned,
    /// Outbound HTTP, which every call's is made from: what each plugin
    /// may reach outside the host, as the policy file says and the
    /// operators' configuration adds.
    pub(crate) http: HttpService,
    pub(crate) clock: Clock,
    pub(crate) locks: SessionLocks,
    /// Where each plugin's events are posted.
    pub(crate) webhooks: Webhooks,
    /// The commits this process hears of, for their followers.
    pub(crate) commits: Commits,
    /// The turns this process runs, for their callers' interrupts.
    pub(crate) running: Arc<Running>,
    pub(crate) turns: Arc<Semaphore>,
    pub(crate) plugin_turns: PluginTurns,
    pub(crate) metrics: Arc<Metrics>,
    /// This host's name on the store's session leases.
    pub(crate) holder: String,
}

impl Parts {
    /// Runs `f` with the store on a blocking thread, where store calls are
    /// made: they block.
    pub(crate) async fn on_store<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> R + Send + 'static,
    ) -> R {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .expect("a call of the store panicked")
    }

    /// The limits the turns of plugin `plugin` run under.
    pub(crate) fn limits_for(&self, plugin: &str) -> &Arc<Limits> {
        self.plugin_limits.get(plugin).unwrap_or(&self.limits)
    }

    /// A place for one more turn of `plugin` within its limit of turns at
    /// once, held until the turn is over; `None` if it has no such limit.
    pub(crate) fn enter_turn(&self, plugin: &str) -> Result<PluginSlot, Cause> {
        let Some(most) = self.limits_for(plugin).plugin_turns else {
            return Ok(None);
        };
        self.plugin_turns
            .enter(plugin, most)
            .map(Some)
            .ok_or(Cause::Limit(Tripped::ConcurrentTurns(most)))
    }

    /// Runs `turn` of child session `id` from a turn of its parent:
    /// after any turn of it running here, under its lease.
    pub(crate) fn in_child<R>(
        &self,
        id: &str,
        turn: impl FnOnce(&str) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let lock = self.locks.lock_for(id);
        let _turn_of_session = lock.blocking_lock();
        self.leased(id, turn)
    }

    /// Runs `turn` of session `id` holding the store's lease on it.
    pub(crate) fn leased<R>(
        &self,
        id: &str,
        turn: impl FnOnce(&str) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        leased(&*self.store, &self.holder, self.lease_ttl, id, turn)
    }

    /// Whether the policy lets plugin `from` hand the conversation to
    /// plugin `to` (`may_hand_off`).
    pub(crate) fn may_hand_off(&self, from: &str, to: &str) -> bool {
        self.calls.get(from).is_some_and(|may| may.hands_off_to(to))
    }

    /// What each commit trims a session's history to.
    pub(crate) fn history_cap(&self) -> HistoryCap {
        HistoryCap {
            messages: self.limits.history_messages,
            bytes: self.limits.history_bytes,
        }
    }

    /// Refuses an event of `adding` bytes that would take `record`'s log
    /// past its limit (or, of none yet, any event: a full log has no room).
    pub(crate) fn log_room(&self, record: &SessionRecord, adding: usize) -> Result<(), Cause> {
        let (held, limit) = (record.log_bytes, self.limits.log_bytes);
        if held + (adding as u64).max(1) > limit {
            return Err(Cause::LogFull { held, limit });
        }
        Ok(())
    }

    /// Tells the followers of session `record` (as it was before the
    /// commit) that it committed event `event` (unless the store tells
    /// them), and posts the event to its plugin's webhook, if any.
    pub(crate) fn committed(&self, record: &SessionRecord, event: &LogEntry, seq: u64) {
        self.webhooks
            .post(&record.plugin, &record.id, seq, &event.body);
        let commits = &self.commits;
        if !commits.announced {
            let _ = commits.heard.send(Arc::new(Committed {
                session: record.id.clone(),
                plugin: record.plugin.clone(),
                owner: record.owner.clone(),
                seq,
            }));
        }
    }

    /// Counts a finished turn of `kind` that began at `started`; `plugin`
    /// names the plugin of a turn that committed.
    pub(crate) fn observe<R>(
        &self,
        kind: &'static str,
        started: Instant,
        result: &Result<R, SessionError>,
        plugin: impl FnOnce(&R) -> &str,
    ) {
        let metrics = &self.metrics;
        let took = started.elapsed();
        match result {
            Ok(report) => metrics.turn(plugin(report), kind, None, took),
            Err(err) => {
                // Only loaded plugins' names become labels: a request may name any.
                let plugin = err
                    .plugin
                    .as_deref()
                    .filter(|name| self.plugins.active(name).is_some())
                    .unwrap_or(NO_PLUGIN);
                metrics.turn(plugin, kind, Some(err.cause.kind()), took);
                if let Some(limit) = err.cause.limit() {
                    metrics.limit_trip(plugin, limit);
                }
            }
        }
    }
}

/// The commits this process hears of, as it hears of them.
#[derive(Debug)]
pub(crate) struct Commits {
    heard: Arc<broadcast::Sender<Arc<Committed>>>,
    /// Whether the store tells of every commit, this process's included.
    announced: bool,
}

impl Commits {
    /// Hears of commits from this process, or from every process of
    /// `store` if it announces them; and stops the turns of `running` that
    /// other processes are asked to interrupt.
    pub(crate) fn of(store: &Arc<dyn Store>, running: &Arc<Running>) -> Commits {
        let heard = Arc::new(broadcast::channel(HEARD_COMMITS).0);
        let (commits, running): (Weak<_>, Weak<Running>) =
            (Arc::downgrade(&heard), Arc::downgrade(running));
        let sink: AnnouncementSink = Arc::new(move |announced| {
            let (Some(heard), Some(running)) = (commits.upgrade(), running.upgrade()) else {
                return false;
            };
            match announced {
                // Nobody following is no failure.
                Announcement::Committed(committed) => drop(heard.send(Arc::new(committed))),
                Announcement::Interrupt(id) => drop(running.stop(&id)),
            }
            true
        });
        let announced = store.announce(sink);
        Commits { heard, announced }
    }

    /// The commits heard of from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.heard.subscribe()
    }
}
