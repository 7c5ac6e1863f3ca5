//! `ubackup-puller fetch` over TLS, run as a process, like rsync-ssl: a stock rsync daemon
//! behind a real stunnel (Debian's `stunnel4`) requiring client certificates, reached with
//! `rsyncs://` and with `--tls HOST::MODULE`, the certificates given in rsync-ssl's
//! `RSYNC_SSL_*` variables or in `--tls-*` flags (which win). A wrong CA writes nothing.
//!
//! A missing rsync or stunnel skips, or fails when `UBACKUP_INTEROP=required`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{ensure, Context as _};
use ubackup_testkit::{
    compare_files, list_tree, require_rsync, require_stunnel, write_random_file, DaemonBuilder,
    Module, RsyncVersion, Stunnel, TestCa, Usage,
};

const SSL_VARS: [&str; 4] = [
    "RSYNC_SSL_CA_CERT",
    "RSYNC_SSL_CERT",
    "RSYNC_SSL_KEY",
    "RSYNC_SSL_PORT",
];

/// `ubackup-puller fetch ARGS` with no RSYNC_SSL_* or password inherited.
fn fetch(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ubackup-puller"));
    cmd.arg("fetch")
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RSYNC_PASSWORD")
        .env_remove("UBACKUP_LOG");
    for v in SSL_VARS {
        cmd.env_remove(v);
    }
    cmd
}

fn run(cmd: &mut Command, code: i32) -> anyhow::Result<Output> {
    let out = cmd.output().context("running ubackup-puller")?;
    ensure!(
        out.status.code() == Some(code),
        "expected exit {code}, got {:?}: {cmd:?}\n--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

fn s(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 temp path")
}

#[test]
fn fetch_pulls_over_tls_like_rsync_ssl() -> anyhow::Result<()> {
    if require_stunnel().is_none() || require_rsync(RsyncVersion::V3_5_0).is_none() {
        return Ok(());
    }
    let src = tempfile::tempdir()?;
    write_random_file(&src.path().join("dump.sql"), 300 * 1024, 7)?;
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("data", src.path()))
        .start()?;
    let ca = TestCa::new("fleet CA")?;
    let stunnel = Stunnel::start(
        daemon.addr(),
        &ca.issue(&["127.0.0.1"], Usage::Server)?,
        Some(&ca),
    )?;
    let pki = tempfile::tempdir()?;
    let ca_file = pki.path().join("ca.crt");
    ca.write(&ca_file)?;
    let (cert, key) = ca
        .issue(&["node1.example"], Usage::Client)?
        .write(pki.path(), "node1")?;
    let wrong_ca = pki.path().join("wrong.crt");
    TestCa::new("someone else")?.write(&wrong_ca)?;
    let port = stunnel.port().to_string();
    let want = src.path().join("dump.sql");

    // rsyncs:// with everything from rsync-ssl's variables.
    let dest = tempfile::tempdir()?;
    let url = format!("rsyncs://127.0.0.1:{port}/data/dump.sql");
    let mut cmd = fetch(&[&url, s(dest.path())?]);
    cmd.env("RSYNC_SSL_CA_CERT", &ca_file)
        .env("RSYNC_SSL_CERT", &cert)
        .env("RSYNC_SSL_KEY", &key);
    run(&mut cmd, 0).with_context(|| stunnel.log())?;
    compare_files(&want, &dest.path().join("dump.sql"))?;

    // --tls HOST::MODULE on RSYNC_SSL_PORT, the certificates from flags.
    let dest = tempfile::tempdir()?;
    let mut cmd = fetch(&[
        "--tls",
        "--tls-ca",
        s(&ca_file)?,
        "--tls-cert",
        s(&cert)?,
        "--tls-key",
        s(&key)?,
        "127.0.0.1::data/dump.sql",
        s(dest.path())?,
    ]);
    cmd.env("RSYNC_SSL_PORT", &port);
    run(&mut cmd, 0)?;
    compare_files(&want, &dest.path().join("dump.sql"))?;

    // A wrong CA in the flag beats the right one in the environment: refused, nothing
    // written.
    let dest = tempfile::tempdir()?;
    let mut cmd = fetch(&["--tls-ca", s(&wrong_ca)?, &url, s(dest.path())?]);
    cmd.env("RSYNC_SSL_CA_CERT", &ca_file)
        .env("RSYNC_SSL_CERT", &cert)
        .env("RSYNC_SSL_KEY", &key);
    let out = run(&mut cmd, 5)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.contains("not signed by a trusted CA"), "{stderr}");
    ensure!(
        list_tree(dest.path())?.is_empty(),
        "wrote under the destination"
    );

    // No client certificate: the daemon's stunnel refuses.
    let dest = tempfile::tempdir()?;
    let mut cmd = fetch(&[&url, s(dest.path())?]);
    cmd.env("RSYNC_SSL_CA_CERT", &ca_file);
    let out = run(&mut cmd, 5)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("refused our client certificate"),
        "{stderr}"
    );
    ensure!(
        list_tree(dest.path())?.is_empty(),
        "wrote under the destination"
    );

    // A plain fetch of the TLS port says what it found.
    let dest = tempfile::tempdir()?;
    let plain = format!("rsync://127.0.0.1:{port}/data/dump.sql");
    let out = run(&mut fetch(&[&plain, s(dest.path())?]), 5)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.contains("it is a TLS port"), "{stderr}");
    Ok(())
}
