"""The members of a redundancy group as one member sees them, and the seal on every message between them.

Trust is configured, never learnt (DESIGN.md principle 8): the members are the configured ``peers``, each
known by its unicast address and sealed for with the Home Agent - Home Agent security association that
covers that address. A message is accepted only from a configured member, sealed for this conversation
(its sender's address and ours, or the multicast group's: ``wire.redundancy.seal``), and fresh by that
member's own replay window. Anything else changes nothing and is a security violation, counted and
logged with its source address (``core/violations.py``).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from homeagent.core.clock import WallClock
from homeagent.core.replay import ntp_identification, skew
from homeagent.core.violations import SecurityViolations
from homeagent.wire.auth import SecurityAssociation
from homeagent.wire.errors import ParseError
from homeagent.wire.redundancy import VersionError, seal, unseal

log = logging.getLogger("homeagent.redundancy")

NTP_ONE_SECOND = 1 << 32
REORDER_WINDOW = NTP_ONE_SECOND  # how far behind the newest timestamp a message may still arrive

OWN_ECHO = "our own multicast, looped back"
AssociationFor = Callable[[int], SecurityAssociation | None]


@dataclass
class ReplayWindow:
    """Per sender: refuse a timestamp seen before, or more than the reorder window behind the newest.

    At most one second of timestamps is remembered, and a sender's timestamps strictly increase, so the
    window holds at most as many entries as the member sent datagrams in a second."""

    newest: int = 0
    _seen: set[int] = field(default_factory=set)
    _order: deque[int] = field(default_factory=deque)

    def accept(self, timestamp: int) -> bool:
        if timestamp in self._seen or timestamp <= self.newest - REORDER_WINDOW:
            return False
        self._seen.add(timestamp)
        self._order.append(timestamp)
        if timestamp > self.newest:
            self.newest = timestamp
            floor = timestamp - REORDER_WINDOW
            order, seen = self._order, self._seen
            while order and order[0] <= floor:
                seen.discard(order.popleft())
        return True


@dataclass
class Member:
    address: int
    association: SecurityAssociation
    up: bool = False  # heard recently, and not given up on
    priority: int = 0
    role: int = 0
    last_heard: float | None = None
    interval: float | None = None  # its advertisement interval, as it advertises it: its liveness is judged by it
    down_since: float = 0.0  # when we last gave up on it
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    name: str = ""  # dotted quad, for sending and logs
    # Since when it misses what we replicated: we gave up on it (a sync ack or an update went unanswered),
    # and have not yet sent it everything since. While set, our advertisements tell it it is out of sync.
    lagging_since: float | None = None
    out_of_sync: bool = False  # its last advertisement said it lags (OUT_OF_SYNC): no candidate
    seal_failures_logged_at: float | None = None  # of the last "check the keys" error about it

    def __post_init__(self) -> None:
        self.name = str(IPv4Address(self.address))


class Refused(ParseError):
    """A datagram that is not a fresh message of a configured member for us. ``member`` is the configured
    member whose address it came from, if any (its seal failed: a wrong key, or a forgery)."""

    def __init__(self, reason: str, member: Member | None = None) -> None:
        super().__init__(reason)
        self.member = member


class Membership:
    def __init__(
        self,
        own_address: int,
        configured: list[int],
        association_for: AssociationFor,
        tolerance: float,
        counters: Counter[str],
        clock: WallClock | None = None,
        violations: SecurityViolations | None = None,
    ) -> None:
        self.own_address = own_address
        self._association_for = association_for
        self.tolerance = tolerance
        self.counters = counters
        self.clock = clock or WallClock()  # timestamps are wall time; ``now`` is monotonic
        self.violations = violations or SecurityViolations(counters)
        self.members: dict[int, Member] = {}
        self._last_timestamp = 0
        for address in configured:
            sa = association_for(address)
            if address in (own_address, 0, 0xFFFFFFFF) or sa is None:
                log.error("peer %s ignored: not a member address with a security association", IPv4Address(address))
                continue
            self.members[address] = Member(address, sa)

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members.values())

    def others_exist(self) -> bool:
        """Claim 1: before notifying the group, find out whether any other Home Agent is in it."""
        return bool(self.members)

    def up(self) -> list[Member]:
        return [m for m in self.members.values() if m.up]

    def rekey(self, association_for: AssociationFor) -> None:
        """New Home Agent - Home Agent associations (a reload). A member left without one keeps its old one:
        the configuration is checked to cover every peer before it gets here."""
        self._association_for = association_for
        for member in self.members.values():
            member.association = association_for(member.address) or member.association

    # -- the seal -------------------------------------------------------------------------------------

    @property
    def group_association(self) -> SecurityAssociation | None:
        """The association covering our own address: what a multicast to every member is sealed with."""
        return self._association_for(self.own_address)

    def seal(self, body: bytes, member: Member, now: float) -> bytes:
        """Authenticate ``body`` from us to ``member`` with a fresh, strictly increasing timestamp."""
        return self.seal_for(body, member.association, member.address, now)

    def seal_for(self, body: bytes, sa: SecurityAssociation, receiver: int, now: float) -> bytes:
        timestamp = max(ntp_identification(self.clock(now)), self._last_timestamp + 1)
        self._last_timestamp = timestamp
        return seal(body, sa, timestamp, self.own_address, receiver)

    def open(self, datagram: bytes, source: int, destination: int, now: float) -> tuple[Member, bytes]:
        """The sending member and the message body of a datagram that came from ``source`` to
        ``destination`` (our address, or the multicast group's); Refused otherwise."""
        if source == self.own_address:
            if self._own_echo(datagram, destination):
                raise Refused(OWN_ECHO)  # our multicast, looped back to us: nothing to do, no violation
            raise self._violation("a message from our own address", source, now)
        member = self.members.get(source)
        if member is None:
            raise self._violation("a message from an address that is not a configured member", source, now)
        try:
            body, timestamp = unseal(datagram, member.association, source, destination)
        except VersionError as exc:
            raise self._violation(exc.reason, source, now, logging.ERROR, member) from None
        except ParseError as exc:
            raise self._violation(exc.reason, source, now, member=member) from None
        off = skew(timestamp, self.clock(now))
        if abs(off) > self.tolerance:
            raise self._violation(f"timestamp {off:+.3f} s from our clock (replay_tolerance)", source, now)
        if not member.replay.accept(timestamp):
            raise self._violation("a replayed or stale timestamp", source, now)
        return member, body

    def _own_echo(self, datagram: bytes, destination: int) -> bool:
        sa = self.group_association
        try:
            return sa is not None and unseal(datagram, sa, self.own_address, destination)[1] <= self._last_timestamp
        except ParseError:
            return False

    def _violation(
        self, what: str, source: int, now: float, level: int = logging.WARNING, member: Member | None = None
    ) -> Refused:
        self.violations.report(
            "redundancy.security_violations", now, level, "redundancy message from %s refused: %s",
            IPv4Address(source), what, source=str(IPv4Address(source)), reason=what,
        )
        return Refused(what, member)
