//! Barge-in: a caller stops its session's running turn. Each turn a caller
//! asked for holds a stop while it runs, which every call of the turn
//! watches: the guest's code at every epoch tick, its outbound requests at
//! every wait. The turn then fails as interrupted and commits no state; a
//! message turn records the message and what the agent had said by then,
//! marked interrupted.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::session::Host;
use crate::session::error::{Cause, SessionError, session_error};

/// The stops of the turns this process is running, by session.
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<HashMap<String, CancellationToken>>);

/// A turn's place among the running ones, given up when it is dropped.
pub(crate) struct RunningTurn {
    host: Host,
    id: String,
    stop: CancellationToken,
}

impl RunningTurn {
    /// What stops the turn.
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.stop
    }
}

impl Drop for RunningTurn {
    fn drop(&mut self) {
        // Turns of a session run one at a time in a process, so the entry
        // is this turn's.
        self.host.running().remove(&self.id);
    }
}

impl Host {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.inner.running.0.lock().expect("running turns poisoned")
    }

    /// Notes that a turn of session `id` runs, until the guard is dropped.
    pub(crate) fn run(&self, id: &str) -> RunningTurn {
        let stop = CancellationToken::new();
        self.running().insert(id.to_owned(), stop.clone());
        RunningTurn {
            host: self.clone(),
            id: id.to_owned(),
            stop,
        }
    }

    /// Stops the turn of session `id` that is running in this process.
    /// Without one, fails with [`Cause::Idle`].
    pub fn interrupt(&self, id: &str) -> Result<(), SessionError> {
        match self.running().get(id) {
            Some(stop) => {
                stop.cancel();
                Ok(())
            }
            None => Err(session_error(id, None, None)(Cause::Idle)),
        }
    }
}
