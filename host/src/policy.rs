//! Limits the host enforces on every plugin, whatever the plugin does, and
//! the operator's policy file that sets them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

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
    /// Turns running at once in this process, across all sessions. Each live
    /// instance holds a few memory mappings and the kernel caps those per
    /// process, so this stays well below the pooling allocator's capacity.
    pub concurrent_turns: usize,
    /// Keys one KV owner (a plugin, or a granted bucket) may hold.
    pub kv_keys: u64,
    /// Bytes of keys plus values one KV owner may hold.
    pub kv_bytes: u64,
    /// A session without a turn for this long is ended by the reaper.
    pub session_idle_ttl: Duration,
    /// A session this old is ended by the reaper, however busy.
    pub session_max_lifetime: Duration,
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
            kv_keys: 100_000,
            kv_bytes: 256 << 20,
            session_idle_ttl: Duration::from_secs(30 * 60),
            session_max_lifetime: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The operator's policy, as read from a TOML file:
///
/// ```toml
/// [sessions]
/// idle_ttl_ms = 1800000        # end sessions idle for 30 minutes
/// max_lifetime_ms = 86400000   # and any session 24 hours old
///
/// [kv]
/// max_keys = 100000            # per plugin, and per granted bucket
/// max_bytes = 268435456
///
/// [plugins.profile]
/// buckets = ["crm"]            # named buckets this plugin may open
/// ```
///
/// Every section and field is optional; what is left out keeps its default.
/// Unknown sections and fields are errors, so a typo never goes unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    sessions: SessionsPolicy,
    #[serde(default)]
    kv: KvPolicy,
    #[serde(default)]
    plugins: BTreeMap<String, PluginPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsPolicy {
    idle_ttl_ms: Option<u64>,
    max_lifetime_ms: Option<u64>,
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
}

impl PolicyFile {
    /// Parses a policy file's text.
    pub fn parse(text: &str) -> Result<PolicyFile, String> {
        toml::from_str(text).map_err(|err| err.to_string())
    }

    /// `limits` with this policy's values in place of theirs, and the
    /// bucket grants.
    pub fn apply(&self, limits: Limits) -> Result<(Limits, Grants), String> {
        let ms = Duration::from_millis;
        let limits = Limits {
            session_idle_ttl: self
                .sessions
                .idle_ttl_ms
                .map_or(limits.session_idle_ttl, ms),
            session_max_lifetime: self
                .sessions
                .max_lifetime_ms
                .map_or(limits.session_max_lifetime, ms),
            kv_keys: self.kv.max_keys.unwrap_or(limits.kv_keys),
            kv_bytes: self.kv.max_bytes.unwrap_or(limits.kv_bytes),
            ..limits
        };
        let mut grants = Grants::default();
        for (plugin, policy) in &self.plugins {
            for bucket in &policy.buckets {
                grants
                    .grant(plugin, bucket)
                    .map_err(|reason| format!("[plugins.{plugin}] buckets: {reason}"))?;
            }
        }
        Ok((limits, grants))
    }
}
