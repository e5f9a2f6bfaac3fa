"""API-triggered sends: one logged decision per target user and an outbox row per send, now or at best time.

A trigger names users (or a segment of them), a campaign or an event (an abandoned cart), the copy with
``{item}`` filled per user from the item the user last touched (or the one given), and when: ``now`` or
``best_time`` (the next occurrence of the local hour the user was most active in, in their time zone).
Consent and an active device are checked here and again by the dispatcher at send time.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from engine.store import Store

__all__ = ["MAX_AUDIENCE", "TriggerSpec", "send_status", "trigger_send"]

MAX_AUDIENCE = 100_000
_NS = uuid.UUID("a7d1f0b2-8c3e-4e55-9a41-70757368696f")


@dataclass(frozen=True)
class TriggerSpec:
    """A validated trigger. Exactly one of ``user_ids`` and ``countries`` selects the audience."""

    name: str                        # campaign id or event name (e.g. 'abandoned_cart')
    title: str
    body: str
    message_class: str = "marketing"
    when: str = "now"                # 'now' | 'best_time'
    user_ids: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    item_id: str | None = None
    data: dict[str, str] = field(default_factory=dict)


def _audience(store: Store, spec: TriggerSpec) -> pd.DataFrame:
    if spec.user_ids:
        store.con.register("pw_trigger_users", pd.DataFrame({"user_id": list(dict.fromkeys(spec.user_ids))}))
        try:
            return store.df("""SELECT t.user_id, coalesce(u.time_zone, 'UTC') AS time_zone
                               FROM pw_trigger_users t LEFT JOIN users u USING (user_id) ORDER BY t.user_id""")
        finally:
            store.con.unregister("pw_trigger_users")
    return store.df("""SELECT user_id, time_zone FROM users WHERE list_contains($c, country)
                       ORDER BY user_id LIMIT $n""", {"c": list(spec.countries), "n": MAX_AUDIENCE})


def _targets(store: Store, users: pd.DataFrame, spec: TriggerSpec, now: datetime) -> pd.DataFrame:
    """Per user: consent, newest active device, the item for the copy and the send time."""
    store.con.register("pw_trigger_aud", users)
    try:
        return store.df(
            """WITH dev AS (SELECT * FROM devices WHERE active
                            QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY registered_at DESC, device_id) = 1),
                    last_item AS (SELECT user_id, arg_max(item_id, ts) AS item_id FROM events
                                  WHERE item_id IS NOT NULL AND user_id IN (SELECT user_id FROM pw_trigger_aud)
                                  GROUP BY user_id),
                    best AS (SELECT e.user_id, mode(hour(timezone(a.time_zone, e.ts))) AS hour
                             FROM events e JOIN pw_trigger_aud a USING (user_id) GROUP BY e.user_id)
               SELECT a.user_id, a.time_zone, coalesce(c.granted, false) AS consent, d.device_id, d.vendor,
                      coalesce($item, l.item_id) AS item_id, i.name AS item_name, b.hour AS best_hour
               FROM pw_trigger_aud a
               LEFT JOIN consents c ON c.user_id = a.user_id AND c.channel = 'push' AND c.message_class = $cls
               LEFT JOIN dev d ON d.user_id = a.user_id
               LEFT JOIN last_item l ON l.user_id = a.user_id
               LEFT JOIN items i ON i.item_id = coalesce($item, l.item_id)
               LEFT JOIN best b ON b.user_id = a.user_id
               ORDER BY a.user_id""",
            {"cls": spec.message_class, "item": spec.item_id},
        )
    finally:
        store.con.unregister("pw_trigger_aud")


def _send_at(now: datetime, time_zone: str, hour: float | None, when: str) -> pd.Timestamp:
    at = pd.Timestamp(now)
    if when != "best_time" or hour is None or pd.isna(hour):
        return at
    local = at.tz_convert(time_zone)
    candidate = local.normalize() + pd.Timedelta(hours=int(hour))
    if candidate < local:
        candidate += pd.Timedelta(days=1)
    return candidate.tz_convert("UTC")


def trigger_send(store: Store, spec: TriggerSpec, now: datetime) -> dict:
    """Plan one trigger; returns ``trigger_id``, ``audience``, ``sends`` and ``skipped`` (reason → users)."""
    trigger_id = "api:" + uuid.uuid4().hex[:16]
    t = _targets(store, _audience(store, spec), spec, now)
    t["skip_reason"] = None
    t.loc[t["device_id"].isna(), "skip_reason"] = "no_device"
    t.loc[~t["consent"].astype(bool), "skip_reason"] = "no_consent"
    item_label = t["item_name"].fillna(t["item_id"]).fillna("something you liked")
    t["title"] = [spec.title.replace("{item}", str(x)) for x in item_label]
    t["body"] = [spec.body.replace("{item}", str(x)) for x in item_label]
    t["send_at"] = pd.to_datetime([_send_at(now, tz, h, spec.when) for tz, h in zip(t["time_zone"], t["best_hour"],
                                                                                     strict=True)], utc=True)
    t["decision_id"] = [str(uuid.uuid5(_NS, f"{trigger_id}|{u}")) for u in t["user_id"]]
    t["send_id"] = [str(uuid.uuid5(_NS, f"{trigger_id}|{u}|send")) for u in t["user_id"]]
    t["action"] = t["skip_reason"].map(lambda r: "send" if r is None else "skip")
    spec_json = json.dumps({"name": spec.name, "when": spec.when, "message_class": spec.message_class,
                            "audience": "users" if spec.user_ids else "countries"})
    data = json.dumps({**spec.data, "trigger": spec.name})
    with store.transaction() as con:
        con.execute("INSERT INTO campaigns VALUES (?, ?, ?, ?, ?)", [trigger_id, spec.name, spec_json, now, now])
        con.register("pw_trigger", t)
        con.execute(
            """INSERT INTO decisions (decision_id, campaign_id, user_id, arm, action, skip_reason, item_id, title,
                                      body, policy, send_at, send_hour_local, device_id, vendor, message_class,
                                      as_of, created_at)
               SELECT decision_id, $cid, user_id, 'treatment', action, skip_reason, item_id, title, body,
                      'api_trigger', send_at, hour(timezone(time_zone, send_at)), device_id, vendor, $cls, $now, $now
               FROM pw_trigger""", {"cid": trigger_id, "cls": spec.message_class, "now": now})
        con.execute(
            """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class, title,
                                  body, data, due_at, state, attempts, next_attempt_at, updated_at)
               SELECT send_id, decision_id, $cid, user_id, device_id, vendor, $cls, title, body, CAST($data AS JSON),
                      send_at, 'pending', 0, send_at, $now
               FROM pw_trigger WHERE action = 'send'""",
            {"cid": trigger_id, "cls": spec.message_class, "now": now, "data": data})
        con.unregister("pw_trigger")
    skipped = t["skip_reason"].dropna().value_counts().to_dict()
    return {"trigger_id": trigger_id, "audience": len(t), "sends": int((t["action"] == "send").sum()),
            "skipped": {str(k): int(v) for k, v in skipped.items()}}


def send_status(store: Store, trigger_id: str) -> dict | None:
    """Sends of a trigger per state, or None for an unknown trigger."""
    rows = store.execute("SELECT name, created_at FROM campaigns WHERE campaign_id = ?", [trigger_id]).fetchall()
    if not rows:
        return None
    row = rows[0]
    states = dict(store.execute("SELECT state, count(*) FROM sends WHERE campaign_id = ? GROUP BY state ORDER BY state",
                                [trigger_id]).fetchall())
    decided = store.execute("SELECT count(*) FROM decisions WHERE campaign_id = ?", [trigger_id]).fetchall()[0][0]
    return {"trigger_id": trigger_id, "name": row[0], "created_at": row[1].isoformat(), "audience": decided,
            "states": {str(k): int(v) for k, v in states.items()}}
