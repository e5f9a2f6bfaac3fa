"""Test helper: write past decisions, sends and engagement events straight into a store."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd


def add_past_sends(store, campaign_id: str, name: str, rows: list[dict], as_of: datetime,
                   tag: str = "") -> None:
    """Insert one delivered (or ``state``) send per row: user_id, template_id, due_at, opened, clicked."""
    store.execute("INSERT INTO campaigns VALUES (?, ?, '{}', ?, ?) ON CONFLICT DO NOTHING",
                  [campaign_id, name, as_of, as_of])
    events = []
    for i, r in enumerate(rows):
        did, sid = f"{campaign_id}{tag}-d{i}", f"{campaign_id}{tag}-s{i}"
        store.execute("""INSERT INTO decisions (decision_id, campaign_id, user_id, arm, action, template_id, score,
                                               policy, message_class, as_of, created_at)
                         VALUES (?, ?, ?, 'treatment', 'send', ?, 0.1, 'test', 'marketing', ?, ?)""",
                      [did, campaign_id, r["user_id"], r.get("template_id"), as_of, as_of])
        store.execute("""INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                           title, body, due_at, state, attempts, next_attempt_at, updated_at)
                         VALUES (?, ?, ?, ?, 'dev', 'apns', 'marketing', 't', 'b', ?, ?, 1, ?, ?)""",
                      [sid, did, campaign_id, r["user_id"], r["due_at"], r.get("state", "delivered"),
                       r["due_at"], r["due_at"]])
        for kind in ("open", "click"):
            if r.get(f"{kind}ed"):
                at = r.get("event_at", r["due_at"])
                events.append((f"{sid}-{kind}", r["user_id"], f"push_{kind}", at, json.dumps({"send_id": sid})))
    if events:
        frame = pd.DataFrame(events, columns=["event_id", "user_id", "event_type", "ts", "properties"])
        store.con.register("pw_test_events", frame)
        store.execute("""INSERT INTO events SELECT event_id, user_id, NULL, event_type, ts, properties, 'pushwise',
                                                   true, ts FROM pw_test_events""")
        store.con.unregister("pw_test_events")
