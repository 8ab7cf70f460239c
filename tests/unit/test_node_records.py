"""A node's state on the wire (docs/protocol.md, Mobile Node Bindings: binding, tombstone and cleared records)
and in the Binding Updates of a group: the short form whenever the fixed part says the whole state, the
extension otherwise, and the merge at the receiver.
"""

from __future__ import annotations

import struct

import pytest

from homeagent.core.transfer import state_of
from homeagent.wire.errors import ParseError
from homeagent.wire.redundancy import (
    BindingRecord,
    BindingTableReply,
    BindingUpdate,
    MobileNodeBindings,
    TombstoneRecord,
    aged_node,
    cleared_of,
    encode_node,
    encode_node_fields,
    parse_body,
)

from .support import COA, COA2, COA3, HOA, T0, ntp, wire_ntp
from .test_group import group, opened, registration

HA_ADDRESS = 0xC0000264


def node_bytes(*records: tuple[int, int, int, int, int, int], hoa: int = HOA, last: int = 9) -> bytes:
    """A Mobile Node Bindings extension packed by hand: Type 101, Length, home address, last, records; each
    Identification (``last`` and a record's third field, counted from 2000) sent as its NTP timestamp."""
    body = struct.pack("!IQ", hoa, wire_ntp(last)) + b"".join(
        struct.pack("!IIQHBxI", coa, ha, wire_ntp(ident), lifetime, flags, ms)
        for coa, ha, ident, lifetime, flags, ms in records)
    return bytes((101, len(body))) + body


def reply_with(extension: bytes) -> bytes:
    return BindingTableReply.header(0, 1, False, 0, 1) + extension


# -- the encoding ---------------------------------------------------------------------------------------


def test_the_usual_node_is_38_bytes_and_a_node_without_binding_14():
    one = MobileNodeBindings(HOA, 5, (BindingRecord(COA, HA_ADDRESS, 5, 600, 0, 1000),))
    assert len(encode_node(one)) == 38 and cleared_of(one) == 5
    assert encode_node(one) == node_bytes((COA, HA_ADDRESS, 5, 600, 0, 1000), last=5)
    assert len(encode_node(MobileNodeBindings(HOA, 5))) == 14
    # cleared given but equal to its default: the same bytes.
    assert encode_node(one._replace(cleared=5)) == encode_node(one)


def test_tombstones_and_cleared_are_records_of_lifetime_0():
    node = MobileNodeBindings(HOA, 9, (BindingRecord(COA, HA_ADDRESS, 8, 600, 0x80, 1000),),
                              (TombstoneRecord(COA2, 9, 5000),), cleared=3)
    data = encode_node(node)
    assert data == node_bytes(
        (COA, HA_ADDRESS, 8, 600, 0x80, 1000), (COA2, 0, 9, 0, 0, 5000), (HOA, 0, 3, 0, 0, 0)
    )
    [parsed] = parse_body(reply_with(data)).nodes
    assert parsed == node and cleared_of(parsed) == 3
    # Without cleared, the default is the oldest binding's Identification.
    assert cleared_of(node._replace(cleared=None)) == 8


@pytest.mark.parametrize(("record", "why"), [
    ((HOA, HA_ADDRESS, 5, 600, 0, 1000), "a binding whose care-of address is the home address"),
    ((COA, HA_ADDRESS, 5, 0, 0, 1000), "a record with Lifetime 0 carries a Home Agent"),
    ((COA, 0, 5, 0, 0x80, 1000), "a record with Lifetime 0 carries a Home Agent or Flags"),
    ((HOA, 0, 5, 0, 0, 1), "cleared with a Remaining Lifetime"),
])
def test_a_malformed_record_makes_the_message_malformed(record, why):
    with pytest.raises(ParseError):
        parse_body(reply_with(node_bytes(record)))


def test_two_cleared_records_are_malformed():
    with pytest.raises(ParseError):
        parse_body(reply_with(node_bytes((HOA, 0, 5, 0, 0, 0), (HOA, 0, 6, 0, 0, 0))))


def test_more_than_ten_records_do_not_encode():
    with pytest.raises(ValueError):
        encode_node_fields(HOA, 9, [(COA + k, 0, k + 1, 600, 0, 1) for k in range(10)], cleared=0)


def test_aging_keeps_every_binding_and_drops_tombstones_that_ran_out():
    node = MobileNodeBindings(HOA, 9, (BindingRecord(COA, HA_ADDRESS, 8, 600, 0x80, 1000),
                                       BindingRecord(COA3, HA_ADDRESS, 7, 600, 0x80, 9000)),
                              (TombstoneRecord(COA2, 9, 500),), cleared=3)
    aged = aged_node(node, 2000)
    assert [r.remaining_ms for r in aged.bindings] == [0, 7000] and aged.tombstones == ()
    assert cleared_of(aged) == 3 and len(encode_node(aged)) <= len(encode_node(node))


# -- in a group: what a Binding Update carries, and what the receiver does with it -------------------


def updates_for(effects, hoa=HOA) -> list[BindingUpdate]:
    return [m for m in opened(effects) if type(m) is BindingUpdate and m.home_address == hoa]


def test_the_usual_registration_and_a_deregistration_of_all_travel_in_the_short_form():
    net, (ha1, ha2) = group()
    net.now = now = T0 + 3
    [u] = updates_for(net.register(registration(COA, now, 1)))
    assert u.node is None and u.lifetime == 600
    [u] = updates_for(net.register(registration(HOA, now, 2, lifetime=0)))
    assert u.node is None and u.lifetime == 0
    net.run_until(now + 0.5)
    assert ha2.bindings.state(HOA) == ha1.bindings.state(HOA) == (ntp(now, 2), ntp(now, 2), (), ())


def test_a_deregistration_of_one_address_carries_its_tombstone_and_the_receiver_keeps_it():
    net, (ha1, ha2) = group()
    net.now = now = T0 + 3
    for fraction, coa in ((1, COA), (2, COA2)):
        net.register(registration(coa, now, fraction, flags=0x80))
    [u] = updates_for(net.register(registration(COA2, now, 3, lifetime=0)))
    assert u.node is not None and [t.care_of_address for t in u.node.tombstones] == [COA2]
    net.run_until(now + 0.5)
    assert ha2.bindings.state(HOA).tombstones[0][:2] == (COA2, ntp(now, 3))
    assert ha2.bindings.state(HOA)[:3] == ha1.bindings.state(HOA)[:3]
    assert ha2.bindings.digests() == ha1.bindings.digests()


def test_a_state_from_a_partitioned_member_cannot_bring_back_what_was_removed():
    """Issue 10 point 5 at one receiver: it holds B (which replaced A), and a member that missed that sends
    its de-registration of B, made while it held A: the receiver ends with no binding."""
    net, (ha1, ha2) = group()
    net.now = now = T0 + 3
    net.register(registration(COA, now, 1))
    net.register(registration(COA2, now, 2))
    net.run_until(now + 0.5)
    assert [b.care_of_address for b in ha2.bindings.bindings_of(HOA)] == [COA2]
    # Member 3's state: A from Identification 1 was all it held; it de-registered B at 3 (code 0).
    member3 = MobileNodeBindings(HOA, ntp(now, 3), (), (TombstoneRecord(COA2, ntp(now, 3), 1_800_000),),
                                 cleared=ntp(now, 1))
    ha2.bindings.merge(HOA, state_of(member3, now + 1), now + 1)
    assert ha2.bindings.bindings_of(HOA) == () and ha2.bindings.last_identification(HOA) == ntp(now, 3)
