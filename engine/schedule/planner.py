"""The planner: a campaign becomes one logged decision per audience user, and an outbox row per send.

Every user in the audience gets exactly one ``decisions`` row: ``send`` (item, copy, time, device),
``holdout`` (randomly withheld; its would-be item and time are still recorded so that outcomes can be
compared like for like), or ``skip`` with the reason (no consent, no device, frequency cap, no slot;
with a ``[volume]`` section also low value or fatigue).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from engine.clock import Clock, SystemClock
from engine.dispatch.quota import plannable, quota_state
from engine.errors import CampaignError
from engine.schedule.campaign import Campaign
from engine.schedule.copy import choose_templates
from engine.schedule.sendtime import resolve_send_times
from engine.schedule.volume import fatigue_history, volume_decisions
from engine.store import Store

__all__ = ["ItemChooser", "HourRanker", "PlanReport", "assign_holdout", "plan_campaign"]

#: (store, audience user ids, campaign, as_of, rng) → DataFrame[user_id, item_id, position, score,
#: propensity, policy, model_version]: one chosen item per user, with the policy's probability of it.
ItemChooser = Callable[[Store, list[str], Campaign, datetime, np.random.Generator], pd.DataFrame]
#: (store, user ids, as_of) → DataFrame[user_id, rank, weekday, local_hour]: preferred local send hours.
HourRanker = Callable[[Store, list[str], datetime], pd.DataFrame]

SEND_NAMESPACE = uuid.UUID("6f1c1b7e-5d0a-4c8e-9d55-70757368776e")


@dataclass(frozen=True)
class PlanReport:
    campaign_id: str
    audience: int
    sends: int
    holdout: int
    skipped: dict[str, int] = field(default_factory=dict)
    already_planned: bool = False


def assign_holdout(campaign_id: str, user_ids: pd.Series, share: float) -> np.ndarray:
    """Deterministic, uniform random assignment: hash(campaign, user) below ``share`` → holdout.

    Stable across re-runs and machines, independent of the order users arrive in.
    """
    prefix = f"{campaign_id}|".encode()
    digests = b"".join(hashlib.blake2b(prefix + u.encode(), digest_size=8).digest() for u in _strings(user_ids))
    # big-endian uint64 / 2**64 as a float64, exactly as int.from_bytes(h, "big") / 2**64 rounds
    return np.frombuffer(digests, dtype=">u8").astype(np.float64) / 2**64 < share


def _strings(values: pd.Series | list[str]) -> list[str]:
    """Plain Python strings: iterating a pandas string array one element at a time is several times slower."""
    return values.tolist() if isinstance(values, pd.Series) else list(values)


def _audience(store: Store, c: Campaign, as_of: datetime) -> pd.DataFrame:
    filters = ["e.ts < $as_of", "e.ts >= $as_of - to_days($days)", "e.event_type = 'purchase'"]
    params: dict = {"as_of": as_of, "days": c.active_within_days}
    if c.audience_source:
        filters.append("u.source = $source")
        params["source"] = c.audience_source
    if c.countries:
        filters.append("list_contains($countries, u.country)")
        params["countries"] = list(c.countries)
    return store.df(
        f"""SELECT u.user_id, u.time_zone
            FROM users u JOIN events e USING (user_id)
            WHERE {' AND '.join(filters)}
            GROUP BY u.user_id, u.time_zone
            HAVING count(*) >= {int(c.min_purchases)}
            ORDER BY u.user_id""",
        params,
    )


def _reachability(store: Store, user_ids: list[str], message_class: str) -> pd.DataFrame:
    """Per user: consent for push in this class, and the newest active device."""
    store.con.register("pw_plan_users", pd.DataFrame({"user_id": user_ids}))
    try:
        return store.df(
            """SELECT p.user_id,
                      coalesce(c.granted, false) AS consent,
                      d.device_id, d.vendor
               FROM pw_plan_users p
               LEFT JOIN consents c ON c.user_id = p.user_id AND c.channel = 'push' AND c.message_class = $cls
               LEFT JOIN (SELECT * FROM devices WHERE active
                          QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY registered_at DESC, device_id) = 1) d
                      ON d.user_id = p.user_id""",
            {"cls": message_class},
        )
    finally:
        store.con.unregister("pw_plan_users")


def _capped(store: Store, planned: pd.DataFrame, c: Campaign) -> set[str]:
    """Users whose planned send would exceed the frequency cap counting their other live sends."""
    if planned.empty:
        return set()
    store.con.register("pw_plan_sends", planned[["user_id", "send_at"]])
    try:
        rows = store.execute(
            """SELECT p.user_id FROM pw_plan_sends p JOIN sends s ON s.user_id = p.user_id
               WHERE s.state NOT IN ('failed', 'cancelled', 'invalid_token')
                 AND abs(epoch(s.due_at) - epoch(p.send_at)) < $days * 86400
               GROUP BY p.user_id HAVING count(*) >= $cap""",
            {"days": c.frequency_days, "cap": c.frequency_cap},
        ).fetchall()
    finally:
        store.con.unregister("pw_plan_sends")
    return {r[0] for r in rows}


def plan_campaign(
    store: Store,
    campaign: Campaign,
    choose_items: ItemChooser,
    rank_hours: HourRanker,
    as_of: datetime | None = None,
    seed: int = 7,
    clock: Clock | None = None,
) -> PlanReport:
    """Plan ``campaign`` as of ``as_of`` (default: the campaign's own, else now) and store the result.

    Planning a campaign id twice is a no-op that reports ``already_planned``.
    """
    now = (clock or SystemClock()).now()
    as_of = as_of or campaign.as_of or now
    existing = store.scalar("SELECT count(*) FROM decisions WHERE campaign_id = ?", [campaign.campaign_id])
    if existing:
        stored = store.scalar("SELECT CAST(spec AS VARCHAR) FROM campaigns WHERE campaign_id = ?",
                              [campaign.campaign_id])
        if stored is not None and json.loads(stored) != json.loads(json.dumps(campaign.spec, default=str)):
            raise CampaignError(f"campaign {campaign.campaign_id!r} was already planned from a different file; "
                                "give the changed campaign a new id to plan it")
        return PlanReport(campaign.campaign_id, int(existing), 0, 0, already_planned=True)

    audience = _audience(store, campaign, as_of)
    if audience.empty:
        sources = [r[0] for r in store.execute("SELECT DISTINCT source FROM users ORDER BY 1").fetchall()]
        if campaign.audience_source and campaign.audience_source not in sources:
            raise CampaignError(f"audience.source {campaign.audience_source!r} is not a source of any user; "
                                f"known sources: {', '.join(sources) or 'none (ingest data first)'}")
        raise CampaignError(f"campaign {campaign.campaign_id!r} has an empty audience as of {as_of:%Y-%m-%d}: "
                            "nobody matches [audience] (purchases in the window, countries, min_purchases)")
    if campaign.candidate_items:
        known = {r[0] for r in store.execute("SELECT item_id FROM items WHERE list_contains(?, item_id)",
                                             [list(campaign.candidate_items)]).fetchall()}
        unknown = [i for i in campaign.candidate_items if i not in known]
        if unknown:
            raise CampaignError(f"candidates.items names unknown item ids: {', '.join(unknown[:10])}"
                                + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
    rng = np.random.default_rng(seed)
    audience["arm"] = np.where(assign_holdout(campaign.campaign_id, audience["user_id"], campaign.holdout_share),
                               "holdout", "treatment")
    users = audience.merge(_reachability(store, audience["user_id"].tolist(), campaign.message_class),
                           on="user_id", how="left")

    picks = choose_items(store, users["user_id"].tolist(), campaign, as_of, rng)
    users = users.merge(picks, on="user_id", how="left")
    start, end = campaign.window(as_of)
    if campaign.send_time == "best":
        prefs = rank_hours(store, users["user_id"].tolist(), as_of)
    else:
        prefs = _fixed_prefs(users["user_id"], campaign.fixed_hour)
    prefs = prefs.merge(users[["user_id", "time_zone", "vendor"]], on="user_id")
    times = resolve_send_times(prefs, start, end, _minutes(campaign.quiet_start), _minutes(campaign.quiet_end),
                               campaign.message_class)
    users = users.merge(times, on="user_id", how="left")

    users["skip_reason"] = _skip_reasons(users)
    capped = _capped(store, users[(users["arm"] == "treatment") & users["skip_reason"].isna()], campaign)
    users.loc[users["user_id"].isin(capped) & users["skip_reason"].isna(), "skip_reason"] = "frequency_cap"
    users.loc[~_within_vendor_quota(store, users, campaign, now), "skip_reason"] = "vendor_quota"
    if campaign.volume is not None:
        users["skip_reason"] = _volume_reasons(store, users, campaign, as_of)
    users["action"] = np.where(users["arm"] == "holdout", "holdout",
                               np.where(users["skip_reason"].isna(), "send", "skip"))
    users.loc[users["arm"] == "holdout", "skip_reason"] = None

    decisions = _decisions(store, users, campaign, as_of, now, rng)
    _store(store, decisions, campaign, as_of, now)
    skipped = users.loc[users["action"] == "skip", "skip_reason"].value_counts().to_dict()
    return PlanReport(
        campaign.campaign_id, len(users), int((users["action"] == "send").sum()),
        int((users["action"] == "holdout").sum()), {str(k): int(v) for k, v in skipped.items()},
    )


def _within_vendor_quota(store: Store, users: pd.DataFrame, c: Campaign, now: datetime) -> pd.Series:
    """False for still-sendable treatment users whose send would pass a vendor's known daily quota."""
    open_ = (users["arm"] == "treatment") & users["skip_reason"].isna()
    state = quota_state(store, now)
    if state.empty or not open_.any():
        return pd.Series(True, index=users.index)
    todo = users.loc[open_, ["device_id", "vendor", "send_at"]]
    apps = store.df("SELECT device_id, app_id FROM devices WHERE device_id IN (SELECT unnest($ids))",
                    {"ids": todo["device_id"].dropna().tolist()})
    planned = todo.reset_index().merge(apps, on="device_id", how="left").set_index("index")
    planned["message_class"] = c.message_class
    return plannable(planned, state).reindex(users.index, fill_value=True)


def _minutes(t) -> int:
    return t.hour * 60 + t.minute


def _fixed_prefs(user_ids: pd.Series, hour: int) -> pd.DataFrame:
    n = len(user_ids)
    return pd.DataFrame({
        "user_id": np.repeat(user_ids.to_numpy(), 7),
        "rank": np.tile(np.arange(7), n),
        "weekday": np.tile(np.arange(7), n),
        "local_hour": hour,
    })


def _skip_reasons(users: pd.DataFrame) -> pd.Series:
    """The first reason each treatment user cannot be sent to (None when sendable)."""
    reasons = pd.Series([None] * len(users), index=users.index, dtype=object)
    rules = [
        (~users["consent"].fillna(False).astype(bool), "no_consent"),
        (users["device_id"].isna(), "no_device"),
        (users["item_id"].isna(), "no_candidate_item"),
        (users["send_at"].isna(), "no_allowed_send_time"),
    ]
    for mask, reason in rules:
        reasons = reasons.where(~(mask & reasons.isna()), reason)
    return reasons


def _volume_reasons(store: Store, users: pd.DataFrame, c: Campaign, as_of) -> pd.Series:
    """Skip reasons with the campaign's value-versus-fatigue check added for still-sendable treatment users."""
    open_ = (users["arm"] == "treatment") & users["skip_reason"].isna()
    todo = users.loc[open_]
    history = fatigue_history(store, todo["user_id"], as_of, c.volume.lookback_days).set_index(todo.index)
    verdict = volume_decisions(todo["score"], history, c.volume)
    reasons = users["skip_reason"].copy()
    reasons.loc[open_] = verdict["skip_reason"]
    return reasons


def _decisions(store: Store, users: pd.DataFrame, c: Campaign, as_of, now, rng) -> pd.DataFrame:
    items = store.df("SELECT item_id, name, category, price, currency FROM items")
    d = users.merge(items, on="item_id", how="left")
    copy = choose_templates(store, d[["user_id"]], c, as_of, rng)
    d["template_id"] = copy["template_id"].to_numpy()
    d["template_propensity"] = copy["template_propensity"].to_numpy()
    # the slots depend only on (template, item): render each pair once, then spread to the users
    d["template_index"] = copy["template_index"].to_numpy()
    pairs = d.loc[d["item_id"].notna(), ["template_index", "item_id", "name", "price", "currency", "category"]]
    pairs = pairs.drop_duplicates(["template_index", "item_id"])
    rendered = [c.templates[int(row.template_index)].render(_slots(row, c)) for row in pairs.itertuples(index=False)]
    pairs = pairs[["template_index", "item_id"]].assign(title=[t for t, _ in rendered], body=[b for _, b in rendered])
    d = d.merge(pairs, on=["template_index", "item_id"], how="left")
    d["title"] = d["title"].astype(object).where(d["title"].notna(), None)
    d["body"] = d["body"].astype(object).where(d["body"].notna(), None)
    d["decision_id"] = uuid5_many(SEND_NAMESPACE, "decision|" + c.campaign_id + "|" + d["user_id"].astype(str))
    d["campaign_id"] = c.campaign_id
    d["message_class"] = c.message_class
    d["as_of"] = as_of
    d["created_at"] = now
    return d


_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$", "JPY": "¥"}


def _slots(row, c: Campaign) -> dict:
    return {
        "item_name": _tidy_name(row.name, row.item_id),
        "price": float(row.price) if pd.notna(row.price) else 0.0,
        "currency": _SYMBOLS.get(row.currency, "") if isinstance(row.currency, str) else "",
        "category": row.category if isinstance(row.category, str) else "",
        "campaign": c.name,
    }


def uuid5_many(namespace: uuid.UUID, names: pd.Series) -> list[str]:
    """``str(uuid.uuid5(namespace, name))`` for every name, about three times faster than calling it per row."""
    prefix = namespace.bytes
    raw = np.frombuffer(b"".join(hashlib.sha1(prefix + n.encode()).digest()[:16] for n in _strings(names)),
                        dtype=np.uint8).reshape(-1, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = raw.tobytes().hex()
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in
            (hexed[i:i + 32] for i in range(0, len(hexed), 32))]


def _tidy_name(name, item_id: str) -> str:
    if not isinstance(name, str) or not name.strip():
        return item_id.split(":", 1)[-1]
    return name.strip().title()


def _store(store: Store, d: pd.DataFrame, c: Campaign, as_of, now) -> None:
    cols = ["decision_id", "campaign_id", "user_id", "arm", "action", "skip_reason", "item_id", "position",
            "template_id", "title", "body", "score", "propensity", "template_propensity", "policy",
            "model_version", "send_at", "send_hour_local", "device_id", "vendor", "message_class", "as_of",
            "created_at"]
    frame = d[cols].copy()
    frame["policy"] = frame["policy"].fillna("none")
    frame["send_id"] = uuid5_many(SEND_NAMESPACE, "send|" + frame["decision_id"])
    store.con.register("pw_decisions", frame)
    try:
        with store.transaction() as con:
            con.execute("INSERT INTO campaigns VALUES (?, ?, ?, ?, ?)",
                        [c.campaign_id, c.name, json.dumps(c.spec, default=str), as_of, now])
            con.execute(f"INSERT INTO decisions ({', '.join(cols)}) SELECT {', '.join(cols)} FROM pw_decisions")
            con.execute(
                """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                      title, body, data, due_at, state, attempts, next_attempt_at, updated_at)
                   SELECT send_id, decision_id, campaign_id, user_id, device_id,
                          vendor, message_class, title, body,
                          json_object('campaign', campaign_id, 'item_id', item_id, 'decision_id', decision_id),
                          send_at, 'pending', 0, send_at, $now
                   FROM pw_decisions WHERE action = 'send'""",
                {"now": now},
            )
    finally:
        store.con.unregister("pw_decisions")
