"""Backups: every table round-trips equal; corrupted, partial, foreign and other-install backups are refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from engine.backup import (
    BackupError,
    list_backups,
    restore_backup,
    sign_manifest,
    verify_backup,
    write_backup,
)
from engine.backup.sealed import open_sealed
from engine.security import Keyring, create_key
from engine.security.vendor_secrets import get_secret, put_secret
from engine.service.operations import erase_user, record_events, register_device, set_consent
from engine.service.trigger import TriggerSpec, trigger_send
from engine.store import Store

K1 = Keyring((("k1", bytes(range(32))),))
NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def _fill(store: Store) -> None:
    for n, (vendor, token) in enumerate([("apns", "a" * 64), ("fcm", "f" * 40 + ":APA91b" + "x" * 60)]):
        register_device(store, K1, user_id=f"u{n}", vendor=vendor, token=token, now=NOW, time_zone="Europe/Paris")
        set_consent(store, user_id=f"u{n}", channel="push", message_class="marketing", granted=True, now=NOW)
    record_events(store, pd.DataFrame({
        "event_id": ["e1", None, None], "user_id": ["u0", "u1", "u1"], "item_id": ["mug", None, "cup"],
        "event_type": ["view", "app_open", "purchase"],
        "ts": pd.to_datetime(["2026-01-14T10:00Z", "2026-01-14T11:00Z", "2026-01-14T12:00Z"], utc=True),
        "properties": ['{"a": 1}', "{}", '{"quantity": 2, "unit_price": 3.5}']}), NOW)
    trigger_send(store, TriggerSpec(name="cart", title="{item}?", body="b", user_ids=("u0", "u1")), NOW)
    create_key(store, K1, ["send", "ingest"], NOW)
    put_secret(store, K1, "xiaomi", "app", "xiaomi-app-secret", NOW)


def _tables(store: Store) -> dict[str, pd.DataFrame]:
    names = [r[0] for r in store.execute("SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = 'main' ORDER BY 1").fetchall()]
    return {t: store.df(f"SELECT * FROM {t} ORDER BY ALL").astype(str) for t in names}


def test_round_trip_restores_every_table_equal(filled, tmp_path):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    assert m.row_counts["devices"] == 2 and m.row_counts["events"] == 3 and m.row_counts["sends"] == 2
    restored = tmp_path / "restored.duckdb"
    restore_backup(restored, m.path, K1)
    original = _tables(filled)
    with Store(restored) as back:
        copy = _tables(back)
    assert sorted(copy) == sorted(original)
    for table in original:
        pd.testing.assert_frame_equal(copy[table], original[table], obj=table)
    assert sum(len(f) for f in original.values()) >= 20
    with Store(restored) as back:
        assert get_secret(back, K1, "xiaomi", "app") == "xiaomi-app-secret"


def _corrupt(folder):
    f = folder / "events.parquet.sealed"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def _drop_file(folder):
    (folder / "devices.parquet.sealed").unlink()


def _drop_manifest(folder):
    (folder / "manifest.json").unlink()


def _not_ours(folder):
    (folder / "manifest.json").write_text(json.dumps({"format": "something-else", "tables": {}}))


def _garbled_manifest(folder):
    (folder / "manifest.json").write_text("{not json")


def _newer(folder):
    m = json.loads((folder / "manifest.json").read_text())
    m["migrations"].append("999_future.sql")
    (folder / "manifest.json").write_text(json.dumps(sign_manifest(m, K1)))   # as a newer Pushwise signs it


@pytest.mark.parametrize(("damage", "message"), [
    (_corrupt, "corrupted backup: checksum of events.parquet.sealed does not match"),
    (_drop_file, "partial backup: devices.parquet.sealed is missing"),
    (_drop_manifest, "has no manifest.json: a partial backup"),
    (_not_ours, "is not a Pushwise backup"),
    (_garbled_manifest, "the manifest is corrupted"),
    (_newer, "made by a newer Pushwise"),
])
def test_damaged_backups_are_refused_and_the_database_is_untouched(filled, tmp_path, damage, message):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    damage(m.path)
    target = tmp_path / "target.duckdb"
    with Store(target) as t:
        t.execute("CREATE TABLE marker (x INTEGER)")
    with pytest.raises(BackupError, match=message):
        restore_backup(target, m.path, K1, force=True)
    with Store(target) as t:
        assert t.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'marker'"
                         ).fetchall() == [(1,)]


def test_a_backup_encrypted_under_other_data_keys_is_refused_as_foreign(filled, tmp_path):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    other = Keyring((("k1", bytes(32)),))
    with pytest.raises(BackupError, match=r"foreign backup: .* data keys this install does not hold \(k1\)"):
        verify_backup(m.path, other)


def test_a_vendor_secret_under_a_newer_data_key_makes_that_key_required(filled, tmp_path):
    k2 = K1.with_new_key()
    put_secret(filled, k2, "apns", "p8", "-----BEGIN PRIVATE KEY-----", NOW)
    m = write_backup(filled, tmp_path / "bk", k2, NOW)
    assert sorted(m.data["data_keys"]) == ["k1", "k2"]
    with pytest.raises(BackupError, match=r"data keys this install does not hold \(k2\)"):
        verify_backup(m.path, K1)
    assert verify_backup(m.path, k2).row_counts["vendor_secrets"] == 2


def test_restoring_over_another_install_needs_force(filled, tmp_path):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    other = tmp_path / "other.duckdb"
    Store(other).close()
    with pytest.raises(BackupError, match="belongs to another install"):
        restore_backup(other, m.path, K1)
    restore_backup(other, m.path, K1, force=True)
    assert (tmp_path / "other.duckdb.before-restore").exists()


def test_after_erase_the_next_backup_no_longer_holds_the_user(filled, tmp_path):
    erase_user(filled, "u0", key=b"k", now=NOW)
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    for table in ("events", "devices", "decisions", "sends", "consents", "users"):
        plain = tmp_path / f"{table}.parquet"
        open_sealed(m.path / f"{table}.parquet.sealed", plain, K1, f"pushwise-backup:{table}")
        frame = pd.read_parquet(plain)
        assert "u0" not in set(frame["user_id"]), table
        assert len(frame) > 0, table           # u1 is still there
    texts = []                                               # nowhere in any decrypted table either
    for sealed in m.path.glob("*.sealed"):
        plain = tmp_path / "any.parquet"
        open_sealed(sealed, plain, K1, "pushwise-backup:" + sealed.name.removesuffix(".parquet.sealed"))
        frame = pd.read_parquet(plain)
        # every text cell (ids, JSON properties); raw Parquet bytes are compressed and hold random
        # ciphertext (sealed tokens), where two given bytes turn up by chance
        texts += [str(v) for col in frame.columns for v in frame[col].dropna()]
    assert any(t == "u1" for t in texts)
    assert not [t for t in texts if t == "u0" or '"u0"' in t], "u0 survives in a backup"


def test_rotation_keeps_the_newest_backups(filled, tmp_path):
    for day in range(4):
        write_backup(filled, tmp_path / "bk", K1, NOW + timedelta(days=day), keep=2)
    kept = list_backups(tmp_path / "bk")
    assert [p.name[-22:-14] for p in kept] == ["20260117", "20260118"]
    shutil.rmtree(kept[0])
    assert len(list_backups(tmp_path / "bk")) == 1


def test_backup_files_are_encrypted_whole(filled, tmp_path):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    files = sorted(p.name for p in m.path.iterdir())
    assert files == sorted([f"{t}.parquet.sealed" for t in m.data["tables"]] + ["manifest.json"])
    for f in m.path.glob("*.sealed"):
        raw = f.read_bytes()
        assert raw.startswith(b"PWSEAL1\n") and b"PAR1" not in raw
        assert b"purchase" not in raw and b"cart" not in raw    # event types and trigger names are personal context
    assert m.data["version"] == 3 and set(m.data["data_keys"]) == {"k1"}


def test_a_sealed_file_moved_to_another_table_is_refused(filled, tmp_path):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    users, events = m.path / "users.parquet.sealed", m.path / "events.parquet.sealed"
    events.write_bytes(users.read_bytes())                     # an attacker swaps files and fixes the manifest
    manifest = json.loads((m.path / "manifest.json").read_text())
    manifest["tables"]["events"]["sha256"] = manifest["tables"]["users"]["sha256"]
    # signed again as with the data key; unsigned, the signature refuses it first (test_manifest_signature.py)
    (m.path / "manifest.json").write_text(json.dumps(sign_manifest(manifest, K1)))
    target = tmp_path / "other.duckdb"
    with pytest.raises(BackupError, match="corrupted backup: events.parquet.sealed was altered"):
        restore_backup(target, m.path, K1)
    assert not target.exists()


def as_version_1(folder) -> None:
    """Rewrite the backup in ``folder`` as format 1 would have been: plain Parquet, unsigned manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for table, meta in manifest["tables"].items():
        plain = folder / f"{table}.parquet"
        open_sealed(folder / meta["file"], plain, K1, f"pushwise-backup:{table}")
        (folder / meta["file"]).unlink()
        meta.update(file=plain.name, sha256=hashlib.sha256(plain.read_bytes()).hexdigest())
        meta.pop("key_id")
    manifest["version"] = 1
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_version_1_backup_of_plain_parquet_still_restores(filled, tmp_path):
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    as_version_1(m.path)
    restored = tmp_path / "restored.duckdb"
    restore_backup(restored, m.path, K1, force=True)
    with Store(restored) as back:
        assert back.count("events") == filled.count("events") > 0


def test_a_table_outside_the_schema_is_left_out_and_named_so_the_backup_restores(filled, tmp_path, caplog):
    filled.execute("CREATE TABLE my_notes (note VARCHAR)")
    filled.execute("INSERT INTO my_notes VALUES ('not Pushwise data')")
    m = write_backup(filled, tmp_path / "bk", K1, NOW)
    assert "my_notes" not in m.data["tables"] and m.data["skipped_tables"] == ["my_notes"]
    assert "my_notes" in caplog.text
    restored = tmp_path / "restored.duckdb"
    restore_backup(restored, m.path, K1)                       # used to fail: "does not exist in this schema"
    with Store(restored) as back:
        assert back.count("events") == filled.count("events") > 0


def test_an_unwritable_backup_folder_is_one_clear_error(filled, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BackupError, match=r"cannot create the backup folder .*file/x"):
        write_backup(filled, tmp_path / "file" / "x", K1, NOW)
