"""Give ingested users simulated devices and consent, since the public datasets record neither."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from engine.push.sandbox.tokens import new_apns_token, new_fcm_token
from engine.security.crypto import load_keyring
from engine.store import Store

__all__ = ["PopulationShares", "seed_population"]

APP_ID = "com.pushwise.demo"


@dataclass(frozen=True)
class PopulationShares:
    """Shares of the simulated population (defaults near published app-marketing benchmarks)."""

    ios: float = 0.5                 # APNs; the rest use FCM
    without_app: float = 0.05        # never installed the app: no device
    marketing_opt_out: float = 0.08  # declined or withdrew marketing push consent
    uninstalled: float = 0.03        # installed, then removed the app: the vendor answers "unregistered"


def seed_population(
    store: Store,
    now: datetime,
    seed: int = 7,
    source: str | None = "online_retail",
    shares: PopulationShares = PopulationShares(),
) -> dict[str, int]:
    """Create one simulated device and consent rows for every user of ``source`` never seeded before.

    A user counts as seeded once it has a device or a push consent row (users drawn without the app
    get consent rows too), so a re-run leaves everyone already seeded alone. Each user's outcome is
    drawn from ``(seed, user_id)`` alone, so it does not depend on which run or batch seeds the user.

    Returns counts: ``users``, ``devices``, ``opted_out``, ``uninstalled`` (of the users seeded now).
    """
    source_filter = "AND u.source = $source" if source else ""
    params: dict = {"now": now, **({"source": source} if source else {})}
    users = store.df(
        f"""SELECT u.user_id, coalesce(u.first_seen, $now) AS first_seen FROM users u
            WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = u.user_id)
              AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.user_id = u.user_id AND c.channel = 'push')
              {source_filter}
            ORDER BY u.user_id""",
        params,
    )
    n = len(users)
    if n == 0:
        return {"users": 0, "devices": 0, "opted_out": 0, "uninstalled": 0}
    u = _user_uniforms(users["user_id"], seed)
    has_app = u[:, 0] >= shares.without_app
    ios = u[:, 1] < shares.ios
    opted_out = u[:, 2] < shares.marketing_opt_out
    uninstalled = has_app & (u[:, 3] < shares.uninstalled)
    tokens = [new_apns_token(random.Random(f"{seed}|token|{user}")) if i
              else new_fcm_token(random.Random(f"{seed}|token|{user}"))
              for user, i in zip(users["user_id"], ios, strict=True)]
    keyring = load_keyring()  # devices.token holds AES-GCM ciphertext; token_hash serves lookups

    registered = pd.to_datetime(users["first_seen"], utc=True)
    devices = pd.DataFrame({
        # a stable id per user (an earlier version numbered devices by their position in the run)
        "device_id": [f"dev:{u.split(':', 1)[-1]}:sim" for u in users["user_id"]],
        "user_id": users["user_id"],
        "vendor": np.where(ios, "apns", "fcm"),
        "app_id": APP_ID,
        "token": [keyring.encrypt(t, "devices.token") for t in tokens],
        "token_hash": [keyring.token_hash(v, t) for v, t in zip(np.where(ios, "apns", "fcm"), tokens, strict=True)],
        "registered_at": registered,
    })[has_app]
    consents = pd.DataFrame({
        "user_id": np.concatenate([users["user_id"].to_numpy()] * 2),
        "message_class": ["marketing"] * n + ["transactional"] * n,
        "granted": np.concatenate([~opted_out, np.ones(n, dtype=bool)]),
    })
    truth = devices[uninstalled[has_app]].assign(
        token=np.asarray(tokens, dtype=object)[has_app][uninstalled[has_app]],
        uninstalled_at=lambda d: d["registered_at"] + timedelta(days=1)
    )
    with store.transaction() as con:
        con.register("pw_devices", devices)
        con.execute("""INSERT INTO devices (device_id, user_id, vendor, app_id, token, token_hash, active,
                                            registered_at, simulated)
                       SELECT device_id, user_id, vendor, app_id, token, token_hash, true, registered_at, true
                       FROM pw_devices""")
        con.register("pw_consents", consents)
        con.execute("""INSERT OR REPLACE INTO consents
                       SELECT user_id, 'push', message_class, granted, $now, true FROM pw_consents""", {"now": now})
        con.register("pw_truth", truth)
        con.execute("""INSERT OR REPLACE INTO sim_device_truth
                       SELECT device_id, vendor, token, uninstalled_at FROM pw_truth""")
        for name in ("pw_devices", "pw_consents", "pw_truth"):
            con.unregister(name)
    return {"users": n, "devices": int(has_app.sum()), "opted_out": int(opted_out.sum()),
            "uninstalled": int(uninstalled.sum())}


def _user_uniforms(user_ids: pd.Series, seed: int) -> np.ndarray:
    """Four uniforms in [0, 1) per user (has app, iOS, opted out, uninstalled), from ``(seed, user_id)`` only."""
    digests = b"".join(hashlib.blake2b(f"{seed}|{u}".encode(), digest_size=32).digest() for u in user_ids)
    words = np.frombuffer(digests, dtype="<u8").reshape(len(user_ids), 4)
    return (words >> np.uint64(11)).astype("float64") / float(1 << 53)
