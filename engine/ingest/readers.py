"""DuckDB reader expressions for the input formats Pushwise ingests (CSV, Parquet, JSON lines)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from engine.errors import InputError

__all__ = ["REJECTS", "FORMATS", "compressed", "detect_format", "describe", "json_lines_sql", "numbered_sql",
           "quote_ident", "reader_sql", "sql_str"]

FORMATS = ("csv", "parquet", "jsonl")

_SUFFIXES = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}


def sql_str(value: str) -> str:
    """Quote a string as a SQL literal."""
    return "'" + str(value).replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """Quote a column name as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def detect_format(path: Path, fmt: str | None) -> str:
    """The format named by ``fmt`` or, when absent, by the file's suffix (``.gz`` is looked through)."""
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".zst")]
    found = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise InputError(f"cannot tell the format of {path.name}; pass --format csv|parquet|jsonl")
    return found


#: Temp table where DuckDB records the CSV lines it could not parse (one row per error).
REJECTS = "pw_csv_rejects"


def reader_sql(path: Path, fmt: str) -> str:
    """A table expression reading ``path``.

    CSV is read with every column as text so that a malformed value quarantines its row instead of
    failing the whole file; the mappings TRY_CAST each column to its type.
    """
    p = sql_str(str(path))
    if fmt == "parquet":
        return f"read_parquet({p})"
    if fmt == "csv":
        # strict: a line with too many fields is an error, not silently cut; store_rejects keeps such
        # lines (with DuckDB's reason) in temp tables that the loader quarantines.
        return (f"read_csv({p}, header=true, all_varchar=true, strict_mode=true, "
                f"store_rejects=true, rejects_table='{REJECTS}', rejects_scan='{REJECTS}_scan')")
    # a compressed file is read by this reader (a bad line fails the file, as DESCRIBE shows when it
    # samples one); otherwise only the columns come from here and json_lines_sql reads the rows
    return f"read_json({p}, format='newline_delimited', ignore_errors={'false' if compressed(path) else 'true'})"


def compressed(path: Path) -> bool:
    """Whether ``path`` names a compressed file (DuckDB's readers decompress .gz and .zst themselves)."""
    return path.suffix.lower() in (".gz", ".zst")


def json_lines_sql(path: Path) -> str:
    """The non-blank lines of a JSON-lines file: ``__row`` (its line number, 1-based) and ``line``.

    The file is split on LF and a trailing CR is dropped, so a blank line or a CRLF ending still
    counts as one line. ``read_text`` does not decompress: see ``numbered_sql`` for .gz and .zst.
    """
    blank = "' ' || chr(9) || chr(13)"
    return f"""(SELECT __row, line FROM (
                   SELECT generate_subscripts(lines, 1) AS __row, rtrim(unnest(lines), chr(13)) AS line
                   FROM (SELECT string_split(content, chr(10)) AS lines FROM read_text({sql_str(str(path))})))
               WHERE trim(line, {blank}) <> '')"""


def numbered_sql(path: Path, fmt: str, columns: list[tuple[str, str]]) -> str:
    """A SELECT over ``path`` that adds ``__row``, where each row is in the file, to its columns.

    ``__row`` (the quarantine's ``row_number``) is what a user opens an editor at: for a text file the
    line number, counting the CSV header as line 1 (a quoted CSV field that spans lines shifts the lines
    after it: DuckDB's reader numbers records, not lines), and for Parquet the 1-based row.

    Parquet files are numbered by the reader itself (``file_row_number``), which keeps the scan
    parallel; a CSV file has no such column, so it is numbered with ``row_number() OVER ()``. A
    JSON-lines file is split into lines here (``json_lines_sql``) and each line that is a JSON object
    becomes a row, its values as text (nested ones as JSON); the other lines are left to the loader,
    which quarantines them. A compressed JSON-lines file is read whole by DuckDB's reader instead: a
    bad line fails the file, and rows are counted, not lines.
    """
    if fmt == "parquet" and "file_row_number" not in {c.lower() for c, _ in columns}:
        p = sql_str(str(path))
        return (f"SELECT file_row_number + 1 AS __row, * EXCLUDE (file_row_number) "
                f"FROM read_parquet({p}, file_row_number=true)")
    if fmt == "jsonl" and not compressed(path):
        shape = json.dumps(dict(columns))  # the types of _json_lines_columns: VARCHAR or JSON
        return f"""SELECT __row, unnest(json_transform(j, {sql_str(shape)})) FROM (
                       SELECT __row, TRY_CAST(line AS JSON) AS j FROM {json_lines_sql(path)})
                   WHERE json_type(j) = 'OBJECT'"""
    if fmt == "jsonl":
        return f"SELECT row_number() OVER () AS __row, * FROM read_json({sql_str(str(path))}, format='newline_delimited')"
    # the header is line 1
    return f"SELECT row_number() OVER () + 1 AS __row, * FROM {reader_sql(path, fmt)}"


def describe(con: duckdb.DuckDBPyConnection, path: Path, fmt: str) -> list[tuple[str, str]]:
    """The (column name, DuckDB type) pairs of the file, or a clear InputError when unreadable."""
    if path.is_dir():
        raise InputError(f"{path} is a directory; give the files in it one by one (or a shell glob)")
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty")
    try:
        if fmt == "jsonl" and not compressed(path):
            return _json_lines_columns(con, path)
        rows = con.execute(f"DESCRIBE SELECT * FROM {reader_sql(path, fmt)}").fetchall()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"cannot read {path.name} as {fmt}: {first}") from exc
    return [(r[0], r[1]) for r in rows]


JSON_SAMPLE = 20_480  # lines whose keys name a JSON-lines file's columns (read_json samples as many)


def _json_lines_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[tuple[str, str]]:
    """The keys of the first JSON_SAMPLE object lines, each VARCHAR (a scalar) or JSON (an object or array)."""
    found = con.execute(f"""
        SELECT json_group_structure(j) FROM (
            SELECT TRY_CAST(line AS JSON) AS j FROM {json_lines_sql(path)} ORDER BY __row LIMIT {JSON_SAMPLE})
        WHERE json_type(j) = 'OBJECT'""").fetchone()[0]
    shape = json.loads(found) if found else {}
    return [(k, "VARCHAR" if isinstance(t, str) and t != "JSON" else "JSON") for k, t in shape.items()]
