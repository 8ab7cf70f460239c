"""Timestamp replay protection (RFC 5944 5.7): ``is_fresh``, computed the fast way, is the definition,
``abs(skew) <= tolerance``, but within a microsecond of the window's edges; across the era's wrap too; and
nothing at or below ``last`` is fresh."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from homeagent.core.clock import WallClock
from homeagent.core.replay import TimestampReplayProtection, ntp_identification, skew

OFFSET = 1_700_000_000.0  # wall minus monotonic
WRAP = 2_085_978_496.0  # Unix time of the NTP era's end (2036-02-07 06:28:16 UTC)


def fresh_by_definition(identification: int, now: float, tolerance: int) -> bool:
    return abs(skew(identification, now + OFFSET)) <= tolerance


@settings(max_examples=500, deadline=None)
@given(
    st.integers(0, 3600),
    st.floats(0, 1e6),
    st.one_of(st.integers(-(3700 << 32), 3700 << 32), st.integers(-(1 << 64), 1 << 64)),
)
def test_is_fresh_is_abs_skew_within_tolerance(tolerance, now, distance):
    replay = TimestampReplayProtection(tolerance, WallClock(OFFSET))
    identification = (ntp_identification(now + OFFSET) + distance) & ((1 << 64) - 1)
    if abs(abs(skew(identification, now + OFFSET)) - tolerance) < 1e-6:
        return  # at the edge, within the fast computation's rounding
    assert replay.is_fresh(identification, None, now) == fresh_by_definition(identification, now, tolerance)


def test_window_edges_within_a_microsecond():
    replay = TimestampReplayProtection(7, WallClock(OFFSET))
    ours, micro = ntp_identification(10.0 + OFFSET), (1 << 32) // 1_000_000
    assert replay.is_fresh(ours + (7 << 32) - micro, None, 10.0)
    assert replay.is_fresh(ours - (7 << 32) + micro, None, 10.0)
    assert not replay.is_fresh(ours + (7 << 32) + micro, None, 10.0)
    assert not replay.is_fresh(ours - (7 << 32) - micro, None, 10.0)


def test_fresh_across_the_era_wrap():
    # Our clock just past the wrap (NTP seconds near 0), the node's just before it (near 2**32): 2 s apart.
    replay = TimestampReplayProtection(7, WallClock(WRAP - 1.0))
    before_wrap = ntp_identification(WRAP - 1.0)
    assert before_wrap >> 32 == 0xFFFFFFFF
    assert replay.is_fresh(before_wrap, None, 2.0)
    assert not replay.is_fresh(before_wrap, None, 9.0)


def test_not_newer_than_last_is_stale_even_within_the_window():
    replay = TimestampReplayProtection(7, WallClock(OFFSET))
    ours = ntp_identification(10.0 + OFFSET)
    assert replay.is_fresh(ours, ours - 1, 10.0)
    assert not replay.is_fresh(ours, ours, 10.0)
    assert not replay.is_fresh(ours - 1, ours, 10.0)
