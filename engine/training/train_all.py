"""Train every Pushwise model in one call, as the demo and the CLI do."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from engine.clock import Clock
from engine.features.base import Db, check_as_of, fetch_df
from engine.training.base import TrainResult
from engine.training.click import ClickConfig, train_click
from engine.training.click_obd import OBD_SOURCE, ObdConfig, train_click_obd
from engine.training.send_time import SendTimeConfig, train_send_time

__all__ = ["train_all"]

log = logging.getLogger(__name__)


def train_all(
    store: Db,
    as_of: datetime,
    models_dir: str | Path,
    clock: Clock,
    *,
    seed: int = 7,
    obd_as_of: datetime | None = None,
    click: ClickConfig | None = None,
    send_time: SendTimeConfig | None = None,
    click_obd: ObdConfig | None = None,
) -> list[TrainResult]:
    """Train ``click``, ``send_time`` and ``click_obd``; save each under ``models_dir`` and in ``model_runs``.

    Args:
        store: the store (or a connection) holding events, users, items and the push logs.
        as_of: cut-off for the Online Retail and Pushwise data; windows end at the last purchase
            before it when the data stops earlier (a 2011 log read in 2026).
        models_dir: root of ``<name>/<version>/`` artifacts.
        clock: gives the version stamp and ``trained_at``.
        seed: seed of every model (overrides the configs' own).
        obd_as_of: cut-off for the Open Bandit impressions. They come from another shop and year
            (ZOZOTOWN, 2019), so the Online Retail ``as_of`` would exclude them all; by default
            every impression is used.
        click, send_time, click_obd: per-model settings (defaults when None).

    Returns:
        One :class:`TrainResult` per trained model, in the order click, send_time, click_obd.
        ``click_obd`` is left out (with a warning in the log) when there are no Open Bandit
        impressions before ``obd_as_of``; the other two raise ``ModelError`` when they cannot train.
    """
    as_of = check_as_of(as_of)
    results = [
        train_click(store, as_of, models_dir, clock, replace(click or ClickConfig(), seed=seed)),
        train_send_time(store, as_of, models_dir, clock, replace(send_time or SendTimeConfig(), seed=seed)),
    ]
    obd_cutoff = obd_as_of or _after_last_impression(store)
    if obd_cutoff is None:
        log.warning("no Open Bandit impressions in the store: click_obd not trained")
    else:
        results.append(
            train_click_obd(store, obd_cutoff, models_dir, clock, replace(click_obd or ObdConfig(), seed=seed))
        )
    for result in results:
        log.info("%s", result)
    return results


def _after_last_impression(store: Db) -> datetime | None:
    last = fetch_df(
        store,
        "SELECT max(ts) + INTERVAL 1 SECOND AS t FROM events WHERE event_type = 'impression' AND source = $source",
        {"source": OBD_SOURCE},
    )["t"].iloc[0]
    return None if last is None or last != last else last.to_pydatetime()
