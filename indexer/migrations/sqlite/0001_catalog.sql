-- ubackup-indexer catalog, SQLite. Times are epoch milliseconds (INTEGER) throughout.
-- Never edit a landed migration: add the next numbered file.

CREATE TABLE businesses (
    id INTEGER PRIMARY KEY,
    business_id INTEGER NOT NULL UNIQUE, -- UBackup's game_id
    name TEXT NOT NULL
);

CREATE TABLE backup_types (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE instances (
    id INTEGER PRIMARY KEY,
    server_id TEXT NOT NULL,
    type_key TEXT NOT NULL,             -- lower-cased backup type
    instance INTEGER NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    business_id INTEGER,                -- UBackup's game_id
    interval_secs INTEGER,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL,
    UNIQUE (server_id, type_key, instance)
);

CREATE TABLE backups (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    type TEXT NOT NULL,
    type_key TEXT NOT NULL,
    instance INTEGER NOT NULL,
    game_id INTEGER,
    op_id INTEGER,
    interval_secs INTEGER,
    game_server_ip TEXT,
    back_server_ip TEXT NOT NULL,
    node_id TEXT NOT NULL,
    file_path TEXT,
    filename TEXT,
    create_time INTEGER NOT NULL,
    rsync_time INTEGER NOT NULL,
    size INTEGER,
    last_all_filename TEXT,
    last_all_time INTEGER NOT NULL DEFAULT 0,
    prev_filename TEXT,
    prev_time INTEGER NOT NULL DEFAULT 0,
    succeed INTEGER NOT NULL,
    log TEXT NOT NULL,
    checksum TEXT,
    checksum_algorithm TEXT,
    expected_size INTEGER,
    size_mismatch INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    literal_bytes INTEGER NOT NULL DEFAULT 0,
    matched_bytes INTEGER NOT NULL DEFAULT 0,
    basis TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    requeues INTEGER NOT NULL DEFAULT 0,
    queue TEXT,
    taken_ms INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    indexed_ms INTEGER NOT NULL,
    expired_at INTEGER,
    corrupt_at INTEGER,
    mark_reason TEXT,
    UNIQUE (job_id, create_time)
);
CREATE INDEX backups_history ON backups (server_id, type_key, instance, create_time DESC);
CREATE INDEX backups_file ON backups (server_id, type_key, instance, filename);
CREATE INDEX backups_time ON backups (create_time);

-- The latest state of every instance seen in results (registered or not): what the alert
-- rules read, so that one evaluation is one pass over instances, not over backups.
CREATE TABLE instance_state (
    server_id TEXT NOT NULL,
    type_key TEXT NOT NULL,
    instance INTEGER NOT NULL,
    type TEXT NOT NULL,
    game_id INTEGER,
    game_server_ip TEXT,
    last_ms INTEGER NOT NULL DEFAULT 0,        -- create_time of the latest result
    last_succeed INTEGER NOT NULL DEFAULT 0,
    last_log TEXT NOT NULL DEFAULT '',
    last_ok_ms INTEGER NOT NULL DEFAULT 0,     -- create_time of the latest success
    last_ok_full TEXT,                          -- the full the latest success depends on
    last_illegal_ms INTEGER NOT NULL DEFAULT 0,
    last_corrupt_ms INTEGER NOT NULL DEFAULT 0,
    last_corrupt_reason TEXT,
    seen_ms INTEGER NOT NULL DEFAULT 0,        -- when the indexer last saw a message
    interval_secs INTEGER,                      -- the period the latest result carried
    PRIMARY KEY (server_id, type_key, instance)
);

CREATE TABLE clusters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    queue_address TEXT NOT NULL DEFAULT ''
);

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL UNIQUE,
    cluster TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    last_seen_ms INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE agents (
    server_id TEXT NOT NULL,
    cluster TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (server_id, cluster)
);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    server_id TEXT,
    type TEXT,
    instance INTEGER,
    game_id INTEGER,
    game_server_ip TEXT,
    message TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    resolved_ms INTEGER,
    acked_by TEXT,
    acked_ms INTEGER,
    silenced_until_ms INTEGER
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule, subject) WHERE resolved_ms IS NULL;
CREATE INDEX alerts_opened ON alerts (opened_ms);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    focus_business TEXT NOT NULL DEFAULT '[]',
    created_ms INTEGER NOT NULL
);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    user_name TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
