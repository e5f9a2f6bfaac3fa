"""Shared plumbing for the as-of feature queries: connections, the as-of check and the event filters.

Every feature query in this package reads only ``events`` rows with ``ts < as_of`` (plus the static
``users`` and ``items`` attributes), so a feature set computed as of a time cannot see anything that
happened at or after it. The SQL snippets here are the one place those filters are written.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from engine.errors import InputError, StoreError
from engine.store import Store

__all__ = [
    "ENGAGEMENT_TYPES",
    "PURCHASE_TYPES",
    "Db",
    "check_as_of",
    "connection",
    "fetch_df",
    "purchases_cte",
    "registered",
    "stable_floats",
    "user_filter_sql",
    "user_view",
    "users_frame",
]

Db = Store | duckdb.DuckDBPyConnection

#: Event types that count as buying an item (item features, user×item features, click labels).
PURCHASE_TYPES: tuple[str, ...] = ("purchase",)

#: Event types that show a user was paying attention at that moment (send-time features and labels).
ENGAGEMENT_TYPES: tuple[str, ...] = ("purchase", "click", "push_open", "push_click", "conversion", "app_open")

_names = itertools.count()


def connection(db: Db) -> duckdb.DuckDBPyConnection:
    """The DuckDB connection behind a :class:`Store` or a bare connection."""
    return db.con if isinstance(db, Store) else db


def check_as_of(as_of: datetime) -> datetime:
    """Validate an as-of time and return it in UTC.

    Raises:
        InputError: ``as_of`` is not a timezone-aware datetime.
    """
    if not isinstance(as_of, datetime) or as_of.tzinfo is None or as_of.utcoffset() is None:
        raise InputError(f"as_of must be a timezone-aware datetime, got {as_of!r}")
    return as_of.astimezone(UTC)


def fetch_df(db: Db, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run ``sql`` and return a DataFrame; DuckDB errors become :class:`StoreError`."""
    try:
        return connection(db).execute(sql, params or {}).df()
    except duckdb.Error as exc:
        raise StoreError(f"feature query failed: {exc}") from exc


@contextlib.contextmanager
def registered(db: Db, frame: pd.DataFrame, prefix: str = "pw_frame") -> Iterator[str]:
    """Expose ``frame`` to SQL under a fresh view name for the duration of the block."""
    con = connection(db)
    name = f"{prefix}_{next(_names)}"
    con.register(name, frame)
    try:
        yield name
    finally:
        con.unregister(name)


def purchases_cte(types_param: str = "$types", as_of_param: str = "$as_of") -> str:
    """SQL for a CTE body listing purchase lines before the as-of time.

    Columns: ``user_id``, ``item_id``, ``ts``, ``basket`` (the invoice when the event has one, else
    user and timestamp: lines bought at the same instant form one basket), ``quantity`` (1 when
    absent) and ``unit_price`` (NULL when absent).
    """
    return f"""
        SELECT e.user_id, e.item_id, e.ts,
               coalesce(e.properties->>'invoice', e.user_id || '@' || CAST(epoch_ms(e.ts) AS VARCHAR)) AS basket,
               coalesce(TRY_CAST(e.properties->>'quantity' AS DOUBLE), 1.0) AS quantity,
               TRY_CAST(e.properties->>'unit_price' AS DOUBLE) AS unit_price
        FROM events e
        WHERE e.ts < {as_of_param}
          AND list_contains({types_param}, e.event_type)
          AND e.item_id IS NOT NULL
    """


@contextlib.contextmanager
def user_view(db: Db, user_ids: Sequence[str] | None) -> Iterator[str | None]:
    """Register ``user_ids`` as a one-column view (``user_id``); yields None when no filter is wanted."""
    if user_ids is None:
        yield None
        return
    with registered(db, users_frame(user_ids), "pw_users") as name:
        yield name


def user_filter_sql(view: str | None, column: str = "user_id") -> str:
    """``AND <column> IN (SELECT user_id FROM view)`` or nothing when no view is given."""
    return "" if view is None else f"AND {column} IN (SELECT user_id FROM {view})"


def users_frame(user_ids: Sequence[str]) -> pd.DataFrame:
    """A one-column frame (``user_id``) of distinct user ids, for :func:`registered`."""
    return pd.DataFrame({"user_id": pd.unique(pd.Series(list(user_ids), dtype="object"))})


def stable_floats(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) rounded to float32 precision (24 significant bits), returned as float64.

    DuckDB sums and averages floating-point values in parallel, in whichever order its threads meet
    the rows, so the same query can differ in the last bits from one run to the next (seen: 1e-11 on
    a user's monetary total). LightGBM turns such a difference into another bin boundary or split,
    and the trained model — and every ranking after it — changes. Rounding away the bits below
    float32 precision makes the features identical across runs unless a value sits within one
    float64 ulp of a float32 rounding boundary (about 1 in 10^9 values); NaN stays NaN.
    """
    return np.asarray(values, dtype="float64").astype("float32").astype("float64")
