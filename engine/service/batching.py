"""Group commit for the service: the small writes of concurrent requests share one DuckDB transaction.

Every request used to pay for its own transaction (a few statements and a commit: 15–45 ms on a file
database), one at a time on the event loop, so 50 clients got about 25 requests/s. Here a request
hands its write to `GroupCommit.submit` and awaits the answer; the first write of an event-loop turn
schedules a flush, which runs soon after (once the requests that arrived meanwhile have queued
theirs), on the loop itself so the store's one connection is still never used by two callers at once
(decision 001). A flush runs each kind's *batch handler* once over all its queued items, inside one
transaction, and commits once. A request is answered only after that commit: an acknowledged event
is stored.

If the shared transaction fails, it is rolled back and every item is run again alone, in its own
transaction, so a bad item fails only its own request and the others still land.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.store import Store

__all__ = ["BatchHandler", "GroupCommit"]

log = logging.getLogger(__name__)

#: (store, items) → one result per item, in order; runs inside a transaction it must not open itself.
BatchHandler = Callable[[Store, Sequence[Any]], Sequence[Any]]


@dataclass
class _Pending:
    kind: str
    item: Any
    future: asyncio.Future


@dataclass
class GroupCommit:
    """Coalesces writes submitted during one event-loop turn into one transaction per flush.

    Args:
        store: the service's store (used only from the event loop).
        handlers: ``{kind: BatchHandler}``.
        max_items: most items per flush; more wait for the next one.
        linger_seconds: how long a flush waits for more items after the first (0: one loop turn).
    """

    store: Store
    handlers: dict[str, BatchHandler]
    max_items: int = 1000
    linger_seconds: float = 0.0
    flushes: int = 0
    items: int = 0
    _queue: list[_Pending] = field(default_factory=list)
    _scheduled: bool = False

    async def submit(self, kind: str, item: Any) -> Any:
        """Queue one write and wait until it is committed; returns its handler's result or raises its error."""
        if kind not in self.handlers:
            raise KeyError(f"no batch handler for {kind!r}")
        loop = asyncio.get_running_loop()
        pending = _Pending(kind, item, loop.create_future())
        self._queue.append(pending)
        if not self._scheduled:
            self._scheduled = True
            loop.create_task(self._flush_soon())
        return await pending.future

    async def _flush_soon(self) -> None:
        # Let the requests already read from their sockets reach submit() first.
        await asyncio.sleep(self.linger_seconds)
        try:
            while self._queue:
                batch, self._queue = self._queue[:self.max_items], self._queue[self.max_items:]
                self._flush(batch)
                if self._queue:
                    await asyncio.sleep(0)   # let the loop breathe between full batches
        finally:
            self._scheduled = False

    def _flush(self, batch: list[_Pending]) -> None:
        by_kind: dict[str, list[_Pending]] = {}
        for p in batch:
            by_kind.setdefault(p.kind, []).append(p)
        self.flushes += 1
        self.items += len(batch)
        try:
            with self.store.transaction():
                results = {kind: self._run(kind, ps) for kind, ps in by_kind.items()}
        except Exception:   # noqa: BLE001 — one bad item must not fail the others: run each alone
            if len(batch) == 1:
                self._settle_alone(batch[0])
                return
            log.info("group commit of %d items failed; retrying each alone", len(batch))
            for p in batch:
                self._settle_alone(p)
            return
        for kind, ps in by_kind.items():
            for p, result in zip(ps, results[kind], strict=True):
                if not p.future.done():
                    p.future.set_result(result)

    def _run(self, kind: str, ps: list[_Pending]) -> Sequence[Any]:
        results = self.handlers[kind](self.store, [p.item for p in ps])
        if len(results) != len(ps):
            raise RuntimeError(f"batch handler {kind!r} returned {len(results)} results for {len(ps)} items")
        return results

    def _settle_alone(self, p: _Pending) -> None:
        try:
            with self.store.transaction():
                result = self._run(p.kind, [p])[0]
        except Exception as exc:   # noqa: BLE001 — handed to the request that sent it
            if not p.future.done():
                p.future.set_exception(exc)
            return
        if not p.future.done():
            p.future.set_result(result)
