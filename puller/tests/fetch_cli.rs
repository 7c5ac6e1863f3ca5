//! `ubackup-puller fetch`, run as a process against real `rsync --daemon`s (Debian's 3.5.0
//! and 3.2.7, see `ubackup_testkit::rsync`) on loopback ports: the `--json` summary, exit
//! codes with rsync's meanings, `--list`, password sources and `--timeout`.
//!
//! A missing rsync binary skips that version, or fails the test when
//! `UBACKUP_INTEROP=required`. Every run of the binary is killed if it outlives
//! [`RUN_LIMIT`].

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use serde_json::Value;
use ubackup_testkit::{
    compare_trees, list_tree, require_rsync, set_mtime, write_random_file, DaemonBuilder, Module,
    RsyncDaemon, RsyncVersion,
};

/// Longest a single run of the binary may take before the test kills it and fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The stock releases whose binary is present. `require_rsync` panics instead when one is
/// missing and `UBACKUP_INTEROP=required`.
fn versions() -> Vec<RsyncVersion> {
    RsyncVersion::ALL
        .into_iter()
        .filter(|&v| require_rsync(v).is_some())
        .collect()
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    /// The single JSON line `--json` prints on stdout.
    fn json(&self) -> anyhow::Result<Value> {
        let lines: Vec<&str> = self.stdout.lines().collect();
        ensure!(
            lines.len() == 1,
            "expected one line on stdout, got {lines:?} (stderr: {})",
            self.stderr
        );
        serde_json::from_str(lines[0]).with_context(|| format!("parsing {:?}", lines[0]))
    }
}

/// `ubackup-puller fetch ARGS`, with no password or log settings inherited.
fn fetch(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ubackup-puller"));
    cmd.arg("fetch")
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RSYNC_PASSWORD")
        .env_remove("UBACKUP_LOG");
    cmd
}

/// Runs `cmd` to completion, killing it (and failing) after [`RUN_LIMIT`].
fn run(cmd: &mut Command) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning ubackup-puller")?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            kill(&mut child);
            bail!("ubackup-puller still running after {RUN_LIMIT:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let join = |t: JoinHandle<Vec<u8>>| {
        t.join()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|_| anyhow!("pipe reader panicked"))
    };
    Ok(Run {
        code: status.code(),
        stdout: join(stdout)?,
        stderr: join(stderr)?,
        took,
    })
}

/// Reads a child's pipe to the end on a thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` and checks it exits with `code`, showing everything it printed otherwise.
fn expect_exit(cmd: &mut Command, code: i32, daemon: Option<&RsyncDaemon>) -> anyhow::Result<Run> {
    let out = run(cmd)?;
    ensure!(
        out.code == Some(code),
        "expected exit {code}, got {:?}: {cmd:?}\n--- stdout:\n{}--- stderr:\n{}--- daemon log:\n{}",
        out.code,
        out.stdout,
        out.stderr,
        daemon.map(|d| d.log()).unwrap_or_default()
    );
    Ok(out)
}

/// Writes `size` random bytes to `root/rel` with `mode` and `mtime`.
fn write_file(
    root: &Path,
    rel: &str,
    size: u64,
    seed: u64,
    mode: u32,
    mtime: i64,
) -> anyhow::Result<PathBuf> {
    let path = root.join(rel);
    write_random_file(&path, size, seed)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    set_mtime(&path, mtime)?;
    Ok(path)
}

/// Five files, 1 MiB and a bit in all; returns their total size.
fn small_tree(root: &Path) -> anyhow::Result<u64> {
    let files: [(&str, u64, u32); 5] = [
        ("empty", 0, 0o644),
        ("one byte", 1, 0o600),
        ("ünïcødé файл.bin", 40 * 1024, 0o640),
        ("sub dir/100k.bin", 100 * 1024, 0o644),
        ("sub dir/deeper/1M+1.bin", (1 << 20) + 1, 0o755),
    ];
    let mut total = 0;
    for (i, (rel, size, mode)) in files.into_iter().enumerate() {
        write_file(root, rel, size, i as u64, mode, 1_600_000_000 + i as i64)?;
        total += size;
    }
    Ok(total)
}

fn path_arg(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// A loopback port with nothing listening on it (a moment ago).
fn closed_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn u64_field(json: &Value, key: &str) -> anyhow::Result<u64> {
    json.get(key)
        .and_then(Value::as_u64)
        .with_context(|| format!("no unsigned {key:?} in {json}"))
}

#[test]
fn json_line_reports_files_bytes_protocol_and_checksum() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let total = small_tree(data.path())?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let url = daemon.url("data/");
        let mut cases = vec![];
        for p in 29..=32 {
            cases.push((p, None, if p == 29 { "md4" } else { "xxh128" }));
        }
        for p in 30..=32 {
            cases.push((p, Some("md5"), "md5"));
        }
        for (p, choice, checksum) in cases {
            let cell = format!("rsync {}, --protocol {p}, {choice:?}", v.label());
            let dest = tempfile::tempdir()?;
            let protocol = p.to_string();
            let mut args = vec!["--json", "-r", "--protocol", &protocol];
            if let Some(c) = choice {
                args.extend(["--checksum-choice", c]);
            }
            args.extend([url.as_str(), path_arg(dest.path())?]);
            let out = expect_exit(&mut fetch(&args), 0, Some(&daemon)).context(cell.clone())?;
            compare_trees(data.path(), dest.path()).context(cell.clone())?;

            let json = out.json().context(cell.clone())?;
            assert_eq!(json["ok"], Value::Bool(true), "{cell}: {json}");
            assert_eq!(u64_field(&json, "exit_code")?, 0, "{cell}: {json}");
            assert_eq!(u64_field(&json, "files")?, 5, "{cell}: {json}");
            assert_eq!(u64_field(&json, "literal_bytes")?, total, "{cell}: {json}");
            assert_eq!(u64_field(&json, "matched_bytes")?, 0, "{cell}: {json}");
            assert!(
                u64_field(&json, "bytes_received")? > total,
                "{cell}: {json}"
            );
            assert!(u64_field(&json, "bytes_sent")? > 0, "{cell}: {json}");
            let elapsed = u64_field(&json, "elapsed_ms")?;
            assert!(
                u128::from(elapsed) <= out.took.as_millis(),
                "{cell}: {json} took {:?}",
                out.took
            );
            assert_eq!(u64_field(&json, "protocol")?, p, "{cell}: {json}");
            assert_eq!(json["checksum"], Value::from(checksum), "{cell}: {json}");
        }
    }
    Ok(())
}

#[test]
fn list_prints_motd_and_listable_modules() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .motd("Welcome to the ubackup test daemon\n")
            .module(Module::new("data", data.path()).comment("test data"))
            .module(Module::new("other", data.path()))
            .module(Module::new("hidden", data.path()).extra("list = no"))
            .start()?;
        for args in [
            vec!["--list".to_owned(), daemon.url("data/")],
            vec![daemon.url("")],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = expect_exit(&mut fetch(&args), 0, Some(&daemon))?;
            let lines: Vec<&str> = out.stdout.lines().collect();
            let ctx = format!("rsync {}, {args:?}: {lines:?}", v.label());
            assert_eq!(
                lines.first().copied(),
                Some("Welcome to the ubackup test daemon"),
                "{ctx}"
            );
            let modules: Vec<(&str, &str)> = lines
                .iter()
                .filter_map(|l| l.split_once('\t'))
                .map(|(name, comment)| (name.trim_end(), comment))
                .collect();
            assert_eq!(modules, [("data", "test data"), ("other", "")], "{ctx}");
        }
    }
    Ok(())
}

#[test]
fn exit_codes_follow_rsync() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    small_tree(data.path())?;
    let dest = tempfile::tempdir()?;
    let dest_arg = path_arg(dest.path())?;

    // 1: a source that is not an rsync daemon source.
    let out = expect_exit(&mut fetch(&["not-a-source", dest_arg]), 1, None)?;
    assert!(out.stderr.contains("invalid rsync source"), "{out:?}");

    // 10: nothing listens on the port.
    let url = format!("rsync://127.0.0.1:{}/data/", closed_port()?);
    let out = expect_exit(&mut fetch(&["--json", &url, dest_arg]), 10, None)?;
    let json = out.json()?;
    assert_eq!(json["ok"], Value::Bool(false), "{json}");
    assert_eq!(u64_field(&json, "exit_code")?, 10, "{json}");

    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .module(Module::new("secret", data.path()).auth("alice", "correct horse"))
            .start()?;
        let ctx = format!("rsync {}", v.label());
        let secret = format!("rsync://alice@127.0.0.1:{}/secret/", daemon.port());

        // 5: wrong password.
        let out = expect_exit(
            fetch(&["-r", &secret, dest_arg]).env("RSYNC_PASSWORD", "wrong"),
            5,
            Some(&daemon),
        )?;
        assert!(
            out.stderr.contains("auth failed on module secret"),
            "{ctx}: {out:?}"
        );

        // 5: no password at all.
        let out = expect_exit(&mut fetch(&["-r", &secret, dest_arg]), 5, Some(&daemon))?;
        assert!(out.stderr.contains("no password"), "{ctx}: {out:?}");

        // 5: unknown module, with the daemon's words in the JSON.
        let out = expect_exit(
            &mut fetch(&["--json", &daemon.url("nosuch/"), dest_arg]),
            5,
            Some(&daemon),
        )?;
        assert!(
            out.stderr.contains("Unknown module 'nosuch'"),
            "{ctx}: {out:?}"
        );
        let json = out.json()?;
        assert_eq!(
            json["remote_message"],
            Value::from("Unknown module 'nosuch'"),
            "{ctx}: {json}"
        );

        // 23: a directory that does not exist in the module.
        let out = expect_exit(
            &mut fetch(&["--json", "-r", &daemon.url("data/no such dir/f"), dest_arg]),
            23,
            Some(&daemon),
        )?;
        let json = out.json()?;
        assert_eq!(u64_field(&json, "exit_code")?, 23, "{ctx}: {json}");
        assert!(
            json["remote_message"]
                .as_str()
                .is_some_and(|m| m.contains("change_dir \"no such dir\" (in data) failed")),
            "{ctx}: {json}"
        );
        assert!(list_tree(dest.path())?.is_empty(), "{ctx}: dest written to");
    }
    Ok(())
}

#[test]
fn missing_file_exits_23_like_rsync() -> anyhow::Result<()> {
    // Stock rsync clients exit 23 here: the sender reports the missing file with
    // MSG_ERROR_XFER (link_stat ... ENOENT) but leaves io_error clear.
    let data = tempfile::tempdir()?;
    small_tree(data.path())?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let dest = tempfile::tempdir()?;
        let out = expect_exit(
            &mut fetch(&[
                "--json",
                &daemon.url("data/missing.bin"),
                path_arg(dest.path())?,
            ]),
            23,
            Some(&daemon),
        )
        .with_context(|| format!("rsync {}", v.label()))?;
        let json = out.json()?;
        assert_eq!(
            json["remote_message"],
            Value::from(
                "rsync: [sender] link_stat \"missing.bin\" (in data) failed: \
                 No such file or directory (2)"
            ),
            "rsync {}: {json}",
            v.label()
        );
    }
    Ok(())
}

#[test]
fn password_comes_from_file_or_environment() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    small_tree(data.path())?;
    let secrets = tempfile::tempdir()?;
    let open_file = secrets.path().join("open");
    let private_file = secrets.path().join("private");
    for (path, mode) in [(&open_file, 0o644), (&private_file, 0o600)] {
        fs::write(path, "correct horse\nignored second line\n")?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("secret", data.path()).auth("alice", "correct horse"))
            .start()?;
        let ctx = format!("rsync {}", v.label());
        let url = format!("rsync://alice@127.0.0.1:{}/secret/", daemon.port());

        // Readable by others: refused before connecting, even with RSYNC_PASSWORD set.
        let dest = tempfile::tempdir()?;
        let out = expect_exit(
            fetch(&[
                "-r",
                "--password-file",
                path_arg(&open_file)?,
                &url,
                path_arg(dest.path())?,
            ])
            .env("RSYNC_PASSWORD", "correct horse"),
            1,
            Some(&daemon),
        )?;
        assert!(
            out.stderr.contains("must not be other-accessible"),
            "{ctx}: {out:?}"
        );
        assert!(list_tree(dest.path())?.is_empty(), "{ctx}");

        // Mode 0600: its first line is the password (and wins over RSYNC_PASSWORD).
        let dest = tempfile::tempdir()?;
        expect_exit(
            fetch(&[
                "-r",
                "--password-file",
                path_arg(&private_file)?,
                &url,
                path_arg(dest.path())?,
            ])
            .env("RSYNC_PASSWORD", "wrong"),
            0,
            Some(&daemon),
        )?;
        compare_trees(data.path(), dest.path()).context(ctx.clone())?;

        // RSYNC_PASSWORD.
        let dest = tempfile::tempdir()?;
        expect_exit(
            fetch(&["-r", &url, path_arg(dest.path())?]).env("RSYNC_PASSWORD", "correct horse"),
            0,
            Some(&daemon),
        )?;
        compare_trees(data.path(), dest.path()).context(ctx.clone())?;
    }
    Ok(())
}

/// A listener that accepts connections and never sends a byte; closes them when dropped.
struct SilentServer {
    port: u16,
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> anyhow::Result<SilentServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            // Ends when told to or when the test is gone, at the latest after RUN_LIMIT.
            let deadline = Instant::now() + RUN_LIMIT;
            while Instant::now() < deadline {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                match stopped.recv_timeout(Duration::from_millis(10)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        });
        Ok(SilentServer {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn timeout_ends_a_pull_from_a_silent_server_with_30() -> anyhow::Result<()> {
    let server = SilentServer::start()?;
    let dest = tempfile::tempdir()?;
    let url = format!("rsync://127.0.0.1:{}/data/", server.port);
    let out = expect_exit(
        &mut fetch(&["--json", "--timeout", "1", &url, path_arg(dest.path())?]),
        30,
        None,
    )?;
    assert!(out.took < Duration::from_secs(10), "took {:?}", out.took);
    let json = out.json()?;
    assert_eq!(u64_field(&json, "exit_code")?, 30, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{json}"
    );
    assert!(list_tree(dest.path())?.is_empty());
    Ok(())
}

/// Relays one connection to `daemon`, passing at most `budget` bytes back to the client and
/// then going silent (without closing) until the client leaves.
fn stalling_proxy(daemon: SocketAddr, budget: usize) -> anyhow::Result<(u16, JoinHandle<()>)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let thread = std::thread::spawn(move || {
        let relay = || -> std::io::Result<()> {
            let (client, _) = listener.accept()?;
            let server = TcpStream::connect(daemon)?;
            for s in [&client, &server] {
                s.set_read_timeout(Some(RUN_LIMIT))?;
            }
            let (mut c, mut s) = (client.try_clone()?, server.try_clone()?);
            let upstream = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut s);
            });
            let (mut s, mut c) = (server.try_clone()?, client.try_clone()?);
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = budget;
            while left > 0 {
                let want = buf.len().min(left);
                let n = s.read(&mut buf[..want])?;
                if n == 0 {
                    break;
                }
                c.write_all(&buf[..n])?;
                left -= n;
            }
            // Silent now; the upstream copy ends when the client goes away.
            let _ = upstream.join();
            let _ = server.shutdown(Shutdown::Both);
            Ok(())
        };
        let _ = relay();
    });
    Ok((port, thread))
}

/// The bytes kept for `big.bin` in the partial directory of `dest`, if any.
fn partial_of(dest: &Path, name: &str) -> Option<Vec<u8>> {
    fs::read(dest.join(".ubackup-partial").join(name)).ok()
}

/// Fetches `url` into `dest` again, straight from the daemon, and checks that the pull
/// resumed from the partial data: fewer literal bytes than the file, block matches, the
/// right content, and no partial directory left.
fn resume_and_check(url: &str, dest: &Path, original: &Path, kept: usize) -> anyhow::Result<()> {
    let out = expect_exit(&mut fetch(&["--json", url, path_arg(dest)?]), 0, None)?;
    let json = out.json()?;
    let size = fs::metadata(original)?.len();
    let literal = u64_field(&json, "literal_bytes")?;
    let matched = u64_field(&json, "matched_bytes")?;
    ensure!(
        u64_field(&json, "basis_files")? == 1,
        "no basis used: {json}"
    );
    ensure!(
        matched >= (kept as u64).saturating_sub(256 * 1024),
        "resumed pull matched {matched} bytes of {kept} kept: {json}"
    );
    ensure!(literal + matched == size, "{literal} + {matched} != {size}");
    ensure!(
        literal < size,
        "resumed pull received the whole file again: {json}"
    );
    ensure!(
        u64_field(&json, "bytes_received")? < size,
        "resumed pull received as many bytes as a full copy: {json}"
    );
    ensure!(
        fs::read(dest.join("big.bin"))? == fs::read(original)?,
        "resumed file differs from the source"
    );
    ensure!(
        !dest.join(".ubackup-partial").exists(),
        "partial directory left after a successful pull"
    );
    Ok(())
}

#[test]
fn timeout_mid_file_exits_30_keeps_partial_data_and_resumes() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "big.bin", 16 << 20, 1, 0o644, 1_600_000_000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let (port, proxy) = stalling_proxy(daemon.addr(), 2 << 20)?;
        let dest = tempfile::tempdir()?;
        let url = format!("rsync://127.0.0.1:{port}/data/big.bin");
        let out = expect_exit(
            &mut fetch(&["--timeout", "1", &url, path_arg(dest.path())?]),
            30,
            Some(&daemon),
        )?;
        assert!(out.took < Duration::from_secs(10), "took {:?}", out.took);
        // Nothing under the final name; what arrived is kept in the partial directory.
        let left = list_tree(dest.path())?;
        assert_eq!(
            left,
            BTreeSet::from([
                ".ubackup-partial".to_string(),
                ".ubackup-partial/big.bin".to_string()
            ]),
            "rsync {}",
            v.label()
        );
        let kept = partial_of(dest.path(), "big.bin").context("partial data")?;
        let full = fs::read(data.path().join("big.bin"))?;
        assert!(
            !kept.is_empty() && full.starts_with(&kept),
            "partial data is not a prefix"
        );
        proxy.join().map_err(|_| anyhow!("proxy thread panicked"))?;
        resume_and_check(
            &daemon.url("data/big.bin"),
            dest.path(),
            &data.path().join("big.bin"),
            kept.len(),
        )
        .with_context(|| format!("rsync {}", v.label()))?;
    }
    Ok(())
}

#[test]
fn sigterm_mid_file_exits_20_keeps_partial_data_and_resumes() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "big.bin", 16 << 20, 2, 0o644, 1_600_000_000)?;
    let v = RsyncVersion::V3_5_0;
    let Some(_) = ubackup_testkit::require_rsync(v) else {
        return Ok(());
    };
    let daemon = DaemonBuilder::new(v)
        .module(Module::new("data", data.path()))
        .start()?;
    // The proxy passes 3 MiB and then holds the connection open: the pull sits mid-file.
    let (port, proxy) = stalling_proxy(daemon.addr(), 3 << 20)?;
    let dest = tempfile::tempdir()?;
    let url = format!("rsync://127.0.0.1:{port}/data/big.bin");
    let mut child = fetch(&[&url, path_arg(dest.path())?])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Wait until the temp file holds data, then ask the puller to stop.
    let started = Instant::now();
    loop {
        let growing = fs::read_dir(dest.path())?.filter_map(Result::ok).any(|e| {
            e.file_name().to_string_lossy().starts_with(".big.bin.")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        });
        if growing {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            kill(&mut child);
            bail!("no data arrived through the proxy");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status()?;
    ensure!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            kill(&mut child);
            bail!("puller did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(20), "exit status after SIGTERM");
    assert!(
        !dest.path().join("big.bin").exists(),
        "final name exists after SIGTERM"
    );
    let kept = partial_of(dest.path(), "big.bin").context("partial data after SIGTERM")?;
    let full = fs::read(data.path().join("big.bin"))?;
    assert!(
        !kept.is_empty() && full.starts_with(&kept),
        "partial data is not a prefix"
    );
    drop(proxy);
    resume_and_check(
        &daemon.url("data/big.bin"),
        dest.path(),
        &data.path().join("big.bin"),
        kept.len(),
    )
}

#[test]
fn sigkill_mid_file_leaves_a_temp_file_the_next_fetch_resumes_from() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "big.bin", 16 << 20, 3, 0o644, 1_600_000_000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        // The proxy passes 4 MiB and then holds the connection open: the pull sits mid-file.
        let (port, proxy) = stalling_proxy(daemon.addr(), 4 << 20)?;
        let dest = tempfile::tempdir()?;
        let url = format!("rsync://127.0.0.1:{port}/data/big.bin");
        let mut child = fetch(&[&url, path_arg(dest.path())?])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // Wait until the temp file holds more than one write buffer (1 MiB), then SIGKILL:
        // no handler runs, the temp file stays where it is.
        let started = Instant::now();
        let temp = loop {
            let found = fs::read_dir(dest.path())?.filter_map(Result::ok).find(|e| {
                e.file_name().to_string_lossy().starts_with(".big.bin.")
                    && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
            });
            if let Some(e) = found {
                break e.path();
            }
            if started.elapsed() > Duration::from_secs(20) {
                kill(&mut child);
                bail!("rsync {}: no data arrived through the proxy", v.label());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        child.kill()?;
        child.wait()?;
        drop(proxy);
        ensure!(
            temp.exists(),
            "the temp file went away with the killed process"
        );
        ensure!(
            !dest.path().join("big.bin").exists(),
            "final name after SIGKILL"
        );
        ensure!(
            partial_of(dest.path(), "big.bin").is_none(),
            "a SIGKILLed process cannot have moved its data aside"
        );
        let kept = fs::metadata(&temp)?.len() as usize;
        let full = fs::read(data.path().join("big.bin"))?;
        ensure!(
            full.starts_with(&fs::read(&temp)?),
            "temp data is not a prefix"
        );
        resume_and_check(
            &daemon.url("data/big.bin"),
            dest.path(),
            &data.path().join("big.bin"),
            kept,
        )
        .with_context(|| format!("rsync {}", v.label()))?;
        ensure!(!temp.exists(), "the stale temp file is still there");
        let left = list_tree(dest.path())?;
        assert_eq!(
            left,
            BTreeSet::from(["big.bin".to_string()]),
            "rsync {}",
            v.label()
        );
    }
    Ok(())
}

#[test]
fn compress_flags_negotiate_force_and_skip() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let dump: String = (0..40_000)
        .map(|i| format!("INSERT INTO t VALUES ({i},'name{}');\n", i % 31))
        .collect();
    fs::write(data.path().join("dump.sql"), &dump)?;
    fs::copy(
        data.path().join("dump.sql"),
        data.path().join("dump.sql.gz"),
    )?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let sql = daemon.url("data/dump.sql");
        let gz = daemon.url("data/dump.sql.gz");
        // (flags, source, expected algorithm)
        let cases: [(&[&str], &str, Option<&str>); 5] = [
            (&["-z"], &sql, Some("zstd")),
            (&["--compress-choice", "zlib"], &sql, Some("zlib")),
            (
                &["--compress-choice", "lz4", "--compress-level", "1"],
                &sql,
                Some("lz4"),
            ),
            // Already compressed by name: pulled as is.
            (&["-z"], &gz, None),
            (&["-z", "--skip-compress", ""], &gz, Some("zstd")),
        ];
        for (flags, url, algo) in cases {
            let cell = format!("rsync {}, {flags:?} {url}", v.label());
            let dest = tempfile::tempdir()?;
            let mut args = vec!["--json"];
            args.extend_from_slice(flags);
            args.extend([url, path_arg(dest.path())?]);
            let out = expect_exit(&mut fetch(&args), 0, Some(&daemon)).context(cell.clone())?;
            let json = out.json().context(cell.clone())?;
            assert_eq!(
                json["compression"],
                algo.map_or(Value::Null, Value::from),
                "{cell}: {json}"
            );
            let received = u64_field(&json, "bytes_received")?;
            if algo.is_some() {
                assert!(received * 4 < dump.len() as u64, "{cell}: {json}");
            } else {
                assert!(received > dump.len() as u64, "{cell}: {json}");
            }
            let name = url.rsplit('/').next().unwrap_or_default();
            assert_eq!(fs::read(dest.path().join(name))?, dump.as_bytes(), "{cell}");
        }
    }
    Ok(())
}
