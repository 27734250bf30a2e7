//! The chain of registry calls a call of an export runs inside: how deep
//! it is, which plugins are above it, and the deadline they leave it
//! (`calls` answers the calls themselves).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::limits::Limits;

/// The registry calls a call of an export runs inside: the plugins of the
/// calls above it, outermost first, the deadline they leave it, the
/// record of the registry call it answers, and the caller's interrupt of
/// the turn at the top.
#[derive(Debug, Clone, Default)]
pub(crate) struct Within {
    above: Vec<String>,
    deadline: Option<Instant>,
    call: Option<String>,
    stop: Option<CancellationToken>,
}

impl Within {
    /// A call no registry call made: a caller's turn, an expiry, a migration.
    pub(crate) const TOP: Within = Within {
        above: Vec::new(),
        deadline: None,
        call: None,
        stop: None,
    };

    /// The chain of a caller's turn, which `stop` interrupts.
    pub(crate) fn stopped_by(stop: CancellationToken) -> Within {
        Within {
            stop: Some(stop),
            ..Within::TOP
        }
    }

    /// What stops the calls in this chain: the interrupt of the turn at
    /// the top (a token nothing cancels when it has none).
    pub(crate) fn stop(&self) -> CancellationToken {
        self.stop.clone().unwrap_or_default()
    }

    /// The id of the record of the registry call this call answers.
    pub(crate) fn call(&self) -> Option<&str> {
        self.call.as_deref()
    }

    /// The plugins of the calls above, outermost first.
    pub(crate) fn above(&self) -> &[String] {
        &self.above
    }

    /// `limits` with the deadline cut to what is left of this chain's, and
    /// the instant the call must end by.
    pub(crate) fn bound(&self, limits: &Arc<Limits>) -> (Arc<Limits>, Instant) {
        let now = Instant::now();
        let own = now + limits.deadline;
        match self.deadline {
            Some(deadline) if deadline < own => (
                Arc::new(Limits {
                    deadline: deadline.saturating_duration_since(now),
                    ..Limits::clone(limits)
                }),
                deadline,
            ),
            _ => (limits.clone(), own),
        }
    }

    /// The chain of a call that `plugin`, running inside this one until
    /// `deadline`, makes, recorded as `call`.
    pub(crate) fn below(&self, plugin: &str, deadline: Instant, call: &str) -> Within {
        let mut above = self.above.clone();
        above.push(plugin.to_owned());
        Within {
            above,
            deadline: Some(deadline),
            call: Some(call.to_owned()),
            stop: self.stop.clone(),
        }
    }
}
