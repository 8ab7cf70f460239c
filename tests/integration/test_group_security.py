"""Forged and replayed redundancy messages (docs/protocol.md, HA-HA Authentication): a Binding Update that
is not sealed by a member with the group's key, comes from an address no association covers, carries a
stale timestamp, or repeats one already seen changes no member's table, gets no answer, and counts as
``redundancy.security_violations`` on every member it reaches."""

from __future__ import annotations

import socket
import time
from ipaddress import IPv4Address

import pytest

from homeagent.core.replay import ntp_identification
from homeagent.mobile_node import MobileNode
from homeagent.wire.redundancy import AckCode, BindingUpdate, BindingUpdateAck, unseal

try:  # a datagram may carry several messages back to back
    from homeagent.wire.redundancy import parse_messages
except ImportError:  # one message a datagram
    from homeagent.wire.redundancy import parse_body

    def parse_messages(body: bytes) -> list:  # type: ignore[misc]
        return [parse_body(body)]

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


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def forged_update(identification: int, care_of: str = EVIL_COA, lifetime: int = 1800) -> bytes:
    """A Binding Update that would move HOA to ``care_of`` on any member that believed it."""
    return BindingUpdate(0, lifetime, lifetime * 1000, ip(HOA), ip(VIP), ip(care_of), identification).body()


def send_from(source: str, datagram: bytes, targets: list[tuple[str, int]], port: int = 0) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, port))
        for t in targets:
            s.sendto(datagram, t)


def test_forged_and_replayed_binding_updates_change_nothing(group) -> None:
    a, b, c = start_standby_group(group)
    members = (a, b, c)
    node = MobileNode(IPv4Address(HOA), IPv4Address(VIP), MN_SA, group.port)
    assert node.register(IPv4Address(COA), 1800).code == 0
    group.wait_replicated([HOA])
    genuine = a.table()[HOA]
    before_tables = {m.address: core(m.bindings_cli()) for m in members}
    before = {m.address: m.status_cli() for m in members}
    targets = [(m.address, group.port) for m in members]
    newer = genuine["identification"] + (1 << 32)  # one second newer: would win if it were believed

    # 1. Covered by the /24 association, but sealed with a wrong key.
    send_from("127.0.0.99", sealed(forged_update(newer), WRONG_GROUP_SA), targets)
    # 2. Sealed with a wrong key from a member's own address (another port: members look at the address).
    send_from(MEMBER_ADDRESSES[1], sealed(forged_update(newer + 1), WRONG_GROUP_SA), targets)
    # 3. The right key, from an address no association covers.
    send_from("127.0.1.99", sealed(forged_update(newer + 2)), targets)
    # 4. The right key and a covered address, but a timestamp a minute old (replay_tolerance is 7 s).
    stale = ntp_identification(time.time() - 60)
    send_from("127.0.0.6", sealed(forged_update(newer + 3), timestamp=stale), targets)
    # 5. A genuine message from 127.0.0.5 (covered, holds the key, no daemon there) restating what every
    #    member holds, so it changes nothing either, sent twice: the second is a replay. Its remaining
    #    lifetime is taken 2 s short: ``genuine`` was read a while ago, and the same Identification with a
    #    later expiry would be another acceptance of the request, which wins (docs/protocol.md).
    restated = BindingUpdate(
        genuine["flags"], genuine["lifetime"], int(genuine["remaining"] * 1000) - 2000, ip(HOA), ip(VIP),
        ip(genuine["care_of_address"]), genuine["identification"],
    ).body()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as impostor:
        impostor.bind(("127.0.0.5", group.port))
        datagram = sealed(restated)
        for t in targets:
            impostor.sendto(datagram, t)
        wait_until(lambda: all(counter(m.status(), "redundancy.updates_received")
                               > counter(before[m.address], "redundancy.updates_received") for m in members),
                   3, "the genuine update to arrive")
        for t in targets:
            impostor.sendto(datagram, t)

        expected = 5  # per member: wrong key twice, no association, stale, replay
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
            for message in parse_messages(unseal(data, GROUP_SA)[0]):
                if type(message) is BindingUpdateAck:
                    acks.setdefault(source, []).append(message.code)
    # One ack per member, for the genuine copy only ("not newer": it restated what they hold).
    assert acks == dict.fromkeys(MEMBER_ADDRESSES, [AckCode.NOT_NEWER]), acks

    time.sleep(0.3)
    for m in members:
        after = m.status_cli()
        assert (counter(after, "redundancy.security_violations")
                - counter(before[m.address], "redundancy.security_violations")) == expected, m.address
        assert (counter(after, "redundancy.updates_received")
                - counter(before[m.address], "redundancy.updates_received")) == 1, m.address
        assert core(m.bindings_cli()) == before_tables[m.address], m.address
        assert m.table_cli()[HOA]["care_of_address"] == COA
    assert a.role() == "active"
