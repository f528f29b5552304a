"""Paired comparisons over seeds: two configurations run with the same seeds, compared seed by seed.

The difference of each seed's pair (A - B) cancels what the seed does to both runs alike (data order,
augmentation, initialisation), so it is the figure to judge; the mean of the differences gets a 95% confidence
interval from Student's t over the seeds (``mean ± t(0.975, n - 1) * sd / sqrt(n)``), and the signs are counted. A
difference whose interval spans zero is *not shown*, whatever its mean says; one pair gives no interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

# two-sided 95% critical values of Student's t, by degrees of freedom (the usual table, three decimals)
T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
}


def t95(df: int) -> float:
    """The two-sided 95% critical value of t with ``df`` degrees of freedom (beyond 30: the normal value with
    the first Cornish-Fisher term, within 0.002 of the exact one)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df in T95:
        return T95[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df)


@dataclass(frozen=True)
class PairedDifference:
    """A - B over the seeds both finished: the pairs, the mean difference with its 95% interval, the signs."""

    n: int
    mean: float
    low: float  # NaN for fewer than two pairs
    high: float
    positive: int  # seeds where A > B
    negative: int  # seeds where A < B

    @property
    def shown(self) -> bool:
        """Whether the interval excludes zero (two pairs or more)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    @property
    def reading(self) -> str:
        if self.n == 0:
            return "no pairs"
        if not self.shown:
            return "not shown"
        return "A ahead" if self.mean > 0 else "B ahead"


def paired_difference(a: Mapping[str, float], b: Mapping[str, float]) -> PairedDifference:
    """A - B over the seeds present in both ``a`` and ``b`` (seed -> value; NaN values are left out)."""
    seeds = [s for s in a if s in b and not math.isnan(a[s]) and not math.isnan(b[s])]
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    positive, negative = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan, math.nan, 0, 0)
    mean = statistics.fmean(diffs)
    if n == 1:
        return PairedDifference(1, mean, math.nan, math.nan, positive, negative)
    half = t95(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return PairedDifference(n, mean, mean - half, mean + half, positive, negative)
