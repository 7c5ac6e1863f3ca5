//! HTTPS in the indexer, and what every answer carries, against the real `ubackup-indexer run`
//! binary (a real redis-server for its results list, a SQLite catalog in a temp dir):
//!
//! - the dashboard login over HTTPS in a real headless Chromium, the certificate issued by a
//!   test CA (testkit's `TestCa`), over HTTP/2;
//! - the login over plain HTTP on a non-loopback name (Chromium's `--host-resolver-rules`),
//!   where the browser drops the Secure cookie: the page says so;
//! - HTTP/1.1 and HTTP/2 with curl, and SIGHUP swapping the certificate (a broken pair keeps
//!   the old one);
//! - start-up refused for plain HTTP on a non-loopback address with Secure cookies;
//! - the headers (`nosniff`, `Referrer-Policy`, `frame-ancestors`), the Host allow-list, and
//!   `/metrics` behind a token or on its own address.
//!
//! curl is the independent client (Debian's, with OpenSSL and nghttp2). Every wait has a
//! deadline. `UBACKUP_INDEXER_BIN=path` runs them against another build. Run alone with
//! `UBACKUP_INTEROP=required cargo test --release -p ubackup-indexer --test https`.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ubackup_testkit::{Browser, RedisServer, TestCa, Usage};

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse battery";
/// The binary under test; `UBACKUP_INDEXER_BIN` runs these tests against another build (an
/// older one, to see them fail there).
fn bin() -> String {
    std::env::var("UBACKUP_INDEXER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ubackup-indexer").to_string())
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `ubackup-indexer run`, killed on drop.
struct Indexer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    _redis: RedisServer,
}

fn config(dir: &Path, redis: &str, port: u16, http_extra: &str) -> PathBuf {
    let cfg = dir.join("indexer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[indexer]\nid = \"https-test\"\n[catalog]\nurl = \"sqlite://{}\"\n\
             [results]\nredis = \"{redis}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n{http_extra}\n\
             [log]\nlevel = \"info\"\n",
            dir.join("catalog.db").display()
        ),
    )
    .unwrap();
    cfg
}

impl Indexer {
    /// Starts the binary with `http_extra` lines in `[http]` and a user `admin`; `prepare` runs
    /// first in the temp dir (to write certificate files).
    fn start(http_extra: &str, prepare: impl FnOnce(&Path)) -> Option<Indexer> {
        let redis = RedisServer::start()?;
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let port = free_port();
        let cfg = config(dir.path(), &redis.url(), port, http_extra);
        let mut add = Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .args(["user", "add", "admin", "--role", "admin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        add.stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        assert!(add.wait().unwrap().success(), "user add failed");
        let log = std::fs::File::create(dir.path().join("indexer.log")).unwrap();
        let child = Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut ix = Indexer {
            child,
            port,
            dir,
            _redis: redis,
        };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(st) = ix.child.try_wait().unwrap() {
                panic!("indexer exited ({st}): {}", ix.log());
            }
            assert!(
                Instant::now() < deadline,
                "indexer did not listen: {}",
                ix.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(ix)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("indexer.log")).unwrap_or_default()
    }

    fn hup(&self) {
        let st = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got: its exit code, the status, the head (lower-case) and the body.
#[derive(Debug)]
struct Got {
    exit: i32,
    status: u16,
    version: String,
    head: String,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// curl with `args`, its answer split (`-i`), `%{http_version}` on the last line.
fn curl(args: &[&str]) -> Got {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "-w", "\n%{http_version}"])
        .args(args)
        .output()
        .expect("curl is required (apt-get install -y curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (rest, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Got {
        exit: out.status.code().unwrap_or(-1),
        status,
        version: version.trim().to_string(),
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// A CA and a server certificate for `indexer.test` and 127.0.0.1 written as `NAME.crt` /
/// `NAME.key` (plus `NAME-ca.crt`) into `dir`.
fn pki(dir: &Path, name: &str, ca_name: &str) -> ubackup_testkit::Issued {
    let ca = TestCa::new(ca_name).unwrap();
    ca.write(&dir.join(format!("{name}-ca.crt"))).unwrap();
    let issued = ca
        .issue(&["indexer.test", "127.0.0.1"], Usage::Server)
        .unwrap();
    issued.write(dir, name).unwrap();
    issued
}

fn tls_lines(dir: &Path) -> String {
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    )
}

#[test]
fn https_serves_http1_and_http2_and_sighup_swaps_the_certificate() {
    // The TLS paths are fixed before the dir exists: use a dir of our own.
    let certs = tempfile::tempdir().unwrap();
    pki(certs.path(), "server", "test CA A");
    let Some(ix) = Indexer::start(&tls_lines(certs.path()), |_| {}) else {
        return;
    };
    let url = format!("https://indexer.test:{}/login", ix.port);
    let resolve = format!("indexer.test:{}:127.0.0.1", ix.port);
    let ca_a = certs.path().join("server-ca.crt");
    let ca_a = ca_a.to_str().unwrap();

    // Unknown CA: curl refuses (60: peer certificate cannot be authenticated).
    let g = curl(&["--resolve", &resolve, &url]);
    assert_eq!(g.exit, 60, "{g:?}");
    let g = curl(&["--resolve", &resolve, "--cacert", ca_a, &url]);
    assert_eq!(
        (g.exit, g.status, g.version.as_str()),
        (0, 200, "2"),
        "{g:?}"
    );
    assert!(g.body.contains("id=\"login\""), "{g:?}");
    let g = curl(&["--http1.1", "--resolve", &resolve, "--cacert", ca_a, &url]);
    assert_eq!(
        (g.exit, g.status, g.version.as_str()),
        (0, 200, "1.1"),
        "{g:?}"
    );

    // A broken pair (B's key with A's certificate): the reload fails, A keeps serving.
    let other = tempfile::tempdir().unwrap();
    let b = pki(other.path(), "server", "test CA B");
    std::fs::write(certs.path().join("server.key"), &b.key_pem).unwrap();
    ix.hup();
    let deadline = Instant::now() + WAIT;
    while !ix.log().contains("TLS reload failed") {
        assert!(
            Instant::now() < deadline,
            "no reload failure logged: {}",
            ix.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let g = curl(&["--resolve", &resolve, "--cacert", ca_a, &url]);
    assert_eq!((g.exit, g.status), (0, 200), "{g:?}");

    // The whole of B: after SIGHUP, new handshakes present B.
    std::fs::write(certs.path().join("server.crt"), &b.cert_pem).unwrap();
    ix.hup();
    let ca_b = other.path().join("server-ca.crt");
    let ca_b = ca_b.to_str().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let g = curl(&["--resolve", &resolve, "--cacert", ca_b, &url]);
        if g.exit == 0 && g.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never served: {g:?}; {}",
            ix.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let g = curl(&["--resolve", &resolve, "--cacert", ca_a, &url]);
    assert_eq!(g.exit, 60, "A still served after the reload: {g:?}");
}

#[test]
fn refuses_plain_http_on_a_non_loopback_address_with_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let check = |extra: &str| {
        let cfg = config(dir.path(), "redis://127.0.0.1:9/", 1, extra);
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("127.0.0.1:1", "0.0.0.0:8080");
        std::fs::write(&cfg, text).unwrap();
        Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = check("");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for way in [
        "http.tls_cert",
        "http.tls_key",
        "http.behind_tls_proxy = true",
    ] {
        assert!(err.contains(way), "the message names {way}: {err}");
    }
    // Either way out passes validation (check-config: nothing binds).
    for extra in [
        "behind_tls_proxy = true",
        "secure_cookies = false",
        "tls_cert = \"/x.crt\"\ntls_key = \"/x.key\"",
    ] {
        let cfg = config(dir.path(), "redis://127.0.0.1:9/", 1, extra);
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("127.0.0.1:1", "0.0.0.0:8080");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{extra}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_answer_carries_nosniff_and_referrer_policy_and_pages_forbid_framing() {
    let Some(ix) = Indexer::start("secure_cookies = false", |_| {}) else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", ix.port);
    let page = curl(&[&format!("{base}/login")]);
    eprintln!("GET /login as served:\n{}", page.head);
    assert_eq!(page.status, 200, "{page:?}");
    let api = curl(&[&format!("{base}/api/v1/instances")]);
    assert_eq!(api.status, 401, "{api:?}");
    let asset = curl(&[&format!("{base}/static/app.css")]);
    for g in [&page, &api, &asset] {
        assert_eq!(
            g.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{g:?}"
        );
        assert_eq!(
            g.header("referrer-policy").as_deref(),
            Some("same-origin"),
            "{g:?}"
        );
    }
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // Without an allow-list any Host is answered.
    let g = curl(&["-H", "Host: rebind.example", &format!("{base}/login")]);
    assert_eq!(g.status, 200, "{g:?}");
}

#[test]
fn host_allow_list_refuses_other_names_and_metrics_wants_its_token() {
    let token = "metrics-token-0123456789";
    let Some(ix) = Indexer::start(
        &format!(
            "secure_cookies = false\nallowed_hosts = [\"indexer.test\", \"127.0.0.1\"]\n\
             metrics_token = \"{token}\""
        ),
        |_| {},
    ) else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", ix.port);
    // DNS rebinding: the attacker's name points at us; the Host header still names it.
    for path in ["/login", "/metrics", "/api/v1/login"] {
        let g = curl(&["-H", "Host: rebind.example", &format!("{base}{path}")]);
        assert_eq!(g.status, 421, "{path}: {g:?}");
        assert_eq!(
            g.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    let g = curl(&["-H", "Host: INDEXER.test:1234", &format!("{base}/login")]);
    assert_eq!(g.status, 200, "{g:?}");
    let g = curl(&[&format!("{base}/login")]);
    assert_eq!(g.status, 200, "{g:?}");

    let g = curl(&[&format!("{base}/metrics")]);
    assert_eq!(g.status, 401, "{g:?}");
    let g = curl(&[
        "-H",
        "Authorization: Bearer wrong-token-0123456789",
        &format!("{base}/metrics"),
    ]);
    assert_eq!(g.status, 401, "{g:?}");
    let g = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("{base}/metrics"),
    ]);
    assert_eq!(g.status, 200, "{g:?}");
    assert!(g.body.contains("ubackup_"), "{g:?}");
}

#[test]
fn metrics_on_their_own_address_leave_the_main_listener() {
    let mport = free_port();
    let Some(ix) = Indexer::start(
        &format!("secure_cookies = false\nmetrics_listen = \"127.0.0.1:{mport}\""),
        |_| {},
    ) else {
        return;
    };
    let g = curl(&[&format!("http://127.0.0.1:{}/metrics", ix.port)]);
    assert_eq!(g.status, 404, "{g:?}");
    let g = curl(&[&format!("http://127.0.0.1:{mport}/metrics")]);
    assert_eq!(g.status, 200, "{g:?}");
    assert!(g.body.contains("ubackup_"), "{g:?}");
    let g = curl(&[&format!("http://127.0.0.1:{mport}/login")]);
    assert_eq!(g.status, 404, "only /metrics there: {g:?}");
}

fn login(b: &Browser, url: &str) {
    b.check("login", |b| {
        b.goto(url)?;
        b.type_into(&b.find("#name")?, "admin")?;
        b.type_into(&b.find("#password")?, PASSWORD)?;
        b.click(&b.find("#login")?)?;
        b.wait_for(".who, #login-error", WAIT)?;
        Ok(())
    });
}

#[test]
fn dashboard_login_over_https_in_chromium() {
    let certs = tempfile::tempdir().unwrap();
    let issued = pki(certs.path(), "server", "test CA A");
    let Some(ix) = Indexer::start(&tls_lines(certs.path()), |_| {}) else {
        return;
    };
    let Some(b) = Browser::start_with_flags(
        "https-login",
        1280,
        800,
        &[
            "--host-resolver-rules=MAP indexer.test 127.0.0.1".to_string(),
            format!(
                "--ignore-certificate-errors-spki-list={}",
                issued.spki_sha256_base64()
            ),
        ],
    ) else {
        return;
    };
    let base = format!("https://indexer.test:{}", ix.port);
    login(&b, &format!("{base}/login"));
    b.ensure("logged in (a session)", b.find(".who").is_ok());
    let url = b.url().unwrap();
    b.ensure(
        &format!("on the overview: {url}"),
        url == format!("{base}/"),
    );
    let proto = b
        .script(
            "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
            vec![],
        )
        .unwrap();
    b.ensure(&format!("HTTP/2: {proto}"), proto == "h2");
    // The session holds: another page loads without a login.
    b.goto(&format!("{base}/alerts")).unwrap();
    b.ensure("still logged in", b.find(".who").is_ok());
}

#[test]
fn login_over_plain_http_on_a_non_loopback_name_says_the_cookie_was_dropped() {
    // Loopback bind (start-up allows it), reached by a name the browser does not treat as a
    // secure context: it drops the Secure cookie.
    let Some(ix) = Indexer::start("", |_| {}) else {
        return;
    };
    let Some(b) = Browser::start_with_flags(
        "http-cookie-dropped",
        1280,
        800,
        &[
            "--host-resolver-rules=MAP indexer.test 127.0.0.1".to_string(),
            // No automatic https:// attempt first: the page is plain HTTP on purpose.
            "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable".to_string(),
        ],
    ) else {
        return;
    };
    login(&b, &format!("http://indexer.test:{}/login", ix.port));
    let err = b
        .find("#login-error")
        .and_then(|e| b.text(&e))
        .unwrap_or_default();
    b.ensure(
        &format!("the page says the cookie was dropped: {err:?}"),
        err.contains("did not keep the session cookie") && err.contains("https://"),
    );
}
