use std::process::Output;

use super::*;
use crate::{compare_files, compare_trees, make_tree, require_rsync, set_mtime, write_random_file};

/// Run the rsync 3.5.0 client with `args` (and `RSYNC_PASSWORD` if given). `None` when the
/// client is unavailable and interop is not required.
fn client(args: &[&str], password: Option<&str>) -> anyhow::Result<Option<Output>> {
    let Some(bin) = require_rsync(RsyncVersion::V3_5_0) else {
        return Ok(None);
    };
    let mut cmd = Command::new(bin);
    cmd.args(["--contimeout=10", "--timeout=60"])
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RSYNC_PASSWORD")
        .env_remove("RSYNC_PROXY")
        .env_remove("RSYNC_CONNECT_PROG");
    if let Some(p) = password {
        cmd.env("RSYNC_PASSWORD", p);
    }
    Ok(Some(cmd.output()?))
}

fn check(out: &Output, daemon: &RsyncDaemon) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "rsync client failed ({}):\nstdout: {stdout}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    }
    Ok(stdout)
}

/// Versions whose daemon binary is available, if the 3.5.0 client is too.
fn versions() -> Vec<RsyncVersion> {
    if require_rsync(RsyncVersion::V3_5_0).is_none() {
        return Vec::new();
    }
    RsyncVersion::ALL
        .into_iter()
        .filter(|&v| require_rsync(v).is_some())
        .collect()
}

#[test]
fn lists_modules_with_comment_and_motd() -> anyhow::Result<()> {
    for v in versions() {
        let data = tempfile::tempdir()?;
        let daemon = DaemonBuilder::new(v)
            .motd("Welcome to the test daemon\n")
            .module(Module::new("data", data.path()).comment("test data"))
            .module(Module::new("other", data.path()))
            .start()?;
        assert_eq!(daemon.version(), v);
        assert_eq!(daemon.addr().port(), daemon.port());
        let Some(out) = client(&[&daemon.url("")], None)? else {
            return Ok(());
        };
        let listing = check(&out, &daemon)?;
        assert!(
            listing.contains("Welcome to the test daemon"),
            "{v:?}: {listing}"
        );
        let line = listing
            .lines()
            .find(|l| l.starts_with("data"))
            .unwrap_or_default();
        assert!(line.contains("test data"), "{v:?}: {listing}");
        assert!(
            listing.lines().any(|l| l.trim_end() == "other"),
            "{v:?}: {listing}"
        );
        assert!(daemon
            .log()
            .contains(&format!("rsyncd version {}", v.label())));
    }
    Ok(())
}

#[test]
fn pulls_a_file_with_archive_mode() -> anyhow::Result<()> {
    for v in versions() {
        let data = tempfile::tempdir()?;
        let src = data.path().join("big file.bin");
        write_random_file(&src, 3 << 20, 5)?;
        set_mtime(&src, 1_650_000_000)?;
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let dest = tempfile::tempdir()?;
        let dest_arg = format!("{}/", dest.path().display());
        let Some(out) = client(&["-a", &daemon.url("data/big file.bin"), &dest_arg], None)? else {
            return Ok(());
        };
        check(&out, &daemon)?;
        compare_files(&src, &dest.path().join("big file.bin"))?;
    }
    Ok(())
}

#[test]
fn pulls_a_tree_that_compares_equal() -> anyhow::Result<()> {
    for v in versions() {
        let data = tempfile::tempdir()?;
        make_tree(data.path(), 120, 11)?;
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let dest = tempfile::tempdir()?;
        let dest_arg = format!("{}/", dest.path().display());
        let Some(out) = client(&["-a", &daemon.url("data/"), &dest_arg], None)? else {
            return Ok(());
        };
        check(&out, &daemon)?;
        compare_trees(data.path(), dest.path())?;
    }
    Ok(())
}

#[test]
fn authenticates_with_secrets_file() -> anyhow::Result<()> {
    for v in versions() {
        let data = tempfile::tempdir()?;
        write_random_file(&data.path().join("f"), 10, 1)?;
        let module = Module::new("secret", data.path())
            .auth("alice", "correct horse")
            .auth("bob", "battery staple")
            .timeout(30);
        assert_eq!(module.auth_users.as_deref(), Some("alice, bob"));
        let daemon = DaemonBuilder::new(v).module(module).start()?;
        let dest = tempfile::tempdir()?;
        let dest_arg = format!("{}/", dest.path().display());
        let alice = format!("rsync://alice@127.0.0.1:{}/secret/f", daemon.port());
        let Some(out) = client(&["-a", &alice, &dest_arg], Some("correct horse"))? else {
            return Ok(());
        };
        check(&out, &daemon)?;
        compare_files(&data.path().join("f"), &dest.path().join("f"))?;

        let bob = format!("rsync://bob@127.0.0.1:{}/secret/f", daemon.port());
        let Some(out) = client(&["-a", &bob, &dest_arg], Some("wrong"))? else {
            return Ok(());
        };
        assert!(!out.status.success(), "{v:?}: wrong password accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("auth failed"), "{v:?}: {stderr}");
    }
    Ok(())
}

#[test]
fn drop_kills_the_daemon() -> anyhow::Result<()> {
    for v in versions() {
        let data = tempfile::tempdir()?;
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let pid = daemon.child.id();
        let dir = daemon.dir().to_path_buf();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(daemon);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{v:?}: pid {pid} alive"
        );
        assert!(!dir.exists(), "{v:?}: {} left behind", dir.display());
    }
    Ok(())
}

#[test]
fn writes_secrets_file_with_mode_0600() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let builder = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .global("max connections = 0")
        .module(
            Module::new("m", dir.path())
                .auth("alice", "pw")
                .extra("list = no"),
        );
    let conf = fs::read_to_string(builder.write_files(dir.path())?)?;
    assert!(conf.contains("[m]\n"), "{conf}");
    assert!(conf.contains("auth users = alice\n"), "{conf}");
    assert!(conf.contains("read only = yes\n"), "{conf}");
    assert!(conf.contains("list = no\n"), "{conf}");
    assert!(conf.contains("max connections = 0\n"), "{conf}");
    let secrets = dir.path().join("module-0.secrets");
    assert_eq!(fs::read_to_string(&secrets)?, "alice:pw\n");
    assert_eq!(fs::metadata(&secrets)?.permissions().mode() & 0o777, 0o600);
    Ok(())
}

#[test]
fn rejects_config_injection() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = [
        DaemonBuilder::new(RsyncVersion::V3_5_0).module(Module::new("a]b", dir.path())),
        DaemonBuilder::new(RsyncVersion::V3_5_0)
            .module(Module::new("m", dir.path()).comment("x\n[evil]")),
        DaemonBuilder::new(RsyncVersion::V3_5_0).global("a = b\nc = d"),
    ];
    for (i, b) in bad.iter().enumerate() {
        let out = tempfile::tempdir()?;
        assert!(b.write_files(out.path()).is_err(), "case {i} accepted");
    }
    Ok(())
}

#[test]
fn readiness_probe_reports_early_exit() -> anyhow::Result<()> {
    let port = free_port()?;
    let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn()?;
    match wait_ready(
        &mut child,
        Ipv4Addr::LOCALHOST,
        port,
        Duration::from_secs(5),
    ) {
        Err(Unready::Exited(status)) => assert_eq!(status.code(), Some(3)),
        other => panic!("expected Exited, got {other:?}"),
    }
    Ok(())
}

#[test]
fn readiness_probe_rejects_a_server_that_is_not_rsync() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.write_all(b"SSH-2.0-OpenSSH\r\n")
    });
    let mut child = Command::new("sleep").arg("30").spawn()?;
    let result = wait_ready(
        &mut child,
        Ipv4Addr::LOCALHOST,
        port,
        Duration::from_secs(5),
    );
    child.kill()?;
    child.wait()?;
    assert!(matches!(result, Err(Unready::NotRsync(_))), "{result:?}");
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(())
}

#[test]
fn readiness_probe_times_out_when_nothing_listens() -> anyhow::Result<()> {
    let port = free_port()?;
    let mut child = Command::new("sleep").arg("30").spawn()?;
    let started = Instant::now();
    let result = wait_ready(
        &mut child,
        Ipv4Addr::LOCALHOST,
        port,
        Duration::from_millis(300),
    );
    child.kill()?;
    child.wait()?;
    assert!(matches!(result, Err(Unready::TimedOut)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    Ok(())
}
