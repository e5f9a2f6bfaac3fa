"""Seeded synthetic stores with planted signals, for tests and benchmarks of the models.

Each generator writes rows that follow the ingest contract (events, users, items) and returns the
truth it planted, so a test can assert that a model recovers it:

* :func:`add_shoppers` — users who buy mostly their own few favourite items, always at one planted
  local hour (in their own time zone), on planted weekdays;
* :func:`add_pushes` — Pushwise decisions and sends whose ``push_click`` happens exactly when the
  pushed item is one of the user's favourites;
* :func:`add_impressions` — Open Bandit-style impressions whose click depends on one user feature
  and the affinity count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from engine.features.base import Db, connection

__all__ = ["ShopperTruth", "add_impressions", "add_pushes", "add_shoppers", "insert_events"]

TIME_ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
HOURS = (8, 12, 19, 21)


@dataclass(frozen=True)
class ShopperTruth:
    """What :func:`add_shoppers` planted.

    Attributes:
        users: ``user_id``, ``time_zone``, ``country``, ``best_hour`` (local hour of every purchase),
            ``n_baskets``.
        favourites: ``user_id``, ``item_id``: the items each user keeps buying.
        items: ``item_id``, ``category``, ``price``.
    """

    users: pd.DataFrame
    favourites: pd.DataFrame
    items: pd.DataFrame


def add_shoppers(
    db: Db,
    rng: np.random.Generator,
    n_users: int = 150,
    n_items: int = 60,
    start: datetime = datetime(2011, 1, 3, tzinfo=UTC),
    days: int = 140,
    light_users: int = 10,
) -> ShopperTruth:
    """Insert purchase events for shoppers with planted favourites and a planted local hour.

    Each regular user shops on about a third of the days (one basket of 1–3 lines: a favourite with
    probability 0.8, else a random item), always at minute 10–50 of their ``best_hour``; the last
    ``light_users`` users buy only twice (send-time fallback cases).
    """
    items = pd.DataFrame({"item_id": [f"syn:i{i:03d}" for i in range(n_items)]})
    items["category"] = [f"cat{i % 6}" for i in range(n_items)]
    items["price"] = np.round(rng.uniform(1, 20, n_items), 2)
    users = pd.DataFrame({"user_id": [f"syn:u{u:04d}" for u in range(n_users)]})
    users["time_zone"] = [TIME_ZONES[u % len(TIME_ZONES)] for u in range(n_users)]
    users["country"] = users["time_zone"].str.split("/").str[0]
    users["best_hour"] = [HOURS[(u // len(TIME_ZONES)) % len(HOURS)] for u in range(n_users)]
    fav = rng.integers(0, n_items, size=(n_users, 3))
    favourites = pd.DataFrame(
        {"user_id": np.repeat(users["user_id"].to_numpy(), 3), "item_id": items["item_id"].to_numpy()[fav.ravel()]}
    ).drop_duplicates()

    rows = []
    for u, user in users.iterrows():  # a few hundred users: generation cost is irrelevant
        zone = ZoneInfo(user["time_zone"])
        active_days = np.flatnonzero(rng.random(days) < 0.33)
        if u >= n_users - light_users:
            active_days = active_days[:2]
        for b, day in enumerate(active_days):
            local = (start + timedelta(days=int(day))).astimezone(zone).replace(
                hour=int(user["best_hour"]), minute=int(rng.integers(10, 50)), second=0, microsecond=0
            )
            ts = local.astimezone(UTC)
            for line in range(int(rng.integers(1, 4))):
                pick = fav[u, rng.integers(0, 3)] if rng.random() < 0.8 else rng.integers(0, n_items)
                rows.append((f"syn:e{u}:{b}:{line}", user["user_id"], items["item_id"][pick], ts, f"S{u}-{b}",
                             int(rng.integers(1, 5)), float(items["price"][pick])))
    events = pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "ts", "invoice", "quantity", "unit_price"])
    events["properties"] = [
        json.dumps({"invoice": i, "quantity": q, "unit_price": p})
        for i, q, p in zip(events["invoice"], events["quantity"], events["unit_price"], strict=True)
    ]
    insert_events(db, events.assign(event_type="purchase", source="synthetic"))
    con = connection(db)
    con.register("syn_users", users)
    con.execute("INSERT INTO users SELECT user_id, country, time_zone, 'synthetic', NULL, NULL FROM syn_users")
    con.unregister("syn_users")
    con.register("syn_items", items)
    con.execute(
        "INSERT INTO items SELECT item_id, item_id, category, price, 'GBP', 'synthetic', NULL FROM syn_items"
    )
    con.unregister("syn_items")
    counts = events.groupby("user_id")["invoice"].nunique()
    users["n_baskets"] = users["user_id"].map(counts).fillna(0).astype("int64")
    return ShopperTruth(users, favourites, items)


def insert_events(db: Db, events: pd.DataFrame) -> None:
    """Insert ``event_id``, ``user_id``, ``item_id``, ``event_type``, ``ts``, ``properties`` (JSON text), ``source``."""
    con = connection(db)
    frame = events[["event_id", "user_id", "item_id", "event_type", "ts", "properties", "source"]]
    con.register("syn_events", frame)
    con.execute(
        "INSERT INTO events SELECT event_id, user_id, item_id, event_type, ts, CAST(properties AS JSON), source, "
        "true, ts FROM syn_events"
    )
    con.unregister("syn_events")


def add_pushes(
    db: Db,
    rng: np.random.Generator,
    truth: ShopperTruth,
    decided_at: list[datetime],
    per_user: int = 1,
    clicks_on: str = "favourite",
) -> pd.DataFrame:
    """Insert sent pushes (decisions + sends) at each ``decided_at`` and their ``push_click`` events.

    Half of the pushed items are favourites, half random. A push is clicked iff its item is a
    favourite (``clicks_on="favourite"``) or iff it is not (``"novel"``: the opposite of what
    purchase behaviour suggests, so only a model that learns from push rows gets it right).
    The send goes out one hour after the decision, the click one hour later.

    Returns:
        ``send_id``, ``user_id``, ``item_id``, ``decided_at``, ``clicked``.
    """
    fav = truth.favourites.groupby("user_id")["item_id"].agg(list)
    all_items = truth.items["item_id"].to_numpy()
    rows = []
    for d, when in enumerate(decided_at):
        for u, user_id in enumerate(truth.users["user_id"]):
            for k in range(per_user):
                item = rng.choice(fav[user_id]) if rng.random() < 0.5 else rng.choice(all_items)
                favourite = item in fav[user_id]
                rows.append((f"syn:s{d}:{u}:{k}", user_id, item, when, favourite == (clicks_on == "favourite")))
    pushes = pd.DataFrame(rows, columns=["send_id", "user_id", "item_id", "decided_at", "clicked"])
    con = connection(db)
    con.register("syn_pushes", pushes)
    con.execute(
        """
        INSERT INTO decisions (decision_id, campaign_id, user_id, arm, action, item_id, position, score,
                               propensity, policy, message_class, as_of, created_at)
        SELECT 'd-' || send_id, 'syn', user_id, 'treatment', 'send', item_id, 0, 0.5, 1.0, 'synthetic',
               'marketing', decided_at, decided_at FROM syn_pushes
        """
    )
    con.execute(
        """
        INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class, title,
                           body, due_at, state, next_attempt_at, sent_at, updated_at)
        SELECT send_id, 'd-' || send_id, 'syn', user_id, 'dev-' || user_id, 'apns', 'marketing', 't', 'b',
               decided_at + INTERVAL 1 HOUR, 'delivered', decided_at + INTERVAL 1 HOUR,
               decided_at + INTERVAL 1 HOUR, decided_at + INTERVAL 1 HOUR
        FROM syn_pushes
        """
    )
    con.unregister("syn_pushes")
    clicks = pushes[pushes["clicked"]]
    insert_events(
        db,
        pd.DataFrame(
            {
                "event_id": "syn:c:" + clicks["send_id"],
                "user_id": clicks["user_id"],
                "item_id": clicks["item_id"],
                "event_type": "push_click",
                "ts": clicks["decided_at"] + timedelta(hours=2),
                "properties": [json.dumps({"send_id": s}) for s in clicks["send_id"]],
                "source": "pushwise",
            }
        ),
    )
    return pushes


def add_impressions(
    db: Db, rng: np.random.Generator, n: int = 6000, start: datetime = datetime(2019, 11, 24, tzinfo=UTC)
) -> pd.DataFrame:
    """Insert Open Bandit-style impressions (and click events) with a planted click rule.

    Click probability is 0.4 when ``user_feature_0 == "a"`` and the affinity is positive, else 0.01.
    Returns the impressions with ``click``.
    """
    items = [f"obd:{i}" for i in range(10)]
    frame = pd.DataFrame(
        {
            "user_feature_0": rng.choice(["a", "b", "c"], n),
            "user_feature_1": rng.choice(["x", "y"], n),
            "item_id": rng.choice(items, n),
            "position": rng.integers(1, 4, n),
            "affinity": rng.integers(0, 3, n),
            "ts": [start + timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 6 * 86400, n))],
        }
    )
    p = np.where((frame["user_feature_0"] == "a") & (frame["affinity"] > 0), 0.4, 0.01)
    frame["click"] = (rng.random(n) < p).astype(int)
    frame["user_id"] = "obd:" + frame["user_feature_0"] + frame["user_feature_1"]
    props = [
        json.dumps({"position": int(r.position), "click": int(r.click), "propensity": 0.1, "policy": "random",
                    "user_feature_0": r.user_feature_0, "user_feature_1": r.user_feature_1,
                    "user_feature_2": "z", "user_feature_3": "w", "affinity": int(r.affinity)})
        for r in frame.itertuples()
    ]
    imps = frame.assign(event_id=[f"syn:imp{i}" for i in range(n)], event_type="impression", properties=props,
                        source="open_bandit")
    insert_events(db, imps)
    con = connection(db)
    item_rows = pd.DataFrame({"item_id": items, "properties": [
        json.dumps({"item_feature_0": i / 10, "item_feature_1": f"f{i % 3}", "item_feature_2": "g", "item_feature_3": "h"})
        for i in range(len(items))]})
    con.register("syn_obd_items", item_rows)
    con.execute("INSERT INTO items SELECT item_id, NULL, NULL, NULL, NULL, 'open_bandit', CAST(properties AS JSON) "
                "FROM syn_obd_items")
    con.unregister("syn_obd_items")
    return frame
