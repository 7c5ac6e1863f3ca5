//! The whole system from real processes: two database hosts with their agents, two nodes, the
//! indexer on SQLite, a restore. Proves that the parts fit together: every backup cataloged
//! exactly once, `script_error` and `overdue` open and resolve, the latest chain restored
//! byte-identical, and every process exits cleanly on SIGTERM.

use std::collections::BTreeSet;
use std::time::Duration;

use ubackup_e2e::fleet::wait_for;
use ubackup_e2e::scenario::{self, cataloged, field, instance_path};
use ubackup_e2e::{Fleet, FleetOptions};
use ubackup_testkit::bins::workspace_binary;

fn options(dir: &std::path::Path) -> Option<FleetOptions> {
    // A missing redis-server or rsync is a skip locally and a failure in CI.
    ubackup_testkit::redis::require_redis()?;
    ubackup_testkit::rsync::require_rsync(ubackup_testkit::rsync::RsyncVersion::V3_5_0)?;
    let mut bin_dir = None;
    for name in ["ubackup-agent", "ubackup-puller", "ubackup-indexer"] {
        let p = workspace_binary(name).expect("workspace binary");
        bin_dir = p.parent().map(|d| d.to_path_buf());
    }
    Some(FleetOptions {
        dir: dir.to_path_buf(),
        bin_dir: bin_dir.expect("binary directory"),
        interval_secs: 2,
        grace_secs: 2,
        http_port: 0,
        admin_password: "e2e-admin-password".into(),
        results_list: "message".into(),
        forward_list: None,
    })
}

#[test]
fn the_whole_system_backs_up_alerts_and_restores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(opts) = options(tmp.path()) else {
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
            logs(&fleet)
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
    let keys: Vec<_> = fleet
        .hosts
        .iter()
        .flat_map(|h| h.instances.iter().map(|i| (h.server_id.clone(), i.clone())))
        .collect();
    let outcome = wait_for(
        "the catalog to match every script's ledger",
        Duration::from_secs(120),
        || {
            fleet.check_alive()?;
            for (sid, inst) in &keys {
                let rows = cataloged(&fleet, sid, inst)?;
                let names: Vec<String> = rows
                    .iter()
                    .filter_map(|r| field(r, "filename").and_then(|v| v.as_str()))
                    .map(str::to_owned)
                    .collect();
                let unique: BTreeSet<&String> = names.iter().collect();
                anyhow::ensure!(
                    unique.len() == names.len(),
                    "{}: a backup cataloged twice: {names:?}",
                    instance_path(sid, inst)
                );
                let ledger: BTreeSet<String> = inst.ledger()?.into_iter().collect();
                let names: BTreeSet<String> = names.into_iter().collect();
                anyhow::ensure!(
                    names.is_subset(&ledger),
                    "{}: cataloged backups no script made: {:?}",
                    instance_path(sid, inst),
                    names.difference(&ledger).collect::<Vec<_>>()
                );
                if names != ledger {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    );
    if let Err(e) = outcome {
        panic!("{e:#}\n{}", logs(&fleet));
    }
    let total: usize = keys
        .iter()
        .map(|(sid, inst)| cataloged(&fleet, sid, inst).expect("catalog").len())
        .sum();
    assert!(
        total >= 12,
        "at least 3 backups of each of 4 instances: {total}"
    );

    if let Err(e) = fleet.shutdown() {
        panic!("{e:#}\n{}", logs(&fleet));
    }
}

fn logs(fleet: &Fleet) -> String {
    let mut out = String::new();
    for h in &fleet.hosts {
        out.push_str(&format!("--- {}:\n{}\n", h.agent.name(), h.agent.tail()));
    }
    for n in &fleet.nodes {
        out.push_str(&format!("--- {}:\n{}\n", n.puller.name(), n.puller.tail()));
    }
    out.push_str(&format!("--- indexer:\n{}\n", fleet.indexer.tail()));
    out
}
