"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.evaluation.metrics import bootstrap_mean, per_user_ranking, top_k_hits


def test_recall_and_ndcg_by_hand():
    recs = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b"], "item_id": ["x", "y", "z", "x", "q"],
                         "rank": [0, 1, 2, 0, 1]})
    truth = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["y", "w", "q", "x"]})
    per = per_user_ranking(recs, truth, k=2).set_index("user_id")
    # a: hit y at rank 1 of 2 relevant → recall 0.5; DCG 1/log2(3), IDCG 1 + 1/log2(3)
    assert per.loc["a", "recall"] == pytest.approx(0.5)
    assert per.loc["a", "ndcg"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    # b: hit q at rank 1 of 1 relevant → recall 1, NDCG 1/log2(3); c: no recommendations → 0
    assert per.loc["b", "recall"] == 1.0 and per.loc["b", "ndcg"] == pytest.approx(1 / np.log2(3))
    assert per.loc["c", "recall"] == 0.0 and per.loc["c", "ndcg"] == 0.0


def test_ranks_beyond_k_do_not_count():
    recs = pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "rank": [10]})
    truth = pd.DataFrame({"user_id": ["a"], "item_id": ["x"]})
    assert per_user_ranking(recs, truth, k=10)["recall"].tolist() == [0.0]


def test_top_k_hits_by_hand():
    ranked = pd.DataFrame({"target": [0, 0, 0, 1, 1, 1], "hour": [9, 12, 15, 20, 8, 10], "rank": [0, 1, 2, 0, 1, 2]})
    observed = pd.DataFrame({"target": [0, 1], "hour": [12, 10]})
    assert top_k_hits(ranked, observed, "hour", 1).tolist() == [0.0, 0.0]
    assert top_k_hits(ranked, observed, "hour", 2).tolist() == [1.0, 0.0]
    assert top_k_hits(ranked, observed, "hour", 3).tolist() == [1.0, 1.0]


def test_bootstrap_mean_resamples_clusters():
    values = np.array([1.0, 1.0, 1.0, 0.0])
    clusters = np.array(["u", "u", "u", "v"])
    mean, low, high = bootstrap_mean(values, np.random.default_rng(0), 500, clusters)
    assert mean == 0.75
    # Resampling two users: the mean is 1 (u, u), 0 (v, v) or 0.75 (u, v), so the interval spans [0, 1].
    assert low == 0.0 and high == 1.0
    mean, low, high = bootstrap_mean(np.full(50, 0.3), np.random.default_rng(0), 100)
    assert (mean, low, high) == pytest.approx((0.3, 0.3, 0.3))
