//! The restore plan: which files rebuild an instance at a point in time, in the order they are
//! applied (the full, then every incremental up to the target), where each one is stored, and
//! the checksum the catalog recorded for it.
//!
//! The plan comes from the indexer (a peer: hostile like any other), so [`Plan::check`]
//! validates everything a restore relies on before a byte is pulled: names that stay inside
//! the target, a chain without holes (each incremental's full is the plan's full, and an
//! incremental taken against an incremental follows exactly that one), times in order, and a
//! checksum the restore can recompute.

use std::collections::HashSet;
use std::future::Future;

use serde::{Deserialize, Serialize};

use super::RestoreError;

/// Most files a plan may hold (a year of hourly incrementals is 8,760).
pub const MAX_PLAN_FILES: usize = 100_000;

/// Which backups of which instance, at which time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The host's asset id.
    pub server_id: String,
    /// mysql, redis, ssdb, ...
    pub back_type: String,
    /// Instance number (usually the port).
    pub instance: i64,
    /// The point in time.
    pub at: At,
}

impl Request {
    /// `server_id/type/instance`, for messages.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.server_id, self.back_type, self.instance)
    }
}

/// The point in time to restore: the newest backup taken at or before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The newest backup.
    Latest,
    /// Milliseconds since the epoch.
    Ms(i64),
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Latest => f.write_str("latest"),
            At::Ms(ms) => write!(f, "{} ({ms} ms)", rfc3339(*ms)),
        }
    }
}

/// Epoch values above this are milliseconds (10^11 seconds is the year 5138; 10^11 ms is 1973).
const MS_THRESHOLD: i64 = 100_000_000_000;

impl std::str::FromStr for At {
    type Err = String;

    /// `latest`, epoch seconds, epoch milliseconds, or RFC 3339
    /// (`2026-11-30T08:00:00Z`, `2026-11-30 08:00:00+08:00`, fractions allowed).
    fn from_str(s: &str) -> Result<At, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("latest") {
            return Ok(At::Latest);
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = s
                .parse()
                .map_err(|_| format!("{s:?} is too large for a time"))?;
            return Ok(At::Ms(if n >= MS_THRESHOLD { n } else { n * 1000 }));
        }
        parse_rfc3339(s).map(At::Ms).map_err(|e| {
            format!(
                "{s:?} is not a time ({e}): use latest, epoch seconds or milliseconds, or \
                 RFC 3339 (2026-11-30T08:00:00Z)"
            )
        })
    }
}

/// `2026-11-30T08:00:00.123Z` for epoch milliseconds (no fraction on a whole second); the
/// raw number for a time beyond jiff's range (years -9999 to 9999).
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) if ms.rem_euclid(1000) == 0 => format!("{t:.0}"),
        Ok(t) => format!("{t:.3}"),
        Err(_) => format!("{ms} ms since the epoch"),
    }
}

/// Parses RFC 3339 (and its common `YYYY-MM-DD HH:MM:SS+08:00` spelling) to epoch
/// milliseconds; the offset is required, and a date the calendar does not have is refused.
fn parse_rfc3339(s: &str) -> Result<i64, jiff::Error> {
    s.parse::<jiff::Timestamp>().map(|t| t.as_millisecond())
}

/// What a file is to the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A full backup: the start of the chain.
    Full,
    /// An incremental, applied after the files before it.
    Incremental,
}

/// One file of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    /// Full or incremental.
    pub role: Role,
    /// The name the agent published (`filename`); its last component names the restored file.
    pub filename: String,
    /// When the backup was taken (the job's `create_time`), ms.
    #[serde(alias = "create_time")]
    pub create_time_ms: i64,
    /// The node that holds it (`back_server_ip`).
    #[serde(alias = "back_server_ip")]
    pub node: String,
    /// The file's directory on the node (`file_path`).
    #[serde(default)]
    pub file_path: Option<String>,
    /// The file's path inside the node's restore module, when the indexer knows the node's
    /// root; otherwise the restore strips its configured node root from `file_path`.
    #[serde(default)]
    pub module_path: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// The catalog's checksum, `ALGORITHM:HEX` as `xxh128sum`, `md5sum` or `sha256sum`
    /// print it.
    pub checksum: String,
    /// The same digest in the other byte order, also accepted, when the catalog cannot say
    /// which one the node recorded (rsync's xxh* wire order or `xxhsum`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_alt: Option<String>,
    /// An incremental's full.
    #[serde(default)]
    pub last_all_filename: Option<String>,
    /// The incremental this one was taken against (v1 chain record), when not the full.
    #[serde(default)]
    pub prev_filename: Option<String>,
    /// The job id.
    #[serde(default)]
    pub job_id: Option<String>,
}

impl PlanFile {
    /// True when `sum` (`algo:hex`) is the catalog's checksum of this file.
    pub fn matches(&self, sum: &str) -> bool {
        sum == self.checksum || self.checksum_alt.as_deref() == Some(sum)
    }

    /// The name the file gets in the target: the last component of `filename`.
    pub fn leaf(&self) -> &str {
        self.filename
            .rsplit('/')
            .next()
            .unwrap_or(self.filename.as_str())
    }
}

/// A restore plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The host's asset id.
    pub server_id: String,
    /// Backup type.
    #[serde(rename = "type", alias = "back_type")]
    pub back_type: String,
    /// Instance number.
    pub instance: i64,
    /// The time asked for (ms), absent for `latest`.
    #[serde(default)]
    pub at_ms: Option<i64>,
    /// The files, in the order they are applied.
    pub files: Vec<PlanFile>,
}

/// How the files of a plan are found and verified.
pub trait PlanSource {
    /// The plan for `req`, or a typed reason there is none
    /// ([`RestoreError::NoBackup`], [`RestoreError::ChainHole`], ...).
    fn plan(&self, req: &Request) -> impl Future<Output = Result<Plan, RestoreError>> + Send;
}

/// A plan saved earlier (`restore --dry-run --json > plan.json`), for restoring while the
/// indexer is away.
#[derive(Debug, Clone)]
pub struct SavedPlan(pub Plan);

impl PlanSource for SavedPlan {
    async fn plan(&self, _req: &Request) -> Result<Plan, RestoreError> {
        Ok(self.0.clone())
    }
}

fn is_safe_leaf(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && !s.starts_with(".ubackup")
        && !s.contains(['/', '\0', '\n', '\r'])
}

/// Module paths: relative, no `.`/`..` components, no control characters.
pub fn is_safe_module_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 4096
        && !s.starts_with('/')
        && !s.bytes().any(|b| b < 0x20 || b == 0x7f)
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A checksum the restore can recompute, in the form it compares: `algorithm:lower-hex`.
pub fn normalize_checksum(s: &str) -> Option<String> {
    let (algo, hex) = s.split_once(':')?;
    let algo = algo.to_ascii_lowercase();
    let len = match algo.as_str() {
        "xxh128" | "md5" => 32,
        "xxh3" | "xxh64" => 16,
        "sha1" => 40,
        "sha256" => 64,
        _ => return None,
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("{algo}:{}", hex.to_ascii_lowercase()))
}

impl Plan {
    /// The full.
    pub fn full(&self) -> Option<&PlanFile> {
        self.files.first()
    }

    /// Total bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.size)
            .fold(0, u64::saturating_add)
    }

    /// Validates the plan for `req` (see the module docs). Every problem of a hostile or
    /// broken plan is a typed error; a gap in the chain is [`RestoreError::ChainHole`].
    pub fn check(&mut self, req: &Request) -> Result<(), RestoreError> {
        let bad = |why: String| RestoreError::BadPlan(why);
        if self.server_id != req.server_id
            || self.back_type != req.back_type
            || self.instance != req.instance
        {
            return Err(bad(format!(
                "the plan is for {}/{}/{}, not {}",
                self.server_id,
                self.back_type,
                self.instance,
                req.label()
            )));
        }
        if self.files.is_empty() {
            return Err(RestoreError::NoBackup {
                instance: req.label(),
                at: req.at.to_string(),
                detail: "the indexer's plan holds no file".into(),
            });
        }
        if self.files.len() > MAX_PLAN_FILES {
            return Err(bad(format!(
                "{} files (most: {MAX_PLAN_FILES})",
                self.files.len()
            )));
        }
        let mut leaves = HashSet::new();
        for f in &mut self.files {
            let Some(sum) = normalize_checksum(&f.checksum) else {
                return Err(bad(format!(
                    "{}: checksum {:?} is not ALGORITHM:HEX of xxh128, xxh3, xxh64, md5, sha1 \
                     or sha256",
                    f.filename, f.checksum
                )));
            };
            f.checksum = sum;
            f.checksum_alt = match f.checksum_alt.as_deref().map(normalize_checksum) {
                None => None,
                Some(Some(alt)) if alt.split(':').next() == f.checksum.split(':').next() => {
                    Some(alt)
                }
                Some(_) => {
                    return Err(bad(format!(
                        "{}: checksum_alt is not the same algorithm",
                        f.filename
                    )))
                }
            };
            if !is_safe_leaf(f.leaf()) || f.filename.contains('\0') {
                return Err(bad(format!("unsafe file name {:?}", f.filename)));
            }
            if !leaves.insert(f.leaf().to_string()) {
                return Err(bad(format!("two files are named {:?}", f.leaf())));
            }
            if let Some(p) = &f.module_path {
                if !is_safe_module_path(p) {
                    return Err(bad(format!("unsafe module path {p:?}")));
                }
            }
            if f.node.is_empty()
                || f.node.len() > 255
                || !f
                    .node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b))
            {
                return Err(bad(format!(
                    "{}: node {:?} is not a host",
                    f.filename, f.node
                )));
            }
        }
        let first = &self.files[0];
        if first.role != Role::Full {
            return Err(RestoreError::ChainHole {
                detail: format!(
                    "the plan starts with the incremental {}, not its full {}",
                    first.filename,
                    first.last_all_filename.as_deref().unwrap_or("(unknown)")
                ),
            });
        }
        let full = first.filename.clone();
        for (i, f) in self.files.iter().enumerate().skip(1) {
            let prev = &self.files[i - 1];
            if f.role != Role::Incremental {
                return Err(bad(format!("a second full ({}) after {full}", f.filename)));
            }
            if f.create_time_ms < prev.create_time_ms {
                return Err(bad(format!(
                    "{} (taken {}) is listed after {} (taken {})",
                    f.filename,
                    rfc3339(f.create_time_ms),
                    prev.filename,
                    rfc3339(prev.create_time_ms)
                )));
            }
            match f.last_all_filename.as_deref() {
                Some(a) if a == full => {}
                other => {
                    return Err(RestoreError::ChainHole {
                        detail: format!(
                            "{} belongs to the full {}, but the plan's full is {full}",
                            f.filename,
                            other.unwrap_or("(none)")
                        ),
                    })
                }
            }
            // The chain record names the backup this incremental was taken against: it must
            // be the file applied just before it.
            if let Some(p) = f.prev_filename.as_deref() {
                if p != prev.filename {
                    return Err(RestoreError::ChainHole {
                        detail: format!(
                            "{} was taken against {p}, which is not in the plan (the file \
                             before it is {})",
                            f.filename, prev.filename
                        ),
                    });
                }
            }
        }
        if let (At::Ms(at), Some(last)) = (req.at, self.files.last()) {
            if last.create_time_ms > at {
                return Err(bad(format!(
                    "{} was taken at {}, after the time asked for ({})",
                    last.filename,
                    rfc3339(last.create_time_ms),
                    rfc3339(at)
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times() {
        assert_eq!("latest".parse::<At>(), Ok(At::Latest));
        assert_eq!("1764489600".parse::<At>(), Ok(At::Ms(1_764_489_600_000)));
        assert_eq!("1764489600123".parse::<At>(), Ok(At::Ms(1_764_489_600_123)));
        assert_eq!(
            "2025-11-30T08:00:00Z".parse::<At>(),
            Ok(At::Ms(1_764_489_600_000))
        );
        assert_eq!(
            "2025-11-30 16:00:00.5+08:00".parse::<At>(),
            Ok(At::Ms(1_764_489_600_500))
        );
        assert_eq!(
            "1970-01-01T00:00:00-01:30".parse::<At>(),
            Ok(At::Ms(5_400_000))
        );
        for bad in [
            "",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "2025-11-30T08:00:00",
            "-5",
        ] {
            assert!(bad.parse::<At>().is_err(), "{bad}");
        }
        assert_eq!(rfc3339(1_764_489_600_500), "2025-11-30T08:00:00.500Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_29th_of_february_exists_only_in_leap_years() {
        let e = "2026-02-29T08:00:00Z".parse::<At>().unwrap_err();
        assert!(e.contains("2026-02-29") && e.contains("day"), "{e}");
        assert!("2100-02-29T00:00:00Z".parse::<At>().is_err());
        assert!("2026-04-31T00:00:00Z".parse::<At>().is_err());
        assert_eq!(
            "2028-02-29T08:00:00Z".parse::<At>(),
            Ok(At::Ms(1_835_424_000_000))
        );
        assert_eq!(rfc3339(1_835_424_000_000), "2028-02-29T08:00:00Z");
        assert_eq!(
            "2000-02-29T00:00:00Z".parse::<At>(),
            Ok(At::Ms(951_782_400_000))
        );
    }

    fn file(role: Role, name: &str, t: i64, full: Option<&str>, prev: Option<&str>) -> PlanFile {
        PlanFile {
            role,
            filename: name.into(),
            create_time_ms: t,
            node: "10.0.0.9".into(),
            file_path: None,
            module_path: Some(format!("mysql/10.0.0/5/{name}")),
            size: 1,
            checksum: format!("xxh128:{}", "AB".repeat(16)),
            checksum_alt: None,
            last_all_filename: full.map(Into::into),
            prev_filename: prev.map(Into::into),
            job_id: None,
        }
    }

    fn req() -> Request {
        Request {
            server_id: "1".into(),
            back_type: "mysql".into(),
            instance: 3306,
            at: At::Latest,
        }
    }

    fn plan(files: Vec<PlanFile>) -> Plan {
        Plan {
            server_id: "1".into(),
            back_type: "mysql".into(),
            instance: 3306,
            at_ms: None,
            files,
        }
    }

    #[test]
    fn accepts_an_exact_chain_and_normalizes_checksums() {
        let mut p = plan(vec![
            file(Role::Full, "f", 1, None, None),
            file(Role::Incremental, "i1", 2, Some("f"), None),
            file(Role::Incremental, "i2", 3, Some("f"), Some("i1")),
        ]);
        p.check(&req()).unwrap();
        assert_eq!(p.files[0].checksum, format!("xxh128:{}", "ab".repeat(16)));
    }

    #[test]
    fn reports_holes() {
        let mut p = plan(vec![
            file(Role::Full, "f", 1, None, None),
            file(Role::Incremental, "i1", 2, Some("f"), None),
            file(Role::Incremental, "i3", 4, Some("f"), Some("i2")),
        ]);
        assert!(matches!(
            p.check(&req()),
            Err(RestoreError::ChainHole { .. })
        ));
        let mut p = plan(vec![file(Role::Incremental, "i1", 2, Some("f"), None)]);
        assert!(matches!(
            p.check(&req()),
            Err(RestoreError::ChainHole { .. })
        ));
        let mut p = plan(vec![
            file(Role::Full, "f", 1, None, None),
            file(Role::Incremental, "i1", 2, Some("g"), None),
        ]);
        assert!(matches!(
            p.check(&req()),
            Err(RestoreError::ChainHole { .. })
        ));
    }

    #[test]
    fn refuses_hostile_plans() {
        for name in ["..", "a/..", ".ubackup-restore", "x\0y", ""] {
            let mut p = plan(vec![file(Role::Full, name, 1, None, None)]);
            assert!(
                matches!(p.check(&req()), Err(RestoreError::BadPlan(_))),
                "{name:?}"
            );
        }
        let mut f = file(Role::Full, "f", 1, None, None);
        f.module_path = Some("../etc/passwd".into());
        assert!(plan(vec![f]).check(&req()).is_err());
        let mut f = file(Role::Full, "f", 1, None, None);
        f.checksum = "crc32:00".into();
        assert!(plan(vec![f]).check(&req()).is_err());
        let mut p = plan(vec![
            file(Role::Full, "f", 1, None, None),
            file(Role::Full, "f", 2, None, None),
        ]);
        assert!(p.check(&req()).is_err());
        let mut p = plan(vec![file(Role::Full, "f", 1, None, None)]);
        p.server_id = "2".into();
        assert!(p.check(&req()).is_err());
    }
}
