"""Injected notion of "now": the system clock, a fixed clock for tests, an accelerated one for the demo."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["AcceleratedClock", "Clock", "FixedClock", "SimulatedClock", "SystemClock"]


class Clock(Protocol):
    """Anything with ``now()`` returning an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FixedClock:
    """A clock that only moves when told to (tests)."""

    at: datetime

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at = self.at + delta


@dataclass
class AcceleratedClock:
    """Simulated time that starts at ``start`` and runs ``speed`` times faster than the wall clock.

    The demo uses it so that a week of planned send times passes in seconds. ``jump_to`` lets a
    driver skip idle stretches (nothing due) without waiting for them.
    """

    start: datetime
    speed: float
    _offset: timedelta = field(default=timedelta(0))
    _t0: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def now(self) -> datetime:
        with self._lock:
            elapsed = time.monotonic() - self._t0
            return self.start + self._offset + timedelta(seconds=elapsed * self.speed)

    def jump_to(self, when: datetime) -> None:
        """Move simulated time forward to ``when`` (never backwards)."""
        current = self.now()
        if when > current:
            with self._lock:
                self._offset += when - current


@dataclass
class SimulatedClock:
    """Simulated time that moves in steps, only when its driver says so (discrete-event style).

    The demo's dispatcher advances it by ``step`` after every tick: a week of send times passes in
    seconds, yet time stands still *during* a tick, so credential lifetimes, token ages and the
    vendors' 20-minute rules mean what they mean in production (with a free-running accelerated
    clock, one slow batch would age a token by hours).
    """

    at: datetime
    step: timedelta = field(default=timedelta(minutes=30))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def now(self) -> datetime:
        with self._lock:
            return self.at

    def advance(self, delta: timedelta | None = None) -> None:
        with self._lock:
            self.at = self.at + (self.step if delta is None else delta)

    def jump_to(self, when: datetime) -> None:
        """Move forward to ``when`` (never backwards)."""
        with self._lock:
            if when > self.at:
                self.at = when
