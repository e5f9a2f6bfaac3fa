"""API keys (hashed, scoped), HMAC request signatures with a replay cache, per-key rate limits, the audit log.

A key is ``pwk_<key id>_<secret>``: it is printed once by :func:`create_key`, and only the SHA-256 of the
secret is stored (plus the secret encrypted under the data key, for verifying HMAC signatures). A
signed request carries ``X-Pushwise-Key`` (the key id), ``X-Pushwise-Timestamp`` (Unix seconds),
``X-Pushwise-Nonce`` and ``X-Pushwise-Signature``: hex HMAC-SHA256 under the secret of
``METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nhex SHA-256(body)``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from engine.security.crypto import Keyring
from engine.store import Store

__all__ = ["SCOPES", "ApiKey", "NonceCache", "RateLimiter", "audit", "audit_many", "authenticate", "create_key",
           "list_keys", "revoke_key", "sign_request", "verify_signature"]

SCOPES = ("send", "ingest", "admin", "metrics")   # metrics: read /metrics only
SIGNING_COLUMN = "api_keys.signing_secret"
MAX_SKEW_SECONDS = 300


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    scopes: tuple[str, ...]
    rate_per_second: float

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(store: Store, keyring: Keyring, scopes: list[str], now: datetime, *, label: str = "",
               rate_per_second: float = 200.0) -> tuple[str, ApiKey]:
    """Create a key; returns ``(full key to show once, ApiKey)``.

    Raises:
        ValueError: an unknown scope.
    """
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"unknown scope {bad[0]!r}; choose from {', '.join(SCOPES)}" if bad
                         else "at least one scope is required")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    store.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                  [key_id, _sha(secret), keyring.encrypt(secret, SIGNING_COLUMN), sorted(set(scopes)),
                   rate_per_second, label, now])
    return f"pwk_{key_id}_{secret}", ApiKey(key_id, tuple(sorted(set(scopes))), rate_per_second)


def list_keys(store: Store) -> list[dict]:
    """Every key's public facts (id, scopes, label, rate, created, revoked), newest first; never a secret."""
    rows = store.execute("""SELECT key_id, scopes, label, rate_per_second, created_at, revoked_at FROM api_keys
                            ORDER BY created_at DESC, key_id""").fetchall()
    return [{"key_id": r[0], "scopes": list(r[1]), "label": r[2] or "", "rate_per_second": float(r[3]),
             "created_at": r[4].isoformat(), "revoked_at": r[5].isoformat() if r[5] else None} for r in rows]


def revoke_key(store: Store, key_id: str, now: datetime) -> bool:
    """Revoke ``key_id`` from ``now`` on; False when no live key has that id (unknown or already revoked)."""
    hit = store.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL RETURNING key_id",
                        [now, key_id]).fetchall()
    return bool(hit)


def _lookup(store: Store, key_id: str) -> tuple[ApiKey, str, str] | None:
    rows = store.execute("""SELECT key_id, scopes, rate_per_second, secret_sha256, signing_secret
                           FROM api_keys WHERE key_id = ? AND revoked_at IS NULL""", [key_id]).fetchall()
    if not rows:
        return None
    row = rows[0]
    return ApiKey(row[0], tuple(row[1]), float(row[2])), row[3], row[4]


def authenticate(store: Store, presented: str) -> ApiKey | None:
    """The key a bearer value names, or None (unknown, revoked or wrong secret: the caller can't tell which)."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != "pwk" or not parts[1].isalnum():
        return None
    found = _lookup(store, parts[1])
    if found is None:
        return None
    key, digest, _ = found
    return key if hmac.compare_digest(digest, _sha(parts[2])) else None


def _message(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign_request(full_key: str, method: str, path: str, body: bytes, *, timestamp: int | None = None,
                 nonce: str | None = None) -> dict[str, str]:
    """Headers that sign one request with ``full_key`` (for clients and tests)."""
    _, key_id, secret = full_key.split("_", 2)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(12)
    sig = hmac.new(secret.encode(), _message(method, path, ts, nonce, body), hashlib.sha256).hexdigest()
    return {"X-Pushwise-Key": key_id, "X-Pushwise-Timestamp": ts, "X-Pushwise-Nonce": nonce,
            "X-Pushwise-Signature": sig}


class NonceCache:
    """Nonces seen within the allowed clock skew; a nonce seen twice is a replay.

    In memory by default. Given a store (:meth:`persistent`), each accepted nonce is also written to
    ``request_nonces`` and the recent ones are loaded at start, so a restart inside the timestamp window
    cannot be used to replay a request. The store must be the caller's own connection (the service's loop).
    """

    PRUNE_EVERY = 1_000   # accepted nonces between deletions of expired rows

    def __init__(self, max_entries: int = 200_000, store: Store | None = None) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self._store = store
        self._since_prune = 0
        self._dropped_until = 0.0   # a nonce dropped for room would have expired by then

    @classmethod
    def persistent(cls, store: Store, now: float, max_entries: int = 200_000) -> NonceCache:
        """A cache written through to ``store``, holding the nonces it saw within the window before ``now``."""
        cache = cls(max_entries, store)
        rows = store.execute("""SELECT key_id, nonce, seen_at FROM request_nonces WHERE seen_at >= ?
                                ORDER BY seen_at""", [now - 2 * MAX_SKEW_SECONDS]).fetchall()
        for key_id, nonce, seen_at in rows[-max_entries:]:
            cache._seen[f"{key_id}:{nonce}"] = seen_at
        return cache

    def add(self, key_id: str, nonce: str, now: float) -> bool:
        """Record a nonce; False when it was already seen (a replay).

        A full cache drops its oldest nonces even inside the window; until those would have expired, a
        persistent cache also asks the store, so flooding it cannot free a nonce for a replay. (An
        in-memory cache cannot: size it above the signed requests a window may hold.)
        """
        with self._lock:
            window = now - 2 * MAX_SKEW_SECONDS
            while self._seen and next(iter(self._seen.values())) < window:
                self._seen.popitem(last=False)
            while len(self._seen) >= self._max:
                _, seen_at = self._seen.popitem(last=False)
                self._dropped_until = max(self._dropped_until, seen_at + 2 * MAX_SKEW_SECONDS)
            k = f"{key_id}:{nonce}"
            if k in self._seen:
                return False
            if self._store is not None and now < self._dropped_until and self._stored(key_id, nonce, window):
                return False
            self._seen[k] = now
            if self._store is not None:
                self._persist(self._store, key_id, nonce, now)
            return True

    def _stored(self, key_id: str, nonce: str, since: float) -> bool:
        return bool(self._store.execute("""SELECT 1 FROM request_nonces WHERE key_id = ? AND nonce = ?
                                           AND seen_at >= ? LIMIT 1""", [key_id, nonce, since]).fetchall())

    def _persist(self, store: Store, key_id: str, nonce: str, now: float) -> None:
        store.execute("INSERT INTO request_nonces VALUES (?, ?, ?)", [key_id, nonce, now])
        self._since_prune += 1
        if self._since_prune >= self.PRUNE_EVERY:
            self._since_prune = 0
            store.execute("DELETE FROM request_nonces WHERE seen_at < ?", [now - 2 * MAX_SKEW_SECONDS])


def verify_signature(store: Store, keyring: Keyring, nonces: NonceCache, headers: dict[str, str],
                     method: str, path: str, body: bytes, now: float) -> tuple[ApiKey | None, str]:
    """Check a signed request; returns ``(key, "")`` or ``(None, reason safe to show the caller)``."""
    key_id, ts, nonce, sig = (headers.get(h, "") for h in ("x-pushwise-key", "x-pushwise-timestamp",
                                                           "x-pushwise-nonce", "x-pushwise-signature"))
    if not (key_id and ts and nonce and sig):
        return None, "signed requests need X-Pushwise-Key, -Timestamp, -Nonce and -Signature headers"
    # isascii: '²' and other Unicode digits pass isdigit() but not int()
    if not (ts.isascii() and ts.isdigit() and len(ts) <= 12) or abs(now - int(ts)) > MAX_SKEW_SECONDS:
        return None, f"X-Pushwise-Timestamp must be Unix seconds within {MAX_SKEW_SECONDS} s of the server clock"
    if not 8 <= len(nonce) <= 64:
        return None, "X-Pushwise-Nonce must be 8 to 64 characters"
    found = _lookup(store, key_id) if key_id.isalnum() else None
    if found is None:
        return None, "invalid signature"
    key, _, sealed = found
    secret = keyring.decrypt(sealed, SIGNING_COLUMN)
    expected = hmac.new(secret.encode(), _message(method, path, ts, nonce, body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig):
        return None, "invalid signature"
    if not nonces.add(key_id, nonce, now):
        return None, "replayed request: this nonce was already used"
    return key, ""


class RateLimiter:
    """A token bucket per key: ``rate_per_second`` refill, a burst of two seconds' worth."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: ApiKey, now: float) -> bool:
        burst = max(1.0, 2 * key.rate_per_second)
        with self._lock:
            level, at = self._buckets.get(key.key_id, (burst, now))
            level = min(burst, level + (now - at) * key.rate_per_second)
            if level < 1.0:
                self._buckets[key.key_id] = (level, now)
                return False
            self._buckets[key.key_id] = (level - 1.0, now)
            return True


def audit(store: Store, now: datetime, key_id: str | None, action: str, target: str | None, status: int,
          detail: str | None = None) -> None:
    """Append one audit row. ``target`` must already be pseudonymous; never pass a token or secret."""
    store.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)", [now, key_id, action, target, status, detail])


def audit_many(store: Store, rows: list[tuple[datetime, str | None, str, str | None, int, str | None]]) -> None:
    """Append several audit rows (at, key_id, action, target, status, detail) in one statement."""
    if not rows:
        return
    frame = pd.DataFrame(rows, columns=["at", "key_id", "action", "target", "status", "detail"])
    store.con.register("pw_audit_rows", frame)
    try:
        store.execute("""INSERT INTO audit_log SELECT CAST("at" AS TIMESTAMPTZ), key_id, action, target,
                         CAST(status AS INTEGER), detail FROM pw_audit_rows""")
    finally:
        store.con.unregister("pw_audit_rows")
