"""Policies log the probability they actually used: propensities sum to one and match the draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.errors import InputError
from engine.recommend import CHOICE_COLUMNS, EpsilonGreedy, Greedy, Softmax, action_probabilities, choose
from engine.recommend.policy import choose_rows


def scored_frame(n_users: int = 3, n_items: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{i}" for i in range(n_users)], n_items),
            "item_id": np.tile([f"i{j}" for j in range(n_items)], n_users),
            "score": rng.uniform(0.01, 0.5, n_users * n_items),
        }
    )
    return frame.sample(frac=1.0, random_state=1).iloc[:-1]  # shuffled; the last user has 4 items


POLICIES = [EpsilonGreedy(epsilon=0.2, top_k=3), EpsilonGreedy(epsilon=0.1, top_k=10), Softmax(0.5, top_k=3),
            Softmax(2.0, top_k=10), Greedy()]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_probabilities_sum_to_one_per_user(policy) -> None:
    probs = action_probabilities(scored_frame(), policy)
    assert probs.groupby("user_id")["probability"].sum().to_numpy() == pytest.approx(1.0)
    assert (probs["probability"] >= 0).all()


def test_epsilon_greedy_probabilities_exactly() -> None:
    probs = action_probabilities(scored_frame(), EpsilonGreedy(epsilon=0.2, top_k=3))
    u0 = probs[probs["user_id"] == "u0"]
    assert u0["position"].tolist() == [0, 1, 2, 3, 4]
    assert u0["score"].is_monotonic_decreasing
    assert u0["probability"].tolist() == pytest.approx([0.8 + 0.2 / 3, 0.2 / 3, 0.2 / 3, 0.0, 0.0])


def test_softmax_follows_the_logit_of_the_score() -> None:
    probs = action_probabilities(scored_frame(), Softmax(temperature=1.0, top_k=2))
    u0 = probs[probs["user_id"] == "u0"].head(2)
    odds = (u0["score"] / (1 - u0["score"])).to_numpy()
    assert u0["probability"].tolist() == pytest.approx((odds / odds.sum()).tolist())


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_logged_propensity_is_the_probability_of_the_chosen_item(policy) -> None:
    scored = scored_frame()
    probs = action_probabilities(scored, policy).set_index(["user_id", "item_id"])["probability"]
    picks = choose(scored, policy, np.random.default_rng(4))
    assert list(picks.columns) == list(CHOICE_COLUMNS) and picks["user_id"].is_unique
    expected = probs.loc[list(zip(picks["user_id"], picks["item_id"], strict=True))].to_numpy()
    np.testing.assert_allclose(picks["propensity"], expected)
    assert (picks["policy"] == policy.name).all() and (picks["propensity"] > 0).all()


def test_draw_frequencies_match_the_logged_probabilities() -> None:
    """Many users with identical candidates: choice frequencies must match the stated distribution."""
    one = scored_frame(n_users=1, seed=3)
    n = 20_000
    many = pd.DataFrame({
        "user_id": np.repeat([f"u{k:05d}" for k in range(n)], len(one)),
        "item_id": np.tile(one["item_id"].to_numpy(), n),
        "score": np.tile(one["score"].to_numpy(), n),
    })
    policy = Softmax(temperature=0.3, top_k=4)
    picks = choose(many, policy, np.random.default_rng(9))
    stated = action_probabilities(one, policy).set_index("item_id")["probability"]
    observed = picks["item_id"].value_counts(normalize=True).reindex(stated.index, fill_value=0.0)
    assert np.abs(observed - stated).max() < 0.015  # ~4 standard errors at n = 20,000


def test_same_seed_same_choices() -> None:
    a = choose(scored_frame(), EpsilonGreedy(0.5), np.random.default_rng(1))
    b = choose(scored_frame(), EpsilonGreedy(0.5), np.random.default_rng(1))
    pd.testing.assert_frame_equal(a, b)


def test_empty_input_gives_empty_typed_output() -> None:
    out = choose(pd.DataFrame({"user_id": [], "item_id": [], "score": []}), EpsilonGreedy(), np.random.default_rng(0))
    assert out.empty and list(out.columns) == list(CHOICE_COLUMNS)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EpsilonGreedy(epsilon=1.5), "epsilon must be between 0 and 1, got 1.5"),
        (lambda: EpsilonGreedy(top_k=0), "top_k must be a positive integer, got 0"),
        (lambda: Softmax(temperature=0.0), "temperature must be positive, got 0.0"),
        (lambda: Softmax(top_k=2.5), "top_k must be a positive integer, got 2.5"),
    ],
)
def test_invalid_policy_settings(make, message: str) -> None:
    with pytest.raises(InputError) as info:
        make()
    assert str(info.value) == message


def test_scored_frame_must_have_scores() -> None:
    with pytest.raises(InputError, match=r"^scored is missing column\(s\): score$"):
        action_probabilities(pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}), Greedy())


@pytest.mark.parametrize("policy", [EpsilonGreedy(epsilon=0.3, top_k=4), Softmax(temperature=0.7, top_k=5)])
def test_shortlists_of_equal_length_pick_exactly_what_the_general_path_picks(policy):
    rng = np.random.default_rng(11)
    users, size = 400, 7
    user = np.repeat(np.arange(users), size)
    item = np.concatenate([np.sort(rng.choice(50, size, replace=False)) for _ in range(users)])
    score = np.round(rng.random(len(user)), 2)  # rounded: many ties, broken by the lower item
    fast = choose_rows(user, item, score, policy, np.random.default_rng(3))
    shuffled = rng.permutation(len(user))  # not grouped: the general path
    rows, position, propensity = choose_rows(user[shuffled], item[shuffled], score[shuffled], policy,
                                             np.random.default_rng(3))
    np.testing.assert_array_equal(fast[0], shuffled[rows])
    np.testing.assert_array_equal(fast[1], position)
    np.testing.assert_array_equal(fast[2], propensity)
    assert len(np.unique(fast[1])) > 2  # exploration happened: not only the top item
