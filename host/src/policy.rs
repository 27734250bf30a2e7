//! Limits the host enforces on every plugin, whatever the plugin does, and
//! the operator's policy file that sets them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::check_concurrent_turns;
use crate::kv::Grants;

/// Resource limits for the turns of a plugin.
///
/// Every limit is enforced by the host outside the guest. A turn that trips
/// one fails with [`crate::session::Cause`] naming the limit, and commits nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one turn may run inside the guest (epoch interruption,
    /// about 1 ms granularity).
    pub deadline: Duration,
    /// Linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Bytes one turn may send with `output.say`, and bytes of guest
    /// stdout/stderr kept for the log.
    pub output_bytes: usize,
    /// Size in bytes of one session-state value (compact JSON) or KV value.
    pub value_bytes: usize,
    /// Size in bytes of the whole session state (keys plus compact values).
    pub state_bytes: usize,
    /// Nesting depth of one JSON value.
    pub json_depth: usize,
    /// Turns running at once in this process, across all plugins; later
    /// turns wait. Each live instance holds a few memory mappings and the
    /// kernel caps those per process, so this stays well below the pooling
    /// allocator's capacity (at most [`crate::engine::MAX_CONCURRENT_TURNS`]).
    pub concurrent_turns: usize,
    /// Turns of one plugin running at once; a turn past it is refused with
    /// [`crate::session::Cause::ConcurrentTurns`]. `None`: only
    /// `concurrent_turns` bounds them.
    pub plugin_turns: Option<usize>,
    /// Keys one KV owner (a plugin, or a granted bucket) may hold.
    pub kv_keys: u64,
    /// Bytes of keys plus values one KV owner may hold.
    pub kv_bytes: u64,
    /// A session without a turn for this long is ended by the reaper.
    pub session_idle_ttl: Duration,
    /// A session this old is ended by the reaper, however busy.
    pub session_max_lifetime: Duration,
    /// Calls from the guest into the host (the world's functions and WASI)
    /// one call of an export may make.
    pub host_calls: u64,
    /// Active sessions one plugin may have at once; `None` for no bound.
    pub live_sessions: Option<u64>,
    /// Fuel one call of an export may burn (about one unit per WebAssembly
    /// instruction); `None`: unmetered. Metering is compiled into every
    /// plugin of a host once any plugin has this limit, at a cost to each
    /// (`BENCHMARKS.md`).
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
            value_bytes: 64 << 10,
            state_bytes: 1 << 20,
            json_depth: 32,
            concurrent_turns: 256,
            plugin_turns: None,
            kv_keys: 100_000,
            kv_bytes: 256 << 20,
            session_idle_ttl: Duration::from_secs(30 * 60),
            session_max_lifetime: Duration::from_secs(24 * 60 * 60),
            host_calls: 1_000_000,
            live_sessions: None,
            fuel: None,
        }
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
/// concurrent = 32              # turns of one plugin at once; more are refused (no bound if left out)
/// concurrent_total = 256       # turns of all plugins at once in this process; more wait
/// fuel = 100000000             # about one unit per instruction, per call of an export (unmetered if left out)
///
/// [sessions]
/// idle_ttl_ms = 1800000        # end sessions idle for 30 minutes
/// max_lifetime_ms = 86400000   # and any session 24 hours old
/// max_live = 10000             # active sessions per plugin (no bound if left out)
///
/// [kv]
/// max_keys = 100000            # per plugin, and per granted bucket
/// max_bytes = 268435456
///
/// [plugins.profile]
/// buckets = ["crm"]            # named buckets this plugin may open
/// deadline_ms = 500            # and any [turns] limit but concurrent_total, max_live,
///                              # max_keys or max_bytes, for it alone
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
}

/// The `[turns]` section: the limits of every plugin's turns, and the
/// bound on turns at once in the process.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnsSection {
    #[serde(flatten)]
    turns: TurnPolicy,
    concurrent_total: Option<usize>,
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
    concurrent: Option<usize>,
    fuel: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsPolicy {
    idle_ttl_ms: Option<u64>,
    max_lifetime_ms: Option<u64>,
    max_live: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvPolicy {
    max_keys: Option<u64>,
    max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginPolicy {
    #[serde(default)]
    buckets: Vec<String>,
    #[serde(flatten)]
    turns: TurnPolicy,
    max_live: Option<u64>,
    max_keys: Option<u64>,
    max_bytes: Option<u64>,
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
            plugin_turns: self.concurrent.or(limits.plugin_turns),
            fuel: self.fuel.or(limits.fuel),
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
        let ms = Duration::from_millis;
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
        let limits = Limits {
            session_idle_ttl: self
                .sessions
                .idle_ttl_ms
                .map_or(limits.session_idle_ttl, ms),
            session_max_lifetime: self
                .sessions
                .max_lifetime_ms
                .map_or(limits.session_max_lifetime, ms),
            live_sessions: self.sessions.max_live.or(limits.live_sessions),
            kv_keys: self.kv.max_keys.unwrap_or(limits.kv_keys),
            kv_bytes: self.kv.max_bytes.unwrap_or(limits.kv_bytes),
            concurrent_turns,
            ..limits
        };
        let mut grants = Grants::default();
        let mut plugins = BTreeMap::new();
        for (plugin, policy) in &self.plugins {
            crate::plugin::check_name(plugin, '-')
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
                kv_keys: policy.max_keys.unwrap_or(own.kv_keys),
                kv_bytes: policy.max_bytes.unwrap_or(own.kv_bytes),
                ..own
            };
            plugins.insert(plugin.clone(), own);
        }
        Ok(Policy {
            limits,
            plugins,
            grants,
        })
    }
}
