"""The mobility binding table (RFC 5944 section 3.8.1) and its expiry.

One table per Home Agent, keyed by home address; a mobile node has one binding per care-of address (more
than one only with simultaneous bindings). The table is also the one place that knows a mobile node's last
accepted registration Identification, which outlives the node's bindings so replay protection (and, with
redundancy, ordering of updates) holds after a de-registration or expiry.

Expiry is a timer wheel of one-second buckets driven by ``now``: no task or timer per binding, and a
renewed binding simply leaves a stale entry behind that is skipped when its bucket comes due. A binding
expires at the first whole second at or after its lifetime ends, never before.

Memory matters (a carrier Home Agent holds a million bindings): addresses are ints, a binding is a
slotted object, and the table stores a lone binding itself rather than a one-element tuple.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from ipaddress import IPv4Address


class Binding:
    """One mobility binding: home address to care-of address, for a granted lifetime."""

    __slots__ = ("home_address", "care_of_address", "lifetime", "expires", "identification", "flags")

    def __init__(
        self,
        home_address: int,
        care_of_address: int,
        lifetime: int,
        expires: float,
        identification: int,
        flags: int = 0,
    ) -> None:
        self.home_address = home_address
        self.care_of_address = care_of_address
        self.lifetime = lifetime  # granted, seconds
        self.expires = expires  # absolute time, same clock as ``now``
        self.identification = identification  # of the registration that created or renewed it
        self.flags = flags  # the request's flags (T: reverse tunnel, D, B ...), for the data plane

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
        }

    def __repr__(self) -> str:
        return (
            f"Binding({IPv4Address(self.home_address)} -> {IPv4Address(self.care_of_address)}, "
            f"lifetime={self.lifetime}, expires={self.expires}, identification={self.identification:#x})"
        )


_Entry = Binding | tuple[Binding, ...]
_interned_lifetimes: dict[int, int] = {}


class BindingTable:
    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._last_identification: dict[int, int] = {}  # only for nodes with no binding holding it
        self._buckets: dict[int, list[Binding]] = {}
        self._due: list[int] = []  # heap of bucket seconds
        self._count = 0

    # -- reading --------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of bindings (not of mobile nodes)."""
        return self._count

    def __iter__(self) -> Iterator[Binding]:
        for entry in self._entries.values():
            if type(entry) is Binding:
                yield entry
            else:
                yield from entry  # type: ignore[misc]

    def bindings_of(self, home_address: int) -> tuple[Binding, ...]:
        entry = self._entries.get(home_address)
        if entry is None:
            return ()
        if type(entry) is Binding:
            return (entry,)
        return entry  # type: ignore[return-value]

    def last_identification(self, home_address: int) -> int | None:
        """The Identification of the last registration accepted for this mobile node, if any."""
        best = self._last_identification.get(home_address)
        for b in self.bindings_of(home_address):
            if best is None or b.identification > best:
                best = b.identification
        return best

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
    ) -> tuple[Binding, list[Binding]]:
        """Create or renew the binding for this care-of address.

        Without ``simultaneous`` the new binding replaces every other binding of the mobile node (RFC 5944
        section 3.6.1.2). Returns the binding and the bindings it replaced.
        """
        lifetime = _interned_lifetimes.setdefault(lifetime, lifetime)
        binding = Binding(home_address, care_of_address, lifetime, now + lifetime, identification, flags)
        current = self.bindings_of(home_address)
        if simultaneous:
            kept = tuple(b for b in current if b.care_of_address != care_of_address)
            removed = [b for b in current if b.care_of_address == care_of_address]
        else:
            kept, removed = (), list(current)
        self._store(home_address, kept + (binding,), identification)
        self._schedule(binding)
        return binding, removed

    def deregister(
        self, home_address: int, care_of_address: int | None, identification: int
    ) -> list[Binding]:
        """Remove the binding for ``care_of_address``, or every binding of the node when it is None."""
        current = self.bindings_of(home_address)
        if care_of_address is None:
            kept, removed = (), list(current)
        else:
            kept = tuple(b for b in current if b.care_of_address != care_of_address)
            removed = [b for b in current if b.care_of_address == care_of_address]
        self._store(home_address, kept, identification)
        return removed

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose lifetime has ended by ``now``."""
        expired: list[Binding] = []
        due = self._due
        while due and due[0] <= now:
            second = heapq.heappop(due)
            for b in self._buckets.pop(second, ()):
                if self._holds(b):  # a renewed or removed binding leaves a stale entry behind
                    self._remove(b)
                    expired.append(b)
        return expired

    # -- internals ------------------------------------------------------------------------------------

    def _holds(self, binding: Binding) -> bool:
        entry = self._entries.get(binding.home_address)
        return entry is binding or (type(entry) is tuple and binding in entry)

    def _store(self, home_address: int, bindings: tuple[Binding, ...], identification: int) -> None:
        before = self._entries.get(home_address)
        self._count -= 0 if before is None else (1 if type(before) is Binding else len(before))  # type: ignore[arg-type]
        self._count += len(bindings)
        if not bindings:
            self._entries.pop(home_address, None)
        else:
            self._entries[home_address] = bindings[0] if len(bindings) == 1 else bindings
        if any(b.identification >= identification for b in bindings):
            self._last_identification.pop(home_address, None)
        else:
            last = self._last_identification.get(home_address)
            if last is None or identification > last:
                self._last_identification[home_address] = identification

    def _remove(self, binding: Binding) -> None:
        current = self.bindings_of(binding.home_address)
        kept = tuple(b for b in current if b is not binding)
        newest = max(b.identification for b in current)
        self._store(binding.home_address, kept, newest)

    def _schedule(self, binding: Binding) -> None:
        second = math.ceil(binding.expires)
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [binding]
            heapq.heappush(self._due, second)
        else:
            bucket.append(binding)
