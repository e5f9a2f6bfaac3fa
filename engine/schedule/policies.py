"""The planner's item and send-hour choices backed by the latest trained models.

Items are chosen in batches of users: candidates → click features → the click model's scores → the
campaign's epsilon-greedy draw (logged propensity). For a large audience the click model scores
only a shortlist (:mod:`engine.recommend.shortlist`): a linear first stage is fitted on a sample of
users the model scores in full, and its recall is measured on a second sample for shortlist lengths
from the policy's ``top_k`` up to ``shortlist_k``; the shortest that keeps ``min_recall`` of the
model's own top items is used, and every other user's candidates beyond it are dropped before the
model and the policy see them (no length reaches it: everyone is scored in full). So a logged
propensity is always over the items the policy really drew from, and the policy column says so.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import ModelError
from engine.features.click import CLICK_FEATURES
from engine.recommend import CatalogRule, EpsilonGreedy, best_send_hours, choose
from engine.recommend.columnar import AudienceIndex, CandidateBatch
from engine.recommend.policy import choose_rows
from engine.recommend.shortlist import (
    FirstStage,
    ShortlistRecall,
    fit_first_stage,
    log_odds,
    shortlist_mask,
    shortlist_recall,
)
from engine.schedule.campaign import Campaign
from engine.schedule.planner import HourRanker
from engine.store import Store
from engine.training.artifacts import ServingChoice, TrainedModel, load_serving_model
from engine.training.compiled import CompiledScorer, fastest_scorer

__all__ = ["ModelItemChooser", "model_hour_ranker", "model_item_chooser"]

log = logging.getLogger(__name__)

#: Users per batch: about 50 candidate rows × ~40 columns each, so a batch holds a few hundred MB.
BATCH_USERS = 50_000
#: The longest shortlist tried; lengths go from the policy's top_k up to this one at a time (each costs one ranking of the calibration sample).
SHORTLIST_K = 30
#: Share of the model's best item, and of its top_k, that a shortlist must keep (measured per plan).
MIN_RECALL = 0.99
#: Users scored in full to fit the first stage, and as many again to measure its recall.
CALIBRATION_USERS = 2_000


def _load(store: Store, models_dir: Path, name: str) -> tuple[TrainedModel, ServingChoice]:
    """This database's champion (or newest trained) version; the folder's only when the database has none."""
    try:
        model, choice = load_serving_model(store, models_dir, name)
    except ModelError as exc:
        raise ModelError(str(exc)) from None
    if choice.source == "folder":
        log.warning("planning with %s", choice.describe())
    else:
        log.info("planning with %s", choice.describe())
    return model, choice


class ModelItemChooser:
    """An :data:`~engine.schedule.planner.ItemChooser` over the planned database's ``click`` model.

    The model is the one :func:`~engine.training.artifacts.serving_version` picks for the store it
    is called with; after a call :attr:`choice` says which version that was and why.

    Args:
        models_dir: where ``click/<version>/`` lives.
        top_k: the epsilon-greedy policy draws among each user's ``top_k`` best-scored candidates.
        shortlist_k: the most candidates per user the click model scores in a two-stage plan (users
            with fewer are scored in full); None scores every candidate of every user.
        min_recall: the recall (of the best item and of the top ``top_k``) a shortlist length must reach.
        calibration_users: the sample size of the first stage's fit and of its recall measurement;
            audiences under four times this are scored in full (they are cheap).
        batch_users: users per batch.
        scorer: wraps the loaded model in whatever computes its ``predict_matrix`` (e.g. a Dask
            cluster); when None, the model compiled to C when that works
            (:func:`~engine.training.compiled.fastest_scorer`: the same probabilities), else the model.

    After a call, :attr:`scored_by` names what computed the scores (``lightgbm``, ``compiled`` or the
    scorer's class), :attr:`recall` holds the measured recall of that plan's shortlist and :attr:`stage`
    its first stage (both None when every candidate was scored), and :attr:`seconds` the wall and CPU
    seconds of each step (``compile``, ``candidates``, ``features``, ``first_stage``, ``model``,
    ``model_wait``, ``policy``).
    """

    def __init__(self, models_dir: Path, top_k: int = 10, *, shortlist_k: int | None = SHORTLIST_K,
                 min_recall: float = MIN_RECALL, calibration_users: int = CALIBRATION_USERS,
                 batch_users: int = BATCH_USERS, scorer: Callable[[TrainedModel], Any] | None = None) -> None:
        self.models_dir, self.top_k, self.shortlist_k = Path(models_dir), top_k, shortlist_k
        self.min_recall = min_recall
        self.calibration_users, self.batch_users, self.scorer = calibration_users, batch_users, scorer
        self.recall: ShortlistRecall | None = None
        self.stage: FirstStage | None = None
        self._weights = np.zeros(0)  # the stage's weights over every click feature (0 where the model reads none)
        self.choice: ServingChoice | None = None
        self.scored_by: str | None = None
        self.seconds: dict[str, list[float]] = {}

    def __call__(self, store: Store, user_ids: list[str], c: Campaign, as_of: datetime,
                 rng: np.random.Generator) -> pd.DataFrame:
        model, self.choice = _load(store, self.models_dir, "click")
        policy = EpsilonGreedy(epsilon=c.epsilon, top_k=self.top_k)
        catalog = CatalogRule(
            item_ids=c.candidate_items or None,
            sources=(c.audience_source,) if c.audience_source and not c.candidate_items else None,
        )
        data = model.card.get("config", {}).get("data", {})
        caps = {name: int(data[name]) for name in ("n_own", "n_cooc", "n_popular") if name in data}
        # an upper bound on the rows the model will score (a shortlist, or every candidate)
        rows = len(user_ids) * (self.shortlist_k or sum(caps.values()) or 50)
        self.recall, self.stage, self.seconds = None, None, {}
        timed = _StageClock(self.seconds)
        with timed("compile"):
            scorer = self.scorer(model) if self.scorer else fastest_scorer(model, rows)
        self.scored_by = {TrainedModel: "lightgbm", CompiledScorer: "compiled"}.get(type(scorer), type(scorer).__name__)
        with timed("candidates"):
            index = AudienceIndex.build(store.con, as_of, user_ids, catalog=catalog, **caps)
        users = np.arange(len(index.users))
        parts: list[tuple[np.ndarray, ...]] = []

        def features(codes: np.ndarray) -> CandidateBatch:
            with timed("features"):
                return index.batch(codes)

        def score(x: np.ndarray) -> np.ndarray:
            with timed("model"):
                return scorer.predict_matrix(x, CLICK_FEATURES)

        def draw(batch: CandidateBatch, keep: np.ndarray | None, scores: np.ndarray, name: str) -> None:
            with timed("policy"):
                row_user, row_item = batch.row_user, batch.row_item
                if keep is not None:
                    row_user, row_item = row_user[keep], row_item[keep]
                rows, position, propensity = choose_rows(row_user, row_item, scores, policy, rng)
                parts.append((batch.users[row_user[rows]], row_item[rows], position, scores[rows], propensity,
                              np.full(len(rows), name, dtype=object)))

        rest = users
        if self.shortlist_k is not None and len(users) >= 4 * self.calibration_users:
            sample = np.zeros(len(users), dtype=bool)
            sample[rng.choice(len(users), 2 * self.calibration_users, replace=False)] = True
            rest = users[~sample]
            batch = features(users[sample])
            with timed("features"):
                x = index.matrix(batch)
            scores = score(x)
            with timed("first_stage"):
                self.stage = self._calibrate(index, batch, x, scores, model.features)
            draw(batch, None, scores, policy.name)  # the calibration users are decided on their full lists
        name = policy.name if self.stage is None else f"{policy.name}|shortlist(k={self.recall.k})"
        step = min(self.batch_users, index.batch_size())
        # The model scores one batch in a worker thread (LightGBM releases the GIL) while this thread
        # builds the next; draws stay in user order, so the seeded choices do not depend on timing.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pushwise-score") as pool:
            pending: tuple[CandidateBatch, np.ndarray | None, Future] | None = None
            for start in range(0, len(rest), step):
                batch = features(rest[start:start + step])
                keep = None
                if self.stage is not None:
                    with timed("first_stage"):
                        keep = shortlist_mask(batch.row_user, index.prior(batch, self._weights), self.recall.k)
                with timed("features"):
                    x = index.matrix(batch, keep)
                scoring = pool.submit(score, x)
                if pending is not None:
                    draw(pending[0], pending[1], _result(pending[2], timed), name)
                pending = (batch, keep, scoring)
            if pending is not None:
                draw(pending[0], pending[1], _result(pending[2], timed), name)
        return self._picks(index, parts, model.version)

    def _picks(self, index: AudienceIndex, parts: list[tuple[np.ndarray, ...]], version: str) -> pd.DataFrame:
        """The picks of every batch as :data:`~engine.recommend.policy.CHOICE_COLUMNS` rows, sorted by user."""
        if not parts:
            return choose(pd.DataFrame({"user_id": [], "item_id": [], "score": []}),
                          EpsilonGreedy(top_k=self.top_k), np.random.default_rng(0)).assign(
                model_version=pd.Series(dtype="object"))
        user, item, position, score, propensity, policy = (np.concatenate(c) for c in zip(*parts, strict=True))
        order = np.argsort(user, kind="stable")
        return pd.DataFrame({
            "user_id": pd.Series(index.users[user[order]], dtype="object"),
            "item_id": pd.Series(index.items[item[order]], dtype="object"),
            "position": position[order],
            "score": score[order],
            "propensity": propensity[order],
            "policy": pd.Series(policy[order], dtype="object"),
            "model_version": f"click/{version}",
        })

    def _calibrate(self, index: AudienceIndex, batch: CandidateBatch, x: np.ndarray, scores: np.ndarray,
                   features: list[str]) -> FirstStage | None:
        """Fit the first stage on half the sampled users' full scores, pick the shortlist length on the other half.

        The other half is ranked exactly as every later user is (:meth:`AudienceIndex.prior`). Sets
        :attr:`recall` to the chosen length's (or, when none reaches ``min_recall``, the longest's)
        and returns the stage, or None to score everyone in full.
        """
        group = batch.row_user
        fit_rows = group % 2 == 0
        columns = [CLICK_FEATURES.index(f) for f in features]
        x = np.asarray(x[:, columns], dtype="float64")
        raw = log_odds(scores)
        if fit_rows.sum() <= x.shape[1]:
            return None
        stage = fit_first_stage(x[fit_rows], raw[fit_rows])
        self._weights = np.zeros(len(CLICK_FEATURES))
        self._weights[columns] = stage.weights
        test = ~fit_rows
        prior = index.prior(batch, self._weights)[test]
        k_max = int(self.shortlist_k or 1)
        for k in range(min(self.top_k, k_max), k_max + 1):
            kept = shortlist_mask(group[test], prior, k)
            self.recall = shortlist_recall(group[test], raw[test], kept, n=self.top_k, k=k)
            if min(self.recall.top1, self.recall.top_n) >= self.min_recall:
                break
        reached = min(self.recall.top1, self.recall.top_n) >= self.min_recall
        log.info("click shortlist k=%d: recall of the model's best item %.4f, of its top %d %.4f (%d users)%s",
                 self.recall.k, self.recall.top1, self.top_k, self.recall.top_n, self.recall.users,
                 "" if reached else f"; below {self.min_recall}, so every candidate is scored")
        return stage if reached else None


def _result(scoring: Future, timed: _StageClock) -> np.ndarray:
    """The scores of a batch sent to the worker thread; time spent waiting for them is ``model_wait``."""
    with timed("model_wait"):
        return scoring.result()


def _cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its finished child processes: building the
    compiled model runs the C compiler as children, whose CPU ``time.process_time`` leaves out."""
    try:
        import resource
    except ImportError:  # Windows: no rusage, the children go uncounted
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class _StageClock:
    """Adds the wall and CPU seconds (all threads, and child processes such as the C compiler) of each
    ``with clock(name):`` block to ``seconds[name]``.

    The model scores in a worker thread while the calling thread builds the next batch, so the CPU
    seconds of ``model`` overlap those of ``features`` and ``first_stage``: compare their sum with
    the process's own CPU time, not with each other. ``model_wait`` is the time the calling thread
    spent waiting for scores.
    """

    def __init__(self, seconds: dict[str, list[float]]) -> None:
        self.seconds = seconds

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            total = self.seconds.setdefault(name, [0.0, 0.0])
            total[0] += time.perf_counter() - wall
            total[1] += _cpu_seconds() - cpu


def model_item_chooser(models_dir: Path, top_k: int = 10) -> ModelItemChooser:
    """One item per user from the database's ``click`` model, epsilon-greedy with the campaign's epsilon."""
    return ModelItemChooser(models_dir, top_k)


def model_hour_ranker(models_dir: Path, k: int = 3) -> HourRanker:
    """Each user's ``k`` best local hours of the week from the database's ``send_time`` model."""

    def rank(store: Store, user_ids: list[str], as_of: datetime) -> pd.DataFrame:
        model, _ = _load(store, models_dir, "send_time")
        hours = best_send_hours(model, store.con, user_ids, as_of, k=k)
        return hours[["user_id", "rank", "weekday", "local_hour"]]

    return rank
