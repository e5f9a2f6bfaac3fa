"""The ``click_obd`` model: click-through rate of Open Bandit (ZOZOTOWN) impressions.

The sample has 20,000 impressions and about 80 clicks, so the model is deliberately tiny (depth-2
trees, strong regularisation) and every number comes with a bootstrap 95 % interval; the paired
interval of the AUC difference against the item-CTR baseline says whether the model beats it at all.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from engine.clock import Clock
from engine.errors import ConfigError, ModelError
from engine.features.base import Db, check_as_of, fetch_df
from engine.training.base import TrainResult, fit_booster, lgb_params, publish
from engine.training.metrics import bootstrap_intervals

__all__ = ["OBD_CATEGORICAL", "OBD_FEATURES", "ObdConfig", "obd_impressions", "train_click_obd"]

NAME = "click_obd"
OBD_SOURCE = "open_bandit"
JST = "Asia/Tokyo"

OBD_CATEGORICAL: tuple[str, ...] = (
    "user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3",
    "item_feature_1", "item_feature_2", "item_feature_3",
)
#: Model columns, in order: position (1–3), hour of day in Japan, the user–item affinity count,
#: the numeric item feature, then the hashed categoricals.
OBD_FEATURES: tuple[str, ...] = ("position", "hour_jst", "affinity", "item_feature_0", *OBD_CATEGORICAL)


@dataclass(frozen=True)
class ObdConfig:
    """Knobs of the Open Bandit CTR run (small on purpose: ~80 clicks).

    Attributes:
        train_share: the earliest share of impressions (by time) used for training.
        item_prior: pseudo-impressions that shrink each item's CTR toward the overall CTR (baseline).
        n_boot: bootstrap resamples for the intervals.
    """

    train_share: float = 0.7
    item_prior: float = 200.0
    n_boot: int = 1000
    num_boost_round: int = 80
    learning_rate: float = 0.05
    num_leaves: int = 4
    max_depth: int = 2
    min_data_in_leaf: int = 300
    lambda_l2: float = 10.0
    seed: int = 7
    num_threads: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.train_share < 1.0:
            raise ConfigError(f"click_obd train_share must be between 0 and 1, got {self.train_share}")


def obd_impressions(db: Db, as_of: datetime) -> pd.DataFrame:
    """Open Bandit impressions before ``as_of`` with their click label and model features, oldest first.

    Returns:
        ``ts``, ``user_id``, ``item_id``, ``click`` (0/1), ``propensity``, ``policy``, then
        :data:`OBD_FEATURES`; categoricals as pandas ``category`` columns.
    """
    as_of = check_as_of(as_of)
    frame = fetch_df(
        db,
        f"""
        SELECT e.ts, e.user_id, e.item_id,
               TRY_CAST(e.properties->>'click' AS INTEGER) AS click,
               TRY_CAST(e.properties->>'propensity' AS DOUBLE) AS propensity,
               e.properties->>'policy' AS policy,
               TRY_CAST(e.properties->>'position' AS DOUBLE) AS position,
               CAST(hour(timezone('{JST}', e.ts)) AS DOUBLE) AS hour_jst,
               TRY_CAST(e.properties->>'affinity' AS DOUBLE) AS affinity,
               TRY_CAST(it.properties->>'item_feature_0' AS DOUBLE) AS item_feature_0,
               {", ".join(f"e.properties->>'{c}' AS {c}" for c in OBD_CATEGORICAL if c.startswith("user"))},
               {", ".join(f"it.properties->>'{c}' AS {c}" for c in OBD_CATEGORICAL if c.startswith("item"))}
        FROM events e LEFT JOIN items it ON it.item_id = e.item_id
        WHERE e.event_type = 'impression' AND e.source = '{OBD_SOURCE}' AND e.ts < $as_of
        ORDER BY e.ts, e.event_id
        """,
        {"as_of": as_of},
    )
    frame = frame.dropna(subset=["click"]).reset_index(drop=True)
    for col in OBD_CATEGORICAL:
        frame[col] = frame[col].astype("category")
    return frame.astype({"click": "int64"})


def train_click_obd(
    db: Db, as_of: datetime, models_dir: str | Path, clock: Clock, config: ObdConfig | None = None
) -> TrainResult:
    """Train, evaluate, save and record the Open Bandit CTR model on a 70/30 split in time.

    Only impressions before ``as_of`` are read.

    Raises:
        ModelError: no impressions, or a side of the split has no click.
    """
    config = config or ObdConfig()
    started = time.perf_counter()
    rows = obd_impressions(db, as_of)
    if rows.empty:
        raise ModelError("no Open Bandit impressions before as_of; ingest the open_bandit data first")
    cut = int(len(rows) * config.train_share)
    train, test = rows.iloc[:cut], rows.iloc[cut:]
    if train["click"].sum() == 0 or test["click"].sum() == 0:
        raise ModelError("click_obd needs clicks on both sides of the time split")

    params = lgb_params(
        config.seed, num_threads=config.num_threads, learning_rate=config.learning_rate,
        num_leaves=config.num_leaves, max_depth=config.max_depth,
        min_data_in_leaf=config.min_data_in_leaf, lambda_l2=config.lambda_l2, cat_smooth=50.0,
        min_data_per_group=200, feature_fraction=0.8,
    )
    features = list(OBD_FEATURES)
    booster = fit_booster(train, features, train["click"].to_numpy(), params, config.num_boost_round)

    overall = float(train["click"].mean())
    stats = train.groupby("item_id", observed=True)["click"].agg(["sum", "count"])
    item_ctr = (stats["sum"] + config.item_prior * overall) / (stats["count"] + config.item_prior)
    predictions = {
        "model": booster.predict(test[features]),
        "item_ctr": test["item_id"].map(item_ctr).fillna(overall).to_numpy(dtype="float64"),
        "overall_ctr": np.full(len(test), overall),
    }
    boot = bootstrap_intervals(
        test["click"].to_numpy(), predictions, np.random.default_rng(config.seed), n_boot=config.n_boot
    )
    metrics = {
        **boot["model"],
        "auc_minus_item_ctr_low": -boot["item_ctr-model"]["auc_diff_high"],
        "auc_minus_item_ctr_high": -boot["item_ctr-model"]["auc_diff_low"],
        "n_train": float(len(train)), "n_eval": float(len(test)),
        "train_clicks": float(train["click"].sum()), "eval_clicks": float(test["click"].sum()),
    }
    baselines = {"item_ctr": boot["item_ctr"], "overall_ctr": boot["overall_ctr"]}
    split_at = rows["ts"].iloc[cut]
    card = {
        "task": "P(click | impression) on the Open Bandit Dataset sample",
        "features": features,
        "categorical_features": list(OBD_CATEGORICAL),
        "label": "click (0/1) of the impression",
        "parameters": {**params, "num_boost_round": config.num_boost_round},
        "config": asdict(config),
        "seed": config.seed,
        "data_window": {
            "as_of": check_as_of(as_of).isoformat(),
            "train": [rows["ts"].iloc[0].isoformat(), split_at.isoformat()],
            "eval": [split_at.isoformat(), rows["ts"].iloc[-1].isoformat()],
        },
        "metrics": metrics,
        "baseline_metrics": baselines,
        "headline": {"metric": "auc", "value": metrics["auc"], "baseline": "item_ctr",
                     "baseline_value": baselines["item_ctr"]["auc"]},
        "caveat": "about 80 clicks in total: read the intervals, not the point estimates",
    }
    model = publish(db, models_dir, clock, NAME, booster, card)
    return TrainResult(
        NAME, model.version, model.path, metrics, baselines, "auc", metrics["auc"], "item_ctr",
        baselines["item_ctr"]["auc"], seconds=time.perf_counter() - started, card=model.card,
    )
