"""Load one file into the canonical ``events`` table through DuckDB's readers, quarantining bad rows.

The file is read by DuckDB, never row by row in Python. Each step below is one SQL statement over the
mapping's relations (see ``engine.ingest.mappings``), all inside one transaction:

1. number the events whose natural key repeats inside the file (a small temp table: only those rows);
2. insert the file's events, checking the stored ones for duplicates only when the mapping has any;
3. quarantine the bad rows with their original values, then count the reasons from what was written;
4. let the mapping refresh ``users`` and ``items``.

Parquet is scanned again by each step (a columnar scan is cheap); a text file is parsed and typed once
into a temp table. docs/decisions/002-event-identity.md explains the event ids and why ``events`` has
no key; docs/decisions/012-ingest-throughput.md what each step costs.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from engine.clock import Clock, SystemClock
from engine.ingest.mappings import Columns, Mapping, choose_mapping
from engine.ingest.readers import REJECTS, describe, detect_format, numbered_sql, quote_ident, sql_str
from engine.store import Store

__all__ = ["IngestReport", "file_sha256", "ingest_path"]

CHECKED = "pw_checked"    # a text file's rows, typed and checked
REPEATS = "pw_repeats"    # events whose key repeats inside the file, from the second occurrence on

@dataclass(frozen=True)
class IngestReport:
    """What one ``ingest_path`` call did.

    ``rows_read`` counts source rows; ``events_loaded`` counts new events (an Open Bandit row with a
    click yields two: the impression and the click); ``events_duplicate`` counts events already stored
    or repeated inside the file.
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

    kept_order = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
    try:
        with store.transaction():
            # A text file is numbered with row_number() OVER (): its lines must come in file order.
            con.execute("SET preserve_insertion_order = true")
            checked = _checked(con, chosen, path, kind, columns)
            # From here on rows are named by __row and ordered explicitly where order matters, so
            # the order in which they land carries no meaning, and keeping it slows the inserts.
            con.execute("SET preserve_insertion_order = false")
            report = _load(con, chosen, checked, path, now)
            con.execute(
                "INSERT INTO ingested_files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [sha, str(path), chosen.name, report.rows_read, report.events_loaded,
                 report.events_duplicate, report.rows_quarantined, now],
            )
    finally:
        with contextlib.suppress(duckdb.Error):
            con.execute(f"SET preserve_insertion_order = {'true' if kept_order else 'false'}")
        for table in (CHECKED, REPEATS):
            with contextlib.suppress(duckdb.Error):
                con.execute(f"DROP TABLE IF EXISTS {table}")
    return report


def _checked(con: duckdb.DuckDBPyConnection, mapping: Mapping, path: Path, kind: str, columns: Columns) -> str:
    """The mapping's checked rows of the file (``__row``, ``__src``, typed columns, ``reason``) as a table."""
    src = "struct_pack(" + ", ".join(f"{quote_ident(c)} := {quote_ident(c)}" for c, _ in columns) + ")"
    source = f"(SELECT {src} AS __src, * FROM ({numbered_sql(path, kind, columns)}))"
    checked = mapping.checked_sql(source, columns, str(path))
    if kind == "parquet":
        return f"({checked})"
    # Every step reads the rows again: parse and type text once.
    con.execute(f"CREATE OR REPLACE TEMP TABLE {CHECKED} AS {checked}")
    if kind == "csv":
        _unparsed_lines(con, mapping.name, path, columns)
    return CHECKED


def _unparsed_lines(con: duckdb.DuckDBPyConnection, mapping: str, path: Path, columns: Columns) -> None:
    """Lines DuckDB could not parse (too many fields, bad quoting) join the checked rows as bad rows.

    ``row_number() OVER ()`` numbered only the parsed lines, so rows after a rejected line are first
    renumbered to their true position in the file.
    """
    try:
        rejected = con.execute(
            f"""SELECT line - 1 AS row, first(error_message ORDER BY column_idx) AS why, first(csv_line) AS text
                FROM {REJECTS} GROUP BY line ORDER BY line""").fetchall()
    except duckdb.CatalogException:
        return
    con.execute(f"DELETE FROM {REJECTS}")
    if not rejected:
        return
    bad = [r[0] for r in rejected]
    total = con.execute(f"SELECT count(DISTINCT __row) FROM {CHECKED}").fetchone()[0] + len(bad)
    con.execute(
        f"""UPDATE {CHECKED} SET __row = m.t
            FROM (SELECT row_number() OVER (ORDER BY g) AS i, g AS t FROM range(1, $n + 1) r(g)
                  WHERE NOT list_contains($bad, g)) m
            WHERE {CHECKED}.__row = m.i""",
        {"n": total, "bad": bad},
    )
    names = [c for c, _ in columns]
    for row, why, text in rejected:
        con.execute(
            f"""INSERT INTO {CHECKED} BY NAME
                SELECT ? AS __row, ? AS reason, {_src_struct(names)} AS __src""",
            [row, f"unparseable CSV line: {why}", text],
        )


def _src_struct(names: list[str]) -> str:
    """The quarantine's raw value for an unparseable line: the line itself under the first column."""
    first = quote_ident(names[0]) if names else '"line"'
    rest = ", ".join(f"{quote_ident(n)} := NULL::VARCHAR" for n in names[1:])
    return f"struct_pack({first} := CAST(? AS VARCHAR){', ' + rest if rest else ''})"


def _load(con: duckdb.DuckDBPyConnection, mapping: Mapping, checked: str, path: Path,
          now: datetime) -> IngestReport:
    """Steps 1–4 of the module docstring; returns the counts."""
    rows_read = con.execute(f"SELECT count(*) FROM {checked}").fetchone()[0]  # Parquet: from the footer
    events = f"({mapping.events_sql(f'(SELECT * FROM {checked} WHERE reason IS NULL)')})"
    file_events, skipped = _number_repeats(con, events)
    first_load = con.execute(
        "SELECT count(*) = 0 FROM (SELECT 1 FROM events WHERE source = ? LIMIT 1)", [mapping.name]
    ).fetchone()[0]
    loaded, stored_before = _insert_events(con, mapping, file_events, first_load, now)
    reasons = _quarantine(con, mapping.name, checked, path, now)
    # With no repeat skipped the file's events are the mapping's events: spare derive the join.
    mapping.derive(con, file_events if skipped else events, first_load)
    return IngestReport(
        path=str(path), mapping=mapping.name, rows_read=int(rows_read), events_loaded=loaded,
        events_duplicate=skipped + stored_before, rows_quarantined=sum(reasons.values()), reasons=reasons,
    )


def _number_repeats(con: duckdb.DuckDBPyConnection, events: str) -> tuple[str, int]:
    """Number the events whose key repeats in the file; returns (the file's events, repeats skipped).

    Only repeated keys reach the window, found by a hash aggregate (hash() is fine here: it only picks
    candidates, the window partitions by the key itself). The returned relation adds
    ``__occurrence`` and drops repeats of un-numbered keys, which are the same event again.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {REPEATS} AS
        SELECT __row, event_type, __numbered, occurrence FROM (
            SELECT __row, event_type, __numbered,
                   row_number() OVER (PARTITION BY __key ORDER BY __row, event_type) AS occurrence
            FROM {events}
            WHERE hash(__key) IN (SELECT hash(__key) FROM {events} GROUP BY 1 HAVING count(*) > 1)
        ) WHERE occurrence > 1""")
    repeats, skipped = con.execute(
        f"SELECT count(*), count(*) FILTER (NOT __numbered) FROM {REPEATS}").fetchone()
    if not repeats:  # every key is unique: no join
        return f"(SELECT *, 1 AS __occurrence FROM {events})", 0
    file_events = f"""(
        SELECT e.*, coalesce(r.occurrence, 1) AS __occurrence
        FROM {events} e LEFT JOIN {REPEATS} r ON r.__row = e.__row AND r.event_type = e.event_type
        WHERE r.occurrence IS NULL OR e.__numbered)"""
    return file_events, int(skipped)


def _insert_events(con: duckdb.DuckDBPyConnection, mapping: Mapping, file_events: str, first_load: bool,
                   now: datetime) -> tuple[int, int]:
    """Insert the file's events not stored yet; returns (inserted, already stored)."""
    source = sql_str(mapping.name)
    # Ids start with the mapping's name, so only that mapping's stored events can match. On a first
    # load there are none, and the anti-join (a hash of every stored id) is skipped.
    unseen = "" if first_load else (
        f"WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.source = {source} AND e.event_id = f.event_id)")
    loaded = con.execute(
        f"""INSERT INTO events (event_id, user_id, item_id, event_type, ts, properties, source, simulated, ingested_at)
            SELECT event_id, user_id, item_id, event_type, ts, properties, {source}, false, ?
            FROM (SELECT {mapping.event_id("__occurrence")} AS event_id, * FROM {file_events}) f {unseen}""",
        [now],
    ).fetchone()[0]
    if first_load:
        return int(loaded), 0
    candidates = con.execute(f"SELECT count(*) FROM {file_events}").fetchone()[0]
    return int(loaded), int(candidates - loaded)


def _quarantine(con: duckdb.DuckDBPyConnection, mapping: str, checked: str, path: Path,
                now: datetime) -> dict[str, int]:
    """Copy the bad rows, with their reason and original values, into ``quarantine``.

    Returns the file's bad rows per reason, most frequent first.
    """
    file = str(path)
    # A file changed in place keeps the quarantine rows of its first version. The table has no key
    # (migration 006), so rows already there for this path are anti-joined; on a path seen for the
    # first time (every bulk load) that lookup is skipped.
    known = con.execute("SELECT count(*) > 0 FROM (SELECT 1 FROM quarantine WHERE file = ? LIMIT 1)",
                        [file]).fetchone()[0]
    unseen = ("AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.file = $file AND q.row_number = c.__row)"
              if known else "")
    con.execute(
        f"""INSERT INTO quarantine (source, file, row_number, reason, raw, quarantined_at)
            SELECT $mapping, $file, __row, reason, to_json(__src), $now FROM {checked} c
            WHERE reason IS NOT NULL {unseen}""",
        {"mapping": mapping, "file": file, "now": now},
    )
    # On a new path the rows just written are all the file's bad rows: count them there rather than
    # check the file once more. A known path kept some older rows instead, so its file is counted.
    counted = (f"{checked} WHERE reason IS NOT NULL" if known
               else "quarantine WHERE file = $file AND quarantined_at = $now")
    params = {} if known else {"file": file, "now": now}
    rows = con.execute(f"SELECT reason, count(*) FROM {counted} GROUP BY reason ORDER BY 2 DESC, 1", params)
    return {reason: int(n) for reason, n in rows.fetchall()}
