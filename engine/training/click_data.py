"""Training rows for the click model: purchase-behaviour snapshots and, once they exist, real push outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from engine.errors import ConfigError
from engine.features.base import PURCHASE_TYPES, Db, check_as_of, fetch_df
from engine.features.click import click_features
from engine.features.item import item_neighbors
from engine.recommend.candidates import generate_candidates

__all__ = ["ClickData", "behaviour_rows", "purchases_between", "push_rows"]


@dataclass(frozen=True)
class ClickData:
    """How rows are built (a part of :class:`~engine.training.click.ClickConfig`).

    Attributes:
        label_days: a behaviour row's label window: the N days after its snapshot time.
        category_label: label of a candidate whose *category* (not the item) was bought in the window.
        negatives_per_user: random catalog items added per user next to the generated candidates.
        n_own, n_cooc, n_popular: candidate generation caps.
        push_window_hours: a push counts as clicked if its ``push_click`` came within this window.
    """

    label_days: int = 30
    category_label: float = 0.25
    negatives_per_user: int = 10
    n_own: int = 100
    n_cooc: int = 20
    n_popular: int = 20
    push_window_hours: int = 72

    def __post_init__(self) -> None:
        if self.label_days < 1:
            raise ConfigError(f"click label_days must be at least 1, got {self.label_days}")
        if not 0.0 <= self.category_label <= 1.0:
            raise ConfigError(f"click category_label must be in [0, 1], got {self.category_label}")


def behaviour_rows(db: Db, at: datetime, data: ClickData, rng: np.random.Generator) -> pd.DataFrame:
    """Candidate and sampled-negative rows for every user with history before ``at``, labelled by the next days.

    Features read only events before ``at``; labels read only ``[at, at + label_days)``.

    Returns:
        ``user_id``, ``item_id``, ``from_own``, ``from_cooc``, ``from_popular``, ``sampled`` (True for
        random negatives), the :data:`~engine.features.click.CLICK_FEATURES` columns with
        ``label_is_push`` = 0, ``label`` (1 item bought, ``category_label`` its category bought, else
        0), ``bought`` (1 when the item itself was bought), ``snapshot`` (``at``).
    """
    at = check_as_of(at)
    neighbors = item_neighbors(db, at)
    cands = generate_candidates(
        db, at, neighbors=neighbors, n_own=data.n_own, n_cooc=data.n_cooc, n_popular=data.n_popular
    )
    pairs = _with_negatives(db, at, cands, data.negatives_per_user, rng)
    rows = click_features(db, at, pairs, neighbors=neighbors, label_is_push=False)
    bought, categories = purchases_between(db, at, at + timedelta(days=data.label_days))
    return _label(db, rows, bought, categories, data.category_label).assign(snapshot=at)


def _with_negatives(
    db: Db, at: datetime, cands: pd.DataFrame, per_user: int, rng: np.random.Generator
) -> pd.DataFrame:
    cands = cands.assign(sampled=False)
    if per_user <= 0 or cands.empty:
        return cands
    catalog = fetch_df(
        db,
        "SELECT DISTINCT item_id FROM events WHERE ts < $at AND list_contains($types, event_type) "
        "AND item_id IS NOT NULL ORDER BY item_id",
        {"at": at, "types": list(PURCHASE_TYPES)},
    )["item_id"].to_numpy()
    users = np.sort(cands["user_id"].unique())
    negs = pd.DataFrame(
        {
            "user_id": np.repeat(users, per_user),
            "item_id": catalog[rng.integers(0, len(catalog), size=len(users) * per_user)],
        }
    )
    negs = negs.assign(from_own=False, from_cooc=False, from_popular=False, sampled=True)
    both = pd.concat([cands, negs], ignore_index=True)
    # A random item that is also a candidate stays once, as the candidate.
    return both.drop_duplicates(["user_id", "item_id"], keep="first").reset_index(drop=True)


def purchases_between(db: Db, start: datetime, end: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Distinct (``user_id``, ``item_id``) and (``user_id``, ``category``) bought in ``[start, end)``."""
    bought = fetch_df(
        db,
        "SELECT DISTINCT e.user_id, e.item_id, it.category FROM events e LEFT JOIN items it ON it.item_id = e.item_id "
        "WHERE e.ts >= $start AND e.ts < $end AND list_contains($types, e.event_type) AND e.item_id IS NOT NULL",
        {"start": start, "end": end, "types": list(PURCHASE_TYPES)},
    )
    categories = bought.dropna(subset=["category"])[["user_id", "category"]].drop_duplicates()
    return bought[["user_id", "item_id"]].drop_duplicates(), categories


def _label(
    db: Db, rows: pd.DataFrame, bought: pd.DataFrame, categories: pd.DataFrame, category_label: float
) -> pd.DataFrame:
    item_hit = _member(rows, bought, ["user_id", "item_id"])
    catalog = fetch_df(db, "SELECT item_id, category FROM items WHERE category IS NOT NULL")
    with_cat = rows[["user_id", "item_id"]].merge(catalog, on="item_id", how="left")
    cat_hit = _member(with_cat, categories, ["user_id", "category"]) & with_cat["category"].notna().to_numpy()
    label = np.where(item_hit, 1.0, np.where(cat_hit, category_label, 0.0))
    return rows.assign(label=label, bought=item_hit.astype("int64"))


def _member(left: pd.DataFrame, right: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Whether each row of ``left`` has its ``keys`` in ``right`` (vectorised, order kept)."""
    if right.empty:
        return np.zeros(len(left), dtype=bool)
    index = pd.MultiIndex.from_frame(right[keys].astype("object"))
    return pd.MultiIndex.from_frame(left[keys].astype("object")).isin(index)


def push_rows(db: Db, as_of: datetime, data: ClickData) -> pd.DataFrame:
    """One row per Pushwise push whose click window closed before ``as_of``, labelled clicked or not.

    A decision with action ``send`` and an item is joined to its sent ``sends`` row; it is clicked
    when a ``push_click`` event carrying its ``send_id`` arrived within ``push_window_hours`` of the
    send (and before ``as_of``). Features are computed as of the decision's own ``as_of`` (what the
    model could have known then), once per distinct decision time.

    Returns:
        ``user_id``, ``item_id``, ``send_id``, ``decided_at``, the click features with
        ``label_is_push`` = 1, ``label`` and ``bought`` (both 1 when clicked, else 0); empty when
        there are no closed pushes.
    """
    as_of = check_as_of(as_of)
    outcomes = fetch_df(
        db,
        """
        WITH clicks AS (
            SELECT properties->>'send_id' AS send_id, min(ts) AS clicked_at
            FROM events WHERE event_type = 'push_click' AND ts < $as_of GROUP BY ALL
        )
        SELECT d.user_id, d.item_id, s.send_id, d.as_of AS decided_at,
               coalesce(c.clicked_at < s.sent_at + to_hours($hours), false) AS clicked
        FROM decisions d
        JOIN sends s ON s.decision_id = d.decision_id
        LEFT JOIN clicks c ON c.send_id = s.send_id
        WHERE d.action = 'send' AND d.item_id IS NOT NULL AND s.sent_at IS NOT NULL
          AND s.sent_at + to_hours($hours) <= $as_of AND d.as_of < $as_of
        ORDER BY d.as_of, s.send_id
        """,
        {"as_of": as_of, "hours": data.push_window_hours},
    )
    if outcomes.empty:
        return outcomes.assign(label=pd.Series(dtype="float64"), bought=pd.Series(dtype="int64"))
    parts = []
    for decided_at, group in outcomes.groupby("decided_at", sort=True):
        at = pd.Timestamp(decided_at).to_pydatetime()
        parts.append(click_features(db, at, group, label_is_push=True))
    rows = pd.concat(parts, ignore_index=True)
    clicked = rows.pop("clicked").to_numpy(dtype=bool)
    return rows.assign(label=clicked.astype("float64"), bought=clicked.astype("int64"))
