"""Data loading for the dashboard: open the store read-only, run the analytics, close, cache the frames.

Why frames and not connections are cached: DuckDB lets a file have one writer *or* any number of
readers, so a read-only connection kept open on the live database would stop the dispatcher or
``pushwise demo`` from opening it. Each load therefore opens through
:func:`engine.store.open_reader` (the live file when it is free, else the writer's last snapshot),
reads everything the pages show, and closes. The frames are cached for ``CACHE_TTL_SECONDS``, keyed
by the files' modification stamps, so a write or a newly published snapshot shows up at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from engine import analytics as an
from engine.store import open_reader, snapshot_path

__all__ = ["CACHE_TTL_SECONDS", "DEFAULT_DB_PATH", "Source", "database_exists", "default_db_path",
           "file_stamp", "load_options", "load_views"]

DEFAULT_DB_PATH = "data/pushwise.duckdb"
CACHE_TTL_SECONDS = 10


@dataclass(frozen=True)
class Source:
    """Which file a load read: ``origin`` is ``"live"`` or ``"snapshot"``; ``modified`` is epoch seconds."""

    origin: str
    path: str
    modified: float


def default_db_path(env: Mapping[str, str] | None = None) -> str:
    """``$PUSHWISE_DB_PATH``, else ``data/pushwise.duckdb``."""
    env = os.environ if env is None else env
    return env.get("PUSHWISE_DB_PATH") or DEFAULT_DB_PATH


def database_exists(db_path: str) -> bool:
    """True when the database file or its published snapshot is there to be read."""
    return Path(db_path).exists() or snapshot_path(db_path).exists()


def file_stamp(db_path: str) -> tuple:
    """(mtime_ns, size) of the database, its WAL and its snapshot: changes whenever any of them does."""
    paths = (Path(db_path), Path(db_path + ".wal"), snapshot_path(db_path))
    return tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in paths)


@contextmanager
def _reader(db_path: str) -> Iterator[tuple[duckdb.DuckDBPyConnection, Source]]:
    con, origin = open_reader(db_path)
    try:
        read = Path(db_path) if origin == "live" else snapshot_path(db_path)
        wal = Path(str(read) + ".wal")
        modified = max(p.stat().st_mtime for p in (read, wal) if p.exists())
        yield con, Source(origin, str(read), modified)
    finally:
        con.close()


@st.cache_data(ttl=CACHE_TTL_SECONDS, max_entries=16, show_spinner=False)
def load_options(db_path: str, stamp: tuple) -> dict:
    """What the sidebar offers, and the source and simulation summary for the header.

    Returns:
        dict with ``source`` (:class:`Source`), ``campaigns`` (see :func:`engine.analytics.campaigns`),
        ``vendors`` (list), ``dates`` ((first, last) UTC day of send_at), ``simulation``
        (see :func:`engine.analytics.simulation_summary`).
    """
    del stamp  # part of the cache key only
    with _reader(db_path) as (con, source):
        return {
            "source": source,
            "campaigns": an.campaigns(con),
            "vendors": an.vendors(con),
            "dates": an.send_date_range(con),
            "simulation": an.simulation_summary(con),
        }


@st.cache_data(ttl=CACHE_TTL_SECONDS, max_entries=64, show_spinner="Reading the store…")
def load_views(
    db_path: str,
    stamp: tuple,
    campaign_id: str | None,
    vendor: str | None,
    start: date | None,
    end: date | None,
    pseudonym_key: bytes,
) -> dict[str, pd.DataFrame]:
    """Every frame the pages show, for one set of filters, read over one connection.

    Returns:
        dict of DataFrames: ``funnel``, ``funnel_by_campaign_id``, ``funnel_by_vendor``,
        ``funnel_by_send_hour_local`` (:func:`engine.analytics.funnel`), ``arms``
        (:func:`~engine.analytics.arm_outcomes`), ``uplift`` (:func:`~engine.analytics.compare_arms`),
        ``readout`` (:func:`~engine.analytics.holdout_readout`, the experiment CLI's code),
        ``templates`` (title and body are the campaign's template text), ``vendor_daily``, ``quota``, ``calibration``,
        ``skips``, ``vendor_summary``, ``vendor_outcomes``, ``attempts``, ``heatmap``, ``models``
        (metrics as parsed dicts), ``model_metrics``, ``decisions`` (pseudonymised, with ``item_name``).
    """
    del stamp
    filters = an.Filters(campaign_id=campaign_id, vendor=vendor, start=start, end=end)
    with _reader(db_path) as (con, _source):
        views = {"funnel": an.funnel(con, filters)}
        for group in an.FUNNEL_GROUPS:
            views[f"funnel_by_{group}"] = an.funnel(con, filters, by=group)
        views["arms"] = an.arm_outcomes(con, filters)
        views["uplift"] = an.compare_arms(views["arms"])
        views["readout"] = an.holdout_readout(views["arms"])
        views["templates"] = _with_template_text(con, an.template_summary(con, filters))
        views["vendor_daily"] = an.vendor_daily(con, filters)
        views["quota"] = an.quota_use(con, vendor)
        views["calibration"] = an.score_calibration(con, filters)
        views["skips"] = an.skip_reasons(con, filters)
        views["vendor_summary"] = an.vendor_summary(con, filters)
        views["vendor_outcomes"] = an.vendor_outcomes(con, filters)
        views["attempts"] = an.attempt_outcomes(con, filters)
        views["heatmap"] = an.send_time_heatmap(con, filters)
        runs = an.model_runs(con)
        views["model_metrics"] = an.model_metrics(runs)
        views["models"] = runs
        views["decisions"] = _with_item_names(con, an.decision_log(con, pseudonym_key, filters, limit=500))
    return views


def _with_template_text(con: duckdb.DuckDBPyConnection, templates: pd.DataFrame) -> pd.DataFrame:
    """``templates`` with ``title``/``body`` replaced by the campaign's template text (``{item_name}``…).

    The decisions table stores each user's *rendered* title, so ``any_value(title)`` is one user's
    item name, not the template. The text comes from the campaign spec, ids defaulting to ``t<i>``
    as in :func:`engine.schedule.campaign.parse_campaign`; a template the spec does not name shows
    no text.
    """
    rows = con.execute("SELECT campaign_id, CAST(spec AS VARCHAR) FROM campaigns").fetchall()
    text: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    for campaign_id, spec in rows:
        raw = json.loads(spec).get("templates") if spec else None
        for i, t in enumerate(raw if isinstance(raw, list) else []):
            if isinstance(t, dict):
                text[(campaign_id, str(t.get("id", f"t{i}")))] = (t.get("title"), t.get("body"))
    keys = list(zip(templates["campaign_id"], templates["template_id"], strict=True))
    return templates.assign(title=[text.get(k, (None, None))[0] for k in keys],
                            body=[text.get(k, (None, None))[1] for k in keys])


def _with_item_names(con: duckdb.DuckDBPyConnection, log: pd.DataFrame) -> pd.DataFrame:
    """The decision log with ``item_name`` (from ``items``) after ``item_id``."""
    ids = sorted({str(i) for i in log["item_id"].dropna()})
    names = dict(con.execute("SELECT item_id, name FROM items WHERE list_contains($ids, item_id)",
                             {"ids": ids}).fetchall()) if ids else {}
    log = log.copy()
    log.insert(log.columns.get_loc("item_id") + 1, "item_name", [names.get(i) for i in log["item_id"]])
    return log

