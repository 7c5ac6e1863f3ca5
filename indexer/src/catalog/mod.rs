//! The catalog: every backup, the registry, alerts, users and the audit log.
//!
//! The domain (ingest, alert rules, HTTP handlers) calls the [`Catalog`] trait and never builds
//! SQL. [`SqlCatalog`] implements it for both engines over one sqlx `Any` pool: each engine
//! has its own numbered migrations (`migrations/sqlite`, `migrations/postgres`, embedded with
//! `sqlx::migrate!`), and the few statements that differ between engines sit side by side in
//! [`sql`] (see `docs/design/indexer.md` for why one implementation with twin statements
//! rather than one crate per engine).
//!
//! [`Catalog`] is the sum of one trait per area, each with its statements in its own file:
//!
//! | area | trait | file |
//! |---|---|---|
//! | results and node events in | [`IngestCatalog`] | `ingest.rs` |
//! | history, restore look-ups, prune | [`BackupCatalog`] | `backups.rs` |
//! | instances, businesses, types, instance state | [`RegistryCatalog`] | `registry.rs` |
//! | agents and nodes seen | [`ClusterCatalog`] | `cluster.rs` |
//! | alerts | [`AlertCatalog`] | `alerts.rs` |
//! | users, tokens, audit log | [`UserCatalog`] | `users.rs` |
//! | statistics and dashboard aggregates | [`StatsCatalog`] | `statistics.rs` |
//!
//! `engine.rs` holds what they share (pool, engine, migrations, partitions); rows decode by
//! column name into the types of `types.rs` (`#[derive(sqlx::FromRow)]`, see `rows.rs`).

mod alerts;
mod backups;
mod cluster;
mod engine;
mod ingest;
pub mod outbox;
mod registry;
mod rows;
pub mod sql;
mod statistics;
mod types;
mod users;

use async_trait::async_trait;

pub use alerts::{
    AlertCatalog, AlertChanges, AlertGroup, AlertGroupBy, AlertGroups, AppliedAlerts, BulkAction,
    RouteFn, SilenceGroup, MAX_BULK_IDS, MAX_GROUPS,
};
pub use backups::BackupCatalog;
pub use cluster::ClusterCatalog;
pub use engine::{Engine, SqlCatalog};
pub use ingest::IngestCatalog;
pub use registry::RegistryCatalog;
pub use rows::UnknownRole;
pub use statistics::{Coverage, DayGroupRow, HourRow, InstanceTotals, StatsCatalog};
pub use types::*;
pub use users::{ApiToken, UserCatalog, UserRemoval};

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

/// What the domain needs from a catalog engine: every area's trait, plus the engine and its
/// migrations. Code that holds a `dyn Catalog` calls any area's methods; code that holds a
/// concrete [`SqlCatalog`] imports the area traits it calls (`use catalog::prelude::*`).
#[async_trait]
pub trait Catalog:
    IngestCatalog
    + BackupCatalog
    + RegistryCatalog
    + ClusterCatalog
    + AlertCatalog
    + UserCatalog
    + StatsCatalog
    + Send
    + Sync
    + std::fmt::Debug
{
    /// The engine, for logs and metrics.
    fn engine(&self) -> Engine;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), CatalogError>;
}

/// The catalog traits, to call their methods on a concrete [`SqlCatalog`].
pub mod prelude {
    pub use super::{
        AlertCatalog, BackupCatalog, Catalog, ClusterCatalog, IngestCatalog, RegistryCatalog,
        StatsCatalog, UserCatalog,
    };
}

/// Opens the catalog that `url` names (`sqlite://PATH` or `postgres://...`).
pub async fn open(url: &str, max_connections: u32) -> Result<SqlCatalog, CatalogError> {
    SqlCatalog::connect(url, max_connections).await
}
