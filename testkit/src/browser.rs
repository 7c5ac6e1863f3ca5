//! A real headless Chromium driven through WebDriver, for the dashboard's browser tests.
//!
//! [`Browser::start`] starts Debian's `/usr/bin/chromedriver` on a loopback port picked at run
//! time, and opens one session in which chromedriver launches `/usr/bin/chromium` headless with
//! a fresh `--user-data-dir` (a temp dir). Both live in their own process group, which `Drop`
//! kills after closing the session, so a failing test leaves no browser behind.
//!
//! The client is a thin blocking WebDriver (W3C) client over `std::net::TcpStream` and
//! `serde_json`: one short HTTP/1.1 request per command on loopback. It covers what the tests
//! use (navigate, find, click, type, read text, run a script, screenshot) and nothing more;
//! a full client crate (fantoccini, thirtyfour) would add hyper/reqwest and a TLS stack to the
//! build for no gain here.
//!
//! A test step run through [`Browser::check`] or [`Browser::ensure`] saves a screenshot when it
//! fails, and so does a [`Browser`]'s `Drop` when the thread is panicking, so the page as the
//! browser saw it is kept under `target/browser-failures/`.
//!
//! With `UBACKUP_INTEROP=required` a missing chromium or chromedriver is a failure.

use crate::process::free_port;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::rsync::interop_required;

/// Where Debian installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian installs the driver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The flags every test browser runs with: headless, no sandbox (CI runs as root), no GPU,
/// and nothing that talks to the network on its own.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// The W3C element key in WebDriver JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Both binaries, or None (panics instead when `UBACKUP_INTEROP=required`).
pub fn require_chromium() -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from(CHROMIUM);
    let driver = PathBuf::from(CHROMEDRIVER);
    let missing: Vec<&str> = [(&chromium, CHROMIUM), (&driver, CHROMEDRIVER)]
        .iter()
        .filter(|(p, _)| !p.is_file())
        .map(|(_, n)| *n)
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    if interop_required() {
        panic!(
            "{} required (UBACKUP_INTEROP=required) but missing; \
             install with `apt-get install -y chromium chromium-driver`",
            missing.join(" and ")
        );
    }
    eprintln!("SKIP: {} missing", missing.join(" and "));
    None
}

/// A running chromedriver with one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: tempfile::TempDir,
    name: String,
}

/// One element of the current page.
#[derive(Debug, Clone)]
pub struct Element {
    id: String,
}

impl Browser {
    /// Starts chromedriver and a session with a window `width` x `height` CSS pixels, or
    /// returns None when the binaries are missing and not required. `name` names the
    /// screenshots a failure leaves.
    pub fn start(name: &str, width: u32, height: u32) -> Option<Browser> {
        Self::start_with_flags(name, width, height, &[])
    }

    /// [`Browser::start`] with more Chromium flags after [`CHROMIUM_FLAGS`] (for example
    /// `--host-resolver-rules=MAP name 127.0.0.1`, or
    /// `--ignore-certificate-errors-spki-list=<hash>` to trust one test certificate).
    pub fn start_with_flags(
        name: &str,
        width: u32,
        height: u32,
        flags: &[String],
    ) -> Option<Browser> {
        let (chromium, driver) = require_chromium()?;
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&chromium, &driver, name, width, height, flags) {
                Ok(b) => return Some(b),
                Err(e) => last = Some(e),
            }
        }
        panic!("cannot start chromium: {last:?}");
    }

    fn try_start(
        chromium: &Path,
        driver: &Path,
        name: &str,
        width: u32,
        height: u32,
        flags: &[String],
    ) -> anyhow::Result<Browser> {
        let port = free_port()?;
        let profile = tempfile::tempdir().context("profile dir")?;
        let log = std::fs::File::create(profile.path().join("chromedriver.log"))?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group, so Drop can kill chromedriver and every browser process at once.
            .process_group(0)
            .spawn()
            .context("spawning chromedriver")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut b = Browser {
            driver: child,
            addr,
            session: String::new(),
            profile,
            name: name.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = b.driver.try_wait()? {
                bail!("chromedriver exited at once ({status}): {}", b.driver_log());
            }
            if let Ok(v) = b.raw("GET", "/status", None) {
                if v["value"]["ready"].as_bool() == Some(true) {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver not ready: {}", b.driver_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            b.profile.path().join("profile").display()
        ));
        args.push(format!("--window-size={width},{height}"));
        args.extend(flags.iter().cloned());
        let caps = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.to_string_lossy(),
                    "args": args,
                },
            }}
        });
        let v = b.raw("POST", "/session", Some(&caps))?;
        b.session = v["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {v}; log: {}", b.driver_log()))?
            .to_owned();
        // Headless window size is the outer size; set the viewport explicitly.
        b.set_viewport(width, height)?;
        Ok(b)
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// One WebDriver command: `method path` with an optional JSON body; the answer's JSON.
    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr.port(),
            body.len()
        );
        s.write_all(req.as_bytes())?;
        // chromedriver keeps the connection open: read the head, then Content-Length bytes.
        let mut resp = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        let split = loop {
            if let Some(p) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = s.read(&mut buf)?;
            if n == 0 || resp.len() > 64 * 1024 {
                bail!("no HTTP header end from chromedriver");
            }
            resp.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let mut payload = resp[split + 4..].to_vec();
        let lower = head.to_ascii_lowercase();
        let len = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        match len {
            Some(len) if len <= 256 << 20 => {
                while payload.len() < len {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        bail!("chromedriver closed mid-answer");
                    }
                    payload.extend_from_slice(&buf[..n]);
                }
                payload.truncate(len);
            }
            Some(len) => bail!("chromedriver answer of {len} bytes"),
            None => {
                (&mut s).take(256 << 20).read_to_end(&mut payload)?;
                if lower.contains("transfer-encoding: chunked") {
                    payload = crate::http::dechunk(&payload)?;
                }
            }
        }
        let v: Value = serde_json::from_slice(&payload)
            .with_context(|| format!("chromedriver answer to {method} {path}: {head}"))?;
        if let Some(err) = v["value"]["error"].as_str() {
            bail!(
                "{method} {path}: {err}: {}",
                v["value"]["message"].as_str().unwrap_or("")
            );
        }
        Ok(v)
    }

    fn cmd(&self, method: &str, rest: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let v = self.raw(
            method,
            &format!("/session/{}{rest}", self.session),
            body.as_ref(),
        )?;
        Ok(v["value"].clone())
    }

    fn set_viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        // Emulate the exact CSS viewport through the DevTools passthrough chromedriver offers.
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
                }}),
            ),
        )?;
        Ok(())
    }

    /// Resizes the viewport (CSS pixels), e.g. to a phone's 390 px.
    pub fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.set_viewport(width, height)
    }

    /// Navigates to `url` and waits for the load event.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    /// The current URL.
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .cmd("GET", "/url", None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// The page source as the browser holds it now.
    pub fn source(&self) -> anyhow::Result<String> {
        Ok(self
            .cmd("GET", "/source", None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> anyhow::Result<Element> {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        element(&v).with_context(|| format!("no element {css:?}"))
    }

    /// Every element matching a CSS selector.
    pub fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        v.as_array()
            .map(|a| a.iter().map(element).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(css) {
                Ok(e) => return Ok(e),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Clicks an element.
    pub fn click(&self, e: &Element) -> anyhow::Result<()> {
        self.cmd("POST", &format!("/element/{}/click", e.id), Some(json!({})))?;
        Ok(())
    }

    /// Clears a field and types `text` into it.
    pub fn type_into(&self, e: &Element, text: &str) -> anyhow::Result<()> {
        self.cmd("POST", &format!("/element/{}/clear", e.id), Some(json!({})))?;
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.id),
            Some(json!({ "text": text })),
        )?;
        Ok(())
    }

    /// The rendered text of an element.
    pub fn text(&self, e: &Element) -> anyhow::Result<String> {
        Ok(self
            .cmd("GET", &format!("/element/{}/text", e.id), None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// The rendered text of the whole page body.
    pub fn body_text(&self) -> anyhow::Result<String> {
        let b = self.find("body")?;
        self.text(&b)
    }

    /// Runs a synchronous script; its return value.
    pub fn script(&self, js: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": args})),
        )
    }

    /// Runs an asynchronous script (its last argument is the callback); the value passed to it.
    pub fn script_async(&self, js: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": js, "args": args})),
        )
    }

    /// A PNG of the viewport.
    pub fn screenshot_png(&self) -> anyhow::Result<Vec<u8>> {
        let v = self.cmd("GET", "/screenshot", None)?;
        let b64 = v.as_str().ok_or_else(|| anyhow!("no screenshot data"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    }

    /// A PNG of the whole page (not only the viewport), through DevTools.
    pub fn full_page_png(&self) -> anyhow::Result<Vec<u8>> {
        let v = self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Page.captureScreenshot", "params": {
                "format": "png", "captureBeyondViewport": true,
            }})),
        )?;
        let b64 = v["data"]
            .as_str()
            .ok_or_else(|| anyhow!("no screenshot data"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    }

    /// Saves a screenshot as `<dir>/<name>-<what>.png`, returning the path. The directory is
    /// `target/browser-failures` under the workspace, or a temp dir when that cannot be made.
    pub fn save_screenshot(&self, what: &str) -> anyhow::Result<PathBuf> {
        let dir = failure_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}-{what}.png", self.name));
        std::fs::write(&path, self.screenshot_png()?)?;
        Ok(path)
    }

    /// The result of `f`; when it fails, saves a screenshot and prints where.
    pub fn check<T>(&self, what: &str, f: impl FnOnce(&Browser) -> anyhow::Result<T>) -> T {
        match f(self) {
            Ok(v) => v,
            Err(e) => {
                let shot = self.save_screenshot(what);
                panic!("{what}: {e:#}\nscreenshot: {shot:?}");
            }
        }
    }

    /// Same as [`Browser::check`] for a failed condition given as a bool.
    pub fn ensure(&self, what: &str, cond: bool) {
        if !cond {
            let shot = self.save_screenshot(what);
            panic!("{what}: condition failed\nscreenshot: {shot:?}");
        }
    }
}

/// Where failure screenshots go: `$CARGO_TARGET_DIR` or the workspace's `target/`, then
/// `browser-failures/`.
pub fn failure_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("browser-failures");
    if std::fs::create_dir_all(&dir).is_ok() {
        dir
    } else {
        std::env::temp_dir().join("ubackup-browser-failures")
    }
}

fn element(v: &Value) -> anyhow::Result<Element> {
    v[ELEMENT_KEY]
        .as_str()
        .map(|id| Element { id: id.to_owned() })
        .ok_or_else(|| anyhow!("not an element: {v}"))
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.session.is_empty() {
            if let Ok(p) = self.save_screenshot("panic") {
                eprintln!("browser screenshot at failure: {}", p.display());
            }
        }
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        // Kill the whole group: chromedriver and any browser process still alive.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drives_a_real_page_and_takes_a_screenshot() {
        let Some(b) = Browser::start("testkit-selftest", 800, 600) else {
            return;
        };
        b.goto("data:text/html,<title>t</title><label for=q>Q</label><input id=q><p id=o>hi</p>")
            .expect("goto");
        let input = b
            .find("#q")
            .map_err(|e| format!("{e:#} / {:?}", b.source()))
            .expect("find");
        b.type_into(&input, "abc").expect("type");
        let v = b
            .script("return document.getElementById('q').value", vec![])
            .expect("script");
        assert_eq!(v, json!("abc"));
        assert_eq!(b.text(&b.find("#o").expect("find")).expect("text"), "hi");
        let w = b.script("return window.innerWidth", vec![]).expect("width");
        assert_eq!(w, json!(800));
        let png = b.screenshot_png().expect("png");
        assert!(png.starts_with(b"\x89PNG"));
        assert!(b.find("#missing").is_err());
    }

    #[test]
    fn drop_kills_the_browser() {
        let Some(b) = Browser::start("testkit-drop", 400, 300) else {
            return;
        };
        let pgid = b.driver.id();
        drop(b);
        // No process is left in the group (SIGKILL is delivered at once; the kernel may
        // take a moment to reap the processes chromium had spawned).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new("pgrep")
                .args(["-g", &pgid.to_string()])
                .output()
                .expect("pgrep");
            let left = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "left: {left}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            crate::http::dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").expect("ok"),
            b"abc".iter().chain(b"de").copied().collect::<Vec<u8>>()
        );
        assert!(crate::http::dechunk(b"zz\r\n").is_err());
    }
}
