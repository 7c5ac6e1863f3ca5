-- Alert semantics (issue 26). `instance_state` keeps the node and the queue of each
-- instance's latest result: an instance's `overdue` alert is held under its node's
-- `node_down`/`node_paused` (inhibition), and an alert on a message without identity names
-- the queue it came from and
-- what the node kept of the message (`last_raw`). `alerts.held_by` is the cause (`rule:subject`) an alert is held
-- under: it is listed on the cause's page and not notified on its own.
ALTER TABLE instance_state ADD COLUMN last_node TEXT;
ALTER TABLE instance_state ADD COLUMN last_queue TEXT;
ALTER TABLE instance_state ADD COLUMN last_raw TEXT;
ALTER TABLE alerts ADD COLUMN held_by TEXT;
CREATE INDEX alerts_held_by ON alerts (held_by) WHERE held_by IS NOT NULL;
