"""Every reply code the Home Agent gives, and every silent discard, produced by sending the offending request
to a running daemon. After each denial or discard the binding table (as ``homeagent bindings --json``
prints it) is unchanged."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from homeagent.mobile_node import MobileNode
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.era import from_wire
from homeagent.wire.registration import Flags, RegistrationRequest

from .conftest import (
    HA_ADDRESS,
    KEY,
    OTHER_KEY,
    OTHER_SPI,
    SPI,
    WRONG_KEY,
    D,
    G,
    M,
    R_BIT,
    S,
    X_BIT,
    ident_parts,
    ntp_now,
    ntp_seconds_now,
    rrq,
    rrq_header,
    stable,
)


@pytest.fixture(scope="module")
def ha(module_daemons):
    """simultaneous_bindings = 3; 10.1.0.0/16 is home, 10.2.0.0/16 has an association but is not home."""
    ha = module_daemons.start("codes", simultaneous_bindings=3)
    # Some bindings that every denial below must leave alone.
    mn = ha.mn()
    for hoa, coa in (("10.1.9.1", "192.0.2.1"), ("10.1.9.2", "192.0.2.2")):
        assert mn.exchange(rrq(hoa, coa)).code == 0
    mn.close()
    return ha


@pytest.fixture
def mn(ha):
    sock = ha.mn()
    yield sock
    sock.close()


@pytest.fixture
def unchanged(ha):
    """Snapshot the table (CLI) before the test; afterwards check the CLI shows the same table."""
    before = stable(ha.bindings_cli())
    yield before
    assert stable(ha.bindings_cli()) == before


def denial(mn, request: bytes, code: int, *, key: bytes = KEY, spi: int = SPI):
    reply = mn.exchange(request)
    assert reply.code == code
    assert reply.authentic(key, spi), "a Home Agent reply MUST carry a valid MHAE (RFC 5944 3.5.2)"
    return reply


# -- accepted ---------------------------------------------------------------------------------------


def test_code_0_accepted(ha, mn):
    ident = ntp_now()
    reply = mn.exchange(rrq("10.1.0.1", "192.0.2.10", ident, lifetime=120))
    assert (reply.code, reply.lifetime, reply.identification) == (0, 120, ident)
    assert reply.authentic()
    rows = [r for r in ha.bindings_cli() if r["home_address"] == "10.1.0.1"]
    assert [(r["care_of_address"], r["lifetime"], r["identification"]) for r in rows] == [("192.0.2.10", 120, ident)]


def test_code_1_without_simultaneous_binding_support(daemons):
    ha = daemons.start("nosim", simultaneous_bindings=0)
    mn = ha.mn()
    first = mn.exchange(rrq("10.1.0.1", "192.0.2.10", flags=S))
    assert first.code == 1 and first.authentic()
    second = mn.exchange(rrq("10.1.0.1", "192.0.2.11", flags=S))
    assert second.code == 1 and second.authentic()
    mn.close()
    # S is not honoured: the second care-of address replaced the first
    assert [r["care_of_address"] for r in ha.bindings_cli()] == ["192.0.2.11"]
    assert ha.counters()["accepted"] == 2


def test_retransmission_of_current_registration_is_not_extended(ha, mn):
    """RFC 5944 3.8.2.2: a duplicate (same home address, care-of address, Identification) of an accepted
    current registration must not extend the lifetime originally granted."""
    request = rrq("10.1.0.2", "192.0.2.10", lifetime=60)
    assert mn.exchange(request).code == 0
    before = stable(ha.bindings_cli())
    reply = mn.exchange(request)
    assert reply.code == 0 and reply.lifetime <= 60 and reply.authentic()
    assert stable(ha.bindings_cli()) == before


# -- denied, with an authenticated reply -----------------------------------------------------------


def test_code_131_wrong_key_reply_authenticated_with_configured_key(ha, mn, unchanged):
    ident = ntp_now()
    reply = denial(mn, rrq("10.1.9.1", "192.0.2.99", ident, key=WRONG_KEY), 131)
    assert not reply.authentic(WRONG_KEY)
    assert reply.identification == ident
    assert reply.home_address == "10.1.9.1"


def test_code_131_unknown_spi_reply_uses_an_association_of_the_node(ha, mn, unchanged):
    reply = denial(mn, rrq("10.1.9.1", "192.0.2.99", key=KEY, spi=999), 131)
    assert reply.spi == SPI


def test_code_131_tampered_request(ha, mn, unchanged):
    request = bytearray(rrq("10.1.9.1", "192.0.2.99"))
    request[12] ^= 0x01  # care-of address changed after signing
    denial(mn, bytes(request), 131)


def test_code_133_identification_in_the_past(ha, mn, unchanged):
    stale = ntp_now(offset_seconds=-60)
    reply = denial(mn, rrq("10.1.9.1", "192.0.2.99", stale), 133)
    high, low = ident_parts(reply.identification)
    assert low == stale & 0xFFFFFFFF, "low 32 bits MUST be copied (RFC 5944 5.7.1)"
    assert abs(high - ntp_seconds_now()) <= 2, "high 32 bits are the Home Agent's time of day"


def test_code_133_identification_in_the_future(ha, mn, unchanged):
    future = ntp_now(offset_seconds=+60)
    reply = denial(mn, rrq("10.1.9.1", "192.0.2.99", future), 133)
    assert abs(ident_parts(reply.identification)[0] - ntp_seconds_now()) <= 2


def test_code_133_replay_of_an_accepted_request(ha, mn):
    first = rrq("10.1.0.3", "192.0.2.10")
    assert mn.exchange(first).code == 0
    assert mn.exchange(rrq("10.1.0.3", "192.0.2.11")).code == 0  # a newer registration moves the node
    before = stable(ha.bindings_cli())
    replay = mn.exchange(first)
    assert replay.code == 133 and replay.authentic()
    assert stable(ha.bindings_cli()) == before
    # and after a de-registration, the old request still cannot bring the binding back
    assert mn.exchange(rrq("10.1.0.3", "10.1.0.3", lifetime=0)).code == 0
    assert mn.exchange(first).code == 133
    assert not [r for r in ha.bindings_cli() if r["home_address"] == "10.1.0.3"]


@pytest.mark.parametrize("bit", [X_BIT, R_BIT], ids=["x", "r"])
def test_code_134_reserved_bit(ha, mn, unchanged, bit):
    denial(mn, rrq("10.1.9.1", "192.0.2.99", flags=bit), 134)


def test_code_134_care_of_address_equal_to_home_address(ha, mn, unchanged):
    denial(mn, rrq("10.1.9.1", "10.1.9.1", lifetime=60), 134)


def test_code_135_fourth_simultaneous_binding(ha, mn):
    for i in range(3):
        assert mn.exchange(rrq("10.1.0.4", f"192.0.2.{30 + i}", flags=S)).code == 0
    before = stable(ha.bindings_cli())
    assert len([r for r in before if r["home_address"] == "10.1.0.4"]) == 3
    denial(mn, rrq("10.1.0.4", "192.0.2.33", flags=S), 135)
    assert stable(ha.bindings_cli()) == before
    # renewing one of the three is not a fourth binding
    assert mn.exchange(rrq("10.1.0.4", "192.0.2.31", flags=S)).code == 0
    assert len([r for r in ha.bindings_cli() if r["home_address"] == "10.1.0.4"]) == 3


def test_code_136_other_home_agent_names_our_address(ha, mn, unchanged):
    reply = denial(mn, rrq("10.1.9.1", "192.0.2.99", home_agent="127.0.0.99"), 136)
    assert reply.home_agent == HA_ADDRESS
    reply = denial(mn, rrq("10.1.9.1", "192.0.2.99", home_agent="10.1.255.255"), 136)  # subnet broadcast
    assert reply.home_agent == HA_ADDRESS


def test_code_129_home_address_outside_home_network(ha, mn, unchanged):
    reply = denial(mn, rrq("10.2.0.5", "192.0.2.99", key=OTHER_KEY, spi=OTHER_SPI), 129, key=OTHER_KEY,
                   spi=OTHER_SPI)
    assert reply.home_address == "10.2.0.5"


@pytest.mark.parametrize("flags", [G, M, G | S, M | D], ids=["G", "M", "G+S", "M+D"])
def test_code_139_unavailable_encapsulation(ha, mn, unchanged, flags):
    denial(mn, rrq("10.1.9.1", "192.0.2.99", flags=flags), 139)


def test_denials_built_by_our_client_and_counted(ha):
    """The same codes from our own MobileNode / RegistrationRequest / SecurityAssociation.sign."""
    sa = SecurityAssociation(SPI, Algorithm.HMAC_MD5, KEY)
    before = stable(ha.bindings_cli())
    counters = ha.counters()
    node = MobileNode(IPv4Address("10.1.9.2"), IPv4Address(HA_ADDRESS), sa, ha.port)
    assert node.register(IPv4Address("192.0.2.50"), 60, int(Flags.G), timeout=1, retries=0).code == 139
    assert node.register(IPv4Address("192.0.2.50"), 60, int(Flags.x), timeout=1, retries=0).code == 134
    datagram = sa.sign(RegistrationRequest(0, 60, int(IPv4Address("10.1.9.2")), int(IPv4Address("127.0.0.98")),
                                           int(IPv4Address("192.0.2.50")), from_wire(ntp_now())).header_bytes())
    mn = ha.mn()
    assert mn.exchange(datagram).code == 136
    mn.close()
    after = ha.counters()
    for code in ("139", "134", "136"):
        assert after.get(f"denied.{code}", 0) == counters.get(f"denied.{code}", 0) + 1
    assert stable(ha.bindings_cli()) == before


# -- silently discarded ---------------------------------------------------------------------------


def test_unknown_non_skippable_extension_before_mhae_is_discarded(ha, mn, unchanged):
    """RFC 5944 1.8: an unrecognised type 0-127 makes the whole message silently discarded (not 134)."""
    counters = ha.counters()
    assert mn.silent(rrq("10.1.9.1", "192.0.2.99", before=bytes((100, 4)) + b"abcd"))
    assert ha.counters()["discarded.malformed"] == counters.get("discarded.malformed", 0) + 1


def test_request_without_mhae_is_discarded(ha, mn, unchanged):
    counters = ha.counters()
    assert mn.silent(rrq("10.1.9.1", "192.0.2.99", authenticate=False))
    assert mn.silent(rrq("10.1.9.1", "192.0.2.99", authenticate=False, after=bytes((200, 0))))
    assert ha.counters()["discarded.no_authentication"] == counters.get("discarded.no_authentication", 0) + 2


def test_request_without_security_association_is_discarded(ha, mn, unchanged):
    counters = ha.counters()
    assert mn.silent(rrq("192.168.7.7", "192.0.2.99"))
    assert ha.counters()["discarded.no_security_association"] == (
        counters.get("discarded.no_security_association", 0) + 1
    )


def test_foreign_home_extension_without_association_is_discarded(ha, mn, unchanged):
    """RFC 5944 3.8.2.1 (d): no FA-HA association but a Foreign-Home extension: discard."""
    fh = bytes((34, 20)) + (300).to_bytes(4, "big") + bytes(16)
    assert mn.silent(rrq("10.1.9.1", "192.0.2.99", after=fh))


def test_short_and_non_request_datagrams_are_discarded(ha, mn, unchanged):
    header = rrq_header("10.1.9.1", "192.0.2.99", ntp_now())
    assert mn.silent(header[:23])
    assert mn.silent(b"\x03" + rrq("10.1.9.1", "192.0.2.99")[1:])  # a Registration Reply type
    assert mn.silent(b"")
