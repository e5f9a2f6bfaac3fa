"""Proportion statistics against published values (Newcombe 1998) and SciPy."""

from __future__ import annotations

import math

import pytest

from engine.analytics.stats import (
    compare_proportions,
    newcombe_interval,
    two_proportion_z_test,
    wald_interval,
    wilson_interval,
    z_critical,
)
from engine.errors import InputError

# Newcombe (1998a), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no correction)
WILSON_PUBLISHED = [
    ((81, 263), (0.2553, 0.3662)),
    ((15, 148), (0.0624, 0.1605)),
    ((0, 20), (0.0000, 0.1611)),
    ((1, 29), (0.0061, 0.1718)),
]

# Newcombe (1998b), Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score)
NEWCOMBE_PUBLISHED = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "expected"), WILSON_PUBLISHED)
def test_wilson_matches_published_values(counts, expected):
    low, high = wilson_interval(*counts)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_by_hand():
    # 3 of 10 at z = 1.959964: centre (0.3 + z²/20) / (1 + z²/10), half z·sqrt(0.021 + z²/400) / (1 + z²/10)
    z = 1.959963984540054
    denom = 1 + z * z / 10
    centre = (0.3 + z * z / 20) / denom
    half = z * math.sqrt(0.3 * 0.7 / 10 + z * z / 400) / denom
    low, high = wilson_interval(3, 10)
    assert low == pytest.approx(centre - half, abs=1e-12)
    assert high == pytest.approx(centre + half, abs=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.1078, 0.6032)


def test_wilson_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for x, n in [(0, 5), (1, 7), (18, 100), (3894, 21307), (500, 500)]:
        ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.9, method="wilson")
        assert wilson_interval(x, n, 0.9) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE_PUBLISHED)
def test_newcombe_matches_published_values(counts, expected):
    low, high = newcombe_interval(*counts)
    assert (round(low, 4), round(high, 4)) == expected


def test_z_test_golden_and_equal_to_chi_square():
    z, p = two_proportion_z_test(56, 70, 48, 80)
    assert (round(z, 4), round(p, 6)) == (2.6502, 0.008045)
    stats = pytest.importorskip("scipy.stats")
    np = pytest.importorskip("numpy")
    for x1, n1, x2, n2 in [(56, 70, 48, 80), (3, 9, 1, 5), (3894, 21307, 2262, 21306)]:
        chi2 = stats.chi2_contingency(np.array([[x1, n1 - x1], [x2, n2 - x2]]), correction=False)
        assert two_proportion_z_test(x1, n1, x2, n2)[1] == pytest.approx(chi2.pvalue, rel=1e-9)


def test_z_test_edges():
    assert two_proportion_z_test(0, 10, 0, 20) == (0.0, 1.0)
    assert two_proportion_z_test(10, 10, 20, 20) == (0.0, 1.0)
    z, p = two_proportion_z_test(0, 0, 1, 2)
    assert math.isnan(z) and math.isnan(p)


def test_wald_by_hand():
    low, high = wald_interval(56, 70, 48, 80)
    se = math.sqrt(0.8 * 0.2 / 70 + 0.6 * 0.4 / 80)
    assert low == pytest.approx(0.2 - 1.959963984540054 * se)
    assert high == pytest.approx(0.2 + 1.959963984540054 * se)


def test_hillstrom_scale_comparison():
    # Hillstrom e-mail challenge (64,000 customers): visit rates 18.3% Mens e-mail vs 10.6% control.
    c = compare_proportions(3894, 21307, 2262, 21306)
    assert round(c.rate1, 3) == 0.183 and round(c.rate2, 3) == 0.106
    assert round(c.difference, 4) == 0.0766
    assert 0.069 < c.diff_low < 0.071 and 0.082 < c.diff_high < 0.084
    assert c.p_value < 1e-100
    assert c.relative_uplift == pytest.approx(c.difference / c.rate2)
    wald = compare_proportions(3894, 21307, 2262, 21306, method="wald")
    # At this size the two intervals agree to a tenth of a percentage point.
    assert wald.diff_low == pytest.approx(c.diff_low, abs=1e-3)


def test_compare_with_empty_or_zero_control():
    c = compare_proportions(2, 10, 0, 10)
    assert math.isnan(c.relative_uplift) and c.difference == pytest.approx(0.2)
    empty = compare_proportions(0, 0, 0, 0)
    assert all(math.isnan(v) for v in (empty.rate1, empty.diff_low, empty.p_value))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: wilson_interval(5, 3), "successes must be between 0 and trials (3), got 5"),
        (lambda: wilson_interval(-1, 3), "successes must be between 0 and trials (3), got -1"),
        (lambda: wilson_interval(0, -2), "trials must be non-negative, got -2"),
        (lambda: wilson_interval(1, 2, confidence=1.0),
         "confidence must be between 0 and 1 (exclusive), got 1.0"),
        (lambda: newcombe_interval(1, 2, 4, 3), "group 2 successes must be between 0 and trials (3), got 4"),
        (lambda: compare_proportions(1, 2, 1, 2, method="exact"),
         "unknown interval method 'exact'; choose one of: newcombe, wald"),
    ],
)
def test_invalid_input_messages(call, message):
    with pytest.raises(InputError) as info:
        call()
    assert str(info.value) == message


def test_z_critical():
    assert z_critical(0.95) == pytest.approx(1.959963984540054)
    assert z_critical(0.9) == pytest.approx(1.6448536269514722)
