"""One mobile node's state, the operations that change it, and the rule that merges two copies of it.

``docs/protocol.md``, "Merging after a partition", is the specification; this module is its code. A member
does not hold just a node's bindings: it holds

* ``last``: the newest Identification accepted for the node (replay protection, RFC 5944 section 5.7);
* ``cleared``: the Identification of the newest operation that removed every binding (a registration
  without the S bit, RFC 5944 section 3.8.2.2, or a de-registration of all care-of addresses, 3.8.2.2 too);
* ``bindings``: per care-of address, the binding the newest registration of that address made;
* ``tombstones``: per care-of address, the Identification of the newest de-registration of that address
  (or of a simultaneous binding that expired: see ``expired``).

Two copies merge by taking, field by field, the newer (``merged``), and a binding survives only if no
removal newer than it is known (``normalized``). That makes the states a join-semilattice: merging is
commutative, associative and idempotent, so members that exchange states in any order, any number of times,
end equal; and the result is what applying every accepted operation in Identification order gives
(``tests/unit/test_node_state.py`` checks both against that sequential model). Before these rules, the
state with the newest Identification replaced the other whole, and a partition lost operations (issue 10
point 5, the worked example in docs/protocol.md).

Time enters in two places only, both the same on every member within a transit time: a binding ends at its
expiry, and a tombstone is forgotten once no binding it can cancel is left anywhere (``forget_at``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from ipaddress import IPv4Address
from typing import NamedTuple

from homeagent.wire.era import to_wire


class Source(IntEnum):
    """Where a binding the table holds came from, for people (``homeagent bindings``): no part of a node's
    state, so never merged, compared, digested or sent."""

    REGISTRATION = 0  # a Registration Request this Home Agent accepted
    UPDATE = 1  # a member's Binding Update (FIG 10)
    DOWNLOAD = 2  # a member's Binding Table Reply (FIG 13): a start-up download or a reconciliation
    STORE = 3  # loaded from the store at start (runtime/persistence.py)


SOURCE_NAMES = tuple(s.name.lower() for s in Source)  # as ``homeagent bindings`` writes them, by value
FLAG_LETTERS = "SBDMGrTx"  # RFC 5944 3.3 (and RFC 3024's T), most significant bit first


def flag_letters(flags: int) -> str:
    """The registration flags set in ``flags``, as their letters in the order of the request's flag byte:
    ``DT`` for a co-located care-of address with reverse tunnelling; "" for none."""
    return "".join(letter for i, letter in enumerate(FLAG_LETTERS) if flags & (0x80 >> i))


class Binding(NamedTuple):
    """One mobility binding: home address to care-of address, for a granted lifetime."""

    home_address: int
    care_of_address: int
    lifetime: int  # granted, seconds
    expires: float  # absolute time, on the clock of ``now``
    identification: int  # of the registration that created or renewed it
    flags: int = 0  # the request's flags (T: reverse tunnel, D, B ...), for the data plane
    home_agent: int = 0  # the address the node registered with: the tunnel's source (RFC 5944 4.2.3)

    def remaining(self, now: float) -> float:
        return max(0.0, self.expires - now)

    def as_dict(self, now: float, source: int = Source.REGISTRATION) -> dict[str, object]:
        """The binding as ``homeagent bindings --json`` lists it; ``source`` as the table gives it."""
        return {
            "home_address": str(IPv4Address(self.home_address)),
            "care_of_address": str(IPv4Address(self.care_of_address)),
            "lifetime": self.lifetime,
            "remaining": round(self.remaining(now), 3),
            "identification": to_wire(self.identification),  # as on the wire (wire/era.py)
            "flags": self.flags,
            "home_agent": str(IPv4Address(self.home_agent)),
            "flag_letters": flag_letters(self.flags),
            "source": SOURCE_NAMES[source],
        }


class Tombstone(NamedTuple):
    """A removal of one care-of address, kept so that an older binding of it held by a member on the other
    side of a partition does not come back when the two merge."""

    care_of_address: int
    identification: int  # of the de-registration (or of the simultaneous binding that expired)
    forget_at: float  # absolute time, on the clock of ``now``: no binding it can cancel runs after it


class NodeState(NamedTuple):
    """A mobile node's whole state. Always normalized: bindings and tombstones sorted by care-of address,
    no binding that a removal cancels, no tombstone that ``cleared`` or a live binding makes redundant."""

    last: int
    cleared: int
    bindings: tuple[Binding, ...] = ()
    tombstones: tuple[Tombstone, ...] = ()


EMPTY = NodeState(0, 0)  # a node no member has heard of: nothing registered, nothing removed

# Expiries of one binding computed by two members differ by the transit time of the update that carried
# it; two acceptances of one request differ by at least a mobile node's retransmission timer (a second or so).
SAME_ACCEPTANCE = 0.25

# Records a node's state may need on the wire: one short-form Mobile Node Bindings extension
# (wire/redundancy.py MAX_BINDINGS_PER_NODE). ``fitted`` keeps a state within it.
MAX_RECORDS = 10


def default_cleared(last: int, bindings: Iterable[Binding]) -> int:
    """What ``cleared`` is when nothing says otherwise: the oldest binding's Identification (the usual
    node's one binding was made by a registration without S, which cleared), or with no binding the last
    Identification (the usual node without a binding de-registered everything or expired). Neither the
    table nor the wire stores ``cleared`` when it has this value."""
    return min((b.identification for b in bindings), default=last)


def later(new: Binding, held: Binding) -> bool:
    """Between two bindings of one care-of address made by one request (equal Identification: the request
    accepted twice, after a failover, in a split brain, or by two peers), whether ``new`` is the one to keep.

    The later acceptance wins, then the larger (lifetime, flags, home agent, care-of address), so every
    member picks the same; within ``SAME_ACCEPTANCE`` and otherwise equal, they are one acceptance seen
    twice and the held one stays (so a copy that went round the group changes nothing). ``normalized``
    also uses it between bindings of two care-of addresses under one Identification (two requests that
    share one, which no mobile node should send): one Identification, one binding, as in the sequential
    model. The mobile node's last reply came from
    the later acceptance, which granted the later expiry. Judged per care-of address, so an older
    simultaneous binding that outlasts it decides nothing (simulation seed 967, peer mode).
    """
    if abs(new.expires - held.expires) > SAME_ACCEPTANCE:
        return new.expires > held.expires
    return (new.lifetime, new.flags, new.home_agent, new.care_of_address) > (
        held.lifetime, held.flags, held.home_agent, held.care_of_address)


def normalized(
    last: int, cleared: int, bindings: dict[int, Binding], tombstones: dict[int, Tombstone]
) -> NodeState:
    """The state these fields mean: a binding survives iff its Identification is at least ``cleared`` and
    above its care-of address's tombstone (and, should two share an Identification, it wins ``later``); a
    tombstone is kept iff it is not older than ``cleared`` and no
    binding of its address survives (then the binding, newer, cancels whatever it would). Dropping what
    can never count again keeps states small and makes equal meanings equal records (and digests)."""
    made: dict[int, Binding] = {}  # Identification -> the binding it made
    for c in sorted(bindings):
        b = bindings[c]
        buried = tombstones.get(c)
        if b.identification >= cleared and (buried is None or b.identification > buried.identification):
            other = made.get(b.identification)
            if other is None or later(b, other):
                made[b.identification] = b
    live = {b.care_of_address: b for b in made.values()}
    kept = {c: t for c, t in tombstones.items() if t.identification >= cleared and c not in live}
    return NodeState(
        last, cleared, tuple(live[c] for c in sorted(live)), tuple(kept[c] for c in sorted(kept))
    )


def _fields(state: NodeState) -> tuple[dict[int, Binding], dict[int, Tombstone]]:
    return {b.care_of_address: b for b in state.bindings}, {t.care_of_address: t for t in state.tombstones}


def _ended(state: NodeState, bindings: dict[int, Binding], tombstones: dict[int, Tombstone], now: float,
           keep: float) -> list[Binding]:
    """Take out of ``bindings`` those ended by ``now``. One made by a registration with S (newer than
    ``cleared``) leaves a tombstone at its own Identification: else a member on the other side of a
    partition holding an older binding of that address, with a later expiry, would bring it back."""
    ended = [b for b in bindings.values() if b.expires <= now]
    for b in ended:
        del bindings[b.care_of_address]
        if b.identification > state.cleared:
            _bury(tombstones, Tombstone(b.care_of_address, b.identification, b.expires + keep))
    return ended


def _bury(tombstones: dict[int, Tombstone], tombstone: Tombstone) -> None:
    held = tombstones.get(tombstone.care_of_address)
    if held is None or tombstone.identification > held.identification:
        tombstones[tombstone.care_of_address] = tombstone


def registered(state: NodeState, binding: Binding, simultaneous: bool, now: float, keep: float) -> NodeState:
    """After a registration of ``binding``: without S it replaces every binding and clears (RFC 5944
    3.8.2.2); with S it replaces only the binding of its own care-of address, and bindings that had ended
    unswept go as ``expired`` would take them. ``keep``: seconds a tombstone is kept."""
    ident = binding.identification
    last = max(state.last, ident)
    if not simultaneous:
        tombstones = _fields(state)[1]
        return normalized(last, max(state.cleared, ident), {binding.care_of_address: binding}, tombstones)
    bindings, tombstones = _fields(state)
    _ended(state, bindings, tombstones, now, keep)
    held = bindings.get(binding.care_of_address)
    if held is None or ident > held.identification or (ident == held.identification and later(binding, held)):
        bindings[binding.care_of_address] = binding
    return normalized(last, state.cleared, bindings, tombstones)


def deregistered(state: NodeState, care_of_address: int | None, identification: int, now: float,
                 keep: float) -> NodeState:
    """After a de-registration of one care-of address (it leaves a tombstone, forgotten after ``keep``
    seconds) or, with ``care_of_address`` None, of all of them (it clears)."""
    last = max(state.last, identification)
    bindings, tombstones = _fields(state)
    if care_of_address is None:
        return normalized(last, max(state.cleared, identification), bindings, tombstones)
    _bury(tombstones, Tombstone(care_of_address, identification, now + keep))
    return normalized(last, state.cleared, bindings, tombstones)


def expired(state: NodeState, now: float, keep: float) -> tuple[NodeState, list[Binding]]:
    """After ``now``: bindings ended go (leaving tombstones, see ``_ended``), tombstones due are forgotten.
    Returns the state and the bindings that ended."""
    bindings, tombstones = _fields(state)
    ended = _ended(state, bindings, tombstones, now, keep)
    tombstones = {c: t for c, t in tombstones.items() if t.forget_at > now}
    return normalized(state.last, state.cleared, bindings, tombstones), ended


def merged(held: NodeState, incoming: NodeState) -> NodeState:
    """The join of two copies of one node's state: ``last`` and ``cleared`` the larger; per care-of
    address the newer binding (equal Identification: ``later``) and the newer tombstone (equal: the held
    one); then ``normalized``."""
    bindings, tombstones = _fields(held)
    for b in incoming.bindings:
        mine = bindings.get(b.care_of_address)
        if mine is None or b.identification > mine.identification or (
            b.identification == mine.identification and later(b, mine)
        ):
            bindings[b.care_of_address] = b
    for t in incoming.tombstones:
        _bury(tombstones, t)
    last, cleared = max(held.last, incoming.last), max(held.cleared, incoming.cleared)
    return normalized(last, cleared, bindings, tombstones)


def records(state: NodeState) -> int:
    """Records the state takes on the wire: a binding or tombstone each, and ``cleared`` unless default."""
    return (len(state.bindings) + len(state.tombstones)
            + (state.cleared != default_cleared(state.last, state.bindings)))


def fitted(state: NodeState) -> tuple[NodeState, int]:
    """The state within ``MAX_RECORDS``, and how many records were given up to get there.

    Past the bound the merge rules no longer hold exactly: first the oldest tombstones are forgotten early
    (an older binding of their address held across a partition may come back); then, only for a node
    holding ten bindings (the most a Home Agent grants, config ``simultaneous_bindings``), ``cleared`` is raised
    to the oldest of the ten newest bindings, which drops any older one. A node needs so many records only
    when it uses many simultaneous bindings and de-registers them one by one faster than they are
    forgotten (docs/protocol.md, "Merging after a partition")."""
    before = records(state)
    if before <= MAX_RECORDS:
        return state, 0
    oldest_first = sorted(state.tombstones, key=lambda t: (t.identification, t.care_of_address))
    kept = oldest_first[min(before - MAX_RECORDS, len(oldest_first)):]
    state = state._replace(tombstones=tuple(sorted(kept)))
    if records(state) > MAX_RECORDS:
        newest = sorted(state.bindings, key=lambda b: (b.identification, b.care_of_address))[-MAX_RECORDS:]
        by_address = tuple(sorted(newest, key=lambda b: b.care_of_address))
        state = NodeState(state.last, newest[0].identification, by_address)
    return state, before - records(state)
