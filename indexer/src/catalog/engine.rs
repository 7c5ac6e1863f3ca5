//! [`SqlCatalog`]: the [`Catalog`] on SQLite or PostgreSQL through one sqlx `Any` pool. This
//! file holds what every area shares (the pool, the engine, migrations, PostgreSQL's monthly
//! partitions); each area's statements live in their own file (`ingest.rs`, `backups.rs`, …).

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::AnyPool;

use super::{sql, Catalog, CatalogError};

/// Which engine a catalog runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite: one file, WAL.
    Sqlite,
    /// PostgreSQL: backups partitioned by month.
    Postgres,
}

impl Engine {
    /// From a catalog URL.
    pub fn of_url(url: &str) -> Option<Engine> {
        if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Engine::Postgres)
        } else {
            None
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    /// Its numbered migrations, embedded at build time (no DATABASE_URL needed). They run
    /// through the `Any` pool: `AnyConnection` implements sqlx's `Migrate` by handing each
    /// call to the engine's own connection.
    fn migrator(self) -> &'static Migrator {
        static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
        static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");
        match self {
            Engine::Sqlite => &SQLITE,
            Engine::Postgres => &POSTGRES,
        }
    }
}

/// The catalog on one engine.
pub struct SqlCatalog {
    pub(super) pool: AnyPool,
    pub(super) engine: Engine,
    /// PostgreSQL months whose partition is known to exist.
    pub(super) partitions: Mutex<HashSet<i64>>,
}

impl std::fmt::Debug for SqlCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCatalog")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// Rows per multi-row INSERT (36 parameters each; under both engines' parameter limits).
/// SQLite's binding of `$N` parameters costs more per parameter as statements grow, so it
/// gets small statements; PostgreSQL gains from large ones (fewer round trips).
pub(super) fn insert_chunk(engine: Engine) -> usize {
    match engine {
        Engine::Sqlite => 4,
        Engine::Postgres => 400,
    }
}

/// A boolean as the schema stores it (0/1 in a BIGINT on both engines).
pub(super) fn b(v: bool) -> i64 {
    i64::from(v)
}

/// `($1,$2,…),($n+1,…)`: `rows` tuples of `cols` placeholders.
pub(super) fn placeholders(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

impl SqlCatalog {
    /// Connects (creating the SQLite file if needed). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<SqlCatalog, CatalogError> {
        sqlx::any::install_default_drivers();
        let engine = Engine::of_url(url).ok_or_else(|| CatalogError::Url(url.to_string()))?;
        let url = match engine {
            Engine::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    for s in sql::connection_setup(engine) {
                        sqlx::query(s).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(SqlCatalog {
            pool,
            engine,
            partitions: Mutex::new(HashSet::new()),
        })
    }

    /// The pool (for tests and benchmarks that look under the trait).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// PostgreSQL: makes sure the partitions for these months exist.
    pub(super) async fn ensure_partitions(
        &self,
        months: impl Iterator<Item = i64>,
    ) -> Result<(), CatalogError> {
        if self.engine != Engine::Postgres {
            return Ok(());
        }
        let missing: Vec<i64> = {
            let known = self
                .partitions
                .lock()
                .map_err(|_| CatalogError::Row("poisoned".into()))?;
            let mut m: Vec<i64> = months.filter(|m| !known.contains(m)).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        for month in missing {
            let stmt = sql::create_partition(month);
            // Two indexers may race to create the same month: the loser's error is harmless
            // as long as the partition is there afterwards.
            if let Err(e) = sqlx::query(&stmt).execute(&self.pool).await {
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT COUNT(*) FROM pg_class WHERE relname = $1")
                        .bind(sql::partition_name(month))
                        .fetch_optional(&self.pool)
                        .await?;
                if exists.unwrap_or(0) == 0 {
                    return Err(e.into());
                }
            }
            if let Ok(mut known) = self.partitions.lock() {
                known.insert(month);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Catalog for SqlCatalog {
    fn engine(&self) -> Engine {
        self.engine
    }

    async fn migrate(&self) -> Result<(), CatalogError> {
        // PostgreSQL's migrator takes an advisory lock; SQLite's takes none, so two processes
        // starting on one file (`run` and a `registry import`, say) can race. Each migration
        // is one transaction, so the loser rolled back cleanly: it retries and then finds the
        // migration applied. A migration that is really broken fails every time.
        let mut attempt = 0;
        loop {
            match self.engine.migrator().run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if self.engine == Engine::Sqlite && attempt < 20 => {
                    attempt += 1;
                    tracing::debug!("migration raced another process ({e}); retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::Migration;

    /// Catalogs migrated before the migrations were embedded with `migrate!` recorded the
    /// checksums that `Migration::new` computes from the same files at run time; sqlx refuses
    /// to start on a checksum mismatch, so the embedded ones must be those.
    #[test]
    fn embedded_migrations_keep_the_recorded_checksums() {
        let files: [(Engine, [&str; 2]); 2] = [
            (
                Engine::Sqlite,
                [
                    include_str!("../../migrations/sqlite/0001_catalog.sql"),
                    include_str!("../../migrations/sqlite/0002_token_expiry.sql"),
                ],
            ),
            (
                Engine::Postgres,
                [
                    include_str!("../../migrations/postgres/0001_catalog.sql"),
                    include_str!("../../migrations/postgres/0002_token_expiry.sql"),
                ],
            ),
        ];
        for (engine, texts) in files {
            let embedded: Vec<&Migration> = engine.migrator().iter().collect();
            assert!(embedded.len() >= texts.len(), "{engine:?}");
            for (m, text) in embedded.iter().zip(texts) {
                let by_hand = Migration::new(
                    m.version,
                    m.description.clone(),
                    m.migration_type,
                    std::borrow::Cow::Borrowed(text),
                    false,
                );
                assert_eq!(m.checksum, by_hand.checksum, "{engine:?} {}", m.version);
                assert!(!m.no_tx, "{engine:?} {}", m.version);
            }
            assert_eq!(embedded[0].version, 1);
            assert_eq!(embedded[1].version, 2);
        }
    }
}
