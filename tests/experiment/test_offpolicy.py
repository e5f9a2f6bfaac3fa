"""Off-policy evaluation on a campaign's own logged decisions, on a seeded world with known click rates."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.errors import InputError
from engine.experiment.offpolicy import campaign_log, estimate_campaign_policy, target_probabilities
from engine.store import Store

NOW = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
#: true click rate of each template, and of each item rank (top-ranked items are clicked more)
TEMPLATE_CTR = {"warm": 0.30, "plain": 0.10}
RANK_CTR = [0.25] + [0.05] * 9
EPSILON = 0.3


def _world(n: int = 4000, seed: int = 3, path: str = ":memory:", ranks: np.ndarray | None = None) -> Store:
    """Copy logged uniform over two templates, items epsilon-greedy over 10 ranks; clicks drawn from the rates.

    ``ranks``: each user's number of candidates (the policy explores min(10, that) ranks); 10 for all by default.
    """
    rng = np.random.default_rng(seed)
    template = rng.choice(list(TEMPLATE_CTR), n)
    explore = rng.random(n) < EPSILON
    k = np.full(n, 10) if ranks is None else np.minimum(ranks, 10)
    rank = np.where(explore, rng.integers(0, 10, n) % k, 0) if ranks is None else \
        np.where(explore, np.floor(rng.random(n) * k).astype(int), 0)
    ctr = np.array([TEMPLATE_CTR[t] for t in template]) * np.array(RANK_CTR)[rank] / RANK_CTR[0]
    clicked = rng.random(n) < ctr
    ids = [f"d{i:05d}" for i in range(n)]
    decisions = pd.DataFrame({
        "decision_id": ids, "campaign_id": "c1", "user_id": [f"u{i}" for i in range(n)], "arm": "treatment",
        "action": "send", "position": rank, "template_id": template,
        "propensity": EPSILON / k + (1 - EPSILON) * (rank == 0), "template_propensity": 0.5,
        "policy": f"epsilon_greedy(epsilon={EPSILON:g},top_k=10)", "send_at": pd.Timestamp(NOW), "message_class": "marketing",
        "as_of": pd.Timestamp(NOW), "created_at": pd.Timestamp(NOW)})
    sends = pd.DataFrame({"send_id": [f"s{i:05d}" for i in range(n)], "decision_id": ids, "campaign_id": "c1",
                          "user_id": decisions["user_id"], "device_id": "dev", "vendor": "fcm",
                          "message_class": "marketing", "title": "t", "body": "b", "due_at": pd.Timestamp(NOW),
                          "state": "delivered", "attempts": 1, "next_attempt_at": pd.Timestamp(NOW),
                          "sent_at": pd.Timestamp(NOW), "updated_at": pd.Timestamp(NOW)})
    clicks = sends[clicked].assign(
        event_id=lambda f: "e" + f["send_id"], event_type="push_click",
        ts=pd.Timestamp(NOW + timedelta(hours=1)), item_id=None,
        properties=lambda f: [json.dumps({"send_id": s}) for s in f["send_id"]])
    store = Store(path)
    for table, frame in (("decisions", decisions), ("sends", sends)):
        store.con.register("pw_t", frame)
        store.execute(f"INSERT INTO {table} BY NAME SELECT * FROM pw_t")
        store.con.unregister("pw_t")
    store.con.register("pw_t", clicks[["event_id", "user_id", "item_id", "event_type", "ts", "properties"]])
    store.execute("""INSERT INTO events (event_id, user_id, item_id, event_type, ts, properties, source, simulated,
                                         ingested_at)
                     SELECT event_id, user_id, item_id, event_type, ts, CAST(properties AS JSON), 'api', false, ts
                     FROM pw_t""")
    store.con.unregister("pw_t")
    return store


@pytest.fixture(scope="module")
def world():
    store = _world()
    yield store
    store.close()


def test_the_log_carries_the_logged_actions_propensities_and_rewards(world):
    log, actions = campaign_log(world.con, "c1", "copy")
    assert actions == ["plain", "warm"] and len(log) == 4000
    assert set(log["propensity"]) == {0.5} and log["reward"].isin([0.0, 1.0]).all()
    item_log, ranks = campaign_log(world.con, "c1", "item")
    assert ranks[0] == "rank 0" and item_log["propensity"].min() == pytest.approx(0.03)


#: The logged item policy draws rank 0 with probability 0.7 + 0.3/10 and each other rank with 0.03, and a
#: rank other than 0 clicks at a fifth of rank 0's rate: its mean rank factor is 0.73 + 0.27 * 0.2.
RANK_FACTOR = 0.73 + 0.27 * 0.2


@pytest.mark.parametrize(("choice", "target", "truth"), [
    ("copy", "always:warm", 0.30 * RANK_FACTOR),
    ("copy", "always:plain", 0.10 * RANK_FACTOR),
    ("copy", "uniform", 0.20 * RANK_FACTOR),
    ("item", "greedy", 0.20),                        # templates as logged (uniform), always rank 0
    ("item", "epsilon:1", 0.20 * (0.1 + 0.9 * 0.2)),  # every rank alike
])
def test_estimates_recover_the_known_value_within_their_interval(world, choice, target, truth):
    out = estimate_campaign_policy(world.con, "c1", target, np.random.default_rng(0), choice=choice, n_boot=300)
    for name in ("ipw", "snipw", "dr"):
        assert out.estimates[name].relative_error(truth) < 0.15, (name, out.estimates[name], truth)
    assert out.logged == pytest.approx(0.20 * RANK_FACTOR, abs=0.02)


def test_intervals_cover_the_truth_about_as_often_as_they_claim():
    covered = {"ipw": 0, "dr": 0}
    for seed in range(12):                          # 12 independent worlds; a 95% interval misses ~0.6 of them
        with _world(n=2000, seed=100 + seed) as store:
            out = estimate_campaign_policy(store.con, "c1", "always:warm", np.random.default_rng(seed), n_boot=200)
        for name in covered:
            covered[name] += out.estimates[name].covers(0.30 * RANK_FACTOR)
    assert min(covered.values()) >= 10, covered


def test_a_better_target_is_estimated_above_the_logged_policy(world):
    warm = estimate_campaign_policy(world.con, "c1", "always:warm", np.random.default_rng(1), n_boot=200)
    assert warm.estimates["dr"].low > warm.logged


@pytest.mark.parametrize(("choice", "target", "message"), [
    ("copy", "always:loud", "unknown target 'always:loud' for choice 'copy'; choose from uniform, always:plain"),
    ("item", "epsilon:2", "epsilon must be a number in [0, 1], got '2'"),
    ("item", "uniform", "unknown target 'uniform' for choice 'item'; choose from greedy, epsilon:<e>"),
])
def test_unknown_targets_are_named(choice, target, message):
    actions = ["plain", "warm"] if choice == "copy" else [f"rank {i}" for i in range(10)]
    with pytest.raises(InputError, match=re.escape(message)):
        target_probabilities(3, actions, choice, target)


def test_a_campaign_without_sends_is_an_error(world):
    with pytest.raises(InputError, match="campaign 'nope' has no sent decisions"):
        campaign_log(world.con, "nope")


def test_cli_prints_the_estimates_as_json(tmp_path, capsys):
    from engine.cli import main

    _world(n=1000, path=str(tmp_path / "w.duckdb")).close()
    assert main(["--db", str(tmp_path / "w.duckdb"), "experiment", "ope", "c1", "--target", "always:warm",
                 "--n-boot", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["sends"], out["choice"], out["reward"]) == (1000, "copy", "clicked")
    assert set(out["estimates"]) == {"ipw", "snipw", "dm", "dr"}
    assert out["weights"]["ok"] is True and out["weights"]["unlogged_mass"] == 0
    assert out["estimates"]["dr"]["ci"][0] < out["estimates"]["dr"]["value"] < out["estimates"]["dr"]["ci"][1]


def test_an_epsilon_target_explores_each_users_own_ranks_as_the_logged_policy_did():
    """Users with 3 candidates were explored over 3 ranks: a target over 10 ranks would put 70 % of its
    exploration on items those users never had, and its estimate would mix in ranks that do not exist."""
    n = 6000
    ranks = np.where(np.arange(n) % 2 == 0, 3, 10)
    with _world(n=n, seed=5, ranks=ranks) as store:
        log, _ = campaign_log(store.con, "c1", "item")
        assert sorted(set(log["n_actions"])) == [3, 10]
        out = estimate_campaign_policy(store.con, "c1", "epsilon:1", np.random.default_rng(0), choice="item",
                                       n_boot=200)
        probs = target_probabilities(len(log), [f"rank {i}" for i in range(10)], "item", "epsilon:1",
                                     log["n_actions"].to_numpy())
    # truth: templates as logged (mean 0.20 at rank 0), every rank of the user's own set alike
    truth = 0.20 * (0.5 * (1 + 2 * 0.2) / 3 + 0.5 * (0.1 + 0.9 * 0.2))
    assert probs[0, 3:].sum() == 0 and probs[0, :3] == pytest.approx([1 / 3] * 3)
    for name in ("ipw", "snipw", "dr"):
        assert out.estimates[name].relative_error(truth) < 0.15, (name, out.estimates[name], truth)


@pytest.mark.parametrize(("policy", "propensity", "top_k", "message"), [
    ("greedy", 1.0, None, "campaign 'c1' logged its items with a greedy policy (every propensity 1): it never "
                          "tried another rank, so no other item policy can be estimated from its decisions"),
    ("epsilon_greedy(epsilon=0.3,top_k=10)", 0.03, 5, "--top-k 5 differs from the top_k 10 campaign 'c1' "
                                                       "logged in decisions.policy"),
    ("epsilon_greedy(epsilon=0.3,top_k=10)", 0.2, None, "1 sent decisions of 'c1' have a propensity that "
                                                        "epsilon_greedy(epsilon=0.3,top_k=10) cannot give"),
    ("softmax(temperature=1,top_k=10)", 0.2, None, "cannot tell how many ranks each user had under "
                                                   "'softmax(temperature=1,top_k=10)'"),
])
def test_item_logs_the_estimators_cannot_use_are_refused_with_the_reason(policy, propensity, top_k, message):
    with Store(":memory:") as store:
        store.execute("""INSERT INTO decisions (decision_id, campaign_id, user_id, arm, action, position, template_id,
                                                propensity, template_propensity, policy, message_class, as_of,
                                                created_at)
                         VALUES ('d1', 'c1', 'u1', 'treatment', 'send', 1, 't', ?, 1.0, ?, 'marketing', now(), now())""",
                      [propensity, policy])
        with pytest.raises(InputError, match=re.escape(message)):
            campaign_log(store.con, "c1", "item", top_k=top_k)


def test_items_the_volume_rule_skipped_count_as_decisions_without_a_click():
    """With [volume], a low-scored item is skipped, not sent: the skip depends on the item drawn, so leaving
    those decisions out keeps rank 0 and drops the explored low ranks, and over-states every target."""
    with _world(n=8000, seed=9) as store:
        skipped = store.con.execute("SELECT decision_id FROM decisions WHERE position >= 5").df()["decision_id"].tolist()
        store.execute("UPDATE decisions SET action = 'skip', skip_reason = 'low_value' WHERE position >= 5")
        store.execute("DELETE FROM events WHERE properties->>'send_id' IN (SELECT send_id FROM sends "
                      "WHERE list_contains($ids, decision_id))", {"ids": skipped})
        store.execute("DELETE FROM sends WHERE list_contains($ids, decision_id)", {"ids": skipped})
        log, _ = campaign_log(store.con, "c1", "item")
        assert len(log) == 8000 and log.loc[log["decision_id"].isin(skipped), "reward"].eq(0).all()
        greedy = estimate_campaign_policy(store.con, "c1", "greedy", np.random.default_rng(0), choice="item",
                                          n_boot=200)
        uniform = estimate_campaign_policy(store.con, "c1", "epsilon:1", np.random.default_rng(0), choice="item",
                                           n_boot=200)
        copy_log, _ = campaign_log(store.con, "c1", "copy")      # the copy does not change what is skipped
        assert len(copy_log) == 8000 - len(skipped)
    # per decision with an item: greedy always sends rank 0 (0.20); uniform sends ranks 0-4 (0.20, 4 × 0.04)
    for name in ("ipw", "snipw", "dr"):
        assert greedy.estimates[name].relative_error(0.20) < 0.1, (name, greedy.estimates[name])
        assert uniform.estimates[name].relative_error(0.20 * (0.1 + 0.4 * 0.2)) < 0.2, (name, uniform.estimates[name])


def test_a_template_the_campaign_has_but_never_chose_is_part_of_the_copy_targets():
    """'uniform' means every template of the campaign, not only those the logs happen to show; the weight check
    then says the log cannot speak for the template it never tried."""
    with _world(n=2000, seed=4) as store:
        spec = {"id": "c1", "templates": [{"id": "warm"}, {"id": "plain"}, {"id": "loud"}]}
        store.execute("INSERT INTO campaigns (campaign_id, name, spec, as_of, created_at) VALUES ('c1', 'C', ?, now(), now())",
                      [json.dumps(spec)])
        log, actions = campaign_log(store.con, "c1", "copy")
        assert actions == ["warm", "plain", "loud"] and set(log["n_actions"]) == {3}
        uniform = estimate_campaign_policy(store.con, "c1", "uniform", np.random.default_rng(0), n_boot=50)
        loud = estimate_campaign_policy(store.con, "c1", "always:loud", np.random.default_rng(0), n_boot=50)
    assert uniform.weights.unlogged_mass == pytest.approx(1 / 3) and not uniform.weights.ok
    assert loud.weights.unlogged_mass == pytest.approx(1.0) and "WARNING the log does not cover" in loud.weights.describe()
