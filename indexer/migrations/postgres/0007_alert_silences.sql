-- Who silenced an alert (NULL for silences set before this column, and after a cancel): the
-- dashboard's silences page lists silences by rule, author and end, and cancels one such
-- silence as a whole, as it was set (a bulk silence sets one author and one end).
ALTER TABLE alerts ADD COLUMN silenced_by TEXT;
-- The open alerts by host, for the alert list's host filter and grouping at 20,000 open alerts.
CREATE INDEX alerts_open_host ON alerts (game_server_ip) WHERE resolved_ms IS NULL;
