"""The main job end to end on the shipped real data, and the stage functions the CLI shares with it.

    ingest (Online Retail, Open Bandit) → simulated devices/consent → train models → plan campaign
    → dispatch through loopback vendor sandboxes on an accelerated clock → simulated engagement
    → funnel and holdout summary (reports/demo-summary.json)
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engine.clock import Clock, SimulatedClock, SystemClock
from engine.config import Settings
from engine.errors import InputError
from engine.store import Store

__all__ = ["DEMO_CAMPAIGN", "dispatch", "plan", "print_models", "run_demo", "train_models"]

DEMO_CAMPAIGN = "winter_favourites.toml"
TICK_SECONDS = 0.05  # real seconds between dispatcher ticks


def demo_campaign_path() -> Path:
    return Path(str(resources.files("engine") / "campaigns" / DEMO_CAMPAIGN))


def _latest_event(store: Store) -> datetime:
    latest = store.scalar("SELECT max(ts) FROM events WHERE NOT simulated")
    if latest is None:
        raise InputError("the store has no events yet; run `pushwise ingest` first")
    return latest


def train_models(store: Store, settings: Settings, as_of: datetime | None, clock: Clock | None = None):
    """Train every model on data before ``as_of`` (default: the latest real event)."""
    from engine.training import train_all

    return train_all(store, as_of or _latest_event(store), Path(settings.models_dir), clock or SystemClock(),
                     seed=settings.seed)


def model_summary(r) -> dict[str, Any]:
    """A TrainResult as the demo summary reports it."""
    return {"version": r.version, "metric": r.headline_metric, "value": round(float(r.headline_value), 4),
            "baseline": r.baseline, "baseline_value": round(float(r.baseline_value), 4),
            "seconds": round(r.seconds, 1)}


#: The models the planner loads; the others (``click_obd``) are trained for evaluation only.
PLANNING_MODELS = frozenset({"click", "send_time"})


def print_models(results) -> None:
    print(f"    {'model':<10} {'metric':<10} {'model':>8}   {'best baseline':<24} {'value':>8}")
    for r in results:
        worse = ""
        if r.headline_value < r.baseline_value:   # say what it means: only click and send_time plan
            worse = ("  (below its baseline; planning still uses it: read its card)" if r.name in PLANNING_MODELS
                     else "  (below its baseline; never used for planning)")
        print(f"    {r.name:<10} {r.headline_metric:<10} {r.headline_value:>8.4f}   {r.baseline:<24} "
              f"{r.baseline_value:>8.4f}{worse}")


def plan(store: Store, settings: Settings, campaign, as_of: datetime | None, clock: Clock | None = None):
    """Plan ``campaign`` with this database's models (:func:`models_used` says which)."""
    from engine.schedule.planner import plan_campaign
    from engine.schedule.policies import model_hour_ranker, model_item_chooser

    models_dir = Path(settings.models_dir)
    return plan_campaign(store, campaign, model_item_chooser(models_dir), model_hour_ranker(models_dir),
                         as_of=as_of, seed=settings.seed, clock=clock)


def models_used(store: Store, settings: Settings) -> dict[str, str]:
    """The click and send-time model versions planning uses on ``store``, each with the reason."""
    from engine.training.artifacts import serving_version

    return {name: serving_version(store, Path(settings.models_dir), name).describe()
            for name in ("click", "send_time")}


def dispatch(store: Store, settings: Settings, *, sandbox: bool, speed: float = 0.0,
             start: datetime | None = None, follow: bool = False, timeout: float | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Deliver due sends; with ``sandbox`` through freshly started loopback vendor sandboxes.

    Returns ``states`` (sends per state), ``ticks``, ``real_seconds``.
    """
    from engine.dispatch import Dispatcher
    from engine.push.registry import build_channels
    from engine.schedule.jobs import run_dispatch

    if speed > 0:
        first = start or store.scalar(
            "SELECT min(next_attempt_at) FROM sends WHERE state IN ('pending', 'retry', 'in_flight')")
        # simulated time advances speed × the tick interval per tick, and stands still during a tick
        clock: Clock = SimulatedClock(first or SystemClock().now(), timedelta(seconds=speed * TICK_SECONDS))
    else:
        clock = SystemClock()
    with ExitStack() as stack:
        vendors = settings.vendors
        if sandbox:
            from engine.push.sandbox import start_sandboxes

            # fresh CA, keys and service account per run, never left on disk
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pushwise-sandbox-")))
            boxes = stack.enter_context(start_sandboxes(workdir, clock=clock))
            for vendor, token, at in store.execute(
                    "SELECT vendor, token, uninstalled_at FROM sim_device_truth").fetchall():
                boxes.unregister(vendor, token, at)
            vendors = boxes.vendor_settings()
        run_settings = Settings(**{**settings.__dict__, "vendors": vendors})
        total = int(store.scalar("SELECT count(*) FROM sends WHERE state IN ('pending', 'retry', 'in_flight')"))
        bar = tqdm(total=total, desc="dispatch", unit="send", disable=not progress, mininterval=1.0)

        async def go():
            channels = build_channels(run_settings.validate(), clock, store=store)
            try:
                dispatcher = Dispatcher.from_settings(store, channels, clock, run_settings)

                def on_tick(report) -> None:
                    done = sum(v for k, v in report.states.items() if k != "retry")
                    bar.update(done)
                    bar.set_postfix_str(f"sim {clock.now():%Y-%m-%d %H:%M}", refresh=False)

                return await run_dispatch(dispatcher, clock, interval_seconds=TICK_SECONDS,
                                          until_idle=not follow, timeout_seconds=timeout,
                                          publish=store.publish_snapshot, on_tick=on_tick)
            finally:
                for ch in channels.values():
                    await ch.aclose()

        run = asyncio.run(go())
        bar.close()
    states = dict(store.execute("SELECT state, count(*) FROM sends GROUP BY state ORDER BY state").fetchall())
    return {"states": states, "ticks": run.ticks, "claimed": run.claimed, "real_seconds": round(run.real_seconds, 2)}


# ------------------------------------------------------------------------------------------------
# The demo

def _made_by_demo(path: Path) -> bool:
    """Whether ``path`` is a DuckDB file holding the demo's marker table, read without writing to it."""
    import duckdb

    from engine.errors import StoreBusyError

    try:
        con = duckdb.connect(str(path), read_only=True)  # a Store would run the migrations into it
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreBusyError(f"{path} is locked by another Pushwise process (DuckDB allows one writer); "
                                 "stop it or point --db at another file") from exc
        return False  # not a DuckDB file at all
    except duckdb.Error:
        return False
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "demo_marker" in tables:           # databases made by the demo before the marker moved
            return True
        return "service_meta" in tables and bool(con.execute(
            "SELECT count(*) FROM service_meta WHERE name = 'made_by_demo'").fetchone()[0])
    finally:
        con.close()


def _prepare_db(path: Path, force: bool) -> None:
    """Start from an empty database, but never wipe (nor write to) one the demo did not create."""
    if path.exists() and not force and not _made_by_demo(path):
        raise InputError(f"{path} exists and was not created by `pushwise demo`; "
                         "pass --db for another file or --force to replace it")
    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)


def _demo_files(data_dir: Path, fast: bool, tmp: Path) -> list[Path]:
    files = [data_dir / "online_retail" / "online_retail.parquet",
             data_dir / "open_bandit" / "random" / "all.csv",
             data_dir / "open_bandit" / "bts" / "all.csv"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError("shipped data missing: " + ", ".join(missing) + " (run from the repository root)")
    if not fast:
        return files
    import duckdb

    # A small, deterministic slice of the same real files: one customer in eight (plus some lines
    # without a customer, to exercise quarantine), and the first 3,000 impressions per policy.
    con = duckdb.connect()
    sliced = [tmp / "online_retail" / "online_retail.parquet",
              tmp / "open_bandit" / "random" / "all.csv", tmp / "open_bandit" / "bts" / "all.csv"]
    for p in sliced:
        p.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"""COPY (SELECT * FROM read_parquet('{files[0]}')
                         WHERE CAST(CustomerID AS BIGINT) % 8 = 0
                            OR CustomerID IS NULL AND hash(InvoiceNo, StockCode) % 50 = 0)
                    TO '{sliced[0]}' (FORMAT parquet)""")
    for src, dst in zip(files[1:], sliced[1:], strict=True):
        con.execute(f"COPY (SELECT * FROM read_csv('{src}', all_varchar=true) LIMIT 3000) TO '{dst}' (HEADER)")
    return sliced


def run_demo(settings: Settings, *, fast: bool = False, force: bool = False, speed: float = 20_000.0,
             progress: bool = True) -> dict[str, Any]:
    """Run the whole main job and write ``reports/demo-summary.json``; returns the summary."""
    from engine.ingest import ingest_path
    from engine.schedule.campaign import load_campaign
    from engine.simulate.engagement import simulate_engagement
    from engine.simulate.population import seed_population

    t0 = time.monotonic()
    db = Path(settings.db_path)
    _prepare_db(db, force)
    campaign = load_campaign(demo_campaign_path())
    say = print if progress else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as tmp, Store(db) as store:
        # a row of the schema's own table, so backups carry it and restores take it back
        store.execute("INSERT OR REPLACE INTO service_meta VALUES ('made_by_demo', CAST(now() AS VARCHAR))")
        files = _demo_files(Path(settings.data_dir), fast, Path(tmp))

        say("1/6 ingest")
        reports = [ingest_path(store, f) for f in tqdm(files, desc="ingest", unit="file", disable=not progress)]
        for r in reports:
            label = "/".join(Path(r.path).parts[-2:])
            say(f"    {label:<36} {r.events_loaded:>9,} events  {r.rows_quarantined:>8,} quarantined")

        say("2/6 simulated devices and consent")
        population = seed_population(store, campaign.as_of, seed=settings.seed)
        say(f"    {population}")

        say(f"3/6 train models on data before {campaign.as_of:%Y-%m-%d}")
        results = train_models(store, settings, campaign.as_of)
        if progress:
            print_models(results)

        say(f"4/6 plan campaign {campaign.campaign_id!r}")
        used = models_used(store, settings)
        for line in used.values():
            say(f"    model {line}")
        report = plan(store, settings, campaign, campaign.as_of)
        say(f"    audience {report.audience:,}: {report.sends:,} sends, {report.holdout:,} holdout, "
            f"skipped {report.skipped}")

        say("5/6 dispatch through the loopback APNs and FCM sandboxes (accelerated clock)")
        dispatched = dispatch(store, settings, sandbox=True, speed=speed, progress=progress)
        say(f"    {dispatched['states']} in {dispatched['real_seconds']} s")

        say("6/6 simulated engagement")
        engagement = simulate_engagement(store, seed=settings.seed)
        say(f"    {engagement}")

        summary = _summary(store, reports, results, report, dispatched, engagement, population)
        summary["models_used"] = used
        summary["seconds"] = round(time.monotonic() - t0, 1)
        store.publish_snapshot()
    out = Path(settings.reports_dir) / "demo-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if progress:
        _print_summary(summary, out)
    return summary


def funnel_summary(con) -> dict[str, int]:
    """The six funnel stages over every campaign: stage → count."""
    from engine.analytics import funnel

    f = funnel(con)
    return {str(r.stage): int(r.count) for r in f.itertuples()}


def funnel_notes() -> dict[str, Any]:
    """Which funnel stages the sandbox simulates, and why ``converted`` can exceed ``clicked``."""
    return {
        "simulated": ["opened", "clicked"],
        "note": "opened and clicked are simulated (no phone exists in the sandbox); converted counts "
                "delivered pushes whose user bought the pushed item in the 14-day attribution window, "
                "with or without a click, so it can exceed clicked",
    }


REPLAY_CAVEAT = (
    "This is a replay of historical data: grounded conversions are real past purchases from the Online "
    "Retail log, which the sandbox pushes cannot have caused, so the treatment - holdout difference is "
    "not a push effect (under random assignment it is chance); only the simulated incremental conversions "
    "in the treatment arm ({simulated}) stand for what a push could add."
)


def _nan_to_none(x: float, digits: int) -> float | None:
    return None if x != x else round(float(x), digits)


def holdout_summary(con) -> dict[str, Any]:
    """Per arm users and conversion rate (95% Wilson interval), the difference and the replay caveat.

    The difference is treatment minus holdout conversion rate (proportion units) with its 95% Newcombe
    hybrid-score interval and the two-sided pooled z-test p-value (:func:`engine.analytics.compare_arms`).
    """
    from engine.analytics import arm_outcomes, compare_arms

    arms = arm_outcomes(con)
    conv = arms[arms["outcome"] == "converted"]
    out: dict[str, Any] = {}
    for r in conv.itertuples():
        out[str(r.arm)] = {"users": int(r.users), "conversions": int(r.conversions),
                           "simulated_conversions": int(r.simulated_conversions),
                           "conversion_rate": _nan_to_none(r.rate, 5),
                           "ci95": [_nan_to_none(r.ci_low, 5), _nan_to_none(r.ci_high, 5)]}
    cmp = compare_arms(arms)
    row = cmp[cmp["outcome"] == "converted"]
    if len(row):
        r = row.iloc[0]
        out["difference"] = {"absolute": _nan_to_none(r["difference"], 5),
                             "ci95": [_nan_to_none(r["diff_low"], 5), _nan_to_none(r["diff_high"], 5)],
                             "p_value": _nan_to_none(r["p_value"], 4),
                             "relative_uplift": _nan_to_none(r["relative_uplift"], 4),
                             "interval": "95% Newcombe hybrid score; p-value: two-sided pooled z-test"}
    simulated = out.get("treatment", {}).get("simulated_conversions", 0)
    out["caveat"] = REPLAY_CAVEAT.format(simulated=f"{simulated:,}")
    return out


def _summary(store: Store, reports, results, plan_report, dispatched, engagement, population) -> dict[str, Any]:
    return {
        "events_ingested": sum(r.events_loaded for r in reports),
        "rows_quarantined": sum(r.rows_quarantined for r in reports),
        "models": {r.name: model_summary(r) for r in results},
        "sends_planned": plan_report.sends,
        "decisions": {"audience": plan_report.audience, "holdout": plan_report.holdout,
                      "skipped": plan_report.skipped},
        "sends_by_vendor": dict(store.execute(
            "SELECT vendor, count(*) FROM sends GROUP BY vendor ORDER BY vendor").fetchall()),
        "send_states": dispatched["states"],
        "funnel": funnel_summary(store.con),
        "funnel_notes": funnel_notes(),
        "holdout": holdout_summary(store.con),
        "simulated": {"population": population, "engagement": engagement,
                      "note": "devices, consent, opens, clicks and incremental conversions are simulated; "
                              "grounded conversions are real purchases from the Online Retail log"},
    }


def _print_summary(s: dict[str, Any], path: Path) -> None:
    print()
    print("Summary")
    print(f"  events ingested      {s['events_ingested']:>10,}")
    print(f"  rows quarantined     {s['rows_quarantined']:>10,}")
    for name, m in s["models"].items():
        print(f"  model {name:<14} {m['metric']} {m['value']:.4f} vs {m['baseline']} {m['baseline_value']:.4f}")
    print(f"  sends planned        {s['sends_planned']:>10,}   by vendor {s['sends_by_vendor']}")
    print("  funnel               " + " → ".join(f"{k} {v:,}" for k, v in s["funnel"].items()))
    if "funnel_notes" in s:
        print(_wrap("  funnel note          ", s["funnel_notes"]["note"]))
    for arm, h in s["holdout"].items():
        if isinstance(h, dict) and "users" in h and h["conversion_rate"] is not None:
            print(f"  {arm:<20} {h['users']:>6,} users, conversion {h['conversion_rate']:.2%} "
                  f"(95% CI {h['ci95'][0]:.2%} to {h['ci95'][1]:.2%})")
    d = s["holdout"].get("difference")
    if d and d["absolute"] is not None:
        print(f"  difference           {100 * d['absolute']:+.2f} pp (95% CI {100 * d['ci95'][0]:+.2f} to "
              f"{100 * d['ci95'][1]:+.2f} pp), p = {d['p_value']:.3f}")
    if "caveat" in s["holdout"]:
        print(_wrap("  caveat               ", s["holdout"]["caveat"]))
    print(f"  seconds              {s['seconds']:>10}")
    print(f"  written to {path}")


def _wrap(label: str, text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=100, initial_indent=label, subsequent_indent=" " * len(label))
