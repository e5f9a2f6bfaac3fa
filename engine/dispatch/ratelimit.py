"""Per-vendor send rate limits: a token bucket per vendor, sized from ``settings.vendors.<v>.rate_per_second``.

The dispatcher asks each bucket how many sends it may claim this tick (`VendorLimits.allowance`), so
a rate-limited vendor's sends stay ``pending`` in the outbox rather than queueing in memory; the
concurrency bound (in-flight requests) is the channel's own semaphore (``concurrency``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from engine.config import VendorsConfig

__all__ = ["TokenBucket", "VendorLimits"]


@dataclass
class TokenBucket:
    """Refills ``rate`` tokens per second up to ``burst``; one token is one send.

    Attributes:
        rate: tokens per second (> 0).
        burst: most tokens held; defaults to one second's worth (at least 1).
        now: monotonic seconds (injected in tests).
    """

    rate: float
    burst: float = 0.0
    now: Callable[[], float] = time.monotonic
    _tokens: float = field(default=-1.0, init=False)
    _at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        self.burst = self.burst or max(1.0, self.rate)
        self._tokens = self.burst
        self._at = self.now()

    def _refill(self) -> None:
        t = self.now()
        self._tokens = min(self.burst, self._tokens + (t - self._at) * self.rate)
        self._at = t

    def available(self) -> int:
        """Whole tokens available now."""
        self._refill()
        return int(math.floor(self._tokens))

    def take(self, n: int) -> int:
        """Take up to ``n`` tokens; returns how many were granted (0..n)."""
        self._refill()
        granted = max(0, min(n, int(math.floor(self._tokens))))
        self._tokens -= granted
        return granted

    def give_back(self, n: int) -> None:
        """Return ``n`` granted tokens that were not used (fewer sends were due than allowed)."""
        self._tokens = min(self.burst, self._tokens + n)

    def seconds_until(self, n: int = 1) -> float:
        """Seconds until ``n`` tokens are available (0 when they already are)."""
        self._refill()
        return max(0.0, (min(n, self.burst) - self._tokens) / self.rate)


class VendorLimits:
    """The token buckets of the rate-limited vendors.

    Args:
        rates: vendor → sends per second; vendors absent or at 0 are not limited locally.
        now: monotonic seconds (injected in tests).
    """

    def __init__(self, rates: Mapping[str, float], now: Callable[[], float] = time.monotonic) -> None:
        self.buckets = {v: TokenBucket(float(r), now=now) for v, r in rates.items() if r and r > 0}

    @classmethod
    def from_settings(cls, vendors: VendorsConfig, names: list[str] | None = None) -> VendorLimits:
        """Buckets from every ``[vendors.<v>]`` section that sets ``rate_per_second``."""
        names = names or list(vendors.__dataclass_fields__)
        return cls({v: getattr(getattr(vendors, v, None), "rate_per_second", 0.0) for v in names})

    def allowance(self, vendors: list[str], wanted: int) -> dict[str, int]:
        """Take up to ``wanted`` tokens for each limited vendor among ``vendors``.

        Returns:
            vendor → sends it may claim now; unlimited vendors are absent (no limit).
        """
        return {v: self.buckets[v].take(wanted) for v in vendors if v in self.buckets}

    def refund(self, granted: Mapping[str, int], used: Mapping[str, int]) -> None:
        """Give back tokens granted by `allowance` that no claimed send used."""
        for vendor, n in granted.items():
            left = n - used.get(vendor, 0)
            if left > 0:
                self.buckets[vendor].give_back(left)
