"""The ``click`` model trained on a Dask cluster: snapshots built on the workers from Parquet, fit by ``lightgbm.dask``.

Same rows, labels, thinning and evaluation as :func:`engine.training.click.train_click`; what moves
to the cluster is the per-snapshot feature SQL (each worker runs it in its own DuckDB over the
exported Parquet) and the boosting (``DaskLGBMRegressor`` with the ``cross_entropy`` objective, since
labels are soft in [0, 1]). The artifact is an ordinary ``models/click/<version>/`` with
``"trainer": "lightgbm.dask"`` in its card, so planning loads it like any other.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client
from lightgbm.dask import DaskLGBMRegressor

from engine.clock import Clock
from engine.errors import ModelError
from engine.features.base import PURCHASE_TYPES, Db, check_as_of
from engine.features.click import CLICK_FEATURES
from engine.scale.export import export_store, parquet_connection
from engine.training.base import TrainResult, data_end, lgb_params, publish
from engine.training.click import ClickConfig
from engine.training.click_data import ClickData, behaviour_rows, push_rows
from engine.training.metrics import auc, log_loss

__all__ = ["train_click_dask"]

NAME = "click"


def _snapshot_rows(at: datetime, export_dir: str, data: ClickData, keep: float, seed: int) -> pd.DataFrame:
    """Worker task: one snapshot's thinned behaviour rows with a ``weight`` column (runs on the cluster)."""
    con = parquet_connection(export_dir)
    try:
        rng = np.random.default_rng(seed)
        rows = behaviour_rows(con, at, data, rng)
    finally:
        con.close()
    zero = rows["label"].to_numpy() == 0
    kept = ~zero | (rng.random(len(rows)) < keep)
    out = rows.loc[kept, [*CLICK_FEATURES, "label"]].reset_index(drop=True)
    return out.assign(weight=np.where(zero, 1.0 / keep, 1.0)[kept])


def train_click_dask(db: Db, as_of: datetime, models_dir: str | Path, clock: Clock, client: Client,
                     export_dir: str | Path, config: ClickConfig | None = None) -> TrainResult:
    """Train, evaluate, save and record the click model with the heavy steps on ``client``'s cluster.

    Args:
        db: the store (exported to ``export_dir`` first; pushes and evaluation read it directly).
        client: a connected ``distributed.Client`` (e.g. ``Client("tcp://host:8786")``).
        export_dir: a folder every worker can read (shared disk; the local disk for a LocalCluster).

    Returns:
        The :class:`TrainResult`; headline AUC on the evaluation snapshot (no ranking baselines here).

    Raises:
        ModelError: no training rows, or LightGBM failed on the cluster.
    """
    config = config or ClickConfig()
    started = time.perf_counter()
    as_of = data_end(db, check_as_of(as_of), PURCHASE_TYPES)
    n_days = timedelta(days=config.data.label_days)
    eval_at = as_of - n_days
    snapshots = [eval_at - n_days * i for i in range(config.train_snapshots, 0, -1)]
    export = str(export_store(db, export_dir))

    parts = [dd.from_delayed([client.submit(_snapshot_rows, at, export, config.data, config.negative_keep,
                                            config.seed + i, pure=False)])
             for i, at in enumerate(snapshots)]
    pushes = push_rows(db, as_of, config.data)
    push_train = pushes[pushes["decided_at"] < eval_at]
    if len(push_train):
        local = push_train[[*CLICK_FEATURES, "label"]].assign(weight=config.push_weight)
        parts.append(dd.from_pandas(local.reset_index(drop=True), npartitions=1))
    train = dd.concat(parts).persist()
    n_rows = int(train.shape[0].compute())
    if n_rows == 0:
        raise ModelError("no click training rows before the first snapshot")

    params = lgb_params(config.seed, objective="cross_entropy", learning_rate=config.learning_rate,
                        num_leaves=config.num_leaves, min_data_in_leaf=config.min_data_in_leaf,
                        num_threads=config.num_threads)
    features = list(CLICK_FEATURES)
    # lightgbm.dask sets threads from each worker's nthreads and warns about num_threads, n_jobs, verbose
    sk_params = {k: v for k, v in params.items() if k not in ("seed", "num_threads", "verbose")}
    model = DaskLGBMRegressor(client=client, n_estimators=config.num_boost_round, verbosity=-1,
                              random_state=config.seed, **sk_params)
    try:
        with warnings.catch_warnings():
            # lightgbm.dask 4.x passes the sklearn n_jobs (always present, None by default) into its own
            # alias check and warns on every fit; threads come from the workers' nthreads regardless
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored", category=UserWarning)
            model.fit(train[features], train["label"], sample_weight=train["weight"])
    except Exception as exc:  # lightgbm.dask raises LightGBMError or plain errors from the workers
        raise ModelError(f"LightGBM failed to train on the Dask cluster: {exc}") from exc
    booster = model.to_local().booster_

    evaluation = behaviour_rows(db, eval_at, config.data, np.random.default_rng(config.seed))
    y, p = evaluation["bought"].to_numpy(), booster.predict(evaluation[features])
    metrics = {"auc": auc(y, p), "log_loss": log_loss(y, p), "n_train_rows": n_rows,
               "n_eval_rows": len(evaluation), "n_workers": len(client.scheduler_info()["workers"])}
    card = {
        "task": "P(user acts on an item), as engine.training.click, trained on a Dask cluster",
        "trainer": "lightgbm.dask",
        "features": features,
        "parameters": {**params, "num_boost_round": config.num_boost_round},
        "config": asdict(config),
        "seed": config.seed,
        "data_window": {"as_of": as_of.isoformat(), "train_snapshots": [s.isoformat() for s in snapshots],
                        "eval_snapshot": eval_at.isoformat(), "label_days": config.data.label_days},
        "metrics": metrics,
        "headline": {"metric": "auc", "value": metrics["auc"], "baseline": "none", "baseline_value": None},
    }
    saved = publish(db, models_dir, clock, NAME, booster, card)
    return TrainResult(NAME, saved.version, saved.path, metrics, {}, "auc", metrics["auc"], "none", float("nan"),
                       seconds=time.perf_counter() - started, card=saved.card)
