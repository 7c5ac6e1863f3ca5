-- Tokens expire. Tokens issued before this migration get 90 days from the upgrade (the
-- default `login.token_max_secs`); a row written without an expiry is expired (0).
ALTER TABLE tokens ADD COLUMN expires_ms BIGINT NOT NULL DEFAULT 0;
UPDATE tokens SET expires_ms = (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT + 7776000000;
CREATE INDEX tokens_user ON tokens (user_id);
