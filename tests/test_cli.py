"""The command line: exit codes, messages, JSON output."""

from __future__ import annotations

import json

import pytest

from engine.cli import main


def test_ingest_prints_counts_and_is_a_no_op_the_second_time(tmp_path, capsys):
    db = str(tmp_path / "p.duckdb")
    src = tmp_path / "e.jsonl"
    src.write_text('{"user_id": "u1", "event_type": "app_open", "ts": "2024-05-01T08:00:00Z"}\n'
                   '{"user_id": "u2", "event_type": "teleport", "ts": "2024-05-01T08:00:00Z"}\n')
    assert main(["--db", db, "ingest", str(src)]) == 0
    out = capsys.readouterr().out
    assert "2 rows read, 1 events loaded, 0 duplicates skipped, 1 rows quarantined" in out
    assert "quarantined        1  unknown event type" in out
    assert main(["--db", db, "ingest", "--json", str(src)]) == 0
    report = json.loads(capsys.readouterr().out)[0]
    assert report["already_ingested"] is True and report["events_loaded"] == 0


def test_bad_input_exits_3_with_a_message_and_no_traceback(tmp_path, capsys):
    code = main(["--db", str(tmp_path / "p.duckdb"), "ingest", str(tmp_path / "missing.csv")])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("pushwise: error: no such file:") and "Traceback" not in err


def test_invalid_campaign_exits_3_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "c.toml"
    bad.write_text('name = "x"\n[[templates]]\ntitle = "{nope}"\nbody = "b"\n')
    from engine.store import Store

    Store(tmp_path / "p.duckdb").close()
    assert main(["--db", str(tmp_path / "p.duckdb"), "plan", str(bad)]) == 3
    assert "c.toml: templates[0] uses unknown slot(s) nope" in capsys.readouterr().err


def test_config_errors_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PUSHWISE_MAX_ATTEMPTS", "lots")
    assert main(["--db", str(tmp_path / "p.duckdb"), "seed-devices"]) == 1
    assert "PUSHWISE_MAX_ATTEMPTS: max_attempts must be an integer, got 'lots'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["ingest", "train", "plan", "dispatch", "demo", "sandbox", "seed-devices"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: pushwise" in capsys.readouterr().out


def test_verbose_dispatch_logs_never_show_a_device_token():
    """-v turns on debug logs; the HTTP stack's wire loggers (hpack prints APNs paths) must stay token-free."""
    import io
    import logging

    from engine.cli import configure_logging

    token = "3bf449fd" * 8  # an APNs token: 64 hex characters
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        configure_logging(verbose=True)  # masks on every root handler, whichever logger emits
        logging.getLogger("hpack.table").warning("Evicting b':path': b'/3/device/%s'", token)
        logging.getLogger("engine.anything").warning("sending to %s", token)
        logging.getLogger("hpack.table").debug("debug line with %s", token)
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert token not in text
    assert text.count("<masked:") == 2   # the hpack DEBUG line is not emitted at all
    assert logging.getLogger("hpack").level == logging.WARNING


@pytest.mark.parametrize("command", [["train"], ["plan", "engine/campaigns/winter_favourites.toml"], ["dispatch"]])
def test_a_mistyped_db_is_an_error_not_a_new_empty_database(tmp_path, capsys, command):
    db = tmp_path / "typo.duckdb"
    assert main(["--db", str(db), *command]) == 3
    assert f"no database at {db}" in capsys.readouterr().err
    assert not db.exists()
