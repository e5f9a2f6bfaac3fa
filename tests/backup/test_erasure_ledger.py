"""Erasure survives a restore: `erase` records a keyed hash of the user in a ledger, and `restore` keeps the
current ledger and erases those users again from the restored data."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest

from engine.backup import restore_backup, write_backup
from engine.cli import main
from engine.service.operations import erase_user, register_device, set_consent
from engine.store import Store
from tests.backup.test_backup import K1, NOW, _fill

PKEY = b"pseudonym-key-for-tests"
PERSONAL = ("events", "devices", "decisions", "sends", "consents", "users")


def _rows_of(store: Store, user: str) -> dict[str, int]:
    return {t: int(store.scalar(f"SELECT count(*) FROM {t} WHERE user_id = ?", [user])) for t in PERSONAL}


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "live.duckdb"
    with Store(path) as store:
        _fill(store)
    return path


def test_erase_records_a_keyed_hash_never_the_raw_id(db):
    with Store(db) as store:
        erase_user(store, "u0", key=PKEY, now=NOW)
        ledger = store.execute("SELECT user_hash, erased_at FROM erasure_ledger").fetchall()
        dump = str(store.execute("SELECT * FROM erasure_ledger").fetchall())
    assert ledger == [(hmac.new(PKEY, b"u0", hashlib.sha256).hexdigest(), NOW)]
    assert "u0" not in dump


def test_restoring_a_backup_taken_before_an_erasure_erases_the_user_again(db, tmp_path):
    with Store(db) as store:
        old = write_backup(store, tmp_path / "bk", K1, NOW)
        assert _rows_of(store, "u0")["events"] == 1
        erase_user(store, "u0", key=PKEY, now=NOW + timedelta(hours=1))
    done = restore_backup(db, old.path, K1, pseudonym_key=PKEY)
    assert done.re_erased == 1
    with Store(db) as back:
        assert _rows_of(back, "u0") == dict.fromkeys(PERSONAL, 0)
        assert _rows_of(back, "u1")["events"] == 2 and _rows_of(back, "u1")["devices"] == 1
        assert back.count("erasure_ledger") == 1       # the current ledger was kept, not the backup's (empty) one
    # a second restore of the same backup still finds the ledger and erases again
    assert restore_backup(db, old.path, K1, pseudonym_key=PKEY).re_erased == 1


def test_a_user_who_came_back_after_the_erasure_is_kept_by_a_later_backup(db, tmp_path):
    with Store(db) as store:
        erase_user(store, "u0", key=PKEY, now=NOW)
        later = NOW + timedelta(days=1)
        register_device(store, K1, user_id="u0", vendor="apns", token="b" * 64, now=later)
        set_consent(store, user_id="u0", channel="push", message_class="marketing", granted=True, now=later)
        newer = write_backup(store, tmp_path / "bk", K1, later + timedelta(hours=1))
    assert restore_backup(db, newer.path, K1, pseudonym_key=PKEY).re_erased == 0
    with Store(db) as back:
        assert _rows_of(back, "u0")["devices"] == 1


def test_cli_restore_says_how_many_users_it_erased_again(db, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PUSHWISE_DATA_KEYS", "k1:" + bytes(range(32)).hex())
    monkeypatch.setenv("PUSHWISE_PSEUDONYM_KEY", PKEY.decode())
    assert main(["--db", str(db), "backup", str(tmp_path / "bk")]) == 0
    assert main(["--db", str(db), "erase", "u1"]) == 0
    capsys.readouterr()
    assert main(["--db", str(db), "restore", str(tmp_path / "bk")]) == 0
    assert "re-erased 1 user recorded in the erasure ledger" in capsys.readouterr().out
    with Store(db) as back:
        assert _rows_of(back, "u1") == dict.fromkeys(PERSONAL, 0)
        assert _rows_of(back, "u0")["devices"] == 1
