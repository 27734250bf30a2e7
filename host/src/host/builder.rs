//! Building a [`Host`]: its limits, grants, reach, tools, webhooks, store,
//! artifact cache and clock, each defaulted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::capability::http::HttpService;
use crate::capability::kv::KvService;
use crate::clock::Clock;
use crate::engine::{CompilerProcess, Engine};
use crate::host::Host;
use crate::limits::{Limits, check_concurrent_turns};
use crate::metrics::Metrics;
use crate::plugin::versions::Plugins;
use crate::policy::{Grants, MayCall, McpServer, Outbound, Policy, Reach, Webhook};
use crate::remote::McpServers;
use crate::session::calls::Caller;
use crate::session::interrupt;
use crate::session::parts::{Commits, Parts};
use crate::session::pinned::Pinned;
use crate::session::serial::{PluginTurns, SessionLocks};
use crate::store::Store;
use crate::webhook::Webhooks;

/// How much longer than its turn may run a session lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Builds a [`Host`].
#[derive(Debug)]
pub struct HostBuilder {
    limits: Limits,
    plugin_limits: BTreeMap<String, Limits>,
    grants: Grants,
    outbound: BTreeMap<String, Arc<Outbound>>,
    calls: HashMap<String, MayCall>,
    mcp_servers: Vec<McpServer>,
    webhooks: BTreeMap<String, Webhook>,
    store: Option<Arc<dyn Store>>,
    cache: Option<cap_std::fs::Dir>,
    compiler: Option<CompilerProcess>,
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

    /// What plugin `plugin` may reach outside the host: outbound HTTP and
    /// configuration (default: nothing).
    pub fn outbound(mut self, plugin: &str, outbound: Arc<Outbound>) -> Self {
        self.outbound.insert(plugin.to_owned(), outbound);
        self
    }

    /// The tools of other plugins that plugin `plugin` may call through
    /// the registry (default: none; its own it may always call).
    pub fn may_call(mut self, plugin: &str, may: MayCall) -> Self {
        self.calls.insert(plugin.to_owned(), may);
        self
    }

    /// Where the events of plugin `plugin`'s sessions are posted as this
    /// process commits them (default: nowhere).
    pub fn webhook(mut self, plugin: &str, webhook: Webhook) -> Self {
        self.webhooks.insert(plugin.to_owned(), webhook);
        self
    }

    /// An MCP server whose tools join the registry as `mcp:NAME/tool`, for
    /// the plugins [`HostBuilder::may_call`] grants them to (default: none).
    pub fn mcp_server(mut self, server: McpServer) -> Self {
        self.mcp_servers.push(server);
        self
    }

    /// Limits for the turns of plugin `plugin` alone, in place of the
    /// host's [`HostBuilder::limits`] (its session time-to-live and KV
    /// quotas stay the host's).
    pub fn plugin_limits(mut self, plugin: &str, limits: Limits) -> Self {
        self.plugin_limits.insert(plugin.to_owned(), limits);
        self
    }

    /// Everything an operator's policy sets: limits, per-plugin limits,
    /// bucket grants, the MCP servers, the tools each plugin may call and
    /// what each may reach outside the host.
    pub fn policy(self, policy: Policy) -> Self {
        let builder = self.limits(policy.limits).grants(policy.grants);
        let builder = policy
            .mcp
            .into_iter()
            .fold(builder, |builder, server| builder.mcp_server(server));
        let builder = policy
            .calls
            .into_iter()
            .fold(builder, |builder, (plugin, may)| {
                builder.may_call(&plugin, may)
            });
        let builder = policy
            .webhooks
            .into_iter()
            .fold(builder, |builder, (plugin, webhook)| {
                builder.webhook(&plugin, webhook)
            });
        let builder = policy
            .outbound
            .into_iter()
            .fold(builder, |builder, (plugin, outbound)| {
                builder.outbound(&plugin, outbound)
            });
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

    /// Compiles components in a child process under a time budget
    /// (default: in this process, with no budget).
    pub fn compiler(mut self, compiler: CompilerProcess) -> Self {
        self.compiler = Some(compiler);
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
            // The pool holds every turn's deepest chain of calls.
            call_depth: self
                .plugin_limits
                .values()
                .map(|limits| limits.call_depth)
                .fold(self.limits.call_depth, usize::max),
            ..self.limits.clone()
        };
        let engine = Engine::new(&largest, self.cache, self.compiler)?;
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(crate::store::MemoryStore::default()));
        let metrics = Arc::new(Metrics::default());
        let longest_deadline = self
            .plugin_limits
            .values()
            .map(|limits| limits.deadline)
            .fold(self.limits.deadline, Duration::max);
        let limits = Arc::new(self.limits);
        let running = Arc::new(interrupt::Running::default());
        Ok(Host {
            parts: Arc::new(Parts {
                plugins: Plugins::new(
                    engine,
                    store.clone(),
                    metrics.clone(),
                    limits.clone(),
                    self.plugin_limits
                        .iter()
                        .map(|(plugin, limits)| (plugin.clone(), limits.memory_bytes))
                        .collect(),
                )?,
                commits: Commits::of(&store, &running),
                kv: KvService::new(
                    store.clone(),
                    self.clock.clone(),
                    self.grants,
                    metrics.clone(),
                ),
                store,
                turns: Arc::new(Semaphore::new(limits.concurrent_turns)),
                plugin_turns: PluginTurns::default(),
                plugin_limits: self
                    .plugin_limits
                    .into_iter()
                    .map(|(plugin, limits)| (plugin, Arc::new(limits)))
                    .collect(),
                lease_ttl: longest_deadline * 2 + LEASE_MARGIN,
                limits,
                calls: self.calls,
                remotes: McpServers::new(self.mcp_servers),
                registry: Caller::registry,
                webhooks: Webhooks::new(self.webhooks, metrics.clone(), self.clock.clone()),
                pinned: Pinned::default(),
                http: HttpService::new(Reach::new(self.outbound), metrics.clone()),
                clock: self.clock,
                locks: SessionLocks::default(),
                running,
                metrics,
                holder: uuid::Uuid::new_v4().to_string(),
            }),
        })
    }
}

impl Host {
    /// A builder with default limits, an in-memory store and no artifact cache.
    pub fn builder() -> HostBuilder {
        HostBuilder {
            limits: Limits::default(),
            plugin_limits: BTreeMap::new(),
            grants: Grants::default(),
            outbound: BTreeMap::new(),
            calls: HashMap::new(),
            mcp_servers: Vec::new(),
            webhooks: BTreeMap::new(),
            store: None,
            cache: None,
            compiler: None,
            clock: Clock::system(),
        }
    }
}
