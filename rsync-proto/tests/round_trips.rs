//! Round trips of a small pull over a simulated WAN: our client against the stock rsync
//! client, through the same relay (25 ms each way) to the same real daemon (3.5.0 and
//! 3.2.7), with protocols 30, 31 and 32 announced. The relay counts the client's turns: how
//! many times it sent again after hearing from the daemon, i.e. waited for it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use rsync_proto::client::{pull, FsSink, GreetingCache, PullOptions, Source};
use rsync_proto::ProtocolVersion;
use ubackup_testkit::relay::{ConnStats, Relay, RelayConfig};
use ubackup_testkit::{
    compare_files, require_rsync, write_random_file, DaemonBuilder, Module, RsyncVersion,
};

use common::{cell, versions, KIB};

const DELAY: Duration = Duration::from_millis(25);

/// The one connection the relay carried since `before` connections, once it closed.
fn last_conn(relay: &Relay, before: usize) -> anyhow::Result<ConnStats> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = relay.stats();
        if st.finished.len() > before {
            return Ok(st.finished[before]);
        }
        ensure!(
            Instant::now() < deadline,
            "relay never saw the connection end"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_pull_waits_no_more_often_than_stock_rsync() -> anyhow::Result<()> {
    let Some(stock_client) = require_rsync(RsyncVersion::V3_5_0) else {
        return Ok(());
    };
    for v in versions() {
        let src = tempfile::tempdir()?;
        write_random_file(&src.path().join("dump.rdb"), 64 * KIB, 17)?;
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", src.path()))
            .start()?;
        let relay = Relay::start(daemon.addr(), RelayConfig::wan(DELAY))?;
        let url = format!("rsync://127.0.0.1:{}/data/dump.rdb", relay.addr().port());

        // Stock rsync, as UBackup runs it (one process per job).
        let dest = tempfile::tempdir()?;
        let t0 = Instant::now();
        let out = Command::new(&stock_client)
            .arg("-t")
            .arg(&url)
            .arg(dest.path())
            .output()
            .context("running stock rsync")?;
        let stock_wall = t0.elapsed();
        ensure!(
            out.status.success(),
            "stock rsync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        compare_files(&src.path().join("dump.rdb"), &dest.path().join("dump.rdb"))?;
        let stock = last_conn(&relay, 0)?;

        for (i, p) in [
            ProtocolVersion::V30,
            ProtocolVersion::V31,
            ProtocolVersion::V32,
        ]
        .into_iter()
        .enumerate()
        {
            let c = cell(v, p);
            let dest = tempfile::tempdir()?;
            let opts = PullOptions {
                protocol: p,
                timeout: Some(Duration::from_secs(30)),
                early_end: true,
                ..PullOptions::default()
            };
            let source: Source = url.parse()?;
            let mut sink = FsSink::new(dest.path())?;
            let t0 = Instant::now();
            pull(&source, &opts, &mut sink)
                .await
                .with_context(|| format!("{c}: pull through the relay"))?;
            let ours_wall = t0.elapsed();
            compare_files(&src.path().join("dump.rdb"), &dest.path().join("dump.rdb"))?;
            let ours = last_conn(&relay, i + 1)?;
            eprintln!(
                "{c}: client turns ours {} / stock {}; wall ours {ours_wall:?} / stock \
                 {stock_wall:?} (25 ms each way)",
                ours.client_turns, stock.client_turns
            );
            assert!(
                ours.client_turns <= stock.client_turns,
                "{c}: we waited {} times for the daemon, stock rsync {}",
                ours.client_turns,
                stock.client_turns
            );
            // The file list, then the file data and the end of the run together (the redo
            // phase ends with the request, docs/design/rsync-proto.md), then the goodbye,
            // which waits for nothing.
            assert!(
                ours.client_turns <= 3,
                "{c}: {} turns: {ours:?}",
                ours.client_turns
            );
        }
    }
    Ok(())
}

/// A process that pulls from the same daemons again (a node, every hour) keeps their
/// greetings ([`GreetingCache`]): the next pull sends everything up to the file list with
/// its own greeting, and waits twice: for the file list, and for the file data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_daemon_costs_one_round_trip_less() -> anyhow::Result<()> {
    for v in versions() {
        let src = tempfile::tempdir()?;
        write_random_file(&src.path().join("dump.rdb"), 64 * KIB, 18)?;
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", src.path()))
            .start()?;
        let relay = Relay::start(daemon.addr(), RelayConfig::wan(DELAY))?;
        let url = format!("rsync://127.0.0.1:{}/data/dump.rdb", relay.addr().port());
        let source: Source = url.parse()?;
        let mut conns = 0;
        for p in [
            ProtocolVersion::V30,
            ProtocolVersion::V31,
            ProtocolVersion::V32,
        ] {
            let c = cell(v, p);
            let cache = GreetingCache::new();
            let opts = PullOptions {
                protocol: p,
                timeout: Some(Duration::from_secs(30)),
                early_end: true,
                greetings: Some(cache.clone()),
                ..PullOptions::default()
            };
            let mut turns = Vec::new();
            for round in 0..2 {
                let dest = tempfile::tempdir()?;
                let mut sink = FsSink::new(dest.path())?;
                let t0 = Instant::now();
                let report = pull(&source, &opts, &mut sink)
                    .await
                    .with_context(|| format!("{c}: pull {round}"))?;
                let wall = t0.elapsed();
                compare_files(&src.path().join("dump.rdb"), &dest.path().join("dump.rdb"))?;
                ensure!(report.greeting.is_some(), "{c}: no greeting in the report");
                let st = last_conn(&relay, conns)?;
                conns += 1;
                eprintln!(
                    "{c}: pull {round}: {} client turns, {wall:?}",
                    st.client_turns
                );
                turns.push(st.client_turns);
            }
            assert_eq!(cache.len(), 1, "{c}: the daemon's greeting is kept");
            assert!(turns[0] <= 3, "{c}: first pull {turns:?}");
            assert!(turns[1] <= 2, "{c}: with the greeting known {turns:?}");
        }
        // A daemon that greets otherwise than remembered (as after a downgrade): one more
        // connection, the pull succeeds, and the cache has the real greeting.
        let cache = GreetingCache::new();
        cache.insert(
            &source.authority(),
            rsync_proto::daemon::Greeting::parse("@RSYNCD: 31.0").expect("greeting"),
        );
        let opts = PullOptions {
            timeout: Some(Duration::from_secs(30)),
            greetings: Some(cache.clone()),
            ..PullOptions::default()
        };
        let dest = tempfile::tempdir()?;
        let mut sink = FsSink::new(dest.path())?;
        let before = relay.stats().finished.len();
        pull(&source, &opts, &mut sink)
            .await
            .with_context(|| format!("{v:?}: pull with a stale greeting"))?;
        compare_files(&src.path().join("dump.rdb"), &dest.path().join("dump.rdb"))?;
        let _ = last_conn(&relay, before + 1)?;
        assert_eq!(relay.stats().finished.len(), before + 2, "{v:?}: one retry");
        let now = cache.get(&source.authority()).expect("kept");
        assert_eq!(now.protocol, 32, "{v:?}");
        assert!(now.digests.is_some(), "{v:?}");
    }
    Ok(())
}
