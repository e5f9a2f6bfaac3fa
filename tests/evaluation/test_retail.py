"""The send-time evaluation ranks the served scores the way the planner reads them: per weekday, and per week."""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.evaluation.retail import _model_ranks


def test_model_ranks_take_the_targets_weekday_and_the_whole_week() -> None:
    score = np.zeros(168)
    score[[9, 10, 11, 12]] = [4, 3, 2, 1]          # Monday 9h–12h
    score[24 * 2 + 20] = 10                         # Wednesday 20h, the best hour of the week
    scores = pd.DataFrame({"user_id": "u", "hour_of_week": np.arange(168), "score": score, "fallback": False})
    targets = pd.DataFrame({"user_id": ["u", "u"], "weekday": [0, 2], "hour": [10, 21]})
    by_day, by_week = _model_ranks(scores, targets)
    monday = by_day[by_day["target"] == 0].sort_values("rank")
    assert monday["hour"].tolist() == [9, 10, 11]
    wednesday = by_day[by_day["target"] == 1].sort_values("rank")
    assert wednesday["hour"].tolist() == [20, 0, 1]  # ties among the zeros: the earlier hour
    assert by_week[by_week["target"] == 0].sort_values("rank")["how"].tolist() == [68, 9, 10]
