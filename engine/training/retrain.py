"""Scheduled retraining: train a challenger, judge it against the champion on the newest window, promote or not.

A run at ``as_of`` trains a new ``click`` model on data before the newest label window (as
:func:`~engine.training.click.train_click` always does), then scores the challenger and the current
champion on the same rows of that window, which neither has seen. The challenger is promoted (the
``models/click/CHAMPION`` pointer is rewritten) only when its AUC beats the champion's by at least
``margin``; the first run, or a champion that cannot score the current features, promotes outright.
Every run is recorded in ``retrain_runs`` (migration 004), promoted or not, and so is a run that fails
(reason ``failed: …``, migration 010). The APScheduler wiring
that repeats it on ``Settings.retrain_cron`` sits at the bottom of this module.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from apscheduler.schedulers.blocking import BlockingScheduler

from engine.clock import Clock
from engine.errors import ModelError, PushwiseError
from engine.features.base import PURCHASE_TYPES, check_as_of
from engine.schedule.cron import crontab_trigger
from engine.store import Store
from engine.training.artifacts import CHAMPION_FILE, load_model, serving_version
from engine.training.base import data_end
from engine.training.click import ClickConfig, train_click
from engine.training.metrics import auc, log_loss

__all__ = ["RetrainReport", "champion_version", "crontab_trigger", "retrain", "retrain_scheduler", "set_champion"]

log = logging.getLogger(__name__)

MODEL = "click"


@dataclass(frozen=True)
class RetrainReport:
    """One retraining run, as stored in ``retrain_runs`` (times UTC; scores are AUC on the eval window)."""

    run_id: str
    model_name: str
    started_at: datetime
    train_until: datetime | None        # None: the run failed before it had a data window
    eval_start: datetime | None
    eval_end: datetime | None
    champion_version: str | None
    challenger_version: str | None      # None: the run failed before a challenger was saved
    metric: str
    champion_score: float | None
    challenger_score: float | None
    margin: float
    promoted: bool
    reason: str
    metrics: dict[str, Any]


def champion_version(models_dir: str | Path, name: str = MODEL) -> str | None:
    """The promoted version of ``name``, or None when none was ever promoted."""
    pointer = Path(models_dir) / name / CHAMPION_FILE
    return pointer.read_text().strip() if pointer.is_file() else None


def set_champion(models_dir: str | Path, name: str, version: str) -> None:
    """Point ``models/<name>/CHAMPION`` at ``version``, atomically (readers see the old or the new one)."""
    root = Path(models_dir) / name
    tmp = root / f".{CHAMPION_FILE}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / CHAMPION_FILE)


def retrain(store: Store, models_dir: str | Path, clock: Clock, *, as_of: datetime, margin: float,
            config: ClickConfig | None = None) -> RetrainReport:
    """Train a challenger ``click`` model as of ``as_of``, compare, maybe promote, and record the run.

    Args:
        store: the store; the run is written to its ``retrain_runs`` table.
        models_dir: root of the model artifacts and of the ``CHAMPION`` pointers.
        clock: version stamps and ``started_at``.
        as_of: the data cut-off (clamped to the last purchase like every training run).
        margin: the AUC the challenger must gain over the champion to be promoted (e.g. 0.005).
        config: click model settings (defaults when None); its seed also seeds the eval rows.

    Returns:
        The :class:`RetrainReport` that was recorded.
    """
    config = config or ClickConfig()
    started = clock.now()
    try:   # the version serving this database (its promoted champion, else its newest), as planning picks it
        incumbent: str | None = serving_version(store, models_dir, MODEL).version
    except ModelError:
        incumbent = None
    try:
        report = _challenge(store, models_dir, clock, as_of, margin, config, started, incumbent)
    except Exception as exc:
        # A failed run is a run: the table says it happened, when, against which champion, and why.
        _record_failure(store, RetrainReport(
            run_id=f"{MODEL}/failed-{started.strftime('%Y%m%dT%H%M%S.%fZ')}", model_name=MODEL, started_at=started,
            train_until=None, eval_start=None, eval_end=None, champion_version=incumbent, challenger_version=None,
            metric="auc", champion_score=None, challenger_score=None, margin=margin, promoted=False,
            reason=f"failed: {exc}", metrics={"error": type(exc).__name__}))
        log.error("retrain failed: %s", exc)
        raise
    _record(store, report)
    log.info("retrain %s: %s (%s)", report.run_id, "promoted" if report.promoted else "kept champion", report.reason)
    return report


def _challenge(store: Store, models_dir: str | Path, clock: Clock, as_of: datetime, margin: float,
               config: ClickConfig, started: datetime, incumbent: str | None) -> RetrainReport:
    """Train the challenger, judge it against ``incumbent`` and promote it if it wins (not yet recorded)."""
    result = train_click(store, as_of, models_dir, clock, config)
    until = data_end(store, check_as_of(as_of), PURCHASE_TYPES)
    eval_start = until - timedelta(days=config.data.label_days)
    # The saved challenger may have been refit with this very window (``refit_with_eval``), so its own
    # predictions here would be in-sample: judge the scores of its fit that never saw the window.
    rows = result.holdout
    if rows is None:
        raise ModelError("train_click kept no held-out rows to judge the challenger on")
    y = rows["bought"].to_numpy()
    p_new = rows["score"].to_numpy()
    metrics: dict[str, Any] = {"n_eval_rows": len(rows), "challenger": {"auc": auc(y, p_new),
                                                                       "log_loss": log_loss(y, p_new)},
                               "challenger_judged": "its fit before the refit on the eval window"
                               if config.refit_with_eval else "the saved model"}
    champ_score = None
    if incumbent is None:
        promoted, reason = True, "no champion yet"
    else:
        try:
            champion = load_model(models_dir, MODEL, incumbent)
            p_old = champion.predict(rows.drop(columns="score"))
        except ModelError as exc:
            promoted, reason = True, f"champion cannot score the current features: {exc}"
        else:
            champ_score = auc(y, p_old)
            metrics["champion"] = {"auc": champ_score, "log_loss": log_loss(y, p_old),
                                   "saw_eval_window": _saw(champion.card, eval_start, until)}
            gain = metrics["challenger"]["auc"] - champ_score
            promoted = bool(gain >= margin)
            reason = f"AUC {'+' if gain >= 0 else ''}{gain:.4f} vs margin {margin:.4f}"
    if promoted:
        set_champion(models_dir, MODEL, result.version)
    return RetrainReport(
        run_id=f"{MODEL}/{result.version}", model_name=MODEL, started_at=started, train_until=until,
        eval_start=eval_start, eval_end=until, champion_version=incumbent, challenger_version=result.version,
        metric="auc", champion_score=champ_score, challenger_score=float(metrics["challenger"]["auc"]),
        margin=margin, promoted=promoted, reason=reason, metrics=metrics,
    )


def _saw(card: dict[str, Any], start: datetime, end: datetime) -> bool | None:
    """Whether a model's served fit read labels inside ``[start, end)`` (None: its card does not say).

    A champion that did is judged partly in-sample, which favours keeping it; the run records it.
    """
    window = card.get("data_window") or {}
    snapshots, days = window.get("served_fit_snapshots"), window.get("label_days")
    if snapshots is None or days is None:
        return None
    return any(start < datetime.fromisoformat(s) + timedelta(days=days) and datetime.fromisoformat(s) < end
               for s in snapshots)


def _record_failure(store: Store, r: RetrainReport) -> None:
    """Record a failed run; a store that cannot take the row is logged, so the run's own error is what surfaces."""
    try:
        _record(store, r)
    except (PushwiseError, duckdb.Error) as exc:
        log.error("could not record the failed retrain run %s: %s", r.run_id, exc)


def _record(store: Store, r: RetrainReport) -> None:
    row = asdict(r)
    row["metrics"] = json.dumps(r.metrics, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    cols = list(row)
    store.execute(f"INSERT INTO retrain_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                  [row[c] for c in cols])


def retrain_scheduler(cron: str, job, *, scheduler: BlockingScheduler | None = None) -> BlockingScheduler:
    """An APScheduler scheduler (not started) that calls ``job()`` on the crontab expression ``cron`` (UTC).

    Raises:
        ValueError: ``cron`` is not a valid five-field crontab expression.
    """
    scheduler = scheduler or BlockingScheduler(timezone=UTC)
    scheduler.add_job(job, crontab_trigger(cron), id="retrain",
                      max_instances=1, coalesce=True, misfire_grace_time=3600)
    return scheduler
