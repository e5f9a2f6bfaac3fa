"""Model artifacts: ``models/<name>/<version>/`` holding ``model.txt`` and ``card.json``, and their ``model_runs`` row.

Which version a database plans and serves with is :func:`serving_version`: the champion its own
retraining promoted, else the newest model trained on it (its ``model_runs``), and only when it records
neither, the models folder's ``CHAMPION`` pointer or newest version — one ``models/`` folder may serve
several databases, and a model trained on a test database must not become every database's model.

A version is the UTC training time from the injected clock, ``YYYYMMDDTHHMMSSZ``; a second model of
the same name trained within the same second gets ``-02``, ``-03``… so versions still sort by time.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import lightgbm as lgb
import numpy as np
import pandas as pd

from engine.clock import Clock
from engine.errors import ModelError, StoreError
from engine.features.base import Db, connection

__all__ = ["ServingChoice", "TrainedModel", "library_versions", "load_model", "load_serving_model", "record_run",
           "save_model", "serving_version"]

MODEL_FILE = "model.txt"
CARD_FILE = "card.json"
CHAMPION_FILE = "CHAMPION"


@dataclass(frozen=True)
class TrainedModel:
    """A LightGBM booster with its card (features, parameters, data window, metrics…)."""

    name: str
    version: str
    path: Path
    booster: lgb.Booster
    card: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return list(self.card["features"])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Probabilities for the rows of ``frame``, which must hold every column in :attr:`features`.

        Raises:
            ModelError: a feature column is missing or LightGBM refuses the input.
        """
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ModelError(f"model {self.name}/{self.version} needs column(s) missing from the input: {missing}")
        if len(frame) == 0:
            return np.zeros(0, dtype="float64")
        try:
            return np.asarray(self.booster.predict(frame[self.features]), dtype="float64")
        except (lgb.basic.LightGBMError, ValueError, TypeError) as exc:
            raise ModelError(f"model {self.name}/{self.version} failed to predict: {exc}") from exc

    def in_model_order(self, x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """The columns of matrix ``x`` (named ``columns``) that the model reads, in its own order (``x``
        itself when they already are).

        Raises:
            ModelError: a feature of the model is not among ``columns``.
        """
        names = list(columns)
        missing = [f for f in self.features if f not in names]
        if missing:
            raise ModelError(f"model {self.name}/{self.version} needs column(s) missing from the input: {missing}")
        return x if names == self.features else x[:, [names.index(f) for f in self.features]]

    def predict_matrix(self, x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """Probabilities for the rows of the matrix ``x``, whose columns are named ``columns``.

        The columns the model reads are taken in its own order (no copy when they already are).

        Raises:
            ModelError: a feature is not among ``columns`` or LightGBM refuses the input.
        """
        x = self.in_model_order(x, columns)
        if len(x) == 0:
            return np.zeros(0, dtype="float64")
        try:
            # every core: a trained model's own num_threads (often 1, for reproducible training) would
            # leave the other idle; predictions do not depend on the thread count
            return np.asarray(self.booster.predict(x, num_threads=os.cpu_count() or 1), dtype="float64")
        except (lgb.basic.LightGBMError, ValueError, TypeError) as exc:
            raise ModelError(f"model {self.name}/{self.version} failed to predict: {exc}") from exc


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers (recorded in every card)."""
    return {
        "lightgbm": lgb.__version__,
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def save_model(
    models_dir: str | Path, name: str, booster: lgb.Booster, card: dict[str, Any], clock: Clock
) -> TrainedModel:
    """Write ``model.txt`` and ``card.json`` under a new version folder, atomically.

    ``card`` must be JSON-serialisable; ``name``, ``version``, ``trained_at`` and ``libraries`` are
    added to it. The folder is written under a temporary name and renamed, so a reader never sees a
    half-written model.
    """
    root = Path(models_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    now = clock.now()
    version = _free_version(root, now.strftime("%Y%m%dT%H%M%SZ"))
    card = _finite(
        {"name": name, "version": version, "trained_at": now.isoformat(), **card, "libraries": library_versions()}
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=root))
    try:
        booster.save_model(str(tmp / MODEL_FILE))
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False, default=_json_default) + "\n")
        os.replace(tmp, root / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TrainedModel(name, version, root / version, booster, json.loads((root / version / CARD_FILE).read_text()))


def load_model(models_dir: str | Path, name: str, version: str = "latest") -> TrainedModel:
    """Load ``models/<name>/<version>/``; ``"latest"`` picks the newest complete version.

    ``"champion"`` picks the version named in ``models/<name>/CHAMPION`` (written when scheduled
    retraining promotes a model), or the latest when no model was ever promoted.

    Raises:
        ModelError: no such model or version, or its files are unreadable.
    """
    root = Path(models_dir) / name
    version = _folder_version(models_dir, name, version)
    path = root / version
    if not (path / CARD_FILE).is_file() or not (path / MODEL_FILE).is_file():
        raise ModelError(f"model {name!r} has no version {version!r} in {models_dir}")
    try:
        card = json.loads((path / CARD_FILE).read_text())
        booster = lgb.Booster(model_file=str(path / MODEL_FILE))
    except (OSError, ValueError, lgb.basic.LightGBMError) as exc:
        raise ModelError(f"cannot load model {name}/{version}: {exc}") from exc
    return TrainedModel(name, version, path, booster, card)


@dataclass(frozen=True)
class ServingChoice:
    """The version of a model a database uses, and why.

    Attributes:
        source: ``"champion"`` (promoted by retraining on this database), ``"trained"`` (the newest
            trained on this database) or ``"folder"`` (the database records none: the models folder's
            champion, or its newest version when nothing was promoted).
    """

    name: str
    version: str
    source: str

    @property
    def reason(self) -> str:
        return {"champion": "the champion retraining promoted on this database",
                "trained": "the newest trained on this database",
                "folder": f"this database records no {self.name} model, so the models folder's champion "
                          "(or newest) version"}[self.source]

    def describe(self) -> str:
        return f"{self.name}/{self.version}: {self.reason}"


def serving_version(db: Db, models_dir: str | Path, name: str) -> ServingChoice:
    """The version of ``name`` that planning and serving on ``db`` should use (see the module docstring).

    Raises:
        ModelError: the database records no model and the folder holds none either.
        StoreError: the database cannot be read.
    """
    try:
        con = connection(db)
        promoted = con.execute(
            """SELECT challenger_version FROM retrain_runs WHERE model_name = ? AND promoted
               ORDER BY started_at DESC, challenger_version DESC LIMIT 1""", [name]).fetchone()
        trained = con.execute(
            """SELECT version FROM model_runs WHERE model_name = ?
               ORDER BY trained_at DESC, version DESC LIMIT 1""", [name]).fetchone()
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the model records of {name!r}: {exc}") from exc
    if promoted:
        return ServingChoice(name, promoted[0], "champion")
    if trained:
        return ServingChoice(name, trained[0], "trained")
    return ServingChoice(name, _folder_version(models_dir, name, "champion"), "folder")


def load_serving_model(db: Db, models_dir: str | Path, name: str) -> tuple[TrainedModel, ServingChoice]:
    """Load the version :func:`serving_version` picks for ``db`` from ``models_dir``.

    Raises:
        ModelError: no model to use, or the database's version is not in ``models_dir`` (it is not
            replaced by another database's model).
    """
    choice = serving_version(db, models_dir, name)
    if choice.source != "folder" and not (Path(models_dir) / name / choice.version / CARD_FILE).is_file():
        raise ModelError(f"this database's {name} model {choice.version} ({choice.reason}) "
                         f"is not in {models_dir}; point models_dir at the folder it was trained into, "
                         "or train again")
    return load_model(models_dir, name, choice.version), choice


def record_run(db: Db, model: TrainedModel) -> None:
    """Insert the model's row into ``model_runs`` (metrics and card as JSON)."""
    try:
        connection(db).execute(
            "INSERT INTO model_runs (model_name, version, trained_at, path, metrics, card) VALUES (?, ?, ?, ?, ?, ?)",
            [
                model.name,
                model.version,
                model.card["trained_at"],
                str(model.path),
                json.dumps(_finite(model.card.get("metrics", {})), default=_json_default),
                json.dumps(_finite(model.card), default=_json_default),
            ],
        )
    except duckdb.Error as exc:
        raise StoreError(f"cannot record model run {model.name}/{model.version}: {exc}") from exc


def _folder_version(models_dir: str | Path, name: str, version: str) -> str:
    """Resolve ``"champion"`` and ``"latest"`` against the folder; any other version is returned as is."""
    root = Path(models_dir) / name
    if version == "champion":  # the version scheduled retraining promoted (engine.training.retrain)
        pointer = root / CHAMPION_FILE
        version = pointer.read_text().strip() if pointer.is_file() else "latest"
    if version == "latest":
        versions = sorted(p.name for p in root.glob("*") if (p / CARD_FILE).is_file() and not p.name.startswith("."))
        if not versions:
            raise ModelError(f"no trained model named {name!r} in {models_dir}; run `pushwise train` first")
        version = versions[-1]
    return version


def _free_version(root: Path, stamp: str) -> str:
    if not (root / stamp).exists():
        return stamp
    n = 2
    while (root / f"{stamp}-{n:02d}").exists():
        n += 1
    return f"{stamp}-{n:02d}"


def _finite(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become None (JSON has no NaN), numpy scalars become Python."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
