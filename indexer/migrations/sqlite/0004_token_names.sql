-- API tokens get a name and the time of their last use (issue 25): the users page lists them
-- and revokes one at a time. Tokens made before this migration are named "unnamed"; their
-- last use is unknown (0) until they are next used.
ALTER TABLE tokens ADD COLUMN name TEXT NOT NULL DEFAULT 'unnamed';
ALTER TABLE tokens ADD COLUMN last_used_ms INTEGER NOT NULL DEFAULT 0;
