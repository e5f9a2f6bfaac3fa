"""Run every evaluation of issue 4 item 1 on the shipped data in a temporary store, and return one typed result."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.evaluation.bandit import ClickModelReport, OpeReport, click_model_report, ope_report
from engine.evaluation.data import ingest_shipped, purchases, slice_files
from engine.evaluation.retail import RecommendEval, SendTimeEval, evaluate_recommendations, evaluate_send_time
from engine.evaluation.simulation import SimulationResult, run_simulation
from engine.store import Store
from engine.training.click import ClickConfig
from engine.training.send_time import SendTimeConfig

__all__ = ["Evaluation", "run_evaluation"]


@dataclass(frozen=True)
class Evaluation:
    """Every result, the seconds each part took, and whether it ran on the ``--fast`` slice."""

    recommend: RecommendEval
    send_time: SendTimeEval
    ope: OpeReport
    click_model: ClickModelReport
    simulation: SimulationResult
    fast: bool
    seconds: dict[str, float] = field(default_factory=dict)


def run_evaluation(data_dir: Path, fast: bool = False, seed: int = 7, say=print) -> Evaluation:
    """Ingest the shipped files (or their ``--fast`` slice) into a temporary DuckDB and run every evaluation.

    Args:
        data_dir: the folder holding ``online_retail/`` and ``open_bandit/``.
        fast: use a small deterministic slice and fewer bootstrap resamples (minutes → seconds).
        seed: seeds every random draw.
        say: progress printer.
    """
    n_boot = 200 if fast else 1000
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if fast:
            data_dir = slice_files(Path(data_dir), Path(tmp) / "data")
        with Store(Path(tmp) / "evaluate.duckdb") as store:
            t = time.perf_counter()
            say("ingest the shipped data into a temporary store")
            ingest_shipped(store, Path(data_dir))
            lines = purchases(store)
            seconds["ingest"] = time.perf_counter() - t
            models = Path(tmp) / "models"  # the models trained as of each split, as the product trains them
            steps = [
                ("recommend", lambda: evaluate_recommendations(store, lines, np.random.default_rng(seed), models,
                                                               n_boot=n_boot, config=ClickConfig(seed=seed))),
                ("send_time", lambda: evaluate_send_time(store, np.random.default_rng(seed), models, n_boot=n_boot,
                                                         config=SendTimeConfig(seed=seed))),
                ("ope", lambda: ope_report(store, seed, n_boot)),
                ("click_model", lambda: click_model_report(store, seed, n_boot)),
                ("simulation", lambda: run_simulation(seed + 4, *((600, 40_000) if fast else (3000, 400_000)))),
            ]
            results = {}
            bar = tqdm(steps, desc="evaluate", unit="part", disable=say is None or not sys.stderr.isatty())
            for name, step in bar:
                bar.set_postfix_str(name)
                say(f"evaluate {name}")
                t = time.perf_counter()
                results[name] = step()
                seconds[name] = time.perf_counter() - t
    return Evaluation(**results, fast=fast, seconds=seconds)
