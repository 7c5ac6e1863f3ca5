//! One channel: renders a [`Message`] into its receiver's format, signs it, and sends it. HTTP
//! goes through reqwest (rustls on ring; the system's roots plus an optional CA file; proxies
//! from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`; a timeout per attempt; redirects refused; the
//! answer read up to a cap). Mail goes through [`super::mail`].
//!
//! Formats and signatures (each checked by a receiver in `tests/alert_channels.rs`):
//! - `webhook`: `{"event","alert",...}`, `X-Ubackup-Signature: sha256=<hex HMAC-SHA256(secret,
//!   body)>`, `X-Ubackup-Event`, `X-Ubackup-Delivery` (the idempotency key);
//! - `slack`: `{"text"}` (Mattermost and Rocket.Chat take the same);
//! - `dingtalk`: markdown; with a secret, `&timestamp=<ms>&sign=<urlencode(base64(HMAC-SHA256(
//!   secret, "<ms>\n<secret>")))>` on the URL; the answer's `errcode` must be 0;
//! - `wecom`: markdown (content at most 4096 bytes); `errcode` must be 0;
//! - `feishu`: text; with a secret, `timestamp` (s) and `sign` = base64(HMAC-SHA256(key =
//!   "<s>\n<secret>", empty message)) in the body; `code` (or `StatusCode`) must be 0;
//! - `alertmanager`: `POST <url>/api/v2/alerts`, one entry per alert, labels `alertname`,
//!   `rule`, `severity`, `business`, `instance`, `host`, `node`; a resolved alert has `endsAt`.

use base64::Engine as _;
use hmac::{Hmac, Mac as _};

use super::{host_of, node_of, Message};
use crate::config::{ChannelConfig, ChannelKind};

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built or the request failed (connect, TLS, timeout).
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The receiver answered, but not 2xx.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// The answer is longer than the channel's cap.
    #[error("answer longer than {0} bytes")]
    TooLarge(usize),
    /// The receiver answered 2xx but refused the message in its body (chat robots do).
    #[error("refused: {0}")]
    Refused(String),
    /// The message could not be encoded.
    #[error("encoding: {0}")]
    Encode(String),
    /// Mail failed.
    #[error("mail: {0}")]
    Mail(String),
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), body)))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    #[allow(clippy::expect_used)] // HMAC takes keys of any length
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// DingTalk's `sign` for `timestamp_ms` (before URL encoding).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let to_sign = format!("{timestamp_ms}\n{secret}");
    base64::engine::general_purpose::STANDARD.encode(hmac(secret.as_bytes(), to_sign.as_bytes()))
}

/// Feishu's `sign` for `timestamp_secs`.
pub fn feishu_sign(secret: &str, timestamp_secs: i64) -> String {
    let key = format!("{timestamp_secs}\n{secret}");
    base64::engine::general_purpose::STANDARD.encode(hmac(key.as_bytes(), b""))
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

/// A channel ready to send.
#[derive(Debug)]
pub struct Channel {
    cfg: ChannelConfig,
    client: Option<reqwest::Client>,
}

impl Channel {
    /// Builds the HTTP client (or nothing, for mail).
    pub fn new(cfg: ChannelConfig) -> Result<Channel, ChannelError> {
        let client = if cfg.kind == ChannelKind::Mail {
            None
        } else {
            let mut b = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(cfg.timeout_secs))
                .connect_timeout(std::time::Duration::from_secs(cfg.timeout_secs))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("ubackup-indexer/", env!("CARGO_PKG_VERSION")))
                .https_only(cfg.url.starts_with("https://"));
            for cert in ca_certs(cfg.ca_file.as_deref())? {
                b = b.add_root_certificate(cert);
            }
            Some(b.build()?)
        };
        Ok(Channel { cfg, client })
    }

    /// Its configuration.
    pub fn config(&self) -> &ChannelConfig {
        &self.cfg
    }

    /// Sends one message; Ok when the receiver accepted it.
    pub async fn send(&self, m: &Message, idem_key: &str, now_ms: i64) -> Result<(), ChannelError> {
        let c = &self.cfg;
        let Some(client) = &self.client else {
            let mail = c
                .mail
                .as_ref()
                .ok_or_else(|| ChannelError::Mail("no SMTP settings".into()))?;
            return super::mail::send(mail, c, m, idem_key).await;
        };
        let mut url = c.url.clone();
        let mut headers: Vec<(&str, String)> = vec![("Idempotency-Key", idem_key.to_string())];
        let body = match c.kind {
            ChannelKind::Webhook => {
                let first = m.alerts.first();
                let body = serde_json::json!({
                    "event": if m.event == "summary" { "open" } else { m.event.as_str() },
                    "alert": first,
                    "alerts": m.alerts,
                    "count": m.count,
                    "rule": m.rule,
                    "severity": m.severity,
                    "group": m.group,
                    "summary": m.event == "summary",
                    "text": m.text(),
                    "link": m.link,
                });
                let body = to_vec(&body)?;
                headers.push(("X-Ubackup-Signature", signature(&c.secret, &body)));
                headers.push(("X-Ubackup-Event", m.event.clone()));
                headers.push(("X-Ubackup-Delivery", idem_key.to_string()));
                body
            }
            ChannelKind::Slack => {
                to_vec(&serde_json::json!({ "text": truncate(&m.text(), 39_000) }))?
            }
            ChannelKind::Dingtalk => {
                if !c.secret.is_empty() {
                    let sign: String = form_urlencoded::byte_serialize(
                        dingtalk_sign(&c.secret, now_ms).as_bytes(),
                    )
                    .collect();
                    let sep = if url.contains('?') { '&' } else { '?' };
                    url = format!("{url}{sep}timestamp={now_ms}&sign={sign}");
                }
                to_vec(&serde_json::json!({
                    "msgtype": "markdown",
                    "markdown": { "title": m.title(), "text": truncate(&markdown(m), 19_000) },
                }))?
            }
            ChannelKind::Wecom => to_vec(&serde_json::json!({
                "msgtype": "markdown",
                "markdown": { "content": truncate(&markdown(m), 4096) },
            }))?,
            ChannelKind::Feishu => {
                let mut v = serde_json::json!({
                    "msg_type": "text",
                    "content": { "text": truncate(&m.text(), 30_000) },
                });
                if !c.secret.is_empty() {
                    let ts = now_ms.div_euclid(1000);
                    v["timestamp"] = ts.to_string().into();
                    v["sign"] = feishu_sign(&c.secret, ts).into();
                }
                to_vec(&v)?
            }
            ChannelKind::Alertmanager => {
                url = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
                to_vec(&alertmanager_alerts(m))?
            }
            ChannelKind::Mail => return Err(ChannelError::Mail("no SMTP settings".into())),
        };
        let mut req = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut resp = req.send().await?;
        let status = resp.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if answer.len() + chunk.len() > c.max_response_bytes {
                return Err(ChannelError::TooLarge(c.max_response_bytes));
            }
            answer.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&answer);
        if !(200..300).contains(&status) {
            return Err(ChannelError::Status {
                status,
                body: truncate(&text, 200),
            });
        }
        // Chat robots answer 200 with an error code in the body.
        if matches!(
            c.kind,
            ChannelKind::Dingtalk | ChannelKind::Wecom | ChannelKind::Feishu
        ) {
            let v: serde_json::Value = serde_json::from_slice(&answer)
                .map_err(|_| ChannelError::Refused(truncate(&text, 200)))?;
            let code = v
                .get("errcode")
                .or_else(|| v.get("code"))
                .or_else(|| v.get("StatusCode"))
                .and_then(|x| x.as_i64());
            if code != Some(0) {
                return Err(ChannelError::Refused(truncate(&text, 200)));
            }
        }
        Ok(())
    }
}

fn to_vec(v: &serde_json::Value) -> Result<Vec<u8>, ChannelError> {
    serde_json::to_vec(v).map_err(|e| ChannelError::Encode(e.to_string()))
}

/// The extra roots in a CA file (PEM, one or more certificates).
fn ca_certs(path: Option<&std::path::Path>) -> Result<Vec<reqwest::Certificate>, ChannelError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let bad = |reason: String| ChannelError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(certs)
}

/// Markdown for DingTalk and WeCom.
fn markdown(m: &Message) -> String {
    let mut s = format!("### {}\n", m.title());
    for l in m.lines() {
        s.push_str(&format!("\n- {l}"));
    }
    s
}

/// Alertmanager's `postableAlerts`.
pub fn alertmanager_alerts(m: &Message) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = m
        .alerts
        .iter()
        .map(|a| {
            let mut labels = serde_json::Map::new();
            let mut put = |k: &str, v: Option<String>| {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    labels.insert(k.into(), v.into());
                }
            };
            put("alertname", Some(format!("ubackup_{}", a.rule)));
            put("rule", Some(a.rule.clone()));
            put("severity", Some(crate::alerts::severity(&a.rule).into()));
            put("business", a.game_id.map(|b| b.to_string()));
            put("instance", Some(a.subject.clone()));
            put("host", host_of(a));
            put("node", node_of(a));
            let mut v = serde_json::json!({
                "labels": labels,
                "annotations": { "summary": a.message, "description": m.title() },
                "startsAt": crate::clock::rfc3339(a.opened_ms),
            });
            if let Some(end) = a.resolved_ms {
                v["endsAt"] = crate::clock::rfc3339(end).into();
            }
            if !m.link.is_empty() {
                v["generatorURL"] = m.link.clone().into();
            }
            v
        })
        .collect();
    serde_json::Value::Array(alerts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn truncates_at_char_boundaries() {
        assert_eq!(truncate("ab中", 3), "ab");
        assert_eq!(truncate("ab中", 5), "ab中");
        assert_eq!(truncate("", 0), "");
    }
}
