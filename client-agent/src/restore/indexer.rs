//! The indexer's restore plan over HTTP:
//! `GET <indexer>/api/v1/instances/{server_id}/{type}/{instance}/restore[?at_ms=N]` with a
//! bearer token (`ubackup-indexer token create`). Its answer (`ubackup_indexer::restore::Plan`:
//! `steps`, `holes`, `complete`) becomes a [`Plan`]: no target is
//! [`RestoreError::NoBackup`], a hole is [`RestoreError::ChainHole`] with every missing,
//! failed, expired or corrupt link named.
//!
//! The client is reqwest (rustls with the ring provider): HTTPS with the certificate
//! verified against the system's roots, or only against `--ca-file` when given; HTTP/2 when
//! the indexer offers it; no redirects followed (a token never goes to a second host). Plain
//! `http://` is accepted only to a loopback host unless `--insecure-http` says the network is
//! trusted: the token would cross it in clear.

use std::path::PathBuf;
use std::time::Duration;

use ubackup_messages::{RestorePlan, StepKind};

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

/// How the client reaches the indexer.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Allow `http://` to a host that is not loopback (`--insecure-http`).
    pub insecure_http: bool,
    /// Trust only the CAs in this PEM file (`--ca-file`); otherwise the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The indexer as a plan source.
#[derive(Debug, Clone)]
pub struct IndexerPlans {
    /// `scheme://host:port`.
    origin: String,
    base: String,
    token: Option<Token>,
    client: reqwest::Client,
    /// Deadline of the whole request.
    pub timeout: Duration,
}

/// Whether `host` (a URL's host) is this machine.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(h) = url.host_str() else {
        return false;
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    match h.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => h.eq_ignore_ascii_case("localhost"),
    }
}

impl IndexerPlans {
    /// `url` is `https://host[:port][/prefix]` (or `http://` to a loopback host, or anywhere
    /// with `opts.insecure_http`).
    pub fn new(
        url: &str,
        token: Option<Token>,
        opts: &ClientOptions,
    ) -> Result<IndexerPlans, RestoreError> {
        let bad = |why: &str| RestoreError::Usage(format!("indexer URL {url:?}: {why}"));
        let u = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad(
                "put the token in --token-file or UBACKUP_INDEXER_TOKEN, not the URL",
            ));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(bad("bad path"));
        }
        if u.host().is_none() {
            return Err(bad("no host"));
        }
        match u.scheme() {
            "https" => {}
            "http" if is_loopback(&u) || opts.insecure_http => {}
            "http" => {
                return Err(bad(
                    "plain http:// to a host that is not this machine would send the token \
                     in clear: use https:// (--ca-file for a private CA), or --insecure-http \
                     on a network you trust",
                ))
            }
            _ => return Err(bad("must start with https:// or http://")),
        }
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("ubackup-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &opts.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| RestoreError::Usage(format!("--ca-file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RestoreError::Usage(format!("--ca-file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(RestoreError::Usage(format!(
                    "--ca-file {}: no certificate in it",
                    path.display()
                )));
            }
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| RestoreError::Usage(format!("the HTTPS client: {}", chain(&e))))?;
        Ok(IndexerPlans {
            origin: u.origin().ascii_serialization(),
            base: u.path().trim_end_matches('/').to_string(),
            token,
            client,
            timeout: Duration::from_secs(60),
        })
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
            url: format!("{}{}", self.origin, self.base),
            reason,
        };
        let mut rb = self
            .client
            .get(format!("{}{path}", self.origin))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(&t.0);
        }
        let exchange = async {
            let mut resp = rb.send().await.map_err(|e| unreachable(chain(&e)))?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(c) = resp.chunk().await.map_err(|e| unreachable(chain(&e)))? {
                if body.len() + c.len() > MAX_RESPONSE {
                    return Err(RestoreError::Indexer {
                        status,
                        message: format!("a response over {MAX_RESPONSE} bytes"),
                    });
                }
                body.extend_from_slice(&c);
            }
            Ok((status, body))
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

/// An error with its causes (reqwest's own text is only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
                let p: RestorePlan = serde_json::from_slice(&body).map_err(|e| {
                    RestoreError::BadPlan(format!("the indexer's plan is not a plan: {e}"))
                })?;
                into_plan(p, req)
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

/// Turns the indexer's plan (the shared contract) into the files to fetch, refusing a plan
/// with holes, without a target, or with a step that cannot be verified here.
fn into_plan(plan: RestorePlan, req: &Request) -> Result<Plan, RestoreError> {
    if !plan.holes.is_empty() || (plan.target.is_some() && !plan.complete) {
        let holes: Vec<String> = plan
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
    if plan.target.is_none() || plan.steps.is_empty() {
        return Err(RestoreError::NoBackup {
            instance: req.label(),
            at: req.at.to_string(),
            detail: "the catalog has no usable backup taken at or before that time".into(),
        });
    }
    let mut files = Vec::with_capacity(plan.steps.len());
    for s in plan.steps {
        let filename = s.filename.filter(|f| !f.is_empty()).ok_or_else(|| {
            RestoreError::BadPlan(format!("catalog row {:?} has no file name", s.id))
        })?;
        let (checksum, checksum_alt) =
            catalog_checksum(s.checksum.as_deref(), s.checksum_algorithm.as_deref()).ok_or_else(
                || {
                    RestoreError::BadPlan(format!(
                        "{filename}: the catalog's checksum ({} {}) cannot be verified here \
                         (xxh128, xxh3, xxh64, md5, sha1 or sha256 needed)",
                        s.checksum_algorithm.as_deref().unwrap_or("no algorithm"),
                        s.checksum.as_deref().unwrap_or("none")
                    ))
                },
            )?;
        let size = s
            .size
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| RestoreError::BadPlan(format!("{filename}: no size")))?;
        files.push(PlanFile {
            role: match s.kind {
                StepKind::Full => Role::Full,
                StepKind::Incremental => Role::Incremental,
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
        server_id: plan.instance.server_id,
        back_type: plan.instance.back_type,
        instance: plan.instance.instance,
        at_ms: Some(plan.at_ms),
        files,
    })
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
    let wire = ubackup_checksum::canonical_checksum(&algo, &sum.to_ascii_lowercase())?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let o = ClientOptions::default();
        let p =
            IndexerPlans::new("http://[::1]:8080/idx/", Some(Token("s3cret".into())), &o).unwrap();
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
        assert!(IndexerPlans::new("ftp://x", None, &o).is_err());
        assert!(IndexerPlans::new("https://u:p@x", None, &o).is_err());
        assert!(IndexerPlans::new("https://indexer.example", None, &o).is_ok());
        assert!(IndexerPlans::new("http://localhost:8080", None, &o).is_ok());
        assert!(IndexerPlans::new("http://127.0.0.2:8080", None, &o).is_ok());
    }

    #[test]
    fn refuses_plain_http_off_loopback_unless_told() {
        let o = ClientOptions::default();
        for url in [
            "http://indexer.example:8080",
            "http://10.0.0.5",
            "http://[2001:db8::1]",
        ] {
            let e = IndexerPlans::new(url, Some(Token("t".into())), &o)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("--insecure-http") && e.contains("https://"),
                "{url}: {e}"
            );
        }
        let yes = ClientOptions {
            insecure_http: true,
            ..ClientOptions::default()
        };
        assert!(IndexerPlans::new("http://indexer.example:8080", None, &yes).is_ok());
    }
}
