"""Load one file into the canonical ``events`` table through DuckDB's readers, quarantining bad rows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from engine.clock import Clock, SystemClock
from engine.errors import StoreError
from engine.ingest.mappings import choose_mapping
from engine.ingest.readers import describe, detect_format, reader_sql, sql_str
from engine.store import Store

__all__ = ["IngestReport", "file_sha256", "ingest_path"]

STAGED = "pw_staged"


@dataclass(frozen=True)
class IngestReport:
    """What one ``ingest_path`` call did.

    ``rows_read`` counts source rows; ``events_loaded`` counts new events (an Open Bandit row with a
    click yields two: the impression and the click); ``events_duplicate`` counts events already stored.
    """

    path: str
    mapping: str
    rows_read: int
    events_loaded: int
    events_duplicate: int
    rows_quarantined: int
    already_ingested: bool = False
    reasons: dict[str, int] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_path(
    store: Store,
    path: str | Path,
    fmt: str | None = None,
    mapping: str | None = None,
    clock: Clock | None = None,
) -> IngestReport:
    """Ingest one CSV, Parquet or JSON-lines file.

    Good rows land in ``events`` (deduplicated by ``event_id``), bad rows in ``quarantine`` with the
    reason, and the mapping refreshes ``users`` and ``items``. A file whose bytes were ingested before
    is skipped. Everything happens in one transaction: a failure leaves the store as it was.

    Raises:
        InputError: the file is missing, unreadable, or fits no mapping.
        StoreError: DuckDB failed while loading.
    """
    path = Path(path)
    now = (clock or SystemClock()).now()
    con = store.con
    kind = detect_format(path, fmt)
    columns = describe(con, path, kind)
    chosen = choose_mapping(mapping, columns)
    sha = file_sha256(path)
    seen = con.execute("SELECT mapping, rows_read FROM ingested_files WHERE sha256 = ?", [sha]).fetchone()
    if seen is not None:
        return IngestReport(str(path), seen[0], int(seen[1]), 0, 0, 0, already_ingested=True)

    staged_sql = chosen.staged_sql(reader_sql(path, kind), columns, str(path))
    try:
        with store.transaction():
            con.execute(f"CREATE OR REPLACE TEMP TABLE {STAGED} AS {staged_sql}")
            report = _land(con, path, chosen.name, now)
            chosen.derive(con, STAGED)
            con.execute(
                "INSERT INTO ingested_files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [sha, str(path), chosen.name, report.rows_read, report.events_loaded,
                 report.events_duplicate, report.rows_quarantined, now],
            )
    finally:
        try:
            con.execute(f"DROP TABLE IF EXISTS {STAGED}")
        except duckdb.Error:
            pass
    return report


def _land(con: duckdb.DuckDBPyConnection, path: Path, mapping: str, now) -> IngestReport:
    """Move staged rows into quarantine and events; returns the counts."""
    file = sql_str(str(path))
    rows_read = con.execute(f"SELECT count(DISTINCT __row) FROM {STAGED}").fetchone()[0]
    con.execute(
        f"""INSERT OR IGNORE INTO quarantine (source, file, row_number, reason, raw, quarantined_at)
            SELECT DISTINCT ON (__row) {sql_str(mapping)}, {file}, __row, reason, raw, ?
            FROM {STAGED} WHERE reason IS NOT NULL""",
        [now],
    )
    reasons = dict(con.execute(
        f"SELECT reason, count(DISTINCT __row) FROM {STAGED} WHERE reason IS NOT NULL GROUP BY reason ORDER BY 2 DESC"
    ).fetchall())
    good = con.execute(f"SELECT count(*) FROM {STAGED} WHERE reason IS NULL").fetchone()[0]
    try:
        con.execute(
            f"""INSERT INTO events (event_id, user_id, item_id, event_type, ts, properties, source, simulated, ingested_at)
                SELECT s.event_id, s.user_id, s.item_id, s.event_type, s.ts, s.properties, {sql_str(mapping)}, false, ?
                FROM {STAGED} s
                WHERE s.reason IS NULL
                  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = s.event_id)""",
            [now],
        )
    except duckdb.ConstraintException as exc:  # the same event twice inside one file: a mapping bug
        raise StoreError(f"duplicate event ids inside {path.name}: {exc}") from exc
    loaded = con.execute(
        "SELECT count(*) FROM events WHERE ingested_at = ? AND source = ?", [now, mapping]
    ).fetchone()[0]
    return IngestReport(
        path=str(path), mapping=mapping, rows_read=int(rows_read), events_loaded=int(loaded),
        events_duplicate=int(good - loaded), rows_quarantined=int(sum(reasons.values())), reasons=reasons,
    )
