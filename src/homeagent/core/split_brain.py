"""Two members active for one virtual address: seen, said and counted (issue 9, docs/protocol.md).

With the keys right, a split brain ends at the first advertisement the two exchange (the worse one stands
down), but it happened: both sides log it at error and count ``redundancy.dual_active``, once per episode.
With keys that differ it never ends by itself, since neither can believe the other: the (unverified)
advertisements of a configured member that say it is active while we are are enough to say so, never to
act on. The hand-over of a preemption is not a split brain: the preempting member says so for one
master-down interval (``PREEMPTING``: it may be heard active before it was ever heard standing by), and
the member it preempted is heard active until it hears the new one. The member that stands down says
so for one master-down interval (``STOOD_DOWN``): it may stand down on the first advertisement it hears
and never be heard active by the better member, which must log the split brain all the same.
"""

from __future__ import annotations

import logging
from collections import Counter

from homeagent.core.election import Role
from homeagent.core.peers import Member
from homeagent.wire.errors import ParseError
from homeagent.wire.redundancy import (
    DIGEST_SIZES,
    PREEMPTING,
    STOOD_DOWN,
    Advertisement,
    parse_messages,
    unsealed_body,
)

log = logging.getLogger("homeagent.redundancy")


class SplitBrain:
    def __init__(self, virtual_address: str, counters: Counter[str]) -> None:
        self.virtual_address = virtual_address
        self.counters = counters
        self._seen: dict[int, float] = {}  # member -> when we last saw it active beside us
        self._preempted: tuple[int, float] | None = None  # the active member we took over from, and when
        self._stood_down: float | None = None  # when we last stood down for a better active member
        self._announced: dict[int, float] = {}  # member -> when we last announced the address because of it

    def preempted(self, member: Member, now: float) -> None:
        self._preempted = (member.address, now)

    def stood_down(self, now: float) -> None:
        self._stood_down = now

    def flags(self, episode: float, now: float) -> int:
        """What our advertisements say: STOOD_DOWN or PREEMPTING for ``episode`` seconds after we did so."""
        flags = STOOD_DOWN if self._stood_down is not None and now - self._stood_down <= episode else 0
        if self._preempted is not None and now - self._preempted[1] <= episode:
            flags |= PREEMPTING
        return flags

    def advertised_active(
        self, member: Member, was: int, flags: int, ours: tuple[int, int], episode: float, now: float
    ) -> None:
        """``member``, whose role we last knew as ``was``, advertises active (or that it just stood down)
        while we are active."""
        if was in (Role.INIT, Role.STANDBY) or flags & PREEMPTING:
            return  # it took over from us, having heard us: a preemption's hand-over
        preempted = self._preempted
        if preempted is not None and preempted[0] == member.address and now - preempted[1] <= episode:
            return  # the member we took over from, until it hears us
        theirs = (member.priority, member.address)
        self._seen_active(member, episode, now, "this one stands down" if theirs > ours else "the other one stands down")

    def announce_again(self, member: Member, episode: float, now: float) -> bool:
        """We stay active and ``member`` says it was active too (or stood down for us just now): whether
        to announce the address again, once per episode and member (the runtime repeats it a second later)."""
        last = self._announced.get(member.address)
        if last is not None and now - last <= episode:
            return False
        self._announced[member.address] = now
        self.counters["redundancy.announced_again"] += 1
        log.info("member %s was active too: announcing the virtual address %s again", member.name,
                 self.virtual_address)
        return True

    def unverified(self, member: Member, datagram: bytes, episode: float, now: float) -> None:
        """A datagram from ``member``'s address whose seal failed, while we are active: if it says the member
        is active too, that is a split brain no advertisement can end."""
        for digest in DIGEST_SIZES:  # the other member's algorithm may be another
            try:
                messages = parse_messages(unsealed_body(datagram, digest))
            except ParseError:
                continue
            if any(type(m) is Advertisement and m.role == Role.ACTIVE and m.priority for m in messages):
                self._seen_active(member, episode, now, "its messages fail authentication, so neither can stand down")
                return

    def _seen_active(self, member: Member, episode: float, now: float, why: str) -> None:
        """An error on this side, once per episode (seen again within ``episode`` seconds: the same one)."""
        last = self._seen.get(member.address)
        self._seen[member.address] = now
        if last is not None and now - last <= episode:
            return
        self.counters["redundancy.dual_active"] += 1
        log.error("two members are active for the virtual address %s: this one and %s (%s)",
                  self.virtual_address, member.name, why)
