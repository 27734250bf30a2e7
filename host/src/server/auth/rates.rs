//! How fast and how far each principal may go: a token bucket per
//! principal for the sessions it starts, one for the turns it runs and one
//! for what it reads, refilled by the host's clock, and a bound on its
//! live sessions.
//!
//! ```toml
//! [rates]
//! session_starts_per_minute = 60   # per principal; a burst of as many
//! turns_per_second = 20            # messages, tool calls and ends; a burst of as many
//! reads_per_second = 50            # reads of a session, its history, events and state
//! live_sessions = 1000             # active sessions per principal at once
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

/// Most buckets kept before full ones are forgotten: a full bucket is the
/// same as none, and token users come and go.
const MAX_BUCKETS: usize = 100_000;

/// The `[rates]` settings of `agentbox serve`; what is left out is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// Sessions one principal may start per minute.
    pub session_starts_per_minute: Option<u32>,
    /// Turns (messages, tool calls, ends) one principal may run per second.
    pub turns_per_second: Option<u32>,
    /// Reads of a session (itself, its history, a page of its events, its
    /// state as of a turn, a follow opened) one principal may make per
    /// second.
    pub reads_per_second: Option<u32>,
    /// Sessions one principal may have active at once, of all plugins.
    pub live_sessions: Option<u64>,
}

/// What a caller is about to do, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// Start a session.
    Start,
    /// Run a turn in a session.
    Turn,
    /// Read what a session holds.
    Read,
}

impl Action {
    /// The bucket's size and the tokens it gains per millisecond.
    fn rate(self, rates: &Rates) -> Option<(f64, f64)> {
        let (size, refill_ms) = match self {
            Action::Start => (rates.session_starts_per_minute?, 60_000.0),
            Action::Turn => (rates.turns_per_second?, 1_000.0),
            Action::Read => (rates.reads_per_second?, 1_000.0),
        };
        Some((f64::from(size), f64::from(size) / refill_ms))
    }

    fn describe(self, count: u32) -> String {
        match self {
            Action::Start => format!("{count} session starts a minute"),
            Action::Turn => format!("{count} turns a second"),
            Action::Read => format!("{count} reads a second"),
        }
    }
}

/// A bucket: tokens left when last looked at.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    /// Its tokens at `now_ms`, refilled at `per_ms` up to `size`.
    fn level(&self, now_ms: u64, size: f64, per_ms: f64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        (self.tokens + elapsed * per_ms).min(size)
    }
}

/// Why a caller must wait: what it went over, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slow {
    /// The rate it went over, in words.
    pub(crate) rate: String,
    /// Milliseconds until it may go on.
    pub(crate) retry_after_ms: u64,
}

/// The buckets of every principal that has acted lately.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    rates: Rates,
    buckets: Mutex<HashMap<(Action, String), Bucket>>,
}

impl Limiter {
    pub(crate) fn new(rates: Rates) -> Limiter {
        Limiter {
            rates,
            buckets: Mutex::default(),
        }
    }

    /// The most sessions one principal may have active at once.
    pub(crate) fn live_sessions(&self) -> Option<u64> {
        self.rates.live_sessions
    }

    /// Takes a token for `action` by `owner` at `now_ms`, or says how long
    /// to wait for one.
    pub(crate) fn admit(&self, owner: &str, action: Action, now_ms: u64) -> Result<(), Slow> {
        let Some((size, per_ms)) = action.rate(&self.rates) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().expect("rate buckets poisoned");
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|(action, _), bucket| {
                action
                    .rate(&self.rates)
                    .is_some_and(|(size, per_ms)| bucket.level(now_ms, size, per_ms) < size)
            });
        }
        let bucket = buckets.entry((action, owner.to_owned())).or_insert(Bucket {
            tokens: size,
            at_ms: now_ms,
        });
        bucket.tokens = bucket.level(now_ms, size, per_ms);
        bucket.at_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Slow {
            rate: action.describe(size as u32),
            retry_after_ms: ((1.0 - bucket.tokens) / per_ms).ceil() as u64,
        })
    }
}
