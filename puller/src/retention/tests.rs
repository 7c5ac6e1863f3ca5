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
    // Within 3 days: f0, f1, f2.
    let mut gone = expired(&files, &rules(3, 1));
    gone.sort();
    assert_eq!(gone, ["f3", "f4", "f5", "f6", "f7", "f8", "f9"]);
    // min_fulls = 5 keeps f3 and f4 too.
    assert_eq!(expired(&files, &rules(3, 5)).len(), 5);
    // No policy for the type: nothing goes.
    assert!(expired(&files, &Retention::default()).is_empty());
    let p = decide(&files, &rules(3, 1), NOW);
    assert_eq!(p.kept, 3);
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
    // keep 2 days: d6 kept; it needs f4 only (a differential), so d5 and the old chain go.
    let mut gone = expired(&files, &rules(2, 1));
    gone.sort();
    assert_eq!(gone, ["d5", "f0", "i1", "i2", "i3"]);
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
    let mut files: Vec<Entry> = (0..5)
        .map(|d| e(&format!("f{d}"), 1, f64::from(d) + 0.5, Chain::Full))
        .collect();
    files.push(e("rebuilt", 1, 40.0, Chain::Unknown));
    let mut r = rules(2, 1);
    assert_eq!(expired(&files, &r).len(), 3);
    r.games.insert(
        ("mysql".into(), 7),
        Policy {
            keep_days: 4,
            min_fulls: 1,
            from: "retention.mysql.game.7".into(),
        },
    );
    assert_eq!(expired(&files, &r), ["f4"]);
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
        let mut prev: Option<String> = None;
        for (k, (kind, gap)) in h.iter().enumerate() {
            t += i64::from(*gap) * 3_600_000;
            let name = format!("b{k}");
            let chain = match (kind, &full) {
                (0, _) | (_, None) if *kind != 4 && *kind != 5 => Chain::Full,
                (1, Some(f)) => incr(f, prev.as_deref(), true),
                (2, Some(f)) => incr(f, None, true),
                (3, Some(f)) => incr(f, None, false),
                (5, _) => incr("missing", None, true),
                _ => Chain::Unknown,
            };
            match &chain {
                Chain::Full => {
                    full = Some(name.clone());
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
