//! Pulls over TLS (feature `tls`) from stock rsync daemons (Debian's 3.5.0 and 3.2.7) behind a
//! real stunnel (Debian's `stunnel4`), as rsyncd.conf(5) "SSL/TLS Daemon Setup" lays it out,
//! on loopback ports picked at run time, with a test CA and certificates made here (rcgen).
//! A missing rsync or stunnel skips, or fails when `UBACKUP_INTEROP=required`.
//!
//! * whole-file, delta and compressed pulls arrive byte-identical;
//! * mutual TLS (stunnel `verify = 2`): the right client certificate pulls, none or a foreign
//!   one is refused with a typed error;
//! * refusals, each typed and with nothing written under the destination: wrong CA, name
//!   mismatch, expired certificate, TLS to a plain port, plain to a TLS port, a peer that
//!   stalls in the handshake;
//! * a second connection with the same connector resumes its TLS 1.3 session;
//! * the greeting cache keeps a known daemon at one round trip less over TLS;
//! * the client turns of a small pull through a 25 ms WAN relay, with and without TLS 1.3
//!   resumption (BENCHMARKS.md).
//!
//! Alone: `cargo test --release -p rsync-proto --features tls --test tls` (the workspace
//! build has the feature on: ubackup-puller enables it).

mod common;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use common::{versions, KIB, MIB};
use rsync_proto::client::{
    pull, Compress, Error, FsSink, GreetingCache, PullOptions, PullReport, Source, TlsConnector,
    TlsError, TlsOptions, TLS_PORT,
};
use ubackup_testkit::{
    compare_files, list_tree, require_stunnel, write_random_file, DaemonBuilder, Module, Relay,
    RelayConfig, RsyncDaemon, RsyncVersion, Stunnel, TestCa, Usage,
};

const FILE: &str = "dump.sql";

/// A daemon with a module `data` holding [`FILE`] behind stunnel, and the PKI around it.
struct Fixture {
    src: tempfile::TempDir,
    certs: tempfile::TempDir,
    ca: TestCa,
    ca_file: PathBuf,
    daemon: RsyncDaemon,
    stunnel: Stunnel,
}

impl Fixture {
    /// Starts the daemon and stunnel; with `client_ca`, stunnel requires client certificates
    /// signed by it. The server certificate names 127.0.0.1 (an IP SAN) and localhost.
    fn start(v: RsyncVersion, size: u64, mutual: bool) -> anyhow::Result<Fixture> {
        Fixture::start_with(v, size, mutual, |ca| {
            ca.issue(&["127.0.0.1", "localhost"], Usage::Server)
        })
    }

    fn start_with(
        v: RsyncVersion,
        size: u64,
        mutual: bool,
        server_cert: impl FnOnce(&TestCa) -> anyhow::Result<ubackup_testkit::Issued>,
    ) -> anyhow::Result<Fixture> {
        let src = tempfile::tempdir()?;
        write_random_file(&src.path().join(FILE), size, 24)?;
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", src.path()))
            .start()?;
        let ca = TestCa::new("ubackup test CA")?;
        let certs = tempfile::tempdir()?;
        let ca_file = certs.path().join("ca.crt");
        ca.write(&ca_file)?;
        let stunnel = Stunnel::start(
            daemon.addr(),
            &server_cert(&ca)?,
            if mutual { Some(&ca) } else { None },
        )?;
        Ok(Fixture {
            src,
            certs,
            ca,
            ca_file,
            daemon,
            stunnel,
        })
    }

    /// `rsyncs://127.0.0.1:PORT/data/PATH` through stunnel.
    fn source(&self, path: &str) -> anyhow::Result<Source> {
        let url = format!("rsyncs://127.0.0.1:{}/data/{path}", self.stunnel.port());
        Ok(Source::parse_tls(&url, TLS_PORT)?)
    }

    fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: Some(self.ca_file.clone()),
            ..TlsOptions::default()
        }
    }

    /// A client certificate issued by `ca`, written under the cert dir as `name`.
    fn client_identity(&self, ca: &TestCa, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        ca.issue(&["node1.backup.example"], Usage::Client)?
            .write(self.certs.path(), name)
    }
}

fn options(tls: TlsConnector) -> PullOptions {
    PullOptions {
        timeout: Some(Duration::from_secs(20)),
        tls: Some(tls),
        ..PullOptions::default()
    }
}

async fn pull_into(source: &Source, opts: &PullOptions, dest: &Path) -> Result<PullReport, Error> {
    let mut sink = FsSink::new(dest).map_err(Error::Sink)?;
    pull(source, opts, &mut sink).await
}

/// Nothing at all under `dest`: no file, no temp file, no partial directory.
fn assert_empty(dest: &Path, what: &str) -> anyhow::Result<()> {
    let entries = list_tree(dest)?;
    ensure!(
        entries.is_empty(),
        "{what}: written under the destination: {entries:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_file_delta_and_compressed_pulls_over_tls_are_byte_identical() -> anyhow::Result<()> {
    if require_stunnel().is_none() {
        return Ok(());
    }
    for v in versions() {
        let fx = Fixture::start(v, 2 * MIB, false)?;
        let tls = TlsConnector::new(&fx.tls_options())?;
        let source = fx.source(FILE)?;
        let want = fx.src.path().join(FILE);

        // Whole file.
        let dest = tempfile::tempdir()?;
        let opts = options(tls.clone());
        let report = pull_into(&source, &opts, dest.path())
            .await
            .with_context(|| {
                format!("{v:?}: whole-file pull; stunnel log:\n{}", fx.stunnel.log())
            })?;
        compare_files(&want, &dest.path().join(FILE))?;
        let session = report
            .tls
            .as_ref()
            .context("no TLS session in the report")?;
        assert_eq!(session.version, "TLSv1.3", "{v:?}: {session:?}");
        assert_eq!(report.basis_files, 0);

        // Delta: 64 KiB changed in the middle, the rest matched against the old copy.
        let mut data = fs::read(&want)?;
        for b in &mut data[MIB as usize..(MIB + 64 * KIB) as usize] {
            *b ^= 0x5a;
        }
        fs::write(&want, &data)?;
        ubackup_testkit::set_mtime(&want, 1_700_000_000)?;
        let report = pull_into(&source, &opts, dest.path())
            .await
            .with_context(|| format!("{v:?}: delta pull"))?;
        compare_files(&want, &dest.path().join(FILE))?;
        assert_eq!(report.basis_files, 1, "{v:?}: pulled against the old copy");
        assert!(
            report.stats.matched_bytes >= MIB,
            "{v:?}: {:?}",
            report.stats
        );

        // Compressed, into a fresh destination.
        let dest = tempfile::tempdir()?;
        let opts = PullOptions {
            compress: Some(Compress::default()),
            ..options(tls.clone())
        };
        let report = pull_into(&source, &opts, dest.path())
            .await
            .with_context(|| format!("{v:?}: compressed pull"))?;
        compare_files(&want, &dest.path().join(FILE))?;
        assert!(
            report.session.and_then(|s| s.compression).is_some(),
            "{v:?}: compression negotiated"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_pulls_with_the_client_certificate_and_is_refused_without() -> anyhow::Result<()>
{
    if require_stunnel().is_none() {
        return Ok(());
    }
    let Some(&v) = versions().first() else {
        return Ok(());
    };
    let fx = Fixture::start(v, 256 * KIB, true)?;
    let source = fx.source(FILE)?;

    let (cert, key) = fx.client_identity(&fx.ca, "node")?;
    let tls = TlsConnector::new(&TlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..fx.tls_options()
    })?;
    let dest = tempfile::tempdir()?;
    pull_into(&source, &options(tls), dest.path())
        .await
        .with_context(|| {
            format!(
                "pull with the client certificate; stunnel:\n{}",
                fx.stunnel.log()
            )
        })?;
    compare_files(&fx.src.path().join(FILE), &dest.path().join(FILE))?;

    let other = TestCa::new("another CA")?;
    let (cert, key) = fx.client_identity(&other, "stranger")?;
    let foreign = TlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..fx.tls_options()
    };
    for (what, opts) in [
        ("no client certificate", fx.tls_options()),
        ("a foreign client certificate", foreign),
    ] {
        let dest = tempfile::tempdir()?;
        let r = pull_into(&source, &options(TlsConnector::new(&opts)?), dest.path()).await;
        match r {
            Err(Error::Tls(TlsError::ClientCertificateRefused { .. })) => {}
            other => panic!("{what}: {other:?}; stunnel:\n{}", fx.stunnel.log()),
        }
        assert_empty(dest.path(), what)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_and_write_nothing() -> anyhow::Result<()> {
    if require_stunnel().is_none() {
        return Ok(());
    }
    let Some(&v) = versions().first() else {
        return Ok(());
    };
    let fx = Fixture::start(v, 64 * KIB, false)?;
    let source = fx.source(FILE)?;

    // A CA that did not sign the server's certificate.
    let wrong_ca = fx.certs.path().join("wrong-ca.crt");
    TestCa::new("not the server's CA")?.write(&wrong_ca)?;
    let dest = tempfile::tempdir()?;
    let tls = TlsConnector::new(&TlsOptions {
        ca_file: Some(wrong_ca),
        ..TlsOptions::default()
    })?;
    let r = pull_into(&source, &options(tls), dest.path()).await;
    assert!(
        matches!(r, Err(Error::Tls(TlsError::UnknownCa { .. }))),
        "wrong CA: {r:?}"
    );
    assert_empty(dest.path(), "wrong CA")?;
    // Only the explicit insecure option gets past it (with a warning in the log).
    let insecure = TlsConnector::new(&TlsOptions {
        insecure_skip_verify: true,
        ..TlsOptions::default()
    })?;
    pull_into(&source, &options(insecure), dest.path())
        .await
        .context("pull without verification")?;
    compare_files(&fx.src.path().join(FILE), &dest.path().join(FILE))?;

    // A certificate for another name.
    let other = Fixture::start_with(v, 1024, false, |ca| {
        ca.issue(&["db7.example"], Usage::Server)
    })?;
    let dest = tempfile::tempdir()?;
    let r = pull_into(
        &other.source(FILE)?,
        &options(TlsConnector::new(&other.tls_options())?),
        dest.path(),
    )
    .await;
    match &r {
        Err(Error::Tls(TlsError::NameMismatch { server, .. })) => assert_eq!(server, "127.0.0.1"),
        _ => panic!("name mismatch: {r:?}"),
    }
    assert_empty(dest.path(), "name mismatch")?;
    // The same certificate passes when the name it holds is the one asked for.
    let named = TlsConnector::new(&TlsOptions {
        server_name: Some("db7.example".into()),
        ..other.tls_options()
    })?;
    pull_into(&other.source(FILE)?, &options(named), dest.path())
        .await
        .context("pull with the configured server name")?;
    drop(other);

    // An expired certificate.
    let expired = Fixture::start_with(v, 1024, false, |ca| {
        ca.issue_expired(&["127.0.0.1"], Usage::Server)
    })?;
    let dest = tempfile::tempdir()?;
    let r = pull_into(
        &expired.source(FILE)?,
        &options(TlsConnector::new(&expired.tls_options())?),
        dest.path(),
    )
    .await;
    assert!(
        matches!(r, Err(Error::Tls(TlsError::Expired { .. }))),
        "expired: {r:?}"
    );
    assert_empty(dest.path(), "expired")?;
    drop(expired);

    // TLS to the daemon's plain port.
    let plain: Source = fx.daemon.url(&format!("data/{FILE}")).parse()?;
    let dest = tempfile::tempdir()?;
    let r = pull_into(
        &plain,
        &options(TlsConnector::new(&fx.tls_options())?),
        dest.path(),
    )
    .await;
    assert!(
        matches!(r, Err(Error::Tls(TlsError::PlainDaemon { .. }))),
        "TLS to plain: {r:?}"
    );
    assert_empty(dest.path(), "TLS to a plain port")?;

    // Plain to the TLS port.
    let dest = tempfile::tempdir()?;
    let plain_opts = PullOptions {
        timeout: Some(Duration::from_secs(10)),
        ..PullOptions::default()
    };
    let r = pull_into(&source, &plain_opts, dest.path()).await;
    assert!(
        matches!(r, Err(Error::TlsPort { .. })),
        "plain to TLS: {r:?}"
    );
    assert_empty(dest.path(), "plain to a TLS port")?;

    // A peer that accepts and never answers.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let holder = std::thread::spawn(move || {
        let held = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(held);
    });
    let stall = Source::parse_tls(&format!("rsyncs://127.0.0.1:{port}/data/{FILE}"), TLS_PORT)?;
    let tls = TlsConnector::new(&TlsOptions {
        handshake_timeout: Some(Duration::from_millis(500)),
        ..fx.tls_options()
    })?;
    let dest = tempfile::tempdir()?;
    let t0 = Instant::now();
    let r = pull_into(&stall, &options(tls), dest.path()).await;
    assert!(
        matches!(r, Err(Error::Tls(TlsError::HandshakeTimeout { .. }))),
        "stalled handshake: {r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_empty(dest.path(), "stalled handshake")?;
    let _ = holder.join();
    Ok(())
}

/// One connector for every pull: the first connection makes a full handshake, the next ones
/// resume with the ticket it got (no certificate exchange). Prints the handshake times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_resumes_the_tls_session() -> anyhow::Result<()> {
    if require_stunnel().is_none() {
        return Ok(());
    }
    let Some(&v) = versions().first() else {
        return Ok(());
    };
    let fx = Fixture::start(v, 4 * KIB, false)?;
    let source = fx.source(FILE)?;
    let shared = TlsConnector::new(&fx.tls_options())?;
    let mut full = Vec::new();
    let mut resumed = Vec::new();
    for round in 0..20 {
        // Every other pull with a fresh connector: a full handshake each time.
        let (tls, fresh) = if round % 2 == 0 {
            (TlsConnector::new(&fx.tls_options())?, true)
        } else {
            (shared.clone(), false)
        };
        let dest = tempfile::tempdir()?;
        let report = pull_into(&source, &options(tls), dest.path()).await?;
        compare_files(&fx.src.path().join(FILE), &dest.path().join(FILE))?;
        let s = report.tls.context("no TLS session")?;
        let first_shared = round == 1;
        if fresh || first_shared {
            assert!(!s.resumed, "round {round}: {s:?}");
            full.push(s.handshake_time);
        } else {
            assert!(
                s.resumed,
                "round {round}: the shared connector resumed: {s:?}"
            );
            resumed.push(s.handshake_time);
        }
    }
    full.sort();
    resumed.sort();
    eprintln!(
        "TLS handshake on loopback (stunnel, rsync {}): median full {:?} (of {}), median resumed {:?} (of {})",
        v.label(),
        full[full.len() / 2],
        full.len(),
        resumed[resumed.len() / 2],
        resumed.len()
    );
    Ok(())
}

/// The greeting cache over TLS: with the daemon's greeting known, a pull waits for the TLS
/// handshake, the file list and the data: three waits (four without the cache). The relay
/// counts one more client turn at the end: the TLS close_notify the client sends after the
/// last data (bytes after hearing from the server, though it waits for nothing after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_greeting_cache_saves_a_round_trip_over_tls() -> anyhow::Result<()> {
    if require_stunnel().is_none() {
        return Ok(());
    }
    let Some(&v) = versions().first() else {
        return Ok(());
    };
    let fx = Fixture::start(v, 64 * KIB, false)?;
    let relay = Relay::start(
        fx.stunnel.addr(),
        RelayConfig::wan(Duration::from_millis(10)),
    )?;
    let url = format!("rsyncs://127.0.0.1:{}/data/{FILE}", relay.addr().port());
    let source = Source::parse_tls(&url, TLS_PORT)?;
    let cache = GreetingCache::new();
    let opts = PullOptions {
        early_end: true,
        greetings: Some(cache.clone()),
        ..options(TlsConnector::new(&fx.tls_options())?)
    };
    let mut turns = Vec::new();
    for round in 0..3 {
        let dest = tempfile::tempdir()?;
        pull_into(&source, &opts, dest.path())
            .await
            .with_context(|| format!("pull {round}"))?;
        compare_files(&fx.src.path().join(FILE), &dest.path().join(FILE))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while relay.stats().finished.len() <= round && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = relay.stats();
        let st = stats
            .finished
            .get(round)
            .context("relay saw no connection")?;
        turns.push(st.client_turns);
    }
    eprintln!("client turns over TLS: {turns:?} (first: unknown greeting)");
    assert_eq!(cache.len(), 1, "the daemon's greeting is kept");
    assert!(turns[0] <= 5, "first pull {turns:?}");
    assert!(
        turns[1] <= 4 && turns[2] <= 4,
        "with the greeting known {turns:?}"
    );
    assert!(turns[1] < turns[0], "the cache saves a turn {turns:?}");
    Ok(())
}

/// Issue 24's WAN figure (BENCHMARKS.md): the client turns of a small pull through the relay
/// at 25 ms each way, the TLS handshake included, with a fresh connector for every pull (a
/// full handshake) and with one shared connector (TLS 1.3 resumption), each with and without
/// the greeting cache; plain pulls from the same daemon for comparison. Each case pulls once
/// to warm its caches, then once counted. Turns are counts, not timings; the wall times are
/// printed only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_turns_over_a_25ms_wan_with_and_without_resumption() -> anyhow::Result<()> {
    if require_stunnel().is_none() {
        return Ok(());
    }
    let Some(&v) = versions().first() else {
        return Ok(());
    };
    let fx = Fixture::start(v, 64 * KIB, false)?;
    let wan = RelayConfig::wan(Duration::from_millis(25));
    let tls_relay = Relay::start(fx.stunnel.addr(), wan.clone())?;
    let plain_relay = Relay::start(fx.daemon.addr(), wan)?;
    let tls_url = format!("rsyncs://127.0.0.1:{}/data/{FILE}", tls_relay.addr().port());
    let plain_url = format!(
        "rsync://127.0.0.1:{}/data/{FILE}",
        plain_relay.addr().port()
    );
    let shared = TlsConnector::new(&fx.tls_options())?;
    let mut rows = Vec::new();
    for (case, tls, resume, cached) in [
        ("plain", false, false, false),
        ("plain, greeting cache", false, false, true),
        ("TLS, full handshake", true, false, false),
        ("TLS, full handshake, greeting cache", true, false, true),
        ("TLS, resumed", true, true, false),
        ("TLS, resumed, greeting cache", true, true, true),
    ] {
        let (relay, source) = if tls {
            (&tls_relay, Source::parse_tls(&tls_url, TLS_PORT)?)
        } else {
            (&plain_relay, plain_url.parse::<Source>()?)
        };
        let cache = GreetingCache::new();
        let mut last = (0, Duration::ZERO, false);
        for _ in 0..2 {
            let opts = PullOptions {
                timeout: Some(Duration::from_secs(20)),
                early_end: true,
                greetings: cached.then(|| cache.clone()),
                tls: match (tls, resume) {
                    (false, _) => None,
                    (true, true) => Some(shared.clone()),
                    (true, false) => Some(TlsConnector::new(&fx.tls_options())?),
                },
                ..PullOptions::default()
            };
            let seen = relay.stats().finished.len();
            let dest = tempfile::tempdir()?;
            let started = Instant::now();
            let report = pull_into(&source, &opts, dest.path())
                .await
                .with_context(|| case.to_string())?;
            let wall = started.elapsed();
            compare_files(&fx.src.path().join(FILE), &dest.path().join(FILE))?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while relay.stats().finished.len() <= seen && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let stats = relay.stats();
            let st = stats
                .finished
                .get(seen)
                .context("relay saw no connection")?;
            last = (
                st.client_turns,
                wall,
                report.tls.as_ref().is_some_and(|s| s.resumed),
            );
        }
        eprintln!(
            "{case:<40} client turns {} wall {:?} resumed {}",
            last.0, last.1, last.2
        );
        assert_eq!(last.2, resume, "{case}: resumed as expected");
        rows.push((case, last.0));
    }
    let turns = |case: &str| rows.iter().find(|r| r.0 == case).map(|r| r.1);
    // TLS 1.3 resumption is one round trip, like the full handshake: it saves the
    // certificate and its checks, not a turn.
    assert_eq!(
        turns("TLS, resumed, greeting cache"),
        turns("TLS, full handshake, greeting cache")
    );
    // Over TLS a pull waits one round trip more than plain: the handshake. The relay counts
    // one more turn besides, the close_notify the client sends after the last byte, which
    // waits for nothing (plain TCP closes with a FIN, which carries no bytes to count).
    assert_eq!(
        turns("TLS, resumed, greeting cache"),
        turns("plain, greeting cache").map(|t| t + 2)
    );
    Ok(())
}
