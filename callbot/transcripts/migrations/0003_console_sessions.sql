-- The supervisor console's logins, kept across restarts of the console. Only a SHA-256 of
-- the session token is stored: whoever reads the database cannot log in with it.
CREATE TABLE console_sessions (
    token_hash  TEXT PRIMARY KEY,
    csrf        TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    last_seen   DOUBLE PRECISION NOT NULL,  -- idle expiry: [console] idle_minutes after this
    expires_at  DOUBLE PRECISION NOT NULL   -- absolute expiry: [console] session_minutes
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- Password hashes upgraded at login (stronger scrypt parameters). The configuration file
-- is not rewritten; a row here takes precedence over [[console.users]] only while the
-- configured hash is still the one it replaced, so a new hash in the file always wins.
CREATE TABLE console_users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    replaces      TEXT NOT NULL,            -- the configured hash this one upgraded
    updated_at    DOUBLE PRECISION NOT NULL
);

-- What the caller waited at the end of a turn before the bot took it (the silence heard
-- after the last voiced frame): with decode_ms and latency_ms, the caller-perceived delay.
ALTER TABLE turns ADD COLUMN endpoint_ms DOUBLE PRECISION;
