"""Funnel, uplift, vendor and heatmap queries on the hand-made world of tests/analytics/world.py."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

import engine.analytics as an
from engine.analytics import Filters
from engine.errors import InputError, StoreError
from tests.analytics.world import MODEL_METRICS, build_world

C1 = Filters(campaign_id="c1")


@pytest.fixture
def world(store):
    build_world(store)
    return store.con


def _counts(frame: pd.DataFrame) -> dict[str, int]:
    return dict(zip(frame["stage"], frame["count"], strict=True))


def test_funnel_counts_and_rates(world):
    f = an.funnel(world, C1)
    assert list(f["stage"]) == list(an.STAGES)
    assert _counts(f) == {"planned": 7, "sent": 6, "delivered": 4, "opened": 3, "clicked": 2, "converted": 2}
    assert dict(zip(f["stage"], f["simulated"], strict=True)) == {
        "planned": 0, "sent": 0, "delivered": 0, "opened": 2, "clicked": 2, "converted": 1}
    prev = dict(zip(f["stage"], f["rate_previous"], strict=True))
    assert math.isnan(prev["planned"])
    assert prev["sent"] == pytest.approx(6 / 7)
    assert prev["delivered"] == pytest.approx(4 / 6)
    assert prev["opened"] == pytest.approx(3 / 4)
    assert prev["clicked"] == pytest.approx(2 / 3)
    assert prev["converted"] == pytest.approx(2 / 4)  # conversions are counted over delivered sends
    assert list(f["rate_planned"]) == pytest.approx([1, 6 / 7, 4 / 7, 3 / 7, 2 / 7, 2 / 7])


def test_funnel_by_vendor_and_send_hour(world):
    by_vendor = an.funnel(world, C1, by="vendor")
    assert _counts(by_vendor[by_vendor["vendor"] == "apns"]) == {
        "planned": 4, "sent": 3, "delivered": 2, "opened": 2, "clicked": 2, "converted": 2}
    assert _counts(by_vendor[by_vendor["vendor"] == "fcm"]) == {
        "planned": 3, "sent": 3, "delivered": 2, "opened": 1, "clicked": 0, "converted": 0}
    by_hour = an.funnel(world, C1, by="send_hour_local")
    assert sorted(by_hour["send_hour_local"].unique()) == [10, 19]
    assert _counts(by_hour[by_hour["send_hour_local"] == 10])["planned"] == 3
    assert _counts(by_hour[by_hour["send_hour_local"] == 19]) == {
        "planned": 4, "sent": 3, "delivered": 2, "opened": 1, "clicked": 0, "converted": 0}


def test_funnel_filters_campaign_vendor_and_dates(world):
    by_campaign = an.funnel(world, by="campaign_id")
    assert _counts(by_campaign[by_campaign["campaign_id"] == "c2"])["delivered"] == 1
    assert _counts(an.funnel(world))["planned"] == 8
    assert _counts(an.funnel(world, Filters(vendor="fcm")))["planned"] == 3
    assert _counts(an.funnel(world, Filters(start=date(2011, 11, 3))))["planned"] == 1
    assert _counts(an.funnel(world, Filters(end=date(2011, 11, 2))))["planned"] == 7
    assert _counts(an.funnel(world, Filters(start=date(2011, 11, 3), end=date(2011, 11, 19))))["planned"] == 0


def test_converted_uses_sent_at_not_send_at(world):
    # t3 bought the item after send_at but before the push actually went out: no funnel conversion.
    out = an.send_outcomes(world, C1).set_index("decision_id")
    assert not out.at["d-t3", "converted"]
    assert out.at["d-t1", "converted"] and not out.at["d-t1", "converted_simulated"]
    assert out.at["d-t2", "converted"] and out.at["d-t2", "converted_simulated"]
    assert out.at["d-t3", "opened"] and not out.at["d-t3", "opened_simulated"]
    assert not out.at["d-t4", "converted"]  # bought on day 20, outside the 14 days


def test_empty_store_gives_zero_funnel(store):
    f = an.funnel(store.con)
    assert list(f["count"]) == [0] * 6
    assert f["rate_planned"].isna().all()


def test_arm_outcomes_intention_to_treat(world):
    arms = an.arm_outcomes(world, C1).set_index(["outcome", "arm"])
    assert arms.loc[("converted", "treatment"), ["users", "conversions", "simulated_conversions"]].tolist() == [9, 3, 1]
    assert arms.loc[("converted", "holdout"), ["users", "conversions"]].tolist() == [5, 1]
    assert arms.loc[("any_purchase", "treatment"), "conversions"] == 3
    assert arms.loc[("any_purchase", "holdout"), "conversions"] == 2
    low, high = an.wilson_interval(3, 9)
    assert arms.loc[("converted", "treatment"), "ci_low"] == pytest.approx(low)
    assert arms.loc[("converted", "treatment"), "ci_high"] == pytest.approx(high)


def test_compare_arms(world):
    diff = an.compare_arms(an.arm_outcomes(world, C1)).set_index("outcome")
    expected = an.compare_proportions(3, 9, 1, 5)
    row = diff.loc["converted"]
    assert row["difference"] == pytest.approx(3 / 9 - 1 / 5)
    assert (row["diff_low"], row["diff_high"]) == pytest.approx((expected.diff_low, expected.diff_high))
    assert row["p_value"] == pytest.approx(expected.p_value)
    assert row["relative_uplift"] == pytest.approx((3 / 9 - 1 / 5) / (1 / 5))
    assert round(row["p_value"], 4) == 0.5967
    assert diff.loc["any_purchase", "difference"] == pytest.approx(3 / 9 - 2 / 5)


def test_skip_reasons(world):
    skips = an.skip_reasons(world, C1)
    assert dict(zip(skips["skip_reason"], skips["users"], strict=True)) == {
        "no_allowed_send_time": 1, "no_consent": 1, "no_device": 1}
    assert skips["share"].tolist() == pytest.approx([0.1, 0.1, 0.1])


def test_vendor_summary_and_outcomes(world):
    summary = an.vendor_summary(world, C1).set_index("vendor")
    cols = ["sends", "sent", "delivered", "invalid_token", "failed", "cancelled", "open", "attempts", "retries"]
    assert summary.loc["apns", cols].tolist() == [4, 3, 2, 0, 1, 0, 1, 6, 3]
    assert summary.loc["fcm", cols].tolist() == [3, 3, 2, 1, 0, 0, 0, 3, 0]
    assert summary.loc["fcm", "delivery_rate"] == pytest.approx(2 / 3)
    outcomes = an.vendor_outcomes(world)
    assert outcomes[(outcomes["vendor"] == "apns") & (outcomes["state"] == "delivered")]["sends"].item() == 3
    attempts = an.attempt_outcomes(world, C1).set_index(["vendor", "outcome"])
    assert attempts.loc[("apns", "transient"), ["first_attempts", "retries", "attempts"]].tolist() == [1, 2, 3]
    assert attempts.loc[("apns", "rate_limited"), "attempts"] == 1


def test_send_time_heatmap_in_local_time(world):
    heat = an.send_time_heatmap(world, C1)
    cells = {(r.weekday_name, r.hour): (r.sends, r.opens, r.simulated_opens) for r in heat.itertuples()}
    # London sends at 10:05 UTC = 10:05 GMT; Tokyo at 10:05 / 11:00 UTC = 19:05 / 20:00 JST; a Wednesday.
    assert cells == {("Wed", 10): (3, 2, 2), ("Wed", 19): (2, 1, 0), ("Wed", 20): (1, 0, 0)}


def test_catalog(world):
    assert an.campaigns(world)["campaign_id"].tolist() == ["c2", "c1"]
    assert an.vendors(world) == ["apns", "fcm"]
    assert an.send_date_range(world) == (date(2011, 11, 2), date(2011, 11, 20))
    runs = an.model_runs(world)
    assert runs.loc[0, "metrics"] == MODEL_METRICS
    metrics = an.model_metrics(runs)
    assert dict(zip(metrics["metric"], metrics["value"], strict=True)) == {
        "auc": 0.71, "logloss": 0.31, "rows": 1000.0, "calibration.ece": 0.02}


def test_simulation_summary(world):
    summary = an.simulation_summary(world).set_index("kind")
    assert summary.loc["event:push_open"].tolist() == [3, 2]
    assert summary.loc["event:purchase"].tolist() == [7, 1]
    assert summary.loc["conversion:incremental"].tolist() == [1, 1]
    assert summary.loc["devices"].tolist() == [15, 15]  # every decision user with a vendor


def test_decision_log_is_pseudonymous(world):
    log = an.decision_log(world, b"secret", C1, limit=100)
    assert len(log) == 15
    assert "user_id" not in log.columns and "device_id" not in log.columns
    assert set(log["user"]) == {an.pseudonymise(f"t{k}", b"secret") for k in range(1, 11)} | {
        an.pseudonymise(f"h{k}", b"secret") for k in range(1, 6)}
    assert not log["user"].str.startswith(("t", "h")).all()


def test_bad_arguments_and_missing_tables():
    with pytest.raises(InputError) as info:
        Filters(start=date(2011, 11, 3), end=date(2011, 11, 2))
    assert str(info.value) == "start date 2011-11-03 is after end date 2011-11-02"
    import duckdb

    con = duckdb.connect()
    with pytest.raises(InputError) as info:
        an.funnel(con, by="country")
    assert str(info.value) == (
        "cannot break the funnel down by 'country'; choose one of: campaign_id, vendor, send_hour_local")
    with pytest.raises(StoreError, match="analytics query failed"):
        an.funnel(con)
