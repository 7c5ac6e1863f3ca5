//! Alert channels against real receivers: an HTTPS receiver on loopback with a test CA that
//! checks each chat format's body and signature (generic webhook, Slack, DingTalk, WeCom,
//! Feishu), a real `prometheus-alertmanager` read back through its API, and a real SMTP server
//! (aiosmtpd) with STARTTLS and AUTH. Then the storm: 20,000 overdue instances and a node
//! down, counted per channel over five (simulated) minutes.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ubackup_indexer::alerts::{Engine, Notification, Notify};
use ubackup_indexer::catalog::outbox::Outbox as _;
use ubackup_indexer::catalog::{Alert, AlertFilter, Instance, InstanceKey};
use ubackup_indexer::clock::{Clock as _, ManualClock};
use ubackup_indexer::cluster::Clusters;
use ubackup_indexer::config::{
    AlertsConfig, ChannelConfig, ChannelKind, ClusterConfig, DeliveryConfig, GroupBy, MailConfig,
    MailTls,
};
use ubackup_indexer::delivery::Delivery;
use ubackup_indexer::metrics::Metrics;
use ubackup_testkit::{RedisServer, TestCa, Usage};

const SECRET: &str = "a-channel-secret-0123";

/// One request the HTTPS receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, k: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn query(&self, k: &str) -> Option<String> {
        let (_, q) = self.path.split_once('?')?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.to_string())
    }
}

/// What the receiver answers on a path: each robot's success body; `/big` a 1 MiB answer.
fn answer(path: &str) -> (u16, Vec<u8>) {
    let p = path.split('?').next().unwrap_or("");
    match p {
        "/dingtalk" | "/wecom" => (200, br#"{"errcode":0,"errmsg":"ok"}"#.to_vec()),
        "/feishu" => (200, br#"{"code":0,"msg":"success","data":{}}"#.to_vec()),
        "/slack" => (200, b"ok".to_vec()),
        "/big" => (200, vec![b'x'; 1 << 20]),
        _ => (204, Vec::new()),
    }
}

/// A real HTTPS receiver (rustls, certificate from `ca` for 127.0.0.1 and localhost) that
/// serves HTTP/1.1 keep-alive connections and records every request.
async fn https_receiver(ca: &TestCa) -> (u16, Arc<Mutex<Vec<Got>>>) {
    // ring, as everywhere in ubackup (rsync-proto's TlsConnector::new says why it is
    // deprecated in rustls 0.23.48 and why we keep it).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let issued = ca
        .issue(&["127.0.0.1", "localhost"], Usage::Server)
        .unwrap();
    let certs = vec![rustls::pki_types::CertificateDer::from(pem_der(
        &issued.cert_pem,
    ))];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pem_der(&issued.key_pem).into());
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            let (acceptor, g) = (acceptor.clone(), g.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return; // a client that does not trust the CA
                };
                let mut buf = Vec::new();
                let mut tmp = [0u8; 16384];
                loop {
                    // One request: head, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.lines();
                    let path = lines
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .unwrap_or("")
                        .to_string();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| {
                            l.split_once(':')
                                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                        })
                        .collect();
                    let len = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map(|(_, v)| v.parse::<usize>().unwrap())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + len].to_vec();
                    buf.drain(..head_end + len);
                    let (status, answer) = answer(&path);
                    g.lock().unwrap().push(Got {
                        path,
                        headers,
                        body,
                    });
                    let reply = format!(
                        "HTTP/1.1 {status} OK\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
                        answer.len()
                    );
                    if s.write_all(reply.as_bytes()).await.is_err()
                        || s.write_all(&answer).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, got)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn channel(name: &str, kind: ChannelKind, url: String, ca: Option<PathBuf>) -> ChannelConfig {
    ChannelConfig {
        name: name.into(),
        kind,
        url,
        secret: SECRET.into(),
        ca_file: ca,
        timeout_secs: 5,
        max_attempts: 3,
        backoff_ms: 10,
        max_response_bytes: 64 * 1024,
        group_by: vec![GroupBy::Rule, GroupBy::Business],
        group_wait_secs: 0,
        group_interval_secs: 0,
        rate_limit: 10,
        rate_window_secs: 300,
        max_alerts: 1000,
        mail: None,
    }
}

fn delivery_cfg(channels: Vec<ChannelConfig>) -> DeliveryConfig {
    DeliveryConfig {
        dashboard_url: "https://dash.example".into(),
        tick_ms: 100,
        channels,
        routes: Vec::new(),
    }
}

fn alert(id: i64, rule: &str, server: &str, business: i64) -> Alert {
    Alert {
        id,
        rule: rule.into(),
        subject: format!("{server}:mysql:1"),
        server_id: Some(server.into()),
        back_type: Some("mysql".into()),
        instance: Some(1),
        game_id: Some(business),
        game_server_ip: Some("10.1.2.3".into()),
        message: format!("{rule} on {server}"),
        opened_ms: T0,
        updated_ms: T0,
        resolved_ms: None,
        acked_by: None,
        acked_ms: None,
        silenced_until_ms: None,
        held_by: None,
        silenced_by: None,
    }
}

fn hmac_b64(key: &[u8], data: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chat_format_reaches_an_https_receiver_with_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("alert test CA").unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write(&ca_file).unwrap();
    let (port, got) = https_receiver(&ca).await;
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let mut chans = vec![
        channel(
            "hook",
            ChannelKind::Webhook,
            url("/hook"),
            Some(ca_file.clone()),
        ),
        channel(
            "slack",
            ChannelKind::Slack,
            url("/slack"),
            Some(ca_file.clone()),
        ),
        channel(
            "ding",
            ChannelKind::Dingtalk,
            url("/dingtalk?access_token=tok"),
            Some(ca_file.clone()),
        ),
        channel(
            "wecom",
            ChannelKind::Wecom,
            url("/wecom?key=k"),
            Some(ca_file.clone()),
        ),
        channel(
            "feishu",
            ChannelKind::Feishu,
            url("/feishu"),
            Some(ca_file.clone()),
        ),
        // Verified by default: without the CA file the test certificate is refused.
        channel("untrusting", ChannelKind::Slack, url("/untrusted"), None),
        // The answer is read up to a cap.
        channel(
            "big",
            ChannelKind::Slack,
            url("/big"),
            Some(ca_file.clone()),
        ),
    ];
    chans[6].max_response_bytes = 1024;
    let db = sqlite().await;
    let clock = ManualClock::at(1_765_000_000_000);
    let metrics = Arc::new(Metrics::default());
    let d = Delivery::new(
        &delivery_cfg(chans),
        db.catalog.clone(),
        Arc::new(clock.clone()),
        metrics.clone(),
    )
    .unwrap();
    let ns: Vec<Notification> = (1..=3)
        .map(|i| Notification {
            event: "open",
            alert: alert(i, "overdue", &format!("S{i}"), 7),
        })
        .chain(std::iter::once(Notification {
            event: "open",
            alert: alert(4, "backup_corrupt", "S9", 8),
        }))
        .collect();
    d.notify_all(ns).await;
    d.tick().await.unwrap();
    let got = got.lock().unwrap().clone();
    let on = |p: &str| -> Vec<Got> {
        got.iter()
            .filter(|g| g.path.split('?').next() == Some(p))
            .cloned()
            .collect()
    };
    // Two groups (overdue of business 7, backup_corrupt of business 8): two messages each.
    for p in ["/hook", "/slack", "/dingtalk", "/wecom", "/feishu"] {
        assert_eq!(on(p).len(), 2, "{p}: {got:?}");
    }
    assert!(on("/untrusted").is_empty(), "an unknown CA must be refused");
    assert_eq!(on("/big").len(), 2, "the big answer was requested");
    // Webhook: today's shape plus the group, HMAC over the raw body.
    for g in on("/hook") {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&g.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(g.header("x-ubackup-signature"), want);
        assert_eq!(g.header("x-ubackup-event"), "open");
        assert!(!g.header("x-ubackup-delivery").is_empty());
        assert_eq!(g.header("idempotency-key"), g.header("x-ubackup-delivery"));
        let v = g.json();
        assert_eq!(v["event"], "open");
        if v["rule"] == "overdue" {
            assert_eq!(v["count"], 3);
            assert_eq!(v["alerts"].as_array().unwrap().len(), 3);
            assert_eq!(v["alert"]["rule"], "overdue");
            assert_eq!(v["alert"]["type"], "mysql");
        }
    }
    // Slack: the text names the count, the cause, the subjects and the filtered page.
    let slack: Vec<String> = on("/slack")
        .iter()
        .map(|g| g.json()["text"].as_str().unwrap().to_string())
        .collect();
    let overdue = slack.iter().find(|t| t.contains(" overdue")).unwrap();
    assert!(
        overdue.starts_with("[ubackup] warning overdue: 3 alerts opened (business 7)"),
        "{overdue}"
    );
    assert!(overdue.contains("Cause: overdue on S1"), "{overdue}");
    assert!(
        overdue.contains("Subjects: S1:mysql:1, S2:mysql:1, S3:mysql:1"),
        "{overdue}"
    );
    assert!(
        overdue
            .contains("Dashboard: https://dash.example/alerts?state=open&rule=overdue&business=7"),
        "{overdue}"
    );
    assert!(slack
        .iter()
        .any(|t| t.contains("critical backup_corrupt: 1 alert opened")));
    // DingTalk: timestamp (ms) + sign = base64(HMAC-SHA256(secret, "ts\nsecret")) on the URL.
    for g in on("/dingtalk") {
        assert_eq!(g.query("access_token").as_deref(), Some("tok"));
        let ts = g.query("timestamp").unwrap();
        assert_eq!(ts, "1765000000000");
        assert_eq!(
            g.query("sign").unwrap(),
            hmac_b64(SECRET.as_bytes(), format!("{ts}\n{SECRET}").as_bytes())
        );
        let v = g.json();
        assert_eq!(v["msgtype"], "markdown");
        assert!(v["markdown"]["title"]
            .as_str()
            .unwrap()
            .starts_with("[ubackup] "));
        assert!(v["markdown"]["text"].as_str().unwrap().contains("Cause: "));
    }
    // WeCom: markdown content.
    for g in on("/wecom") {
        assert_eq!(g.query("key").as_deref(), Some("k"));
        let v = g.json();
        assert_eq!(v["msgtype"], "markdown");
        assert!(v["markdown"]["content"]
            .as_str()
            .unwrap()
            .starts_with("### [ubackup] "));
    }
    // Feishu: timestamp (s) + sign = base64(HMAC-SHA256(key "ts\nsecret", "")) in the body.
    for g in on("/feishu") {
        let v = g.json();
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts, "1765000000");
        assert_eq!(
            v["sign"].as_str().unwrap(),
            hmac_b64(format!("{ts}\n{SECRET}").as_bytes(), b"")
        );
        assert_eq!(v["msg_type"], "text");
        assert!(v["content"]["text"]
            .as_str()
            .unwrap()
            .contains("Subjects: "));
    }
    // Delivered: 5 channels × 2; the untrusting and the big-answer channels wait for a retry.
    let m = metrics.render();
    assert!(
        m.contains("ubackup_indexer_webhook_deliveries_total 10"),
        "{m}"
    );
    assert_eq!(db.catalog.undelivered().await.unwrap(), 4);
    let errs: Vec<(String, String)> = sqlx::query_as(
        "SELECT channel, last_error FROM alert_outbox WHERE delivered_ms IS NULL ORDER BY channel",
    )
    .fetch_all(db.catalog.pool())
    .await
    .unwrap();
    assert!(
        errs[0].0 == "big" && errs[0].1.contains("answer longer than 1024"),
        "{errs:?}"
    );
    assert!(
        errs[2].0 == "untrusting" && errs[2].1.contains("HTTP"),
        "{errs:?}"
    );
}

/// A real `prometheus-alertmanager` on a loopback port, clustering off, state in a tempdir.
struct Alertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn interop_required() -> bool {
    std::env::var("UBACKUP_INTEROP").as_deref() == Ok("required")
}

async fn alertmanager() -> Option<Alertmanager> {
    let bin = Path::new("/usr/bin/prometheus-alertmanager");
    if !bin.exists() {
        assert!(
            !interop_required(),
            "prometheus-alertmanager is required (apt-get install -y prometheus-alertmanager)"
        );
        eprintln!("SKIP: prometheus-alertmanager not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: none\n  group_wait: 1h\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
    let child = std::process::Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/-/ready", am.url)).await {
            if r.status().is_success() {
                return Some(am);
            }
        }
        assert!(Instant::now() < deadline, "alertmanager did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn am_alerts(url: &str) -> Vec<serde_json::Value> {
    reqwest::get(format!("{url}/api/v2/alerts"))
        .await
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_real_alertmanager_and_resolve_there() {
    let Some(am) = alertmanager().await else {
        return;
    };
    let db = sqlite().await;
    // A minute behind the wall clock: Alertmanager compares `endsAt` with its own clock, and
    // a resolution stamped even 0.5 s in its future still counts as firing (the test passed
    // or failed on how long the steps before it took).
    let clock = ManualClock::at(ubackup_indexer::clock::SystemClock.now_ms() - 60_000);
    let d = Delivery::new(
        &delivery_cfg(vec![channel(
            "am",
            ChannelKind::Alertmanager,
            am.url.clone(),
            None,
        )]),
        db.catalog.clone(),
        Arc::new(clock.clone()),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let now = clock.now_ms();
    let mut a1 = alert(1, "overdue", "S1", 7);
    let mut a2 = alert(2, "overdue", "S2", 7);
    let mut n = alert(3, "node_down", "x", 0);
    n.subject = "c1/node-9".into();
    n.server_id = None;
    n.game_id = None;
    for a in [&mut a1, &mut a2, &mut n] {
        a.opened_ms = now - 60_000;
    }
    d.notify_all(
        [&a1, &a2, &n]
            .iter()
            .map(|a| Notification {
                event: "open",
                alert: (*a).clone(),
            })
            .collect(),
    )
    .await;
    assert_eq!(d.tick().await.unwrap(), 2);
    let got = am_alerts(&am.url).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let by_instance: BTreeMap<String, &serde_json::Value> = got
        .iter()
        .map(|a| (a["labels"]["instance"].as_str().unwrap().to_string(), a))
        .collect();
    let s1 = by_instance["S1:mysql:1"];
    assert_eq!(s1["labels"]["alertname"], "ubackup_overdue");
    assert_eq!(s1["labels"]["rule"], "overdue");
    assert_eq!(s1["labels"]["business"], "7");
    assert_eq!(s1["labels"]["host"], "S1");
    assert_eq!(s1["labels"]["severity"], "warning");
    assert_eq!(s1["annotations"]["summary"], "overdue on S1");
    assert_eq!(s1["status"]["state"], "active");
    let node = by_instance["c1/node-9"];
    assert_eq!(node["labels"]["node"], "node-9");
    assert_eq!(node["labels"]["severity"], "critical");
    // S1 resolves: Alertmanager gets endsAt and no longer lists it as active.
    clock.advance(1000);
    a1.resolved_ms = Some(clock.now_ms() - 500);
    d.notify_all(vec![Notification {
        event: "resolve",
        alert: a1,
    }])
    .await;
    assert_eq!(d.tick().await.unwrap(), 1);
    let got = am_alerts(&am.url).await;
    let names: Vec<&str> = got
        .iter()
        .map(|a| a["labels"]["instance"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"S1:mysql:1"), "{names:?}");
    assert!(
        names.contains(&"S2:mysql:1") && names.contains(&"c1/node-9"),
        "{names:?}"
    );
}

/// The aiosmtpd server the mail test runs: STARTTLS required, AUTH LOGIN/PLAIN required
/// (one account), each message written to `OUT/<n>.eml` with `OUT/<n>.meta` saying whether
/// the session was TLS and who logged in.
const SMTPD: &str = r#"
import asyncio, os, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        with open(os.path.join(out, "%d.meta" % n), "w") as f:
            login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else ""
            f.write("tls=%s auth=%s rcpt=%s\n" % (session.ssl is not None, login, ",".join(envelope.rcpt_tos)))
        with open(os.path.join(out, "%d.eml" % n), "wb") as f:
            f.write(envelope.original_content)
        return "250 OK"

def auth(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts" and auth_data.password == b"mail-pass"
    return AuthResult(success=ok, auth_data=auth_data)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx,
               require_starttls=True, authenticator=auth, auth_required=True)
c.start()
print("READY", flush=True)
sys.stdin.read()
c.stop()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_through_a_real_smtp_server_with_starttls_and_auth() {
    let py = Path::new("/usr/bin/python3");
    let has_aiosmtpd = std::process::Command::new(py)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_aiosmtpd {
        assert!(
            !interop_required(),
            "aiosmtpd is required (apt-get install -y python3-aiosmtpd)"
        );
        eprintln!("SKIP: python3-aiosmtpd not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("mail test CA").unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write(&ca_file).unwrap();
    let (cert, key) = ca
        .issue(&["127.0.0.1"], Usage::Server)
        .unwrap()
        .write(dir.path(), "smtp")
        .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let script = dir.path().join("smtpd.py");
    std::fs::write(&script, SMTPD).unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(py)
        .arg(&script)
        .arg(port.to_string())
        .arg(&cert)
        .arg(&key)
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "READY");
    let mail = |user: &str, pass: &str| MailConfig {
        host: "127.0.0.1".into(),
        port,
        tls: MailTls::Starttls,
        username: Some(user.into()),
        password: pass.into(),
        from: "ubackup <alerts@ubackup.test>".into(),
        to: vec!["dba@ubackup.test".into(), "sre@ubackup.test".into()],
    };
    let mut good = channel(
        "mail",
        ChannelKind::Mail,
        String::new(),
        Some(ca_file.clone()),
    );
    good.mail = Some(mail("alerts", "mail-pass"));
    let mut wrong = channel(
        "wrong-pass",
        ChannelKind::Mail,
        String::new(),
        Some(ca_file),
    );
    wrong.mail = Some(mail("alerts", "nope"));
    let mut untrusting = channel("untrusting", ChannelKind::Mail, String::new(), None);
    untrusting.mail = Some(mail("alerts", "mail-pass"));
    let db = sqlite().await;
    let d = Delivery::new(
        &delivery_cfg(vec![good, wrong, untrusting]),
        db.catalog.clone(),
        Arc::new(ManualClock::at(T0)),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    d.notify_all(
        (1..=2)
            .map(|i| Notification {
                event: "open",
                alert: alert(i, "script_error", &format!("S{i}"), 7),
            })
            .collect(),
    )
    .await;
    assert_eq!(
        d.tick().await.unwrap(),
        1,
        "only the right password and CA deliver"
    );
    drop(child.stdin.take());
    let _ = child.wait();
    let meta = std::fs::read_to_string(out.join("0.meta")).unwrap();
    assert_eq!(
        meta.trim(),
        "tls=True auth=alerts rcpt=dba@ubackup.test,sre@ubackup.test"
    );
    assert!(!out.join("1.eml").exists());
    let eml = std::fs::read_to_string(out.join("0.eml")).unwrap();
    assert!(
        eml.contains("Subject: [ubackup] critical script_error: 2 alerts opened (business 7)"),
        "{eml}"
    );
    assert!(eml.contains("Cause: script_error on S1"), "{eml}");
    assert!(eml.contains("Subjects: S1:mysql:1, S2:mysql:1"), "{eml}");
    assert!(eml.contains("Message-ID: <ubackup-"), "{eml}");
    let errs: Vec<(String, String)> = sqlx::query_as(
        "SELECT channel, last_error FROM alert_outbox WHERE delivered_ms IS NULL ORDER BY channel",
    )
    .fetch_all(db.catalog.pool())
    .await
    .unwrap();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, "untrusting");
    assert_eq!(errs[1].0, "wrong-pass");
}

fn reg(i: usize) -> Instance {
    Instance {
        key: InstanceKey::new(&format!("S{i:05}"), "mysql", 1),
        name: format!("db-{i}"),
        business_id: Some(1 + (i % 4) as i64),
        interval_secs: Some(3600),
        enabled: true,
        created_ms: T0,
    }
}

/// 20,000 instances in 4 businesses all go overdue while a node is down. Every channel gets
/// one message per (rule, business) group, each naming its count; a channel whose rate limit
/// is 3 gets two groups and one summary; every instance stays listed on the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_20000_overdue_instances_is_a_few_messages_per_channel() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("storm CA").unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write(&ca_file).unwrap();
    let (port, got) = https_receiver(&ca).await;
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let mut chans: Vec<ChannelConfig> = [
        ("hook", ChannelKind::Webhook, "/hook"),
        ("slack", ChannelKind::Slack, "/slack"),
        ("ding", ChannelKind::Dingtalk, "/dingtalk"),
        ("tight", ChannelKind::Slack, "/tight"),
    ]
    .into_iter()
    .map(|(n, k, p)| {
        let mut c = channel(n, k, url(p), Some(ca_file.clone()));
        c.group_wait_secs = 30;
        c.group_interval_secs = 300;
        c
    })
    .collect();
    chans[3].rate_limit = 3;
    let db = sqlite().await;
    let c = db.dyn_catalog();
    let rows: Vec<Instance> = (0..20_000).map(reg).collect();
    c.upsert_instances(&rows, T0).await.unwrap();
    let clock = ManualClock::at(T0 + 3 * HOUR);
    let metrics = Arc::new(Metrics::default());
    let d = Arc::new(
        Delivery::new(
            &delivery_cfg(chans),
            db.catalog.clone(),
            Arc::new(clock.clone()),
            metrics.clone(),
        )
        .unwrap(),
    );
    let engine = Engine::new(
        c.clone(),
        Arc::new(clock.clone()),
        d.clone(),
        metrics.clone(),
        AlertsConfig {
            evaluate_secs: 60,
            grace_secs: 3000,
            queue_backlog_secs: 3600,
            node_timeout_secs: 120,
            agent_timeout_secs: 900,
            illegal_window_secs: 86_400,
        },
        false,
        3600,
    );
    // The node that must be up has no heartbeat in the cluster's Redis: node_down.
    let clusters = Clusters::new(vec![ClusterConfig {
        name: "c1".into(),
        redis: redis.url(),
        key_prefix: "ubackup".into(),
        lists: vec!["level1".into()],
        nodes: vec!["node-7".into()],
    }]);
    let cause = Instant::now();
    let mut first_message = None;
    let mut eval_ms = Vec::new();
    // Five minutes in 10 s steps: evaluate every 60 s (the default), tick every step.
    for step in 0..=30 {
        if step % 6 == 0 {
            let t = Instant::now();
            engine.evaluate(&clusters.status().await).await.unwrap();
            eval_ms.push(t.elapsed().as_millis());
        }
        d.tick().await.unwrap();
        if first_message.is_none() && !got.lock().unwrap().is_empty() {
            first_message = Some((step * 10, cause.elapsed()));
        }
        clock.advance(10_000);
    }
    let got = got.lock().unwrap().clone();
    let mut per: BTreeMap<String, Vec<Got>> = BTreeMap::new();
    for g in got {
        let path = g.path.split('?').next().unwrap_or("").to_string();
        per.entry(path).or_default().push(g);
    }
    let counts: BTreeMap<&str, usize> = per.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    eprintln!(
        "storm: messages per channel {counts:?}; first message at simulated +{:?} s after {:?} wall; evaluations {eval_ms:?} ms",
        first_message.map(|f| f.0),
        first_message.map(|f| f.1)
    );
    for (path, msgs) in &per {
        assert!(msgs.len() <= 10, "{path}: {} messages", msgs.len());
    }
    // Every group names its count; the counts add up to every alert.
    let text_of = |g: &Got| -> String {
        let v = g.json();
        v["text"]
            .as_str()
            .or(v["markdown"]["text"].as_str())
            .unwrap()
            .to_string()
    };
    for path in ["/hook", "/slack", "/dingtalk"] {
        let msgs = &per[path];
        assert_eq!(msgs.len(), 5, "{path}: 4 overdue groups + node_down");
        let total: i64 = msgs
            .iter()
            .map(|g| {
                let t = text_of(g);
                let n = t
                    .split(": ")
                    .nth(1)
                    .and_then(|x| x.split_whitespace().next())
                    .unwrap();
                n.parse::<i64>().unwrap()
            })
            .sum();
        assert_eq!(total, 20_001, "{path}");
        assert!(msgs
            .iter()
            .any(|g| text_of(g).contains("overdue: 5000 alerts opened (business 1)")));
    }
    let tight = &per["/tight"];
    assert_eq!(tight.len(), 3, "rate limit 3: two groups and a summary");
    let summary = text_of(&tight[2]);
    assert!(summary.contains("rate limit reached"), "{summary}");
    assert!(metrics
        .render()
        .contains("ubackup_indexer_alert_overflow_summaries_total 1"));
    // Every instance is still listed on the dashboard.
    let open = c
        .count_alerts(&AlertFilter {
            open: true,
            rule: Some("overdue".into()),
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(open, 20_000);
    assert_eq!(db.catalog.undelivered().await.unwrap(), 0);
}
