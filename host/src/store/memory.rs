//! Sessions in process memory: for tests, benchmarks and throwaway runs.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Commit, Execution, Message, SessionRecord, Store, StoreError};

/// A [`Store`] that keeps sessions in a map in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, (SessionRecord, Vec<Message>)>>,
    executions: Mutex<Vec<Execution>>,
    /// Cached results by key, with their expiry time.
    cache: Mutex<HashMap<String, (String, u64)>>,
}

impl Store for MemoryStore {
    fn create(&self, session: &SessionRecord, messages: &[Message]) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().expect("memory store poisoned");
        if sessions.contains_key(&session.id) {
            return Err(StoreError::Exists(session.id.clone()));
        }
        sessions.insert(session.id.clone(), (session.clone(), messages.to_vec()));
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        Ok(sessions.get(id).map(|(record, _)| record.clone()))
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().expect("memory store poisoned");
        let (record, history) = sessions
            .get_mut(&commit.session)
            .ok_or_else(|| StoreError::NotFound(commit.session.clone()))?;
        if record.revision != commit.read_revision {
            return Err(StoreError::Conflict {
                session: commit.session.clone(),
                read: commit.read_revision,
                stored: record.revision,
            });
        }
        record.state = commit.state.clone();
        record.revision += 1;
        record.turn = commit.turn;
        record.plugin = commit.plugin.clone();
        record.digest = commit.digest.clone();
        record.state_version = commit.state_version;
        record.status = commit.status;
        record.updated_at_ms = commit.at_ms;
        history.extend_from_slice(&commit.messages);
        Ok(())
    }

    fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, StoreError> {
        let sessions = self.sessions.lock().expect("memory store poisoned");
        Ok(sessions.get(id).map_or_else(Vec::new, |(_, history)| {
            history[history.len().saturating_sub(last)..].to_vec()
        }))
    }

    fn record_execution(&self, execution: &Execution) -> Result<(), StoreError> {
        self.executions
            .lock()
            .expect("memory store poisoned")
            .push(execution.clone());
        Ok(())
    }

    fn executions(&self) -> Result<Vec<Execution>, StoreError> {
        Ok(self
            .executions
            .lock()
            .expect("memory store poisoned")
            .clone())
    }

    fn cache_get(&self, key: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        let mut cache = self.cache.lock().expect("memory store poisoned");
        match cache.get(key) {
            Some((value, expires_at_ms)) if *expires_at_ms > now_ms => Ok(Some(value.clone())),
            Some(_) => {
                cache.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn cache_put(&self, key: &str, value: &str, expires_at_ms: u64) -> Result<(), StoreError> {
        self.cache
            .lock()
            .expect("memory store poisoned")
            .insert(key.to_owned(), (value.to_owned(), expires_at_ms));
        Ok(())
    }
}
