//! An in-process indexer (API and page routes) on a loopback port with seeded users, and a
//! raw HTTP/1.1 request from a chosen 127.0.0.x address (logins are limited per address).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ubackup_indexer::auth::{LoginGuard, LoginPolicy};
use ubackup_indexer::catalog::{Catalog, Role};
use ubackup_indexer::clock::ManualClock;
use ubackup_indexer::cluster::Clusters;
use ubackup_indexer::http::AppState;
use ubackup_indexer::metrics::Metrics;

/// Every seeded user's password.
pub const PASSWORD: &str = "correct horse battery";

/// A running server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// Seeds `users` (all with [`PASSWORD`]) and serves the API and the pages on 127.0.0.1.
pub async fn serve(
    catalog: Arc<dyn Catalog>,
    clock: Arc<ManualClock>,
    policy: LoginPolicy,
    users: &[(&str, Role)],
) -> Server {
    for (name, role) in users {
        let h = ubackup_indexer::auth::hash_password(PASSWORD).unwrap();
        catalog.put_user(name, *role, &h, super::T0).await.unwrap();
    }
    let state = AppState {
        catalog,
        clusters: Arc::new(Clusters::new(vec![])),
        metrics: Arc::new(Metrics::default()),
        clock,
        anonymous_legacy_reads: false,
        login: Arc::new(LoginGuard::new(policy)),
    };
    let web = ubackup_indexer::web::WebOptions {
        secure_cookies: false,
        ..Default::default()
    };
    let app = ubackup_indexer::web::router(ubackup_indexer::http::routes(), web).with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(ubackup_indexer::http::serve(l, app, rx));
    Server { addr, _stop: tx }
}

/// An answer: status, head (the header lines), body.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
        })
    }

    /// The body as JSON (Null if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The session cookie this answer sets, if any.
    pub fn session(&self) -> Option<String> {
        let c = self.header("set-cookie")?;
        let v = c.strip_prefix("ubk_session=")?.split(';').next()?;
        (!v.is_empty()).then(|| v.to_string())
    }
}

/// 127.0.0.1, the address most requests come from.
pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One HTTP/1.1 request from `from` (a 127.0.0.x address) to `to`.
pub async fn request(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer {
        code,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A dashboard session by a real login of `name` with [`PASSWORD`]: (cookie value, CSRF token
/// read from the users page).
pub async fn web_login(to: SocketAddr, name: &str) -> (String, String) {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("name", name)
        .append_pair("password", PASSWORD)
        .finish();
    let a = request(
        LOCAL,
        to,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    )
    .await;
    assert_eq!(a.code, 303, "login {name}: {}", a.body);
    let session = a.session().unwrap();
    let page = page(to, "/users", &session).await;
    assert_eq!(page.code, 200, "{}", page.body);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|x| x.split('"').next())
        .unwrap()
        .to_string();
    (session, csrf)
}

/// A page GET on a dashboard session.
pub async fn page(to: SocketAddr, path: &str, session: &str) -> Answer {
    let cookie = format!("ubk_session={session}");
    request(LOCAL, to, "GET", path, &[("Cookie", &cookie)], "").await
}

/// A form POST on a dashboard session `web` (cookie, CSRF token), the token added.
pub async fn post_form(
    to: SocketAddr,
    path: &str,
    web: &(String, String),
    pairs: &[(&str, &str)],
) -> Answer {
    let mut f = form_urlencoded::Serializer::new(String::new());
    f.append_pair("csrf", &web.1);
    for (k, v) in pairs {
        f.append_pair(k, v);
    }
    let cookie = format!("ubk_session={}", web.0);
    request(
        LOCAL,
        to,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie),
        ],
        &f.finish(),
    )
    .await
}
