"""Copy selection: a Thompson-sampling policy picks one of a campaign's templates per user and logs its probability.

Each template's success rate (a push opened or clicked) has a Beta posterior, learnt from the past
delivered sends of the same campaign (same id, or an earlier run with the same name) that carried the
template; ``events.properties.send_id`` links a ``push_open`` / ``push_click`` to its send. Optionally
there is one posterior per template and country.

Thompson sampling draws one rate per template and sends the best. Its probability of choosing each
template is not available in closed form, so it is estimated by Monte Carlo (``samples`` draws from a
seeded generator); the planner then draws each user's template from exactly those probabilities, so
the logged ``template_propensity`` is the true probability of the logged choice (what inverse
propensity weighting needs), and the choice follows Thompson sampling up to Monte Carlo error.
See docs/decisions/008-copy-volume-retrain-scale.md.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from engine.schedule.campaign import Campaign, CopySettings
from engine.store import Store

__all__ = ["choose_templates", "template_history", "thompson_probabilities"]

_REWARD_EVENTS = {"click": ("push_click",), "open": ("push_open", "push_click")}
_ALL = "*"  # the segment of every user when copy is not segmented


def template_history(store: Store, campaign: Campaign, as_of: datetime) -> pd.DataFrame:
    """Trials and successes of the campaign's templates before ``as_of``.

    Returns:
        DataFrame[template_id, segment, trials, successes]: delivered sends, and those of them
        followed (before ``as_of``) by a reward event carrying their ``send_id``. ``segment`` is the
        user's country (``segment_by = "country"``) or ``"*"``.
    """
    segment = "coalesce(u.country, '?')" if campaign.copy.segment_by == "country" else f"'{_ALL}'"
    return store.df(
        f"""WITH past AS (
                SELECT d.template_id, s.send_id, {segment} AS segment
                FROM decisions d
                JOIN sends s ON s.decision_id = d.decision_id
                LEFT JOIN campaigns c ON c.campaign_id = d.campaign_id
                LEFT JOIN users u ON u.user_id = d.user_id
                WHERE (d.campaign_id = $cid OR c.name = $name)
                  AND list_contains($templates, d.template_id)
                  AND s.state = 'delivered' AND s.due_at < $as_of
            ), hits AS (
                SELECT DISTINCT properties->>'send_id' AS send_id FROM events
                WHERE list_contains($events, event_type) AND ts < $as_of
            )
            SELECT p.template_id, p.segment, count(*) AS trials, count(h.send_id) AS successes
            FROM past p LEFT JOIN hits h ON h.send_id = p.send_id
            GROUP BY ALL ORDER BY ALL""",
        {"cid": campaign.campaign_id, "name": campaign.name, "as_of": as_of,
         "templates": [t.template_id for t in campaign.templates],
         "events": list(_REWARD_EVENTS[campaign.copy.reward])},
    )


def thompson_probabilities(trials: np.ndarray, successes: np.ndarray, settings: CopySettings,
                           rng: np.random.Generator) -> np.ndarray:
    """Probability that Thompson sampling picks each template, by Monte Carlo.

    Args:
        trials, successes: arrays of shape (segments, templates), counts of past sends and rewards.
        settings: the Beta prior and the number of Monte Carlo draws.
        rng: the seeded generator the draws come from.

    Returns:
        Array (segments, templates) whose rows sum to 1: the share of the ``settings.samples`` posterior
        draws in which each template had the highest rate, add-one smoothed (never 0 nor 1).
    """
    alpha = settings.prior_alpha + successes
    beta = settings.prior_beta + trials - successes
    draws = rng.beta(alpha, beta, size=(settings.samples, *alpha.shape))
    best = draws.argmax(axis=-1)                                        # (samples, segments)
    k = alpha.shape[-1]
    counts = np.stack([(best == j).sum(axis=0) for j in range(k)], axis=-1)
    # add-one smoothing of the Monte Carlo estimate: no template ever gets probability 0, so every
    # logged choice keeps the support that inverse propensity weighting needs
    return (counts + 1) / (settings.samples + k)


def choose_templates(store: Store, users: pd.DataFrame, campaign: Campaign, as_of: datetime,
                     rng: np.random.Generator) -> pd.DataFrame:
    """One template per user, drawn from the copy policy's probabilities, with that probability.

    Args:
        users: DataFrame[user_id] (the audience, in planning order).
        campaign: its ``templates`` and ``copy`` settings.
        as_of: only sends and events before it are learnt from.
        rng: the planner's seeded generator (Monte Carlo draws, then the choices).

    Returns:
        DataFrame[user_id, template_index (into ``campaign.templates``), template_id,
        template_propensity], in the order of ``users``.
    """
    k = len(campaign.templates)
    ids = [t.template_id for t in campaign.templates]
    segments = _segments(store, users, campaign)
    if campaign.copy.policy == "uniform" or k == 1:
        probs, seg_codes = np.full((1, k), 1.0 / k), np.zeros(len(users), dtype=np.int64)
    else:
        seg_codes, seg_names = pd.factorize(segments)
        hist = template_history(store, campaign, as_of)
        trials = np.zeros((len(seg_names), k))
        successes = np.zeros((len(seg_names), k))
        if not hist.empty:
            s_idx = pd.Index(seg_names).get_indexer(hist["segment"])
            t_idx = pd.Index(ids).get_indexer(hist["template_id"])
            keep = s_idx >= 0
            np.add.at(trials, (s_idx[keep], t_idx[keep]), hist["trials"].to_numpy()[keep])
            np.add.at(successes, (s_idx[keep], t_idx[keep]), hist["successes"].to_numpy()[keep])
        probs = thompson_probabilities(trials, successes, campaign.copy, rng)
    cum = probs.cumsum(axis=1)[seg_codes]
    u = rng.random(len(users))[:, None]
    choice = np.minimum((u >= cum).sum(axis=1), k - 1)
    return pd.DataFrame({
        "user_id": users["user_id"].reset_index(drop=True),
        "template_index": choice,
        # object, not inferred as pandas' string type: converting a million picks would cost more than picking
        "template_id": pd.Series(np.asarray(ids, dtype=object)[choice], dtype=object),
        "template_propensity": probs[seg_codes, choice],
    })


def _segments(store: Store, users: pd.DataFrame, campaign: Campaign) -> np.ndarray:
    if campaign.copy.segment_by != "country" or users.empty:
        return np.full(len(users), _ALL, dtype=object)
    store.con.register("pw_copy_users", users[["user_id"]])
    try:
        seg = store.df("""SELECT p.user_id, coalesce(u.country, '?') AS segment
                          FROM pw_copy_users p LEFT JOIN users u USING (user_id)""")
    finally:
        store.con.unregister("pw_copy_users")
    return users[["user_id"]].merge(seg, on="user_id", how="left")["segment"].fillna("?").to_numpy(dtype=object)
