"""Bindings expire in the real daemon: on time, one at a time, silently, and counted."""

from __future__ import annotations

import time


from .conftest import S, ntp_now, rrq


def test_bindings_expire_on_time_and_are_counted(daemons):
    ha = daemons.start("expiry", max_lifetime=2)
    mn = ha.mn()
    t_sent = time.time()
    a = rrq("10.1.0.1", "192.0.2.1", lifetime=600)  # granted max_lifetime = 2
    reply = mn.exchange(a)
    assert (reply.code, reply.lifetime) == (0, 2)
    assert mn.exchange(rrq("10.1.0.2", "192.0.2.2", lifetime=1, flags=S)).lifetime == 1
    assert mn.exchange(rrq("10.1.0.2", "192.0.2.3", lifetime=2, flags=S)).lifetime == 2
    t_registered = time.time()
    assert ha.counters().get("expired", 0) == 0

    lifetimes = {("10.1.0.1", "192.0.2.1"): 2, ("10.1.0.2", "192.0.2.2"): 1, ("10.1.0.2", "192.0.2.3"): 2}
    gone_at: dict[tuple[str, str], float] = {}
    seen_partial = False
    deadline = t_registered + 3.5
    while time.time() < deadline:
        now = time.time()
        rows = ha.bindings_direct()
        held = {(r["home_address"], r["care_of_address"]) for r in rows}
        for key in lifetimes:
            if key not in held and key not in gone_at:
                gone_at[key] = now
        # RFC 5944 4.2.3: an expired simultaneous binding goes alone; the node's other binding stays
        if ("10.1.0.2", "192.0.2.3") in held and ("10.1.0.2", "192.0.2.2") not in held:
            seen_partial = True
        if not held:
            break
        time.sleep(0.05)
    assert ha.bindings_cli() == [], f"bindings left {time.time() - t_registered:.1f} s after registering"
    assert seen_partial, "the 1 s binding did not expire before its 2 s sibling"
    for key, lifetime in lifetimes.items():
        assert gone_at[key] - t_sent >= lifetime - 0.05, f"{key} expired before its lifetime of {lifetime} s"
    st = ha.status()
    assert st["bindings"] == 0
    assert st["counters"]["expired"] == 3

    # RFC 5944 3.8: no Registration Reply is sent because a lifetime expired
    assert mn.drain() == []
    # the last accepted Identification outlives the binding: the old request is a replay
    assert mn.exchange(a).code == 133
    # and the node can register again
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1", ntp_now(), lifetime=2)).code == 0
    mn.close()


def test_retransmission_in_the_last_second_is_not_answered_as_deregistered(daemons):
    ha = daemons.start("lastsecond")
    mn = ha.mn()
    request = rrq("10.1.0.1", "192.0.2.1", lifetime=2)
    assert mn.exchange(request).lifetime == 2
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # wait until less than a second is left
        rows = ha.bindings_direct()
        assert rows, "expired before the test could retransmit"
        if rows[0]["remaining"] < 0.8:
            break
        time.sleep(0.05)
    reply = mn.exchange(request)  # a retransmission: same home address, care-of address, Identification
    held = ha.bindings_direct()
    mn.close()
    assert reply.code == 0 and held, "the retransmission was not treated as a duplicate"
    assert reply.lifetime >= 1, "accepted with lifetime 0 means deregistered, yet the binding is held"
