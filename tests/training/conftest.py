"""Fixtures for the training tests: one seeded synthetic store with planted signals, trained once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from training_setup import AS_OF, FAST_CLICK, FAST_OBD, FAST_SEND_TIME, START, TRAINED_AT

from engine.clock import FixedClock
from engine.store import Store
from engine.training import TrainResult, train_all
from engine.training.synthetic import ShopperTruth, add_impressions, add_pushes, add_shoppers


@pytest.fixture(scope="session")
def synthetic() -> tuple[Store, ShopperTruth]:
    store = Store(":memory:")
    rng = np.random.default_rng(11)
    truth = add_shoppers(store, rng)
    add_impressions(store, rng)
    return store, truth


@pytest.fixture(scope="session")
def trained(synthetic, tmp_path_factory) -> tuple[Store, Path, list[TrainResult]]:
    store, _ = synthetic
    models = tmp_path_factory.mktemp("models")
    results = train_all(
        store, AS_OF, models, FixedClock(TRAINED_AT),
        click=FAST_CLICK, send_time=FAST_SEND_TIME, click_obd=FAST_OBD,
    )
    return store, models, results


@pytest.fixture(scope="module")
def pushed() -> tuple[Store, ShopperTruth]:
    """A fresh store whose pushes are clicked only for items the user has NOT bought (novelty)."""
    store = Store(":memory:")
    rng = np.random.default_rng(5)
    truth = add_shoppers(store, rng, n_users=80, n_items=40)
    add_pushes(store, rng, truth, [START + timedelta(days=d) for d in (50, 70, 90, 110, 128)], per_user=3,
               clicks_on="novel")
    return store, truth
