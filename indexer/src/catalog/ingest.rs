//! Ingest: results and node events into `backups` and `instance_state`, one transaction per
//! batch.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::engine::{b, insert_chunk, placeholders};
use super::{sql, CatalogError, Ingest, IngestOutcome, InstanceKey, Record, SqlCatalog};

/// Writing what the nodes report.
#[async_trait]
pub trait IngestCatalog: Send + Sync {
    /// Writes a batch of results and node events in one transaction. Results already present
    /// (same `job_id` and `create_time`) are skipped, so a replay indexes nothing twice.
    async fn ingest(&self, batch: &[Ingest], now_ms: i64) -> Result<IngestOutcome, CatalogError>;
}

const BACKUP_COLS: &str = "job_id, server_id, type, type_key, instance, game_id, op_id, \
    interval_secs, game_server_ip, back_server_ip, node_id, file_path, filename, create_time, \
    rsync_time, size, last_all_filename, last_all_time, prev_filename, prev_time, succeed, log, \
    checksum, checksum_algorithm, expected_size, size_mismatch, bytes_received, literal_bytes, \
    matched_bytes, basis, attempts, requeues, queue, taken_ms, duration_ms, indexed_ms";
const BACKUP_NCOLS: usize = 36;

/// The per-instance summary of one batch, for `instance_state`.
#[derive(Default)]
struct StateDelta {
    back_type: String,
    game_id: Option<i64>,
    game_server_ip: Option<String>,
    last_ms: i64,
    last_succeed: bool,
    last_log: String,
    last_ok_ms: i64,
    last_ok_full: Option<String>,
    last_illegal_ms: i64,
    last_corrupt_ms: i64,
    last_corrupt_reason: Option<String>,
    interval_secs: Option<i64>,
    last_node: Option<String>,
    last_queue: Option<String>,
    last_raw: Option<String>,
    has_result: bool,
}

impl SqlCatalog {
    async fn insert_records(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        recs: &[&Record],
        now_ms: i64,
    ) -> Result<u64, CatalogError> {
        let mut inserted = 0;
        for chunk in recs.chunks(insert_chunk(self.engine)) {
            let stmt = format!(
                "INSERT INTO backups ({BACKUP_COLS}) VALUES {} \
                 ON CONFLICT (job_id, create_time) DO NOTHING",
                placeholders(chunk.len(), BACKUP_NCOLS)
            );
            let mut q = sqlx::query(&stmt);
            for r in chunk {
                q = q
                    .bind(r.job_id.clone())
                    .bind(r.server_id.clone())
                    .bind(r.back_type.clone())
                    .bind(r.back_type.to_lowercase())
                    .bind(r.instance)
                    .bind(r.game_id)
                    .bind(r.op_id)
                    .bind(r.interval_secs)
                    .bind(r.game_server_ip.clone())
                    .bind(r.back_server_ip.clone())
                    .bind(r.node_id.clone())
                    .bind(r.file_path.clone())
                    .bind(r.filename.clone())
                    .bind(r.create_time)
                    .bind(r.rsync_time)
                    .bind(r.size)
                    .bind(r.last_all_filename.clone())
                    .bind(r.last_all_time)
                    .bind(r.prev_filename.clone())
                    .bind(r.prev_time)
                    .bind(b(r.succeed))
                    .bind(r.log.clone())
                    .bind(r.checksum.clone())
                    .bind(r.checksum_algorithm.clone())
                    .bind(r.expected_size)
                    .bind(b(r.size_mismatch))
                    .bind(r.bytes_received)
                    .bind(r.literal_bytes)
                    .bind(r.matched_bytes)
                    .bind(r.basis.clone())
                    .bind(r.attempts)
                    .bind(r.requeues)
                    .bind(r.queue.clone())
                    .bind(r.taken_ms)
                    .bind(r.duration_ms)
                    .bind(now_ms);
            }
            inserted += q.execute(&mut **tx).await?.rows_affected();
        }
        Ok(inserted)
    }

    async fn upsert_states(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        states: &BTreeMap<InstanceKey, StateDelta>,
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        // One multi-row upsert per chunk (each key appears once: the batch was folded per
        // instance). A delta from events only has last_ms = 0 and leaves the result fields.
        let g = sql::greatest(self.engine);
        let rows: Vec<(&InstanceKey, &StateDelta)> = states.iter().collect();
        for chunk in rows.chunks(insert_chunk(self.engine)) {
            let stmt = format!(
                "INSERT INTO instance_state (server_id, type_key, instance, type, game_id, \
                 game_server_ip, last_ms, last_succeed, last_log, last_ok_ms, last_ok_full, \
                 last_illegal_ms, last_corrupt_ms, last_corrupt_reason, seen_ms, interval_secs, \
                 last_node, last_queue, last_raw) \
                 VALUES {} \
                 ON CONFLICT (server_id, type_key, instance) DO UPDATE SET \
                 type = CASE WHEN excluded.last_ms > 0 THEN excluded.type ELSE instance_state.type END, \
                 game_id = COALESCE(excluded.game_id, instance_state.game_id), \
                 game_server_ip = COALESCE(excluded.game_server_ip, instance_state.game_server_ip), \
                 last_succeed = CASE WHEN excluded.last_ms > 0 AND excluded.last_ms >= instance_state.last_ms \
                    THEN excluded.last_succeed ELSE instance_state.last_succeed END, \
                 last_log = CASE WHEN excluded.last_ms > 0 AND excluded.last_ms >= instance_state.last_ms \
                    THEN excluded.last_log ELSE instance_state.last_log END, \
                 last_node = CASE WHEN excluded.last_ms > 0 AND excluded.last_ms >= instance_state.last_ms \
                    THEN excluded.last_node ELSE instance_state.last_node END, \
                 last_queue = CASE WHEN excluded.last_ms > 0 AND excluded.last_ms >= instance_state.last_ms \
                    THEN excluded.last_queue ELSE instance_state.last_queue END, \
                 last_raw = CASE WHEN excluded.last_ms > 0 AND excluded.last_ms >= instance_state.last_ms \
                    THEN excluded.last_raw ELSE instance_state.last_raw END, \
                 interval_secs = COALESCE(excluded.interval_secs, instance_state.interval_secs), \
                 last_ms = {g}(excluded.last_ms, instance_state.last_ms), \
                 last_ok_full = CASE WHEN excluded.last_ok_ms > instance_state.last_ok_ms \
                    THEN excluded.last_ok_full ELSE instance_state.last_ok_full END, \
                 last_ok_ms = {g}(excluded.last_ok_ms, instance_state.last_ok_ms), \
                 last_illegal_ms = {g}(excluded.last_illegal_ms, instance_state.last_illegal_ms), \
                 last_corrupt_reason = CASE WHEN excluded.last_corrupt_ms > instance_state.last_corrupt_ms \
                    THEN excluded.last_corrupt_reason ELSE instance_state.last_corrupt_reason END, \
                 last_corrupt_ms = {g}(excluded.last_corrupt_ms, instance_state.last_corrupt_ms), \
                 seen_ms = excluded.seen_ms",
                placeholders(chunk.len(), 19)
            );
            let mut q = sqlx::query(&stmt);
            for (k, d) in chunk {
                q = q
                    .bind(k.server_id.clone())
                    .bind(k.type_key.clone())
                    .bind(k.instance)
                    .bind(d.back_type.clone())
                    .bind(d.game_id)
                    .bind(d.game_server_ip.clone())
                    .bind(if d.has_result { d.last_ms } else { 0 })
                    .bind(b(d.last_succeed))
                    .bind(d.last_log.clone())
                    .bind(d.last_ok_ms)
                    .bind(d.last_ok_full.clone())
                    .bind(d.last_illegal_ms)
                    .bind(d.last_corrupt_ms)
                    .bind(d.last_corrupt_reason.clone())
                    .bind(now_ms)
                    .bind(d.interval_secs)
                    .bind(d.last_node.clone())
                    .bind(d.last_queue.clone())
                    .bind(d.last_raw.clone());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl IngestCatalog for SqlCatalog {
    async fn ingest(&self, batch: &[Ingest], now_ms: i64) -> Result<IngestOutcome, CatalogError> {
        let recs: Vec<&Record> = batch
            .iter()
            .filter_map(|i| match i {
                Ingest::Result(r) => Some(&**r),
                Ingest::Event(_) => None,
            })
            .collect();
        self.ensure_partitions(recs.iter().map(|r| sql::month_of(r.create_time)))
            .await?;
        let mut out = IngestOutcome::default();
        let mut states: BTreeMap<InstanceKey, StateDelta> = BTreeMap::new();
        for r in &recs {
            let d = states.entry(r.key()).or_default();
            d.has_result = true;
            if r.create_time >= d.last_ms {
                d.last_ms = r.create_time;
                d.last_succeed = r.succeed;
                d.last_log = r.log.clone();
                d.back_type = r.back_type.clone();
                d.interval_secs = r.interval_secs.or(d.interval_secs);
                d.last_node = Some(r.node_id.clone()).filter(|n| !n.is_empty());
                d.last_queue = r.queue.clone();
                d.last_raw = r.raw_excerpt.clone();
            }
            d.game_id = r.game_id.or(d.game_id);
            d.game_server_ip = r.game_server_ip.clone().or(d.game_server_ip.take());
            if r.succeed && r.create_time >= d.last_ok_ms {
                d.last_ok_ms = r.create_time;
                d.last_ok_full = r.last_all_filename.clone();
            }
            if r.illegal {
                d.last_illegal_ms = d.last_illegal_ms.max(r.rsync_time.max(r.create_time));
            }
        }
        let mut tx = self.pool.begin().await?;
        let inserted = self.insert_records(&mut tx, &recs, now_ms).await?;
        out.inserted = inserted;
        out.duplicates = recs.len() as u64 - inserted.min(recs.len() as u64);
        for i in batch {
            let Ingest::Event(e) = i else { continue };
            let key = InstanceKey::new(&e.server_id, &e.back_type, e.instance);
            let col = match e.event {
                ubackup_messages::EventKind::Expired => "expired_at",
                _ => "corrupt_at",
            };
            let stmt = format!(
                "UPDATE backups SET {col} = $1, mark_reason = $2 WHERE server_id = $3 \
                 AND type_key = $4 AND instance = $5 AND filename = $6 AND node_id = $7 \
                 AND file_path = $8 AND {col} IS NULL"
            );
            let n = sqlx::query(&stmt)
                .bind(e.at_ms)
                .bind(format!("{}: {}", e.event.name(), e.reason))
                .bind(key.server_id.clone())
                .bind(key.type_key.clone())
                .bind(key.instance)
                .bind(e.filename.clone())
                .bind(e.node_id.clone())
                .bind(e.file_path.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                out.marked += 1;
            } else {
                out.unmatched_events += 1;
            }
            if !matches!(e.event, ubackup_messages::EventKind::Expired) {
                let d = states.entry(key).or_insert_with(|| StateDelta {
                    back_type: e.back_type.clone(),
                    ..StateDelta::default()
                });
                if d.back_type.is_empty() {
                    d.back_type = e.back_type.clone();
                }
                if e.at_ms >= d.last_corrupt_ms {
                    d.last_corrupt_ms = e.at_ms;
                    d.last_corrupt_reason = Some(format!(
                        "{} {}/{}: {}",
                        e.event.name(),
                        e.file_path,
                        e.filename,
                        e.reason
                    ));
                }
            }
        }
        self.upsert_states(&mut tx, &states, now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }
}
