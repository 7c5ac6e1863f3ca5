//! The whole system from real processes: two database hosts with their agents, two nodes, the
//! indexer on SQLite, a restore. Proves that the parts fit together: every backup cataloged
//! exactly once, `script_error` and `overdue` open and resolve, the latest chain restored
//! byte-identical, and every process exits cleanly on SIGTERM.

use std::time::Duration;

use ubackup_e2e::scenario;
use ubackup_e2e::{Fleet, FleetOptions};

#[test]
fn the_whole_system_backs_up_alerts_and_restores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A missing redis-server or rsync is a skip locally and a failure in CI.
    let Some(opts) = FleetOptions::for_tests(tmp.path(), 2, 2) else {
        return;
    };
    let mut fleet = Fleet::start(opts).expect("start the fleet");
    let mut lines = Vec::new();
    let result = scenario::run(&mut fleet, &mut |l| lines.push(l.to_owned()));
    let summary = match result {
        Ok(s) => s,
        Err(e) => panic!(
            "{e:#}\n--- walk so far:\n{}\n{}",
            lines.join("\n"),
            fleet.logs()
        ),
    };

    // The alerts carry what an operator needs.
    let msg = summary.script_error["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Can't connect") || msg.contains("Could not connect"),
        "script_error should carry the script's stderr: {msg:?}"
    );

    // The restored chain is a full followed by every incremental after it, in order, as the
    // host's script made them.
    let chained = fleet.hosts[0]
        .instances
        .iter()
        .find(|i| i.chained)
        .expect("chained instance")
        .clone();
    let ledger = chained.ledger().expect("ledger");
    let restored: Vec<String> = summary
        .restored
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert!(
        restored.first().is_some_and(|n| n.starts_with("full-")),
        "a restore starts at a full: {restored:?}"
    );
    let start = ledger
        .iter()
        .position(|n| n == &restored[0])
        .expect("restored full is in the ledger");
    assert_eq!(
        restored,
        ledger[start..start + restored.len()].to_vec(),
        "the chain is contiguous and in order"
    );
    assert!(
        restored[1..].iter().all(|n| n.starts_with("incr-")),
        "{restored:?}"
    );

    // Exactly once: stop the producers, let the pipeline drain, then every backup a script
    // completed is in the catalog once, and nothing else is.
    for h in &mut fleet.hosts {
        let st = h.agent.stop(Duration::from_secs(30)).expect("agent stops");
        assert!(st.success(), "agent exit status {st}");
    }
    let tally = match scenario::wait_exactly_once(&mut fleet, Duration::from_secs(120)) {
        Ok(t) => t,
        Err(e) => panic!("{e:#}\n{}", fleet.logs()),
    };
    assert!(
        tally.cataloged >= 12,
        "at least 3 backups of each of 4 instances: {tally:?}"
    );

    if let Err(e) = fleet.shutdown() {
        panic!("{e:#}\n{}", fleet.logs());
    }
}
