//! Passwords (argon2id PHC strings), bearer tokens (random, stored as SHA-256), and
//! [`LoginGuard`]: the one login check that the web form and `POST /api/v1/login` share.
//!
//! ```text
//! name, password, address ─▶ limiter.reserve (429 + Retry-After)
//!                          ─▶ catalog.user (unknown: a dummy hash with the same parameters)
//!                          ─▶ hash permit (semaphore, queue timeout: 503 + Retry-After)
//!                          ─▶ argon2 verify on a blocking thread ─▶ reservation.settle
//! ```

pub mod limiter;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use rand::RngCore as _;
use sha2::Digest as _;

use crate::catalog::{Catalog, CatalogError, User};

/// A password hashing failure.
#[derive(Debug, thiserror::Error)]
#[error("password hash: {0}")]
pub struct HashError(String);

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Largest argon2 memory (KiB) a stored hash may ask a login to use with a reused buffer;
/// beyond it the verification allocates its own (a hash the admin made with odd params).
const MAX_REUSED_KIB: usize = 256 * 1024;

/// Like [`verify_password`], but computes into `mem` (grown once, then reused), so a pool of
/// N workers holds N argon2 buffers for good instead of asking malloc for ~19 MiB per login:
/// glibc keeps freed blocks of that size in per-thread arenas, and a login flood grew the
/// process by hundreds of MiB that way even with the hashing pool bounded.
pub fn verify_password_reusing(password: &str, phc: &str, mem: &mut Vec<argon2::Block>) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(params), Some(salt), Some(expected)) = (argon2::Params::try_from(&h), h.salt, h.hash)
    else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = match h.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    if blocks > MAX_REUSED_KIB {
        return verify_password(password, phc);
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    if mem.len() < blocks {
        mem.resize(blocks, argon2::Block::default());
    }
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let Some(work) = mem.get_mut(..blocks) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, work)
        .is_ok()
        && out
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether `password` matches a stored PHC string (false for a malformed one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new bearer token: `ubk_` and 32 random bytes in hex.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    format!("ubk_{}", hex::encode(b))
}

/// What the catalog stores for a token. Tokens carry 256 random bits, so a fast hash is
/// enough (no dictionary to defend against); it keeps each request's lookup cheap.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// The `[login]` settings the guard runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPolicy {
    /// The limiter.
    pub limits: limiter::LimitPolicy,
    /// Password hashes at once (0: one per core, at most 4).
    pub hash_workers: usize,
    /// How long an attempt may wait for a hash permit before it is answered 503 (ms).
    pub hash_queue_ms: u64,
    /// Attempts that may wait for a permit at once; more are answered 503 at once.
    pub hash_queue_len: usize,
    /// Lifetime of a named token (users page, `token create`) when none is asked for (ms).
    pub token_default_ms: i64,
    /// The longest lifetime a named token may have (ms).
    pub token_max_ms: i64,
    /// Lifetime of the token `POST /api/v1/login` hands out (ms); a login may ask for less,
    /// never more. Longer-lived access is a named token, listed and revocable.
    pub login_token_ms: i64,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            limits: limiter::LimitPolicy::default(),
            hash_workers: 0,
            hash_queue_ms: 1_000,
            hash_queue_len: 256,
            token_default_ms: 30 * 86_400_000,
            token_max_ms: 90 * 86_400_000,
            login_token_ms: 3_600_000,
        }
    }
}

impl LoginPolicy {
    /// When a named token minted at `now_ms` for `asked_secs` (none: the default) expires,
    /// capped at the maximum lifetime.
    pub fn token_expiry(&self, now_ms: i64, asked_secs: Option<u64>) -> i64 {
        expiry(now_ms, asked_secs, self.token_default_ms, self.token_max_ms)
    }

    /// When the token of an API login at `now_ms` expires: `login_token_ms`, or the shorter
    /// `asked_secs`.
    pub fn login_token_expiry(&self, now_ms: i64, asked_secs: Option<u64>) -> i64 {
        expiry(now_ms, asked_secs, self.login_token_ms, self.login_token_ms)
    }
}

/// What a login attempt came to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Name and password match.
    Verified(User),
    /// Wrong password or unknown name (the two are not told apart).
    Wrong,
    /// The limiter refused: 429 with this Retry-After (seconds).
    Limited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// Every hash permit stayed busy for the queue timeout: 503 with this Retry-After.
    Busy {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
}

/// The shared login check: limiter, bounded hashing pool, timing-equal verification.
#[derive(Debug)]
pub struct LoginGuard {
    policy: LoginPolicy,
    limiter: std::sync::Arc<limiter::Limiter>,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    workers: usize,
    waiting: std::sync::atomic::AtomicUsize,
    dummy: String,
    /// argon2 work buffers, at most one per permit.
    buffers: std::sync::Arc<std::sync::Mutex<Vec<Vec<argon2::Block>>>>,
}

/// Decrements the waiting count when an attempt stops waiting (also when cancelled).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl LoginGuard {
    /// A guard on `policy` (hashes a dummy password once, ~30 ms).
    pub fn new(policy: LoginPolicy) -> LoginGuard {
        // Default: one per core up to 4 (each holds ~19 MiB; 4 verify ~150 logins/s).
        let workers = if policy.hash_workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
        } else {
            policy.hash_workers
        };
        LoginGuard {
            limiter: limiter::Limiter::new(policy.limits.clone()),
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(workers)),
            workers,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            // Same parameters as every stored hash, so an unknown name costs one argon2 run.
            dummy: hash_password(&new_token()).unwrap_or_default(),
            buffers: std::sync::Arc::default(),
            policy,
        }
    }

    /// Hash permits (the pool's size).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The settings.
    pub fn policy(&self) -> &LoginPolicy {
        &self.policy
    }

    /// [`LoginPolicy::token_expiry`].
    pub fn token_expiry(&self, now_ms: i64, asked_secs: Option<u64>) -> i64 {
        self.policy.token_expiry(now_ms, asked_secs)
    }

    /// [`LoginPolicy::login_token_expiry`].
    pub fn login_token_expiry(&self, now_ms: i64, asked_secs: Option<u64>) -> i64 {
        self.policy.login_token_expiry(now_ms, asked_secs)
    }

    /// Checks `name` and `password` from `addr` (none: the server has no peer address) at
    /// wall-clock `now_ms`. The only error is the catalog's.
    pub async fn verify(
        &self,
        catalog: &dyn Catalog,
        name: &str,
        password: &str,
        addr: Option<std::net::IpAddr>,
        now_ms: i64,
    ) -> Result<LoginOutcome, CatalogError> {
        use std::sync::atomic::Ordering;
        let ip = addr.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let reservation = match self.limiter.reserve(name, ip, now_ms) {
            Ok(r) => r,
            Err(r) => {
                return Ok(LoginOutcome::Limited {
                    retry_after_secs: secs_up(r.retry_after_ms),
                })
            }
        };
        let user = catalog.user(name).await?;
        let busy = LoginOutcome::Busy {
            retry_after_secs: secs_up(i64::try_from(self.policy.hash_queue_ms).unwrap_or(1000))
                .max(1),
        };
        // A bounded queue in front of a bounded pool: memory and threads stay flat in a flood.
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.policy.hash_queue_len {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Ok(busy);
        }
        let wait = Waiting(&self.waiting);
        let permit = tokio::time::timeout(
            std::time::Duration::from_millis(self.policy.hash_queue_ms),
            self.permits.clone().acquire_owned(),
        )
        .await;
        drop(wait);
        let Ok(Ok(permit)) = permit else {
            // Dropping the reservation releases it uncounted: the server, not the password,
            // refused.
            return Ok(busy);
        };
        let phc = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy.clone());
        let password = password.to_string();
        let buffers = self.buffers.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let mut mem = buffers
                .lock()
                .ok()
                .and_then(|mut b| b.pop())
                .unwrap_or_default();
            let ok = verify_password_reusing(&password, &phc, &mut mem);
            if let Ok(mut b) = buffers.lock() {
                b.push(mem);
            }
            drop(permit);
            ok
        })
        .await
        .unwrap_or(false);
        Ok(match user {
            Some(u) if ok => {
                reservation.settle(limiter::Outcome::Success, now_ms);
                LoginOutcome::Verified(u)
            }
            _ => {
                reservation.settle(limiter::Outcome::Failure, now_ms);
                LoginOutcome::Wrong
            }
        })
    }
}

/// `now_ms` plus `asked_secs` (none: `default_ms`), within 1 s and `max_ms`.
fn expiry(now_ms: i64, asked_secs: Option<u64>, default_ms: i64, max_ms: i64) -> i64 {
    let ms = asked_secs
        .map(|s| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000))
        .unwrap_or(default_ms)
        .clamp(1000, max_ms.max(1000));
    now_ms.saturating_add(ms)
}

fn secs_up(ms: i64) -> u64 {
    u64::try_from(ms.max(1)).unwrap_or(1).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_verify_and_tokens_hash() {
        let h = hash_password("hunter2").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("hunter2", &h));
        assert!(!verify_password("hunter3", &h));
        assert!(!verify_password("hunter2", "garbage"));
        let mut mem = Vec::new();
        assert!(verify_password_reusing("hunter2", &h, &mut mem));
        assert!(!verify_password_reusing("hunter3", &h, &mut mem));
        assert!(!verify_password_reusing("hunter2", "garbage", &mut mem));
        assert_eq!(
            mem.len(),
            19 * 1024,
            "argon2's default m = 19 MiB, kept for reuse"
        );
        let t = new_token();
        assert_eq!(t.len(), 4 + 64);
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t).len(), 64);
    }
}
