//! Alerts: open, refresh, resolve, acknowledge, silence, list.

use async_trait::async_trait;

use super::engine::{b, placeholders, Engine};
use super::outbox::{insert_events, OutEvent};
use super::{Alert, AlertFilter, AlertState, CatalogError, NewAlert, SqlCatalog};

/// What one evaluation changes in the alerts table, written in one transaction by
/// [`AlertCatalog::apply_alerts`].
#[derive(Debug, Clone, Default)]
pub struct AlertChanges {
    /// Alerts to open (skipped when one is already open for their (rule, subject)).
    pub open: Vec<NewAlert>,
    /// Open alerts whose message or cause (`held_by`) changed.
    pub refresh: Vec<NewAlert>,
    /// Ids of open alerts to resolve.
    pub resolve: Vec<i64>,
}

/// What [`AlertCatalog::apply_alerts`] did.
#[derive(Debug, Clone, Default)]
pub struct AppliedAlerts {
    /// Alerts newly opened (another indexer may have opened some of the asked ones first).
    pub opened: Vec<Alert>,
    /// Open alerts whose message or cause changed, as they are now.
    pub refreshed: Vec<Alert>,
    /// Alerts resolved.
    pub resolved: Vec<Alert>,
}

/// Turns what a transaction changed into outbox events (the delivery's routing), called inside
/// that transaction.
pub type RouteFn<'a> = &'a (dyn Fn(&AppliedAlerts) -> Vec<OutEvent> + Send + Sync);

/// The alerts table.
#[async_trait]
pub trait AlertCatalog: Send + Sync {
    /// Open alerts.
    async fn open_alerts(&self) -> Result<Vec<Alert>, CatalogError>;
    /// Which of `subjects` have an open alert of `rule` (a page's worth).
    async fn open_subjects(
        &self,
        rule: &str,
        subjects: &[String],
    ) -> Result<Vec<String>, CatalogError>;
    /// Opens an alert unless one is open for (rule, subject); refreshes its message if so.
    /// Returns the alert when it was newly opened.
    async fn open_alert(&self, a: &NewAlert, now_ms: i64) -> Result<Option<Alert>, CatalogError>;
    /// Applies one evaluation's changes in one transaction: multi-row inserts for the new
    /// alerts, one statement per chunk of resolutions, and the outbox events `route` makes
    /// of them, so an alert never opens without its notification queued (a crash between
    /// two writes would lose it).
    async fn apply_alerts(
        &self,
        changes: &AlertChanges,
        now_ms: i64,
        route: RouteFn<'_>,
    ) -> Result<AppliedAlerts, CatalogError>;
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
}

const ALERT_COLS: &str = "id, rule, subject, server_id, type, instance, game_id, game_server_ip, \
    message, opened_ms, updated_ms, resolved_ms, acked_by, acked_ms, silenced_until_ms, held_by";

/// The WHERE clause of an [`AlertFilter`] ($1..$8, bound by [`alert_filter_args`]).
const ALERT_WHERE: &str = "($1 = 0 OR resolved_ms IS NULL) AND ($2 = '' OR rule = $2) \
     AND ($8 = '' OR held_by = $8) \
     AND ($3 = 0 OR game_id = $4) AND ($5 = 0 \
     OR ($5 = 1 AND resolved_ms IS NULL AND acked_ms IS NULL \
         AND (silenced_until_ms IS NULL OR silenced_until_ms <= $6)) \
     OR ($5 = 2 AND resolved_ms IS NULL AND acked_ms IS NOT NULL \
         AND (silenced_until_ms IS NULL OR silenced_until_ms <= $7)) \
     OR ($5 = 3 AND resolved_ms IS NULL AND silenced_until_ms > $6) \
     OR ($5 = 4 AND resolved_ms IS NOT NULL))";

/// The arguments of [`ALERT_WHERE`] for `f`, then `extra` ($9, … for paging).
fn alert_filter_args(
    f: &AlertFilter,
    extra: &[i64],
) -> Result<sqlx::any::AnyArguments<'static>, CatalogError> {
    use sqlx::Arguments as _;
    let state = match f.state {
        None => 0i64,
        Some(AlertState::Open) => 1,
        Some(AlertState::Acked) => 2,
        Some(AlertState::Silenced) => 3,
        Some(AlertState::Resolved) => 4,
    };
    let mut args = sqlx::any::AnyArguments::default();
    let encode = |e| CatalogError::Db(sqlx::Error::Encode(e));
    args.add(b(f.open)).map_err(encode)?;
    args.add(f.rule.clone().unwrap_or_default())
        .map_err(encode)?;
    for v in [
        b(f.business.is_some()),
        f.business.unwrap_or(0),
        state,
        f.now_ms,
        f.now_ms,
    ]
    .into_iter()
    {
        args.add(v).map_err(encode)?;
    }
    args.add(f.held_by.clone().unwrap_or_default())
        .map_err(encode)?;
    for v in extra {
        args.add(*v).map_err(encode)?;
    }
    Ok(args)
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

/// Rows per multi-row alert INSERT (10 parameters each) or ids per resolving UPDATE. SQLite's
/// cost per `$N` parameter grows with the statement, so it gets smaller ones.
fn alert_chunk(engine: Engine) -> usize {
    match engine {
        Engine::Sqlite => 50,
        Engine::Postgres => 1000,
    }
}

/// `($n,$n+1,…)`: `count` placeholders from `$first`.
fn id_list(first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    format!("({})", list.join(","))
}

#[async_trait]
impl AlertCatalog for SqlCatalog {
    async fn apply_alerts(
        &self,
        changes: &AlertChanges,
        now_ms: i64,
        route: RouteFn<'_>,
    ) -> Result<AppliedAlerts, CatalogError> {
        let mut out = AppliedAlerts::default();
        let chunk = alert_chunk(self.engine);
        let mut tx = self.pool.begin().await?;
        for rows in changes.open.chunks(chunk) {
            // The partial unique index keeps one open alert per (rule, subject) even with
            // several indexers evaluating at once: a row another one opened first is skipped.
            let sql = format!(
                "INSERT INTO alerts (rule, subject, server_id, type, instance, game_id, \
                 game_server_ip, message, opened_ms, updated_ms, held_by) VALUES {} \
                 ON CONFLICT (rule, subject) WHERE resolved_ms IS NULL DO NOTHING \
                 RETURNING {ALERT_COLS}",
                placeholders(rows.len(), 11)
            );
            let mut q = sqlx::query_as::<_, Alert>(&sql);
            for a in rows {
                q = q
                    .bind(a.rule.clone())
                    .bind(a.subject.clone())
                    .bind(a.key.as_ref().map(|k| k.server_id.clone()))
                    .bind(a.key.as_ref().map(|k| k.type_key.clone()))
                    .bind(a.key.as_ref().map(|k| k.instance))
                    .bind(a.game_id)
                    .bind(a.game_server_ip.clone())
                    .bind(a.message.clone())
                    .bind(now_ms)
                    .bind(now_ms)
                    .bind(a.held_by.clone());
            }
            out.opened.extend(q.fetch_all(&mut *tx).await?);
        }
        for a in &changes.refresh {
            let row = sqlx::query_as::<_, Alert>(&format!(
                "UPDATE alerts SET message = $1, updated_ms = $2, held_by = $3 WHERE rule = $4 \
                 AND subject = $5 AND resolved_ms IS NULL RETURNING {ALERT_COLS}"
            ))
            .bind(a.message.clone())
            .bind(now_ms)
            .bind(a.held_by.clone())
            .bind(a.rule.clone())
            .bind(a.subject.clone())
            .fetch_optional(&mut *tx)
            .await?;
            out.refreshed.extend(row);
        }
        for ids in changes.resolve.chunks(chunk) {
            let sql = format!(
                "UPDATE alerts SET resolved_ms = $1, updated_ms = $1 WHERE resolved_ms IS NULL \
                 AND id IN {} RETURNING {ALERT_COLS}",
                id_list(2, ids.len())
            );
            let mut q = sqlx::query_as::<_, Alert>(&sql).bind(now_ms);
            for id in ids {
                q = q.bind(*id);
            }
            out.resolved.extend(q.fetch_all(&mut *tx).await?);
        }
        let events = route(&out);
        insert_events(&mut tx, &events, now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn open_subjects(
        &self,
        rule: &str,
        subjects: &[String],
    ) -> Result<Vec<String>, CatalogError> {
        let mut out = Vec::new();
        for chunk in subjects.chunks(200) {
            let sql = format!(
                "SELECT subject FROM alerts WHERE resolved_ms IS NULL AND rule = $1 \
                 AND subject IN {}",
                id_list(2, chunk.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql).bind(rule.to_string());
            for s in chunk {
                q = q.bind(s.clone());
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
    }

    async fn open_alerts(&self) -> Result<Vec<Alert>, CatalogError> {
        let rows = sqlx::query_as(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE resolved_ms IS NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn open_alert(&self, a: &NewAlert, now_ms: i64) -> Result<Option<Alert>, CatalogError> {
        // The partial unique index keeps one open alert per (rule, subject) even with several
        // indexers evaluating at once.
        let inserted = sqlx::query_as(&format!(
            "INSERT INTO alerts (rule, subject, server_id, type, instance, game_id, \
             game_server_ip, message, opened_ms, updated_ms, held_by) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$9,$10) \
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
        .bind(a.held_by.clone())
        .fetch_optional(&self.pool)
        .await?;
        match inserted {
            Some(a) => Ok(Some(a)),
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
        Ok(sqlx::query_as(&format!(
            "UPDATE alerts SET resolved_ms = $1, updated_ms = $1 WHERE rule = $2 \
             AND subject = $3 AND resolved_ms IS NULL RETURNING {ALERT_COLS}"
        ))
        .bind(now_ms)
        .bind(rule.to_string())
        .bind(subject.to_string())
        .fetch_optional(&self.pool)
        .await?)
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
             id DESC LIMIT $9 OFFSET $10",
            first_order(&f.first_businesses)
        );
        let args = alert_filter_args(
            f,
            &[f.limit.unwrap_or(1000).clamp(1, 100_000), f.offset.max(0)],
        )?;
        Ok(sqlx::query_as_with(&sql, args)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn count_alerts(&self, f: &AlertFilter) -> Result<i64, CatalogError> {
        let sql = format!("SELECT COUNT(*) FROM alerts WHERE {ALERT_WHERE}");
        Ok(sqlx::query_scalar_with(&sql, alert_filter_args(f, &[])?)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn alert(&self, id: i64) -> Result<Option<Alert>, CatalogError> {
        Ok(
            sqlx::query_as(&format!("SELECT {ALERT_COLS} FROM alerts WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn open_alert_rules(&self) -> Result<Vec<String>, CatalogError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT rule FROM alerts WHERE resolved_ms IS NULL")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
