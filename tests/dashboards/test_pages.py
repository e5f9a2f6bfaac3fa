"""Every dashboard page (tab) with Streamlit's AppTest: the campaign readout, vendors, heatmap and models."""

from __future__ import annotations

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
    readout = _frame_with(at, "control_rate", "diff_low").set_index("outcome")
    # Hand-worked in tests/analytics/world.py: treatment 3/10 converted, holdout 1/5.
    assert readout.at["converted", "rate"] == pytest.approx(0.3)
    assert readout.at["converted", "control_rate"] == pytest.approx(0.2)
    assert readout.at["converted", "diff_low"] == pytest.approx(-0.365956, abs=1e-6)
    assert readout.at["any_purchase", "difference"] == pytest.approx(-0.1)
    templates = _frame_with(at, "template_id", "open_rate").set_index("campaign_id")
    # 9 of c1's 10 treatment decisions: the sidebar's date range drops t10, which has no send time.
    assert templates.at["c1", "decisions"] == 9 and templates.at["c1", "delivered"] == 4
    assert templates.at["c1", "opened"] == 3 and templates.at["c1", "clicked"] == 2
    skips = _frame_with(at, "skip_reason", "share")
    assert sorted(skips["skip_reason"]) == ["no_consent", "no_device"]  # t10 has no send time


def test_vendor_page_shows_daily_answers_invalid_token_rate_and_retries():
    at = _run()
    rates = _frame_with(at, "invalid_token_rate", "retries").set_index(["vendor"])
    fcm = rates[rates.index == "fcm"].iloc[0]
    assert fcm["attempts"] == 3 and fcm["invalid_token_rate"] == pytest.approx(1 / 3)
    apns = rates[rates.index == "apns"]
    assert apns["retries"].sum() == 3
    assert any("No vendor quota has been recorded" in c.value for c in at.caption)


def test_vendor_filter_narrows_the_vendor_and_campaign_pages():
    at = _run()
    at.sidebar.selectbox[1].set_value("fcm").run()
    assert not at.exception
    rates = _frame_with(at, "invalid_token_rate", "retries")
    assert set(rates["vendor"]) == {"fcm"}
    templates = _frame_with(at, "template_id", "open_rate")
    assert templates["decisions"].sum() == 3


def test_models_page_lists_runs_and_calibration_of_scores():
    at = _run()
    runs = _frame_with(at, "model_name", "version", "metrics")
    assert len(runs) >= 1
    cells = _frame_with(at, "mean_score", "click_rate")
    assert cells["sends"].sum() == 5 and cells["clicks"].sum() == 2


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
