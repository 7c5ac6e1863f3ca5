//! The restore plan of an instance at a time: the full, then every incremental after it up to
//! the target, in order, each with its node, path, size and checksum. Expired and corrupt rows
//! are skipped when choosing the target; a link the chain needs that is missing, failed,
//! expired or corrupt is reported as a hole, never papered over.
//!
//! Two chain shapes arrive: v1 jobs name the previous incremental (`prev_filename`), so the
//! chain is followed backwards link by link; UBackup's jobs name only the full
//! (`last_all_filename`), so the plan is the full plus every successful incremental of that
//! full up to the target (compat §A.8).

use ubackup_messages::{PlanInstance, StepKind};

use crate::catalog::{Backup, Catalog, CatalogError, InstanceKey, Page};

/// The plan, one file to restore and a hole: the contract types shared with the agent.
pub use ubackup_messages::{PlanHole as Hole, PlanStep as Step, RestorePlan as Plan};

fn step(b: &Backup) -> Step {
    Step {
        id: b.id,
        kind: if b.record.last_all_filename.is_some() {
            StepKind::Incremental
        } else {
            StepKind::Full
        },
        node_id: b.record.node_id.clone(),
        back_server_ip: b.record.back_server_ip.clone(),
        file_path: b.record.file_path.clone(),
        filename: b.record.filename.clone(),
        size: b.record.size,
        checksum: b.record.checksum.clone(),
        checksum_algorithm: b.record.checksum_algorithm.clone(),
        create_time: b.record.create_time,
        last_all_filename: b.record.last_all_filename.clone(),
        prev_filename: b.record.prev_filename.clone(),
    }
}

fn unusable(b: &Backup) -> Option<&'static str> {
    if !b.record.succeed {
        Some("failed")
    } else if b.expired_at.is_some() {
        Some("expired")
    } else if b.corrupt_at.is_some() {
        Some("corrupt")
    } else {
        None
    }
}

/// Builds the plan for `key` as of `at_ms`.
pub async fn plan(
    catalog: &dyn Catalog,
    key: &InstanceKey,
    at_ms: i64,
) -> Result<Plan, CatalogError> {
    let mut out = Plan {
        instance: PlanInstance {
            server_id: key.server_id.clone(),
            back_type: key.type_key.clone(),
            instance: key.instance,
        },
        at_ms,
        target: None,
        steps: Vec::new(),
        holes: Vec::new(),
        complete: false,
    };
    // The newest usable backup at or before at_ms.
    let mut target = None;
    let mut offset = 0;
    'find: loop {
        let page = catalog.history(key, Page { offset, limit: 500 }).await?;
        if page.is_empty() {
            break;
        }
        for b in &page {
            if b.record.create_time <= at_ms && b.usable() {
                target = Some(b.clone());
                break 'find;
            }
        }
        offset += page.len() as i64;
        if offset > 100_000 {
            break;
        }
    }
    let Some(target) = target else {
        return Ok(out);
    };
    out.target = Some(target.id);
    let Some(full_name) = target.record.last_all_filename.clone() else {
        out.steps.push(step(&target));
        out.complete = true;
        return Ok(out);
    };
    let mut chain = vec![target.clone()];
    if target.record.prev_filename.is_some() {
        // v1: follow prev_filename back to the full.
        let mut cur = target.clone();
        while let Some(prev) = cur.record.prev_filename.clone() {
            if chain.len() > 10_000 {
                break;
            }
            match catalog.backup_by_name(key, &prev).await? {
                Some(b) if b.record.create_time < cur.record.create_time => {
                    if let Some(why) = unusable(&b) {
                        out.holes.push(Hole {
                            filename: prev.clone(),
                            reason: why.into(),
                            id: Some(b.id),
                        });
                    }
                    chain.push(b.clone());
                    cur = b;
                }
                _ => {
                    out.holes.push(Hole {
                        filename: prev,
                        reason: "missing".into(),
                        id: None,
                    });
                    break;
                }
            }
        }
    }
    let full = catalog.backup_by_name(key, &full_name).await?;
    match &full {
        Some(f) => {
            if let Some(why) = unusable(f) {
                out.holes.push(Hole {
                    filename: full_name.clone(),
                    reason: why.into(),
                    id: Some(f.id),
                });
            }
        }
        None => out.holes.push(Hole {
            filename: full_name.clone(),
            reason: "missing".into(),
            id: None,
        }),
    }
    if target.record.prev_filename.is_none() {
        // UBackup: every success of this full between it and the target.
        let from = full
            .as_ref()
            .map(|f| f.record.create_time)
            .unwrap_or(target.record.last_all_time);
        chain = catalog
            .successes_between(key, from, target.record.create_time)
            .await?
            .into_iter()
            .filter(|b| b.record.last_all_filename.as_deref() == Some(full_name.as_str()))
            .rev()
            .collect();
        for b in &chain {
            if let Some(why) = unusable(b) {
                out.holes.push(Hole {
                    filename: b.record.filename.clone().unwrap_or_default(),
                    reason: why.into(),
                    id: Some(b.id),
                });
            }
        }
    }
    if let Some(f) = &full {
        out.steps.push(step(f));
    }
    out.steps.extend(chain.iter().rev().map(step));
    out.complete = out.holes.is_empty();
    Ok(out)
}
