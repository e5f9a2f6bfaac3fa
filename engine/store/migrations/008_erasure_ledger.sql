-- Erasures that must outlive a restore (issue 5, item 6): `pushwise erase USER` records the user here, and
-- `pushwise restore` keeps the current ledger and erases every recorded user again from the restored data
-- when the backup predates the erasure. Only a keyed hash is stored (HMAC-SHA256 under the install's
-- pseudonym key, engine/analytics/pseudonym.py), never the raw id. See docs/decisions/015-service-hardening.md.

CREATE TABLE IF NOT EXISTS erasure_ledger (
    user_hash  VARCHAR PRIMARY KEY,     -- hex HMAC-SHA256(pseudonym key, user id)
    erased_at  TIMESTAMPTZ NOT NULL     -- the latest erasure of this user
);
