"""A hand-made store whose funnel and uplift are worked out by hand below (used by both test folders).

Campaign ``c1``: every decision's send_at is Wed 2011-11-02 10:00 UTC. London users (hour 10 local),
Tokyo users (19:00 JST). Item ``i:1`` is what every decision recommends.

    user  arm        action  vendor  tz      send             events
    t1    treatment  send    apns    London  delivered (2nd attempt after rate_limited), sent 10:05
                                             sim open + sim click; real purchase of i:1 on day 3
    t2    treatment  send    apns    London  delivered, sent 10:05; sim open + sim click; conversion grounded=false
    t3    treatment  send    fcm     Tokyo   delivered, sent 10:05; REAL open; real purchase of i:1 at 10:02
                                             (after send_at, before sent_at: converts for ITT, not in the funnel)
    t4    treatment  send    fcm     Tokyo   delivered, sent 11:00; purchase of i:1 on day 20 (too late),
                                             real purchase of i:2 on day 3
    t5    treatment  send    fcm     Tokyo   invalid_token after 1 attempt
    t6    treatment  send    apns    London  failed after 3 transient attempts
    t7    treatment  send    apns    Tokyo   pending, 0 attempts
    t8    treatment  skip    apns    London  no_consent
    t9    treatment  skip    -       London  no_device
    t10   treatment  skip    apns    London  no_allowed_send_time (no send_at)
    h1    holdout    holdout apns    London  real purchase of i:1 on day 2
    h2    holdout    holdout fcm     Tokyo   real purchase of i:2 on day 2
    h3    holdout    holdout apns    London  -
    h4    holdout    holdout fcm     Tokyo   SIMULATED purchase of i:1 on day 1 (never counts)
    h5    holdout    holdout apns    London  -

Campaign ``c2`` (send_at Sun 2011-11-20 09:00 UTC): one apns treatment send ``x1``, delivered, nothing else.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from engine.store import Store

__all__ = ["C1_SEND_AT", "C2_SEND_AT", "build_world"]

C1_SEND_AT = datetime(2011, 11, 2, 10, 0, tzinfo=UTC)
C2_SEND_AT = datetime(2011, 11, 20, 9, 0, tzinfo=UTC)
NOW = datetime(2011, 12, 1, tzinfo=UTC)
ZONES = {"London": "Europe/London", "Tokyo": "Asia/Tokyo"}
MIN = timedelta(minutes=1)
DAY = timedelta(days=1)

# user, arm, action, skip_reason, vendor, zone, hour_local
DECISIONS = [
    ("t1", "treatment", "send", None, "apns", "London", 10),
    ("t2", "treatment", "send", None, "apns", "London", 10),
    ("t3", "treatment", "send", None, "fcm", "Tokyo", 19),
    ("t4", "treatment", "send", None, "fcm", "Tokyo", 19),
    ("t5", "treatment", "send", None, "fcm", "Tokyo", 19),
    ("t6", "treatment", "send", None, "apns", "London", 10),
    ("t7", "treatment", "send", None, "apns", "Tokyo", 19),
    ("t8", "treatment", "skip", "no_consent", "apns", "London", 10),
    ("t9", "treatment", "skip", "no_device", None, "London", 10),
    ("t10", "treatment", "skip", "no_allowed_send_time", "apns", "London", None),
    ("h1", "holdout", "holdout", None, "apns", "London", 10),
    ("h2", "holdout", "holdout", None, "fcm", "Tokyo", 19),
    ("h3", "holdout", "holdout", None, "apns", "London", 10),
    ("h4", "holdout", "holdout", None, "fcm", "Tokyo", 19),
    ("h5", "holdout", "holdout", None, "apns", "London", 10),
]

# user, state, sent_at offset from send_at (None: never sent), attempt outcomes in order
SENDS = [
    ("t1", "delivered", 5 * MIN, ["rate_limited", "delivered"]),
    ("t2", "delivered", 5 * MIN, ["delivered"]),
    ("t3", "delivered", 5 * MIN, ["delivered"]),
    ("t4", "delivered", 60 * MIN, ["delivered"]),
    ("t5", "invalid_token", 5 * MIN, ["invalid_token"]),
    ("t6", "failed", 5 * MIN, ["transient", "transient", "transient"]),
    ("t7", "pending", None, []),
]

# user, event_type, item, offset from C1_SEND_AT, simulated, properties (send_id filled in for "send")
EVENTS = [
    ("t1", "push_open", "i:1", 30 * MIN, True, {"send": True}),
    ("t1", "push_click", "i:1", 31 * MIN, True, {"send": True}),
    ("t1", "purchase", "i:1", 3 * DAY, False, {}),
    ("t1", "conversion", "i:1", 3 * DAY, True, {"send": True, "grounded": True}),
    ("t2", "push_open", "i:1", 30 * MIN, True, {"send": True}),
    ("t2", "push_click", "i:1", 31 * MIN, True, {"send": True}),
    ("t2", "conversion", "i:1", 2 * 60 * MIN, True, {"send": True, "grounded": False}),
    ("t3", "push_open", "i:1", 40 * MIN, False, {"send": True}),
    ("t3", "purchase", "i:1", 2 * MIN, False, {}),
    ("t4", "purchase", "i:1", 20 * DAY, False, {}),
    ("t4", "purchase", "i:2", 3 * DAY, False, {}),
    ("h1", "purchase", "i:1", 2 * DAY, False, {}),
    ("h2", "purchase", "i:2", 2 * DAY, False, {}),
    ("h4", "purchase", "i:1", 1 * DAY, True, {}),
    ("t8", "cancellation", "i:1", 1 * DAY, False, {}),
]

MODEL_METRICS = {"auc": 0.71, "logloss": 0.31, "rows": 1000, "calibration": {"ece": 0.02}, "note": "text"}


def build_world(store: Store) -> None:
    """Fill an empty, migrated store with the rows described in the module docstring."""
    con = store.con
    for campaign_id, send_at in (("c1", C1_SEND_AT), ("c2", C2_SEND_AT)):
        con.execute("INSERT INTO campaigns VALUES (?, ?, '{}', ?, ?)",
                    [campaign_id, f"Campaign {campaign_id}", send_at - DAY, send_at - DAY])
    decisions = [*DECISIONS, ("x1", "treatment", "send", None, "apns", "London", 9)]
    for user, arm, action, reason, vendor, zone, hour in decisions:
        campaign, base = ("c2", C2_SEND_AT) if user == "x1" else ("c1", C1_SEND_AT)
        con.execute("INSERT INTO users VALUES (?, 'GB', ?, 'test', NULL, NULL)", [user, ZONES[zone]])
        con.execute(
            """INSERT INTO decisions (decision_id, campaign_id, user_id, arm, action, skip_reason, item_id,
                                      position, score, propensity, policy, model_version, send_at,
                                      send_hour_local, device_id, vendor, message_class, as_of, created_at)
               VALUES (?, ?, ?, ?, ?, ?, 'i:1', 0, 0.2, 0.5, 'greedy', 'click-v1', ?, ?, ?, ?, 'marketing', ?, ?)""",
            [f"d-{user}", campaign, user, arm, action, reason, base if hour is not None else None, hour,
             f"dev-{user}" if vendor else None, vendor, base - DAY, base - DAY],
        )
        if vendor:
            con.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, registered_at, simulated) "
                        "VALUES (?, ?, ?, 'app', ?, ?, true)", [f"dev-{user}", user, vendor, f"tok-{user}", base - DAY])
    for user, state, offset, attempts in [*SENDS, ("x1", "delivered", 2 * MIN, ["delivered"])]:
        base = C2_SEND_AT if user == "x1" else C1_SEND_AT
        vendor = next(d[4] for d in decisions if d[0] == user)
        sent_at = base + offset if offset is not None else None
        con.execute(
            """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class, title,
                                  body, due_at, state, attempts, next_attempt_at, outcome, sent_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, 'marketing', 'T', 'B', ?, ?, ?, ?, ?, ?, ?)""",
            [f"s-{user}", f"d-{user}", "c2" if user == "x1" else "c1", user, f"dev-{user}", vendor, base, state,
             len(attempts), base, attempts[-1] if attempts else None, sent_at, NOW],
        )
        for number, outcome in enumerate(attempts, start=1):
            con.execute("INSERT INTO send_attempts VALUES (?, ?, ?, ?, 200, NULL)",
                        [f"s-{user}", number, sent_at + (number - 1) * MIN, outcome])
    for k, (user, kind, item, offset, simulated, props) in enumerate(EVENTS):
        properties = {key: value for key, value in props.items() if key != "send"}
        if props.get("send"):
            properties = {"send_id": f"s-{user}", **properties}
        con.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [f"e{k}", user, item, kind, C1_SEND_AT + offset, json.dumps(properties) if properties else None,
                     "simulation" if simulated else "test", simulated, NOW])
    con.execute("INSERT INTO consents VALUES ('t1', 'push', 'marketing', true, ?, true)", [NOW])
    con.execute("INSERT INTO model_runs VALUES ('click', 'v1', ?, 'models/click/v1', ?, '{}')",
                [NOW, json.dumps(MODEL_METRICS)])
