"""CLI subcommand ``pushwise retrain``: challenger versus champion, once or on the configured cron."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

__all__ = ["cmd_retrain", "register"]


def register(add) -> None:
    """Add ``retrain`` to the ``pushwise`` parser (see engine/cli.py: command_modules)."""
    sp = add("retrain", cmd_retrain,
             "retrain the click model, promote it only if it beats the champion (on settings.retrain_cron)")
    sp.add_argument("--once", action="store_true", help="run one retraining now and exit")
    sp.add_argument("--as-of", type=datetime.fromisoformat,
                    help="with --once: train on data before this time (default: just after the latest event)")


def cmd_retrain(args: argparse.Namespace, settings) -> int:
    from engine.clock import SystemClock
    from engine.store import Store
    from engine.training.click import ClickConfig
    from engine.training.retrain import retrain, retrain_scheduler

    config = ClickConfig(seed=settings.seed)

    def run_once(as_of: datetime | None = None) -> dict:
        with Store(settings.db_path) as store:
            cutoff = as_of or _after_latest_event(store)
            report = retrain(store, Path(settings.models_dir), SystemClock(), as_of=cutoff,
                             margin=settings.promotion_margin, config=config)
        return asdict(report)

    if args.once:
        print(json.dumps(run_once(args.as_of), indent=2, default=str))
        return 0
    print(f"retraining on cron {settings.retrain_cron!r} (UTC); Ctrl-C to stop")
    scheduler = retrain_scheduler(settings.retrain_cron, lambda: print(json.dumps(run_once(), default=str)))
    try:
        scheduler.start()
    except KeyboardInterrupt:
        scheduler.shutdown(wait=False)
    return 0


def _after_latest_event(store) -> datetime:
    latest = store.scalar("SELECT max(ts) FROM events WHERE NOT simulated")
    if latest is None:
        from engine.errors import ModelError
        raise ModelError("no events in the store; ingest data before retraining")
    return latest + timedelta(seconds=1)
