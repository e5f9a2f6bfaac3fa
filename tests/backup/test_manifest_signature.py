"""The backup manifest is signed (HMAC-SHA256 under a key derived from the data key): an edited, unsigned or
foreign-signed manifest is refused, and "the newest backup" of a folder is chosen by its signed creation time."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from engine.backup import BackupError, newest_backup, restore_backup, verify_backup, write_backup
from engine.cli import main
from engine.security import Keyring
from engine.store import Store
from tests.backup.test_backup import K1, NOW


def _edit(folder, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_new_backup_carries_a_signature_that_verifies(filled, tmp_path):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    sig = json.loads((m.path / "manifest.json").read_text())["signature"]
    assert sig["algorithm"] == "hmac-sha256, key = hkdf-sha256(data key)" and sig["key_id"] == "k1"
    assert len(sig["value"]) == 64
    assert m.data["version"] == 3
    assert verify_backup(m.path, K1).row_counts == m.row_counts


@pytest.mark.parametrize("change", [
    lambda d: d["tables"]["devices"].update(rows=1),       # hide rows: a file of an older backup swapped in
    lambda d: d["tables"].pop("events"),                   # hide a table
    lambda d: d.update(created_at="2099-01-01T00:00:00+00:00"),   # pretend to be the newest
    lambda d: d.update(install_id="someone-else"),
])
def test_an_edited_manifest_is_refused_even_with_force(filled, tmp_path, change):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    _edit(m.path, change)
    target = tmp_path / "t.duckdb"
    with pytest.raises(BackupError, match="forged or altered backup: the manifest's signature does not match"):
        restore_backup(target, m.path, K1, force=True)
    assert not target.exists()


def test_a_manifest_signed_under_a_key_we_do_not_hold_is_refused(filled, tmp_path):
    other = Keyring((("k7", bytes(range(5, 37))),))
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    _edit(m.path, lambda d: d["signature"].update(key_id="k7"))
    with pytest.raises(BackupError, match="signed under data key 'k7', which this install does not hold"):
        verify_backup(m.path, K1)
    with pytest.raises(BackupError, match="signature does not match"):
        verify_backup(m.path, Keyring(K1.keys + other.keys))


def test_an_unsigned_manifest_is_refused_and_a_format_2_backup_needs_force(filled, tmp_path):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    _edit(m.path, lambda d: d.pop("signature"))
    target = tmp_path / "t.duckdb"
    with pytest.raises(BackupError, match="unsigned manifest"):
        restore_backup(target, m.path, K1, force=True)       # a format-3 manifest is always signed
    _edit(m.path, lambda d: d.update(version=2))              # as written before manifests were signed
    with pytest.raises(BackupError, match="format 2 backup has an unsigned manifest: .* pass --force"):
        restore_backup(target, m.path, K1)
    assert not target.exists()
    restore_backup(target, m.path, K1, force=True)
    with Store(target) as back:
        assert back.count("devices") == 2


def test_the_newest_backup_is_chosen_by_its_signed_creation_time_not_its_folder_name(filled, tmp_path):
    root = tmp_path / "bk"
    old = write_backup(filled, root, K1, NOW)
    new = write_backup(filled, root, K1, NOW + timedelta(days=1))
    # an old backup renamed to sort last, and a forged one claiming a later date
    os.rename(old.path, root / "pushwise-backup-29990101T000000000000Z")
    forged = write_backup(filled, root, K1, NOW - timedelta(days=3))
    _edit(forged.path, lambda d: d.update(created_at="2999-06-01T00:00:00+00:00"))
    assert newest_backup(root, K1) == new.path


def test_cli_restore_of_a_folder_restores_the_newest_signed_backup(filled, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PUSHWISE_DATA_KEYS", "k1:" + bytes(range(32)).hex())
    monkeypatch.setenv("PUSHWISE_PSEUDONYM_KEY", "p")
    root = tmp_path / "bk"
    old = write_backup(filled, root, K1, NOW)
    new = write_backup(filled, root, K1, NOW + timedelta(days=1))
    os.rename(old.path, root / "pushwise-backup-29990101T000000000000Z")
    assert main(["--db", str(tmp_path / "t.duckdb"), "restore", str(root)]) == 0
    assert f"restored {new.path.name} into" in capsys.readouterr().out
