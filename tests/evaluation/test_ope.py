"""Off-policy estimators on seeded synthetic bandits whose true value is known, in three log formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.errors import InputError
from engine.evaluation.bandit import bandit_log, drift_aware_target, naive_target
from engine.evaluation.ope import ESTIMATORS, Estimate, check_log, estimate_policy_value, shrunk_ctr_model

K = 5
CTR = np.array([0.02, 0.05, 0.10, 0.20, 0.30])  # true reward of each action, same in every context


def _uniform_log(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, K, n)
    return pd.DataFrame({"action": a, "reward": (rng.random(n) < CTR[a]).astype(float), "propensity": 1 / K})


def test_hand_computed_estimates_on_a_tiny_log():
    log = pd.DataFrame({"action": [0, 1, 1, 0], "reward": [1.0, 0.0, 1.0, 0.0], "propensity": [0.5, 0.5, 0.5, 0.5]})
    target = np.tile([0.8, 0.2], (4, 1))
    est = estimate_policy_value(log, target, np.random.default_rng(0), estimators=["ipw", "snipw"], n_boot=10)
    # weights: 1.6, 0.4, 0.4, 1.6 → IPW = (1.6 + 0.4) / 4; SNIPW = 2.0 / 4.0
    assert est["ipw"].value == pytest.approx(0.5)
    assert est["snipw"].value == pytest.approx(0.5)
    # A second log, where the shrinkage of the reward model matters.
    log = log.assign(reward=[1.0, 0.0, 1.0, 1.0])
    est = estimate_policy_value(log, target, np.random.default_rng(0), shrunk_ctr_model(2.0), n_boot=10)
    # base 0.75; q0 = (2 + 2·0.75) / 4 = 0.875, q1 = (1 + 1.5) / 4 = 0.625 → DM = 0.8·0.875 + 0.2·0.625
    assert est["dm"].value == pytest.approx(0.825)
    # DR = DM + mean w(r − q) = 0.825 + (0.2 − 0.25 + 0.15 + 0.2) / 4; IPW = 3.6 / 4
    assert est["dr"].value == pytest.approx(0.9)
    assert est["ipw"].value == pytest.approx(0.9)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_estimator_recovers_a_known_policy_value(estimator):
    log = _uniform_log(20_000, seed=3)
    probs = np.array([0.05, 0.05, 0.1, 0.3, 0.5])
    truth = float(probs @ CTR)  # 0.207
    est = estimate_policy_value(log, np.tile(probs, (len(log), 1)), np.random.default_rng(1),
                                shrunk_ctr_model(10.0), estimators=[estimator], n_boot=100)[estimator]
    assert est.relative_error(truth) < 0.05
    assert est.covers(truth)
    assert est.high - est.low < 0.03


@pytest.mark.slow
def test_pushwise_decision_logs_with_varying_propensities():
    """Pushwise's own decisions: an epsilon-greedy logger whose propensity differs per user (decisions.propensity)."""
    rng = np.random.default_rng(5)
    n = 30_000
    favourite = rng.integers(0, K, n)  # the logging policy's top item differs per user
    explore = rng.random(n) < 0.3
    action = np.where(explore, rng.integers(0, K, n), favourite)
    propensity = np.where(action == favourite, 0.7 + 0.3 / K, 0.3 / K)
    decisions = pd.DataFrame({"decision_id": [f"d{i}" for i in range(n)], "item_id": action,
                              "propensity": propensity, "clicked": (rng.random(n) < CTR[action]).astype(float)})
    log = decisions.rename(columns={"item_id": "action", "clicked": "reward"})
    target = np.zeros((n, K))
    target[:, 4] = 1.0  # always the best item: true value 0.30
    for name, est in estimate_policy_value(log, target, np.random.default_rng(2), shrunk_ctr_model(10.0),
                                           n_boot=100).items():
        assert est.relative_error(0.30) < 0.08, name
        assert est.covers(0.30), name


@pytest.mark.slow
def test_another_campaigns_open_bandit_format_logs_with_a_drifting_target():
    """Another campaign, same format as Open Bandit: a target whose item probabilities drift over the day."""
    rng = np.random.default_rng(9)
    n, items = 40_000, 4
    ctr = np.array([0.01, 0.03, 0.06, 0.12])
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, 86_400, n)), unit="s")
    phase = np.linspace(0, 1, n)
    # Target probability of the best item grows from 0.1 to 0.7 during the day; the rest split evenly.
    best = 0.1 + 0.6 * phase
    dist = np.column_stack([(1 - best) / 3] * 3 + [best])
    truth = float((dist @ ctr).mean())
    shown = (rng.random(n)[:, None] > np.cumsum(dist, axis=1)).sum(axis=1)
    target_log = pd.DataFrame({"ts": ts, "action": shown, "group": 1, "propensity": dist[np.arange(n), shown]})
    random_actions = rng.integers(0, items, n)
    impressions = pd.DataFrame({"ts": ts, "item_id": [f"obd:{a}" for a in random_actions], "position": 1,
                                "click": (rng.random(n) < ctr[random_actions]).astype(int), "propensity": 1 / items})
    log = bandit_log(impressions)
    aware = drift_aware_target(target_log, log, items)
    naive = naive_target(target_log, log, items)
    est = estimate_policy_value(log, aware, np.random.default_rng(4), shrunk_ctr_model(), n_boot=100)
    assert est["ipw"].relative_error(truth) < 0.08 and est["ipw"].covers(truth)
    assert est["dr"].relative_error(truth) < 0.08
    # Averaging the logged propensities over-weights the best item (logged mostly when it was likely).
    assert naive[:, 3].mean() > aware[:, 3].mean() + 0.015
    assert abs(aware[:, 3].mean() - best.mean()) < 0.03


@pytest.mark.parametrize(("log", "target", "message"), [
    (pd.DataFrame({"action": [0], "reward": [1.0]}), np.ones((1, 1)), "bandit log lacks column(s): propensity"),
    (pd.DataFrame({"action": [0], "reward": [1.0], "propensity": [0.0]}), np.ones((1, 1)),
     "propensity must be in (0, 1] on every row"),
    (pd.DataFrame({"action": [2], "reward": [1.0], "propensity": [0.5]}), np.full((1, 2), 0.5),
     "action must be in [0, 2) to index target"),
    (pd.DataFrame({"action": [0], "reward": [1.0], "propensity": [0.5]}), np.full((1, 2), 0.4),
     "target probabilities must sum to 1 in every row"),
    (pd.DataFrame({"action": [0], "reward": [1.0], "propensity": [0.5]}), np.full((2, 2), 0.5),
     "target must be an array of shape (rows, actions), got (2, 2) for 1 rows"),
    (pd.DataFrame({"action": [0, 1], "reward": [1.0, np.nan], "propensity": [0.5, 0.5]}), np.full((2, 2), 0.5),
     "reward must be a finite number on every row (1 missing or infinite)"),
    (pd.DataFrame({"action": [0.5], "reward": [1.0], "propensity": [0.5]}), np.full((1, 2), 0.5),
     "action must be a whole number on every row (1 are not)"),
    (pd.DataFrame({"action": [0, np.nan], "reward": [1.0, 0.0], "propensity": [0.5, 0.5]}), np.full((2, 2), 0.5),
     "action must be a whole number on every row (1 are not)"),
    (pd.DataFrame({"action": ["a"], "reward": [1.0], "propensity": [0.5]}), np.full((1, 2), 0.5),
     "action must be a whole number on every row (1 are not)"),
    (pd.DataFrame({"action": [0], "reward": ["yes"], "propensity": [0.5]}), np.full((1, 2), 0.5),
     "reward must be a finite number on every row (1 missing or infinite)"),
    (pd.DataFrame({"action": [0], "reward": [1.0], "propensity": ["x"]}), np.full((1, 2), 0.5),
     "propensity must be in (0, 1] on every row"),
    (pd.DataFrame({"action": [0], "reward": [1.0], "propensity": [0.5]}), np.array([[1.5, -0.5]]),
     "target probabilities must be in [0, 1] in every row"),
])
def test_invalid_logs_are_refused_with_exact_messages(log, target, message):
    with pytest.raises(InputError) as err:
        check_log(log, target)
    assert str(err.value) == message


def test_unknown_estimator_is_refused():
    log = _uniform_log(10, 0)
    with pytest.raises(InputError, match="unknown estimator\\(s\\): magic"):
        estimate_policy_value(log, np.full((10, K), 1 / K), np.random.default_rng(0), estimators=["magic"])


def test_estimate_helpers():
    e = Estimate("dm", 0.9, 0.8, 1.1, 10)
    assert e.relative_error(1.0) == pytest.approx(0.1)
    assert e.covers(1.0) and not e.covers(1.2)


def test_ope_report_names_the_policies_the_store_has_when_one_is_missing(tmp_path):
    from engine.evaluation.bandit import ope_report
    from engine.ingest import ingest_path
    from engine.store import Store

    src = Path(__file__).resolve().parents[2] / "data" / "open_bandit" / "bts" / "all.csv"
    header, *rows = src.read_text().splitlines()[:4]
    path = tmp_path / "logs" / "all.csv"                       # a folder that names no policy
    path.parent.mkdir()
    path.write_text("\n".join([header, *rows]) + "\n")
    with Store(":memory:") as store:
        ingest_path(store, path)
        with pytest.raises(InputError) as err:
            ope_report(store, n_boot=10)
    assert str(err.value) == ("no Open Bandit impressions of policy 'random' (the store has: unknown 3); ingest its "
                              "log from a folder named after the policy, e.g. open_bandit/bts/all.csv")


def test_weight_check_flags_propensities_of_the_wrong_policy_and_a_target_the_log_does_not_cover():
    from engine.evaluation.ope import weight_check

    log = _uniform_log(20_000, 11)
    target = np.tile([0.1, 0.1, 0.2, 0.3, 0.3], (len(log), 1))
    good = weight_check(log, target)
    assert good.ok and good.low <= 1 <= good.high and good.unlogged_mass == 0 and "WARNING" not in good.describe()
    # another campaign's log: only actions 0-1 shown, but the propensities still say 1/5 (the old policy's)
    subset = log[log["action"] < 2].reset_index(drop=True)
    stale = weight_check(subset, np.tile([0.5, 0.5, 0, 0, 0], (len(subset), 1)))
    assert stale.mean == pytest.approx(2.5) and not stale.ok
    assert stale.describe().endswith("WARNING the logged propensities do not look like the logging policy's")
    # a target that puts 60 % on actions the log never took
    uncovered = weight_check(subset.assign(propensity=0.5), np.tile([0.2, 0.2, 0.2, 0.2, 0.2], (len(subset), 1)))
    assert uncovered.unlogged_mass == pytest.approx(0.6) and not uncovered.ok
    assert uncovered.describe().endswith("WARNING the log does not cover the target, IPW-type estimates are biased low")
