"""Forged and replayed redundancy messages (docs/protocol.md, HA-HA Authentication; docs/security.md): a
Binding Update that is not sealed by a configured member with the group's key, comes from an address that
is not a configured member (covered by an association or not), carries a stale timestamp, or repeats one
already seen changes no member's table, gets no answer, and counts as ``redundancy.security_violations``
on every member it reaches.

127.0.0.5 is configured as a member on every daemon but runs none: the test plays it, holding the key."""

from __future__ import annotations

import socket
import time
from ipaddress import IPv4Address

import pytest

from homeagent.core.replay import ntp_identification
from homeagent.mobile_node import MobileNode
from homeagent.wire.era import from_wire
from homeagent.wire.redundancy import AckCode, BindingUpdate, BindingUpdateAck, parse_messages, unseal

from .conftest import core
from .group_support import (
    GROUP_SA,
    MEMBER_ADDRESSES,
    MN_SA,
    VIP,
    WRONG_GROUP_SA,
    counter,
    ip,
    make_group,
    sealed,
    start_standby_group,
    wait_until,
)

HOA = "10.1.5.1"
COA = "192.0.2.55"
EVIL_COA = "203.0.113.66"
INSIDER = "127.0.0.5"  # configured everywhere, no daemon: the test plays it with the group key
PEERS = {a: [p for p in (*MEMBER_ADDRESSES, INSIDER) if p != a] for a in MEMBER_ADDRESSES}


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def forged_update(identification: int, care_of: str = EVIL_COA, lifetime: int = 1800) -> bytes:
    """A Binding Update that would move HOA to ``care_of`` on any member that believed it."""
    return BindingUpdate(0, lifetime, lifetime * 1000, ip(HOA), ip(VIP), ip(care_of), identification).body()


def send_from(source: str, make, targets: list[tuple[str, int]], port: int = 0) -> None:
    """``make(target_address)`` sent from ``source`` to each target."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, port))
        for t in targets:
            s.sendto(make(t[0]), t)


def start(group):
    a = group.add(MEMBER_ADDRESSES[0], priority=200, peers=PEERS[MEMBER_ADDRESSES[0]])
    b = group.add(MEMBER_ADDRESSES[1], priority=150, peers=PEERS[MEMBER_ADDRESSES[1]])
    c = group.add(MEMBER_ADDRESSES[2], priority=100, peers=PEERS[MEMBER_ADDRESSES[2]])
    group.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    group.start(b, c)
    wait_until(lambda: b.role() == "standby" and c.role() == "standby", 8, "the standbys")
    return a, b, c


def test_forged_and_replayed_binding_updates_change_nothing(group) -> None:
    a, b, c = members = start(group)
    node = MobileNode(IPv4Address(HOA), IPv4Address(VIP), MN_SA, group.port)
    assert node.register(IPv4Address(COA), 1800).code == 0
    group.wait_replicated([HOA])
    genuine = a.table()[HOA]
    before_tables = {m.address: core(m.bindings_cli()) for m in members}
    before = {m.address: m.status_cli() for m in members}
    targets = [(m.address, group.port) for m in members]
    newer = genuine["identification"] + (1 << 32)  # one second newer: would win if it were believed

    # 1. Not a member, and a wrong key.
    send_from("127.0.0.99", lambda t: sealed(forged_update(newer), "127.0.0.99", t, WRONG_GROUP_SA), targets)
    # 2. Sealed with a wrong key from a member's own address (another port: members look at the address).
    send_from(MEMBER_ADDRESSES[1], lambda t: sealed(forged_update(newer + 1), MEMBER_ADDRESSES[1], t,
                                                    WRONG_GROUP_SA), targets)
    # 3. The right key, from an address no association covers.
    send_from("127.0.1.99", lambda t: sealed(forged_update(newer + 2), "127.0.1.99", t), targets)
    # 4. The right key, from an address an association covers but that is not a configured member: trust
    #    is configured, never learnt (the phantom member of issue 9).
    send_from("127.0.0.6", lambda t: sealed(forged_update(newer + 3), "127.0.0.6", t), targets)
    # 5. The insider's address and key, but a timestamp a minute old (replay_tolerance is 7 s).
    stale = ntp_identification(time.time() - 60)
    send_from(INSIDER, lambda t: sealed(forged_update(newer + 4), INSIDER, t, timestamp=stale), targets)
    # 6. A genuine message from the insider restating what every member holds, so it changes nothing
    #    either, sent twice: the second is a replay. Its remaining lifetime is taken 2 s short: ``genuine``
    #    was read a while ago, and the same Identification with a later expiry would be another acceptance
    #    of the request, which wins (docs/protocol.md).
    restated = BindingUpdate(
        genuine["flags"], genuine["lifetime"], int(genuine["remaining"] * 1000) - 2000, ip(HOA), ip(VIP),
        ip(genuine["care_of_address"]), from_wire(genuine["identification"]),  # listed as on the wire
    ).body()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as impostor:
        impostor.bind((INSIDER, group.port))
        datagrams = {t: sealed(restated, INSIDER, t[0]) for t in targets}
        for t, datagram in datagrams.items():
            impostor.sendto(datagram, t)
        wait_until(lambda: all(counter(m.status(), "redundancy.updates_received")
                               > counter(before[m.address], "redundancy.updates_received") for m in members),
                   3, "the genuine update to arrive")
        for t, datagram in datagrams.items():
            impostor.sendto(datagram, t)

        expected = 6  # per member: wrong key twice, no association, not a member, stale, replay
        wait_until(
            lambda: all(counter(m.status(), "redundancy.security_violations")
                        - counter(before[m.address], "redundancy.security_violations") >= expected for m in members),
            3, "every forgery to be counted",
        )
        acks: dict[str, list[int]] = {}
        impostor.settimeout(0.5)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                data, (source, _) = impostor.recvfrom(4096)
            except (TimeoutError, socket.timeout):
                break
            for message in parse_messages(unseal(data, GROUP_SA, ip(source), ip(INSIDER))[0]):
                if type(message) is BindingUpdateAck:
                    acks.setdefault(source, []).append(message.code)
    # One ack per member, for the genuine copy only ("not newer": it restated what they hold).
    assert acks == dict.fromkeys(MEMBER_ADDRESSES, [AckCode.NOT_NEWER]), acks

    time.sleep(0.3)
    for m in members:
        after = m.status_cli()
        assert (counter(after, "redundancy.security_violations")
                - counter(before[m.address], "redundancy.security_violations")) == expected, m.address
        assert after["security_violations"] >= expected  # the total an operator reads (MN-HA and HA-HA)
        assert (counter(after, "redundancy.updates_received")
                - counter(before[m.address], "redundancy.updates_received")) == 1, m.address
        assert core(m.bindings_cli()) == before_tables[m.address], m.address
        assert m.table_cli()[HOA]["care_of_address"] == COA
        assert "127.0.0.6" not in {p["address"] for p in after["peers"]}
    assert a.role() == "active"

