//! Where sessions live: the [`Store`] trait and its backends.
//!
//! A session is a record in the store; Wasm instances are disposable. Nothing
//! in this module knows about WebAssembly.

mod memory;
mod redis;
mod sqlite;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use sqlite::SqliteStore;

/// The state of a session: a JSON object whose keys the plugin chose.
pub type State = Map<String, Value>;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Set up by the host or operator.
    System,
    /// The caller.
    User,
    /// The agent.
    Assistant,
    /// A tool call and its result.
    Tool,
}

impl Role {
    /// The role's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    fn parse(name: &str) -> Option<Role> {
        [Role::System, Role::User, Role::Assistant, Role::Tool]
            .into_iter()
            .find(|role| role.as_str() == name)
    }
}

/// One entry of a session's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

/// Whether a session takes more turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Open for turns.
    Active,
    /// Closed; its record and history remain for inspection.
    Ended,
}

impl Status {
    /// The status's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Ended => "ended",
        }
    }

    fn parse(name: &str) -> Option<Status> {
        [Status::Active, Status::Ended]
            .into_iter()
            .find(|status| status.as_str() == name)
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Unique id.
    pub id: String,
    /// Name of the plugin that serves the session.
    pub plugin: String,
    /// Hex sha256 of the plugin version that committed the latest turn.
    pub digest: String,
    /// The user the caller named at the start, if any.
    pub user_id: Option<String>,
    /// Variables the caller passed at the start.
    pub variables: Map<String, Value>,
    /// The committed state.
    pub state: State,
    /// The plugin's `state-version` that `state` is laid out for.
    pub state_version: u32,
    /// Number of commits so far; each commit names the revision it read and
    /// fails if another commit came first.
    pub revision: u64,
    /// Number of the latest committed turn (0 is the start).
    pub turn: u64,
    /// Whether the session takes more turns.
    pub status: Status,
    /// Creation time, in milliseconds of the host clock.
    pub created_at_ms: u64,
    /// Time of the latest commit, in milliseconds of the host clock.
    pub updated_at_ms: u64,
}

/// One turn's changes, committed atomically by [`Store::commit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// The session.
    pub session: String,
    /// The revision the turn read; the commit fails if the stored one differs.
    pub read_revision: u64,
    /// The new state, replacing the old one whole.
    pub state: State,
    /// The turn number being committed.
    pub turn: u64,
    /// The plugin that serves the session from now on (another one after a hand-off).
    pub plugin: String,
    /// Hex sha256 of the plugin version that ran the turn.
    pub digest: String,
    /// The state layout version of `state`.
    pub state_version: u32,
    /// The session's status after the turn.
    pub status: Status,
    /// Messages appended to the history.
    pub messages: Vec<Message>,
    /// Time of the commit, in milliseconds of the host clock.
    pub at_ms: u64,
}

/// How one tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolOutcome {
    /// The tool ran and its turn committed.
    Ok,
    /// The arguments broke the tool's schema; the guest was not entered.
    InvalidArgs,
    /// A session field the tool requires was not set; the guest was not entered.
    Precondition,
    /// The tool returned an error, or a result or state the host refused.
    GuestError,
    /// The guest trapped or tripped a memory or output limit.
    Trap,
    /// The guest ran past its deadline.
    Timeout,
    /// The result came from the cache; the guest was not entered.
    CacheHit,
}

impl ToolOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [ToolOutcome; 7] = [
        ToolOutcome::Ok,
        ToolOutcome::InvalidArgs,
        ToolOutcome::Precondition,
        ToolOutcome::GuestError,
        ToolOutcome::Trap,
        ToolOutcome::Timeout,
        ToolOutcome::CacheHit,
    ];

    /// The outcome's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::InvalidArgs => "invalid-args",
            ToolOutcome::Precondition => "precondition",
            ToolOutcome::GuestError => "guest-error",
            ToolOutcome::Trap => "trap",
            ToolOutcome::Timeout => "timeout",
            ToolOutcome::CacheHit => "cache-hit",
        }
    }

    fn parse(name: &str) -> Option<ToolOutcome> {
        ToolOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }
}

/// The record of one tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// The plugin.
    pub plugin: String,
    /// Hex sha256 of the plugin version that was called.
    pub digest: String,
    /// The tool.
    pub tool: String,
    /// The session the call ran in.
    pub session: String,
    /// How long the call took, in microseconds.
    pub duration_us: u64,
    /// How it ended.
    pub outcome: ToolOutcome,
    /// When it ended, in milliseconds of the host clock.
    pub at_ms: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A session with this id exists already.
    #[error("a session with id `{0}` exists already")]
    Exists(String),
    /// No session has this id.
    #[error("no session has id `{0}`")]
    NotFound(String),
    /// Another commit changed the session since this turn read it.
    #[error(
        "session `{session}` changed while the turn ran (read revision {read}, stored revision {stored})"
    )]
    Conflict {
        /// The session.
        session: String,
        /// The revision the turn read.
        read: u64,
        /// The revision in the store.
        stored: u64,
    },
    /// A KV write would take its owner over its quota; nothing changed.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A KV operation does not apply to the value stored (an increment of a
    /// value that is not an integer, or one that would overflow); nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The backend failed; the operation may succeed if retried.
    #[error("store backend failed: {0}")]
    Backend(String),
}

/// Where a KV key lives: the owner its quota is charged to, and the scope
/// within that owner. The host builds namespaces; a guest only names keys
/// within one, so no key can reach outside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    /// A plugin name (`a-z 0-9 -`), or `@` and a bucket name for a bucket
    /// shared by the plugins the policy grants it to.
    pub owner: String,
    /// `global`, `user/` and a user id, or `shared`; never contains a key.
    pub scope: String,
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.scope)
    }
}

/// A KV write: what to store under a key, until when, and on what condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvWrite<'a> {
    /// The new value.
    pub value: &'a [u8],
    /// When the key expires, in milliseconds of the host clock; `None` for never.
    pub expires_at_ms: Option<u64>,
    /// `Some(expected)`: store only if the live value is `expected`, where
    /// `None` means the key must be absent (compare-and-swap). `None`: always.
    pub only_if: Option<Option<&'a [u8]>>,
}

/// How many keys and bytes (keys plus values) one KV owner may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most keys.
    pub keys: u64,
    /// Most bytes of keys plus values.
    pub bytes: u64,
}

/// What one KV owner holds, expired entries not yet reclaimed included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Keys stored.
    pub keys: u64,
    /// Bytes of keys plus values stored.
    pub bytes: u64,
}

impl Quota {
    /// Refuses a write that would leave `owner` holding `after`.
    pub fn check(&self, owner: &str, after: Usage) -> Result<(), StoreError> {
        if after.keys > self.keys {
            return Err(StoreError::QuotaExceeded(format!(
                "the write would make `{owner}` hold {} keys, over its quota of {}",
                after.keys, self.keys
            )));
        }
        if after.bytes > self.bytes {
            return Err(StoreError::QuotaExceeded(format!(
                "the write would make `{owner}` hold {} bytes, over its quota of {} bytes",
                after.bytes, self.bytes
            )));
        }
        Ok(())
    }
}

/// Bytes a KV entry counts against its owner's quota.
pub fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// Whether an entry that expires at `expires_at_ms` is live at `now_ms`.
pub fn is_live(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    expires_at_ms.is_none_or(|at| at > now_ms)
}

/// Adds `delta` to a counter's stored text (absent counts as 0) and returns
/// the new value, or why that is impossible.
pub fn increment_value(current: Option<&[u8]>, delta: i64) -> Result<i64, StoreError> {
    let current = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "the value is not an integer in decimal text ({} bytes: {:?})",
                    bytes.len(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(32)])
                ))
            })?,
    };
    current.checked_add(delta).ok_or_else(|| {
        StoreError::Invalid(format!(
            "adding {delta} to {current} overflows a 64-bit integer"
        ))
    })
}

/// What one sweep reclaimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired KV entries removed.
    pub kv_entries: u64,
    /// Expired tool-cache entries removed.
    pub cache_entries: u64,
}

/// Session storage shared by every turn of a host.
///
/// Implementations are safe to call from many threads at once. Methods block
/// the calling thread; the host calls them from blocking worker threads.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new session with its first messages, atomically.
    ///
    /// Fails with [`StoreError::Exists`] if the id is taken; nothing changes then.
    fn create(&self, session: &SessionRecord, messages: &[Message]) -> Result<(), StoreError>;

    /// The session with this id, as last committed, or `None`.
    fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Commits one turn atomically: state, revision + 1, turn, status,
    /// digest, state version, updated time and the appended messages, or
    /// nothing at all.
    ///
    /// Fails with [`StoreError::Conflict`] if the stored revision is not
    /// `commit.read_revision`, and with [`StoreError::NotFound`] if the session
    /// does not exist. Once this returns `Ok`, the commit survives a crash of
    /// the process.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;

    /// Records one tool call, for statistics.
    fn record_execution(&self, execution: &Execution) -> Result<(), StoreError>;

    /// Every recorded tool call, oldest first.
    fn executions(&self) -> Result<Vec<Execution>, StoreError>;

    /// The cached result under `key`, unless it expired at or before `now_ms`.
    /// An expired entry is invisible at once, whether or not it was removed.
    fn cache_get(&self, key: &str, now_ms: u64) -> Result<Option<String>, StoreError>;

    /// Caches `value` under `key` until `expires_at_ms`, replacing any entry;
    /// `now_ms` is the time of the host clock when it does.
    fn cache_put(
        &self,
        key: &str,
        value: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// The newest `last` messages of the session's history, oldest first;
    /// empty for a session that does not exist.
    fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, StoreError>;

    /// Up to `limit` active sessions of `plugin` last committed at or before
    /// `idle_since_ms` or created at or before `created_since_ms`: the ones
    /// the reaper ends. (A host reaps the sessions of the plugins it has
    /// loaded, since their `on-end` must run first.)
    fn expired_sessions(
        &self,
        plugin: &str,
        idle_since_ms: u64,
        created_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// How many sessions of `plugin` are active (not ended, not deleted).
    fn live_sessions(&self, plugin: &str) -> Result<u64, StoreError>;

    /// Keeps a plugin version's component bytes under their digest (hex),
    /// for every host on this store to load; returns whether they are new
    /// to the store. Publishing the same bytes again changes nothing.
    fn publish_plugin(&self, digest: &str, bytes: &[u8]) -> Result<bool, StoreError>;

    /// The component bytes published under `digest`.
    fn published_plugin(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Records the version with digest `digest` as plugin `name`'s active
    /// version, for every host on this store.
    fn set_active_plugin(&self, name: &str, digest: &str) -> Result<(), StoreError>;

    /// The active version of each plugin the store has a record of: name → digest.
    fn active_plugins(&self) -> Result<BTreeMap<String, String>, StoreError>;

    /// Deletes a session's record and history; deleting an absent one does nothing.
    fn delete_session(&self, id: &str) -> Result<(), StoreError>;

    /// Takes or renews the lease on running turns of `session` for `holder`
    /// (one host process) for `ttl`, unless another holder's lease is live.
    /// Returns whether `holder` holds it now.
    ///
    /// A backend that only one process can use needs no lease: the host's
    /// per-session lock serializes turns, and the revision check at commit
    /// guards the rest. Such a backend keeps this default, which grants every
    /// lease.
    fn lease(
        &self,
        session: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let _ = (session, holder, ttl);
        Ok(true)
    }

    /// Gives up `holder`'s lease on `session`, if it holds it.
    fn release(&self, session: &str, holder: &str) -> Result<(), StoreError> {
        let _ = (session, holder);
        Ok(())
    }

    /// The live value under `key` in `ns`.
    fn kv_get(&self, ns: &Namespace, key: &str, now_ms: u64)
    -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a value under `key` in `ns`, atomically, if its condition holds;
    /// returns whether it stored. An expired entry counts as absent. Fails
    /// with [`StoreError::QuotaExceeded`], changing nothing, if the owner would
    /// go over `quota` even after its expired entries are reclaimed.
    fn kv_put(
        &self,
        ns: &Namespace,
        key: &str,
        write: &KvWrite<'_>,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<bool, StoreError>;

    /// Adds `delta` to the integer under `key` in `ns` (see
    /// [`increment_value`]), keeping the key's expiry, and returns the new value.
    fn kv_increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: i64,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<i64, StoreError>;

    /// Removes `key` from `ns`; removing an absent key does nothing.
    fn kv_delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError>;

    /// Up to `limit` live keys of `ns` that start with `prefix` and sort
    /// after `after` (bytewise), in ascending order.
    fn kv_keys(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError>;

    /// What `owner` holds, expired entries not yet reclaimed included.
    fn kv_usage(&self, owner: &str) -> Result<Usage, StoreError>;

    /// Reclaims every KV and tool-cache entry expired at `now_ms`.
    fn sweep(&self, now_ms: u64) -> Result<Swept, StoreError>;
}

/// Which backend to use and where, as written on the command line:
/// `memory`, `sqlite:PATH` or `redis://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// Sessions in process memory, gone when the process exits.
    Memory,
    /// Sessions in a SQLite database file.
    Sqlite(std::path::PathBuf),
    /// Sessions in a Redis server, shared by every host that uses it.
    Redis(String),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<StoreSpec, String> {
        match spec.split_once(':') {
            None if spec == "memory" => Ok(StoreSpec::Memory),
            Some(("sqlite", path)) if !path.is_empty() => Ok(StoreSpec::Sqlite(path.into())),
            Some(("redis" | "rediss", rest)) if rest.len() > 2 => {
                Ok(StoreSpec::Redis(spec.to_owned()))
            }
            _ => Err(format!(
                "`{spec}` is not a store: use `memory`, `sqlite:PATH` (for example `sqlite:agentbox-data/agentbox.db`) or `redis://HOST:PORT`"
            )),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreSpec::Redis(url) => f.write_str(url),
        }
    }
}

impl StoreSpec {
    /// Opens the store, creating the database file and its folder if needed,
    /// or connecting to the Redis server.
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            StoreSpec::Memory => Arc::new(MemoryStore::default()),
            StoreSpec::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            StoreSpec::Redis(url) => Arc::new(RedisStore::open(url)?),
        })
    }
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn ensure_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|err| {
                StoreError::Backend(format!("cannot create {}: {err}", parent.display()))
            })
        }
        _ => Ok(()),
    }
}
