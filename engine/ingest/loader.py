"""Load one file into the canonical ``events`` table through DuckDB's readers, quarantining bad rows.

The file is read by DuckDB, never row by row in Python. Each step below is one SQL statement over the
mapping's relations (see ``engine.ingest.mappings``), all inside one transaction:

1. number the events whose natural key repeats inside the file (a small temp table: only those rows);
2. insert the file's events, checking the stored ones for duplicates only when the mapping has any;
3. quarantine the bad rows with their original values, once: a bad row already quarantined from this
   file (same row) or from another file of the same mapping (same original values, same occurrence of
   them in its file) is not written again; then count the reasons;
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
from engine.ingest.readers import (
    REJECTS,
    compressed,
    describe,
    detect_format,
    json_lines_sql,
    numbered_sql,
    quote_ident,
    sql_str,
)
from engine.store import Store

__all__ = ["IngestReport", "file_sha256", "ingest_path"]

CHECKED = "pw_checked"    # a text file's rows, typed and checked
REPEATS = "pw_repeats"    # events whose key repeats inside the file, from the second occurrence on

@dataclass(frozen=True)
class IngestReport:
    """What one ``ingest_path`` call did.

    ``rows_read`` counts source rows; ``events_loaded`` counts new events (an Open Bandit row with a
    click yields two: the impression and the click); ``events_duplicate`` counts events already stored
    or repeated inside the file; ``note`` says why, when the new events are not one per good row.
    """

    path: str
    mapping: str
    rows_read: int
    events_loaded: int
    events_duplicate: int
    rows_quarantined: int
    already_ingested: bool = False
    reasons: dict[str, int] = field(default_factory=dict)
    note: str = ""


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
            checked = _checked(con, chosen, path, kind, columns, now)
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


def _checked(con: duckdb.DuckDBPyConnection, mapping: Mapping, path: Path, kind: str, columns: Columns,
             now: datetime) -> str:
    """The mapping's checked rows of the file (``__row``, ``__src``, typed columns, ``reason``) as a table."""
    src = "struct_pack(" + ", ".join(f"{quote_ident(c)} := {quote_ident(c)}" for c, _ in columns) + ")"
    source = f"(SELECT {src} AS __src, * FROM ({numbered_sql(path, kind, columns)}))"
    checked = mapping.checked_sql(source, columns, str(path), now)
    if kind == "parquet":
        return f"({checked})"
    # Every step reads the rows again: parse and type text once.
    con.execute(f"CREATE OR REPLACE TEMP TABLE {CHECKED} AS {checked}")
    if kind == "csv":
        _unparsed_lines(con, mapping.name, path, columns)
    elif not compressed(path):  # see readers.numbered_sql
        _unparsed_json_lines(con, path, columns)
    return CHECKED


def _unparsed_lines(con: duckdb.DuckDBPyConnection, mapping: str, path: Path, columns: Columns) -> None:
    """Lines DuckDB could not parse (too many fields, bad quoting) join the checked rows as bad rows.

    ``row_number() OVER ()`` numbered only the parsed lines, so rows after a rejected line are first
    renumbered to their true line in the file (the header is line 1, as in DuckDB's ``line``).
    """
    try:
        rejected = con.execute(
            f"""SELECT line AS row, first(error_message ORDER BY column_idx) AS why, first(csv_line) AS text
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
            FROM (SELECT row_number() OVER (ORDER BY g) + 1 AS i, g AS t FROM range(2, $n + 2) r(g)
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


def _unparsed_json_lines(con: duckdb.DuckDBPyConnection, path: Path, columns: Columns) -> None:
    """Lines that are not a JSON object join the checked rows as bad rows, with the parser's reason.

    DuckDB's JSON parser has no per-row error column, so each unreadable line is parsed once more to
    get its message (a statement per bad line; good lines were read in bulk), on a connection of its
    own: a failed statement would abort the ingest's transaction.
    """
    bad = con.execute(f"""
        SELECT __row, line, json_valid(line) FROM {json_lines_sql(path)}
        WHERE json_type(TRY_CAST(line AS JSON)) IS DISTINCT FROM 'OBJECT' ORDER BY __row""").fetchall()
    if not bad:
        return
    names = [c for c, _ in columns]
    parser = duckdb.connect()
    for row, text, valid in bad:
        why = "JSON line is not an object" if valid else f"unparseable JSON line: {_json_error(parser, text)}"
        con.execute(f"INSERT INTO {CHECKED} BY NAME SELECT ? AS __row, ? AS reason, {_src_struct(names)} AS __src",
                    [row, why, text])
    parser.close()


def _json_error(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """DuckDB's reason for not parsing ``text`` as JSON, without the echo of the input."""
    try:
        con.execute("SELECT CAST(? AS JSON)", [text])
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        return first.removeprefix("Conversion Error: ").split("  Input:")[0].strip()
    return "not JSON"


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
    quarantined = sum(reasons.values())
    return IngestReport(
        path=str(path), mapping=mapping.name, rows_read=int(rows_read), events_loaded=loaded,
        events_duplicate=skipped + stored_before, rows_quarantined=quarantined, reasons=reasons,
        note=_note(mapping, int(rows_read) - quarantined, loaded, skipped + stored_before),
    )


def _note(mapping: Mapping, good_rows: int, loaded: int, duplicates: int) -> str:
    """Why the new events are not one per good row ("" when they are), for the ingest summary."""
    if loaded == good_rows:
        return ""
    why = []
    extra = loaded + duplicates - good_rows
    if extra > 0:
        why.append(f"{extra:,} {mapping.extra_events or 'rows gave more than one event'}")
    elif extra < 0:
        why.append(f"{-extra:,} rows gave no event")
    if duplicates:
        why.append(f"{duplicates:,} duplicate{'s' if duplicates != 1 else ''} skipped")
    return f"{good_rows:,} good rows gave {loaded:,} new event{'s' if loaded != 1 else ''}: " + "; ".join(why)


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
    """Copy the bad rows, with their reason and original values, into ``quarantine``, each once.

    A bad row is already quarantined when its file has a row at the same ``row_number`` (a file
    changed in place keeps the rows of its first version) or when the mapping has a row with the
    same original values that is the same occurrence of them in its file (a file that grew, under
    another name). The table has no key (migration 006): both are anti-joins, skipped when neither
    the file nor the mapping has a quarantine row yet (every first bulk load).

    Returns the file's bad rows per reason, most frequent first.
    """
    file = str(path)
    known = con.execute(
        "SELECT count(*) > 0 FROM (SELECT 1 FROM quarantine WHERE file = $file OR source = $mapping LIMIT 1)",
        {"file": file, "mapping": mapping}).fetchone()[0]
    bad = f"(SELECT __row, reason, to_json(__src) AS raw FROM {checked} WHERE reason IS NOT NULL)"
    if known:
        bad = f"""(SELECT __row, reason, raw FROM (
                       SELECT *, row_number() OVER (PARTITION BY CAST(raw AS VARCHAR) ORDER BY __row) AS occurrence
                       FROM {bad}) c
                   WHERE NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.file = $file AND q.row_number = c.__row)
                     AND NOT EXISTS (
                       SELECT 1 FROM (
                           SELECT CAST(raw AS VARCHAR) AS raw, row_number() OVER (
                                      PARTITION BY file, CAST(raw AS VARCHAR) ORDER BY row_number) AS occurrence
                           FROM quarantine WHERE source = $mapping) q
                       WHERE q.raw = CAST(c.raw AS VARCHAR) AND q.occurrence = c.occurrence))"""
    con.execute(
        f"""INSERT INTO quarantine (source, file, row_number, reason, raw, quarantined_at)
            SELECT $mapping, $file, __row, reason, raw, $now FROM {bad}""",
        {"mapping": mapping, "file": file, "now": now},
    )
    # When nothing was known the rows just written are all the file's bad rows: count them there
    # rather than check the file once more. Otherwise some were skipped, so the file is counted.
    counted = (f"{checked} WHERE reason IS NOT NULL" if known
               else "quarantine WHERE file = $file AND quarantined_at = $now")
    params = {} if known else {"file": file, "now": now}
    rows = con.execute(f"SELECT reason, count(*) FROM {counted} GROUP BY reason ORDER BY 2 DESC, 1", params)
    return {reason: int(n) for reason, n in rows.fetchall()}
