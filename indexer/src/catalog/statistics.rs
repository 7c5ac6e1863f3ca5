//! Statistics and the dashboard's aggregates (the web pages' Overview and Statistics):
//! grouped statistics with duration percentiles, results per hour, per day × one dimension,
//! and the instances that fail most or run slowest. Same SQL text on both engines except the
//! pieces from [`super::sql`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;

use super::{sql, CatalogError, Engine, InstanceKey, SqlCatalog, StatsBy, StatsRow};

/// Aggregates over the backups of a time range.
#[async_trait]
pub trait StatsCatalog: Send + Sync {
    /// Statistics grouped by `by`, over `from_ms..to_ms`.
    async fn stats(
        &self,
        by: StatsBy,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StatsRow>, CatalogError>;
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
    /// The registry's backup coverage now, each instance counted once (see [`Coverage`]).
    async fn coverage(&self) -> Result<Coverage, CatalogError>;
}

/// How many registered instances are in each state, each counted once, first match wins:
/// disabled; overdue (an open `overdue` alert); failing (its latest result failed);
/// awaiting its first backup (no success yet); ok.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Coverage {
    /// Registered instances.
    pub total: i64,
    /// Disabled in the registry.
    pub disabled: i64,
    /// With an open `overdue` alert.
    pub overdue: i64,
    /// Latest result failed, not overdue.
    pub failing: i64,
    /// No success yet, latest result not a failure, not overdue.
    pub awaiting: i64,
}

impl Coverage {
    /// Enabled, not overdue, latest result a success.
    pub fn ok(&self) -> i64 {
        (self.total - self.disabled - self.overdue - self.failing - self.awaiting).max(0)
    }
}

/// One hour of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HourRow {
    /// Start of the hour (epoch ms, UTC-aligned).
    pub hour_ms: i64,
    /// Results.
    pub count: i64,
    /// Bytes of successful backups.
    pub bytes: i64,
    /// Failed results.
    pub failures: i64,
}

/// One day × group of results.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DayGroupRow {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The group (business id, type or node).
    pub group: String,
    /// Results.
    pub count: i64,
    /// Bytes of successful backups.
    pub bytes: i64,
    /// Failed results.
    pub failures: i64,
    /// Mean pull duration (ms).
    pub duration_avg_ms: f64,
    /// Longest pull (ms).
    pub duration_max_ms: i64,
}

/// One instance's totals over a range.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct InstanceTotals {
    /// The instance.
    #[sqlx(flatten)]
    pub key: InstanceKey,
    /// Results.
    pub count: i64,
    /// Failed results.
    pub failures: i64,
    /// Mean pull duration (ms).
    pub duration_avg_ms: f64,
    /// Longest pull (ms).
    pub duration_max_ms: i64,
}

/// `count, bytes, failures` of a group.
fn sums(e: Engine) -> String {
    format!(
        "COUNT(*) AS count, {} AS bytes, {} AS failures",
        sql::sum_bigint(e, "CASE WHEN succeed = 1 THEN COALESCE(size, 0) ELSE 0 END"),
        sql::sum_bigint(e, "CASE WHEN succeed = 1 THEN 0 ELSE 1 END"),
    )
}

#[async_trait]
impl StatsCatalog for SqlCatalog {
    async fn coverage(&self) -> Result<Coverage, CatalogError> {
        // One pass over the registry, its state rows and the open `overdue` alerts, joined by
        // subject (`InstanceKey::subject`) through the partial unique index on open
        // (rule, subject): at most one per instance.
        const FAILING: &str = "COALESCE(st.last_ms, 0) > 0 AND COALESCE(st.last_succeed, 0) = 0";
        let sql = format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS total, \
             CAST(COALESCE(SUM(CASE WHEN i.enabled = 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS disabled, \
             CAST(COALESCE(SUM(CASE WHEN i.enabled <> 0 AND o.id IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS overdue, \
             CAST(COALESCE(SUM(CASE WHEN i.enabled <> 0 AND o.id IS NULL AND {FAILING} THEN 1 ELSE 0 END), 0) AS BIGINT) AS failing, \
             CAST(COALESCE(SUM(CASE WHEN i.enabled <> 0 AND o.id IS NULL AND NOT ({FAILING}) \
                 AND COALESCE(st.last_ok_ms, 0) = 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS awaiting \
             FROM instances i \
             LEFT JOIN instance_state st ON st.server_id = i.server_id \
                 AND st.type_key = i.type_key AND st.instance = i.instance \
             LEFT JOIN alerts o ON o.resolved_ms IS NULL AND o.rule = 'overdue' \
                 AND o.subject = i.server_id || ':' || i.type_key || ':' || i.instance"
        );
        Ok(sqlx::query_as(&sql).fetch_one(&self.pool).await?)
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
        // Aliases are [`StatsRow`]'s field names (GROUP is a keyword, so quoted).
        let cols = format!("{group} AS \"group\", {}", sums(e));
        let range = "FROM backups WHERE create_time >= $1 AND create_time < $2";
        match sql::percentiles(e) {
            Some(p) => {
                let stmt = format!("SELECT {cols}, {p} {range} GROUP BY 1 ORDER BY 1");
                Ok(sqlx::query_as(&stmt)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(&self.pool)
                    .await?)
            }
            None => {
                // No percentile columns: the row's `#[sqlx(default)]` leaves them 0.
                let stmt = format!("SELECT {cols} {range} GROUP BY 1 ORDER BY 1");
                let mut out: Vec<StatsRow> = sqlx::query_as(&stmt)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(&self.pool)
                    .await?;
                // Percentiles from the sorted durations of each group (nearest rank, the
                // interpolation PostgreSQL's percentile_cont does is within one sample).
                let stmt =
                    format!("SELECT {group} AS g, duration_ms {range} ORDER BY g, duration_ms");
                let rows: Vec<(String, i64)> = sqlx::query_as(&stmt)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(&self.pool)
                    .await?;
                let mut by_group: BTreeMap<String, Vec<i64>> = BTreeMap::new();
                for (g, d) in rows {
                    by_group.entry(g).or_default().push(d);
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

    async fn hourly(&self, from_ms: i64, to_ms: i64) -> Result<Vec<HourRow>, CatalogError> {
        let stmt = format!(
            "SELECT (create_time / 3600000) * 3600000 AS hour_ms, {} FROM backups \
             WHERE create_time >= $1 AND create_time < $2 GROUP BY hour_ms ORDER BY hour_ms",
            sums(self.engine)
        );
        Ok(sqlx::query_as(&stmt)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn stats_by_day(
        &self,
        by: StatsBy,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DayGroupRow>, CatalogError> {
        let e = self.engine;
        let group = match by {
            StatsBy::Day => "''".to_string(),
            StatsBy::Business => format!("COALESCE({}, '')", sql::text_of(e, "game_id")),
            StatsBy::Type => "type_key".to_string(),
            StatsBy::Node => "node_id".to_string(),
        };
        // `day`, `group`: the row's field names (quoted: GROUP is a keyword).
        let stmt = format!(
            "SELECT {day} AS day, {group} AS \"group\", {sums}, {avg} AS duration_avg_ms, \
             {max} AS duration_max_ms FROM backups \
             WHERE create_time >= $1 AND create_time < $2 GROUP BY 1, 2 ORDER BY 1, 2",
            day = sql::day_of(e, "create_time"),
            sums = sums(e),
            avg = float_avg(e, "duration_ms"),
            max = max_bigint(e, "duration_ms"),
        );
        Ok(sqlx::query_as(&stmt)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn top_instances(
        &self,
        from_ms: i64,
        to_ms: i64,
        by_failures: bool,
        limit: i64,
    ) -> Result<Vec<InstanceTotals>, CatalogError> {
        let e = self.engine;
        let order = if by_failures {
            "failures DESC, count DESC"
        } else {
            "duration_avg_ms DESC"
        };
        let having = if by_failures {
            "HAVING SUM(CASE WHEN succeed = 1 THEN 0 ELSE 1 END) > 0"
        } else {
            ""
        };
        let stmt = format!(
            "SELECT server_id, type_key, instance, COUNT(*) AS count, {f} AS failures, \
             {avg} AS duration_avg_ms, {max} AS duration_max_ms FROM backups \
             WHERE create_time >= $1 AND create_time < $2 \
             GROUP BY server_id, type_key, instance {having} ORDER BY {order} LIMIT $3",
            f = sql::sum_bigint(e, "CASE WHEN succeed = 1 THEN 0 ELSE 1 END"),
            avg = float_avg(e, "duration_ms"),
            max = max_bigint(e, "duration_ms"),
        );
        Ok(sqlx::query_as(&stmt)
            .bind(from_ms)
            .bind(to_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }
}

/// `AVG` as a double on both engines.
fn float_avg(e: Engine, col: &str) -> String {
    match e {
        Engine::Sqlite => format!("COALESCE(CAST(AVG({col}) AS REAL), 0.0)"),
        Engine::Postgres => format!("COALESCE(AVG({col})::FLOAT8, 0)"),
    }
}

/// `MAX` of a BIGINT.
fn max_bigint(e: Engine, col: &str) -> String {
    match e {
        Engine::Sqlite => format!("COALESCE(MAX({col}), 0)"),
        Engine::Postgres => format!("COALESCE(MAX({col}), 0)::BIGINT"),
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
