//! The one retry backoff of ubackup's daemons: a delay that starts at a floor, doubles after
//! every failure up to a cap, and goes back to the floor on success ([`Backoff`]), with
//! optional "equal jitter" (each delay scaled by a random factor in [0.5, 1.0], so that many
//! workers that failed together do not retry in step).
//!
//! Every reconnect and retry loop of the puller, the indexer, the agent and the Redis
//! connection uses it, each with its own floor and cap; the puller's `RetryPolicy` asks it
//! for the delay of a given attempt ([`Backoff::delay_for`]).
//!
//! It deliberately does not sleep, count attempts against a limit or decide what is
//! retryable: the loops keep those (a loop gives up after 20 tries, another at shutdown, a
//! third never), and it holds no clock.
//!
//! Why not the `backon` crate: its backoffs are iterators that end after `max_times` and are
//! rebuilt to start over, and its jitter adds up to the floor on top of the delay. Our loops
//! run forever, reset on every success, sometimes ask whether the cap is reached (a publish
//! at shutdown gives up then), and the puller's retries want the delay of attempt *n*
//! directly. That is the forty lines below; a dependency would not make them shorter.
//!
//! ```
//! use std::time::Duration;
//! use ubackup_backoff::Backoff;
//!
//! let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//! assert_eq!(b.next_delay(), Duration::from_millis(200));
//! b.reset(); // after a success
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//! ```

use std::time::Duration;

/// Doubling delays between `min` and `max`: the state of one retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    jitter: bool,
}

impl Backoff {
    /// Starts at `min` and doubles up to `max`. The cap wins: with `max` below `min`, every
    /// delay is `max`.
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        // `Duration::min` is not const.
        let min = if min.as_nanos() > max.as_nanos() {
            max
        } else {
            min
        };
        Backoff {
            min,
            max,
            current: min,
            jitter: false,
        }
    }

    /// Scales each delay [`next_delay`](Self::next_delay) returns by a random factor in
    /// [0.5, 1.0] (see [`equal_jitter`]).
    pub fn with_jitter(mut self) -> Backoff {
        self.jitter = true;
        self
    }

    /// The delay to wait now, and the next one doubled (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        if self.jitter {
            equal_jitter(d, rand::random::<f64>())
        } else {
            d
        }
    }

    /// The delay [`next_delay`](Self::next_delay) returns next (before jitter).
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Whether the delay has reached its cap.
    pub fn is_at_max(&self) -> bool {
        self.current >= self.max
    }

    /// Back to the floor (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The delay after `failures` doublings, without jitter and without touching the state:
    /// `min · 2^failures`, capped (attempt 0 is `min`). Never overflows, whatever the count.
    pub fn delay_for(&self, failures: u32) -> Duration {
        // Doubling stops at the cap, so this runs at most ~95 times (a Duration has 94 bits)
        // even for u32::MAX failures.
        let mut d = self.min;
        for _ in 0..failures {
            if d >= self.max || d.is_zero() {
                break;
            }
            d = d.saturating_mul(2);
        }
        d.min(self.max)
    }
}

/// `delay` scaled by `0.5 + 0.5·unit` (`unit` clamped to [0, 1]; a NaN counts as 1): a
/// random `unit` spreads retries over [delay/2, delay] and never beyond the cap.
pub fn equal_jitter(delay: Duration, unit: f64) -> Duration {
    let unit = if unit.is_nan() {
        1.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    delay.mul_f64(0.5 + 0.5 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_the_floor_up_to_the_cap() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert!(b.is_at_max());
        assert_eq!(b.current(), 1000 * MS);
    }

    #[test]
    fn reset_goes_back_to_the_floor() {
        let mut b = Backoff::new(200 * MS, 5000 * MS);
        b.next_delay();
        b.next_delay();
        assert_eq!(b.current(), 800 * MS);
        assert!(!b.is_at_max());
        b.reset();
        assert_eq!(b.next_delay(), 200 * MS);
        assert_eq!(b.next_delay(), 400 * MS);
    }

    #[test]
    fn a_cap_below_the_floor_wins() {
        let mut b = Backoff::new(50 * MS, 10 * MS);
        assert_eq!(b.next_delay(), 10 * MS);
        assert_eq!(b.next_delay(), 10 * MS);
        assert_eq!(b.delay_for(3), 10 * MS);
        assert!(b.is_at_max());
    }

    #[test]
    fn delay_for_matches_the_doubling_sequence() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut s = b;
        for n in 0..12 {
            assert_eq!(b.delay_for(n), s.next_delay(), "attempt {n}");
        }
        assert_eq!(b.delay_for(0), Duration::from_secs(1));
        assert_eq!(b.delay_for(5), Duration::from_secs(32));
        assert_eq!(b.delay_for(6), Duration::from_secs(60));
    }

    #[test]
    fn huge_counts_and_huge_bounds_never_overflow() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        for n in [31, 32, 63, 64, 1000, u32::MAX] {
            assert_eq!(b.delay_for(n), Duration::from_secs(10), "attempt {n}");
        }
        // A tiny floor under a large cap keeps doubling past 2^31 attempts' worth.
        let tiny = Backoff::new(Duration::from_nanos(1), Duration::from_secs(60));
        assert_eq!(tiny.delay_for(40), Duration::from_secs(60));
        assert_eq!(tiny.delay_for(u32::MAX), Duration::from_secs(60));
        // A cap at Duration::MAX: the doubling saturates instead of panicking.
        let mut b = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.current(), Duration::MAX);
        assert_eq!(b.delay_for(u32::MAX), Duration::MAX);
        // A zero floor stays zero rather than looping on nothing.
        let mut z = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(z.next_delay(), Duration::ZERO);
        assert_eq!(z.delay_for(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_half_and_whole_delay() {
        let d = Duration::from_secs(8);
        assert_eq!(equal_jitter(d, 0.0), Duration::from_secs(4));
        assert_eq!(equal_jitter(d, 1.0), d);
        assert_eq!(equal_jitter(d, 0.5), Duration::from_secs(6));
        assert_eq!(equal_jitter(d, -3.0), Duration::from_secs(4));
        assert_eq!(equal_jitter(d, 7.0), d);
        assert_eq!(equal_jitter(d, f64::NAN), d);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(16)).with_jitter();
        for _ in 0..200 {
            let before = b.current();
            let got = b.next_delay();
            assert!(
                got >= before / 2 && got <= before,
                "{got:?} outside [{before:?}/2, {before:?}]"
            );
        }
        assert!(b.is_at_max());
    }
}
