"""Deadlines run on the monotonic clock: a step of the wall clock by an hour, either way, neither expires
a binding nor lets one outlive its lifetime (DESIGN.md principle 7). The core is driven with a monotonic
``now`` and its wall clock is stepped through the offset the runtime keeps; the test for a real daemon
under a stepped clock is in tests/security/test_daemon_clock.py."""

from __future__ import annotations

import pytest

from homeagent.wire.registration import ReplyCode
from tests.unit.support import HOA, T0, make_ha, ntp, only_reply, request

MONOTONIC0 = 5000.0  # an arbitrary monotonic origin, unrelated to the wall clock
HOUR = 3600.0


def lone_home_agent():
    ha = make_ha(now=MONOTONIC0)
    ha.clock.offset = T0 - MONOTONIC0  # wall time T0 at monotonic MONOTONIC0
    return ha


@pytest.mark.parametrize("step", [HOUR, -HOUR])
def test_a_wall_clock_step_neither_expires_nor_extends_a_binding(step):
    ha = lone_home_agent()
    reply = only_reply(ha.receive_datagram(request(lifetime=60, now=T0), ("198.51.100.7", 434), "192.0.2.1",
                                           MONOTONIC0))
    assert reply.code == ReplyCode.ACCEPTED
    ha.clock.offset += step  # the wall clock jumps
    ha.handle_timer(MONOTONIC0 + 30)
    [binding] = ha.bindings
    assert binding.remaining(MONOTONIC0 + 30) == pytest.approx(30)
    assert ha.binding_list(MONOTONIC0 + 30)[0]["remaining"] == pytest.approx(30)
    ha.handle_timer(MONOTONIC0 + 59.5)
    assert len(ha.bindings) == 1, "expired before its lifetime"
    ha.handle_timer(MONOTONIC0 + 61.5)  # the wheel's one-second buckets: removed within a second
    assert len(ha.bindings) == 0, "outlived its lifetime"


@pytest.mark.parametrize("step", [HOUR, -HOUR])
def test_after_a_step_identifications_follow_the_wall_clock(step):
    """Replay protection is about the wall clock (RFC 5944 5.7): after the step, a request stamped with
    the old time is out of tolerance (133, with the new time to resynchronise), one stamped with the new
    time is accepted."""
    ha = lone_home_agent()
    ha.clock.offset += step
    now = MONOTONIC0 + 1
    stale = only_reply(ha.receive_datagram(request(now=T0 + 1), ("198.51.100.7", 434), "192.0.2.1", now))
    assert stale.code == ReplyCode.IDENTIFICATION_MISMATCH
    assert stale.identification >> 32 == ntp(T0 + 1 + step) >> 32
    fresh = only_reply(ha.receive_datagram(request(now=T0 + 1 + step), ("198.51.100.7", 434), "192.0.2.1", now))
    assert fresh.code == ReplyCode.ACCEPTED
    assert ha.bindings.lookup(HOA)[1][0].expires == pytest.approx(now + 600)
