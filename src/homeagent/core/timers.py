"""Deadlines by key, driven by ``now``: the one place the group's machines keep their timers.

Re-scheduling a key replaces its deadline; cancelled or replaced entries stay in the heap and are
skipped when they surface, which keeps every operation O(log n) without searching the heap.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable


class Timers:
    def __init__(self) -> None:
        self._deadline: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._order = itertools.count()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._deadline

    def __len__(self) -> int:
        return len(self._deadline)

    def schedule(self, key: Hashable, at: float) -> None:
        self._deadline[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))

    def cancel(self, key: Hashable) -> None:
        self._deadline.pop(key, None)

    def deadline(self, key: Hashable) -> float | None:
        return self._deadline.get(key)

    def next(self) -> float | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[Hashable]:
        """Pop every key whose deadline has come, earliest first."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            if self._deadline.get(key) == at:
                del self._deadline[key]
                out.append(key)
        return out

    def _discard_stale(self) -> None:
        heap = self._heap
        while heap and self._deadline.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)


class Queue:
    """Deadlines that come due in the order they were set, because each is set a fixed delay ahead.

    A deque instead of the heap: O(1) to add, and what is settled before its time (an acknowledged
    update, a released reply) is simply skipped when it comes up, at no cost until then. The group sets
    one of these per delay it uses on every registration.
    """

    def __init__(self) -> None:
        self._items: deque[tuple[float, Hashable]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, at: float, item: Hashable) -> None:
        self._items.append((at, item))

    def next(self) -> float | None:
        return self._items[0][0] if self._items else None

    def due(self, now: float) -> list[Hashable]:
        items = self._items
        out = []
        while items and items[0][0] <= now:
            out.append(items.popleft()[1])
        return out
