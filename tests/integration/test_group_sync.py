"""Synchronous replication (``replication = "sync"``): the reply to the mobile node waits for the other
members' acks, at most ``sync_timeout``; a member that does not ack in time is marked down and catches up
when it is back.

Two members: 127.0.0.2 (priority 200, active) and 127.0.0.3 (100, standby). ``sync_timeout`` is 0.2 s,
shorter than the master-down interval (about 0.4 s at an advertisement interval of 0.1 s), so a silent
standby is noticed by the sync timer, not by the missing advertisements.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address

import pytest

from homeagent.mobile_node import MobileNode
from homeagent.wire.era import to_wire

from .conftest import ntp_now, parse_reply, rrq
from .group_support import MEMBER_ADDRESSES, MN_SA, VIP, counter, make_group, require, wait_until

SYNC_TIMEOUT = 0.2


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def start_pair(g):
    a = g.add(MEMBER_ADDRESSES[0], priority=200, peers=[MEMBER_ADDRESSES[1]], replication="sync",
              sync_timeout=SYNC_TIMEOUT)
    b = g.add(MEMBER_ADDRESSES[1], priority=100, peers=[MEMBER_ADDRESSES[0]], replication="sync",
              sync_timeout=SYNC_TIMEOUT)
    g.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    g.start(b)
    g.wait_formed(active=a)
    return a, b


def register(g, hoa: str, coa: str = "192.0.2.66") -> tuple[int, float, int]:
    """Register at the virtual address; (code, seconds until the reply, identification as on the wire and
    in ``homeagent bindings``)."""
    node = MobileNode(IPv4Address(hoa), IPv4Address(VIP), MN_SA, g.port)
    t0 = time.monotonic()
    out = node.register(IPv4Address(coa), 600, timeout=2.0, retries=0)
    return out.code, time.monotonic() - t0, to_wire(out.reply.identification)


def test_sync_reply_means_the_standby_holds_the_binding(group) -> None:
    a, b = start_pair(group)
    assert a.status_cli()["replication"] == "sync"
    for i in range(1, 21):
        hoa = f"10.1.6.{i}"
        code, _, ident = register(group, hoa)
        assert code == 0
        rows = b.binding_of(hoa)  # right after the reply, before anything else happens
        assert [(r["care_of_address"], r["identification"]) for r in rows] == [("192.0.2.66", ident)], (hoa, rows)
    st = a.status_cli()
    assert counter(st, "redundancy.updates_acked") >= 20
    assert counter(st, "redundancy.sync_timeouts") == 0
    assert counter(b.status_cli(), "redundancy.updates_received") >= 20


def test_sync_reply_goes_out_when_the_standby_is_frozen(group) -> None:
    a, b = start_pair(group)
    assert register(group, "10.1.7.1")[0] == 0
    before_a = a.status()
    b.pause()  # SIGSTOP: it neither acks nor advertises
    try:
        code, took, ident = register(group, "10.1.7.2")
        st = a.status()
        assert code == 0
        assert SYNC_TIMEOUT - 0.05 <= took < SYNC_TIMEOUT + 0.5, took
        assert counter(st, "redundancy.sync_timeouts") == 1
        assert counter(st, "redundancy.members_marked_down") == 1
        assert {p["address"]: p["state"] for p in st["peers"]} == {b.address: "down"}
        # Marked down: the next reply does not wait for it. (Whether that registration ever reaches it is
        # test_standby_catches_up_after_a_short_stall's subject.)
        code, took, _ = register(group, "10.1.7.3")
        assert code == 0 and took < SYNC_TIMEOUT, took
        time.sleep(0.5)  # stopped for longer than its master-down interval, bounded
    finally:
        b.resume()
    wait_until(lambda: a.peer_states() == {b.address: "up"}, 3, "the standby to be up again")
    # The update that timed out was waiting in its socket: it holds the registration made while stopped.
    wait_until(lambda: "10.1.7.2" in b.table(), 3, "the standby to hold the registration made while stopped")
    assert b.table_cli()["10.1.7.2"]["identification"] == ident
    # The active member asked the returning member for its table.
    after_a = a.status_cli()
    assert counter(after_a, "redundancy.table_requests_sent") > counter(before_a, "redundancy.table_requests_sent")
    wait_until(lambda: b.role() == "standby" and a.role() == "active", 3, "the roles to settle")
    # And it is replicated to again, synchronously.
    code, took, ident = register(group, "10.1.7.4")
    assert code == 0 and took < SYNC_TIMEOUT
    assert [r["identification"] for r in b.binding_of("10.1.7.4")] == [ident]


def test_standby_catches_up_after_a_short_stall(group) -> None:
    """The standby stalls for 0.1 s: longer than sync_timeout (0.05 s), so the active member marks it down,
    shorter than its own master-down interval for the active member (0.39 s), so it never marks the active
    member down. The registration accepted while it was marked down never reaches it."""
    g = group
    a = g.add(MEMBER_ADDRESSES[0], priority=20, peers=[MEMBER_ADDRESSES[1]], replication="sync",
              sync_timeout=0.05)
    b = g.add(MEMBER_ADDRESSES[1], priority=10, peers=[MEMBER_ADDRESSES[0]], replication="sync",
              sync_timeout=0.05)
    g.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    g.start(b)
    g.wait_formed(active=a)
    b.pause()
    try:
        require(register(g, "10.1.8.1")[0] == 0, "accepted")  # waits 0.05 s, then B is marked down
        code, took, ident = register(g, "10.1.8.2")  # nothing is sent to B
        require(code == 0 and took < 0.05, f"accepted at once (code {code}, {took:.3f} s)")
    finally:
        b.resume()
    require(counter(a.status(), "redundancy.members_marked_down") == 1, "the active member marked B down")
    wait_until(lambda: a.peer_states() == {b.address: "up"}, 3, "the standby to be up again")
    if counter(b.status(), "redundancy.members_marked_down"):
        pytest.skip("the standby stalled long enough to mark the active member down too")
    deadline = time.monotonic() + 3
    while "10.1.8.2" not in b.table() and time.monotonic() < deadline:
        time.sleep(0.05)
    table = b.table_cli()
    assert "10.1.8.2" in table, "the standby never got the registration accepted while it was marked down"
    assert table["10.1.8.2"]["identification"] == ident


def test_two_registrations_of_one_node_in_flight(group) -> None:
    """A node that moves twice before its first reply: the ack for the first update must release the first
    reply (it used to be ignored when a newer update was pending, delaying the reply by sync_timeout and
    marking a healthy member down)."""
    a, b = start_pair(group)
    mn = group.vip_node()
    try:
        first = rrq("10.1.9.1", "192.0.2.91", ident=ntp_now(), home_agent=VIP)
        second = rrq("10.1.9.1", "192.0.2.92", ident=ntp_now(), home_agent=VIP)
        mn.drain()
        a.pause()  # so that the active member reads both requests in one go, as under load
        try:
            mn.send(first)
            mn.send(second)  # a node that moves again before its first reply came
            time.sleep(0.05)
        finally:
            a.resume()
        t0 = time.monotonic()
        replies = {}
        for _ in range(2):
            data = mn.receive(timeout=2.0)
            assert data is not None
            reply = parse_reply(data)
            replies[reply.identification] = (reply.code, time.monotonic() - t0)
    finally:
        mn.close()
    assert [code for code, _ in replies.values()] == [0, 0]
    st = a.status_cli()
    assert counter(st, "redundancy.sync_timeouts") == 0
    assert counter(st, "redundancy.members_marked_down") == 0
    assert max(took for _, took in replies.values()) < SYNC_TIMEOUT, replies
