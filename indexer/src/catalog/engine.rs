//! [`SqlCatalog`]: the [`Catalog`] on SQLite or PostgreSQL through one sqlx `Any` pool.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};

use super::sql;
use super::*;

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
}

/// The catalog on one engine.
pub struct SqlCatalog {
    pool: AnyPool,
    engine: Engine,
    /// PostgreSQL months whose partition is known to exist.
    partitions: Mutex<HashSet<i64>>,
}

impl std::fmt::Debug for SqlCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCatalog")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

const BACKUP_COLS: &str = "job_id, server_id, type, type_key, instance, game_id, op_id, \
    interval_secs, game_server_ip, back_server_ip, node_id, file_path, filename, create_time, \
    rsync_time, size, last_all_filename, last_all_time, prev_filename, prev_time, succeed, log, \
    checksum, checksum_algorithm, expected_size, size_mismatch, bytes_received, literal_bytes, \
    matched_bytes, basis, attempts, requeues, queue, taken_ms, duration_ms, indexed_ms";
const BACKUP_NCOLS: usize = 36;
const SELECT_BACKUP: &str = "SELECT id, job_id, server_id, type, type_key, instance, game_id, \
    op_id, interval_secs, game_server_ip, back_server_ip, node_id, file_path, filename, \
    create_time, rsync_time, size, last_all_filename, last_all_time, prev_filename, prev_time, \
    succeed, log, checksum, checksum_algorithm, expected_size, size_mismatch, bytes_received, \
    literal_bytes, matched_bytes, basis, attempts, requeues, queue, taken_ms, duration_ms, \
    indexed_ms, expired_at, corrupt_at, mark_reason FROM backups";
/// Rows per multi-row INSERT (36 parameters each; under both engines' parameter limits).
/// SQLite's binding of `$N` parameters costs more per parameter as statements grow, so it
/// gets small statements; PostgreSQL gains from large ones (fewer round trips).
fn insert_chunk(engine: Engine) -> usize {
    match engine {
        Engine::Sqlite => 4,
        Engine::Postgres => 400,
    }
}
const ALERT_COLS: &str = "id, rule, subject, server_id, type, instance, game_id, game_server_ip, \
    message, opened_ms, updated_ms, resolved_ms, acked_by, acked_ms, silenced_until_ms";

fn migrator(engine: Engine) -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType};
    use std::borrow::Cow;
    let files: &[(i64, &str, &str)] = match engine {
        Engine::Sqlite => &[(
            1,
            "catalog",
            include_str!("../../migrations/sqlite/0001_catalog.sql"),
        )],
        Engine::Postgres => &[(
            1,
            "catalog",
            include_str!("../../migrations/postgres/0001_catalog.sql"),
        )],
    };
    let migrations: Vec<Migration> = files
        .iter()
        .map(|(v, d, text)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                Cow::Borrowed(*text),
                false,
            )
        })
        .collect();
    let mut m = sqlx::migrate::Migrator::DEFAULT;
    m.migrations = Cow::Owned(migrations);
    m
}

/// The WHERE clause of an [`AlertFilter`] ($1..$7, bound by [`bind_alert_filter`]).
const ALERT_WHERE: &str = "($1 = 0 OR resolved_ms IS NULL) AND ($2 = '' OR rule = $2) \
     AND ($3 = 0 OR game_id = $4) AND ($5 = 0 \
     OR ($5 = 1 AND resolved_ms IS NULL AND acked_ms IS NULL \
         AND (silenced_until_ms IS NULL OR silenced_until_ms <= $6)) \
     OR ($5 = 2 AND resolved_ms IS NULL AND acked_ms IS NOT NULL \
         AND (silenced_until_ms IS NULL OR silenced_until_ms <= $7)) \
     OR ($5 = 3 AND resolved_ms IS NULL AND silenced_until_ms > $6) \
     OR ($5 = 4 AND resolved_ms IS NOT NULL))";

fn bind_alert_filter<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    f: &AlertFilter,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let state = match f.state {
        None => 0i64,
        Some(AlertState::Open) => 1,
        Some(AlertState::Acked) => 2,
        Some(AlertState::Silenced) => 3,
        Some(AlertState::Resolved) => 4,
    };
    q.bind(b(f.open))
        .bind(f.rule.clone().unwrap_or_default())
        .bind(b(f.business.is_some()))
        .bind(f.business.unwrap_or(0))
        .bind(state)
        .bind(f.now_ms)
        .bind(f.now_ms)
}

/// `CASE … END,` putting the given businesses first (integers only, so no injection).
fn first_order(businesses: &[i64]) -> String {
    if businesses.is_empty() {
        return String::new();
    }
    let list: Vec<String> = businesses.iter().take(1000).map(i64::to_string).collect();
    format!(
        "CASE WHEN game_id IN ({}) THEN 0 ELSE 1 END,",
        list.join(",")
    )
}

fn b(v: bool) -> i64 {
    i64::from(v)
}

fn row_backup(r: &AnyRow) -> Result<Backup, sqlx::Error> {
    Ok(Backup {
        id: r.try_get(0)?,
        record: Record {
            job_id: r.try_get(1)?,
            server_id: r.try_get(2)?,
            back_type: r.try_get(3)?,
            instance: r.try_get(5)?,
            game_id: r.try_get(6)?,
            op_id: r.try_get(7)?,
            interval_secs: r.try_get(8)?,
            game_server_ip: r.try_get(9)?,
            back_server_ip: r.try_get(10)?,
            node_id: r.try_get(11)?,
            file_path: r.try_get(12)?,
            filename: r.try_get(13)?,
            create_time: r.try_get(14)?,
            rsync_time: r.try_get(15)?,
            size: r.try_get(16)?,
            last_all_filename: r.try_get(17)?,
            last_all_time: r.try_get(18)?,
            prev_filename: r.try_get(19)?,
            prev_time: r.try_get(20)?,
            succeed: r.try_get::<i64, _>(21)? != 0,
            log: r.try_get(22)?,
            checksum: r.try_get(23)?,
            checksum_algorithm: r.try_get(24)?,
            expected_size: r.try_get(25)?,
            size_mismatch: r.try_get::<i64, _>(26)? != 0,
            bytes_received: r.try_get(27)?,
            literal_bytes: r.try_get(28)?,
            matched_bytes: r.try_get(29)?,
            basis: r.try_get(30)?,
            attempts: r.try_get(31)?,
            requeues: r.try_get(32)?,
            queue: r.try_get(33)?,
            taken_ms: r.try_get(34)?,
            duration_ms: r.try_get(35)?,
            illegal: false,
        },
        indexed_ms: r.try_get(36)?,
        expired_at: r.try_get(37)?,
        corrupt_at: r.try_get(38)?,
        mark_reason: r.try_get(39)?,
    })
    .map(|mut b: Backup| {
        b.record.illegal = b.record.log.starts_with(ubackup_messages::ILLEGAL_PREFIX);
        b
    })
}

fn row_alert(r: &AnyRow) -> Result<Alert, sqlx::Error> {
    Ok(Alert {
        id: r.try_get(0)?,
        rule: r.try_get(1)?,
        subject: r.try_get(2)?,
        server_id: r.try_get(3)?,
        back_type: r.try_get(4)?,
        instance: r.try_get(5)?,
        game_id: r.try_get(6)?,
        game_server_ip: r.try_get(7)?,
        message: r.try_get(8)?,
        opened_ms: r.try_get(9)?,
        updated_ms: r.try_get(10)?,
        resolved_ms: r.try_get(11)?,
        acked_by: r.try_get(12)?,
        acked_ms: r.try_get(13)?,
        silenced_until_ms: r.try_get(14)?,
    })
}

fn row_user(r: &AnyRow) -> Result<User, CatalogError> {
    let role: String = r.try_get(2)?;
    Ok(User {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        role: Role::parse(&role).ok_or_else(|| CatalogError::Row(format!("role {role:?}")))?,
        password_hash: r.try_get(3)?,
        focus_business: r.try_get(4)?,
    })
}

fn placeholders(rows: usize, cols: usize) -> String {
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
    has_result: bool,
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
    async fn ensure_partitions(
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
                 last_illegal_ms, last_corrupt_ms, last_corrupt_reason, seen_ms, interval_secs) \
                 VALUES {} \
                 ON CONFLICT (server_id, type_key, instance) DO UPDATE SET \
                 type = CASE WHEN excluded.last_ms > 0 THEN excluded.type ELSE instance_state.type END, \
                 game_id = COALESCE(excluded.game_id, instance_state.game_id), \
                 game_server_ip = COALESCE(excluded.game_server_ip, instance_state.game_server_ip), \
                 last_succeed = CASE WHEN excluded.last_ms > 0 AND excluded.last_ms >= instance_state.last_ms \
                    THEN excluded.last_succeed ELSE instance_state.last_succeed END, \
                 last_log = CASE WHEN excluded.last_ms > 0 AND excluded.last_ms >= instance_state.last_ms \
                    THEN excluded.last_log ELSE instance_state.last_log END, \
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
                placeholders(chunk.len(), 16)
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
                    .bind(d.interval_secs);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn fetch_backups<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Vec<Backup>, CatalogError> {
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| row_backup(r).map_err(CatalogError::from))
            .collect()
    }
}

#[async_trait]
impl Catalog for SqlCatalog {
    async fn hourly(&self, from_ms: i64, to_ms: i64) -> Result<Vec<HourRow>, CatalogError> {
        super::dashboard::hourly(&self.pool, self.engine, from_ms, to_ms).await
    }

    async fn stats_by_day(
        &self,
        by: StatsBy,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DayGroupRow>, CatalogError> {
        super::dashboard::by_day(&self.pool, self.engine, by, from_ms, to_ms).await
    }

    async fn top_instances(
        &self,
        from_ms: i64,
        to_ms: i64,
        by_failures: bool,
        limit: i64,
    ) -> Result<Vec<InstanceTotals>, CatalogError> {
        super::dashboard::top_instances(&self.pool, self.engine, from_ms, to_ms, by_failures, limit)
            .await
    }

    async fn users(&self) -> Result<Vec<(User, i64)>, CatalogError> {
        super::dashboard::users(&self.pool).await
    }

    async fn revoke_tokens(&self, user_id: i64) -> Result<u64, CatalogError> {
        super::dashboard::revoke_tokens(&self.pool, user_id).await
    }

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
            match migrator(self.engine).run(&self.pool).await {
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

    async fn history(&self, key: &InstanceKey, page: Page) -> Result<Vec<Backup>, CatalogError> {
        let stmt = format!(
            "{SELECT_BACKUP} WHERE server_id = $1 AND type_key = $2 AND instance = $3 \
             ORDER BY create_time DESC, id DESC LIMIT $4 OFFSET $5"
        );
        self.fetch_backups(
            sqlx::query(&stmt)
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
        Ok(self.fetch_backups(sqlx::query(&stmt).bind(id)).await?.pop())
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
                sqlx::query(&stmt)
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
            sqlx::query(&stmt)
                .bind(key.server_id.clone())
                .bind(key.type_key.clone())
                .bind(key.instance)
                .bind(from_ms)
                .bind(to_ms),
        )
        .await
    }

    async fn stats(
        &self,
        by: StatsBy,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StatsRow>, CatalogError> {
        let e = self.engine;
        let group = match by {
            StatsBy::Day => sql::day_of(e, "create_time"),
            StatsBy::Business => format!("COALESCE({}, '')", sql::text_of(e, "game_id")),
            StatsBy::Type => "type_key".to_string(),
            StatsBy::Node => "node_id".to_string(),
        };
        let sums = format!(
            "{group} AS g, COUNT(*), {}, {}",
            sql::sum_bigint(e, "CASE WHEN succeed = 1 THEN COALESCE(size, 0) ELSE 0 END"),
            sql::sum_bigint(e, "CASE WHEN succeed = 1 THEN 0 ELSE 1 END"),
        );
        let range = "FROM backups WHERE create_time >= $1 AND create_time < $2";
        match sql::percentiles(e) {
            Some(p) => {
                let stmt = format!("SELECT {sums}, {p} {range} GROUP BY g ORDER BY g");
                let rows = sqlx::query(&stmt)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(StatsRow {
                            group: r.try_get(0)?,
                            count: r.try_get(1)?,
                            bytes: r.try_get(2)?,
                            failures: r.try_get(3)?,
                            duration_p50_ms: r.try_get::<Option<f64>, _>(4)?.unwrap_or(0.0),
                            duration_p95_ms: r.try_get::<Option<f64>, _>(5)?.unwrap_or(0.0),
                        })
                    })
                    .collect()
            }
            None => {
                let stmt = format!("SELECT {sums} {range} GROUP BY g ORDER BY g");
                let rows = sqlx::query(&stmt)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    out.push(StatsRow {
                        group: r.try_get(0)?,
                        count: r.try_get(1)?,
                        bytes: r.try_get(2)?,
                        failures: r.try_get(3)?,
                        duration_p50_ms: 0.0,
                        duration_p95_ms: 0.0,
                    });
                }
                // Percentiles from the sorted durations of each group (nearest rank, the
                // interpolation PostgreSQL's percentile_cont does is within one sample).
                let stmt =
                    format!("SELECT {group} AS g, duration_ms {range} ORDER BY g, duration_ms");
                let rows = sqlx::query(&stmt)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(&self.pool)
                    .await?;
                let mut by_group: BTreeMap<String, Vec<i64>> = BTreeMap::new();
                for r in &rows {
                    by_group
                        .entry(r.try_get(0)?)
                        .or_default()
                        .push(r.try_get(1)?);
                }
                for s in &mut out {
                    if let Some(d) = by_group.get(&s.group) {
                        s.duration_p50_ms = percentile(d, 0.5);
                        s.duration_p95_ms = percentile(d, 0.95);
                    }
                }
                Ok(out)
            }
        }
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

    async fn instances_per_business(&self) -> Result<Vec<(i64, i64)>, CatalogError> {
        let rows = sqlx::query(
            "SELECT business_id, COUNT(*) FROM instances WHERE business_id IS NOT NULL \
             GROUP BY business_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn instances(&self) -> Result<Vec<Instance>, CatalogError> {
        let rows = sqlx::query(
            "SELECT server_id, type_key, instance, name, business_id, interval_secs, enabled, \
             created_ms FROM instances ORDER BY server_id, type_key, instance",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Instance {
                    key: InstanceKey {
                        server_id: r.try_get(0)?,
                        type_key: r.try_get(1)?,
                        instance: r.try_get(2)?,
                    },
                    name: r.try_get(3)?,
                    business_id: r.try_get(4)?,
                    interval_secs: r.try_get(5)?,
                    enabled: r.try_get::<i64, _>(6)? != 0,
                    created_ms: r.try_get(7)?,
                })
            })
            .collect()
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
        let rows = sqlx::query("SELECT business_id, name FROM businesses ORDER BY business_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Business {
                    business_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                })
            })
            .collect()
    }

    async fn upsert_businesses(&self, rows: &[Business]) -> Result<u64, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for x in rows {
            n += sqlx::query(
                "INSERT INTO businesses (business_id, name) VALUES ($1, $2) \
                 ON CONFLICT (business_id) DO UPDATE SET name = excluded.name",
            )
            .bind(x.business_id)
            .bind(x.name.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn backup_types(&self) -> Result<Vec<BackupType>, CatalogError> {
        let rows = sqlx::query("SELECT id, name FROM backup_types ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(BackupType {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                })
            })
            .collect()
    }

    async fn upsert_backup_types(&self, rows: &[BackupType]) -> Result<u64, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for x in rows {
            n += sqlx::query(
                "INSERT INTO backup_types (id, name) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            )
            .bind(x.id)
            .bind(x.name.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn instance_states(&self) -> Result<Vec<InstanceState>, CatalogError> {
        let rows = sqlx::query(
            "SELECT server_id, type_key, instance, type, game_id, game_server_ip, last_ms, \
             last_succeed, last_log, last_ok_ms, last_illegal_ms, last_corrupt_ms, \
             last_corrupt_reason, interval_secs FROM instance_state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceState {
                    key: InstanceKey {
                        server_id: r.try_get(0)?,
                        type_key: r.try_get(1)?,
                        instance: r.try_get(2)?,
                    },
                    back_type: r.try_get(3)?,
                    game_id: r.try_get(4)?,
                    game_server_ip: r.try_get(5)?,
                    last_ms: r.try_get(6)?,
                    last_succeed: r.try_get::<i64, _>(7)? != 0,
                    last_log: r.try_get(8)?,
                    last_ok_ms: r.try_get(9)?,
                    last_illegal_ms: r.try_get(10)?,
                    last_corrupt_ms: r.try_get(11)?,
                    last_corrupt_reason: r.try_get(12)?,
                    interval_secs: r.try_get(13)?,
                })
            })
            .collect()
    }

    async fn broken_chains(&self) -> Result<Vec<(InstanceKey, String)>, CatalogError> {
        let rows = sqlx::query(
            "SELECT s.server_id, s.type_key, s.instance, s.last_ok_full FROM instance_state s \
             WHERE s.last_ok_full IS NOT NULL AND NOT EXISTS (SELECT 1 FROM backups b \
             WHERE b.server_id = s.server_id AND b.type_key = s.type_key \
             AND b.instance = s.instance AND b.filename = s.last_ok_full AND b.succeed = 1 \
             AND b.expired_at IS NULL AND b.corrupt_at IS NULL)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    InstanceKey {
                        server_id: r.try_get(0)?,
                        type_key: r.try_get(1)?,
                        instance: r.try_get(2)?,
                    },
                    r.try_get(3)?,
                ))
            })
            .collect()
    }

    async fn agents_seen(
        &self,
        seen: &[(String, String)],
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await?;
        for (server, cluster) in seen {
            sqlx::query(
                "INSERT INTO agents (server_id, cluster, last_seen_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (server_id, cluster) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
            )
            .bind(server.clone())
            .bind(cluster.clone())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<(String, String, i64)>, CatalogError> {
        let rows = sqlx::query("SELECT server_id, cluster, last_seen_ms FROM agents")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    async fn nodes_seen(
        &self,
        seen: &[(String, String, String)],
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await?;
        for (node, cluster, ip) in seen {
            sqlx::query(
                "INSERT INTO nodes (node_id, cluster, ip, last_seen_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (node_id) DO UPDATE SET cluster = excluded.cluster, \
                 ip = excluded.ip, last_seen_ms = excluded.last_seen_ms",
            )
            .bind(node.clone())
            .bind(cluster.clone())
            .bind(ip.clone())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<(String, String, String, i64)>, CatalogError> {
        let rows = sqlx::query("SELECT node_id, cluster, ip, last_seen_ms FROM nodes")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect()
    }

    async fn open_alerts(&self) -> Result<Vec<Alert>, CatalogError> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE resolved_ms IS NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_alert).collect::<Result<_, _>>()?)
    }

    async fn open_alert(&self, a: &NewAlert, now_ms: i64) -> Result<Option<Alert>, CatalogError> {
        // The partial unique index keeps one open alert per (rule, subject) even with several
        // indexers evaluating at once.
        let inserted = sqlx::query(&format!(
            "INSERT INTO alerts (rule, subject, server_id, type, instance, game_id, \
             game_server_ip, message, opened_ms, updated_ms) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$9) \
             ON CONFLICT (rule, subject) WHERE resolved_ms IS NULL DO NOTHING RETURNING {ALERT_COLS}"
        ))
        .bind(a.rule.clone())
        .bind(a.subject.clone())
        .bind(a.key.as_ref().map(|k| k.server_id.clone()))
        .bind(a.key.as_ref().map(|k| k.type_key.clone()))
        .bind(a.key.as_ref().map(|k| k.instance))
        .bind(a.game_id)
        .bind(a.game_server_ip.clone())
        .bind(a.message.clone())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        match inserted {
            Some(r) => Ok(Some(row_alert(&r)?)),
            None => {
                sqlx::query(
                    "UPDATE alerts SET message = $1, updated_ms = $2 WHERE rule = $3 \
                     AND subject = $4 AND resolved_ms IS NULL",
                )
                .bind(a.message.clone())
                .bind(now_ms)
                .bind(a.rule.clone())
                .bind(a.subject.clone())
                .execute(&self.pool)
                .await?;
                Ok(None)
            }
        }
    }

    async fn resolve_alert(
        &self,
        rule: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Option<Alert>, CatalogError> {
        let row = sqlx::query(&format!(
            "UPDATE alerts SET resolved_ms = $1, updated_ms = $1 WHERE rule = $2 \
             AND subject = $3 AND resolved_ms IS NULL RETURNING {ALERT_COLS}"
        ))
        .bind(now_ms)
        .bind(rule.to_string())
        .bind(subject.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(row_alert).transpose()?)
    }

    async fn ack_alert(&self, id: i64, user: &str, now_ms: i64) -> Result<bool, CatalogError> {
        Ok(
            sqlx::query("UPDATE alerts SET acked_by = $1, acked_ms = $2 WHERE id = $3")
                .bind(user.to_string())
                .bind(now_ms)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn silence_alert(&self, id: i64, until_ms: i64) -> Result<bool, CatalogError> {
        Ok(
            sqlx::query("UPDATE alerts SET silenced_until_ms = $1 WHERE id = $2")
                .bind(until_ms)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn alerts(&self, f: &AlertFilter) -> Result<Vec<Alert>, CatalogError> {
        let sql = format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE {ALERT_WHERE} ORDER BY {} opened_ms DESC, \
             id DESC LIMIT $8 OFFSET $9",
            first_order(&f.first_businesses)
        );
        let rows = bind_alert_filter(sqlx::query(&sql), f)
            .bind(f.limit.unwrap_or(1000).clamp(1, 100_000))
            .bind(f.offset.max(0))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(row_alert).collect::<Result<_, _>>()?)
    }

    async fn count_alerts(&self, f: &AlertFilter) -> Result<i64, CatalogError> {
        let sql = format!("SELECT COUNT(*) FROM alerts WHERE {ALERT_WHERE}");
        let row = bind_alert_filter(sqlx::query(&sql), f)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn alert(&self, id: i64) -> Result<Option<Alert>, CatalogError> {
        let row = sqlx::query(&format!("SELECT {ALERT_COLS} FROM alerts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(row_alert).transpose()?)
    }

    async fn open_alert_rules(&self) -> Result<Vec<String>, CatalogError> {
        let rows = sqlx::query("SELECT DISTINCT rule FROM alerts WHERE resolved_ms IS NULL")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }

    async fn put_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<i64, CatalogError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (name, role, password_hash, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, \
             password_hash = excluded.password_hash RETURNING id",
        )
        .bind(name.to_string())
        .bind(role.name())
        .bind(password_hash.to_string())
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn user(&self, name: &str) -> Result<Option<User>, CatalogError> {
        let row = sqlx::query(
            "SELECT id, name, role, password_hash, focus_business FROM users WHERE name = $1",
        )
        .bind(name.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_user).transpose()
    }

    async fn add_token(
        &self,
        user_id: i64,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        sqlx::query("INSERT INTO tokens (user_id, token_hash, created_ms) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(token_hash.to_string())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn user_by_token(&self, token_hash: &str) -> Result<Option<User>, CatalogError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role, u.password_hash, u.focus_business FROM tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(token_hash.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_user).transpose()
    }

    async fn set_focus(&self, user_id: i64, focus_json: &str) -> Result<(), CatalogError> {
        sqlx::query("UPDATE users SET focus_business = $1 WHERE id = $2")
            .bind(focus_json.to_string())
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit(
        &self,
        at_ms: i64,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, user_name, action, detail) VALUES ($1,$2,$3,$4)",
        )
        .bind(at_ms)
        .bind(user.to_string())
        .bind(action.to_string())
        .bind(detail.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, CatalogError> {
        let rows = sqlx::query(
            "SELECT at_ms, user_name, action, detail FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at_ms: r.try_get(0)?,
                    user: r.try_get(1)?,
                    action: r.try_get(2)?,
                    detail: r.try_get(3)?,
                })
            })
            .collect()
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}
