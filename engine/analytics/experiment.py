"""Readout of a randomized experiment: every treatment arm against one control arm, per binary outcome.

A pure function of counts (arm, outcome, users, successes), shared by ``pushwise experiment analyze``
and the dashboard's campaign (treatment vs holdout) view, so both report identical numbers.
"""

from __future__ import annotations

import pandas as pd

from engine.analytics.stats import compare_proportions, wilson_interval
from engine.errors import InputError

__all__ = ["COUNT_COLUMNS", "READOUT_COLUMNS", "experiment_readout"]

#: Columns :func:`experiment_readout` needs in its input frame.
COUNT_COLUMNS: tuple[str, ...] = ("arm", "outcome", "users", "successes")

#: Columns of the frame :func:`experiment_readout` returns, in order.
READOUT_COLUMNS: tuple[str, ...] = (
    "outcome", "arm", "users", "successes", "rate", "rate_low", "rate_high",
    "control_users", "control_successes", "control_rate", "difference", "diff_low", "diff_high",
    "relative_uplift", "relative_low", "relative_high", "z", "p_value",
)


def experiment_readout(counts: pd.DataFrame, control: str, confidence: float = 0.95) -> pd.DataFrame:
    """Compare each arm with ``control`` for each outcome.

    Args:
        counts: DataFrame[arm (str), outcome (str), users (int, units randomised to the arm),
            successes (int, units with outcome 1)]; one row per arm and outcome.
        control: the arm every other arm is compared with.
        confidence: level of every interval (0.95 gives 95% intervals).

    Returns:
        DataFrame with :data:`READOUT_COLUMNS`, one row per outcome and non-control arm (arms in
        name order): ``rate`` with its Wilson interval ``rate_low``/``rate_high``; ``difference``
        (arm rate − control rate, proportion units) with its Newcombe hybrid-score interval;
        ``relative_uplift`` (difference / control rate) with ``relative_low``/``relative_high``
        (the difference interval divided by the control rate, which ignores the control rate's own
        uncertainty); ``z`` and ``p_value`` of the two-sided pooled two-proportion z-test.

    Raises:
        InputError: a column is missing, the control arm is absent, or there is no other arm.
    """
    missing = [c for c in COUNT_COLUMNS if c not in counts.columns]
    if missing:
        raise InputError(f"counts frame lacks columns: {', '.join(missing)}")
    arms = sorted(str(a) for a in counts["arm"].unique())
    if control not in arms:
        raise InputError(f"control arm {control!r} not found; arms are: {', '.join(arms)}")
    if len(arms) < 2:
        raise InputError(f"only the control arm {control!r} is present; nothing to compare")
    rows = []
    for outcome, frame in counts.groupby("outcome", sort=False):
        by_arm = frame.assign(arm=frame["arm"].astype(str)).set_index("arm")
        xc, nc = int(by_arm.at[control, "successes"]), int(by_arm.at[control, "users"])
        for arm in arms:
            if arm == control or arm not in by_arm.index:
                continue
            x, n = int(by_arm.at[arm, "successes"]), int(by_arm.at[arm, "users"])
            c = compare_proportions(x, n, xc, nc, confidence=confidence)
            low, high = wilson_interval(x, n, confidence)
            base = c.rate2 if xc else float("nan")
            rows.append({
                "outcome": outcome, "arm": arm, "users": n, "successes": x, "rate": c.rate1,
                "rate_low": low, "rate_high": high, "control_users": nc, "control_successes": xc,
                "control_rate": c.rate2, "difference": c.difference, "diff_low": c.diff_low,
                "diff_high": c.diff_high, "relative_uplift": c.relative_uplift,
                "relative_low": c.diff_low / base, "relative_high": c.diff_high / base,
                "z": c.z, "p_value": c.p_value,
            })
    return pd.DataFrame(rows, columns=list(READOUT_COLUMNS))
