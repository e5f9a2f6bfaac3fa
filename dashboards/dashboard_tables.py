"""Marketer-facing tables: analytics frames renamed, labelled and formatted for display (pure, no I/O).

The analytics frames keep their machine names (``ci_low``, ``no_consent``) because notebooks and the
CLI read them; this module is the one place that turns them into what a marketer reads: column
labels with units, human labels for reasons and states, dates without a clock, and "—" for an empty
cell (Streamlit would print ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import streamlit as st

__all__ = ["BASELINE_LABELS", "EMPTY", "LABELS", "METRIC_LABELS", "Col", "human", "label_values", "metric_label",
           "model_scorecard", "table"]

#: What an empty cell shows.
EMPTY = "—"

#: Human labels for the values of reason, state, outcome, arm and stage columns.
LABELS: dict[str, str] = {
    # skip reasons (engine/schedule/planner.py, engine/service/trigger.py)
    "no_consent": "No push consent",
    "no_device": "No device",
    "no_candidate_item": "No item to recommend",
    "no_allowed_send_time": "No send time outside quiet hours",
    "frequency_cap": "Frequency cap reached",
    "fatigue": "Push fatigue",
    "low_value": "Low expected value",
    # outbox states and vendor outcomes (engine/domain.py SendState, Outcome)
    "pending": "Queued",
    "in_flight": "Sending",
    "retry": "Waiting to retry",
    "delivered": "Delivered",
    "invalid_token": "Invalid token",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "rejected_payload": "Rejected payload",
    "rate_limited": "Rate limited",
    "quota_exhausted": "Quota exhausted",
    "transient": "Temporary error",
    "auth_error": "Credentials refused",
    # arms, actions and outcomes
    "treatment": "Treatment",
    "holdout": "Holdout",
    "send": "Send",
    "skip": "Skip",
    "converted": "Converted",
    "any_purchase": "Any purchase",
    # funnel stages (engine.analytics.STAGES)
    "planned": "Planned",
    "sent": "Sent",
    "opened": "Opened",
    "clicked": "Clicked",
}


def human(value: object) -> object:
    """The label of one raw value (unchanged when it has none; ``EMPTY`` when missing)."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return EMPTY
    return LABELS.get(str(value), value)


def label_values(series: pd.Series) -> pd.Series:
    """``series`` with every raw value replaced by its human label (object dtype)."""
    return series.astype(object).map(human)


@dataclass(frozen=True)
class Col:
    """How one column is shown.

    kind: ``text`` (as is), ``label`` (human label of the value), ``count`` (integer), ``percent``
    (a share 0..1 shown as 12.3%), ``pp`` (a difference of shares shown as +1.2 pp), ``number``
    (``fmt`` is a printf format), ``p`` (p-value), ``date`` (no clock), ``datetime`` (UTC, minutes).
    """

    label: str
    kind: str = "text"
    fmt: str = "%.3f"


def _as_text(values: pd.Series, col: Col) -> pd.Series:
    def one(v: object) -> str:
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and pd.isna(v)):
            return EMPTY
        if col.kind == "percent":
            return f"{float(v):.1%}"
        if col.kind == "pp":
            return f"{float(v) * 100:+.1f} pp"
        if col.kind == "p":
            return f"{float(v):.3g}"
        if col.kind == "count":
            return f"{int(v):,}"
        if col.kind == "number":
            return col.fmt % float(v)
        return str(v)
    return values.astype(object).map(one)


def _config(col: Col) -> object:
    if col.kind == "percent":
        return st.column_config.NumberColumn(col.label, format="percent")
    if col.kind == "pp":
        return st.column_config.NumberColumn(col.label, format="%+.1f pp")
    if col.kind == "p":
        return st.column_config.NumberColumn(col.label, format="%.3g")
    if col.kind == "number":
        return st.column_config.NumberColumn(col.label, format=col.fmt)
    if col.kind == "count":
        return st.column_config.NumberColumn(col.label, format="localized")
    return st.column_config.TextColumn(col.label)


def _column(values: pd.Series, col: Col) -> tuple[pd.Series, object]:
    if col.kind == "label":
        return label_values(values), st.column_config.TextColumn(col.label)
    if col.kind == "date":
        return values.map(lambda v: EMPTY if pd.isna(v) else pd.Timestamp(v).strftime("%Y-%m-%d")), \
            st.column_config.TextColumn(col.label)
    if col.kind == "datetime":
        return values.map(lambda v: EMPTY if pd.isna(v) else pd.Timestamp(v).strftime("%Y-%m-%d %H:%M")), \
            st.column_config.TextColumn(col.label)
    if col.kind == "text" or values.isna().any():
        # A numeric column with a gap is shown as text, already formatted, so the gap reads "—".
        return _as_text(values, col), st.column_config.TextColumn(col.label)
    if col.kind == "pp":
        return values.astype(float) * 100, _config(col)
    return values, _config(col)


def table(frame: pd.DataFrame, columns: Mapping[str, Col]) -> tuple[pd.DataFrame, dict[str, object]]:
    """The display copy of ``frame``: only ``columns``, in their order, renamed to their labels.

    Args:
        frame: an analytics frame.
        columns: source column -> :class:`Col`.

    Returns:
        (display frame, ``column_config`` for ``st.dataframe``). Percent columns keep their 0..1
        values; pp columns are scaled to percentage points; a column with an empty cell is text.
    """
    shown, config = {}, {}
    for name, col in columns.items():
        shown[col.label], config[col.label] = _column(frame[name], col)
    return pd.DataFrame(shown, index=frame.index).reset_index(drop=True), config


#: Names of model metrics (engine/training) as a marketer reads them.
METRIC_LABELS: dict[str, str] = {
    "auc": "AUC (ranking quality, 0.5 = random)",
    "log_loss": "Log loss (lower is better)",
    "recall@10": "Recall@10",
    "ndcg@10": "NDCG@10",
    "candidate_recall": "Candidate recall",
    "eval_positive_rate": "Positive rate in evaluation",
    "n_eval_rows": "Evaluation rows",
    "n_train_rows": "Training rows",
    "n_push_train_rows": "Push rows in training",
    "n_push_eval_rows": "Push rows in evaluation",
    "n_train": "Training rows",
    "n_eval": "Evaluation rows",
    "train_clicks": "Clicks in training",
    "eval_clicks": "Clicks in evaluation",
    "users": "Users",
    "top1_hour_hit": "Best hour hit rate",
    "top3_hour_hit": "Top-3 hours hit rate",
    "top3_hour_of_week_hit": "Top-3 hours-of-week hit rate",
    "eval_events": "Evaluation events",
    "eval_users": "Evaluation users",
    "fallback_event_share": "Share of events on the fallback",
}
#: Comparison keys that name their metric by a shorter name (engine/training/send_time.py).
METRIC_ALIASES: dict[str, str] = {"top3_hit": "top3_hour_hit"}
BASELINE_LABELS: dict[str, str] = {"item_ctr": "item click rate", "global": "global best hours"}


def metric_label(key: str) -> str:
    """Human name of a metric key (falls back to the key with spaces)."""
    return METRIC_LABELS.get(key, key.replace("_", " ").capitalize())


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.3f}"


def _numbers(metrics: Mapping[str, object], prefix: str = "") -> dict[str, float]:
    # Nested sections flatten to "section.key", as engine.analytics.model_metrics does.
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def model_scorecard(metrics: Mapping[str, object]) -> pd.DataFrame:
    """One model run's metrics as rows a marketer can read (pure).

    Keys ``m_low``/``m_high`` become the 95% interval of ``m``; keys ``m_minus_b_low``/``_high``
    become the interval of ``m`` minus baseline ``b``, with a reading of whether it beats it.

    Returns:
        DataFrame[Metric, Value, 95% interval, Baseline, Minus baseline (95% interval), Reading];
        cells without a value read ``EMPTY``.
    """
    numbers = _numbers(metrics)
    compared: dict[str, tuple[str, float, float]] = {}
    for key in numbers:
        if "_minus_" in key and key.endswith("_low") and key[:-4] + "_high" in numbers:
            metric, baseline = key[:-4].split("_minus_", 1)
            compared[METRIC_ALIASES.get(metric, metric)] = (baseline, numbers[key], numbers[key[:-4] + "_high"])
    interval_keys = {k for k in numbers if k.endswith(("_low", "_high"))
                     and (k.rsplit("_", 1)[0] in numbers or "_minus_" in k)}
    rows = []
    for key in [k for k in numbers if k not in interval_keys] + [m for m in compared if m not in numbers]:
        low, high = numbers.get(f"{key}_low"), numbers.get(f"{key}_high")
        row = {"Metric": metric_label(key),
               "Value": _number(numbers[key]) if key in numbers else EMPTY,
               "95% interval": EMPTY if low is None or high is None else f"{low:.3f} to {high:.3f}",
               "Baseline": EMPTY, "Minus baseline (95% interval)": EMPTY, "Reading": EMPTY}
        if key in compared:
            baseline, lo, hi = compared[key]
            row["Baseline"] = BASELINE_LABELS.get(baseline, baseline.replace("_", " "))
            row["Minus baseline (95% interval)"] = f"{lo:+.3f} to {hi:+.3f}"
            row["Reading"] = "above baseline" if lo > 0 else "below baseline" if hi < 0 else "no clear difference"
        rows.append(row)
    return pd.DataFrame(rows, columns=["Metric", "Value", "95% interval", "Baseline", "Minus baseline (95% interval)",
                                       "Reading"])
