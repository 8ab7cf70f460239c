"""Defending the virtual address on the link against another host that claims it (RFC 5227 section 2.4).

A member killed with ``kill -9`` while active leaves the virtual address on its interface, and its host's
kernel goes on answering ARP for it. A router that asks for the address then hears two answers and keeps
the first (Linux ignores a second answer within ``locktime``), so about one time in two it points the
address at a dead host until its entry times out. The member holding the address must see that and
announce again: a gratuitous ARP overrides any neighbour entry at once.

What we can hear: on a switched link another host's ARP reply goes to the asker alone, never to us. So
this defence hears a conflict in two ways. Passively, as RFC 5227 section 2.4 asks: any ARP frame that
reaches us (a request, a reply, an announcement) whose sender protocol address is an address we hold and
whose sender hardware address is not ours. Actively, when a neighbour broadcasts a request for an address
we hold (the moment a stale host may be answering it): we send an ARP probe for that address (RFC 5227
section 2.1.1, sender protocol address zero, which no cache takes anything from); a host that still holds
the address answers the probe to us, and that answer is a conflict heard. The stale host answered the
neighbour before it answered our later probe, so our announcement reaches the neighbour after the stale
answer and wins. A member alone on the address hears no answer to its probes and announces nothing.

Bounds, decided here (RFC 5227's DEFEND_INTERVAL is 10 s, made for a host that may give its address up;
a member must keep the group's address, and a router pointing at a dead host for 10 s is the outage this
guards against):

- at most one re-announcement per address every ``DEFEND_GAP`` seconds, whatever the number of offending
  hosts (one announcement corrects every neighbour, whichever host misled it); a conflict heard sooner
  moves the next one to the end of the gap instead of being dropped, so no neighbour misled in between is
  left behind. Two members that both hold the address (a split brain) announce at most twice a second
  each, never in a storm;
- at most one probe per address every ``PROBE_GAP`` seconds, on the same terms;
- a warning naming the offending MAC at most every ``WARN_GAP`` seconds per MAC and at most
  ``WARNINGS_PER_SECOND`` in all, for at most ``MAX_OFFENDERS`` MACs remembered (a host forging frames
  from many MACs can neither grow the table nor fill the disk); every conflict heard is counted in
  ``redundancy.address_conflicts`` and every probe sent in ``arp_probes_sent``.

Sans-I/O as the core is: frames and the time in, what to send and when out. ``runtime.address`` reads the
socket, sends, and keeps the timers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from homeagent.wire.arp import ArpFrame, Operation

DEFEND_GAP = 0.5  # seconds between two re-announcements of one address
PROBE_GAP = 0.1  # seconds between two probes for one address
SETTLE = 1.0  # seconds after taking an address before probing for it unasked
WARN_GAP = 10.0  # seconds between two warnings about one offending MAC
MAX_OFFENDERS = 64  # offending MACs remembered for the warnings
WARNINGS_PER_SECOND = 5  # warnings logged in one second, whatever the number of MACs


@dataclass(frozen=True, slots=True)
class Probe:
    """Send an ARP probe for ``address`` at ``at`` (now, or the end of the gap)."""

    address: int
    at: float


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce ``address`` again at ``at`` (and once more a second later, as every announcement)."""

    address: int
    at: float


@dataclass(frozen=True, slots=True)
class Warn:
    """Log that ``mac`` claims ``address``: ``conflicts`` heard from it since the last warning, this one
    included."""

    address: int
    mac: bytes
    conflicts: int


Action = Probe | Announce | Warn


class Defence:
    """The addresses this member holds on one link, and when to probe for and announce them."""

    def __init__(self, mac: bytes, counters: Counter[str]) -> None:
        self.mac = mac
        self._counters = counters
        self.held: set[int] = set()
        self._probed: dict[int, float] = {}  # address -> its last probe, sent or due
        self._announced: dict[int, float] = {}  # address -> its last re-announcement, sent or due
        self._offenders: dict[bytes, tuple[float, int]] = {}  # MAC -> (last warned, conflicts since)
        self._second = -1  # the second the warnings below were logged in
        self._warned = 0

    def hold(self, address: int, now: float) -> list[Action]:
        """``address`` is ours now: probe for it ``SETTLE`` seconds on, to hear a host that kept it. Not at
        once: the member we took over from may still be taking it off (it does when it hears us, within
        milliseconds), and its answer then would be no conflict. A neighbour resolving the address in the
        meantime draws a probe as ever (that one is outside the gap: it is one probe per taking)."""
        self.held.add(address)
        return [Probe(address, now + SETTLE)]

    def release(self, address: int) -> None:
        self.held.discard(address)

    def heard(self, frame: ArpFrame, now: float) -> list[Action]:
        """An ARP frame another host sent (the runtime leaves out our own, outgoing ones)."""
        if frame.sender_mac == self.mac:
            return []
        if frame.sender_address in self.held:
            return self._conflict(frame.sender_address, frame.sender_mac, now)
        if frame.operation is Operation.REQUEST and frame.broadcast and frame.target_address in self.held:
            return self._probe(frame.target_address, now)  # someone resolves our address: who else answers?
        return []

    def _conflict(self, address: int, mac: bytes, now: float) -> list[Action]:
        self._counters["redundancy.address_conflicts"] += 1
        actions: list[Action] = []
        at = _next(self._announced, address, now, DEFEND_GAP)
        if at is not None:
            actions.append(Announce(address, at))
        warned, since = self._offenders.pop(mac, (None, 0))
        if (warned is None or now >= warned + WARN_GAP) and self._may_warn(now):
            actions.append(Warn(address, mac, since + 1))
            self._offenders[mac] = (now, 0)
        else:  # told later, with the count of all since
            self._offenders[mac] = (warned if warned is not None else now - WARN_GAP, since + 1)
        while len(self._offenders) > MAX_OFFENDERS:
            del self._offenders[next(iter(self._offenders))]  # the one heard from least recently
        return actions

    def _may_warn(self, now: float) -> bool:
        second = int(now)
        if second != self._second:
            self._second, self._warned = second, 0
        self._warned += 1
        return self._warned <= WARNINGS_PER_SECOND

    def _probe(self, address: int, now: float) -> list[Action]:
        at = _next(self._probed, address, now, PROBE_GAP)
        return [Probe(address, at)] if at is not None else []


def _next(last: dict[int, float], address: int, now: float, gap: float) -> float | None:
    """When the next action for ``address`` may go, at most one per ``gap``; None when one is already due
    after ``now`` (it comes after what was just heard, so it answers that too)."""
    previous = last.get(address)
    if previous is not None and previous > now:
        return None
    at = now if previous is None or now >= previous + gap else previous + gap
    last[address] = at
    return at
