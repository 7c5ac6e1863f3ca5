//! Links into the dashboard, and UBackup's Chrome extension on a dashboard session, against a
//! running indexer (API and page routes on a loopback port, `support::server`):
//!
//! - a page asked for without a session redirects to `/login?next=<path>`; the form keeps it,
//!   and a login ends there; a `next` that is not a path on this site ends on the overview;
//! - the session cookie is SameSite=Lax: in a real headless Chromium, a link to an alert on
//!   another site (a "chat" page served from another host name) opens the alert logged in,
//!   and logged out it goes through the login page and ends on the alert;
//! - UBackup's legacy routes answer the extension's requests (two plain GETs carrying the
//!   browser's cookies) on a session got by a real login, `get_force_business` is the session
//!   user's focus list; `set_force_business` on a session takes the JSON post UBackup's
//!   dashboard page made and refuses every shape a page on another site can send.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::server::{self, request, Answer, Server, LOCAL, PASSWORD};
use support::*;
use ubackup_indexer::auth::LoginPolicy;
use ubackup_indexer::catalog::{Catalog, InstanceKey, NewAlert, Role};
use ubackup_indexer::clock::ManualClock;
use ubackup_testkit::Browser;

const WAIT: Duration = Duration::from_secs(30);

async fn serve(catalog: Arc<dyn Catalog>) -> Server {
    let users = [("ann", Role::Operator), ("vic", Role::Viewer)];
    let clock = Arc::new(ManualClock::at(T0));
    server::serve(catalog, clock, LoginPolicy::default(), &users).await
}

/// An open alert of `rule` on instance `server`:mysql:3306 of business `game`: its id.
async fn alert(c: &dyn Catalog, rule: &str, server: &str, game: i64) -> i64 {
    let key = InstanceKey::new(server, "mysql", 3306);
    c.open_alert(
        &NewAlert {
            rule: rule.into(),
            subject: key.subject(),
            key: Some(key),
            game_id: Some(game),
            game_server_ip: Some("10.1.2.3".into()),
            message: format!("{rule} on {server}"),
            ..NewAlert::default()
        },
        T0,
    )
    .await
    .unwrap()
    .unwrap()
    .id
}

fn cookie(session: &str) -> String {
    format!("ubk_session={session}")
}

async fn get(to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(LOCAL, to, "GET", path, headers, "").await
}

/// `POST /login` as the form sends it, with `next` when given.
async fn login_form(to: SocketAddr, name: &str, next: Option<&str>) -> Answer {
    let mut f = form_urlencoded::Serializer::new(String::new());
    f.append_pair("name", name)
        .append_pair("password", PASSWORD);
    if let Some(n) = next {
        f.append_pair("next", n);
    }
    request(
        LOCAL,
        to,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &f.finish(),
    )
    .await
}

/// A session by a real login.
async fn session(to: SocketAddr, name: &str) -> String {
    let a = login_form(to, name, None).await;
    assert_eq!(a.code, 303, "{}", a.body);
    a.session().unwrap()
}

/// The value of the login form's hidden `next` field, if it has one.
fn hidden_next(body: &str) -> Option<String> {
    let v = body.split("name=\"next\" id=\"next\" value=\"").nth(1)?;
    Some(v.split('"').next()?.replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_returns_to_the_page_asked_for_and_only_on_this_site() {
    let db = sqlite().await;
    let c = db.dyn_catalog();
    let id = alert(&*c, "script_error", "S1", 7).await;
    let srv = serve(c.clone()).await;
    let to = srv.addr;

    // Logged out, the alert (with a query) redirects to the login page with the path.
    let asked = format!("/alerts/{id}?state=open&x=a+b");
    let a = get(to, &asked, &[]).await;
    assert_eq!(a.code, 303);
    let login_url = a.header("location").unwrap();
    assert_eq!(
        login_url,
        format!("/login?next=/alerts/{id}%3Fstate%3Dopen%26x%3Da%2Bb")
    );
    // The form keeps it in a hidden field.
    let form = get(to, &login_url, &[]).await;
    assert_eq!(form.code, 200);
    assert_eq!(hidden_next(&form.body).as_deref(), Some(asked.as_str()));
    // A wrong password shows the form again, still with it.
    let mut f = form_urlencoded::Serializer::new(String::new());
    f.append_pair("name", "ann")
        .append_pair("password", "not the password")
        .append_pair("next", &asked);
    let wrong = request(
        LOCAL,
        to,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &f.finish(),
    )
    .await;
    assert_eq!(wrong.code, 401);
    assert_eq!(hidden_next(&wrong.body).as_deref(), Some(asked.as_str()));
    // The login passes it through the cookie check, which ends on the page asked for.
    let ok = login_form(to, "ann", Some(&asked)).await;
    assert_eq!(ok.code, 303, "{}", ok.body);
    let set = ok.header("set-cookie").unwrap();
    assert!(
        set.contains("SameSite=Lax") && set.contains("HttpOnly"),
        "{set}"
    );
    let check = ok.header("location").unwrap();
    assert_eq!(
        check,
        format!("/login/check?next=/alerts/{id}%3Fstate%3Dopen%26x%3Da%2Bb")
    );
    let s = ok.session().unwrap();
    let back = get(to, &check, &[("Cookie", &cookie(&s))]).await;
    assert_eq!(back.code, 303);
    assert_eq!(back.header("location").as_deref(), Some(asked.as_str()));
    let page = get(to, &asked, &[("Cookie", &cookie(&s))]).await;
    assert_eq!(page.code, 200);
    assert!(page.body.contains("S1:mysql:3306"), "{}", page.body);

    // The overview and writes carry no `next`.
    assert_eq!(
        get(to, "/", &[]).await.header("location").as_deref(),
        Some("/login")
    );
    let post = request(
        LOCAL,
        to,
        "POST",
        &format!("/alerts/{id}/ack"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "comment=x",
    )
    .await;
    assert_eq!(post.header("location").as_deref(), Some("/login"));

    // Anywhere else: the login ends on the overview, and no step echoes the value.
    for hostile in [
        "//evil.example/alerts",
        "/\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/alerts\r\nSet-Cookie: a=b",
        "evil.example",
        &format!("/{}", "a".repeat(3000)),
    ] {
        let enc: String = form_urlencoded::byte_serialize(hostile.as_bytes()).collect();
        let form = get(to, &format!("/login?next={enc}"), &[]).await;
        assert_eq!(form.code, 200, "{hostile:?}");
        assert_eq!(hidden_next(&form.body), None, "{hostile:?}");
        let ok = login_form(to, "ann", Some(hostile)).await;
        assert_eq!(ok.code, 303, "{hostile:?}");
        assert_eq!(
            ok.header("location").as_deref(),
            Some("/login/check"),
            "{hostile:?}"
        );
        let s = ok.session().unwrap();
        let back = get(
            to,
            &format!("/login/check?next={enc}"),
            &[("Cookie", &cookie(&s))],
        )
        .await;
        assert_eq!(back.header("location").as_deref(), Some("/"), "{hostile:?}");
    }
}

/// The extension's requests: `GET <url>` from its background page with nothing of its own,
/// the browser adding `Accept: */*` and the dashboard's cookie.
async fn extension_get(to: SocketAddr, path: &str, session: Option<&str>) -> Answer {
    let c = session.map(cookie);
    let mut h = vec![("Accept", "*/*")];
    if let Some(c) = &c {
        h.push(("Cookie", c.as_str()));
    }
    get(to, path, &h).await
}

/// The badge: open alerts of the focus businesses, counted as the extension counts them.
fn badge(focus: &Value, alerts: &Value) -> usize {
    let focus = focus.as_array().unwrap();
    alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| focus.contains(&a["game_id"]))
        .count()
}

/// `POST /api/set_force_business` on a session, with `headers` and `body`.
async fn set_focus(to: SocketAddr, session: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let c = cookie(session);
    let mut h = headers.to_vec();
    h.push(("Cookie", &c));
    request(LOCAL, to, "POST", "/api/set_force_business", &h, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_reads_on_a_dashboard_session_and_forged_focus_writes_are_refused() {
    let pg = ubackup_testkit::Postgres::start();
    for db in both(&pg, "extension").await {
        let c = db.dyn_catalog();
        for (s, g) in [("S1", 7), ("S2", 7), ("S3", 8), ("S4", 9)] {
            alert(&*c, "script_error", s, g).await;
        }
        alert(&*c, "chain_broken", "S5", 7).await; // not one of UBackup's alert kinds
        let srv = serve(c.clone()).await;
        let to = srv.addr;
        let ann = c.user("ann").await.unwrap().unwrap();
        c.set_focus(ann.id, "[7]").await.unwrap();
        let vic = c.user("vic").await.unwrap().unwrap();
        c.set_focus(vic.id, "[8, 9]").await.unwrap();

        // Without a session (anonymous legacy reads off): 401, as before.
        for path in ["/api/get_force_business", "/api/alert"] {
            assert_eq!(extension_get(to, path, None).await.code, 401, "{path}");
        }
        // On each user's session: that user's focus list, and the badge counts its alerts.
        let s_ann = session(to, "ann").await;
        let s_vic = session(to, "vic").await;
        for (s, focus, count) in [(&s_ann, json!([7]), 2), (&s_vic, json!([8, 9]), 2)] {
            let f = extension_get(to, "/api/get_force_business", Some(s)).await;
            assert_eq!((f.code, f.json()), (200, focus.clone()), "{}", db.name);
            let a = extension_get(to, "/api/alert", Some(s)).await;
            assert_eq!(a.code, 200, "{}", a.body);
            assert_eq!(a.json().as_array().unwrap().len(), 4, "{}", db.name);
            assert_eq!(badge(&f.json(), &a.json()), count, "{}", db.name);
        }
        // The other legacy reads (UBackup's dashboard page) on the session too.
        for path in [
            "/api/business?results_per_page=999999",
            "/api/get_backup_list?server_id=S1&type=mysql&instance=3306",
        ] {
            let a = extension_get(to, path, Some(&s_ann)).await;
            assert_eq!(a.code, 200, "{path}: {}", a.body);
        }
        // The JSON API stays token-only.
        assert_eq!(
            extension_get(to, "/api/v1/instances", Some(&s_ann))
                .await
                .code,
            401
        );

        // The write as UBackup's dashboard page made it (AngularJS `$http.post` of an
        // object): JSON, its default Accept, and the browser's same-origin Origin.
        let origin = format!("http://{to}");
        let angular = [
            ("Content-Type", "application/json;charset=utf-8"),
            ("Accept", "application/json, text/plain, */*"),
            ("Origin", origin.as_str()),
        ];
        let w = set_focus(to, &s_ann, &angular, r#"{"force_business":[7,9]}"#).await;
        assert_eq!(
            (w.code, w.json()),
            (200, json!({"state": true, "data": ""})),
            "{}",
            w.body
        );
        let f = extension_get(to, "/api/get_force_business", Some(&s_ann)).await;
        assert_eq!(f.json(), json!([7, 9]));
        // Without Origin (an older client) it is the same request.
        let w = set_focus(
            to,
            &s_ann,
            &[("Content-Type", "application/json")],
            r#"{"force_business":[7]}"#,
        )
        .await;
        assert_eq!(w.json()["state"], json!(true), "{}", w.body);

        // What a page on another site can send: a form (urlencoded, multipart, text/plain
        // holding JSON), a no-cors fetch (text/plain), or JSON with its own Origin. All 403.
        let evil = "http://evil.example";
        let json_body = r#"{"force_business":[666]}"#;
        for (what, headers, body) in [
            (
                "text/plain form holding JSON",
                vec![("Content-Type", "text/plain"), ("Origin", evil)],
                r#"{"force_business":[666],"x":"="}"#,
            ),
            (
                "urlencoded form",
                vec![
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Origin", evil),
                ],
                "force_business=666",
            ),
            (
                "multipart form",
                vec![
                    ("Content-Type", "multipart/form-data; boundary=b"),
                    ("Origin", evil),
                ],
                "--b\r\nContent-Disposition: form-data; name=\"force_business\"\r\n\r\n666\r\n--b--\r\n",
            ),
            (
                "text/plain without Origin",
                vec![("Content-Type", "text/plain;charset=UTF-8")],
                json_body,
            ),
            ("no Content-Type", vec![], json_body),
            (
                "JSON from another origin",
                vec![("Content-Type", "application/json"), ("Origin", evil)],
                json_body,
            ),
            (
                "JSON from another port",
                vec![
                    ("Content-Type", "application/json"),
                    ("Origin", "http://127.0.0.1:1"),
                ],
                json_body,
            ),
            (
                "JSON from an opaque origin",
                vec![("Content-Type", "application/json"), ("Origin", "null")],
                json_body,
            ),
            (
                "a JSON look-alike type",
                vec![("Content-Type", "application/jsonx")],
                json_body,
            ),
        ] {
            let w = set_focus(to, &s_ann, &headers, body).await;
            assert_eq!(w.code, 403, "{what}: {}", w.body);
            assert!(w.body.contains("cross-site"), "{what}: {}", w.body);
        }
        let f = extension_get(to, "/api/get_force_business", Some(&s_ann)).await;
        assert_eq!(f.json(), json!([7]), "{}: no forged write landed", db.name);
        // No session, no write; a session that ended is no session.
        let none = request(
            LOCAL,
            to,
            "POST",
            "/api/set_force_business",
            &[("Content-Type", "application/json")],
            json_body,
        )
        .await;
        assert_eq!(none.code, 401);
        let alerts_page = get(to, "/alerts", &[("Cookie", &cookie(&s_vic))]).await;
        let csrf = alerts_page
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|x| x.split('"').next())
            .unwrap()
            .to_string();
        let out = request(
            LOCAL,
            to,
            "POST",
            "/logout",
            &[
                ("Cookie", &cookie(&s_vic)),
                ("Origin", &origin),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(out.code, 303);
        let w = set_focus(
            to,
            &s_vic,
            &[("Content-Type", "application/json")],
            json_body,
        )
        .await;
        assert_eq!(w.code, 401, "logged out: {}", w.body);
        assert_eq!(
            extension_get(to, "/api/get_force_business", Some(&s_vic))
                .await
                .code,
            401
        );

        // Scripts keep the bearer token, with no rule on the body's type (unchanged).
        let t = request(
            LOCAL,
            to,
            "POST",
            "/api/v1/login",
            &[("Content-Type", "application/json")],
            &json!({"name": "vic", "password": PASSWORD}).to_string(),
        )
        .await;
        let token = t.json()["token"].as_str().unwrap().to_string();
        let auth = format!("Bearer {token}");
        let w = request(
            LOCAL,
            to,
            "POST",
            "/api/set_force_business",
            &[("Authorization", &auth)],
            r#"{"force_business":[9]}"#,
        )
        .await;
        assert_eq!(w.json()["state"], json!(true), "{}", w.body);
        let f = get(to, "/api/get_force_business", &[("Authorization", &auth)]).await;
        assert_eq!(f.json(), json!([9]));
        // A bad token is refused, not passed over for the cookie next to it.
        let both = get(
            to,
            "/api/get_force_business",
            &[
                ("Authorization", "Bearer ubk_wrong"),
                ("Cookie", &cookie(&s_ann)),
            ],
        )
        .await;
        assert_eq!(both.code, 401);
    }
}

/// A one-page site on its own port: `page` for every request (the "chat" the link is in).
fn chat_site(page: String) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = s.write_all(reply.as_bytes());
        }
    });
    port
}

/// In Chromium, with the dashboard at `dash.test` and a chat page at `chat.test` (two sites):
/// the chat's link to an alert, followed logged out, goes through the login page and ends on
/// the alert; followed again, the Lax cookie makes it open at once. The chat page's forged
/// focus write goes without the cookie. On the dashboard, the extension's two GETs (made as
/// its background page makes them: synchronous XMLHttpRequest, nothing but cookies) get the
/// user's focus list and the alerts its badge counts.
#[test]
fn a_link_from_another_site_opens_the_alert_through_the_login_in_chromium() {
    let Some(_) = ubackup_testkit::require_chromium() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(sqlite());
    let c = db.dyn_catalog();
    let (id, srv) = rt.block_on(async {
        let id = alert(&*c, "script_error", "S1", 7).await;
        alert(&*c, "overdue", "S2", 8).await;
        let srv = serve(c.clone()).await;
        let ann = c.user("ann").await.unwrap().unwrap();
        c.set_focus(ann.id, "[7]").await.unwrap();
        (id, srv)
    });
    let dash = format!("http://dash.test:{}", srv.addr.port());
    let deep = format!("{dash}/alerts/{id}?from=chat");
    let chat_port = chat_site(format!(
        "<!doctype html><title>chat</title><p><a id=\"deep\" href=\"{deep}\">alert {id}</a></p>\
         <form id=\"forge\" method=\"post\" action=\"{dash}/api/set_force_business\" \
         enctype=\"text/plain\"><input name='{{\"force_business\":[666],\"x\":\"' value='\"}}'>\
         </form>"
    ));
    let chat = format!("http://chat.test:{chat_port}/");
    let Some(b) = Browser::start_with_flags(
        "deep-link",
        1280,
        900,
        &[
            "--host-resolver-rules=MAP dash.test 127.0.0.1, MAP chat.test 127.0.0.1".to_string(),
            "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable".to_string(),
        ],
    ) else {
        return;
    };
    b.check("logged out: the link goes through the login page", |b| {
        b.goto(&chat)?;
        b.click(&b.find("#deep")?)?;
        b.wait_for("#login", WAIT)?;
        let url = b.url()?;
        anyhow::ensure!(
            url == format!("{dash}/login?next=/alerts/{id}%3Ffrom%3Dchat"),
            "{url}"
        );
        b.type_into(&b.find("#name")?, "ann")?;
        b.type_into(&b.find("#password")?, PASSWORD)?;
        b.click(&b.find("#login")?)?;
        b.wait_for(".who", WAIT)?;
        let url = b.url()?;
        anyhow::ensure!(url == deep, "after the login: {url}");
        anyhow::ensure!(b.body_text()?.contains("S1:mysql:3306"), "the alert's page");
        Ok(())
    });
    b.check("logged in: the link opens the alert at once", |b| {
        b.goto(&chat)?;
        b.click(&b.find("#deep")?)?;
        b.wait_for(".who", WAIT)?;
        let url = b.url()?;
        anyhow::ensure!(url == deep, "{url}");
        anyhow::ensure!(b.body_text()?.contains("S1:mysql:3306"));
        Ok(())
    });
    b.check("the chat's forged focus write is refused", |b| {
        b.goto(&chat)?;
        b.script("document.getElementById('forge').submit()", vec![])?;
        // The answer is the API's JSON error (no cookie went with the POST).
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let body = b.body_text().unwrap_or_default();
            if body.contains("authentication required") || body.contains("cross-site") {
                break;
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "no answer: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    let ann = rt.block_on(c.user("ann")).unwrap().unwrap();
    assert_eq!(
        ann.focus_business, "[7]",
        "the forged write changed nothing"
    );
    let (focus, alerts) = b.check("the extension's two GETs on the session", |b| {
        b.goto(&format!("{dash}/alerts"))?;
        let v = b.script(
            "function get(u) { var x = new XMLHttpRequest(); x.open('GET', u, false); x.send(); \
             return [x.status, x.responseText]; } \
             return [get('/api/get_force_business'), get('/api/alert')];",
            vec![],
        )?;
        anyhow::ensure!(v[0][0] == 200 && v[1][0] == 200, "{v}");
        let parse = |x: &Value| serde_json::from_str::<Value>(x.as_str().unwrap_or(""));
        Ok((parse(&v[0][1])?, parse(&v[1][1])?))
    });
    assert_eq!(focus, json!([7]));
    assert_eq!(alerts.as_array().unwrap().len(), 2);
    assert_eq!(
        badge(&focus, &alerts),
        1,
        "the badge counts ann's focus alert"
    );
    drop(srv);
}
