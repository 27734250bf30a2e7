//! Where sessions live: one trait per concern ([`SessionStore`],
//! [`EventLog`], [`Coordination`], [`KvStore`], [`PluginStore`],
//! [`ToolLog`], [`UserStore`]), each with its own error type, and the
//! backends that implement all seven: [`MemoryStore`],
//! [`SqliteStore`] (the default) and [`RedisStore`]. One conformance suite
//! runs against every backend.
//!
//! A session is a record in the store; Wasm instances are disposable. Nothing
//! in this module knows about WebAssembly.

pub mod coordination;
pub mod error;
pub mod kv;
mod memory;
pub mod plugins;
mod redis;
pub mod sessions;
mod sqlite;
pub mod timeline;
pub mod tool_log;
pub mod types;
pub mod users;

use std::path::Path;
use std::sync::Arc;

pub use coordination::{Announcement, AnnouncementSink, Committed, Coordination};
pub use error::{BackendError, KvStoreError, SessionStoreError};
pub use kv::KvStore;
pub use memory::MemoryStore;
pub use plugins::PluginStore;
pub use redis::RedisStore;
pub use sessions::SessionStore;
pub use sqlite::SqliteStore;
pub use timeline::{EventLog, LogEntry, LoggedEvent};
pub use tool_log::ToolLog;
pub use types::{
    Commit, Execution, HistoryCap, KvWrite, Message, Namespace, OutboundUse, Quota, Retention,
    Role, SessionFilter, SessionPage, SessionRecord, State, Status, Swept, ToolOutcome, Usage,
    entry_bytes, increment_value, is_live,
};
pub use users::{Erased, UserStore};

/// Everything a host keeps in one backend: sessions with their event logs
/// and leases, KV, plugin records and the tool log, and a user's data across
/// them. Every backend that implements the seven is a `Store`.
pub trait Store:
    SessionStore + EventLog + Coordination + KvStore + PluginStore + ToolLog + UserStore
{
    /// Reclaims every KV and tool-cache entry expired at `now_ms`, and
    /// deletes the ended sessions and tool-call records past `retention`.
    fn sweep(&self, now_ms: u64, retention: Retention) -> Result<Swept, BackendError> {
        Ok(Swept {
            kv_entries: self.kv_sweep(now_ms)?,
            cache_entries: self.cache_sweep(now_ms)?,
            ended_sessions: self.purge_ended(retention.ended_before_ms)?,
            executions: self.purge_executions(retention.records_before_ms)?,
        })
    }
}

impl<T> Store for T where
    T: SessionStore + EventLog + Coordination + KvStore + PluginStore + ToolLog + UserStore
{
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
    pub fn open(&self) -> Result<Arc<dyn Store>, BackendError> {
        Ok(match self {
            StoreSpec::Memory => Arc::new(MemoryStore::default()),
            StoreSpec::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            StoreSpec::Redis(url) => Arc::new(RedisStore::open(url)?),
        })
    }
}

/// Creates the folder `path` sits in, if it has one.
fn ensure_parent(path: &Path) -> Result<(), BackendError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|err| {
                BackendError::caused(format!("cannot create {}", parent.display()), err)
            })
        }
        _ => Ok(()),
    }
}
