"""The demo's summary: the holdout difference comes with its interval, p-value and the replay caveat;
and the demo refuses a foreign database before writing anything to it."""

from __future__ import annotations

import duckdb
import pytest

from engine.analytics.stats import compare_proportions
from engine.config import Settings
from engine.demo import _print_summary, holdout_summary
from engine.errors import InputError
from tests.analytics.world import build_world
from tests.conftest import DATA


def test_holdout_summary_states_the_difference_with_interval_p_value_and_caveat(store):
    build_world(store)
    h = holdout_summary(store.con)
    # treatment: t1 (real purchase), t2 (simulated incremental conversion), t3 of t1..t9 and x1; holdout: h1 of five
    assert (h["treatment"]["conversions"], h["treatment"]["users"]) == (3, 10)
    assert (h["holdout"]["conversions"], h["holdout"]["users"]) == (1, 5)
    assert h["treatment"]["simulated_conversions"] == 1
    want = compare_proportions(3, 10, 1, 5)
    d = h["difference"]
    assert d["absolute"] == pytest.approx(0.1)
    assert d["ci95"] == [round(want.diff_low, 5), round(want.diff_high, 5)]
    assert d["ci95"][0] < 0 < 0.1 < d["ci95"][1]
    assert d["p_value"] == round(want.p_value, 4)
    assert "Newcombe" in d["interval"]
    caveat = h["caveat"]
    assert "not a push effect" in caveat and "real past purchases" in caveat
    assert "simulated incremental conversions in the treatment arm (1)" in caveat  # all a sandbox push can cause


def test_printed_summary_shows_the_difference_and_the_caveats(store, tmp_path, capsys):
    build_world(store)
    s = {"events_ingested": 10, "rows_quarantined": 0, "models": {}, "sends_planned": 8,
         "sends_by_vendor": {"apns": 5, "fcm": 3},
         "funnel": {"planned": 8, "sent": 7, "delivered": 5, "opened": 3, "clicked": 2, "converted": 3},
         "holdout": holdout_summary(store.con), "seconds": 1.0}
    from engine.demo import funnel_notes

    s["funnel_notes"] = funnel_notes()
    _print_summary(s, tmp_path / "x.json")
    out = " ".join(capsys.readouterr().out.split())  # long lines are wrapped
    d = s["holdout"]["difference"]
    assert f"difference +10.00 pp (95% CI {100 * d['ci95'][0]:+.2f} to {100 * d['ci95'][1]:+.2f} pp), " \
           f"p = {d['p_value']:.3f}" in out
    assert "not a push effect" in out
    assert "opened and clicked are simulated" in out
    assert "with or without a click" in out


def test_the_demo_refuses_a_foreign_database_before_writing_to_it(tmp_path):
    db = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE mine (x INTEGER)")
    con.close()
    settings = Settings(db_path=str(db), data_dir=str(DATA), models_dir=str(tmp_path / "m"),
                        reports_dir=str(tmp_path / "r"))
    from engine.demo import run_demo

    with pytest.raises(InputError, match="was not created by `pushwise demo`"):
        run_demo(settings, fast=True, progress=False)
    con = duckdb.connect(str(db), read_only=True)
    assert [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()] == ["mine"]
    con.close()


def test_the_demo_refuses_a_file_that_is_not_a_database(tmp_path):
    db = tmp_path / "notes.duckdb"
    db.write_text("my notes\n")
    settings = Settings(db_path=str(db), data_dir=str(DATA), models_dir=str(tmp_path / "m"),
                        reports_dir=str(tmp_path / "r"))
    from engine.demo import run_demo

    with pytest.raises(InputError, match="was not created by `pushwise demo`"):
        run_demo(settings, fast=True, progress=False)
    assert db.read_text() == "my notes\n"


def test_a_demo_database_backs_up_and_restores_and_stays_the_demos(tmp_path):
    """The demo's marker is a row of the schema, so a backup of a demo database restores (it used to be
    a table of its own, which restore refused), and the restored file is still recognised as the demo's."""
    from datetime import UTC, datetime

    from engine.backup import restore_backup, write_backup
    from engine.demo import _made_by_demo
    from engine.security.crypto import Keyring
    from engine.store import Store

    db = tmp_path / "d.duckdb"
    with Store(db) as store:
        store.execute("INSERT OR REPLACE INTO service_meta VALUES ('made_by_demo', 'x')")
        keyring = Keyring((("k1", bytes(32)),))
        m = write_backup(store, tmp_path / "bk", keyring, datetime(2026, 12, 4, tzinfo=UTC))
    assert m.data["skipped_tables"] == []
    restored = tmp_path / "r.duckdb"
    restore_backup(restored, m.path, keyring)
    assert _made_by_demo(restored) and not _made_by_demo(tmp_path / "bk" / m.path.name / "manifest.json")


def test_a_model_below_its_baseline_is_described_truthfully(capsys):
    from types import SimpleNamespace

    from engine.demo import print_models

    def result(name, value, base):
        return SimpleNamespace(name=name, headline_metric="m", headline_value=value, baseline="b", baseline_value=base)

    print_models([result("send_time", 0.40, 0.42), result("click_obd", 0.45, 0.52), result("click", 0.3, 0.2)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("(below its baseline; planning still uses it: read its card)")
    assert lines[2].endswith("(below its baseline; never used for planning)")
    assert "below" not in lines[3]
