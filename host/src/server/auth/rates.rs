//! How fast each principal may go: a token bucket per principal for the
//! sessions it starts and one for the turns it runs, refilled by the host's
//! clock.
//!
//! ```toml
//! [rates]
//! session_starts_per_minute = 60   # per principal; a burst of as many
//! turns_per_second = 20            # messages, tool calls and ends; a burst of as many
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
}

/// What a caller is about to do, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// Start a session.
    Start,
    /// Run a turn in a session.
    Turn,
}

impl Action {
    /// The bucket's size and the milliseconds in which it refills whole.
    fn rate(self, rates: &Rates) -> Option<(u32, u64)> {
        match self {
            Action::Start => rates.session_starts_per_minute.map(|per| (per, 60_000)),
            Action::Turn => rates.turns_per_second.map(|per| (per, 1_000)),
        }
    }

    fn describe(self, count: u32) -> String {
        match self {
            Action::Start => format!("{count} session starts a minute"),
            Action::Turn => format!("{count} turns a second"),
        }
    }
}

/// A bucket: tokens left when last looked at.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
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

    /// Takes a token for `action` by `owner` at `now_ms`, or says how long
    /// to wait for one.
    pub(crate) fn admit(&self, owner: &str, action: Action, now_ms: u64) -> Result<(), Slow> {
        let Some((size, refill_ms)) = action.rate(&self.rates) else {
            return Ok(());
        };
        let size = f64::from(size);
        let per_ms = size / refill_ms as f64;
        let mut buckets = self.buckets.lock().expect("rate buckets poisoned");
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|(action, _), bucket| match action.rate(&self.rates) {
                Some((size, refill_ms)) => {
                    let elapsed = now_ms.saturating_sub(bucket.at_ms) as f64;
                    let refilled = elapsed * f64::from(size) / (refill_ms as f64);
                    bucket.tokens + refilled < f64::from(size)
                }
                None => false,
            });
        }
        let bucket = buckets.entry((action, owner.to_owned())).or_insert(Bucket {
            tokens: size,
            at_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.at_ms) as f64;
        bucket.tokens = (bucket.tokens + elapsed * per_ms).min(size);
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
