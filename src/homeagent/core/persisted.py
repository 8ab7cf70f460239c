"""A mobile node's state as the store keeps it (runtime/store.py): bytes, with every time on the wall clock.

The table's times are monotonic (core/clock.py), and a restart starts a new monotonic base: a stored
monotonic expiry would mean nothing to the next process. So a binding's expiry and a tombstone's forget
time are stored as Unix seconds, and turned back into the new process's monotonic time at load
(``states``); what has ended by then is dropped by the table's merge, as an ended binding a member sends is.
A step of the wall clock while the daemon is down shortens or stretches what is left by the step, as it
would for any host that keeps absolute times; no other choice survives a reboot.

A record, big-endian (the store's schema version 1)::

    home address u32, last u64, cleared u64, bindings u8, tombstones u8           22 bytes
    per binding:   care-of u32, lifetime u16, expires f64, identification u64,
                   flags u8, home agent u32                                       27 bytes
    per tombstone: care-of u32, identification u64, forget at f64                 20 bytes

Identifications are stored as the wire carries them, NTP timestamps (``wire/era.py``: the table counts them
from 2000), so that a store written before that choice reads the same. ``last`` is the node's last
accepted Identification, kept with or without bindings: replay protection
(RFC 5944 5.7) outlives a restart, and a request older than one accepted before it is answered 133. A
chunk is records back to back; of two records of one home address, the later one holds.

Encoding reads the usual node with ``BindingTable.usual`` (one unpacking, one packing, no Binding made:
a store write per registration must stay cheap), any other with ``BindingTable.state``. A binding that has
ended but is not swept yet is written as it is, and dropped at load.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator

from homeagent.core.bindings import Binding, BindingTable, NodeState, Tombstone
from homeagent.core.node_state import MAX_RECORDS
from homeagent.wire.era import MASK, OFFSET

_HEAD = struct.Struct("!IQQBB")
_BINDING = struct.Struct("!IHdQBI")
_TOMBSTONE = struct.Struct("!IQd")
_ONE = struct.Struct("!IQQBBIHdQBI")  # the usual node: a head and one binding, packed in one call
_pack_one = _ONE.pack
_new = tuple.__new__  # a named tuple with all its fields, without its Python-level __new__ (core/bindings.py)


class CorruptRecord(ValueError):
    """A chunk that no encoder of ours wrote: the store is corrupt."""


def encode(table: BindingTable, home_addresses: Iterable[int], offset: float) -> bytes:
    """The records of ``home_addresses`` as the table holds them, back to back, times turned into wall
    time by ``offset`` (wall minus monotonic, the core's WallClock). A home address the table does not know
    is skipped."""
    usual, full = table.usual, table.state
    parts = []
    for home_address in home_addresses:
        one = usual(home_address)
        if one is not None:  # the usual node: one unpacking, one packing
            last, coa, lifetime, expires, ident, flags, ha = one
            ident = (ident + OFFSET) & MASK
            parts.append(_pack_one(home_address, (last + OFFSET) & MASK, ident, 1, 0, coa, lifetime,
                                   expires + offset, ident, flags, ha))
            continue
        state = full(home_address)
        if state is None:
            continue
        last, cleared, bindings, tombstones = state
        parts.append(_HEAD.pack(home_address, (last + OFFSET) & MASK, (cleared + OFFSET) & MASK, len(bindings),
                                len(tombstones)))
        parts.extend(_BINDING.pack(b.care_of_address, b.lifetime, b.expires + offset,
                                   (b.identification + OFFSET) & MASK, b.flags, b.home_agent) for b in bindings)
        parts.extend(_TOMBSTONE.pack(t.care_of_address, (t.identification + OFFSET) & MASK, t.forget_at + offset)
                     for t in tombstones)
    return b"".join(parts)


def records(chunk: bytes) -> Iterator[tuple[int, bytes]]:
    """Each record of a chunk as (home address, its bytes), in order; CorruptRecord at the first one that
    cannot be one of ours (cut short, more records than a node may hold)."""
    at, end = 0, len(chunk)
    while at < end:
        if end - at < _HEAD.size:
            raise CorruptRecord(f"a record cut short at byte {at}")
        home_address, _, _, bindings, tombstones = _HEAD.unpack_from(chunk, at)
        if bindings > MAX_RECORDS or tombstones > MAX_RECORDS:
            raise CorruptRecord(f"a record of {bindings} bindings and {tombstones} tombstones at byte {at}")
        size = _HEAD.size + bindings * _BINDING.size + tombstones * _TOMBSTONE.size
        if end - at < size:
            raise CorruptRecord(f"a record cut short at byte {at}")
        yield home_address, chunk[at:at + size]
        at += size


def state(record: bytes, offset: float) -> NodeState:
    """A record (one of ``records``) as the table's state, its wall times turned into monotonic ones by
    ``offset`` (wall minus monotonic, now). Not normalized: the table's merge does that. CorruptRecord for
    a time that is not a number."""
    if len(record) == _ONE.size:  # the usual node: one unpacking
        home_address, last, cleared, _, _, coa, lifetime, expires, ident, flags, ha = _ONE.unpack(record)
        last, cleared, ident = (last - OFFSET) & MASK, (cleared - OFFSET) & MASK, (ident - OFFSET) & MASK
        one = _new(Binding, (home_address, coa, lifetime, _monotonic(expires, offset), ident, flags, ha))
        return _new(NodeState, (last if last >= ident else ident, cleared, (one,), ()))
    home_address, last, cleared, count, _ = _HEAD.unpack_from(record)
    last, cleared = (last - OFFSET) & MASK, (cleared - OFFSET) & MASK
    at = _HEAD.size
    bindings = []
    end = at + count * _BINDING.size
    for coa, lifetime, expires, ident, flags, ha in _BINDING.iter_unpack(record[at:end]):
        bindings.append(Binding(home_address, coa, lifetime, _monotonic(expires, offset), (ident - OFFSET) & MASK,
                                flags, ha))
    at += count * _BINDING.size
    tombstones = tuple(Tombstone(coa, (ident - OFFSET) & MASK, _monotonic(forget_at, offset))
                       for coa, ident, forget_at in _TOMBSTONE.iter_unpack(record[at:]))
    # (a last below a binding's Identification is no state of ours; taken as the newest it knows of)
    last = max([last, *(b.identification for b in bindings)])
    return NodeState(last, cleared, tuple(sorted(bindings, key=lambda b: b.care_of_address)),
                     tuple(sorted(tombstones)))


def _monotonic(wall: float, offset: float) -> float:
    if not math.isfinite(wall):
        raise CorruptRecord(f"a time of {wall}")
    return wall - offset
