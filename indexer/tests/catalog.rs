//! The catalog on both engines (SQLite in a temp file; PostgreSQL started by the testkit):
//! idempotent ingest, history order and paging, node events, restore plans with holes,
//! pruning (whole PostgreSQL months), registry import, statistics, users and tokens, and two
//! indexers writing the same results into one PostgreSQL.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use support::*;
use ubackup_indexer::catalog::*;
use ubackup_messages::{EventKind, NodeEvent};
use ubackup_testkit::Postgres;

fn key(server: &str, instance: i64) -> InstanceKey {
    InstanceKey::new(server, "MySQL", instance)
}

fn event(kind: EventKind, r: &Record, at: i64) -> Ingest {
    Ingest::Event(Box::new(NodeEvent {
        event: kind,
        node_id: r.node_id.clone(),
        back_server_ip: r.back_server_ip.clone(),
        server_id: r.server_id.clone(),
        back_type: r.back_type.clone(),
        instance: r.instance,
        file_path: r.file_path.clone().unwrap(),
        filename: r.filename.clone().unwrap(),
        job_id: Some(r.job_id.clone()),
        size: None,
        checksum: None,
        at_ms: at,
        reason: "scrub".into(),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_idempotent_and_history_pages_newest_first() {
    let pg = Postgres::start();
    for db in both(&pg, "hist").await {
        let c = db.dyn_catalog();
        let recs: Vec<Record> = (0..30)
            .map(|i| full("S1", 3306, &format!("f{i}"), T0 + i * HOUR))
            .chain([failed("S1", 3306, T0 + 40 * HOUR, "rsync failure: refused")])
            .collect();
        let out = c.ingest(&items(&recs), T0).await.unwrap();
        assert_eq!((out.inserted, out.duplicates), (31, 0), "{}", db.name);
        // A replay of the same batch (a crash before the processing list was trimmed).
        let out = c.ingest(&items(&recs), T0).await.unwrap();
        assert_eq!((out.inserted, out.duplicates), (0, 31), "{}", db.name);
        let page1 = c
            .history(
                &key("S1", 3306),
                Page {
                    offset: 0,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(page1.len(), 10);
        assert!(!page1[0].record.succeed);
        assert_eq!(page1[1].record.filename.as_deref(), Some("f29"));
        let page3 = c
            .history(
                &key("S1", 3306),
                Page {
                    offset: 30,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(page3.len(), 1);
        assert_eq!(page3[0].record.filename.as_deref(), Some("f0"));
        let one = c.backup(page1[1].id).await.unwrap().unwrap();
        assert_eq!(one.record, recs[29], "{}: every field round-trips", db.name);
        let states = c.instance_states().await.unwrap();
        assert_eq!(states.len(), 1);
        assert!(!states[0].last_succeed);
        assert_eq!(states[0].last_ok_ms, T0 + 29 * HOUR);
        assert_eq!(states[0].last_log, "rsync failure: refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_mark_rows_and_restore_plans_report_holes() {
    let pg = Postgres::start();
    for db in both(&pg, "restore").await {
        let c = db.dyn_catalog();
        // UBackup's shape: a full and differential incrementals naming only the full.
        let f = full("S1", 1, "full1", T0);
        let i1 = incr("S1", 1, "inc1", T0 + HOUR, "full1", T0);
        let i2 = incr("S1", 1, "inc2", T0 + 2 * HOUR, "full1", T0);
        let i3 = incr("S1", 1, "inc3", T0 + 3 * HOUR, "full1", T0);
        c.ingest(&items(&[f.clone(), i1.clone(), i2.clone(), i3.clone()]), T0)
            .await
            .unwrap();
        let k = key("S1", 1);
        let plan = ubackup_indexer::restore::plan(&*c, &k, T0 + 2 * HOUR + 1)
            .await
            .unwrap();
        let names: Vec<_> = plan
            .steps
            .iter()
            .map(|s| s.filename.clone().unwrap())
            .collect();
        assert_eq!(names, ["full1", "inc1", "inc2"], "{}", db.name);
        assert!(plan.complete);
        assert_eq!(plan.steps[0].kind, ubackup_messages::StepKind::Full);
        assert_eq!(plan.steps[0].checksum.as_deref(), Some("xxh128:full1"));
        assert_eq!(plan.steps[0].node_id, "node-1");
        // inc3 corrupt: the plan for the latest time falls back to inc2; inc1 expired: a hole.
        let out = c
            .ingest(
                &[
                    event(EventKind::Corrupt, &i3, T0 + 5 * HOUR),
                    event(EventKind::Expired, &i1, T0 + 5 * HOUR),
                ],
                T0,
            )
            .await
            .unwrap();
        assert_eq!((out.marked, out.unmatched_events), (2, 0), "{}", db.name);
        let plan = ubackup_indexer::restore::plan(&*c, &k, T0 + 10 * HOUR)
            .await
            .unwrap();
        assert_eq!(plan.steps.last().unwrap().filename.as_deref(), Some("inc2"));
        assert!(!plan.complete);
        assert_eq!(plan.holes.len(), 1, "{:?}", plan.holes);
        assert_eq!(
            (
                plan.holes[0].filename.as_str(),
                plan.holes[0].reason.as_str()
            ),
            ("inc1", "expired")
        );
        let st = c.instance_states().await.unwrap();
        assert_eq!(st[0].last_corrupt_ms, T0 + 5 * HOUR);
        // An event for a file the catalog never saw is counted, not an error.
        let ghost = full("S1", 1, "ghost", T0);
        let out = c
            .ingest(&[event(EventKind::Expired, &ghost, T0)], T0)
            .await
            .unwrap();
        assert_eq!(out.unmatched_events, 1);

        // v1 shape: incremental on incremental, linked by prev_filename.
        let f = full("S2", 1, "F", T0);
        let a = incr("S2", 1, "A", T0 + HOUR, "F", T0);
        let mut b = incr("S2", 1, "B", T0 + 2 * HOUR, "F", T0);
        b.prev_filename = Some("A".into());
        b.prev_time = T0 + HOUR;
        let mut x = incr("S2", 1, "X", T0 + 3 * HOUR, "F", T0);
        x.prev_filename = Some("B".into());
        c.ingest(&items(&[f, a, b, x]), T0).await.unwrap();
        let plan = ubackup_indexer::restore::plan(&*c, &key("S2", 1), T0 + 4 * HOUR)
            .await
            .unwrap();
        let names: Vec<_> = plan
            .steps
            .iter()
            .map(|s| s.filename.clone().unwrap())
            .collect();
        assert_eq!(names, ["F", "A", "B", "X"], "{}", db.name);
        assert!(plan.complete);
        // The full missing entirely: a hole, and the broken chain is found.
        let lone = incr("S3", 1, "L", T0, "nofull", T0 - DAY);
        c.ingest(&items(&[lone]), T0).await.unwrap();
        let plan = ubackup_indexer::restore::plan(&*c, &key("S3", 1), T0 + HOUR)
            .await
            .unwrap();
        assert_eq!(plan.holes[0].reason, "missing");
        let broken = c.broken_chains().await.unwrap();
        assert!(
            broken
                .iter()
                .any(|(k, f)| k == &key("S3", 1) && f == "nofull"),
            "{broken:?}"
        );
        assert!(!broken.iter().any(|(k, _)| k == &key("S2", 1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prunes_old_rows_and_drops_whole_postgres_months() {
    let pg = Postgres::start();
    for db in both(&pg, "prune").await {
        let c = db.dyn_catalog();
        let recs: Vec<Record> = (0..90)
            .map(|d| full("S1", 1, &format!("d{d}"), T0 + d * DAY))
            .collect();
        c.ingest(&items(&recs), T0).await.unwrap();
        let cutoff = T0 + 60 * DAY;
        let removed = c.prune(cutoff).await.unwrap();
        assert_eq!(removed, 60, "{}", db.name);
        let left = c
            .history(
                &key("S1", 1),
                Page {
                    offset: 0,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        assert_eq!(left.len(), 30);
        assert!(left.iter().all(|b| b.record.create_time >= cutoff));
        if db.name == "postgres" {
            let parts: Vec<String> =
                sqlx::query_scalar(ubackup_indexer::catalog::sql::LIST_PARTITIONS)
                    .fetch_all(db.catalog.pool())
                    .await
                    .unwrap();
            // 2023-11 and 2023-12 are gone whole; January 2024 was cut row by row.
            assert!(
                !parts.contains(&"backups_y2023m11".to_string()),
                "{parts:?}"
            );
            assert!(
                !parts.contains(&"backups_y2023m12".to_string()),
                "{parts:?}"
            );
            assert!(parts.contains(&"backups_y2024m02".to_string()), "{parts:?}");
            // Writing into a dropped month again recreates it.
            c.ingest(&items(&[full("S1", 1, "late", T0)]), T0)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_import_stats_users_and_alert_rows() {
    let pg = Postgres::start();
    for db in both(&pg, "misc").await {
        let c = db.dyn_catalog();
        let mut imp = ubackup_indexer::registry::parse_csv("id,name\n1,MySQL\n2,Redis\n").unwrap();
        imp.extend(
            ubackup_indexer::registry::parse_csv("id\tbusiness_id\tname\n3\t7\tgame7\n").unwrap(),
        );
        imp.extend(ubackup_indexer::registry::parse_csv("10\tdb\tS1\t1\t3\t3306\n").unwrap());
        imp.extend(ubackup_indexer::registry::parse_batch_lines("cache S2 2 6379 7\n").unwrap());
        let a = ubackup_indexer::registry::apply(&*c, imp, T0)
            .await
            .unwrap();
        assert_eq!((a.types, a.businesses, a.instances), (2, 1, 2));
        let inst = c.instances().await.unwrap();
        assert_eq!(inst.len(), 2);
        assert_eq!(inst[0].key, key("S1", 3306));
        assert_eq!(inst[0].business_id, Some(7));
        assert_eq!(inst[1].key, InstanceKey::new("S2", "redis", 6379));
        // An unknown type id applies nothing.
        let bad = ubackup_indexer::registry::parse_batch_lines("x S9 99 1 7\n").unwrap();
        assert!(ubackup_indexer::registry::apply(&*c, bad, T0)
            .await
            .is_err());
        assert_eq!(c.instances().await.unwrap().len(), 2);

        // Statistics.
        let mut recs = vec![];
        for i in 0..10 {
            let mut r = full("S1", 3306, &format!("s{i}"), T0 + i * 1000);
            r.duration_ms = (i + 1) * 100;
            r.node_id = if i % 2 == 0 {
                "n-a".into()
            } else {
                "n-b".into()
            };
            recs.push(r);
        }
        recs.push(failed("S1", 3306, T0 + DAY, "boom"));
        c.ingest(&items(&recs), T0).await.unwrap();
        let by_day = c.stats(StatsBy::Day, T0 - DAY, T0 + 2 * DAY).await.unwrap();
        assert_eq!(by_day.len(), 2, "{by_day:?}");
        assert_eq!(
            (by_day[0].group.as_str(), by_day[0].count, by_day[0].bytes),
            ("2023-11-14", 10, 10_000)
        );
        assert!(
            (450.0..=600.0).contains(&by_day[0].duration_p50_ms),
            "{}: {by_day:?}",
            db.name
        );
        assert!(by_day[0].duration_p95_ms >= 900.0, "{by_day:?}");
        assert_eq!(by_day[1].failures, 1);
        let by_node = c
            .stats(StatsBy::Node, T0 - DAY, T0 + 2 * DAY)
            .await
            .unwrap();
        assert_eq!(
            by_node.iter().map(|r| r.group.as_str()).collect::<Vec<_>>(),
            ["n-a", "n-b", "node-1"]
        );
        let by_biz = c
            .stats(StatsBy::Business, T0 - DAY, T0 + 2 * DAY)
            .await
            .unwrap();
        assert_eq!(by_biz[0].group, "7");

        // Users and tokens.
        let id = c
            .put_user("ann", Role::Operator, "$argon2id$x", T0)
            .await
            .unwrap();
        c.add_token(id, "h1", T0, T0 + DAY).await.unwrap();
        assert_eq!(
            c.user_by_token("h1", T0).await.unwrap().unwrap().role,
            Role::Operator
        );
        assert!(c.user_by_token("h2", T0).await.unwrap().is_none());
        assert!(
            c.user_by_token("h1", T0 + DAY).await.unwrap().is_none(),
            "expired"
        );
        // Same password and role: tokens stay; a new password or role removes them.
        c.put_user("ann", Role::Operator, "$argon2id$x", T0)
            .await
            .unwrap();
        assert!(c.user_by_token("h1", T0).await.unwrap().is_some());
        c.put_user("ann", Role::Viewer, "$argon2id$x", T0)
            .await
            .unwrap();
        assert!(c.user_by_token("h1", T0).await.unwrap().is_none());
        c.add_token(id, "h3", T0, T0 + DAY).await.unwrap();
        c.put_user("ann", Role::Operator, "$argon2id$y", T0)
            .await
            .unwrap();
        assert!(c.user_by_token("h3", T0).await.unwrap().is_none());
        c.set_focus(id, "[7]").await.unwrap();
        assert_eq!(c.user("ann").await.unwrap().unwrap().focus_business, "[7]");

        // One open alert per (rule, subject).
        let a = NewAlert {
            rule: "overdue".into(),
            subject: "S1:mysql:1".into(),
            message: "m".into(),
            ..Default::default()
        };
        assert!(c.open_alert(&a, T0).await.unwrap().is_some());
        assert!(c.open_alert(&a, T0 + 1).await.unwrap().is_none());
        assert_eq!(c.open_alerts().await.unwrap().len(), 1);
        assert!(c
            .resolve_alert("overdue", "S1:mysql:1", T0 + 2)
            .await
            .unwrap()
            .is_some());
        assert!(
            c.open_alert(&a, T0 + 3).await.unwrap().is_some(),
            "reopens as a new alert"
        );
        assert_eq!(c.alerts(&AlertFilter::default()).await.unwrap().len(), 2);
        c.audit(T0, "ann", "x", "{}").await.unwrap();
        assert_eq!(c.audit_log(10).await.unwrap()[0].user, "ann");
    }
}

/// The dashboard's bounded alert queries (state judged in SQL, focus first, paging, count, one
/// alert by id, distinct open rules) and the per-business instance count, on both engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_pages_counts_and_single_lookups() {
    let pg = Postgres::start();
    for db in both(&pg, "alertpages").await {
        let c = db.dyn_catalog();
        let mut ids = Vec::new();
        for i in 0..30i64 {
            let a = NewAlert {
                rule: if i < 20 { "overdue" } else { "script_error" }.into(),
                subject: format!("S{i}:mysql:3306"),
                game_id: Some(if i % 10 == 0 { 7 } else { 8 }),
                message: "m".into(),
                ..Default::default()
            };
            ids.push(c.open_alert(&a, T0 + i).await.unwrap().unwrap().id);
        }
        assert!(c.ack_alert(ids[1], "ann", T0 + 100).await.unwrap());
        assert!(c.silence_alert(ids[2], T0 + 10_000, "ann").await.unwrap());
        // A silence that has ended counts as open again.
        assert!(c.silence_alert(ids[3], T0 + 50, "ann").await.unwrap());
        c.resolve_alert("overdue", "S4:mysql:3306", T0 + 100)
            .await
            .unwrap()
            .unwrap();
        let f = |state, offset, limit| AlertFilter {
            state,
            now_ms: T0 + 1000,
            offset,
            limit: Some(limit),
            first_businesses: vec![7],
            ..AlertFilter::default()
        };
        let n = |state| {
            let c = c.clone();
            async move { c.count_alerts(&f(Some(state), 0, 1)).await.unwrap() }
        };
        assert_eq!(n(AlertState::Open).await, 27, "{}", db.name);
        assert_eq!(n(AlertState::Acked).await, 1);
        assert_eq!(n(AlertState::Silenced).await, 1);
        assert_eq!(n(AlertState::Resolved).await, 1);
        assert_eq!(c.count_alerts(&f(None, 0, 1)).await.unwrap(), 30);
        // Focus business 7 first (S0, S10, S20, newest first), then the rest newest first.
        let p1 = c.alerts(&f(Some(AlertState::Open), 0, 5)).await.unwrap();
        let subj: Vec<&str> = p1.iter().map(|a| a.subject.as_str()).collect();
        assert_eq!(
            subj,
            [
                "S20:mysql:3306",
                "S10:mysql:3306",
                "S0:mysql:3306",
                "S29:mysql:3306",
                "S28:mysql:3306"
            ],
            "{}",
            db.name
        );
        let last = c.alerts(&f(Some(AlertState::Open), 25, 5)).await.unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].subject, "S5:mysql:3306");
        assert_eq!(last[1].subject, "S3:mysql:3306", "silence ended: open");
        let rule_only = AlertFilter {
            rule: Some("script_error".into()),
            ..f(Some(AlertState::Open), 0, 100)
        };
        assert_eq!(c.count_alerts(&rule_only).await.unwrap(), 10);
        // One alert by id, resolved or not.
        let r = c.alert(ids[4]).await.unwrap().unwrap();
        assert_eq!(r.subject, "S4:mysql:3306");
        assert!(r.resolved_ms.is_some());
        assert!(c.alert(-1).await.unwrap().is_none());
        let mut rules = c.open_alert_rules().await.unwrap();
        rules.sort();
        assert_eq!(rules, ["overdue", "script_error"]);

        let imp = ubackup_indexer::registry::parse_batch_lines(
            "a S1 1 3306 7\nb S2 1 3306 7\nc S3 1 3306 9\n",
        )
        .unwrap();
        let mut all = ubackup_indexer::registry::parse_csv("id,name\n1,MySQL\n").unwrap();
        all.extend(imp);
        ubackup_indexer::registry::apply(&*c, all, T0)
            .await
            .unwrap();
        let mut per = c.instances_per_business().await.unwrap();
        per.sort();
        assert_eq!(per, [(7, 2), (9, 1)], "{}", db.name);
    }
}

/// The alert list at scale: groups with counts and their newest alerts in one query, bulk
/// ack, silence and end of silence by filter or by selection (bounded by the id counted at
/// confirmation), and the silences as the dashboard lists and ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_groups_bulk_actions_and_silences() {
    let pg = Postgres::start();
    for db in both(&pg, "alertbulk").await {
        let c = db.dyn_catalog();
        // 60 alerts: 40 overdue (hosts h0..h3, business 7 or 8), 20 script_error (host h9,
        // no business).
        let mut ids = Vec::new();
        for i in 0..60i64 {
            let a = NewAlert {
                rule: if i < 40 { "overdue" } else { "script_error" }.into(),
                subject: format!("S{i}:mysql:3306"),
                game_id: (i < 40).then_some(if i % 2 == 0 { 7 } else { 8 }),
                game_server_ip: Some(if i < 40 {
                    format!("h{}", i % 4)
                } else {
                    "h9".into()
                }),
                message: format!("m{i}"),
                ..Default::default()
            };
            ids.push(c.open_alert(&a, T0 + i).await.unwrap().unwrap().id);
        }
        let open = AlertFilter {
            state: Some(AlertState::Open),
            now_ms: T0 + 1000,
            ..AlertFilter::default()
        };
        let g = c
            .alert_groups(&open, AlertGroupBy::Rule, 10, 0)
            .await
            .unwrap();
        assert_eq!((g.group_count, g.alert_count), (2, 60), "{}", db.name);
        let groups = g.groups;
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.key.as_str(), g.count))
                .collect::<Vec<_>>(),
            [("overdue", 40), ("script_error", 20)],
            "{}",
            db.name
        );
        assert_eq!(groups[0].newest_ms, T0 + 39);
        let biz = c
            .alert_groups(&open, AlertGroupBy::Business, 2, 0)
            .await
            .unwrap();
        assert_eq!(biz.group_count, 3, "7, 8 and none: {}", db.name);
        assert_eq!(biz.groups.len(), 2, "limited");
        assert_eq!(biz.groups[0].count, 20);
        // Three groups of 20, ties by key: "" (no business), "7", "8".
        let last = c
            .alert_groups(&open, AlertGroupBy::Business, 10, 2)
            .await
            .unwrap();
        assert_eq!(last.groups.len(), 1);
        assert_eq!(last.groups[0].key, "8", "{}", db.name);
        assert_eq!((last.group_count, last.alert_count), (3, 60));
        // A page past the last still has the totals.
        let past = c
            .alert_groups(&open, AlertGroupBy::Business, 10, 30)
            .await
            .unwrap();
        assert!(past.groups.is_empty());
        assert_eq!((past.group_count, past.alert_count), (3, 60), "{}", db.name);
        let hosts = c
            .alert_groups(&open, AlertGroupBy::Host, 10, 0)
            .await
            .unwrap();
        assert_eq!(hosts.group_count, 5);
        let hosts = hosts.groups;
        assert_eq!((hosts[0].key.as_str(), hosts[0].count), ("h9", 20));
        // Bulk ack of the selection [0, 1, 2] within rule overdue: 3 change; again: none.
        let overdue = AlertFilter {
            rule: Some("overdue".into()),
            ..open.clone()
        };
        let sel = [ids[0], ids[1], ids[2], ids[45]];
        assert_eq!(
            c.count_bulk(&overdue, Some(&sel), BulkAction::Ack, T0 + 1000)
                .await
                .unwrap(),
            3,
            "the script_error one is outside the filter: {}",
            db.name
        );
        let n = c
            .bulk_alerts(&overdue, Some(&sel), BulkAction::Ack, "ann", T0 + 1000)
            .await
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            c.bulk_alerts(&overdue, Some(&sel), BulkAction::Ack, "ann", T0 + 1000)
                .await
                .unwrap(),
            0,
            "already acknowledged"
        );
        assert_eq!(
            c.alert(ids[1]).await.unwrap().unwrap().acked_by.as_deref(),
            Some("ann")
        );
        // Filter-wide ack bounded by the id counted at confirmation: an alert opened after
        // the count is left open.
        let max_id = c.max_alert_id().await.unwrap();
        assert_eq!(max_id, ids[59]);
        let late = c
            .open_alert(
                &NewAlert {
                    rule: "overdue".into(),
                    subject: "LATE:mysql:1".into(),
                    message: "late".into(),
                    ..Default::default()
                },
                T0 + 500,
            )
            .await
            .unwrap()
            .unwrap();
        let confirmed = AlertFilter {
            max_id: Some(max_id),
            ..overdue.clone()
        };
        assert_eq!(
            c.count_bulk(&confirmed, None, BulkAction::Ack, T0 + 1000)
                .await
                .unwrap(),
            37
        );
        assert_eq!(
            c.bulk_alerts(&confirmed, None, BulkAction::Ack, "bob", T0 + 1000)
                .await
                .unwrap(),
            37,
            "{}",
            db.name
        );
        assert!(c.alert(late.id).await.unwrap().unwrap().acked_ms.is_none());
        assert_eq!(
            c.count_alerts(&overdue).await.unwrap(),
            1,
            "only the late one"
        );

        // Silence every script_error on host h9 for an hour, then list and end it.
        let h9 = AlertFilter {
            host: Some("h9".into()),
            ..open.clone()
        };
        let until = T0 + 1000 + 3_600_000;
        assert_eq!(
            c.bulk_alerts(
                &h9,
                None,
                BulkAction::Silence { until_ms: until },
                "cy",
                T0 + 1000
            )
            .await
            .unwrap(),
            20
        );
        assert!(c.silence_alert(ids[10], until + 5, "dee").await.unwrap());
        let sil = c.silences(T0 + 1000, 100).await.unwrap();
        assert_eq!(
            sil,
            [
                SilenceGroup {
                    rule: "script_error".into(),
                    silenced_by: "cy".into(),
                    until_ms: until,
                    count: 20
                },
                SilenceGroup {
                    rule: "overdue".into(),
                    silenced_by: "dee".into(),
                    until_ms: until + 5,
                    count: 1
                }
            ],
            "{}",
            db.name
        );
        assert_eq!(c.count_alerts(&h9).await.unwrap(), 0, "silenced");
        assert_eq!(
            c.cancel_silence("script_error", "cy", until, T0 + 2000)
                .await
                .unwrap(),
            20
        );
        assert_eq!(c.count_alerts(&h9).await.unwrap(), 20, "open again");
        // End silences by filter: the one left.
        let silenced = AlertFilter {
            state: Some(AlertState::Silenced),
            ..open.clone()
        };
        assert_eq!(
            c.bulk_alerts(&silenced, None, BulkAction::Unsilence, "ann", T0 + 2000)
                .await
                .unwrap(),
            1
        );
        assert!(c.silences(T0 + 2000, 100).await.unwrap().is_empty());
        // An empty selection changes nothing.
        assert_eq!(
            c.bulk_alerts(&open, Some(&[]), BulkAction::Ack, "ann", T0)
                .await
                .unwrap(),
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_indexers_on_one_postgres_write_each_result_once() {
    let Some(pg) = Postgres::start() else { return };
    let a = postgres(&pg, "two").await;
    let b = Arc::new(SqlCatalog::connect(&a.url, 4).await.unwrap());
    // Both see every result (a replay race): 2,000 results, in overlapping batches, over
    // three months (partitions created concurrently).
    let recs: Vec<Record> = (0..2000)
        .map(|i| full("S1", i % 50, &format!("f{i}"), T0 + i * 3_600_000))
        .collect();
    let mut handles = vec![];
    for c in [a.catalog.clone(), b.clone()] {
        let recs = recs.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            for chunk in recs.chunks(100) {
                n += c.ingest(&items(chunk), T0).await.unwrap().inserted;
            }
            n
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, 2000);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backups")
        .fetch_one(a.catalog.pool())
        .await
        .unwrap();
    assert_eq!(count, 2000);
}

/// `ubackup-indexer registry import` run once per file on exports as docs/migration.md makes
/// them (`mysql -B`: tab-separated with a header line), in its order: business, then
/// backup_type, then backup_instance. Returns the command's stdout, or its stderr on failure.
fn cli_import(dir: &std::path::Path, url: &str, file: &str, text: &str) -> Result<String, String> {
    let cfg = dir.join("indexer.toml");
    std::fs::write(&cfg, format!("[catalog]\nurl = \"{url}\"\n")).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ubackup-indexer"))
        .args(["registry", "import", "--config"])
        .arg(&cfg)
        .arg(&path)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_tables_import_one_file_at_a_time() {
    let pg = Postgres::start();
    for db in both(&pg, "three_imports").await {
        let dir = tempfile::tempdir().unwrap();
        let import = |file: &str, text: &str| cli_import(dir.path(), &db.url, file, text);
        // UBackup's row ids are not its business ids (nor in the same order).
        let out = import(
            "business.tsv",
            "id\tbusiness_id\tname\n1\t107\tGame One\n2\t205\tGame Two\n5\t300\tGame Five\n",
        )
        .unwrap();
        assert!(out.contains("imported 3 businesses"), "{}: {out}", db.name);
        let out = import("backup_type.tsv", "id\tname\n1\tmysql\n2\tredis\n").unwrap();
        assert!(out.contains("2 backup types"), "{}: {out}", db.name);
        let out = import(
            "backup_instance.tsv",
            "id\tname\tserver_id\tbackup_type_id\tbusiness_id\tinstance\n\
             10\tdb1\tS1\t1\t1\t3306\n11\tcache1\tS1\t2\t2\t6379\n12\t\\N\tS2\t1\t5\t3307\n",
        )
        .unwrap_or_else(|e| panic!("{}: the third import failed: {e}", db.name));
        assert!(out.contains("3 instances"), "{}: {out}", db.name);
        let c = db.dyn_catalog();
        let got: Vec<(String, String, i64, Option<i64>)> = c
            .instances()
            .await
            .unwrap()
            .into_iter()
            .map(|i| {
                (
                    i.key.server_id,
                    i.key.type_key,
                    i.key.instance,
                    i.business_id,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("S1".into(), "mysql".into(), 3306, Some(107)),
                ("S1".into(), "redis".into(), 6379, Some(205)),
                ("S2".into(), "mysql".into(), 3307, Some(300)),
            ],
            "{}",
            db.name
        );
        assert_eq!(
            c.business_row_ids().await.unwrap(),
            [(1, 107), (2, 205), (5, 300)],
            "{}",
            db.name
        );

        // A row id nothing was imported with: refused, naming the row and what to do, and
        // nothing of that file is written.
        let e = import(
            "backup_instance.tsv",
            "id\tname\tserver_id\tbackup_type_id\tbusiness_id\tinstance\n\
             13\tdb9\tS9\t1\t1\t3306\n14\tdb8\tS8\t1\t9\t3306\n",
        )
        .unwrap_err();
        assert!(
            e.contains("S8 3306: business row id 9 is unknown (import the business table first"),
            "{}: {e}",
            db.name
        );
        assert_eq!(c.instances().await.unwrap().len(), 3, "{}", db.name);

        // A newer export where row 1 is another business: the row id moves, and the
        // business that had it keeps its name and instances.
        import(
            "business.tsv",
            "id\tbusiness_id\tname\n1\t400\tGame Four\n6\t107\tGame One\n",
        )
        .unwrap();
        assert_eq!(
            c.business_row_ids().await.unwrap(),
            [(1, 400), (2, 205), (5, 300), (6, 107)],
            "{}",
            db.name
        );
        import(
            "backup_instance.tsv",
            "id\tname\tserver_id\tbackup_type_id\tbusiness_id\tinstance\n\
             15\tdb4\tS4\t1\t1\t3306\n16\tdb1b\tS1\t1\t6\t3308\n",
        )
        .unwrap();
        let by_server: Vec<(String, i64, Option<i64>)> = c
            .instances()
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.key.server_id, i.key.instance, i.business_id))
            .collect();
        assert!(
            by_server.contains(&("S4".into(), 3306, Some(400))),
            "{by_server:?}"
        );
        assert!(
            by_server.contains(&("S1".into(), 3308, Some(107))),
            "{by_server:?}"
        );
        // Businesses added elsewhere (the API, pages) have no row id and keep none.
        c.upsert_businesses(&[Business {
            business_id: 500,
            name: "added here".into(),
        }])
        .await
        .unwrap();
        assert_eq!(c.business_row_ids().await.unwrap().len(), 4, "{}", db.name);
        // One row id given to two businesses in one file: refused.
        let e = import(
            "business.tsv",
            "id\tbusiness_id\tname\n7\t600\ta\n7\t601\tb\n",
        )
        .unwrap_err();
        assert!(
            e.contains("business row id 7 is given to both business 600 and 601"),
            "{e}"
        );
    }
}
