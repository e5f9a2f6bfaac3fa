"""`pushwise evaluate --fast` end to end on a slice of the shipped data: both reports, every key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_evaluate_fast_writes_every_key(tmp_path, capsys):
    out = tmp_path / "reports"
    assert main(["evaluate", "--fast", "--out", str(out), "--data-dir", str(REPO / "data"), "--json"]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    printed = capsys.readouterr()
    assert json.loads(printed.out) == report          # --json: stdout is the report, nothing else
    assert "wrote" in printed.err and "evaluate ope" in printed.err
    assert set(report) == {"recommend", "send_time", "ope", "simulation"}
    rec = report["recommend"]
    assert set(rec) == {"recall_at_10", "ndcg_at_10", "popularity", "repeat", "cooccurrence", "als"}
    for baseline in ("popularity", "repeat", "cooccurrence", "als"):
        assert 0.0 <= rec[baseline]["recall_at_10"] <= 1.0
    # Even on the slice the learned recommender beats popularity by far.
    assert rec["recall_at_10"] > 2 * rec["popularity"]["recall_at_10"]
    assert set(report["send_time"]) == {"top1", "top3", "baseline_global_top3", "baseline_last_top3"}
    assert report["send_time"]["top1"] <= report["send_time"]["top3"]
    ope = report["ope"]
    assert set(ope) == {"ipw", "snipw", "dm", "dr", "ground_truth", "no_change", "default_estimator"}
    for name in ("ipw", "snipw", "dm", "dr"):
        low, high = ope[name]["ci"]
        assert low <= ope[name]["estimate"] <= high
        assert ope[name]["relative_error"] == pytest.approx(abs(ope[name]["estimate"] - ope["ground_truth"])
                                                            / ope["ground_truth"])
    assert ope["default_estimator"] == "dm"
    sim = report["simulation"]
    assert sim["random"] < sim["value"] <= sim["oracle"]
    md = (out / "evaluation.md").read_text()
    for heading in ("## Recommendations", "## Send time", "## Off-policy evaluation", "## Click model", "## Known truth"):
        assert heading in md
    assert "Weights: importance weights average" in md   # the check that the propensities are the logging policy's
    for png in ("evaluation-recommend.png", "evaluation-send-time.png", "evaluation-ope.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_nan_in_the_report_is_written_as_null_not_as_invalid_json():
    from engine.evaluation.report import _finite

    assert json.dumps(_finite({"ope": {"dm": {"relative_error": float("nan"), "ci": [0.1, float("inf")]}}}),
                      allow_nan=False) == '{"ope": {"dm": {"relative_error": null, "ci": [0.1, null]}}}'


@pytest.mark.parametrize("argv", [["evaluate", "--db", "mine.duckdb"], ["--db", "mine.duckdb", "evaluate"]])
def test_a_database_given_to_evaluate_is_refused_not_silently_unused(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert "--db mine.duckdb is not used" in err and "temporary store" in err
    assert not (tmp_path / "reports").exists() and not (tmp_path / "mine.duckdb").exists()
