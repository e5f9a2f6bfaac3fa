"""Every dashboard page (tab) with Streamlit's AppTest: the campaign readout, vendors, heatmap and models."""

from __future__ import annotations

import json
import re

import duckdb
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.store import Store
from tests.analytics.world import build_world
from tests.conftest import REPO

APP = str(REPO / "dashboards" / "app.py")


@pytest.fixture(autouse=True)
def world_db(tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHWISE_PSEUDONYM_KEY", "pages-key")
    path = tmp_path / "pushwise.duckdb"
    with Store(path) as store:
        build_world(store)
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(path))
    st.cache_data.clear()
    yield path
    st.cache_data.clear()


def _run() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error
    return at


def _frame_with(at: AppTest, *columns: str):
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def test_tabs_are_the_five_pages():
    at = _run()
    assert [t.label for t in at.tabs] == ["Funnel", "Campaigns", "Vendors", "Send-time heatmap", "Models"]


def test_campaign_page_readout_uses_the_experiment_code():
    at = _run()
    readout = _frame_with(at, "Holdout rate (%)", "95% low (pp)").set_index("Outcome")
    # Hand-worked in tests/analytics/world.py: treatment 3/10 converted, holdout 1/5.
    assert readout.at["Converted", "Treatment rate (%)"] == pytest.approx(0.3)
    assert readout.at["Converted", "Holdout rate (%)"] == pytest.approx(0.2)
    # differences are shown in percentage points: -0.365956 as a share is -36.6 pp
    assert readout.at["Converted", "95% low (pp)"] == pytest.approx(-36.5956, abs=1e-4)
    assert readout.at["Any purchase", "Difference (pp)"] == pytest.approx(-10.0)
    templates = _frame_with(at, "Template", "Open rate (%)").set_index("Campaign")
    # 9 of c1's 10 treatment decisions: the sidebar's date range drops t10, which has no send time.
    assert templates.at["c1", "Decisions"] == 9 and templates.at["c1", "Delivered"] == 4
    assert templates.at["c1", "Opened"] == 3 and templates.at["c1", "Clicked"] == 2
    skips = _frame_with(at, "Reason", "Share of treatment users (%)")
    assert sorted(skips["Reason"]) == ["No device", "No push consent"]  # t10 has no send time


def test_vendor_page_shows_daily_answers_invalid_token_rate_and_retries():
    at = _run()
    rates = _frame_with(at, "Invalid-token rate (%)", "Retries").set_index(["Vendor"])
    fcm = rates[rates.index == "fcm"].iloc[0]
    assert fcm["Attempts"] == 3 and fcm["Invalid-token rate (%)"] == pytest.approx(1 / 3)
    apns = rates[rates.index == "apns"]
    assert apns["Retries"].sum() == 3
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) for day in rates["Day (UTC)"])  # no "00:00:00"
    assert any("No vendor quota has been recorded" in c.value for c in at.caption)


def test_vendor_filter_narrows_the_vendor_and_campaign_pages():
    at = _run()
    at.sidebar.selectbox[1].set_value("fcm").run()
    assert not at.exception
    rates = _frame_with(at, "Invalid-token rate (%)", "Retries")
    assert set(rates["Vendor"]) == {"fcm"}
    templates = _frame_with(at, "Template", "Open rate (%)")
    assert templates["Decisions"].sum() == 3


def test_models_page_lists_runs_and_calibration_of_scores():
    at = _run()
    runs = _frame_with(at, "Model", "Version", "Trained at (UTC)")
    assert runs["Model"].tolist() == ["click"] and "metrics" not in runs.columns   # no raw JSON blob
    assert runs["Trained at (UTC)"].tolist() == ["2011-12-01 00:00"]
    card = _frame_with(at, "Metric", "Value", "Reading").set_index("Metric")
    # tests/analytics/world.py MODEL_METRICS: auc 0.71, logloss 0.31, rows 1000, calibration.ece 0.02
    assert card.at["AUC (ranking quality, 0.5 = random)", "Value"] == "0.710"
    assert card.at["Rows", "Value"] == "1,000" and card.at["Calibration.ece", "Value"] == "0.020"
    assert any("no comparison with a baseline" in c.value for c in at.caption)
    cells = _frame_with(at, "Mean score (%)", "Click rate (%)")
    assert cells["Sends"].sum() == 5 and cells["Clicks"].sum() == 2


def test_heatmap_page_renders_charts():
    at = _run()
    # Funnel bars, lines, arm rates, uplift intervals, vendor states, daily answers, 2 heatmaps, calibration.
    assert len(at.get("vega_lite_chart")) >= 9


def test_campaign_page_says_how_to_read_the_difference():
    at = _run()
    reading = next(i.value for i in at.info if "95% interval" in i.value)
    # the hand-worked world: 3/10 vs 1/5 converted, interval -0.37 .. +0.47 covers zero
    assert "includes zero" in reading and "not distinguishable from chance" in reading


@pytest.mark.parametrize(("low", "high", "replay", "expected"), [
    (-0.01, 0.05, False, "includes zero (p = 0.2)"),
    (0.01, 0.05, False, "excludes zero (p = 0.2)"),
    (0.01, 0.05, True, "real 2011 purchases that a sandbox push cannot have caused"),
    (float("nan"), float("nan"), False, "Not enough users in one arm"),
])
def test_uplift_reading(low, high, replay, expected):
    from dashboards.dashboard_charts import uplift_reading

    assert expected in uplift_reading(low, high, 0.2, replay)


def test_no_page_shows_a_raw_column_name_or_an_empty_none_cell():
    at = _run()
    at.radio[0].set_value("local send hour").run()
    assert not at.exception
    frames = [d.value for d in at.dataframe]
    assert len(frames) >= 12
    for frame in frames:
        assert not [c for c in frame.columns if "_" in str(c)], list(frame.columns)   # ci_low, control_users…
        assert not frame.isna().any().any(), frame     # Streamlit prints a missing value as "None"
    summary = _frame_with(at, "Vendor", "Delivery rate (%)").set_index("Vendor")
    # t7 (apns) is still pending in the outbox: a queued send, not an "open"
    assert summary.at["apns", "Queued or retrying"] == 1 and "open" not in summary.columns
    log = _frame_with(at, "User (pseudonym)", "Skip reason")
    # (t10, skipped for want of a send time, falls outside the sidebar's date range)
    assert set(log["Skip reason"]) == {"—", "No push consent", "No device"}


def test_templates_show_the_campaign_text_and_the_decision_log_names_items(world_db):
    con = duckdb.connect(str(world_db))
    con.execute("INSERT INTO items (item_id, name, source) VALUES ('i:1', 'Red mug', 'test')")
    spec = {"templates": [{"id": "back", "title": "{item_name}", "body": "Still thinking about {item_name}?"}]}
    con.execute("UPDATE campaigns SET spec = ? WHERE campaign_id = 'c1'", [json.dumps(spec)])
    # what the planner stores: each user's rendered copy, here the item's name
    con.execute("UPDATE decisions SET template_id = 'back', title = 'Red mug' WHERE campaign_id = 'c1'")
    con.close()
    at = _run()
    templates = _frame_with(at, "Template", "Title template").set_index("Campaign")
    assert templates.at["c1", "Template"] == "back"
    assert templates.at["c1", "Title template"] == "{item_name}"          # the template, not one user's copy
    assert templates.at["c1", "Body template"] == "Still thinking about {item_name}?"
    assert templates.at["c2", "Title template"] == "—"                    # c2's spec names no template
    log = _frame_with(at, "User (pseudonym)", "Item")
    assert set(log.loc[log["Item id"] == "i:1", "Item"]) == {"Red mug"}
