//! Retention: which stored backups expire. A pure function of the manifest, the policies and
//! a clock passed in ([`decide`]); deleting is [`crate::lifecycle::prune`]'s job.
//!
//! Per instance (server_id, back_type, instance), with the policy of its back_type (or of its
//! business, `game_id`, when one overrides it):
//!
//! 1. **Kept by rule**: every backup taken within `keep_days`; the `min_fulls` newest fulls;
//!    the newest full, whatever the policy; the newest backup of the instance (an instance
//!    whose backups stopped keeps its last restore point); every entry whose chain is unknown
//!    (rebuilt from disk: it might be any backup's full).
//! 2. **Kept because needed**, transitively: an incremental needs its full
//!    (`last_all_filename`) and, when the job recorded one, its previous incremental
//!    (`prev_filename`). A UBackup-format incremental carries no such record, so it is taken
//!    to need every earlier incremental of the same full (it may be incremental-on-incremental).
//! 3. Everything else expires, with the reason.
//!
//! `keep_days = 0` keeps everything of that type (the default: nothing expires unless a
//! policy says so). File names are matched within the instance by their last path component,
//! as the node stores them; a name that matches several files keeps them all.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use crate::manifest::{Chain, Entry};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// A keep policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Keep backups taken within this many days (0 = keep everything).
    pub keep_days: u32,
    /// Keep at least this many fulls per instance (the newest full is kept regardless).
    pub min_fulls: u32,
    /// The configuration key this policy came from (for the reasons printed).
    pub from: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_days: 0,
            min_fulls: 1,
            from: "(no retention policy)".into(),
        }
    }
}

/// The node's retention configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retention {
    /// For types with no policy of their own.
    pub default: Policy,
    /// Per back_type.
    pub types: BTreeMap<String, Policy>,
    /// Per (back_type, game_id): a business's override.
    pub games: BTreeMap<(String, i64), Policy>,
    /// How often `run` prunes (zero: never).
    pub interval: Duration,
}

impl Retention {
    /// The policy for a backup type and business.
    pub fn policy(&self, back_type: &str, game_id: Option<i64>) -> &Policy {
        game_id
            .and_then(|g| self.games.get(&(back_type.to_string(), g)))
            .or_else(|| self.types.get(back_type))
            .unwrap_or(&self.default)
    }

    /// Whether any policy can expire anything.
    pub fn expires_anything(&self) -> bool {
        self.default.keep_days > 0
            || self.types.values().any(|p| p.keep_days > 0)
            || self.games.values().any(|p| p.keep_days > 0)
    }
}

/// One backup to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The file.
    pub path: PathBuf,
    /// Why it goes.
    pub reason: String,
}

/// The decision over a whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// What goes, by path.
    pub expire: Vec<Expiry>,
    /// How many stay.
    pub kept: usize,
}

fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Decides what expires at `now_ms`.
pub fn decide<'a>(
    files: impl IntoIterator<Item = &'a Entry>,
    rules: &Retention,
    now_ms: i64,
) -> Plan {
    let mut groups: HashMap<(&str, &str, i64), Vec<&Entry>> = HashMap::new();
    for e in files {
        groups
            .entry((e.server_id.as_str(), e.back_type.as_str(), e.instance))
            .or_default()
            .push(e);
    }
    let mut plan = Plan::default();
    for (_, mut g) in groups {
        g.sort_by(|a, b| (a.time_ms, a.stored_ms, &a.path).cmp(&(b.time_ms, b.stored_ms, &b.path)));
        let newest_game = g.last().and_then(|e| e.game_id);
        let policy = rules.policy(&g[0].back_type, newest_game);
        let keep = keep_set(&g, policy, now_ms);
        for (e, k) in g.iter().zip(&keep) {
            if *k {
                plan.kept += 1;
            } else {
                let age = (now_ms - e.time_ms) as f64 / DAY_MS as f64;
                plan.expire.push(Expiry {
                    path: e.path.clone(),
                    reason: format!(
                        "taken {age:.1} days ago, beyond keep_days = {} ({}); not among the {} newest fulls; no kept backup needs it",
                        policy.keep_days, policy.from, policy.min_fulls.max(1)
                    ),
                });
            }
        }
    }
    plan.expire.sort_by(|a, b| a.path.cmp(&b.path));
    plan
}

/// Which entries of one instance (sorted oldest first) stay.
fn keep_set(g: &[&Entry], policy: &Policy, now_ms: i64) -> Vec<bool> {
    let n = g.len();
    if policy.keep_days == 0 {
        return vec![true; n];
    }
    let cutoff = now_ms.saturating_sub(i64::from(policy.keep_days).saturating_mul(DAY_MS));
    let mut keep = vec![false; n];
    let mut stack = Vec::new();
    let mark = |i: usize, keep: &mut Vec<bool>, stack: &mut Vec<usize>| {
        if !keep[i] {
            keep[i] = true;
            stack.push(i);
        }
    };
    for (i, e) in g.iter().enumerate() {
        if e.time_ms >= cutoff || e.chain == Chain::Unknown {
            mark(i, &mut keep, &mut stack);
        }
    }
    let fulls: Vec<usize> = (0..n).filter(|&i| g[i].is_full()).collect();
    for &i in fulls.iter().rev().take(policy.min_fulls.max(1) as usize) {
        mark(i, &mut keep, &mut stack);
    }
    if n > 0 {
        mark(n - 1, &mut keep, &mut stack);
    }

    // Name index (last component) and, per full name, the incrementals in time order.
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut incr_of: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut pos_in_incr = vec![0usize; n];
    for (i, e) in g.iter().enumerate() {
        by_name.entry(leaf(&e.filename)).or_default().push(i);
        if let Chain::Incremental {
            last_all_filename, ..
        } = &e.chain
        {
            let v = incr_of.entry(leaf(last_all_filename)).or_default();
            pos_in_incr[i] = v.len();
            v.push(i);
        }
    }
    // Per full name: incrementals [0, done) are already all kept.
    let mut done: HashMap<&str, usize> = HashMap::new();
    while let Some(i) = stack.pop() {
        let Chain::Incremental {
            last_all_filename,
            prev_filename,
            exact,
            ..
        } = &g[i].chain
        else {
            continue;
        };
        let full = leaf(last_all_filename);
        for &j in by_name.get(full).map(Vec::as_slice).unwrap_or_default() {
            if g[j].is_full() || g[j].chain == Chain::Unknown {
                mark(j, &mut keep, &mut stack);
            }
        }
        if *exact {
            if let Some(prev) = prev_filename {
                for &j in by_name
                    .get(leaf(prev))
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    if j != i {
                        mark(j, &mut keep, &mut stack);
                    }
                }
            }
        } else {
            let list = &incr_of[full];
            let from = done.get(full).copied().unwrap_or(0);
            let upto = pos_in_incr[i];
            for &j in list.get(from..upto).unwrap_or_default() {
                mark(j, &mut keep, &mut stack);
            }
            if upto > from {
                done.insert(full, upto);
            }
        }
    }
    keep
}

#[cfg(test)]
pub(crate) mod tests;
