//! The registry (instances, businesses, backup types) and what results say about each
//! instance (`instance_state`).

use async_trait::async_trait;

use super::engine::b;
use super::{BackupType, Business, CatalogError, Instance, InstanceKey, InstanceState, SqlCatalog};

/// The registry and the per-instance state.
#[async_trait]
pub trait RegistryCatalog: Send + Sync {
    /// Registered instances (all of them; the registry is tens of thousands of rows).
    async fn instances(&self) -> Result<Vec<Instance>, CatalogError>;
    /// (business id, registered instances) for every business that has some.
    async fn instances_per_business(&self) -> Result<Vec<(i64, i64)>, CatalogError>;
    /// Inserts or updates registry rows by (server_id, type, instance).
    async fn upsert_instances(&self, rows: &[Instance], now_ms: i64) -> Result<u64, CatalogError>;
    /// Removes a registry row.
    async fn delete_instance(&self, key: &InstanceKey) -> Result<bool, CatalogError>;
    /// Businesses.
    async fn businesses(&self) -> Result<Vec<Business>, CatalogError>;
    /// Inserts or renames businesses by business_id.
    async fn upsert_businesses(&self, rows: &[Business]) -> Result<u64, CatalogError>;
    /// [`Self::upsert_businesses`] for an import of UBackup's `business` table, in one
    /// transaction: each business that comes with its row id there (`business.id`, by which
    /// `backup_instance` names it) keeps it, so a later import resolves it
    /// ([`Self::business_row_ids`]). A row id another business held moves to this one (a
    /// newer export); a business without one keeps the one it has.
    async fn upsert_businesses_with_row_ids(
        &self,
        rows: &[(Option<i64>, Business)],
    ) -> Result<u64, CatalogError>;
    /// (UBackup's row id, business_id) of every business imported with one.
    async fn business_row_ids(&self) -> Result<Vec<(i64, i64)>, CatalogError>;
    /// Backup types.
    async fn backup_types(&self) -> Result<Vec<BackupType>, CatalogError>;
    /// Inserts backup types by id (UBackup's ids, so batch-add lines resolve).
    async fn upsert_backup_types(&self, rows: &[BackupType]) -> Result<u64, CatalogError>;
    /// The state of every instance seen in results.
    async fn instance_states(&self) -> Result<Vec<InstanceState>, CatalogError>;
    /// Instances whose latest success is an incremental whose full is not in the catalog
    /// as a usable success.
    async fn broken_chains(&self) -> Result<Vec<(InstanceKey, String)>, CatalogError>;
    /// Which of `keys` ever had a successful backup (a page's worth: at most a few hundred).
    async fn succeeded_among(&self, keys: &[InstanceKey])
        -> Result<Vec<InstanceKey>, CatalogError>;
}

/// A row of [`RegistryCatalog::broken_chains`].
#[derive(sqlx::FromRow)]
struct BrokenChain {
    #[sqlx(flatten)]
    key: InstanceKey,
    last_ok_full: String,
}

#[async_trait]
impl RegistryCatalog for SqlCatalog {
    async fn instances(&self) -> Result<Vec<Instance>, CatalogError> {
        Ok(sqlx::query_as(
            "SELECT server_id, type_key, instance, name, business_id, interval_secs, enabled, \
             created_ms FROM instances ORDER BY server_id, type_key, instance",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn instances_per_business(&self) -> Result<Vec<(i64, i64)>, CatalogError> {
        Ok(sqlx::query_as(
            "SELECT business_id, COUNT(*) FROM instances WHERE business_id IS NOT NULL \
             GROUP BY business_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn upsert_instances(&self, rows: &[Instance], now_ms: i64) -> Result<u64, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for i in rows {
            n += sqlx::query(
                "INSERT INTO instances (server_id, type_key, instance, name, business_id, \
                 interval_secs, enabled, created_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) \
                 ON CONFLICT (server_id, type_key, instance) DO UPDATE SET name = excluded.name, \
                 business_id = excluded.business_id, interval_secs = excluded.interval_secs, \
                 enabled = excluded.enabled",
            )
            .bind(i.key.server_id.clone())
            .bind(i.key.type_key.to_lowercase())
            .bind(i.key.instance)
            .bind(i.name.clone())
            .bind(i.business_id)
            .bind(i.interval_secs)
            .bind(b(i.enabled))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn delete_instance(&self, key: &InstanceKey) -> Result<bool, CatalogError> {
        Ok(sqlx::query(
            "DELETE FROM instances WHERE server_id = $1 AND type_key = $2 AND instance = $3",
        )
        .bind(key.server_id.clone())
        .bind(key.type_key.clone())
        .bind(key.instance)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    async fn businesses(&self) -> Result<Vec<Business>, CatalogError> {
        Ok(
            sqlx::query_as("SELECT business_id, name FROM businesses ORDER BY business_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn upsert_businesses(&self, rows: &[Business]) -> Result<u64, CatalogError> {
        let rows = rows.iter().map(|x| (x.business_id, x.name.as_str()));
        self.upsert_names("businesses", "business_id", rows).await
    }

    async fn upsert_businesses_with_row_ids(
        &self,
        rows: &[(Option<i64>, Business)],
    ) -> Result<u64, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for (row_id, x) in rows {
            if let Some(r) = row_id {
                sqlx::query(
                    "UPDATE businesses SET legacy_row_id = NULL \
                     WHERE legacy_row_id = $1 AND business_id <> $2",
                )
                .bind(*r)
                .bind(x.business_id)
                .execute(&mut *tx)
                .await?;
            }
            n += sqlx::query(
                "INSERT INTO businesses (business_id, name, legacy_row_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (business_id) DO UPDATE SET name = excluded.name, \
                 legacy_row_id = COALESCE(excluded.legacy_row_id, businesses.legacy_row_id)",
            )
            .bind(x.business_id)
            .bind(x.name.as_str())
            .bind(*row_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn business_row_ids(&self) -> Result<Vec<(i64, i64)>, CatalogError> {
        Ok(sqlx::query_as(
            "SELECT legacy_row_id, business_id FROM businesses \
             WHERE legacy_row_id IS NOT NULL ORDER BY legacy_row_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn backup_types(&self) -> Result<Vec<BackupType>, CatalogError> {
        Ok(
            sqlx::query_as("SELECT id, name FROM backup_types ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn upsert_backup_types(&self, rows: &[BackupType]) -> Result<u64, CatalogError> {
        let rows = rows.iter().map(|x| (x.id, x.name.as_str()));
        self.upsert_names("backup_types", "id", rows).await
    }

    async fn instance_states(&self) -> Result<Vec<InstanceState>, CatalogError> {
        Ok(sqlx::query_as(
            "SELECT server_id, type_key, instance, type, game_id, game_server_ip, last_ms, \
             last_succeed, last_log, last_ok_ms, last_illegal_ms, last_corrupt_ms, \
             last_corrupt_reason, interval_secs, last_node, last_queue, last_raw FROM instance_state",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn succeeded_among(
        &self,
        keys: &[InstanceKey],
    ) -> Result<Vec<InstanceKey>, CatalogError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(100) {
            let terms: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = 3 * i;
                    format!(
                        "(server_id = ${} AND type_key = ${} AND instance = ${})",
                        n + 1,
                        n + 2,
                        n + 3
                    )
                })
                .collect();
            let sql = format!(
                "SELECT server_id, type_key, instance FROM instance_state WHERE last_ok_ms > 0 \
                 AND ({})",
                terms.join(" OR ")
            );
            let mut q = sqlx::query_as::<_, InstanceKey>(&sql);
            for k in chunk {
                q = q
                    .bind(k.server_id.clone())
                    .bind(k.type_key.clone())
                    .bind(k.instance);
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
    }

    async fn broken_chains(&self) -> Result<Vec<(InstanceKey, String)>, CatalogError> {
        let rows: Vec<BrokenChain> = sqlx::query_as(
            "SELECT s.server_id, s.type_key, s.instance, s.last_ok_full FROM instance_state s \
             WHERE s.last_ok_full IS NOT NULL AND NOT EXISTS (SELECT 1 FROM backups b \
             WHERE b.server_id = s.server_id AND b.type_key = s.type_key \
             AND b.instance = s.instance AND b.filename = s.last_ok_full AND b.succeed = 1 \
             AND b.expired_at IS NULL AND b.corrupt_at IS NULL)",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.key, r.last_ok_full)).collect())
    }
}

impl SqlCatalog {
    /// Inserts or renames `(id, name)` rows of one of the registry's two id-to-name tables
    /// (`businesses`, `backup_types`), in one transaction. `table` and `key` are our own
    /// constants, never input. Returns the rows written.
    async fn upsert_names(
        &self,
        table: &'static str,
        key: &'static str,
        rows: impl Iterator<Item = (i64, &str)>,
    ) -> Result<u64, CatalogError> {
        let sql = format!(
            "INSERT INTO {table} ({key}, name) VALUES ($1, $2) \
             ON CONFLICT ({key}) DO UPDATE SET name = excluded.name"
        );
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for (id, name) in rows {
            n += sqlx::query(&sql)
                .bind(id)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}
