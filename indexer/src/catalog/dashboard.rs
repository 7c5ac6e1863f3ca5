//! The dashboard's aggregate queries (the web pages' Overview and Statistics): results per
//! hour, per day × one dimension, and the instances that fail most or run slowest. Same SQL
//! text on both engines except the pieces from [`super::sql`].

use serde::Serialize;
use sqlx::{AnyPool, Row as _};

use super::{sql, CatalogError, Engine, InstanceKey, StatsBy};

/// One hour of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceTotals {
    /// The instance.
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

fn sums(e: Engine) -> String {
    format!(
        "COUNT(*), {}, {}",
        sql::sum_bigint(e, "CASE WHEN succeed = 1 THEN COALESCE(size, 0) ELSE 0 END"),
        sql::sum_bigint(e, "CASE WHEN succeed = 1 THEN 0 ELSE 1 END"),
    )
}

/// Results per hour in `from_ms..to_ms`.
pub async fn hourly(
    pool: &AnyPool,
    e: Engine,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<HourRow>, CatalogError> {
    let stmt = format!(
        "SELECT (create_time / 3600000) * 3600000 AS h, {} FROM backups \
         WHERE create_time >= $1 AND create_time < $2 GROUP BY h ORDER BY h",
        sums(e)
    );
    let rows = sqlx::query(&stmt)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(HourRow {
                hour_ms: r.try_get(0)?,
                count: r.try_get(1)?,
                bytes: r.try_get(2)?,
                failures: r.try_get(3)?,
            })
        })
        .collect()
}

/// Results per UTC day × `by` in `from_ms..to_ms` (`by` = Day groups by day alone).
pub async fn by_day(
    pool: &AnyPool,
    e: Engine,
    by: StatsBy,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<DayGroupRow>, CatalogError> {
    let group = match by {
        StatsBy::Day => "''".to_string(),
        StatsBy::Business => format!("COALESCE({}, '')", sql::text_of(e, "game_id")),
        StatsBy::Type => "type_key".to_string(),
        StatsBy::Node => "node_id".to_string(),
    };
    let stmt = format!(
        "SELECT {day} AS d, {group} AS g, {sums}, {avg}, {max} FROM backups \
         WHERE create_time >= $1 AND create_time < $2 GROUP BY d, g ORDER BY d, g",
        day = sql::day_of(e, "create_time"),
        sums = sums(e),
        avg = float_avg(e, "duration_ms"),
        max = max_bigint(e, "duration_ms"),
    );
    let rows = sqlx::query(&stmt)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(DayGroupRow {
                day: r.try_get(0)?,
                group: r.try_get(1)?,
                count: r.try_get(2)?,
                bytes: r.try_get(3)?,
                failures: r.try_get(4)?,
                duration_avg_ms: r.try_get::<Option<f64>, _>(5)?.unwrap_or(0.0),
                duration_max_ms: r.try_get::<Option<i64>, _>(6)?.unwrap_or(0),
            })
        })
        .collect()
}

/// The `limit` instances with the most failures (`by_failures`) or the longest mean pull
/// in `from_ms..to_ms`.
pub async fn top_instances(
    pool: &AnyPool,
    e: Engine,
    from_ms: i64,
    to_ms: i64,
    by_failures: bool,
    limit: i64,
) -> Result<Vec<InstanceTotals>, CatalogError> {
    let order = if by_failures {
        "f DESC, c DESC"
    } else {
        "a DESC"
    };
    let having = if by_failures {
        "HAVING SUM(CASE WHEN succeed = 1 THEN 0 ELSE 1 END) > 0"
    } else {
        ""
    };
    let stmt = format!(
        "SELECT server_id, type_key, instance, COUNT(*) AS c, {f} AS f, {avg} AS a, {max} FROM backups \
         WHERE create_time >= $1 AND create_time < $2 GROUP BY server_id, type_key, instance {having} \
         ORDER BY {order} LIMIT $3",
        f = sql::sum_bigint(e, "CASE WHEN succeed = 1 THEN 0 ELSE 1 END"),
        avg = float_avg(e, "duration_ms"),
        max = max_bigint(e, "duration_ms"),
    );
    let rows = sqlx::query(&stmt)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(InstanceTotals {
                key: InstanceKey {
                    server_id: r.try_get(0)?,
                    type_key: r.try_get(1)?,
                    instance: r.try_get(2)?,
                },
                count: r.try_get(3)?,
                failures: r.try_get(4)?,
                duration_avg_ms: r.try_get::<Option<f64>, _>(5)?.unwrap_or(0.0),
                duration_max_ms: r.try_get::<Option<i64>, _>(6)?.unwrap_or(0),
            })
        })
        .collect()
}

/// `AVG` as a double on both engines.
fn float_avg(e: Engine, col: &str) -> String {
    match e {
        Engine::Sqlite => format!("CAST(AVG({col}) AS REAL)"),
        Engine::Postgres => format!("AVG({col})::FLOAT8"),
    }
}

/// `MAX` of a BIGINT.
fn max_bigint(e: Engine, col: &str) -> String {
    match e {
        Engine::Sqlite => format!("MAX({col})"),
        Engine::Postgres => format!("MAX({col})::BIGINT"),
    }
}

/// Every user with its token count, by name.
pub async fn users(pool: &AnyPool) -> Result<Vec<(super::User, i64)>, CatalogError> {
    let rows = sqlx::query(
        "SELECT u.id, u.name, u.role, u.password_hash, u.focus_business, \
         (SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id) FROM users u ORDER BY u.name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get(2)?;
            Ok((
                super::User {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    role: super::Role::parse(&role)
                        .ok_or_else(|| CatalogError::Row(format!("role {role:?}")))?,
                    password_hash: r.try_get(3)?,
                    focus_business: r.try_get(4)?,
                },
                r.try_get(5)?,
            ))
        })
        .collect()
}

/// Removes every API token of a user; how many.
pub async fn revoke_tokens(pool: &AnyPool, user_id: i64) -> Result<u64, CatalogError> {
    Ok(sqlx::query("DELETE FROM tokens WHERE user_id = $1")
        .bind(user_id)
        .execute(pool)
        .await?
        .rows_affected())
}
