"""Metrics are pure functions with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from engine.training.metrics import auc, bootstrap_intervals, hour_hit_rate, log_loss, ranking_metrics


def test_auc_and_log_loss_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(int)
    p = np.clip(np.round(rng.random(300) * 0.5 + 0.3 * y, 2), 0.01, 0.99)  # rounded: ties on purpose
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p))
    assert np.isnan(auc(np.zeros(5), np.arange(5)))


def test_bootstrap_intervals_bracket_the_estimate_and_are_seeded() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.1).astype(float)
    good, noise = 0.05 + 0.4 * y * rng.random(2000), rng.random(2000) * 0.2
    out = bootstrap_intervals(y, {"good": good, "noise": noise}, np.random.default_rng(2), n_boot=300)
    again = bootstrap_intervals(y, {"good": good, "noise": noise}, np.random.default_rng(2), n_boot=300)
    assert out == again
    for name in ("good", "noise"):
        assert out[name]["auc_low"] <= out[name]["auc"] <= out[name]["auc_high"]
    assert out["noise-good"]["auc_diff_high"] < 0  # paired: noise is clearly worse
    assert out["noise"]["auc_low"] < 0.5 < out["noise"]["auc_high"]


def test_ranking_metrics_by_hand() -> None:
    recs = pd.DataFrame({"user_id": ["u", "u", "u", "v"], "item_id": ["a", "b", "c", "x"], "rank": [0, 1, 2, 0]})
    truth = pd.DataFrame({"user_id": ["u", "u", "w"], "item_id": ["b", "z", "a"]})
    out = ranking_metrics(recs, truth, k=2)
    # u: hit b at rank 1 → recall 1/2, dcg 1/log2(3), idcg 1 + 1/log2(3); w: nothing recommended → 0
    assert out["recall@2"] == pytest.approx((0.5 + 0.0) / 2)
    assert out["ndcg@2"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)) / 2)
    assert out["users"] == 2


def test_hour_hit_rate_counts_each_engagement() -> None:
    predicted = pd.DataFrame({"user_id": ["u", "u", "v"], "rank": [0, 1, 0], "local_hour": [12, 9, 20]})
    observed = pd.DataFrame({"user_id": ["u", "u", "u", "v", "x"], "local_hour": [12, 9, 3, 21, 12]})
    assert hour_hit_rate(predicted, observed, 1) == pytest.approx(1 / 5)
    assert hour_hit_rate(predicted, observed, 2) == pytest.approx(2 / 5)
    assert np.isnan(hour_hit_rate(predicted, observed.iloc[:0], 1))
