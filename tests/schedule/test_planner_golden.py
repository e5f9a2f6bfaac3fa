"""The planner's stored output, pinned row by row: what two campaigns write for one seed never changes silently.

The store covers every path of :func:`plan_campaign` outside the item chooser: holdout, consent
(refused and missing), no device, a newer and an inactive device, no item, quiet hours, a DST gap
and overlap, vivo's and Huawei's send windows, an exhausted vendor quota, the frequency cap (other
campaigns' sends, failed ones not counted), Thompson copy per country from past clicks, the
volume rule, items with missing names, prices and currencies. The second campaign (fixed hour,
uniform copy) is planned after the first, so the first one's sends count towards its cap.

The golden files hold every column of ``decisions`` and ``sends`` as text. If a change is meant to
alter what is planned, regenerate them and review the diff::

    .venv/bin/python -m tests.schedule.test_planner_golden
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from engine.clock import FixedClock
from engine.schedule.campaign import parse_campaign
from engine.schedule.planner import plan_campaign
from engine.store import Store
from tests.schedule._history import add_past_sends

AS_OF = datetime(2011, 11, 1, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden"
ZONES = ["Europe/London", "Asia/Tokyo", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "Asia/Shanghai"]
VENDORS = ["apns", "fcm", "vivo", "huawei", "xiaomi"]
N_USERS = 150

BEST = {
    "name": "Golden", "id": "golden", "as_of": "2011-11-01T00:00:00Z",
    "templates": [{"id": "a", "title": "{item_name}", "body": "{currency}{price:.2f}"},
                  {"id": "b", "title": "Back: {item_name}", "body": "{category} from {campaign}"},
                  {"id": "c", "title": "{campaign}", "body": "{item_name} {price:.0f}"}],
    "schedule": {"quiet_hours": ["21:30", "00:30"]},
    "limits": {"holdout_share": 0.2, "frequency_cap": 2, "frequency_days": 7},
    "copy": {"segment_by": "country", "samples": 500},
    "volume": {"value_per_click": 10.0, "send_cost": 0.5, "fatigue_cost": 0.4, "ignored_weight": 2.0},
}
FIXED = {
    "name": "Golden fixed", "id": "golden-fixed", "as_of": "2011-11-01T00:00:00Z",
    "templates": [{"id": "x", "title": "{item_name}!", "body": "{price:.2f} {currency}"},
                  {"id": "y", "title": "{category}", "body": "{item_name}"}],
    "schedule": {"send_time": "fixed", "fixed_hour": 7, "window_days": 3.5, "quiet_hours": ["22:00", "06:00"]},
    "limits": {"holdout_share": 0.1, "frequency_cap": 1, "frequency_days": 3},
    "copy": {"policy": "uniform"},
}


def chooser(store, user_ids, campaign, as_of, rng):
    """A fake item policy that uses the planner's generator (so the draw order is pinned too); every 9th user has no item."""
    n = len(user_ids)
    draw = rng.random(n)
    idx = np.array([int(u[1:]) for u in user_ids])
    keep = idx % 9 != 4
    items = np.array(["or:A", "or:B", "or:C", "or:D"], dtype=object)[idx % 4]
    picks = pd.DataFrame({"user_id": np.asarray(user_ids, dtype=object), "item_id": items, "position": idx % 3,
                          "score": np.round(draw, 6), "propensity": 0.5 + (idx % 5) / 10, "policy": "fake",
                          "model_version": "v-golden"})[keep]
    stranger = picks.iloc[:1].assign(user_id="not-in-audience")
    return pd.concat([stranger, picks.iloc[::-1]], ignore_index=True)


def ranker(store, user_ids, as_of):
    """Four preferred hours per user, some in quiet hours, DST changes or vendor windows; users 7k get none.

    Users 5k+2 have ranks out of order and tied; one row is for a user outside the audience.
    """
    idx = np.array([int(u[1:]) for u in user_ids])
    idx = idx[idx % 7 != 0]
    ids = np.array([f"u{i:03d}" for i in idx], dtype=object)
    n = len(ids)
    weekday = np.stack([idx % 7, (idx + 3) % 7, np.full(n, 6), (idx + 1) % 7], axis=1).ravel()
    hour = np.stack([(idx * 5) % 24, 22 + idx % 2, np.full(n, 1), 9 + idx % 12], axis=1).ravel()
    rank = np.where(np.repeat(idx % 5 == 2, 4), np.tile([2, 1, 1, 0], n), np.tile(np.arange(4), n))
    prefs = pd.DataFrame({"user_id": np.repeat(ids, 4), "rank": rank, "weekday": weekday, "local_hour": hour})
    return pd.concat([prefs, prefs.iloc[:1].assign(user_id="not-in-audience")], ignore_index=True)


def populate(store: Store) -> None:
    """Users, items, purchases, consents, devices, past sends and clicks, and an exhausted quota."""
    store.execute("""INSERT INTO items VALUES ('or:A', 'RED MUG', 'mugs', 2.5, 'GBP', 't', NULL),
                     ('or:B', NULL, 'plates', NULL, 'EUR', 't', NULL), ('or:C', '  ', NULL, 12.0, 'USD', 't', NULL),
                     ('or:D', 'blue  bowl', 'bowls', 1234.567, NULL, 't', NULL)""")
    for i in range(N_USERS):
        u = f"u{i:03d}"
        country = [None, "GB", "FR", "JP"][i % 4]
        store.execute("INSERT INTO users VALUES (?, ?, ?, 't', NULL, NULL)", [u, country, ZONES[i % len(ZONES)]])
        for k in range(1 + i % 2):
            store.execute("INSERT INTO events VALUES (?, ?, 'or:A', 'purchase', ?, NULL, 't', false, ?)",
                          [f"e{i}-{k}", u, AS_OF - timedelta(days=1 + i % 30 + k), AS_OF])
        if i % 11 != 6:
            store.execute("INSERT INTO consents VALUES (?, 'push', 'marketing', ?, ?, false)",
                          [u, i % 10 != 3, AS_OF])
        if i % 10 == 5:
            continue
        store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) "
                      "VALUES (?, ?, ?, 'app', 'tok', ?, ?)",
                      [f"d{i}", u, VENDORS[i % len(VENDORS)], i % 13 != 8, AS_OF - timedelta(days=30)])
        if i % 6 == 1:
            store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, registered_at) "
                          "VALUES (?, ?, ?, 'app', 'tok', ?)",
                          [f"d{i}-new", u, VENDORS[(i + 2) % len(VENDORS)], AS_OF - timedelta(days=2)])
    store.execute("""INSERT INTO vendor_quota VALUES ('xiaomi', 'app', 'marketing', DATE '2011-11-01', 10, 10,
                     TIMESTAMPTZ '2011-10-31 20:00:00+00', TIMESTAMPTZ '2011-11-01 16:00:00+00')""")
    past = AS_OF - timedelta(days=2)
    add_past_sends(store, "other", "Other", [
        {"user_id": f"u{i:03d}", "due_at": past + timedelta(hours=i % 5), "state": "failed" if i % 4 == 0 else "delivered"}
        for i in range(0, N_USERS, 3) for _ in range(1 + i % 3)], AS_OF)
    add_past_sends(store, "golden-old", "Golden", [
        {"user_id": f"u{i:03d}", "template_id": "abc"[i % 3], "due_at": AS_OF - timedelta(days=10 + i % 3),
         "clicked": (i % 3 == 1 and i % 2 == 0) or i % 7 == 0}
        for i in range(N_USERS)], AS_OF)


def plan_both(store: Store) -> None:
    clock = FixedClock(AS_OF)
    plan_campaign(store, parse_campaign(BEST), chooser, ranker, seed=11, clock=clock)
    plan_campaign(store, parse_campaign(FIXED), chooser, ranker, seed=11, clock=clock)


def stored(store: Store, table: str) -> pd.DataFrame:
    """Every column of the planned rows as text (times in UTC ISO, floats as their shortest exact repr)."""
    key = "decision_id" if table == "decisions" else "send_id"
    d = store.df(f"SELECT * FROM {table} WHERE campaign_id LIKE 'golden%' AND campaign_id <> 'golden-old' "
                 f"ORDER BY {key}")
    return d.apply(lambda col: col.map(_text)).astype(str)


def _text(v) -> str:
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (pd.Timestamp, datetime)):
        return pd.Timestamp(v).tz_convert("UTC").isoformat()
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _golden(table: str) -> pd.DataFrame:
    return pd.read_csv(GOLDEN / f"planner_{table}.csv", dtype=str, keep_default_na=False)


def test_the_stored_decisions_and_sends_equal_the_golden_rows():
    store = Store(":memory:")
    try:
        populate(store)
        plan_both(store)
        for table in ("decisions", "sends"):
            got, want = stored(store, table), _golden(table)
            assert list(got.columns) == list(want.columns)
            pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    finally:
        store.close()


def test_the_golden_rows_cover_every_path():
    d = _golden("decisions")
    reasons = set(d["skip_reason"])
    assert {"no_consent", "no_device", "no_candidate_item", "no_allowed_send_time", "frequency_cap",
            "vendor_quota", "low_value", "fatigue"} <= reasons
    assert set(d["action"]) == {"send", "holdout", "skip"} and set(d["template_id"]) >= {"a", "b", "c", "x", "y"}
    assert len(set(d["template_propensity"])) > 4 and len(d) == 2 * N_USERS
    assert len(_golden("sends")) == (d["action"] == "send").sum()


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    s = Store(":memory:")
    populate(s)
    plan_both(s)
    for name in ("decisions", "sends"):
        stored(s, name).to_csv(GOLDEN / f"planner_{name}.csv", index=False)
        print(f"wrote {GOLDEN / f'planner_{name}.csv'}")
