"""Copy selection: Thompson sampling over templates, learnt from linked opens/clicks, with logged propensity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.errors import CampaignError
from engine.schedule.campaign import CopySettings, parse_campaign
from engine.schedule.copy import choose_templates, template_history, thompson_probabilities
from engine.schedule.planner import plan_campaign
from tests.schedule._history import add_past_sends

AS_OF = datetime(2011, 11, 1, tzinfo=UTC)
TEMPLATES = [{"id": "a", "title": "A {item_name}", "body": "{currency}{price:.2f}"},
             {"id": "b", "title": "B {item_name}", "body": "only {currency}{price:.0f}"}]


def spec(**sections):
    return {"name": "Weekly", "id": "weekly-2", "as_of": "2011-11-01T00:00:00Z", "templates": TEMPLATES,
            "limits": {"holdout_share": 0.0, "frequency_cap": 5}, **sections}


def history(store, per_template: dict[str, tuple[int, int]], country_of=lambda i: "X", due=AS_OF - timedelta(days=7)):
    rows, k = [], 0
    for tid, (trials, clicks) in per_template.items():
        for j in range(trials):
            user = f"h{k:04d}"
            store.execute("INSERT INTO users VALUES (?, ?, 'UTC', 't', NULL, NULL)", [user, country_of(k)])
            rows.append({"user_id": user, "template_id": tid, "due_at": due, "opened": j < clicks,
                         "clicked": j < clicks})
            k += 1
    add_past_sends(store, "weekly-1", "Weekly", rows, AS_OF - timedelta(days=8))


def test_thompson_probabilities_follow_the_evidence():
    rng = np.random.default_rng(1)
    s = CopySettings(samples=20000)
    p = thompson_probabilities(np.array([[0, 0], [1000, 1000], [20, 20]]),
                               np.array([[0, 0], [300, 100], [5, 4]]), s, rng)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert abs(p[0, 0] - 0.5) < 0.02                      # no data: a coin flip
    assert p[1, 0] > 0.999                                # 30% vs 10% on 1,000 sends each: certain
    # Beta(6, 16) vs Beta(5, 17): P(a > b) is about 0.62 (exact by numerical integration: 0.618)
    assert 0.59 < p[2, 0] < 0.65


def test_history_counts_delivered_sends_of_the_same_campaign_name_and_only_rewards_before_as_of(store):
    history(store, {"a": (10, 4), "b": (10, 1)})
    # a failed send does not count; a click after as_of is not known yet; another campaign's sends do not count
    add_past_sends(store, "weekly-1", "Weekly", [
        {"user_id": "h0000", "template_id": "a", "due_at": AS_OF - timedelta(days=2), "state": "failed"},
        {"user_id": "h0001", "template_id": "b", "due_at": AS_OF - timedelta(days=2), "clicked": True,
         "event_at": AS_OF + timedelta(hours=1)}], AS_OF, tag="late")
    add_past_sends(store, "other", "Other", [
        {"user_id": "h0002", "template_id": "a", "due_at": AS_OF - timedelta(days=2), "clicked": True}], AS_OF)
    h = template_history(store, parse_campaign(spec()), AS_OF)
    got = {r.template_id: (r.trials, r.successes) for r in h.itertuples()}
    assert got == {"a": (10, 4), "b": (11, 1)}


def test_choices_follow_the_logged_propensities(store):
    history(store, {"a": (40, 12), "b": (40, 6)})
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(4000)]})
    c = parse_campaign(spec(copy={"samples": 20000}))
    picks = choose_templates(store, users, c, AS_OF, np.random.default_rng(3))
    p_a = picks.loc[picks["template_id"] == "a", "template_propensity"].unique()
    p_b = picks.loc[picks["template_id"] == "b", "template_propensity"].unique()
    assert len(p_a) == len(p_b) == 1 and p_a[0] + p_b[0] == pytest.approx(1.0)
    assert 0.9 < p_a[0] < 0.99                            # Beta(13, 29) vs Beta(7, 35): a is better, not surely
    share_a = (picks["template_id"] == "a").mean()
    assert abs(share_a - p_a[0]) < 3 * np.sqrt(p_a[0] * (1 - p_a[0]) / len(users))
    again = choose_templates(store, users, c, AS_OF, np.random.default_rng(3))
    pd.testing.assert_frame_equal(picks, again)           # seeded: same choices, same propensities


def test_segments_learn_separately(store):
    # country X clicks template a, country Y template b
    history(store, {"a": (60, 0), "b": (60, 0)}, country_of=lambda i: "X" if i % 2 else "Y")
    rows = [{"user_id": f"h{k:04d}", "template_id": "a" if k < 60 else "b", "due_at": AS_OF - timedelta(days=7),
             "clicked": (k < 60) == bool(k % 2)} for k in range(120)]
    add_past_sends(store, "weekly-0", "Weekly", rows, AS_OF - timedelta(days=9))
    for country in ("X", "Y"):
        store.execute("INSERT INTO users VALUES (?, ?, 'UTC', 't', NULL, NULL)", [f"new-{country}", country])
    users = pd.DataFrame({"user_id": ["new-X", "new-Y"]})
    picks = choose_templates(store, users, parse_campaign(spec(copy={"segment_by": "country"})), AS_OF,
                             np.random.default_rng(0))
    assert picks["template_id"].tolist() == ["a", "b"]
    assert (picks["template_propensity"] > 0.99).all()


def test_uniform_policy_and_single_template(store):
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"]})
    picks = choose_templates(store, users, parse_campaign(spec(copy={"policy": "uniform"})), AS_OF,
                             np.random.default_rng(0))
    assert (picks["template_propensity"] == 0.5).all()
    one = parse_campaign({**spec(), "templates": TEMPLATES[:1]})
    assert (choose_templates(store, users, one, AS_OF, np.random.default_rng(0))["template_propensity"] == 1.0).all()


def test_planner_logs_the_chosen_template_its_probability_and_its_copy(store, clock):
    history(store, {"a": (30, 0), "b": (30, 15)})
    store.execute("INSERT INTO items VALUES ('or:A', 'RED MUG', 'or:1', 2.5, 'GBP', 't', NULL)")
    for i in range(30):
        u = f"u{i:02d}"
        store.execute("INSERT INTO users VALUES (?, 'X', 'Europe/London', 't', NULL, NULL)", [u])
        store.execute("INSERT INTO events VALUES (?, ?, 'or:A', 'purchase', ?, NULL, 't', false, ?)",
                      [f"e{i}", u, AS_OF - timedelta(days=3), AS_OF])
        store.execute("INSERT INTO consents VALUES (?, 'push', 'marketing', true, ?, false)", [u, AS_OF])
        store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, registered_at) "
                      "VALUES (?, ?, 'apns', 'app', 'tok', ?)", [f"d{i}", u, AS_OF])

    def chooser(store, user_ids, campaign, as_of, rng):
        return pd.DataFrame({"user_id": user_ids, "item_id": "or:A", "position": 0, "score": 0.3,
                             "propensity": 1.0, "policy": "fake", "model_version": "v"})

    def ranker(store, user_ids, as_of):
        return pd.DataFrame({"user_id": user_ids, "rank": 0, "weekday": 2, "local_hour": 10})

    plan_campaign(store, parse_campaign(spec()), chooser, ranker, clock=clock)
    d = store.df("SELECT * FROM decisions WHERE campaign_id = 'weekly-2'")
    assert len(d) == 30 and (d["template_id"] == "b").mean() > 0.9
    b = d[d["template_id"] == "b"]
    assert (b["title"] == "B Red Mug").all() and (b["body"] == "only £2").all()
    assert (b["template_propensity"] > 0.99).all() and (b["template_propensity"] < 1.0).all()
    sends = store.df("SELECT s.title FROM sends s JOIN decisions d USING (decision_id) "
                     "WHERE d.template_id = 'b' AND d.campaign_id = 'weekly-2'")
    assert (sends["title"] == "B Red Mug").all()


@pytest.mark.parametrize(("copy", "message"), [
    ({"policy": "greedy"}, "copy.policy must be one of 'thompson', 'uniform', got 'greedy'"),
    ({"reward": "buy"}, "copy.reward must be one of 'click', 'open', got 'buy'"),
    ({"segment_by": "city"}, "copy.segment_by must be one of '', 'country', got 'city'"),
    ({"samples": 10}, "copy.samples must be between 100 and 1000000, got 10"),
    ({"prior_alpha": 0}, "copy.prior_alpha must be between 0.001 and 1000000.0, got 0"),
    ({"bandit": 1}, "unknown copy keys: bandit"),
    ("thompson", "[copy] must be a table"),
])
def test_copy_section_is_validated_with_exact_messages(copy, message):
    with pytest.raises(CampaignError) as exc:
        parse_campaign(spec(copy=copy))
    assert str(exc.value) == message
