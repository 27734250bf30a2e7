//! Sessions in process memory: for tests, benchmarks and throwaway runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

mod history;
mod log;
mod tool_log;

use crate::store::coordination::Coordination;
use crate::store::error::{BackendError, KvStoreError, SessionStoreError};
use crate::store::kv::KvStore;
use crate::store::plugins::PluginStore;
use crate::store::sessions::SessionStore;
use crate::store::timeline::{EventLog, LogEntry, LoggedEvent};
use crate::store::types::{
    Commit, Execution, KvWrite, Message, Namespace, Quota, SessionFilter, SessionPage,
    SessionRecord, Status, Usage, entry_bytes, increment_value, is_live,
};
use crate::store::users::{Erased, UserStore};

use self::history::History;
use self::log::Log;

/// A [`crate::store::Store`] that keeps sessions in a map in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, Stored>>,
    executions: Mutex<Vec<Execution>>,
    /// Cached results by key, with their expiry time.
    cache: Mutex<HashMap<String, (String, u64)>>,
    /// KV entries by owner.
    kv: Mutex<HashMap<String, Owner>>,
    plugins: Mutex<Plugins>,
}

impl MemoryStore {
    /// What `read` finds in session `id`'s log; nothing for a session that
    /// does not exist.
    fn read_log(&self, id: &str, read: impl FnOnce(&Log) -> Vec<LoggedEvent>) -> Vec<LoggedEvent> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        sessions
            .get(id)
            .map_or_else(Vec::new, |stored| read(&stored.log))
    }
}

/// One session: its record, its history and its log.
#[derive(Debug)]
struct Stored {
    record: SessionRecord,
    history: History,
    log: Log,
}

/// Published plugin versions and the active one of each plugin.
#[derive(Debug, Default)]
struct Plugins {
    published: HashMap<String, Vec<u8>>,
    active: BTreeMap<String, String>,
    config: BTreeMap<String, BTreeMap<String, String>>,
}

/// One KV owner's entries, by scope and key, and what they add up to, in
/// all and in each user's scope.
#[derive(Debug, Default)]
struct Owner {
    entries: BTreeMap<(String, String), Entry>,
    usage: Usage,
    users: HashMap<String, Usage>,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires_at_ms: Option<u64>,
}

impl Owner {
    fn live(&self, ns: &Namespace, key: &str, now_ms: u64) -> Option<&Entry> {
        self.entries
            .get(&(ns.scope.clone(), key.to_owned()))
            .filter(|entry| is_live(entry.expires_at_ms, now_ms))
    }

    /// Stores `entry`, if `owner` stays within `quota` (after reclaiming its
    /// expired entries, if it would not otherwise).
    fn store(
        &mut self,
        ns: &Namespace,
        key: &str,
        entry: Entry,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<(), KvStoreError> {
        let slot = (ns.scope.clone(), key.to_owned());
        // The owner's and the scope's usage after the write.
        let after = |owner: &Owner| {
            let old = owner.entries.get(&slot);
            let grow = |usage: Usage| Usage {
                keys: usage.keys + u64::from(old.is_none()),
                bytes: usage.bytes + entry_bytes(key, &entry.value)
                    - old.map_or(0, |old| entry_bytes(key, &old.value)),
            };
            let scope = owner.users.get(&ns.scope).copied().unwrap_or_default();
            (grow(owner.usage), grow(scope))
        };
        let check = |(usage, scope)| {
            quota
                .check(&ns.owner, usage)
                .and_then(|()| quota.check_user(ns, scope))
        };
        if check(after(self)).is_err() {
            self.sweep(now_ms);
        }
        let (usage, scope) = after(self);
        check((usage, scope))?;
        self.usage = usage;
        if ns.user().is_some() {
            self.users.insert(ns.scope.clone(), scope);
        }
        self.entries.insert(slot, entry);
        Ok(())
    }

    /// Takes the entry of `key` in `scope` out of the counts.
    fn uncount(
        usage: &mut Usage,
        users: &mut HashMap<String, Usage>,
        scope: &str,
        key: &str,
        entry: &Entry,
    ) {
        let bytes = entry_bytes(key, &entry.value);
        usage.keys -= 1;
        usage.bytes -= bytes;
        if let Some(user) = users.get_mut(scope) {
            user.keys -= 1;
            user.bytes -= bytes;
            if user.keys == 0 {
                users.remove(scope);
            }
        }
    }

    fn sweep(&mut self, now_ms: u64) -> u64 {
        let before = self.entries.len();
        let (usage, users) = (&mut self.usage, &mut self.users);
        self.entries.retain(|(scope, key), entry| {
            let live = is_live(entry.expires_at_ms, now_ms);
            if !live {
                Owner::uncount(usage, users, scope, key, entry);
            }
            live
        });
        (before - self.entries.len()) as u64
    }
}

impl SessionStore for MemoryStore {
    fn create(
        &self,
        session: &SessionRecord,
        messages: &[Message],
        event: &LogEntry,
    ) -> Result<(), SessionStoreError> {
        let mut sessions = self.sessions.lock().expect("memory store poisoned");
        if sessions.contains_key(&session.id) {
            return Err(SessionStoreError::Exists(session.id.clone()));
        }
        let mut log = Log::default();
        log.append(session.revision, event);
        let stored = Stored {
            record: SessionRecord {
                log_bytes: event.body.len() as u64,
                ..session.clone()
            },
            history: History::new(messages),
            log,
        };
        sessions.insert(session.id.clone(), stored);
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<SessionRecord>, SessionStoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        Ok(sessions.get(id).map(|stored| stored.record.clone()))
    }

    fn commit(&self, commit: &Commit) -> Result<(), SessionStoreError> {
        let mut sessions = self.sessions.lock().expect("memory store poisoned");
        let Stored {
            record,
            history,
            log,
        } = sessions
            .get_mut(&commit.session)
            .ok_or_else(|| SessionStoreError::NotFound(commit.session.clone()))?;
        if record.revision != commit.read_revision {
            return Err(SessionStoreError::Conflict {
                session: commit.session.clone(),
                read: commit.read_revision,
                stored: record.revision,
            });
        }
        record.state = commit.state.clone();
        record.revision += 1;
        record.turn = commit.turn;
        record.plugin = commit.plugin.clone();
        record.delegate = commit.delegate.clone();
        record.digest = commit.digest.clone();
        record.state_version = commit.state_version;
        record.status = commit.status;
        record.updated_at_ms = commit.at_ms;
        record.log_bytes += commit.event.body.len() as u64;
        log.append(record.revision, &commit.event);
        let dropped = usize::try_from(commit.dropped_messages).unwrap_or(usize::MAX);
        history.commit(dropped, &commit.messages, commit.history_cap);
        Ok(())
    }

    fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, SessionStoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        Ok(sessions
            .get(id)
            .map_or_else(Vec::new, |stored| stored.history.last(last)))
    }

    fn expired_sessions(
        &self,
        plugin: &str,
        idle_since_ms: u64,
        created_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, SessionStoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        Ok(sessions
            .values()
            .map(|stored| &stored.record)
            .filter(|record| {
                record.status == Status::Active
                    && record.plugin == plugin
                    && (record.updated_at_ms <= idle_since_ms
                        || record.created_at_ms <= created_since_ms)
            })
            .take(limit)
            .map(|record| record.id.clone())
            .collect())
    }

    fn live_sessions(&self, plugin: &str) -> Result<u64, SessionStoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        Ok(sessions
            .values()
            .map(|stored| &stored.record)
            .filter(|record| record.status == Status::Active && record.plugin == plugin)
            .count() as u64)
    }

    fn list_sessions(
        &self,
        filter: &SessionFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, SessionStoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        let mut admitted: Vec<&SessionRecord> = sessions
            .values()
            .map(|stored| &stored.record)
            .filter(|record| cursor.is_none_or(|cursor| record.id.as_str() > cursor))
            .filter(|record| filter.admits(record))
            .collect();
        admitted.sort_by(|a, b| a.id.cmp(&b.id));
        admitted.truncate(limit);
        Ok(SessionPage {
            next: (admitted.len() == limit)
                .then(|| admitted.last().map(|record| record.id.clone()))
                .flatten(),
            sessions: admitted.into_iter().cloned().collect(),
        })
    }

    fn sessions_of_user(&self, user: &str) -> Result<Vec<String>, SessionStoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        let mut ids: Vec<String> = sessions
            .values()
            .map(|stored| &stored.record)
            .filter(|record| record.user_id.as_deref() == Some(user))
            .map(|record| record.id.clone())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn live_sessions_of(&self, owner: &str) -> Result<u64, SessionStoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        Ok(sessions
            .values()
            .map(|stored| &stored.record)
            .filter(|record| {
                record.status == Status::Active && record.owner.as_deref() == Some(owner)
            })
            .count() as u64)
    }

    fn purge_ended(&self, ended_before_ms: u64) -> Result<u64, BackendError> {
        let mut sessions = self.sessions.lock().expect("memory store poisoned");
        let before = sessions.len();
        sessions.retain(|_, stored| {
            stored.record.status != Status::Ended || stored.record.updated_at_ms > ended_before_ms
        });
        Ok((before - sessions.len()) as u64)
    }

    fn delete_session(&self, id: &str) -> Result<(), SessionStoreError> {
        self.sessions
            .lock()
            .expect("memory store poisoned")
            .remove(id);
        Ok(())
    }
}

impl EventLog for MemoryStore {
    fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        Ok(self.read_log(id, |log| log.page(after, limit, max_bytes)))
    }

    fn line(&self, id: &str, turn: u64) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        Ok(self.read_log(id, |log| log.line(turn)))
    }

    fn line_before(
        &self,
        id: &str,
        seq: u64,
        turn: u64,
        count: u64,
    ) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        Ok(self.read_log(id, |log| log.line_before(seq, turn, count)))
    }
}

/// One process serves it: every default.
impl Coordination for MemoryStore {}

impl KvStore for MemoryStore {
    fn kv_get(
        &self,
        ns: &Namespace,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, KvStoreError> {
        let kv = self.kv.lock().expect("memory store poisoned");
        Ok(kv
            .get(&ns.owner)
            .and_then(|owner| owner.live(ns, key, now_ms))
            .map(|entry| entry.value.clone()))
    }

    fn kv_put(
        &self,
        ns: &Namespace,
        key: &str,
        write: &KvWrite<'_>,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<bool, KvStoreError> {
        let mut kv = self.kv.lock().expect("memory store poisoned");
        let owner = kv.entry(ns.owner.clone()).or_default();
        let live = owner.live(ns, key, now_ms);
        if let Some(expected) = write.only_if
            && live.map(|entry| &entry.value[..]) != expected
        {
            return Ok(false);
        }
        let entry = Entry {
            value: write.value.to_vec(),
            expires_at_ms: write
                .expires_at_ms
                .or_else(|| live.and_then(|entry| entry.expires_at_ms)),
        };
        owner.store(ns, key, entry, now_ms, quota)?;
        Ok(true)
    }

    fn kv_increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: i64,
        now_ms: u64,
        quota: &Quota,
    ) -> Result<i64, KvStoreError> {
        let mut kv = self.kv.lock().expect("memory store poisoned");
        let owner = kv.entry(ns.owner.clone()).or_default();
        let current = owner.live(ns, key, now_ms);
        let value = increment_value(current.map(|entry| &entry.value[..]), delta)?;
        let entry = Entry {
            value: value.to_string().into_bytes(),
            expires_at_ms: current.and_then(|entry| entry.expires_at_ms),
        };
        owner.store(ns, key, entry, now_ms, quota)?;
        Ok(value)
    }

    fn kv_delete(&self, ns: &Namespace, key: &str) -> Result<(), KvStoreError> {
        let mut kv = self.kv.lock().expect("memory store poisoned");
        if let Some(owner) = kv.get_mut(&ns.owner)
            && let Some(old) = owner.entries.remove(&(ns.scope.clone(), key.to_owned()))
        {
            Owner::uncount(&mut owner.usage, &mut owner.users, &ns.scope, key, &old);
        }
        Ok(())
    }

    fn kv_keys(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, KvStoreError> {
        let kv = self.kv.lock().expect("memory store poisoned");
        let Some(owner) = kv.get(&ns.owner) else {
            return Ok(Vec::new());
        };
        let from = after.filter(|after| *after > prefix).unwrap_or(prefix);
        let start = (ns.scope.clone(), from.to_owned());
        Ok(owner
            .entries
            .range(start..)
            .take_while(|((scope, key), _)| *scope == ns.scope && key.starts_with(prefix))
            .filter(|((_, key), entry)| {
                Some(key.as_str()) != after && is_live(entry.expires_at_ms, now_ms)
            })
            .take(limit)
            .map(|((_, key), _)| key.clone())
            .collect())
    }

    fn kv_owners(&self) -> Result<Vec<String>, KvStoreError> {
        let kv = self.kv.lock().expect("memory store poisoned");
        Ok(kv.keys().cloned().collect())
    }

    fn kv_usage(&self, owner: &str) -> Result<Usage, KvStoreError> {
        let kv = self.kv.lock().expect("memory store poisoned");
        Ok(kv.get(owner).map(|owner| owner.usage).unwrap_or_default())
    }

    fn kv_sweep(&self, now_ms: u64) -> Result<u64, BackendError> {
        Ok(self
            .kv
            .lock()
            .expect("memory store poisoned")
            .values_mut()
            .map(|owner| owner.sweep(now_ms))
            .sum())
    }
}

impl PluginStore for MemoryStore {
    fn publish_plugin(&self, digest: &str, bytes: &[u8]) -> Result<bool, BackendError> {
        let mut plugins = self.plugins.lock().expect("memory store poisoned");
        if plugins.published.contains_key(digest) {
            return Ok(false);
        }
        plugins.published.insert(digest.to_owned(), bytes.to_vec());
        Ok(true)
    }

    fn published_plugin(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let plugins = self.plugins.lock().expect("memory store poisoned");
        Ok(plugins.published.get(digest).cloned())
    }

    fn set_active_plugin(&self, name: &str, digest: &str) -> Result<(), BackendError> {
        let mut plugins = self.plugins.lock().expect("memory store poisoned");
        plugins.active.insert(name.to_owned(), digest.to_owned());
        Ok(())
    }

    fn active_plugins(&self) -> Result<BTreeMap<String, String>, BackendError> {
        Ok(self
            .plugins
            .lock()
            .expect("memory store poisoned")
            .active
            .clone())
    }

    fn set_plugin_config(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let mut plugins = self.plugins.lock().expect("memory store poisoned");
        if config.is_empty() {
            plugins.config.remove(name);
        } else {
            plugins.config.insert(name.to_owned(), config.clone());
        }
        Ok(())
    }

    fn plugin_configs(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, BackendError> {
        Ok(self
            .plugins
            .lock()
            .expect("memory store poisoned")
            .config
            .clone())
    }
}

impl UserStore for MemoryStore {
    fn erase_user(&self, user: &str) -> Result<Erased, BackendError> {
        // Both locks at once, sessions first (no other method takes two),
        // so nobody sees the user half erased.
        let mut sessions = self.sessions.lock().expect("memory store poisoned");
        let mut kv = self.kv.lock().expect("memory store poisoned");
        let before = sessions.len();
        sessions.retain(|_, stored| stored.record.user_id.as_deref() != Some(user));
        let mut erased = Erased {
            sessions: (before - sessions.len()) as u64,
            kv_entries: 0,
        };
        let scope = format!("user/{user}");
        for owner in kv.values_mut() {
            let (usage, users) = (&mut owner.usage, &mut owner.users);
            owner.entries.retain(|(entry_scope, key), entry| {
                let theirs = *entry_scope == scope;
                if theirs {
                    Owner::uncount(usage, users, entry_scope, key, entry);
                    erased.kv_entries += 1;
                }
                !theirs
            });
        }
        Ok(erased)
    }
}
