//! Logins on a real indexer over HTTP (the API and page routes on a loopback port, client
//! sockets bound to chosen 127.0.0.x addresses): one limiter for web and API, reserved before
//! the hash; lockout per (account, address); the bounded hashing pool; unknown names cost as
//! much as known ones; resets and role changes end sessions and tokens; tokens expire. The
//! flood test runs the `ubackup-indexer` binary and reads its RSS from /proc.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use std::io::Write as _;
use support::server::{self, request, Answer, Server, PASSWORD};
use support::*;
use ubackup_indexer::auth::LoginPolicy;
use ubackup_indexer::catalog::{Catalog, Role};
use ubackup_indexer::clock::ManualClock;
use ubackup_testkit::Postgres;

async fn serve(catalog: Arc<dyn Catalog>, clock: Arc<ManualClock>, policy: LoginPolicy) -> Server {
    let users = [("admin", Role::Admin), ("ann", Role::Operator)];
    server::serve(catalog, clock, policy, &users).await
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn web_login(from: IpAddr, to: SocketAddr, name: &str, password: &str) -> Answer {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("name", name)
        .append_pair("password", password)
        .finish();
    request(
        from,
        to,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    )
    .await
}

async fn api_login(from: IpAddr, to: SocketAddr, body: Value) -> Answer {
    request(
        from,
        to,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )
    .await
}

async fn api_get(to: SocketAddr, path: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    request(
        ip("127.0.0.1"),
        to,
        "GET",
        path,
        &[("Authorization", &auth)],
        "",
    )
    .await
}

async fn page(to: SocketAddr, path: &str, session: &str) -> Answer {
    let cookie = format!("ubk_session={session}");
    request(ip("127.0.0.1"), to, "GET", path, &[("Cookie", &cookie)], "").await
}

fn count(v: &[Answer], code: u16) -> usize {
    v.iter().filter(|a| a.code == code).count()
}

async fn parallel<F: std::future::Future<Output = Answer> + Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> F,
) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_get_429_after_the_limit_on_web_and_api() {
    let db = sqlite().await;
    let s = serve(
        db.dyn_catalog(),
        Arc::new(ManualClock::at(T0)),
        LoginPolicy::default(),
    )
    .await;
    let to = s.addr;
    let web = parallel(40, |_| web_login(ip("127.0.0.1"), to, "admin", "wrong")).await;
    assert!(
        count(&web, 401) <= 5,
        "{:?}",
        web.iter().map(|a| a.code).collect::<Vec<_>>()
    );
    assert_eq!(count(&web, 429) + count(&web, 401), 40);
    let r = web.iter().find(|a| a.code == 429).unwrap();
    assert!(r.header("retry-after").is_some(), "{}", r.head);

    // The API is the same limiter: the web failures already count for (admin, this address),
    let a = api_login(
        ip("127.0.0.1"),
        to,
        json!({"name": "admin", "password": PASSWORD}),
    )
    .await;
    assert_eq!(a.code, 429, "{}", a.body);
    assert!(a.header("retry-after").is_some());
    // and a parallel API burst on another account is cut the same way.
    let api = parallel(40, |_| {
        api_login(
            ip("127.0.0.1"),
            to,
            json!({"name": "ann", "password": "wrong"}),
        )
    })
    .await;
    assert!(
        count(&api, 401) <= 5,
        "{:?}",
        api.iter().map(|a| a.code).collect::<Vec<_>>()
    );
    assert_eq!(count(&api, 429) + count(&api, 401), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_from_one_address_does_not_block_another() {
    let db = sqlite().await;
    let s = serve(
        db.dyn_catalog(),
        Arc::new(ManualClock::at(T0)),
        LoginPolicy::default(),
    )
    .await;
    let to = s.addr;
    for _ in 0..10 {
        web_login(ip("127.0.0.2"), to, "admin", "wrong").await;
    }
    assert_eq!(
        web_login(ip("127.0.0.2"), to, "admin", PASSWORD).await.code,
        429
    );
    let ok = web_login(ip("127.0.0.3"), to, "admin", PASSWORD).await;
    assert_eq!(ok.code, 303, "{}", ok.body);
    assert!(ok.session().is_some());
    let ok = api_login(
        ip("127.0.0.4"),
        to,
        json!({"name": "admin", "password": PASSWORD}),
    )
    .await;
    assert_eq!(ok.code, 200, "{}", ok.body);
    // API failures are limited like the web's.
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..7 {
            v.push(
                api_login(
                    ip("127.0.0.5"),
                    to,
                    json!({"name": "ann", "password": "wrong"}),
                )
                .await
                .code,
            );
        }
        v
    };
    // Five free failures, then the delay (1 s, then 2 s) answers 429 even on a stalled host.
    assert_eq!(codes[..5], [401; 5], "{codes:?}");
    assert!(codes[5..].contains(&429), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_role_change_end_sessions_and_tokens() {
    let pg = Postgres::start();
    for db in both(&pg, "login_reset").await {
        let c = db.dyn_catalog();
        let s = serve(
            c.clone(),
            Arc::new(ManualClock::at(T0)),
            LoginPolicy::default(),
        )
        .await;
        let to = s.addr;
        let local = ip("127.0.0.1");
        let ann = web_login(local, to, "ann", PASSWORD)
            .await
            .session()
            .unwrap();
        let token = api_login(local, to, json!({"name": "ann", "password": PASSWORD})).await;
        let token: Value = serde_json::from_str(&token.body).unwrap();
        let token = token["token"].as_str().unwrap().to_string();
        assert_eq!(page(to, "/", &ann).await.code, 200, "{}", db.name);
        assert_eq!(api_get(to, "/api/v1/instances", &token).await.code, 200);

        // An admin resets ann's password on the users page (same role).
        let admin = web_login(local, to, "admin", PASSWORD)
            .await
            .session()
            .unwrap();
        let users = page(to, "/users", &admin).await;
        let csrf = users
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|x| x.split('"').next())
            .unwrap()
            .to_string();
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &csrf)
            .append_pair("name", "ann")
            .append_pair("role", "operator")
            .append_pair("password", "another long password")
            .finish();
        let cookie = format!("ubk_session={admin}");
        let saved = request(
            local,
            to,
            "POST",
            "/users",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &cookie),
            ],
            &body,
        )
        .await;
        assert_eq!(saved.code, 303, "{}", saved.body);
        let after = page(to, "/", &ann).await;
        assert_eq!(after.code, 303, "{}: session survived a reset", db.name);
        // The overview is where a login goes anyway: no `next`.
        assert_eq!(after.header("location").as_deref(), Some("/login"));
        assert_eq!(
            api_get(to, "/api/v1/instances", &token).await.code,
            401,
            "{}: token survived a reset",
            db.name
        );

        // A role change from outside the web (the CLI's `user add`) ends them too.
        let ann = web_login(local, to, "ann", "another long password")
            .await
            .session()
            .unwrap();
        let token = api_login(
            local,
            to,
            json!({"name": "ann", "password": "another long password"}),
        )
        .await;
        let token: Value = serde_json::from_str(&token.body).unwrap();
        let token = token["token"].as_str().unwrap().to_string();
        let hash = c.user("ann").await.unwrap().unwrap().password_hash;
        c.put_user("ann", Role::Viewer, &hash, T0).await.unwrap();
        assert_eq!(page(to, "/", &ann).await.code, 303, "{}", db.name);
        assert_eq!(api_get(to, "/api/v1/instances", &token).await.code, 401);
        // The admin's own session was untouched.
        assert_eq!(page(to, "/users", &admin).await.code, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_expire() {
    let pg = Postgres::start();
    for db in both(&pg, "login_expiry").await {
        let clock = Arc::new(ManualClock::at(T0));
        let s = serve(db.dyn_catalog(), clock.clone(), LoginPolicy::default()).await;
        let to = s.addr;
        let a = api_login(
            ip("127.0.0.1"),
            to,
            json!({"name": "ann", "password": PASSWORD, "expires_in_secs": 60}),
        )
        .await;
        assert_eq!(a.code, 200, "{}", a.body);
        let v: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["expires_ms"], json!(T0 + 60_000));
        let token = v["token"].as_str().unwrap();
        assert_eq!(api_get(to, "/api/v1/instances", token).await.code, 200);
        clock.advance(60_000);
        assert_eq!(
            api_get(to, "/api/v1/instances", token).await.code,
            401,
            "{}: an expired token was accepted",
            db.name
        );
        // No lifetime asked, or too long: an API login's short lifetime.
        let d = LoginPolicy::default();
        for (ask, want) in [(None, d.login_token_ms), (Some(u64::MAX), d.login_token_ms)] {
            let mut body = json!({"name": "ann", "password": PASSWORD});
            if let Some(x) = ask {
                body["expires_in_secs"] = json!(x);
            }
            let v: Value =
                serde_json::from_str(&api_login(ip("127.0.0.1"), to, body).await.body).unwrap();
            assert_eq!(v["expires_ms"], json!(T0 + 60_000 + want), "{}", db.name);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_cost_as_much_as_known_ones() {
    let db = sqlite().await;
    let s = serve(
        db.dyn_catalog(),
        Arc::new(ManualClock::at(T0)),
        LoginPolicy::default(),
    )
    .await;
    let to = s.addr;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let t = Instant::now();
        let a = api_login(
            ip("127.0.0.1"),
            to,
            json!({"name": "ann", "password": PASSWORD}),
        )
        .await;
        known.push(t.elapsed().as_secs_f64());
        assert_eq!(a.code, 200);
        let t = Instant::now();
        let a = api_login(
            ip("127.0.0.1"),
            to,
            json!({"name": format!("nobody{i}"), "password": PASSWORD}),
        )
        .await;
        unknown.push(t.elapsed().as_secs_f64());
        assert_eq!(a.code, 401);
    }
    let (k, u) = (median(known), median(unknown));
    assert!(
        u >= 0.3 * k,
        "unknown names answer in {:.2} ms, known in {:.2} ms",
        u * 1e3,
        k * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_pool_of_one_is_answered_503_not_queued() {
    let db = sqlite().await;
    let mut policy = LoginPolicy {
        hash_workers: 1,
        hash_queue_ms: 100,
        ..LoginPolicy::default()
    };
    policy.limits.address_failures = 1000;
    let s = serve(db.dyn_catalog(), Arc::new(ManualClock::at(T0)), policy).await;
    let to = s.addr;
    let t = Instant::now();
    let v = parallel(50, |i| {
        api_login(
            ip("127.0.0.1"),
            to,
            json!({"name": format!("u{i}"), "password": "x".repeat(1000)}),
        )
    })
    .await;
    let took = t.elapsed();
    let busy = count(&v, 503);
    assert!(
        busy > 0,
        "{:?}",
        v.iter().map(|a| a.code).collect::<Vec<_>>()
    );
    assert_eq!(busy + count(&v, 401), 50);
    let r = v.iter().find(|a| a.code == 503).unwrap();
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Busy answers do not count as failures: the right password still passes.
    let ok = api_login(
        ip("127.0.0.1"),
        to,
        json!({"name": "ann", "password": PASSWORD}),
    )
    .await;
    assert_eq!(ok.code, 200, "{}", ok.body);
}

fn proc_status(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// 1,000 parallel wrong-password logins for `admin` (1 kB passwords, each from its own
/// 127.1.x.y address so the limiter lets them all reach the hashing pool) against the `ubackup-indexer run` binary: its RSS
/// stays under 300 MiB and it keeps serving pages. `UBACKUP_INDEXER_BIN` runs another build
/// (the figures in the report came from pointing it at the old one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_leaves_memory_bounded_and_pages_served() {
    let Some(redis) = ubackup_testkit::RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg_path = dir.path().join("indexer.toml");
    let other = std::env::var("UBACKUP_INDEXER_BIN").ok();
    std::fs::write(
        &cfg_path,
        format!(
            "[indexer]\nid = \"flood\"\n[catalog]\nurl = \"sqlite://{}\"\n[results]\nredis = \"{}\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\nsecure_cookies = false\n{}",
            dir.path().join("c.db").display(),
            redis.url(),
            // The same pool on any machine (an older build knows no [login]).
            if other.is_some() { "" } else { "[login]\nhash_workers = 2\n" },
        ),
    )
    .unwrap();
    let bin = other.unwrap_or_else(|| env!("CARGO_BIN_EXE_ubackup-indexer").to_string());
    // The account under attack, made with the binary's own `user add`.
    let mut add = std::process::Command::new(&bin)
        .args([
            "--config",
            cfg_path.to_str().unwrap(),
            "user",
            "add",
            "admin",
        ])
        .args(["--role", "admin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    assert!(add.wait().unwrap().success());
    let mut child = std::process::Command::new(bin)
        .args(["--config", cfg_path.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(to).await.is_err() {
        assert!(Instant::now() < deadline, "indexer did not listen");
        assert!(child.try_wait().unwrap().is_none(), "indexer exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let child = Kill(child);
    let (rss0, threads0) = proc_status(pid);

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A page reader and a /proc sampler while the flood runs.
    let reader = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ok = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let a = request(ip("127.0.0.1"), to, "GET", "/login", &[], "").await;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                ok += usize::from(a.code == 200);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (lat, ok)
        })
    };
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut rss, mut threads) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (r, t) = proc_status(pid);
                rss = rss.max(r);
                threads = threads.max(t);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (rss, threads)
        })
    };
    let t = Instant::now();
    let flood = parallel(1000, |i| {
        let from = IpAddr::from([127, 1, (i / 250) as u8, (i % 250) as u8 + 1]);
        api_login(
            from,
            to,
            json!({"name": "admin", "password": "p".repeat(1024)}),
        )
    })
    .await;
    let took = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut lat, ok) = reader.await.unwrap();
    let (rss, threads) = sampler.await.unwrap();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    eprintln!(
        "flood: {took:?}; codes 401={} 429={} 503={}; RSS {} -> max {} KiB; threads {} -> max {}; \
         GET /login during flood: n={} ok={} p50={:.1} ms p99={:.1} ms",
        count(&flood, 401),
        count(&flood, 429),
        count(&flood, 503),
        rss0,
        rss,
        threads0,
        threads,
        lat.len(),
        ok,
        pct(0.5),
        pct(0.99)
    );
    assert!(rss < 300 * 1024, "RSS reached {rss} KiB");
    assert!(
        ok > 0 && pct(0.5) < 1000.0,
        "pages not served during the flood"
    );
    assert!(count(&flood, 503) > 0, "nothing was turned away");
    drop(child);
}
