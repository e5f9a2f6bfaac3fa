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
    hashed_prefix = hashlib.blake2b(f"{campaign_id}|".encode(), digest_size=8)

    def digest(user_id: str) -> bytes:  # continuing a copy of the hashed prefix is cheaper than hashing it anew
        h = hashed_prefix.copy()
        h.update(user_id.encode())
        return h.digest()

    digests = b"".join(map(digest, _strings(user_ids)))
    # big-endian uint64 / 2**64 as a float64, exactly as int.from_bytes(h, "big") / 2**64 rounds
    return np.frombuffer(digests, dtype=">u8").astype(np.float64) / 2**64 < share


def _strings(values: pd.Series | list[str]) -> list[str]:
    """Plain Python strings: iterating a pandas string array one element at a time is several times slower."""
    return values.tolist() if isinstance(values, pd.Series) else list(values)


def _audience(store: Store, c: Campaign, as_of: datetime) -> pd.DataFrame:
    """The campaign's audience with how to reach each user, one row per user in user id order.

    Returns:
        DataFrame[user_id, time_zone, consent (push in the campaign's class), device_id, vendor (the
        newest active device; null without one)], with a RangeIndex.
    """
    filters = ["e.ts < $as_of", "e.ts >= $as_of - to_days($days)", "e.event_type = 'purchase'"]
    params: dict = {"as_of": as_of, "days": c.active_within_days, "cls": c.message_class}
    if c.audience_source:
        filters.append("u.source = $source")
        params["source"] = c.audience_source
    if c.countries:
        filters.append("list_contains($countries, u.country)")
        params["countries"] = list(c.countries)
    return store.df(
        f"""WITH audience AS (
                SELECT u.user_id, u.time_zone
                FROM users u JOIN events e USING (user_id)
                WHERE {' AND '.join(filters)}
                GROUP BY u.user_id, u.time_zone
                HAVING count(*) >= {int(c.min_purchases)}
            ), newest_device AS (
                SELECT user_id, device_id, vendor FROM devices WHERE active
                QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY registered_at DESC, device_id) = 1
            )
            SELECT a.user_id, a.time_zone, coalesce(c.granted, false) AS consent, d.device_id, d.vendor
            FROM audience a
            LEFT JOIN consents c ON c.user_id = a.user_id AND c.channel = 'push' AND c.message_class = $cls
            LEFT JOIN newest_device d ON d.user_id = a.user_id
            ORDER BY a.user_id""",
        params,
    )


def _positions(user_ids: pd.Series, ids) -> np.ndarray:
    """Where each of ``ids`` stands in ``user_ids`` (unique, RangeIndex), -1 where it does not.

    Merging on the strings would hash them several times. Ids given in the same order as ``user_ids``
    (what choosers usually return) are recognised by one comparison; otherwise factorizing the two
    together numbers ``user_ids`` 0, 1, 2, … (they come first and are unique), so a code below
    ``len(user_ids)`` is a position.
    """
    ids = pd.Series(ids, dtype=user_ids.dtype).reset_index(drop=True)  # one string type: the fast hashing path
    if len(ids) == len(user_ids) and ids.eq(user_ids).all():
        return np.arange(len(ids))
    codes, _ = pd.factorize(pd.concat([user_ids, ids], ignore_index=True))
    at = codes[len(user_ids):]
    return np.where(at < len(user_ids), at, -1)


def _join(users: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``users.merge(rows, on="user_id", how="left")`` for ``rows`` with at most one row per user."""
    return _attach(users, rows.drop(columns="user_id"), _positions(users["user_id"], rows["user_id"]))


def _attach(users: pd.DataFrame, extra: pd.DataFrame, at: np.ndarray) -> pd.DataFrame:
    """``users`` (RangeIndex) with the columns of ``extra`` beside them; row i of ``extra`` goes to row ``at[i]``.

    Rows with ``at`` -1 are dropped; users without a row get nulls, as in a left merge.
    """
    mine = at >= 0
    return pd.concat([users, extra[mine].set_axis(at[mine]).reindex(users.index)], axis=1)


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
    users = audience
    holdout = assign_holdout(campaign.campaign_id, users["user_id"], campaign.holdout_share)
    users["arm"] = pd.Categorical.from_codes(holdout.astype(np.int8), ["treatment", "holdout"])
    user_ids = users["user_id"].tolist()

    users = _join(users, choose_items(store, user_ids, campaign, as_of, rng))
    start, end = campaign.window(as_of)
    # preferences keyed by the user's row in ``users``, not the id: cheap to rank and to put back
    if campaign.send_time == "best":
        prefs = _keyed_by_row(rank_hours(store, user_ids, as_of), users["user_id"])
    else:
        prefs = _fixed_prefs(len(users), campaign.fixed_hour)
    times = resolve_send_times(_with_zone_and_vendor(prefs, users), start, end, _minutes(campaign.quiet_start),
                               _minutes(campaign.quiet_end), campaign.message_class)
    users = _attach(users, times.drop(columns="user_id"), times["user_id"].to_numpy())

    users["skip_reason"] = _skip_reasons(users)
    open_ = (users["arm"] == "treatment") & users["skip_reason"].isna()
    capped = _capped(store, users.loc[open_, ["user_id", "send_at"]], campaign)
    users.loc[users["user_id"].isin(capped) & users["skip_reason"].isna(), "skip_reason"] = "frequency_cap"
    users.loc[~_within_vendor_quota(store, users, campaign, now), "skip_reason"] = "vendor_quota"
    if campaign.volume is not None:
        users["skip_reason"] = _volume_reasons(store, users, campaign, as_of)
    users["action"] = pd.Categorical.from_codes(
        np.select([users["arm"] == "holdout", users["skip_reason"].isna()], [1, 0], 2), ["send", "holdout", "skip"])
    users.loc[users["arm"] == "holdout", "skip_reason"] = None

    users = _with_copy(store, users, campaign, as_of, rng)
    _store(store, users, campaign, as_of, now)
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


def _keyed_by_row(prefs: pd.DataFrame, user_ids: pd.Series) -> pd.DataFrame:
    """``prefs`` with ``user_id`` replaced by the user's position in ``user_ids``; other users' rows dropped."""
    at = _positions(user_ids, prefs["user_id"])
    return prefs.assign(user_id=at)[at >= 0]


def _with_zone_and_vendor(prefs: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """Row-keyed preferences with the time zone and vendor of their user, as categoricals (no strings copied)."""
    rows = prefs["user_id"].to_numpy()
    return prefs.assign(time_zone=pd.Categorical(users["time_zone"]).take(rows),
                        vendor=pd.Categorical(users["vendor"]).take(rows))


def _minutes(t) -> int:
    return t.hour * 60 + t.minute


def _fixed_prefs(n_users: int, hour: int) -> pd.DataFrame:
    """Every weekday at ``hour``, Monday first, for users 0 … n_users - 1 (row-keyed preferences)."""
    return pd.DataFrame({
        "user_id": np.repeat(np.arange(n_users), 7),
        "rank": np.tile(np.arange(7), n_users),
        "weekday": np.tile(np.arange(7), n_users),
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
    todo = users.loc[open_, ["user_id", "score"]]
    history = fatigue_history(store, todo["user_id"], as_of, c.volume.lookback_days).set_index(todo.index)
    verdict = volume_decisions(todo["score"], history, c.volume)
    reasons = users["skip_reason"].copy()
    reasons.loc[open_] = verdict["skip_reason"]
    return reasons


def _with_copy(store: Store, users: pd.DataFrame, c: Campaign, as_of, rng) -> pd.DataFrame:
    """Each user's template (drawn by the copy policy, with its probability) and the title and body it renders to.

    Adds ``template_id``, ``template_propensity``, ``title`` and ``body`` (null without an item). The
    text depends only on (template, item), so each distinct pair is rendered once and spread to its users.
    """
    copy = choose_templates(store, users[["user_id"]], c, as_of, rng)
    k = len(c.templates)
    item_codes, item_ids = pd.factorize(users["item_id"])
    has_item = item_codes >= 0
    pair_codes, pairs = pd.factorize(item_codes[has_item] * k + copy["template_index"].to_numpy()[has_item])
    titles, bodies = _render(store, c, item_ids.to_numpy()[pairs // k], pairs % k)
    title, body = np.full(len(users), None, dtype=object), np.full(len(users), None, dtype=object)
    title[has_item], body[has_item] = titles[pair_codes], bodies[pair_codes]
    return users.assign(template_id=copy["template_id"], template_propensity=copy["template_propensity"],
                        title=pd.Series(title, dtype=object), body=pd.Series(body, dtype=object))


def _render(store: Store, c: Campaign, item_ids: np.ndarray, template_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Title and body of each (item, template) pair, as object arrays aligned with the inputs."""
    pairs = pd.DataFrame({"item_id": item_ids, "template_index": template_index})
    if not pairs.empty:
        items = store.df("SELECT item_id, name, category, price, currency FROM items "
                         "WHERE item_id IN (SELECT unnest($ids))", {"ids": list(dict.fromkeys(item_ids.tolist()))})
        pairs = pairs.merge(items, on="item_id", how="left")
    rendered = [c.templates[int(row.template_index)].render(_slots(row, c)) for row in pairs.itertuples(index=False)]
    return np.array([t for t, _ in rendered], dtype=object), np.array([b for _, b in rendered], dtype=object)


_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$", "JPY": "¥"}


def _slots(row, c: Campaign) -> dict:
    return {
        "item_name": _tidy_name(row.name, row.item_id),
        "price": float(row.price) if pd.notna(row.price) else 0.0,
        "currency": _SYMBOLS.get(row.currency, "") if isinstance(row.currency, str) else "",
        "category": row.category if isinstance(row.category, str) else "",
        "campaign": c.name,
    }


def _tidy_name(name, item_id: str) -> str:
    if not isinstance(name, str) or not name.strip():
        return item_id.split(":", 1)[-1]
    return name.strip().title()


def uuid5_sql(namespace: uuid.UUID, name: str) -> str:
    """A DuckDB expression equal to ``str(uuid.uuid5(namespace, <name>))`` for the VARCHAR expression ``name``.

    SHA-1 of the namespace's bytes and the UTF-8 name, its first 16 bytes as hex with the version nibble
    set to 5 and the variant bits to 10 (the hex digit becomes 8, 9, a or b), dashed 8-4-4-4-12. In
    SQL it runs on all of DuckDB's threads; in Python it would be a loop over a million names.
    """
    h = f"sha1(unhex('{namespace.hex}') || encode({name}))"  # DuckDB computes it once per row, not six times
    return (f"concat(substr({h}, 1, 8), '-', substr({h}, 9, 4), '-5', substr({h}, 14, 3), '-', "
            f"translate(substr({h}, 17, 1), '0123456789abcdef', '89ab89ab89ab89ab'), substr({h}, 18, 3), '-', "
            f"substr({h}, 21, 12))")


#: Columns of ``decisions`` that come from the planned users frame as they are.
_DECISION_COLUMNS = ["user_id", "arm", "action", "skip_reason", "item_id", "position", "template_id", "title", "body",
                     "score", "propensity", "template_propensity", "model_version", "send_at", "send_hour_local",
                     "device_id", "vendor"]


def _store(store: Store, users: pd.DataFrame, c: Campaign, as_of, now) -> None:
    """Insert the campaign, one decision per user (ids derived from campaign and user) and the sends, atomically."""
    store.con.register("pw_decisions", users[[*_DECISION_COLUMNS, "policy"]])
    cols = ", ".join(_DECISION_COLUMNS)
    params = {"cid": c.campaign_id, "cls": c.message_class, "as_of": as_of, "now": now}
    try:
        with store.transaction() as con:
            con.execute("INSERT INTO campaigns VALUES (?, ?, ?, ?, ?)",
                        [c.campaign_id, c.name, json.dumps(c.spec, default=str), as_of, now])
            con.execute(
                f"""INSERT INTO decisions (decision_id, campaign_id, {cols}, policy, message_class, as_of, created_at)
                    SELECT {uuid5_sql(SEND_NAMESPACE, "'decision|' || $cid || '|' || user_id")}, $cid, {cols},
                           coalesce(policy, 'none'), $cls, $as_of, $now
                    FROM pw_decisions""",
                params,
            )
            con.execute(
                f"""INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                       title, body, data, due_at, state, attempts, next_attempt_at, updated_at)
                    SELECT {uuid5_sql(SEND_NAMESPACE, "'send|' || decision_id")}, decision_id, campaign_id, user_id,
                           device_id, vendor, message_class, title, body,
                           json_object('campaign', campaign_id, 'item_id', item_id, 'decision_id', decision_id),
                           send_at, 'pending', 0, send_at, $now
                    FROM decisions WHERE campaign_id = $cid AND action = 'send'""",
                {"cid": c.campaign_id, "now": now},
            )
    finally:
        store.con.unregister("pw_decisions")
