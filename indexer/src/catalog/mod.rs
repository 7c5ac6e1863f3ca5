//! The catalog: every backup, the registry, alerts, users and the audit log.
//!
//! The domain (ingest, alert rules, HTTP handlers) calls the [`Catalog`] trait and never builds
//! SQL. [`SqlCatalog`] implements it for both engines over one sqlx `Any` pool: each engine
//! has its own numbered migrations (`migrations/sqlite`, `migrations/postgres`), and the few
//! statements that differ between engines sit side by side in [`sql`] (see
//! `docs/design/indexer.md` for why one implementation with twin statements rather than one
//! crate per engine).

pub mod dashboard;
mod engine;
pub mod sql;
mod types;

use async_trait::async_trait;

pub use dashboard::{DayGroupRow, HourRow, InstanceTotals};
pub use engine::{Engine, SqlCatalog};
pub use types::*;

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The database refused or was unreachable.
    #[error("catalog database: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("catalog migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The catalog URL names no engine we support.
    #[error("unsupported catalog URL {0:?} (sqlite:// or postgres://)")]
    Url(String),
    /// A value read back is not what the schema promises.
    #[error("corrupt catalog row: {0}")]
    Row(String),
    /// A name or key that must exist does not.
    #[error("not found: {0}")]
    NotFound(String),
}

/// What the domain needs from a catalog engine.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// The engine, for logs and metrics.
    fn engine(&self) -> Engine;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), CatalogError>;

    // --- ingest ---
    /// Writes a batch of results and node events in one transaction. Results already present
    /// (same `job_id` and `create_time`) are skipped, so a replay indexes nothing twice.
    async fn ingest(&self, batch: &[Ingest], now_ms: i64) -> Result<IngestOutcome, CatalogError>;

    // --- backups ---
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
    /// Statistics grouped by `by`, over `from_ms..to_ms`.
    async fn stats(
        &self,
        by: StatsBy,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StatsRow>, CatalogError>;
    /// Deletes backups created before `cutoff_ms` and resolved alerts older than it. Returns
    /// the backup rows (or, on PostgreSQL, whole months plus rows) removed.
    async fn prune(&self, cutoff_ms: i64) -> Result<u64, CatalogError>;

    // --- registry ---
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
    /// Backup types.
    async fn backup_types(&self) -> Result<Vec<BackupType>, CatalogError>;
    /// Inserts backup types by id (UBackup's ids, so batch-add lines resolve).
    async fn upsert_backup_types(&self, rows: &[BackupType]) -> Result<u64, CatalogError>;
    /// The state of every instance seen in results.
    async fn instance_states(&self) -> Result<Vec<InstanceState>, CatalogError>;
    /// Instances whose latest success is an incremental whose full is not in the catalog
    /// as a usable success.
    async fn broken_chains(&self) -> Result<Vec<(InstanceKey, String)>, CatalogError>;

    // --- cluster memory ---
    /// Records agents seen alive (server_id, cluster) at `now_ms`.
    async fn agents_seen(&self, seen: &[(String, String)], now_ms: i64)
        -> Result<(), CatalogError>;
    /// Agents ever seen: (server_id, cluster, last_seen_ms).
    async fn agents(&self) -> Result<Vec<(String, String, i64)>, CatalogError>;
    /// Records nodes seen alive (node_id, cluster, ip).
    async fn nodes_seen(
        &self,
        seen: &[(String, String, String)],
        now_ms: i64,
    ) -> Result<(), CatalogError>;
    /// Nodes ever seen: (node_id, cluster, ip, last_seen_ms).
    async fn nodes(&self) -> Result<Vec<(String, String, String, i64)>, CatalogError>;

    // --- alerts ---
    /// Open alerts.
    async fn open_alerts(&self) -> Result<Vec<Alert>, CatalogError>;
    /// Opens an alert unless one is open for (rule, subject); refreshes its message if so.
    /// Returns the alert when it was newly opened.
    async fn open_alert(&self, a: &NewAlert, now_ms: i64) -> Result<Option<Alert>, CatalogError>;
    /// Resolves the open alert for (rule, subject); returns it if there was one.
    async fn resolve_alert(
        &self,
        rule: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Option<Alert>, CatalogError>;
    /// Acknowledges an alert.
    async fn ack_alert(&self, id: i64, user: &str, now_ms: i64) -> Result<bool, CatalogError>;
    /// Silences an alert until `until_ms`.
    async fn silence_alert(&self, id: i64, until_ms: i64) -> Result<bool, CatalogError>;
    /// Alerts, filtered (`offset` and `limit` page them).
    async fn alerts(&self, f: &AlertFilter) -> Result<Vec<Alert>, CatalogError>;
    /// How many alerts match the filter (ignoring `offset` and `limit`).
    async fn count_alerts(&self, f: &AlertFilter) -> Result<i64, CatalogError>;
    /// One alert by id.
    async fn alert(&self, id: i64) -> Result<Option<Alert>, CatalogError>;
    /// The rules of the open alerts (distinct).
    async fn open_alert_rules(&self) -> Result<Vec<String>, CatalogError>;

    // --- users, tokens, audit ---
    /// Adds a user (or replaces its role and password).
    async fn put_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<i64, CatalogError>;
    /// A user by name.
    async fn user(&self, name: &str) -> Result<Option<User>, CatalogError>;
    /// Stores a token hash for a user.
    async fn add_token(
        &self,
        user_id: i64,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<(), CatalogError>;
    /// The user a token hash belongs to.
    async fn user_by_token(&self, token_hash: &str) -> Result<Option<User>, CatalogError>;
    /// Sets a user's focus businesses (UBackup's `focus_business`, a JSON list).
    async fn set_focus(&self, user_id: i64, focus_json: &str) -> Result<(), CatalogError>;
    /// Appends to the audit log.
    async fn audit(
        &self,
        at_ms: i64,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), CatalogError>;
    /// The newest audit entries.
    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, CatalogError>;

    // --- dashboard aggregates (web pages; see `dashboard`) ---
    /// Results per hour over `from_ms..to_ms`.
    async fn hourly(&self, from_ms: i64, to_ms: i64) -> Result<Vec<HourRow>, CatalogError>;
    /// Results per UTC day × `by` over `from_ms..to_ms`.
    async fn stats_by_day(
        &self,
        by: StatsBy,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DayGroupRow>, CatalogError>;
    /// The `limit` instances failing most (`by_failures`) or pulling slowest.
    async fn top_instances(
        &self,
        from_ms: i64,
        to_ms: i64,
        by_failures: bool,
        limit: i64,
    ) -> Result<Vec<InstanceTotals>, CatalogError>;
    /// Every user with its number of API tokens, by name.
    async fn users(&self) -> Result<Vec<(User, i64)>, CatalogError>;
    /// Removes every API token of a user; how many.
    async fn revoke_tokens(&self, user_id: i64) -> Result<u64, CatalogError>;
}

/// Opens the catalog that `url` names (`sqlite://PATH` or `postgres://...`).
pub async fn open(url: &str, max_connections: u32) -> Result<SqlCatalog, CatalogError> {
    SqlCatalog::connect(url, max_connections).await
}
