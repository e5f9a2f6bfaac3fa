"""Scheduled retraining: challenger vs champion on the newest window, promotion by margin, every run recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from training_setup import AS_OF, FAST_CLICK

from engine.analytics import retrain_runs
from engine.clock import FixedClock
from engine.config import Settings
from engine.errors import ConfigError
from engine.store import Store
from engine.training.artifacts import load_model
from engine.training.click import ClickConfig
from engine.training.retrain import (
    champion_version,
    crontab_trigger,
    retrain,
    retrain_scheduler,
    set_champion,
)
from engine.training.synthetic import add_shoppers

WEAK = ClickConfig(num_boost_round=1, num_leaves=2, min_data_in_leaf=20)
T0 = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def shop():
    store = Store(":memory:")
    add_shoppers(store, np.random.default_rng(3), n_users=100, n_items=40)
    yield store
    store.close()


@pytest.mark.slow
def test_promotes_only_a_challenger_that_wins_by_the_margin(shop, tmp_path):
    models = tmp_path / "models"
    first = retrain(shop, models, FixedClock(T0), as_of=AS_OF, margin=0.005, config=WEAK)
    assert first.promoted and first.reason == "no champion yet" and first.champion_version is None
    assert champion_version(models) == first.challenger_version

    strong = retrain(shop, models, FixedClock(T0 + timedelta(hours=1)), as_of=AS_OF, margin=0.005, config=FAST_CLICK)
    assert strong.champion_version == first.challenger_version
    assert strong.challenger_score >= strong.champion_score + 0.005      # a 40-round model beats a stump
    assert strong.promoted and champion_version(models) == strong.challenger_version

    weak = retrain(shop, models, FixedClock(T0 + timedelta(hours=2)), as_of=AS_OF, margin=0.005, config=WEAK)
    assert not weak.promoted and weak.challenger_score < weak.champion_score
    assert weak.challenger_score == pytest.approx(first.challenger_score)  # same data, seed, window
    # "latest" is the newest artifact; "champion" is what planning should use
    assert load_model(models, "click", "latest").version == weak.challenger_version
    assert load_model(models, "click", "champion").version == strong.challenger_version

    runs = retrain_runs(shop.con, "click")
    assert runs["challenger_version"].tolist() == [weak.challenger_version, strong.challenger_version,
                                                  first.challenger_version]
    assert runs["promoted"].tolist() == [False, True, True]
    assert runs["gain"].iloc[0] == pytest.approx(weak.challenger_score - weak.champion_score)
    assert np.isnan(runs["gain"].iloc[2])
    # the data window is recorded: the eval window is the newest label window before the data's end
    row = runs.iloc[0]
    assert row["eval_end"] - row["eval_start"] == timedelta(days=WEAK.data.label_days)
    assert row["train_until"] == row["eval_end"] <= AS_OF
    assert set(row["metrics"]) == {"n_eval_rows", "challenger", "challenger_judged", "champion"} and row["metrics"]["n_eval_rows"] > 100


def test_champion_falls_back_to_latest_before_any_promotion(tmp_path):
    from engine.errors import ModelError

    with pytest.raises(ModelError, match="no trained model named 'click'"):
        load_model(tmp_path, "click", "champion")
    assert champion_version(tmp_path) is None


def test_scheduler_fires_on_the_configured_cron():
    calls = []
    scheduler = retrain_scheduler("0 3 * * 1", lambda: calls.append(1))
    job = scheduler.get_jobs()[0]
    thursday = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
    assert job.trigger.get_next_fire_time(None, thursday) == datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    job.func()
    assert calls == [1]
    with pytest.raises(ValueError):
        retrain_scheduler("every monday", lambda: None)


@pytest.mark.parametrize(("weekday", "expected_day"), [("1", 7), ("0", 6), ("7", 6), ("4", 10), ("1-2", 7),
                                                       ("5,6", 4), ("*", 4), ("*/2", 5), ("1-5/2", 4)])
def test_crontab_weekday_numbers_mean_what_cron_means(weekday, expected_day):
    # Thursday 2026-12-03 18:00 UTC; cron 1 = Monday (APScheduler's own numbering would say Tuesday)
    trigger = crontab_trigger(f"0 3 * * {weekday}")
    nxt = trigger.get_next_fire_time(None, datetime(2026, 12, 3, 18, 0, tzinfo=UTC))
    assert nxt == datetime(2026, 12, expected_day, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("retrain_cron", "0 3 * *", "retrain_cron must have 5 fields (minute hour day month weekday), got '0 3 * *'"),
    ("promotion_margin", -0.1, "promotion_margin must be in [0, 1), got -0.1"),
    ("retrain_cron", "99 3 * * 1", "retrain_cron '99 3 * * 1' is not a crontab expression: Error validating "
                                   "expression '99': the last value (99) is higher than the maximum value (59)"),
    ("retrain_cron", "*/0 * * * *", "retrain_cron '*/0 * * * *' is not a crontab expression: Increment must be higher than 0"),
    ("retrain_cron", "0 3 * * 10", "retrain_cron '0 3 * * 10' is not a crontab expression: crontab weekday must be 0-7 "
                                   "or a day name, got '10'"),
    ("retrain_cron", "0 3 31 2 *", "retrain_cron '0 3 31 2 *' never fires (no such date)"),
])
def test_settings_validate_retraining_fields(field, value, message):
    settings = Settings()
    setattr(settings, field, value)
    with pytest.raises(ConfigError) as exc:
        settings.validate()
    assert message in str(exc.value)


@pytest.mark.slow
def test_cli_retrain_once_records_a_promoted_first_run(tmp_path, monkeypatch, capsys):
    import json

    from engine.cli import main

    db = tmp_path / "pw.duckdb"
    with Store(str(db)) as store:
        add_shoppers(store, np.random.default_rng(3), n_users=60, n_items=30)
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(db))
    monkeypatch.setenv("PUSHWISE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PUSHWISE_PROMOTION_MARGIN", "0.01")
    assert main(["retrain", "--once", "--as-of", AS_OF.isoformat()]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["promoted"] is True and out["margin"] == 0.01 and out["reason"] == "no champion yet"
    assert champion_version(tmp_path / "models") == out["challenger_version"]
    with Store(str(db)) as store:
        assert retrain_runs(store.con)["run_id"].tolist() == [out["run_id"]]


@pytest.mark.slow
def test_each_database_is_judged_against_its_own_champion(shop, tmp_path):
    """Two databases share a models folder: a retrain on one never takes the other's model as incumbent."""
    models = tmp_path / "models"
    mine = retrain(shop, models, FixedClock(T0 + timedelta(days=1)), as_of=AS_OF, margin=0.005, config=WEAK)
    with Store(":memory:") as other:
        add_shoppers(other, np.random.default_rng(4), n_users=100, n_items=40)
        theirs = retrain(other, models, FixedClock(T0 + timedelta(days=1, hours=1)), as_of=AS_OF, margin=0.005, config=WEAK)
    # a database with no model of its own is served by the folder's champion, so that is its incumbent
    assert theirs.champion_version == mine.challenger_version
    set_champion(models, "click", theirs.challenger_version)           # the folder now points at theirs
    again = retrain(shop, models, FixedClock(T0 + timedelta(days=1, hours=2)), as_of=AS_OF, margin=0.005, config=WEAK)
    assert again.champion_version == mine.challenger_version     # this database's own, not the folder's


@pytest.mark.slow
def test_the_challenger_gets_no_credit_for_having_seen_the_judged_window(shop, tmp_path):
    """The served click model is refit with the newest window; the retrain judges the fit that never saw it."""
    from dataclasses import replace

    models = tmp_path / "models"
    held_out = replace(FAST_CLICK, refit_with_eval=False)
    first = retrain(shop, models, FixedClock(T0 + timedelta(days=2)), as_of=AS_OF, margin=0.005, config=held_out)
    # the same settings and seed, but served after a refit on the judged window: before that refit it is
    # the champion to the bit, so it must score exactly what the champion scores and not be promoted
    again = retrain(shop, models, FixedClock(T0 + timedelta(days=2, hours=1)), as_of=AS_OF, margin=0.005,
                    config=FAST_CLICK)
    assert again.champion_version == first.challenger_version
    assert again.challenger_score == pytest.approx(again.champion_score)
    assert not again.promoted and champion_version(models) == first.challenger_version
    runs = retrain_runs(shop.con, "click")
    judged = runs.loc[runs["run_id"] == again.run_id, "metrics"].iloc[0]
    assert judged["challenger_judged"] == "its fit before the refit on the eval window"
    assert judged["champion"]["saw_eval_window"] is False


@pytest.mark.parametrize("cron", ["99 3 * * 1", "0 3 31 2 *", "0 3 * * mon-fri/2"])
def test_cli_retrain_refuses_a_bad_cron_with_a_message_not_a_traceback(cron, tmp_path, monkeypatch, capsys):
    from engine.cli import main

    monkeypatch.setenv("PUSHWISE_RETRAIN_CRON", cron)
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(tmp_path / "pw.duckdb"))
    assert main(["retrain"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("pushwise: error: invalid configuration") and f"retrain_cron {cron!r}" in err


def test_a_run_that_fails_is_recorded_too_and_the_champion_stays(tmp_path):
    """A scheduled run whose training fails (here: no purchases before the window) leaves a row saying why."""
    from engine.errors import ModelError

    models = tmp_path / "models"
    with Store(":memory:") as empty:
        empty.execute("""INSERT INTO events (event_id, user_id, item_id, event_type, ts, properties, source, simulated,
                                             ingested_at)
                         VALUES ('e1', 'u1', 'i1', 'purchase', TIMESTAMPTZ '2011-01-05 10:00:00+00', '{}', 'events',
                                 false, now())""")
        with pytest.raises(ModelError) as err:
            retrain(empty, models, FixedClock(T0), as_of=AS_OF, margin=0.005, config=WEAK)
        runs = retrain_runs(empty.con, "click")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert not run["promoted"] and run["challenger_version"] is None and np.isnan(run["challenger_score"])
    assert run["reason"] == f"failed: {err.value}"
    assert run["started_at"] == T0 and run["metrics"] == {"error": "ModelError"}
    assert champion_version(models) is None
