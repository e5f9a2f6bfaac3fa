"""Seeded reactions to delivered pushes (opens, clicks, conversions), grounded in the real purchase log.

No phone exists in the sandbox, so reactions are simulated — but from what the real customer did next:

* A push is *relevant* when the customer really bought the pushed item in the 14 days after it was
  sent (the Online Retail log says so). Relevant pushes are opened and clicked far more often.
* A push sent at an hour of day at which the customer really purchased in the following 30 days is
  *well timed* and is opened a little more often.
* A *conversion* is grounded when it is that real purchase (its time is the real purchase time).
  Clicked pushes that were not followed by a real purchase convert with a small probability: these
  are the simulated incremental conversions, marked ``grounded: false``.

Every event written here has ``simulated = true`` and ``source = 'simulation'``. Each send is judged
once: its random numbers come from ``(seed, send_id)`` alone, and the send is recorded in
``sim_engagement`` (migration 009) whether or not it drew a reaction, so a re-run judges only sends
delivered since and adds nothing for the others.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist

import numpy as np
import pandas as pd

from engine.store import Store

__all__ = ["EngagementModel", "simulate_engagement"]

_Z = NormalDist()


@dataclass(frozen=True)
class EngagementModel:
    """Probabilities of the simulation (all per delivered push)."""

    open_base: float = 0.08
    open_relevant: float = 0.45
    open_well_timed_bonus: float = 0.05
    click_given_open: float = 0.25
    click_given_open_relevant: float = 0.70
    incremental_conversion_given_click: float = 0.06
    horizon_days: int = 14


def simulate_engagement(store: Store, seed: int = 7, model: EngagementModel = EngagementModel(),
                        now: datetime | None = None) -> dict[str, int]:
    """Write simulated push_open / push_click / conversion events for delivered sends not judged before.

    Returns counts of the sends judged by this call: ``delivered_considered``, ``opens``, ``clicks``,
    ``conversions_grounded``, ``conversions_incremental``.
    """
    d = store.df(
        """WITH todo AS (
               SELECT s.send_id, s.user_id, dc.item_id, coalesce(s.sent_at, s.due_at) AS sent_at,
                      u.time_zone
               FROM sends s JOIN decisions dc USING (decision_id) JOIN users u ON u.user_id = s.user_id
               WHERE s.state = 'delivered'
                 AND NOT EXISTS (SELECT 1 FROM sim_engagement j WHERE j.send_id = s.send_id)
                 -- sends judged before migration 009 are known by their reactions
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.source = 'simulation'
                                 AND e.properties->>'send_id' = s.send_id)
           )
           SELECT t.send_id, t.user_id, t.item_id, t.sent_at,
                  (SELECT min(e.ts) FROM events e
                    WHERE e.user_id = t.user_id AND e.item_id = t.item_id AND e.event_type = 'purchase'
                      AND NOT e.simulated AND e.ts > t.sent_at
                      AND e.ts <= t.sent_at + to_days($h)) AS real_purchase_at,
                  EXISTS (SELECT 1 FROM events e
                    WHERE e.user_id = t.user_id AND e.event_type = 'purchase' AND NOT e.simulated
                      AND e.ts > t.sent_at AND e.ts <= t.sent_at + INTERVAL 30 DAY
                      AND hour(timezone(t.time_zone, e.ts)) = hour(timezone(t.time_zone, t.sent_at))) AS well_timed
           FROM todo t ORDER BY t.send_id""",
        {"h": model.horizon_days},
    )
    zero = {"delivered_considered": 0, "opens": 0, "clicks": 0, "conversions_grounded": 0,
            "conversions_incremental": 0}
    if d.empty:
        return zero
    n = len(d)
    u = _send_uniforms(d["send_id"], seed)  # columns: open, click, incremental, open delay, click delay, conversion delay
    relevant = d["real_purchase_at"].notna().to_numpy()
    p_open = np.where(relevant, model.open_relevant, model.open_base) + np.where(
        d["well_timed"].to_numpy(), model.open_well_timed_bonus, 0.0)
    opened = u[:, 0] < p_open
    clicked = opened & (u[:, 1] < np.where(relevant, model.click_given_open_relevant, model.click_given_open))
    incremental = clicked & ~relevant & (u[:, 2] < model.incremental_conversion_given_click)
    sent = pd.to_datetime(d["sent_at"], utc=True)
    # open delay: lognormal with median 20 minutes (sigma 1), by the inverse normal CDF of the uniform
    open_delay = np.exp(np.log(20 * 60) + 1.0 * np.array([_Z.inv_cdf(x) for x in u[:, 3]]))
    open_at = sent + pd.to_timedelta(open_delay, unit="s")
    click_at = open_at + pd.to_timedelta(2 + 58 * u[:, 4], unit="s")
    incr_at = click_at + pd.to_timedelta(600 + (6 * 3600 - 600) * u[:, 5], unit="s")
    real_at = pd.to_datetime(d["real_purchase_at"], utc=True)

    frames = [
        _events(d[opened], "push_open", open_at[opened], {}),
        _events(d[clicked], "push_click", click_at[clicked], {}),
        _events(d[relevant], "conversion", real_at[relevant], {"grounded": True}),
        _events(d[incremental], "conversion", incr_at[incremental], {"grounded": False}),
    ]
    events = pd.concat(frames, ignore_index=True)
    stamp = pd.Timestamp(now or datetime.now().astimezone())
    events["ingested_at"] = stamp
    judged = pd.DataFrame({"send_id": d["send_id"].to_numpy()})
    with store.transaction() as con:
        con.register("pw_sim_events", events)
        con.execute(
            """INSERT INTO events (event_id, user_id, item_id, event_type, ts, properties, source, simulated, ingested_at)
               SELECT md5('simulation|' || event_type || '|' || send_id), user_id, item_id, event_type, ts,
                      CAST(properties AS JSON), 'simulation', true, ingested_at
               FROM pw_sim_events
               WHERE md5('simulation|' || event_type || '|' || send_id) NOT IN (SELECT event_id FROM events)"""
        )
        con.unregister("pw_sim_events")
        con.register("pw_sim_judged", judged)
        con.execute("INSERT OR IGNORE INTO sim_engagement SELECT send_id, $at, $seed FROM pw_sim_judged",
                    {"at": stamp, "seed": seed})
        con.unregister("pw_sim_judged")
    return {"delivered_considered": n, "opens": int(opened.sum()), "clicks": int(clicked.sum()),
            "conversions_grounded": int(relevant.sum()), "conversions_incremental": int(incremental.sum())}


def _events(rows: pd.DataFrame, kind: str, ts: pd.Series, extra: dict) -> pd.DataFrame:
    props = [json.dumps({"send_id": s, "simulated": True, **extra}) for s in rows["send_id"]]
    return pd.DataFrame({
        "send_id": rows["send_id"].to_numpy(), "user_id": rows["user_id"].to_numpy(),
        "item_id": rows["item_id"].to_numpy(), "event_type": kind, "ts": ts.to_numpy(), "properties": props,
    })


def _send_uniforms(send_ids: pd.Series, seed: int) -> np.ndarray:
    """Six uniforms in (0, 1) per send, from ``(seed, send_id)`` only (so not from the batch it is judged in)."""
    digests = b"".join(hashlib.blake2b(f"{seed}|{s}".encode(), digest_size=48).digest() for s in send_ids)
    words = np.frombuffer(digests, dtype="<u8").reshape(len(send_ids), 6)
    return ((words >> np.uint64(11)).astype("float64") + 0.5) / float(1 << 53)
