use proptest::prelude::*;

use super::*;

pub(crate) const NOW: i64 = 1_800_000_000_000;

fn e(name: &str, instance: i64, days_ago: f64, chain: Chain) -> Entry {
    let t = NOW - (days_ago * DAY_MS as f64) as i64;
    Entry {
        path: PathBuf::from(format!("/b/{instance}/{name}")),
        filename: format!("sub/{name}"),
        server_id: "S1".into(),
        back_type: "mysql".into(),
        instance,
        game_id: Some(7),
        host: None,
        job_id: None,
        chain,
        size: 1,
        checksum: None,
        time_ms: t,
        stored_ms: t,
        unknown: Vec::new(),
    }
}

fn incr(full: &str, prev: Option<&str>, exact: bool) -> Chain {
    Chain::Incremental {
        last_all_filename: full.into(),
        last_all_time_ms: 0,
        prev_filename: prev.map(str::to_string),
        prev_time_ms: 0,
        exact,
    }
}

pub(crate) fn rules(keep_days: u32, min_fulls: u32) -> Retention {
    let mut r = Retention::default();
    r.types.insert(
        "mysql".into(),
        Policy {
            keep_days,
            min_fulls,
            from: "retention.mysql".into(),
        },
    );
    r
}

fn expired(files: &[Entry], r: &Retention) -> Vec<String> {
    decide(files, r, NOW)
        .expire
        .iter()
        .map(|x| x.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn fulls_only_keep_the_window_and_the_newest_fulls() {
    let files: Vec<Entry> = (0..10)
        .map(|d| e(&format!("f{d}"), 1, f64::from(d) + 0.5, Chain::Full))
        .collect();
    // Within 3 days: f0, f1, f2; f3 is the newest full before the window (an incremental of
    // it on another node may be in the window).
    let mut gone = expired(&files, &rules(3, 1));
    gone.sort();
    assert_eq!(gone, ["f4", "f5", "f6", "f7", "f8", "f9"]);
    // min_fulls = 5 keeps f3 and f4 too.
    assert_eq!(expired(&files, &rules(3, 5)).len(), 5);
    // No policy for the type: nothing goes.
    assert!(expired(&files, &Retention::default()).is_empty());
    let p = decide(&files, &rules(3, 1), NOW);
    assert_eq!(p.kept, 4);
    assert!(
        p.expire[0]
            .reason
            .contains("keep_days = 3 (retention.mysql)"),
        "{}",
        p.expire[0].reason
    );
}

#[test]
fn the_newest_full_and_the_newest_backup_survive_any_policy() {
    let files = vec![
        e("f-old", 1, 100.0, Chain::Full),
        e("f-new", 1, 50.0, Chain::Full),
        e("i1", 1, 49.0, incr("f-new", None, true)),
        e("i2", 1, 48.0, incr("f-new", Some("i1"), true)),
    ];
    let gone = expired(&files, &rules(1, 1));
    // i2 is the newest backup; it needs i1 and f-new.
    assert_eq!(gone, ["f-old"]);
}

#[test]
fn an_exact_chain_keeps_only_what_a_kept_incremental_needs() {
    // f0 ← i1 ← i2 ← i3 (incremental on incremental), then a new full f4 with a differential d5.
    let files = vec![
        e("f0", 1, 9.5, Chain::Full),
        e("i1", 1, 8.5, incr("f0", None, true)),
        e("i2", 1, 7.5, incr("f0", Some("i1"), true)),
        e("i3", 1, 6.5, incr("f0", Some("i2"), true)),
        e("f4", 1, 5.5, Chain::Full),
        e("d5", 1, 4.5, incr("f4", None, true)),
        e("d6", 1, 1.5, incr("f4", None, true)),
    ];
    // keep 7 days at NOW: i3 (6.5 days) is kept, and needs i2, i1, f0.
    assert!(expired(&files, &rules(7, 1)).is_empty());
    // keep 2 days: f4 is the newest full before the window, so the old chain goes; d5 stays
    // (an incremental on another node may have been taken against it).
    let mut gone = expired(&files, &rules(2, 1));
    gone.sort();
    assert_eq!(gone, ["f0", "i1", "i2", "i3"]);
    // keep 8 days: i2 is in the window and needs i1 and f0; i3 is in the window.
    assert!(expired(&files, &rules(8, 1)).is_empty());
}

#[test]
fn a_legacy_incremental_keeps_every_earlier_incremental_of_its_full() {
    let files = vec![
        e("f0", 1, 9.5, Chain::Full),
        e("i1", 1, 8.5, incr("f0", None, false)),
        e("i2", 1, 7.5, incr("f0", None, false)),
        e("i3", 1, 0.5, incr("f0", None, false)),
        e("x", 2, 30.0, Chain::Full),
        e("y", 2, 20.0, Chain::Full),
    ];
    // i3 is kept; UBackup's message cannot say what it was taken against.
    let gone = expired(&files, &rules(1, 1));
    assert_eq!(gone, ["x"]);
}

#[test]
fn business_overrides_win_over_the_type_and_unknown_chains_stay() {
    let mut files: Vec<Entry> = (0..8)
        .map(|d| e(&format!("f{d}"), 1, f64::from(d) + 0.5, Chain::Full))
        .collect();
    files.push(e("rebuilt", 1, 40.0, Chain::Unknown));
    let mut r = rules(2, 1);
    assert_eq!(expired(&files, &r).len(), 5);
    r.games.insert(
        ("mysql".into(), 7),
        Policy {
            keep_days: 4,
            min_fulls: 1,
            from: "retention.mysql.game.7".into(),
        },
    );
    assert_eq!(expired(&files, &r), ["f5", "f6", "f7"]);
    assert_eq!(r.policy("mysql", Some(8)).from, "retention.mysql");
    assert_eq!(r.policy("redis", Some(7)).from, "(no retention policy)");
}

/// One instance's history: (kind, gap in hours) with kind 0 full, 1 exact incremental on the
/// previous incremental, 2 exact differential, 3 legacy incremental, 4 unknown, 5 an
/// incremental whose full is missing.
pub(crate) fn history() -> impl Strategy<Value = Vec<(u8, u32)>> {
    prop::collection::vec((0u8..6, 1u32..60), 1..40)
}

pub(crate) fn build(histories: &[Vec<(u8, u32)>]) -> Vec<Entry> {
    let mut out = Vec::new();
    for (inst, h) in histories.iter().enumerate() {
        let mut t = NOW - 40 * DAY_MS;
        let mut full: Option<String> = None;
        let mut full_t = 0;
        let mut prev: Option<String> = None;
        for (k, (kind, gap)) in h.iter().enumerate() {
            t += i64::from(*gap) * 3_600_000;
            let name = format!("b{k}");
            let mut chain = match (kind, &full) {
                (0, _) | (_, None) if *kind != 4 && *kind != 5 => Chain::Full,
                (1, Some(f)) => incr(f, prev.as_deref(), true),
                (2, Some(f)) => incr(f, None, true),
                (3, Some(f)) => incr(f, None, false),
                (5, _) => incr("missing", None, true),
                _ => Chain::Unknown,
            };
            // v1 jobs record their full's time; UBackup's (kind 3) may not.
            if let Chain::Incremental {
                last_all_time_ms,
                exact: true,
                ..
            } = &mut chain
            {
                if *kind != 5 {
                    *last_all_time_ms = full_t;
                }
            }
            match &chain {
                Chain::Full => {
                    full = Some(name.clone());
                    full_t = t;
                    prev = None;
                }
                Chain::Incremental { .. } => prev = Some(name.clone()),
                Chain::Unknown => {}
            }
            let mut en = e(&name, inst as i64, 0.0, chain);
            en.time_ms = t;
            en.stored_ms = t;
            out.push(en);
        }
    }
    out
}

/// What `a` needs, from the rules' words, computed naively.
fn needs(group: &[&Entry], a: &Entry) -> Vec<PathBuf> {
    let Chain::Incremental {
        last_all_filename,
        prev_filename,
        exact,
        ..
    } = &a.chain
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for b in group {
        let name = leaf(&b.filename);
        let is_full_named =
            name == leaf(last_all_filename) && matches!(b.chain, Chain::Full | Chain::Unknown);
        let is_prev =
            *exact && prev_filename.as_deref().map(leaf) == Some(name) && b.path != a.path;
        let is_earlier_legacy = !*exact
            && matches!(&b.chain, Chain::Incremental { last_all_filename: f, .. } if leaf(f) == leaf(last_all_filename))
            && (b.time_ms, b.stored_ms, &b.path) < (a.time_ms, a.stored_ms, &a.path);
        if is_full_named || is_prev || is_earlier_legacy {
            out.push(b.path.clone());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Nothing a kept backup needs is deleted, the newest full survives, nothing in the window
    /// or of unknown chain goes, and whatever goes was needed by nothing kept: the kept set
    /// is exactly the closure of the rules.
    #[test]
    fn retention_keeps_exactly_the_closure_of_the_rules(
        histories in prop::collection::vec(history(), 1..4),
        keep_days in 1u32..30,
        min_fulls in 1u32..4,
        extra_days in 0i64..20,
    ) {
        let files = build(&histories);
        let r = rules(keep_days, min_fulls);
        let now = NOW + extra_days * DAY_MS;
        let plan = decide(&files, &r, now);
        let gone: std::collections::BTreeSet<PathBuf> = plan.expire.iter().map(|x| x.path.clone()).collect();
        prop_assert_eq!(plan.kept + gone.len(), files.len());
        let cutoff = now - i64::from(keep_days) * DAY_MS;
        for inst in 0..histories.len() as i64 {
            let g: Vec<&Entry> = files.iter().filter(|e| e.instance == inst).collect();
            let newest_full = g.iter().filter(|e| e.is_full()).max_by_key(|e| (e.time_ms, e.stored_ms, e.path.clone()));
            if let Some(f) = newest_full {
                prop_assert!(!gone.contains(&f.path), "the newest full went");
            }
            let mut fulls: Vec<&&Entry> = g.iter().filter(|e| e.is_full()).collect();
            fulls.sort_by_key(|e| (e.time_ms, e.stored_ms, e.path.clone()));
            let protected: Vec<PathBuf> = fulls.iter().rev().take(min_fulls as usize).map(|e| e.path.clone()).collect();
            let newest = g.iter().max_by_key(|e| (e.time_ms, e.stored_ms, e.path.clone())).unwrap();
            for a in &g {
                let kept = !gone.contains(&a.path);
                if kept {
                    for n in needs(&g, a) {
                        prop_assert!(!gone.contains(&n), "{} is kept but {} which it needs went", a.path.display(), n.display());
                    }
                } else {
                    prop_assert!(a.time_ms < cutoff);
                    prop_assert!(a.chain != Chain::Unknown);
                    // A full known to be taken after it is itself before the cutoff.
                    let superseded = g.iter().any(|b| {
                        let (t, latest) = match &b.chain {
                            Chain::Full => (b.time_ms, b.time_ms),
                            Chain::Incremental { last_all_time_ms: t, .. } if *t > 0 && *t <= b.time_ms => (*t, *t + 999),
                            _ => return false,
                        };
                        t > a.time_ms && latest < cutoff
                    });
                    prop_assert!(superseded, "{} went with no newer full before the cutoff", a.path.display());
                    prop_assert!(!protected.contains(&a.path));
                    prop_assert!(a.path != newest.path);
                    for b in &g {
                        if !gone.contains(&b.path) {
                            prop_assert!(!needs(&g, b).contains(&a.path), "{} went but kept {} needs it", a.path.display(), b.path.display());
                        }
                    }
                }
            }
        }
        // Deterministic: the dry run decides what the real run deletes.
        prop_assert_eq!(decide(files.iter().rev(), &r, now), plan);
    }
}

fn incr_at(full: &str, full_days_ago: f64, prev: Option<&str>) -> Chain {
    Chain::Incremental {
        last_all_filename: full.into(),
        last_all_time_ms: NOW - (full_days_ago * DAY_MS as f64) as i64,
        prev_filename: prev.map(str::to_string),
        prev_time_ms: 0,
        exact: true,
    }
}

#[test]
fn a_full_that_another_nodes_incremental_needs_stays() {
    // Issue 31: node 1 holds full_10d and full_2d, node 2 the incremental of full_10d taken
    // 5 days ago; keep 7 days.
    let node1 = vec![
        e("full_10d.xb", 1, 10.0, Chain::Full),
        e("full_2d.xb", 1, 2.0, Chain::Full),
    ];
    let node2 = vec![e(
        "incr_5d_of_full_10d.xb",
        1,
        5.0,
        incr_at("full_10d.xb", 10.0, None),
    )];
    assert!(expired(&node1, &rules(7, 1)).is_empty());
    assert!(expired(&node2, &rules(7, 1)).is_empty());
    // Once full_2d is itself older than the window, nothing in the window can need full_10d.
    let later = decide(&node1, &rules(7, 1), NOW + 6 * DAY_MS);
    assert_eq!(later.expire.len(), 1);
    assert!(
        later.expire[0]
            .reason
            .contains("taken before the full full_2d.xb (8.0 days ago)"),
        "{}",
        later.expire[0].reason
    );
}

#[test]
fn a_node_holding_only_incrementals_learns_of_newer_fulls_from_them() {
    let node = vec![
        e("i_12d.xb", 1, 12.0, incr_at("f_15d.xb", 15.0, None)),
        e("i_8d.xb", 1, 8.0, incr_at("f_9d.xb", 9.0, None)),
        e("i_1d.xb", 1, 1.0, incr_at("f_2d.xb", 2.0, None)),
    ];
    // f_9d (named by i_8d) is before the 7-day cutoff: i_12d cannot be needed in the window.
    let p = decide(&node, &rules(7, 1), NOW);
    assert_eq!(p.expire.len(), 1, "{p:?}");
    assert!(p.expire[0].path.ends_with("i_12d.xb"));
    assert!(
        p.expire[0].reason.contains("that a kept incremental names"),
        "{}",
        p.expire[0].reason
    );
    // Knowing of no full before the cutoff, it keeps everything.
    assert!(expired(&node, &rules(10, 1)).is_empty());
    // A recorded full time after the incremental itself is not believed.
    let mut odd = node.clone();
    if let Chain::Incremental {
        last_all_time_ms, ..
    } = &mut odd[1].chain
    {
        *last_all_time_ms = NOW;
    }
    assert!(expired(&odd, &rules(7, 1)).is_empty());
}

#[test]
fn redis_and_ssdb_dumps_have_no_chain_and_go_at_the_cutoff() {
    for ty in ["redis", "SSDB", "mysql"] {
        let files: Vec<Entry> = (0..5)
            .map(|d| {
                let mut x = e(&format!("r{d}"), 1, f64::from(d) + 0.5, Chain::Full);
                x.back_type = ty.into();
                x
            })
            .collect();
        let r = Retention {
            default: Policy {
                keep_days: 2,
                min_fulls: 1,
                from: "retention".into(),
            },
            ..Retention::default()
        };
        let mut gone = expired(&files, &r);
        gone.sort();
        if ty == "mysql" {
            // r2 is the newest full before the window.
            assert_eq!(gone, ["r3", "r4"], "{ty}");
        } else {
            assert_eq!(gone, ["r2", "r3", "r4"], "{ty}");
            assert!(decide(&files, &r, NOW).expire[0]
                .reason
                .contains("has no chain"));
        }
    }
}

/// Everything `root` needs to be restored, itself included, over every file of its instance.
fn restore_set<'a>(group: &[&'a Entry], root: &'a Entry) -> Vec<&'a Entry> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        for p in needs(group, out[i]) {
            if let Some(b) = group.iter().find(|b| b.path == p) {
                if !out.iter().any(|o| o.path == b.path) {
                    out.push(b);
                }
            }
        }
        i += 1;
    }
    out
}

/// One instance of the property below: chainless (Redis), and its history as (kind, gap in
/// minutes): 0 full, 1 incremental on the previous incremental, 2 differential (on the
/// full), 3 UBackup-form incremental (no chain record; full time recorded or not).
fn split_instance() -> impl Strategy<Value = (bool, bool, Vec<(u8, u32)>)> {
    (
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::collection::vec((0u8..4, 30u32..2880), 1..60),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Random chains over 30 days, their files spread over 2–4 nodes, each node pruning at
    /// its own times by its own skewed clock and seeing only its own files as they arrive:
    /// every restore point inside the window (of the fastest clock) is restorable from what
    /// the nodes kept together. And the rule does delete: a full with more than `min_fulls`
    /// newer fulls before the cutoff on the same node goes.
    #[test]
    fn every_restore_point_in_the_window_survives_any_split_across_nodes(
        instances in prop::collection::vec(split_instance(), 1..4),
        nodes in 2usize..=4,
        assign in prop::collection::vec(0usize..4, 240),
        skews_min in prop::collection::vec(-180i64..=180, 4),
        rounds in prop::collection::vec(prop::collection::vec(0i64..30 * 24, 0..4), 4),
        keep_days in 1u32..20,
        min_fulls in 1u32..3,
    ) {
        // The files, with their true chains.
        let mut files = Vec::new();
        for (inst, (chainless, records_time, h)) in instances.iter().enumerate() {
            let mut t = NOW - 30 * DAY_MS;
            let mut full: Option<(String, i64)> = None;
            let mut prev: Option<String> = None;
            for (k, (kind, gap)) in h.iter().enumerate() {
                t += i64::from(*gap) * 60_000;
                let name = format!("b{k}");
                let chain = match (&full, kind) {
                    (Some((f, ft)), 1..=3) if !chainless => Chain::Incremental {
                        last_all_filename: f.clone(),
                        last_all_time_ms: if *kind != 3 || *records_time { *ft } else { 0 },
                        prev_filename: if *kind == 1 { prev.clone() } else { None },
                        prev_time_ms: 0,
                        exact: *kind != 3,
                    },
                    _ => Chain::Full,
                };
                match &chain {
                    Chain::Full => {
                        full = Some((name.clone(), t));
                        prev = None;
                    }
                    _ => prev = Some(name.clone()),
                }
                let mut en = e(&name, inst as i64, 0.0, chain);
                if *chainless {
                    en.back_type = "redis".into();
                }
                en.time_ms = t;
                en.stored_ms = t;
                files.push(en);
            }
        }
        let r = Retention {
            default: Policy { keep_days, min_fulls, from: "retention".into() },
            ..Retention::default()
        };
        let skew: Vec<i64> = skews_min.iter().map(|m| m * 60_000).collect();
        let node_of = |i: usize| assign[i % assign.len()] % nodes;

        // Every node prunes at its times (hours before NOW, then NOW), by its own clock.
        let mut gone = vec![false; files.len()];
        for n in 0..nodes {
            let mut times: Vec<i64> = rounds[n].iter().map(|h| NOW - h * 3_600_000).collect();
            times.sort_unstable();
            times.push(NOW);
            for at in times {
                let held: Vec<&Entry> = files
                    .iter()
                    .enumerate()
                    .filter(|(i, f)| node_of(*i) == n && !gone[*i] && f.time_ms <= at)
                    .map(|(_, f)| f)
                    .collect();
                let plan = decide(held, &r, at + skew[n]);
                for x in &plan.expire {
                    let i = files.iter().position(|f| f.path == x.path).unwrap();
                    prop_assert_eq!(node_of(i), n);
                    gone[i] = true;
                }
            }
        }

        // Safety: from the union of what the nodes kept.
        let fastest = (0..nodes).map(|n| NOW + skew[n]).max().unwrap();
        let window = fastest - i64::from(keep_days) * DAY_MS;
        for inst in 0..instances.len() as i64 {
            let g: Vec<&Entry> = files.iter().filter(|f| f.instance == inst).collect();
            for root in g.iter().filter(|f| f.time_ms >= window) {
                for need in restore_set(&g, root) {
                    let i = files.iter().position(|f| f.path == need.path).unwrap();
                    prop_assert!(!gone[i], "{} (in the window) needs {}, deleted by node {}", root.path.display(), need.path.display(), node_of(i));
                }
            }
        }

        // Liveness: a full with min_fulls + 1 newer fulls before its node's cutoff goes.
        for (i, f) in files.iter().enumerate() {
            let n = node_of(i);
            let cutoff = NOW + skew[n] - i64::from(keep_days) * DAY_MS;
            let newer = files
                .iter()
                .enumerate()
                .filter(|(j, x)| node_of(*j) == n && x.instance == f.instance && x.is_full() && x.time_ms > f.time_ms && x.time_ms < cutoff)
                .count();
            if f.is_full() && newer > min_fulls as usize {
                prop_assert!(gone[i], "{} stayed with {newer} newer fulls before the cutoff", f.path.display());
            }
        }
    }
}
