-- The alert outbox (indexer/src/catalog/outbox.rs). `alert_events` holds alert changes routed
-- to a channel and not yet composed into a message; `alert_outbox` holds composed messages
-- until the channel accepted them. Both survive a restart: delivery is at least once, and
-- each message keeps its idempotency key across retries.
-- AUTOINCREMENT: an event id is never reused after its row is composed and deleted, so
-- (channel, newest event id) names one message for good (its idempotency key).
CREATE TABLE alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    group_key TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alert_events_group ON alert_events (channel, group_key, id);
CREATE TABLE alert_outbox (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    group_key TEXT NOT NULL,
    idem_key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    lease_ms INTEGER NOT NULL DEFAULT 0,
    delivered_ms INTEGER,
    failed_ms INTEGER,
    last_error TEXT
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_ms) WHERE delivered_ms IS NULL AND failed_ms IS NULL;
CREATE INDEX alert_outbox_group ON alert_outbox (channel, group_key, created_ms);
