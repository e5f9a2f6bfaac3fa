"""API-triggered sends: one logged decision per target user and an outbox row per send, now or at best time.

A trigger names users (or a segment of them), a campaign or an event (an abandoned cart), the copy with
``{item}`` filled per user from the item the user last touched (or the one given), and when: ``now`` or
``best_time`` (the next occurrence of the local hour the user was most active in, in their time zone).
Consent and an active device are checked here and again by the dispatcher at send time.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from engine.service.operations import usable_time_zones
from engine.store import Store

__all__ = ["MAX_AUDIENCE", "TriggerSpec", "plan_triggers", "send_status", "trigger_send"]

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


def _audience(store: Store, specs: Sequence[TriggerSpec]) -> pd.DataFrame:
    """Every trigger's target users: ``t`` (index in ``specs``), ``user_id``, ``time_zone``, ``cls``, ``item``."""
    named = [(t, u) for t, spec in enumerate(specs) for u in dict.fromkeys(spec.user_ids)]
    parts = []
    if named:
        store.con.register("pw_trigger_users", pd.DataFrame(named, columns=["t", "user_id"]))
        try:
            parts.append(store.df("""SELECT p.t, p.user_id, coalesce(u.time_zone, 'UTC') AS time_zone
                                     FROM pw_trigger_users p LEFT JOIN users u USING (user_id)"""))
        finally:
            store.con.unregister("pw_trigger_users")
    for t, spec in enumerate(specs):
        if not spec.user_ids:
            parts.append(store.df("""SELECT $t AS t, user_id, time_zone FROM users WHERE list_contains($c, country)
                                     ORDER BY user_id LIMIT $n""",
                                  {"t": t, "c": list(spec.countries), "n": MAX_AUDIENCE}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["t", "user_id", "time_zone"])
    frame["t"] = frame["t"].astype("int64")
    # a zone DuckDB cannot read (stored before the API checked, or by another loader) would fail the
    # whole batch of triggers: such a user is planned in UTC
    frame["time_zone"] = frame["time_zone"].where(frame["time_zone"].isin(usable_time_zones()), "UTC")
    frame["cls"] = [specs[t].message_class for t in frame["t"]]
    frame["item"] = pd.Series([specs[t].item_id for t in frame["t"]], dtype="object")
    return frame


def _targets(store: Store, users: pd.DataFrame) -> pd.DataFrame:
    """Per (trigger, user): consent, newest active device, the item for the copy and the best local hour."""
    store.con.register("pw_trigger_aud", users)
    try:
        return store.df(
            """WITH who AS (SELECT DISTINCT user_id FROM pw_trigger_aud),
                    dev AS (SELECT * FROM devices WHERE active AND user_id IN (SELECT user_id FROM who)
                            QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY registered_at DESC, device_id) = 1),
                    mine AS (SELECT e.user_id, e.item_id, e.ts FROM events e
                             WHERE e.user_id IN (SELECT user_id FROM who)),
                    last_item AS (SELECT user_id, arg_max(item_id, ts) AS item_id FROM mine
                                  WHERE item_id IS NOT NULL GROUP BY user_id),
                    zone AS (SELECT DISTINCT user_id, time_zone FROM pw_trigger_aud),
                    best AS (SELECT m.user_id, mode(hour(timezone(z.time_zone, m.ts))) AS hour
                             FROM mine m JOIN zone z USING (user_id) GROUP BY m.user_id)
               SELECT a.t, a.user_id, a.time_zone, coalesce(c.granted, false) AS consent, d.device_id, d.vendor,
                      coalesce(a.item, l.item_id) AS item_id, i.name AS item_name, b.hour AS best_hour
               FROM pw_trigger_aud a
               LEFT JOIN consents c ON c.user_id = a.user_id AND c.channel = 'push' AND c.message_class = a.cls
               LEFT JOIN dev d ON d.user_id = a.user_id
               LEFT JOIN last_item l ON l.user_id = a.user_id
               LEFT JOIN items i ON i.item_id = coalesce(a.item, l.item_id)
               LEFT JOIN best b ON b.user_id = a.user_id
               ORDER BY a.t, a.user_id""")
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
    """Plan one trigger in its own transaction; see `plan_triggers`."""
    with store.transaction():
        return plan_triggers(store, [spec], now)[0]


def plan_triggers(store: Store, specs: Sequence[TriggerSpec], now: datetime) -> list[dict]:
    """Plan several triggers with one read and one write per table, inside the caller's transaction.

    The service groups the triggers of concurrent requests this way (`engine.service.batching`):
    each trigger still gets its own id, campaign row, decisions and sends.

    Returns:
        Per spec, in order: ``trigger_id``, ``audience``, ``sends`` and ``skipped`` (reason → users).
    """
    ids = ["api:" + uuid.uuid4().hex[:16] for _ in specs]
    t = _targets(store, _audience(store, specs))
    spec_of = [specs[i] for i in t["t"]]
    t["cid"] = [ids[i] for i in t["t"]]
    t["skip_reason"] = None
    t.loc[t["device_id"].isna(), "skip_reason"] = "no_device"
    t.loc[~t["consent"].astype(bool), "skip_reason"] = "no_consent"
    item_label = t["item_name"].fillna(t["item_id"]).fillna("something you liked")
    t["title"] = [s.title.replace("{item}", str(x)) for s, x in zip(spec_of, item_label, strict=True)]
    t["body"] = [s.body.replace("{item}", str(x)) for s, x in zip(spec_of, item_label, strict=True)]
    t["send_at"] = pd.to_datetime([_send_at(now, tz, h, s.when) for tz, h, s in
                                   zip(t["time_zone"], t["best_hour"], spec_of, strict=True)], utc=True)
    t["decision_id"] = [str(uuid.uuid5(_NS, f"{c}|{u}")) for c, u in zip(t["cid"], t["user_id"], strict=True)]
    t["send_id"] = [str(uuid.uuid5(_NS, f"{c}|{u}|send")) for c, u in zip(t["cid"], t["user_id"], strict=True)]
    t["action"] = np.where(t["skip_reason"].isna(), "send", "skip")
    t["cls"] = [s.message_class for s in spec_of]
    t["data"] = [json.dumps({**s.data, "trigger": s.name}) for s in spec_of]
    campaigns = pd.DataFrame({
        "campaign_id": ids, "name": [s.name for s in specs],
        "spec": [json.dumps({"name": s.name, "when": s.when, "message_class": s.message_class,
                             "audience": "users" if s.user_ids else "countries"}) for s in specs]})
    con = store.con
    con.register("pw_trigger_campaigns", campaigns)
    con.register("pw_trigger", t)
    try:
        con.execute("""INSERT INTO campaigns SELECT campaign_id, name, CAST(spec AS JSON), $now, $now
                       FROM pw_trigger_campaigns""", {"now": now})
        con.execute(
            """INSERT INTO decisions (decision_id, campaign_id, user_id, arm, action, skip_reason, item_id, title,
                                      body, policy, send_at, send_hour_local, device_id, vendor, message_class,
                                      as_of, created_at)
               SELECT decision_id, cid, user_id, 'treatment', action, skip_reason, item_id, title, body,
                      'api_trigger', send_at, hour(timezone(time_zone, send_at)), device_id, vendor, cls, $now, $now
               FROM pw_trigger""", {"now": now})
        con.execute(
            """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class, title,
                                  body, data, due_at, state, attempts, next_attempt_at, updated_at)
               SELECT send_id, decision_id, cid, user_id, device_id, vendor, cls, title, body, CAST(data AS JSON),
                      send_at, 'pending', 0, send_at, $now
               FROM pw_trigger WHERE action = 'send'""", {"now": now})
    finally:
        con.unregister("pw_trigger")
        con.unregister("pw_trigger_campaigns")
    audience = [0] * len(specs)
    sends = [0] * len(specs)
    skipped: list[dict[str, int]] = [{} for _ in specs]
    for i, action, reason in zip(t["t"].tolist(), t["action"].tolist(), t["skip_reason"].tolist(), strict=True):
        audience[i] += 1
        if action == "send":
            sends[i] += 1
        else:
            skipped[i][reason] = skipped[i].get(reason, 0) + 1
    return [{"trigger_id": cid, "audience": audience[i], "sends": sends[i], "skipped": skipped[i]}
            for i, cid in enumerate(ids)]


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
