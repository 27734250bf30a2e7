//! The host's front door: [`Host`], what front ends call.
//!
//! A turn is started here ([`Host::start_session`], [`Host::send_message`],
//! [`Host::call_tool`], [`Host::end_session`]) and run by [`crate::session`],
//! after every earlier turn of its session and within the bound on turns at
//! once. The operator's parts live in rooms of their own: `builder`,
//! `plugins` (the host's plugin versions, loaded, staged, activated, rolled
//! back and followed), [`config`] (what each plugin may reach), `remotes`
//! (the policy's MCP servers, as the front ends see them), [`pinned`]
//! (sessions the active version could not migrate), [`timeline`] (the log
//! read, a turn's state, fork, rewind) and `follow` (the log as it is
//! committed), [`reaper`], [`users`] (a user's data, exported or erased) and
//! [`operator_kv`] (the operator's reads and writes of KV).

mod builder;
pub mod config;
mod follow;
pub mod operator_kv;
pub mod pinned;
mod plugins;
pub mod reaper;
mod remotes;
pub mod timeline;
pub mod users;

pub use builder::HostBuilder;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::capability::output::Sink;
use crate::clock::Clock;
use crate::limits::{Limits, Tripped};
use crate::metrics::{Metrics, NO_PLUGIN};
use crate::names::{check_session_id, check_user_id, check_value};
use crate::plugin::versions::Plugins;
use crate::policy::{Grants, MayCall};
use crate::remote::McpServers;
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError, session_error};
use crate::session::interrupt::Running;
use crate::session::report::{SessionStart, ToolReport, TurnReport};
use crate::session::serial::{PluginSlot, PluginTurns, SessionLocks, leased};
use crate::store::{
    BackendError, Execution, Message, SessionFilter, SessionPage, SessionRecord, SessionStoreError,
    Store,
};
use crate::webhook::Webhooks;

/// The agentbox host: loaded plugins, their sessions, and the store behind them.
///
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) plugins: Plugins,
    pub(crate) limits: Arc<Limits>,
    pub(crate) plugin_limits: HashMap<String, Arc<Limits>>,
    /// How long a session lease lasts: a turn may run on-message and
    /// on-end, each under the longest deadline, plus a margin.
    pub(crate) lease_ttl: Duration,
    pub(crate) grants: Arc<Grants>,
    /// The tools of other plugins and MCP servers each plugin may call.
    pub(crate) calls: HashMap<String, MayCall>,
    /// The operator's MCP servers, whose tools join the registry.
    pub(crate) remotes: McpServers,
    /// Sessions the active version could not migrate, not tried again.
    pub(crate) pinned: pinned::Pinned,
    /// What each plugin may reach outside the host, as the policy file
    /// says and the operators' configuration adds ([`config`]).
    pub(crate) outbound: config::Reach,
    pub(crate) clock: Clock,
    pub(crate) locks: SessionLocks,
    /// Where each plugin's events are posted.
    pub(crate) webhooks: Webhooks,
    /// The commits this process hears of, for their followers.
    pub(crate) commits: follow::Commits,
    /// The turns this process runs, for their callers' interrupts.
    pub(crate) running: Arc<Running>,
    pub(crate) turns: Arc<Semaphore>,
    pub(crate) plugin_turns: PluginTurns,
    pub(crate) metrics: Arc<Metrics>,
    /// This host's name on the store's session leases.
    pub(crate) holder: String,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("store", &self.inner.store)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

impl Host {
    /// Runs `f` with the store on a blocking thread, where store calls are
    /// made: they block.
    pub(crate) async fn on_store<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> R + Send + 'static,
    ) -> R {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .expect("a call of the store panicked")
    }

    /// Session `id` as last committed, or `None` if there is no such session.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, SessionStoreError> {
        let id = id.to_owned();
        self.on_store(move |store| store.load(&id)).await
    }

    /// A page of the sessions `filter` admits, from `cursor`, about `limit`.
    pub async fn list_sessions(
        &self,
        filter: SessionFilter,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<SessionPage, SessionStoreError> {
        self.on_store(move |store| store.list_sessions(&filter, cursor.as_deref(), limit))
            .await
    }

    /// How many sessions `owner` started are active, of any plugin.
    pub async fn live_sessions_of(&self, owner: &str) -> Result<u64, SessionStoreError> {
        let owner = owner.to_owned();
        self.on_store(move |store| store.live_sessions_of(&owner))
            .await
    }

    /// The newest `last` messages of session `id`'s history, oldest first;
    /// empty for a session that does not exist.
    pub async fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, SessionStoreError> {
        let id = id.to_owned();
        self.on_store(move |store| store.history(&id, last)).await
    }

    /// Every recorded tool call, oldest first.
    pub async fn executions(&self) -> Result<Vec<Execution>, BackendError> {
        self.on_store(|store| store.executions()).await
    }

    /// The limits the turns of plugins without limits of their own run under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The limits the turns of plugin `plugin` run under.
    pub fn limits_for(&self, plugin: &str) -> &Arc<Limits> {
        self.inner
            .plugin_limits
            .get(plugin)
            .unwrap_or(&self.inner.limits)
    }

    /// The host's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// What the host has counted.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Every metric in the Prometheus text format, with the live sessions of
    /// each loaded plugin read from the store now.
    pub async fn metrics_text(&self) -> String {
        let host = self.clone();
        tokio::task::spawn_blocking(move || {
            for plugin in host.plugins() {
                match host.inner.store.live_sessions(plugin.name()) {
                    Ok(live) => host.inner.metrics.set_live_sessions(plugin.name(), live),
                    Err(err) => {
                        tracing::warn!(plugin = plugin.name(), error = %err, "cannot count live sessions");
                    }
                }
            }
            host.inner.metrics.encode()
        })
        .await
        .expect("counting live sessions panicked")
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
        let metrics = &self.inner.metrics;
        let took = started.elapsed();
        match result {
            Ok(report) => metrics.turn(plugin(report), kind, None, took),
            Err(err) => {
                // Only loaded plugins' names become labels: a request may name any.
                let plugin = err
                    .plugin
                    .as_deref()
                    .filter(|name| self.inner.plugins.active(name).is_some())
                    .unwrap_or(NO_PLUGIN);
                metrics.turn(plugin, kind, Some(err.cause.kind()), took);
                if let Some(limit) = err.cause.limit() {
                    metrics.limit_trip(plugin, limit);
                }
            }
        }
    }
}

impl Host {
    /// Starts a session: runs the plugin's `on-start` (turn 0) and stores the
    /// session with what it wrote and said, or nothing if it fails.
    pub async fn start_session(
        &self,
        start: SessionStart,
        sink: Option<Sink>,
    ) -> Result<TurnReport, SessionError> {
        let id = start
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let fail = session_error(&id, Some(&start.plugin), None);
        check_session_id(&id).map_err(|reason| fail(Cause::BadRequest(reason)))?;
        if let Some(user) = &start.user_id {
            check_user_id(user).map_err(|reason| fail(Cause::BadRequest(reason)))?;
        }
        for (name, value) in &start.variables {
            check_value(value, self.limits_for(&start.plugin)).map_err(|reason| {
                fail(Cause::BadRequest(format!(
                    "initial variable `{name}` {reason}"
                )))
            })?;
        }
        let host = self.clone();
        let started = Instant::now();
        let result = self
            .serialized(&id, move |id, within| {
                host.run_start(id, start, sink, within)
            })
            .await;
        self.observe("start", started, &result, |report| &report.plugin);
        result
    }

    /// Sends the caller's `text` to the session's plugin (`on-message`) and
    /// commits the turn. If the agent ends the conversation, its `on-end`
    /// runs in the same turn and the session ends with the commit.
    pub async fn send_message(
        &self,
        session: &str,
        text: &str,
        sink: Option<Sink>,
    ) -> Result<TurnReport, SessionError> {
        let host = self.clone();
        let text = text.to_owned();
        let started = Instant::now();
        let result = self
            .serialized(session, move |id, within| {
                host.run_message(id, &text, sink, within)
            })
            .await;
        self.observe("message", started, &result, |report| &report.plugin);
        result
    }

    /// Calls the tool `tool` of the session's plugin with `arguments`, as a
    /// turn of the session.
    ///
    /// The host checks the arguments against the tool's schema and the
    /// session's committed state against the tool's `requires` before the
    /// guest is entered; a tool that declares a cache TTL is answered from the
    /// cache when it can. The result must be JSON within the output limit and
    /// match the tool's result schema. Every call is recorded for
    /// [`crate::plugin::tools::stats`].
    pub async fn call_tool(
        &self,
        session: &str,
        tool: &str,
        arguments: Value,
        sink: Option<Sink>,
    ) -> Result<ToolReport, SessionError> {
        let host = self.clone();
        let tool = tool.to_owned();
        let started = Instant::now();
        let result = self
            .serialized(session, move |id, within| {
                host.run_tool(id, &tool, arguments, sink, within)
            })
            .await;
        self.observe("tool", started, &result, |report| &report.turn.plugin);
        result
    }

    /// Ends the session at the caller's request: runs `on-end` and commits
    /// its writes with the end. If `on-end` fails, the session still ends, with
    /// its state as last committed, and the failure is returned.
    pub async fn end_session(&self, session: &str) -> Result<TurnReport, SessionError> {
        let host = self.clone();
        let started = Instant::now();
        let result = self
            .serialized(session, move |id, _| host.run_end(id))
            .await;
        self.observe("end", started, &result, |report| &report.plugin);
        result
    }

    /// Runs `turn` for session `id` on a blocking thread, after every earlier
    /// turn of the session and within the bound on concurrent turns, in a
    /// chain of calls its caller's interrupt stops.
    pub(crate) async fn serialized<R: Send + 'static>(
        &self,
        id: &str,
        turn: impl FnOnce(&str, &Within) -> Result<R, SessionError> + Send + 'static,
    ) -> Result<R, SessionError> {
        let lock = self.inner.locks.lock_for(id);
        let _turn_of_session = lock.lock().await;
        let running = self.inner.running.enter(id);
        let within = Within::stopped_by(running.stop().clone());
        let _slot = self
            .inner
            .turns
            .clone()
            .acquire_owned()
            .await
            .expect("the turn semaphore is never closed");
        let id = id.to_owned();
        let host = self.clone();
        tokio::task::spawn_blocking(move || {
            let inner = &host.inner;
            leased(&*inner.store, &inner.holder, inner.lease_ttl, &id, |id| {
                turn(id, &within)
            })
        })
        .await
        .expect("a turn panicked")
    }

    /// Stops the running turn of session `id`: here, or in the process of
    /// the store that holds the session's lease. With no turn running,
    /// fails with [`Cause::Idle`].
    pub async fn interrupt(&self, id: &str) -> Result<(), SessionError> {
        let fail = session_error(id, None, None);
        if self.inner.running.stop(id) {
            return Ok(());
        }
        let owned = id.to_owned();
        let elsewhere = self
            .on_store(move |store| store.interrupt(&owned))
            .await
            .map_err(|err| fail(err.into()))?;
        if elsewhere {
            Ok(())
        } else {
            Err(fail(Cause::Idle))
        }
    }

    /// A place for one more turn of `plugin` within its limit of turns at
    /// once, held until the turn is over; `None` if it has no such limit.
    pub(crate) fn enter_turn(&self, plugin: &str) -> Result<PluginSlot, Cause> {
        let Some(most) = self.limits_for(plugin).plugin_turns else {
            return Ok(None);
        };
        self.inner
            .plugin_turns
            .enter(plugin, most)
            .map(Some)
            .ok_or(Cause::Limit(Tripped::ConcurrentTurns(most)))
    }
}
