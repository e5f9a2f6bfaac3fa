"""Statistics for comparing two proportions: Wilson and Newcombe intervals, the two-proportion z-test.

Pure functions of counts, no I/O and no SciPy (the normal distribution comes from the standard
library), so the dashboard, notebooks and the experiment CLI share exactly one implementation.

References:
    E. B. Wilson (1927), Probable inference, the law of succession, and statistical inference, JASA 22.
    R. G. Newcombe (1998), Interval estimation for the difference between independent proportions:
    comparison of eleven methods, Statistics in Medicine 17:873-890 (method 10, the hybrid score
    interval, is :func:`newcombe_interval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from engine.errors import InputError

__all__ = [
    "DIFF_METHODS",
    "ProportionComparison",
    "compare_proportions",
    "newcombe_interval",
    "two_proportion_z_test",
    "wald_interval",
    "wilson_interval",
    "z_critical",
]

NAN = float("nan")

#: Methods :func:`compare_proportions` accepts for the interval of the difference.
DIFF_METHODS = ("newcombe", "wald")


def z_critical(confidence: float = 0.95) -> float:
    """Two-sided critical value of the standard normal (1.959964 for 0.95).

    Raises:
        InputError: ``confidence`` is not strictly between 0 and 1.
    """
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_counts(successes: int, n: int, name: str = "") -> None:
    label = f"{name} " if name else ""
    if n < 0:
        raise InputError(f"{label}trials must be non-negative, got {n}")
    if not 0 <= successes <= n:
        raise InputError(f"{label}successes must be between 0 and trials ({n}), got {successes}")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Returns:
        (low, high) in [0, 1]; (nan, nan) when ``n`` is 0.

    Raises:
        InputError: counts are negative or successes exceed trials; confidence outside (0, 1).
    """
    _check_counts(successes, n)
    z = z_critical(confidence)
    if n == 0:
        return NAN, NAN
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # The bounds are exact at the edges; clamp only the rounding noise.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def newcombe_interval(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10) for the difference ``x1/n1 - x2/n2``.

    Returns:
        (low, high); (nan, nan) when either group is empty.
    """
    _check_counts(x1, n1, "group 1")
    _check_counts(x2, n2, "group 2")
    if n1 == 0 or n2 == 0:
        z_critical(confidence)
        return NAN, NAN
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def wald_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation (Wald, unpooled) interval for ``x1/n1 - x2/n2``; fine for large counts."""
    _check_counts(x1, n1, "group 1")
    _check_counts(x2, n2, "group 2")
    z = z_critical(confidence)
    if n1 == 0 or n2 == 0:
        return NAN, NAN
    p1, p2 = x1 / n1, x2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p1 - p2 - z * se, p1 - p2 + z * se


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Two-sided two-proportion z-test with the pooled standard error (equals Pearson's chi-square
    test of the 2×2 table without continuity correction).

    Returns:
        (z, p_value); (nan, nan) when either group is empty; (0.0, 1.0) when the pooled rate is 0 or 1.
    """
    _check_counts(x1, n1, "group 1")
    _check_counts(x2, n2, "group 2")
    if n1 == 0 or n2 == 0:
        return NAN, NAN
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        # Both groups all-success or all-failure: no evidence of any difference.
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / se
    return z, 2.0 * NormalDist().cdf(-abs(z))


@dataclass(frozen=True)
class ProportionComparison:
    """Group 1 (treatment) against group 2 (control / holdout).

    Attributes:
        rate1, rate2: observed proportions.
        difference: ``rate1 - rate2`` (absolute, in proportion units).
        diff_low, diff_high: interval of the difference at ``confidence``.
        z, p_value: two-sided pooled z-test.
        relative_uplift: ``difference / rate2`` (nan when ``rate2`` is 0).
    """

    rate1: float
    rate2: float
    difference: float
    diff_low: float
    diff_high: float
    z: float
    p_value: float
    relative_uplift: float
    confidence: float
    method: str


def compare_proportions(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95, method: str = "newcombe"
) -> ProportionComparison:
    """Compare two independent proportions: difference with an interval, z-test and relative uplift.

    Args:
        x1, n1: successes and trials of the first group (treatment).
        x2, n2: successes and trials of the second group (holdout / control).
        method: ``"newcombe"`` (hybrid score, good at small counts) or ``"wald"``.

    Raises:
        InputError: bad counts, confidence, or an unknown method.
    """
    if method not in DIFF_METHODS:
        raise InputError(f"unknown interval method {method!r}; choose one of: {', '.join(DIFF_METHODS)}")
    interval = newcombe_interval if method == "newcombe" else wald_interval
    low, high = interval(x1, n1, x2, n2, confidence)
    z, p = two_proportion_z_test(x1, n1, x2, n2)
    r1 = x1 / n1 if n1 else NAN
    r2 = x2 / n2 if n2 else NAN
    diff = r1 - r2
    uplift = diff / r2 if n2 and x2 else NAN
    return ProportionComparison(r1, r2, diff, low, high, z, p, uplift, confidence, method)
