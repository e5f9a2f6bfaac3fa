"""Operations shared by the API and the CLI: erasure reaches every table that names the user."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from engine.service.operations import erase_user
from engine.store import Store

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def test_erase_also_removes_the_users_rows_in_quarantine(tmp_path):
    # a canonical row rejected at ingest (a bad type, a bad timestamp) still names the user
    with Store(tmp_path / "q.duckdb") as store:
        rows = [("canonical", "g.csv", 1, "bad type", {"user_id": "u1", "event_type": "teleport"}),
                ("canonical", "g.csv", 2, "bad ts", {"user_id": " u1 ", "ts": "yesterday"}),
                ("canonical", "g.csv", 3, "bad ts", {"user_id": "u2", "item_id": "u1", "ts": "later"}),
                ("canonical", "g.csv", 4, "bad type", {"user_id": "u2", "event_type": "teleport"})]
        for source, file, n, reason, raw in rows:
            store.execute("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?)",
                          [source, file, n, reason, json.dumps(raw), NOW])
        assert erase_user(store, "u1", key=b"k", now=NOW)["quarantine"] == 2
        left = store.execute("SELECT row_number FROM quarantine ORDER BY 1").fetchall()
    assert left == [(3,), (4,)]   # another user's row that mentions u1 as an item stays


def test_erase_cli_refuses_an_empty_id_and_says_when_nothing_matched(tmp_path, capsys, monkeypatch):
    from engine.cli import main

    monkeypatch.setenv("PUSHWISE_DATA_KEYS", "k1:" + "44" * 32)
    monkeypatch.setenv("PUSHWISE_PSEUDONYM_KEY", "erase-test")
    db = str(tmp_path / "e.duckdb")
    Store(db).close()
    assert main(["--db", db, "erase", ""]) == 3
    assert "USER must not be empty" in capsys.readouterr().err
    assert main(["--db", db, "erase", "nobody-here"]) == 0
    assert "no data held for this user id (check for a typo)" in capsys.readouterr().out
    with Store(db) as store:
        assert store.count("erasure_ledger") == 1      # recorded all the same: a backup may still hold them


def test_keys_create_refuses_a_rate_the_api_would_refuse(tmp_path, capsys):
    import pytest

    from engine.cli import main

    for bad in ("0", "-5", "nan", "inf", "fast"):
        with pytest.raises(SystemExit) as exit_:
            main(["--db", str(tmp_path / "k.duckdb"), "keys", "create", "--scope", "send", "--rate", bad])
        assert exit_.value.code == 2 and "above 0" in capsys.readouterr().err


def test_keys_list_and_revoke_without_the_service(tmp_path, capsys, monkeypatch):
    from engine.cli import main

    monkeypatch.setenv("PUSHWISE_DATA_KEYS", "k1:" + "44" * 32)
    db = str(tmp_path / "k.duckdb")
    assert main(["--db", db, "keys", "create", "--scope", "send", "--label", "shop", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert main(["--db", db, "keys", "list"]) == 0
    text = capsys.readouterr().out
    assert made["key_id"] in text and "live" in text and made["key"] not in text
    assert main(["--db", db, "keys", "revoke", made["key_id"]]) == 0
    assert f"key {made['key_id']} revoked" in capsys.readouterr().out
    assert main(["--db", db, "keys", "revoke", made["key_id"]]) == 3
    assert "no live API key" in capsys.readouterr().err
    assert main(["--db", db, "keys", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"] is not None
