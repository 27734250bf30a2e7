//! Tool-call records and cached tool results in memory (see
//! [`crate::store::tool_log`]).

use crate::store::error::BackendError;
use crate::store::tool_log::ToolLog;
use crate::store::types::Execution;

use super::MemoryStore;

impl ToolLog for MemoryStore {
    fn record_execution(&self, execution: &Execution) -> Result<(), BackendError> {
        self.executions
            .lock()
            .expect("memory store poisoned")
            .push(execution.clone());
        Ok(())
    }

    fn purge_executions(&self, before_ms: u64) -> Result<u64, BackendError> {
        let mut executions = self.executions.lock().expect("memory store poisoned");
        let before = executions.len();
        executions.retain(|execution| execution.at_ms > before_ms);
        Ok((before - executions.len()) as u64)
    }

    fn executions(&self) -> Result<Vec<Execution>, BackendError> {
        Ok(self
            .executions
            .lock()
            .expect("memory store poisoned")
            .clone())
    }

    fn cache_get(&self, key: &str, now_ms: u64) -> Result<Option<String>, BackendError> {
        let cache = self.cache.lock().expect("memory store poisoned");
        Ok(cache
            .get(key)
            .filter(|(_, expires_at_ms)| *expires_at_ms > now_ms)
            .map(|(value, _)| value.clone()))
    }

    fn cache_put(
        &self,
        key: &str,
        value: &str,
        expires_at_ms: u64,
        _now_ms: u64,
    ) -> Result<(), BackendError> {
        self.cache
            .lock()
            .expect("memory store poisoned")
            .insert(key.to_owned(), (value.to_owned(), expires_at_ms));
        Ok(())
    }

    fn cache_sweep(&self, now_ms: u64) -> Result<u64, BackendError> {
        let mut cache = self.cache.lock().expect("memory store poisoned");
        let before = cache.len();
        cache.retain(|_, (_, expires_at_ms)| *expires_at_ms > now_ms);
        Ok((before - cache.len()) as u64)
    }
}
