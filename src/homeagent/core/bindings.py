"""The mobility binding table (RFC 5944 section 3.8.1) and its expiry.

One table per Home Agent, keyed by home address; a mobile node has one binding per care-of address (more
than one only with simultaneous bindings). The table is also the one place that knows a mobile node's last
accepted registration Identification, which outlives the node's bindings so that replay protection (and,
with redundancy, the ordering of updates) still holds after a de-registration or an expiry.

Memory decides the representation: a carrier Home Agent holds a million bindings, and a Python object per
binding with an int or float per field costs some 300 bytes. So each mobile node is one packed ``bytes``
record (its last Identification, then 23 bytes per binding) and ``Binding`` values are made on demand. A
record is not tracked by the garbage collector and holds no other objects.

Expiry is a timer wheel of one-second buckets of home addresses, driven by ``now``: no task or timer per
binding. A renewal leaves a stale entry behind, which finds nothing due when its bucket comes. A binding
is removed by the first bucket that comes due at or after its lifetime ends (at most about a second
late), never before.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address
from typing import NamedTuple

_HEAD = struct.Struct("!Q")  # the last accepted Identification
_ENTRY = struct.Struct("!IHdQBI")  # care-of address, lifetime, expires, identification, flags, home agent
_ONE = struct.Struct("!QIHdQBI")  # a head and one entry: the common case, packed in one call
HEAD, ENTRY = _HEAD.size, _ENTRY.size


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

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "home_address": str(IPv4Address(self.home_address)),
            "care_of_address": str(IPv4Address(self.care_of_address)),
            "lifetime": self.lifetime,
            "remaining": round(self.remaining(now), 3),
            "identification": self.identification,
            "flags": self.flags,
            "home_agent": str(IPv4Address(self.home_agent)),
        }


def _decode(home_address: int, record: bytes) -> tuple[Binding, ...]:
    if len(record) == HEAD + ENTRY:
        return (Binding(home_address, *_ENTRY.unpack_from(record, HEAD)),)
    return tuple(Binding(home_address, *f) for f in _ENTRY.iter_unpack(record[HEAD:]))


def _encode(last_identification: int, bindings: tuple[Binding, ...] | list[Binding]) -> bytes:
    if len(bindings) == 1:
        b = bindings[0]
        return _ONE.pack(
            last_identification, b.care_of_address, b.lifetime, b.expires, b.identification, b.flags, b.home_agent
        )
    return _HEAD.pack(last_identification) + b"".join(
        _ENTRY.pack(b.care_of_address, b.lifetime, b.expires, b.identification, b.flags, b.home_agent)
        for b in bindings
    )


# Expiries of one state computed by two members differ by the transit time of the update that carried it;
# two acceptances of one request differ by at least a mobile node's retransmission timer (a second or so).
SAME_ACCEPTANCE = 0.25


def _later(identification: int, new: list[Binding], held: tuple[Binding, ...]) -> bool:
    """Between two states of one Identification (one request accepted twice: a retransmission after a
    failover, a split brain, two peers), the later acceptance wins, then the larger state: every member
    picks the same. The mobile node's last reply came from the later acceptance, which granted the later
    expiry to the binding the request made. Judged by that binding, not by the state's longest one: with
    simultaneous bindings an older binding that outlasts it is the same in both states (simulation seed
    967, peer mode, where two members accepted one request a second apart)."""
    made = [b.expires for b in new if b.identification == identification]
    kept = [b.expires for b in held if b.identification == identification]
    new_end = max(made) if made and kept else max((b.expires for b in new), default=0.0)
    held_end = max(kept) if made and kept else max((b.expires for b in held), default=0.0)
    if abs(new_end - held_end) > SAME_ACCEPTANCE:
        return new_end > held_end
    key = lambda bs: sorted((b.care_of_address, b.lifetime, b.flags, b.home_agent) for b in bs)  # noqa: E731
    return key(new) > key(held)


class BindingTable:
    def __init__(self) -> None:
        self._records: dict[int, bytes] = {}
        self._buckets: dict[int, list[int]] = {}  # second -> home addresses with a binding due then
        self._due: list[int] = []  # heap of bucket seconds
        self._count = 0

    # -- reading --------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of bindings (not of mobile nodes)."""
        return self._count

    def __iter__(self) -> Iterator[Binding]:
        for home_address, record in self._records.items():
            if len(record) > HEAD:
                yield from _decode(home_address, record)

    def lookup(self, home_address: int) -> tuple[int | None, tuple[Binding, ...]]:
        """The last accepted Identification and the bindings of one mobile node, in one read."""
        record = self._records.get(home_address)
        if record is None:
            return None, ()
        last = _HEAD.unpack_from(record)[0]
        return last, (_decode(home_address, record) if len(record) > HEAD else ())

    def export(self, home_address: int, now: float) -> tuple[int, list[tuple[int, int, int, int, int, int]]] | None:
        """A node's last Identification and its running bindings as (care-of address, home agent,
        identification, lifetime, flags, remaining ms): what a table transfer sends, made without
        building a Binding for the common single-binding node."""
        record = self._records.get(home_address)
        if record is None:
            return None
        if len(record) == HEAD + ENTRY:
            last, coa, lifetime, expires, ident, flags, ha = _ONE.unpack(record)
            ms = int((expires - now) * 1000)
            return last, ([(coa, ha, ident, lifetime, flags, ms)] if ms > 0 else [])
        last = _HEAD.unpack_from(record)[0]
        out = []
        for coa, lifetime, expires, ident, flags, ha in _ENTRY.iter_unpack(record[HEAD:]):
            ms = int((expires - now) * 1000)
            if ms > 0:
                out.append((coa, ha, ident, lifetime, flags, ms))
        return last, out

    def bindings_of(self, home_address: int) -> tuple[Binding, ...]:
        return self.lookup(home_address)[1]

    def last_identification(self, home_address: int) -> int | None:
        """The Identification of the last registration accepted for this mobile node, if any."""
        return self.lookup(home_address)[0]

    def next_expiry(self) -> float | None:
        return float(self._due[0]) if self._due else None

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
        binding = Binding(home_address, care_of_address, lifetime, now + lifetime, identification, flags, home_agent)
        last, current = held if held is not None else self.lookup(home_address)
        if simultaneous and current:
            kept = [b for b in current if b.care_of_address != care_of_address and b.expires > now]
            removed = [b for b in current if b.care_of_address == care_of_address or b.expires <= now]
        else:
            kept, removed = [], list(current)
        kept.append(binding)
        self._store(home_address, last, identification, kept, len(current))
        self._schedule(home_address, binding.expires)
        return binding, removed

    def deregister(self, home_address: int, care_of_address: int | None, identification: int) -> list[Binding]:
        """Remove the binding for ``care_of_address``, or every binding of the node when it is None."""
        last, current = self.lookup(home_address)
        if care_of_address is None:
            kept, removed = [], list(current)
        else:
            kept = [b for b in current if b.care_of_address != care_of_address]
            removed = [b for b in current if b.care_of_address == care_of_address]
        self._store(home_address, last, identification, kept, len(current))
        return removed

    def apply(
        self, home_address: int, identification: int, bindings: list[Binding]
    ) -> tuple[list[Binding], list[Binding]] | None:
        """Make ``bindings`` the node's state if ``identification`` is newer than what the table holds
        (or equal, and the state later: see ``_later``).

        This is how a replica takes a Binding Update or a table download: state, newest wins, so late,
        duplicated or reordered updates change nothing. Returns (bindings before, bindings after), or None
        when the update is not newer. Bindings already expired are dropped by the next ``expire``.
        """
        last, current = self.lookup(home_address)
        if last is not None and (identification < last or (identification == last and not _later(identification, bindings, current))):
            return None
        self._store(home_address, last, identification, bindings, len(current))
        for b in bindings:
            self._schedule(home_address, b.expires)
        return list(current), bindings

    def bound(self) -> list[int]:
        """The home addresses with at least one binding: the mobile nodes away from home."""
        return [a for a, r in self._records.items() if len(r) > HEAD]

    def home_addresses(self, since: int | None = None) -> list[int]:
        """Every mobile node the table knows, bound or not: what a table transfer walks. With ``since``
        (NTP seconds), only those whose last Identification (an NTP timestamp) is from then on."""
        if since is None:
            return list(self._records)
        head = _HEAD.unpack_from
        return [a for a, r in self._records.items() if (head(r)[0] >> 32) - since & 0xFFFFFFFF < 1 << 31]

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose lifetime has ended by ``now``."""
        expired: list[Binding] = []
        due = self._due
        while due and due[0] <= now:
            for home_address in self._buckets.pop(heapq.heappop(due), ()):
                last, current = self.lookup(home_address)
                kept = [b for b in current if b.expires > now]
                if len(kept) != len(current):  # else a stale entry: renewed, removed, or expired already
                    expired.extend(b for b in current if b.expires <= now)
                    assert last is not None
                    self._store(home_address, last, last, kept, len(current))
        return expired

    # -- internals ------------------------------------------------------------------------------------

    def _store(
        self, home_address: int, last: int | None, identification: int, bindings: list[Binding], before: int
    ) -> None:
        newest = identification if last is None or identification > last else last
        self._records[home_address] = _encode(newest, bindings) if bindings else _HEAD.pack(newest)
        self._count += len(bindings) - before

    def _schedule(self, home_address: int, expires: float) -> None:
        second = math.ceil(expires)
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [home_address]
            heapq.heappush(self._due, second)
        else:
            bucket.append(home_address)
