//! The alert outbox in the catalog (migration 0003): alert changes routed to a channel wait in
//! `alert_events` until their group is due; composing a message moves them, in one
//! transaction, into one `alert_outbox` row with an idempotency key; a row stays until the
//! channel accepted it (or its attempts ran out, which is recorded, not dropped). Everything
//! survives a restart, so delivery is at least once and a retry carries the same key.

use async_trait::async_trait;
use sqlx::Row as _;

use super::{CatalogError, SqlCatalog};

/// An alert change routed to a channel, not yet in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutEvent {
    /// The channel's name.
    pub channel: String,
    /// The group it joins on that channel.
    pub group_key: String,
    /// The notification, as JSON.
    pub body: String,
}

/// Events of one (channel, group) waiting for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingGroup {
    /// The channel's name.
    pub channel: String,
    /// The group.
    pub group_key: String,
    /// How many events wait.
    pub count: i64,
    /// When the oldest arrived (ms).
    pub first_ms: i64,
    /// The newest event's id (a message takes the events up to it).
    pub max_id: i64,
    /// When this group last got a message (ms), if ever.
    pub last_message_ms: Option<i64>,
}

/// A composed message waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Row id.
    pub id: i64,
    /// The channel's name.
    pub channel: String,
    /// Sent with every attempt (receivers may drop repeats).
    pub idem_key: String,
    /// The message, as JSON.
    pub body: String,
    /// Attempts made so far.
    pub attempts: i64,
}

/// What the alert delivery needs from the catalog.
#[async_trait]
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// Appends routed events, in one transaction.
    async fn push_events(&self, events: &[OutEvent], now_ms: i64) -> Result<(), CatalogError>;
    /// Every (channel, group) with waiting events.
    async fn pending_groups(&self) -> Result<Vec<PendingGroup>, CatalogError>;
    /// The bodies of a group's events with id <= `max_id`, oldest first, at most `limit`.
    async fn group_events(
        &self,
        channel: &str,
        group_key: &str,
        max_id: i64,
        limit: i64,
    ) -> Result<Vec<String>, CatalogError>;
    /// Messages a channel got since `since_ms` (its rate limit).
    async fn messages_since(&self, channel: &str, since_ms: i64) -> Result<i64, CatalogError>;
    /// In one transaction: stores a message and removes the events it covers (per group, the
    /// ids up to the given max). False when `idem_key` already exists (nothing changes).
    async fn compose(
        &self,
        channel: &str,
        group_key: &str,
        idem_key: &str,
        body: &str,
        covers: &[(String, i64)],
        now_ms: i64,
    ) -> Result<bool, CatalogError>;
    /// Undelivered messages due at `now_ms` and not leased by another indexer, oldest first.
    async fn due_messages(&self, now_ms: i64, limit: i64) -> Result<Vec<OutMessage>, CatalogError>;
    /// Leases a message until `until_ms`; false when another indexer holds it or it is done.
    async fn lease(&self, id: i64, now_ms: i64, until_ms: i64) -> Result<bool, CatalogError>;
    /// The channel accepted the message.
    async fn delivered(&self, id: i64, now_ms: i64) -> Result<(), CatalogError>;
    /// An attempt failed: retry at `next_ms`, or (`give_up`) record it as failed.
    async fn attempt_failed(
        &self,
        id: i64,
        next_ms: i64,
        error: &str,
        give_up: bool,
        now_ms: i64,
    ) -> Result<(), CatalogError>;
    /// Messages neither delivered nor given up.
    async fn undelivered(&self) -> Result<i64, CatalogError>;
}

/// A message still to send: neither delivered nor given up (the due, lease and backlog
/// statements share it).
const PENDING: &str = "delivered_ms IS NULL AND failed_ms IS NULL";

/// What every attempt's outcome sets: one more attempt, the lease released.
const SETTLE: &str = "UPDATE alert_outbox SET attempts = attempts + 1, lease_ms = 0";

/// Rows per multi-row event INSERT (4 parameters each).
const EVENT_CHUNK: usize = 200;

/// Appends events on `conn` (inside the caller's transaction: [`Outbox::push_events`], or an
/// evaluation's alert changes, so an alert and its notification are one write).
pub(super) async fn insert_events(
    conn: &mut sqlx::AnyConnection,
    events: &[OutEvent],
    now_ms: i64,
) -> Result<(), CatalogError> {
    for chunk in events.chunks(EVENT_CHUNK) {
        let sql = format!(
            "INSERT INTO alert_events (channel, group_key, created_ms, body) VALUES {}",
            super::engine::placeholders(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(e.channel.clone())
                .bind(e.group_key.clone())
                .bind(now_ms)
                .bind(e.body.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl Outbox for SqlCatalog {
    async fn push_events(&self, events: &[OutEvent], now_ms: i64) -> Result<(), CatalogError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        insert_events(&mut tx, events, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pending_groups(&self) -> Result<Vec<PendingGroup>, CatalogError> {
        let rows = sqlx::query(
            "SELECT e.channel, e.group_key, COUNT(*), MIN(e.created_ms), MAX(e.id), \
             (SELECT MAX(o.created_ms) FROM alert_outbox o \
              WHERE o.channel = e.channel AND o.group_key = e.group_key) \
             FROM alert_events e GROUP BY e.channel, e.group_key ORDER BY MIN(e.id)",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingGroup {
                    channel: r.try_get(0)?,
                    group_key: r.try_get(1)?,
                    count: r.try_get(2)?,
                    first_ms: r.try_get(3)?,
                    max_id: r.try_get(4)?,
                    last_message_ms: r.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }

    async fn group_events(
        &self,
        channel: &str,
        group_key: &str,
        max_id: i64,
        limit: i64,
    ) -> Result<Vec<String>, CatalogError> {
        let rows = sqlx::query(
            "SELECT body FROM alert_events WHERE channel = $1 AND group_key = $2 AND id <= $3 \
             ORDER BY id LIMIT $4",
        )
        .bind(channel.to_string())
        .bind(group_key.to_string())
        .bind(max_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
    }

    async fn messages_since(&self, channel: &str, since_ms: i64) -> Result<i64, CatalogError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM alert_outbox WHERE channel = $1 AND created_ms > $2")
                .bind(channel.to_string())
                .bind(since_ms)
                .fetch_one(self.pool())
                .await?
                .try_get(0)?,
        )
    }

    async fn compose(
        &self,
        channel: &str,
        group_key: &str,
        idem_key: &str,
        body: &str,
        covers: &[(String, i64)],
        now_ms: i64,
    ) -> Result<bool, CatalogError> {
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO alert_outbox (channel, group_key, idem_key, body, created_ms, next_ms) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (idem_key) DO NOTHING",
        )
        .bind(channel.to_string())
        .bind(group_key.to_string())
        .bind(idem_key.to_string())
        .bind(body.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for (g, max_id) in covers {
            sqlx::query(
                "DELETE FROM alert_events WHERE channel = $1 AND group_key = $2 AND id <= $3",
            )
            .bind(channel.to_string())
            .bind(g.clone())
            .bind(*max_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn due_messages(&self, now_ms: i64, limit: i64) -> Result<Vec<OutMessage>, CatalogError> {
        let rows = sqlx::query(&format!(
            "SELECT id, channel, idem_key, body, attempts FROM alert_outbox \
             WHERE {PENDING} AND next_ms <= $1 AND lease_ms <= $1 ORDER BY id LIMIT $2"
        ))
        .bind(now_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutMessage {
                    id: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    idem_key: r.try_get(2)?,
                    body: r.try_get(3)?,
                    attempts: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }

    async fn lease(&self, id: i64, now_ms: i64, until_ms: i64) -> Result<bool, CatalogError> {
        Ok(sqlx::query(&format!(
            "UPDATE alert_outbox SET lease_ms = $1 WHERE id = $2 AND lease_ms <= $3 AND {PENDING}"
        ))
        .bind(until_ms)
        .bind(id)
        .bind(now_ms)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1)
    }

    async fn delivered(&self, id: i64, now_ms: i64) -> Result<(), CatalogError> {
        sqlx::query(&format!("{SETTLE}, delivered_ms = $1 WHERE id = $2"))
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn attempt_failed(
        &self,
        id: i64,
        next_ms: i64,
        error: &str,
        give_up: bool,
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        sqlx::query(&format!(
            "{SETTLE}, next_ms = $1, last_error = $2, failed_ms = $3 WHERE id = $4"
        ))
        .bind(next_ms)
        .bind(error.chars().take(1000).collect::<String>())
        .bind(give_up.then_some(now_ms))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn undelivered(&self) -> Result<i64, CatalogError> {
        Ok(sqlx::query(&format!(
            "SELECT COUNT(*) FROM alert_outbox WHERE {PENDING}"
        ))
        .fetch_one(self.pool())
        .await?
        .try_get(0)?)
    }
}
