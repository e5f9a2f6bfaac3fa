"""The DuckDB store: the one place that opens connections, applies migrations and publishes snapshots.

DuckDB lets one process write a database file. The process that owns the file (the CLI stage, the
demo, ``pushwise serve``) opens it read-write; readers in other processes (the dashboard, notebooks)
use :func:`open_reader`, which reads the file directly when nobody holds the write lock and otherwise
falls back to the last snapshot the writer published with :meth:`Store.publish_snapshot`.
See docs/decisions/001-duckdb-single-writer.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import duckdb

from engine.errors import StoreBusyError, StoreError

__all__ = ["Store", "open_reader", "snapshot_path"]

MEMORY = ":memory:"


def snapshot_path(db_path: str | Path) -> Path:
    """Where the writer publishes the read-only snapshot of ``db_path``."""
    p = Path(db_path)
    return p.with_name(p.stem + ".snapshot" + p.suffix)


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
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
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
