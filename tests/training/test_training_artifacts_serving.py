"""Which model version a database serves: its own champion or newest trained model, not the folder's newest."""

from __future__ import annotations

from datetime import UTC, datetime

import lightgbm as lgb
import numpy as np
import pytest

from engine.clock import FixedClock
from engine.errors import ModelError
from engine.store import Store
from engine.training import record_run, save_model
from engine.training.artifacts import load_serving_model, serving_version
from engine.training.retrain import set_champion


def _booster(sign: float) -> lgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (sign * x[:, 0] > 0).astype(float)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1, "min_data_in_leaf": 5}
    return lgb.train(params, lgb.Dataset(x, y, feature_name=["f0", "f1"]), num_boost_round=5)


def _train(models, db: Store | None, day: int, sign: float = 1.0) -> str:
    clock = FixedClock(datetime(2026, 1, day, tzinfo=UTC))
    model = save_model(models, "click", _booster(sign), {"features": ["f0", "f1"]}, clock)
    if db is not None:
        record_run(db, model)
    return model.version


def _promote(db: Store, version: str, day: int) -> None:
    at = datetime(2026, 1, day, tzinfo=UTC)
    db.execute("""INSERT INTO retrain_runs VALUES (?, 'click', ?, ?, ?, ?, NULL, ?, 'auc', NULL, 0.7, 0.005,
                                                   true, 'no champion yet', '{}')""",
               [f"click/{version}", at, at, at, at, version])


def test_each_database_serves_the_model_it_trained_not_the_folders_newest(tmp_path):
    models = tmp_path / "models"
    with Store(":memory:") as mine, Store(":memory:") as test_db:
        ours = _train(models, mine, 1)
        theirs = _train(models, test_db, 2)  # newer, trained on another database in the same folder
        choice = serving_version(mine, models, "click")
        assert (choice.version, choice.source) == (ours, "trained")
        assert "trained on this database" in choice.describe()
        model, used = load_serving_model(mine, models, "click")
        assert model.version == ours and used == choice
        assert serving_version(test_db, models, "click").version == theirs


def test_a_promoted_champion_of_this_database_wins_over_its_newer_training(tmp_path):
    models = tmp_path / "models"
    with Store(":memory:") as db:
        champion = _train(models, db, 1)
        _promote(db, champion, 1)
        _train(models, db, 3)  # a challenger that was not promoted
        set_champion(models, "click", _train(models, None, 4))  # another database's promotion
        choice = serving_version(db, models, "click")
        assert (choice.version, choice.source) == (champion, "champion")
        assert "champion" in choice.describe()


def test_a_database_without_a_record_falls_back_to_the_folders_champion_and_says_so(tmp_path):
    models = tmp_path / "models"
    with Store(":memory:") as other, Store(":memory:") as empty:
        first = _train(models, other, 1)
        _train(models, other, 2)
        choice = serving_version(empty, models, "click")
        assert (choice.version, choice.source) == (_latest(models), "folder")
        set_champion(models, "click", first)
        choice = serving_version(empty, models, "click")
        assert (choice.version, choice.source) == (first, "folder")
        assert "records no click model" in choice.describe()


def test_a_recorded_version_missing_from_the_folder_is_an_error_not_a_silent_substitute(tmp_path):
    with Store(":memory:") as db:
        version = _train(tmp_path / "elsewhere", db, 1)
        _train(tmp_path / "models", None, 2)
        with pytest.raises(ModelError, match=f"this database's click model {version} .* is not in"):
            load_serving_model(db, tmp_path / "models", "click")


def _latest(models) -> str:
    return sorted(p.name for p in (models / "click").iterdir() if (p / "card.json").is_file())[-1]

