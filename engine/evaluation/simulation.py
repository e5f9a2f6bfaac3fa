"""Known truth: a seeded population with planted click probabilities per item and hour, and how much of the oracle's value the pipeline recovers.

Each user has a segment, a time zone and hidden tastes; ``p(click | user, item, hour)`` is a known
logistic function of them. Pushwise's pipeline sees only the logged random pushes (user features,
item, local hour, click, propensity), trains the LightGBM click model on them, scores every
(item, hour) for every user and lets the greedy policy plan one push each. The value of a plan is its
expected clicks under the true probabilities, beside the oracle (each user's best pair) and random.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from engine.recommend.policy import Greedy, choose
from engine.training.base import lgb_params

__all__ = ["SimulationResult", "World", "logged_pushes", "make_world", "plan_value", "run_simulation"]

FEATURES = ["segment", "region", "activity", "item", "item_kind", "hour"]
CATEGORICAL = ["segment", "region", "item", "item_kind"]


@dataclass(frozen=True)
class World:
    """The planted truth: ``users`` (``user_id``, ``segment``, ``region``, ``activity``), ``items`` (``item``,
    ``item_kind``) and ``p``, users × items × 24 true click probabilities (hour = the user's local hour)."""

    users: pd.DataFrame
    items: pd.DataFrame
    p: np.ndarray


@dataclass(frozen=True)
class SimulationResult:
    """Expected clicks per user of the planned pushes, the oracle's and a uniform random plan's."""

    value: float
    oracle: float
    random: float
    n_users: int
    n_logged: int

    @property
    def share_of_oracle(self) -> float:
        return self.value / self.oracle


def make_world(seed: int = 11, n_users: int = 3000, n_items: int = 12) -> World:
    """Draw the users, the items and the true click probabilities."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, 4, n_users)
    region = rng.integers(0, 3, n_users)
    activity = rng.gamma(2.0, 0.5, n_users)
    kind = rng.integers(0, 4, n_items)
    taste = rng.normal(0, 1.0, (4, 4))  # segment × item kind
    item_effect = rng.normal(0, 0.4, n_items)
    peak = np.array([8, 12, 20])[region]  # each region's best local hour
    hours = np.arange(24)
    dist = np.minimum(np.abs(hours[None, :] - peak[:, None]), 24 - np.abs(hours[None, :] - peak[:, None]))
    hour_effect = -0.12 * dist  # users × hours
    logit = (-3.2 + 0.5 * np.log(activity)[:, None, None] + taste[segment][:, kind][:, :, None]
             + item_effect[None, :, None] + hour_effect[:, None, :])
    users = pd.DataFrame({"user_id": [f"sim:{i}" for i in range(n_users)], "segment": segment, "region": region,
                          "activity": activity})
    return World(users, pd.DataFrame({"item": np.arange(n_items), "item_kind": kind}), 1 / (1 + np.exp(-logit)))


def logged_pushes(world: World, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` pushes of a uniform random logging policy with their sampled clicks.

    Returns:
        ``user``, the :data:`FEATURES`, ``click`` (0/1), ``propensity`` (1 / (items × 24)).
    """
    n_users, n_items, _ = world.p.shape
    u, i, h = rng.integers(0, n_users, n), rng.integers(0, n_items, n), rng.integers(0, 24, n)
    click = (rng.random(n) < world.p[u, i, h]).astype(int)
    users = world.users.iloc[u]
    return pd.DataFrame({"user": u, "segment": users["segment"].to_numpy(), "region": users["region"].to_numpy(),
                         "activity": users["activity"].to_numpy(), "item": i,
                         "item_kind": world.items["item_kind"].to_numpy()[i], "hour": h, "click": click,
                         "propensity": 1.0 / (n_items * 24)})


def plan_value(world: World, plan: pd.DataFrame) -> float:
    """Expected clicks per user of ``plan`` (``user``, ``item``, ``hour``) under the true probabilities."""
    return float(world.p[plan["user"], plan["item"], plan["hour"]].sum() / world.p.shape[0])


def run_simulation(seed: int = 11, n_users: int = 3000, n_logged: int = 400_000) -> SimulationResult:
    """Log random pushes, train the click model, plan greedily, and value the plan against the truth."""
    world = make_world(seed, n_users)
    rng = np.random.default_rng(seed + 1)
    logs = logged_pushes(world, n_logged, rng)
    features = FEATURES
    params = lgb_params(seed, min_data_in_leaf=400, num_leaves=15, learning_rate=0.05, lambda_l2=10.0, cat_smooth=50.0)
    data = lgb.Dataset(logs[features].astype("float64"), logs["click"], categorical_feature=CATEGORICAL)
    booster = lgb.train(params, data, num_boost_round=300)
    n_users, n_items, _ = world.p.shape
    u, i, h = np.meshgrid(np.arange(n_users), np.arange(n_items), np.arange(24), indexing="ij")
    grid = pd.DataFrame({"user": u.ravel(), "item": i.ravel(), "hour": h.ravel()})
    users = world.users.iloc[grid["user"]]
    grid = grid.assign(segment=users["segment"].to_numpy(), region=users["region"].to_numpy(),
                       activity=users["activity"].to_numpy(), item_kind=world.items["item_kind"].to_numpy()[grid["item"]])
    scored = pd.DataFrame({"user_id": world.users["user_id"].to_numpy()[grid["user"]],
                           "item_id": grid["item"].astype(str) + "@" + grid["hour"].astype(str),
                           "score": booster.predict(grid[features].astype("float64"))})
    chosen = choose(scored, Greedy(), np.random.default_rng(seed))
    pair = chosen["item_id"].str.split("@", expand=True).astype(int)
    plan = pd.DataFrame({"user": chosen["user_id"].str.removeprefix("sim:").astype(int).to_numpy(),
                         "item": pair[0].to_numpy(), "hour": pair[1].to_numpy()})
    oracle = float(world.p.reshape(n_users, -1).max(axis=1).mean())
    return SimulationResult(plan_value(world, plan), oracle, float(world.p.mean()), n_users, n_logged)
