//! The operator's policy: the limits of every plugin and of each one, the
//! KV buckets each plugin is granted, and what each may reach outside the
//! host ([`outbound`]), as read from a policy file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::limits::{Limits, check_concurrent_turns};
use crate::names::{check_bucket_name, check_plugin_name};

pub mod calls;
pub mod mcp;
pub mod origin;
pub mod outbound;
mod reach;
pub mod webhook;

pub use calls::MayCall;
pub use mcp::{McpServer, McpTransport};
pub use outbound::Outbound;
pub(crate) use reach::Reach;
pub use webhook::Webhook;

/// Which named buckets the operator granted to which plugins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    buckets: BTreeMap<String, BTreeSet<String>>,
}

impl Grants {
    /// Grants the bucket `bucket` to the plugin `plugin`.
    ///
    /// Bucket names follow the rules of plugin names (`a-z 0-9 -`); `user`
    /// and `global` are not grantable, every plugin has its own.
    pub fn grant(&mut self, plugin: &str, bucket: &str) -> Result<(), String> {
        check_bucket_name(bucket)?;
        if matches!(bucket, "user" | "global") {
            return Err(format!(
                "bucket `{bucket}` is every plugin's own and cannot be granted"
            ));
        }
        self.buckets
            .entry(plugin.to_owned())
            .or_default()
            .insert(bucket.to_owned());
        Ok(())
    }

    /// Whether `plugin` may open `bucket`.
    pub fn allows(&self, plugin: &str, bucket: &str) -> bool {
        self.buckets
            .get(plugin)
            .is_some_and(|buckets| buckets.contains(bucket))
    }
}

/// The operator's policy, as read from a TOML file:
///
/// ```toml
/// [turns]
/// deadline_ms = 2000           # each call of an export
/// memory_mib = 64              # linear memory of one instance
/// output_bytes = 1048576       # said per turn
/// host_calls = 1000000         # calls into the host per call of an export
/// state_bytes = 1048576        # the whole session state
/// value_bytes = 65536          # one state value or KV value
/// concurrent = 32              # turns of one plugin at once; more are refused (no bound if left out)
/// concurrent_total = 256       # turns of all plugins at once in this process; more wait
/// fuel = 100000000             # about one unit per instruction, per call of an export (unmetered if left out)
/// call_depth = 4               # registry calls nested in one turn
///
/// [sessions]
/// idle_ttl_ms = 1800000        # end sessions idle for 30 minutes
/// max_lifetime_ms = 86400000   # and any session 24 hours old
/// max_live = 10000             # active sessions per plugin (no bound if left out)
/// retain_ended_ms = 604800000  # delete ended sessions and their history 7 days after they end
/// retain_records_ms = 604800000 # and tool-call records 7 days after the call
/// history_messages = 1000      # messages a session's history keeps, dropping the oldest
/// history_bytes = 4194304      # and bytes of their content
/// log_text_bytes = 65536       # of each message, tool argument, result and turn's say an event keeps
/// log_bytes = 268435456        # of events one session's log holds; a turn past it is refused
/// snapshot_turns = 100         # every this many turns, an event holds the whole state
/// snapshot_bytes = 4194304     # and every time the log grows by this many bytes
///
/// [kv]
/// max_keys = 100000            # per plugin, and per granted bucket
/// max_bytes = 268435456
/// max_keys_per_user = 10000    # of those, in one user's scope
/// max_bytes_per_user = 16777216
///
/// [plugins.profile]
/// buckets = ["crm"]            # named buckets this plugin may open
/// may_call = ["shop/*", "intake/record_information", "mcp:weather/*"]   # others' tools, through the registry
/// may_hand_off = ["intake"]    # plugins it may hand the conversation to
/// deadline_ms = 500            # and any [turns] limit but concurrent_total, max_live,
///                              # or any [kv] one, for it alone
///
/// [plugins.assistant.http]     # outbound HTTP, from WIT 0.2.0; nothing by default
/// allow = ["https://api.openai.com", "http://127.0.0.1:11434", "https://*.example.com"]
/// timeout_ms = 30000           # each wait: connect, first byte, between reads
/// max_response_bytes = 8388608
/// max_requests_per_turn = 16
///
/// [[plugins.assistant.http.inject]]   # a header the host sets, out of the guest's sight
/// url = "https://api.openai.com"
/// header = "authorization"
/// value = "Bearer {secret:api_key}"
///
/// [plugins.assistant.config]   # what `wasi:config/store` serves
/// model = "gpt-4o-mini"
/// api_key = { env = "OPENAI_API_KEY" }   # or { file = "/run/secrets/openai" }
///
/// [plugins.intake.webhook]     # each event of its sessions, posted as it commits
/// url = "https://hooks.example.com/agentbox"
/// secret = { env = "INTAKE_WEBHOOK_SECRET" }   # or { file = ... }; 16 bytes or more
/// attempts = 5                 # tries of each event (1 to 20), then dropped and counted
/// backoff_ms = 500             # the pause after the first failed try, doubled after each
/// timeout_ms = 10000           # one try
/// queue = 1024                 # events waiting; more are dropped and counted
///
/// [mcp.weather]                # an MCP server whose tools join the registry as mcp:weather/TOOL
/// url = "https://mcp.example.com/mcp"    # streamable HTTP, or: command = ["weather-mcp", "--stdio"]
/// headers = { authorization = { env = "WEATHER_TOKEN" } }
/// timeout_ms = 30000           # the longest one call waits; the caller's deadline bounds it too
/// ```
///
/// Every section and field is optional; what is left out keeps its default.
/// Unknown sections and fields are errors, so a typo never goes unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    turns: TurnsSection,
    #[serde(default)]
    sessions: SessionsPolicy,
    #[serde(default)]
    kv: KvPolicy,
    #[serde(default)]
    plugins: BTreeMap<String, PluginPolicy>,
    #[serde(default)]
    mcp: BTreeMap<String, mcp::McpSection>,
}

/// The `[turns]` section: the limits of every plugin's turns, and the
/// bound on turns at once in the process.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnsSection {
    #[serde(flatten)]
    turns: TurnPolicy,
    concurrent_total: Option<usize>,
    call_depth: Option<usize>,
}

/// Limits of each call of an export; each plugin may have its own.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnPolicy {
    deadline_ms: Option<u64>,
    memory_mib: Option<usize>,
    output_bytes: Option<usize>,
    host_calls: Option<u64>,
    state_bytes: Option<usize>,
    value_bytes: Option<usize>,
    concurrent: Option<usize>,
    fuel: Option<u64>,
    guest_output: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsPolicy {
    idle_ttl_ms: Option<u64>,
    max_lifetime_ms: Option<u64>,
    max_live: Option<u64>,
    retain_ended_ms: Option<u64>,
    retain_records_ms: Option<u64>,
    history_messages: Option<u64>,
    history_bytes: Option<u64>,
    log_text_bytes: Option<usize>,
    log_bytes: Option<u64>,
    snapshot_turns: Option<u64>,
    snapshot_bytes: Option<u64>,
}

impl SessionsPolicy {
    /// `limits` with these values in place of theirs.
    fn apply(&self, limits: Limits) -> Result<Limits, String> {
        let newest = "a history keeps its newest message";
        for (name, value, why) in [
            ("history_messages", self.history_messages, newest),
            ("history_bytes", self.history_bytes, newest),
            (
                "log_text_bytes",
                self.log_text_bytes.map(|bytes| bytes as u64),
                "it is how much of each text an event keeps",
            ),
            (
                "log_bytes",
                self.log_bytes,
                "it is how much one session's log holds",
            ),
            (
                "snapshot_bytes",
                self.snapshot_bytes,
                "it is how many bytes of log apart the state is kept whole",
            ),
            (
                "snapshot_turns",
                self.snapshot_turns,
                "it is how many turns apart the state is kept whole",
            ),
        ] {
            if value == Some(0) {
                return Err(format!("{name} must be at least 1: {why}"));
            }
        }
        let ms = Duration::from_millis;
        Ok(Limits {
            session_idle_ttl: self.idle_ttl_ms.map_or(limits.session_idle_ttl, ms),
            session_max_lifetime: self.max_lifetime_ms.map_or(limits.session_max_lifetime, ms),
            live_sessions: self.max_live.or(limits.live_sessions),
            retain_ended: self.retain_ended_ms.map_or(limits.retain_ended, ms),
            retain_records: self.retain_records_ms.map_or(limits.retain_records, ms),
            history_messages: self.history_messages.unwrap_or(limits.history_messages),
            history_bytes: self.history_bytes.unwrap_or(limits.history_bytes),
            log_text_bytes: self.log_text_bytes.unwrap_or(limits.log_text_bytes),
            log_bytes: self.log_bytes.unwrap_or(limits.log_bytes),
            snapshot_turns: self.snapshot_turns.unwrap_or(limits.snapshot_turns),
            snapshot_bytes: self.snapshot_bytes.unwrap_or(limits.snapshot_bytes),
            ..limits
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvPolicy {
    max_keys: Option<u64>,
    max_bytes: Option<u64>,
    max_keys_per_user: Option<u64>,
    max_bytes_per_user: Option<u64>,
}

impl KvPolicy {
    /// `limits` with these values in place of theirs.
    fn apply(&self, limits: Limits) -> Limits {
        Limits {
            kv_keys: self.max_keys.unwrap_or(limits.kv_keys),
            kv_bytes: self.max_bytes.unwrap_or(limits.kv_bytes),
            kv_user_keys: self.max_keys_per_user.unwrap_or(limits.kv_user_keys),
            kv_user_bytes: self.max_bytes_per_user.unwrap_or(limits.kv_user_bytes),
            ..limits
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginPolicy {
    #[serde(default)]
    buckets: Vec<String>,
    #[serde(default)]
    may_call: Vec<String>,
    #[serde(default)]
    may_hand_off: Vec<String>,
    #[serde(flatten)]
    turns: TurnPolicy,
    max_live: Option<u64>,
    #[serde(flatten)]
    kv: KvPolicy,
    http: Option<outbound::HttpSection>,
    #[serde(default)]
    config: BTreeMap<String, outbound::ConfigEntry>,
    webhook: Option<webhook::WebhookSection>,
}

/// What a policy file sets: the limits of every plugin, those of the
/// plugins it names, and the bucket grants.
#[derive(Debug)]
pub struct Policy {
    /// The limits of plugins the policy does not name.
    pub limits: Limits,
    /// The limits of each plugin the policy names.
    pub plugins: BTreeMap<String, Limits>,
    /// The named KV buckets each plugin may open.
    pub grants: Grants,
    /// What each plugin the policy names may reach outside the host.
    pub outbound: BTreeMap<String, Arc<Outbound>>,
    /// The tools of other plugins and MCP servers each plugin may call.
    pub calls: BTreeMap<String, MayCall>,
    /// The MCP servers whose tools join the registry.
    pub mcp: Vec<McpServer>,
    /// Where each plugin's events are posted, for the plugins that say.
    pub webhooks: BTreeMap<String, Webhook>,
}

impl TurnPolicy {
    /// `limits` with these values in place of theirs.
    fn apply(self, limits: Limits) -> Result<Limits, String> {
        if self.deadline_ms == Some(0) {
            return Err("deadline_ms must be at least 1".into());
        }
        if self.memory_mib == Some(0) {
            return Err("memory_mib must be at least 1".into());
        }
        if self.value_bytes == Some(0) {
            return Err("value_bytes must be at least 1".into());
        }
        if self.concurrent == Some(0) {
            return Err("concurrent must be at least 1".into());
        }
        if self.fuel == Some(0) {
            return Err("fuel must be at least 1".into());
        }
        Ok(Limits {
            deadline: self
                .deadline_ms
                .map_or(limits.deadline, Duration::from_millis),
            memory_bytes: self.memory_mib.map_or(limits.memory_bytes, |mib| mib << 20),
            output_bytes: self.output_bytes.unwrap_or(limits.output_bytes),
            host_calls: self.host_calls.unwrap_or(limits.host_calls),
            state_bytes: self.state_bytes.unwrap_or(limits.state_bytes),
            value_bytes: self.value_bytes.unwrap_or(limits.value_bytes),
            plugin_turns: self.concurrent.or(limits.plugin_turns),
            fuel: self.fuel.or(limits.fuel),
            guest_output: self.guest_output.unwrap_or(limits.guest_output),
            ..limits
        })
    }
}

impl PolicyFile {
    /// Parses a policy file's text.
    pub fn parse(text: &str) -> Result<PolicyFile, String> {
        toml::from_str(text).map_err(|err| err.to_string())
    }

    /// The policy, starting from `limits` for whatever it leaves out.
    pub fn apply(&self, limits: Limits) -> Result<Policy, String> {
        let limits = self
            .turns
            .turns
            .apply(limits)
            .map_err(|reason| format!("[turns] {reason}"))?;
        let concurrent_turns = self
            .turns
            .concurrent_total
            .unwrap_or(limits.concurrent_turns);
        check_concurrent_turns(concurrent_turns)
            .map_err(|reason| format!("[turns] concurrent_total {reason}"))?;
        let limits = self
            .sessions
            .apply(limits)
            .map_err(|reason| format!("[sessions] {reason}"))?;
        if self.turns.call_depth == Some(0) {
            return Err("[turns] call_depth must be at least 1".into());
        }
        let limits = Limits {
            concurrent_turns,
            call_depth: self.turns.call_depth.unwrap_or(limits.call_depth),
            ..self.kv.apply(limits)
        };
        let mcp = mcp::servers(&self.mcp)?;
        let declared: BTreeSet<&str> = mcp.iter().map(|server| server.name.as_str()).collect();
        let mut grants = Grants::default();
        let mut plugins = BTreeMap::new();
        let mut outbound = BTreeMap::new();
        let mut calls = BTreeMap::new();
        let mut webhooks = BTreeMap::new();
        for (plugin, policy) in &self.plugins {
            check_plugin_name(plugin)
                .map_err(|reason| format!("[plugins.{plugin}]: the plugin name {reason}"))?;
            for bucket in &policy.buckets {
                grants
                    .grant(plugin, bucket)
                    .map_err(|reason| format!("[plugins.{plugin}] buckets: {reason}"))?;
            }
            let own = policy
                .turns
                .apply(limits.clone())
                .map_err(|reason| format!("[plugins.{plugin}] {reason}"))?;
            let own = Limits {
                live_sessions: policy.max_live.or(own.live_sessions),
                ..policy.kv.apply(own)
            };
            plugins.insert(plugin.clone(), own);
            let reach = outbound::outbound(policy.http.as_ref(), &policy.config)
                .map_err(|reason| format!("[plugins.{plugin}] {reason}"))?;
            outbound.insert(plugin.clone(), Arc::new(reach));
            if !policy.may_call.is_empty() || !policy.may_hand_off.is_empty() {
                let may = MayCall::parse(&policy.may_call, &declared)
                    .map_err(|reason| format!("[plugins.{plugin}] may_call {reason}"))?
                    .with_hand_offs(&policy.may_hand_off)
                    .map_err(|reason| format!("[plugins.{plugin}] may_hand_off {reason}"))?;
                calls.insert(plugin.clone(), may);
            }
            if let Some(section) = &policy.webhook {
                let webhook = section
                    .webhook()
                    .map_err(|reason| format!("[plugins.{plugin}.webhook] {reason}"))?;
                webhooks.insert(plugin.clone(), webhook);
            }
        }
        Ok(Policy {
            limits,
            plugins,
            grants,
            outbound,
            calls,
            mcp,
            webhooks,
        })
    }
}
