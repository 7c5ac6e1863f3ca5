//! Retention: which stored backups expire. A pure function of the manifest, the policies and
//! a clock passed in ([`decide`]); deleting is [`crate::lifecycle::prune`]'s job.
//!
//! Nodes share one queue, so the files of one chain land on different nodes, and a node
//! decides from its own files alone. The rule is therefore one that is safe without knowing
//! what the other nodes hold. Per instance (server_id, back_type, instance), with the policy of
//! its back_type (or of its business, `game_id`, when one overrides it), at `cutoff = now -
//! keep_days`:
//!
//! 1. **Kept by rule**: every backup taken within `keep_days`; the `min_fulls` newest fulls;
//!    the newest full, whatever the policy; the newest backup of the instance (an instance
//!    whose backups stopped keeps its last restore point); every entry whose chain is unknown
//!    (rebuilt from disk: it might be any backup's full).
//! 2. **Kept because something elsewhere may need it** (every type but Redis and SSDB, whose
//!    dumps have no chains): every backup taken at or after the *anchor*, the newest full
//!    the node knows of that was taken before the cutoff. The node knows of a full by holding
//!    it, or by holding an incremental whose `last_all_filename`/`last_all_time` names it. An
//!    incremental or differential depends only on backups of its own full, and the agent takes
//!    an incremental against the newest full it has made (`last_all_log`), so whatever depends
//!    on a backup taken before the anchor was itself taken before the anchor, that is before
//!    the cutoff: no restore point in the window, on any node, can need it. A node that
//!    knows of no full before the cutoff keeps everything.
//! 3. **Kept because needed**, transitively: an incremental needs its full
//!    (`last_all_filename`) and, when the job recorded one, its previous incremental
//!    (`prev_filename`). A UBackup-format incremental carries no such record, so it is taken
//!    to need every earlier incremental of the same full (it may be incremental-on-incremental).
//! 4. Everything else expires, with the reason.
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
    /// Keep times that the configuration holds but does not apply (a legacy INI without
    /// `apply_keeptime`), and why: shown by `check-config` and at start-up.
    pub not_applied: Option<String>,
}

impl Retention {
    /// The policy for a backup type and business.
    pub fn policy(&self, back_type: &str, game_id: Option<i64>) -> &Policy {
        game_id
            .and_then(|g| self.games.get(&(back_type.to_string(), g)))
            .or_else(|| self.types.get(back_type))
            .unwrap_or(&self.default)
    }

    /// What will be deleted and when, in words, one line each (for `check-config` and the
    /// node's start-up log).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.expires_anything() {
            out.push(match &self.not_applied {
                Some(why) => format!("retention: off, nothing is ever deleted ({why})"),
                None => "retention: off, nothing is ever deleted (no keep_days is set)".into(),
            });
            return out;
        }
        let when = if self.interval.is_zero() {
            "only by `ubackup-puller prune` (retention.interval_secs = 0)".to_string()
        } else {
            format!(
                "by `run` every {} s, and by `ubackup-puller prune`",
                self.interval.as_secs()
            )
        };
        out.push(format!("retention: on; backups are deleted {when}:"));
        let line = |what: &str, ty: &str, p: &Policy| {
            if p.keep_days == 0 {
                format!(
                    "  {what}: kept for ever ({})",
                    p.from.trim_matches(['(', ')'])
                )
            } else {
                format!(
                    "  {what}: deleted once taken more than {} days ago ({}), keeping the {} newest fulls per instance{}",
                    p.keep_days,
                    p.from,
                    p.min_fulls.max(1),
                    if is_chainless(ty) {
                        ""
                    } else {
                        ", and everything from the newest full taken before that on"
                    }
                )
            }
        };
        for (ty, p) in &self.types {
            out.push(line(&format!("type {ty}"), ty, p));
        }
        for ((ty, g), p) in &self.games {
            out.push(line(&format!("type {ty}, game_id {g}"), ty, p));
        }
        out.push(line("every other type", "", &self.default));
        out
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

/// Backup types whose backups never form chains (each dump stands alone).
pub const CHAINLESS_TYPES: [&str; 2] = ["redis", "ssdb"];

/// Whether backups of `back_type` stand alone (Redis, SSDB).
pub fn is_chainless(back_type: &str) -> bool {
    CHAINLESS_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(back_type))
}

/// The newest full a node knows of that was taken before the cutoff: nothing taken before it
/// can be needed by a restore point in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Anchor<'a> {
    /// Its name (last component).
    name: &'a str,
    /// When it was taken, at the earliest (ms).
    time_ms: i64,
    /// The node holds it (rather than an incremental that names it).
    held: bool,
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
        let (keep, anchor) = keep_set(&g, policy, now_ms);
        let why_free = match &anchor {
            None => format!("a {} backup has no chain", g[0].back_type),
            Some(a) => format!(
                "taken before the full {}{} ({:.1} days ago), itself beyond the window, so no backup in the window needs it",
                a.name,
                if a.held { "" } else { " that a kept incremental names" },
                (now_ms - a.time_ms) as f64 / DAY_MS as f64
            ),
        };
        for (e, k) in g.iter().zip(&keep) {
            if *k {
                plan.kept += 1;
            } else {
                let age = (now_ms - e.time_ms) as f64 / DAY_MS as f64;
                plan.expire.push(Expiry {
                    path: e.path.clone(),
                    reason: format!(
                        "taken {age:.1} days ago, beyond keep_days = {} ({}); {why_free}; not among the {} newest fulls; no kept backup needs it",
                        policy.keep_days, policy.from, policy.min_fulls.max(1)
                    ),
                });
            }
        }
    }
    plan.expire.sort_by(|a, b| a.path.cmp(&b.path));
    plan
}

/// The anchor of one instance's entries (see the module doc), or `None` when the node knows
/// of no full taken before `cutoff`. A full's time named by an incremental
/// (`last_all_time`, whole seconds in UBackup's log) counts only when it precedes the
/// incremental, and from the end of its second.
fn find_anchor<'a>(g: &[&'a Entry], cutoff: i64) -> Option<Anchor<'a>> {
    let mut best: Option<Anchor<'a>> = None;
    let mut offer = |a: Anchor<'a>, latest: i64| {
        if latest < cutoff && best.as_ref().is_none_or(|b| a.time_ms > b.time_ms) {
            best = Some(a);
        }
    };
    for e in g {
        match &e.chain {
            Chain::Full => offer(
                Anchor {
                    name: leaf(&e.filename),
                    time_ms: e.time_ms,
                    held: true,
                },
                e.time_ms,
            ),
            Chain::Incremental {
                last_all_filename,
                last_all_time_ms,
                ..
            } if *last_all_time_ms > 0 && *last_all_time_ms <= e.time_ms => offer(
                Anchor {
                    name: leaf(last_all_filename),
                    time_ms: *last_all_time_ms,
                    held: false,
                },
                last_all_time_ms.saturating_add(999),
            ),
            _ => {}
        }
    }
    best
}

/// Which entries of one instance (sorted oldest first) stay, and the anchor that lets the
/// older ones go (`None` for a type without chains).
fn keep_set<'a>(g: &[&'a Entry], policy: &Policy, now_ms: i64) -> (Vec<bool>, Option<Anchor<'a>>) {
    let n = g.len();
    if policy.keep_days == 0 {
        return (vec![true; n], None);
    }
    let cutoff = now_ms.saturating_sub(i64::from(policy.keep_days).saturating_mul(DAY_MS));
    let chained = !is_chainless(&g[0].back_type)
        || g.iter()
            .any(|e| matches!(e.chain, Chain::Incremental { .. }));
    // A chained instance with no anchor keeps everything.
    let anchor = if chained {
        find_anchor(g, cutoff)
    } else {
        None
    };
    let keep_from = match (&anchor, chained) {
        (Some(a), _) => a.time_ms,
        (None, true) => i64::MIN,
        (None, false) => cutoff,
    };
    let mut keep = vec![false; n];
    let mut stack = Vec::new();
    let mark = |i: usize, keep: &mut Vec<bool>, stack: &mut Vec<usize>| {
        if !keep[i] {
            keep[i] = true;
            stack.push(i);
        }
    };
    for (i, e) in g.iter().enumerate() {
        if e.time_ms >= cutoff || e.time_ms >= keep_from || e.chain == Chain::Unknown {
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
    (keep, anchor)
}

#[cfg(test)]
pub(crate) mod tests;
