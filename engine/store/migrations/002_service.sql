-- The service (issue 5): API keys, audit log, device token hashes, API-triggered sends, install identity.
-- See docs/decisions/009-service-security-backup.md.

-- devices.token holds AES-GCM ciphertext ("pw1:<key id>:<base64>"); lookups use this keyed hash instead.
ALTER TABLE devices ADD COLUMN token_hash VARCHAR;

CREATE TABLE IF NOT EXISTS api_keys (
    key_id            VARCHAR PRIMARY KEY,    -- public part, shown in logs and the audit log
    secret_sha256     VARCHAR NOT NULL,       -- hex SHA-256 of the secret; the secret itself is never stored
    signing_secret    VARCHAR NOT NULL,       -- the secret encrypted under the data key, for HMAC request signing
    scopes            VARCHAR[] NOT NULL,     -- 'send' | 'ingest' | 'admin'
    rate_per_second   DOUBLE NOT NULL,        -- token bucket refill; burst = 2 s worth
    label             VARCHAR,
    created_at        TIMESTAMPTZ NOT NULL,
    revoked_at        TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS audit_log (
    logged_at   TIMESTAMPTZ NOT NULL,
    key_id      VARCHAR,                     -- NULL for the local command line
    action      VARCHAR NOT NULL,            -- e.g. 'trigger', 'device.register', 'erase', 'auth.denied'
    target      VARCHAR,                     -- pseudonymous user id, send id or campaign id; never a token
    status      INTEGER NOT NULL,            -- HTTP status, or 0 for local commands
    detail      VARCHAR
);

CREATE TABLE IF NOT EXISTS service_meta (
    name   VARCHAR PRIMARY KEY,               -- 'install_id'
    value  VARCHAR NOT NULL
);
INSERT INTO service_meta SELECT 'install_id', CAST(uuid() AS VARCHAR)
WHERE NOT EXISTS (SELECT 1 FROM service_meta WHERE name = 'install_id');
