"""DuckDB reader expressions for the input formats Pushwise ingests (CSV, Parquet, JSON lines)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from engine.errors import InputError

__all__ = ["REJECTS", "FORMATS", "detect_format", "describe", "numbered_sql", "quote_ident", "reader_sql", "sql_str"]

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
    return f"read_json({p}, format='newline_delimited', ignore_errors=false)"


def numbered_sql(path: Path, fmt: str, columns: list[tuple[str, str]]) -> str:
    """A SELECT over ``path`` that adds ``__row``, the 1-based row number in the file, to its columns.

    Parquet files are numbered by the reader itself (``file_row_number``), which keeps the scan
    parallel; a text file has no such column, so it is numbered with ``row_number() OVER ()``.
    """
    if fmt == "parquet" and "file_row_number" not in {c.lower() for c, _ in columns}:
        p = sql_str(str(path))
        return (f"SELECT file_row_number + 1 AS __row, * EXCLUDE (file_row_number) "
                f"FROM read_parquet({p}, file_row_number=true)")
    return f"SELECT row_number() OVER () AS __row, * FROM {reader_sql(path, fmt)}"


def describe(con: duckdb.DuckDBPyConnection, path: Path, fmt: str) -> list[tuple[str, str]]:
    """The (column name, DuckDB type) pairs of the file, or a clear InputError when unreadable."""
    if path.is_dir():
        raise InputError(f"{path} is a directory; give the files in it one by one (or a shell glob)")
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty")
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {reader_sql(path, fmt)}").fetchall()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"cannot read {path.name} as {fmt}: {first}") from exc
    return [(r[0], r[1]) for r in rows]
