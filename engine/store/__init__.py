"""The DuckDB store: the one place that opens connections, applies migrations and publishes snapshots.

DuckDB lets one process write a database file. The process that owns the file (the CLI stage, the
demo, ``pushwise serve``) opens it read-write; readers in other processes (the dashboard, notebooks)
use :func:`open_reader`, which reads the file directly when nobody holds the write lock and otherwise
falls back to the last snapshot the writer published with :meth:`Store.publish_snapshot`.
See docs/decisions/001-duckdb-single-writer.md.

The database, its WAL and the snapshot hold personal data, so they are owner-only (0600) whatever the
umask: DuckDB creates its files (the WAL again after every checkpoint) with the process umask, so a
process that opens a database file clears the group and other bits of its umask, as PostgreSQL's server
does at start-up (docs/decisions/015-service-hardening.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import duckdb

from engine.errors import InputError, StoreBusyError, StoreError

__all__ = ["Store", "open_reader", "snapshot_path"]

MEMORY = ":memory:"


def snapshot_path(db_path: str | Path) -> Path:
    """Where the writer publishes the read-only snapshot of ``db_path``."""
    p = Path(db_path)
    return p.with_name(p.stem + ".snapshot" + p.suffix)


OWNER_ONLY = 0o600


def _owner_only(path: str) -> None:
    """Make this process create files owner-only from now on, and tighten ``path`` and its WAL if they exist."""
    os.umask(os.umask(0o077) | 0o077)
    for f in (Path(path), Path(path + ".wal")):
        # a file of another owner cannot be changed (PermissionError); its owner decides
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if f.stat().st_mode & 0o077:
                os.chmod(f, OWNER_ONLY)


#: Suffixes of the files Pushwise ingests. DuckDB opens an existing CSV, Parquet or JSON file given as a
#: database as an in-memory database with a view over it, so writes to it would be silently lost.
DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".json", ".jsonl", ".ndjson")
DUCKDB_MAGIC = b"DUCK"  # at byte 8 of every DuckDB database file


def _refuse_non_database(path: str) -> None:
    """Raise InputError unless ``path`` can be a DuckDB database file (a new one, or an existing one).

    Raises:
        InputError: the path names a data file (by suffix, ``.gz`` looked through) or an existing
            file that is not a DuckDB database.
    """
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() not in (".gz", ".zst")]
    if suffixes and suffixes[-1] in DATA_SUFFIXES:
        raise InputError(f"{path} is not a DuckDB database path: {suffixes[-1]} is a data file suffix; "
                         "give a .duckdb path")
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError), open(path, "rb") as fh:
        head = fh.read(12)
        if head and head[8:12] != DUCKDB_MAGIC:
            raise InputError(f"{path} is not a DuckDB database file")


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreBusyError(
                f"{path} is locked by another Pushwise process (DuckDB allows one writer); "
                "stop it or point --db at another file"
            ) from exc
        raise StoreError(f"cannot open {path}: {exc}") from exc
    except duckdb.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    con.execute("SET TimeZone = 'UTC'")
    return con


class Store:
    """A read-write handle on one DuckDB database (a file or ``:memory:``).

    Args:
        path: database file, created with its parent folder if missing; ``":memory:"`` for tests.
    """

    def __init__(self, path: str | Path = MEMORY) -> None:
        self.path = str(path)
        if self.path != MEMORY:
            _refuse_non_database(self.path)
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            _owner_only(self.path)
        self.con = _connect(self.path, read_only=False)
        self.migrate()

    def migrate(self) -> None:
        """Apply the numbered SQL migrations in order; each runs once."""
        self.con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY)")
        done = {r[0] for r in self.con.execute("SELECT name FROM schema_migrations").fetchall()}
        folder = resources.files("engine.store") / "migrations"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".sql") or entry.name in done:
                continue
            with self.transaction():
                self.con.execute(entry.read_text(encoding="utf-8"))
                self.con.execute("INSERT INTO schema_migrations VALUES (?)", [entry.name])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block atomically; DuckDB errors become :class:`StoreError`."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except duckdb.Error as exc:
            self.con.execute("ROLLBACK")
            raise StoreError(str(exc)) from exc
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def execute(self, sql: str, params: list | dict | None = None) -> duckdb.DuckDBPyConnection:
        try:
            return self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from exc

    def df(self, sql: str, params: list | dict | None = None):
        """Run a query and return a pandas DataFrame."""
        return self.execute(sql, params).df()

    def scalar(self, sql: str, params: list | dict | None = None):
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def count(self, table: str) -> int:
        return int(self.scalar(f"SELECT count(*) FROM {table}"))

    def publish_snapshot(self) -> Path | None:
        """Copy the database to its snapshot file atomically, for readers in other processes.

        Readers that opened the previous snapshot keep their (unlinked) copy; new readers get the
        new one. Returns the snapshot path, or None for an in-memory store.
        """
        if self.path == MEMORY:
            return None
        target = snapshot_path(self.path)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        for leftover in (tmp, Path(str(tmp) + ".wal")):
            leftover.unlink(missing_ok=True)
        _owner_only(str(tmp))
        try:
            self.con.execute(f"ATTACH '{tmp}' AS pw_snapshot")
            try:
                current = self.con.execute("SELECT current_database()").fetchone()[0]
                self.con.execute(f'COPY FROM DATABASE "{current}" TO pw_snapshot')
            finally:
                self.con.execute("DETACH pw_snapshot")
        except duckdb.Error as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"snapshot failed: {exc}") from exc
        os.chmod(tmp, OWNER_ONLY)
        os.replace(tmp, target)
        return target

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reader(db_path: str | Path) -> tuple[duckdb.DuckDBPyConnection, str]:
    """Open ``db_path`` for reading from another process.

    Returns:
        (connection, origin) where origin is ``"live"`` when the file itself was opened read-only and
        ``"snapshot"`` when a writer holds the lock and the last published snapshot was opened.

    Raises:
        StoreError: neither the database nor a snapshot can be opened.
    """
    path = Path(db_path)
    _refuse_non_database(str(path))
    if path.exists():
        try:
            return _connect(str(path), read_only=True), "live"
        except StoreBusyError:
            pass
        except StoreError:
            pass
    snap = snapshot_path(path)
    if snap.exists():
        return _connect(str(snap), read_only=True), "snapshot"
    raise StoreError(f"no readable database at {path} (and no snapshot at {snap}); run `pushwise demo` first")
