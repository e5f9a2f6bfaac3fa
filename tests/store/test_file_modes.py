"""Files that hold personal data are owner-only (0600) whatever the umask: the database, its WAL, the snapshot."""

from __future__ import annotations

import os
import stat

import pytest

from engine.store import Store, snapshot_path


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)          # the common default: new files 0644, readable by every local user
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_database_its_wal_and_the_snapshot_are_created_owner_only(tmp_path, loose_umask):
    db = tmp_path / "p.duckdb"
    with Store(db) as store:
        store.execute("CREATE TABLE t (user_id VARCHAR)")
        store.execute("INSERT INTO t VALUES ('u1')")
        wal = tmp_path / "p.duckdb.wal"
        assert wal.exists()            # the write above is in the WAL until a checkpoint
        assert (_mode(db), _mode(wal)) == (0o600, 0o600)
        store.execute("CHECKPOINT")
        store.execute("INSERT INTO t VALUES ('u2')")     # a WAL made again after a checkpoint
        assert _mode(wal) == 0o600
        snap = store.publish_snapshot()
    assert snap == snapshot_path(db) and _mode(snap) == 0o600
    assert _mode(db) == 0o600


def test_a_database_left_readable_by_others_is_made_owner_only_when_opened(tmp_path, loose_umask):
    db = tmp_path / "old.duckdb"
    Store(db).close()
    os.chmod(db, 0o644)
    with Store(db):
        assert _mode(db) == 0o600
