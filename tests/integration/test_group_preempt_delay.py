"""``[redundancy] preempt_delay`` with real daemons: a better member restarted takes the active role back
only once it has stood by for the delay, and the worse member serves meanwhile."""

from __future__ import annotations

import time

import pytest

from .group_support import MEMBER_ADDRESSES, counter, make_group, wait_until

DELAY = 2.0


@pytest.fixture
def g(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def test_restarted_better_member_preempts_only_after_the_delay(g):
    a = g.add(MEMBER_ADDRESSES[0], priority=200, peers=[MEMBER_ADDRESSES[1]],
              redundancy_extra=f"preempt_delay = {DELAY}\n")
    b = g.add(MEMBER_ADDRESSES[1], priority=100, peers=[MEMBER_ADDRESSES[0]])
    g.start(a)
    wait_until(lambda: a.role() == "active", 5, "the better member to become active")
    g.start(b)
    g.wait_formed(active=a)

    assert a.stop() == 0  # an upgrade: the better member goes away, the other takes over
    wait_until(lambda: b.role() == "active", 5, "the other member to take over")
    a.start()  # back: it downloads, stands by, and must wait DELAY before preempting
    standby_seen = wait_until(lambda: a.role() == "standby" and time.monotonic(), 5, "the restarted member to stand by")
    while time.monotonic() < standby_seen + DELAY - 0.5:  # well inside the delay, the role stays put
        assert (a.role(), b.role()) == ("standby", "active")
        time.sleep(0.05)
    wait_until(lambda: a.role() == "active" and b.role() == "standby", DELAY + 3, "the delayed preemption")

    st = a.status()
    ready, preempted = st["transitions"][-2:]
    assert (ready["from"], ready["to"]) == ("init", "standby")
    assert (preempted["to"], preempted["reason"]) == ("active", "preempting an active member of lower priority")
    # Preempted no sooner than the delay after it stood by, and at the first advertisement after it.
    assert DELAY <= preempted["at"] - ready["at"] < DELAY + 0.5, st["transitions"]
    assert counter(b.status(), "redundancy.became_active") == 1  # the role moved once each way, no flapping
