"""Load the shipped data into a temporary store through the normal ingest, and read it back as evaluation frames."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from engine.errors import InputError
from engine.features.base import Db, fetch_df
from engine.ingest import ingest_path
from engine.store import Store

__all__ = ["SHIPPED_FILES", "ingest_shipped", "purchases", "slice_files"]

SHIPPED_FILES = ("online_retail/online_retail.parquet", "open_bandit/random/all.csv", "open_bandit/bts/all.csv")


def slice_files(data_dir: Path, out: Path) -> Path:
    """Write a small, deterministic slice of the shipped files under ``out`` (for ``--fast``); returns ``out``.

    One customer in six of Online Retail, and the impressions of the first two days per policy.
    """
    con = duckdb.connect()
    (out / "online_retail").mkdir(parents=True, exist_ok=True)
    con.execute(f"""COPY (SELECT * FROM read_parquet('{data_dir / SHIPPED_FILES[0]}')
                         WHERE CAST(CustomerID AS BIGINT) % 6 = 0) TO '{out / SHIPPED_FILES[0]}' (FORMAT parquet)""")
    for policy in ("random", "bts"):
        (out / "open_bandit" / policy).mkdir(parents=True, exist_ok=True)
        src = data_dir / "open_bandit" / policy / "all.csv"
        con.execute(f"""COPY (SELECT * FROM read_csv('{src}', all_varchar=true)
                             WHERE "timestamp" < '2019-11-27') TO '{out / "open_bandit" / policy / "all.csv"}' (HEADER)""")
        ctx = data_dir / "open_bandit" / policy / "item_context.csv"
        (out / "open_bandit" / policy / "item_context.csv").write_bytes(ctx.read_bytes())
    con.close()
    return out


def ingest_shipped(store: Store, data_dir: Path) -> dict[str, int]:
    """Ingest the shipped files found under ``data_dir``; returns events loaded per file name.

    Raises:
        InputError: a shipped file is missing.
    """
    missing = [f for f in SHIPPED_FILES if not (data_dir / f).is_file()]
    if missing:
        raise InputError("shipped data missing under " + str(data_dir) + ": " + ", ".join(missing))
    loaded = {}
    for name in SHIPPED_FILES:
        if (data_dir / name).is_file():
            loaded[name] = ingest_path(store, data_dir / name).events_loaded
    return loaded


def purchases(db: Db) -> pd.DataFrame:
    """Online Retail purchase lines (cancellations excluded) in UK local time.

    Returns:
        ``user_id``, ``item_id``, ``invoice``, ``ts`` (naive, Europe/London wall clock), ``quantity``.
    """
    return fetch_df(db, """
        SELECT user_id, item_id, properties->>'invoice' AS invoice,
               CAST(timezone('Europe/London', ts) AS TIMESTAMP) AS ts,
               CAST(properties->>'quantity' AS DOUBLE) AS quantity
        FROM events WHERE source = 'online_retail' AND event_type = 'purchase'
        ORDER BY ts, user_id, item_id""")
