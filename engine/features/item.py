"""Per-item popularity features and item-to-item co-occurrence ("bought together") as of a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from engine.features.base import PURCHASE_TYPES, Db, check_as_of, fetch_df, purchases_cte

__all__ = ["ITEM_FEATURES", "item_features", "item_neighbors"]

#: Feature columns of :func:`item_features` (``item_id`` and ``category`` are not model features).
ITEM_FEATURES: tuple[str, ...] = (
    "i_pop_7d",
    "i_pop_30d",
    "i_pop_90d",
    "i_pop_total",
    "i_buyers",
    "i_buyers_30d",
    "i_buyers_7d",
    "i_buyers_90d",
    "i_repeat_rate",
    "i_trend",
    "i_price",
    "i_age_days",
)


def item_features(db: Db, as_of: datetime, event_types: Sequence[str] = PURCHASE_TYPES) -> pd.DataFrame:
    """Popularity, reach, trend and price of every catalog item as of ``as_of``.

    Items in the ``items`` table without purchases before ``as_of`` get a row with zero counts, so
    new catalog items can still be scored; items only seen in events get a row too.

    Args:
        db: the store or a DuckDB connection.
        as_of: timezone-aware cut-off; only purchases with ``ts < as_of`` are read.
        event_types: event types that count as purchases.

    Returns:
        One row per item: ``item_id``, ``category`` (nullable string, static catalog attribute);
        ``i_pop_7d`` / ``_30d`` / ``_90d`` / ``i_pop_total`` (purchase lines in the last 7/30/90 days
        and ever); ``i_buyers`` and ``i_buyers_30d`` (distinct buyers ever / last 30 days);
        ``i_trend`` ((lines in the last 30 days + 1) / (lines in the 30 days before + 1));
        ``i_price`` (mean unit price paid before as_of, else the catalog price, else NaN);
        ``i_age_days`` (days since the first purchase, NaN when never bought).
    """
    as_of = check_as_of(as_of)
    sql = f"""
        WITH p AS ({purchases_cte()}),
        a AS (
            SELECT item_id,
                   count(*) FILTER (WHERE ts >= $as_of - INTERVAL 7 DAY) AS i_pop_7d,
                   count(*) FILTER (WHERE ts >= $as_of - INTERVAL 30 DAY) AS i_pop_30d,
                   count(*) FILTER (WHERE ts >= $as_of - INTERVAL 60 DAY
                                      AND ts < $as_of - INTERVAL 30 DAY) AS pop_prev_30d,
                   count(*) FILTER (WHERE ts >= $as_of - INTERVAL 90 DAY) AS i_pop_90d,
                   count(*) AS i_pop_total,
                   count(DISTINCT user_id) AS i_buyers,
                   count(DISTINCT user_id) FILTER (WHERE ts >= $as_of - INTERVAL 7 DAY) AS i_buyers_7d,
                   count(DISTINCT user_id) FILTER (WHERE ts >= $as_of - INTERVAL 30 DAY) AS i_buyers_30d,
                   count(DISTINCT user_id) FILTER (WHERE ts >= $as_of - INTERVAL 90 DAY) AS i_buyers_90d,
                   avg(unit_price) AS paid_price,
                   epoch($as_of - min(ts)) / 86400.0 AS i_age_days
            FROM p GROUP BY item_id
        ),
        r AS (
            SELECT item_id, avg(CAST(nb > 1 AS DOUBLE)) AS i_repeat_rate
            FROM (SELECT item_id, user_id, count(DISTINCT basket) AS nb FROM p GROUP BY ALL) GROUP BY item_id
        )
        SELECT coalesce(a.item_id, it.item_id) AS item_id, it.category,
               coalesce(a.i_pop_7d, 0) AS i_pop_7d, coalesce(a.i_pop_30d, 0) AS i_pop_30d,
               coalesce(a.i_pop_90d, 0) AS i_pop_90d, coalesce(a.i_pop_total, 0) AS i_pop_total,
               coalesce(a.i_buyers, 0) AS i_buyers, coalesce(a.i_buyers_30d, 0) AS i_buyers_30d,
               coalesce(a.i_buyers_7d, 0) AS i_buyers_7d, coalesce(a.i_buyers_90d, 0) AS i_buyers_90d,
               coalesce(r.i_repeat_rate, 0.0) AS i_repeat_rate,
               (coalesce(a.i_pop_30d, 0) + 1.0) / (coalesce(a.pop_prev_30d, 0) + 1.0) AS i_trend,
               coalesce(a.paid_price, it.price) AS i_price,
               a.i_age_days
        FROM a FULL OUTER JOIN items it ON it.item_id = a.item_id
        LEFT JOIN r ON r.item_id = a.item_id
        ORDER BY item_id
    """
    df = fetch_df(db, sql, {"as_of": as_of, "types": list(event_types)})
    ints = ["i_pop_7d", "i_pop_30d", "i_pop_90d", "i_pop_total", "i_buyers", "i_buyers_30d", "i_buyers_7d",
            "i_buyers_90d"]
    floats = ["i_repeat_rate", "i_trend", "i_price", "i_age_days"]
    return df.astype({**{c: "int64" for c in ints}, **{c: "float64" for c in floats}})


def item_neighbors(
    db: Db,
    as_of: datetime,
    k: int = 20,
    max_basket: int = 30,
    event_types: Sequence[str] = PURCHASE_TYPES,
) -> pd.DataFrame:
    """The ``k`` items most often bought in the same basket as each item, before ``as_of``.

    Similarity is the cosine of basket co-occurrence, ``n(i, j) / sqrt(n(i) · n(j))``. Baskets with
    more than ``max_basket`` distinct items are left out: they are bulk orders that say little about
    which items go together, and their pair count grows with the square of their size (on Online
    Retail, 30 instead of 50 halves the work and leaves the click model's NDCG@10 unchanged).

    Returns:
        Columns ``item_id``, ``neighbor_id``, ``cooc`` (baskets holding both), ``similarity`` (0–1);
        at most ``k`` rows per ``item_id``, never ``item_id == neighbor_id``.
    """
    as_of = check_as_of(as_of)
    # Baskets and items are numbered first: the self-join and grouping run on integers, not strings.
    # Item numbers follow item_id order so that ties in similarity break the same way every run.
    sql = f"""
        WITH p AS ({purchases_cte()}),
        bi AS (SELECT DISTINCT basket, item_id FROM p),
        small AS (
            SELECT basket, row_number() OVER () AS b FROM bi
            GROUP BY basket HAVING count(*) BETWEEN 2 AND $max_basket
        ),
        ids AS (SELECT item_id, row_number() OVER (ORDER BY item_id) AS i FROM (SELECT DISTINCT item_id FROM bi)),
        sb AS (SELECT small.b, ids.i FROM bi JOIN small USING (basket) JOIN ids USING (item_id)),
        n AS (SELECT i, count(*) AS n FROM sb GROUP BY i),
        pairs AS (
            SELECT x.i, y.i AS j, count(*) AS cooc
            FROM sb x JOIN sb y ON x.b = y.b AND x.i <> y.i
            GROUP BY x.i, y.i
        ),
        top AS (
            SELECT pairs.i, j, cooc, cooc / sqrt(CAST(ni.n AS DOUBLE) * nj.n) AS similarity
            FROM pairs JOIN n ni ON ni.i = pairs.i JOIN n nj ON nj.i = pairs.j
            QUALIFY row_number() OVER (PARTITION BY pairs.i ORDER BY similarity DESC, cooc DESC, j) <= $k
        )
        SELECT a.item_id, b.item_id AS neighbor_id, cooc, similarity
        FROM top JOIN ids a ON a.i = top.i JOIN ids b ON b.i = top.j
        ORDER BY a.item_id, similarity DESC, neighbor_id
    """
    params = {"as_of": as_of, "types": list(event_types), "k": k, "max_basket": max_basket}
    return fetch_df(db, sql, params).astype({"cooc": "int64", "similarity": "float64"})
