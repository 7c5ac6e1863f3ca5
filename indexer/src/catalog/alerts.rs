//! Alerts: open, refresh, resolve, acknowledge, silence, list.

use async_trait::async_trait;

use super::engine::{placeholders, Engine};
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
    /// Silences an alert until `until_ms`, recording who did.
    async fn silence_alert(&self, id: i64, until_ms: i64, user: &str)
        -> Result<bool, CatalogError>;
    /// Alerts, filtered (`offset` and `limit` page them).
    async fn alerts(&self, f: &AlertFilter) -> Result<Vec<Alert>, CatalogError>;
    /// How many alerts match the filter (ignoring `offset` and `limit`).
    async fn count_alerts(&self, f: &AlertFilter) -> Result<i64, CatalogError>;
    /// The groups of the alerts `f` selects (largest first, `limit` from `offset`), with how
    /// many groups and alerts there are in all.
    async fn alert_groups(
        &self,
        f: &AlertFilter,
        by: AlertGroupBy,
        limit: i64,
        offset: i64,
    ) -> Result<AlertGroups, CatalogError>;
    /// Applies `action` in one statement to the unresolved alerts `f` selects (with
    /// `f.max_id` bounding them to those counted when the user confirmed), narrowed to `ids`
    /// when given (at most [`MAX_BULK_IDS`]). Returns how many changed.
    async fn bulk_alerts(
        &self,
        f: &AlertFilter,
        ids: Option<&[i64]>,
        action: BulkAction,
        user: &str,
        now_ms: i64,
    ) -> Result<u64, CatalogError>;
    /// How many alerts [`AlertCatalog::bulk_alerts`] would change now.
    async fn count_bulk(
        &self,
        f: &AlertFilter,
        ids: Option<&[i64]>,
        action: BulkAction,
        now_ms: i64,
    ) -> Result<i64, CatalogError>;
    /// The highest alert id (0 when there is none): a bulk confirmation's bound.
    async fn max_alert_id(&self) -> Result<i64, CatalogError>;
    /// The silences in force at `now_ms`, soonest to end first.
    async fn silences(&self, now_ms: i64, limit: i64) -> Result<Vec<SilenceGroup>, CatalogError>;
    /// Ends one silence of [`AlertCatalog::silences`] (its rule, author and end).
    async fn cancel_silence(
        &self,
        rule: &str,
        silenced_by: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<u64, CatalogError>;
    /// One alert by id.
    async fn alert(&self, id: i64) -> Result<Option<Alert>, CatalogError>;
    /// The rules of the open alerts (distinct).
    async fn open_alert_rules(&self) -> Result<Vec<String>, CatalogError>;
}

const ALERT_COLS: &str = "id, rule, subject, server_id, type, instance, game_id, game_server_ip, \
    message, opened_ms, updated_ms, resolved_ms, acked_by, acked_ms, silenced_until_ms, held_by, \
    silenced_by";

/// A statement's arguments, numbered as they are bound (`$1`, `$2`, …), so a WHERE clause names
/// only the conditions a filter sets and each engine's planner sees plain predicates.
struct Binds {
    args: sqlx::any::AnyArguments<'static>,
    n: usize,
}

impl Binds {
    fn new() -> Binds {
        Binds {
            args: sqlx::any::AnyArguments::default(),
            n: 0,
        }
    }

    /// Binds `v` and returns its placeholder.
    fn bind<T>(&mut self, v: T) -> Result<String, CatalogError>
    where
        T: 'static + Send + sqlx::Encode<'static, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        use sqlx::Arguments as _;
        self.args
            .add(v)
            .map_err(|e| CatalogError::Db(sqlx::Error::Encode(e)))?;
        self.n += 1;
        Ok(format!("${}", self.n))
    }

    /// `(…)` of placeholders for `ids`.
    fn list(&mut self, ids: &[i64]) -> Result<String, CatalogError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.bind(*id)?);
        }
        Ok(format!("({})", out.join(",")))
    }
}

/// The WHERE clause of an [`AlertFilter`], its values bound in `b`.
fn alert_where(f: &AlertFilter, b: &mut Binds) -> Result<String, CatalogError> {
    let mut w: Vec<String> = Vec::new();
    if f.open {
        w.push("resolved_ms IS NULL".into());
    }
    if let Some(rule) = &f.rule {
        w.push(format!("rule = {}", b.bind(rule.clone())?));
    }
    if let Some(cause) = &f.held_by {
        w.push(format!("held_by = {}", b.bind(cause.clone())?));
    }
    if let Some(business) = f.business {
        w.push(format!("game_id = {}", b.bind(business)?));
    }
    if let Some(host) = &f.host {
        w.push(format!("game_server_ip = {}", b.bind(host.clone())?));
    }
    if let Some(max) = f.max_id {
        w.push(format!("id <= {}", b.bind(max)?));
    }
    match f.state {
        None => {}
        Some(AlertState::Open) => {
            let now = b.bind(f.now_ms)?;
            w.push(format!(
                "resolved_ms IS NULL AND acked_ms IS NULL \
                 AND (silenced_until_ms IS NULL OR silenced_until_ms <= {now})"
            ));
        }
        Some(AlertState::Acked) => {
            let now = b.bind(f.now_ms)?;
            w.push(format!(
                "resolved_ms IS NULL AND acked_ms IS NOT NULL \
                 AND (silenced_until_ms IS NULL OR silenced_until_ms <= {now})"
            ));
        }
        Some(AlertState::Silenced) => {
            let now = b.bind(f.now_ms)?;
            w.push(format!("resolved_ms IS NULL AND silenced_until_ms > {now}"));
        }
        Some(AlertState::Resolved) => w.push("resolved_ms IS NOT NULL".into()),
    }
    if w.is_empty() {
        return Ok("1 = 1".into());
    }
    Ok(w.join(" AND "))
}

/// The WHERE clause of a bulk action: the filter's alerts that the action changes (not
/// resolved; for an ack, not yet acknowledged; for an unsilence, silenced now), narrowed to
/// `ids` (at most [`MAX_BULK_IDS`]) when given.
fn bulk_where(
    f: &AlertFilter,
    ids: Option<&[i64]>,
    action: BulkAction,
    now_ms: i64,
    b: &mut Binds,
) -> Result<String, CatalogError> {
    let mut w = alert_where(f, b)?;
    w.push_str(" AND resolved_ms IS NULL");
    match action {
        BulkAction::Ack => w.push_str(" AND acked_ms IS NULL"),
        BulkAction::Silence { .. } => {}
        BulkAction::Unsilence => {
            let now = b.bind(now_ms)?;
            w.push_str(&format!(" AND silenced_until_ms > {now}"));
        }
    }
    if let Some(ids) = ids {
        let ids = &ids[..ids.len().min(MAX_BULK_IDS)];
        let list = b.list(ids)?;
        w.push_str(&format!(" AND id IN {list}"));
    }
    Ok(w)
}

/// What the alert list can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertGroupBy {
    /// The rule.
    Rule,
    /// The business (`game_id`).
    Business,
    /// The database host (`game_server_ip`).
    Host,
    /// The cause an alert is held under (a node or an agent down).
    Cause,
}

impl AlertGroupBy {
    /// The group key as text ('' for none), the same expression in SQLite and PostgreSQL.
    fn key_sql(self) -> &'static str {
        match self {
            AlertGroupBy::Rule => "rule",
            AlertGroupBy::Business => "COALESCE(CAST(game_id AS TEXT), '')",
            AlertGroupBy::Host => "COALESCE(game_server_ip, '')",
            AlertGroupBy::Cause => "COALESCE(held_by, '')",
        }
    }
}

/// One group of the grouped alert list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AlertGroup {
    /// The key ('' for alerts without one: no business, host or cause).
    pub key: String,
    /// Alerts in the group.
    pub count: i64,
    /// The newest alert's opening (ms).
    pub newest_ms: i64,
}

/// A page of groups, and the totals of the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertGroups {
    /// The groups of the page, largest first.
    pub groups: Vec<AlertGroup>,
    /// Groups in all.
    pub group_count: i64,
    /// Alerts in all.
    pub alert_count: i64,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    key: String,
    count: i64,
    newest_ms: i64,
    group_count: i64,
    alert_count: i64,
}

/// A bulk action on the alerts a filter (and optionally a list of ids) selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Acknowledge the open, unacknowledged ones.
    Ack,
    /// Silence the unresolved ones until this moment (ms).
    Silence {
        /// The silence's end.
        until_ms: i64,
    },
    /// End the silence of the silenced ones.
    Unsilence,
}

/// One silence as the dashboard lists it: the alerts of one rule silenced by one user until
/// one moment (a bulk silence sets them alike).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SilenceGroup {
    /// The rule.
    pub rule: String,
    /// Who silenced them ('' when not recorded).
    pub silenced_by: String,
    /// Until when.
    pub until_ms: i64,
    /// How many alerts.
    pub count: i64,
}

/// Most ids one bulk action takes from a selection.
pub const MAX_BULK_IDS: usize = 1000;

/// Most groups of the grouped alert list returned at once.
pub const MAX_GROUPS: i64 = 500;

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

    async fn silence_alert(
        &self,
        id: i64,
        until_ms: i64,
        user: &str,
    ) -> Result<bool, CatalogError> {
        Ok(
            sqlx::query("UPDATE alerts SET silenced_until_ms = $1, silenced_by = $2 WHERE id = $3")
                .bind(until_ms)
                .bind(user.to_string())
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn alerts(&self, f: &AlertFilter) -> Result<Vec<Alert>, CatalogError> {
        let mut b = Binds::new();
        let w = alert_where(f, &mut b)?;
        let limit = b.bind(f.limit.unwrap_or(1000).clamp(1, 100_000))?;
        let offset = b.bind(f.offset.max(0))?;
        let sql = format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE {w} ORDER BY {} opened_ms DESC, \
             id DESC LIMIT {limit} OFFSET {offset}",
            first_order(&f.first_businesses)
        );
        Ok(sqlx::query_as_with(&sql, b.args)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn count_alerts(&self, f: &AlertFilter) -> Result<i64, CatalogError> {
        let mut b = Binds::new();
        let sql = format!(
            "SELECT COUNT(*) FROM alerts WHERE {}",
            alert_where(f, &mut b)?
        );
        Ok(sqlx::query_scalar_with(&sql, b.args)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn alert_groups(
        &self,
        f: &AlertFilter,
        by: AlertGroupBy,
        limit: i64,
        offset: i64,
    ) -> Result<AlertGroups, CatalogError> {
        let key = by.key_sql();
        let mut b = Binds::new();
        let w = alert_where(f, &mut b)?;
        let lim = b.bind(limit.clamp(1, MAX_GROUPS))?;
        let off = b.bind(offset.max(0))?;
        // One pass: the groups of the page, and (by windows over the grouped rows) how many
        // groups and alerts there are in all.
        let rows: Vec<GroupRow> = sqlx::query_as_with(
            &format!(
                "SELECT {key} AS key, COUNT(*) AS count, MAX(opened_ms) AS newest_ms, \
                 COUNT(*) OVER () AS group_count, \
                 CAST(SUM(COUNT(*)) OVER () AS BIGINT) AS alert_count \
                 FROM alerts WHERE {w} GROUP BY {key} ORDER BY count DESC, key \
                 LIMIT {lim} OFFSET {off}"
            ),
            b.args,
        )
        .fetch_all(&self.pool)
        .await?;
        let (group_count, alert_count) = match rows.first() {
            Some(r) => (r.group_count, r.alert_count),
            None if offset > 0 => {
                // A page past the last: count apart.
                let mut b = Binds::new();
                let w = alert_where(f, &mut b)?;
                sqlx::query_as_with(
                    &format!("SELECT COUNT(DISTINCT {key}), COUNT(*) FROM alerts WHERE {w}"),
                    b.args,
                )
                .fetch_one(&self.pool)
                .await?
            }
            None => (0, 0),
        };
        Ok(AlertGroups {
            groups: rows
                .into_iter()
                .map(|r| AlertGroup {
                    key: r.key,
                    count: r.count,
                    newest_ms: r.newest_ms,
                })
                .collect(),
            group_count,
            alert_count,
        })
    }

    async fn bulk_alerts(
        &self,
        f: &AlertFilter,
        ids: Option<&[i64]>,
        action: BulkAction,
        user: &str,
        now_ms: i64,
    ) -> Result<u64, CatalogError> {
        if ids.is_some_and(<[i64]>::is_empty) {
            return Ok(0);
        }
        let mut b = Binds::new();
        let set = match action {
            BulkAction::Ack => format!(
                "acked_by = {}, acked_ms = {}",
                b.bind(user.to_string())?,
                b.bind(now_ms)?
            ),
            BulkAction::Silence { until_ms } => format!(
                "silenced_until_ms = {}, silenced_by = {}",
                b.bind(until_ms)?,
                b.bind(user.to_string())?
            ),
            BulkAction::Unsilence => "silenced_until_ms = NULL, silenced_by = NULL".into(),
        };
        let w = bulk_where(f, ids, action, now_ms, &mut b)?;
        Ok(
            sqlx::query_with(&format!("UPDATE alerts SET {set} WHERE {w}"), b.args)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn count_bulk(
        &self,
        f: &AlertFilter,
        ids: Option<&[i64]>,
        action: BulkAction,
        now_ms: i64,
    ) -> Result<i64, CatalogError> {
        if ids.is_some_and(<[i64]>::is_empty) {
            return Ok(0);
        }
        let mut b = Binds::new();
        let w = bulk_where(f, ids, action, now_ms, &mut b)?;
        Ok(
            sqlx::query_scalar_with(&format!("SELECT COUNT(*) FROM alerts WHERE {w}"), b.args)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn max_alert_id(&self) -> Result<i64, CatalogError> {
        Ok(
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM alerts")
                .fetch_one(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    async fn silences(&self, now_ms: i64, limit: i64) -> Result<Vec<SilenceGroup>, CatalogError> {
        Ok(sqlx::query_as(
            "SELECT rule, COALESCE(silenced_by, '') AS silenced_by, silenced_until_ms AS until_ms, \
             COUNT(*) AS count FROM alerts WHERE resolved_ms IS NULL AND silenced_until_ms > $1 \
             GROUP BY rule, COALESCE(silenced_by, ''), silenced_until_ms \
             ORDER BY silenced_until_ms, rule LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn cancel_silence(
        &self,
        rule: &str,
        silenced_by: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<u64, CatalogError> {
        Ok(sqlx::query(
            "UPDATE alerts SET silenced_until_ms = NULL, silenced_by = NULL \
             WHERE resolved_ms IS NULL AND rule = $1 AND COALESCE(silenced_by, '') = $2 \
             AND silenced_until_ms = $3 AND silenced_until_ms > $4",
        )
        .bind(rule.to_string())
        .bind(silenced_by.to_string())
        .bind(until_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
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
