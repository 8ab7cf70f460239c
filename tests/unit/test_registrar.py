"""Registration processing at the Home Agent (RFC 5944 3.8, RFC 3024), one test per outcome.

Every reply is checked for its code, its Mobile-Home Authentication Extension (verified with the
association), Identification, Home Agent field and Lifetime; every denial and every silent discard is
checked to leave the binding table (and each node's last Identification) exactly as it was.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from homeagent.core.effects import Send
from homeagent.wire.registration import Flags

from .support import (
    COA, COA2, COA3, COA4, HA, HOA, KEY, SA, SOURCE, SPI, T0, WIDE_KEY, WIDE_SA, WIDE_SPI, ZERO_KEY, ZERO_SA, ZERO_SPI,
    ext, header, ip, make_ha, mhae, ntp, only_reply, request, sends, snapshot, tset, tunnels, wire_ntp,
)

LOW32 = 0xFFFFFFFF
I0 = ntp(T0, 0x1000)  # the Identification of the registration made by the ``registered`` fixture


@pytest.fixture
def ha():
    return make_ha()


@pytest.fixture
def registered(ha):
    """HOA bound to COA at T0 for 600 s, Identification I0."""
    reply = only_reply(ha.receive_registration(request(ident=I0), SOURCE, T0))
    assert reply.code == 0
    return ha


def deny(ha, data, now=T0 + 1, sa=SA, hoa=HOA):
    """Send a request that must be denied: the table must not change and no tunnel may move."""
    before = snapshot(ha)
    effects = ha.receive_registration(data, SOURCE, now)
    assert snapshot(ha) == before
    # A denial yields its reply and nothing else: no tunnel moves, nothing to replicate.
    assert all(isinstance(e, Send) for e in effects), effects
    reply = only_reply(effects, sa)
    assert reply.home_address == hoa
    return reply


def accept(ha, data, now, code=0, source=SOURCE):
    effects = ha.receive_registration(data, source, now)
    reply = only_reply(effects, source=source)
    assert reply.code == code, reply
    return reply, effects


def coas(ha, hoa=HOA):
    return {b.care_of_address for b in ha.bindings.bindings_of(hoa)}


# -- 0 and 1: accepted --------------------------------------------------------------------------------


def test_accepted_with_code_0(ha):
    ident = ntp(T0, 0xABCDEF01)
    reply, effects = accept(ha, request(lifetime=600, ident=ident), T0 + 0.5)
    assert (reply.lifetime, reply.home_address, reply.home_agent, reply.identification) == (600, HOA, HA, ident)
    assert tunnels(effects) == [tset(COA)]
    [b] = ha.bindings.bindings_of(HOA)
    assert (b.care_of_address, b.lifetime, b.expires, b.identification, b.flags) == (
        COA, 600, T0 + 0.5 + 600, ident, 0)
    assert ha.bindings.last_identification(HOA) == ident
    assert len(ha.bindings) == 1
    assert ha.counters["accepted"] == 1


def test_reply_goes_to_the_source_of_the_request(ha):
    source = ("203.0.113.9", 40000)  # e.g. a foreign agent relaying the request
    reply, effects = accept(ha, request(), T0, source=source)
    assert sends(effects)[0].address == source


def test_accepted_with_code_1_when_simultaneous_bindings_unsupported():
    ha = make_ha(simultaneous_bindings=0)
    reply, _ = accept(ha, request(ident=I0), T0, code=1)
    reply, effects = accept(ha, request(flags=Flags.S, coa=COA2, ident=ntp(T0 + 1)), T0 + 1, code=1)
    assert reply.identification == ntp(T0 + 1)
    # S is not honoured: the new binding replaces the old one.
    assert coas(ha) == {COA2}
    assert tunnels(effects) == [tset(COA2)]
    # Deregistration is answered with code 1 as well.
    reply, _ = accept(ha, request(lifetime=0, coa=HOA, ident=ntp(T0 + 2)), T0 + 2, code=1)
    assert reply.lifetime == 0 and len(ha.bindings) == 0


def test_known_and_skippable_extensions_are_accepted(ha):
    nai = ext(131, b"mn5@example.net")
    unknown = ext(200, b"\x01\x02\x03")
    mfae = ext(33, (999).to_bytes(4, "big") + bytes(16))  # appended by a foreign agent, after the MHAE
    reply, _ = accept(ha, request(before=nai + unknown, after=mfae + ext(201, b"")), T0)
    assert coas(ha) == {COA}


# -- 131: authentication failed -----------------------------------------------------------------------


def test_131_bad_authenticator_reply_still_authenticated(registered):
    ident = ntp(T0 + 1, 0x77)
    data = bytearray(request(ident=ident, now=T0 + 1))
    data[-1] ^= 0x01
    reply = deny(registered, bytes(data))
    assert reply.code == 131
    assert reply.identification == ident and reply.home_agent == HA and reply.lifetime == 600
    assert registered.counters["security_violations"] == 1


def test_131_wrong_key(registered):
    reply = deny(registered, request(ident=ntp(T0 + 1), key=bytes(16)))
    assert reply.code == 131


def test_131_authenticator_covers_the_fixed_part(registered):
    # Sign one care-of address, then rewrite it on the wire.
    data = bytearray(request(ident=ntp(T0 + 1), coa=COA2))
    data[12:16] = COA3.to_bytes(4, "big")
    assert deny(registered, bytes(data)).code == 131


def test_131_truncated_authenticator(registered):
    data = header(ident=ntp(T0 + 1)) + ext(32, SPI.to_bytes(4, "big") + bytes(8))
    assert deny(registered, data).code == 131


def test_131_unknown_spi_is_answered_with_a_known_association(registered):
    reply = deny(registered, request(ident=ntp(T0 + 1), spi=999))
    assert reply.code == 131
    assert reply.extensions[-1].spi == SPI


def test_131_spi_of_a_shorter_prefix_is_not_used(registered):
    # 10.1.0.0/16 (SPI 256) is the longest prefix covering HOA; SPI 257 belongs to 10.0.0.0/8 only.
    reply = deny(registered, request(ident=ntp(T0 + 1), spi=WIDE_SPI, key=WIDE_KEY))
    assert reply.code == 131


def test_131_is_checked_before_the_identification_and_the_home_agent(registered):
    stale = ntp(T0 - 1000)
    data = bytearray(request(ident=stale, ha=ip("192.0.2.99")))
    data[-1] ^= 0xFF
    assert deny(registered, bytes(data)).code == 131


# -- silently discarded -------------------------------------------------------------------------------

FH_AUTH = ext(34, (300).to_bytes(4, "big") + bytes(16))

DISCARDS = {
    "no security association": (lambda: request(hoa=ip("172.16.0.5")), "discarded.no_security_association"),
    "no MHAE": (lambda: header(ident=ntp(T0 + 1)), "discarded.no_authentication"),
    "only an MFAE": (lambda: header(ident=ntp(T0 + 1)) + ext(33, SPI.to_bytes(4, "big") + bytes(16)),
                     "discarded.no_authentication"),
    "unknown non-skippable before MHAE": (lambda: request(ident=ntp(T0 + 1), before=ext(100, b"abc")),
                                          "discarded.malformed"),
    "unknown non-skippable after MHAE": (lambda: request(ident=ntp(T0 + 1), after=ext(127, b"")),
                                         "discarded.malformed"),
    "long-form 36 not understood": (
        lambda: request(ident=ntp(T0 + 1), before=bytes((36, 1, 0, 2)) + b"ab"), "discarded.malformed"),
    "foreign-home auth (no FA association)": (lambda: request(ident=ntp(T0 + 1), after=FH_AUTH),
                                               "discarded.foreign_home_authentication"),
    "truncated in the MHAE": (lambda: request(ident=ntp(T0 + 1))[:-1], "discarded.malformed"),
    "truncated in the fixed part": (lambda: request(ident=ntp(T0 + 1))[:23], "discarded.malformed"),
    "cut after the fixed part": (lambda: request(ident=ntp(T0 + 1))[:24], "discarded.no_authentication"),
    "MHAE without SPI": (lambda: header(ident=ntp(T0 + 1)) + ext(32, b"\x01\x00"), "discarded.malformed"),
    "empty": (lambda: b"", "discarded.malformed"),
    "garbage": (lambda: bytes(range(7, 97)), "discarded.malformed"),
    "a Registration Reply": (lambda: b"\x03" + request(ident=ntp(T0 + 1))[1:], "discarded.malformed"),
}


@pytest.mark.parametrize("case", DISCARDS)
def test_silently_discarded(registered, case):
    build, counter = DISCARDS[case]
    before = snapshot(registered)
    requests = registered.counters["requests"]
    assert registered.receive_registration(build(), SOURCE, T0 + 1) == []
    assert snapshot(registered) == before
    assert registered.counters[counter] == 1
    assert registered.counters["requests"] == requests + 1


def test_a_discarded_request_does_not_consume_its_identification(registered):
    ident = ntp(T0 + 1, 0x42)
    assert registered.receive_registration(request(ident=ident, after=FH_AUTH), SOURCE, T0 + 1) == []
    reply, _ = accept(registered, request(ident=ident, coa=COA2), T0 + 1)
    assert reply.identification == ident and coas(registered) == {COA2}


# -- 133: Identification mismatch ---------------------------------------------------------------------


def check_133(reply, request_ident, now, home_agent=HA):
    assert reply.code == 133
    assert reply.identification & LOW32 == request_ident & LOW32
    assert wire_ntp(reply.identification) >> 32 == int(now) + 2_208_988_800  # the Home Agent's NTP time
    assert reply.home_agent == home_agent  # copied: only 136 names our address instead


@pytest.mark.parametrize("skew", [-8, 8, -3600, 86400 * 365])
def test_133_timestamp_outside_tolerance(registered, skew):
    now = T0 + 100.25
    ident = ntp(now + skew, 0x55AA55AA)
    reply = deny(registered, request(ident=ident), now=now)
    check_133(reply, ident, now)
    assert reply.lifetime == 600


@pytest.mark.parametrize("skew", [-7, 7, 0])
def test_timestamp_at_the_tolerance_is_fresh(registered, skew):
    now = T0 + 100.75
    # Exactly ``skew`` seconds away, fraction included (the check is not rounded to whole seconds).
    accept(registered, request(ident=ntp(now + skew, 3 << 30), coa=COA2), now)


def test_a_fraction_beyond_the_tolerance_is_stale(registered):
    now = T0 + 100.75
    ident = ntp(now - 7, 0)  # 7.75 s behind: whole seconds would have called it 7
    check_133(deny(registered, request(ident=ident, coa=COA2), now), ident, now)


@pytest.mark.parametrize("ident", [I0, I0 - 1, ntp(T0 - 1, 0xFFFFFFFF)], ids=["equal", "lower", "lower-second"])
def test_133_identification_not_above_the_last_accepted(registered, ident):
    # Another care-of address, so it is not a duplicate of the current registration.
    reply = deny(registered, request(ident=ident, coa=COA2), now=T0 + 1)
    check_133(reply, ident, T0 + 1)


def test_133_replay_after_deregistration(registered):
    original = request(ident=I0)
    accept(registered, request(lifetime=0, coa=HOA, ident=ntp(T0 + 1)), T0 + 1)
    assert len(registered.bindings) == 0
    # Within the timestamp tolerance: only the last Identification can refuse it.
    reply = deny(registered, original, now=T0 + 2)
    check_133(reply, I0, T0 + 2)
    assert len(registered.bindings) == 0


def test_133_replay_after_expiry(ha):
    original = request(ident=I0, lifetime=3)
    accept(ha, original, T0)
    assert tunnels(ha.handle_timer(T0 + 3)) == [tset()]
    assert len(ha.bindings) == 0
    reply = deny(ha, original, now=T0 + 4)
    check_133(reply, I0, T0 + 4)
    assert len(ha.bindings) == 0


def test_133_replay_after_one_deregistration_and_another_expiry(ha):
    # Regression: the table once recomputed the last Identification from the remaining bindings on expiry,
    # forgetting a newer de-registration, so this replay was accepted.
    accept(ha, request(flags=Flags.S, coa=COA, lifetime=2, ident=ntp(T0, 1)), T0)
    accept(ha, request(flags=Flags.S, coa=COA2, lifetime=600, ident=ntp(T0, 2)), T0)
    registration_3 = request(flags=Flags.S, coa=COA3, lifetime=600, ident=ntp(T0, 3))
    accept(ha, registration_3, T0)
    accept(ha, request(lifetime=0, coa=COA3, ident=ntp(T0 + 1)), T0 + 1)  # deregister COA3 only
    assert coas(ha) == {COA, COA2}
    assert tunnels(ha.handle_timer(T0 + 2)) == [tset(COA2)]  # COA expired
    # An attacker replays the registration of COA3, 3 s old, Identification below the deregistration's.
    reply = deny(ha, registration_3, now=T0 + 3)
    check_133(reply, ntp(T0, 3), T0 + 3)


def test_denial_does_not_consume_the_identification(registered):
    ident = ntp(T0 + 1, 0x123)
    assert deny(registered, request(ident=ident, ha=ip("192.0.2.99"))).code == 136
    reply, _ = accept(registered, request(ident=ident, coa=COA2), T0 + 1)
    assert reply.identification == ident


def test_133_is_checked_before_the_administrative_checks(registered):
    ident = ntp(T0 - 100)
    reply = deny(registered, request(ident=ident, ha=ip("192.0.2.99"), flags=Flags.r), now=T0 + 1)
    check_133(reply, ident, T0 + 1, home_agent=ip("192.0.2.99"))


# -- 134: poorly formed -------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [Flags.r, Flags.x, Flags.r | Flags.x, Flags.S | Flags.T | Flags.x])
def test_134_reserved_bits(registered, flags):
    ident = ntp(T0 + 1, 0x5)
    reply = deny(registered, request(flags=flags, ident=ident, lifetime=0xFFFF))
    assert reply.code == 134
    assert reply.identification == ident and reply.home_agent == HA
    assert reply.lifetime == 1800  # capped, never above max_lifetime


@pytest.mark.parametrize("coa", [
    "0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.0.1",  # "this network", loopback
    "224.0.0.1", "239.255.255.255", "240.0.0.1", "255.255.255.254", "255.255.255.255",  # multicast, 240/4
    "10.1.0.5",  # the home address
    "10.1.0.9", "10.1.0.0", "10.1.255.255",  # home_network: another node's home address, its own addresses
    "192.0.2.1",  # the Home Agent's own address
])
def test_134_care_of_address_no_tunnel_can_reach(registered, coa):
    reply = deny(registered, request(coa=ip(coa), ident=ntp(T0 + 1)))
    assert reply.code == 134


@pytest.mark.parametrize("coa", ["1.0.0.1", "10.0.255.255", "10.2.0.0", "126.255.255.255", "128.0.0.1",
                                 "192.0.2.2", "223.255.255.254"])
def test_care_of_addresses_next_to_the_refused_ones_are_accepted(registered, coa):
    accept(registered, request(coa=ip(coa), ident=ntp(T0 + 1)), T0 + 1)
    assert coas(registered) == {ip(coa)}


# -- 136, 129, 139, 135 -------------------------------------------------------------------------------


@pytest.mark.parametrize("home_agent", ["192.0.2.99", "10.1.255.255", "255.255.255.255", "0.0.0.0"])
def test_136_unknown_home_agent_names_our_unicast_address(registered, home_agent):
    ident = ntp(T0 + 1, 0xBEEF)
    reply = deny(registered, request(ha=ip(home_agent), ident=ident))
    assert reply.code == 136
    assert reply.home_agent == HA
    assert reply.identification == ident
    assert reply.lifetime == 600


def test_129_home_address_outside_home_network(registered):
    hoa = ip("10.2.0.5")
    reply = deny(registered, request(hoa=hoa, ident=ntp(T0 + 1), spi=WIDE_SPI, key=WIDE_KEY), sa=WIDE_SA, hoa=hoa)
    assert reply.code == 129
    assert reply.home_agent == HA
    assert registered.bindings.bindings_of(hoa) == ()


def test_129_home_address_zero(registered):
    # 0.0.0.0 asks for a dynamic home address (RFC 2794), which we do not assign.
    reply = deny(registered, request(hoa=0, ident=ntp(T0 + 1), spi=ZERO_SPI, key=ZERO_KEY), sa=ZERO_SA, hoa=0)
    assert reply.code == 129


@pytest.mark.parametrize("flags", [Flags.M, Flags.G, Flags.M | Flags.G, Flags.G | Flags.T | Flags.S])
def test_139_encapsulation_unavailable(registered, flags):
    reply = deny(registered, request(flags=flags, ident=ntp(T0 + 1)))
    assert reply.code == 139


def test_135_too_many_simultaneous_bindings_but_renewal_works(ha):
    for n, coa in enumerate((COA, COA2, COA3)):
        accept(ha, request(flags=Flags.S, coa=coa, ident=ntp(T0, n)), T0)
    assert coas(ha) == {COA, COA2, COA3} and len(ha.bindings) == 3
    reply = deny(ha, request(flags=Flags.S, coa=COA4, ident=ntp(T0 + 1)))
    assert reply.code == 135
    # Re-registering a care-of address already bound is no new binding.
    reply, effects = accept(ha, request(flags=Flags.S, coa=COA2, lifetime=900, ident=ntp(T0 + 2)), T0 + 2)
    assert reply.lifetime == 900 and tunnels(effects) == []
    assert coas(ha) == {COA, COA2, COA3}
    [b2] = [b for b in ha.bindings.bindings_of(HOA) if b.care_of_address == COA2]
    assert b2.expires == T0 + 2 + 900
    # Without S the limit does not apply: the new binding replaces the others.
    reply, effects = accept(ha, request(coa=COA4, ident=ntp(T0 + 3)), T0 + 3)
    assert coas(ha) == {COA4}


# -- de-registration and replacement ------------------------------------------------------------------


@pytest.fixture
def three(ha):
    for n, coa in enumerate((COA, COA2, COA3)):
        accept(ha, request(flags=Flags.S, coa=coa, ident=ntp(T0, n)), T0)
    return ha


def test_deregister_one_care_of_address_keeps_the_others(three):
    ident = ntp(T0 + 1)
    reply, effects = accept(three, request(lifetime=0, coa=COA2, ident=ident), T0 + 1)
    assert reply.lifetime == 0 and reply.identification == ident
    assert tunnels(effects) == [tset(COA, COA3)]
    assert coas(three) == {COA, COA3} and len(three.bindings) == 2
    assert three.bindings.last_identification(HOA) == ident


def test_deregister_all_with_the_home_address_as_care_of(three):
    ident = ntp(T0 + 1)
    reply, effects = accept(three, request(lifetime=0, coa=HOA, ident=ident), T0 + 1)
    assert reply.lifetime == 0
    assert tunnels(effects) == [tset(home=True)]  # from home: the link learns the node's MAC again
    assert len(three.bindings) == 0 and three.bindings.bindings_of(HOA) == ()
    assert three.bindings.last_identification(HOA) == ident


def test_deregister_an_unknown_care_of_address_changes_nothing_but_is_accepted(three):
    reply, effects = accept(three, request(lifetime=0, coa=COA4, ident=ntp(T0 + 1)), T0 + 1)
    assert tunnels(effects) == [] and coas(three) == {COA, COA2, COA3}


def test_s_clear_replaces_every_binding(three):
    reply, effects = accept(three, request(coa=COA4, ident=ntp(T0 + 1)), T0 + 1)
    assert coas(three) == {COA4} and len(three.bindings) == 1
    assert tunnels(effects) == [tset(COA4)]


def test_s_clear_with_a_bound_care_of_address_keeps_only_that_one(three):
    reply, effects = accept(three, request(coa=COA2, ident=ntp(T0 + 1)), T0 + 1)
    assert coas(three) == {COA2}
    assert tunnels(effects) == [tset(COA2)]


# -- duplicates, lifetimes, effects -------------------------------------------------------------------


def test_exact_duplicate_is_accepted_without_extending_the_lifetime(ha):
    data = request(ident=I0, lifetime=600)
    accept(ha, data, T0)
    before = snapshot(ha)
    # 5 s later, within the timestamp tolerance (7 s): a retransmission whose reply was lost.
    reply, effects = accept(ha, data, T0 + 5)
    assert reply.lifetime == 595  # what is left, not 600 again
    assert reply.identification == I0
    assert all(isinstance(e, Send) for e in effects), effects  # nothing changed, so nothing to tell
    assert snapshot(ha) == before
    [b] = ha.bindings.bindings_of(HOA)
    assert b.expires == T0 + 600


def test_a_copy_of_the_current_registration_from_outside_the_tolerance_is_a_replay(ha):
    # With timestamps every retransmission is a new Identification (RFC 5944 3.6.3): an old copy, sent
    # again by anyone who captured it, is refused like any replay, and tells nothing of the binding.
    data = request(ident=I0, lifetime=600)
    accept(ha, data, T0)
    now = T0 + 100
    violations = ha.counters["security_violations"]
    reply = deny(ha, data, now=now)
    check_133(reply, I0, now)
    assert ha.counters["security_violations"] == violations + 1
    assert ha.counters["accepted.duplicate"] == 0


def test_duplicate_in_the_last_second_is_not_answered_with_lifetime_0(ha):
    # Lifetime 0 in an accepting reply reads as "deregistered" (RFC 5944 3.4).
    data = request(ident=I0, lifetime=5)
    accept(ha, data, T0)
    reply, _ = accept(ha, data, T0 + 4.5)
    assert reply.lifetime == 1


def test_padding_before_and_after_the_mhae_is_accepted(ha):
    reply, _ = accept(ha, request(before=b"\x00\x00", after=b"\x00"), T0)
    assert coas(ha) == {COA}


def test_duplicate_of_a_capped_registration_reports_the_capped_remainder(ha):
    data = request(ident=I0, lifetime=0xFFFF)
    reply, _ = accept(ha, data, T0)
    assert reply.lifetime == 1800
    reply, _ = accept(ha, data, T0 + 6)
    assert reply.lifetime == 1794


@pytest.mark.parametrize("asked, granted", [(0xFFFF, 1800), (1801, 1800), (1800, 1800), (1799, 1799), (1, 1)])
def test_lifetime_is_capped_at_max_lifetime(ha, asked, granted):
    reply, _ = accept(ha, request(lifetime=asked), T0)
    assert reply.lifetime == granted
    [b] = ha.bindings.bindings_of(HOA)
    assert b.lifetime == granted and b.expires == T0 + granted


def test_renewal_moves_expiry_and_emits_no_tunnel_effect(registered):
    ident = ntp(T0 + 10)
    reply, effects = accept(registered, request(ident=ident, lifetime=900), T0 + 10)
    assert tunnels(effects) == [] and len(sends(effects)) == 1
    [b] = registered.bindings.bindings_of(HOA)
    assert (b.expires, b.identification, b.lifetime) == (T0 + 10 + 900, ident, 900)
    # The old expiry no longer applies; the new one does.
    assert tunnels(registered.handle_timer(T0 + 600)) == []
    assert registered.bindings.bindings_of(HOA) == (b,)
    assert tunnels(registered.handle_timer(T0 + 910)) == [tset()]


def test_handover_to_a_new_care_of_address(registered):
    reply, effects = accept(registered, request(coa=COA2, ident=ntp(T0 + 5)), T0 + 5)
    assert tunnels(effects) == [tset(COA2)]
    assert coas(registered) == {COA2}


def test_t_bit_recorded_and_reverse_tunnel_requested(ha):
    flags = Flags.T | Flags.B | Flags.D
    reply, effects = accept(ha, request(flags=flags), T0)
    assert tunnels(effects) == [tset(COA, reverse=True)]
    [b] = ha.bindings.bindings_of(HOA)
    assert b.flags == flags
    assert b.flags & Flags.T


@pytest.mark.parametrize("before, after", [(0, Flags.T), (Flags.T, 0)])
def test_renewal_that_changes_the_t_bit_tells_the_data_plane(ha, before, after):
    # Regression: a renewal for the same care-of address once changed no tunnel even when T changed.
    accept(ha, request(flags=before, ident=I0), T0)
    reply, effects = accept(ha, request(flags=after, ident=ntp(T0 + 10)), T0 + 10)
    [b] = ha.bindings.bindings_of(HOA)
    assert b.flags == after
    assert tunnels(effects) == [tset(COA, reverse=bool(after))]
    # A further renewal with the same T is plain again.
    reply, effects = accept(ha, request(flags=after, ident=ntp(T0 + 20)), T0 + 20)
    assert tunnels(effects) == []


def test_binding_records_the_home_agent_it_was_registered_with(ha):
    accept(ha, request(), T0)
    [b] = ha.bindings.bindings_of(HOA)
    assert b.home_agent == HA


@pytest.mark.parametrize("changes", [{"lifetime": 10}, {"flags": Flags.x}, {"flags": Flags.T}],
                         ids=["shorter-lifetime", "reserved-bit", "t-bit"])
def test_same_identification_with_other_content_is_not_a_duplicate(registered, changes):
    # Regression: a duplicate was matched on (home address, care-of address, Identification) alone, so a
    # request reusing I0 but asking 10 s was "accepted, 590 s": more than asked (RFC 5944 3.4: MUST NOT
    # increase), and one with r/x set was accepted. It is a reused Identification: 133.
    # 1 s later, inside the timestamp tolerance: only the reuse of I0 can refuse it.
    reply = deny(registered, request(ident=I0, **changes), now=T0 + 1)
    check_133(reply, I0, T0 + 1)


def test_expiry_emits_tunnel_down_and_no_reply(registered):
    assert registered.next_timer() == T0 + 600
    assert tunnels(registered.handle_timer(T0 + 599.9)) == []
    effects = registered.handle_timer(T0 + 600)
    assert tunnels(effects) == [tset()]
    assert sends(effects) == []  # 3.8: no Registration Reply because a lifetime expired
    assert len(registered.bindings) == 0
    assert registered.counters["expired"] == 1


def test_key_and_spi_constants_match_the_config(ha):
    # Guards the helpers themselves: the HA's association is the one the tests sign with.
    assert ha.registrar.security.covering(HOA) == {SPI: SA}
    assert SA.key == KEY
    assert mhae(b"x")[:2] == b"x\x20"


def test_status_and_binding_list_views(three):
    status = three.status(T0 + 5)
    assert status["bindings"] == 3 and status["address"] == "192.0.2.1" and status["role"] == "active"
    assert status["counters"]["accepted"] == 3
    rows = three.binding_list(T0 + 5)
    assert [r["care_of_address"] for r in rows] == ["198.51.100.7", "198.51.100.8", "198.51.100.9"]
    assert all(r["home_address"] == "10.1.0.5" and r["remaining"] == 595 for r in rows)
    assert three.binding_list(T0 + 5, home_address=IPv4Address("10.1.0.6")) == []


# -- tombstones (docs/protocol.md, "Merging after a partition") ---------------------------------------


def test_tombstones_last_max_lifetime_and_two_replay_tolerances():
    ha = make_ha(max_lifetime=600)
    assert ha.bindings.tombstone_lifetime == 600 + 2 * 7
    # A reload to a shorter max_lifetime does not shorten them: bindings granted before still run.
    ha.registrar.reconfigure(replace(ha.registrar.settings, max_lifetime=60), ha.registrar.security)
    assert ha.bindings.tombstone_lifetime == 614


def test_deregistering_one_care_of_address_leaves_a_tombstone_until_it_can_cancel_nothing(three):
    ident = ntp(T0 + 1)
    accept(three, request(lifetime=0, coa=COA2, ident=ident), T0 + 1)
    [tombstone] = three.bindings.state(HOA).tombstones
    assert tombstone == (COA2, ident, T0 + 1 + 1800 + 14)
    # An older registration of COA2 from a member across a partition (Identification below the
    # de-registration) changes nothing when it arrives.
    older = three.bindings.state(HOA)._replace(bindings=(
        three.bindings.bindings_of(HOA)[0]._replace(care_of_address=COA2, identification=ntp(T0, 7)),))
    three.bindings.merge(HOA, older, T0 + 2)
    assert coas(three) == {COA, COA3}
    three.bindings.expire(T0 + 1 + 1814)
    # COA2's is forgotten; COA and COA3 ended meanwhile (simultaneous bindings: tombstones of their own).
    assert [t.care_of_address for t in three.bindings.state(HOA).tombstones] == [COA, COA3]


def test_a_registration_without_s_clears_and_drops_the_tombstones(three):
    accept(three, request(lifetime=0, coa=COA2, ident=ntp(T0 + 1)), T0 + 1)
    accept(three, request(coa=COA4, ident=ntp(T0 + 2)), T0 + 2)
    state = three.bindings.state(HOA)
    assert state.tombstones == () and state.cleared == ntp(T0 + 2) and coas(three) == {COA4}


def test_deregistering_all_clears_without_a_tombstone(three):
    accept(three, request(lifetime=0, coa=COA2, ident=ntp(T0 + 1)), T0 + 1)
    accept(three, request(lifetime=0, coa=HOA, ident=ntp(T0 + 2)), T0 + 2)
    assert three.bindings.state(HOA) == (ntp(T0 + 2), ntp(T0 + 2), (), ())
