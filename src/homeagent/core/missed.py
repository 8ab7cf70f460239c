"""Per member, the mobile nodes whose registrations we accepted and it has not acknowledged: those we did
not send it because it was down, and those whose Binding Updates it never acked before we gave up on it.

Why the digests do not suffice: they leave out expiries, which two members of one registration hold a
transit time apart. Two acceptances of one request (a mobile node's retransmission taken by a second
member after a failover, in a split brain, or by two peers) make equal states but for the expiry, a
retransmission timer apart; the merge rule keeps the later (core/node_state.py ``later``), but only
members that exchange the node can apply it, and equal digests never make them (issue 10, simulation seeds
102, 263, 128, 373, 905, 985). Every such pair has a member that accepted while the other could not hear
it: that acceptor is the one to tell the other, so it sends these nodes with whatever differs when the
member asks (``core/exchange.py``). Only the acceptor records them: were every member to, a member back
from a partition would be sent each node once by each of them.

Bounded: past ``LIMIT`` nodes for one member we stop counting and send it every node instead; that many
missed registrations have made every digest bucket differ anyway.
"""

from __future__ import annotations

LIMIT = 65_536


class Missed:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._nodes: dict[int, set[int]] = {}  # member address -> home addresses
        self._overflowed: set[int] = set()  # members that missed more than ``limit``: every node

    def add(self, member: int, home_address: int) -> None:
        if member in self._overflowed:
            return
        nodes = self._nodes.setdefault(member, set())
        nodes.add(home_address)
        if len(nodes) > self.limit:
            del self._nodes[member]
            self._overflowed.add(member)

    def has(self, member: int) -> bool:
        """Whether ``member`` missed anything (without copying what)."""
        return member in self._overflowed or member in self._nodes

    def of(self, member: int) -> set[int] | None:
        """What ``member`` missed (a copy); None: more than we counted, so every node."""
        if member in self._overflowed:
            return None
        return set(self._nodes.get(member, ()))

    def sent(self, member: int, nodes: set[int] | None) -> None:
        """``nodes`` (``of``'s answer) reached ``member``: forget them, not what it missed since."""
        if nodes is None:
            self._overflowed.discard(member)
            return
        held = self._nodes.get(member)
        if held is not None:
            held -= nodes
            if not held:
                del self._nodes[member]

    def __len__(self) -> int:
        return sum(map(len, self._nodes.values())) + len(self._overflowed)
