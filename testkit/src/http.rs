//! A small blocking HTTP/1.1 client for tests that talk to our own servers on loopback (the
//! indexer's API, webhook receivers): one request per connection, a bounded response, JSON
//! bodies, an optional bearer token or cookie.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// The largest response read (tests never need more).
pub const MAX_RESPONSE: usize = 64 << 20;

/// A response: status, headers (lower-case names) and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "status {}, body is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(400)])
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    bearer: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client for `addr`, with a 30 s timeout per request.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            bearer: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    pub fn bearer(mut self, token: impl Into<String>) -> Client {
        self.bearer = Some(token.into());
        self
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> anyhow::Result<Response> {
        self.request("GET", path, &[], None)
    }

    /// GET `path` and require a 2xx JSON answer.
    pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let r = self.get(path)?;
        if !(200..300).contains(&r.status) {
            bail!("GET {path}: status {}: {}", r.status, r.text());
        }
        r.json()
    }

    /// POST a JSON body to `path`.
    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Response> {
        let bytes = serde_json::to_vec(body)?;
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(&bytes),
        )
    }

    /// Any request, with extra headers and an optional body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<Response> {
        let mut s = TcpStream::connect_timeout(&self.addr, self.timeout)
            .with_context(|| format!("connecting to {}", self.addr))?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: */*\r\n",
            self.addr
        );
        if let Some(t) = &self.bearer {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or(&[]);
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.take(MAX_RESPONSE as u64 + 1).read_to_end(&mut raw)?;
        if raw.len() > MAX_RESPONSE {
            bail!("{method} {path}: response over {MAX_RESPONSE} bytes");
        }
        parse_response(&raw).with_context(|| format!("{method} {path}"))
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `GET path` over HTTP/1.0 from `127.0.0.1:port`, the whole answer (status line, headers and
/// body) as text: for the small hand-rolled servers (the node's `/metrics`) whose answer a test
/// only searches.
pub fn get_http10(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut out = Vec::new();
    s.take(MAX_RESPONSE as u64).read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Decodes a chunked body.
pub fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size_str = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b.get(..size).ok_or_else(|| anyhow!("short chunk"))?;
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"abcde");
        assert_eq!(r.header("x-a"), Some("b"));
    }

    #[test]
    fn refuses_a_response_without_headers_end() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
