//! The host's clock: wall time in production, a clock tests move by hand.
//!
//! Everything time-dependent in the host (timestamps, time-to-live, cache
//! expiry) reads this clock, and plugins read it through `wasi:clocks`, so
//! tests move time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// A source of the current time in milliseconds since the Unix epoch.
#[derive(Debug, Clone)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands still at `start_ms` until [`Clock::advance`] moves it.
    pub fn manual(start_ms: u64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(start_ms))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| {
                    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                }),
        }
    }

    /// Moves a manual clock forward by `by`.
    ///
    /// # Panics
    /// On the system clock, which only time moves.
    pub fn advance(&self, by: Duration) {
        let now = self
            .manual
            .as_ref()
            .expect("only a manual clock can be advanced");
        now.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Serves this clock to a guest as `wasi:clocks`. Under the system
    /// clock WASI keeps its own clocks, which tell the same time to the
    /// nanosecond; a manual clock is served as both the wall clock and the
    /// monotonic clock, so a plugin's time moves only when a test moves it.
    pub(crate) fn serve_to(&self, wasi: &mut WasiCtxBuilder) {
        if let Some(now) = &self.manual {
            wasi.wall_clock(Manual(now.clone()))
                .monotonic_clock(Manual(now.clone()));
        }
    }
}

/// A manual clock as a guest reads it.
struct Manual(Arc<AtomicU64>);

impl HostWallClock for Manual {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

impl HostMonotonicClock for Manual {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    /// Nanoseconds: the manual time's milliseconds, which only grow.
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst).saturating_mul(1_000_000)
    }
}

/// Microseconds of monotonic time since `start`, for how long something took.
pub(crate) fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_reads_a_manual_clock_as_both_of_its_clocks() {
        let clock = Clock::manual(1_800_000_000_000);
        let manual = Manual(clock.manual.clone().unwrap());
        let before = HostMonotonicClock::now(&manual);
        assert_eq!(
            HostWallClock::now(&manual),
            Duration::from_millis(1_800_000_000_000)
        );
        clock.advance(Duration::from_secs(90));
        assert_eq!(
            HostWallClock::now(&manual),
            Duration::from_millis(1_800_000_090_000)
        );
        assert_eq!(HostMonotonicClock::now(&manual) - before, 90_000_000_000);
    }
}
