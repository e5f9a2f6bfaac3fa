"""APScheduler wiring only: run the dispatcher (and snapshot publishing) on intervals until told to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from engine.clock import AcceleratedClock, Clock, SimulatedClock
from engine.dispatch import Dispatcher, TickReport

__all__ = ["DispatchRun", "run_dispatch"]

log = logging.getLogger(__name__)
# A tick still running when the next is due is skipped on purpose (max_instances=1); APScheduler logs
# each skip as a warning, which is noise here.
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
logging.getLogger("apscheduler.executors.default").setLevel(logging.ERROR)


@dataclass
class DispatchRun:
    ticks: int = 0
    claimed: int = 0
    real_seconds: float = 0.0


async def run_dispatch(
    dispatcher: Dispatcher,
    clock: Clock,
    *,
    interval_seconds: float = 0.1,
    until_idle: bool = True,
    timeout_seconds: float | None = None,
    publish: Callable[[], object] | None = None,
    publish_every_seconds: float = 2.0,
    on_tick: Callable[[TickReport], None] | None = None,
    idle_jump: timedelta = timedelta(minutes=30),
) -> DispatchRun:
    """Tick the dispatcher on an APScheduler interval job until nothing is left (or forever).

    With a :class:`SimulatedClock`, each tick advances simulated time by the clock's step; with it or
    an :class:`AcceleratedClock`, stretches with nothing due longer than ``idle_jump`` are skipped by
    moving simulated time straight to the next due send.

    Args:
        publish: called on its own interval job (the store's snapshot, for readers in other processes).
        on_tick: called with each tick's report (progress bars).
    """
    run = DispatchRun()
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = asyncio.Event()
    failure: list[BaseException] = []
    busy = asyncio.Lock()  # held while a tick runs, so that stopping waits for its receipts to be recorded

    async def tick() -> None:
        async with busy:
            await _tick()

    async def _tick() -> None:
        try:
            report = await dispatcher.tick()
        except Exception as exc:  # stop the run loudly instead of ticking on a broken store
            failure.append(exc)
            done.set()
            return
        run.ticks += 1
        run.claimed += report.claimed
        if on_tick:
            on_tick(report)
        if report.claimed == 0:
            nxt = dispatcher.next_due()
            if nxt is None and until_idle:
                done.set()
                return
            if nxt is not None and isinstance(clock, (AcceleratedClock, SimulatedClock)) \
                    and nxt - clock.now() > idle_jump:
                clock.jump_to(nxt)
                return
        if isinstance(clock, SimulatedClock) and report.claimed < dispatcher.batch_size:
            clock.advance()  # a full batch means more is due now: stay at this time until drained

    async def publish_job() -> None:
        # on the loop, between ticks: the store's one connection is never used by two callers at once
        async with busy:
            publish()

    scheduler = AsyncIOScheduler(event_loop=loop)
    scheduler.add_job(tick, "interval", seconds=interval_seconds, max_instances=1, coalesce=True,
                      id="dispatch", misfire_grace_time=None)
    if publish is not None:
        scheduler.add_job(publish_job, "interval", seconds=publish_every_seconds, max_instances=1, coalesce=True,
                          id="publish-snapshot")
    scheduler.start()
    try:
        if timeout_seconds is None:
            await done.wait()
        else:
            try:
                await asyncio.wait_for(done.wait(), timeout_seconds)
            except TimeoutError:
                log.warning("dispatch stopped after %.0f s with %d sends still open",
                            timeout_seconds, dispatcher.open_count())
    finally:
        scheduler.shutdown(wait=False)
        async with busy:
            pass
    if failure:
        raise failure[0]
    run.real_seconds = loop.time() - started
    return run
