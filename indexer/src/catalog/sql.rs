//! The statements that differ between SQLite and PostgreSQL, each next to its twin. Every
//! other statement in [`super::SqlCatalog`] is the same text on both engines (`$N`
//! placeholders work on both).

use super::Engine;

/// Largest of two expressions: SQLite's scalar `MAX`, PostgreSQL's `GREATEST`.
pub fn greatest(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "MAX",
        Engine::Postgres => "GREATEST",
    }
}

/// The UTC day of an epoch-ms column, `YYYY-MM-DD`.
pub fn day_of(engine: Engine, col: &str) -> String {
    match engine {
        Engine::Sqlite => format!("strftime('%Y-%m-%d', {col} / 1000, 'unixepoch')"),
        Engine::Postgres => {
            format!("to_char(to_timestamp({col} / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
        }
    }
}

/// A text cast of an integer column (for grouping keys).
pub fn text_of(engine: Engine, col: &str) -> String {
    match engine {
        Engine::Sqlite => format!("CAST({col} AS TEXT)"),
        Engine::Postgres => format!("{col}::text"),
    }
}

/// `SUM` of a BIGINT as a BIGINT (PostgreSQL's SUM(bigint) is NUMERIC).
pub fn sum_bigint(engine: Engine, expr: &str) -> String {
    match engine {
        Engine::Sqlite => format!("COALESCE(SUM({expr}), 0)"),
        Engine::Postgres => format!("COALESCE(SUM({expr}), 0)::BIGINT"),
    }
}

/// The duration percentiles inside a grouped select (as `duration_p50_ms`,
/// `duration_p95_ms`), when the engine has them; SQLite has
/// no percentile aggregate, and the catalog computes them from the sorted durations instead.
pub fn percentiles(engine: Engine) -> Option<&'static str> {
    match engine {
        Engine::Sqlite => None,
        Engine::Postgres => Some(
            "COALESCE(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms)::FLOAT8, 0) \
             AS duration_p50_ms, \
             COALESCE(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)::FLOAT8, 0) \
             AS duration_p95_ms",
        ),
    }
}

/// Statements run on every new connection.
pub fn connection_setup(engine: Engine) -> &'static [&'static str] {
    match engine {
        // One file, write-ahead log: readers never block the writer; NORMAL is durable at
        // each checkpoint and consistent at every commit under WAL.
        Engine::Sqlite => &[
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
            "PRAGMA busy_timeout = 10000",
            "PRAGMA foreign_keys = ON",
        ],
        Engine::Postgres => &["SET TIME ZONE 'UTC'"],
    }
}

/// The name of the monthly partition holding `month` (months since 1970-01).
pub fn partition_name(month: i64) -> String {
    let (y, m) = (1970 + month.div_euclid(12), month.rem_euclid(12) + 1);
    format!("backups_y{y:04}m{m:02}")
}

/// Parses a partition name back into its month index.
pub fn partition_month(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("backups_y")?;
    let (y, m) = rest.split_once('m')?;
    let (y, m): (i64, i64) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then(|| (y - 1970) * 12 + (m - 1))
}

/// PostgreSQL only: creates the partition of `month` (months since 1970-01) if missing.
pub fn create_partition(month: i64) -> String {
    let from = month_start_ms(month);
    let to = month_start_ms(month + 1);
    format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF backups FOR VALUES FROM ({from}) TO ({to})",
        partition_name(month)
    )
}

/// PostgreSQL only: the partitions of `backups`.
pub const LIST_PARTITIONS: &str = "SELECT c.relname::text FROM pg_inherits i \
     JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
     WHERE p.relname = 'backups'";

/// Epoch ms of the first instant of `month` (months since 1970-01), UTC; clamped to the years
/// -9999..=9999.
pub fn month_start_ms(month: i64) -> i64 {
    let y = (1970 + month.div_euclid(12)).clamp(-9999, 9999) as i16;
    let m = (month.rem_euclid(12) + 1) as i8;
    crate::clock::utc_midnight_ms(jiff::civil::date(y, m, 1))
}

/// The month index (months since 1970-01) of epoch ms `ms`, UTC.
pub fn month_of(ms: i64) -> i64 {
    let d = crate::clock::utc_date(ms);
    (i64::from(d.year()) - 1970) * 12 + i64::from(d.month()) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roundtrip_and_name_partitions() {
        assert_eq!(month_of(0), 0);
        assert_eq!(month_start_ms(0), 0);
        // 2023-11-14T22:13:20Z
        let m = month_of(1_700_000_000_000);
        assert_eq!(partition_name(m), "backups_y2023m11");
        assert_eq!(partition_month("backups_y2023m11"), Some(m));
        assert!(month_start_ms(m) <= 1_700_000_000_000);
        assert!(month_start_ms(m + 1) > 1_700_000_000_000);
        assert_eq!(month_start_ms(m + 1), 1_701_388_800_000); // 2023-12-01
        for mm in -30..1000 {
            assert_eq!(month_of(month_start_ms(mm)), mm);
            assert_eq!(month_of(month_start_ms(mm + 1) - 1), mm);
        }
        assert_eq!(partition_month("backups_y2023m13"), None);
    }
}
