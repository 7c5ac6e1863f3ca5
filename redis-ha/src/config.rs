//! Where the master is found and how writes are confirmed: the validated values each
//! daemon's configuration builds (TOML `[redis_sentinel]`, legacy INI `redis_sentinel_*`).

use std::fmt;
use std::time::Duration;

/// A password; Debug and Display print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A Sentinel set that monitors one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// The name the Sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The Sentinels, `host:port` each (at least one; three is the recommended layout).
    pub sentinels: Vec<(String, u16)>,
    /// The Sentinels' `requirepass`, if any.
    pub sentinel_password: Option<Secret>,
    /// The master's (and replicas') `requirepass`, if any; when None, the password of the
    /// daemon's `redis://` URL is used.
    pub redis_password: Option<Secret>,
}

impl SentinelConfig {
    /// Validates the parts, reporting every problem (as `(field, problem)`) at once.
    pub fn new(
        master_name: &str,
        sentinels: &[String],
        sentinel_password: Option<String>,
        redis_password: Option<String>,
    ) -> Result<SentinelConfig, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        if master_name.is_empty()
            || master_name.len() > 256
            || master_name.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            problems.push(("master_name", format!("not a master name: {master_name:?}")));
        }
        if sentinels.is_empty() {
            problems.push(("sentinels", "no Sentinel addresses".to_string()));
        }
        let mut addrs = Vec::new();
        for s in sentinels {
            match parse_host_port(s.trim()) {
                Some(a) => addrs.push(a),
                None => problems.push(("sentinels", format!("not host:port: {s:?}"))),
            }
        }
        if problems.is_empty() {
            Ok(SentinelConfig {
                master_name: master_name.to_string(),
                sentinels: addrs,
                sentinel_password: sentinel_password.filter(|p| !p.is_empty()).map(Secret),
                redis_password: redis_password.filter(|p| !p.is_empty()).map(Secret),
            })
        } else {
            Err(problems)
        }
    }
}

/// `host:port` or `[v6]:port`.
fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return None;
    }
    Some((host.to_string(), port))
}

/// Where a daemon's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server at a `redis://` URL (today's setting; reconnects to the same address).
    Direct(String),
    /// The master of a Sentinel set; the URL gives the database number and, when the
    /// Sentinel configuration has none, the password.
    Sentinel {
        /// The Sentinel set.
        sentinel: SentinelConfig,
        /// The daemon's `redis://` URL.
        url: String,
    },
}

/// How a write that must survive a failover is confirmed: `WAIT <replicas> <timeout>`
/// right after it, on the same connection. A write that fewer replicas acknowledged in time
/// is reported as not done (the caller keeps it and repeats it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// Replicas that must acknowledge (0 = no WAIT at all).
    pub replicas: u32,
    /// How long WAIT may block.
    pub timeout: Duration,
}

impl Durability {
    /// No confirmation (a single Redis without replicas).
    pub const NONE: Durability = Durability {
        replicas: 0,
        timeout: Duration::ZERO,
    };

    /// The default with a Sentinel set: one replica within one second.
    pub const SENTINEL_DEFAULT: Durability = Durability {
        replicas: 1,
        timeout: Duration::from_secs(1),
    };

    /// The longest WAIT allowed: it must end well before the command timeout.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);

    /// Whether writes are confirmed at all.
    pub fn enabled(&self) -> bool {
        self.replicas > 0
    }
}

/// A daemon's whole Redis high-availability setting: the Sentinel set (if any) and the
/// confirmation of writes. Each daemon's configuration reads the same keys (TOML table
/// `[redis_sentinel]`, legacy `[global]` keys `redis_sentinel_master`, `redis_sentinels`,
/// `redis_sentinel_password`, `redis_password`, `redis_wait_replicas`,
/// `redis_wait_timeout_ms`) and builds it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// The Sentinel set, if the Redis is found through one.
    pub sentinel: Option<SentinelConfig>,
    /// WAIT after each write that must survive a failover (default: 1 replica within 1 s
    /// with Sentinel, none without).
    pub durability: Durability,
}

impl Default for HaSettings {
    fn default() -> Self {
        HaSettings {
            sentinel: None,
            durability: Durability::NONE,
        }
    }
}

impl HaSettings {
    /// Validates the keys' values (None = key absent), reporting every problem as
    /// `(key within [redis_sentinel], problem)`.
    pub fn build(
        master_name: Option<String>,
        sentinels: Option<Vec<String>>,
        sentinel_password: Option<String>,
        redis_password: Option<String>,
        wait_replicas: Option<u32>,
        wait_timeout: Option<Duration>,
    ) -> Result<HaSettings, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let sentinel = match (master_name, sentinels) {
            (None, None) => {
                if sentinel_password.is_some() || redis_password.is_some() {
                    problems.push((
                        "master_name",
                        "missing: the master name (the passwords are for Sentinel mode)".into(),
                    ));
                }
                None
            }
            (Some(m), Some(list)) => {
                match SentinelConfig::new(&m, &list, sentinel_password, redis_password) {
                    Ok(c) => Some(c),
                    Err(p) => {
                        problems.extend(p);
                        None
                    }
                }
            }
            (None, Some(list)) => {
                problems.push((
                    "master_name",
                    "missing: the name the Sentinels monitor".into(),
                ));
                if let Err(p) = SentinelConfig::new("-", &list, None, None) {
                    problems.extend(p);
                }
                None
            }
            (Some(_), None) => {
                problems.push(("sentinels", "missing: the Sentinel addresses".into()));
                None
            }
        };
        if let Some(t) = wait_timeout {
            if t.is_zero() || t > Durability::MAX_TIMEOUT {
                problems.push((
                    "wait_timeout_ms",
                    format!("{t:?} is outside 1 ms..={:?}", Durability::MAX_TIMEOUT),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let default = if sentinel.is_some() {
            Durability::SENTINEL_DEFAULT
        } else {
            Durability::NONE
        };
        let replicas = wait_replicas.unwrap_or(default.replicas);
        let timeout = match wait_timeout {
            Some(t) => t,
            None if replicas > 0 => Durability::SENTINEL_DEFAULT.timeout,
            None => Duration::ZERO,
        };
        Ok(HaSettings {
            sentinel,
            durability: Durability { replicas, timeout },
        })
    }

    /// Splits a Sentinel list written as one string (`"h1:26379, h2:26379 h3:26379"`).
    pub fn split_list(s: &str) -> Vec<String> {
        s.split([',', ' ', '\t'])
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// How to reach the Redis at `url` (a `redis://` URL: database, and password unless
    /// the Sentinel configuration names one).
    pub fn target(&self, url: &str) -> Target {
        match &self.sentinel {
            Some(s) => Target::Sentinel {
                sentinel: s.clone(),
                url: url.to_string(),
            },
            None => Target::Direct(url.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_one_replica_with_sentinel_only() {
        let none = HaSettings::build(None, None, None, None, None, None);
        assert_eq!(none, Ok(HaSettings::default()));
        let list = HaSettings::split_list("a:1, b:2 c:3");
        assert_eq!(list.len(), 3);
        let with = HaSettings::build(Some("m".into()), Some(list), None, None, None, None);
        assert_eq!(with.map(|h| h.durability), Ok(Durability::SENTINEL_DEFAULT));
        let half = HaSettings::build(None, None, Some("pw".into()), None, None, None);
        assert!(half.is_err());
    }

    #[test]
    fn reports_every_problem() {
        let e = SentinelConfig::new("my master", &["a".into(), "h:0".into()], None, None)
            .err()
            .unwrap_or_default();
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn accepts_v6_and_hides_passwords() {
        let c = SentinelConfig::new(
            "ubackup",
            &["[::1]:26379".into(), "s2:26380".into()],
            Some("sp".into()),
            Some(String::new()),
        );
        let Ok(c) = c else {
            panic!("rejected: {c:?}");
        };
        assert_eq!(c.sentinels[0], ("::1".to_string(), 26379));
        assert_eq!(c.redis_password, None);
        assert!(!format!("{c:?}").contains("sp\""));
    }
}
