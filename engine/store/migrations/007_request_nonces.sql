-- Nonces of HMAC-signed API requests (issue 5, item 3), written through by engine.security.apikeys.NonceCache
-- so that a restarted service still refuses a replay inside the ±300 s timestamp window. Rows older than
-- twice the window are pruned by the cache itself. See docs/decisions/009-service-security-backup.md.

CREATE TABLE IF NOT EXISTS request_nonces (
    key_id   VARCHAR NOT NULL,   -- the API key id (public)
    nonce    VARCHAR NOT NULL,   -- X-Pushwise-Nonce as sent (8 to 64 characters)
    seen_at  DOUBLE NOT NULL     -- Unix seconds when the server accepted it
);
