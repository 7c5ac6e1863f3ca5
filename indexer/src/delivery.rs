//! Webhooks: every alert that opens or resolves is POSTed as JSON to each configured URL,
//! signed, and retried with exponential backoff. A webhook is an external peer: each attempt
//! has a timeout, the response read is bounded, and failures are typed.
//!
//! Signature: `X-Ubackup-Signature: sha256=<hex HMAC-SHA256(secret, body)>`. The receiver
//! recomputes it over the raw body. `X-Ubackup-Event` is `open` or `resolve`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::alerts::{Notification, Notify};
use crate::config::WebhookConfig;
use crate::metrics::Metrics;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL is not `http://host:port/path`.
    #[error("bad webhook URL {0:?}")]
    Url(String),
    /// Connect, write or read failed.
    #[error("webhook I/O: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("webhook timed out after {0:?}")]
    Timeout(Duration),
    /// The receiver answered, but not 2xx.
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    /// The answer is not HTTP.
    #[error("webhook answer is not HTTP: {0:?}")]
    Garbled(String),
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    #[allow(clippy::expect_used)] // HMAC takes keys of any length
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", crate::auth::hex(&mac.finalize().into_bytes()))
}

fn split_url(url: &str) -> Result<(String, String), WebhookError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| WebhookError::Url(url.into()))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains(char::is_whitespace) || path.contains(char::is_whitespace) {
        return Err(WebhookError::Url(url.into()));
    }
    let host = if host.contains(':') && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// One POST; Ok when the receiver answered 2xx.
pub async fn post_once(
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<u16, WebhookError> {
    let (host, path) = split_url(url)?;
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(&host).await?;
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\nUser-Agent: ubackup-indexer/{}\r\n",
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        s.write_all(body).await?;
        s.flush().await?;
        // The status line is all we need; read at most 4 KiB.
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        while got < buf.len() {
            let n = s.read(&mut buf[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
            if buf[..got].windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..got]).to_string();
        let line = head.lines().next().unwrap_or("");
        let mut parts = line.split_whitespace();
        match (
            parts.next(),
            parts.next().and_then(|c| c.parse::<u16>().ok()),
        ) {
            (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
            _ => Err(WebhookError::Garbled(line.chars().take(80).collect())),
        }
    };
    let code = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| WebhookError::Timeout(timeout))??;
    if (200..300).contains(&code) {
        Ok(code)
    } else {
        Err(WebhookError::Status(code))
    }
}

/// Delivers notifications to every webhook, each from its own task and queue (bounded: when
/// a receiver is down long enough for 10,000 notifications to pile up, newer ones are dropped
/// and counted).
#[derive(Debug, Clone)]
pub struct Webhooks {
    queues: Vec<mpsc::Sender<Notification>>,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// Starts one delivery task per webhook.
    pub fn start(cfgs: Vec<WebhookConfig>, metrics: Arc<Metrics>) -> Webhooks {
        let mut queues = Vec::new();
        for cfg in cfgs {
            let (tx, rx) = mpsc::channel(10_000);
            queues.push(tx);
            tokio::spawn(deliver_loop(cfg, rx, metrics.clone()));
        }
        Webhooks { queues, metrics }
    }
}

async fn deliver_loop(
    cfg: WebhookConfig,
    mut rx: mpsc::Receiver<Notification>,
    metrics: Arc<Metrics>,
) {
    let mut seq: u64 = 0;
    while let Some(n) = rx.recv().await {
        seq += 1;
        let body = match serde_json::to_vec(&serde_json::json!({
            "event": n.event,
            "alert": n.alert,
        })) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let headers = [
            ("X-Ubackup-Signature", signature(&cfg.secret, &body)),
            ("X-Ubackup-Event", n.event.to_string()),
            (
                "X-Ubackup-Delivery",
                format!("{}-{}-{seq}", n.alert.id, n.event),
            ),
        ];
        let mut delay = Duration::from_millis(cfg.backoff_ms);
        let timeout = Duration::from_secs(cfg.timeout_secs);
        for attempt in 1..=cfg.max_attempts {
            match post_once(&cfg.url, &headers, &body, timeout).await {
                Ok(_) => {
                    metrics.webhook_deliveries.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if attempt < cfg.max_attempts => {
                    tracing::warn!(url = %cfg.url, attempt, "webhook failed: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(300));
                }
                Err(e) => {
                    tracing::error!(url = %cfg.url, attempt, "webhook gave up: {e}");
                    metrics.webhook_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[async_trait]
impl Notify for Webhooks {
    async fn notify(&self, n: Notification) {
        for q in &self.queues {
            if q.try_send(n.clone()).is_err() {
                self.metrics
                    .webhook_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9/x/y").unwrap(),
            ("127.0.0.1:9".into(), "/x/y".into())
        );
        assert_eq!(split_url("http://h").unwrap(), ("h:80".into(), "/".into()));
        assert!(split_url("https://h/").is_err());
        assert!(split_url("http:///x").is_err());
    }
}
