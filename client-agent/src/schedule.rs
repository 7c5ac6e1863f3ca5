//! When each instance runs under `run`: every `interval` after its last run's start, plus
//! jitter. After downtime (the last run is more than one interval ago, or there is none) it
//! runs once at once, not once per missed slot. Time is passed in, so tests move it.

use std::time::{Duration, SystemTime};

/// The next start of an instance whose last run started at `last_start`.
pub fn next_run(
    last_start: Option<SystemTime>,
    interval: Duration,
    now: SystemTime,
    jitter: Duration,
) -> SystemTime {
    let due = match last_start {
        Some(last) => last.checked_add(interval).unwrap_or(now),
        None => now,
    };
    // Missed slots collapse into one run now; a clock that went backwards (last in the
    // future) does not hold the instance off for more than one interval.
    let due = if due <= now {
        now
    } else {
        due.min(now + interval)
    };
    due + jitter
}

/// A jitter sample in `[0, max]`.
pub fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn runs_every_interval_and_once_after_downtime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(next_run(None, H, t0, Duration::ZERO), t0);
        assert_eq!(
            next_run(Some(t0), H, t0 + Duration::from_secs(10), Duration::ZERO),
            t0 + H
        );
        // Down for a day: one run now, then hourly from it.
        let later = t0 + 24 * H;
        let n = next_run(Some(t0), H, later, Duration::ZERO);
        assert_eq!(n, later);
        assert_eq!(
            next_run(Some(n), H, n + Duration::from_secs(1), Duration::ZERO),
            n + H
        );
        // Jitter is added.
        assert_eq!(
            next_run(Some(t0), H, t0, Duration::from_secs(5)),
            t0 + H + Duration::from_secs(5)
        );
        // Clock stepped back a week: at most one interval away.
        assert_eq!(next_run(Some(later), H, t0, Duration::ZERO), t0 + H);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(2)) <= Duration::from_secs(2));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
