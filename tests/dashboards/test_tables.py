"""The marketer-facing display layer: labels, units, empty cells, banner wording and chart choices (pure)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dashboards.dashboard_charts import heatmap, metric_history, plural, simulated_banner
from dashboards.dashboard_tables import EMPTY, Col, model_scorecard, table

NAN = math.nan


def test_table_renames_scales_pp_formats_days_and_fills_gaps():
    frame = pd.DataFrame({
        "skip_reason": ["no_consent", None], "share": [0.25, 0.5], "daily_limit": pd.array([100, None], "Int32"),
        "diff_low": [-0.0154, 0.02], "rate": [0.1, NAN],
        "quota_day": pd.to_datetime(["2011-11-07", "2011-11-08"]),
        "resets_at": pd.to_datetime(["2011-11-08 00:00", None], utc=True),
    })
    shown, config = table(frame, {
        "skip_reason": Col("Reason", "label"), "share": Col("Share (%)", "percent"),
        "daily_limit": Col("Daily limit", "count"), "diff_low": Col("95% low (pp)", "pp"),
        "rate": Col("Rate (%)", "percent"), "quota_day": Col("Day", "date"),
        "resets_at": Col("Resets at (UTC)", "datetime"),
    })
    assert list(shown.columns) == ["Reason", "Share (%)", "Daily limit", "95% low (pp)", "Rate (%)", "Day",
                                   "Resets at (UTC)"]
    assert shown["Reason"].tolist() == ["No push consent", EMPTY]
    assert shown["Share (%)"].tolist() == [0.25, 0.5]            # numeric; the column config shows 25.0%
    assert shown["95% low (pp)"].tolist() == pytest.approx([-1.54, 2.0])
    assert shown["Daily limit"].tolist() == ["100", EMPTY]       # a gap turns the column into text
    assert shown["Rate (%)"].tolist() == ["10.0%", EMPTY]
    assert shown["Day"].tolist() == ["2011-11-07", "2011-11-08"]  # no 00:00:00
    assert shown["Resets at (UTC)"].tolist() == ["2011-11-08 00:00", EMPTY]
    assert not shown.isna().any().any()
    assert config["Share (%)"]["type_config"]["format"] == "percent"
    assert config["95% low (pp)"]["type_config"]["format"] == "%+.1f pp"


CLICK_OBD = {"auc": 0.4569, "auc_low": 0.33646, "auc_high": 0.5765, "log_loss": 0.0237,
             "auc_minus_item_ctr_low": -0.2447, "auc_minus_item_ctr_high": 0.1001, "n_eval": 6000.0}


def test_model_scorecard_puts_each_metric_beside_its_interval_and_baseline():
    card = model_scorecard(CLICK_OBD).set_index("Metric")
    assert list(card.index) == ["AUC (ranking quality, 0.5 = random)", "Log loss (lower is better)",
                                "Evaluation rows"]
    auc = card.loc["AUC (ranking quality, 0.5 = random)"]
    assert auc["Value"] == "0.457" and auc["95% interval"] == "0.336 to 0.577"
    assert auc["Baseline"] == "item click rate" and auc["Minus baseline (95% interval)"] == "-0.245 to +0.100"
    assert auc["Reading"] == "no clear difference"
    assert card.loc["Evaluation rows", "Value"] == "6,000"
    assert card.loc["Log loss (lower is better)", "Reading"] == EMPTY


@pytest.mark.parametrize(("low", "high", "reading"), [
    (0.01, 0.03, "above baseline"), (-0.03, -0.01, "below baseline"), (-0.01, 0.03, "no clear difference"),
])
def test_model_scorecard_reads_the_send_time_baseline(low, high, reading):
    # engine/training/send_time.py names the compared metric "top3_hit"; it is top3_hour_hit
    card = model_scorecard({"top3_hour_hit": 0.45, "top3_hit_minus_global_low": low,
                            "top3_hit_minus_global_high": high})
    assert card["Metric"].tolist() == ["Top-3 hours hit rate"]
    assert card.at[0, "Reading"] == reading
    assert card.at[0, "Baseline"] == "global best hours"
    assert card.at[0, "Minus baseline (95% interval)"] == f"{low:+.3f} to {high:+.3f}"


def _summary(conversions: int, simulated: int, incremental: int) -> pd.DataFrame:
    return pd.DataFrame({"kind": ["event:push_open", "event:conversion", "conversion:incremental", "devices"],
                         "rows": [279, conversions, incremental, 10], "simulated": [279, simulated, incremental, 10]})


def test_banner_counts_as_simulated_only_the_incremental_conversions():
    banner = simulated_banner(_summary(217, 217, 1))
    assert "216 of 217 conversion events attribute a real purchase" in banner
    assert "1 conversion is simulated incremental" in banner and "behind it)" in banner
    assert "217 of 217 conversion events" not in banner
    several = simulated_banner(_summary(217, 217, 3))
    assert "214 of 217 conversion events" in several and "3 conversions are simulated incremental" in several


def test_banner_leaves_out_conversions_that_are_all_real():
    banner = simulated_banner(_summary(50, 0, 0))
    assert "Conversions:" not in banner and "279 of 279 opens" in banner


@pytest.mark.parametrize(("n", "text"), [(1, "1 conversion"), (0, "0 conversions"), (2017, "2,017 conversions")])
def test_plural(n, text):
    assert plural(n, "conversion") == text


def test_heatmap_greys_cells_with_few_sends_and_labels_every_cell_with_its_sends():
    cells = pd.DataFrame({"weekday_name": ["Mon", "Tue", "Wed"], "hour": [10, 11, 12], "sends": [1, 19, 20],
                          "opens": [1, 2, 3], "simulated_opens": [1, 2, 3], "open_rate": [1.0, 2 / 19, 0.15]})
    grey, coloured, counts = heatmap(cells, "open_rate", "open rate", ".0%", min_sends=20).layer
    assert grey.data["sends"].tolist() == [1, 19, 20]
    assert coloured.data["sends"].tolist() == [20]        # the 1-of-1 = 100% cell stays out of the scale
    assert counts.to_dict()["encoding"]["text"]["field"] == "sends"


def test_metric_history_labels_training_times_in_minutes_not_milliseconds():
    trained = pd.to_datetime(["2026-12-04 17:00:25.460", "2026-12-04 18:30:00.000"], utc=True)
    runs = pd.DataFrame({"version": ["a", "b"], "value": [0.8, 0.85], "trained_at": trained})
    chart = metric_history(runs, "AUC")
    assert chart.data["trained"].tolist() == ["2026-12-04 17:00", "2026-12-04 18:30"]
    assert chart.to_dict()["encoding"]["x"]["type"] == "ordinal"
