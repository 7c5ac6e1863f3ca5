//! Time, as a value the rules read: the system clock in production, a hand-moved one in tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use jiff::civil::Date;
use jiff::{Span, Timestamp};

/// A source of "now" in epoch milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, epoch ms.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `ms`.
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(ms)))
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Epoch ms as RFC 3339 UTC, to the second (`2026-11-30T09:50:49Z`): for text a person reads
/// (alert messages, the restore command). A time beyond years -9999..=9999 is shown as its number.
pub fn rfc3339(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        // Precision 0 drops the fraction (the second the instant falls in).
        Ok(t) => format!("{t:.0}"),
        Err(_) => format!("{ms} ms since the epoch"),
    }
}

const DAY_MS: i64 = 86_400_000;
const EPOCH: Date = jiff::civil::date(1970, 1, 1);

/// Days since 1970-01-01 of `date`.
pub fn day_number(date: Date) -> i64 {
    // Any two dates are less than 7.3 million days apart: `since` cannot fail.
    date.since(EPOCH).map_or(0, |s| i64::from(s.get_days()))
}

/// The date `day` days after 1970-01-01, clamped to the dates jiff represents (years
/// -9999..=9999): the catalog's times come from peers.
pub fn date_of_day(day: i64) -> Date {
    let day = day.clamp(day_number(Date::MIN), day_number(Date::MAX));
    Span::new()
        .try_days(day)
        .and_then(|s| EPOCH.checked_add(s))
        .unwrap_or(EPOCH)
}

/// The UTC date epoch ms `ms` falls on (clamped like [`date_of_day`]).
pub fn utc_date(ms: i64) -> Date {
    date_of_day(ms.div_euclid(DAY_MS))
}

/// Epoch ms of the first instant (UTC) of `date`.
pub fn utc_midnight_ms(date: Date) -> i64 {
    day_number(date) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_splits_utc_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_489_600_999), "2025-11-30T08:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(i64::MAX),
            format!("{} ms since the epoch", i64::MAX)
        );
        assert_eq!(utc_date(-1), jiff::civil::date(1969, 12, 31));
        assert_eq!(utc_date(i64::MAX), Date::MAX);
        assert_eq!(utc_date(i64::MIN), Date::MIN);
        assert_eq!(utc_date(utc_midnight_ms(Date::MAX)), Date::MAX);
        assert_eq!(
            day_number(jiff::civil::date(2026, 3, 1)) - 1,
            day_number(jiff::civil::date(2026, 2, 28))
        );
        let leap = jiff::civil::date(2028, 2, 29);
        assert_eq!(utc_midnight_ms(leap), 1_835_395_200_000);
        assert_eq!(utc_date(utc_midnight_ms(leap)), leap);
    }
}
