"""Timestamp replay protection (RFC 5944 5.7): ``is_fresh``, computed the fast way, is the definition,
``abs(skew) <= tolerance``, but within a microsecond of the window's edges; across the era's wrap too; and
nothing at or below ``last`` is fresh."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from homeagent.core.clock import WallClock
from homeagent.core.replay import TimestampReplayProtection, ntp_identification, skew
from homeagent.wire.era import from_wire, to_wire

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
    # Our clock just past the wrap, the node's just before it: 2 s apart. On the wire its NTP seconds are
    # 2**32 - 1 and ours 0; inside, both are counted from 2000 and simply ordered.
    replay = TimestampReplayProtection(7, WallClock(WRAP - 1.0))
    before_wrap = ntp_identification(WRAP - 1.0)
    assert to_wire(before_wrap) >> 32 == 0xFFFFFFFF and to_wire(ntp_identification(WRAP + 1.0)) >> 32 == 1
    assert replay.is_fresh(before_wrap, None, 2.0)
    assert not replay.is_fresh(before_wrap, None, 9.0)


def test_the_first_request_after_the_wrap_is_newer_than_the_last_before_it():
    """What a comparison of NTP timestamps got wrong: a node that registered before 2036-02-07 06:28:16 UTC
    and renews after it is not refused 133 (its Identification would have been the smaller)."""
    replay = TimestampReplayProtection(7, WallClock(WRAP))
    before, after = ntp_identification(WRAP - 1.0), ntp_identification(WRAP + 1.0)
    assert after > before and to_wire(after) < to_wire(before)
    assert replay.is_fresh(after, before, 1.0)
    assert not replay.is_fresh(before, after, 1.0)
    assert from_wire(to_wire(after)) == after and from_wire(to_wire(before)) == before


def test_not_newer_than_last_is_stale_even_within_the_window():
    replay = TimestampReplayProtection(7, WallClock(OFFSET))
    ours = ntp_identification(10.0 + OFFSET)
    assert replay.is_fresh(ours, ours - 1, 10.0)
    assert not replay.is_fresh(ours, ours, 10.0)
    assert not replay.is_fresh(ours - 1, ours, 10.0)
