"""A histogram of durations in fixed buckets, kept by the core and read by the metrics endpoint.

The replication lag (``Replication.lag``: from a Binding Update's first send to its member's ack) is
observed once per ack; counting it must cost little, so a sample is one bisection and two additions, and
the buckets are fixed here rather than configured. Prometheus's own histogram is cumulative; this one
keeps a count per bucket and ``cumulative`` adds them up when a scrape asks.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds: a member on the same link acks within a millisecond or two; a resend is due after 0.25 s and
# doubles (core/replication.py), so the upper buckets tell how many updates needed one, two or more.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self, bounds: tuple[float, ...] = LAG_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """One sample. A bucket's bound is inclusive (``le``), as Prometheus reads it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def reset(self) -> None:
        """Every sample forgotten (``homeagent status --reset-counters``: the lag counts with the counters)."""
        self.counts = [0] * len(self.counts)
        self.sum = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, samples at or below it) for every bucket, ending with (inf, all samples)."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            total += n
            out.append((bound, total))
        return out
