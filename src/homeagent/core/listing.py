"""The mobility binding table as a list for people: in order of home address, then care-of address, a page
at a time, so that listing a million bindings never holds up the Home Agent (issue 10 point 6).

A whole listing at once costs some 20 µs a binding (0.4 s at 20,000 bindings, 1.3 s at 60,000), longer
than the redundancy group's master-down interval: a standby took over while the active member printed its
table. A ``BindingWalk`` does the same work in steps, each bounded whatever the table's size, and the
runtime serves registrations and advertisements between two steps:

1. at the start, the home addresses the table knows are copied (one C-level copy of a list of ints, the
   only step that grows with the table: some 17 ms of CPU at a million);
2. that copy is sorted a run of ``RUN`` addresses per step;
3. the sorted runs are merged lazily, and each step turns the next ``page`` mobile nodes into rows.

What the walk shows, decided here (RFC 5944 and the patent say nothing of listings): every mobile node the
table knew when the walk began, as it is when the walk reaches it, which is one consistent state of that
node (a step runs between two inputs to the table). A node that registered after the walk began is not
listed; a node de-registered or expired before the walk reaches it is listed with what it has left, which
may be nothing. So a listing is never a picture of one instant (a picture of one instant of a million
bindings would have to be copied in one step, which is what this avoids), and a change during the walk can
neither break it nor make it list a node twice. Rows are ``Binding.as_dict`` to the byte (a unit test holds
them to it), built here without the ``IPv4Address`` objects that make ``as_dict`` slow.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from homeagent.core.bindings import Binding, BindingTable
from homeagent.core.node_state import SOURCE_NAMES, flag_letters
from homeagent.wire.era import to_wire

# A step's CPU time at a million bindings (``python bench/control.py --steps-only``), with the page's JSON:
# 2.0 ms p50, 3.0 ms p99; the copy of the home addresses, 17-19 ms; a full garbage collection falling in a
# step while the copy is still being sorted adds some 25 ms. (256 nodes a page took 3.7 and 5.4 ms.)
RUN = 4096  # addresses sorted in one step: under a millisecond
PAGE = 128  # mobile nodes turned into rows in one step (each has a binding or a few): about 2 ms with its JSON


def dotted(address: int) -> str:
    """An IPv4 address as ``str(IPv4Address(address))`` writes it, several times faster."""
    return f"{address >> 24}.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}"


_LETTERS = tuple(flag_letters(flags) for flags in range(256))


def row(binding: Binding, now: float, names: dict[int, str], source: int = 0) -> dict[str, Any]:
    """``binding.as_dict(now, source)``; ``names`` remembers the care-of and home agent addresses, which
    repeat."""
    care_of, home_agent = binding.care_of_address, binding.home_agent
    return {
        "home_address": dotted(binding.home_address),
        "care_of_address": names.get(care_of) or names.setdefault(care_of, dotted(care_of)),
        "lifetime": binding.lifetime,
        "remaining": round(binding.remaining(now), 3),
        "identification": to_wire(binding.identification),  # as on the wire (wire/era.py)
        "flags": binding.flags,
        "home_agent": names.get(home_agent) or names.setdefault(home_agent, dotted(home_agent)),
        "flag_letters": _LETTERS[binding.flags],
        "source": SOURCE_NAMES[source],
    }


# A binding's counters from the data plane, by (home address, care-of address): keys added to its row.
Counters = Callable[[int, int], dict[str, int]]


class BindingWalk:
    """One listing of ``table`` in progress: ``step(now)`` until it returns None.

    ``home_address`` lists that mobile node alone (one step). ``run`` and ``page`` bound a step's work.
    ``counters``: the data plane's per-binding counters, added to each row (the ebpf backend's maps: one
    lookup, ~1 us, a binding); None adds nothing and costs nothing.
    """

    def __init__(
        self, table: BindingTable, home_address: int | None = None, run: int = RUN, page: int = PAGE,
        counters: Counters | None = None,
    ) -> None:
        self._table = table
        self._counters = counters
        self._page = page
        self._run = run
        self._unsorted = table.home_addresses() if home_address is None else [home_address]
        self._runs: list[array[int]] = []
        self._order: Iterator[int] | None = None
        self._names: dict[int, str] = {}  # bounded by the distinct care-of and home agent addresses

    def step(self, now: float) -> list[dict[str, Any]] | None:
        """The next rows (possibly none while the walk is still sorting), or None once every node the walk
        started with has been listed. ``now`` is the time the rows' ``remaining`` is counted from."""
        if self._order is None:
            if self._unsorted:
                cut = len(self._runs) * self._run
                # An array, not a list: it holds no objects, so the garbage collector has nothing in it
                # to walk (a million-entry list made a full collection take some 100 ms longer).
                self._runs.append(array("L", sorted(self._unsorted[cut : cut + self._run])))
                if cut + self._run < len(self._unsorted):
                    return []
                self._unsorted = []
            runs, self._runs = self._runs, []
            self._order = iter(runs[0] if len(runs) == 1 else heapq.merge(*runs))
        rows: list[dict[str, Any]] = []
        table, names = self._table, self._names
        nodes = 0  # counted, not rows: a node the table still knows may have no binding left
        for home_address in islice(self._order, self._page):
            nodes += 1
            listed = tuple(zip(table.bindings_of(home_address), table.sources_of(home_address)))
            if len(listed) > 1:
                listed = tuple(sorted(listed, key=lambda bs: bs[0].care_of_address))
            if self._counters is None:
                rows.extend(row(b, now, names, source) for b, source in listed)
            else:
                for b, source in listed:
                    rows.append(r := row(b, now, names, source))
                    r.update(self._counters(b.home_address, b.care_of_address))
        return rows if nodes else None

    def rest(self, now: float) -> list[dict[str, Any]]:
        """Every remaining row in one go: for a caller that can afford to wait, and for tests."""
        out: list[dict[str, Any]] = []
        while (rows := self.step(now)) is not None:
            out.extend(rows)
        return out
