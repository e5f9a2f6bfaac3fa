"""Benchmark: the click model's predictions by LightGBM (the baseline) and by its compiled library, side by side.

The model and the rows are the planner's: benchmarks/plan.py's store and click model (150 trees × 31
leaves over the 36 click features), and the float32 feature matrices its chooser scores
(:meth:`engine.recommend.columnar.AudienceIndex.matrix`, column-major; the row-major copy too).
For each input order and thread count it prints wall and process CPU seconds per million rows and the
ratio LightGBM / compiled, and checks that both give the same probabilities. Also timed: the first
build of the library (with the compiler's CPU) and a load from its cache.

    .venv/bin/python benchmarks/predict.py [--users 24000] [--items 50] [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from plan import AS_OF, build_store, train_model  # noqa: E402

from engine.recommend.columnar import AudienceIndex  # noqa: E402
from engine.training.artifacts import load_model  # noqa: E402
from engine.training.compiled import compiled_predictor  # noqa: E402


def planner_rows(store, n_items: int, n_rows: int) -> np.ndarray:
    """The click-feature matrices the planner's chooser builds for every user's candidates (float32, F order)."""
    users = store.df("SELECT user_id FROM users ORDER BY user_id")["user_id"].tolist()
    index = AudienceIndex.build(store.con, AS_OF, users, n_own=20, n_cooc=20, n_popular=n_items)
    parts, size, step = [], 0, index.batch_size()
    for start in range(0, len(index.users), step):
        parts.append(index.matrix(index.batch(np.arange(start, min(start + step, len(index.users))))))
        size += len(parts[-1])
        if size >= n_rows:
            break
    return np.asfortranarray(np.concatenate(parts)[:n_rows])


def timed(fn, repeat: int) -> tuple[float, float, np.ndarray]:
    """Median wall and median process-CPU seconds (all threads) of ``repeat`` calls, and the last result."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=24_000)
    p.add_argument("--items", type=int, default=50)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        work = Path(tmp)
        store = build_store(work / "bench.duckdb", args.users, args.items)
        try:
            train_model(store, args.items, work / "models")
            x_f = planner_rows(store, args.items, args.rows)
        finally:
            store.close()
        model = load_model(work / "models", "click")
        x_c = np.ascontiguousarray(x_f)
        million = len(x_f) / 1e6
        print(f"model {model.booster.num_trees()} trees, {model.booster.num_feature()} features; "
              f"{len(x_f):,} planner rows (float32, {np.isnan(x_f).mean():.1%} NaN, {(x_f == 0).mean():.1%} zero); "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")

        wall, cpu, kids = time.perf_counter(), time.process_time(), children_cpu()
        first = compiled_predictor(model)
        print(f"first build: {time.perf_counter() - wall:.1f} s wall, CPU {time.process_time() - cpu:.1f} s "
              f"+ compiler {children_cpu() - kids:.1f} s")
        if first is None:
            print("no compiled predictor (see the log line above): nothing to compare")
            return 1
        wall, cpu = time.perf_counter(), time.process_time()
        compiled_predictor(model)
        print(f"load from cache (with the equality check): {time.perf_counter() - wall:.2f} s wall, "
              f"CPU {time.process_time() - cpu:.2f} s")

        print(f"{'input':<12}{'threads':>8}{'lightgbm wall/M':>17}{'cpu/M':>8}{'compiled wall/M':>17}"
              f"{'cpu/M':>8}{'cpu ratio':>11}{'max |diff|':>12}")
        for threads in (1, 2):
            fast = compiled_predictor(model, threads=threads)
            assert fast is not None
            for name, x in (("float32 F", x_f), ("float32 C", x_c)):
                lw, lc, expected = timed(lambda x=x, t=threads: model.booster.predict(x, num_threads=t), args.repeat)
                cw, cc, got = timed(lambda x=x, f=fast: f(x), args.repeat)
                diff = float(np.abs(got - expected).max())
                print(f"{name:<12}{threads:>8}{lw / million:>17.2f}{lc / million:>8.2f}{cw / million:>17.2f}"
                      f"{cc / million:>8.2f}{lc / cc:>10.2f}×{diff:>12.3g}")
                if diff > 1e-12:
                    print("MISMATCH: the compiled library differs from LightGBM")
                    return 1
        shutil.rmtree(work / "models", ignore_errors=True)
    print("baseline: LightGBM Booster.predict on the same rows and threads; ratio = its CPU-s / the compiled CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
