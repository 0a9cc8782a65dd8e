//! Time, passed in wherever it decides something: whether a writ has expired, whether a
//! task is still active, when an audit record was sealed. Code that decides takes a
//! [`Clock`] instead of reading the system time, so tests move time rather than sleep.
//!
//! [`SystemClock`] is the one place here that reads the machine's clock; [`ManualClock`]
//! is set and advanced by hand.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time, in Unix time (UTC).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Whole seconds since the Unix epoch, as JWTs count them.
    fn now(&self) -> i64 {
        self.now_ms().div_euclid(1_000)
    }
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that stands still until it is set or advanced: for tests.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    /// A clock showing `ms` milliseconds since the Unix epoch.
    pub fn at_ms(ms: i64) -> Self {
        Self {
            ms: AtomicI64::new(ms),
        }
    }

    /// A clock showing the machine's time now, from which it no longer moves by itself.
    pub fn starting_now() -> Self {
        Self::at_ms(SystemClock.now_ms())
    }

    /// Shows `ms` milliseconds since the Unix epoch from now on (also backwards).
    pub fn set_ms(&self, ms: i64) {
        self.ms.store(ms, Ordering::Release);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        // `fetch_update` with a closure that always answers `Some` cannot fail.
        let _ = self
            .ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ms| {
                Some(ms.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_whole_seconds_of_the_milliseconds() {
        let clock = ManualClock::at_ms(1_700_000_000_999);
        assert_eq!(clock.now(), 1_700_000_000);
        clock.advance(Duration::from_millis(1));
        assert_eq!(clock.now(), 1_700_000_001);
        // Before the epoch, a second still starts at its first millisecond.
        clock.set_ms(-1);
        assert_eq!(clock.now(), -1);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_ms(5_000);
        assert_eq!(clock.now_ms(), 5_000);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now_ms(), 95_000);
        clock.set_ms(1_000);
        assert_eq!(clock.now(), 1);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800);
    }
}
