//! One turn of a session at a time: a lock per session in this process, a
//! lease in the store across processes, and a bound on each plugin's turns
//! at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::session::error::{Cause, SessionError, session_error};
use crate::store::Coordination;

/// Runs `turn` holding the store's lease on session `id`, so that no
/// other host process runs a turn of it meanwhile. Waits for another
/// holder's lease at most as long as a lease lasts.
pub(crate) fn leased<R>(
    store: &dyn Coordination,
    holder: &str,
    ttl: Duration,
    id: &str,
    turn: impl FnOnce(&str) -> Result<R, SessionError>,
) -> Result<R, SessionError> {
    let fail = session_error(id, None, None);
    let waited = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !store
        .lease(id, holder, ttl)
        .map_err(|err| fail(err.into()))?
    {
        if waited.elapsed() > ttl {
            return Err(fail(Cause::Busy(ttl)));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    let result = turn(id);
    if let Err(err) = store.release(id, holder) {
        // The lease runs out by itself; another host waits until then.
        tracing::warn!(session = id, error = %err, "cannot release the session lease");
    }
    result
}

/// The turns of each plugin with a limit of turns at once, as a semaphore
/// per plugin; one of its permits is a turn's [`PluginSlot`].
#[derive(Default)]
pub(crate) struct PluginTurns {
    running: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl PluginTurns {
    /// A place for one more turn of `plugin`, if fewer than `most` run.
    pub(crate) fn enter(&self, plugin: &str, most: usize) -> Option<OwnedSemaphorePermit> {
        let mut running = self.running.lock().expect("plugin turns poisoned");
        let semaphore = match running.get(plugin) {
            Some(semaphore) => semaphore.clone(),
            None => running
                .entry(plugin.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(most)))
                .clone(),
        };
        drop(running);
        semaphore.try_acquire_owned().ok()
    }
}

/// A turn's place among its plugin's turns running at once.
pub(crate) type PluginSlot = Option<OwnedSemaphorePermit>;

/// One lock per session with a turn running or waiting, so that turns of a
/// session run one at a time in this process.
#[derive(Default)]
pub(crate) struct SessionLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl SessionLocks {
    pub(crate) fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("session locks poisoned");
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        // Forget the locks of sessions without turns, now and then, so the
        // map stays as large as the number of busy sessions.
        if locks.len() >= 1024 && locks.len().is_power_of_two() {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id.to_owned(), Arc::downgrade(&lock));
        lock
    }
}
