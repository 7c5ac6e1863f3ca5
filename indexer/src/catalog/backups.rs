//! Backups: an instance's history, one backup, the successes a restore chain needs, and
//! retention's prune.

use async_trait::async_trait;

use super::{sql, Backup, CatalogError, Engine, InstanceKey, Page, SqlCatalog};

/// Reading and pruning backup rows.
#[async_trait]
pub trait BackupCatalog: Send + Sync {
    /// An instance's backups, newest first.
    async fn history(&self, key: &InstanceKey, page: Page) -> Result<Vec<Backup>, CatalogError>;
    /// One backup by id.
    async fn backup(&self, id: i64) -> Result<Option<Backup>, CatalogError>;
    /// The backup of `key` named `filename` that succeeded (the newest such).
    async fn backup_by_name(
        &self,
        key: &InstanceKey,
        filename: &str,
    ) -> Result<Option<Backup>, CatalogError>;
    /// Successful backups of `key` with `from_ms <= create_time <= to_ms`, oldest first.
    async fn successes_between(
        &self,
        key: &InstanceKey,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Backup>, CatalogError>;
    /// Deletes backups created before `cutoff_ms` and resolved alerts older than it. Returns
    /// the backup rows (or, on PostgreSQL, whole months plus rows) removed.
    async fn prune(&self, cutoff_ms: i64) -> Result<u64, CatalogError>;
}

const SELECT_BACKUP: &str = "SELECT id, job_id, server_id, type, type_key, instance, game_id, \
    op_id, interval_secs, game_server_ip, back_server_ip, node_id, file_path, filename, \
    create_time, rsync_time, size, last_all_filename, last_all_time, prev_filename, prev_time, \
    succeed, log, checksum, checksum_algorithm, expected_size, size_mismatch, bytes_received, \
    literal_bytes, matched_bytes, basis, attempts, requeues, queue, taken_ms, duration_ms, \
    indexed_ms, expired_at, corrupt_at, mark_reason FROM backups";

impl SqlCatalog {
    async fn fetch_backups<'q>(
        &self,
        q: sqlx::query::QueryAs<'q, sqlx::Any, Backup, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Vec<Backup>, CatalogError> {
        let mut rows = q.fetch_all(&self.pool).await?;
        for b in &mut rows {
            b.record.illegal = b.record.log.starts_with(ubackup_messages::ILLEGAL_PREFIX);
        }
        Ok(rows)
    }
}

#[async_trait]
impl BackupCatalog for SqlCatalog {
    async fn history(&self, key: &InstanceKey, page: Page) -> Result<Vec<Backup>, CatalogError> {
        let stmt = format!(
            "{SELECT_BACKUP} WHERE server_id = $1 AND type_key = $2 AND instance = $3 \
             ORDER BY create_time DESC, id DESC LIMIT $4 OFFSET $5"
        );
        self.fetch_backups(
            sqlx::query_as(&stmt)
                .bind(key.server_id.clone())
                .bind(key.type_key.clone())
                .bind(key.instance)
                .bind(page.limit.clamp(0, 10_000))
                .bind(page.offset.max(0)),
        )
        .await
    }

    async fn backup(&self, id: i64) -> Result<Option<Backup>, CatalogError> {
        let stmt = format!("{SELECT_BACKUP} WHERE id = $1");
        Ok(self
            .fetch_backups(sqlx::query_as(&stmt).bind(id))
            .await?
            .pop())
    }

    async fn backup_by_name(
        &self,
        key: &InstanceKey,
        filename: &str,
    ) -> Result<Option<Backup>, CatalogError> {
        let stmt = format!(
            "{SELECT_BACKUP} WHERE server_id = $1 AND type_key = $2 AND instance = $3 \
             AND filename = $4 AND succeed = 1 ORDER BY create_time DESC LIMIT 1"
        );
        Ok(self
            .fetch_backups(
                sqlx::query_as(&stmt)
                    .bind(key.server_id.clone())
                    .bind(key.type_key.clone())
                    .bind(key.instance)
                    .bind(filename.to_string()),
            )
            .await?
            .pop())
    }

    async fn successes_between(
        &self,
        key: &InstanceKey,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Backup>, CatalogError> {
        let stmt = format!(
            "{SELECT_BACKUP} WHERE server_id = $1 AND type_key = $2 AND instance = $3 \
             AND create_time >= $4 AND create_time <= $5 AND succeed = 1 \
             ORDER BY create_time ASC, id ASC LIMIT 100000"
        );
        self.fetch_backups(
            sqlx::query_as(&stmt)
                .bind(key.server_id.clone())
                .bind(key.type_key.clone())
                .bind(key.instance)
                .bind(from_ms)
                .bind(to_ms),
        )
        .await
    }

    async fn prune(&self, cutoff_ms: i64) -> Result<u64, CatalogError> {
        let mut removed = 0;
        if self.engine == Engine::Postgres {
            let names: Vec<String> = sqlx::query_scalar(sql::LIST_PARTITIONS)
                .fetch_all(&self.pool)
                .await?;
            for name in names {
                let Some(month) = sql::partition_month(&name) else {
                    continue;
                };
                if sql::month_start_ms(month + 1) <= cutoff_ms {
                    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {name}"))
                        .fetch_one(&self.pool)
                        .await?;
                    sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                        .execute(&self.pool)
                        .await?;
                    if let Ok(mut known) = self.partitions.lock() {
                        known.remove(&month);
                    }
                    removed += n as u64;
                }
            }
        }
        removed += sqlx::query("DELETE FROM backups WHERE create_time < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM alerts WHERE resolved_ms IS NOT NULL AND resolved_ms < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        Ok(removed)
    }
}
