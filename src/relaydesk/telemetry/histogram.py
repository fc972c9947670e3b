"""Fixed-bucket histograms: percentiles come from bucket counts, never from samples.

Every histogram of a kind shares one bucket layout, so histograms from any node,
minute or hour merge by adding counts, and a stored row is a few dozen integers.

* Latencies (milliseconds) use log-spaced buckets, eight per doubling, from
  10 µs to 10 minutes: any percentile read from them is within 9 % of the exact
  sample percentile (the bucket ratio is 2^(1/8) ≈ 1.09, and the value is
  interpolated geometrically inside the bucket).
* Loss fractions (0..1) use linear buckets: 0.5 % wide up to 10 %, wider above.

A bucket ``i`` counts values ``v`` with ``bounds[i-1] < v <= bounds[i]``
(Prometheus ``le`` semantics); the last bucket holds everything above the last
bound and reports the last bound.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

from relaydesk.storage.telemetry import HistData

_RATIO = 2.0 ** (1.0 / 8.0)
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(
    0.01 * _RATIO**i for i in range(int(math.log(60_000_000, _RATIO)) + 2)
)
LOSS_BOUNDS: tuple[float, ...] = tuple(
    [0.0]
    + [round(i * 0.005, 4) for i in range(1, 21)]
    + [round(0.1 + i * 0.025, 4) for i in range(1, 9)]
    + [round(0.3 + i * 0.05, 4) for i in range(1, 15)]
)


class Histogram:
    """Counts per fixed bucket, plus the exact sum and count."""

    __slots__ = ("_bounds", "_log", "counts", "n", "sum")

    def __init__(self, bounds: Sequence[float], *, log: bool = True) -> None:
        self._bounds = bounds
        self._log = log
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.n = 0

    @classmethod
    def latency(cls) -> Histogram:
        return cls(LATENCY_BOUNDS_MS, log=True)

    @classmethod
    def loss(cls) -> Histogram:
        return cls(LOSS_BOUNDS, log=False)

    @property
    def bounds(self) -> Sequence[float]:
        return self._bounds

    def observe(self, value: float, n: int = 1) -> None:
        """Count ``value`` ``n`` times (``n`` lets a batch be recorded in one call)."""
        self.counts[bisect_left(self._bounds, value)] += n
        self.sum += value * n
        self.n += n

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.sum += other.sum
        self.n += other.n

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) from bucket counts; None when empty."""
        if self.n == 0:
            return None
        rank = min(max(q, 0.0), 1.0) * self.n
        bounds = self._bounds
        seen = 0
        for i, c in enumerate(self.counts):
            if c == 0:
                continue
            if seen + c >= rank:
                if i >= len(bounds):
                    return bounds[-1]
                upper = bounds[i]
                lower = bounds[i - 1] if i > 0 else (0.0 if not self._log else upper / _RATIO)
                frac = (rank - seen) / c
                if self._log and lower > 0:
                    return float(lower * (upper / lower) ** frac)
                return lower + (upper - lower) * frac
            seen += c
        return bounds[-1]

    def mean(self) -> float | None:
        return self.sum / self.n if self.n else None

    def cumulative(self, upto: Sequence[int]) -> list[int]:
        """Cumulative counts at the bucket indexes ``upto`` (for Prometheus ``le``)."""
        out = []
        total = 0
        j = 0
        for idx in upto:
            while j <= idx:
                total += self.counts[j]
                j += 1
            out.append(total)
        return out

    def to_data(self) -> HistData:
        return HistData(self.sum, self.n, {i: c for i, c in enumerate(self.counts) if c})

    def add_data(self, data: HistData) -> None:
        """Add a stored histogram with the same bounds (buckets out of range ignored)."""
        counts = self.counts
        for i, c in data.buckets.items():
            if 0 <= i < len(counts):
                counts[i] += c
        self.sum += data.sum
        self.n += data.n

    @classmethod
    def from_data(cls, data: HistData, bounds: Sequence[float], *, log: bool) -> Histogram:
        h = cls(bounds, log=log)
        h.add_data(data)
        return h
