"""User×item features for given (user, item) pairs as of a time: repeat buying, category affinity, co-occurrence."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from engine.errors import InputError
from engine.features.base import PURCHASE_TYPES, Db, check_as_of, fetch_df, purchases_cte, registered
from engine.features.item import item_neighbors

__all__ = ["HALF_LIFE_DAYS", "USER_ITEM_FEATURES", "history_ctes", "user_item_features"]

#: Feature columns of :func:`user_item_features`, in order.
USER_ITEM_FEATURES: tuple[str, ...] = (
    "ui_count",
    "ui_days_since",
    "ui_category_count",
    "ui_category_share",
    "ui_cooc_score",
    "ui_cooc_max",
    "ui_baskets",
    "ui_baskets_30d",
    "ui_quantity",
    "ui_decayed",
    "ui_share",
    "ui_gap_ratio",
)

#: Half-life of ``ui_decayed``, in days: a basket bought this long ago counts half.
HALF_LIFE_DAYS = 90.0


def user_item_features(
    db: Db,
    as_of: datetime,
    pairs: pd.DataFrame,
    neighbors: pd.DataFrame | None = None,
    event_types: Sequence[str] = PURCHASE_TYPES,
) -> pd.DataFrame:
    """How strongly each user's purchase history before ``as_of`` points at each paired item.

    Args:
        db: the store or a DuckDB connection.
        as_of: timezone-aware cut-off; only purchases with ``ts < as_of`` are read.
        pairs: columns ``user_id``, ``item_id``; one output row per input row, in the same order.
        neighbors: output of :func:`~engine.features.item.item_neighbors` for the same ``as_of``
            (computed when None; pass it in when scoring several batches at one time).
        event_types: event types that count as purchases.

    Returns:
        ``user_id``, ``item_id``; ``ui_count`` (times the user bought the item); ``ui_days_since``
        (days since they last bought it, NaN if never); ``ui_category_count`` (purchases of items in
        the item's category, 0 when the category is unknown); ``ui_category_share`` (that count over
        all the user's purchases, 0 without history); ``ui_cooc_score`` (Σ similarity between the item
        and the distinct items the user bought, over the item's top neighbours); ``ui_cooc_max``;
        ``ui_baskets`` (distinct baskets holding the item: a basket with two lines of it counts once);
        ``ui_baskets_30d`` (of those, in the last 30 days); ``ui_quantity`` (Σ quantity);
        ``ui_decayed`` (Σ over those baskets of 0.5 ** (age in days / :data:`HALF_LIFE_DAYS`));
        ``ui_share`` (``ui_baskets`` over the user's Σ ``ui_baskets`` of all items, 0 without
        history); ``ui_gap_ratio`` (how overdue a repurchase is: ``ui_days_since`` / (the mean days
        between the item's first and last basket per repeat + 1); 0 when bought in fewer than two
        baskets). All 0 for an item the user never bought.

    Raises:
        InputError: ``pairs`` lacks a ``user_id`` or ``item_id`` column.
    """
    as_of = check_as_of(as_of)
    missing = {"user_id", "item_id"} - set(pairs.columns)
    if missing:
        raise InputError(f"pairs is missing column(s): {', '.join(sorted(missing))}")
    if neighbors is None:
        neighbors = item_neighbors(db, as_of, event_types=event_types)
    frame = pairs[["user_id", "item_id"]].reset_index(drop=True)
    frame = frame.assign(pair_no=range(len(frame)))
    with registered(db, frame, "pw_pairs") as pv, registered(db, neighbors, "pw_nb") as nb:
        sql = f"""
            WITH {history_ctes(f"SELECT user_id FROM {pv}")},
            ut AS (SELECT user_id, sum(ui_count) AS total, sum(ui_baskets) AS total_nb FROM ui GROUP BY ALL),
            uc AS (
                SELECT ui.user_id, it.category, sum(ui.ui_count) AS n
                FROM ui JOIN items it ON it.item_id = ui.item_id
                WHERE it.category IS NOT NULL GROUP BY ALL
            ),
            co AS (
                SELECT pr.pair_no, sum(nb.similarity) AS score, max(nb.similarity) AS mx
                FROM {pv} pr
                JOIN {nb} nb ON nb.item_id = pr.item_id
                JOIN ui ON ui.user_id = pr.user_id AND ui.item_id = nb.neighbor_id
                GROUP BY pr.pair_no
            )
            SELECT pr.user_id, pr.item_id,
                   coalesce(ui.ui_count, 0) AS ui_count,
                   ui.ui_days_since,
                   coalesce(uc.n, 0) AS ui_category_count,
                   coalesce(uc.n / ut.total, 0.0) AS ui_category_share,
                   coalesce(co.score, 0.0) AS ui_cooc_score,
                   coalesce(co.mx, 0.0) AS ui_cooc_max,
                   coalesce(ui.ui_baskets, 0) AS ui_baskets,
                   coalesce(ui.ui_baskets_30d, 0) AS ui_baskets_30d,
                   coalesce(ui.ui_quantity, 0.0) AS ui_quantity,
                   coalesce(ui.ui_decayed, 0.0) AS ui_decayed,
                   coalesce(ui.ui_baskets / ut.total_nb, 0.0) AS ui_share,
                   coalesce(ui.ui_gap_ratio, 0.0) AS ui_gap_ratio
            FROM {pv} pr
            LEFT JOIN ui ON ui.user_id = pr.user_id AND ui.item_id = pr.item_id
            LEFT JOIN ut ON ut.user_id = pr.user_id
            LEFT JOIN items it ON it.item_id = pr.item_id
            LEFT JOIN uc ON uc.user_id = pr.user_id AND uc.category = it.category
            LEFT JOIN co ON co.pair_no = pr.pair_no
            ORDER BY pr.pair_no
        """
        df = fetch_df(db, sql, {"as_of": as_of, "types": list(event_types), "half_life": HALF_LIFE_DAYS})
    return df.astype(
        {
            "ui_count": "int64",
            "ui_days_since": "float64",
            "ui_category_count": "int64",
            "ui_category_share": "float64",
            "ui_cooc_score": "float64",
            "ui_cooc_max": "float64",
            "ui_baskets": "int64",
            "ui_baskets_30d": "int64",
            "ui_quantity": "float64",
            "ui_decayed": "float64",
            "ui_share": "float64",
            "ui_gap_ratio": "float64",
        }
    )


def history_ctes(user_source: str) -> str:
    """SQL CTEs ``p``, ``ub`` and ``ui`` over the purchases before ``$as_of`` of the users ``user_source`` selects.

    ``ui`` has one row per (user, item) bought: ``user_id``, ``item_id``, ``ui_count``,
    ``ui_days_since``, ``ui_baskets``, ``ui_baskets_30d``, ``ui_quantity``, ``ui_decayed``,
    ``ui_gap_ratio`` (as :func:`user_item_features` defines them), ``first_ts`` and ``last_ts``.
    Parameters: ``$as_of``, ``$types``, ``$half_life``. One definition for the SQL path
    (:func:`user_item_features`) and the columnar one (:mod:`engine.recommend.columnar`).
    """
    return f"""
            p AS ({purchases_cte()} AND e.user_id IN ({user_source})),
            ub AS (
                SELECT user_id, item_id, basket, count(*) AS n, min(ts) AS ts, sum(quantity) AS q
                FROM p GROUP BY ALL
            ),
            ui AS (
                SELECT user_id, item_id, ui_count, epoch($as_of - last_ts) / 86400.0 AS ui_days_since,
                       ui_baskets, ui_baskets_30d, ui_quantity, ui_decayed, first_ts, last_ts,
                       CASE WHEN ui_baskets > 1 THEN epoch($as_of - last_ts)
                            / (epoch(last_ts - first_ts) / (ui_baskets - 1) + 86400.0) ELSE 0.0 END AS ui_gap_ratio
                FROM (
                    SELECT user_id, item_id, sum(n) AS ui_count, count(*) AS ui_baskets, max(ts) AS last_ts,
                           min(ts) AS first_ts, count(*) FILTER (WHERE ts >= $as_of - INTERVAL 30 DAY) AS ui_baskets_30d,
                           sum(q) AS ui_quantity,
                           sum(pow(0.5, epoch($as_of - ts) / 86400.0 / $half_life)) AS ui_decayed
                    FROM ub GROUP BY ALL
                )
            )"""
