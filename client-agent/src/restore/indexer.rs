//! The indexer's restore plan over HTTP:
//! `GET <indexer>/api/v1/instances/{server_id}/{type}/{instance}/restore[?at_ms=N]` with a
//! bearer token (`ubackup-indexer token create`). Its answer (`ubackup_indexer::restore::Plan`:
//! `steps`, `holes`, `complete`) becomes a [`Plan`]: no target is
//! [`RestoreError::NoBackup`], a hole is [`RestoreError::ChainHole`] with every missing,
//! failed, expired or corrupt link named.
//!
//! A deliberately small HTTP/1.1 client (one request per connection, `http://` only, a
//! bounded response read with a deadline): the agent runs on every database host, and this
//! is its only HTTP call. Put TLS in front of it with a local tunnel if the indexer is
//! remote and the network is not trusted.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use serde::Deserialize;

use super::plan::{normalize_checksum, At, Plan, PlanFile, PlanSource, Request, Role};
use super::RestoreError;

/// Largest response read (a plan of 100,000 files is about 40 MiB of JSON).
pub const MAX_RESPONSE: usize = 64 << 20;

/// A bearer token; never shown by Debug or Display.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The indexer as a plan source.
#[derive(Debug, Clone)]
pub struct IndexerPlans {
    host: String,
    port: u16,
    base: String,
    token: Option<Token>,
    /// Deadline of the whole request.
    pub timeout: Duration,
}

impl IndexerPlans {
    /// `url` is `http://host[:port][/prefix]`.
    pub fn new(url: &str, token: Option<Token>) -> Result<IndexerPlans, RestoreError> {
        let bad = |why: &str| RestoreError::Usage(format!("indexer URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http://"))?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad(
                "put the token in --token-file or UBACKUP_INDEXER_TOKEN, not the URL",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if tail.is_empty() => 80,
                None => return Err(bad("bad port")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("no host"));
        }
        if !base.bytes().all(|b| b.is_ascii_graphic()) || base.contains(['?', '#']) {
            return Err(bad("bad path"));
        }
        Ok(IndexerPlans {
            host,
            port,
            base: base.to_string(),
            token,
            timeout: Duration::from_secs(60),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request path for `req`.
    pub fn path_for(&self, req: &Request) -> String {
        let mut q = format!(
            "{}/api/v1/instances/{}/{}/{}/restore",
            self.base,
            encode(&req.server_id),
            encode(&req.back_type),
            req.instance
        );
        if let At::Ms(ms) = req.at {
            q.push_str(&format!("?at_ms={ms}"));
        }
        q
    }

    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), RestoreError> {
        let unreachable = |reason: String| RestoreError::IndexerUnreachable {
            url: format!("http://{}{}", self.authority(), self.base),
            reason,
        };
        let exchange = async {
            let mut s = TcpStream::connect(self.authority())
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let mut head = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
                 User-Agent: ubackup-agent/{}\r\nConnection: close\r\n",
                self.authority(),
                env!("CARGO_PKG_VERSION")
            );
            if let Some(t) = &self.token {
                head.push_str(&format!("Authorization: Bearer {}\r\n", t.0));
            }
            head.push_str("\r\n");
            s.write_all(head.as_bytes())
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let mut buf = Vec::new();
            (&mut s)
                .take(MAX_RESPONSE as u64 + 65536)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            parse_response(&buf).map_err(|why| RestoreError::Indexer {
                status: 0,
                message: format!("unreadable HTTP response: {why}"),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!(
                "no answer within {}s",
                self.timeout.as_secs()
            ))),
        }
    }
}

/// The `error`/`message` of an error body, or its text.
fn error_text(body: &[u8]) -> String {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    };
    field("message")
        .or_else(|| field("error"))
        .unwrap_or_else(|| {
            let t = String::from_utf8_lossy(&body[..body.len().min(512)]);
            t.trim().to_string()
        })
}

impl PlanSource for IndexerPlans {
    async fn plan(&self, req: &Request) -> Result<Plan, RestoreError> {
        let (status, body) = self.get(&self.path_for(req)).await?;
        match status {
            200 => {
                let p: IndexerPlan = serde_json::from_slice(&body).map_err(|e| {
                    RestoreError::BadPlan(format!("the indexer's plan is not a plan: {e}"))
                })?;
                p.into_plan(req)
            }
            404 => Err(RestoreError::NoBackup {
                instance: req.label(),
                at: req.at.to_string(),
                detail: error_text(&body),
            }),
            409 => Err(RestoreError::ChainHole {
                detail: error_text(&body),
            }),
            401 | 403 => Err(RestoreError::Denied {
                status,
                message: error_text(&body),
            }),
            _ => Err(RestoreError::Indexer {
                status,
                message: error_text(&body),
            }),
        }
    }
}

/// The indexer's plan, as `ubackup_indexer::restore::Plan` serializes it.
#[derive(Debug, Deserialize)]
struct IndexerPlan {
    instance: IndexerInstance,
    #[serde(default)]
    at_ms: Option<i64>,
    #[serde(default)]
    target: Option<i64>,
    #[serde(default)]
    steps: Vec<IndexerStep>,
    #[serde(default)]
    holes: Vec<IndexerHole>,
    #[serde(default)]
    complete: bool,
}

#[derive(Debug, Deserialize)]
struct IndexerInstance {
    server_id: String,
    #[serde(rename = "type")]
    back_type: String,
    instance: i64,
}

#[derive(Debug, Deserialize)]
struct IndexerStep {
    kind: String,
    back_server_ip: String,
    #[serde(default)]
    file_path: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    checksum_algorithm: Option<String>,
    create_time: i64,
    #[serde(default)]
    last_all_filename: Option<String>,
    #[serde(default)]
    prev_filename: Option<String>,
    #[serde(default)]
    id: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct IndexerHole {
    filename: String,
    reason: String,
}

impl IndexerPlan {
    fn into_plan(self, req: &Request) -> Result<Plan, RestoreError> {
        if !self.holes.is_empty() || (self.target.is_some() && !self.complete) {
            let holes: Vec<String> = self
                .holes
                .iter()
                .map(|h| format!("{} ({})", h.filename, h.reason))
                .collect();
            return Err(RestoreError::ChainHole {
                detail: if holes.is_empty() {
                    "the indexer says the plan is incomplete".into()
                } else {
                    format!("the chain needs {}", holes.join(", "))
                },
            });
        }
        if self.target.is_none() || self.steps.is_empty() {
            return Err(RestoreError::NoBackup {
                instance: req.label(),
                at: req.at.to_string(),
                detail: "the catalog has no usable backup taken at or before that time".into(),
            });
        }
        let mut files = Vec::with_capacity(self.steps.len());
        for s in self.steps {
            let filename = s.filename.filter(|f| !f.is_empty()).ok_or_else(|| {
                RestoreError::BadPlan(format!("catalog row {:?} has no file name", s.id))
            })?;
            let (checksum, checksum_alt) =
                catalog_checksum(s.checksum.as_deref(), s.checksum_algorithm.as_deref())
                    .ok_or_else(|| {
                        RestoreError::BadPlan(format!(
                            "{filename}: the catalog's checksum ({} {}) cannot be verified here \
                             (xxh128, xxh3, xxh64, md5, sha1 or sha256 needed)",
                            s.checksum_algorithm.as_deref().unwrap_or("no algorithm"),
                            s.checksum.as_deref().unwrap_or("none")
                        ))
                    })?;
            let size = s
                .size
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| RestoreError::BadPlan(format!("{filename}: no size")))?;
            files.push(PlanFile {
                role: if s.kind == "full" {
                    Role::Full
                } else {
                    Role::Incremental
                },
                filename,
                create_time_ms: s.create_time,
                node: s.back_server_ip,
                file_path: s.file_path,
                module_path: None,
                size,
                checksum,
                checksum_alt,
                last_all_filename: s.last_all_filename.filter(|f| f != "None"),
                prev_filename: s.prev_filename,
                job_id: None,
            });
        }
        Ok(Plan {
            server_id: self.instance.server_id,
            back_type: self.instance.back_type,
            instance: self.instance.instance,
            at_ms: self.at_ms,
            files,
        })
    }
}

/// The catalog's checksum as `algo:hex`, and the same digest in the other byte order when
/// the catalog cannot say which it holds: a node records rsync's xxh* sums as they cross the
/// wire (little-endian) but a host's checksum hint as `xxhsum` prints it (big-endian).
fn catalog_checksum(
    sum: Option<&str>,
    algorithm: Option<&str>,
) -> Option<(String, Option<String>)> {
    let sum = sum?.trim();
    if sum.contains(':') {
        return Some((normalize_checksum(sum)?, None));
    }
    let algo = algorithm?.to_ascii_lowercase();
    let printed = normalize_checksum(&format!("{algo}:{sum}"))?;
    if !algo.starts_with("xxh") {
        return Some((printed, None));
    }
    let wire = ubackup_puller::manifest::canonical_checksum(&algo, &sum.to_ascii_lowercase())?;
    Some((wire, Some(printed)))
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits a whole HTTP/1.1 response into status and body (Content-Length, chunked, or up
/// to the end of the connection).
fn parse_response(buf: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    if end > 65536 {
        return Err("headers too long".into());
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "headers not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(format!("not HTTP/1.x: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let rest = &buf[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        if n > MAX_RESPONSE {
            return Err(format!("a body of {n} bytes is too large"));
        }
        rest.get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > MAX_RESPONSE {
        return Err("body too large".into());
    }
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_txt = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size_txt = size_txt.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_txt, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > MAX_RESPONSE || out.len() + size > MAX_RESPONSE {
            return Err("body too large".into());
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r, (200, b"{}".to_vec()));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;x\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r, (404, b"abcd".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffff\r\n"
        )
        .is_err());
    }

    #[test]
    fn reads_both_byte_orders_of_xxh_sums() {
        let (a, b) = catalog_checksum(Some("0001"), Some("xxh3")).unwrap_or_default();
        assert!(a.is_empty() && b.is_none(), "a short sum is refused");
        let le = "0102030405060708";
        let (wire, printed) = catalog_checksum(Some(le), Some("xxh3")).unwrap();
        assert_eq!(wire, "xxh3:0807060504030201");
        assert_eq!(printed.as_deref(), Some("xxh3:0102030405060708"));
        let (s, alt) = catalog_checksum(Some(&"ab".repeat(16)), Some("md5")).unwrap();
        assert_eq!(
            (s.as_str(), alt),
            (format!("md5:{}", "ab".repeat(16)).as_str(), None)
        );
        assert!(catalog_checksum(Some(&"ab".repeat(16)), Some("md4")).is_none());
        assert!(catalog_checksum(None, Some("md5")).is_none());
    }

    #[test]
    fn builds_urls_and_hides_the_token() {
        let p = IndexerPlans::new("http://[::1]:8080/idx/", Some(Token("s3cret".into()))).unwrap();
        let req = Request {
            server_id: "a b".into(),
            back_type: "mysql".into(),
            instance: 3306,
            at: At::Ms(5),
        };
        assert_eq!(
            p.path_for(&req),
            "/idx/api/v1/instances/a%20b/mysql/3306/restore?at_ms=5"
        );
        assert!(!format!("{p:?}").contains("s3cret"));
        assert!(IndexerPlans::new("https://x", None).is_err());
        assert!(IndexerPlans::new("http://u:p@x", None).is_err());
    }
}
