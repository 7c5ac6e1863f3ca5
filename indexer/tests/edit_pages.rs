//! The instance and user forms on a real indexer (API and page routes on a loopback port,
//! `support::server`; SQLite and the testkit's real PostgreSQL), through real logins and
//! CSRF tokens:
//!
//! - an instance edit keeps what it leaves blank (editing only the period erased the name and
//!   the business), `-` clears; the Edit link opens the form filled in; the type field's
//!   `<datalist>` exists; single and batch add take types and businesses by id or name and
//!   refuse unknown ones (batch: with the line number, and nothing is written);
//! - users: focus businesses shown by name; a role change keeps the password and the focus
//!   businesses; delete (with a confirmation; never oneself, never the only admin); anyone
//!   sets their own focus businesses.
//!
//! Then both pages in headless Chromium at 1280 and 390 px (screenshots under
//! `target/page-shots/`, or `$WEB_SHOTS_DIR`): nothing wider than the viewport, every Save,
//! Edit and Delete on screen.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::server::{self, page, post_form, web_login, Server, PASSWORD};
use support::*;
use ubackup_indexer::auth::LoginPolicy;
use ubackup_indexer::catalog::{
    prelude::*, BackupType, Business, Instance, InstanceKey, Role, UserRemoval,
};
use ubackup_indexer::clock::ManualClock;
use ubackup_testkit::{Browser, Postgres};

async fn serve(catalog: Arc<dyn Catalog>) -> Server {
    let users = [
        ("admin", Role::Admin),
        ("ann", Role::Operator),
        ("vic", Role::Viewer),
    ];
    let clock = Arc::new(ManualClock::at(T0));
    server::serve(catalog, clock, LoginPolicy::default(), &users).await
}

/// The registry of every test: types 1 MySQL and 2 Redis, businesses 101 "Game One", 102
/// "Game Two", 103 "gamethree", and S1:mysql:3306 named game-db-1 in business 101, every hour.
async fn seed(c: &dyn Catalog) {
    c.upsert_backup_types(&[
        BackupType {
            id: 1,
            name: "MySQL".into(),
        },
        BackupType {
            id: 2,
            name: "Redis".into(),
        },
    ])
    .await
    .unwrap();
    c.upsert_businesses(&[
        Business {
            business_id: 101,
            name: "Game One".into(),
        },
        Business {
            business_id: 102,
            name: "Game Two".into(),
        },
        Business {
            business_id: 103,
            name: "gamethree".into(),
        },
    ])
    .await
    .unwrap();
    c.upsert_instances(
        &[Instance {
            key: InstanceKey::new("S1", "mysql", 3306),
            name: "game-db-1".into(),
            business_id: Some(101),
            interval_secs: Some(3600),
            enabled: true,
            created_ms: 0,
        }],
        T0,
    )
    .await
    .unwrap();
}

async fn instance(c: &dyn Catalog, server: &str, ty: &str, inst: i64) -> Option<Instance> {
    let k = InstanceKey::new(server, ty, inst);
    c.instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.key == k)
}

/// The instance form as the page posts it: every field, blank unless given.
fn save_form<'a>(fields: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = [
        ("server_id", "S1"),
        ("type", "mysql"),
        ("instance", "3306"),
        ("name", ""),
        ("business_id", ""),
        ("interval_secs", ""),
        ("enabled", ""),
    ]
    .to_vec();
    for (k, val) in fields {
        if let Some(slot) = v.iter_mut().find(|(kk, _)| kk == k) {
            slot.1 = val;
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_edit_keeps_what_it_does_not_change() {
    let pg = Postgres::start();
    for db in both(&pg, "edit_instances").await {
        let c = db.dyn_catalog();
        seed(&*c).await;
        let s = serve(c.clone()).await;
        let to = s.addr;
        let ann = web_login(to, "ann").await;
        let n = db.name;

        // The Edit link opens the form filled in, its key read-only; the datalist exists.
        let list = page(to, "/instances", &ann.0).await;
        assert!(
            list.body
                .contains("href=\"/instances?q=&amp;field=&amp;page=0&amp;es=S1&amp;et=mysql&amp;ei=3306#add-form\""),
            "{n}: edit link"
        );
        let form = page(to, "/instances?es=S1&et=mysql&ei=3306", &ann.0).await;
        assert_eq!(form.code, 200);
        let b = &form.body;
        assert!(b.contains("<h2>Edit S1:mysql:3306</h2>"), "{n}");
        assert!(b.contains("name=\"server_id\" required maxlength=\"255\" value=\"S1\" readonly"));
        assert!(b.contains("name=\"name\" maxlength=\"255\" value=\"game-db-1\""));
        assert!(b.contains("placeholder=\"id or name\" value=\"101\""));
        assert!(b.contains("value=\"3600\""));
        assert!(b.contains("<option value=\"yes\" selected>yes</option>"));
        assert!(b.contains("list=\"types\""));
        assert!(
            b.contains("<datalist id=\"types\"><option value=\"mysql\"></option><option value=\"redis\"></option></datalist>"),
            "{n}: datalist"
        );

        // Only the period: the name, the business and enabled stay.
        let a = post_form(
            to,
            "/instances",
            &ann,
            &save_form(&[("interval_secs", "7200")]),
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        let i = instance(&*c, "S1", "mysql", 3306).await.unwrap();
        assert_eq!(
            (i.name.as_str(), i.business_id, i.interval_secs, i.enabled),
            ("game-db-1", Some(101), Some(7200), true),
            "{n}"
        );
        // The type by id, the business by name (any case), disabled.
        let a = post_form(
            to,
            "/instances",
            &ann,
            &save_form(&[
                ("type", "1"),
                ("business_id", "game two"),
                ("enabled", "no"),
            ]),
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        let i = instance(&*c, "S1", "mysql", 3306).await.unwrap();
        assert_eq!(
            (i.name.as_str(), i.business_id, i.interval_secs, i.enabled),
            ("game-db-1", Some(102), Some(7200), false),
            "{n}"
        );
        // `-` clears the name and the period; the business and enabled stay.
        let a = post_form(
            to,
            "/instances",
            &ann,
            &save_form(&[("name", "-"), ("interval_secs", "-")]),
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        let i = instance(&*c, "S1", "mysql", 3306).await.unwrap();
        assert_eq!(
            (i.name.as_str(), i.business_id, i.interval_secs, i.enabled),
            ("", Some(102), None, false),
            "{n}"
        );
        // Unknown type or business: refused, nothing changes or appears.
        for (k, v, says) in [
            ("type", "postgres", "type \"postgres\" is unknown"),
            ("type", "9", "type \"9\" is unknown"),
            ("business_id", "999", "business \"999\" is unknown"),
            (
                "business_id",
                "Game Nine",
                "business \"Game Nine\" is unknown",
            ),
        ] {
            let a = post_form(to, "/instances", &ann, &save_form(&[(k, v), ("name", "x")])).await;
            assert_eq!(a.code, 400, "{n}: {k}={v}");
            assert!(
                a.body.contains(&says.replace('"', "&quot;")),
                "{n}: {}",
                a.body
            );
        }
        assert_eq!(c.instances().await.unwrap().len(), 1, "{n}");
        assert_eq!(
            instance(&*c, "S1", "mysql", 3306).await.unwrap().name,
            "",
            "{n}"
        );
        // A new instance with the type by name: enabled, in the business given by id.
        let a = post_form(
            to,
            "/instances",
            &ann,
            &save_form(&[
                ("server_id", "S9"),
                ("type", "Redis"),
                ("instance", "6379"),
                ("business_id", "103"),
            ]),
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        let i = instance(&*c, "S9", "redis", 6379).await.unwrap();
        assert_eq!((i.business_id, i.enabled), (Some(103), true), "{n}");

        // Batch add: types and businesses by id or name.
        let a = post_form(
            to,
            "/instances/batch",
            &ann,
            &[(
                "lines",
                "db-a S2 1 3306 101\ndb-b\tS3\tmysql\t3306\tgamethree\ndb-c S4 REDIS 6379 102\n",
            )],
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        assert_eq!(
            a.header("location").as_deref(),
            Some("/instances?done=instances_added&n=3")
        );
        assert_eq!(
            instance(&*c, "S3", "mysql", 3306)
                .await
                .unwrap()
                .business_id,
            Some(103)
        );
        assert!(instance(&*c, "S4", "redis", 6379).await.is_some(), "{n}");
        // Unknown ones are refused with their line numbers, and nothing is written.
        let a = post_form(
            to,
            "/instances/batch",
            &ann,
            &[(
                "lines",
                "ok S5 mysql 1 101\nbad S6 postgres 1 101\n# comment\nworse S7 1 1 999\nalso S8 7 1 gametwo\n",
            )],
        )
        .await;
        assert_eq!(a.code, 400, "{n}");
        for l in [
            "line 2: type &quot;postgres&quot; is unknown",
            "line 4: business &quot;999&quot; is unknown",
            "line 5: type &quot;7&quot; is unknown",
            "line 5: business &quot;gametwo&quot; is unknown",
        ] {
            assert!(a.body.contains(l), "{n}: {l} in {}", a.body);
        }
        assert!(instance(&*c, "S5", "mysql", 1).await.is_none(), "{n}");
        // A registered instance in a batch keeps its period and enabled state.
        let a = post_form(
            to,
            "/instances/batch",
            &ann,
            &[("lines", "renamed S1 mysql 3306 101\n")],
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        let i = instance(&*c, "S1", "mysql", 3306).await.unwrap();
        assert_eq!(
            (i.name.as_str(), i.business_id, i.interval_secs, i.enabled),
            ("renamed", Some(101), None, false),
            "{n}"
        );
        // A viewer is refused.
        let vic = web_login(to, "vic").await;
        let a = post_form(to, "/instances", &vic, &save_form(&[("name", "evil")])).await;
        assert_eq!(a.code, 403, "{n}");
    }
}

/// Statistics by business (issue 27, item 6): names with the ids, largest first (ids 31 and
/// 100 were sorted as text, 100 before 31), each group's share of the bytes, and growth from
/// the range's first week to its last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_name_businesses_sort_by_size_and_show_growth() {
    let pg = Postgres::start();
    for db in both(&pg, "edit_stats").await {
        let c = db.dyn_catalog();
        seed(&*c).await;
        c.upsert_businesses(&[Business {
            business_id: 31,
            name: "Small & Old".into(),
        }])
        .await
        .unwrap();
        // The clock is at T0: the default range is the 30 days up to T0's day.
        let day0 = T0.div_euclid(DAY) * DAY;
        let mut recs = Vec::new();
        for d in 0..30i64 {
            let t = day0 - d * DAY + HOUR;
            // Business 101: 1,000 bytes a day in the first week, 3,000 in the last.
            let mut r = full("S1", 3306, &format!("a{d}"), t);
            r.game_id = Some(101);
            r.size = Some(if d < 7 { 3000 } else { 1000 });
            recs.push(r);
            // Business 31: 10 bytes a day, flat.
            let mut r = full("S31", 3306, &format!("b{d}"), t);
            r.game_id = Some(31);
            r.size = Some(10);
            recs.push(r);
        }
        c.ingest(&items(&recs), T0).await.unwrap();
        let s = serve(c.clone()).await;
        let vic = web_login(s.addr, "vic").await;
        let p = page(s.addr, "/stats?by=business", &vic.0).await;
        assert_eq!(p.code, 200, "{}", p.body);
        let body = &p.body;
        let table = body.split("id=\"groups\"").nth(1).unwrap_or("");
        let big = table.find("Game One (101)");
        let small = table.find("Small &amp; Old (31)");
        assert!(
            big.is_some() && small.is_some(),
            "{}: names with ids: {table}",
            db.name
        );
        assert!(big < small, "{}: largest first", db.name);
        let row = |id: &str| {
            table
                .split(&format!("data-group=\"{id}\""))
                .nth(1)
                .and_then(|r| r.split("</tr>").next())
                .unwrap_or("")
                .to_string()
        };
        assert!(row("101").contains("+200 %"), "{}: {}", db.name, row("101"));
        assert!(row("31").contains("+0 %"), "{}: {}", db.name, row("31"));
        // 101 holds 44,000 of the 44,300 bytes.
        assert!(row("101").contains("99.3 %"), "{}", row("101"));
    }
}

/// The overview answers "is the fleet backed up?" (issue 27, item 2): each registered
/// instance counted once as ok, overdue, failing, awaiting its first backup or disabled, and
/// the open alerts by rule with links to their lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_coverage_once_per_instance() {
    let pg = Postgres::start();
    for db in both(&pg, "edit_overview").await {
        let c = db.dyn_catalog();
        // S1 (seeded, never backed up) and S2..S6.
        seed(&*c).await;
        let reg = |server: &str, enabled: bool| Instance {
            key: InstanceKey::new(server, "mysql", 3306),
            name: String::new(),
            business_id: Some(101),
            interval_secs: Some(3600),
            enabled,
            created_ms: T0 - DAY,
        };
        c.upsert_instances(
            &[
                reg("S2", true),
                reg("S3", true),
                reg("S4", true),
                reg("S5", false),
                reg("S6", true),
            ],
            T0 - DAY,
        )
        .await
        .unwrap();
        let recs = vec![
            full("S2", 3306, "s2", T0 - HOUR),
            full("S3", 3306, "s3", T0 - 3 * HOUR),
            failed("S3", 3306, T0 - HOUR, "rsync: connection refused"),
            full("S6", 3306, "s6", T0 - 20 * HOUR),
            full("S5", 3306, "s5", T0 - HOUR),
        ];
        c.ingest(&items(&recs), T0).await.unwrap();
        let key = InstanceKey::new("S6", "mysql", 3306);
        c.open_alert(
            &ubackup_indexer::catalog::NewAlert {
                rule: "overdue".into(),
                subject: key.subject(),
                key: Some(key),
                message: "late".into(),
                ..Default::default()
            },
            T0,
        )
        .await
        .unwrap();
        let cov = c.coverage().await.unwrap();
        assert_eq!(
            (
                cov.total,
                cov.ok(),
                cov.overdue,
                cov.failing,
                cov.awaiting,
                cov.disabled
            ),
            (6, 1, 1, 1, 2, 1),
            "{}: {cov:?}",
            db.name
        );
        let s = serve(c.clone()).await;
        let vic = web_login(s.addr, "vic").await;
        let p = page(s.addr, "/", &vic.0).await;
        assert_eq!(p.code, 200, "{}", p.body);
        for (id, n) in [
            ("ok", 1),
            ("overdue", 1),
            ("failing", 1),
            ("awaiting", 2),
            ("disabled", 1),
        ] {
            assert!(
                p.body.contains(&format!("id=\"cov-{id}\">{n}<")),
                "{}: {id} {n}",
                db.name
            );
        }
        assert!(
            p.body
                .contains("<a href=\"/alerts?rule=overdue\">overdue</a> <b>1</b>"),
            "{}",
            p.body
        );
    }
}

async fn focus(c: &dyn Catalog, name: &str) -> String {
    c.user(name).await.unwrap().unwrap().focus_business
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keep_password_and_focus_on_a_role_change_and_can_be_deleted() {
    let pg = Postgres::start();
    for db in both(&pg, "edit_users").await {
        let c = db.dyn_catalog();
        seed(&*c).await;
        let s = serve(c.clone()).await;
        let to = s.addr;
        let n = db.name;
        let ann_id = c.user("ann").await.unwrap().unwrap().id;
        c.set_focus(ann_id, "[101, \"103\", 555]").await.unwrap();
        let admin = web_login(to, "admin").await;

        // Focus businesses by name, never raw JSON; an Edit link; Delete with a confirmation,
        // not on one's own row.
        let p = page(to, "/users", &admin.0).await;
        assert!(
            p.body
                .contains("Game One (101), gamethree (103), unknown business 555"),
            "{n}: {}",
            p.body
        );
        assert!(!p.body.contains("[101"), "{n}");
        assert!(p
            .body
            .contains("<td class=\"focus wrap\" data-label=\"Focus\">none</td>"));
        assert!(p.body.contains("href=\"/users?edit=ann#user-form\""));
        assert!(p.body.contains("data-confirm=\"Delete user ann?"));
        assert!(p.body.contains("aria-label=\"Delete user vic\""));
        assert!(!p.body.contains("aria-label=\"Delete user admin\""), "{n}");
        // The edit form, filled in.
        let e = page(to, "/users?edit=ann", &admin.0).await;
        assert!(e.body.contains("<h2>Edit user ann</h2>"), "{n}");
        assert!(e.body.contains("<option selected>operator</option>"));
        assert!(e
            .body
            .contains("name=\"focus\" placeholder=\"101, 102\" value=\"101, 103, 555\""));

        // A role change: no password, focus kept, ann still logs in with her password.
        let ann_tok = c.user("ann").await.unwrap().unwrap().password_hash;
        let a = post_form(
            to,
            "/users",
            &admin,
            &[
                ("name", "ann"),
                ("role", "admin"),
                ("password", ""),
                ("focus", ""),
            ],
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        let ann = c.user("ann").await.unwrap().unwrap();
        assert_eq!(ann.role, Role::Admin, "{n}");
        assert_eq!(ann.password_hash, ann_tok, "{n}: password kept");
        assert_eq!(ann.focus_business, "[101, \"103\", 555]", "{n}: focus kept");
        let ann_web = web_login(to, "ann").await;
        // Focus by names and ids; `-` clears; an unknown business is refused.
        let a = post_form(
            to,
            "/users",
            &admin,
            &[
                ("name", "ann"),
                ("role", "admin"),
                ("focus", "Game Two, 101"),
            ],
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        assert_eq!(focus(&*c, "ann").await, "[102,101]", "{n}");
        let a = post_form(
            to,
            "/users",
            &admin,
            &[("name", "ann"), ("role", "admin"), ("focus", "nope")],
        )
        .await;
        assert_eq!(a.code, 400, "{n}");
        assert_eq!(focus(&*c, "ann").await, "[102,101]", "{n}");
        let a = post_form(
            to,
            "/users",
            &admin,
            &[("name", "ann"), ("role", "admin"), ("focus", "-")],
        )
        .await;
        assert_eq!(a.code, 303, "{n}");
        assert_eq!(focus(&*c, "ann").await, "[]", "{n}");
        // A new user needs a password.
        let a = post_form(
            to,
            "/users",
            &admin,
            &[("name", "newbie"), ("role", "viewer"), ("password", "")],
        )
        .await;
        assert_eq!(a.code, 400, "{n}");
        assert!(c.user("newbie").await.unwrap().is_none());
        let a = post_form(
            to,
            "/users",
            &admin,
            &[
                ("name", "newbie"),
                ("role", "viewer"),
                ("password", "a long enough one"),
                ("focus", "gamethree"),
            ],
        )
        .await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        assert_eq!(focus(&*c, "newbie").await, "[103]", "{n}");

        // Delete: never oneself; another admin can; the only admin neither deleted nor demoted.
        let a = post_form(to, "/users/delete", &admin, &[("name", "admin")]).await;
        assert_eq!(a.code, 400, "{n}");
        let a = post_form(to, "/users/delete", &ann_web, &[("name", "admin")]).await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        assert!(c.user("admin").await.unwrap().is_none(), "{n}");
        // admin's session ended with it.
        assert_eq!(page(to, "/users", &admin.0).await.code, 303, "{n}");
        let a = post_form(
            to,
            "/users",
            &ann_web,
            &[("name", "ann"), ("role", "operator")],
        )
        .await;
        assert_eq!(a.code, 400, "{n}: the only admin demoted");
        assert!(a.body.contains("only admin"), "{n}");
        assert_eq!(c.user("ann").await.unwrap().unwrap().role, Role::Admin);
        assert_eq!(c.delete_user("ann").await.unwrap(), UserRemoval::LastAdmin);
        assert_eq!(
            c.delete_user("nobody").await.unwrap(),
            UserRemoval::NotFound
        );
        let a = post_form(to, "/users/delete", &ann_web, &[("name", "nobody")]).await;
        assert_eq!(a.code, 404, "{n}");
        let a = post_form(to, "/users/delete", &ann_web, &[("name", "newbie")]).await;
        assert_eq!(a.code, 303, "{n}");
        assert!(c.user("newbie").await.unwrap().is_none(), "{n}");

        // A viewer sets its own focus businesses, and nothing else.
        let vic = web_login(to, "vic").await;
        let p = page(to, "/users", &vic.0).await;
        assert!(p.body.contains("id=\"focus-form\""), "{n}");
        assert!(p.body.contains("<span id=\"focus-now\">none</span>"), "{n}");
        let a = post_form(to, "/users/focus", &vic, &[("focus", "Game One, 103")]).await;
        assert_eq!(a.code, 303, "{n}: {}", a.body);
        assert_eq!(focus(&*c, "vic").await, "[101,103]", "{n}");
        let p = page(to, "/users", &vic.0).await;
        assert!(
            p.body
                .contains("<span id=\"focus-now\">Game One (101), gamethree (103)</span>"),
            "{n}"
        );
        let a = post_form(to, "/users/focus", &vic, &[("focus", "")]).await;
        assert_eq!(a.code, 303, "{n}");
        assert_eq!(focus(&*c, "vic").await, "[]", "{n}");
        for (path, pairs) in [
            ("/users/delete", vec![("name", "ann")]),
            ("/users", vec![("name", "vic"), ("role", "admin")]),
        ] {
            let a = post_form(to, path, &vic, &pairs).await;
            assert_eq!(a.code, 403, "{n}: viewer {path}");
        }
        assert_eq!(c.user("vic").await.unwrap().unwrap().role, Role::Viewer);
        // Without the CSRF token: refused.
        let a = post_form(
            to,
            "/users/focus",
            &(vic.0.clone(), "0000".into()),
            &[("focus", "101")],
        )
        .await;
        assert_eq!(a.code, 403, "{n}");
        assert_eq!(focus(&*c, "vic").await, "[]", "{n}");
    }
}

/// Both pages in Chromium at 1280 and 390 px, with long names: the instance edit form filled
/// in and the users page. The page is never wider than the window, and every Save, Edit and
/// Delete is on screen.
#[test]
fn the_edit_forms_fit_a_phone_in_chromium() {
    let Some(_) = ubackup_testkit::require_chromium() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, srv) = rt.block_on(async {
        let db = sqlite().await;
        let c = db.dyn_catalog();
        seed(&*c).await;
        let long: Vec<Instance> = (0..60)
            .map(|i| Instance {
                key: InstanceKey::new(&format!("S{:06}-prod-eu-west", 100_000 + i), "mysql", 3306),
                name: format!("game-db-{i}-primary-shard-with-a-very-long-name"),
                business_id: Some(101 + i % 3),
                interval_secs: Some(3600),
                enabled: i % 7 != 0,
                created_ms: 0,
            })
            .collect();
        c.upsert_instances(&long, T0).await.unwrap();
        let srv = serve(c.clone()).await;
        for (u, f) in [("ann", "[101,102,103]"), ("vic", "[101]")] {
            let id = c.user(u).await.unwrap().unwrap().id;
            c.set_focus(id, f).await.unwrap();
        }
        let h = ubackup_indexer::auth::hash_password(PASSWORD).unwrap();
        let id = c
            .put_user("restore-bot-for-the-eu-west-shards", Role::Viewer, &h, T0)
            .await
            .unwrap();
        c.set_focus(id, "[101,102,103]").await.unwrap();
        (db, srv)
    });
    let base = format!("http://{}", srv.addr);
    let shots = std::env::var("WEB_SHOTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| ubackup_testkit::browser::failure_dir().with_file_name("page-shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let Some(b) = Browser::start("edit-pages", 1280, 900) else {
        return;
    };
    b.check("login", |b| {
        b.goto(&format!("{base}/login"))?;
        b.type_into(&b.find("#name")?, "admin")?;
        b.type_into(&b.find("#password")?, PASSWORD)?;
        b.click(&b.find("#login")?)?;
        b.wait_for(".who", Duration::from_secs(30))?;
        Ok(())
    });
    let fits = |b: &Browser, width: i64, buttons: &str| -> anyhow::Result<()> {
        let w = b.script("return document.documentElement.scrollWidth", vec![])?;
        let w = w.as_i64().unwrap_or(i64::MAX);
        anyhow::ensure!(w <= width, "page is {w} px wide at {width} px");
        let js = format!(
            "var r = 0, n = 0; document.querySelectorAll({buttons:?}).forEach(function (e) {{ n++; r = Math.max(r, e.getBoundingClientRect().right); }}); return [n, Math.ceil(r)];"
        );
        let v = b.script(&js, vec![])?;
        let (n, right) = (
            v[0].as_i64().unwrap_or(0),
            v[1].as_i64().unwrap_or(i64::MAX),
        );
        anyhow::ensure!(n > 0, "no {buttons}");
        anyhow::ensure!(
            right <= width,
            "{buttons}: one ends at {right} px at {width} px"
        );
        Ok(())
    };
    let edit = format!("{base}/instances?es=S100001-prod-eu-west&et=mysql&ei=3306#add-form");
    for (w, h) in [(1280i64, 900u32), (390, 844)] {
        b.resize(w as u32, h).unwrap();
        b.goto(&edit).unwrap();
        b.check(&format!("instance edit at {w}"), |b| {
            let v = b.script("return document.getElementById('a-name').value", vec![])?;
            anyhow::ensure!(
                v.as_str() == Some("game-db-1-primary-shard-with-a-very-long-name"),
                "{v}"
            );
            fits(b, w, "#add-submit, #batch-submit, #delete-selected, a.edit")
        });
        std::fs::write(
            shots.join(format!("instances-edit-{w}.png")),
            b.full_page_png().unwrap(),
        )
        .unwrap();
        b.goto(&format!("{base}/users?edit=ann#user-form")).unwrap();
        b.check(&format!("users at {w}"), |b| {
            fits(
                b,
                w,
                "#users button, #users a.button, #user-submit, #token-form button",
            )
        });
        std::fs::write(
            shots.join(format!("users-edit-{w}.png")),
            b.full_page_png().unwrap(),
        )
        .unwrap();
    }
    // The Edit link opens the form filled in, and Save keeps what it did not change.
    b.resize(1280, 900).unwrap();
    b.check("edit through the page", |b| {
        b.goto(&format!("{base}/instances?q=S100002"))?;
        b.click(&b.find("a.edit")?)?;
        let period = b.wait_for("#a-int[value='3600']", Duration::from_secs(30))?;
        b.script("document.getElementById('a-int').value = '900'", vec![])?;
        let _ = period;
        b.click(&b.find("#add-submit")?)?;
        b.wait_for("#done", Duration::from_secs(30))?;
        Ok(())
    });
    let i = rt
        .block_on(async {
            let k = InstanceKey::new("S100002-prod-eu-west", "mysql", 3306);
            db.catalog
                .instances()
                .await
                .map(|v| v.into_iter().find(|i| i.key == k))
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        (i.name.as_str(), i.business_id, i.interval_secs),
        (
            "game-db-2-primary-shard-with-a-very-long-name",
            Some(103),
            Some(900)
        )
    );
    // A viewer's own focus form at 390 px.
    b.check("log out", |b| {
        b.click(&b.find(".who button[type=submit]")?)?;
        b.wait_for("#login", Duration::from_secs(30))?;
        b.type_into(&b.find("#name")?, "vic")?;
        b.type_into(&b.find("#password")?, PASSWORD)?;
        b.click(&b.find("#login")?)?;
        b.wait_for(".who", Duration::from_secs(30))?;
        Ok(())
    });
    b.resize(390, 844).unwrap();
    b.goto(&format!("{base}/users")).unwrap();
    b.check("viewer focus at 390", |b| {
        anyhow::ensure!(b.body_text()?.contains("Game One (101)"));
        fits(b, 390, "#focus-submit")
    });
    std::fs::write(shots.join("own-focus-390.png"), b.full_page_png().unwrap()).unwrap();
    eprintln!("screenshots in {}", shots.display());
    drop(b);
    drop(srv);
    drop(rt);
}
