//! API tokens on a real indexer (routes on a loopback port; SQLite and the testkit's real
//! PostgreSQL): named tokens from the users page, the short-lived token of an API login, the
//! list (name, created, expiry, last use; never the secret), per-token revoke that takes
//! effect at once, expiry, and a viewer who cannot revoke another user's token. Then the users
//! page in headless Chromium at 1280 and 390 px with real tokens (screenshots under
//! `target/token-shots/`, or `$WEB_SHOTS_DIR`).
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::server::{self, page, post_form, request, web_login, Answer, Server, LOCAL, PASSWORD};
use support::*;
use ubackup_indexer::auth::LoginPolicy;
use ubackup_indexer::catalog::{prelude::*, Role};
use ubackup_indexer::clock::ManualClock;
use ubackup_testkit::{Browser, Postgres, RedisServer};

async fn serve(catalog: Arc<dyn Catalog>, clock: Arc<ManualClock>) -> Server {
    let users = [
        ("admin", Role::Admin),
        ("ann", Role::Operator),
        ("vic", Role::Viewer),
    ];
    server::serve(catalog, clock, LoginPolicy::default(), &users).await
}

/// `POST /api/v1/login`: (token, expires_ms).
async fn api_login(to: SocketAddr, name: &str, extra: Value) -> (String, i64) {
    let mut body = json!({"name": name, "password": PASSWORD});
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    let a = request(
        LOCAL,
        to,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    let v = a.json();
    (
        v["token"].as_str().unwrap().to_string(),
        v["expires_ms"].as_i64().unwrap(),
    )
}

async fn api(to: SocketAddr, method: &str, path: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    request(LOCAL, to, method, path, &[("Authorization", &auth)], "").await
}

/// The token on the "shown only now" page.
fn shown_token(a: &Answer) -> String {
    assert_eq!(a.code, 200, "{}", a.body);
    a.body
        .split("<code id=\"token\">")
        .nth(1)
        .and_then(|x| x.split('<').next())
        .unwrap()
        .to_string()
}

/// The id of the first token in a list that `f` picks.
fn id_where(list: &Value, f: impl Fn(&Value) -> bool) -> i64 {
    list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| f(t))
        .unwrap_or_else(|| panic!("no such token in {list}"))["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_named_listed_revoked_at_once_and_expire() {
    let pg = Postgres::start();
    for db in both(&pg, "tokens").await {
        let clock = Arc::new(ManualClock::at(T0));
        let s = serve(db.dyn_catalog(), clock.clone()).await;
        let to = s.addr;
        let d = LoginPolicy::default();

        // An API login: a short-lived token (login_token_secs), never longer whatever it asks.
        let (login, exp) = api_login(to, "ann", json!({})).await;
        assert_eq!(exp, T0 + d.login_token_ms, "{}", db.name);
        assert_eq!(d.login_token_ms, 3_600_000);
        let (_, exp) = api_login(to, "ann", json!({"expires_in_secs": u64::MAX})).await;
        assert_eq!(
            exp,
            T0 + d.login_token_ms,
            "{}: a login asked past its cap",
            db.name
        );
        let (_, exp) = api_login(to, "ann", json!({"expires_in_secs": 60})).await;
        assert_eq!(exp, T0 + 60_000);

        // A named token from the users page, shown once.
        let ann_web = web_login(to, "ann").await;
        let made = post_form(
            to,
            "/users/tokens",
            &ann_web,
            &[("name", "restore on db7"), ("days", "7")],
        )
        .await;
        let named = shown_token(&made);
        assert!(named.starts_with("ubk_"), "{}", made.body);
        assert!(made.body.contains("restore on db7"));
        // One that asks past the maximum is refused, not stretched.
        let too_long = post_form(
            to,
            "/users/tokens",
            &ann_web,
            &[("name", "forever"), ("days", "100000")],
        )
        .await;
        assert_eq!(too_long.code, 400, "{}", too_long.body);
        let bad_name = post_form(
            to,
            "/users/tokens",
            &ann_web,
            &[("name", "\t=cmd"), ("days", "1")],
        )
        .await;
        assert_eq!(bad_name.code, 400);

        // The list: name, created, expiry, last use; never a secret or its hash.
        clock.advance(120_000);
        assert_eq!(api(to, "GET", "/api/v1/instances", &named).await.code, 200);
        let list = api(to, "GET", "/api/v1/tokens", &login).await;
        assert_eq!(list.code, 200, "{}", list.body);
        let v = list.json();
        let tokens = v["tokens"].as_array().unwrap();
        // Two live login tokens and the named one; the 60 s token has expired and is not listed.
        assert_eq!(tokens.len(), 3, "{}: {v}", db.name);
        let t = tokens
            .iter()
            .find(|t| t["name"] == "restore on db7")
            .unwrap();
        assert_eq!(t["user"], "ann");
        assert_eq!(t["created_ms"], json!(T0));
        assert_eq!(t["expires_ms"], json!(T0 + 7 * DAY));
        assert_eq!(t["last_used_ms"], json!(T0 + 120_000), "{}", db.name);
        let unused = tokens.iter().filter(|t| t["last_used_ms"] == 0).count();
        assert_eq!(
            unused, 1,
            "the login token used for the list records its use: {v}"
        );
        let mut keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created_ms",
                "expires_ms",
                "id",
                "last_used_ms",
                "name",
                "user"
            ]
        );
        let users_page = page(to, "/users", &ann_web.0).await;
        for secret in [&named, &login] {
            let hash = ubackup_indexer::auth::token_hash(secret);
            assert!(!list.body.contains(secret.as_str()) && !list.body.contains(&hash));
            assert!(!users_page.body.contains(secret.as_str()) && !users_page.body.contains(&hash));
        }
        assert!(users_page.body.contains(">restore on db7<"));
        assert!(users_page.body.contains(">API login from 127.0.0.1<"));

        // A viewer cannot revoke ann's token, by API or by the page, nor list everyone's.
        let (vic, _) = api_login(to, "vic", json!({})).await;
        let named_id = id_where(&v, |t| t["name"] == "restore on db7");
        let path = format!("/api/v1/tokens/{named_id}");
        assert_eq!(
            api(to, "DELETE", &path, &vic).await.code,
            404,
            "{}",
            db.name
        );
        let vic_web = web_login(to, "vic").await;
        let id = named_id.to_string();
        let r = post_form(to, "/users/tokens/revoke", &vic_web, &[("id", &id)]).await;
        assert_eq!(r.code, 404, "{}: {}", db.name, r.body);
        assert_eq!(
            api(to, "GET", "/api/v1/tokens?all=true", &vic).await.code,
            403
        );
        let vic_page = page(to, "/users", &vic_web.0).await;
        assert!(vic_page.body.contains(">API login from 127.0.0.1<"));
        assert!(
            !vic_page.body.contains(">restore on db7<"),
            "{}",
            vic_page.body
        );
        assert_eq!(api(to, "GET", "/api/v1/instances", &named).await.code, 200);
        // An admin sees everyone's.
        let (admin, _) = api_login(to, "admin", json!({})).await;
        let all = api(to, "GET", "/api/v1/tokens?all=true", &admin)
            .await
            .json();
        let users: Vec<&str> = all["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["user"].as_str().unwrap())
            .collect();
        assert!(users.contains(&"vic") && users.contains(&"ann"), "{all}");

        // ann revokes the named token on the page: the next request with it is 401.
        let r = post_form(to, "/users/tokens/revoke", &ann_web, &[("id", &id)]).await;
        assert_eq!(r.code, 303, "{}", r.body);
        assert_eq!(
            r.header("location").as_deref(),
            Some("/users?done=token_revoked")
        );
        assert_eq!(
            api(to, "GET", "/api/v1/instances", &named).await.code,
            401,
            "{}: a revoked token still worked",
            db.name
        );
        // and the login token through the API, with itself.
        let login_id = id_where(&v, |t| {
            t["name"] == "API login from 127.0.0.1" && t["last_used_ms"] != 0
        });
        let r = api(to, "DELETE", &format!("/api/v1/tokens/{login_id}"), &login).await;
        assert_eq!(r.code, 200, "{}", r.body);
        assert_eq!(api(to, "GET", "/api/v1/tokens", &login).await.code, 401);

        // Expiry: the login token after its hour, a one-day named token after its day.
        let one_day = shown_token(
            &post_form(
                to,
                "/users/tokens",
                &vic_web,
                &[("name", "one day"), ("days", "1")],
            )
            .await,
        );
        assert_eq!(api(to, "GET", "/api/v1/instances", &vic).await.code, 200);
        clock.advance(d.login_token_ms);
        assert_eq!(
            api(to, "GET", "/api/v1/instances", &vic).await.code,
            401,
            "{}: an expired login token was accepted",
            db.name
        );
        assert_eq!(
            api(to, "GET", "/api/v1/instances", &one_day).await.code,
            200
        );
        clock.advance(DAY);
        assert_eq!(
            api(to, "GET", "/api/v1/instances", &one_day).await.code,
            401
        );
    }
}

/// An admin and an operator with real tokens, on `app::run` (SQLite), in Chromium at 1280
/// and 390 px: the admin's page lists every token and none of their secrets, a token made
/// with the form is shown once and then listed, Revoke removes one row; the operator sees
/// only its own. Neither width scrolls the page sideways.
#[test]
fn users_page_lists_and_revokes_tokens_in_chromium() {
    let Some(_) = ubackup_testkit::require_chromium() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "[indexer]\nid = \"tokens\"\n[catalog]\nurl = \"sqlite://{}\"\n[results]\nredis = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\nsecure_cookies = false\n",
        dir.path().join("c.db").display(),
        redis.url()
    );
    let cfg = ubackup_indexer::config::Config::parse(&text).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let catalog = rt
        .block_on(ubackup_indexer::app::open_catalog(&cfg))
        .unwrap();
    let mut secrets = Vec::new();
    rt.block_on(async {
        let h = ubackup_indexer::auth::hash_password(PASSWORD).unwrap();
        let admin = catalog
            .put_user("admin", Role::Admin, &h, now)
            .await
            .unwrap();
        let ann = catalog
            .put_user("ann", Role::Operator, &h, now)
            .await
            .unwrap();
        catalog
            .put_user("restore-bot", Role::Viewer, &h, now)
            .await
            .unwrap();
        let bot = catalog.user("restore-bot").await.unwrap().unwrap().id;
        for (user, name, age_days, life_days, used) in [
            (admin, "grafana dashboard", 20, 90, Some(1)),
            (ann, "API login from 10.20.30.40", 0, 0, Some(0)),
            (ann, "nightly restore drill (db7, db8)", 5, 30, Some(2)),
            (ann, "laptop", 1, 7, None),
            (
                bot,
                "restore on db-shard-017.prod.example.com",
                40,
                90,
                Some(3),
            ),
        ] {
            let t = ubackup_indexer::auth::new_token();
            let created = now - age_days * DAY;
            let expires = if life_days == 0 {
                now + 3_600_000
            } else {
                created + life_days * DAY
            };
            catalog
                .add_named_token(
                    user,
                    name,
                    &ubackup_indexer::auth::token_hash(&t),
                    created,
                    expires,
                )
                .await
                .unwrap();
            if let Some(days_ago) = used {
                // A use, as the API records it.
                catalog
                    .user_by_token(&ubackup_indexer::auth::token_hash(&t), now - days_ago * DAY)
                    .await
                    .unwrap()
                    .unwrap();
            }
            secrets.push(t);
        }
    });
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = rt.spawn(ubackup_indexer::app::run(cfg, rx));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "indexer did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let shots = std::env::var("WEB_SHOTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| ubackup_testkit::browser::failure_dir().with_file_name("token-shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let Some(b) = Browser::start("tokens", 1280, 900) else {
        return;
    };
    let login = |user: &str| {
        b.check("login", |b| {
            b.goto(&format!("{base}/login"))?;
            b.type_into(&b.find("#name")?, user)?;
            b.type_into(&b.find("#password")?, PASSWORD)?;
            b.click(&b.find("#login")?)?;
            b.wait_for(".who", Duration::from_secs(30))?;
            Ok(())
        })
    };
    let rows = |b: &Browser| b.find_all("#tokens tbody tr").map(|v| v.len()).unwrap_or(0);
    let no_sideways_scroll = |b: &Browser, width: i64| -> anyhow::Result<()> {
        let w = b.script("return document.documentElement.scrollWidth", vec![])?;
        let w = w.as_i64().unwrap_or(i64::MAX);
        anyhow::ensure!(w <= width, "page is {w} px wide at {width} px");
        // Every Revoke and user action is on screen, not scrolled away inside a table.
        let right = b.script(
            "var r = 0; document.querySelectorAll('#tokens button, #users button').forEach(function (e) { r = Math.max(r, e.getBoundingClientRect().right); }); return Math.ceil(r);",
            vec![],
        )?;
        let right = right.as_i64().unwrap_or(i64::MAX);
        anyhow::ensure!(right <= width, "a button ends at {right} px at {width} px");
        Ok(())
    };
    login("admin");
    b.check("admin sees every token, no secret", |b| {
        b.goto(&format!("{base}/users"))?;
        anyhow::ensure!(rows(b) == 5, "rows: {}", rows(b));
        let text = b.body_text()?;
        for name in [
            "grafana dashboard",
            "restore on db-shard-017.prod.example.com",
            "laptop",
        ] {
            anyhow::ensure!(text.contains(name), "{name} missing");
        }
        anyhow::ensure!(text.contains("never"), "the unused token says never");
        let src = b.source()?;
        for s in &secrets {
            anyhow::ensure!(!src.contains(s.as_str()), "a secret is on the page");
        }
        no_sideways_scroll(b, 1280)
    });
    std::fs::write(
        shots.join("users-tokens-1280.png"),
        b.full_page_png().unwrap(),
    )
    .unwrap();
    b.resize(390, 844).unwrap();
    b.goto(&format!("{base}/users")).unwrap();
    b.check("390 px", |b| no_sideways_scroll(b, 390));
    std::fs::write(
        shots.join("users-tokens-390.png"),
        b.full_page_png().unwrap(),
    )
    .unwrap();
    b.resize(1280, 900).unwrap();

    // A new token with the form: shown once, then listed.
    let made = b.check("create a token", |b| {
        b.goto(&format!("{base}/users"))?;
        b.type_into(&b.find("#t-name")?, "ci pipeline")?;
        b.script("document.getElementById('t-days').value = '14'", vec![])?;
        b.click(&b.find("#token-form button[type=submit]")?)?;
        let code = b.wait_for("#token", Duration::from_secs(30))?;
        b.text(&code)
    });
    assert!(made.starts_with("ubk_"), "{made}");
    std::fs::write(
        shots.join("token-shown-once-1280.png"),
        b.screenshot_png().unwrap(),
    )
    .unwrap();
    b.check("listed, then revoked", |b| {
        b.goto(&format!("{base}/users"))?;
        anyhow::ensure!(rows(b) == 6 && b.body_text()?.contains("ci pipeline"));
        anyhow::ensure!(!b.source()?.contains(made.as_str()));
        b.click(&b.find("button[aria-label='Revoke token laptop']")?)?;
        b.wait_for("#done", Duration::from_secs(30))?;
        anyhow::ensure!(b.body_text()?.contains("Token revoked."));
        anyhow::ensure!(rows(b) == 5 && !b.body_text()?.contains("laptop"));
        Ok(())
    });
    let left = rt.block_on(catalog.tokens(None, now)).unwrap();
    assert!(left.iter().all(|t| t.name != "laptop"));

    // The operator: only its own tokens, under "API tokens".
    b.check("log out", |b| {
        b.click(&b.find(".who button[type=submit]")?)?;
        b.wait_for("#login", Duration::from_secs(30))?;
        Ok(())
    });
    login("ann");
    b.check("operator sees its own", |b| {
        b.goto(&format!("{base}/users"))?;
        let text = b.body_text()?;
        anyhow::ensure!(text.contains("Your API tokens"));
        anyhow::ensure!(rows(b) == 2, "rows: {}", rows(b));
        anyhow::ensure!(!text.contains("grafana dashboard") && !text.contains("ci pipeline"));
        anyhow::ensure!(b.find("#users").is_err() && b.find("#user-form").is_err());
        Ok(())
    });
    b.resize(390, 844).unwrap();
    b.goto(&format!("{base}/users")).unwrap();
    b.check("operator at 390 px", |b| no_sideways_scroll(b, 390));
    std::fs::write(shots.join("own-tokens-390.png"), b.full_page_png().unwrap()).unwrap();
    eprintln!("screenshots in {}", shots.display());
    drop(b);
    let _ = stop.send(true);
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
}
