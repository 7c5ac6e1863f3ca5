//! Bandwidth limits: rsync's rate syntax ([`Rate`]) and, with the `tokio`
//! feature, a shared token bucket ([`BandwidthLimiter`], built on governor)
//! that meters the bytes a pull reads from its socket.
//!
//! Stock rsync only throttles writes, so a pulling client cannot slow itself
//! down; forwarding `--bwlimit` makes the daemon's sender pace itself, but a
//! node with many pulls still needs one cap over all of them. Metering our
//! reads does that: a pull that is over budget stops reading, TCP flow
//! control stops the sender, and bursts are bounded by the bucket plus the
//! kernel's receive buffer.

use std::fmt;
use std::str::FromStr;

/// A transfer rate in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

/// A rate string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {input:?}: {reason}")]
pub struct RateError {
    /// The text given.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl Rate {
    /// A rate of `n` bytes per second (at least 1).
    pub fn bytes_per_sec(n: u64) -> Rate {
        Rate(n.max(1))
    }
    /// Bytes per second.
    pub fn get(self) -> u64 {
        self.0
    }
    /// The value for rsync's `--bwlimit`, in KiB/s (rounded up, at least 1).
    pub fn as_kib(self) -> u64 {
        self.0.div_ceil(1024).max(1)
    }
    /// The tighter of two optional rates (`None` = unlimited).
    pub fn tighter(a: Option<Rate>, b: Option<Rate>) -> Option<Rate> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Parses rsync's `--bwlimit` syntax: a number, optionally fractional,
    /// in KiB/s by default; suffixes `K`, `M`, `G` (also `KiB`, `MiB`, `GiB`)
    /// are powers of 1024 and `KB`, `MB`, `GB` powers of 1000; `B` means
    /// bytes. Case is ignored. `0` means no limit (`Ok(None)`), as in rsync.
    pub fn parse_bwlimit(input: &str) -> Result<Option<Rate>, RateError> {
        let err = |reason| RateError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() || num.chars().filter(|&c| c == '.').count() > 1 {
            return Err(err("expected a number"));
        }
        let value: f64 = num.parse().map_err(|_| err("expected a number"))?;
        let mult: f64 = match unit.to_ascii_lowercase().as_str() {
            "" | "k" | "kib" => 1024.0,
            "b" => 1.0,
            "m" | "mib" => 1024.0 * 1024.0,
            "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "kb" => 1000.0,
            "mb" => 1e6,
            "gb" => 1e9,
            _ => return Err(err("unknown unit (use K, M, G, KB, MB, GB or B)")),
        };
        let bytes = value * mult;
        if !bytes.is_finite() || bytes > 1e15 {
            return Err(err("too large"));
        }
        if bytes < 0.5 {
            return Ok(None);
        }
        Ok(Some(Rate(bytes.round() as u64)))
    }
}

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Rate, RateError> {
        Rate::parse_bwlimit(s)?.ok_or(RateError {
            input: s.to_string(),
            reason: "a rate of 0 means no limit",
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if b >= 1024.0 * 1024.0 {
            write!(f, "{:.1} MiB/s", b / (1024.0 * 1024.0))
        } else {
            write!(f, "{:.1} KiB/s", b / 1024.0)
        }
    }
}

#[cfg(feature = "tokio")]
pub use self::bucket::BandwidthLimiter;

#[cfg(feature = "tokio")]
mod bucket {
    use std::num::NonZeroU32;
    use std::sync::{Arc, RwLock};

    use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

    use super::Rate;

    /// The smallest bucket: small enough to keep slow links smooth.
    const MIN_BURST: u64 = 16 * 1024;
    /// The largest bucket (and largest read while limited).
    const MAX_BURST: u64 = 1 << 20;

    #[derive(Debug)]
    struct Bucket {
        rate: Rate,
        burst: u32,
        limiter: DefaultDirectRateLimiter,
    }

    /// A token bucket over bytes read, shared by any number of pulls (clone
    /// it). The rate can be changed while pulls run ([`set_rate`]), which is
    /// how a config reload takes effect.
    ///
    /// The bucket holds at most a tenth of a second of traffic (between
    /// 16 KiB and 1 MiB), so a burst after an idle period stays small; it
    /// starts empty.
    ///
    /// [`set_rate`]: BandwidthLimiter::set_rate
    #[derive(Debug, Clone, Default)]
    pub struct BandwidthLimiter {
        bucket: Arc<RwLock<Option<Arc<Bucket>>>>,
    }

    impl BandwidthLimiter {
        /// A limiter at `rate`; `None` is unlimited.
        pub fn new(rate: Option<Rate>) -> Self {
            let l = BandwidthLimiter::default();
            l.set_rate(rate);
            l
        }

        /// Changes the rate for every pull sharing this limiter.
        pub fn set_rate(&self, rate: Option<Rate>) {
            let bucket = rate.map(|rate| {
                let per_sec = rate.get().min(u64::from(u32::MAX)) as u32;
                let burst = (rate.get() / 10).clamp(MIN_BURST, MAX_BURST) as u32;
                let nz = |v: u32| NonZeroU32::new(v.max(1)).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::per_second(nz(per_sec)).allow_burst(nz(burst));
                let limiter = RateLimiter::direct(quota);
                // Start empty: a new (or reloaded) limit does not begin with a
                // free bucket's worth of traffic.
                let _ = limiter.check_n(nz(burst));
                Arc::new(Bucket {
                    rate,
                    burst,
                    limiter,
                })
            });
            if let Ok(mut b) = self.bucket.write() {
                *b = bucket;
            }
        }

        /// The current rate (`None`: unlimited).
        pub fn rate(&self) -> Option<Rate> {
            self.current().map(|b| b.rate)
        }

        /// The largest read a pull should make before calling
        /// [`consume`](BandwidthLimiter::consume) (the bucket size), or
        /// `None` when unlimited.
        pub fn max_read(&self) -> Option<usize> {
            self.current().map(|b| b.burst as usize)
        }

        fn current(&self) -> Option<Arc<Bucket>> {
            self.bucket.read().ok().and_then(|b| b.clone())
        }

        /// Waits until `n` more bytes fit the budget, then takes them.
        pub async fn consume(&self, n: usize) {
            let mut left = n as u64;
            while left > 0 {
                // Re-read the bucket each round: a reload applies at once.
                let Some(bucket) = self.current() else {
                    return;
                };
                let take = left.min(u64::from(bucket.burst)) as u32;
                let Some(nz) = NonZeroU32::new(take) else {
                    return;
                };
                if bucket.limiter.until_n_ready(nz).await.is_err() {
                    // Cannot happen: take <= burst. Do not spin.
                    return;
                }
                left -= u64::from(take);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rsync_rate_syntax() {
        let p = |s| Rate::parse_bwlimit(s).unwrap().map(Rate::get);
        assert_eq!(p("100"), Some(100 * 1024));
        assert_eq!(p("1.5m"), Some(1024 * 1024 * 3 / 2));
        assert_eq!(p("10M"), Some(10 << 20));
        assert_eq!(p("10MB"), Some(10_000_000));
        assert_eq!(p("2G"), Some(2 << 30));
        assert_eq!(p("1gb"), Some(1_000_000_000));
        assert_eq!(p("512KiB"), Some(512 * 1024));
        assert_eq!(p("500KB"), Some(500_000));
        assert_eq!(p("4096B"), Some(4096));
        assert_eq!(p("0"), None);
        for bad in ["", "fast", "1.2.3", "10X", "-5", "1e9"] {
            assert!(Rate::parse_bwlimit(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Rate::bytes_per_sec(1500).as_kib(), 2);
        assert_eq!(
            Rate::tighter(Some(Rate::bytes_per_sec(5)), Some(Rate::bytes_per_sec(3))),
            Some(Rate::bytes_per_sec(3))
        );
        assert_eq!(
            Rate::tighter(None, Some(Rate::bytes_per_sec(3))),
            Some(Rate::bytes_per_sec(3))
        );
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn limiter_paces_reads_and_can_be_reloaded() {
        let l = BandwidthLimiter::new(Some(Rate::bytes_per_sec(1 << 20)));
        assert_eq!(l.max_read(), Some(104_857));
        // 512 KiB at 1 MiB/s with a ~100 KiB bucket cannot take less than
        // (512 KiB - bucket) / rate. Only a lower bound: a slow machine is fine.
        let start = std::time::Instant::now();
        l.consume(512 * 1024).await;
        let took = start.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(380),
            "took {took:?}"
        );
        // Unlimited never waits; a reload to unlimited applies at once.
        let unlimited = BandwidthLimiter::new(None);
        assert_eq!(unlimited.max_read(), None);
        let start = std::time::Instant::now();
        unlimited.consume(1 << 30).await;
        l.set_rate(None);
        assert_eq!(l.rate(), None);
        l.consume(1 << 30).await;
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
