"""The mobile node client's sans-I/O parts: Identifications (RFC 5944 5.7.1), requests, reply checks (3.6.2.1)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest

from homeagent.core.effects import Send
from homeagent.mobile_node import Identifications, MobileNode, Outcome, ReplyError, UnauthenticatedRefusal
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.extensions import ExtensionType
from homeagent.wire.registration import Flags, RegistrationReply, RegistrationRequest, reply_header

from .support import COA, HA, HOA, KEY, SA, SOURCE, T0, make_ha, ntp, wire_ntp

LOW32 = 0xFFFFFFFF


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock(T0 + 0.5)
    monkeypatch.setattr(time, "time", c)
    return c


def node(**kw) -> MobileNode:
    return MobileNode(IPv4Address(HOA), IPv4Address(HA), SA, **kw)


# -- Identifications ----------------------------------------------------------------------------------


def test_identifications_are_ntp_timestamps(clock):
    ident = Identifications().next()
    assert wire_ntp(ident) >> 32 == int(clock.now) + 2_208_988_800  # NTP seconds on the wire
    # The fraction is the clock's (0.5 s) above the 8 random low bits.
    assert (ident & LOW32) >> 8 == (1 << 31) >> 8


def test_identifications_strictly_increase_on_a_stopped_clock(clock):
    ids = Identifications()
    seen = [ids.next() for _ in range(500)]
    assert all(a < b for a, b in zip(seen, seen[1:]))


def test_identifications_strictly_increase_when_the_clock_steps_back(clock):
    ids = Identifications()
    first = ids.next()
    clock.now -= 3600
    second = ids.next()
    assert second > first


def test_resynchronise_applies_the_home_agents_seconds_when_it_is_ahead(clock):
    ids = Identifications()
    sent = ids.next()
    ha_seconds = (sent >> 32) + 100
    ids.resynchronise(sent, (ha_seconds << 32) | (sent & LOW32))
    assert ids.next() >> 32 == ha_seconds
    clock.now += 5
    assert ids.next() >> 32 == ha_seconds + 5


def test_resynchronise_applies_the_home_agents_seconds_when_it_is_behind(clock):
    """The mobile node's clock is 100 s fast: 133, resynchronised, then accepted (RFC 5944 3.6.2.3).

    Regression: resynchronise kept ``last``, so the next Identification was last + 1, still 100 s ahead.
    """
    ha, mn = make_ha(), node()
    ha_now = clock.now - 100
    data = mn.request(IPv4Address(COA), 600)
    sent = RegistrationRequest.parse(data)
    [send] = [e for e in ha.receive_registration(data, SOURCE, ha_now) if isinstance(e, Send)]
    reply = mn.check_reply(send.datagram, sent)
    assert reply.code == 133 and wire_ntp(reply.identification) >> 32 == int(ha_now) + 2_208_988_800
    mn.identifications.resynchronise(sent.identification, reply.identification)
    data = mn.request(IPv4Address(COA), 600)
    assert RegistrationRequest.parse(data).identification >> 32 == reply.identification >> 32
    [send] = [e for e in ha.receive_registration(data, SOURCE, ha_now) if isinstance(e, Send)]
    assert mn.check_reply(send.datagram, RegistrationRequest.parse(data)).code == 0


# -- requests -----------------------------------------------------------------------------------------


def test_request_is_signed_and_carries_every_field(clock):
    mn = node()
    data = mn.request(IPv4Address(COA), 600, Flags.S | Flags.T)
    req = RegistrationRequest.parse(data)
    assert (req.flags, req.lifetime, req.home_address, req.home_agent, req.care_of_address) == (
        Flags.S | Flags.T, 600, HOA, HA, COA)
    assert wire_ntp(req.identification) >> 32 == int(clock.now) + 2_208_988_800
    [mhae] = req.extensions
    assert mhae.type == ExtensionType.MOBILE_HOME_AUTH and mhae.spi == 256
    assert SA.verify(req.raw, mhae)


def test_requests_are_accepted_by_the_home_agent(clock):
    ha, mn = make_ha(), node()
    for n in range(3):
        data = mn.request(IPv4Address(COA), 600)
        sent = RegistrationRequest.parse(data)
        [send] = [e for e in ha.receive_registration(data, SOURCE, clock.now) if isinstance(e, Send)]
        reply = mn.check_reply(send.datagram, sent)
        assert reply.code == 0 and reply.identification == sent.identification
        clock.now += 0.001  # even within a second, each request has a new Identification


def test_resynchronisation_with_the_home_agent(clock):
    """The mobile node's clock is 100 s slow: 133, then resynchronised, then accepted."""
    ha, mn = make_ha(), node()
    ha_now = clock.now + 100
    data = mn.request(IPv4Address(COA), 600)
    sent = RegistrationRequest.parse(data)
    [send] = [e for e in ha.receive_registration(data, SOURCE, ha_now) if isinstance(e, Send)]
    reply = mn.check_reply(send.datagram, sent)
    assert reply.code == 133
    mn.identifications.resynchronise(sent.identification, reply.identification)
    data = mn.request(IPv4Address(COA), 600)
    [send] = [e for e in ha.receive_registration(data, SOURCE, ha_now) if isinstance(e, Send)]
    assert mn.check_reply(send.datagram, RegistrationRequest.parse(data)).code == 0


# -- reply checks -------------------------------------------------------------------------------------


@pytest.fixture
def exchange(clock):
    mn = node()
    data = mn.request(IPv4Address(COA), 600)
    sent = RegistrationRequest.parse(data)
    return mn, sent


def signed_reply(code=0, lifetime=600, hoa=HOA, ha=HA, ident=0, sa=SA) -> bytes:
    return sa.sign(reply_header(code, lifetime, hoa, ha, ident))


def test_check_reply_accepts_a_matching_authenticated_reply(exchange):
    mn, sent = exchange
    reply = mn.check_reply(signed_reply(ident=sent.identification), sent)
    assert isinstance(reply, RegistrationReply) and reply.code == 0


def test_check_reply_accepts_other_high_bits(exchange):
    # A 133 reply carries the Home Agent's seconds in the high 32 bits; only the low 32 must match.
    mn, sent = exchange
    ident = (((sent.identification >> 32) + 1000) << 32) | (sent.identification & LOW32)
    assert mn.check_reply(signed_reply(code=133, ident=ident), sent).code == 133


def test_check_reply_rejects_wrong_low_32_bits(exchange):
    mn, sent = exchange
    with pytest.raises(ReplyError):
        mn.check_reply(signed_reply(ident=sent.identification ^ 1), sent)


def test_check_reply_rejects_wrong_home_address(exchange):
    mn, sent = exchange
    with pytest.raises(ReplyError):
        mn.check_reply(signed_reply(ident=sent.identification, hoa=HOA + 1), sent)


def test_check_reply_rejects_a_bad_authenticator(exchange):
    mn, sent = exchange
    data = bytearray(signed_reply(ident=sent.identification))
    data[-1] ^= 0x80
    with pytest.raises(ReplyError):
        mn.check_reply(bytes(data), sent)


def test_check_reply_rejects_another_key_and_a_missing_authenticator(exchange):
    mn, sent = exchange
    other = SecurityAssociation(256, Algorithm.HMAC_MD5, bytes(16))
    with pytest.raises(ReplyError):
        mn.check_reply(signed_reply(ident=sent.identification, sa=other), sent)
    with pytest.raises(ReplyError):
        mn.check_reply(reply_header(0, 600, HOA, HA, sent.identification), sent)


@pytest.mark.parametrize("data", [b"", b"\x03" * 19, b"\x01" + bytes(40)])
def test_check_reply_rejects_what_is_not_a_reply(exchange, data):
    mn, sent = exchange
    with pytest.raises(ReplyError):
        mn.check_reply(data, sent)


WRONG_SA = SecurityAssociation(256, Algorithm.HMAC_MD5, bytes.fromhex("0f" * 16))


def test_check_reply_reports_an_unauthenticated_131_as_such(exchange):
    """A Home Agent that cannot authenticate the request answers 131 sealed with its own key (RFC 5944
    3.8.2.1); with our key the wrong one, that seal cannot verify here."""
    mn, sent = exchange
    for data in (signed_reply(code=131, ident=sent.identification, sa=WRONG_SA),
                 reply_header(131, 600, HOA, HA, sent.identification)):
        with pytest.raises(UnauthenticatedRefusal) as caught:
            mn.check_reply(data, sent)
        assert caught.value.reply.code == 131


@pytest.mark.parametrize("code", [0, 1, 129, 133])
def test_check_reply_believes_no_other_unauthenticated_code(exchange, code):
    """An unauthenticated "accepted" (or 133, which would move our clock) is what a forger sends."""
    mn, sent = exchange
    with pytest.raises(ReplyError) as caught:
        mn.check_reply(signed_reply(code=code, ident=sent.identification, sa=WRONG_SA), sent)
    assert not isinstance(caught.value, UnauthenticatedRefusal)


def test_an_unauthenticated_131_for_another_request_is_no_answer(exchange):
    mn, sent = exchange
    with pytest.raises(ReplyError) as caught:
        mn.check_reply(signed_reply(code=131, ident=sent.identification ^ 1, sa=WRONG_SA), sent)
    assert not isinstance(caught.value, UnauthenticatedRefusal)


# -- register() against a Home Agent on loopback that answers as told -------------------------------


Answer = Callable[[RegistrationRequest], list[bytes]]


@pytest.fixture
def fake_ha() -> Iterator[Callable[[Answer], MobileNode]]:
    """A UDP socket on 127.0.0.1 answering each request with what ``answer`` makes of it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()
    threads = []

    def start(answer: Answer) -> MobileNode:
        def serve() -> None:
            while not stop.is_set():
                try:
                    data, source = sock.recvfrom(4096)
                except (TimeoutError, socket.timeout):
                    continue
                for datagram in answer(RegistrationRequest.parse(data)):
                    sock.sendto(datagram, source)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return MobileNode(IPv4Address(HOA), IPv4Address("127.0.0.1"), SA, sock.getsockname()[1])

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=2)
    sock.close()


def answers(*replies: tuple[int, SecurityAssociation]) -> Answer:
    def answer(req: RegistrationRequest) -> list[bytes]:
        return [signed_reply(code, req.lifetime, req.home_address, req.home_agent, req.identification, sa)
                for code, sa in replies]

    return answer


def test_register_reports_an_unauthenticated_131(fake_ha):
    """It used to be dropped like any unauthenticated reply, and the operator read "no reply" when the
    Home Agent had said "your key is wrong"."""
    received = []

    def answer(req: RegistrationRequest) -> list[bytes]:
        received.append(req)
        return answers((131, WRONG_SA))(req)

    outcome = fake_ha(answer).register(IPv4Address(COA), 600, timeout=0.2, retries=3)
    assert (outcome.code, outcome.authenticated, outcome.accepted) == (131, False, False)
    assert outcome.as_dict()["authenticated"] is False and outcome.as_dict()["code_name"] == (
        "MOBILE_NODE_FAILED_AUTHENTICATION")
    assert len(received) == 1, "the same request sent again would only be refused again"


def test_register_prefers_an_authenticated_reply_to_an_unauthenticated_131(fake_ha):
    """A forged 131 that races the Home Agent's genuine reply does not win."""
    node = fake_ha(answers((131, WRONG_SA), (0, SA)))
    outcome = node.register(IPv4Address(COA), 600, timeout=0.5, retries=0)
    assert (outcome.code, outcome.authenticated, outcome.accepted) == (0, True, True)


def test_register_never_believes_an_unauthenticated_accept(fake_ha):
    node = fake_ha(answers((0, WRONG_SA)))
    with pytest.raises(TimeoutError, match="no reply"):
        node.register(IPv4Address(COA), 600, timeout=0.05, retries=1)


def test_each_retransmission_is_a_new_request_and_a_late_reply_to_an_earlier_one_counts(fake_ha):
    """RFC 5944 3.6.3: with timestamps a retransmission carries a new Identification (the Home Agent
    answers an old copy of a request only within its replay tolerance). The reply to the first request,
    late, still answers the registration."""
    received: list[RegistrationRequest] = []

    def answer(req: RegistrationRequest) -> list[bytes]:
        received.append(req)
        if len(received) < 3:
            return []  # lost
        return answers((0, SA))(received[0])  # at last, the answer to the first one

    outcome = fake_ha(answer).register(IPv4Address(COA), 600, timeout=0.05, retries=3)
    assert outcome.accepted and outcome.attempts == 1
    idents = [r.identification for r in received]
    assert len(idents) == 3 and idents == sorted(set(idents)), "a new, larger Identification each time"
    assert outcome.request.identification == idents[0]
    assert [r.care_of_address for r in received] == [int(IPv4Address(COA))] * 3


def test_outcome_as_dict(exchange):
    mn, sent = exchange
    reply = RegistrationReply.parse(signed_reply(code=133, lifetime=0, ident=sent.identification))
    d = Outcome(reply, sent, attempts=2, resynchronised=True).as_dict()
    assert d["code"] == 133 and d["code_name"] == "IDENTIFICATION_MISMATCH" and d["accepted"] is False
    assert d["home_address"] == "10.1.0.5" and d["care_of_address"] == "198.51.100.7"
    assert d["attempts"] == 2 and d["resynchronised"] is True and d["authenticated"] is True
    odd = RegistrationReply.parse(signed_reply(code=77, ident=sent.identification))
    assert Outcome(odd, sent, 1, False).as_dict()["code_name"] == "UNKNOWN"


def test_key_constant():
    assert SA.key == KEY and wire_ntp(ntp(T0)) >> 32 == int(T0) + 2_208_988_800


@pytest.mark.parametrize(("flags", "source"), [(int(Flags.D), "127.0.0.5"), (0, "127.0.0.1")],
                         ids=["co-located", "via-foreign-agent"])
def test_a_co_located_care_of_address_is_the_requests_source(flags, source):
    """RFC 5944 3.6.1.1: a mobile node registering a co-located care-of address (D) sends from it; any
    other request leaves from whatever address the route gives (here loopback's first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        node = MobileNode(HOA, IPv4Address("127.0.0.1"), SA, server.getsockname()[1])
        with pytest.raises(TimeoutError):  # nobody answers: what matters is where it came from
            node.register(IPv4Address("127.0.0.5"), 60, flags, timeout=0.05, retries=0)
        data, sender = server.recvfrom(4096)
    assert sender[0] == source
    assert RegistrationRequest.parse(data).care_of_address == int(IPv4Address("127.0.0.5"))
