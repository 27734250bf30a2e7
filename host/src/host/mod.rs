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

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::capability::output::Sink;
use crate::clock::Clock;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::names::{check_session_id, check_user_id, check_value};
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError, session_error};
use crate::session::message::message;
use crate::session::parts::Parts;
use crate::session::report::{SessionStart, ToolReport, TurnReport};
use crate::session::{lifecycle, tool_call};
use crate::store::{
    BackendError, Execution, Message, SessionFilter, SessionPage, SessionRecord, SessionStoreError,
};

/// The agentbox host: loaded plugins, their sessions, and the store behind them.
///
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Host {
    pub(crate) parts: Arc<Parts>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("store", &self.parts.store)
            .field("limits", &self.parts.limits)
            .finish()
    }
}

impl Host {
    /// Session `id` as last committed, or `None` if there is no such session.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, SessionStoreError> {
        let id = id.to_owned();
        self.parts.on_store(move |store| store.load(&id)).await
    }

    /// A page of the sessions `filter` admits, from `cursor`, about `limit`.
    pub async fn list_sessions(
        &self,
        filter: SessionFilter,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<SessionPage, SessionStoreError> {
        self.parts
            .on_store(move |store| store.list_sessions(&filter, cursor.as_deref(), limit))
            .await
    }

    /// How many sessions `owner` started are active, of any plugin.
    pub async fn live_sessions_of(&self, owner: &str) -> Result<u64, SessionStoreError> {
        let owner = owner.to_owned();
        self.parts
            .on_store(move |store| store.live_sessions_of(&owner))
            .await
    }

    /// The newest `last` messages of session `id`'s history, oldest first;
    /// empty for a session that does not exist.
    pub async fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, SessionStoreError> {
        let id = id.to_owned();
        self.parts
            .on_store(move |store| store.history(&id, last))
            .await
    }

    /// Every recorded tool call, oldest first.
    pub async fn executions(&self) -> Result<Vec<Execution>, BackendError> {
        self.parts.on_store(|store| store.executions()).await
    }

    /// The limits the turns of plugins without limits of their own run under.
    pub fn limits(&self) -> &Limits {
        &self.parts.limits
    }

    /// The limits the turns of plugin `plugin` run under.
    pub fn limits_for(&self, plugin: &str) -> &Arc<Limits> {
        self.parts.limits_for(plugin)
    }

    /// The host's clock.
    pub fn clock(&self) -> &Clock {
        &self.parts.clock
    }

    /// What the host has counted.
    pub fn metrics(&self) -> &Metrics {
        &self.parts.metrics
    }

    /// Every metric in the Prometheus text format, with the live sessions of
    /// each loaded plugin read from the store now.
    pub async fn metrics_text(&self) -> String {
        let host = self.clone();
        tokio::task::spawn_blocking(move || {
            for plugin in host.plugins() {
                match host.parts.store.live_sessions(plugin.name()) {
                    Ok(live) => host.parts.metrics.set_live_sessions(plugin.name(), live),
                    Err(err) => {
                        tracing::warn!(plugin = plugin.name(), error = %err, "cannot count live sessions");
                    }
                }
            }
            host.parts.metrics.encode()
        })
        .await
        .expect("counting live sessions panicked")
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
        let started = Instant::now();
        let result = self
            .serialized(&id, move |parts, id, within| {
                lifecycle::start(parts, id, start, sink, within)
            })
            .await;
        self.parts
            .observe("start", started, &result, |report| &report.plugin);
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
        let text = text.to_owned();
        let started = Instant::now();
        let result = self
            .serialized(session, move |parts, id, within| {
                message(parts, id, &text, sink, within)
            })
            .await;
        self.parts
            .observe("message", started, &result, |report| &report.plugin);
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
        let tool = tool.to_owned();
        let started = Instant::now();
        let result = self
            .serialized(session, move |parts, id, within| {
                tool_call::tool(parts, id, &tool, arguments, sink, within)
            })
            .await;
        self.parts
            .observe("tool", started, &result, |report| &report.turn.plugin);
        result
    }

    /// Ends the session at the caller's request: runs `on-end` and commits
    /// its writes with the end. If `on-end` fails, the session still ends, with
    /// its state as last committed, and the failure is returned.
    pub async fn end_session(&self, session: &str) -> Result<TurnReport, SessionError> {
        let started = Instant::now();
        let result = self
            .serialized(session, move |parts, id, _| lifecycle::end(parts, id))
            .await;
        self.parts
            .observe("end", started, &result, |report| &report.plugin);
        result
    }

    /// Runs `turn` for session `id`, after every earlier turn of the session
    /// and within the bound on concurrent turns, in a chain of calls its
    /// caller's interrupt stops. On a multi-threaded runtime the turn runs on
    /// the calling worker's own thread, which hands its other tasks to
    /// another thread meanwhile (`block_in_place`): no hop to a blocking
    /// thread and back, which cost a single-session turn two fifths of its
    /// time. A current-thread runtime has no other worker to hand them to,
    /// so there the turn runs on a blocking thread.
    pub(crate) async fn serialized<R: Send + 'static>(
        &self,
        id: &str,
        turn: impl FnOnce(&Arc<Parts>, &str, &Within) -> Result<R, SessionError> + Send + 'static,
    ) -> Result<R, SessionError> {
        let parts = &self.parts;
        let lock = parts.locks.lock_for(id);
        let _turn_of_session = lock.lock().await;
        let running = parts.running.enter(id);
        let within = Within::stopped_by(running.stop().clone());
        let _slot = parts
            .turns
            .clone()
            .acquire_owned()
            .await
            .expect("the turn semaphore is never closed");
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(|| parts.leased(id, |id| turn(parts, id, &within)));
        }
        let (parts, id) = (parts.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || parts.leased(&id, |id| turn(&parts, id, &within)))
            .await
            .expect("a turn panicked")
    }

    /// Stops the running turn of session `id`: here, or in the process of
    /// the store that holds the session's lease. With no turn running,
    /// fails with [`Cause::Idle`].
    pub async fn interrupt(&self, id: &str) -> Result<(), SessionError> {
        let fail = session_error(id, None, None);
        if self.parts.running.stop(id) {
            return Ok(());
        }
        let owned = id.to_owned();
        let elsewhere = self
            .parts
            .on_store(move |store| store.interrupt(&owned))
            .await
            .map_err(|err| fail(err.into()))?;
        if elsewhere {
            Ok(())
        } else {
            Err(fail(Cause::Idle))
        }
    }
}
