"""The ``pushwise`` command line: every stage on its own, and the end-to-end demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine.config import Settings, load_settings
from engine.errors import PushwiseError

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3
#: Stages that work on data already in the store: a mistyped --db must not silently create an empty one.
NEEDS_EXISTING_DB = frozenset({"seed-devices", "train", "plan", "dispatch", "simulate-engagement"})


def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _print(args: argparse.Namespace, payload: dict, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if getattr(args, "json", False) else text)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from engine.ingest import ingest_path
    from engine.store import Store

    with Store(settings.db_path) as store:
        reports = []
        for path in args.paths:
            r = ingest_path(store, path, fmt=args.format, mapping=args.mapping)
            reports.append(r)
            if r.already_ingested:
                line = f"{path}: already ingested ({r.rows_read:,} rows, mapping {r.mapping}); nothing added"
            else:
                line = (f"{path}: {r.rows_read:,} rows read, {r.events_loaded:,} events loaded, "
                        f"{r.events_duplicate:,} duplicates skipped, {r.rows_quarantined:,} rows quarantined")
                if r.note:  # e.g. an Open Bandit row with a click gives an impression and a click
                    line += f"\n    {r.note}"
                for reason, n in r.reasons.items():
                    line += f"\n    quarantined {n:>8,}  {reason}"
            if not args.json:
                print(line)
        if args.json:
            print(json.dumps([r.__dict__ for r in reports], indent=2))
    return EXIT_OK


def cmd_seed_devices(args: argparse.Namespace, settings: Settings) -> int:
    from engine.clock import SystemClock
    from engine.simulate.population import seed_population
    from engine.store import Store

    with Store(settings.db_path) as store:
        counts = seed_population(store, SystemClock().now(), seed=settings.seed, source=args.source)
    _print(args, counts, "simulated devices and consent: " + ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    return EXIT_OK


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from engine.demo import model_summary, print_models, train_models
    from engine.store import Store

    if args.dask:  # the click model on a Dask cluster (engine/scale); the single-machine path is the default
        from engine.scale.run import train_on_dask
        results = [train_on_dask(settings, args.dask, args.as_of)]
    else:
        with Store(settings.db_path) as store:
            results = train_models(store, settings, args.as_of)
    if args.json:
        print(json.dumps({r.name: model_summary(r) for r in results}, indent=2, default=str))
    else:
        print_models(results)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    from engine.demo import models_used, plan
    from engine.schedule.campaign import load_campaign
    from engine.store import Store

    campaign = load_campaign(args.campaign)
    with Store(settings.db_path) as store:
        used = models_used(store, settings)      # which versions serve this database, and why
        if not args.dask:
            report = plan(store, settings, campaign, args.as_of)
    if args.dask:
        from engine.scale.run import plan_on_dask
        report = plan_on_dask(settings, args.dask, campaign, args.as_of)
    text = (f"campaign {report.campaign_id}: audience {report.audience:,}, sends {report.sends:,}, "
            f"holdout {report.holdout:,}, skipped {sum(report.skipped.values()):,} {report.skipped}")
    if report.already_planned:
        text = f"campaign {report.campaign_id} was already planned ({report.audience:,} decisions); nothing changed"
    text += "".join(f"\n    model {description}" for description in used.values())
    _print(args, {**report.__dict__, "models_used": used}, text)
    return EXIT_OK


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from engine.demo import dispatch
    from engine.store import Store

    with Store(settings.db_path) as store:
        result = dispatch(store, settings, sandbox=args.sandbox, speed=args.speed, start=args.start,
                          follow=args.follow, timeout=args.timeout)
    if result["ticks"] and not result.get("claimed"):
        text = "nothing was due: no pending or retrying sends (plan a campaign first)"
    else:
        text = f"{result.get('claimed', 0):,} sends attempted; all sends by state: " + (
            ", ".join(f"{k}={v:,}" for k, v in result["states"].items()) or "none")
    _print(args, result, text)
    return EXIT_OK


def cmd_simulate_engagement(args: argparse.Namespace, settings: Settings) -> int:
    from engine.simulate.engagement import simulate_engagement
    from engine.store import Store

    with Store(settings.db_path) as store:
        counts = simulate_engagement(store, seed=settings.seed)
    _print(args, counts, "simulated engagement: " + ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from engine.push.sandbox import serve_forever

    serve_forever(Path(args.workdir))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from engine.demo import run_demo

    summary = run_demo(settings, fast=args.fast, force=args.force, speed=args.speed)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pushwise", description=__doc__)
    p.add_argument("--config", help="TOML settings file (default: $PUSHWISE_CONFIG or ./pushwise.toml)")
    p.add_argument("--db", help="DuckDB file (default: data/pushwise.duckdb)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        sp.add_argument("--json", action="store_true", help="print machine-readable JSON")
        # also after the command (`pushwise serve --db X`); SUPPRESS keeps the global one when absent here
        sp.add_argument("--db", default=argparse.SUPPRESS, help="DuckDB file (as the global --db)")
        return sp

    sp = add("ingest", cmd_ingest, "load behaviour files into the events table (bad rows are quarantined)")
    sp.add_argument("paths", nargs="+", metavar="PATH")
    sp.add_argument("--format", choices=["csv", "parquet", "jsonl"], help="default: from the file suffix")
    sp.add_argument("--mapping", help="online_retail | open_bandit | events (default: detected from columns)")

    sp = add("seed-devices", cmd_seed_devices, "give users simulated devices and consent (sandbox demo only)")
    sp.add_argument("--source", default="online_retail", help="users of this source only")

    sp = add("train", cmd_train, "train the click, Open Bandit click and send-time models")
    sp.add_argument("--as-of", type=_as_of, help="train on data before this time (default: latest event)")
    sp.add_argument("--dask", metavar="tcp://HOST:PORT", help="train the click model on this Dask scheduler")

    sp = add("plan", cmd_plan, "turn a campaign file into logged decisions and outbox sends")
    sp.add_argument("campaign", help="campaign TOML file")
    sp.add_argument("--as-of", type=_as_of, help="plan as of this time (default: the campaign's as_of)")
    sp.add_argument("--dask", metavar="tcp://HOST:PORT", help="score the candidates on this Dask scheduler")

    sp = add("dispatch", cmd_dispatch, "deliver due sends through the vendor channels")
    sp.add_argument("--sandbox", action="store_true", help="start the loopback vendor sandboxes and send there")
    sp.add_argument("--speed", type=float, default=0.0,
                    help="run an accelerated clock this many times faster than real time (0: real time)")
    sp.add_argument("--start", type=_as_of, help="accelerated clock start (default: earliest due send)")
    sp.add_argument("--follow", action="store_true", help="keep running when nothing is due")
    sp.add_argument("--timeout", type=float, default=None, help="stop after this many real seconds")

    add("simulate-engagement", cmd_simulate_engagement,
        "simulate opens, clicks and conversions of delivered sandbox pushes (marked simulated)")

    sp = add("sandbox", cmd_sandbox, "run every vendor's loopback sandbox (APNs, FCM, Huawei, Honor, Xiaomi, OPPO, vivo, Meizu, Web Push) until interrupted")
    sp.add_argument("--workdir", default=".sandbox", help="where the CA, keys and service-account file go")

    sp = add("demo", cmd_demo, "the main job end to end on the shipped real data")
    sp.add_argument("--fast", action="store_true", help="a small slice of the data (tests)")
    sp.add_argument("--force", action="store_true", help="replace a database the demo did not create")
    sp.add_argument("--speed", type=float, default=20_000.0, help="accelerated clock speed for dispatch")

    for module in command_modules():
        module.register(add)
    return p


def command_modules() -> list:
    """Every ``engine.<package>.commands`` module, in name order.

    A package adds subcommands by shipping a ``commands.py`` with ``register(add)``, where
    ``add(name, func, help)`` returns an ``argparse`` subparser whose ``func(args, settings)`` runs the
    command and returns the exit code. No list to edit here.
    """
    import importlib
    import importlib.util
    import pkgutil

    import engine

    found = []
    for info in sorted(pkgutil.iter_modules(engine.__path__), key=lambda i: i.name):
        if info.ispkg and importlib.util.find_spec(f"engine.{info.name}.commands") is not None:
            found.append(importlib.import_module(f"engine.{info.name}.commands"))
    return found


#: Wire-level loggers of the HTTP stack: at DEBUG they print request paths and headers, which hold
#: device tokens (APNs puts the token in the path). They stay at WARNING even with -v.
WIRE_LOGGERS = ("hpack", "h2", "h11", "httpcore", "httpx")


def configure_logging(verbose: bool) -> None:
    """Log to stderr; -v for debug. Every record goes through the token mask, whichever logger made it."""
    from engine.push.base import TokenMask

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TokenMask) for f in handler.filters):
            handler.addFilter(TokenMask())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        settings = load_settings(args.config)
        if args.db:
            settings.db_path = args.db
        if not getattr(args, "skip_validate", False):  # doctor and config show report problems themselves
            settings.validate()
        if args.command in NEEDS_EXISTING_DB and not Path(settings.db_path).exists():
            from engine.errors import InputError

            raise InputError(f"no database at {settings.db_path}; check --db, or create one with "
                             "`pushwise ingest` or `pushwise demo`")
        return args.func(args, settings)
    except PushwiseError as exc:
        from engine.errors import InputError

        print(f"pushwise: error: {exc}", file=sys.stderr)
        return EXIT_INPUT if isinstance(exc, InputError) else EXIT_ERROR
    except KeyboardInterrupt:
        print("pushwise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pushwise … | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
