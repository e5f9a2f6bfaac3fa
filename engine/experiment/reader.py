"""Count units and binary outcomes per arm in a CSV or Parquet file, through an in-memory DuckDB.

Validation happens here, at the edge, with exact messages: missing file or columns, an unknown
control value, outcomes that are not 0/1.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from engine.errors import InputError

__all__ = ["FORMATS", "experiment_counts"]

#: File suffix → DuckDB reader.
FORMATS: dict[str, str] = {".csv": "read_csv_auto", ".parquet": "read_parquet", ".pq": "read_parquet"}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _relation(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    reader = FORMATS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    # Views cannot take prepared parameters; the path is quoted as a SQL string literal instead.
    literal = "'" + str(path).replace("'", "''") + "'"
    con.execute(f"CREATE VIEW experiment AS SELECT * FROM {reader}({literal})")
    return "experiment"


def _columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("DESCRIBE experiment").fetchall()]


def experiment_counts(path: str | Path, assignment: str, control: str, outcomes: list[str]) -> pd.DataFrame:
    """Units and successes per arm and outcome.

    Args:
        path: a ``.csv`` or ``.parquet`` file, one row per randomised unit.
        assignment: column naming each unit's arm (compared as text).
        control: the control arm's value in ``assignment``.
        outcomes: binary outcome columns (0/1 or true/false; missing values are rejected).

    Returns:
        DataFrame[arm (str), outcome (str), users (int), successes (int)], arms in name order,
        outcomes in the order given.

    Raises:
        InputError: unreadable file, missing column, unknown control value, non-binary outcome.
    """
    path = Path(path)
    if not outcomes:
        raise InputError("give at least one --outcome column")
    con = duckdb.connect()
    try:
        try:
            _relation(con, path)
            columns = _columns(con)
        except duckdb.Error as exc:
            raise InputError(f"{path}: cannot read: {exc}") from exc
        missing = [c for c in [assignment, *outcomes] if c not in columns]
        if missing:
            raise InputError(f"{path}: no column {', '.join(map(repr, missing))}; "
                             f"columns are: {', '.join(columns)}")
        arm = f"CAST({_quote(assignment)} AS VARCHAR)"
        arms = [r[0] for r in con.execute(f"SELECT DISTINCT {arm} FROM experiment ORDER BY 1").fetchall()]
        if None in arms:
            raise InputError(f"{path}: column {assignment!r} has missing values")
        if control not in arms:
            raise InputError(f"{path}: control value {control!r} not found in column {assignment!r}; "
                             f"values are: {', '.join(arms)}")
        frames = [_outcome_counts(con, path, arm, outcome) for outcome in outcomes]
    finally:
        con.close()
    return pd.concat(frames, ignore_index=True)


def _outcome_counts(con: duckdb.DuckDBPyConnection, path: Path, arm: str, outcome: str) -> pd.DataFrame:
    col = _quote(outcome)
    bad = con.execute(f"""
        SELECT CAST({col} AS VARCHAR) AS v, count(*) FROM experiment
        WHERE {col} IS NULL OR CAST({col} AS VARCHAR) NOT IN ('0', '1', 'true', 'false', '0.0', '1.0')
        GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3""").fetchall()
    if bad:
        shown = ", ".join("missing" if v is None else repr(v) for v, _ in bad)
        raise InputError(f"{path}: outcome {outcome!r} is not binary (0/1); found values such as {shown}")
    frame = con.execute(f"""
        SELECT {arm} AS arm, count(*) AS users,
               count(*) FILTER (WHERE CAST({col} AS VARCHAR) IN ('1', 'true', '1.0')) AS successes
        FROM experiment GROUP BY 1 ORDER BY 1""").df()
    frame.insert(1, "outcome", outcome)
    return frame.astype({"users": "int64", "successes": "int64"})
