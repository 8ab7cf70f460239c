"""Peer mode (``mode = "peer"``): every member accepts registrations at its own address and replicates
them to the others; every member's role is "peer"."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from homeagent.mobile_node import MobileNode
from homeagent.wire.era import to_wire

from .group_support import MEMBER_ADDRESSES, MN_SA, VIP, counter, make_group, wait_until


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def test_every_peer_serves_and_replicates(group) -> None:
    members = [group.add(address, priority=100 + i, mode="peer") for i, address in enumerate(MEMBER_ADDRESSES)]
    group.start(*members)  # all at once: each downloads whatever the others hold
    group.wait_formed()

    idents = {}
    for i, m in enumerate(members):
        hoa = f"10.1.10.{i + 1}"
        node = MobileNode(IPv4Address(hoa), IPv4Address(m.address), MN_SA, group.port)
        out = node.register(IPv4Address(f"192.0.2.{100 + i}"), 600)
        assert out.code == 0, (m.address, out.as_dict())
        assert str(IPv4Address(out.reply.home_agent)) == m.address
        idents[hoa] = (to_wire(out.reply.identification), f"192.0.2.{100 + i}", m.address)  # as listed
    group.wait_replicated(idents)

    for m in members:
        table = m.table_cli()
        for hoa, (ident, coa, home_agent) in idents.items():
            row = table[hoa]
            assert (row["identification"], row["care_of_address"], row["home_agent"]) == (ident, coa, home_agent)
        st = m.status_cli()
        assert st["role"] == "peer" and st["mode"] == "peer", (m.address, st["role"])
        assert {p["address"]: p["state"] for p in st["peers"]} == dict.fromkeys(
            set(MEMBER_ADDRESSES) - {m.address}, "up")
        assert counter(st, "accepted") == 1, m.address  # its own registration only
        assert counter(st, "redundancy.updates_sent") == 2
        assert counter(st, "redundancy.updates_received") == 2
    wait_until(lambda: all(counter(m.status(), "redundancy.updates_acked") == 2 for m in members), 3,
               "every update acked")


def test_a_node_that_moves_between_peers_ends_with_its_newest_binding(group) -> None:
    members = [group.add(address, priority=100 + i, mode="peer") for i, address in enumerate(MEMBER_ADDRESSES)]
    group.start(*members)
    group.wait_formed()
    hoa = IPv4Address("10.1.10.50")
    first = MobileNode(hoa, IPv4Address(members[0].address), MN_SA, group.port)
    assert first.register(IPv4Address("192.0.2.150"), 600).code == 0
    # The same node (same Identification clock) now registers with another peer, from another care-of address.
    second = MobileNode(hoa, IPv4Address(members[2].address), MN_SA, group.port, first.identifications)
    out = second.register(IPv4Address("192.0.2.151"), 600)
    assert out.code == 0 and not out.resynchronised
    # And the virtual address, held by whichever peer the election picked, serves too.
    third = MobileNode(IPv4Address("10.1.10.51"), IPv4Address(VIP), MN_SA, group.port)
    assert third.register(IPv4Address("192.0.2.152"), 600, timeout=0.5, retries=4).code == 0

    def converged() -> bool:
        rows = [m.binding_of(str(hoa)) for m in members]
        return all([(r["care_of_address"], r["identification"]) for r in rs]
                   == [("192.0.2.151", to_wire(out.reply.identification))] for rs in rows)

    wait_until(converged, 3, "every peer to hold the node's newest binding only")
    group.wait_replicated(["10.1.10.51"])
    for m in members:
        rows = [r for r in m.bindings_cli() if r["home_address"] == str(hoa)]
        assert [(r["care_of_address"], r["home_agent"]) for r in rows] == [("192.0.2.151", members[2].address)]
