"""The redundancy protocol under hostile input (wire/redundancy.py, core/group.py).

``parse_body``, ``parse_messages`` and ``unseal`` raise nothing but ParseError on any bytes; a Home Agent
given arbitrary bytes, or a member's sealed message with anything changed, never raises and leaves its
binding table exactly as it was; a message that does verify changes the table only as its content says.
A seal (protocol version 3) opens only for the conversation it was made for: its sender and its receiver.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeagent.core.home_agent import HomeAgent
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.errors import ParseError
from homeagent.wire.redundancy import (
    Advertisement,
    BindingRecord,
    BindingTableReply,
    BindingTableReplyAck,
    BindingTableRequest,
    BindingUpdate,
    BindingUpdateAck,
    MobileNodeBindings,
    TombstoneRecord,
    default_cleared,
    parse_body,
    parse_messages,
    read_messages,
    seal,
    unseal,
)
from unit.support import COA, COA2, HOA, T0, ip, ntp
from unit.test_group import (
    GROUP_SA,
    HA1,
    HA2,
    HA3,
    PORT,
    STRANGER,
    VIP,
    FakePeer,
    expiries,
    lone,
    make_config,
    view,
)

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NOW = T0 + 30
SHA_SA = SecurityAssociation(1001, Algorithm.HMAC_SHA256, bytes(range(32)))

u8, u16, u32, u64 = (st.integers(0, (1 << b) - 1) for b in (8, 16, 32, 64))
addresses = st.one_of(st.sampled_from([HOA, ip("10.1.0.6"), ip("10.2.0.5"), ip(HA1), ip(HA2), 0, 0xFFFFFFFF]), u32)
members = st.one_of(st.sampled_from([ip(HA1), ip(HA2), ip(HA3), ip("239.1.2.3"), 0, 0xFFFFFFFF]), u32)


@st.composite
def node_of(draw, hoa, ident):
    """A node's state as the encoder can send it: at most 10 records (bindings, with a Lifetime; tombstones;
    and cleared, when it is not the default), no care-of address equal to the home address."""
    care_of = addresses.filter(lambda a: a != hoa)
    bindings = draw(st.lists(st.builds(BindingRecord, care_of, addresses, u64, st.integers(1, 0xFFFF), u8, u32),
                             max_size=10).map(tuple))
    tombstones = draw(st.lists(st.builds(TombstoneRecord, care_of, u64, u32), max_size=10 - len(bindings))
                      .map(tuple))
    cleared = None
    if len(bindings) + len(tombstones) < 10:
        cleared = draw(st.one_of(st.none(), u64.filter(lambda c: c != default_cleared(ident, bindings))))
    return MobileNodeBindings(hoa, ident, bindings, tombstones, cleared)


@st.composite
def nodes_(draw):
    return draw(node_of(draw(addresses), draw(u64)))


nodes = nodes_()


@st.composite
def updates(draw):
    hoa, ident = draw(addresses), draw(u64)
    node = draw(st.one_of(st.none(), node_of(hoa, ident)))
    return BindingUpdate(draw(u8), draw(u16), draw(u32), hoa, draw(addresses), draw(addresses), ident, node)


messages = st.one_of(
    updates(),
    st.builds(BindingUpdateAck, u8, addresses, u64),
    st.builds(BindingTableRequest, u64, st.lists(addresses, max_size=20).map(tuple)),
    st.builds(BindingTableReply, u8, st.booleans(), u32, u64, st.lists(nodes, max_size=5).map(tuple)),
    st.builds(BindingTableReplyAck, u8, st.booleans(), u32, u64),
    st.builds(Advertisement, u8, u8, u16, u8),
)


def parses_or_parse_error(parse, data):
    try:
        return parse(data)
    except ParseError:
        return None


# -- parsers ---------------------------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=400))
def test_parse_body_and_parse_messages_raise_only_parse_error(data):
    one = parses_or_parse_error(parse_body, data)
    many = parses_or_parse_error(parse_messages, data)
    if one is not None:
        assert many == [one]


@SETTINGS
@given(st.sampled_from([200, 201, 202, 203, 204, 205]), st.binary(max_size=300))
def test_parsers_on_every_type_with_an_arbitrary_tail(kind, tail):
    parses_or_parse_error(parse_body, bytes([kind]) + tail)
    parses_or_parse_error(parse_messages, bytes([kind]) + tail)


@SETTINGS
@given(messages)
def test_every_message_survives_encoding_and_parsing(message):
    assert parse_body(message.body()) == message


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4))
def test_messages_back_to_back_parse_as_themselves(batch):
    assert parse_messages(b"".join(m.body() for m in batch)) == batch


@SETTINGS
@given(messages, st.data())
def test_a_truncated_or_extended_message_is_a_parse_error_or_another_valid_one(message, data):
    body = message.body()
    cut = data.draw(st.integers(0, len(body) - 1))
    parsed = parses_or_parse_error(parse_body, body[:cut])
    if parsed is not None:  # what does parse is consistent: it encodes to the bytes it came from
        assert parsed.body() == body[:cut]
    parses_or_parse_error(parse_body, body + data.draw(st.binary(min_size=1, max_size=30)))


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([GROUP_SA, SHA_SA]), members, members)
def test_unseal_raises_only_parse_error(data, sa, sender, receiver):
    # Nothing forged opens.
    assert parses_or_parse_error(lambda d: unseal(d, sa, sender, receiver), data) is None


@SETTINGS
@given(messages, st.sampled_from([GROUP_SA, SHA_SA]), u64, members, members, st.data())
def test_unseal_opens_only_the_untouched_datagram(message, sa, timestamp, sender, receiver, data):
    sealed = seal(message.body(), sa, timestamp, sender, receiver)
    assert unseal(sealed, sa, sender, receiver) == (message.body(), timestamp)
    i = data.draw(st.integers(0, len(sealed) - 1))
    flipped = bytearray(sealed)
    flipped[i] ^= 1 << data.draw(st.integers(0, 7))
    assert parses_or_parse_error(lambda d: unseal(d, sa, sender, receiver), bytes(flipped)) is None
    other = SHA_SA if sa is GROUP_SA else GROUP_SA
    assert parses_or_parse_error(lambda d: unseal(d, other, sender, receiver), sealed) is None


@SETTINGS
@given(messages, st.sampled_from([GROUP_SA, SHA_SA]), u64, members, members, members, members)
def test_a_sealed_datagram_never_opens_for_another_conversation(message, sa, timestamp, sender, receiver,
                                                                 other_sender, other_receiver):
    """The seal covers the sender's and the receiver's addresses: a datagram sealed for one (sender,
    receiver) pair opens for that pair and for no other (swapped, reflected, redirected, or any)."""
    sealed = seal(message.body(), sa, timestamp, sender, receiver)
    assert unseal(sealed, sa, sender, receiver) == (message.body(), timestamp)
    if (other_sender, other_receiver) != (sender, receiver):
        assert parses_or_parse_error(lambda d: unseal(d, sa, other_sender, other_receiver), sealed) is None
    if sender != receiver:
        assert parses_or_parse_error(lambda d: unseal(d, sa, receiver, sender), sealed) is None


# -- a Home Agent ---------------------------------------------------------------------------------------


def member_ha() -> HomeAgent:
    """HA1, active, holding two simultaneous bindings of HOA and a de-registered node."""
    ha, _ = lone()
    ha.bindings.register(HOA, COA, 600, ntp(T0 + 20, 1), T0 + 20, 0x80, True, ip(VIP))
    ha.bindings.register(HOA, COA2, 600, ntp(T0 + 20, 2), T0 + 20, 0x82, True, ip(VIP))
    ha.bindings.register(ip("10.1.0.6"), COA, 600, ntp(T0 + 20, 3), T0 + 20, 0, False, ip(VIP))
    ha.bindings.deregister(ip("10.1.0.6"), None, ntp(T0 + 20, 4))
    return ha


HA_UNDER_TEST = member_ha()
PEER = FakePeer(HA2)


def state(ha: HomeAgent):
    return view(ha), expiries(ha), len(ha.bindings)


BASELINE = state(HA_UNDER_TEST)


def unchanged(data: bytes, source: str = HA2, local: str = HA1, now: float = NOW) -> None:
    ha = HA_UNDER_TEST
    ha.receive_datagram(data, (source, PORT), local, now)
    assert state(ha) == BASELINE


@SETTINGS
@given(st.binary(max_size=500), st.sampled_from([HA2, STRANGER, HA1, "192.0.2.77"]), st.sampled_from([HA1, VIP]))
def test_arbitrary_bytes_from_anyone_never_raise_or_change_the_table(data, source, local):
    unchanged(data, source, local)


@SETTINGS
@given(st.sampled_from([200, 201, 202, 203, 204, 205]), st.binary(max_size=300))
def test_arbitrary_redundancy_datagrams_from_a_member_change_nothing(kind, tail):
    unchanged(bytes([kind]) + tail)


def changing_messages(now: float):
    """Messages that would change the table if they verified: newer state for HOA, a whole reply."""
    node = MobileNodeBindings(HOA, ntp(now, 9), (BindingRecord(COA2, ip(VIP), ntp(now, 9), 900, 0, 900_000),))
    return st.sampled_from([
        BindingUpdate(0, 900, 900_000, HOA, ip(VIP), COA2, ntp(now, 9)),
        BindingUpdate(0, 0, 0, HOA, ip(VIP), HOA, ntp(now, 9)),
        BindingUpdate(0x80, 900, 0, HOA, ip(VIP), COA2, ntp(now, 9), node),
        BindingUpdate(0, 900, 900_000, ip("10.1.0.6"), ip(VIP), COA2, ntp(now, 9)),
    ])


@SETTINGS
@given(changing_messages(NOW), st.data())
def test_a_members_sealed_update_with_any_bit_flipped_changes_nothing(message, data):
    sealed = bytearray(PEER.seal(message.body(), NOW))
    i = data.draw(st.integers(0, len(sealed) - 1))
    sealed[i] ^= 1 << data.draw(st.integers(0, 7))
    unchanged(bytes(sealed))


@SETTINGS
@given(changing_messages(NOW), st.data())
def test_a_members_sealed_update_cut_extended_or_spliced_changes_nothing(message, data):
    sealed = PEER.seal(message.body(), NOW)
    how = data.draw(st.sampled_from(["cut", "extend", "splice", "stale", "future", "stranger", "unconfigured",
                                     "for-another", "reflected", "back-to-sender", "to-the-group"]))
    if how == "cut":
        unchanged(sealed[: data.draw(st.integers(0, len(sealed) - 1))])
    elif how == "extend":
        unchanged(sealed + data.draw(st.binary(min_size=1, max_size=40)))
    elif how == "splice":  # a body followed by another message's seal
        other = PEER.seal(BindingUpdateAck(0, HOA, 1).body(), NOW)
        unchanged(message.body() + other[16:])
    elif how == "stale":
        unchanged(FakePeer(HA2).seal(message.body(), NOW - 60), now=NOW)
    elif how == "future":
        unchanged(FakePeer(HA2).seal(message.body(), NOW + 60), now=NOW)
    elif how == "stranger":
        unchanged(FakePeer(STRANGER).seal(message.body(), NOW), source=STRANGER)
    elif how == "unconfigured":  # covered by the group association, not a configured peer
        unchanged(FakePeer(HA3).seal(message.body(), NOW), source=HA3)
    elif how == "for-another":  # HA2's genuine seal for another member, arriving at HA1
        unchanged(PEER.seal(message.body(), NOW, receiver=HA3))
    elif how == "reflected":  # HA2's genuine seal for HA1, re-sent from another address
        unchanged(sealed, source=data.draw(st.sampled_from([HA3, HA1, STRANGER, VIP])))
    elif how == "back-to-sender":  # HA1's own seal for HA2, sent back to HA1 as from HA2
        unchanged(FakePeer(HA1).seal(message.body(), NOW, receiver=HA2))
    else:  # HA2's seal for HA1, arriving at the multicast group's address
        unchanged(sealed, local="239.1.2.3")


@SETTINGS
@given(st.binary(max_size=300))
def test_a_sealed_arbitrary_body_never_raises_and_changes_only_what_it_says(body):
    ha = member_ha()
    before = state(ha)
    parsed, errors = read_messages(body)  # a bad message is rejected alone; the rest of the datagram counts
    FakePeer(HA2).send(ha, body, NOW)
    if not parsed:
        assert state(ha) == before
        # Counted as malformed: by the group, or (its first byte is no redundancy type) before it.
        assert ha.counters["redundancy.malformed"] + ha.counters["discarded.malformed"] + ha.counters[
            "discarded.not_serving"] == 1
        return
    assert ha.counters["redundancy.messages_rejected"] == len(errors)
    changed = {m.home_address for m in parsed if type(m) is BindingUpdate}
    # (Table replies change nothing here: they answer no request of ours.)
    after = view(ha)
    for hoa in set(after) | set(before[0]):
        if hoa not in changed:
            assert after.get(hoa) == before[0].get(hoa)


@SETTINGS
@given(messages)
def test_any_verified_message_is_handled_without_raising(message):
    ha = member_ha()
    FakePeer(HA2).send(ha, message.body(), NOW)
    for hoa, (last, _) in view(ha).items():  # the newest Identification never goes backwards
        old = BASELINE[0].get(hoa)
        assert old is None or last >= old[0]


def test_the_fixture_holds_what_it_says():
    assert BASELINE[2] == 2 and HA_UNDER_TEST.role == "active"
    assert struct.calcsize("!BBBxIQ") == 16 and make_config(HA1, [HA2]).redundancy is not None
    assert [m.address for m in HA_UNDER_TEST.group.membership] == [ip(HA2)]
