"""Failover smoke test: the active member is killed with SIGKILL (no goodbye), and a standby takes the
virtual address with every binding already in place, replay protection included."""

from __future__ import annotations

import time

import pytest

from homeagent.core.election import Event

from .conftest import ntp_now, parse_reply, rrq
from .group_support import MEMBER_ADDRESSES, VIP, counter, make_group, wait_until

FAILOVER_DEADLINE = 1.5


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def test_standby_takes_over_with_every_binding(group) -> None:
    a = group.add(MEMBER_ADDRESSES[0], priority=254)
    b = group.add(MEMBER_ADDRESSES[1], priority=200)  # the next in line
    c = group.add(MEMBER_ADDRESSES[2], priority=50)
    group.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    group.start(b, c)
    group.wait_formed(active=a)

    mn = group.vip_node()
    try:
        originals = {}
        for i in range(1, 11):
            hoa = f"10.1.11.{i}"
            request = rrq(hoa, "192.0.2.111", ident=ntp_now(), lifetime=900, home_agent=VIP)
            reply = mn.exchange(request)
            assert reply.code == 0 and reply.authentic()
            originals[hoa] = (request, reply.identification)
        group.wait_replicated(originals, [b, c])
        before = {hoa: row for hoa, row in b.table().items()}

        a.kill()  # SIGKILL by PID: no resignation, the address is simply gone
        t0 = time.monotonic()
        answered = None
        while time.monotonic() - t0 < FAILOVER_DEADLINE:
            data = None
            mn.drain()
            mn.send(rrq("10.1.11.200", "192.0.2.112", ident=ntp_now(), home_agent=VIP))
            data = mn.receive(timeout=0.05)
            if data is not None:
                answered = parse_reply(data)
                break
        took = time.monotonic() - t0
        assert answered is not None, f"nobody answered at {VIP} within {FAILOVER_DEADLINE} s"
        assert answered.code == 0 and answered.authentic(), answered.code

        assert b.role() == "active", "the member of the next highest priority took over"
        wait_until(lambda: c.role() == "standby", 2, "the third member to stand by")
        after = b.table_cli()
        for hoa, (_, ident) in originals.items():
            assert after[hoa]["identification"] == ident == before[hoa]["identification"]
            assert after[hoa]["care_of_address"] == "192.0.2.111"
            assert abs(after[hoa]["remaining"] - (before[hoa]["remaining"] - took)) < 1.5
        assert after["10.1.11.200"]["care_of_address"] == "192.0.2.112"

        # A renewal (newer Identification) is accepted by the new active member...
        renewal = rrq("10.1.11.1", "192.0.2.113", ident=ntp_now(), lifetime=900, home_agent=VIP)
        reply = mn.exchange(renewal)
        assert reply.code == 0 and reply.authentic()
        assert mn.exchange(renewal).code == 0  # an exact duplicate of the current one is answered again
        # ...and a replay of the node's old request is refused: its last Identification survived failover.
        old_request, old_ident = originals["10.1.11.1"]
        reply = mn.exchange(old_request)
        assert reply.code == 133, reply.code
        assert reply.identification & 0xFFFFFFFF == old_ident & 0xFFFFFFFF
        assert b.binding_of("10.1.11.1")[0]["care_of_address"] == "192.0.2.113"
    finally:
        mn.close()

    wait_until(lambda: c.binding_of("10.1.11.1") and c.binding_of("10.1.11.1")[0]["care_of_address"]
               == "192.0.2.113", 3, "the renewal to reach the remaining standby")
    st_b, st_c = b.status_cli(), c.status_cli()
    assert counter(st_b, "redundancy.became_active") == 1
    # a's host lives on and answers b's advertisements with ICMP port unreachable, so b need not wait the
    # whole master-down interval (docs/operations.md, "How fast a standby takes over"). Either way of
    # taking over is right: on a loaded host b's master-down timer may run out before the ICMP error is
    # read, and which came first is scheduling, not behaviour.
    reason = st_b["transitions"][-1]["reason"]
    assert reason in (Event.ACTIVE_GONE.value, Event.MASTER_DOWN.value), reason
    if reason == Event.ACTIVE_GONE.value:
        assert counter(st_b, "redundancy.member_unreachable") >= 1
    # A member taken over from for not being heard, and a standby's view of it, go down by the liveness
    # check, as any member, within the master-down interval (core/election.py: one merely not heard may be
    # behind a lossy link): not necessarily by the time the renewal above reached c.
    wait_until(lambda: b.peer_states()[a.address] == "down" and c.peer_states()[a.address] == "down", 2,
               "the lost member to be marked down by both")
    st_b, st_c = b.status_cli(), c.status_cli()
    assert {p["address"]: p["state"] for p in st_b["peers"]} == {a.address: "down", c.address: "up"}
    assert {p["address"]: p["state"] for p in st_c["peers"]} == {a.address: "down", b.address: "up"}
    assert st_c["role"] == "standby"
    # Only the next in line took over: it announced itself at once, before the third one's timer ran out.
    assert counter(st_c, "redundancy.became_active") == 0
    assert 10 < st_c["bindings"] == st_b["bindings"]


def test_preempting_member_ends_up_holding_the_virtual_address(group) -> None:
    """A better member preempts while the old active still binds the virtual address: its first claim is
    refused (claim_failed), and it must claim again once the old active has stepped down (it used to give
    up, leaving nobody at the virtual address)."""
    a = group.add(MEMBER_ADDRESSES[0], priority=100)
    b = group.add(MEMBER_ADDRESSES[1], priority=200)  # better, and preempt = true (the default)
    group.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    mn = group.vip_node()
    try:
        assert mn.exchange(rrq("10.1.12.1", "192.0.2.121", ident=ntp_now(), home_agent=VIP)).code == 0
        group.start(b)
        wait_until(lambda: b.role() == "active" and a.role() == "standby", 3, "the better member to preempt")
        group.wait_formed(active=b)
        deadline = time.monotonic() + 2.0
        reply = None
        while reply is None and time.monotonic() < deadline:
            mn.drain()
            mn.send(rrq("10.1.12.2", "192.0.2.122", ident=ntp_now(), home_agent=VIP))
            data = mn.receive(timeout=0.1)
            reply = parse_reply(data) if data is not None else None
        assert reply is not None, f"nobody answers at {VIP} after the preemption"
        assert reply.code == 0
        assert counter(b.status(), "accepted") >= 1  # the preempting member answered
        assert "10.1.12.1" in b.table_cli()  # downloaded before it preempted
    finally:
        mn.close()


def test_members_with_different_advertisement_intervals_do_not_flap_and_still_fail_over(group) -> None:
    """Real daemons, the active member advertising every 0.5 s, the standby configured at 0.1 s: the
    standby times the active member by the interval its advertisements carry (RFC 5798 6.4.2), so over
    three seconds nobody changes role or is marked down (timed by its own 0.1 s, the standby took over
    ten times in ten seconds in the simulation); killed, the active member is replaced after its own
    master-down interval."""
    a = group.add(MEMBER_ADDRESSES[0], priority=200, peers=[MEMBER_ADDRESSES[1]], advertisement_interval=0.5)
    b = group.add(MEMBER_ADDRESSES[1], priority=100, peers=[MEMBER_ADDRESSES[0]], advertisement_interval=0.1)
    group.start(a)
    wait_until(lambda: a.role() == "active", 8, "the better member to become active")
    group.start(b)
    group.wait_formed(active=a)
    settled, settled_a = b.status(), a.status()
    time.sleep(3)
    st, st_a = b.status(), a.status()
    assert (st_a["role"], st["role"]) == ("active", "standby")
    roles = [[(t["from"], t["to"], t["reason"]) for t in x["transitions"]] for x in (settled, st)]
    assert roles[0] == roles[1], "no role change"
    for before, after in ((settled, st), (settled_a, st_a)):
        assert counter(after, "redundancy.members_marked_down") == counter(before, "redundancy.members_marked_down")
    assert [p["advertisement_interval"] for p in st["peers"]] == [0.5]  # what an operator reads
    assert [p["advertisement_interval"] for p in st_a["peers"]] == [0.1]
    a.kill()
    killed = time.monotonic()
    wait_until(lambda: b.role() == "active", 5, "the standby to take over")
    taken = time.monotonic() - killed
    # 3 x 0.5 + 156/256 x 0.5 = 1.8 s after the last advertisement (0-0.5 s before the kill), 0.75 s after
    # the host's port unreachable; never the 0.36 s of the standby's own interval.
    assert 0.5 < taken < 2.8, taken
