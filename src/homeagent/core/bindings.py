"""The mobility binding table (RFC 5944 section 3.8.1), its expiry, and per-bucket digests of it.

One table per Home Agent, keyed by home address; a mobile node has one binding per care-of address (more
than one only with simultaneous bindings). The table holds each node's whole state as ``core/node_state.py``
defines it (last Identification, cleared, bindings, tombstones) and changes it only through that module's
operations and merge, so that members converge on what applying every operation in Identification order
gives, partitions included (docs/protocol.md, "Merging after a partition"). The last Identification
outlives the node's bindings so that replay protection still holds after a de-registration or an expiry.

Memory decides the representation: a carrier Home Agent holds a million bindings, and a Python object per
binding with an int or float per field costs some 300 bytes. So each mobile node is one packed ``bytes``
record (its last Identification, then 28 bytes per binding) and ``Binding`` values are made on demand. A
record is not tracked by the garbage collector and holds no other objects. The 28th byte of a binding is
its source (``Source``: accepted here, a member's Binding Update, a table download, the store), shown by
``homeagent bindings`` and nowhere else: it is no part of a node's state (not merged, not in a digest, not
on the wire), and costs no memory (a 36-byte record takes the same 80-byte allocation as a 35-byte one).
The usual node needs nothing more: its ``cleared`` is the default (``node_state.default_cleared``) and
it has no tombstone. The few others also have a packed record in ``_extra`` (their cleared, then 20 bytes
per tombstone).

Expiry is a timer wheel of one-second buckets of home addresses, driven by ``now``: no task or timer per
binding. Every deadline (a binding's end, a tombstone's forgetting) gets an entry when it is made; a
renewal leaves a stale entry behind, which finds nothing due when its bucket comes. A binding is removed
by the first bucket that comes due at or after its lifetime ends (at most about a second late), never
before.

Persistence (runtime/persistence.py) asks which nodes changed since it last wrote (``take_changed``):
with ``track_changes`` the table keeps the set of their home addresses, beside the tunnel change stream;
without, it keeps nothing and the hot path pays one test.

Digests: for the reconciliation of two members' tables, the home addresses fall into ``DIGEST_BUCKETS``
buckets (``home_address % DIGEST_BUCKETS``), and each bucket has a digest, the sum modulo 2**32 of its
nodes' CRC-32s of their state without expiry times (``node_digest``): two members holding the same states
have the same digests whatever their clocks. Each is kept up to date at every change of a record, so
reading them costs nothing.
"""

from __future__ import annotations

import heapq
import math
import struct
import zlib
from collections.abc import Iterator, Sequence

from homeagent.core.effects import Tunnel, TunnelSet
from homeagent.core.node_state import (
    EMPTY,
    Binding,
    NodeState,
    Source,
    Tombstone,
    default_cleared,
    deregistered,
    expired,
    fitted,
    merged,
    registered,
)

__all__ = ["Binding", "BindingTable", "DIGEST_BUCKETS", "NodeState", "Source", "Tombstone", "node_digest"]

_T_FLAG = 0x02  # the registration's T bit (RFC 3024): reverse tunnelling


def tunnels_of(bindings: tuple[Binding, ...]) -> tuple[Tunnel, ...]:
    """A node's tunnels: one per binding, from the address it registered with (RFC 5944 4.2.3)."""
    if len(bindings) == 1:  # the usual node, on every registration: no generator
        b = bindings[0]
        return (Tunnel(b.care_of_address, b.home_agent, bool(b.flags & _T_FLAG)),)
    return tuple(Tunnel(b.care_of_address, b.home_agent, bool(b.flags & _T_FLAG)) for b in bindings)


def _tunnels_in(record: bytes) -> tuple[Tunnel, ...]:
    """``tunnels_of`` straight from a stored record, without making its Bindings."""
    if len(record) == _ONE_SIZE:  # the usual node, on every new registration: only what a tunnel needs
        coa, flags, ha = _ONE_TUNNEL.unpack_from(record, HEAD)
        return (_new(Tunnel, (coa, ha, flags & _T_FLAG != 0)),)
    return tuple(Tunnel(coa, ha, bool(flags & _T_FLAG))
                 for coa, _, _, _, flags, ha in _BINDING.iter_unpack(record[HEAD:]))


_HEAD = struct.Struct("!Q")  # the last accepted Identification
# care-of address, lifetime, expires, identification, flags, home agent, source
_ENTRY = struct.Struct("!IHdQBIB")
_BINDING = struct.Struct("!IHdQBIx")  # an entry read as a Binding's fields (its source skipped)
_ONE = struct.Struct("!QIHdQBIB")  # a head and one entry: the common case, packed in one call
_ONE_READ = struct.Struct("!QIHdQBIx")  # the same, read without its source
HEAD, ENTRY = _HEAD.size, _ENTRY.size
_SOURCE_AT = ENTRY - 1  # the source's offset in an entry
_ONE_SIZE = HEAD + ENTRY
_ONE_TUNNEL = struct.Struct("!I18xBI")  # of an entry: the care-of address, the flags and the home agent
_CLEARED = struct.Struct("!Q")  # the head of an ``_extra`` record
_TOMBSTONE = struct.Struct("!IQd")  # care-of address, identification, forget at

DIGEST_BUCKETS = 256
_MASK32 = 0xFFFFFFFF
# The canonical encoding a node's digest is the CRC-32 of: home address, last, cleared, the counts of
# bindings and tombstones; then per binding by care-of address (care-of, Identification, lifetime, flags,
# home agent); then per tombstone by care-of address (care-of, Identification). No expiry, no forget time.
_CANON_HEAD = struct.Struct("!IQQBB")
_CANON_BINDING = struct.Struct("!IQHBI")
_CANON_TOMBSTONE = struct.Struct("!IQ")
_CANON_ONE = struct.Struct("!IQQBBIQHBI")  # the usual node: one binding, no tombstone
_pack_one, _pack_canon_one, _crc32 = _ONE.pack, _CANON_ONE.pack, zlib.crc32  # the hot path's, bound once
_REGISTRATION = int(Source.REGISTRATION)
# The named tuples the hot path makes for every registration (a Binding, a Tunnel, a TunnelSet) are made
# with tuple.__new__ and all their fields: a named tuple's own __new__ is a Python function, and costs as
# much again as the tuple (bench/registrations.py).
_new = tuple.__new__
_ceil = math.ceil
_BUCKET = DIGEST_BUCKETS - 1  # home_address % DIGEST_BUCKETS, as a mask (256 is a power of two)

# A tombstone's life when nothing configures it: the default max_lifetime (1800 s) and twice the default
# replay_tolerance (7 s). The registrar sets it from the configuration (Registrar.reconfigure).
DEFAULT_TOMBSTONE_LIFETIME = 1800.0 + 2 * 7


def node_digest(home_address: int, state: NodeState) -> int:
    """The CRC-32 of a node's canonical encoding (see ``_CANON_HEAD``): equal states, equal digests."""
    return zlib.crc32(
        _CANON_HEAD.pack(home_address, state.last, state.cleared, len(state.bindings), len(state.tombstones))
        + b"".join(
            _CANON_BINDING.pack(b.care_of_address, b.identification, b.lifetime, b.flags, b.home_agent)
            for b in sorted(state.bindings, key=lambda b: b.care_of_address)
        )
        + b"".join(
            _CANON_TOMBSTONE.pack(t.care_of_address, t.identification)
            for t in sorted(state.tombstones, key=lambda t: t.care_of_address)
        )
    )


def _decode(home_address: int, record: bytes) -> tuple[Binding, ...]:
    if len(record) == HEAD + ENTRY:
        return (Binding(home_address, *_BINDING.unpack_from(record, HEAD)),)
    return tuple(Binding(home_address, *f) for f in _BINDING.iter_unpack(record[HEAD:]))


def _sources(record: bytes) -> bytes:
    """The source of each binding of a record, in the record's order: one byte each."""
    return record[HEAD + _SOURCE_AT :: ENTRY]


def _encode(last_identification: int, bindings: tuple[Binding, ...] | list[Binding], sources: bytes) -> bytes:
    if len(bindings) == 1:
        b = bindings[0]
        return _ONE.pack(last_identification, b.care_of_address, b.lifetime, b.expires, b.identification,
                         b.flags, b.home_agent, sources[0])
    return _HEAD.pack(last_identification) + b"".join(
        _ENTRY.pack(b.care_of_address, b.lifetime, b.expires, b.identification, b.flags, b.home_agent, source)
        for b, source in zip(bindings, sources)
    )


_Export = tuple[int, int, list[tuple[int, int, int, int, int, int]], list[tuple[int, int, int]]]


class BindingTable:
    def __init__(self, tombstone_lifetime: float = DEFAULT_TOMBSTONE_LIFETIME) -> None:
        self._records: dict[int, bytes] = {}
        self._extra: dict[int, bytes] = {}  # the rare nodes with tombstones or a cleared not the default
        self._buckets: dict[int, list[int]] = {}  # second -> home addresses with a deadline then
        self._due: list[int] = []  # heap of bucket seconds
        self._count = 0
        self._digests = [0] * DIGEST_BUCKETS
        # Seconds a tombstone is kept: longer than any binding it can cancel may still run anywhere.
        self.tombstone_lifetime = tombstone_lifetime
        self.records_given_up = 0  # past node_state.MAX_RECORDS (node_state.fitted)
        # The change stream (``changes``): per node changed since it was last read, its tunnels before.
        self._touched: dict[int, tuple[Tunnel, ...]] = {}
        self._returned: set[int] = set()  # nodes that de-registered from home meanwhile
        self._changed: set[int] | None = None  # nodes changed since ``take_changed`` (persistence)

    # -- reading --------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of bindings (not of mobile nodes)."""
        return self._count

    def nodes(self) -> int:
        """The number of mobile nodes the table knows (bound or not)."""
        return len(self._records)

    def __contains__(self, home_address: object) -> bool:
        """Whether the table knows the node (bindings, or only its last Identification)."""
        return home_address in self._records

    def __iter__(self) -> Iterator[Binding]:
        for home_address, record in self._records.items():
            if len(record) > HEAD:
                yield from _decode(home_address, record)

    def lookup(self, home_address: int) -> tuple[int | None, tuple[Binding, ...]]:
        """The last accepted Identification and the bindings of one mobile node, in one read."""
        record = self._records.get(home_address)
        if record is None:
            return None, ()
        if len(record) == HEAD + ENTRY:  # the usual node, on every renewal: one unpacking, made as _new says
            last, coa, lifetime, expires, ident, flags, ha = _ONE_READ.unpack(record)
            return last, (_new(Binding, (home_address, coa, lifetime, expires, ident, flags, ha)),)
        last = _HEAD.unpack_from(record)[0]
        return last, (_decode(home_address, record) if len(record) > HEAD else ())

    def state(self, home_address: int) -> NodeState | None:
        """A node's whole state (node_state.NodeState), or None for a node the table never heard of."""
        record = self._records.get(home_address)
        if record is None:
            return None
        last = _HEAD.unpack_from(record)[0]
        bindings = _decode(home_address, record) if len(record) > HEAD else ()
        extra = self._extra.get(home_address)
        if extra is None:
            return NodeState(last, default_cleared(last, bindings), bindings)
        tombstones = tuple(Tombstone(*t) for t in _TOMBSTONE.iter_unpack(extra[_CLEARED.size:]))
        return NodeState(last, _CLEARED.unpack_from(extra)[0], bindings, tombstones)

    def export(self, home_address: int, now: float) -> _Export | None:
        """A node's state as it travels, relative to ``now``: (last, cleared, bindings as (care-of address,
        home agent, identification, lifetime, flags, remaining ms), tombstones as (care-of address,
        identification, remaining ms)). A binding that has ended but is not swept yet goes with 0 ms left:
        the receiver's expiry takes it as ours will (wire/redundancy.py ``aged_node``), and the default
        ``cleared`` of what is sent stays ours. Made without building a Binding for the usual node."""
        record = self._records.get(home_address)
        if record is None:
            return None
        if len(record) == HEAD + ENTRY and home_address not in self._extra:
            last, coa, lifetime, expires, ident, flags, ha = _ONE_READ.unpack(record)
            return last, ident, [(coa, ha, ident, lifetime, flags, max(0, int((expires - now) * 1000)))], []
        state = self.state(home_address)
        assert state is not None
        return (
            state.last,
            state.cleared,
            [(b.care_of_address, b.home_agent, b.identification, b.lifetime, b.flags,
              max(0, int((b.expires - now) * 1000))) for b in state.bindings],
            [(t.care_of_address, t.identification, ms) for t in state.tombstones
             if (ms := int((t.forget_at - now) * 1000)) > 0],
        )

    def usual(self, home_address: int) -> tuple[int, int, int, float, int, int, int] | None:
        """For the usual node (one binding, which cleared, no tombstone): its last Identification and its
        binding's care-of address, lifetime, expiry, Identification, flags and home agent, in one unpacking
        and without a Binding; None for any other node (``state`` has it). What the store writes for most
        nodes (core/persisted.py)."""
        record = self._records.get(home_address)
        if record is None or len(record) != HEAD + ENTRY or home_address in self._extra:
            return None
        return _ONE_READ.unpack(record)

    def bindings_of(self, home_address: int) -> tuple[Binding, ...]:
        return self.lookup(home_address)[1]

    def sources_of(self, home_address: int) -> bytes:
        """Where each of a node's bindings came from (a ``Source`` a byte), in ``bindings_of``'s order."""
        record = self._records.get(home_address)
        return _sources(record) if record is not None else b""

    def last_identification(self, home_address: int) -> int | None:
        """The Identification of the last registration accepted for this mobile node, if any."""
        return self.lookup(home_address)[0]

    def next_expiry(self) -> float | None:
        return float(self._due[0]) if self._due else None

    def digests(self) -> list[int]:
        """The digest of every bucket (a copy): the sum modulo 2**32 of its nodes' ``node_digest``."""
        return list(self._digests)

    def home_addresses_in(self, buckets: set[int]) -> list[int]:
        """Every mobile node the table knows whose bucket (``home_address % DIGEST_BUCKETS``) is in
        ``buckets``. A walk of the table: call it for the buckets whose digests differ, not per node."""
        return [a for a in self._records if a % DIGEST_BUCKETS in buckets]

    # -- the change stream ----------------------------------------------------------------------------

    def changes(self) -> list[TunnelSet]:
        """What changed since the last call, as the tunnels each changed node has now: the one stream of
        binding changes, whatever made them (a registration, a Binding Update, a table download, an expiry,
        an operator's removal), for the core to hand to the data plane and the home link. A node whose
        tunnels end as they began (a renewal, a new lifetime) is left out."""
        touched = self._touched
        if not touched:
            return []
        returned = self._returned
        out = []
        records = self._records
        for home_address, before in touched.items():
            record = records.get(home_address)
            after = _tunnels_in(record) if record is not None and len(record) > HEAD else ()
            if after != before:
                out.append(_new(TunnelSet, (home_address, after, not after and home_address in returned)))
        touched.clear()
        returned.clear()
        return out

    def _touch(self, home_address: int, before: tuple[Binding, ...]) -> None:
        if home_address not in self._touched:
            self._touched[home_address] = tunnels_of(before)

    # -- what persistence writes ----------------------------------------------------------------------

    def track_changes(self) -> None:
        """From now on, keep the home addresses of the nodes whose state changes (``take_changed``)."""
        if self._changed is None:
            self._changed = set()

    def take_changed(self) -> set[int]:
        """The nodes whose state changed (any change: a renewal too) since the last call, and forget them.
        Empty unless ``track_changes`` was called."""
        changed = self._changed
        if not changed:
            return set()
        self._changed = set()
        return changed

    # -- changing -------------------------------------------------------------------------------------

    def register(
        self,
        home_address: int,
        care_of_address: int,
        lifetime: int,
        identification: int,
        now: float,
        flags: int = 0,
        simultaneous: bool = False,
        home_agent: int = 0,
        held: tuple[int | None, tuple[Binding, ...]] | None = None,
    ) -> tuple[Binding, list[Binding]]:
        """Create or renew the binding for this care-of address.

        Without ``simultaneous`` the new binding replaces every other binding of the mobile node (RFC 5944
        section 3.8.2.2). Returns the binding and the bindings it replaced. ``held`` is what ``lookup``
        just returned for the node, if the caller has it (the registrar does: one read, not two).
        """
        binding = Binding(home_address, care_of_address, lifetime, now + lifetime, identification, flags,
                          home_agent)
        replaced = self.bind(home_address, care_of_address, lifetime, identification, now, flags,
                             simultaneous, home_agent, held)
        return binding, list(replaced)

    def bind(
        self,
        home_address: int,
        care_of_address: int,
        lifetime: int,
        identification: int,
        now: float,
        flags: int = 0,
        simultaneous: bool = False,
        home_agent: int = 0,
        held: tuple[int | None, tuple[Binding, ...]] | None = None,
    ) -> Sequence[Binding]:
        """``register`` without making its result, only the bindings replaced (as stored, not a copy): the
        registrar's way, once per accepted registration, where a Binding and a list made for nothing cost
        a tenth of the table's work."""
        expires = now + lifetime
        last, current = held if held is not None else self.lookup(home_address)
        if simultaneous or home_address in self._extra or (last is not None and identification <= last):
            binding = Binding(home_address, care_of_address, lifetime, expires, identification, flags,
                              home_agent)
            before = self.state(home_address)
            after = registered(before or EMPTY, binding, simultaneous, now, self.tombstone_lifetime)
            after = self._put(home_address, before, after)
            return [b for b in current if b not in after.bindings]
        # The usual registration: one binding, which clears whatever the node held; no tombstone. The
        # state after is (identification, identification, {binding}), whose cleared is the default.
        touched = self._touched
        if not current:
            if home_address not in touched:
                touched[home_address] = ()  # a new node, or one back from home
        elif len(current) != 1 or home_address not in touched and (
            current[0].care_of_address != care_of_address or current[0].home_agent != home_agent
            or (current[0].flags ^ flags) & _T_FLAG
        ):
            self._touch(home_address, current)  # a renewal of the same tunnel is no change
        self._records[home_address] = _pack_one(identification, care_of_address, lifetime, expires,
                                                identification, flags, home_agent, _REGISTRATION)
        changed = self._changed
        if changed is not None:
            changed.add(home_address)
        new = _crc32(_pack_canon_one(
            home_address, identification, identification, 1, 0, care_of_address, identification, lifetime, flags,
            home_agent,
        ))
        if last is None:
            old = 0
        elif len(current) == 1:
            _, coa, held_lifetime, _, ident, held_flags, ha = current[0]
            old = _crc32(_pack_canon_one(
                home_address, last, ident, 1, 0, coa, ident, held_lifetime, held_flags, ha
            ))
        else:
            old = node_digest(home_address, NodeState(last, default_cleared(last, current), current))
        digests = self._digests
        bucket = home_address & _BUCKET
        digests[bucket] = (digests[bucket] + new - old) & _MASK32
        self._count += 1 - len(current)
        self._schedule(home_address, expires)
        return current

    def deregister(
        self, home_address: int, care_of_address: int | None, identification: int, now: float | None = None,
        returned_home: bool = False,
    ) -> list[Binding]:
        """Remove the binding for ``care_of_address``, or every binding of the node when it is None. A
        de-registration of one address leaves a tombstone, forgotten ``tombstone_lifetime`` after ``now``
        (so ``now`` is needed then). ``returned_home``: the node de-registered from home (``changes``)."""
        if returned_home:
            self._returned.add(home_address)
        if care_of_address is not None and now is None:
            raise ValueError("a de-registration of one care-of address needs now: its tombstone is timed")
        before = self.state(home_address)
        at = 0.0 if now is None else now  # (no tombstone is made without it)
        after = deregistered(before or EMPTY, care_of_address, identification, at, self.tombstone_lifetime)
        after = self._put(home_address, before, after)
        return [b for b in (before.bindings if before else ()) if b not in after.bindings]

    def merge(
        self, home_address: int, incoming: NodeState, now: float | None = None, source: Source = Source.UPDATE
    ) -> tuple[list[Binding], list[Binding]] | None:
        """Merge a member's copy of a node's state into ours (node_state.merged): how a replica takes a
        Binding Update or a table transfer, and how the store's state is loaded at start. Returns (bindings
        before, bindings after), or None when the merge changed nothing (ours already held all it says).
        With ``now``, bindings of the result that have ended by then go at once, as ``expire`` takes them
        (a sender sends an ended binding with 0 ms left), so that they never show as bindings here.
        ``source``: what the bindings the merge takes from ``incoming`` are shown to come from."""
        if home_address not in self._records and len(incoming.bindings) == 1 and not incoming.tombstones:
            b = incoming.bindings[0]  # a node new here in the usual state, as a download or a load brings
            if incoming.cleared == b.identification <= incoming.last and (now is None or b.expires > now):
                self._install_one(home_address, incoming.last, b, source)
                return [], [b]
        before = self.state(home_address)
        after = merged(before or EMPTY, incoming)
        if now is not None and any(b.expires <= now for b in after.bindings):
            after = expired(after, now, self.tombstone_lifetime)[0]
        if after == before:
            return None
        after = self._put(home_address, before, after, source)
        if after == before:
            return None
        return (list(before.bindings) if before else []), list(after.bindings)

    def bound(self) -> list[int]:
        """The home addresses with at least one binding: the mobile nodes away from home."""
        return [a for a, r in self._records.items() if len(r) > HEAD]

    def home_addresses(self) -> list[int]:
        """Every mobile node the table knows, bound or not: what a whole-table transfer walks."""
        return list(self._records)

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose lifetime has ended by ``now``; forget the tombstones due."""
        ended: list[Binding] = []
        due = self._due
        keep = self.tombstone_lifetime
        records, extra = self._records, self._extra
        while due and due[0] <= now:
            for home_address in self._buckets.pop(heapq.heappop(due), ()):
                record = records[home_address]
                if home_address not in extra:  # no tombstone to forget: only bindings can be due
                    if len(record) == HEAD + ENTRY:
                        one = self._expire_one(home_address, record, now)
                        if one is not None:
                            ended.append(one)
                        continue
                    if len(record) == HEAD:
                        continue  # a stale entry: nothing left to expire
                state = self.state(home_address)
                assert state is not None
                if all(b.expires > now for b in state.bindings) and all(
                    t.forget_at > now for t in state.tombstones
                ):
                    continue  # a stale entry: renewed, removed, or expired already
                after, gone = expired(state, now, keep)
                self._put(home_address, state, after)
                ended.extend(gone)
        return ended

    # -- internals ------------------------------------------------------------------------------------

    def _install_one(self, home_address: int, last: int, b: Binding, source: Source) -> None:
        """``merge`` of a usual state (one binding, which cleared, no tombstone) into a node the table does
        not know, without building states: what ``_put`` would store, some twenty times faster (a store of
        a million nodes loads in seconds, not half a minute)."""
        _, coa, lifetime, expires, ident, flags, ha = b
        if home_address not in self._touched:
            self._touched[home_address] = ()
        self._records[home_address] = _pack_one(last, coa, lifetime, expires, ident, flags, ha, source)
        if self._changed is not None:
            self._changed.add(home_address)
        new = _crc32(_pack_canon_one(home_address, last, ident, 1, 0, coa, ident, lifetime, flags, ha))
        digests = self._digests
        bucket = home_address & _BUCKET
        digests[bucket] = (digests[bucket] + new) & _MASK32
        self._count += 1
        self._schedule(home_address, expires)

    def _expire_one(self, home_address: int, record: bytes, now: float) -> Binding | None:
        """``expire`` for the usual node (one binding, cleared by it, no tombstone), without building its
        state: the binding goes, and leaves no tombstone (its own cleared cancels every older binding)."""
        last, coa, lifetime, expires, ident, flags, ha = _ONE_READ.unpack(record)
        if expires > now:
            return None  # a stale entry: renewed
        binding = Binding(home_address, coa, lifetime, expires, ident, flags, ha)
        self._touch(home_address, (binding,))
        self._records[home_address] = _HEAD.pack(last)
        if self._changed is not None:
            self._changed.add(home_address)
        if ident != last:  # cleared is no longer the default (the last Identification)
            self._extra[home_address] = _CLEARED.pack(ident)
        old = _crc32(_pack_canon_one(home_address, last, ident, 1, 0, coa, ident, lifetime, flags, ha))
        new = _crc32(_CANON_HEAD.pack(home_address, last, ident, 0, 0))
        digests = self._digests
        bucket = home_address & _BUCKET
        digests[bucket] = (digests[bucket] + new - old) & _MASK32
        self._count -= 1
        return binding

    def _put(self, home_address: int, before: NodeState | None, after: NodeState,
             source: Source = Source.REGISTRATION) -> NodeState:
        """Store a node's new state (within node_state.MAX_RECORDS), keeping the count of bindings, the
        digest of its bucket and the wheel up to date. A binding it held before keeps its source; a new one
        comes from ``source``. Returns what was stored."""
        self._touch(home_address, before.bindings if before is not None else ())
        after, given_up = fitted(after)
        self.records_given_up += given_up
        bindings = after.bindings
        if bindings:
            sourced: dict[Binding, int] = {}
            if before is not None and before.bindings:
                sourced = dict(zip(before.bindings, _sources(self._records[home_address])))
            sources = bytes(sourced.get(b, source) for b in bindings)
            self._records[home_address] = _encode(after.last, bindings, sources)
        else:
            self._records[home_address] = _HEAD.pack(after.last)
        if self._changed is not None:
            self._changed.add(home_address)
        if after.tombstones or after.cleared != default_cleared(after.last, after.bindings):
            self._extra[home_address] = _CLEARED.pack(after.cleared) + b"".join(
                _TOMBSTONE.pack(*t) for t in after.tombstones
            )
        else:
            self._extra.pop(home_address, None)
        bucket = home_address % DIGEST_BUCKETS
        old = node_digest(home_address, before) if before is not None else 0
        self._digests[bucket] = (self._digests[bucket] + node_digest(home_address, after) - old) & _MASK32
        self._count += len(after.bindings) - (len(before.bindings) if before else 0)
        held = (set(before.bindings) | set(before.tombstones)) if before else set()
        for b in after.bindings:
            if b not in held:
                self._schedule(home_address, b.expires)
        for t in after.tombstones:
            if t not in held:
                self._schedule(home_address, t.forget_at)
        return after

    def _schedule(self, home_address: int, at: float) -> None:
        second = _ceil(at)
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [home_address]
            heapq.heappush(self._due, second)
        else:
            bucket.append(home_address)
