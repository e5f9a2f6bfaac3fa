"""The service's writes, shared by the HTTP API and the command line: devices, consent, events, erasure, purge.

Each function takes the store, the inputs already validated by its caller's schema (the API's pydantic
models, the CLI's argparse) plus the checks that need the store, and returns plain values. Device tokens
are encrypted with the data keyring before they reach the store and are never returned.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from engine.analytics.pseudonym import pseudonymise
from engine.config import VendorsConfig, WebPushConfig
from engine.errors import InputError
from engine.security.crypto import Keyring
from engine.store import Store

__all__ = ["ERASE_TABLES", "VENDORS", "append_events", "check_time_zone", "check_token", "check_webpush_endpoint",
           "erase_user", "erasure_hash", "purge_events", "reapply_erasures", "record_events", "register_device",
           "remove_device", "rotate_data_key", "set_consent", "usable_time_zones"]

VENDORS: tuple[str, ...] = tuple(VendorsConfig.__dataclass_fields__)
TOKEN_COLUMN = "devices.token"
_APNS = re.compile(r"[0-9a-fA-F]{64}")
_GENERIC = re.compile(r"[A-Za-z0-9_:.\-/+=]{8,4096}")
#: Tables holding a user's personal data, erased by :func:`erase_user` (send_attempts via the sends).
ERASE_TABLES = ("events", "devices", "decisions", "sends", "send_attempts", "consents", "users", "sim_device_truth",
                "quarantine")


@functools.cache
def _zones() -> frozenset[str]:
    # "localtime" is this host's zone file, unknown to DuckDB's ICU (checked against every name, DuckDB 2.0);
    # "posixrules", "right/…" and "posix/…" load in zoneinfo but are not in its list, nor known to ICU
    return frozenset(zoneinfo.available_timezones()) - {"localtime"}


def usable_time_zones() -> frozenset[str]:
    """IANA zone names that both pandas and DuckDB accept."""
    return _zones()


def check_time_zone(value: str) -> str:
    """``value`` when it is in :func:`usable_time_zones`.

    Raises:
        InputError: anything else (the message does not repeat the value).
    """
    if value not in _zones():
        raise InputError("unknown time zone; use an IANA name such as Europe/London")
    return value


def check_token(vendor: str, token: str) -> str:
    """Reject an unknown vendor or a token that cannot be one of that vendor's (message names the rule).

    Returns:
        The token to store: as given, except a Web Push subscription, written the one way
        `engine.push.webpush` writes it (so the same subscription in other spacing is the same device).

    Raises:
        InputError: with a message that never repeats the token.
    """
    if vendor not in VENDORS:
        raise InputError(f"unknown vendor {vendor[:20]!r}; expected one of {', '.join(VENDORS)}")
    if vendor == "apns" and not _APNS.fullmatch(token):
        raise InputError("an APNs device token is 64 hexadecimal characters")
    if vendor == "webpush":
        # the channel sends to the subscription's endpoint with its keys: a bare URL cannot be sent to
        from engine.push.webpush import parse_subscription, subscription_token

        try:
            sub = parse_subscription(token)
        except ValueError:
            raise InputError('a Web Push token is the subscription JSON: {"endpoint": "https://…", '
                             '"keys": {"p256dh": "<base64url>", "auth": "<base64url>"}}') from None
        return subscription_token(sub.endpoint, sub.p256dh, sub.auth)
    if vendor != "apns" and not _GENERIC.fullmatch(token):
        raise InputError(f"a {vendor} token is 8 to 4096 characters of letters, digits and _:.-/+=")
    return token


def check_webpush_endpoint(token: str, hosts: Sequence[str]) -> str:
    """``token`` when its endpoint's host is in ``hosts`` (``"*.domain"`` covers the subdomains of domain).

    Raises:
        InputError: another host, or not a subscription (the message names neither the host nor the token).
    """
    from engine.push.webpush import endpoint_allowed, parse_subscription

    try:
        endpoint = parse_subscription(token).endpoint
    except ValueError:
        raise InputError("a Web Push token is the subscription JSON") from None
    if not endpoint_allowed(endpoint, hosts):
        raise InputError("Web Push endpoint is not on a push service this install sends to "
                         "(vendors.webpush.allowed_hosts)")
    return token


@dataclass(frozen=True)
class DeviceResult:
    device_id: str
    created: bool


def register_device(store: Store, keyring: Keyring, *, user_id: str, vendor: str, token: str, now: datetime,
                    app_id: str = "default", time_zone: str = "UTC",
                    webpush_hosts: Sequence[str] | None = None) -> DeviceResult:
    """Register a token, or refresh it (new owner, reactivated) when the same token is known already.

    Args:
        webpush_hosts: push services a Web Push endpoint may point at
            (:meth:`~engine.config.WebPushConfig.endpoint_hosts`; its defaults when None).
    """
    token = check_token(vendor, token)
    if vendor == "webpush":
        check_webpush_endpoint(token, WebPushConfig().endpoint_hosts() if webpush_hosts is None else webpush_hosts)
    check_time_zone(time_zone)
    token_hash = keyring.token_hash(vendor, token)
    device_id = "dev:" + token_hash[:24]
    with store.transaction() as con:
        con.execute("""INSERT OR IGNORE INTO users (user_id, country, time_zone, source, first_seen, last_seen)
                       VALUES (?, NULL, ?, 'api', ?, ?)""", [user_id, time_zone, now, now])
        existed = con.execute("SELECT count(*) FROM devices WHERE token_hash = ?", [token_hash]).fetchall()[0][0] > 0
        con.execute("DELETE FROM devices WHERE token_hash = ?", [token_hash])
        con.execute("""INSERT INTO devices (device_id, user_id, vendor, app_id, token, token_hash, active,
                                            registered_at, simulated)
                       VALUES (?, ?, ?, ?, ?, ?, true, ?, false)""",
                    [device_id, user_id, vendor, app_id, keyring.encrypt(token, TOKEN_COLUMN), token_hash, now])
    return DeviceResult(device_id, not existed)


def remove_device(store: Store, device_id: str) -> bool:
    """Delete a device (its planned sends are cancelled at claim time). False when it was unknown."""
    return bool(store.execute("DELETE FROM devices WHERE device_id = ? RETURNING device_id", [device_id]).fetchall())


def set_consent(store: Store, *, user_id: str, channel: str, message_class: str, granted: bool,
                now: datetime) -> None:
    """Record a consent change; a withdrawal also stops sends already planned (re-checked at claim)."""
    with store.transaction() as con:
        con.execute("INSERT OR REPLACE INTO consents VALUES (?, ?, ?, ?, ?, false)",
                    [user_id, channel, message_class, granted, now])
        if not granted:
            con.execute("""UPDATE sends SET state = 'cancelled', last_error = 'consent withdrawn', updated_at = ?
                           WHERE user_id = ? AND message_class = ? AND state IN ('pending', 'retry')""",
                        [now, user_id, message_class])


def record_events(store: Store, events: pd.DataFrame, now: datetime) -> tuple[int, int]:
    """Append app events to ``events`` (source ``api``) in one transaction; a repeated client ``event_id`` is a no-op.

    Args:
        events: DataFrame[event_id (None = new), user_id, item_id, event_type, ts, properties (JSON text)].

    Returns:
        (stored, duplicates).
    """
    with store.transaction():
        return append_events(store, events.assign(batch=0), now, batches=1)[0]


def append_events(store: Store, events: pd.DataFrame, now: datetime, batches: int) -> list[tuple[int, int]]:
    """`record_events` for several requests at once, inside the caller's transaction.

    Args:
        events: as for `record_events`, plus ``batch`` (0 .. batches-1): which request each row came in.
        batches: how many requests; an event id repeated in a later batch counts as that batch's
            duplicate, as if the batches had been recorded one after another.

    Returns:
        (stored, duplicates) per batch, in order.
    """
    ids = [("api|id|" + e) if isinstance(e, str) and e else ("api|new|" + uuid.uuid4().hex)
           for e in events["event_id"].tolist()]
    frame = events.assign(event_id=[hashlib.md5(i.encode()).hexdigest() for i in ids]).drop_duplicates("event_id")
    sizes = events["batch"].value_counts().reindex(range(batches), fill_value=0).tolist()
    con = store.con
    con.register("pw_api_events", frame)
    try:
        con.execute(
            """CREATE OR REPLACE TEMP TABLE pw_api_new AS
               SELECT * FROM pw_api_events f
               WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.source = 'api' AND e.event_id = f.event_id)""")
        con.execute("""INSERT INTO events (event_id, user_id, item_id, event_type, ts, properties, source, simulated,
                                           ingested_at)
                       SELECT event_id, user_id, item_id, event_type, ts, CAST(properties AS JSON), 'api', false, $now
                       FROM pw_api_new""", {"now": now})
        con.execute("""INSERT OR IGNORE INTO users (user_id, country, time_zone, source, first_seen, last_seen)
                       SELECT user_id, NULL, 'UTC', 'api', min(ts), max(ts) FROM pw_api_new GROUP BY user_id""")
        stored = dict(con.execute("SELECT batch, count(*) FROM pw_api_new GROUP BY batch").fetchall())
        con.execute("DROP TABLE pw_api_new")
    finally:
        con.unregister("pw_api_events")
    return [(int(stored.get(n, 0)), sizes[n] - int(stored.get(n, 0))) for n in range(batches)]


def erasure_hash(user_id: str, key: bytes) -> str:
    """The erasure ledger's name for ``user_id``: hex HMAC-SHA256 under the pseudonym key (never the raw id)."""
    return pseudonymise(user_id, key, length=64)


def erase_user(store: Store, user_id: str, *, key: bytes, now: datetime) -> dict[str, int]:
    """Delete every row about ``user_id`` (right to erasure) and record it in ``erasure_ledger``.

    Args:
        key: the install's pseudonym key (:func:`~engine.analytics.pseudonym.load_pseudonym_key`); the
            ledger holds the keyed hash, so a restore can erase the user again (:func:`reapply_erasures`).

    Returns:
        Rows deleted per table.
    """
    with store.transaction() as con:
        counts = _delete_users(con, [user_id])
        con.execute("""INSERT INTO erasure_ledger VALUES (?, ?)
                       ON CONFLICT (user_hash) DO UPDATE SET erased_at = greatest(erased_at, excluded.erased_at)""",
                    [erasure_hash(user_id, key), now])
    return counts


def _delete_users(con, user_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    ids = {"ids": user_ids}
    counts["send_attempts"] = len(con.execute(
        """DELETE FROM send_attempts WHERE send_id IN (SELECT send_id FROM sends WHERE user_id IN (SELECT unnest($ids)))
           RETURNING send_id""", ids).fetchall())
    con.execute("""DELETE FROM sim_device_truth
                   WHERE device_id IN (SELECT device_id FROM devices WHERE user_id IN (SELECT unnest($ids)))""", ids)
    for table in ("events", "devices", "decisions", "sends", "consents", "users"):
        counts[table] = len(con.execute(
            f"DELETE FROM {table} WHERE user_id IN (SELECT unnest($ids)) RETURNING user_id", ids).fetchall())
    # rejected rows of the canonical contract name the user as stored; other mappings keep the source's
    # own columns and derive the id ('or:' || CustomerID, a hash for Open Bandit), so they are not
    # matched here: that needs a per-mapping predicate in engine.ingest
    counts["quarantine"] = len(con.execute(
        """DELETE FROM quarantine WHERE trim(json_extract_string(raw, '$.user_id')) IN (SELECT unnest($ids))
           RETURNING row_number""", ids).fetchall())
    return counts


def reapply_erasures(store: Store, key: bytes, as_of: datetime | None) -> int:
    """Erase again every user in ``erasure_ledger`` erased after ``as_of`` (a restored backup's creation time).

    A user whose erasure predates ``as_of`` is left alone: the backup already reflected it, so any rows it
    holds for that id came after (the user came back). ``as_of=None`` (unknown) erases every listed user.

    Returns:
        How many users had rows and were erased again.
    """
    with store.transaction() as con:
        ledger = {h for (h,) in con.execute(
            "SELECT user_hash FROM erasure_ledger WHERE $as_of IS NULL OR erased_at > $as_of",
            {"as_of": as_of}).fetchall()}
        if not ledger:
            return 0
        present = [u for (u,) in con.execute(
            """SELECT user_id FROM users UNION SELECT user_id FROM events UNION SELECT user_id FROM devices
               UNION SELECT user_id FROM decisions UNION SELECT user_id FROM sends UNION SELECT user_id FROM consents
               UNION SELECT trim(json_extract_string(raw, '$.user_id')) FROM quarantine""").fetchall()
            if u is not None]
        erased = [u for u in present if erasure_hash(u, key) in ledger]
        if erased:
            _delete_users(con, erased)
    return len(erased)


def purge_events(store: Store, now: datetime, retention_days: float) -> int:
    """Delete raw events older than the retention; returns how many."""
    cutoff = now - timedelta(days=retention_days)
    return len(store.execute("DELETE FROM events WHERE ts < ? RETURNING event_id", [cutoff]).fetchall())


def rotate_data_key(store: Store, keyring: Keyring) -> dict[str, int]:
    """Re-encrypt every secret under the keyring's current key, in one transaction.

    Returns values re-encrypted per column (device tokens, API signing secrets, vendor credentials).
    Values already under the current key are left alone.
    """
    from engine.security.apikeys import SIGNING_COLUMN
    from engine.security.vendor_secrets import reencrypt_secrets

    out = {}
    with store.transaction() as con:
        for table, key_col, col, aad in (("devices", "device_id", "token", TOKEN_COLUMN),
                                         ("api_keys", "key_id", "signing_secret", SIGNING_COLUMN)):
            rows = con.execute(f"SELECT {key_col}, {col} FROM {table}").fetchall()
            stale = [(k, v) for k, v in rows if keyring.key_id_of(v) != keyring.current_id]
            frame = pd.DataFrame({"k": [k for k, _ in stale],
                                  "v": [keyring.encrypt(keyring.decrypt(v, aad), aad) for _, v in stale]})
            con.register("pw_rotate", frame)
            con.execute(f"UPDATE {table} SET {col} = r.v FROM pw_rotate r WHERE {table}.{key_col} = r.k")
            con.unregister("pw_rotate")
            out[f"{table}.{col}"] = len(stale)
        out["vendor_secrets.ciphertext"] = reencrypt_secrets(con, keyring)
    return out
