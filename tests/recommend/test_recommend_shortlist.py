"""Two-stage scoring: the linear first stage, the per-user shortlist and its measured recall."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.recommend.shortlist import fit_first_stage, log_odds, shortlist_mask, shortlist_recall


def test_first_stage_recovers_an_exactly_linear_score_and_treats_nan_as_zero() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((500, 4))
    x[:, 3] = 1.0                                        # a constant column must not break the solve
    raw = x[:, :3] @ np.array([2.0, -1.0, 0.5]) + 0.25
    stage = fit_first_stage(x, raw)
    np.testing.assert_allclose(stage.score(x), raw, atol=1e-4)
    np.testing.assert_allclose(stage.score(np.array([[np.nan, 1.0, 0.0, 1.0]])),
                               stage.score(np.array([[0.0, 1.0, 0.0, 1.0]])))


def test_first_stage_keeps_small_scale_columns_beside_large_counts() -> None:
    rng = np.random.default_rng(4)
    x = np.column_stack([rng.integers(0, 50_000, 2_000), rng.random(2_000) * 1e-3, rng.random(2_000)])
    raw = 1e-5 * x[:, 0] + 800.0 * x[:, 1] - 2.0 * x[:, 2]  # the share column moves raw as much as the count
    stage = fit_first_stage(x, raw)
    np.testing.assert_allclose(stage.weights, [1e-5, 800.0, -2.0], rtol=1e-3)


@pytest.mark.parametrize(("x", "raw", "message"), [
    (np.ones((3, 2)), np.ones(4), "fit_first_stage needs rows × features and one score per row, got (3, 2) and (4,)"),
    (np.ones((2, 2)), np.ones(2), "fit_first_stage needs more rows than features, got 2 rows"),
])
def test_first_stage_rejects_bad_shapes_with_exact_messages(x, raw, message) -> None:
    with pytest.raises(InputError) as err:
        fit_first_stage(x, raw)
    assert str(err.value) == message


def test_shortlist_keeps_each_users_k_best_rows_ties_to_the_earlier_row() -> None:
    group = np.array([0, 0, 0, 0, 1, 1, 2])
    prior = np.array([0.1, 0.9, 0.5, 0.9, 0.3, 0.2, 0.0])
    # user 0: 0.9 (row 1) and 0.9 (row 3) tie for first, row 1 wins second place over row 2's 0.5
    assert shortlist_mask(group, prior, 2).tolist() == [False, True, False, True, True, True, True]
    assert shortlist_mask(group, prior, 1).tolist() == [False, True, False, False, True, False, True]


def test_shortlist_of_equal_sized_lists_matches_the_ragged_rule() -> None:
    rng = np.random.default_rng(5)
    prior = np.round(rng.random(600), 1)                 # many ties
    group = np.repeat(np.arange(100), 6)
    ragged = np.r_[group, 100]                           # one more user with one row forces the general path
    for k in (1, 3, 6):
        even = shortlist_mask(group, prior, k)
        assert (even == shortlist_mask(ragged, np.r_[prior, 0.0], k)[:-1]).all()
        assert (even.reshape(100, 6).sum(axis=1) == k).all()


@pytest.mark.parametrize(("group", "k", "message"), [
    (np.array([0, 1]), 0, "shortlist k must be at least 1, got 0"),
    (np.array([1, 0]), 1, "rows must be grouped by user: group numbers must not decrease"),
])
def test_shortlist_rejects_bad_input_with_exact_messages(group, k, message) -> None:
    with pytest.raises(InputError) as err:
        shortlist_mask(group, np.zeros(2), k)
    assert str(err.value) == message


def test_recall_counts_the_boosters_top_items_that_survived_the_cut() -> None:
    group = np.array([0, 0, 0, 0, 1, 1, 1])
    full = np.array([4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0])
    # user 0 kept its best and third; user 1 (three items) kept all but its best
    kept = np.array([True, False, True, False, True, True, False])
    r = shortlist_recall(group, full, kept, n=2, k=2)
    assert (r.top1, r.users, r.n, r.k) == (0.5, 2, 2, 2)
    assert r.top_n == pytest.approx((1 / 2 + 1 / 2) / 2)  # user 0: 1 of its top 2; user 1: item 5 of (6, 5)
    all_kept = shortlist_recall(group, full, np.ones(7, dtype=bool), n=10, k=10)
    assert (all_kept.top1, all_kept.top_n) == (1.0, 1.0)  # users with fewer than n items count their whole list


def test_log_odds_inverts_the_sigmoid_and_stays_finite_at_the_ends() -> None:
    z = np.array([-3.0, 0.0, 2.5])
    np.testing.assert_allclose(log_odds(1 / (1 + np.exp(-z))), z, atol=1e-9)
    assert np.isfinite(log_odds(np.array([0.0, 1.0]))).all()
