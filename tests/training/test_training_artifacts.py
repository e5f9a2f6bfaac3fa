"""Artifacts: models/<name>/<version>/ with model.txt and card.json, a model_runs row, and loading back."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from training_setup import TRAINED_AT

from engine.clock import FixedClock
from engine.errors import ModelError
from engine.store import Store
from engine.training import load_model, record_run, save_model
from engine.training.artifacts import library_versions


def tiny_booster() -> lgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(float)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1, "min_data_in_leaf": 5}
    return lgb.train(params, lgb.Dataset(x, y, feature_name=["f0", "f1"]), num_boost_round=5)


def test_train_all_writes_one_folder_card_and_run_per_model(trained) -> None:
    store, models, results = trained
    assert [r.name for r in results] == ["click", "send_time", "click_obd"]
    runs = store.df("SELECT model_name, version, path, metrics, card FROM model_runs ORDER BY model_name")
    assert sorted(runs["model_name"]) == ["click", "click_obd", "send_time"]
    for r in results:
        assert r.version == "20261203T175500Z" and r.path == models / r.name / r.version
        assert (r.path / "model.txt").is_file()
        card = json.loads((r.path / "card.json").read_text())
        for key in ("name", "version", "trained_at", "features", "parameters", "data_window", "metrics",
                    "baseline_metrics", "libraries", "seed", "headline"):
            assert key in card, (r.name, key)
        assert set(card["libraries"]) == {"lightgbm", "duckdb", "pandas", "numpy", "python"}
        assert card["trained_at"] == TRAINED_AT.isoformat() and card["seed"] == 7
        assert card["headline"] == {"metric": r.headline_metric, "value": r.headline_value,
                                    "baseline": r.baseline, "baseline_value": r.baseline_value}
        row = runs[runs["model_name"] == r.name].iloc[0]
        assert json.loads(row["card"])["version"] == r.version and json.loads(row["metrics"]) == card["metrics"]
        assert re.fullmatch(rf"{r.name} 20261203T175500Z  \S+ \d\.\d{{3}} vs \S+ \d\.\d{{3}}  \(\d+\.\ds\)", str(r))
        digest = r.summary()
        assert {k: digest[k] for k in ("name", "version", "metric", "value", "baseline", "baseline_value")} == {
            "name": r.name, "version": r.version, "metric": r.headline_metric, "value": r.headline_value,
            "baseline": r.baseline, "baseline_value": r.baseline_value}
        json.dumps(digest)  # the CLI prints it as JSON


def test_load_round_trip_predicts_the_same(tmp_path) -> None:
    booster = tiny_booster()
    saved = save_model(tmp_path, "m", booster, {"features": ["f0", "f1"], "metrics": {"auc": 1.0}},
                       FixedClock(TRAINED_AT))
    loaded = load_model(tmp_path, "m")
    frame = pd.DataFrame({"f1": [0.3, -1.0], "f0": [1.0, -2.0]})  # column order does not matter
    assert loaded.version == saved.version == "20261203T175500Z"
    np.testing.assert_array_equal(loaded.predict(frame), booster.predict(frame[["f0", "f1"]].to_numpy()))
    assert loaded.card == saved.card and loaded.card["libraries"] == library_versions()


def test_versions_sort_by_time_and_same_second_gets_a_suffix(tmp_path) -> None:
    clock = FixedClock(TRAINED_AT)
    first = save_model(tmp_path, "m", tiny_booster(), {"features": ["f0", "f1"]}, clock)
    second = save_model(tmp_path, "m", tiny_booster(), {"features": ["f0", "f1"]}, clock)
    clock.at = datetime(2027, 1, 1, tzinfo=UTC)
    third = save_model(tmp_path, "m", tiny_booster(), {"features": ["f0", "f1"]}, clock)
    assert (first.version, second.version, third.version) == (
        "20261203T175500Z", "20261203T175500Z-02", "20270101T000000Z")
    assert load_model(tmp_path, "m").version == third.version
    assert load_model(tmp_path, "m", "20261203T175500Z-02").version == second.version


def test_nan_metrics_are_stored_as_null(tmp_path) -> None:
    store = Store(":memory:")
    model = save_model(tmp_path, "m", tiny_booster(), {"features": ["f0", "f1"], "metrics": {"auc": float("nan")}},
                       FixedClock(TRAINED_AT))
    record_run(store, model)
    assert model.card["metrics"] == {"auc": None}
    assert json.loads(store.scalar("SELECT metrics FROM model_runs")) == {"auc": None}


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("nope", "latest", r"^no trained model named 'nope' in .*; run `pushwise train` first$"),
        ("m", "19990101T000000Z", r"^model 'm' has no version '19990101T000000Z' in .*$"),
    ],
)
def test_missing_models_raise_model_error(tmp_path, name: str, version: str, message: str) -> None:
    save_model(tmp_path, "m", tiny_booster(), {"features": ["f0", "f1"]}, FixedClock(TRAINED_AT))
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path, name, version)


def test_predict_names_missing_columns(tmp_path) -> None:
    model = save_model(tmp_path, "m", tiny_booster(), {"features": ["f0", "f1"]}, FixedClock(TRAINED_AT))
    with pytest.raises(ModelError, match=r"^model m/20261203T175500Z needs column\(s\) missing from the input: \['f1'\]$"):
        model.predict(pd.DataFrame({"f0": [1.0]}))
