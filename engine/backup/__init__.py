"""Backups: a consistent Parquet snapshot of every table with a SHA-256 manifest; verified restore; rotation.

    <root>/pushwise-backup-20260131T020000Z/
        manifest.json        format, install id, migrations, data-key fingerprints, per table: file, rows, sha256
        events.parquet.sealed …  one Parquet file per table, written inside one read transaction (a consistent
                             snapshot), then sealed whole with AES-256-GCM under the current data key (sealed.py)

A backup is written to a hidden temporary folder and renamed into place when complete, so a folder
without a manifest is never a finished backup. :func:`restore_backup` checks everything before it touches
the database. Every file is encrypted (a backup holds personal data, not only the tokens and vendor
credentials that are encrypted in their columns); restoring needs the same data keys. Version 1 backups
(plain Parquet) still restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine.backup.sealed import SealError, open_sealed, seal_file
from engine.errors import InputError
from engine.security.crypto import Keyring
from engine.store import Store

__all__ = ["FORMAT", "BackupError", "Manifest", "list_backups", "restore_backup", "verify_backup", "write_backup"]

FORMAT = "pushwise-backup"
VERSION = 2
READABLE = (1, 2)   # 1: plain Parquet files; 2: sealed files
PREFIX = "pushwise-backup-"


class BackupError(InputError):
    """A backup is corrupted, partial, foreign or otherwise unusable; the message says which."""


@dataclass(frozen=True)
class Manifest:
    path: Path
    data: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def row_counts(self) -> dict[str, int]:
        return {t: int(v["rows"]) for t, v in self.data["tables"].items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sql_path(path: Path) -> str:
    """A file path as a SQL string literal (COPY and read_parquet take no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def _tables(store: Store) -> list[str]:
    return [r[0] for r in store.execute(
        """SELECT table_name FROM information_schema.tables
           WHERE table_schema = 'main' AND table_type = 'BASE TABLE' AND table_catalog = current_database()
           ORDER BY table_name""").fetchall()]


def _used_key_ids(store: Store, keyring: Keyring) -> set[str]:
    rows = store.execute("""SELECT DISTINCT split_part(token, ':', 2) FROM devices WHERE token LIKE 'pw1:%'
                            UNION SELECT DISTINCT split_part(signing_secret, ':', 2) FROM api_keys
                            UNION SELECT DISTINCT split_part(ciphertext, ':', 2) FROM vendor_secrets""").fetchall()
    return {r[0] for r in rows}


SCHEME = "aes-256-gcm, 1 MiB chunks (engine/backup/sealed.py)"


def _label(table: str) -> str:
    return f"pushwise-backup:{table}"


@contextlib.contextmanager
def _readable(path: Path, scratch: Path, keyring: Keyring, table: str) -> Iterator[Path]:
    """A plain Parquet file of ``path``: itself (version 1), or decrypted beside the new database, then removed."""
    if not path.name.endswith(".sealed"):
        yield path
        return
    fd, name = tempfile.mkstemp(prefix=f".restore-{table}-", suffix=".parquet", dir=scratch)
    os.close(fd)
    plain = Path(name)
    try:
        try:
            open_sealed(path, plain, keyring, _label(table))
        except SealError as exc:
            raise BackupError(f"corrupted backup: {exc}") from None
        yield plain
    finally:
        plain.unlink(missing_ok=True)


def list_backups(root: Path) -> list[Path]:
    """Finished backups under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and (p / "manifest.json").is_file())


def write_backup(store: Store, root: Path, keyring: Keyring, now: datetime, keep: int = 0) -> Manifest:
    """Write a consistent backup of ``store`` under ``root``; keep only the newest ``keep`` (0 = all).

    Returns the manifest. The snapshot is taken in one transaction, so writes that land while it runs
    are either wholly in it or wholly absent.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = PREFIX + now.strftime("%Y%m%dT%H%M%S%fZ")
    tmp = root / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)   # the manifest names tables, row counts and key fingerprints
    tables: dict[str, dict] = {}
    with store.transaction() as con:
        for table in _tables(store):
            plain = tmp / f"{table}.parquet"
            con.execute(f"COPY (SELECT * FROM \"{table}\") TO {_sql_path(plain)} (FORMAT parquet, COMPRESSION zstd)")
            target = tmp / f"{table}.parquet.sealed"
            kid = seal_file(plain, target, keyring, _label(table))
            plain.unlink()
            tables[table] = {"file": target.name, "key_id": kid,
                             "rows": int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])}
        install = con.execute("SELECT value FROM service_meta WHERE name = 'install_id'").fetchall()
        migrations = [r[0] for r in con.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()]
        used = _used_key_ids(store, keyring) | {keyring.current_id}
    for meta in tables.values():
        meta["sha256"] = _sha256(tmp / meta["file"])
    fps = keyring.fingerprints()
    data = {"format": FORMAT, "version": VERSION, "created_at": now.isoformat(), "encryption": SCHEME,
            "install_id": install[0][0] if install else None, "migrations": migrations,
            "data_keys": {k: fps.get(k, "unknown") for k in sorted(used)}, "tables": tables}
    (tmp / "manifest.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    final = root / name
    os.replace(tmp, final)
    if keep > 0:
        for old in list_backups(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return Manifest(final, data)


def verify_backup(folder: Path, keyring: Keyring) -> Manifest:
    """Check a backup completely: format, every file present with its checksum, migrations and data keys.

    Raises:
        BackupError: the first problem found, in words.
    """
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not folder.is_dir():
        raise BackupError(f"no backup folder at {folder}")
    if not mpath.is_file():
        raise BackupError(f"{folder} has no manifest.json: a partial backup, or not a Pushwise backup")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BackupError(f"{mpath} is not valid JSON: the manifest is corrupted") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("tables"), dict):
        raise BackupError(f"{folder} is not a Pushwise backup (manifest format is not {FORMAT!r})")
    if data.get("version") not in READABLE:
        raise BackupError(f"backup format version {data.get('version')!r} is not supported "
                          f"(this Pushwise reads {', '.join(map(str, READABLE))})")
    from importlib import resources

    known = {e.name for e in (resources.files("engine.store") / "migrations").iterdir() if e.name.endswith(".sql")}
    newer = sorted(set(data.get("migrations", [])) - known)
    if newer:
        raise BackupError(f"backup was made by a newer Pushwise (unknown migrations: {', '.join(newer)})")
    for table, meta in sorted(data["tables"].items()):
        f = folder / str(meta.get("file", ""))
        if not f.is_file():
            raise BackupError(f"partial backup: {f.name or table} is missing")
        if _sha256(f) != meta.get("sha256"):
            raise BackupError(f"corrupted backup: checksum of {f.name} does not match the manifest")
    fps = keyring.fingerprints()
    foreign = {k: fp for k, fp in data.get("data_keys", {}).items() if fps.get(k) != fp}
    if foreign:
        raise BackupError("foreign backup: its secrets are encrypted under data keys this install does not hold "
                          f"({', '.join(sorted(foreign))}); restore with the original key file or PUSHWISE_DATA_KEYS")
    return Manifest(folder, data)


def restore_backup(db_path: str | Path, folder: Path, keyring: Keyring, *, force: bool = False) -> Manifest:
    """Verify ``folder``, then replace the database at ``db_path`` with its contents.

    The new database is built beside the old one and swapped in atomically; the old file is kept as
    ``<name>.before-restore``. Refuses a database of another install, or an unencrypted version 1
    backup, unless ``force``.

    Raises:
        BackupError: the backup fails verification or belongs to another install.
        StoreBusyError: the database is open in another process (stop ``pushwise serve`` first).
    """
    manifest = verify_backup(folder, keyring)
    if manifest.data.get("version") == 1 and not force:
        # nothing in it needs our data key, and its install id is in every manifest in clear: anyone who
        # can write to the backup folder can make one (with an admin key of their own in api_keys)
        raise BackupError(f"{folder.name} is an unencrypted version 1 backup: its origin cannot be checked; "
                          "pass --force if you know where it came from")
    db = Path(db_path)
    if db.exists():
        with Store(db) as current:
            found = current.execute("SELECT value FROM service_meta WHERE name = 'install_id'").fetchall()
        install = found[0][0] if found else None
        if install != manifest.data.get("install_id") and not force:
            raise BackupError(f"{folder.name} belongs to another install than {db}; pass --force to replace it")
    tmp = db.with_name(db.name + ".restoring")
    for p in (tmp, Path(str(tmp) + ".wal")):
        p.unlink(missing_ok=True)
    try:
        _fill_from(tmp, folder, manifest, keyring)
    except BaseException:
        for p in (tmp, Path(str(tmp) + ".wal")):
            p.unlink(missing_ok=True)
        raise
    if db.exists():
        os.replace(db, db.with_name(db.name + ".before-restore"))
    Path(str(db) + ".wal").unlink(missing_ok=True)
    os.replace(tmp, db)
    return manifest


def _fill_from(tmp: Path, folder: Path, manifest: Manifest, keyring: Keyring) -> None:
    """Load every table of the backup into a new database at ``tmp``, checking it is whole.

    The manifest is not signed: a table dropped from it, or a file swapped in from another backup of
    the same install (same key, same table), passes the checksums. So a backup made at this schema
    must list every table, and each table must hold the rows the manifest counted.
    """
    tables = manifest.data["tables"]
    with Store(tmp) as store, store.transaction() as con:
        present = set(_tables(store))
        current = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
        unlisted = sorted(present - set(tables))
        if unlisted and set(manifest.data.get("migrations", [])) >= current:
            raise BackupError(f"partial backup: no file for table {unlisted[0]} in the manifest")
        for table, meta in tables.items():
            if table not in present:
                raise BackupError(f"backup table {table} does not exist in this version's schema")
            con.execute(f'DELETE FROM "{table}"')
            with _readable(folder / meta["file"], tmp.parent, keyring, table) as parquet:
                con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM read_parquet({_sql_path(parquet)})')
            rows = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
            if "rows" in meta and rows != int(meta["rows"]):
                raise BackupError(f"corrupted backup: {table} holds {rows} rows where the manifest says "
                                  f"{int(meta['rows'])} (a file from another backup?)")
        # the running service's own short-lived key was in the snapshot; its secret died with that process
        con.execute("UPDATE api_keys SET revoked_at = now() WHERE label = 'service-local' AND revoked_at IS NULL")
