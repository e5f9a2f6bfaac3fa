"""Backups refused when a manifest was edited to hide a missing table or mix files of two backups; odd paths work."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat

import pytest

from engine.backup import BackupError, restore_backup, sign_manifest, write_backup
from engine.service.operations import erase_user
from engine.store import Store
from tests.backup.test_backup import K1, NOW, as_version_1


def _edit(folder, change) -> None:
    # signed again, as by someone holding the data key: an unsigned edit is refused by the signature
    # (test_manifest_signature.py); these are the checks behind it, kept as defence in depth
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(sign_manifest(data, K1)))


def test_a_table_dropped_from_the_manifest_is_refused_as_partial(filled, tmp_path):
    # the checksums only cover the tables the manifest lists: a table dropped from it restored as empty
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    (m.path / m.data["tables"]["devices"]["file"]).unlink()
    _edit(m.path, lambda d: d["tables"].pop("devices"))
    with pytest.raises(BackupError, match="partial backup: no file for table devices"):
        restore_backup(tmp_path / "target.duckdb", m.path, K1)
    assert not (tmp_path / "target.duckdb").exists()


def test_a_file_swapped_in_from_another_backup_is_refused(filled, tmp_path):
    # the same table of an older backup decrypts fine (same key, same label): its row count gives it away
    first = write_backup(filled, tmp_path / "bk", K1, NOW)
    erase_user(filled, "u0", key=b"k", now=NOW)
    second = write_backup(filled, tmp_path / "bk2", K1, NOW)
    name = first.data["tables"]["devices"]["file"]
    shutil.copyfile(second.path / name, first.path / name)
    digest = hashlib.sha256((first.path / name).read_bytes()).hexdigest()
    _edit(first.path, lambda d: d["tables"]["devices"].update(sha256=digest))
    with pytest.raises(BackupError, match="devices holds 1 rows where the manifest says 2"):
        restore_backup(tmp_path / "target.duckdb", first.path, K1)
    assert not (tmp_path / "target.duckdb").exists()


def test_backup_and_restore_work_in_folders_with_quotes_in_their_names(filled, tmp_path):
    root = tmp_path / "it's here"
    m = write_backup(filled, root, K1, NOW)
    target = tmp_path / "o'brien" / "restored.duckdb"
    target.parent.mkdir()
    restore_backup(target, m.path, K1)
    with Store(target) as back:
        assert back.count("devices") == 2


def test_an_unencrypted_version_1_backup_needs_force(filled, tmp_path):
    # anyone who can write to the backup folder can make one (the install id is in every manifest, in
    # clear): restored without a question, it could plant an admin API key
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    as_version_1(m.path)
    target = tmp_path / "target.duckdb"
    restore_backup(target, write_backup(filled, tmp_path / "first", K1, NOW).path, K1)
    with pytest.raises(BackupError, match="unencrypted version 1 backup: its origin cannot be checked"):
        restore_backup(target, m.path, K1)
    restore_backup(target, m.path, K1, force=True)


def test_a_backup_folder_is_readable_by_its_owner_only(filled, tmp_path):
    # the manifest names the install, its tables and row counts, and the data keys' fingerprints
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    assert stat.S_IMODE(m.path.stat().st_mode) == 0o700
