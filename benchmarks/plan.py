"""Benchmark: plan one campaign for N generated users × 50 candidate items, locally and on a two-worker LocalCluster.

Each run builds a fresh DuckDB store (users, consents, devices, one two-item basket each, 50 items)
and a click model of the product's default size (150 trees × 31 leaves over the click features,
trained on the store's own feature rows against a known click rule), then times
:func:`engine.schedule.planner.plan_campaign` end to end with the chooser ``pushwise plan`` uses
(:class:`engine.schedule.policies.ModelItemChooser`): candidates (the model card lets all 50 items
in), click features, a linear first stage that keeps the shortest shortlist (10–30 per user) holding
99 % of the model's own top 10 on a sample, the model scoring only those (compiled to C when the
'fast' extra is installed, built inside the timed plan; ``--lightgbm`` scores with LightGBM's own
predict for comparison), an epsilon-greedy draw with
logged propensity; a stand-in ranker gives three preferred hours
(the send-time model is not timed here); the planner applies consent, device, quiet hours,
frequency cap and volume rules, picks the copy by Thompson sampling and stores decisions and sends.
The shortlist's recall against full scoring is measured by the chooser during the plan and printed.
The Dask run scores on the cluster (:func:`engine.scale.run.cluster_item_chooser`); everything else
is the same code. Writes ``reports/bench-plan.json``.

    .venv/bin/python benchmarks/plan.py [--users 1000000] [--items 50] [--skip-dask] [--no-shortlist] [--lightgbm]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
from engine.features.click import CLICK_FEATURES, click_features  # noqa: E402
from engine.schedule.campaign import parse_campaign  # noqa: E402
from engine.schedule.planner import plan_campaign  # noqa: E402
from engine.schedule.policies import ModelItemChooser  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.training.artifacts import save_model  # noqa: E402
from engine.training.click import ClickConfig  # noqa: E402

AS_OF = datetime(2026, 11, 2, tzinfo=UTC)
ZONES = ["Europe/London", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
TRAIN_USERS = 4_000


def build_store(path: Path, n_users: int, n_items: int) -> Store:
    """A store with ``n_users`` reachable-or-not users and ``n_items`` items, generated in SQL (seeded by hash).

    Each user bought two items in one basket 1–60 days before :data:`AS_OF`, so co-occurrence exists.
    """
    if path.exists():
        path.unlink()
    store = Store(str(path))
    con = store.con
    zones = "['" + "','".join(ZONES) + "']"
    user = "'u' || lpad(i::VARCHAR, 7, '0')"
    con.execute(f"""INSERT INTO users SELECT {user}, 'GB', {zones}[1 + (hash(i) % {len(ZONES)})::INT], 'bench',
                        NULL, NULL FROM range({n_users}) t(i)""")
    con.execute(f"""INSERT INTO items SELECT 'it' || i, 'ITEM ' || i, 'c' || (i % 7), 1 + i % 20, 'GBP', 'bench', NULL
                    FROM range({n_items}) t(i)""")
    for line, item in enumerate(("hash(i) % {n}", "(hash(i) % {n} + 1 + hash(i * 3) % 5) % {n}")):
        con.execute(f"""INSERT INTO events SELECT 'e{line}-' || i, {user}, 'it' || ({item.format(n=n_items)}),
                            'purchase', TIMESTAMPTZ '{AS_OF:%Y-%m-%d} 00:00:00+00' - to_days(1 + (hash(i) % 60)::INT),
                            NULL, 'bench', false, TIMESTAMPTZ '{AS_OF:%Y-%m-%d} 00:00:00+00' FROM range({n_users}) t(i)""")
    con.execute(f"""INSERT INTO consents SELECT {user}, 'push', 'marketing', hash(i * 7) % 10 != 0,
                        TIMESTAMPTZ '2026-01-01 00:00:00+00', false FROM range({n_users}) t(i)""")
    con.execute(f"""INSERT INTO devices (device_id, user_id, vendor, app_id, token, registered_at)
                    SELECT 'd' || i, {user}, CASE WHEN i % 2 = 0 THEN 'apns' ELSE 'fcm' END,
                           'app', 'tok' || i, TIMESTAMPTZ '2026-01-01 00:00:00+00'
                    FROM range({n_users}) t(i) WHERE hash(i * 13) % 20 != 0""")
    return store


def train_model(store: Store, n_items: int, models_dir: Path) -> None:
    """A click model of :class:`ClickConfig`'s size on the store's own feature rows, labelled by a known rule.

    Its card lets every catalog item in as a candidate (``n_popular`` = ``n_items``).
    """
    rng = np.random.default_rng(7)
    users = store.df(f"SELECT user_id FROM users ORDER BY hash(user_id) LIMIT {TRAIN_USERS}")["user_id"]
    items = store.df("SELECT item_id FROM items")["item_id"]
    pairs = store.df("SELECT * FROM (SELECT unnest($u) AS user_id) CROSS JOIN (SELECT unnest($i) AS item_id)",
                     {"u": users.tolist(), "i": items.tolist()})
    x = click_features(store, AS_OF, pairs)[list(CLICK_FEATURES)]
    logit = (-4 + 1.2 * np.log1p(x["ui_cooc_score"] * 10) + 0.8 * x["ui_category_share"]
             + 0.6 * np.log1p(x["i_pop_30d"]) / np.log1p(x["i_pop_30d"].max()) - 0.03 * x["i_price"]
             - 0.01 * x["u_recency_days"] + 0.5 * (x["ui_count"] > 0))
    y = rng.random(len(x)) < 1 / (1 + np.exp(-logit))
    cfg = ClickConfig()
    params = {"objective": "binary", "num_leaves": cfg.num_leaves, "learning_rate": cfg.learning_rate,
              "min_data_in_leaf": cfg.min_data_in_leaf, "verbose": -1, "seed": 7, "num_threads": 1,
              "deterministic": True}
    booster = lgb.train(params, lgb.Dataset(x, y.astype(int)), num_boost_round=cfg.num_boost_round)
    card = {"features": list(CLICK_FEATURES), "config": {"data": {"n_own": 20, "n_cooc": 20, "n_popular": n_items}}}
    save_model(models_dir, "click", booster, card, FixedClock(AS_OF))


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


def check_decisions(store: Store, n_users: int) -> dict:
    """Every user has one decision, and every decision with an item carries its score, propensity, policy and model."""
    row = store.execute("""SELECT count(*), count(item_id), count(*) FILTER (WHERE item_id IS NOT NULL AND (
                                  score IS NULL OR propensity IS NULL OR position IS NULL OR policy IS NULL
                                  OR model_version IS NULL OR template_id IS NULL OR template_propensity IS NULL
                                  OR NOT propensity BETWEEN 0 AND 1)),
                                  count(*) FILTER (WHERE policy LIKE '%shortlist%'),
                                  count(*) FILTER (WHERE action = 'send' AND send_at IS NULL)
                           FROM decisions""").fetchone()
    decisions, with_item, incomplete, shortlisted, unscheduled = row
    assert decisions == n_users and incomplete == 0 and unscheduled == 0, row
    return {"decisions_with_item": with_item, "decisions_shortlisted": shortlisted}


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the C compiler that builds the compiled model)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run(n_users: int, n_items: int, workdir: Path, chooser) -> tuple[float, float, dict]:
    """Plan the bench campaign once on a fresh store; (wall seconds, CPU seconds of all threads and the compiler, outcome)."""
    store = build_store(workdir / "bench-plan.duckdb", n_users, n_items)
    try:
        train_model(store, n_items, workdir / "models")
        started, cpu = time.perf_counter(), cpu_seconds()
        report = plan_campaign(store, parse_campaign(CAMPAIGN), chooser, ranker, seed=7, clock=FixedClock(AS_OF))
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        outcome = {"audience": report.audience, "sends": report.sends, "holdout": report.holdout,
                   "skipped": report.skipped, **check_decisions(store, n_users)}
        steps = {name: {"wall": round(w, 2), "cpu": round(c, 2)} for name, (w, c) in chooser.seconds.items()}
        # the model scores in a worker thread, overlapping the other steps: the calling thread's own
        # steps (model_wait included, model left out) add up to the chooser's wall time
        chooser_wall = sum(w for name, (w, _) in chooser.seconds.items() if name != "model")
        chooser_cpu = sum(c for name, (_, c) in chooser.seconds.items() if name != "model")
        steps["planner_rest"] = {"wall": round(seconds - chooser_wall, 2), "cpu": round(cpu - chooser_cpu, 2)}
        outcome["seconds_by_step"] = steps
        outcome["scored_by"] = chooser.scored_by
        recall = chooser.recall
        if recall is not None:
            outcome.update(shortlist_k=recall.k, shortlist_recall_top1=round(recall.top1, 4),
                           shortlist_recall_top10=round(recall.top_n, 4), shortlist_recall_users=recall.users)
        return seconds, cpu, outcome
    finally:
        store.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=50)
    p.add_argument("--skip-dask", action="store_true")
    p.add_argument("--no-shortlist", action="store_true", help="score every candidate with the click model")
    p.add_argument("--lightgbm", action="store_true",
                   help="score with LightGBM's own predict, not the compiled model (the baseline of the 'fast' extra)")
    p.add_argument("--workdir", default=str(REPO / ".bench"))
    args = p.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(exist_ok=True)
    models = workdir / "models"
    load_before = os.getloadavg()

    options = {"shortlist_k": None} if args.no_shortlist else {}
    local_options = {**options, "scorer": (lambda model: model)} if args.lightgbm else options
    shutil.rmtree(models, ignore_errors=True)
    seconds_local, cpu_local, outcome = run(args.users, args.items, workdir, ModelItemChooser(models, **local_options))
    rss_local = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"local: {args.users:,} users × {args.items} items in {seconds_local:.1f} s "
          f"({args.users / seconds_local:,.0f} decisions/s, CPU {cpu_local:.1f} s), peak RSS {rss_local:,.0f} MB; {outcome}")

    seconds_dask = cpu_dask = None
    if not args.skip_dask:
        from distributed import Client, LocalCluster

        from engine.scale.run import cluster_item_chooser

        shutil.rmtree(models, ignore_errors=True)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster) as client:
            chooser = cluster_item_chooser(models, client, **options)
            seconds_dask, cpu_dask, _ = run(args.users, args.items, workdir, chooser)
        print(f"dask (LocalCluster, 2 workers × 1 thread, in-process): {seconds_dask:.1f} s "
              f"CPU {cpu_dask:.1f} s (local/dask = {seconds_local / seconds_dask:.2f}×)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "users": args.users, "items": args.items, "shortlist": not args.no_shortlist,
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
