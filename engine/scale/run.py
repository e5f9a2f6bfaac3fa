"""``pushwise train --dask ADDRESS`` and ``pushwise plan --dask ADDRESS``: the CLI paths that use a Dask cluster."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client, Future

from engine.clock import SystemClock
from engine.config import Settings
from engine.scale.scoring import predict_on_cluster
from engine.scale.train import train_click_dask
from engine.schedule.campaign import Campaign
from engine.schedule.planner import PlanReport, plan_campaign
from engine.schedule.policies import ModelItemChooser, model_hour_ranker
from engine.store import Store
from engine.training.artifacts import TrainedModel
from engine.training.base import TrainResult
from engine.training.click import ClickConfig

__all__ = ["ClusterModel", "cluster_item_chooser", "plan_on_dask", "train_on_dask"]


class ClusterModel:
    """A loaded model whose ``predict`` runs on the cluster; every other attribute is the model's own.

    The model is sent to every worker once, on the first call, and reused by every later one.
    """

    def __init__(self, model: TrainedModel, client: Client) -> None:
        self.model, self.client = model, client
        self._remote: Future | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self._remote is None:
            [self._remote] = self.client.scatter([self.model], broadcast=True)
        return predict_on_cluster(self.client, self.model, frame, remote_model=self._remote)

    def predict_matrix(self, x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        return self.predict(pd.DataFrame(x, columns=list(columns), copy=False))


def cluster_item_chooser(models_dir: Path, client: Client, top_k: int = 10, **options: Any) -> ModelItemChooser:
    """:func:`engine.schedule.policies.model_item_chooser` with the click model's scoring on ``client``'s cluster.

    ``options`` go to :class:`~engine.schedule.policies.ModelItemChooser` (shortlist and batch sizes).
    """
    return ModelItemChooser(models_dir, top_k, scorer=lambda model: ClusterModel(model, client), **options)


def train_on_dask(settings: Settings, address: str, as_of: datetime | None) -> TrainResult:
    """Train the click model on the cluster at ``address``; the Parquet export goes to ``<data_dir>/export``."""
    with Store(settings.db_path) as store, Client(address) as client:
        cutoff = as_of or store.scalar("SELECT max(ts) FROM events WHERE NOT simulated") + timedelta(seconds=1)
        return train_click_dask(store, cutoff, Path(settings.models_dir), SystemClock(), client,
                                Path(settings.data_dir) / "export", ClickConfig(seed=settings.seed))


def plan_on_dask(settings: Settings, address: str, campaign: Campaign, as_of: datetime | None) -> PlanReport:
    """Plan ``campaign`` as ``pushwise plan`` does, scoring candidates on the cluster at ``address``."""
    models_dir = Path(settings.models_dir)
    with Store(settings.db_path) as store, Client(address) as client:
        return plan_campaign(store, campaign, cluster_item_chooser(models_dir, client), model_hour_ranker(models_dir),
                             as_of=as_of, seed=settings.seed)
