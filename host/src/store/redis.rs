//! Sessions, KV and leases in Redis: the store for more than one host.
//!
//! Every host process that opens the same Redis shares sessions, history,
//! KV, tool records and cache, the plugin versions and which one of each
//! plugin is active, and the leases that keep two processes from running
//! turns of one session at once. Keys carry the `agentbox:` prefix
//! and a hash tag: one per session (`{s/ID}`: record, history, lease) and one
//! per KV owner (`{kv/OWNER}`: entries and their bookkeeping), so each
//! atomic script touches one slot of a Redis Cluster.
//!
//! Turn commits and KV writes are Lua scripts (`commit.lua`, `kv.lua`), each
//! atomic. Expiry follows the host's clock: an entry is invisible once the
//! host clock passes its expiry, Redis reclaims it natively (`PX`) after the
//! same time on its own clock, and [`Store::sweep`] reclaims whatever the host
//! clock expired first, with its bookkeeping.
//!
//! The [`Store`] trait blocks, and the host calls it from blocking threads,
//! so this backend uses the redis crate's blocking connections, from a pool:
//! a connection that fails is dropped and the next call opens a new one, so
//! service resumes by itself when Redis comes back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use redis::{Client, Connection, RedisError, RedisResult, Script};

use super::{
    Commit, Execution, KvWrite, Message, Namespace, Quota, SessionRecord, Status, Store,
    StoreError, Swept, Usage, entry_bytes, increment_value,
};

/// Prefix of every key.
const PREFIX: &str = "agentbox";

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one command may wait for its reply.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Every KV owner that ever stored an entry, for the sweep.
const OWNERS: &str = "agentbox:kv:owners";
/// Tool-cache keys by expiry (host clock), for the sweep.
const CACHE_EXPIRY: &str = "agentbox:cache:expiry";
/// The active version of each plugin: name → digest.
const ACTIVE_PLUGINS: &str = "agentbox:plugins:active";
/// Tool-call records, oldest first.
const EXECUTIONS: &str = "agentbox:executions";

/// A [`Store`] in a Redis server.
pub struct RedisStore {
    client: Client,
    address: String,
    pool: Mutex<Vec<Connection>>,
    /// KV owners this process has registered for the sweep.
    owners: Mutex<HashSet<String>>,
    commit: Script,
    kv: Script,
    lease: Script,
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
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        let client = Client::open(url)
            .map_err(|err| StoreError::Backend(format!("`{url}` is not a Redis address: {err}")))?;
        let store = RedisStore {
            client,
            address: url.to_owned(),
            pool: Mutex::new(Vec::new()),
            owners: Mutex::new(HashSet::new()),
            commit: Script::new(include_str!("redis/commit.lua")),
            kv: Script::new(include_str!("redis/kv.lua")),
            lease: Script::new(include_str!("redis/lease.lua")),
        };
        store.with(|conn| redis::cmd("PING").query::<String>(conn))?;
        Ok(store)
    }

    /// Runs `f` on a pooled connection. A connection that failed is dropped,
    /// not pooled, so the next call connects afresh.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T, StoreError> {
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
        result.map_err(|err| self.failed(&err))
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|err| self.failed(&err))?;
        conn.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|err| self.failed(&err))?;
        Ok(conn)
    }

    fn failed(&self, err: &RedisError) -> StoreError {
        StoreError::Backend(format!("Redis at {}: {err}", self.address))
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
    fn register_owner(&self, owner: &str) -> Result<(), StoreError> {
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

/// The key prefix of one KV owner, with its hash tag.
fn owner_key(owner: &str) -> String {
    format!("{PREFIX}:{{kv/{owner}}}")
}

/// The member naming `key` within `ns`: its scope, `/`, the key.
fn member(ns: &Namespace, key: &str) -> String {
    format!("{}/{key}", ns.scope)
}

fn session_key(id: &str) -> String {
    format!("{PREFIX}:{{s/{id}}}")
}

fn history_key(id: &str) -> String {
    format!("{PREFIX}:{{s/{id}}}:history")
}

fn lease_key(id: &str) -> String {
    format!("{PREFIX}:{{s/{id}}}:lease")
}

/// One plugin's active sessions by the time of their latest commit.
fn by_update(plugin: &str) -> String {
    format!("{PREFIX}:sessions:updated:{plugin}")
}

/// One plugin's active sessions by their creation time.
fn by_creation(plugin: &str) -> String {
    format!("{PREFIX}:sessions:created:{plugin}")
}

/// A published plugin version's component bytes.
fn plugin_key(digest: &str) -> String {
    format!("{PREFIX}:plugin:{digest}")
}

fn cache_key(key: &str) -> String {
    format!("{PREFIX}:cache:{key}")
}

fn json(err: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("Redis holds a malformed record: {err}"))
}

/// Messages as the history list stores them.
fn encode_messages(messages: &[Message]) -> Result<Vec<String>, StoreError> {
    messages
        .iter()
        .map(|message| serde_json::to_string(message).map_err(json))
        .collect()
}

/// The record's fields as the session hash stores them.
fn record_fields(record: &SessionRecord) -> Result<Vec<(&'static str, String)>, StoreError> {
    let mut fields = vec![
        ("id", record.id.clone()),
        ("plugin", record.plugin.clone()),
        ("digest", record.digest.clone()),
        (
            "variables",
            serde_json::to_string(&record.variables).map_err(json)?,
        ),
        ("state", serde_json::to_string(&record.state).map_err(json)?),
        ("state_version", record.state_version.to_string()),
        ("revision", record.revision.to_string()),
        ("turn", record.turn.to_string()),
        ("status", record.status.as_str().to_owned()),
        ("created_at_ms", record.created_at_ms.to_string()),
        ("updated_at_ms", record.updated_at_ms.to_string()),
    ];
    if let Some(user) = &record.user_id {
        fields.push(("user_id", user.clone()));
    }
    Ok(fields)
}

fn parse_record(mut fields: HashMap<String, String>) -> Result<SessionRecord, StoreError> {
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StoreError::Backend(format!("a session in Redis lacks `{name}`")))
    };
    let number = |text: String| {
        text.parse::<u64>()
            .map_err(|err| StoreError::Backend(format!("a session in Redis holds `{text}`: {err}")))
    };
    Ok(SessionRecord {
        id: take("id")?,
        plugin: take("plugin")?,
        digest: take("digest")?,
        variables: serde_json::from_str(&take("variables")?).map_err(json)?,
        state: serde_json::from_str(&take("state")?).map_err(json)?,
        state_version: u32::try_from(number(take("state_version")?)?)
            .map_err(|err| StoreError::Backend(err.to_string()))?,
        revision: number(take("revision")?)?,
        turn: number(take("turn")?)?,
        status: Status::parse(&take("status")?).unwrap_or(Status::Ended),
        created_at_ms: number(take("created_at_ms")?)?,
        updated_at_ms: number(take("updated_at_ms")?)?,
        user_id: take("user_id").ok(),
    })
}

/// Keeps the expiry indexes in step with a commit of a session that the
/// plugin `served` served until now. The indexes live in other slots than
/// the session, so they follow the commit; the reaper checks the record
/// itself before it acts.
fn index_commit(conn: &mut Connection, commit: &Commit, served: &str) -> RedisResult<()> {
    let id = &commit.session;
    let moved = served != commit.plugin;
    let mut pipe = redis::pipe();
    if moved || commit.status != Status::Active {
        pipe.zrem(by_update(served), id)
            .zrem(by_creation(served), id);
    }
    if commit.status == Status::Active {
        pipe.zadd(by_update(&commit.plugin), id, commit.at_ms);
        if moved {
            // The session keeps its age under its new plugin.
            let created_at_ms: u64 = redis::cmd("HGET")
                .arg(session_key(id))
                .arg("created_at_ms")
                .query(conn)?;
            pipe.zadd(by_creation(&commit.plugin), id, created_at_ms);
        }
    }
    pipe.query(conn)
}

/// Runs `commit.lua` and reads its answer.
fn run_commit(
    conn: &mut Connection,
    script: &Script,
    id: &str,
    read: &str,
    fields: &[(&str, String)],
    messages: &[String],
) -> RedisResult<String> {
    let mut call = script.prepare_invoke();
    call.key(session_key(id))
        .key(history_key(id))
        .arg(read)
        .arg(fields.len() * 2);
    for (name, value) in fields {
        call.arg(*name).arg(value);
    }
    for message in messages {
        call.arg(message);
    }
    call.invoke(conn)
}

impl Store for RedisStore {
    fn create(&self, session: &SessionRecord, messages: &[Message]) -> Result<(), StoreError> {
        let fields = record_fields(session)?;
        let messages = encode_messages(messages)?;
        let answer = self.with(|conn| {
            let answer = run_commit(
                conn,
                &self.commit,
                &session.id,
                "create",
                &fields,
                &messages,
            )?;
            if answer == "ok" && session.status == Status::Active {
                redis::pipe()
                    .zadd(
                        by_update(&session.plugin),
                        &session.id,
                        session.updated_at_ms,
                    )
                    .zadd(
                        by_creation(&session.plugin),
                        &session.id,
                        session.created_at_ms,
                    )
                    .query::<()>(conn)?;
            }
            Ok(answer)
        })?;
        match answer.as_str() {
            "ok" => Ok(()),
            "exists" => Err(StoreError::Exists(session.id.clone())),
            other => Err(StoreError::Backend(format!(
                "unexpected answer `{other}` from Redis"
            ))),
        }
    }

    fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let fields: HashMap<String, String> =
            self.with(|conn| redis::cmd("HGETALL").arg(session_key(id)).query(conn))?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(fields).map(Some)
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let fields = vec![
            ("state", serde_json::to_string(&commit.state).map_err(json)?),
            ("turn", commit.turn.to_string()),
            ("plugin", commit.plugin.clone()),
            ("digest", commit.digest.clone()),
            ("state_version", commit.state_version.to_string()),
            ("status", commit.status.as_str().to_owned()),
            ("updated_at_ms", commit.at_ms.to_string()),
        ];
        let messages = encode_messages(&commit.messages)?;
        let read = commit.read_revision.to_string();
        let answer = self.with(|conn| {
            let answer = run_commit(
                conn,
                &self.commit,
                &commit.session,
                &read,
                &fields,
                &messages,
            )?;
            if let Some(served) = answer.strip_prefix("ok ") {
                index_commit(conn, commit, served)?;
            }
            Ok(answer)
        })?;
        match answer.split_once(' ') {
            Some(("ok", _)) => Ok(()),
            None if answer == "missing" => Err(StoreError::NotFound(commit.session.clone())),
            Some(("conflict", stored)) => Err(StoreError::Conflict {
                session: commit.session.clone(),
                read: commit.read_revision,
                stored: stored.parse().unwrap_or_default(),
            }),
            _ => Err(StoreError::Backend(format!(
                "unexpected answer `{answer}` from Redis"
            ))),
        }
    }

    fn record_execution(&self, execution: &Execution) -> Result<(), StoreError> {
        let text = serde_json::to_string(execution).map_err(json)?;
        self.with(|conn| {
            redis::cmd("RPUSH")
                .arg(EXECUTIONS)
                .arg(text)
                .query::<()>(conn)
        })
    }

    fn executions(&self) -> Result<Vec<Execution>, StoreError> {
        let texts: Vec<String> = self.with(|conn| {
            redis::cmd("LRANGE")
                .arg(EXECUTIONS)
                .arg(0)
                .arg(-1)
                .query(conn)
        })?;
        texts
            .iter()
            .map(|text| serde_json::from_str(text).map_err(json))
            .collect()
    }

    fn cache_get(&self, key: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        let stored: Option<String> =
            self.with(|conn| redis::cmd("GET").arg(cache_key(key)).query(conn))?;
        Ok(stored.and_then(|stored| {
            let (expires_at_ms, value) = stored.split_once(':')?;
            (expires_at_ms.parse::<u64>().ok()? > now_ms).then(|| value.to_owned())
        }))
    }

    fn cache_put(
        &self,
        key: &str,
        value: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        // Redis expires the entry after the same time on its own clock.
        let ttl_ms = expires_at_ms.saturating_sub(now_ms).max(1);
        self.with(|conn| {
            redis::pipe()
                .cmd("SET")
                .arg(cache_key(key))
                .arg(format!("{expires_at_ms}:{value}"))
                .arg("PX")
                .arg(ttl_ms)
                .zadd(CACHE_EXPIRY, key, expires_at_ms)
                .query::<()>(conn)
        })
    }

    fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, StoreError> {
        if last == 0 {
            return Ok(Vec::new());
        }
        let start = -i64::try_from(last).unwrap_or(i64::MAX);
        let texts: Vec<String> = self.with(|conn| {
            redis::cmd("LRANGE")
                .arg(history_key(id))
                .arg(start)
                .arg(-1)
                .query(conn)
        })?;
        texts
            .iter()
            .map(|text| serde_json::from_str(text).map_err(json))
            .collect()
    }

    fn expired_sessions(
        &self,
        plugin: &str,
        idle_since_ms: u64,
        created_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let page = isize::try_from(limit).unwrap_or(isize::MAX);
        let (mut idle, created): (Vec<String>, Vec<String>) = self.with(|conn| {
            redis::pipe()
                .zrangebyscore_limit(by_update(plugin), "-inf", idle_since_ms, 0, page)
                .zrangebyscore_limit(by_creation(plugin), "-inf", created_since_ms, 0, page)
                .query(conn)
        })?;
        for id in created {
            if !idle.contains(&id) {
                idle.push(id);
            }
        }
        idle.truncate(limit);
        Ok(idle)
    }

    fn live_sessions(&self, plugin: &str) -> Result<u64, StoreError> {
        // The idle index holds exactly the active sessions of the plugin.
        self.with(|conn| redis::cmd("ZCARD").arg(by_update(plugin)).query(conn))
    }

    fn publish_plugin(&self, digest: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        self.with(|conn| {
            redis::cmd("SET")
                .arg(plugin_key(digest))
                .arg(bytes)
                .arg("NX")
                .query::<Option<String>>(conn)
        })
        .map(|set| set.is_some())
    }

    fn published_plugin(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|conn| redis::cmd("GET").arg(plugin_key(digest)).query(conn))
    }

    fn set_active_plugin(&self, name: &str, digest: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            redis::cmd("HSET")
                .arg(ACTIVE_PLUGINS)
                .arg(name)
                .arg(digest)
                .query::<()>(conn)
        })
    }

    fn active_plugins(&self) -> Result<BTreeMap<String, String>, StoreError> {
        self.with(|conn| redis::cmd("HGETALL").arg(ACTIVE_PLUGINS).query(conn))
    }

    fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            let plugin: Option<String> = redis::cmd("HGET")
                .arg(session_key(id))
                .arg("plugin")
                .query(conn)?;
            let mut pipe = redis::pipe();
            pipe.del(&[session_key(id), history_key(id)]);
            if let Some(plugin) = plugin {
                pipe.zrem(by_update(&plugin), id)
                    .zrem(by_creation(&plugin), id);
            }
            pipe.query::<()>(conn)
        })
    }

    fn lease(&self, session: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let held: i64 = self.with(|conn| {
            self.lease
                .key(lease_key(session))
                .arg(holder)
                .arg(ttl_ms)
                .arg("take")
                .invoke(conn)
        })?;
        Ok(held == 1)
    }

    fn release(&self, session: &str, holder: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            self.lease
                .key(lease_key(session))
                .arg(holder)
                .arg(0)
                .arg("release")
                .invoke::<()>(conn)
        })
    }

    fn kv_get(
        &self,
        ns: &Namespace,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let owner = owner_key(&ns.owner);
        let member = member(ns, key);
        let (expires_at_ms, value): (Option<f64>, Option<Vec<u8>>) = self.with(|conn| {
            redis::pipe()
                .zscore(format!("{owner}:expiry"), &member)
                .get(format!("{owner}:e:{member}"))
                .query(conn)
        })?;
        let expired = expires_at_ms.is_some_and(|at| at <= now_ms as f64);
        Ok(value.filter(|_| !expired))
    }

    fn kv_put(
        &self,
        ns: &Namespace,
        key: &str,
        write: &KvWrite<'_>,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<bool, StoreError> {
        self.register_owner(&ns.owner)?;
        let member = member(ns, key);
        let (mode, expected) = match write.only_if {
            None => ("always", &[][..]),
            Some(None) => ("absent", &[][..]),
            Some(Some(expected)) => ("equals", expected),
        };
        let (expires_at, ttl) = match write.expires_at_ms {
            None => (String::new(), String::new()),
            Some(at) => (at.to_string(), at.saturating_sub(now_ms).max(1).to_string()),
        };
        let answer: String = self.with(|conn| {
            self.kv_call(ns, &member, "put", now_ms)
                .arg(write.value)
                .arg(entry_bytes(key, write.value))
                .arg(expires_at)
                .arg(ttl)
                .arg(quota.keys)
                .arg(quota.bytes)
                .arg(mode)
                .arg(expected)
                .invoke(conn)
        })?;
        match answer.as_str() {
            "1" => Ok(true),
            "0" => Ok(false),
            refusal => Err(quota_refusal(ns, quota, refusal)),
        }
    }

    fn kv_increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: i64,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<i64, StoreError> {
        self.register_owner(&ns.owner)?;
        let member = member(ns, key);
        let answer: Vec<u8> = self.with(|conn| {
            self.kv_call(ns, &member, "incr", now_ms)
                .arg(delta)
                .arg(key.len())
                .arg(quota.keys)
                .arg(quota.bytes)
                .invoke(conn)
        })?;
        if let Some(value) = answer.strip_prefix(b"=") {
            return std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| StoreError::Backend("Redis returned a malformed counter".into()));
        }
        if let Some(before) = answer.strip_prefix(b"invalid ") {
            // Redis refused the increment; name the reason as every backend does.
            increment_value(Some(before), delta)?;
            return Err(StoreError::Invalid(format!(
                "the value {:?} is not an integer in decimal text",
                String::from_utf8_lossy(before)
            )));
        }
        Err(quota_refusal(ns, quota, &String::from_utf8_lossy(&answer)))
    }

    fn kv_delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError> {
        let member = member(ns, key);
        self.with(|conn| self.kv_call(ns, &member, "delete", 0).invoke::<()>(conn))
    }

    fn kv_keys(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let scope = member(ns, "");
        let low = match after {
            Some(after) if after > prefix => format!("({scope}{after}"),
            _ => format!("[{scope}{prefix}"),
        };
        let high = format!("({scope}{prefix}\u{7f}");
        let members: Vec<String> = self.with(|conn| {
            self.kv_call(ns, "", "list", now_ms)
                .arg(low)
                .arg(high)
                .arg(limit)
                .invoke(conn)
        })?;
        Ok(members
            .into_iter()
            .filter_map(|member| member.strip_prefix(&scope).map(str::to_owned))
            .collect())
    }

    fn kv_usage(&self, owner: &str) -> Result<Usage, StoreError> {
        let (keys, bytes): (Option<u64>, Option<u64>) = self.with(|conn| {
            redis::cmd("HMGET")
                .arg(format!("{}:usage", owner_key(owner)))
                .arg("#keys")
                .arg("#bytes")
                .query(conn)
        })?;
        Ok(Usage {
            keys: keys.unwrap_or_default(),
            bytes: bytes.unwrap_or_default(),
        })
    }

    fn sweep(&self, now_ms: u64) -> Result<Swept, StoreError> {
        let owners: Vec<String> =
            self.with(|conn| redis::cmd("SMEMBERS").arg(OWNERS).query(conn))?;
        let mut swept = Swept::default();
        for owner in owners {
            let ns = Namespace {
                owner,
                scope: String::new(),
            };
            let reclaimed: String =
                self.with(|conn| self.kv_call(&ns, "", "sweep", now_ms).invoke(conn))?;
            swept.kv_entries += reclaimed.parse::<u64>().unwrap_or_default();
        }
        let expired: Vec<String> = self.with(|conn| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(CACHE_EXPIRY)
                .arg("-inf")
                .arg(now_ms)
                .query(conn)
        })?;
        if !expired.is_empty() {
            let keys: Vec<String> = expired.iter().map(|key| cache_key(key)).collect();
            self.with(|conn| {
                redis::pipe()
                    .del(&keys)
                    .zrem(CACHE_EXPIRY, &expired)
                    .query::<()>(conn)
            })?;
        }
        swept.cache_entries = expired.len() as u64;
        Ok(swept)
    }
}

/// The error for a write `kv.lua` refused as `quota keys N` or `quota bytes N`.
fn quota_refusal(ns: &Namespace, quota: &Quota, answer: &str) -> StoreError {
    let mut words = answer.split(' ');
    let (Some("quota"), Some(which), Some(count)) = (words.next(), words.next(), words.next())
    else {
        return StoreError::Backend(format!("unexpected answer `{answer}` from Redis"));
    };
    let count = count.parse().unwrap_or(u64::MAX);
    let usage = match which {
        "keys" => Usage {
            keys: count,
            bytes: 0,
        },
        _ => Usage {
            keys: 0,
            bytes: count,
        },
    };
    quota
        .check(&ns.owner, usage)
        .err()
        .unwrap_or_else(|| StoreError::Backend(format!("unexpected answer `{answer}` from Redis")))
}
