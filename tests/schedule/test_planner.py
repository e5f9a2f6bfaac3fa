"""The planner: one decision per audience user, holdout, consent, devices, caps, copy, logged propensity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.schedule.campaign import parse_campaign
from engine.schedule.planner import assign_holdout, plan_campaign

AS_OF = datetime(2011, 11, 1, tzinfo=UTC)
SPEC = {
    "name": "Test", "id": "test", "as_of": "2011-11-01T00:00:00Z",
    "templates": [{"id": "a", "title": "{item_name}", "body": "{currency}{price:.2f}"}],
    "schedule": {"quiet_hours": ["21:00", "08:00"]},
    "limits": {"holdout_share": 0.25, "frequency_cap": 1, "frequency_days": 7},
}


def chooser(store, user_ids, campaign, as_of, rng):
    """A fake item policy: everyone gets item A with probability 0.9 (logged), deterministic."""
    return pd.DataFrame({"user_id": user_ids, "item_id": "or:A", "position": 0, "score": 0.3,
                         "propensity": 0.9, "policy": "fake", "model_version": "v-test"})


def ranker(store, user_ids, as_of):
    """A fake send-time model: Wednesday 10:00 local, then Thursday 23:00 (quiet)."""
    n = len(user_ids)
    return pd.DataFrame({"user_id": np.repeat(user_ids, 2), "rank": np.tile([0, 1], n),
                         "weekday": np.tile([2, 3], n), "local_hour": np.tile([10, 23], n)})


@pytest.fixture
def population(store):
    users = [f"u{i:02d}" for i in range(40)]
    store.execute("INSERT INTO items VALUES ('or:A', 'RED MUG', 'or:1', 2.5, 'GBP', 't', NULL)")
    for i, u in enumerate(users):
        tz = "Asia/Tokyo" if i % 2 else "Europe/London"
        store.execute("INSERT INTO users VALUES (?, 'X', ?, 't', NULL, NULL)", [u, tz])
        store.execute("INSERT INTO events VALUES (?, ?, 'or:A', 'purchase', ?, NULL, 't', false, ?)",
                      [f"e{i}", u, AS_OF - timedelta(days=3), AS_OF])
        store.execute("INSERT INTO consents VALUES (?, 'push', 'marketing', ?, ?, false)", [u, i % 10 != 3, AS_OF])
        if i % 10 != 5:
            store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, registered_at) "
                          "VALUES (?, ?, ?, 'app', 'tok', ?)", [f"d{i}", u, "apns" if i % 3 else "fcm", AS_OF])
    return users


def test_every_audience_user_gets_exactly_one_logged_decision(store, population, clock):
    campaign = parse_campaign(SPEC)
    report = plan_campaign(store, campaign, chooser, ranker, clock=clock)
    d = store.df("SELECT * FROM decisions ORDER BY user_id")
    assert len(d) == report.audience == 40
    holdout = set(d.loc[d["arm"] == "holdout", "user_id"])
    expected = {u for u, h in zip(population, assign_holdout("test", pd.Series(population), 0.25), strict=True) if h}
    assert holdout == expected and 0 < len(holdout) < 40
    treat = d[d["arm"] == "treatment"]
    no_consent = {f"u{i:02d}" for i in range(40) if i % 10 == 3} - holdout
    no_device = {f"u{i:02d}" for i in range(40) if i % 10 == 5} - holdout - no_consent
    assert set(treat.loc[treat["skip_reason"] == "no_consent", "user_id"]) == no_consent
    assert set(treat.loc[treat["skip_reason"] == "no_device", "user_id"]) == no_device
    sends = treat[treat["action"] == "send"]
    assert report.sends == len(sends) == 40 - len(holdout) - len(no_consent) - len(no_device)
    assert store.count("sends") == report.sends
    assert (sends["propensity"] == 0.9).all() and (sends["model_version"] == "v-test").all()
    assert (sends["title"] == "Red Mug").all() and (sends["body"] == "£2.50").all()
    # Wednesday 10:00 local: 10:00 UTC in London, 01:00 UTC in Tokyo
    london = sends[sends["user_id"].isin([f"u{i:02d}" for i in range(0, 40, 2)])]
    assert {pd.Timestamp(t).isoformat() for t in london["send_at"]} == {"2011-11-02T10:00:00+00:00"}
    # holdout users keep their would-be item and time for like-for-like comparison, but no send
    h = d[d["arm"] == "holdout"]
    assert h["item_id"].notna().all() and h["send_at"].notna().all()
    assert store.scalar("SELECT count(*) FROM sends s JOIN decisions d USING (decision_id) WHERE d.arm = 'holdout'") == 0


def test_planning_the_same_campaign_again_changes_nothing(store, population, clock):
    campaign = parse_campaign(SPEC)
    plan_campaign(store, campaign, chooser, ranker, clock=clock)
    again = plan_campaign(store, campaign, chooser, ranker, clock=clock)
    assert again.already_planned and store.count("decisions") == 40


def test_frequency_cap_counts_sends_of_other_campaigns(store, population, clock):
    plan_campaign(store, parse_campaign(SPEC), chooser, ranker, clock=clock)
    second = plan_campaign(store, parse_campaign(SPEC | {"id": "test-2", "limits": {"holdout_share": 0.0,
                                                                                  "frequency_cap": 1}}),
                           chooser, ranker, clock=clock)
    first_senders = {r[0] for r in store.execute("SELECT user_id FROM sends WHERE campaign_id = 'test'").fetchall()}
    capped = {r[0] for r in store.execute(
        "SELECT user_id FROM decisions WHERE campaign_id = 'test-2' AND skip_reason = 'frequency_cap'").fetchall()}
    assert capped == first_senders
    assert second.skipped["frequency_cap"] == len(first_senders)


def test_holdout_assignment_is_stable_and_near_its_share():
    users = pd.Series([f"user{i}" for i in range(20_000)])
    a = assign_holdout("camp", users, 0.1)
    assert (a == assign_holdout("camp", users[::-1], 0.1)[::-1]).all()
    assert 0.095 < a.mean() < 0.105


def test_a_changed_campaign_file_with_a_planned_id_is_refused(store, population, clock):
    from engine.errors import CampaignError

    plan_campaign(store, parse_campaign(SPEC), chooser, ranker, clock=clock)
    changed = parse_campaign(SPEC | {"limits": {"holdout_share": 0.5}})
    with pytest.raises(CampaignError, match="already planned from a different file; give the changed campaign a new id"):
        plan_campaign(store, changed, chooser, ranker, clock=clock)
    assert store.count("decisions") == 40
