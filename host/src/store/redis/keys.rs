//! Every key the Redis store writes, with the hash tag that keeps the keys
//! of one session, or of one KV owner, in one slot of a cluster.

use crate::store::error::BackendError;
use crate::store::types::Namespace;

/// Prefix of every key.
pub(super) const PREFIX: &str = "agentbox";

/// Every KV owner that ever stored an entry, for the sweep.
pub(super) const OWNERS: &str = "agentbox:kv:owners";

/// Tool-cache keys by expiry (host clock), for the sweep.
pub(super) const CACHE_EXPIRY: &str = "agentbox:cache:expiry";

/// The active version of each plugin: name → digest.
pub(super) const ACTIVE_PLUGINS: &str = "agentbox:plugins:active";

/// The configuration operators set for each plugin: name → JSON object.
pub(super) const PLUGIN_CONFIG: &str = "agentbox:plugins:config";

/// Ended sessions by the time they ended (host clock), for retention.
pub(super) const ENDED: &str = "agentbox:sessions:ended";

/// Tool-call records, oldest first.
pub(super) const EXECUTIONS: &str = "agentbox:executions";

/// The key prefix of one KV owner, with its hash tag.
pub(super) fn owner_key(owner: &str) -> String {
    format!("{PREFIX}:{{kv/{owner}}}")
}

/// The member naming `key` within `ns`: its scope, `/`, the key.
pub(super) fn member(ns: &Namespace, key: &str) -> String {
    format!("{}/{key}", ns.scope)
}

pub(super) fn session_key(id: &str) -> String {
    format!("{PREFIX}:{{s/{id}}}")
}

pub(super) fn history_key(id: &str) -> String {
    format!("{PREFIX}:{{s/{id}}}:history")
}

pub(super) fn lease_key(id: &str) -> String {
    format!("{PREFIX}:{{s/{id}}}:lease")
}

/// The keys of a session's log, in one slot with its record: the log
/// (event numbers), the events, the line, the line's snapshots and the
/// rewound events (see `commit.lua`).
pub(super) fn log_keys(id: &str) -> [String; 5] {
    ["log", "events", "line", "snapshots", "rewound"]
        .map(|part| format!("{PREFIX}:{{s/{id}}}:{part}"))
}

/// Every key of one session: its record, history, lease and log.
pub(super) fn session_keys(id: &str) -> Vec<String> {
    let mut keys = vec![session_key(id), history_key(id), lease_key(id)];
    keys.extend(log_keys(id));
    keys
}

/// One plugin's active sessions by the time of their latest commit.
pub(super) fn by_update(plugin: &str) -> String {
    format!("{PREFIX}:sessions:updated:{plugin}")
}

/// One plugin's active sessions by their creation time.
pub(super) fn by_creation(plugin: &str) -> String {
    format!("{PREFIX}:sessions:created:{plugin}")
}

/// The active sessions one owner (a caller) started.
pub(super) fn by_owner(owner: &str) -> String {
    format!("{PREFIX}:sessions:owner:{owner}")
}

/// Every session started for one user, whatever its status.
pub(super) fn by_user(user: &str) -> String {
    format!("{PREFIX}:sessions:user:{user}")
}

/// A published plugin version's component bytes.
pub(super) fn plugin_key(digest: &str) -> String {
    format!("{PREFIX}:plugin:{digest}")
}

pub(super) fn cache_key(key: &str) -> String {
    format!("{PREFIX}:cache:{key}")
}

pub(super) fn json(err: serde_json::Error) -> BackendError {
    BackendError::caused("Redis holds a malformed record", err)
}
