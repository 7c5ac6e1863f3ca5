//! The HTTP API on a loopback port, on both engines: UBackup's legacy routes keep their JSON
//! shapes, the JSON API answers, and auth refuses what it must.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ubackup_indexer::catalog::{Business, Instance, InstanceKey, NewAlert, Role};
use ubackup_indexer::clock::ManualClock;
use ubackup_indexer::cluster::Clusters;
use ubackup_indexer::http::{router, AppState};
use ubackup_indexer::metrics::Metrics;
use ubackup_testkit::Postgres;

async fn serve(state: AppState) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(ubackup_indexer::http::serve(l, router(state), rx));
    (addr, tx)
}

/// One HTTP/1.1 request; returns the status and the body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

async fn get_json(addr: SocketAddr, path: &str, token: Option<&str>) -> Value {
    let (code, body) = call(addr, "GET", path, token, None).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_routes_keep_their_shapes_and_auth_refuses() {
    let pg = Postgres::start();
    for db in both(&pg, "http").await {
        let c = db.dyn_catalog();
        // Users with tokens, one per role.
        let mut tokens = std::collections::HashMap::new();
        for (name, role) in [
            ("vi", Role::Viewer),
            ("op", Role::Operator),
            ("ad", Role::Admin),
        ] {
            let hash = ubackup_indexer::auth::hash_password(&format!("{name}-password")).unwrap();
            let id = c.put_user(name, role, &hash, T0).await.unwrap();
            let t = ubackup_indexer::auth::new_token();
            c.add_token(
                id,
                &ubackup_indexer::auth::token_hash(&t),
                T0,
                T0 + 30 * DAY,
            )
            .await
            .unwrap();
            tokens.insert(name, t);
        }
        let (vi, op, ad) = (
            tokens["vi"].as_str(),
            tokens["op"].as_str(),
            tokens["ad"].as_str(),
        );
        c.upsert_businesses(&[
            Business {
                business_id: 7,
                name: "Game Seven".into(),
            },
            Business {
                business_id: 8,
                name: "Eight".into(),
            },
        ])
        .await
        .unwrap();
        c.upsert_instances(
            &[Instance {
                key: InstanceKey::new("S1", "mysql", 3306),
                name: "main db".into(),
                business_id: Some(7),
                interval_secs: None,
                enabled: true,
                created_ms: 0,
            }],
            T0,
        )
        .await
        .unwrap();
        let mut recs: Vec<_> = (0..500)
            .map(|i| full("S1", 3306, &format!("f{i}"), T0 + i * 1000))
            .collect();
        recs.push(incr("S1", 3306, "inc", T0 + 600_000, "f499", T0 + 499_000));
        recs.push(failed(
            "S1",
            3306,
            T0 + 700_000,
            "execute backup script error",
        ));
        c.ingest(&items(&recs), T0).await.unwrap();
        c.open_alert(
            &NewAlert {
                rule: "script_error".into(),
                subject: "S1:mysql:3306".into(),
                key: Some(InstanceKey::new("S1", "mysql", 3306)),
                game_id: Some(7),
                game_server_ip: Some("10.1.2.3".into()),
                message: "latest backup failed".into(),
                held_by: None,
            },
            T0,
        )
        .await
        .unwrap();
        c.open_alert(
            &NewAlert {
                rule: "node_down".into(),
                subject: "c1/n1".into(),
                message: "gone".into(),
                ..Default::default()
            },
            T0,
        )
        .await
        .unwrap();
        let state = AppState {
            catalog: c.clone(),
            clusters: Arc::new(Clusters::new(vec![])),
            metrics: Arc::new(Metrics::default()),
            clock: Arc::new(ManualClock::at(T0 + DAY)),
            anonymous_legacy_reads: false,
            login: Arc::new(ubackup_indexer::auth::LoginGuard::new(Default::default())),
        };
        let (addr, _stop) = serve(state.clone()).await;

        // --- auth refusals ---
        for path in [
            "/api/v1/instances",
            "/api/alert",
            "/api/get_backup_list?server_id=S1&type=mysql&instance=3306",
            "/api/business",
        ] {
            assert_eq!(call(addr, "GET", path, None, None).await.0, 401, "{path}");
            assert_eq!(
                call(addr, "GET", path, Some("ubk_forged"), None).await.0,
                401,
                "{path}"
            );
        }
        let inst = json!({"server_id": "S9", "type": "redis", "instance": 1});
        assert_eq!(
            call(
                addr,
                "POST",
                "/api/v1/instances",
                Some(vi),
                Some(inst.clone())
            )
            .await
            .0,
            403
        );
        assert_eq!(
            call(addr, "POST", "/api/v1/instances", Some(op), Some(inst))
                .await
                .0,
            200
        );
        assert_eq!(
            call(addr, "GET", "/api/v1/audit", Some(op), None).await.0,
            403
        );
        let audit = get_json(addr, "/api/v1/audit", Some(ad)).await;
        assert_eq!(audit[0]["user"], "op");
        assert_eq!(audit[0]["action"], "registry.put");
        assert_eq!(
            call(addr, "POST", "/api/v1/alerts/1/ack", Some(vi), None)
                .await
                .0,
            403
        );
        assert_eq!(
            call(
                addr,
                "POST",
                "/api/set_force_business",
                None,
                Some(json!({"force_business": [7]}))
            )
            .await
            .0,
            401
        );
        let (code, _) = call(
            addr,
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"name": "vi", "password": "wrong"})),
        )
        .await;
        assert_eq!(code, 401);
        let (code, body) = call(
            addr,
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"name": "vi", "password": "vi-password"})),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        let login: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            get_json(addr, "/api/v1/instances", login["token"].as_str())
                .await
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // --- legacy shapes ---
        let alerts = get_json(addr, "/api/alert", Some(vi)).await;
        let alerts = alerts.as_array().unwrap();
        assert_eq!(alerts.len(), 1, "only UBackup's three kinds: {alerts:?}");
        let a = &alerts[0];
        for k in [
            "server_id",
            "game_server_ip",
            "type",
            "instance",
            "game_id",
            "game_name",
            "instance_name",
            "create_time",
            "log",
        ] {
            assert!(keys(a).contains(k), "{k} missing from {a}");
        }
        assert_eq!(
            (
                a["server_id"].as_str(),
                a["instance"].as_i64(),
                a["game_name"].as_str()
            ),
            (Some("S1"), Some(3306), Some("Game Seven"))
        );
        assert_eq!(a["instance_name"], "main db");
        assert_eq!(a["create_time"], T0 + 700_000);
        assert_eq!(a["log"], "execute backup script error");

        let list = get_json(
            addr,
            "/api/get_backup_list?server_id=S1&type=mysql&instance=3306",
            Some(vi),
        )
        .await;
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 480);
        let ubackup_fields = names(&[
            "interval",
            "server_id",
            "game_id",
            "op_id",
            "game_server_ip",
            "instance",
            "back_server_ip",
            "file_path",
            "filename",
            "create_time",
            "rsync_time",
            "size",
            "last_all_filename",
            "last_all_time",
            "succeed",
            "log",
            "type",
            "game_name",
        ]);
        assert_eq!(keys(&list[0]), ubackup_fields);
        assert_eq!(list[0]["succeed"], 0);
        assert_eq!(list[1]["last_all_filename"], "f499");
        assert_eq!(list[2]["last_all_filename"], "None");
        assert_eq!(list[2]["filename"], "f499");
        assert!(list
            .windows(2)
            .all(|w| w[0]["create_time"].as_i64() >= w[1]["create_time"].as_i64()));
        assert_eq!(
            call(
                addr,
                "GET",
                "/api/get_backup_list?server_id=S1&type=mysql&instance=x",
                Some(vi),
                None
            )
            .await
            .0,
            400
        );

        let b = get_json(addr, "/api/business?results_per_page=1", Some(vi)).await;
        assert_eq!(
            keys(&b),
            names(&["num_results", "objects", "page", "total_pages"])
        );
        assert_eq!(
            (
                b["num_results"].as_i64(),
                b["total_pages"].as_i64(),
                b["page"].as_i64()
            ),
            (Some(2), Some(2), Some(1))
        );
        assert_eq!(
            keys(&b["objects"][0]),
            names(&["id", "business_id", "name"])
        );
        let all = get_json(addr, "/api/business?results_per_page=999999", Some(vi)).await;
        assert_eq!(all["objects"].as_array().unwrap().len(), 2);

        assert_eq!(
            get_json(addr, "/api/get_force_business", Some(vi)).await,
            json!([])
        );
        let (code, body) = call(
            addr,
            "POST",
            "/api/set_force_business",
            Some(vi),
            Some(json!({"force_business": [7, 8]})),
        )
        .await;
        assert_eq!(
            (code, serde_json::from_str::<Value>(&body).unwrap()),
            (200, json!({"state": true, "data": ""}))
        );
        assert_eq!(
            get_json(addr, "/api/get_force_business", Some(vi)).await,
            json!([7, 8])
        );
        let (_, body) = call(
            addr,
            "POST",
            "/api/set_force_business",
            Some(vi),
            Some(json!({"nope": 1})),
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["state"],
            false
        );

        // --- JSON API ---
        let h = get_json(
            addr,
            "/api/v1/instances/S1/mysql/3306/backups?page=2&per_page=100",
            Some(vi),
        )
        .await;
        assert_eq!(h["backups"].as_array().unwrap().len(), 100);
        // Newest first: the failure, the incremental, then f499 down: row 100 is f401.
        assert_eq!(h["backups"][0]["filename"], "f401");
        let plan = get_json(
            addr,
            &format!(
                "/api/v1/instances/S1/MySQL/3306/restore?at_ms={}",
                T0 + 650_000
            ),
            Some(vi),
        )
        .await;
        assert_eq!(plan["complete"], true);
        let steps: Vec<&str> = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["filename"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["f499", "inc"]);
        let id = plan["target"].as_i64().unwrap();
        let one = get_json(addr, &format!("/api/v1/backups/{id}"), Some(vi)).await;
        assert_eq!(one["backup"]["filename"], "inc");
        assert_eq!(one["chain"]["steps"][0]["filename"], "f499");
        assert_eq!(
            call(addr, "GET", "/api/v1/backups/999999", Some(vi), None)
                .await
                .0,
            404
        );
        let st = get_json(
            addr,
            &format!(
                "/api/v1/stats?by=day&from_ms={}&to_ms={}",
                T0 - DAY,
                T0 + DAY
            ),
            Some(vi),
        )
        .await;
        assert_eq!(st["rows"][0]["count"], 502);
        assert_eq!(st["rows"][0]["failures"], 1);
        let biz = get_json(addr, "/api/v1/alerts?open=true&business=7", Some(vi)).await;
        assert_eq!(biz.as_array().unwrap().len(), 1);
        let id = biz[0]["id"].as_i64().unwrap();
        assert_eq!(
            call(
                addr,
                "POST",
                &format!("/api/v1/alerts/{id}/ack"),
                Some(op),
                None
            )
            .await
            .0,
            200
        );
        assert_eq!(
            call(
                addr,
                "POST",
                &format!("/api/v1/alerts/{id}/silence"),
                Some(op),
                Some(json!({"for_secs": 60}))
            )
            .await
            .0,
            200
        );
        let a = get_json(addr, "/api/v1/alerts?open=true&rule=script_error", Some(vi)).await;
        assert_eq!(a[0]["acked_by"], "op");
        assert_eq!(a[0]["silenced_until_ms"], T0 + DAY + 60_000);
        assert_eq!(
            get_json(addr, "/api/v1/clusters", Some(vi)).await,
            json!([])
        );
        let (code, metrics) = call(addr, "GET", "/metrics", None, None).await;
        assert_eq!(code, 200);
        assert!(metrics.contains("ubackup_indexer_results_indexed_total"));

        // Anonymous legacy reads when the config allows them; writes still need a user.
        let (addr2, _stop2) = serve(AppState {
            anonymous_legacy_reads: true,
            ..state
        })
        .await;
        assert_eq!(
            get_json(addr2, "/api/alert", None)
                .await
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            get_json(addr2, "/api/get_force_business", None).await,
            json!([])
        );
        assert_eq!(
            call(
                addr2,
                "POST",
                "/api/set_force_business",
                None,
                Some(json!({"force_business": [1]}))
            )
            .await
            .0,
            401
        );
        assert_eq!(
            call(addr2, "GET", "/api/v1/instances", None, None).await.0,
            401
        );
    }
}

/// Each value the review got past the API (and the form refused) is refused by the API too,
/// and by the form's own check: one validator per field (`ubackup_indexer::validate`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_refuses_what_its_form_refuses() {
    use ubackup_indexer::web::{alerts::ActionForm, instances::name_ok, stats::StatsQuery};
    let db = sqlite().await;
    let c = db.dyn_catalog();
    let hash = ubackup_indexer::auth::hash_password("op-password").unwrap();
    let id = c.put_user("op", Role::Operator, &hash, T0).await.unwrap();
    let op = ubackup_indexer::auth::new_token();
    c.add_token(
        id,
        &ubackup_indexer::auth::token_hash(&op),
        T0,
        T0 + 30 * DAY,
    )
    .await
    .unwrap();
    c.open_alert(
        &NewAlert {
            rule: "node_down".into(),
            subject: "c1/n1".into(),
            message: "gone".into(),
            ..Default::default()
        },
        T0,
    )
    .await
    .unwrap();
    let alert_id = c.open_alerts().await.unwrap()[0].id;
    let state = AppState {
        catalog: c.clone(),
        clusters: Arc::new(Clusters::new(vec![])),
        metrics: Arc::new(Metrics::default()),
        clock: Arc::new(ManualClock::at(T0 + DAY)),
        anonymous_legacy_reads: false,
        login: Arc::new(ubackup_indexer::auth::LoginGuard::new(Default::default())),
    };
    let (addr, _stop) = serve(state).await;
    let op = Some(op.as_str());
    let long = "x".repeat(5000);

    // Names: 5,000 characters, a leading tab and `=`, a formula.
    for bad in [
        long.as_str(),
        "\t=cmd|' /C calc'!A0",
        "=HYPERLINK(\"x\")",
        "a\rb",
    ] {
        assert!(name_ok(bad, 255).is_err(), "the form refuses {bad:?}");
        for (path, body) in [
            (
                "/api/v1/businesses",
                json!([{"business_id": 1, "name": bad}]),
            ),
            ("/api/v1/backup_types", json!([{"id": 1, "name": bad}])),
            (
                "/api/v1/instances",
                json!({"server_id": "S9", "type": "redis", "instance": 1, "name": bad}),
            ),
        ] {
            let (code, body) = call(addr, "POST", path, op, Some(body)).await;
            assert_eq!(code, 400, "{path} {bad:?}: {body}");
        }
    }
    for (path, body) in [
        (
            "/api/v1/businesses",
            json!([{"business_id": 1, "name": "Game One"}]),
        ),
        ("/api/v1/backup_types", json!([{"id": 1, "name": "mysql"}])),
        (
            "/api/v1/instances",
            json!({"server_id": "S9", "type": "redis", "instance": 1, "name": "cache"}),
        ),
    ] {
        let (code, body) = call(addr, "POST", path, op, Some(body)).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let listed = get_json(addr, "/api/v1/businesses", op).await;
    assert!(listed.to_string().len() < 1000, "{listed}");

    // Silences: the form's cap is 90 days; until i64::MAX is refused.
    let form: ActionForm = serde_urlencoded::from_str("hours=999999").unwrap();
    assert!(form.silence_hours().is_err());
    let path = format!("/api/v1/alerts/{alert_id}/silence");
    for body in [
        json!({"until_ms": i64::MAX}),
        json!({"for_secs": i64::MAX}),
        json!({"for_secs": 91 * 86_400}),
        json!({"until_ms": T0}),
    ] {
        let (code, b) = call(addr, "POST", &path, op, Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {b}");
    }
    let (code, b) = call(addr, "POST", &path, op, Some(json!({"for_secs": 3600}))).await;
    assert_eq!(code, 200, "{b}");

    // Statistics ranges: the page's cap is 400 days.
    let q: StatsQuery = serde_urlencoded::from_str("from=1970-01-01&to=2262-04-11").unwrap();
    assert!(q.range(0).is_err());
    for path in [
        format!("/api/v1/stats?from_ms={}&to_ms={}", i64::MIN, i64::MAX),
        format!("/api/v1/stats?from_ms={}&to_ms={}", T0, T0 + 401 * DAY),
        format!("/api/v1/stats?from_ms={}&to_ms={}", T0, T0),
    ] {
        let (code, b) = call(addr, "GET", &path, op, None).await;
        assert_eq!(code, 400, "{path}: {b}");
    }
    let (code, b) = call(
        addr,
        "GET",
        &format!("/api/v1/stats?from_ms={}&to_ms={}", T0, T0 + 7 * DAY),
        op,
        None,
    )
    .await;
    assert_eq!(code, 200, "{b}");
}
