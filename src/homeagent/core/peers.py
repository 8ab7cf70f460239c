"""The members of a redundancy group as one member sees them, and the seal on every message between them.

A member is known by its unicast address. It is configured (``[redundancy] peers``) or learnt from a
Binding Table Request (FIG 5), and is only ever talked to if a Home Agent - Home Agent security
association covers its address. Every message is sealed with that association and a timestamp; a message
that is not from a member, does not verify, or repeats or predates what the member already sent, changes
nothing and is counted as a security violation (Cisco's ``cmiHaRedunSecViolations``).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from homeagent.core.clock import WallClock
from homeagent.core.replay import ntp_identification, skew
from homeagent.wire.auth import SecurityAssociation
from homeagent.wire.errors import ParseError
from homeagent.wire.redundancy import seal, unseal

log = logging.getLogger("homeagent.redundancy")

NTP_ONE_SECOND = 1 << 32
REORDER_WINDOW = NTP_ONE_SECOND  # how far behind the newest timestamp a message may still arrive


@dataclass
class ReplayWindow:
    """Per sender: refuse a timestamp seen before, or more than the reorder window behind the newest."""

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
    configured: bool = False
    up: bool = False  # heard recently, and not given up on
    priority: int = 0
    role: int = 0
    last_heard: float | None = None
    down_since: float = 0.0  # when we last gave up on it
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    name: str = ""  # dotted quad, for sending and logs

    def __post_init__(self) -> None:
        self.name = str(IPv4Address(self.address))


class Membership:
    def __init__(
        self,
        own_address: int,
        configured: list[int],
        association_for: Callable[[int], SecurityAssociation | None],
        tolerance: float,
        counters: Counter[str],
        clock: WallClock | None = None,
    ) -> None:
        self.own_address = own_address
        self.clock = clock or WallClock()  # timestamps are wall time; ``now`` is monotonic
        self._association_for = association_for
        self.tolerance = tolerance
        self.counters = counters
        self.members: dict[int, Member] = {}
        self._last_timestamp = 0
        for address in configured:
            self.learn(address, configured=True)

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members.values())

    def others_exist(self) -> bool:
        """Claim 1: before notifying the group, find out whether any other Home Agent is in it."""
        return bool(self.members)

    def up(self) -> list[Member]:
        return [m for m in self.members.values() if m.up]

    def learn(self, address: int, configured: bool = False) -> Member | None:
        """Add a member (FIG 5) if a security association covers it; return it."""
        if address == self.own_address or address in (0, 0xFFFFFFFF):
            return None
        member = self.members.get(address)
        if member is None:
            sa = self._association_for(address)
            if sa is None:
                return None
            member = self.members[address] = Member(address, sa, configured)
            log.info("member %s joins the group", member.name)
        return member

    # -- the seal -------------------------------------------------------------------------------------

    @property
    def group_association(self) -> SecurityAssociation | None:
        """The association covering our own address: what a multicast to every member is sealed with."""
        return self._association_for(self.own_address)

    def seal(self, body: bytes, member: Member, now: float) -> bytes:
        """Authenticate ``body`` for ``member`` with a fresh, strictly increasing timestamp."""
        return self.seal_with(body, member.association, now)

    def seal_with(self, body: bytes, sa: SecurityAssociation, now: float) -> bytes:
        timestamp = max(ntp_identification(self.clock(now)), self._last_timestamp + 1)
        self._last_timestamp = timestamp
        return seal(body, sa, timestamp)

    def open(self, datagram: bytes, source: int, now: float) -> tuple[Member, bytes] | None:
        """The sending member and the message body, if the datagram is sealed by a member and fresh."""
        if source == self.own_address:
            sa = self.group_association
            try:
                if sa is not None and unseal(datagram, sa)[1] <= self._last_timestamp:
                    return None  # our own multicast, looped back to us: nothing to do, no violation
            except ParseError:
                pass
            return self._violation("message from our own address", source)
        member = self.members.get(source)
        joining = member is None
        if member is None:
            sa = self._association_for(source)
            if sa is None:
                return self._violation("message from a non-member", source)
            member = Member(source, sa)  # holds the group's key: a member once its message verifies
        try:
            body, timestamp = unseal(datagram, member.association)
        except ParseError as exc:
            return self._violation(exc.reason, source)
        off = skew(timestamp, self.clock(now))
        if abs(off) > self.tolerance:
            return self._violation(f"timestamp {off:+.3f} s from our clock", source)
        if not member.replay.accept(timestamp):
            return self._violation("replayed or stale timestamp", source)
        if joining:
            self.members[source] = member
            log.info("member %s joins the group", member.name)
        return member, body

    def _violation(self, what: str, source: int) -> None:
        self.counters["redundancy.security_violations"] += 1
        log.debug("redundancy message from %s refused: %s", IPv4Address(source), what)
        return None
