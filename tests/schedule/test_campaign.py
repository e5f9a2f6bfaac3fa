"""Campaign files: validation with exact messages."""

import pytest

from engine.demo import demo_campaign_path
from engine.errors import CampaignError
from engine.schedule.campaign import load_campaign, parse_campaign

BASE = {"name": "Spring", "templates": [{"title": "{item_name}", "body": "Now {currency}{price:.2f}"}]}


def test_the_shipped_demo_campaign_loads():
    c = load_campaign(demo_campaign_path())
    assert (c.campaign_id, c.holdout_share, c.frequency_cap, c.quiet_start.hour, c.quiet_end.hour) == (
        "winter-favourites", 0.10, 2, 21, 8)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"name": ""}, "campaign needs a non-empty name"),
        ({"templates": []}, r"at least one \[\[templates\]\]"),
        ({"templates": [{"title": "{first_name}", "body": "x"}]}, r"unknown slot\(s\) first_name"),
        ({"templates": [{"title": "{item_name", "body": "x"}]}, "malformed template"),
        ({"message_class": "spam"}, "message_class must be one of"),
        ({"limits": {"holdout_share": 0.95}}, r"limits.holdout_share must be between 0.0 and 0.9, got 0.95"),
        ({"limits": {"frequency_cap": "two"}}, "limits.frequency_cap must be a whole number, got 'two'"),
        ({"schedule": {"quiet_hours": ["25:00", "08:00"]}}, r"schedule.quiet_hours\[0\] must be HH:MM"),
        ({"as_of": "2011-11-01T00:00:00"}, "as_of needs a time zone offset"),
        ({"colour": "blue"}, "unknown campaign keys: colour"),
        ({"candidates": {"rule": "vibes"}}, "candidates.rule must be 'recommended'"),
    ],
)
def test_invalid_campaigns_name_the_problem(patch, message):
    with pytest.raises(CampaignError, match=message):
        parse_campaign(BASE | patch)


def test_quiet_hours_wrap_midnight():
    from datetime import time

    c = parse_campaign(BASE | {"schedule": {"quiet_hours": ["22:30", "07:00"]}})
    assert [c.in_quiet_hours(time(h, m)) for h, m in [(22, 29), (22, 30), (3, 0), (6, 59), (7, 0)]] == [
        False, True, True, True, False]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"templates": [{"title": "x", "body": "{price:.2z}"}]},
         r"templates\[0\].body cannot be rendered: Unknown format code 'z'"),
        ({"audience": {"activ_within_days": 10}}, "unknown audience keys: activ_within_days"),
        ({"limits": {"holdout": 0.2}}, "unknown limits keys: holdout"),
        ({"id": "winter favourites!!/../x"}, "id must be 1-64 characters"),
        ({"schedule": "soon"}, r"\[schedule\] must be a table"),
    ],
)
def test_mistakes_found_by_a_new_user_fail_at_load_time(patch, message):
    with pytest.raises(CampaignError, match=message):
        parse_campaign(BASE | patch)
