"""A mobile node client: builds and authenticates Registration Requests, retries on timeout,
resynchronises its clock on code 133, and checks every reply (RFC 5944 sections 3.6 and 5.7). The one
reply it reports without being able to authenticate it is a 131: see ``UnauthenticatedRefusal``.

``Session`` keeps one mobile node registered (``homeagent mn up``): it renews before the lifetime runs out
and re-registers on a new care-of address. ``LoadGenerator`` drives many mobile nodes through one socket
with many requests in flight; the benchmark and operators' stress tests use it.
"""

from __future__ import annotations

import random
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Protocol

from homeagent.core.replay import LOW32, ntp_identification
from homeagent.wire.auth import SecurityAssociation
from homeagent.wire.era import to_wire
from homeagent.wire.errors import ParseError
from homeagent.wire.extensions import ExtensionType
from homeagent.wire.registration import (
    INFINITE_LIFETIME,
    Flags,
    RegistrationReply,
    RegistrationRequest,
    ReplyCode,
)

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
            "identification": to_wire(self.reply.identification),  # as on the wire
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

        Raises TimeoutError when no valid reply came after ``retries`` retransmissions, OSError when a
        co-located care-of address (D) is not one of this host's. A 131 we cannot authenticate is returned
        as an Outcome with ``authenticated`` False (see UnauthenticatedRefusal).
        """
        resynchronised = False
        attempts = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            if flags & Flags.D:  # RFC 5944 3.6.1.1: from the address of the interface it is sent on, which
                sock.bind((str(care_of_address), 0))  # for a co-located care-of address is that address
            sock.connect((str(self.home_agent), self.port))
            while True:
                answer = self._exchange(sock, lambda: self.request(care_of_address, lifetime, flags), timeout,
                                        retries)
                attempts += 1
                if answer is None:
                    raise TimeoutError(f"no reply from {self.home_agent}:{self.port}")
                reply, sent, authenticated = answer
                if reply.code == ReplyCode.IDENTIFICATION_MISMATCH and not resynchronised:
                    self.identifications.resynchronise(sent.identification, reply.identification)
                    resynchronised = True
                    continue
                return Outcome(reply, sent, attempts, resynchronised, authenticated)

    def _exchange(
        self, sock: socket.socket, build: Callable[[], bytes], timeout: float, retries: int
    ) -> tuple[RegistrationReply, RegistrationRequest, bool] | None:
        """The first authenticated reply to one of the requests sent, with that request and True. Each
        retransmission is a new request from ``build``, with a new Identification (RFC 5944 3.6.3: with
        timestamps it counts as a new registration; the Home Agent answers an old copy only within its
        replay tolerance), and a reply to any of them counts. Failing that, an unauthenticated 131, with
        False, once the attempt it came in has run out: a genuine reply racing a forged 131 still wins, and
        sending the same request again would only be refused again. None when nothing came."""
        refusal: tuple[RegistrationReply, RegistrationRequest] | None = None
        sent: list[RegistrationRequest] = []
        for attempt in range(retries + 1):
            datagram = build()
            sent.append(RegistrationRequest.parse(datagram))
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
                for request in reversed(sent):  # the newest first: the one most replies answer
                    try:
                        return self.check_reply(data, request), request, True
                    except UnauthenticatedRefusal as exc:
                        refusal = refusal or (exc.reply, request)
                        break
                    except ReplyError:
                        continue
            if refusal is not None:
                return refusal[0], refusal[1], False
        return None


# -- staying registered (homeagent mn up) ------------------------------------------------------------


@dataclass(frozen=True)
class RenewalPolicy:
    """When a mobile node registers again (RFC 5944 3.6: it re-registers before its lifetime runs out).

    ``margin`` is what one ``MobileNode.register`` call can take with every retransmission (timeout x (1 + 2
    + ... + 2^retries)): renewing that long before expiry lets the last retransmission still go out while
    the binding holds, so a lost request or reply costs nothing. A short lifetime is renewed at half of it
    (a 10 s lifetime at 5 s, not at -5 s). A failed attempt (no reply after every retransmission, or a
    refusal) is tried again after 1 s, doubling up to 30 s: a Home Agent that is down or overloaded is not
    hammered, and one that comes back is found within 30 s.
    """

    margin: float
    retry_min: float = 1.0
    retry_max: float = 30.0

    @classmethod
    def for_client(cls, timeout: float, retries: int) -> RenewalPolicy:
        return cls(timeout * (2 ** (retries + 1) - 1))

    def renew_at(self, sent_at: float, granted: int) -> float | None:
        """When to renew a binding granted ``granted`` seconds by a reply to a request sent at ``sent_at``;
        None for an infinite lifetime (0xFFFF, RFC 5944 3.3). The lifetime is counted from the sending:
        the Home Agent counts it from its receipt, later, so ours ends first."""
        if granted == INFINITE_LIFETIME:
            return None
        return sent_at + max(granted / 2, granted - self.margin)

    def retry_at(self, now: float, failures: int) -> float:
        """When to try again after ``failures`` failed attempts in a row (1 for the first)."""
        return now + min(self.retry_max, self.retry_min * 2 ** max(0, failures - 1))


class Registrar(Protocol):
    """What a ``Session`` needs of a ``MobileNode`` (a fake one in the unit tests)."""

    def register(self, care_of_address: IPv4Address, lifetime: int, flags: int = 0, timeout: float = 1.0,
                 retries: int = 3) -> Outcome: ...


class Session:
    """One mobile node kept registered at one care-of address at a time: ``step`` registers when due and
    says when it is next due; ``move`` re-registers on a new care-of address now; ``close`` de-registers.
    No clock is read but ``clock`` (monotonic), and nothing is printed but through ``report``."""

    def __init__(self, node: Registrar, care_of: IPv4Address, lifetime: int, flags: int,
                 policy: RenewalPolicy, clock: Callable[[], float] = time.monotonic,
                 report: Callable[[str], None] = print, timeout: float = 1.0, retries: int = 3) -> None:
        self.node = node
        self.care_of = care_of
        self.lifetime = lifetime
        self.flags = flags
        self.policy = policy
        self.clock = clock
        self.report = report
        self.timeout = timeout
        self.retries = retries
        self.due: float | None = clock()  # None: nothing to do until told (an infinite lifetime)
        self.expires: float | None = None  # when the binding we hold ends by our count; None: none held
        self.registered_care_of: IPv4Address | None = None
        self.failures = 0
        self.last: Outcome | None = None  # the last reply's outcome
        self.ever_accepted = False
        self.in_flight: IPv4Address | None = None  # a registration sent and not answered yet

    def step(self) -> bool:
        """Register now (a first registration, a renewal or a move). True when accepted."""
        sent_at = self.clock()
        if self.expires is not None and sent_at >= self.expires:
            self.report(f"expired: the binding at {self.registered_care_of} ran out before a renewal was "
                        "accepted")
            self.expires = self.registered_care_of = None
        what = ("renewed" if self.registered_care_of == self.care_of
                else "moved" if self.registered_care_of is not None else "registered")
        self.in_flight = self.care_of  # until answered: a stop now may leave it bound without our knowing
        try:
            outcome = self.node.register(self.care_of, self.lifetime, self.flags, self.timeout, self.retries)
        except TimeoutError as exc:
            return self._failed(f"no reply: {exc}")
        except OSError as exc:  # a care-of address not (yet) on this host: nothing was sent
            self.in_flight = None
            return self._failed(f"cannot send from care-of {self.care_of}: {exc.strerror or exc}")
        self.in_flight = None
        self.last = outcome
        if not outcome.accepted:
            name = outcome.as_dict()["code_name"]
            return self._failed(f"refused: code {outcome.code} ({name})"
                                + ("" if outcome.authenticated else ", reply not authenticated"))
        granted = outcome.reply.lifetime
        if granted == 0:  # accepted with no lifetime: no binding held (RFC 5944 3.4), not a success to renew
            self.expires = self.registered_care_of = None  # at once: it would be asked again without a pause
            return self._failed("accepted with lifetime 0: no binding held")
        self.failures = 0
        self.ever_accepted = True
        self.registered_care_of = self.care_of
        self.expires = None if granted == INFINITE_LIFETIME else sent_at + granted
        self.due = self.policy.renew_at(sent_at, granted)
        renew = "never (infinite lifetime)" if self.due is None else f"in {self.due - self.clock():.1f} s"
        self.report(f"{what} {IPv4Address(outcome.reply.home_address)} care-of {self.care_of} "
                    f"lifetime {granted} s, renewing {renew}")
        return True

    def _failed(self, why: str) -> bool:
        self.failures += 1
        self.due = self.policy.retry_at(self.clock(), self.failures)
        self.report(f"failed: {why}; trying again in {self.due - self.clock():.1f} s")
        return False

    def move(self, care_of: IPv4Address) -> None:
        """Register ``care_of`` at the next ``step`` (now): the node has a new point of attachment. Without
        S the new binding replaces the old one at the Home Agent; with S it is added beside it."""
        self.care_of = care_of
        self.due = self.clock()
        self.failures = 0

    def renew(self) -> None:
        self.due = self.clock()

    def close(self) -> Outcome | None:
        """De-register the care-of address we hold (lifetime 0, RFC 5944 3.6.1.2), only that one: with S
        another care-of address of the node stays bound. One whose registration got no reply (lost, or cut
        short by a signal) is de-registered too: the Home Agent may have accepted it. The last reply's
        outcome; None when nothing was held or no reply came."""
        outcome = None
        for care_of in dict.fromkeys(a for a in (self.registered_care_of, self.in_flight) if a is not None):
            try:
                outcome = self.node.register(care_of, 0, self.flags & (Flags.S | Flags.D), self.timeout,
                                             self.retries)
            except TimeoutError as exc:
                self.report(f"de-registration of care-of {care_of}: no reply: {exc}")
                continue
            except OSError as exc:
                self.report(f"de-registration of care-of {care_of}: cannot send from it: {exc}")
                continue
            self.report(f"deregistered care-of {care_of}: code {outcome.code}")
        self.registered_care_of = self.expires = self.in_flight = None
        return outcome


class _Stop(Exception):
    """SIGTERM or SIGINT: leave the loop (from wherever it waits) and de-register."""


def up(session: Session, home_address: IPv4Address, home_agent: IPv4Address, reverse: bool, tun: str = "mip0",
       control: int | None = None) -> int:
    """``homeagent mn up``: the tunnel end (``dataplane.decap``, in a thread of this process) holding the home
    address on ``tun``, then ``session`` kept registered until SIGTERM or SIGINT, which de-register and
    remove the device. ``control`` (standard input) takes one command a line: ``care-of A`` re-registers on
    A, ``renew`` renews now, ``down`` stops as SIGTERM does; at its end of file the node stays up.

    0 after a clean stop, 3 when the first registration is refused (nothing to keep up: a wrong key, a home
    address not served), 1 when the tunnel cannot be made (CAP_NET_ADMIN and CAP_NET_RAW needed)."""
    import os
    import selectors
    import signal
    import threading

    from homeagent.dataplane.decap import MobileTunnel
    from homeagent.wire.ip import DEFAULT_TTL, OuterHeader

    report = session.report
    try:
        tunnel = MobileTunnel(int(home_address), int(home_agent), int(session.care_of), reverse, tun)
    except OSError as exc:
        report(f"cannot make the tunnel device {tun}: {exc} (needs CAP_NET_ADMIN and CAP_NET_RAW)")
        return 1
    thread: threading.Thread | None = tunnel.start_thread()
    outer = session.care_of

    def stop(signum: int, frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    selector = selectors.DefaultSelector()
    pending = b""
    status = 0
    try:
        if control is not None:
            try:
                selector.register(control, selectors.EVENT_READ)
            except PermissionError:  # epoll takes no regular file nor /dev/null: no commands then
                pass
        report(f"up: {home_address} on {tunnel.name}, home agent {home_agent}"
               + (", reverse tunnel" if reverse else ""))
        while True:
            if session.due is not None and session.clock() >= session.due:
                accepted = session.step()
                if not accepted and not session.ever_accepted and session.last is not None:
                    status = 3  # the first registration was answered no
                    return status
                if accepted and session.care_of != outer:
                    outer = session.care_of  # reverse-tunnelled datagrams leave from the new care-of address
                    tunnel.engine.header = OuterHeader(int(outer), int(home_agent), DEFAULT_TTL)
                continue
            wait = None if session.due is None else max(0.0, session.due - session.clock())
            if not selector.get_map():
                if wait is None:
                    signal.pause()
                    continue
                time.sleep(wait)
                continue
            for _key, _ in selector.select(wait):
                assert control is not None
                chunk = os.read(control, 4096)
                if not chunk:
                    selector.unregister(control)
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if apply_command(session, line.decode(errors="replace"), report):
                        return status
    except _Stop as exc:
        report(f"stopping ({exc})")
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the de-registration short
            signal.signal(sig, signal.SIG_IGN)
        try:
            if status == 0:
                session.close()
        finally:
            tunnel.stop()
            if thread is not None:
                thread.join(timeout=5)
            tunnel.close()
            selector.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            report(f"down: {tunnel.name} removed")
    return status


def apply_command(session: Session, line: str, report: Callable[[str], None]) -> bool:
    """One control line of ``mn up`` (``care-of A``, ``renew``, ``down``); True to stop. Anything else, or a
    care-of address no unicast one, is reported and changes nothing."""
    words = line.split()
    if not words:
        return False
    if words[0] == "care-of" and len(words) == 2:
        try:
            address = IPv4Address(words[1])
        except ValueError:
            report(f"not an IPv4 address: {words[1][:40]!r}")
            return False
        if address.is_unspecified or address.is_multicast or address.is_loopback or address.is_reserved:
            report(f"not a unicast address: {address}")
            return False
        session.move(address)
        return False
    if words == ["renew"]:
        session.renew()
        return False
    if words == ["down"]:
        return True
    report(f"unknown command {line.strip()[:80]!r} (care-of A, renew, down)")
    return False


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

