//! Sessions and the turn transaction.
//!
//! A session is a record in the [`Store`]; an instance serves one turn of one
//! session and is dropped. A turn loads the session, instantiates the active
//! version of its plugin, calls one export, and on success commits the new
//! state, revision, turn number and history in one store transaction. On a
//! trap, a tripped limit, a guest error or a refused state, nothing is
//! committed. Turns of one session run one at a time; turns of different
//! sessions run concurrently.

mod output;
mod state;
mod versions;

pub use versions::Followed;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::instrument;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{CallHook, ResourceLimiter, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub use output::Sink;
pub(crate) use state::SessionCtx;
pub use state::{MAX_KEY_BYTES, check_key, check_value};

use crate::bindings::{EndReason, Manifest, Outcome as WitOutcome, Plugin, PluginPre};
use crate::clock::Clock;
use crate::engine::{EPOCH_TICK, Engine, check_concurrent_turns};
use crate::kv::{Grants, KvCtx, KvView};
use crate::metrics::{Metrics, NO_PLUGIN};
use crate::plugin::{PluginVersion, Registry};
use crate::policy::Limits;
use crate::store::{
    Commit, Execution, Message, Role, SessionRecord, State, Status, Store, StoreError, Swept,
    ToolOutcome,
};
use crate::tools::{ToolRef, Violation};
use output::{GuestLog, OutputCtx};

/// Longest session id or user id, in bytes.
const MAX_ID_BYTES: usize = 128;

/// How much longer than its turn may run a session lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

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
enum Expired {
    /// It was touched in time, is gone already, or its plugin is not loaded here.
    Lives,
    /// `on-end` of the plugin named ran and the session was deleted.
    Ended(String),
    /// `on-end` failed, and the session was deleted all the same.
    EndFailed(SessionError),
}

/// The cutoffs a session is expired by.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    idle_since_ms: u64,
    created_since_ms: u64,
}

/// The data of a wasmtime store serving one turn: one context per capability.
pub(crate) struct TurnCtx {
    session: SessionCtx,
    kv: KvCtx,
    output: OutputCtx,
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryLimit,
    /// Calls from the guest into the host so far.
    host_calls: u64,
    log: GuestLog,
}

impl WasiView for TurnCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl TurnCtx {
    fn new(session: SessionCtx, kv: KvCtx, output: OutputCtx, limits: &Limits) -> TurnCtx {
        let log = GuestLog::new(limits.output_bytes);
        // No arguments, environment, preopened directories or network: the
        // guest's stdout and stderr are its only way out besides the world.
        let wasi = WasiCtxBuilder::new()
            .stdout(log.clone())
            .stderr(log.clone())
            .build();
        TurnCtx {
            session,
            kv,
            output,
            wasi,
            table: ResourceTable::new(),
            memory: MemoryLimit {
                limit: limits.memory_bytes,
            },
            host_calls: 0,
            log,
        }
    }
}

/// A limit the host enforces from inside a host call, carried by the trap.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Tripped {
    #[error("memory limit of {0} bytes exceeded")]
    Memory(usize),
    #[error("output limit of {0} bytes per turn exceeded")]
    Output(usize),
    #[error("limit of {0} host calls per call of an export exceeded")]
    HostCalls(u64),
}

struct MemoryLimit {
    limit: usize,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(Tripped::Memory(self.limit).into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slots.
        Ok(true)
    }
}

/// The linker every plugin is instantiated with: WASI with an empty context,
/// plus the world's `session`, `kv` and `output`.
fn linker(engine: &Engine) -> anyhow::Result<Linker<TurnCtx>> {
    let mut linker: Linker<TurnCtx> = Linker::new(engine.wasmtime());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    state::add_to_linker(&mut linker, |ctx| &mut ctx.session)?;
    crate::kv::add_to_linker(&mut linker, |ctx| KvView {
        ctx: &mut ctx.kv,
        session: &ctx.session,
        table: &mut ctx.table,
    })?;
    output::add_to_linker(&mut linker, |ctx| &mut ctx.output)?;
    Ok(linker)
}

/// Why a turn failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// No session has this id.
    #[error("no such session")]
    NotFound,
    /// The session has ended and takes no more turns.
    #[error("the session has ended")]
    Ended,
    /// A session with this id exists already.
    #[error("a session with this id exists already")]
    Exists,
    /// The plugin is not loaded in this host.
    #[error("plugin `{0}` is not loaded")]
    PluginNotLoaded(String),
    /// The caller passed something invalid (an id, variables, a message).
    #[error("{0}")]
    BadRequest(String),
    /// The plugin has no tool of this name.
    #[error("plugin `{plugin}` has no tool `{tool}`")]
    UnknownTool {
        /// The plugin.
        plugin: String,
        /// The tool asked for.
        tool: String,
    },
    /// The arguments broke the tool's parameter schema; the guest was not entered.
    #[error("invalid arguments for tool `{tool}`: {}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// Every violation, with its JSON pointer.
        violations: Vec<Violation>,
    },
    /// Session fields the tool requires are not set; the guest was not entered.
    #[error("tool `{tool}` requires session state that is not set: {}", missing.join(", "))]
    Precondition {
        /// The tool.
        tool: String,
        /// The required keys that are absent, `null` or `false`.
        missing: Vec<String>,
    },
    /// The tool's result is not JSON, too large, or breaks its result schema.
    #[error("tool `{tool}` returned an invalid result: {reason}")]
    InvalidResult {
        /// The tool.
        tool: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The turn ran past its deadline.
    #[error("deadline of {} ms exceeded", .0.as_millis())]
    Deadline(Duration),
    /// The instance tried to grow its memory past the limit.
    #[error("memory limit of {0} bytes exceeded")]
    MemoryLimit(usize),
    /// The turn said more than the output limit.
    #[error("output limit of {0} bytes per turn exceeded")]
    OutputLimit(usize),
    /// The guest called into the host more often than the limit allows.
    #[error("limit of {0} host calls per call of an export exceeded")]
    HostCallLimit(u64),
    /// The guest burned all the fuel one call of an export may.
    #[error("fuel limit of {0} per call of an export exhausted")]
    FuelLimit(u64),
    /// The plugin has as many active sessions as its limit allows.
    #[error("the plugin already has its limit of {0} active sessions")]
    LiveSessions(u64),
    /// The plugin is running as many turns at once as its limit allows.
    #[error(
        "the plugin is already running its limit of {0} turns at once; try again when one has finished"
    )]
    ConcurrentTurns(usize),
    /// The guest trapped.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The guest returned an error.
    #[error("plugin returned an error: {0}")]
    Guest(String),
    /// The state the turn would commit breaks a rule.
    #[error("invalid session state: {0}")]
    InvalidState(String),
    /// Another turn committed first (another process holds the session).
    #[error("{0}")]
    Conflict(StoreError),
    /// The active version could not migrate the session's state, and the
    /// version that last committed it is not loaded.
    #[error("cannot migrate the session state from state version {from} to {to}: {cause}")]
    Migration {
        /// The state version of the stored state.
        from: u32,
        /// The state version of the active plugin version.
        to: u32,
        /// Why `migrate` failed.
        cause: Box<Cause>,
    },
    /// Another host process is running a turn of the session and did not
    /// finish within the wait.
    #[error("another host is running a turn of this session; it did not finish within {} ms", .0.as_millis())]
    Busy(Duration),
    /// The store failed.
    #[error("{0}")]
    Store(StoreError),
}

impl Cause {
    /// A short, stable name of the kind of failure, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::NotFound => "not-found",
            Cause::Ended => "ended",
            Cause::Exists => "exists",
            Cause::PluginNotLoaded(_) => "plugin-not-loaded",
            Cause::BadRequest(_) => "bad-request",
            Cause::UnknownTool { .. } => "unknown-tool",
            Cause::InvalidArguments { .. } => "invalid-arguments",
            Cause::Precondition { .. } => "precondition",
            Cause::InvalidResult { .. } => "invalid-result",
            Cause::Deadline(_) => "deadline",
            Cause::MemoryLimit(_) => "memory-limit",
            Cause::OutputLimit(_) => "output-limit",
            Cause::HostCallLimit(_) => "host-call-limit",
            Cause::FuelLimit(_) => "fuel-limit",
            Cause::LiveSessions(_) => "live-sessions",
            Cause::ConcurrentTurns(_) => "concurrent-turns",
            Cause::Trap(_) => "trap",
            Cause::Guest(_) => "guest-error",
            Cause::InvalidState(_) => "invalid-state",
            Cause::Conflict(_) => "conflict",
            Cause::Busy(_) => "busy",
            Cause::Migration { .. } => "migration",
            Cause::Store(_) => "unavailable",
        }
    }
}

impl Cause {
    /// The limit that stopped the call, if a limit did.
    fn limit(&self) -> Option<&'static str> {
        match self {
            Cause::Deadline(_) => Some("deadline"),
            Cause::MemoryLimit(_) => Some("memory"),
            Cause::OutputLimit(_) => Some("output"),
            Cause::HostCallLimit(_) => Some("host-calls"),
            Cause::FuelLimit(_) => Some("fuel"),
            Cause::LiveSessions(_) => Some("live-sessions"),
            Cause::ConcurrentTurns(_) => Some("concurrent-turns"),
            Cause::Migration { cause, .. } => cause.limit(),
            _ => None,
        }
    }

    /// How a tool call that failed this way is recorded.
    fn tool_outcome(&self) -> ToolOutcome {
        match self {
            Cause::InvalidArguments { .. } => ToolOutcome::InvalidArgs,
            Cause::Precondition { .. } => ToolOutcome::Precondition,
            Cause::Deadline(_) => ToolOutcome::Timeout,
            Cause::MemoryLimit(_)
            | Cause::OutputLimit(_)
            | Cause::HostCallLimit(_)
            | Cause::FuelLimit(_)
            | Cause::Trap(_) => ToolOutcome::Trap,
            _ => ToolOutcome::GuestError,
        }
    }
}

impl From<StoreError> for Cause {
    fn from(err: StoreError) -> Cause {
        match err {
            StoreError::NotFound(_) => Cause::NotFound,
            StoreError::Exists(_) => Cause::Exists,
            err @ StoreError::Conflict { .. } => Cause::Conflict(err),
            err => Cause::Store(err),
        }
    }
}

/// A failed session operation: which session, plugin and turn, and why.
/// Nothing of the failed turn was committed.
#[derive(Debug, thiserror::Error)]
#[error("session `{session}`{}{}: {cause}",
    plugin.as_ref().map(|p| format!(" (plugin `{p}`)")).unwrap_or_default(),
    turn.map(|t| format!(", turn {t}")).unwrap_or_default())]
pub struct SessionError {
    /// The session.
    pub session: String,
    /// The plugin serving it, when known.
    pub plugin: Option<String>,
    /// The turn that failed, when one ran.
    pub turn: Option<u64>,
    /// Why.
    #[source]
    pub cause: Cause,
}

/// How the conversation goes on after a turn.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "to")]
pub enum Outcome {
    /// Open for the next message.
    Continue,
    /// Handed to another plugin, which serves the next turn.
    HandOff(String),
    /// The session has ended.
    End,
}

/// What a committed turn did.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnReport {
    /// The session.
    pub session: String,
    /// The plugin that ran the turn.
    pub plugin: String,
    /// The committed turn number.
    pub turn: u64,
    /// Everything the agent said, one entry per `say`.
    pub said: Vec<String>,
    /// The state before the turn.
    pub before: State,
    /// The committed state.
    pub state: State,
    /// How the conversation goes on.
    pub outcome: Outcome,
}

/// What a tool call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolReport {
    /// The turn the call ran as; for a cached result, the session's latest
    /// committed turn, unchanged.
    pub turn: TurnReport,
    /// The tool's result.
    pub result: Value,
    /// Whether the result came from the cache without entering the guest.
    pub cached: bool,
}

/// How to start a session.
#[derive(Debug, Clone, Default)]
pub struct SessionStart {
    /// The plugin that serves it.
    pub plugin: String,
    /// Its id; a random one when `None`.
    pub id: Option<String>,
    /// The user it belongs to, if any.
    pub user_id: Option<String>,
    /// Variables the plugin reads with `session.initial-variables`.
    pub variables: Map<String, Value>,
}

/// The agentbox host: loaded plugins, their sessions, and the store behind them.
///
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<TurnCtx>,
    store: Arc<dyn Store>,
    plugins: Registry,
    limits: Arc<Limits>,
    plugin_limits: HashMap<String, Arc<Limits>>,
    /// How long a session lease lasts: a turn may run on-message and
    /// on-end, each under the longest deadline, plus a margin.
    lease_ttl: Duration,
    grants: Arc<Grants>,
    clock: Clock,
    locks: SessionLocks,
    turns: Arc<Semaphore>,
    plugin_turns: PluginTurns,
    metrics: Arc<Metrics>,
    versions: versions::VersionSync,
    /// This host's name on the store's session leases.
    holder: String,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("store", &self.inner.store)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

/// Builds a [`Host`].
#[derive(Debug)]
pub struct HostBuilder {
    limits: Limits,
    plugin_limits: BTreeMap<String, Limits>,
    grants: Grants,
    store: Option<Arc<dyn Store>>,
    cache: Option<cap_std::fs::Dir>,
    clock: Clock,
}

impl HostBuilder {
    /// Limits for every turn (defaults: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Named KV buckets granted to plugins (default: none).
    pub fn grants(mut self, grants: Grants) -> Self {
        self.grants = grants;
        self
    }

    /// Limits for the turns of plugin `plugin` alone, in place of the
    /// host's [`HostBuilder::limits`] (its session time-to-live and KV
    /// quotas stay the host's).
    pub fn plugin_limits(mut self, plugin: &str, limits: Limits) -> Self {
        self.plugin_limits.insert(plugin.to_owned(), limits);
        self
    }

    /// Everything an operator's policy sets: limits, per-plugin limits and
    /// bucket grants.
    pub fn policy(self, policy: crate::policy::Policy) -> Self {
        let builder = self.limits(policy.limits).grants(policy.grants);
        policy
            .plugins
            .into_iter()
            .fold(builder, |builder, (plugin, limits)| {
                builder.plugin_limits(&plugin, limits)
            })
    }

    /// Where sessions live (default: in memory).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// A directory for compiled plugins, so that loading the same bytes again
    /// does not recompile them (default: no cache).
    pub fn artifact_cache(mut self, dir: cap_std::fs::Dir) -> Self {
        self.cache = Some(dir);
        self
    }

    /// The clock for timestamps and time-to-live (default: the system clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The host.
    pub fn build(self) -> anyhow::Result<Host> {
        check_concurrent_turns(self.limits.concurrent_turns)
            .map_err(|reason| anyhow::anyhow!("concurrent turns {reason}"))?;
        // Every instance slot must hold the largest memory any plugin may
        // use, and fuel is metered for all if any plugin has a fuel limit.
        let largest = Limits {
            memory_bytes: self
                .plugin_limits
                .values()
                .map(|limits| limits.memory_bytes)
                .fold(self.limits.memory_bytes, usize::max),
            fuel: self
                .limits
                .fuel
                .or_else(|| self.plugin_limits.values().find_map(|limits| limits.fuel)),
            ..self.limits.clone()
        };
        let engine = Engine::new(&largest, self.cache)?;
        let longest_deadline = self
            .plugin_limits
            .values()
            .map(|limits| limits.deadline)
            .fold(self.limits.deadline, Duration::max);
        let linker = linker(&engine)?;
        Ok(Host {
            inner: Arc::new(Inner {
                engine,
                linker,
                store: self
                    .store
                    .unwrap_or_else(|| Arc::new(crate::store::MemoryStore::default())),
                plugins: Registry::default(),
                turns: Arc::new(Semaphore::new(self.limits.concurrent_turns)),
                plugin_turns: PluginTurns::default(),
                plugin_limits: self
                    .plugin_limits
                    .into_iter()
                    .map(|(plugin, limits)| (plugin, Arc::new(limits)))
                    .collect(),
                lease_ttl: longest_deadline * 2 + LEASE_MARGIN,
                limits: Arc::new(self.limits),
                grants: Arc::new(self.grants),
                clock: self.clock,
                locks: SessionLocks::default(),
                metrics: Arc::default(),
                versions: versions::VersionSync::default(),
                holder: uuid::Uuid::new_v4().to_string(),
            }),
        })
    }
}

/// What one call into an instance produced.
struct Call<R> {
    result: Result<R, Cause>,
    session: SessionCtx,
    said: Vec<String>,
}

impl Host {
    /// A builder with default limits, an in-memory store and no artifact cache.
    pub fn builder() -> HostBuilder {
        HostBuilder {
            limits: Limits::default(),
            plugin_limits: BTreeMap::new(),
            grants: Grants::default(),
            store: None,
            cache: None,
            clock: Clock::system(),
        }
    }

    /// The store sessions live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
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
    fn observe<R>(
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

    /// Every loaded version of the plugin `name`, active or not, oldest first.
    pub fn plugin_versions(&self, name: &str) -> Vec<Arc<PluginVersion>> {
        self.inner.plugins.loaded(name)
    }

    /// The active version of the plugin `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.inner.plugins.active(name)
    }

    /// Every active plugin version, ordered by name.
    pub fn plugins(&self) -> Vec<Arc<PluginVersion>> {
        self.inner.plugins.all()
    }

    /// Every tool of every active plugin, ordered by address.
    pub fn tools(&self) -> Vec<ToolRef> {
        self.plugins()
            .into_iter()
            .flat_map(|plugin| {
                let names: Vec<String> =
                    plugin.tools.iter().map(|tool| tool.name.clone()).collect();
                names.into_iter().map(move |name| ToolRef {
                    plugin: plugin.clone(),
                    name,
                })
            })
            .collect()
    }

    /// The tool at `address` (`plugin/tool`), if its plugin is active and has it.
    pub fn tool(&self, address: &str) -> Option<ToolRef> {
        let (plugin, name) = address.split_once('/')?;
        let plugin = self.plugin(plugin)?;
        plugin.tools.get(name)?;
        Some(ToolRef {
            plugin,
            name: name.to_owned(),
        })
    }

    fn describe(&self, pre: &PluginPre<TurnCtx>) -> Result<Manifest, String> {
        let ctx = TurnCtx::new(
            SessionCtx::detached(self.inner.limits.clone()),
            KvCtx::detached(),
            OutputCtx::detached(),
            &self.inner.limits,
        );
        let (result, _) = self.call(pre, ctx, &self.inner.limits, |plugin, store| {
            plugin.agentbox_plugin_agent().call_describe(store).map(Ok)
        });
        result.map_err(|cause| cause.to_string())
    }

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
        check_id("session id", &id).map_err(|reason| fail(Cause::BadRequest(reason)))?;
        if let Some(user) = &start.user_id {
            check_id("user id", user).map_err(|reason| fail(Cause::BadRequest(reason)))?;
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
            .serialized(&id, move |id| host.run_start(id, start, sink))
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
            .serialized(session, move |id| host.run_message(id, &text, sink))
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
    /// [`crate::tools::stats`].
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
            .serialized(session, move |id| host.run_tool(id, &tool, arguments, sink))
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
        let result = self.serialized(session, move |id| host.run_end(id)).await;
        self.observe("end", started, &result, |report| &report.plugin);
        result
    }

    /// Runs `turn` for session `id` on a blocking thread, after every earlier
    /// turn of the session and within the bound on concurrent turns.
    async fn serialized<R: Send + 'static>(
        &self,
        id: &str,
        turn: impl FnOnce(&str) -> Result<R, SessionError> + Send + 'static,
    ) -> Result<R, SessionError> {
        let lock = self.inner.locks.lock_for(id);
        let _turn_of_session = lock.lock().await;
        let _slot = self
            .inner
            .turns
            .clone()
            .acquire_owned()
            .await
            .expect("the turn semaphore is never closed");
        let id = id.to_owned();
        let host = self.clone();
        tokio::task::spawn_blocking(move || host.leased(&id, turn))
            .await
            .expect("a turn panicked")
    }

    /// Runs `turn` holding the store's lease on session `id`, so that no
    /// other host process runs a turn of it meanwhile. Waits for another
    /// holder's lease at most as long as a lease lasts.
    fn leased<R>(
        &self,
        id: &str,
        turn: impl FnOnce(&str) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let fail = session_error(id, None, None);
        let store = &self.inner.store;
        let holder = &self.inner.holder;
        let ttl = self.inner.lease_ttl;
        let waited = Instant::now();
        let mut pause = Duration::from_millis(1);
        while !store
            .lease(id, holder, ttl)
            .map_err(|err| fail(err.into()))?
        {
            if waited.elapsed() > ttl {
                return Err(fail(Cause::Busy(ttl)));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        let result = turn(id);
        if let Err(err) = store.release(id, holder) {
            // The lease runs out by itself; another host waits until then.
            tracing::warn!(session = id, error = %err, "cannot release the session lease");
        }
        result
    }

    /// Ends the sessions of the loaded plugins that have been idle longer than
    /// [`Limits::session_idle_ttl`] or live longer than
    /// [`Limits::session_max_lifetime`] by the host clock, at most
    /// `limit` of them, and reclaims expired KV and cache entries.
    ///
    /// Each expired session gets `on-end(expired)` under the turn deadline,
    /// so the plugin can keep what it wants in KV; then its state and history
    /// are deleted, whether `on-end` succeeded or not. A session that
    /// committed a turn since it was found expired lives on.
    pub async fn reap(&self, limit: usize) -> Result<Reaped, StoreError> {
        let now = self.inner.clock.now_ms();
        let cutoff =
            |ttl: Duration| now.saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let expiry = Expiry {
            idle_since_ms: cutoff(self.inner.limits.session_idle_ttl),
            created_since_ms: cutoff(self.inner.limits.session_max_lifetime),
        };
        let store = self.inner.store.clone();
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
            Ok::<_, StoreError>(expired)
        })
        .await
        .expect("listing expired sessions panicked")?;
        let mut reaped = Reaped::default();
        for id in expired {
            let host = self.clone();
            let started = Instant::now();
            let result = self
                .serialized(&id, move |id| host.run_expire(id, expiry))
                .await;
            match result {
                Ok(Expired::Lives) => {}
                Ok(Expired::Ended(plugin)) => {
                    self.inner
                        .metrics
                        .turn(&plugin, "expire", None, started.elapsed());
                    reaped.ended.push(id);
                }
                Ok(Expired::EndFailed(err)) => {
                    tracing::warn!(session = id, error = %err, "on-end failed as the session expired; it was deleted all the same");
                    self.observe::<()>("expire", started, &Err(err), |()| NO_PLUGIN);
                    reaped.ended.push(id);
                    reaped.on_end_failures += 1;
                }
                Err(err) => tracing::warn!(session = id, error = %err, "cannot expire the session"),
            }
        }
        let store = self.inner.store.clone();
        reaped.swept = tokio::task::spawn_blocking(move || store.sweep(now))
            .await
            .expect("the sweep panicked")?;
        Ok(reaped)
    }

    /// Runs [`Host::reap`] every `every` until the host is dropped by
    /// everyone else, logging what each round did.
    pub fn spawn_reaper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let host = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let Some(inner) = host.upgrade() else { return };
                let host = Host { inner };
                match host.reap(REAP_BATCH).await {
                    Ok(reaped) if reaped.ended.is_empty() && reaped.swept == Swept::default() => {}
                    Ok(reaped) => tracing::info!(
                        ended = reaped.ended.len(),
                        on_end_failures = reaped.on_end_failures,
                        kv_entries = reaped.swept.kv_entries,
                        cache_entries = reaped.swept.cache_entries,
                        "reaped expired sessions and entries"
                    ),
                    Err(err) => tracing::warn!(error = %err, "the reaper could not run"),
                }
            }
        })
    }

    /// Ends session `id` if it is still expired: `on-end(expired)`, then deletion.
    #[instrument(skip_all, fields(session = id, plugin, version))]
    fn run_expire(&self, id: &str, expiry: Expiry) -> Result<Expired, SessionError> {
        let store = &self.inner.store;
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
        let Some(active) = self.inner.plugins.active(&record.plugin) else {
            // Handed off to a plugin this host has not loaded: another host
            // may have it.
            return Ok(Expired::Lives);
        };
        let (record, plugin) = match self.migrated(record, active) {
            Ok((record, plugin)) => {
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
        let call = self.call_in_session(
            &plugin,
            &record,
            turn,
            record.state.clone(),
            None,
            |agent, store| agent.call_on_end(store, EndReason::Expired),
        );
        store.delete_session(id).map_err(|err| fail(err.into()))?;
        Ok(match call.result {
            Ok(()) => Expired::Ended(record.plugin),
            Err(cause) => Expired::EndFailed(turn_error(&record, turn)(cause)),
        })
    }

    #[instrument(skip_all, fields(session = id, plugin = start.plugin, version))]
    fn run_start(
        &self,
        id: &str,
        start: SessionStart,
        sink: Option<Sink>,
    ) -> Result<TurnReport, SessionError> {
        let fail = session_error(id, Some(&start.plugin), Some(0));
        let plugin = self
            .inner
            .plugins
            .active(&start.plugin)
            .ok_or_else(|| fail(Cause::PluginNotLoaded(start.plugin.clone())))?;
        record_version(&plugin);
        let _slot = self.enter_turn(&start.plugin).map_err(fail)?;
        if self
            .inner
            .store
            .load(id)
            .map_err(|err| fail(err.into()))?
            .is_some()
        {
            return Err(fail(Cause::Exists));
        }
        // Sessions starting at once may each see room for one more: the
        // bound can be passed by as many starts as run concurrently.
        if let Some(most) = self.limits_for(&start.plugin).live_sessions {
            let live = self
                .inner
                .store
                .live_sessions(&start.plugin)
                .map_err(|err| fail(err.into()))?;
            if live >= most {
                return Err(fail(Cause::LiveSessions(most)));
            }
        }
        let now = self.inner.clock.now_ms();
        let mut record = SessionRecord {
            id: id.to_owned(),
            plugin: start.plugin.clone(),
            digest: plugin.digest.to_string(),
            user_id: start.user_id,
            variables: start.variables,
            state: State::new(),
            state_version: plugin.manifest.state_version,
            revision: 0,
            turn: 0,
            status: Status::Active,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let call = self.call_in_session(
            &plugin,
            &record,
            0,
            record.state.clone(),
            sink,
            |agent, store| agent.call_on_start(store),
        );
        let state = call.session.into_state();
        call.result.map_err(fail)?;
        check_state(&plugin, &state).map_err(fail)?;
        record.state = state.clone();
        record.revision = 1;
        let messages = assistant_message(&call.said)
            .into_iter()
            .collect::<Vec<_>>();
        self.inner
            .store
            .create(&record, &messages)
            .map_err(|err| fail(err.into()))?;
        Ok(TurnReport {
            session: id.to_owned(),
            plugin: start.plugin,
            turn: 0,
            said: call.said,
            before: State::new(),
            state,
            outcome: Outcome::Continue,
        })
    }

    #[instrument(skip_all, fields(session = id, plugin, version))]
    fn run_message(
        &self,
        id: &str,
        text: &str,
        sink: Option<Sink>,
    ) -> Result<TurnReport, SessionError> {
        let (record, plugin, _slot) = self.open(id, true)?;
        let turn = record.turn + 1;
        let fail = turn_error(&record, turn);
        let call = self.call_in_session(
            &plugin,
            &record,
            turn,
            record.state.clone(),
            sink.clone(),
            |agent, store| agent.call_on_message(store, text),
        );
        let mut said = call.said;
        let mut state = call.session.into_state();
        let outcome = match call.result.map_err(fail)? {
            WitOutcome::Continue => Outcome::Continue,
            WitOutcome::HandOff(target) => {
                self.inner
                    .plugins
                    .active(&target)
                    .ok_or_else(|| fail(Cause::PluginNotLoaded(target.clone())))?;
                Outcome::HandOff(target)
            }
            WitOutcome::End => {
                let end =
                    self.call_in_session(&plugin, &record, turn, state, sink, |agent, store| {
                        agent.call_on_end(store, EndReason::Agent)
                    });
                end.result.map_err(fail)?;
                said.extend(end.said);
                state = end.session.into_state();
                Outcome::End
            }
        };
        let mut messages = vec![Message {
            role: Role::User,
            content: text.to_owned(),
        }];
        messages.extend(assistant_message(&said));
        self.commit(&plugin, &record, turn, &state, &outcome, messages)
            .map_err(fail)?;
        Ok(TurnReport {
            session: id.to_owned(),
            plugin: record.plugin.clone(),
            turn,
            said,
            before: record.state,
            state,
            outcome,
        })
    }

    #[instrument(skip_all, fields(session = id, tool = name, plugin, version))]
    fn run_tool(
        &self,
        id: &str,
        name: &str,
        arguments: Value,
        sink: Option<Sink>,
    ) -> Result<ToolReport, SessionError> {
        let started = Instant::now();
        let (record, plugin, _slot) = self.open(id, true)?;
        let turn = record.turn + 1;
        let fail = turn_error(&record, turn);
        let tool = plugin.tools.get(name).ok_or_else(|| {
            fail(Cause::UnknownTool {
                plugin: record.plugin.clone(),
                tool: name.to_owned(),
            })
        })?;
        let digest = plugin.digest.to_string();
        let record_execution = |outcome| {
            let execution = Execution {
                plugin: record.plugin.clone(),
                digest: digest.clone(),
                tool: name.to_owned(),
                session: id.to_owned(),
                duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                outcome,
                at_ms: self.inner.clock.now_ms(),
            };
            self.inner
                .store
                .record_execution(&execution)
                .map_err(|err| fail(err.into()))
        };
        let refuse = |cause: Cause| {
            record_execution(cause.tool_outcome())?;
            Err(fail(cause))
        };

        if let Err(violations) = tool.check_arguments(&arguments) {
            return refuse(Cause::InvalidArguments {
                tool: name.to_owned(),
                violations,
            });
        }
        let missing = tool.missing_requirements(&record.state);
        if !missing.is_empty() {
            return refuse(Cause::Precondition {
                tool: name.to_owned(),
                missing,
            });
        }
        let cache = tool
            .cache_ttl
            .map(|ttl| (tool.cache_key(&digest, &arguments), ttl));
        if let Some((key, _)) = &cache {
            let hit = self
                .inner
                .store
                .cache_get(key, self.inner.clock.now_ms())
                .map_err(|err| fail(err.into()))?;
            if let Some(result) = hit.and_then(|text| serde_json::from_str(&text).ok()) {
                record_execution(ToolOutcome::CacheHit)?;
                let unchanged = TurnReport {
                    session: id.to_owned(),
                    plugin: record.plugin.clone(),
                    turn: record.turn,
                    said: Vec::new(),
                    before: record.state.clone(),
                    state: record.state.clone(),
                    outcome: Outcome::Continue,
                };
                return Ok(ToolReport {
                    turn: unchanged,
                    result,
                    cached: true,
                });
            }
        }

        let arguments_text = arguments.to_string();
        let call = self.call_in_session(
            &plugin,
            &record,
            turn,
            record.state.clone(),
            sink,
            |agent, store| agent.call_call_tool(store, name, &arguments_text),
        );
        let said = call.said;
        let state = call.session.into_state();
        let result = match call.result.and_then(|text| {
            check_result(tool, &text, self.limits_for(plugin.name())).map(|value| (text, value))
        }) {
            Ok(result) => result,
            Err(cause) => return refuse(cause),
        };
        let (result_text, result) = result;
        let mut messages = vec![Message {
            role: Role::Tool,
            content: serde_json::json!({ "tool": name, "arguments": arguments, "result": result })
                .to_string(),
        }];
        messages.extend(assistant_message(&said));
        if let Err(cause) =
            self.commit(&plugin, &record, turn, &state, &Outcome::Continue, messages)
        {
            return match cause {
                Cause::InvalidState(_) => refuse(cause),
                cause => Err(fail(cause)),
            };
        }
        if let Some((key, ttl)) = &cache {
            let now_ms = self.inner.clock.now_ms();
            let expires_at_ms =
                now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            self.inner
                .store
                .cache_put(key, &result_text, expires_at_ms, now_ms)
                .map_err(|err| fail(err.into()))?;
        }
        record_execution(ToolOutcome::Ok)?;
        let report = TurnReport {
            session: id.to_owned(),
            plugin: record.plugin.clone(),
            turn,
            said,
            before: record.state,
            state,
            outcome: Outcome::Continue,
        };
        Ok(ToolReport {
            turn: report,
            result,
            cached: false,
        })
    }

    /// Commits turn `turn` of `record`, run by `plugin`, after checking
    /// `state` against the plugin's state schema. The outcome decides the
    /// session's status and, after a hand-off, its plugin.
    fn commit(
        &self,
        plugin: &PluginVersion,
        record: &SessionRecord,
        turn: u64,
        state: &State,
        outcome: &Outcome,
        messages: Vec<Message>,
    ) -> Result<(), Cause> {
        check_state(plugin, state)?;
        let commit = Commit {
            session: record.id.clone(),
            read_revision: record.revision,
            state: state.clone(),
            turn,
            plugin: match outcome {
                Outcome::HandOff(target) => target.clone(),
                _ => record.plugin.clone(),
            },
            digest: plugin.digest.to_string(),
            // After a hand-off the state is the target's to read as it is:
            // nothing to migrate.
            state_version: match outcome {
                Outcome::HandOff(target) => self
                    .inner
                    .plugins
                    .active(target)
                    .map_or(plugin.manifest.state_version, |target| {
                        target.manifest.state_version
                    }),
                _ => plugin.manifest.state_version,
            },
            status: if *outcome == Outcome::End {
                Status::Ended
            } else {
                Status::Active
            },
            messages,
            at_ms: self.inner.clock.now_ms(),
        };
        Ok(self.inner.store.commit(&commit)?)
    }

    #[instrument(skip_all, fields(session = id, plugin, version))]
    fn run_end(&self, id: &str) -> Result<TurnReport, SessionError> {
        // Ending is never refused for the plugin being busy.
        let (record, plugin, _) = self.open(id, false)?;
        let turn = record.turn + 1;
        let fail = turn_error(&record, turn);
        let call = self.call_in_session(
            &plugin,
            &record,
            turn,
            record.state.clone(),
            None,
            |agent, store| agent.call_on_end(store, EndReason::Caller),
        );
        // The session ends either way; on-end's writes count only if it succeeded.
        let (state, said, failure) = match call.result {
            Ok(()) => (call.session.into_state(), call.said, None),
            Err(cause) => (record.state.clone(), Vec::new(), Some(cause)),
        };
        let messages = assistant_message(&said).into_iter().collect();
        self.commit(&plugin, &record, turn, &state, &Outcome::End, messages)
            .map_err(fail)?;
        if let Some(cause) = failure {
            return Err(fail(cause));
        }
        Ok(TurnReport {
            session: id.to_owned(),
            plugin: record.plugin.clone(),
            turn,
            said,
            before: record.state,
            state,
            outcome: Outcome::End,
        })
    }

    /// Loads an active session and the active version of its plugin, and
    /// takes a place among the plugin's turns at once when `counted`.
    fn open(
        &self,
        id: &str,
        counted: bool,
    ) -> Result<(SessionRecord, Arc<PluginVersion>, PluginSlot), SessionError> {
        let fail = session_error(id, None, None);
        let record = self
            .inner
            .store
            .load(id)
            .map_err(|err| fail(err.into()))?
            .ok_or_else(|| fail(Cause::NotFound))?;
        let fail = session_error(id, Some(&record.plugin), None);
        if record.status == Status::Ended {
            return Err(fail(Cause::Ended));
        }
        let plugin = self
            .inner
            .plugins
            .active(&record.plugin)
            .ok_or_else(|| fail(Cause::PluginNotLoaded(record.plugin.clone())))?;
        let slot = if counted {
            self.enter_turn(&record.plugin).map_err(fail)?
        } else {
            None
        };
        let plugin_name = record.plugin.clone();
        let (record, plugin) =
            self.migrated(record, plugin)
                .map_err(session_error(id, Some(&plugin_name), None))?;
        record_version(&plugin);
        Ok((record, plugin, slot))
    }

    /// A place for one more turn of `plugin` within its limit of turns at
    /// once, held until the turn is over; `None` if it has no such limit.
    fn enter_turn(&self, plugin: &str) -> Result<PluginSlot, Cause> {
        let Some(most) = self.limits_for(plugin).plugin_turns else {
            return Ok(None);
        };
        self.inner
            .plugin_turns
            .enter(plugin, most)
            .map(Some)
            .ok_or(Cause::ConcurrentTurns(most))
    }

    /// The version to run `record`'s next turn on, and the record to run it
    /// from: the active version, after it migrated the state if the state's
    /// layout (`state-version`) differs from its own. If the migration fails,
    /// the session stays on the version that last committed it, if that is
    /// loaded here or published in the store. A session committed by the
    /// version the store records active, while this host is still behind,
    /// stays on it (see [`Host::catch_up`]).
    fn migrated(
        &self,
        mut record: SessionRecord,
        active: Arc<PluginVersion>,
    ) -> Result<(SessionRecord, Arc<PluginVersion>), Cause> {
        let active = self.catch_up(&record, active);
        let (from, to) = (record.state_version, active.manifest.state_version);
        if from == to {
            return Ok((record, active));
        }
        let state =
            serde_json::to_string(&record.state).map_err(|err| Cause::Trap(err.to_string()))?;
        let call = self.call_in_session(
            &active,
            &record,
            record.turn + 1,
            record.state.clone(),
            None,
            |agent, store| agent.call_migrate(store, from, &state),
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
                record.state = state;
                record.state_version = to;
                Ok((record, active))
            }
            Err(cause) => {
                let stays = self
                    .version(&record.plugin, &record.digest)
                    .ok()
                    .filter(|previous| previous.manifest.state_version == from);
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
                    Some(previous) => Ok((record, previous)),
                    None => Err(Cause::Migration {
                        from,
                        to,
                        cause: Box::new(cause),
                    }),
                }
            }
        }
    }

    /// Calls one export in a fresh instance serving `record`, starting from `state`.
    fn call_in_session<R>(
        &self,
        plugin: &PluginVersion,
        record: &SessionRecord,
        turn: u64,
        state: State,
        sink: Option<Sink>,
        export: impl FnOnce(
            &crate::bindings::exports::agentbox::plugin::agent::Guest,
            &mut wasmtime::Store<TurnCtx>,
        ) -> wasmtime::Result<Result<R, String>>,
    ) -> Call<R> {
        let limits = self.limits_for(plugin.name());
        let session = SessionCtx::new(
            record,
            turn,
            state,
            self.inner.store.clone(),
            limits.clone(),
        );
        let kv = KvCtx::new(
            &record.plugin,
            self.inner.clock.clone(),
            self.inner.grants.clone(),
            self.inner.metrics.clone(),
        );
        let ctx = TurnCtx::new(
            session,
            kv,
            OutputCtx::new(sink, limits.output_bytes),
            limits,
        );
        let (result, ctx) = self.call(&plugin.pre, ctx, limits, |instance, store| {
            export(instance.agentbox_plugin_agent(), store)
        });
        ctx.log.flush_to_tracing(&record.plugin, &record.id);
        Call {
            result,
            session: ctx.session,
            said: ctx.output.into_said(),
        }
    }

    /// Instantiates `pre` with `ctx` under `limits` and runs `f`.
    fn call<R>(
        &self,
        pre: &PluginPre<TurnCtx>,
        ctx: TurnCtx,
        limits: &Limits,
        f: impl FnOnce(&Plugin, &mut wasmtime::Store<TurnCtx>) -> wasmtime::Result<Result<R, String>>,
    ) -> (Result<R, Cause>, TurnCtx) {
        let mut store = wasmtime::Store::new(self.inner.engine.wasmtime(), ctx);
        store.limiter(|ctx| &mut ctx.memory);
        let host_calls = limits.host_calls;
        store.call_hook(move |mut store, hook| {
            if matches!(hook, CallHook::CallingHost) {
                let calls = &mut store.data_mut().host_calls;
                *calls += 1;
                if *calls > host_calls {
                    return Err(Tripped::HostCalls(host_calls).into());
                }
            }
            Ok(())
        });
        // The deadline must be armed before instantiating: it starts at 0.
        let ticks = (limits.deadline.as_nanos() / EPOCH_TICK.as_nanos()).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        if self.inner.engine.meters_fuel() {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .expect("the engine meters fuel");
        }
        let _in_use = self.inner.metrics.instance();
        let result = pre
            .instantiate(&mut store)
            .and_then(|instance| f(&instance, &mut store));
        let ctx = store.into_data();
        let result = match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(Cause::Guest(message)),
            Err(err) => Err(trap_cause(&err, limits, &ctx.log)),
        };
        (result, ctx)
    }
}

/// Names the cause of a failed call: a tripped limit, or a trap with the last
/// line the guest wrote (a Rust panic message, for example).
fn trap_cause(err: &wasmtime::Error, limits: &Limits, log: &GuestLog) -> Cause {
    if let Some(tripped) = err.downcast_ref::<Tripped>() {
        return match tripped {
            Tripped::Memory(limit) => Cause::MemoryLimit(*limit),
            Tripped::Output(limit) => Cause::OutputLimit(*limit),
            Tripped::HostCalls(limit) => Cause::HostCallLimit(*limit),
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return Cause::Deadline(limits.deadline),
        Some(Trap::OutOfFuel) => return Cause::FuelLimit(limits.fuel.unwrap_or(u64::MAX)),
        _ => {}
    }
    let reason = err.root_cause().to_string();
    Cause::Trap(match log.last_words() {
        Some(line) => format!("{reason} (the plugin's last output: {line})"),
        None => reason,
    })
}

/// Names the plugin version serving the current turn on its tracing span.
fn record_version(plugin: &PluginVersion) {
    let span = tracing::Span::current();
    span.record("plugin", plugin.name());
    span.record("version", plugin.manifest.version.as_str());
}

/// The error of turn `turn` of `record` failing for a cause.
fn turn_error(record: &SessionRecord, turn: u64) -> impl Fn(Cause) -> SessionError + Copy + '_ {
    session_error(&record.id, Some(&record.plugin), Some(turn))
}

/// The error of an operation on session `id`, served by `plugin` and
/// running `turn` where known, failing for a cause.
fn session_error<'a>(
    id: &'a str,
    plugin: Option<&'a str>,
    turn: Option<u64>,
) -> impl Fn(Cause) -> SessionError + Copy + 'a {
    move |cause| SessionError {
        session: id.to_owned(),
        plugin: plugin.map(str::to_owned),
        turn,
        cause,
    }
}

/// Checks a state about to be committed against the plugin's state schema.
/// (Every rule a single write can break was checked at the write.)
fn check_state(plugin: &PluginVersion, state: &State) -> Result<(), Cause> {
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

/// Parses and checks a tool's result: JSON, within the output limit, and
/// matching the tool's result schema if it declared one.
fn check_result(tool: &crate::tools::Tool, text: &str, limits: &Limits) -> Result<Value, Cause> {
    let invalid = |reason| Cause::InvalidResult {
        tool: tool.name.clone(),
        reason,
    };
    if text.len() > limits.output_bytes {
        return Err(invalid(format!(
            "it is {} bytes, over the output limit of {} bytes",
            text.len(),
            limits.output_bytes
        )));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|err| invalid(format!("it is not JSON: {err}")))?;
    tool.check_result(&value).map_err(|violations| {
        invalid(format!(
            "it breaks the result schema: {}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    Ok(value)
}

/// The history entry for what the agent said in a turn, if it said anything.
fn assistant_message(said: &[String]) -> Option<Message> {
    (!said.is_empty()).then(|| Message {
        role: Role::Assistant,
        content: said.join("\n"),
    })
}

/// Checks an id the caller chose: 1 to 128 bytes of ASCII letters, digits
/// and `_ . : -`.
fn check_id(what: &str, id: &str) -> Result<(), String> {
    let valid = (1..=MAX_ID_BYTES).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} `{}` is invalid: use 1 to {MAX_ID_BYTES} characters of A-Z, a-z, 0-9 and _ . : -",
            id.escape_debug()
        ))
    }
}

/// The turns of each plugin with a limit of turns at once, as a semaphore
/// per plugin; one of its permits is a turn's [`PluginSlot`].
#[derive(Default)]
struct PluginTurns {
    running: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl PluginTurns {
    /// A place for one more turn of `plugin`, if fewer than `most` run.
    fn enter(&self, plugin: &str, most: usize) -> Option<OwnedSemaphorePermit> {
        let mut running = self.running.lock().expect("plugin turns poisoned");
        let semaphore = match running.get(plugin) {
            Some(semaphore) => semaphore.clone(),
            None => running
                .entry(plugin.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(most)))
                .clone(),
        };
        drop(running);
        semaphore.try_acquire_owned().ok()
    }
}

/// A turn's place among its plugin's turns running at once.
type PluginSlot = Option<OwnedSemaphorePermit>;

/// One lock per session with a turn running or waiting, so that turns of a
/// session run one at a time in this process.
#[derive(Default)]
struct SessionLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl SessionLocks {
    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("session locks poisoned");
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        // Forget the locks of sessions without turns, now and then, so the
        // map stays as large as the number of busy sessions.
        if locks.len() >= 1024 && locks.len().is_power_of_two() {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id.to_owned(), Arc::downgrade(&lock));
        lock
    }
}
