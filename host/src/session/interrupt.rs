//! Barge-in: a caller stops its session's running turn. Each turn a caller
//! asked for holds a stop while it runs, which every call of the turn
//! watches: the guest's code at every epoch tick, its outbound requests at
//! every wait. The turn then fails as interrupted and commits no state; a
//! message turn records the message and what the agent had said by then,
//! marked interrupted.
//!
//! An interrupt reaches the turn wherever it runs: in this process, or, on
//! a store several processes share, in the process holding the session's
//! lease, which the store tells ([`crate::store::Coordination::interrupt`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The stops of the turns this process is running, by session.
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<HashMap<String, CancellationToken>>);

impl Running {
    /// Notes that a turn of session `id` runs, until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Running>, id: &str) -> RunningTurn {
        let stop = CancellationToken::new();
        self.0
            .lock()
            .expect("running turns poisoned")
            .insert(id.to_owned(), stop.clone());
        RunningTurn {
            running: self.clone(),
            id: id.to_owned(),
            stop,
        }
    }

    /// Stops the turn of session `id` running in this process, if one is.
    pub(crate) fn stop(&self, id: &str) -> bool {
        match self.0.lock().expect("running turns poisoned").get(id) {
            Some(stop) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }
}

/// A turn's place among the running ones, given up when it is dropped.
pub(crate) struct RunningTurn {
    running: Arc<Running>,
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
        self.running
            .0
            .lock()
            .expect("running turns poisoned")
            .remove(&self.id);
    }
}
