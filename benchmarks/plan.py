"""Benchmark: plan one campaign for N generated users × 50 candidate items, locally and on a two-worker LocalCluster.

Each run builds a fresh DuckDB store (users, consents, devices, one purchase each, 50 items), then
times :func:`engine.schedule.planner.plan_campaign` end to end: a LightGBM click model scores every
(user, item) pair, an epsilon-greedy policy picks the item (logged propensity), a model-like ranker
gives three preferred hours, the planner applies consent, device, quiet hours, frequency cap and
volume rules, picks the copy by Thompson sampling and stores decisions and sends. The Dask run
scores the pairs on the cluster (:func:`engine.scale.predict_on_cluster`); everything else is the
same code. Writes ``reports/bench-plan.json``.

    .venv/bin/python benchmarks/plan.py [--users 1000000] [--items 50] [--skip-dask]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.clock import FixedClock  # noqa: E402
from engine.recommend.shortlist import (  # noqa: E402
    FirstStage,
    ShortlistRecall,
    fit_first_stage,
    shortlist,
    shortlist_recall,
)
from engine.schedule.campaign import parse_campaign  # noqa: E402
from engine.schedule.planner import plan_campaign  # noqa: E402
from engine.store import Store  # noqa: E402

AS_OF = datetime(2026, 11, 2, tzinfo=UTC)
ZONES = ["Europe/London", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
FEATURES = ["u_activity", "u_price", "i_pop", "i_price", "price_gap", "affinity"]
CHUNK = 100_000
TOP_K = 10
SHORTLIST_K = 20
CALIBRATION_USERS = 5_000
EPSILON = 0.1


def build_store(path: Path, n_users: int, n_items: int) -> Store:
    """A store with ``n_users`` reachable-or-not users and ``n_items`` items, generated in SQL (seeded by hash)."""
    if path.exists():
        path.unlink()
    store = Store(str(path))
    con = store.con
    zones = "['" + "','".join(ZONES) + "']"
    con.execute(f"""INSERT INTO users SELECT 'u' || lpad(i::VARCHAR, 7, '0'), 'GB',
                        {zones}[1 + (hash(i) % {len(ZONES)})::INT], 'bench', NULL, NULL FROM range({n_users}) t(i)""")
    con.execute(f"""INSERT INTO items SELECT 'it' || i, 'ITEM ' || i, 'c' || (i % 7), 1 + i % 20, 'GBP', 'bench', NULL
                    FROM range({n_items}) t(i)""")
    con.execute(f"""INSERT INTO events SELECT 'e' || i, 'u' || lpad(i::VARCHAR, 7, '0'), 'it' || (i % {n_items}),
                        'purchase', TIMESTAMPTZ '{AS_OF:%Y-%m-%d} 00:00:00+00' - to_days(1 + (hash(i) % 60)::INT),
                        NULL, 'bench', false, TIMESTAMPTZ '{AS_OF:%Y-%m-%d} 00:00:00+00' FROM range({n_users}) t(i)""")
    con.execute(f"""INSERT INTO consents SELECT 'u' || lpad(i::VARCHAR, 7, '0'), 'push', 'marketing',
                        hash(i * 7) % 10 != 0, TIMESTAMPTZ '2026-01-01 00:00:00+00', false FROM range({n_users}) t(i)""")
    con.execute(f"""INSERT INTO devices (device_id, user_id, vendor, app_id, token, registered_at)
                    SELECT 'd' || i, 'u' || lpad(i::VARCHAR, 7, '0'), CASE WHEN i % 2 = 0 THEN 'apns' ELSE 'fcm' END,
                           'app', 'tok' || i, TIMESTAMPTZ '2026-01-01 00:00:00+00'
                    FROM range({n_users}) t(i) WHERE hash(i * 13) % 20 != 0""")
    return store


def train_model(rng: np.random.Generator) -> lgb.Booster:
    """A small click model (40 trees × 15 leaves) on synthetic pairs with a known signal."""
    n = 200_000
    x = pd.DataFrame({f: rng.random(n) for f in FEATURES})
    logit = -4 + 2.5 * x["affinity"] + 1.5 * x["i_pop"] - 1.0 * x["price_gap"].abs() + 0.8 * x["u_activity"]
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    params = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "verbose": -1, "seed": 7,
              "num_threads": 1, "deterministic": True, "force_row_wise": True}
    return lgb.train(params, lgb.Dataset(x, y.astype(int)), num_boost_round=40)


class _Model:
    """The slice of TrainedModel that scoring needs (features + predict), around a bare booster."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster, self.features, self.version = booster, FEATURES, "bench"

    def predict(self, x: np.ndarray | pd.DataFrame, threads: int = 1, raw: bool = False) -> np.ndarray:
        x = x[self.features].to_numpy(np.float32) if isinstance(x, pd.DataFrame) else x
        return self.booster.predict(x, num_threads=threads, raw_score=raw)


def pair_features(user_idx: np.ndarray, n_items: int) -> np.ndarray:
    """Deterministic float32 features (columns :data:`FEATURES`) of every (user, item) pair, user-major."""
    u = user_idx.astype(np.float32)
    i = np.arange(n_items, dtype=np.float32)
    x = np.empty((len(u), n_items, len(FEATURES)), dtype=np.float32)
    x[:, :, 0] = ((np.sin(u * 12.9898) * 43758.5453) % 1.0)[:, None]
    x[:, :, 1] = ((np.sin(u * 78.233) * 12345.678) % 1.0)[:, None]
    x[:, :, 2] = ((np.cos(i * 3.7) + 1) / 2)[None, :]
    x[:, :, 3] = ((i % 20) / 20)[None, :]
    x[:, :, 4] = x[:, :, 1] - x[:, :, 3]
    np.multiply.outer(u * np.float32(0.37), np.ones(n_items, np.float32), out=x[:, :, 5])
    x[:, :, 5] += i * np.float32(1.3)
    np.sin(x[:, :, 5], out=x[:, :, 5])
    x[:, :, 5] = (x[:, :, 5] + 1) / 2
    return x.reshape(-1, len(FEATURES))


def calibrate(model: _Model, idx: np.ndarray, n_items: int, k: int) -> tuple[FirstStage, ShortlistRecall]:
    """Fit the first stage on the booster's raw scores of ``CALIBRATION_USERS`` users × all items, and measure
    its recall on the next ``CALIBRATION_USERS`` (this is scoring work of the plan, so it is timed)."""
    fit_idx, test_idx = idx[:CALIBRATION_USERS], idx[CALIBRATION_USERS:2 * CALIBRATION_USERS]
    x = pair_features(fit_idx, n_items)
    stage = fit_first_stage(x, model.predict(x, threads=2, raw=True))
    x = pair_features(test_idx, n_items)
    full = model.predict(x, threads=2, raw=True).reshape(len(test_idx), n_items)
    kept = shortlist(stage.score(x).reshape(len(test_idx), n_items), k)
    return stage, shortlist_recall(full, kept, n=TOP_K)


def make_chooser(model: _Model, n_items: int, predict, k: int, info: dict):
    """An ItemChooser: score users × items in chunks with ``predict``, epsilon-greedy over the top 10.

    With ``k`` < ``n_items`` a linear first stage (:mod:`engine.recommend.shortlist`) keeps each user's
    ``k`` best items and LightGBM scores only those; its measured recall goes into ``info``.
    """

    def choose(store, user_ids, campaign, as_of, rng):
        ids = np.asarray(user_ids, dtype=object)
        idx = pd.Series(ids).str.slice(1).astype(np.int64).to_numpy()
        stage = None
        if k < n_items:
            stage, recall = calibrate(model, idx, n_items, k)
            info.update(shortlist_k=k, shortlist_recall_top1=round(recall.top1, 4),
                        shortlist_recall_top10=round(recall.top_n, 4), shortlist_recall_users=recall.users)
        out = []
        for a in range(0, len(ids), CHUNK):
            chunk = idx[a:a + CHUNK]
            n = len(chunk)
            x = pair_features(chunk, n_items)
            if stage is None:
                cols = np.broadcast_to(np.arange(n_items), (n, n_items))
            else:
                cols = shortlist(stage.score(x).reshape(n, n_items), k)
                x = x.reshape(n, n_items, -1)[np.arange(n)[:, None], cols].reshape(-1, len(FEATURES))
            scores = predict(model, x).reshape(n, cols.shape[1])
            order = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_K]
            explore = rng.random(n) < EPSILON
            pos = np.where(explore, rng.integers(0, TOP_K, n), 0)
            best = order[np.arange(n), pos]
            item = cols[np.arange(n), best]
            prop = EPSILON / TOP_K + (1 - EPSILON) * (pos == 0)
            out.append(pd.DataFrame({"user_id": ids[a:a + CHUNK], "item_id": "it" + pd.Series(item).astype(str),
                                     "position": pos, "score": scores[np.arange(n), best],
                                     "propensity": prop}))
        return pd.concat(out, ignore_index=True).assign(policy="epsilon_greedy", model_version="click/bench")

    return choose


def ranker(store, user_ids, as_of):
    """Three preferred local hours per user, derived from the user index (a send-time model's output shape)."""
    ids = np.asarray(user_ids, dtype=object)
    idx = np.array([int(u[1:]) for u in ids])
    n = len(ids)
    return pd.DataFrame({"user_id": np.repeat(ids, 3), "rank": np.tile([0, 1, 2], n),
                         "weekday": np.repeat(idx % 7, 3), "local_hour": (np.repeat(idx % 12, 3) + 8
                                                                          + np.tile([0, 3, 6], n)) % 24})


CAMPAIGN = {
    "name": "Bench", "id": "bench", "as_of": AS_OF.isoformat(),
    "templates": [{"id": "a", "title": "{item_name}", "body": "Now {currency}{price:.2f}"},
                  {"id": "b", "title": "Back in stock: {item_name}", "body": "{category}"}],
    "audience": {"active_within_days": 90},
    "limits": {"holdout_share": 0.1, "frequency_cap": 2},
    "volume": {"value_per_click": 10.0, "send_cost": 0.05, "fatigue_cost": 0.1},
}


def run(n_users: int, n_items: int, workdir: Path, predict, k: int) -> tuple[float, float, dict]:
    """Plan the bench campaign once on a fresh store; (wall seconds, CPU seconds of all threads, outcome)."""
    store = build_store(workdir / "bench-plan.duckdb", n_users, n_items)
    try:
        model = _Model(train_model(np.random.default_rng(7)))
        info: dict = {}
        started, cpu = time.perf_counter(), time.process_time()
        report = plan_campaign(store, parse_campaign(CAMPAIGN), make_chooser(model, n_items, predict, k, info),
                               ranker, seed=7, clock=FixedClock(AS_OF))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert store.scalar("SELECT count(*) FROM decisions") == n_users
        return seconds, cpu, {"audience": report.audience, "sends": report.sends, "holdout": report.holdout,
                              "skipped": report.skipped, **info}
    finally:
        store.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=50)
    p.add_argument("--skip-dask", action="store_true")
    p.add_argument("--workdir", default=str(REPO / ".bench"))
    args = p.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(exist_ok=True)
    load_before = os.getloadavg()

    seconds_local, cpu_local, outcome = run(args.users, args.items, workdir, lambda m, f: m.predict(f, threads=2))
    rss_local = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"local: {args.users:,} users × {args.items} items in {seconds_local:.1f} s "
          f"({args.users / seconds_local:,.0f} decisions/s, CPU {cpu_local:.1f} s), peak RSS {rss_local:,.0f} MB; {outcome}")

    seconds_dask = cpu_dask = None
    if not args.skip_dask:
        from distributed import Client, LocalCluster

        from engine.scale import predict_on_cluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster) as client:
            seconds_dask, cpu_dask, _ = run(args.users, args.items, workdir,
                                  lambda m, f: predict_on_cluster(client, m, pd.DataFrame(f, columns=FEATURES),
                                                                  partitions=2))
        print(f"dask (LocalCluster, 2 workers × 1 thread, in-process): {seconds_dask:.1f} s "
              f"CPU {cpu_dask:.1f} s (local/dask = {seconds_local / seconds_dask:.2f}×)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "users": args.users, "items": args.items,
        "seconds_local": round(seconds_local, 2),
        "seconds_dask": None if seconds_dask is None else round(seconds_dask, 2),
        "decisions_per_s": round(args.users / seconds_local),
        "cpu_seconds_local": round(cpu_local, 2),
        "cpu_seconds_dask": None if cpu_dask is None else round(cpu_dask, 2),
        "peak_rss_mb": round(peak),
        "peak_rss_mb_local_run": round(rss_local),
        "goal_seconds_local": 60, "baseline": "goal of issue 4 item 6: 60 s locally on 2 cores",
        "outcome": outcome,
        "cores": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    out = REPO / "reports" / "bench-plan.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
