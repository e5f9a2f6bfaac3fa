"""Retry policy: exponential backoff with jitter that honours Retry-After, bounded in attempts and delay."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a send again.

    Attributes:
        max_attempts: attempts in all, the first included; the last failure is terminal.
        base_seconds: delay before the second attempt (before jitter).
        cap_seconds: no single delay is longer, except when the vendor's Retry-After asks for more.
        max_total_seconds: a send whose next attempt would start later than this after its first
            attempt fails with ``retries exhausted`` instead.
        auth_pause_seconds: after an auth error the vendor is paused this long; such attempts do not
            count against ``max_attempts`` (the send was never judged), only against the total delay.
    """

    max_attempts: int = 6
    base_seconds: float = 2.0
    cap_seconds: float = 600.0
    max_total_seconds: float = 3600.0
    auth_pause_seconds: float = 300.0   # a vendor that refused our credentials is left alone this long

    def delays(self, attempts: np.ndarray, retry_after: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Seconds to wait before the next attempt, per send.

        Args:
            attempts: attempts made so far (≥ 1).
            retry_after: the vendor's Retry-After in seconds, NaN where absent.
        """
        exp = np.minimum(self.cap_seconds, self.base_seconds * np.power(2.0, np.maximum(attempts - 1, 0)))
        jittered = exp * rng.uniform(0.5, 1.0, size=len(exp))   # "equal jitter": spreads retries, keeps a floor
        return np.where(np.isnan(retry_after), jittered, np.maximum(jittered, retry_after))
