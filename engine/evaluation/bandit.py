"""Open Bandit evaluations: the Bernoulli-TS policy's click rate estimated from the random logs, and the click model.

The target policy (``bts``) was recomputed every few minutes, so its probability of an item drifts
within a day. Its logged ``propensity`` is exact for the logged (item, slot) at that moment; the
target's full distribution at time t in slot p is rebuilt from the logged propensity of each item's
nearest-in-time ``bts`` impression in that slot, renormalised over the items (see
docs/decisions/007-evaluation.md). Averaging the logged propensities instead over-weights the
moments an item was likely, which is the bias the issue warns about; :func:`naive_target` keeps
that variant for the report.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from engine.clock import FixedClock
from engine.evaluation.ope import Estimate, WeightCheck, estimate_policy_value, shrunk_ctr_model, weight_check
from engine.features.base import Db
from engine.training.artifacts import load_model
from engine.training.click_obd import ObdConfig, obd_impressions, train_click_obd

__all__ = ["ClickModelReport", "OpeReport", "bandit_log", "click_model_report", "drift_aware_target",
           "naive_target", "ope_report"]

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
DEFAULT_ESTIMATOR = "dm"


@dataclass(frozen=True)
class OpeReport:
    """Estimates of the target's click rate beside the truth and the "no change" baseline."""

    estimates: dict[str, Estimate]
    naive_ipw: Estimate
    ground_truth: Estimate
    no_change: Estimate
    default_estimator: str
    weights: WeightCheck | None = None


def bandit_log(impressions: pd.DataFrame) -> pd.DataFrame:
    """Open Bandit impressions (``obd_impressions``) in the contract of :mod:`engine.evaluation.ope`.

    Returns:
        ``ts``, ``action`` (item number), ``group`` (slot 1–3), ``reward`` (click), ``propensity``.
    """
    return pd.DataFrame({
        "ts": impressions["ts"].to_numpy(),
        "action": impressions["item_id"].astype(str).str.removeprefix("obd:").astype(int).to_numpy(),
        "group": impressions["position"].astype(int).to_numpy(),
        "reward": impressions["click"].astype("float64").to_numpy(),
        "propensity": impressions["propensity"].astype("float64").to_numpy(),
    })


def _ns(ts: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).asi8


def drift_aware_target(target_log: pd.DataFrame, at: pd.DataFrame, n_actions: int) -> np.ndarray:
    """The target policy's distribution over items at each row of ``at``, from its own logged propensities.

    Args:
        target_log: the target's log (``ts``, ``action``, ``group``, ``propensity``).
        at: rows to evaluate at (``ts``, ``group``).
        n_actions: number of items.

    Returns:
        len(at) × n_actions probabilities; an item the target never showed in that slot gets 0.
    """
    out = np.zeros((len(at), n_actions))
    t_at = _ns(at["ts"])
    for (group, action), rows in target_log.groupby(["group", "action"]):
        mask = at["group"].to_numpy() == group
        times = _ns(rows["ts"])
        order = np.argsort(times)
        times, props = times[order], rows["propensity"].to_numpy()[order]
        q = t_at[mask]
        i = np.clip(np.searchsorted(times, q), 1, len(times) - 1) if len(times) > 1 else np.zeros(len(q), int)
        if len(times) > 1:
            i = np.where(np.abs(times[i - 1] - q) <= np.abs(times[i] - q), i - 1, i)
        out[mask, action] = props[i]
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


def naive_target(target_log: pd.DataFrame, at: pd.DataFrame, n_actions: int) -> np.ndarray:
    """The biased variant: each (slot, item)'s logged propensities averaged over the whole log."""
    mean = target_log.groupby(["group", "action"])["propensity"].mean()
    out = np.zeros((len(at), n_actions))
    for (group, action), p in mean.items():
        out[at["group"].to_numpy() == group, action] = p
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


def _rate(rewards: np.ndarray, rng: np.random.Generator, n_boot: int) -> Estimate:
    draws = rng.binomial(len(rewards), rewards.mean(), n_boot) / len(rewards)
    return Estimate("rate", float(rewards.mean()), *map(float, np.percentile(draws, [2.5, 97.5])), len(rewards))


def ope_report(db: Db, seed: int = 7, n_boot: int = 1000, behaviour: str = "random", target: str = "bts") -> OpeReport:
    """Estimate the ``target`` policy's click rate from the ``behaviour`` logs alone, and its truth.

    Raises:
        InputError: a policy has no impressions in the store.
    """
    rows = obd_impressions(db, FAR_FUTURE)
    logs = {name: bandit_log(rows[rows["policy"] == name]) for name in (behaviour, target)}
    from engine.errors import InputError
    for name, log in logs.items():
        if log.empty:
            found = ", ".join(f"{p} {n:,}" for p, n in rows["policy"].fillna("unknown").value_counts().sort_index().items())
            raise InputError(f"no Open Bandit impressions of policy {name!r} (the store has: {found or 'none'}); "
                             "ingest its log from a folder named after the policy, e.g. open_bandit/bts/all.csv")
    n_actions = int(max(log["action"].max() for log in logs.values())) + 1
    b, t = logs[behaviour], logs[target]
    rng = np.random.default_rng(seed)
    target_probs = drift_aware_target(t, b, n_actions)
    estimates = estimate_policy_value(b, target_probs, rng, shrunk_ctr_model(), n_boot=n_boot)
    naive = estimate_policy_value(b, naive_target(t, b, n_actions), rng, estimators=["ipw"], n_boot=n_boot)["ipw"]
    return OpeReport(estimates, naive, _rate(t["reward"].to_numpy(), rng, n_boot),
                     _rate(b["reward"].to_numpy(), rng, n_boot), DEFAULT_ESTIMATOR, weight_check(b, target_probs))


@dataclass(frozen=True)
class ClickModelReport:
    """The Open Bandit click model on its 30 % time split: metrics with 95 % intervals and a reliability table."""

    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    calibration: dict[str, float]
    reliability: pd.DataFrame  # bin, predicted (mean p), observed (click rate), n


def click_model_report(db: Db, seed: int = 7, n_boot: int = 1000) -> ClickModelReport:
    """Train the shipped ``click_obd`` model into a temporary folder and judge it on its held-out 30 %."""
    config = ObdConfig(seed=seed, n_boot=n_boot)
    with tempfile.TemporaryDirectory() as models:
        result = train_click_obd(db, FAR_FUTURE, models, FixedClock(FAR_FUTURE), config)
        model = load_model(models, "click_obd")
        rows = obd_impressions(db, FAR_FUTURE)
        test = rows.iloc[int(len(rows) * config.train_share):]
        p = model.predict(test)
    y = test["click"].to_numpy(dtype="float64")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    ratio = y[idx].sum(axis=1) / p[idx].sum(axis=1)
    bins = pd.qcut(p, 5, labels=False, duplicates="drop")
    table = pd.DataFrame({"bin": bins, "p": p, "y": y}).groupby("bin").agg(
        predicted=("p", "mean"), observed=("y", "mean"), n=("y", "size")).reset_index()
    calibration = {"observed_over_expected": float(y.sum() / p.sum()),
                   "low": float(np.percentile(ratio, 2.5)), "high": float(np.percentile(ratio, 97.5)),
                   "mean_predicted": float(p.mean()), "observed_rate": float(y.mean())}
    return ClickModelReport(dict(result.metrics), dict(result.baselines), calibration, table)
