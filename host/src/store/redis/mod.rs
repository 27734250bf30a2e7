//! Sessions, KV and leases in Redis: the store for more than one host.
//!
//! Every host process that opens the same Redis shares sessions, history,
//! KV, tool records and cache, the plugin versions and which one of each
//! plugin is active, and the leases that keep two processes from running
//! turns of one session at once. Keys carry the `agentbox:` prefix
//! and a hash tag: one per session (`{s/ID}`: record, history, lease, log) and one
//! per KV owner (`{kv/OWNER}`: entries and their bookkeeping), so each
//! atomic script touches one slot of a Redis Cluster.
//!
//! Turn commits (with the event each appends to the session's log) and KV
//! writes are Lua scripts (`commit.lua`, `kv.lua`), each atomic, and so are
//! the reads of the log (`events.lua`, `line.lua`, `line_before.lua`).
//! Expiry follows the host's clock: an entry is invisible once the
//! host clock passes its expiry, Redis reclaims it natively (`PX`) after the
//! same time on its own clock, and [`crate::store::Store::sweep`] reclaims whatever the host
//! clock expired first, with its bookkeeping.
//!
//! The store traits block, and the host calls it from blocking threads,
//! so this backend uses the redis crate's blocking connections, from a pool:
//! a connection that fails is dropped and the next call opens a new one, so
//! service resumes by itself when Redis comes back.

//!
//! The rooms: [`keys`] (every key and its hash tag), [`announce`] (every
//! process hears of each commit), [`reply`] (the typed
//! answers of the Lua scripts), [`log`] (the event log's reads), and each
//! concern's trait on this store: [`sessions`], [`kv`], [`records`] (plugin records and the tool log),
//! [`users`] (a user's data).

mod announce;
mod coordination;
mod keys;
mod kv;
mod log;
mod records;
mod reply;
mod sessions;
mod users;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use redis::{Client, Connection, RedisError, RedisResult, Script};

use crate::store::error::BackendError;
use crate::store::redis::keys::{OWNERS, owner_key};
use crate::store::types::Namespace;

/// How long opening a connection may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one command may wait for its reply.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`crate::store::Store`] in a Redis server.
pub struct RedisStore {
    client: Client,
    address: String,
    pool: Mutex<Vec<Connection>>,
    /// KV owners this process has registered for the sweep.
    owners: Mutex<HashSet<String>>,
    commit: Script,
    events: Script,
    line: Script,
    line_before: Script,
    kv: Script,
    lease: Script,
    purge_records: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis server at `url` (`redis://HOST:PORT[/DB]`).
    pub fn open(url: &str) -> Result<RedisStore, BackendError> {
        let client = Client::open(url)
            .map_err(|err| BackendError::caused(format!("`{url}` is not a Redis address"), err))?;
        let store = RedisStore {
            client,
            address: url.to_owned(),
            pool: Mutex::new(Vec::new()),
            owners: Mutex::new(HashSet::new()),
            commit: Script::new(include_str!("commit.lua")),
            events: Script::new(include_str!("events.lua")),
            line: Script::new(include_str!("line.lua")),
            line_before: Script::new(include_str!("line_before.lua")),
            kv: Script::new(include_str!("kv.lua")),
            lease: Script::new(include_str!("lease.lua")),
            purge_records: Script::new(include_str!("purge_records.lua")),
        };
        store.with(|conn| redis::cmd("PING").query::<String>(conn))?;
        Ok(store)
    }

    /// Runs `f` on a pooled connection. A connection that failed is dropped,
    /// not pooled, so the next call connects afresh.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, BackendError> {
        let pooled = self.pool.lock().expect("redis pool poisoned").pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&mut conn);
        let broken = result
            .as_ref()
            .is_err_and(|err| err.is_io_error() || err.is_connection_dropped() || err.is_timeout());
        if !broken {
            self.pool.lock().expect("redis pool poisoned").push(conn);
        }
        result.map_err(|err| self.failed(err))
    }

    fn connect(&self) -> Result<Connection, BackendError> {
        let conn = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|err| self.failed(err))?;
        conn.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|err| self.failed(err))?;
        Ok(conn)
    }

    fn failed(&self, err: RedisError) -> BackendError {
        BackendError::caused(format!("Redis at {}", self.address), err)
    }

    fn kv_call(
        &self,
        ns: &Namespace,
        member: &str,
        op: &str,
        now_ms: u64,
    ) -> redis::ScriptInvocation<'_> {
        let owner = owner_key(&ns.owner);
        let mut call = self.kv.prepare_invoke();
        call.key(format!("{owner}:e:{member}"))
            .key(format!("{owner}:index"))
            .key(format!("{owner}:expiry"))
            .key(format!("{owner}:usage"))
            .arg(op)
            .arg(format!("{owner}:e:"))
            .arg(member)
            .arg(now_ms);
        call
    }

    /// Remembers `owner` for the sweep, once per process.
    fn register_owner(&self, owner: &str) -> Result<(), BackendError> {
        if self
            .owners
            .lock()
            .expect("owner set poisoned")
            .contains(owner)
        {
            return Ok(());
        }
        self.with(|conn| redis::cmd("SADD").arg(OWNERS).arg(owner).query::<()>(conn))?;
        self.owners
            .lock()
            .expect("owner set poisoned")
            .insert(owner.to_owned());
        Ok(())
    }
}
