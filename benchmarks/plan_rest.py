"""Benchmark: the planner without its item chooser, for N generated users (the ``planner_rest`` of benchmarks/plan.py).

The store is benchmarks/plan.py's (:func:`build_store`, built once and copied for every run) and so
are the campaign and the stand-in hour ranker; the item chooser is a trivial one (one pick per user
by a fixed pattern, the columns of :func:`engine.recommend.policy.choose` plus ``model_version``), so
what is timed is audience, reachability, holdout, send times, caps, volume, copy, rendering, ids
and the inserts. Each phase is the time spent in one of the planner's functions (wrapped for the
run); ``plan_other`` is what plan_campaign does between them (merges, skip reasons).

With ``--baseline REF`` the same plan also runs on the ``engine`` package of git ``REF`` (exported
with ``git archive`` to a temporary directory, in a child process), alternating with the working
tree, and the ratio of the medians is printed. Both runs must store the same decisions and sends:
their digests are compared. With ``--floor`` the rows just planned are also inserted, already computed,
into a fresh copy of the store: what DuckDB alone costs to store them. Writes ``reports/bench-plan-rest.json``.

    .venv/bin/python benchmarks/plan_rest.py [--users 1000000] [--repeat 1] [--baseline HEAD] [--floor] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (module, function) pairs timed as phases, when the code under test has them.
PHASES = [
    ("engine.schedule.planner", "_audience"),
    ("engine.schedule.planner", "assign_holdout"),
    ("engine.schedule.planner", "_reachability"),
    ("engine.schedule.planner", "resolve_send_times"),
    ("engine.schedule.planner", "_skip_reasons"),
    ("engine.schedule.planner", "_capped"),
    ("engine.schedule.planner", "_within_vendor_quota"),
    ("engine.schedule.planner", "_volume_reasons"),
    ("engine.schedule.planner", "choose_templates"),
    ("engine.schedule.planner", "_render"),
    ("engine.schedule.planner", "_keyed_by_row"),
    ("engine.schedule.planner", "_with_zone_and_vendor"),
    ("engine.schedule.planner", "_with_copy"),
    ("engine.schedule.planner", "_store"),
]


def _code_first(code: Path | None) -> None:
    """Import ``engine`` from ``code`` (a baseline export) or the working tree, before anything else imports it."""
    sys.path.insert(0, str(REPO))
    if code is not None:
        sys.path.insert(0, str(code))
    import engine

    expected = (code or REPO) / "engine"
    assert Path(engine.__file__).parent == expected, (engine.__file__, expected)


def trivial_chooser(n_items: int):
    """An ItemChooser picking item ``it{k % n_items}`` for user number k, with the real chooser's columns.

    It draws one uniform per user from the planner's generator, as :func:`engine.recommend.policy.choose`
    does, so the copy policy's draws come from the same generator state as in a real plan.
    """
    import numpy as np
    import pandas as pd

    def choose(store, user_ids, campaign, as_of, rng):
        ids = pd.Series(user_ids, dtype=object)
        k = ids.str.slice(1).astype("int64").to_numpy()
        draw = rng.random(len(ids))
        return pd.DataFrame({
            "user_id": ids.to_numpy(), "item_id": ("it" + pd.Series(k % n_items).astype(str)).to_numpy(dtype=object),
            "position": (k % 10).astype("int64"), "score": 0.002 + 0.3 * draw,
            "propensity": np.where(k % 10 == 0, 0.91, 0.01), "policy": "epsilon_greedy(epsilon=0.1,top_k=10)",
            "model_version": "click/bench",
        })

    return choose


class PhaseClock:
    """Wraps module functions so each call adds its wall and process CPU seconds to ``seconds[name]``.

    Times are exclusive: a timed function called inside another counts for itself only.
    """

    def __init__(self, phases):
        import importlib

        self.seconds: dict[str, list[float]] = {}
        self._undo = []
        self._inner: list[list[float]] = []   # per open call: wall and CPU seconds of timed calls inside it
        for module_name, name in phases:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                original = getattr(module, name)
                setattr(module, name, self.timed(name, original))
                self._undo.append((module, name, original))

    def timed(self, name, fn):
        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            self._inner.append([0.0, 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                inner = self._inner.pop()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                total = self.seconds.setdefault(name, [0.0, 0.0])
                total[0] += wall - inner[0]
                total[1] += cpu - inner[1]
                if self._inner:
                    self._inner[-1][0] += wall
                    self._inner[-1][1] += cpu
        return wrapper

    def restore(self) -> None:
        for module, name, original in self._undo:
            setattr(module, name, original)


def insert_floor(store, store_file: Path) -> dict:
    """Seconds to insert the rows just planned, already computed, into a fresh copy of the store and commit.

    What DuckDB costs to store them (both tables' columns, compression and primary-key indexes),
    whatever code computes them: the part of ``_store`` no planner change can remove.
    """
    fresh = store_file.with_name("plan-rest-floor.duckdb")
    shutil.copyfile(store_file, fresh)
    con = store.con
    try:
        con.execute("CREATE TEMP TABLE pw_floor_d AS SELECT * FROM decisions")
        con.execute("CREATE TEMP TABLE pw_floor_s AS SELECT * FROM sends")
        con.execute(f"ATTACH '{fresh}' AS pw_floor")
        wall, cpu = time.perf_counter(), time.process_time()
        con.execute("BEGIN")
        con.execute("INSERT INTO pw_floor.decisions SELECT * FROM pw_floor_d")
        con.execute("INSERT INTO pw_floor.sends SELECT * FROM pw_floor_s")
        con.execute("COMMIT")
        return {"wall": round(time.perf_counter() - wall, 2), "cpu": round(time.process_time() - cpu, 2)}
    finally:
        con.execute("DETACH DATABASE IF EXISTS pw_floor")
        fresh.unlink(missing_ok=True)
        Path(str(fresh) + ".wal").unlink(missing_ok=True)


def digest(store) -> dict[str, str]:
    """md5 over every stored decision and send (all columns, as text, in id order)."""
    out = {}
    for table, key in (("decisions", "decision_id"), ("sends", "send_id")):
        out[table] = store.scalar(f"SELECT md5(string_agg(CAST(t AS VARCHAR), '\n' ORDER BY {key})) FROM {table} t")
    return out


def run_once(store_file: Path, n_items: int, profile: Path | None, floor: bool) -> dict:
    """Plan the bench campaign on a copy of ``store_file``; phase seconds, totals and the stored digest."""
    from benchmarks.plan import CAMPAIGN, ranker
    from engine.clock import FixedClock
    from engine.schedule.campaign import parse_campaign
    from engine.schedule.planner import plan_campaign
    from engine.store import Store

    work = store_file.with_name("plan-rest-run.duckdb")
    shutil.copyfile(store_file, work)
    store = Store(str(work))
    clock = PhaseClock(PHASES)
    chooser, rank = clock.timed("chooser", trivial_chooser(n_items)), clock.timed("ranker", ranker)
    profiler = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        report = plan_campaign(store, parse_campaign(CAMPAIGN), chooser, rank, seed=7,
                               clock=FixedClock(datetime_of(CAMPAIGN["as_of"])))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if profiler is not None:
            profiler.stop()
            profile.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        phases = {k: {"wall": round(w, 2), "cpu": round(c, 2)} for k, (w, c) in clock.seconds.items()}
        timed_wall = sum(w for w, _ in clock.seconds.values())
        timed_cpu = sum(c for _, c in clock.seconds.values())
        phases["plan_other"] = {"wall": round(wall - timed_wall, 2), "cpu": round(cpu - timed_cpu, 2)}
        chooser_wall, chooser_cpu = clock.seconds["chooser"]
        result = {
            "wall": round(wall, 2), "cpu": round(cpu, 2),
            # as benchmarks/plan.py counts it: everything but the chooser (the stand-in ranker included)
            "planner_rest_wall": round(wall - chooser_wall, 2), "planner_rest_cpu": round(cpu - chooser_cpu, 2),
            "phases": phases, "report": {"sends": report.sends, "holdout": report.holdout, "skipped": report.skipped},
            "digest": digest(store),
        }
        if floor:
            result["insert_floor"] = insert_floor(store, store_file)
        return result
    finally:
        clock.restore()
        store.close()
        work.unlink(missing_ok=True)


def datetime_of(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


def child_main(args) -> int:
    """Run one timed plan on the engine in ``--code`` (or the working tree) and print its JSON on the last line."""
    _code_first(Path(args.code) if args.code else None)
    profile = Path(args.profile_to) if args.profile_to else None
    print(json.dumps(run_once(Path(args.store_file), args.items, profile, args.floor)))
    return 0


def _run_child(store_file: Path, items: int, code: Path | None, profile_to: Path | None, floor: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--store-file", str(store_file),
           "--items", str(items)]
    if code is not None:
        cmd += ["--code", str(code)]
    if profile_to is not None:
        cmd += ["--profile-to", str(profile_to)]
    if floor:
        cmd += ["--floor"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def _export(ref: str, into: Path) -> Path:
    """``git archive REF engine`` unpacked into ``into`` (no change to the repository's state)."""
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "engine"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _show(label: str, r: dict) -> None:
    phases = ", ".join(f"{k} {v['wall']:.2f}/{v['cpu']:.2f}" for k, v in sorted(r["phases"].items(),
                                                                            key=lambda kv: -kv[1]["wall"]))
    print(f"{label}: plan {r['wall']:.2f} s wall / {r['cpu']:.2f} s CPU; planner_rest {r['planner_rest_wall']:.2f} s "
          f"wall / {r['planner_rest_cpu']:.2f} s CPU\n    phases (wall/CPU s): {phases}")
    if "insert_floor" in r:
        f = r["insert_floor"]
        print(f"    the same rows, precomputed, inserted into a fresh store and committed: {f['wall']:.2f} s wall / "
              f"{f['cpu']:.2f} s CPU")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=50)
    p.add_argument("--repeat", type=int, default=1, help="timed runs of each code version")
    p.add_argument("--baseline", metavar="REF", help="also time the engine of this git ref, e.g. HEAD")
    p.add_argument("--profile", action="store_true", help="write pyinstrument profiles next to the report")
    p.add_argument("--floor", action="store_true",
                   help="also time inserting the planned rows, precomputed, into a fresh store (DuckDB's share)")
    p.add_argument("--workdir", default=str(REPO / ".bench"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store-file", help=argparse.SUPPRESS)
    p.add_argument("--code", help=argparse.SUPPRESS)
    p.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(args)

    workdir = Path(args.workdir)
    workdir.mkdir(exist_ok=True)
    store_file = workdir / "plan-rest-store.duckdb"
    _code_first(None)
    from benchmarks.plan import build_store

    started = time.perf_counter()
    build_store(store_file, args.users, args.items).close()
    print(f"store of {args.users:,} users × {args.items} items built in {time.perf_counter() - started:.1f} s")
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"current": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="pw-baseline-") as tmp:
        base = _export(args.baseline, Path(tmp)) if args.baseline else None
        for i in range(args.repeat):
            for label, code in (("baseline", base), ("current", None)):
                if label == "baseline" and base is None:
                    continue
                profile_to = workdir / f"plan-rest-{label}-profile.txt" if args.profile and i == 0 else None
                r = _run_child(store_file, args.items, code, profile_to, args.floor and label == "current")
                runs[label].append(r)
                _show(f"{label} #{i + 1}", r)
    store_file.unlink(missing_ok=True)

    current = runs["current"]
    result = {"users": args.users, "items": args.items, "repeat": args.repeat, "cores": os.cpu_count(),
              "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()],
              "planner_rest_wall_median": statistics.median(r["planner_rest_wall"] for r in current),
              "planner_rest_cpu_median": statistics.median(r["planner_rest_cpu"] for r in current),
              "goal_planner_rest_wall": 10, "report": current[0]["report"], "digest": current[0]["digest"],
              "runs": current}
    floors = [r["insert_floor"] for r in current if "insert_floor" in r]
    if floors:
        result["insert_floor_wall_median"] = statistics.median(f["wall"] for f in floors)
        result["insert_floor_cpu_median"] = statistics.median(f["cpu"] for f in floors)
    if runs["baseline"]:
        base_runs = runs["baseline"]
        same = all(r["digest"] == base_runs[0]["digest"] for r in base_runs + current)
        result |= {"baseline": f"git {args.baseline} (engine/ exported with git archive), same store and seed",
                   "baseline_planner_rest_wall_median": statistics.median(r["planner_rest_wall"] for r in base_runs),
                   "baseline_planner_rest_cpu_median": statistics.median(r["planner_rest_cpu"] for r in base_runs),
                   "baseline_runs": base_runs, "same_decisions_and_sends": same}
        result["ratio_wall"] = round(result["baseline_planner_rest_wall_median"] / result["planner_rest_wall_median"], 2)
        result["ratio_cpu"] = round(result["baseline_planner_rest_cpu_median"] / result["planner_rest_cpu_median"], 2)
        print(f"planner_rest median: baseline {result['baseline_planner_rest_wall_median']:.2f} s wall / "
              f"{result['baseline_planner_rest_cpu_median']:.2f} s CPU, current {result['planner_rest_wall_median']:.2f}"
              f" s wall / {result['planner_rest_cpu_median']:.2f} s CPU: {result['ratio_wall']}× wall, "
              f"{result['ratio_cpu']}× CPU; identical decisions and sends: {same}")
    out = REPO / "reports" / "bench-plan-rest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
