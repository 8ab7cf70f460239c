"""Members started together settle on one active member without flapping (issue 10: a start-up settle,
listening before claiming as VRRP's skew time does). Real daemons on loopback, started at the same
instant; every role change each made is read from its counters."""

from __future__ import annotations

import time

import pytest

from .group_support import MEMBER_ADDRESSES, counter, make_group


@pytest.fixture
def g(tmp_path_factory):
    yield from make_group(tmp_path_factory)


@pytest.mark.parametrize("priorities", [(100, 200, 150), (100, 100, 100)], ids=["ranked", "equal"])
def test_members_started_together_elect_one_active_once(g, priorities):
    members = [g.add(a, priority=p) for a, p in zip(MEMBER_ADDRESSES, priorities)]
    g.start(*members)  # all launched before any is waited for
    expected = max(members, key=lambda m: (m.priority, m.address)) if len(set(priorities)) > 1 else None
    g.wait_formed(active=expected)
    time.sleep(1.0)  # a flap would show within a few advertisement intervals
    statuses = {m.address: m.status() for m in members}
    actives = [a for a, st in statuses.items() if st["role"] == "active"]
    assert len(actives) == 1, statuses
    became = {a: (counter(st, "redundancy.became_active"), counter(st, "redundancy.became_standby"))
              for a, st in statuses.items()}
    assert sum(active for active, _ in became.values()) == 1, became  # nobody was active but the one
    # init -> standby once each, and the active one standby -> active: no member went back and forth.
    assert all(standby == 1 for _, standby in became.values()), became
