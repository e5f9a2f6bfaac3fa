"""The store exported as Parquet for Dask workers, and DuckDB connections that read it back as tables.

Events are written partitioned by ``event_type`` and month (``ym=YYYY-MM``), so a worker building a
snapshot reads only the purchase files it needs; the small tables are single files. A worker opens
:func:`parquet_connection` and runs the same feature SQL as the single-machine path, because the
views carry the store's table names.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from engine.errors import StoreError
from engine.features.base import Db, connection

__all__ = ["EXPORTED_TABLES", "export_store", "parquet_connection"]

#: Tables the feature SQL reads (engine/features, engine/training/click_data.py).
EXPORTED_TABLES = ("events", "users", "items", "decisions", "sends")


def export_store(db: Db, out_dir: str | Path) -> Path:
    """Write every table in :data:`EXPORTED_TABLES` under ``out_dir`` and return it.

    Layout: ``events/event_type=<type>/ym=<YYYY-MM>/*.parquet`` and ``<table>.parquet`` for the others.
    An existing export in ``out_dir`` is replaced.

    Raises:
        StoreError: DuckDB cannot read the store or write the files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    con = connection(db)
    try:
        con.execute(f"""COPY (SELECT *, strftime(ts AT TIME ZONE 'UTC', '%Y-%m') AS ym FROM events)
                        TO '{_quote(out / "events")}'
                        (FORMAT parquet, PARTITION_BY (event_type, ym), OVERWRITE_OR_IGNORE true)""")
        for table in EXPORTED_TABLES[1:]:
            con.execute(f"COPY {table} TO '{_quote(out / f'{table}.parquet')}' (FORMAT parquet)")
    except duckdb.Error as exc:
        raise StoreError(f"cannot export the store to {out}: {exc}") from exc
    return out


def parquet_connection(export_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB whose views ``events``, ``users``… read an :func:`export_store` folder."""
    root = Path(export_dir)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"""CREATE VIEW events AS
                    SELECT * EXCLUDE (ym) FROM read_parquet('{_quote(root / "events")}/*/*/*.parquet',
                                                           hive_partitioning = true)""")
    for table in EXPORTED_TABLES[1:]:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{_quote(root / f'{table}.parquet')}')")
    return con


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
