"""A mobile node client: builds and authenticates Registration Requests, retries on timeout,
resynchronises its clock on code 133, and checks every reply (RFC 5944 sections 3.6 and 5.7). The one
reply it reports without being able to authenticate it is a 131: see ``UnauthenticatedRefusal``.

``LoadGenerator`` drives many mobile nodes through one socket with many requests in flight; the benchmark
and operators' stress tests use it.
"""

from __future__ import annotations

import random
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from homeagent.core.replay import LOW32, ntp_identification
from homeagent.wire.auth import SecurityAssociation
from homeagent.wire.errors import ParseError
from homeagent.wire.extensions import ExtensionType
from homeagent.wire.registration import RegistrationReply, RegistrationRequest, ReplyCode

NTP_SECOND = 1 << 32


class ReplyError(ValueError):
    """A datagram that is not a valid reply to the request we sent."""


class UnauthenticatedRefusal(ReplyError):
    """A 131 (mobile node failed authentication) answering our request, whose own authenticator does not
    verify with our key, or that has none.

    A Home Agent that cannot authenticate a request still answers 131 (RFC 5944 3.8.2.1), sealed with the
    association it holds for the home address (or none), and when our key is the wrong one that seal cannot
    verify here. Such a reply changes nothing (3.6.2.1: it is discarded, no clock or lifetime is taken from
    it), but "refused: your key is wrong" is what the operator needs to hear, not "no reply". Every other
    code stays unbelievable unauthenticated: anyone could forge an "accepted".
    """

    def __init__(self, reply: RegistrationReply) -> None:
        super().__init__("reply authentication failed (a 131 we cannot verify)")
        self.reply = reply


@dataclass
class Outcome:
    reply: RegistrationReply
    request: RegistrationRequest
    attempts: int
    resynchronised: bool
    authenticated: bool = True  # False only for an UnauthenticatedRefusal's 131

    @property
    def code(self) -> int:
        return self.reply.code

    @property
    def accepted(self) -> bool:
        return self.reply.code < 64 and self.authenticated

    def as_dict(self) -> dict[str, object]:
        code = self.reply.code
        return {
            "code": code,
            "code_name": ReplyCode(code).name if code in ReplyCode._value2member_map_ else "UNKNOWN",
            "accepted": self.accepted,
            "authenticated": self.authenticated,
            "lifetime": self.reply.lifetime,
            "home_address": str(IPv4Address(self.reply.home_address)),
            "home_agent": str(IPv4Address(self.reply.home_agent)),
            "care_of_address": str(IPv4Address(self.request.care_of_address)),
            "identification": self.reply.identification,
            "attempts": self.attempts,
            "resynchronised": self.resynchronised,
        }


@dataclass
class Identifications:
    """Strictly increasing NTP timestamps (RFC 5944 5.7.1), corrected by what the Home Agent said."""

    offset: int = 0  # added to our clock, in NTP units; learnt from a 133 reply
    last: int = 0

    def next(self) -> int:
        ident = (ntp_identification(time.time()) + self.offset) & ((1 << 64) - 1)
        # Fraction bits our clock cannot supply SHOULD be random (5.7.1): the low 8 are.
        ident = (ident & ~0xFF) | random.getrandbits(8)
        if ident <= self.last:
            ident = self.last + 1
        self.last = ident
        return ident

    def resynchronise(self, sent: int, replied: int) -> None:
        """Adopt the Home Agent's clock from a 133 reply (RFC 5944 5.7.1).

        The Identifications sent on the wrong clock were refused, so they no longer bound the next one:
        with a clock that ran ahead, keeping them would keep every next request ahead too.
        """
        self.offset += ((replied >> 32) - (sent >> 32)) * NTP_SECOND
        self.last = 0


@dataclass
class MobileNode:
    home_address: IPv4Address
    home_agent: IPv4Address
    association: SecurityAssociation
    port: int = 434
    identifications: Identifications = field(default_factory=Identifications)

    def request(self, care_of_address: IPv4Address, lifetime: int, flags: int = 0) -> bytes:
        req = RegistrationRequest(
            flags,
            lifetime,
            int(self.home_address),
            int(self.home_agent),
            int(care_of_address),
            self.identifications.next(),
        )
        return self.association.sign(req.header_bytes())

    def check_reply(self, data: bytes, sent: RegistrationRequest) -> RegistrationReply:
        """The reply, if it answers ``sent`` and its Mobile-Home authenticator verifies; raises
        UnauthenticatedRefusal for a 131 that answers ``sent`` but does not verify, ReplyError otherwise."""
        try:
            reply = RegistrationReply.parse(data)
        except ParseError as exc:
            raise ReplyError(exc.reason) from None
        if reply.home_address != sent.home_address or reply.identification & LOW32 != sent.identification & LOW32:
            raise ReplyError("answers another request")
        mhae = reply.extension(ExtensionType.MOBILE_HOME_AUTH)
        if mhae is None or not self.association.verify(reply.raw, mhae):
            if reply.code == ReplyCode.MOBILE_NODE_FAILED_AUTHENTICATION:
                raise UnauthenticatedRefusal(reply)
            raise ReplyError("reply authentication failed")
        return reply

    def register(
        self,
        care_of_address: IPv4Address,
        lifetime: int,
        flags: int = 0,
        timeout: float = 1.0,
        retries: int = 3,
    ) -> Outcome:
        """Register (or, with lifetime 0, deregister); retry on timeout, resynchronise once on 133.

        Raises TimeoutError when no valid reply came after ``retries`` retransmissions. A 131 we cannot
        authenticate is returned as an Outcome with ``authenticated`` False (see UnauthenticatedRefusal).
        """
        resynchronised = False
        attempts = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((str(self.home_agent), self.port))
            while True:
                datagram = self.request(care_of_address, lifetime, flags)
                sent = RegistrationRequest.parse(datagram)
                answer = self._exchange(sock, datagram, sent, timeout, retries)
                attempts += 1
                if answer is None:
                    raise TimeoutError(f"no reply from {self.home_agent}:{self.port}")
                reply, authenticated = answer
                if reply.code == ReplyCode.IDENTIFICATION_MISMATCH and not resynchronised:
                    self.identifications.resynchronise(sent.identification, reply.identification)
                    resynchronised = True
                    continue
                return Outcome(reply, sent, attempts, resynchronised, authenticated)

    def _exchange(
        self, sock: socket.socket, datagram: bytes, sent: RegistrationRequest, timeout: float, retries: int
    ) -> tuple[RegistrationReply, bool] | None:
        """The first authenticated reply to ``sent``, with True. Failing that, an unauthenticated 131, with
        False, once the attempt it came in has run out: a genuine reply racing a forged 131 still wins, and
        sending the same request again would only be refused again. None when nothing came."""
        refusal: RegistrationReply | None = None
        for attempt in range(retries + 1):
            try:
                sock.send(datagram)
            except ConnectionRefusedError:  # an ICMP error for the last one, reported here: send again
                sock.send(datagram)
            deadline = time.monotonic() + timeout * (2**attempt)  # back off (RFC 5944 3.6.3)
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(4096)
                except (TimeoutError, socket.timeout):
                    break
                except ConnectionRefusedError:
                    continue
                try:
                    return self.check_reply(data, sent), True
                except UnauthenticatedRefusal as exc:
                    refusal = refusal or exc.reply
                except ReplyError:
                    continue
            if refusal is not None:
                return refusal, False
        return None


# -- load generation ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    sent: int = 0
    replies: int = 0
    accepted: int = 0
    lost: int = 0
    invalid: int = 0
    codes: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    newest: dict[int, int] = field(default_factory=dict)  # home address -> last accepted Identification

    @property
    def rate(self) -> float:
        """Accepted registrations per second."""
        return self.accepted / self.seconds if self.seconds else 0.0


class LoadGenerator:
    """Many mobile nodes registering through one socket, ``window`` requests in flight.

    Home addresses are taken in turn from ``home_addresses``; every request has a fresh Identification and
    every reply is authenticated before it is counted.
    """

    def __init__(
        self,
        home_agent: IPv4Address,
        port: int,
        association: SecurityAssociation,
        home_addresses: list[IPv4Address],
        care_of_address: IPv4Address,
        lifetime: int = 600,
        window: int = 64,
        timeout: float = 1.0,
        record: bool = False,
    ) -> None:
        """With ``record``, the result keeps every mobile node's last accepted Identification (what a
        failover test checks the new active member against)."""
        self.target = (str(home_agent), port)
        self.home_agent = int(home_agent)
        self.association = association
        self.home_addresses = [int(a) for a in home_addresses]
        self.care_of_address = int(care_of_address)
        self.lifetime = lifetime
        self.window = window
        self.timeout = timeout
        self.record = record
        self.identifications = Identifications()

    def _receive(self, sock: socket.socket, pending: dict[int, tuple[int, float]], result: LoadResult) -> None:
        """Count every waiting reply that answers a pending request and verifies."""
        verify = self.association.verify
        expected_size = 20 + 6 + self.association.digest_size
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                continue
            entry = pending.pop(int.from_bytes(data[16:20], "big"), None) if len(data) >= 20 else None
            if entry is None or len(data) != expected_size:
                result.invalid += 1
                continue
            try:
                reply = RegistrationReply.parse(data)
            except ParseError:
                result.invalid += 1
                continue
            mhae = reply.extensions[0] if reply.extensions else None
            if mhae is None or reply.home_address != entry[0] or not verify(reply.raw, mhae):
                result.invalid += 1
                continue
            result.replies += 1
            result.codes[reply.code] = result.codes.get(reply.code, 0) + 1
            if reply.code < 64:
                result.accepted += 1
                if self.record and reply.identification > result.newest.get(entry[0], 0):
                    result.newest[entry[0]] = reply.identification

    def _requests(self) -> Iterator[tuple[int, int, bytes]]:
        sign = self.association.sign
        while True:
            for hoa in self.home_addresses:
                ident = self.identifications.next()
                header = RegistrationRequest(0, self.lifetime, hoa, self.home_agent, self.care_of_address, ident)
                yield hoa, ident, sign(header.header_bytes())

    def run(self, count: int | None = None, duration: float | None = None, rate: float | None = None) -> LoadResult:
        """Send ``count`` requests, or for ``duration`` seconds, whichever ends first; at most ``rate`` a
        second if given (a steady load), else as fast as replies free the window."""
        if count is None and duration is None:
            raise ValueError("give a count or a duration")
        result = LoadResult()
        pending: dict[int, tuple[int, float]] = {}  # low 32 bits of identification -> (home address, sent at)
        requests = self._requests()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.connect(self.target)
        sock.setblocking(False)
        start = time.monotonic()
        end = start + duration if duration is not None else float("inf")
        budget = count if count is not None else 1 << 62
        gap = 1.0 / rate if rate else 0.0
        next_send = start
        next_sweep = start + self.timeout
        try:
            while True:
                now = time.monotonic()
                if now < end:
                    while len(pending) < self.window and result.sent < budget and now >= next_send:
                        hoa, ident, datagram = next(requests)
                        try:
                            sock.send(datagram)
                        except BlockingIOError:
                            break
                        except ConnectionRefusedError:  # an earlier request's ICMP error, reported here
                            result.lost += 1
                            break
                        pending[ident & LOW32] = (hoa, now)
                        result.sent += 1
                        next_send = max(next_send + gap, now - 0.1) if gap else now
                if not pending and (now >= end or result.sent >= budget):
                    break
                if now >= next_sweep:  # replies that never came
                    stale = [k for k, (_, at) in pending.items() if now - at > self.timeout]
                    for k in stale:
                        del pending[k]
                    result.lost += len(stale)
                    next_sweep = now + self.timeout / 4
                    if now >= end + self.timeout:
                        result.lost += len(pending)
                        break
                wait = min(0.05, max(0.0, next_send - now)) if gap and len(pending) < self.window else 0.05
                if select.select([sock], [], [], wait)[0]:
                    self._receive(sock, pending, result)
        finally:
            sock.close()
        result.seconds = time.monotonic() - start
        return result

