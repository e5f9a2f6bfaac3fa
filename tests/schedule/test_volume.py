"""Volume control: skip a push whose expected value is below the fatigue cost of one more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from engine.analytics import skip_reasons
from engine.errors import CampaignError
from engine.schedule.campaign import VolumeSettings, parse_campaign
from engine.schedule.planner import plan_campaign
from engine.schedule.volume import fatigue_history, volume_decisions
from tests.schedule._history import add_past_sends

AS_OF = datetime(2011, 11, 1, tzinfo=UTC)
VOLUME = {"value_per_click": 10.0, "send_cost": 0.5, "fatigue_cost": 0.4, "ignored_weight": 2.0, "lookback_days": 14}


def spec(**sections):
    return {"name": "Vol", "id": "vol", "as_of": "2011-11-01T00:00:00Z",
            "templates": [{"id": "a", "title": "{item_name}", "body": "hi"}],
            "limits": {"holdout_share": 0.0, "frequency_cap": 100}, **sections}


def test_value_against_cost_is_pure_arithmetic():
    s = VolumeSettings(**VOLUME)
    history = pd.DataFrame({"recent": [0, 0, 2, 2, 3], "ignored": [0, 0, 0, 1, 0]})
    v = volume_decisions(pd.Series([0.04, 0.06, 0.15, 0.15, float("nan")]), history, s)
    # value = 10 × score; cost = 0.5 + 0.4 × (recent + 2 × ignored)
    assert v["expected_value"].round(6).tolist() == [0.4, 0.6, 1.5, 1.5, 0.0]
    assert v["fatigue_cost"].round(6).tolist() == [0.5, 0.5, 1.3, 2.1, 1.7]
    assert v["skip_reason"].tolist() == ["low_value", None, None, "fatigue", "low_value"]


def test_history_counts_recent_and_ignored_pushes_in_the_lookback(store):
    due = AS_OF - timedelta(days=3)
    add_past_sends(store, "old", "Old", [
        {"user_id": "u1", "due_at": due, "opened": True},             # recent, engaged
        {"user_id": "u1", "due_at": due},                             # recent, ignored
        {"user_id": "u1", "due_at": due, "state": "pending"},         # recent, not (yet) ignored
        {"user_id": "u1", "due_at": due, "state": "failed"},          # never reached the user
        {"user_id": "u1", "due_at": AS_OF - timedelta(days=30)},      # outside the 14 days
        {"user_id": "u2", "due_at": due, "clicked": True, "event_at": AS_OF + timedelta(hours=2)},  # click not known yet
    ], AS_OF)
    h = fatigue_history(store, pd.Series(["u1", "u2", "u3"]), AS_OF, 14)
    assert h.to_dict("list") == {"user_id": ["u1", "u2", "u3"], "recent": [3, 1, 0], "ignored": [1, 1, 0]}


def test_planner_skips_low_value_and_fatigued_users_and_the_dashboard_lists_them(store, clock):
    store.execute("INSERT INTO items VALUES ('or:A', 'MUG', 'or:1', 2.5, 'GBP', 't', NULL)")
    scores = {"u0": 0.02, "u1": 0.2, "u2": 0.2, "u3": 0.2}
    for i, u in enumerate(scores):
        store.execute("INSERT INTO users VALUES (?, 'X', 'Europe/London', 't', NULL, NULL)", [u])
        store.execute("INSERT INTO events VALUES (?, ?, 'or:A', 'purchase', ?, NULL, 't', false, ?)",
                      [f"e{i}", u, AS_OF - timedelta(days=3), AS_OF])
        store.execute("INSERT INTO consents VALUES (?, 'push', 'marketing', true, ?, false)", [u, AS_OF])
        store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, registered_at) "
                      "VALUES (?, ?, 'apns', 'app', 'tok', ?)", [f"d{i}", u, AS_OF])
    # u2: three ignored pushes last week → cost 0.5 + 0.4 × (3 + 2 × 3) = 4.1 > value 2.0
    add_past_sends(store, "old", "Old", [{"user_id": "u2", "due_at": AS_OF - timedelta(days=5)}] * 3, AS_OF)
    # u3: three pushes, all opened → cost 0.5 + 0.4 × 3 = 1.7 < 2.0: still worth it
    add_past_sends(store, "old2", "Old2", [{"user_id": "u3", "due_at": AS_OF - timedelta(days=5), "opened": True}] * 3,
                   AS_OF)

    def chooser(store, user_ids, campaign, as_of, rng):
        return pd.DataFrame({"user_id": user_ids, "item_id": "or:A", "position": 0,
                             "score": [scores[u] for u in user_ids], "propensity": 1.0, "policy": "fake",
                             "model_version": "v"})

    def ranker(store, user_ids, as_of):
        return pd.DataFrame({"user_id": user_ids, "rank": 0, "weekday": 2, "local_hour": 10})

    report = plan_campaign(store, parse_campaign(spec(volume=VOLUME)), chooser, ranker, clock=clock)
    d = store.df("SELECT user_id, action, skip_reason FROM decisions WHERE campaign_id = 'vol' ORDER BY user_id")
    assert d["action"].tolist() == ["skip", "send", "skip", "send"]
    assert d["skip_reason"].fillna("-").tolist() == ["low_value", "-", "fatigue", "-"]
    assert report.skipped == {"low_value": 1, "fatigue": 1} and report.sends == 2
    shown = skip_reasons(store.con)
    shown = shown[shown["campaign_id"] == "vol"]
    assert dict(zip(shown["skip_reason"], shown["users"], strict=True)) == {"fatigue": 1, "low_value": 1}


def test_without_a_volume_section_nobody_is_skipped_for_value(store, clock):
    assert parse_campaign(spec()).volume is None


@pytest.mark.parametrize(("volume", "message"), [
    ({"value_per_click": -1}, "volume.value_per_click must be between 0.0 and 1000000000.0, got -1"),
    ({"fatigue_cost": "high"}, "volume.fatigue_cost must be a number, got 'high'"),
    ({"lookback_days": 2.5}, "volume.lookback_days must be a whole number, got 2.5"),
    ({"lookback_days": 0}, "volume.lookback_days must be between 1 and 365, got 0"),
    ({"ignored_weight": 5000}, "volume.ignored_weight must be between 0.0 and 1000, got 5000"),
    ({"budget": 3}, "unknown volume keys: budget"),
    ([1], "[volume] must be a table"),
])
def test_volume_section_is_validated_with_exact_messages(volume, message):
    with pytest.raises(CampaignError) as exc:
        parse_campaign(spec(volume=volume))
    assert str(exc.value) == message
