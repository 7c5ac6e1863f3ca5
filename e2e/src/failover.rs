//! A Redis failover read back from what the daemons leave behind: their logs (when each one's
//! connection reached the new master, when it first pushed there) and the catalog (when each
//! node first took a job there, when the indexer first ingested one). Times are wall-clock
//! milliseconds, measured from the moment a test hurt the master.
//!
//! Only what the daemons already show an operator is read: the `redis master changed` warning
//! of `ubackup-redis-ha`, the agent's `backup published` / `spooled job delivered`, the node's
//! `result published`, and the catalog's `taken_ms` / `indexed_ms` columns.

use std::fmt;

use serde_json::Value;

use crate::scenario::{cataloged, field};
use crate::Fleet;

/// What a daemon logs when its connection reaches a master other than the last one.
pub const MASTER_CHANGED: &str = "redis master changed (failover followed)";

/// Now, in wall-clock ms.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The wall-clock ms of a log line (tracing's `2026-12-07T19:03:55.123456Z  INFO …`).
pub fn line_ms(line: &str) -> Option<i64> {
    let stamp = line.split_ascii_whitespace().next()?;
    let t: jiff::Timestamp = stamp.parse().ok()?;
    Some(t.as_millisecond())
}

/// The time of the first line stamped at or after `from_ms` that holds every one of
/// `needles`.
pub fn first_line(log: &str, from_ms: i64, needles: &[&str]) -> Option<i64> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(line_ms)
        .find(|t| *t >= from_ms)
}

/// How many lines stamped at or after `from_ms` hold `needle`.
pub fn count_lines(log: &str, from_ms: i64, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(line_ms)
        .filter(|t| *t >= from_ms)
        .count()
}

/// One daemon's way through a fault, in ms after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Followed {
    /// `agent host-1`, `node-1`, `indexer`.
    pub daemon: String,
    /// Its connection reached the new master (None: it never moved).
    pub switched: Option<i64>,
    /// A node's first job taken after it moved (after the fault when it did not move).
    pub take: Option<i64>,
    /// The first job (agent) or result (node) pushed and confirmed after that.
    pub push: Option<i64>,
    /// The indexer's first result ingested after that.
    pub ingest: Option<i64>,
}

fn secs(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "–".to_string(),
        |m| format!("{:.1} s", m as f64 / 1000.0),
    )
}

impl fmt::Display for Followed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: moved {}, take {}, push {}, ingest {}",
            self.daemon,
            secs(self.switched),
            secs(self.take),
            secs(self.push),
            secs(self.ingest)
        )
    }
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Every daemon's way through the fault at `fault_ms`.
///
/// A daemon's events count from the moment it moved to the new master: a confirmed write
/// logged just after the fault may have been confirmed just before it, on the old master.
pub fn followed(fleet: &Fleet, fault_ms: i64) -> anyhow::Result<Vec<Followed>> {
    let mut rows: Vec<Value> = Vec::new();
    for h in &fleet.hosts {
        for inst in &h.instances {
            rows.extend(cataloged(fleet, &h.server_id, inst)?);
        }
    }
    let int = |r: &Value, name: &str| field(r, name).and_then(Value::as_i64);
    let mut out = Vec::new();
    for h in &fleet.hosts {
        let log = h.agent.log();
        let switched = first_line(&log, fault_ms, &[MASTER_CHANGED]);
        let from = switched.unwrap_or(fault_ms);
        let push = earliest(
            first_line(&log, from, &["backup published", "\"pushed\""]),
            first_line(&log, from, &["spooled job delivered"]),
        );
        out.push(Followed {
            daemon: h.agent.name().to_string(),
            switched: switched.map(|t| t - fault_ms),
            push: push.map(|t| t - fault_ms),
            ..Followed::default()
        });
    }
    for n in &fleet.nodes {
        let log = n.puller.log();
        let switched = first_line(&log, fault_ms, &[MASTER_CHANGED]);
        let from = switched.unwrap_or(fault_ms);
        let take = rows
            .iter()
            .filter(|r| field(r, "node_id").and_then(Value::as_str) == Some(n.id.as_str()))
            .filter_map(|r| int(r, "taken_ms"))
            .filter(|t| *t >= from)
            .min();
        out.push(Followed {
            daemon: n.id.clone(),
            switched: switched.map(|t| t - fault_ms),
            take: take.map(|t| t - fault_ms),
            push: first_line(&log, from, &["result published"]).map(|t| t - fault_ms),
            ..Followed::default()
        });
    }
    let log = fleet.indexer.log();
    let switched = first_line(&log, fault_ms, &[MASTER_CHANGED]);
    let from = switched.unwrap_or(fault_ms);
    let ingest = rows
        .iter()
        .filter_map(|r| int(r, "indexed_ms"))
        .filter(|t| *t >= from)
        .min();
    out.push(Followed {
        daemon: "indexer".to_string(),
        switched: switched.map(|t| t - fault_ms),
        ingest: ingest.map(|t| t - fault_ms),
        ..Followed::default()
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-07T19:03:55.100000Z  INFO ubackup_puller: result published succeed=true
2026-12-07T19:03:56.250000Z  WARN ubackup_redis_ha::conn: redis master changed (failover followed) from=Some(\"127.0.0.1:1\") to=127.0.0.1:2
2026-12-07T19:03:57.000000Z  INFO ubackup_puller: result published succeed=true
";

    #[test]
    fn finds_the_first_line_after_a_moment() {
        let t0 = line_ms(LOG.lines().next().unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            t0 % 60_000,
            55_100,
            "19:03:55.100 is 55.1 s into its minute"
        );
        assert_eq!(
            first_line(LOG, t0 + 1, &[MASTER_CHANGED]).map(|t| t - t0),
            Some(1_150)
        );
        assert_eq!(
            first_line(LOG, t0 + 1, &["result published"]).map(|t| t - t0),
            Some(1_900)
        );
        assert_eq!(count_lines(LOG, t0, "result published"), 2);
        assert_eq!(line_ms("not a log line"), None);
    }
}
