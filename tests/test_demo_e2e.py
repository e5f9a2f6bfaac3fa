"""The main job end to end on a slice of the real shipped data (about 20 s)."""

from __future__ import annotations

import json

import pytest

from engine.config import Settings
from engine.demo import run_demo
from engine.store import Store, open_reader
from tests.conftest import DATA


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    settings = Settings(db_path=str(tmp / "pushwise.duckdb"), data_dir=str(DATA), models_dir=str(tmp / "models"),
                        reports_dir=str(tmp / "reports"))
    summary = run_demo(settings, fast=True, progress=False)
    return settings, summary, tmp


@pytest.mark.slow
def test_summary_has_every_required_field_with_consistent_numbers(demo):
    settings, s, tmp = demo
    on_disk = json.loads((tmp / "reports" / "demo-summary.json").read_text())
    assert on_disk["funnel"] == s["funnel"]
    for key in ("events_ingested", "rows_quarantined", "models", "sends_planned", "sends_by_vendor", "funnel",
                "holdout", "seconds"):
        assert key in on_disk, key
    assert set(s["models"]) == {"click", "send_time", "click_obd"}
    assert all({"metric", "value", "baseline", "baseline_value"} <= set(m) for m in s["models"].values())
    f = s["funnel"]
    assert list(f) == ["planned", "sent", "delivered", "opened", "clicked", "converted"]
    assert f["planned"] == s["sends_planned"] == sum(s["sends_by_vendor"].values()) > 100
    assert f["planned"] >= f["sent"] >= f["delivered"] >= f["opened"] >= f["clicked"]
    assert set(s["sends_by_vendor"]) == {"apns", "fcm"}
    assert s["holdout"]["holdout"]["users"] > 0 and s["holdout"]["treatment"]["users"] > 0


@pytest.mark.slow
def test_every_send_ended_terminal_and_invalid_tokens_match_uninstalled_devices(demo):
    settings, s, _ = demo
    with Store(settings.db_path) as store:
        states = dict(store.execute("SELECT state, count(*) FROM sends GROUP BY 1").fetchall())
        assert set(states) <= {"delivered", "invalid_token"}, states
        # every invalid-token answer came from a device the simulation uninstalled, and it was deactivated
        wrong = store.scalar("""SELECT count(*) FROM sends s LEFT JOIN sim_device_truth t USING (device_id)
                                WHERE s.state = 'invalid_token' AND t.device_id IS NULL""")
        assert wrong == 0
        assert store.scalar("""SELECT count(*) FROM sends s JOIN devices d USING (device_id)
                               WHERE s.state = 'invalid_token' AND d.active""") == 0
        # holdout users were never sent anything; users without consent neither
        assert store.scalar("""SELECT count(*) FROM sends s JOIN decisions d USING (decision_id)
                               WHERE d.arm = 'holdout'""") == 0
        assert store.scalar("""SELECT count(*) FROM sends s JOIN consents c ON c.user_id = s.user_id
                               AND c.message_class = 'marketing' WHERE NOT c.granted""") == 0
        # every decision that sent carries its score, propensity and model version
        assert store.scalar("""SELECT count(*) FROM decisions WHERE action = 'send' AND
                               (score IS NULL OR propensity IS NULL OR model_version IS NULL)""") == 0
        sim = store.scalar("SELECT bool_and(simulated) FROM events WHERE source = 'simulation'")
        assert sim is True


@pytest.mark.slow
def test_a_reader_in_another_process_sees_the_snapshot(demo):
    settings, s, _ = demo
    con, origin = open_reader(settings.db_path)
    assert origin == "live"
    assert con.execute("SELECT count(*) FROM decisions WHERE action = 'send'").fetchone()[0] == s["sends_planned"]
    con.close()


@pytest.mark.slow
def test_the_demo_refuses_to_wipe_a_database_it_did_not_create(tmp_path):
    from engine.errors import InputError

    db = tmp_path / "mine.duckdb"
    Store(db).close()
    settings = Settings(db_path=str(db), data_dir=str(DATA), models_dir=str(tmp_path / "m"),
                        reports_dir=str(tmp_path / "r"))
    with pytest.raises(InputError, match="was not created by `pushwise demo`"):
        run_demo(settings, fast=True, progress=False)


def test_plan_says_which_models_serve_this_database(demo, capsys, monkeypatch):
    from engine.cli import main

    settings, summary, tmp = demo
    monkeypatch.setenv("PUSHWISE_MODELS_DIR", settings.models_dir)
    assert main(["--db", settings.db_path, "plan", "engine/campaigns/winter_favourites.toml", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["already_planned"] is True                       # the demo planned it: nothing changes
    assert set(out["models_used"]) == {"click", "send_time"}
    assert out["models_used"] == summary["models_used"]
    assert "trained on this database" in out["models_used"]["click"]
