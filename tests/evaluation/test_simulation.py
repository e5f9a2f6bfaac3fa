"""The known-truth simulation: planted probabilities, and the value of plans under them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.evaluation.simulation import logged_pushes, make_world, plan_value


def test_plan_value_is_the_mean_true_probability_of_the_planned_pairs():
    world = make_world(seed=1, n_users=4, n_items=3)
    plan = pd.DataFrame({"user": [0, 1, 2, 3], "item": [0, 1, 2, 0], "hour": [8, 12, 20, 3]})
    expected = (world.p[0, 0, 8] + world.p[1, 1, 12] + world.p[2, 2, 20] + world.p[3, 0, 3]) / 4
    assert plan_value(world, plan) == pytest.approx(expected)
    best = world.p.reshape(4, -1).argmax(axis=1)
    oracle = pd.DataFrame({"user": range(4), "item": best // 24, "hour": best % 24})
    assert plan_value(world, oracle) == pytest.approx(world.p.reshape(4, -1).max(axis=1).mean())


def test_logged_clicks_follow_the_planted_probabilities():
    world = make_world(seed=2, n_users=200, n_items=4)
    logs = logged_pushes(world, 100_000, np.random.default_rng(0))
    assert logs["propensity"].eq(1 / (4 * 24)).all()
    expected = world.p[logs["user"], logs["item"], logs["hour"]].mean()
    assert logs["click"].mean() == pytest.approx(expected, rel=0.05)
