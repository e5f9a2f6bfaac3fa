"""Batch scoring on a Dask cluster: a feature frame cut into partitions, each predicted on a worker."""

from __future__ import annotations

import numpy as np
import pandas as pd
from distributed import Client, Future

from engine.training.artifacts import TrainedModel

__all__ = ["predict_on_cluster"]


def _predict_part(model: TrainedModel, part: pd.DataFrame) -> np.ndarray:
    return model.predict(part)


def predict_on_cluster(client: Client, model: TrainedModel, frame: pd.DataFrame, partitions: int = 0,
                       remote_model: Future | None = None) -> np.ndarray:
    """``model.predict(frame)`` computed on the cluster, in the order of ``frame``'s rows.

    Args:
        client: a connected ``distributed.Client``.
        model: the loaded model; sent to every worker once (scattered with broadcast).
        frame: every column in ``model.features`` (other columns are not sent).
        partitions: number of chunks (default: two per worker).
        remote_model: ``model`` already scattered to every worker (``client.scatter([model],
            broadcast=True)``); pass it when scoring many frames with one model. Scattering the same
            model again for each call races with the release of the previous call's copy (same
            key): a worker can lose it while a task still needs it.

    Returns:
        Float64 probabilities, one per row.
    """
    if len(frame) == 0:
        return np.zeros(0, dtype="float64")
    n = partitions or 2 * max(1, len(client.scheduler_info()["workers"]))
    bounds = np.linspace(0, len(frame), n + 1, dtype=np.int64)
    features = frame[model.features]
    if remote_model is None:
        [remote_model] = client.scatter([model], broadcast=True)
    # chunks go out as scattered data, not inside the task graph (large graphs are slow and warned about)
    chunks = client.scatter([features.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a])
    futures = [client.submit(_predict_part, remote_model, chunk, pure=False) for chunk in chunks]
    return np.concatenate(client.gather(futures))
