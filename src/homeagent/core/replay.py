"""Timestamp replay protection (RFC 5944 section 5.7).

The Identification is a 64-bit NTP timestamp on the wire: seconds in the high 32 bits, a fraction in the
low 32. Inside, it is counted from 2000 rather than 1900 (``wire/era.py``), so that the NTP era's wrap in
2036 orders nothing backwards. A request is fresh when its timestamp is within ``tolerance`` seconds of
the Home Agent's clock and its Identification is larger than the last one accepted from the mobile node.
On a mismatch the reply carries the Home Agent's time in the high 32 bits and the request's low 32 bits,
so the mobile node can resynchronise.
"""

from __future__ import annotations

from homeagent.core.clock import WallClock
from homeagent.wire.era import UNIX_ERA

LOW32 = 0xFFFFFFFF
_LOW64 = (1 << 64) - 1
_UNIX_ERA, _NTP_UNIT = float(UNIX_ERA), float(1 << 32)


def era_seconds(now: float) -> int:
    """Whole seconds from 2000 to ``now`` (Unix seconds): the high 32 bits of its Identification."""
    return (int(now) - UNIX_ERA) & LOW32


def ntp_identification(now: float) -> int:
    """The Identification of the NTP timestamp for ``now`` (Unix seconds), counted from 2000
    (``wire/era.py``: ``to_wire`` gives the timestamp itself)."""
    fraction = int((now % 1.0) * (1 << 32)) & LOW32
    return (era_seconds(now) << 32) | fraction


def skew(timestamp: int, now: float) -> float:
    """Seconds from our clock at ``now`` to the Identification ``timestamp``, fraction included (modulo
    2**64: a timestamp far off, an attacker's, is still only that far off)."""
    diff = (timestamp - ntp_identification(now)) & ((1 << 64) - 1)
    if diff >= 1 << 63:
        diff -= 1 << 64
    return diff / (1 << 32)


class TimestampReplayProtection:
    """Freshness against the wall clock (``clock`` turns the core's monotonic ``now`` into wall time)."""

    def __init__(self, tolerance: int, clock: WallClock | None = None) -> None:
        self.tolerance = tolerance
        self.clock = clock or WallClock()

    def is_fresh(self, identification: int, last: int | None, now: float) -> bool:
        """Newer than ``last`` and within ``tolerance`` seconds of our wall clock: ``abs(skew(...)) <=
        tolerance``, in the fewest operations: this runs for every registration. Our time in NTP units is
        one float product (exact to a microsecond; ``ntp_identification``, exact, takes twice as long), and
        the signed distance d to it, modulo the era, is within [-w, w] exactly when d + w, taken modulo
        2**64, is at most 2w."""
        if last is not None and identification <= last:
            return False
        window = self.tolerance << 32
        ours = int((now + self.clock.offset - _UNIX_ERA) * _NTP_UNIT)  # self.clock(now), uncalled
        return (identification - ours + window) & _LOW64 <= 2 * window

    def mismatch_identification(self, identification: int, now: float) -> int:
        return (era_seconds(self.clock(now)) << 32) | (identification & LOW32)
