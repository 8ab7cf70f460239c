"""The reference model the simulation's oracle holds every member's binding table to (issue 10, "What it
must show"): for each home address, every accepted operation applied in Identification order.

Why a model of operations and not of states
    A member's state after an acceptance is the answer only when every member saw every earlier operation.
    Across a partition they do not: register H at member 1 with care-of A (#1); cut {1, 2} | {3}; register H
    at member 1 with care-of B (#2, replaces A); de-register care-of B at member 3 (#3; member 3 holds only
    A, so its state after #3 is still A); heal. The state recorded at the newest Identification (#3) says A,
    but the mobile node's last word is "no binding": replace A by B, then drop B. The answer is what the
    operations give applied one after another in Identification order, which is the order the mobile node
    issued them in (its Identifications increase, RFC 5944 section 5.7), whichever member accepted each.

The operations (RFC 5944 section 3.8.2.2; docs/registration.md)
    register C at X without S:   bindings = {C@X}
    register C at X with S:      bindings[C] = C@X (replacing an older binding of C)
    de-register C at X:          bindings.pop(C)
    de-register all at X:        bindings = {}   (care-of address = home address, or ``HomeAgent.remove``
                                                  of every binding)
    An operator removal (``HomeAgent.remove``) is a de-registration that takes a fresh Identification of its
    own, so it sits in the same order. A binding ends at the expiry its acceptance granted (``now`` at the
    accepting member plus the granted lifetime), whatever happens after. With S set but simultaneous
    bindings off (``simultaneous_bindings = 0``) a registration replaces, as the registrar does.

One request accepted twice
    A retransmission that reaches a second member after a failover (or a split brain, or two peers) is one
    operation with two acceptances. They differ only in expiry; the later acceptance wins (core/bindings.py
    ``_later``: the mobile node's last reply came from it), unless the two are within ``SAME_ACCEPTANCE`` of
    each other, where the core breaks the tie by state and either expiry is right.

What "lost" means for an operation
    An operation is *known* to a member (an incarnation of one: a crash forgets everything) that accepted
    it, and to a member whose core received a datagram, sent by a member that knew the operation when it
    sent it, naming the operation's home address with an Identification at or above the operation's and
    that left the receiver's last Identification for that node at or above the one named (so it was taken,
    not dropped as an answer to nothing). An operation that no member that is up knows is *lost*: it died
    with the crashes of every member that had it. In the sequential model a lost operation is *removed* from
    the sequence, not a cut-off point: the operations after it, accepted by members that never saw it, still
    apply in their order. A lost operation is optional rather than forbidden, because its effect may have
    reached a survivor by a path the oracle does not follow (a message it cannot name, a node state that
    implies it): the members may end with the answer of the sequence with any subset of the lost operations
    left out. The known ones are mandatory. A lost operation above the members' last Identification is
    never part of the answer (they cannot reflect what they never ordered).

The model checks bindings; the simulation checks the rest (last Identifications agree and equal the
newest known operation or a lost one above it, replies, tunnels, roles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from itertools import combinations
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from homeagent.core.bindings import Binding

REGISTER, DEREGISTER, DEREGISTER_ALL = "register", "de-register", "de-register all"
EXPIRY_TOLERANCE = 0.15  # seconds a replica's expiry may be off the accepting member's: transit, a few hops
# Two acceptances of one request closer than this are a tie the core breaks by state, not by time (the
# core's SAME_ACCEPTANCE: transit between members is well under it, a mobile node's retransmission over it).
SAME_ACCEPTANCE = 0.25
MAX_OPTIONAL = 8  # lost operations of one node beyond which not every subset is tried


@dataclass(frozen=True)
class Operation:
    """One accepted request (or operator removal) of one mobile node, as the model applies it."""

    home_address: int
    identification: int
    kind: str  # REGISTER, DEREGISTER or DEREGISTER_ALL
    care_of_address: int
    simultaneous: bool = False  # REGISTER only: S set and simultaneous bindings on

    def __str__(self) -> str:
        s = " with S" if self.simultaneous else ""
        where = "" if self.kind == DEREGISTER_ALL else f" {IPv4Address(self.care_of_address)}"
        return f"{self.kind}{where}{s}"


@dataclass(frozen=True)
class Acceptance:
    """One member's acceptance of an operation: for a registration, the binding it granted."""

    number: int  # index in ReferenceModel.acceptances
    operation: Operation
    member: int
    at: float
    binding: Binding | None


class Knowledge:
    """The acceptances one incarnation of a member knows, in the order it learnt them: a datagram it sends
    carries a prefix of this log (``size()`` at the send)."""

    def __init__(self) -> None:
        self._log: dict[int, list[Acceptance]] = {}  # home address -> acceptances, in learning order
        self._known: set[int] = set()
        self._order: dict[int, int] = {}  # acceptance number -> position in the whole log
        self._size = 0

    def size(self) -> int:
        return self._size

    def knows(self, number: int) -> bool:
        return number in self._known

    def learn(self, acceptance: Acceptance) -> None:
        if acceptance.number in self._known:
            return
        self._known.add(acceptance.number)
        self._order[acceptance.number] = self._size
        self._size += 1
        self._log.setdefault(acceptance.operation.home_address, []).append(acceptance)

    def learn_from(self, sender: Knowledge, snapshot: int, home_address: int, identification: int) -> int:
        """What a datagram from ``sender`` (sent when its log was ``snapshot`` long) naming ``home_address``
        at ``identification`` carries: the sender's acceptances for that node up to that Identification.
        Returns how many were new here."""
        new = 0
        for a in sender._log.get(home_address, ()):
            if sender._order[a.number] < snapshot and a.operation.identification <= identification:
                if a.number not in self._known:
                    self.learn(a)
                    new += 1
        return new


@dataclass
class Expected:
    """What the model says one node's bindings are: per care-of address, the bindings any of which is right
    (one, or the acceptances of one request accepted twice within ``SAME_ACCEPTANCE``)."""

    bindings: dict[int, tuple[Binding, ...]] = field(default_factory=dict)
    leaves_out: tuple[Operation, ...] = ()  # the lost operations this answer leaves out

    def describe(self, ident: Callable[[int], str] = hex, t0: float = 0.0) -> str:
        """Printed as the simulation prints a state: ``ident`` formats an Identification, expiries are
        seconds after ``t0``."""
        inner = ", ".join(f"{IPv4Address(c)} #{ident(alts[0].identification)} life={alts[0].lifetime} "
                          f"exp=+{alts[0].expires - t0:.3f}" for c, alts in sorted(self.bindings.items()))
        gone = f" leaving out lost {', '.join(map(str, self.leaves_out))}" if self.leaves_out else ""
        return f"[{inner}]{gone}"


class ReferenceModel:
    """Every acceptance of the run, by home address; the answer for a node given which are known."""

    def __init__(self) -> None:
        self.acceptances: list[Acceptance] = []
        self._by_node: dict[int, dict[int, list[Acceptance]]] = {}  # hoa -> Identification -> acceptances

    def accept(self, operation: Operation, member: int, at: float, binding: Binding | None,
               knowledge: Knowledge) -> Acceptance:
        """``member`` accepted ``operation`` at ``at`` (its ``knowledge`` learns it)."""
        acceptance = Acceptance(len(self.acceptances), operation, member, at, binding)
        self.acceptances.append(acceptance)
        self._by_node.setdefault(operation.home_address, {}).setdefault(operation.identification,
                                                                        []).append(acceptance)
        knowledge.learn(acceptance)
        return acceptance

    def home_addresses(self) -> list[int]:
        return list(self._by_node)

    def identifications(self, home_address: int) -> dict[int, list[Acceptance]]:
        return self._by_node.get(home_address, {})

    def split(self, home_address: int, live: list[Knowledge]) -> tuple[list[int], list[int]]:
        """The node's Identifications some member that is up knows (mandatory), and the lost ones."""
        known: list[int] = []
        lost: list[int] = []
        for ident, acceptances in sorted(self.identifications(home_address).items()):
            held = any(k.knows(a.number) for a in acceptances for k in live)
            (known if held else lost).append(ident)
        return known, lost

    def expected(self, home_address: int, live: list[Knowledge], last: int | None) -> list[Expected]:
        """Every answer the members may hold for the node: the known operations and any subset of the lost
        ones at or below ``last`` (the members' last Identification), applied in Identification order.
        The first is the answer with every lost operation left out."""
        known, lost = self.split(home_address, live)
        optional = [i for i in lost if last is not None and i <= last]
        if len(optional) <= MAX_OPTIONAL:
            subsets = [c for r in range(len(optional) + 1) for c in combinations(optional, r)]
        else:  # none, all, one, all but one
            subsets = [(), tuple(optional), *((i,) for i in optional),
                       *(tuple(j for j in optional if j != i) for i in optional)]
        answers = []
        for chosen in subsets:
            idents = sorted(known + list(chosen))
            answer = self._apply(home_address, idents, live)
            answer.leaves_out = tuple(self._by_node[home_address][i][0].operation for i in optional
                                      if i not in chosen)
            answers.append(answer)
        return answers

    def _apply(self, home_address: int, idents: list[int], live: list[Knowledge]) -> Expected:
        node = self._by_node[home_address]
        bindings: dict[int, tuple[Binding, ...]] = {}
        for ident in idents:
            acceptances = node[ident]
            op = acceptances[0].operation
            if op.kind == DEREGISTER_ALL:
                bindings = {}
            elif op.kind == DEREGISTER:
                bindings.pop(op.care_of_address, None)
            else:
                if not op.simultaneous:
                    bindings = {}
                bindings[op.care_of_address] = self._granted(acceptances, live)
        return Expected(bindings)

    @staticmethod
    def _granted(acceptances: list[Acceptance], live: list[Knowledge]) -> tuple[Binding, ...]:
        """The binding a registration made, and the alternatives when it was accepted twice: the later
        acceptance a member that is up knows wins (and any within SAME_ACCEPTANCE of it); a later one
        nobody knows any more may still have left its expiry behind."""
        granted = [(a, a.binding) for a in acceptances if a.binding is not None]
        known = [b.expires for a, b in granted if any(k.knows(a.number) for k in live)]
        if not known:
            out = [b for _, b in granted]
        else:
            latest = max(known)
            out = [b for _, b in granted if b.expires > latest or latest - b.expires < SAME_ACCEPTANCE]
        out.sort(key=lambda b: -b.expires)
        return tuple(out)


def diff(actual: tuple[Binding, ...], expected: Expected, now: float) -> str:
    """'' when ``actual`` (a member's bindings of a node) is ``expected`` at ``now``; else what differs. A
    binding within a second (the expiry wheel's bucket) and ``EXPIRY_TOLERANCE`` of its end may be there or
    not."""
    have = {b.care_of_address: b for b in actual}
    want = expected.bindings
    out = []
    for coa in sorted(set(have) | set(want)):
        h, alts = have.get(coa), want.get(coa, ())
        if not alts:
            out.append(f"unexpected {IPv4Address(coa)}")
        elif h is None:
            if max(w.expires for w in alts) > now + EXPIRY_TOLERANCE:
                out.append(f"missing {IPv4Address(coa)} (expires +{alts[0].expires - now:.3f})")
        elif max(w.expires for w in alts) <= now - 1 - EXPIRY_TOLERANCE:
            out.append(f"{IPv4Address(coa)} should have expired {now - alts[0].expires:.3f} s ago")
        else:
            same = [w for w in alts if (h.identification, h.lifetime, h.flags, h.home_agent)
                    == (w.identification, w.lifetime, w.flags, w.home_agent)]
            if not same:
                out.append(f"{IPv4Address(coa)} differs: {h} vs {alts[0]}")
            elif all(abs(h.expires - w.expires) > EXPIRY_TOLERANCE for w in same):
                out.append(f"{IPv4Address(coa)} expires {h.expires - same[0].expires:+.3f} s off")
    return "; ".join(out)
