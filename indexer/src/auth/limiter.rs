//! The login limiter, shared by the web form and `POST /api/v1/login`.
//!
//! Policy (documented for operators in docs/operations.md, "Logins"):
//! - Per (account, client address): `attempts` failures are free; after that each further
//!   attempt waits `base_delay * 2^(failures - attempts)`, capped at `max_delay`. A success
//!   from that address clears the pair. A pair is forgotten `2 * max_delay` after its last
//!   failure. An attacker at one address therefore slows down only that address's attempts on
//!   that account: the owner, from anywhere else, logs in as usual.
//! - Per client address across accounts (password spraying): at most `address_failures`
//!   failures per `address_window`; beyond it every login from that address waits for the
//!   window to end. IPv6 addresses count per /64 (one host usually holds a whole /64).
//! - An attempt is reserved before the password is hashed and settled after, under one lock,
//!   so N parallel requests cannot all pass a check made before any of them has failed: a
//!   reservation counts as a failure until it is settled, and past the free attempts only one
//!   reservation per pair may be in flight.
//! - Both tables hold at most `max_entries` keys: stale keys go first, then the oldest half,
//!   so the limiter's own memory is bounded whatever a flood sends.
//!
//! Time comes in as `now_ms`; nothing here sleeps or reads a clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The limiter's settings (`[login]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Failures per (account, address) before delays start.
    pub attempts: u32,
    /// The first delay (ms); it doubles with every further failure.
    pub base_delay_ms: i64,
    /// The longest delay (ms).
    pub max_delay_ms: i64,
    /// Failures per address across accounts in one window.
    pub address_failures: u32,
    /// That window (ms).
    pub address_window_ms: i64,
    /// Keys per table (pairs, addresses).
    pub max_entries: usize,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            attempts: 5,
            base_delay_ms: 1_000,
            max_delay_ms: 15 * 60_000,
            address_failures: 100,
            address_window_ms: 15 * 60_000,
            max_entries: 65_536,
        }
    }
}

/// Why an attempt was refused: try again after this many milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Milliseconds until the next attempt can pass (at least 1).
    pub retry_after_ms: i64,
}

#[derive(Debug, Default)]
struct Pair {
    failures: u32,
    in_flight: u32,
    next_ms: i64,
    last_ms: i64,
}

#[derive(Debug, Default)]
struct Addr {
    window_start_ms: i64,
    failures: u32,
    in_flight: u32,
}

type PairKey = (IpAddr, Box<str>);

#[derive(Debug, Default)]
struct Tables {
    pairs: HashMap<PairKey, Pair>,
    addrs: HashMap<IpAddr, Addr>,
}

/// The limiter.
#[derive(Debug)]
pub struct Limiter {
    policy: LimitPolicy,
    tables: Mutex<Tables>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password matched.
    Success,
    /// Wrong password or unknown name.
    Failure,
}

/// An attempt that passed the limiter and counts until [`Reservation::settle`]. Dropped
/// unsettled (the server could not hash, or the request was cancelled) it is released
/// without counting.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<Limiter>,
    key: Option<PairKey>,
}

/// The address a limit keys on: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiter {
    /// Empty.
    pub fn new(policy: LimitPolicy) -> Arc<Limiter> {
        Arc::new(Limiter {
            policy,
            tables: Mutex::new(Tables::default()),
        })
    }

    fn delay_after(&self, failures: u32) -> i64 {
        let over = failures.saturating_sub(self.policy.attempts).min(40);
        self.policy
            .base_delay_ms
            .saturating_mul(1i64 << over)
            .min(self.policy.max_delay_ms)
    }

    /// Reserves one attempt for `account` from `ip` at `now_ms`, or says how long to wait.
    pub fn reserve(
        self: &Arc<Self>,
        account: &str,
        ip: IpAddr,
        now_ms: i64,
    ) -> Result<Reservation, Refused> {
        let p = &self.policy;
        let ip = limit_key(ip);
        let Ok(mut t) = self.tables.lock() else {
            return Err(Refused {
                retry_after_ms: 1000,
            });
        };
        // The address's window.
        if let Some(a) = t.addrs.get_mut(&ip) {
            if now_ms.saturating_sub(a.window_start_ms) >= p.address_window_ms {
                a.window_start_ms = now_ms;
                a.failures = 0;
            }
            if a.failures.saturating_add(a.in_flight) >= p.address_failures {
                return Err(Refused {
                    retry_after_ms: a
                        .window_start_ms
                        .saturating_add(p.address_window_ms)
                        .saturating_sub(now_ms)
                        .max(1),
                });
            }
        }
        // The pair.
        let key: PairKey = (ip, account.into());
        if let Some(e) = t.pairs.get_mut(&key) {
            if e.in_flight == 0
                && now_ms.saturating_sub(e.last_ms) >= p.max_delay_ms.saturating_mul(2)
            {
                *e = Pair::default();
            }
            if e.failures.saturating_add(e.in_flight) >= p.attempts {
                if e.in_flight > 0 {
                    return Err(Refused {
                        retry_after_ms: p.base_delay_ms.max(1),
                    });
                }
                if now_ms < e.next_ms {
                    return Err(Refused {
                        retry_after_ms: e.next_ms - now_ms,
                    });
                }
            }
        }
        // Passed: count it as in flight in both tables.
        if !t.pairs.contains_key(&key) && t.pairs.len() >= p.max_entries {
            let forget = p.max_delay_ms.saturating_mul(2);
            evict(&mut t.pairs, p.max_entries, |e| {
                (e.in_flight > 0, now_ms - e.last_ms < forget, e.last_ms)
            });
        }
        if !t.addrs.contains_key(&ip) && t.addrs.len() >= p.max_entries {
            let w = p.address_window_ms;
            evict(&mut t.addrs, p.max_entries, |a| {
                (
                    a.in_flight > 0,
                    now_ms - a.window_start_ms < w,
                    a.window_start_ms,
                )
            });
        }
        t.pairs.entry(key.clone()).or_default().in_flight += 1;
        t.addrs
            .entry(ip)
            .or_insert_with(|| Addr {
                window_start_ms: now_ms,
                ..Addr::default()
            })
            .in_flight += 1;
        Ok(Reservation {
            limiter: self.clone(),
            key: Some(key),
        })
    }

    fn release(&self, key: &PairKey, outcome: Option<Outcome>, now_ms: i64) {
        let Ok(mut t) = self.tables.lock() else {
            return;
        };
        if let Some(a) = t.addrs.get_mut(&key.0) {
            a.in_flight = a.in_flight.saturating_sub(1);
            if outcome == Some(Outcome::Failure) {
                a.failures = a.failures.saturating_add(1);
            }
        }
        let Some(e) = t.pairs.get_mut(key) else {
            return;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        match outcome {
            Some(Outcome::Failure) => {
                e.failures = e.failures.saturating_add(1);
                e.last_ms = now_ms;
                e.next_ms = if e.failures >= self.policy.attempts {
                    now_ms.saturating_add(self.delay_after(e.failures))
                } else {
                    now_ms
                };
            }
            Some(Outcome::Success) => {
                t.pairs.remove(key);
            }
            None => {
                if e.failures == 0 && e.in_flight == 0 {
                    t.pairs.remove(key);
                }
            }
        }
    }

    /// Keys held (pairs, addresses): for tests and metrics.
    pub fn len(&self) -> (usize, usize) {
        self.tables
            .lock()
            .map(|t| (t.pairs.len(), t.addrs.len()))
            .unwrap_or((0, 0))
    }
}

/// Makes room in a full table: keys that are neither in flight nor recent go first; if that
/// frees less than a quarter, the oldest of the rest until half is free. `rank` gives
/// (in flight, recent, age stamp).
fn evict<K: Clone + Eq + std::hash::Hash, V>(
    m: &mut HashMap<K, V>,
    max: usize,
    rank: impl Fn(&V) -> (bool, bool, i64),
) {
    m.retain(|_, v| {
        let (busy, recent, _) = rank(v);
        busy || recent
    });
    if m.len() < max - max / 4 {
        return;
    }
    let mut order: Vec<(i64, K)> = m
        .iter()
        .filter(|(_, v)| !rank(v).0)
        .map(|(k, v)| (rank(v).2, k.clone()))
        .collect();
    order.sort_unstable_by_key(|x| x.0);
    let excess = m.len().saturating_sub(max / 2);
    for (_, k) in order.into_iter().take(excess) {
        m.remove(&k);
    }
}

impl Reservation {
    /// Settles the attempt: a success clears the pair, a failure counts and sets its delay.
    pub fn settle(mut self, outcome: Outcome, now_ms: i64) {
        if let Some(k) = self.key.take() {
            self.limiter.release(&k, Some(outcome), now_ms);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.limiter.release(&k, None, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy() -> LimitPolicy {
        LimitPolicy {
            attempts: 3,
            base_delay_ms: 100,
            max_delay_ms: 1000,
            address_failures: 10,
            address_window_ms: 10_000,
            max_entries: 8,
        }
    }

    #[test]
    fn parallel_reservations_count_before_they_settle() {
        let l = Limiter::new(policy());
        let a = ip("10.0.0.1");
        let held: Vec<_> = (0..3).map(|_| l.reserve("admin", a, 0).unwrap()).collect();
        assert!(
            l.reserve("admin", a, 0).is_err(),
            "a 4th in flight is refused"
        );
        for r in held {
            r.settle(Outcome::Failure, 0);
        }
        // Past the free attempts: one delay, then doubling.
        assert_eq!(l.reserve("admin", a, 50).unwrap_err().retry_after_ms, 50);
        let r = l.reserve("admin", a, 100).unwrap();
        assert!(
            l.reserve("admin", a, 100).is_err(),
            "one in flight at a time"
        );
        r.settle(Outcome::Failure, 100);
        assert_eq!(l.reserve("admin", a, 100).unwrap_err().retry_after_ms, 200);
    }

    #[test]
    fn another_address_is_not_locked_out_and_success_clears() {
        let l = Limiter::new(policy());
        for t in 0..3 {
            l.reserve("admin", ip("10.0.0.1"), t)
                .unwrap()
                .settle(Outcome::Failure, t);
        }
        assert!(l.reserve("admin", ip("10.0.0.1"), 3).is_err());
        l.reserve("admin", ip("10.0.0.2"), 3)
            .unwrap()
            .settle(Outcome::Success, 3);
        // A cancelled attempt does not count.
        drop(l.reserve("bob", ip("10.0.0.1"), 4).unwrap());
        assert_eq!(l.len().0, 1);
    }

    #[test]
    fn spraying_hits_the_address_cap_and_ipv6_counts_per_64() {
        let l = Limiter::new(policy());
        for i in 0..10 {
            let a = ip(&format!("2001:db8::{i}"));
            l.reserve(&format!("u{i}"), a, 0)
                .unwrap()
                .settle(Outcome::Failure, 0);
        }
        let r = l.reserve("fresh", ip("2001:db8::ffff"), 1).unwrap_err();
        assert_eq!(r.retry_after_ms, 9_999);
        assert!(l.reserve("fresh", ip("2001:db8:1::1"), 1).is_ok());
        assert!(l.reserve("fresh", ip("2001:db8::1"), 10_000).is_ok());
    }

    #[test]
    fn tables_stay_bounded() {
        let l = Limiter::new(policy());
        for i in 0..1000i64 {
            let a = ip(&format!("10.0.{}.{}", i / 250, i % 250));
            l.reserve("x", a, i).unwrap().settle(Outcome::Failure, i);
        }
        let (p, a) = l.len();
        assert!(p <= 8 && a <= 8, "{p} {a}");
    }
}
