//! What the stores keep: session records and their commits, history
//! messages, tool records, KV namespaces, writes and quotas.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::error::KvStoreError;
use crate::store::timeline::LogEntry;

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

    pub(crate) fn parse(name: &str) -> Option<Role> {
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
    /// Whether the caller interrupted the agent saying it: it holds what
    /// had been said by then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
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

    /// The status named `name` (`active`, `ended`).
    pub fn parse(name: &str) -> Option<Status> {
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
    /// The caller that started the session, who alone may reach it when
    /// callers authenticate; `None` for a session started without
    /// authentication.
    pub owner: Option<String>,
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
    /// The plugin the session's plugin handed the conversation to: its
    /// child session of this one takes the caller's messages until it hands
    /// back or ends. `None` while the session's own plugin answers.
    #[serde(default)]
    pub delegate: Option<String>,
    /// Bytes of the events of its log, which the store counts as it
    /// appends them (whatever a record passed to a create says), for the
    /// log's limit.
    #[serde(default)]
    pub log_bytes: u64,
}

/// One turn's changes, committed atomically by `SessionStore::commit`.
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
    /// The plugin that serves the session.
    pub plugin: String,
    /// The plugin whose child session takes the caller's messages from now
    /// on, after a hand-off; `None` while the session's own plugin answers.
    pub delegate: Option<String>,
    /// Hex sha256 of the plugin version that ran the turn.
    pub digest: String,
    /// The state layout version of `state`.
    pub state_version: u32,
    /// The session's status after the turn.
    pub status: Status,
    /// Messages appended to the history.
    pub messages: Vec<Message>,
    /// How many of the newest messages of the history are dropped before
    /// `messages` are appended (a rewind takes back what the turns it goes
    /// back past appended).
    pub dropped_messages: u64,
    /// What the history is trimmed to after the messages are appended.
    pub history_cap: HistoryCap,
    /// Time of the commit, in milliseconds of the host clock.
    pub at_ms: u64,
    /// The event the commit appends to the session's log.
    pub event: LogEntry,
}

/// What a session's history is kept to: the newest `messages` messages,
/// and of those no more than `bytes` bytes of content, dropping the oldest
/// first. The newest message is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCap {
    /// Messages kept at most.
    pub messages: u64,
    /// Bytes of content kept at most.
    pub bytes: u64,
}

impl HistoryCap {
    /// Whether a history of `messages` messages with `bytes` bytes of
    /// content is within the cap; one message always is.
    pub fn holds(&self, messages: u64, bytes: u64) -> bool {
        messages <= 1 || (messages <= self.messages && bytes <= self.bytes)
    }

    /// How many of the newest messages are kept, given the content lengths
    /// of a history newest first.
    pub fn kept(&self, newest_first: impl IntoIterator<Item = u64>) -> u64 {
        let mut total = 0u64;
        let mut kept = 0;
        for len in newest_first {
            total = total.saturating_add(len);
            if !self.holds(kept + 1, total) {
                break;
            }
            kept += 1;
        }
        kept
    }
}

/// Which sessions a listing returns: those matching every filter given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Only sessions served by this plugin.
    pub plugin: Option<String>,
    /// Only sessions started for this user.
    pub user: Option<String>,
    /// Only sessions in this status.
    pub status: Option<Status>,
}

impl SessionFilter {
    /// Whether `record` matches.
    pub fn admits(&self, record: &SessionRecord) -> bool {
        self.plugin
            .as_ref()
            .is_none_or(|plugin| *plugin == record.plugin)
            && self
                .user
                .as_ref()
                .is_none_or(|user| record.user_id.as_ref() == Some(user))
            && self.status.is_none_or(|status| status == record.status)
    }
}

/// One page of a listing of sessions, and where the next one starts
/// (`None` after the last). A page may hold fewer sessions than asked for
/// before the last one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionPage {
    /// The sessions.
    pub sessions: Vec<SessionRecord>,
    /// The cursor of the next page.
    pub next: Option<String>,
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
    /// A registry call the policy does not grant, or that would close a cycle.
    Denied,
    /// A registry call of a tool no plugin or MCP server offers.
    NotFound,
    /// A registry call whose plugin, store or MCP server could not serve it.
    Unavailable,
    /// A registry call stopped by a limit of the calling plugin.
    Limit,
    /// The caller interrupted the call's turn.
    Interrupted,
}

impl ToolOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [ToolOutcome; 12] = [
        ToolOutcome::Ok,
        ToolOutcome::InvalidArgs,
        ToolOutcome::Precondition,
        ToolOutcome::GuestError,
        ToolOutcome::Trap,
        ToolOutcome::Timeout,
        ToolOutcome::CacheHit,
        ToolOutcome::Denied,
        ToolOutcome::NotFound,
        ToolOutcome::Unavailable,
        ToolOutcome::Limit,
        ToolOutcome::Interrupted,
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
            ToolOutcome::Denied => "denied",
            ToolOutcome::NotFound => "not-found",
            ToolOutcome::Unavailable => "unavailable",
            ToolOutcome::Limit => "limit",
            ToolOutcome::Interrupted => "interrupted",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<ToolOutcome> {
        ToolOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }
}

/// The record of one tool call: of a plugin's tool, or of a registry call
/// a plugin made (its `tool` is then the address it called, `plugin/tool`
/// or `mcp:server/tool`). The callee's record of a registry call names the
/// caller's in `called_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// This record's id (empty in records kept from before records had ids).
    #[serde(default)]
    pub id: String,
    /// The id of the record of the registry call this call answered, if a
    /// plugin's registry call made it.
    #[serde(default)]
    pub called_by: Option<String>,
    /// The plugin.
    pub plugin: String,
    /// Hex sha256 of the plugin version that was called.
    pub digest: String,
    /// The tool, or the address a registry call called.
    pub tool: String,
    /// The session the call ran in.
    pub session: String,
    /// How long the call took, in microseconds.
    pub duration_us: u64,
    /// How it ended.
    pub outcome: ToolOutcome,
    /// When it ended, in milliseconds of the host clock.
    pub at_ms: u64,
    /// The outbound HTTP requests the call made.
    #[serde(default)]
    pub outbound: OutboundUse,
}

/// What one call sent through outbound HTTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundUse {
    /// Requests the host sent for it.
    pub requests: u64,
    /// Requests the host refused.
    pub refused: u64,
    /// Bytes of response bodies it read.
    pub response_bytes: u64,
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

impl Namespace {
    /// The user whose scope this is, held to the per-user quota as well as
    /// its owner's.
    pub fn user(&self) -> Option<&str> {
        self.scope.strip_prefix("user/")
    }
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
    /// When the key expires, in milliseconds of the host clock. `None`
    /// keeps the expiry of a live key as it was (an expiry is never dropped
    /// by a write that does not name one); a key that is absent or expired
    /// then never expires.
    pub expires_at_ms: Option<u64>,
    /// `Some(expected)`: store only if the live value is `expected`, where
    /// `None` means the key must be absent (compare-and-swap). `None`: always.
    pub only_if: Option<Option<&'a [u8]>>,
}

/// How many keys and bytes (keys plus values) one KV owner may hold, and
/// how many of them one user's scope of it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most keys.
    pub keys: u64,
    /// Most bytes of keys plus values.
    pub bytes: u64,
    /// Most keys in one user's scope.
    pub user_keys: u64,
    /// Most bytes of keys plus values in one user's scope.
    pub user_bytes: u64,
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
    pub fn check(&self, owner: &str, after: Usage) -> Result<(), KvStoreError> {
        if after.keys > self.keys {
            return Err(KvStoreError::QuotaExceeded(format!(
                "the write would make `{owner}` hold {} keys, over its quota of {}",
                after.keys, self.keys
            )));
        }
        if after.bytes > self.bytes {
            return Err(KvStoreError::QuotaExceeded(format!(
                "the write would make `{owner}` hold {} bytes, over its quota of {} bytes",
                after.bytes, self.bytes
            )));
        }
        Ok(())
    }

    /// Refuses a write that would leave the user's scope `ns` (if it is
    /// one) holding `after`.
    pub fn check_user(&self, ns: &Namespace, after: Usage) -> Result<(), KvStoreError> {
        let Some(user) = ns.user() else {
            return Ok(());
        };
        let owner = &ns.owner;
        if after.keys > self.user_keys {
            return Err(KvStoreError::QuotaExceeded(format!(
                "the write would make user `{user}` hold {} keys in `{owner}`, over the quota of {} per user",
                after.keys, self.user_keys
            )));
        }
        if after.bytes > self.user_bytes {
            return Err(KvStoreError::QuotaExceeded(format!(
                "the write would make user `{user}` hold {} bytes in `{owner}`, over the quota of {} bytes per user",
                after.bytes, self.user_bytes
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
pub fn increment_value(current: Option<&[u8]>, delta: i64) -> Result<i64, KvStoreError> {
    let current = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| {
                KvStoreError::Invalid(format!(
                    "the value is not an integer in decimal text ({} bytes: {:?})",
                    bytes.len(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(32)])
                ))
            })?,
    };
    current.checked_add(delta).ok_or_else(|| {
        KvStoreError::Invalid(format!(
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
    /// Ended sessions deleted, with their history, past their retention.
    pub ended_sessions: u64,
    /// Tool-call records deleted past their retention.
    pub executions: u64,
}

/// What a sweep deletes besides expired entries: ended sessions that ended
/// at or before `ended_before_ms`, and tool-call records made at or before
/// `records_before_ms` (host clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Ended sessions that ended at or before this time are deleted.
    pub ended_before_ms: u64,
    /// Tool-call records made at or before this time are deleted.
    pub records_before_ms: u64,
}
