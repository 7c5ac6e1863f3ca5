//! The walk through the running system that both the quick start and the end-to-end test do:
//! backups flow and are cataloged, a failing script raises `script_error`, a stopped agent
//! raises `overdue`, both resolve, and the latest chain comes back byte-identical.
//!
//! Every step waits for an observable fact (a catalog row, an alert state, a file) and fails
//! with a clear message when it does not come in time; nothing here sleeps for a fixed time
//! and hopes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::fleet::{run_checked, wait_for, Fleet, Instance, RESTORE_MODULE, RESTORE_USER};

/// What the walk saw, for the demo to print and the test to check further.
#[derive(Debug, Default)]
pub struct Summary {
    /// Successful backups in the catalog, per `server_id/type/instance`.
    pub cataloged: BTreeMap<String, usize>,
    /// The `script_error` alert that opened (its JSON).
    pub script_error: Value,
    /// The `overdue` alert that opened (its JSON).
    pub overdue: Value,
    /// The restored files, in chain order.
    pub restored: Vec<PathBuf>,
}

/// `server_id/type/instance`, as the API paths name an instance.
pub fn instance_path(server_id: &str, inst: &Instance) -> String {
    format!("{server_id}/{}/{}", inst.back_type, inst.instance)
}

/// The instance's successful backups in the catalog (newest first), as JSON rows.
pub fn cataloged(fleet: &Fleet, server_id: &str, inst: &Instance) -> anyhow::Result<Vec<Value>> {
    let v = fleet.get(&format!(
        "/api/v1/instances/{}/backups?per_page=1000",
        instance_path(server_id, inst)
    ))?;
    let rows = v["backups"]
        .as_array()
        .context("no backups array in the history answer")?;
    Ok(rows.iter().filter(|r| succeeded(r)).cloned().collect())
}

/// Whether a backup row is a success (`succeed` is `true` in the v1 API, 1 in UBackup's).
pub fn succeeded(row: &Value) -> bool {
    matches!(field(row, "succeed"), Some(Value::Bool(true)))
        || field(row, "succeed").and_then(Value::as_i64) == Some(1)
}

/// A field of a backup row, flattened or under `record`.
pub fn field<'a>(row: &'a Value, name: &str) -> Option<&'a Value> {
    row.get(name)
        .or_else(|| row.get("record").and_then(|r| r.get(name)))
        .filter(|v| !v.is_null())
}

/// Alerts of a rule about one instance (`open` only, or all).
pub fn alerts_for(
    fleet: &Fleet,
    rule: &str,
    server_id: &str,
    inst: &Instance,
    open_only: bool,
) -> anyhow::Result<Vec<Value>> {
    let v = fleet.get(&format!(
        "/api/v1/alerts?rule={rule}{}",
        if open_only { "&open=true" } else { "" }
    ))?;
    let list = v
        .as_array()
        .or_else(|| v["alerts"].as_array())
        .context("no alert list in the answer")?;
    Ok(list
        .iter()
        .filter(|a| {
            a["server_id"].as_str() == Some(server_id)
                && a["type"].as_str() == Some(inst.back_type.as_str())
                && a["instance"].as_i64() == Some(inst.instance)
        })
        .cloned()
        .collect())
}

/// Waits until every instance has at least `n` successful backups cataloged.
pub fn wait_for_backups(fleet: &mut Fleet, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let keys: Vec<(String, Instance)> = fleet
        .hosts
        .iter()
        .flat_map(|h| h.instances.iter().map(|i| (h.server_id.clone(), i.clone())))
        .collect();
    wait_for(
        &format!("{n} cataloged backups of every instance"),
        timeout,
        || {
            fleet.check_alive()?;
            for (sid, inst) in &keys {
                if cataloged(fleet, sid, inst)?.len() < n {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
}

/// The catalog against the scripts' ledgers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Backups the scripts completed (every instance's ledger).
    pub produced: usize,
    /// Distinct backups in the catalog.
    pub cataloged: usize,
    /// Catalog rows beyond the first of the same backup.
    pub duplicates: usize,
}

/// Waits (up to `timeout`) until every backup a script completed is in the catalog, once, and
/// nothing else is: a backup cataloged twice or one no script made fails at once. Meant for
/// after the agents stopped, so that the ledgers no longer grow.
pub fn wait_exactly_once(fleet: &mut Fleet, timeout: Duration) -> anyhow::Result<Tally> {
    let keys: Vec<(String, Instance)> = fleet
        .hosts
        .iter()
        .flat_map(|h| h.instances.iter().map(|i| (h.server_id.clone(), i.clone())))
        .collect();
    wait_for(
        "the catalog to match every script's ledger",
        timeout,
        || {
            fleet.check_alive()?;
            let mut tally = Tally::default();
            let mut complete = true;
            for (sid, inst) in &keys {
                let rows = cataloged(fleet, sid, inst)?;
                let names: Vec<String> = rows
                    .iter()
                    .filter_map(|r| field(r, "filename").and_then(|v| v.as_str()))
                    .map(str::to_owned)
                    .collect();
                let unique: BTreeSet<&String> = names.iter().collect();
                if unique.len() != names.len() {
                    bail!(
                        "{}: a backup cataloged twice: {names:?}",
                        instance_path(sid, inst)
                    );
                }
                let ledger: BTreeSet<String> = inst.ledger()?.into_iter().collect();
                let names: BTreeSet<String> = names.into_iter().collect();
                if !names.is_subset(&ledger) {
                    bail!(
                        "{}: cataloged backups no script made: {:?}",
                        instance_path(sid, inst),
                        names.difference(&ledger).collect::<Vec<_>>()
                    );
                }
                tally.produced += ledger.len();
                tally.cataloged += names.len();
                complete &= names == ledger;
            }
            Ok(complete.then_some(tally))
        },
    )
    .map_err(|e| {
        // Say which backups are missing: the likeliest failure.
        let mut missing = String::new();
        for (sid, inst) in &keys {
            let have: BTreeSet<String> = cataloged(fleet, sid, inst)
                .unwrap_or_default()
                .iter()
                .filter_map(|r| field(r, "filename").and_then(Value::as_str))
                .map(str::to_owned)
                .collect();
            let lost: Vec<String> = inst
                .ledger()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| !have.contains(n))
                .collect();
            if !lost.is_empty() {
                missing.push_str(&format!("\n  {}: {lost:?}", instance_path(sid, inst)));
            }
        }
        e.context(format!("not cataloged:{missing}"))
    })
}

/// The walk. `say` gets one line per step.
pub fn run(fleet: &mut Fleet, say: &mut dyn FnMut(&str)) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let cycle = Duration::from_secs(fleet.opts.interval_secs);
    let patience = cycle * 12 + Duration::from_secs(60);

    say("backups flowing: scripts → agents → Redis → nodes → indexer");
    wait_for_backups(fleet, 3, patience)?;
    for h in &fleet.hosts {
        for inst in &h.instances {
            let rows = cataloged(fleet, &h.server_id, inst)?;
            say(&format!(
                "  {}: {} backups cataloged, newest {} on {}",
                instance_path(&h.server_id, inst),
                rows.len(),
                rows.first()
                    .and_then(|r| field(r, "filename"))
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
                rows.first()
                    .and_then(|r| field(r, "node_id"))
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
            ));
        }
    }

    // A script made to fail: script_error opens with the script's own words, then resolves.
    let failing_sid = fleet.hosts[0].server_id.clone();
    let failing = fleet.hosts[0]
        .instances
        .iter()
        .find(|i| !i.chained)
        .context("host-1 has no full-only instance")?
        .clone();
    say(&format!(
        "making {}'s backup script fail",
        instance_path(&failing_sid, &failing)
    ));
    failing.set_failing(true)?;
    summary.script_error = wait_for("a script_error alert", patience, || {
        fleet.check_alive()?;
        Ok(
            alerts_for(fleet, "script_error", &failing_sid, &failing, true)?
                .into_iter()
                .next(),
        )
    })?;
    say(&format!(
        "  alert script_error open: {}",
        summary.script_error["message"].as_str().unwrap_or("?")
    ));
    failing.set_failing(false)?;
    wait_for("the script_error alert to resolve", patience, || {
        fleet.check_alive()?;
        Ok(
            alerts_for(fleet, "script_error", &failing_sid, &failing, true)?
                .is_empty()
                .then_some(()),
        )
    })?;
    say("  mended: script_error resolved by the next good backup");

    // A stopped agent: overdue opens for its instances, then resolves when it comes back.
    let stopped_sid = fleet.hosts[1].server_id.clone();
    let watched = fleet.hosts[1].instances[0].clone();
    say(&format!("stopping the agent of {stopped_sid}"));
    let status = fleet.hosts[1].agent.stop(Duration::from_secs(30))?;
    if !status.success() {
        bail!("the agent exited with {status} on SIGTERM");
    }
    summary.overdue = wait_for("an overdue alert", patience * 2, || {
        fleet.check_alive()?;
        Ok(alerts_for(fleet, "overdue", &stopped_sid, &watched, true)?
            .into_iter()
            .next())
    })?;
    say(&format!(
        "  alert overdue open: {}",
        summary.overdue["message"].as_str().unwrap_or("?")
    ));
    fleet.hosts[1].agent.start()?;
    wait_for("the overdue alert to resolve", patience, || {
        fleet.check_alive()?;
        Ok(alerts_for(fleet, "overdue", &stopped_sid, &watched, true)?
            .is_empty()
            .then_some(()))
    })?;
    say("  agent back: overdue resolved");

    for h in &fleet.hosts {
        for inst in &h.instances {
            summary.cataloged.insert(
                instance_path(&h.server_id, inst),
                cataloged(fleet, &h.server_id, inst)?.len(),
            );
        }
    }

    // Restore the newest chain of host-1's MySQL instance and compare it with the host's files.
    let sid = fleet.hosts[0].server_id.clone();
    let chained = fleet.hosts[0]
        .instances
        .iter()
        .find(|i| i.chained)
        .context("host-1 has no chained instance")?
        .clone();
    say(&format!(
        "restoring the latest chain of {}",
        instance_path(&sid, &chained)
    ));
    let to = fleet.opts.dir.join("restored");
    summary.restored = restore(fleet, &sid, &chained, &to)?;
    for f in &summary.restored {
        let name = f.file_name().context("restored file has no name")?;
        let original = chained.back_dir.join(name);
        if std::fs::read(f)? != std::fs::read(&original)? {
            bail!(
                "{} differs from the host's {}",
                f.display(),
                original.display()
            );
        }
        say(&format!("  {} identical to the host's copy", f.display()));
    }
    Ok(summary)
}

/// Runs `ubackup-agent restore` for the newest chain of `inst` into `to`, and returns the files
/// it restored in chain order (the full first).
pub fn restore(
    fleet: &Fleet,
    server_id: &str,
    inst: &Instance,
    to: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let agent = fleet.opts.bin_dir.join("ubackup-agent");
    let list = fleet.opts.dir.join("restored-files.txt");
    // The hook gets the restored files, in chain order, as its arguments.
    let hook_script = fleet.opts.dir.join("record-restored-files.sh");
    std::fs::write(
        &hook_script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n",
            shell_quote(&list.display().to_string())
        ),
    )?;
    let hook = format!("sh {}", shell_quote(&hook_script.display().to_string()));
    let password_file = fleet.opts.dir.join("restore.password");
    write_secret(&password_file, &fleet.restore_password)?;
    let token_file = fleet.opts.dir.join("indexer.token");
    write_secret(&token_file, &fleet.token)?;
    let export_port = fleet
        .nodes
        .first()
        .context("no nodes")?
        .export
        .port()
        .to_string();
    let mut args: Vec<String> = [
        "restore",
        "--server-id",
        server_id,
        "--type",
        &inst.back_type,
        "--instance",
        &inst.instance.to_string(),
        "--at",
        "latest",
        "--to",
        &to.display().to_string(),
        "--indexer",
        fleet.url().trim_end_matches('/'),
        "--token-file",
        &token_file.display().to_string(),
        "--node-port",
        &export_port,
        "--node-module",
        RESTORE_MODULE,
        "--node-user",
        RESTORE_USER,
        "--password-file",
        &password_file.display().to_string(),
        "--hook",
        &hook,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in &fleet.nodes {
        args.push("--node-root".into());
        args.push(n.root.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_checked(&agent, &args, None)?;
    let text = std::fs::read_to_string(&list)
        .with_context(|| format!("the hook wrote no file list to {}", list.display()))?;
    Ok(text.lines().map(PathBuf::from).collect())
}

/// Writes a secret file only its owner may read (the restore refuses others).
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("{secret}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
