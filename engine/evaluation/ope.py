"""Off-policy estimators of a target policy's mean reward from another policy's logs, with bootstrap intervals.

The input is one DataFrame per log in a fixed contract, so the same code judges the Open Bandit logs,
Pushwise's own ``decisions`` (whose ``propensity`` the policy logged) or any other campaign's logs:

* ``action`` (int, 0 ≤ action < K): the logged action;
* ``reward`` (float): its observed reward, e.g. click 0/1;
* ``propensity`` (float in (0, 1]): the logging policy's probability of that action in that context;
* ``group`` (optional, hashable): a context key the reward model pools by (e.g. the slot);

plus ``target``, an n × K array: the target policy's probability of every action in each logged
context (rows sum to 1). IPW and self-normalised IPW need only the target's probability of the
logged action; the direct method and doubly robust also need a reward model, refitted on every
bootstrap resample so that its own uncertainty is in the interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.errors import InputError

__all__ = ["ESTIMATORS", "Estimate", "RewardModel", "WeightCheck", "check_log", "estimate_policy_value", "shrunk_ctr_model",
           "weight_check"]

ESTIMATORS = ("ipw", "snipw", "dm", "dr")

#: (log, row weights ≥ 0) → expected reward of every action in every logged context (n × K).
RewardModel = Callable[[pd.DataFrame, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its percentile bootstrap interval (rows resampled)."""

    estimator: str
    value: float
    low: float
    high: float
    n: int

    def relative_error(self, truth: float) -> float:
        return abs(self.value - truth) / truth if truth else float("nan")

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def _numbers(column: pd.Series) -> np.ndarray:
    """A column as float64; text, None and anything else that is not a number become NaN."""
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64")


@dataclass(frozen=True)
class WeightCheck:
    """Whether the importance weights behave as the estimators assume.

    With the logging policy's true propensities and a target it covers, the weight target/propensity
    averages 1 (its expectation is the target's total probability). Far above 1: the logged
    propensities are smaller than the probabilities that really chose the actions (e.g. another
    policy's, or a uniform 1/K kept after a subset of the actions was dropped); below 1: the target
    puts probability on actions the log never took, which IPW counts as no reward.

    Attributes:
        mean, low, high: mean weight and its 95 % normal interval.
        max: the largest weight.
        unlogged_mass: the target's mean probability on (group, action) pairs no logged row shows.
        ok: 1 is inside [low, high] widened by 5 %, and unlogged_mass is below 1 %.
    """

    mean: float
    low: float
    high: float
    max: float
    unlogged_mass: float

    @property
    def ok(self) -> bool:
        return self.low - 0.05 <= 1.0 <= self.high + 0.05 and self.unlogged_mass < 0.01

    def describe(self) -> str:
        """One line for a report: the figures, and what is wrong when something is."""
        text = (f"importance weights average {self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] (1 expected), "
                f"max {self.max:.1f}; target probability on actions never logged {self.unlogged_mass:.1%}")
        if self.unlogged_mass >= 0.01:
            return text + ": WARNING the log does not cover the target, IPW-type estimates are biased low"
        if not self.ok:
            return text + ": WARNING the logged propensities do not look like the logging policy's"
        return text


def weight_check(log: pd.DataFrame, target: np.ndarray) -> WeightCheck:
    """Diagnose the importance weights of a log that :func:`check_log` accepts (see :class:`WeightCheck`)."""
    log = check_log(log, target)
    a, p = log["action"].to_numpy(), log["propensity"].to_numpy()
    w = target[np.arange(len(a)), a] / p
    half = 1.96 * w.std(ddof=1) / np.sqrt(len(w)) if len(w) > 1 else float("inf")
    groups = log["group"].to_numpy() if "group" in log.columns else np.zeros(len(log), dtype=int)
    codes, uniques = pd.factorize(groups)
    seen = np.zeros((len(uniques), target.shape[1]), dtype=bool)
    seen[codes, a] = True
    unlogged = float((target * ~seen[codes]).sum(axis=1).mean())
    return WeightCheck(float(w.mean()), float(w.mean() - half), float(w.mean() + half), float(w.max()), unlogged)


def check_log(log: pd.DataFrame, target: np.ndarray) -> pd.DataFrame:
    """Validate a log against the contract of the module docstring.

    Returns:
        The log with ``action`` as int64 and ``reward``, ``propensity`` as float64 (other columns kept).

    Raises:
        InputError: with an exact message naming the first broken rule.
    """
    missing = [c for c in ("action", "reward", "propensity") if c not in log.columns]
    if missing:
        raise InputError(f"bandit log lacks column(s): {', '.join(missing)}")
    if len(log) == 0:
        raise InputError("bandit log is empty")
    p = _numbers(log["propensity"])
    if not np.all((p > 0) & (p <= 1)):
        raise InputError("propensity must be in (0, 1] on every row")
    r = _numbers(log["reward"])
    if not np.isfinite(r).all():
        raise InputError(f"reward must be a finite number on every row ({int((~np.isfinite(r)).sum())} missing or infinite)")
    a = _numbers(log["action"])
    whole = np.isfinite(a) & (a == np.round(a))
    if not whole.all():
        raise InputError(f"action must be a whole number on every row ({int((~whole).sum())} are not)")
    target = np.asarray(target)
    if target.ndim != 2 or target.shape[0] != len(log):
        raise InputError(f"target must be an array of shape (rows, actions), got {target.shape} for {len(log)} rows")
    if a.min() < 0 or a.max() >= target.shape[1]:
        raise InputError(f"action must be in [0, {target.shape[1]}) to index target")
    if not np.all((target >= 0) & (target <= 1)):
        raise InputError("target probabilities must be in [0, 1] in every row")
    if not np.allclose(target.sum(axis=1), 1.0, atol=1e-6):
        raise InputError("target probabilities must sum to 1 in every row")
    return log.assign(action=a.astype("int64"), reward=r, propensity=p)


def shrunk_ctr_model(strength: float = 200.0) -> RewardModel:
    """A reward model for sparse clicks: each (group, action)'s mean reward shrunk towards its group's.

    With a few dozen clicks in ten thousand rows a per-action rate is mostly noise; ``strength``
    pseudo-rows of the group mean keep rare actions near it.
    """
    def fit(log: pd.DataFrame, w: np.ndarray, n_actions: int) -> np.ndarray:
        groups = log["group"].to_numpy() if "group" in log.columns else np.zeros(len(log), dtype=int)
        codes, uniques = pd.factorize(groups)
        a, r = log["action"].to_numpy(), log["reward"].to_numpy(dtype="float64")
        n = np.zeros((len(uniques), n_actions))
        s = np.zeros((len(uniques), n_actions))
        np.add.at(n, (codes, a), w)
        np.add.at(s, (codes, a), w * r)
        base = s.sum(axis=1, keepdims=True) / np.maximum(n.sum(axis=1, keepdims=True), 1e-12)
        q = (s + strength * base) / (n + strength)
        return q[codes]
    fit.__name__ = f"shrunk_ctr({strength:g})"
    return fit  # type: ignore[return-value]


def _point(r: np.ndarray, w: np.ndarray, q_all: np.ndarray | None, logged_q: np.ndarray | None,
           target: np.ndarray, weights: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Every estimator under row multiplicities ``weights`` (1 everywhere for the point estimate)."""
    total = weights.sum()
    out = {"ipw": float((weights * w * r).sum() / total),
           "snipw": float((weights * w * r).sum() / max((weights * w).sum(), 1e-12))}
    if q_all is not None and logged_q is not None:
        dm_rows = (target * q_all).sum(axis=1)
        out["dm"] = float((weights * dm_rows).sum() / total)
        out["dr"] = float((weights * (dm_rows + w * (r - logged_q))).sum() / total)
    return {k: v for k, v in out.items() if k in names}


def estimate_policy_value(
    log: pd.DataFrame,
    target: np.ndarray,
    rng: np.random.Generator,
    reward_model: Callable[[pd.DataFrame, np.ndarray, int], np.ndarray] | None = None,
    estimators: Sequence[str] = ESTIMATORS,
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict[str, Estimate]:
    """Estimate the target policy's mean reward per logged row with every requested estimator.

    Args:
        log: the bandit log (module docstring).
        target: n × K target-policy probabilities.
        rng: seeded generator for the bootstrap resamples.
        reward_model: ``(log, row weights, K) -> n × K`` expected rewards, e.g. :func:`shrunk_ctr_model`;
            without one only ``ipw`` and ``snipw`` are computed.
        estimators: names among :data:`ESTIMATORS`.
        n_boot: bootstrap resamples; the reward model is refitted on each.
        level: interval coverage.

    Returns:
        ``{estimator: Estimate}``.

    Raises:
        InputError: the log breaks the contract or an estimator name is unknown.
    """
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown:
        raise InputError(f"unknown estimator(s): {', '.join(unknown)}; choose from {', '.join(ESTIMATORS)}")
    log = check_log(log, target)
    names = [e for e in estimators if reward_model is not None or e in ("ipw", "snipw")]
    a = log["action"].to_numpy()
    r = log["reward"].to_numpy(dtype="float64")
    w = target[np.arange(len(a)), a] / log["propensity"].to_numpy(dtype="float64")
    k = target.shape[1]

    def run(weights: np.ndarray) -> dict[str, float]:
        q_all = reward_model(log, weights, k) if reward_model is not None else None
        logged_q = q_all[np.arange(len(a)), a] if q_all is not None else None
        return _point(r, w, q_all, logged_q, target, weights, names)

    point = run(np.ones(len(log)))
    draws = {name: np.empty(n_boot) for name in names}
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, len(log), len(log)), minlength=len(log)).astype("float64")
        for name, value in run(counts).items():
            draws[name][b] = value
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {name: Estimate(name, point[name], *map(float, np.percentile(draws[name], [lo, hi])), len(log))
            for name in names}
