"""HomeAgent.receive_registration under hostile input: it never raises, and nothing that is not an
authentic, acceptable request changes the binding table."""

from __future__ import annotations

import struct

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeagent.core.effects import Send, TunnelSet
from homeagent.core.replay import skew
from homeagent.wire.extensions import ExtensionType
from homeagent.wire.registration import RegistrationReply
from unit.support import (
    COA, COA2, HA, HOA, KEY, SA, SOURCE, SPI, T0, WIDE_SA, ext, ip, make_ha, mhae, ntp, snapshot, wire_ntp,
)

SETTINGS = settings(max_examples=500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NOW = T0 + 10


def populated():
    """A Home Agent holding two simultaneous bindings of HOA and one of another node."""
    ha = make_ha()
    # HOA's first binding 20 s before NOW (a copy of it is a replay by then), the others 3 s before (a copy
    # is a retransmission, answered again): both kinds of duplicate are drawn below (authentic_requests).
    for n, (hoa, coa, at) in enumerate(((HOA, COA, NOW - 20), (HOA, COA2, NOW - 3), (ip("10.1.2.3"), COA, NOW - 3))):
        effects = ha.receive_registration(
            mhae(struct.pack("!BBHIIIQ", 1, 0x80, 600, hoa, HA, coa, wire_ntp(ntp(at, n)))), SOURCE, at)
        assert RegistrationReply.parse(effects[0].datagram).code == 0
    assert len(ha.bindings) == 3
    return ha


HA_UNDER_TEST = populated()
BASELINE = snapshot(HA_UNDER_TEST)


def receive_unchanged(data: bytes, now: float = NOW) -> list:
    ha = HA_UNDER_TEST
    effects = ha.receive_registration(data, SOURCE, now)
    assert snapshot(ha) == BASELINE
    assert not any(isinstance(e, TunnelSet) for e in effects)
    return effects


def only_131(effects) -> None:
    """A forged request is at most answered with 131, authenticated with our association."""
    for e in effects:
        assert isinstance(e, Send) and e.address == SOURCE, effects  # a reply, nothing else
        reply = RegistrationReply.parse(e.datagram)
        assert reply.code == 131
        mhae_ = reply.extension(ExtensionType.MOBILE_HOME_AUTH)
        assert SA.verify(reply.raw, mhae_) or WIDE_SA.verify(reply.raw, mhae_)


@SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_or_change_bindings(data):
    only_131(receive_unchanged(data))


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_a_request_header(tail):
    data = struct.pack("!BBHIIIQ", 1, 0, 600, HOA, HA, COA, wire_ntp(ntp(NOW, 7))) + tail
    only_131(receive_unchanged(data))


addresses = st.one_of(
    st.sampled_from([HOA, HA, COA, COA2, ip("10.1.2.3"), ip("10.2.0.5"), 0, 0xFFFFFFFF, ip("224.0.0.1")]),
    st.integers(0, 0xFFFFFFFF),
)
identifications = st.one_of(
    st.builds(lambda s, f: ntp(NOW + s, f), st.integers(-10, 10), st.integers(0, 0xFFFFFFFF)),
    st.integers(0, (1 << 64) - 1),
)
extension_lists = st.lists(
    st.one_of(
        st.builds(ext, st.sampled_from([131, 128, 200, 255]), st.binary(max_size=30)),
        st.builds(ext, st.sampled_from([33, 34]), st.binary(min_size=4, max_size=24)),
    ),
    max_size=3,
).map(b"".join)


@st.composite
def unauthenticated_requests(draw):
    fixed = struct.pack(
        "!BBHIIIQ", 1, draw(st.integers(0, 255)), draw(st.sampled_from([0, 1, 600, 0xFFFF])),
        draw(st.sampled_from([HOA, ip("10.1.2.3"), ip("10.2.0.5")])), draw(addresses), draw(addresses),
        draw(identifications),
    )
    before = draw(extension_lists)
    spi = draw(st.sampled_from([SPI, 257, 999, 0]))
    size = draw(st.sampled_from([16, 16, 0, 8, 32]))
    authenticator = draw(st.binary(min_size=size, max_size=size))
    return fixed + before + bytes((32, 4 + size)) + spi.to_bytes(4, "big") + authenticator + draw(extension_lists)


@SETTINGS
@given(unauthenticated_requests())
def test_structurally_valid_unauthenticated_requests_change_nothing(data):
    only_131(receive_unchanged(data))


@st.composite
def signed_then_corrupted(draw):
    """An authentic request (no extensions after the MHAE), with one bit of it flipped."""
    fixed = struct.pack(
        "!BBHIIIQ", 1, draw(st.sampled_from([0, 0x80, 0x02, 0x82])), draw(st.sampled_from([0, 600])),
        HOA, HA, draw(st.sampled_from([COA, COA2, ip("203.0.113.5"), HOA])),
        wire_ntp(ntp(NOW, draw(st.integers(1, 1000)))),
    )
    data = bytearray(mhae(fixed + draw(extension_lists.filter(lambda b: b"\x22" not in b[:1]))))
    i = draw(st.integers(0, len(data) - 1))
    data[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@SETTINGS
@given(signed_then_corrupted())
def test_one_flipped_bit_in_an_authentic_request_changes_nothing(data):
    only_131(receive_unchanged(data))


# -- authentic requests with random fields: a consistent answer, and denials change nothing ------------


@st.composite
def authentic_requests(draw):
    flags = draw(st.one_of(st.sampled_from([0, 0x80, 0x02, 0x40, 0x20, 0x04, 0x01, 0x10, 0x08]), st.integers(0, 255)))
    lifetime = draw(st.sampled_from([0, 1, 600, 1800, 1801, 0xFFFF]))
    hoa = draw(st.sampled_from([HOA, ip("10.1.2.3"), ip("10.1.9.9")]))
    home_agent = draw(st.sampled_from([HA, HA, ip("10.1.255.255"), ip("192.0.2.2")]))
    coa = draw(st.sampled_from([COA, COA2, ip("203.0.113.5"), ip("203.0.113.6"), HOA, 0, ip("224.0.0.1")]))
    ident = draw(st.one_of(identifications, st.sampled_from([ntp(NOW - 20, 0), ntp(NOW - 3, 1)])))
    fixed = struct.pack("!BBHIIIQ", 1, flags, lifetime, hoa, home_agent, coa, wire_ntp(ident))  # as it is sent
    return mhae(fixed + draw(extension_lists.filter(lambda b: b"\x22" not in b[:1]))), (flags, lifetime, hoa, ident)


@SETTINGS
@given(authentic_requests())
def test_authentic_requests_get_one_consistent_authenticated_reply(case):
    data, (flags, lifetime, hoa, ident) = case
    ha = populated()
    before = snapshot(ha)
    coa = int.from_bytes(data[12:16], "big")
    duplicate = lifetime and abs(skew(ident, NOW)) <= 7 and any(  # the same registration again, within the
        (b.care_of_address, b.identification, b.flags, b.lifetime) == (coa, ident, flags, min(lifetime, 1800))
        for b in ha.bindings.bindings_of(hoa))  # replay tolerance: RFC 5944 3.8.2.2 (older: a replay, 133)
    effects = ha.receive_registration(data, SOURCE, NOW)
    if b"\x22" in data[24:] and ha.counters["discarded.foreign_home_authentication"]:
        assert effects == [] and snapshot(ha) == before
        return
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == 1 and sends[0].address == SOURCE
    reply = RegistrationReply.parse(sends[0].datagram)
    assert SA.verify(reply.raw, reply.extension(ExtensionType.MOBILE_HOME_AUTH))
    assert reply.home_address == hoa
    assert reply.identification & 0xFFFFFFFF == ident & 0xFFFFFFFF
    if duplicate:  # answered again with what is left, without extending it
        assert reply.code == 0 and reply.identification == ident and snapshot(ha) == before
        assert effects == sends
        return
    assert reply.code in (0, 129, 133, 134, 135, 136, 139)
    assert reply.lifetime <= min(lifetime, 1800)
    if reply.code >= 128:
        assert snapshot(ha) == before
        assert effects == sends  # a denial: the reply and nothing else
    else:
        assert reply.identification == ident
        assert ha.bindings.last_identification(hoa) == ident
        assert reply.lifetime == min(lifetime, 1800)
    if flags & 0x05 and reply.code not in (133, 136):
        assert reply.code == 134  # reserved bits are never accepted


def test_constants_used_by_the_fuzzers():
    assert SA.key == KEY and HA_UNDER_TEST.registrar.security.covering(HOA) == {SPI: SA}


@pytest.mark.parametrize(("coa", "at", "n", "code"), [(COA2, NOW - 3, 1, 0), (COA, NOW - 20, 0, 133)],
                         ids=["retransmission", "replay"])
def test_a_copy_of_a_current_registration_is_answered_again_only_within_the_tolerance(coa, at, n, code):
    """The duplicate branch of the oracle above, both ways, for the bindings ``populated`` made: a copy
    3 s old is a retransmission, answered again with what is left; 20 s old, a replay (RFC 5944 3.6.3)."""
    ha = populated()
    before = snapshot(ha)
    effects = ha.receive_registration(mhae(struct.pack("!BBHIIIQ", 1, 0x80, 600, HOA, HA, coa, wire_ntp(ntp(at, n)))),
                                      SOURCE, NOW)
    reply = RegistrationReply.parse(effects[0].datagram)
    assert reply.code == code and snapshot(ha) == before
    assert reply.lifetime == (600 - 3 if code == 0 else 600)
