"""A standalone dispatcher process: open the store, build the enabled channels, dispatch until idle.

``python -m engine.dispatch.runner --db data/pushwise.duckdb --config sandbox.toml`` is what the
crash test and the soak benchmark start, SIGKILL and restart. Everything it owns lives in DuckDB,
so a restart resumes from the outbox (sends left ``in_flight`` are resent with the same id).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from pathlib import Path

from engine.clock import SystemClock
from engine.config import Settings, VendorsConfig, load_settings
from engine.dispatch.backoff import RetryPolicy
from engine.dispatch.dispatcher import Dispatcher
from engine.store import Store

__all__ = ["main", "run_until_idle", "write_vendor_config"]

log = logging.getLogger(__name__)


def write_vendor_config(vendors: VendorsConfig, path: Path, fallback: dict[str, str] | None = None) -> Path:
    """Write the enabled ``[vendors.*]`` sections (and ``[fallback]``) as a TOML file `load_settings` reads."""
    lines: list[str] = []
    for name in VendorsConfig.__dataclass_fields__:
        section = getattr(vendors, name)
        if not section.enabled:
            continue
        lines.append(f"[vendors.{name}]")
        for key, value in dataclasses.asdict(section).items():
            lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else json.dumps(value)}")
        lines.append("")
    if fallback:
        lines += ["[fallback]", *(f"{k} = {json.dumps(v)}" for k, v in fallback.items()), ""]
    path.write_text("\n".join(lines))
    return path


async def run_until_idle(store: Store, settings: Settings, policy: RetryPolicy, *, batch_size: int = 500,
                         timeout_seconds: float | None = None) -> int:
    """Dispatch on the system clock until no send is left open; returns sends claimed.

    Batches are pipelined (`Dispatcher.run`): claim, send and record overlap, DuckDB on one thread.
    """
    from engine.push.registry import build_channels

    clock = SystemClock()
    channels = build_channels(settings.validate(), clock, store=store)
    try:
        dispatcher = Dispatcher.from_settings(store, channels, clock, settings)
        dispatcher.policy, dispatcher.batch_size = policy, batch_size
        run = await dispatcher.run(timeout_seconds=timeout_seconds)
        return run.claimed
    finally:
        for channel in channels.values():
            await channel.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.dispatch.runner")
    parser.add_argument("--db", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-attempts", type=int, default=6)
    parser.add_argument("--base-seconds", type=float, default=0.2)
    parser.add_argument("--cap-seconds", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.config, env={})
    policy = RetryPolicy(max_attempts=args.max_attempts, base_seconds=args.base_seconds,
                         cap_seconds=args.cap_seconds, max_total_seconds=600, auth_pause_seconds=2.0)
    with Store(args.db) as store:
        claimed = asyncio.run(run_until_idle(store, settings, policy, batch_size=args.batch_size,
                                             timeout_seconds=args.timeout))
    print(json.dumps({"claimed": claimed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
