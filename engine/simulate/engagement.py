"""Seeded reactions to delivered pushes (opens, clicks, conversions), grounded in the real purchase log.

No phone exists in the sandbox, so reactions are simulated — but from what the real customer did next:

* A push is *relevant* when the customer really bought the pushed item in the 14 days after it was
  sent (the Online Retail log says so). Relevant pushes are opened and clicked far more often.
* A push sent at an hour of day at which the customer really purchased in the following 30 days is
  *well timed* and is opened a little more often.
* A *conversion* is grounded when it is that real purchase (its time is the real purchase time).
  Clicked pushes that were not followed by a real purchase convert with a small probability: these
  are the simulated incremental conversions, marked ``grounded: false``.

Every event written here has ``simulated = true`` and ``source = 'simulation'``; running it twice adds
nothing (events have deterministic ids).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from engine.store import Store

__all__ = ["EngagementModel", "simulate_engagement"]


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
    """Write simulated push_open / push_click / conversion events for delivered sends that have none.

    Returns counts: ``delivered_considered``, ``opens``, ``clicks``, ``conversions_grounded``,
    ``conversions_incremental``.
    """
    d = store.df(
        """WITH todo AS (
               SELECT s.send_id, s.user_id, dc.item_id, coalesce(s.sent_at, s.due_at) AS sent_at,
                      u.time_zone
               FROM sends s JOIN decisions dc USING (decision_id) JOIN users u ON u.user_id = s.user_id
               WHERE s.state = 'delivered'
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
    rng = np.random.default_rng(seed)
    n = len(d)
    relevant = d["real_purchase_at"].notna().to_numpy()
    p_open = np.where(relevant, model.open_relevant, model.open_base) + np.where(
        d["well_timed"].to_numpy(), model.open_well_timed_bonus, 0.0)
    opened = rng.random(n) < p_open
    clicked = opened & (rng.random(n) < np.where(relevant, model.click_given_open_relevant, model.click_given_open))
    incremental = clicked & ~relevant & (rng.random(n) < model.incremental_conversion_given_click)
    sent = pd.to_datetime(d["sent_at"], utc=True)
    open_at = sent + pd.to_timedelta(rng.lognormal(np.log(20 * 60), 1.0, n), unit="s")
    click_at = open_at + pd.to_timedelta(rng.uniform(2, 60, n), unit="s")
    incr_at = click_at + pd.to_timedelta(rng.uniform(600, 6 * 3600, n), unit="s")
    real_at = pd.to_datetime(d["real_purchase_at"], utc=True)

    frames = [
        _events(d[opened], "push_open", open_at[opened], {}),
        _events(d[clicked], "push_click", click_at[clicked], {}),
        _events(d[relevant], "conversion", real_at[relevant], {"grounded": True}),
        _events(d[incremental], "conversion", incr_at[incremental], {"grounded": False}),
    ]
    events = pd.concat(frames, ignore_index=True)
    events["ingested_at"] = pd.Timestamp(now or datetime.now().astimezone())
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
    return {"delivered_considered": n, "opens": int(opened.sum()), "clicks": int(clicked.sum()),
            "conversions_grounded": int(relevant.sum()), "conversions_incremental": int(incremental.sum())}


def _events(rows: pd.DataFrame, kind: str, ts: pd.Series, extra: dict) -> pd.DataFrame:
    props = [json.dumps({"send_id": s, "simulated": True, **extra}) for s in rows["send_id"]]
    return pd.DataFrame({
        "send_id": rows["send_id"].to_numpy(), "user_id": rows["user_id"].to_numpy(),
        "item_id": rows["item_id"].to_numpy(), "event_type": kind, "ts": ts.to_numpy(), "properties": props,
    })
