"""``pushwise experiment analyze`` on the real Hillstrom e-mail experiment and on invalid inputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from engine.analytics.experiment import experiment_readout
from engine.cli import main
from engine.errors import InputError
from engine.experiment import experiment_counts
from tests.conftest import DATA

HILLSTROM = str(DATA / "hillstrom" / "hillstrom.csv")
ARGS = [HILLSTROM, "--assignment", "segment", "--control", "No E-Mail"]


def test_hillstrom_counts_match_the_published_visit_rates():
    counts = experiment_counts(HILLSTROM, "segment", "No E-Mail", ["visit", "conversion"])
    visit = counts[counts["outcome"] == "visit"].set_index("arm")
    assert visit["users"].to_dict() == {"Mens E-Mail": 21307, "No E-Mail": 21306, "Womens E-Mail": 21387}
    assert visit["successes"].to_dict() == {"Mens E-Mail": 3894, "No E-Mail": 2262, "Womens E-Mail": 3238}
    rates = (visit["successes"] / visit["users"]).round(3).to_dict()
    assert rates == {"Mens E-Mail": 0.183, "No E-Mail": 0.106, "Womens E-Mail": 0.151}
    conv = counts[counts["outcome"] == "conversion"].set_index("arm")["successes"].to_dict()
    assert conv == {"Mens E-Mail": 267, "No E-Mail": 122, "Womens E-Mail": 189}


def test_json_readout_has_uplift_intervals_and_p_values(capsys):
    assert main(["experiment", "analyze", *ARGS, "--outcome", "visit", "--outcome", "conversion", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["outcome"], r["arm"]): r for r in out["comparisons"]}
    assert set(rows) == {("visit", "Mens E-Mail"), ("visit", "Womens E-Mail"),
                         ("conversion", "Mens E-Mail"), ("conversion", "Womens E-Mail")}
    mens = rows[("visit", "Mens E-Mail")]
    assert mens["rate"] == pytest.approx(3894 / 21307)
    assert mens["control_rate"] == pytest.approx(2262 / 21306)
    assert mens["difference"] == pytest.approx(3894 / 21307 - 2262 / 21306)
    assert mens["diff_low"] == pytest.approx(0.069953, abs=1e-6)
    assert mens["diff_high"] == pytest.approx(0.083227, abs=1e-6)
    assert mens["relative_uplift"] == pytest.approx(0.721405, abs=1e-6)
    assert mens["p_value"] < 1e-100
    womens_conv = rows[("conversion", "Womens E-Mail")]
    assert womens_conv["z"] == pytest.approx(3.7796, abs=1e-4)
    assert womens_conv["p_value"] == pytest.approx(1.571e-4, rel=1e-2)


def test_table_readout(capsys):
    assert main(["experiment", "analyze", *ARGS, "--outcome", "visit"]) == 0
    out = capsys.readouterr().out
    assert "outcome visit: control 'No E-Mail' 2,262 / 21,306 = 10.62%" in out
    assert "Mens E-Mail" in out and "18.28%" in out and "[+7.00, +8.32]" in out
    assert "Womens E-Mail" in out and "15.14%" in out


def test_parquet_gives_the_same_counts(tmp_path):
    path = tmp_path / "h.parquet"
    pd.read_csv(HILLSTROM).to_parquet(path)
    a = experiment_counts(HILLSTROM, "segment", "No E-Mail", ["visit"])
    b = experiment_counts(path, "segment", "No E-Mail", ["visit"])
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(("assignment", "control", "outcomes", "message"), [
    ("arm", "No E-Mail", ["visit"], "no column 'arm'; columns are: recency,"),
    ("segment", "No E-Mail", ["visits"], "no column 'visits'"),
    ("segment", "Control", ["visit"],
     "control value 'Control' not found in column 'segment'; values are: Mens E-Mail, No E-Mail, Womens E-Mail"),
    ("segment", "No E-Mail", ["spend"], "outcome 'spend' is not binary (0/1); found values such as"),
    ("segment", "No E-Mail", ["channel"], "outcome 'channel' is not binary (0/1)"),
])
def test_invalid_inputs_have_exact_messages(assignment, control, outcomes, message):
    with pytest.raises(InputError) as err:
        experiment_counts(HILLSTROM, assignment, control, outcomes)
    assert message in str(err.value)


def test_missing_outcome_values_are_rejected(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("arm,y\nA,1\nA,\nB,0\n")
    with pytest.raises(InputError, match="outcome 'y' is not binary .*missing"):
        experiment_counts(path, "arm", "B", ["y"])


def test_cli_errors_exit_3_without_traceback(tmp_path, capsys):
    assert main(["experiment", "analyze", str(tmp_path / "nope.csv"), "--assignment", "a", "--control", "x",
                 "--outcome", "y"]) == 3
    err = capsys.readouterr().err
    assert "nope.csv: no such file" in err and "Traceback" not in err
    (tmp_path / "e.txt").write_text("x")
    assert main(["experiment", "analyze", str(tmp_path / "e.txt"), "--assignment", "a", "--control", "x",
                 "--outcome", "y"]) == 3
    assert "unsupported file type '.txt'" in capsys.readouterr().err


def test_readout_is_pure_and_handles_a_zero_control_rate():
    counts = pd.DataFrame({"arm": ["c", "t"], "outcome": ["y", "y"], "users": [10, 10], "successes": [0, 3]})
    r = experiment_readout(counts, "c").iloc[0]
    assert r["rate"] == 0.3 and r["control_rate"] == 0.0 and r["difference"] == 0.3
    assert pd.isna(r["relative_uplift"]) and pd.isna(r["relative_low"])
    with pytest.raises(InputError, match="control arm 'x' not found; arms are: c, t"):
        experiment_readout(counts, "x")
