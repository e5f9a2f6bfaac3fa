"""The Open Bandit CTR model finds a planted click rule and reports honest intervals."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.training import load_model, obd_impressions


def test_obd_model_learns_planted_rule_with_intervals(trained) -> None:
    store, models, results = trained
    obd = next(r for r in results if r.name == "click_obd")
    m = obd.metrics
    assert m["auc"] > 0.8 and m["auc_low"] <= m["auc"] <= m["auc_high"]
    assert m["log_loss_low"] <= m["log_loss"] <= m["log_loss_high"]
    assert m["auc_minus_item_ctr_low"] > 0  # paired interval: the model beats item CTR
    assert set(obd.baselines) == {"item_ctr", "overall_ctr"}
    assert m["n_train"] / (m["n_train"] + m["n_eval"]) == 0.7
    train_end, eval_start = obd.card["data_window"]["train"][1], obd.card["data_window"]["eval"][0]
    assert train_end == eval_start
    model = load_model(models, "click_obd")
    rows = obd_impressions(store, datetime(2030, 1, 1, tzinfo=UTC))
    assert model.predict(rows).shape == (len(rows),)
