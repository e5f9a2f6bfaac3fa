"""Candidate generation: the items worth scoring for each user, from history, co-occurrence and popularity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from engine.errors import InputError
from engine.features.base import (
    PURCHASE_TYPES,
    Db,
    check_as_of,
    fetch_df,
    purchases_cte,
    registered,
    user_view,
)
from engine.features.item import item_neighbors

__all__ = ["CANDIDATE_COLUMNS", "CatalogRule", "generate_candidates", "popular_items"]

CANDIDATE_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "from_own", "from_cooc", "from_popular")


@dataclass(frozen=True)
class CatalogRule:
    """Which items a campaign may recommend. Fields left at None do not restrict.

    Args:
        item_ids: an explicit candidate list (the campaign's items).
        categories: allowed ``items.category`` values.
        sources: allowed ``items.source`` values (e.g. ``("online_retail",)``).
        min_price: lowest allowed ``items.price`` (inclusive).
        max_price: highest allowed ``items.price`` (inclusive).

    Raises:
        InputError: an empty list, or ``min_price`` above ``max_price``.
    """

    item_ids: tuple[str, ...] | None = None
    categories: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    min_price: float | None = None
    max_price: float | None = None

    def __post_init__(self) -> None:
        for name in ("item_ids", "categories", "sources"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str) or len(value) == 0:
                    raise InputError(f"CatalogRule.{name} must be a non-empty list of strings")
                object.__setattr__(self, name, tuple(value))
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise InputError(
                f"CatalogRule.min_price ({self.min_price}) is above max_price ({self.max_price})"
            )

    def where(self) -> tuple[str, dict[str, Any]]:
        """SQL condition over the ``items`` table (alias ``it``) and its parameters."""
        conds, params = ["TRUE"], {}
        for name, column in (("item_ids", "item_id"), ("categories", "category"), ("sources", "source")):
            value = getattr(self, name)
            if value is not None:
                conds.append(f"list_contains(${name}, it.{column})")
                params[name] = list(value)
        if self.min_price is not None:
            conds.append("it.price >= $min_price")
            params["min_price"] = float(self.min_price)
        if self.max_price is not None:
            conds.append("it.price <= $max_price")
            params["max_price"] = float(self.max_price)
        return " AND ".join(conds), params


def generate_candidates(
    db: Db,
    as_of: datetime,
    user_ids: Sequence[str] | None = None,
    *,
    catalog: CatalogRule | None = None,
    n_own: int = 100,
    n_cooc: int = 20,
    n_popular: int = 20,
    popular_days: int = 30,
    cooc_seeds: int = 20,
    neighbors: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Candidate items per user, from purchases before ``as_of`` only.

    Three sources, each capped: the user's own most-bought items (``n_own``, by distinct baskets
    then recency; 100 covers every own item of nine customers in ten on Online Retail), items bought together with theirs that they have not bought (``n_cooc``, by summed
    similarity from the user's ``cooc_seeds`` most recent items to those items' ``cooc_seeds`` nearest
    neighbours: bounded seeds keep this linear in users) and the most popular items of the last ``popular_days`` days
    (``n_popular``, the same for everyone; all-time counts break ties and fill quiet windows).
    With a ``catalog`` rule only items of the ``items`` table that pass it are proposed.

    Args:
        db: the store or a DuckDB connection.
        as_of: timezone-aware cut-off.
        user_ids: users to generate for (users without history get popular items only); every
            user with a purchase before ``as_of`` when None.
        catalog: the campaign's item restriction, or None for every item.
        n_own, n_cooc, n_popular: per-source caps.
        popular_days: popularity window in days.
        cooc_seeds: recent items per user, and neighbours per item, that co-occurrence starts from.
        neighbors: :func:`~engine.features.item.item_neighbors` output for the same ``as_of``.

    Returns:
        One row per distinct (user, item): ``user_id``, ``item_id`` and booleans ``from_own``,
        ``from_cooc``, ``from_popular``; sorted by user then item.
    """
    as_of = check_as_of(as_of)
    if neighbors is None:
        neighbors = item_neighbors(db, as_of)
    allowed_sql, params = (catalog or CatalogRule()).where()

    def allowed(column: str) -> str:
        if catalog is None:
            return "TRUE"
        return f"{column} IN (SELECT it.item_id FROM items it WHERE {allowed_sql})"

    with user_view(db, user_ids) as uv, registered(db, neighbors, "pw_nb") as nb:
        users_sql = f"SELECT user_id FROM {uv}" if uv else "SELECT DISTINCT user_id FROM p"
        p_users = f"WHERE user_id IN (SELECT user_id FROM {uv})" if uv else ""
        sql = f"""
            WITH pa AS ({purchases_cte()}),
            p AS (SELECT * FROM pa {p_users}),
            us AS ({users_sql}),
            ui AS (
                SELECT user_id, item_id, count(*) AS n, count(DISTINCT basket) AS nb, max(ts) AS last_ts
                FROM p GROUP BY ALL
            ),
            own AS (
                SELECT user_id, item_id, 'own' AS src FROM ui WHERE {allowed('item_id')}
                QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY nb DESC, last_ts DESC, item_id) <= $n_own
            ),
            seeds AS (
                SELECT user_id, item_id FROM ui
                QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY last_ts DESC, n DESC, item_id) <= $seeds
            ),
            nbk AS (
                SELECT item_id, neighbor_id, similarity FROM {nb}
                QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY similarity DESC, neighbor_id) <= $seeds
            ),
            co AS (
                SELECT seeds.user_id, nbk.neighbor_id AS item_id, 'cooc' AS src
                FROM seeds JOIN nbk ON nbk.item_id = seeds.item_id
                ANTI JOIN ui AS mine ON mine.user_id = seeds.user_id AND mine.item_id = nbk.neighbor_id
                WHERE {allowed('nbk.neighbor_id')}
                GROUP BY seeds.user_id, nbk.neighbor_id
                QUALIFY row_number() OVER (PARTITION BY seeds.user_id ORDER BY sum(nbk.similarity) DESC, nbk.neighbor_id)
                        <= $n_cooc
            ),
            pop AS (SELECT unnest($popular::VARCHAR[]) AS item_id),
            allc AS (
                SELECT * FROM own UNION ALL SELECT * FROM co
                UNION ALL SELECT us.user_id, pop.item_id, 'popular' FROM us CROSS JOIN pop
            )
            SELECT user_id, item_id,
                   bool_or(src = 'own') AS from_own, bool_or(src = 'cooc') AS from_cooc,
                   bool_or(src = 'popular') AS from_popular
            FROM allc GROUP BY user_id, item_id ORDER BY user_id, item_id
        """
        params.update(as_of=as_of, types=list(PURCHASE_TYPES), seeds=cooc_seeds, n_own=n_own, n_cooc=n_cooc,
                      popular=popular_items(db, as_of, catalog, n_popular, popular_days))
        return fetch_df(db, sql, params)


def popular_items(db: Db, as_of: datetime, catalog: CatalogRule | None, n_popular: int, popular_days: int = 30) -> list[str]:
    """The ``n_popular`` items bought most in the ``popular_days`` before ``as_of`` (all-time counts, then id, break ties).

    Only items the ``catalog`` rule allows (those of the ``items`` table that pass it) when a rule is given.
    """
    as_of = check_as_of(as_of)
    where, params = (catalog or CatalogRule()).where()
    allowed = "TRUE" if catalog is None else f"item_id IN (SELECT it.item_id FROM items it WHERE {where})"
    sql = f"""
        WITH pa AS ({purchases_cte()})
        SELECT item_id FROM pa WHERE {allowed} GROUP BY item_id
        ORDER BY count(*) FILTER (WHERE ts >= $as_of - to_days($days)) DESC, count(*) DESC, item_id
        LIMIT $n_popular
    """
    params.update(as_of=as_of, types=list(PURCHASE_TYPES), days=popular_days, n_popular=n_popular)
    return fetch_df(db, sql, params)["item_id"].tolist()
