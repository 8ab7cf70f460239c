"""The /32 routes that draw a home address's traffic into the TUN device, kept by one thread.

Want versus have, as ``runtime.address`` keeps the virtual address: the forwarder says which home
addresses it wants routed (``want``, ``serve``) and returns at once; one thread brings the kernel's table to
that, oldest change first, and retries what failed. The routes go in batches of up to ``BATCH`` in one system
call (``dataplane.route_requests``: ~2 us a route here, 100,000 in a quarter of a second), in a thread so
that even a takeover's batch never holds the packet loop. Only a serving member wants routes: a standby
that held them would draw the home addresses' traffic away from the active member (and its proxy ARP
answers with them).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from typing import Any

from homeagent.dataplane.route_requests import MAIN_TABLE, RouteRequests

log = logging.getLogger("homeagent.dataplane.routes")

RETRY = 1.0  # seconds before a failed change is tried again
BATCH = 4096  # route changes per system call (~9 ms of the thread's time)


class HomeRoutes:
    """Keeps a /32 route into the device ``index`` for every home address wanted while serving."""

    def __init__(self, index: int, counters: Counter[str],
                 applied: Callable[[int], None] = lambda mark: None) -> None:
        """``applied(mark)`` is called (from the thread) once every change made before ``barrier(mark)``
        has been brought to the kernel."""
        self.index = index
        self._counters = counters
        self._applied = applied
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wanted: set[int] = set()
        self._serving = False
        # Addresses to look at again, in the order they changed: each change takes the next ticket, and the
        # queue holds (ticket, address) with the address's latest ticket in ``_dirty`` (older entries are
        # skipped), so the thread works oldest change first and knows how far it has got.
        self._dirty: dict[int, int] = {}
        self._queue: deque[tuple[int, int]] = deque()
        self._ticket = 0
        self._done = 0  # every change up to this ticket has been tried
        self._marks: deque[tuple[int, int]] = deque()  # (last ticket before it, mark)
        self._have: set[int] = set()
        self._flush = False  # every route to go at once (serve(False))
        self._closing = False
        self._thread: threading.Thread | None = None
        self.settled = threading.Event()
        self.settled.set()

    def start(self) -> None:
        from pyroute2 import IPRoute

        ipr = IPRoute()
        try:  # what an earlier forwarder left on a device of the same index (none, for a fresh TUN)
            for route in ipr.route("dump", table=MAIN_TABLE, oif=self.index, family=socket.AF_INET):
                if route["dst_len"] == 32 and route.get("RTA_DST"):
                    self._have.add(int(IPv4Address(route.get("RTA_DST"))))
        except Exception:  # noqa: BLE001 - the thread reconciles whatever it finds later
            log.exception("reading the routes of the TUN device")
        self._mark_dirty(self._have)
        self._thread = threading.Thread(target=self._run, args=(ipr,), name="routes", daemon=True)
        self._thread.start()

    def want(self, home: int, routed: bool) -> None:
        with self._lock:
            if routed == (home in self._wanted):  # no change (a new care-of address; no route asked for):
                return  # the route is in, or queued behind a ticket a barrier waits for already
            if routed:
                self._wanted.add(home)
            else:
                self._wanted.discard(home)
            self._mark_dirty((home,))
            self._changed.notify()

    def serve(self, serving: bool) -> None:
        """Standing down takes every route away at once: the device is set down and up again, which makes
        the kernel drop every IPv4 route through it in one go (two requests, whatever the number: until
        the last is gone the routes, and the proxy ARP answers they make the kernel give, would go on
        drawing traffic to a standby)."""
        with self._lock:
            if serving == self._serving:
                return
            self._serving = serving
            if not serving and self._have:
                self._flush = True
            self._mark_dirty(self._wanted | self._have)
            self._changed.notify()

    def barrier(self, mark: int) -> None:
        """Call ``applied(mark)`` once every change made so far is in the kernel: at once if none waits."""
        with self._lock:
            if self._done < self._ticket or self._flush:
                self._marks.append((self._ticket, mark))
                return
        self._applied(mark)

    def _mark_dirty(self, homes: Iterable[int]) -> None:
        """(Under the lock.) ``homes`` changed: each to be looked at after what changed before."""
        ticket = self._ticket
        for home in homes:
            ticket += 1
            self._dirty[home] = ticket
            self._queue.append((ticket, home))
        if ticket != self._ticket:
            self._ticket = ticket
            if self.settled.is_set():  # clear() takes the Event's lock: not once a change in a burst
                self.settled.clear()

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closing = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def routed(self) -> int:
        return len(self._have)

    def _run(self, ipr: Any) -> None:
        requests = RouteRequests(self.index)
        try:
            while True:
                with self._lock:
                    while not self._dirty and not self._closing:
                        self.settled.set()
                        self._changed.wait()
                    if self._closing:
                        return
                    flush, self._flush = self._flush, False
                if flush:
                    self._flush_all(ipr)
                with self._lock:
                    batch = self._take(BATCH)
                    wanted = {a for a in batch if self._serving and a in self._wanted}
                    done = self._queue[0][0] - 1 if self._queue else self._ticket
                changes = [(a, a in wanted) for a in batch if (a in wanted) != (a in self._have)]
                failed = self._apply(requests, changes)
                self._report(done)
                if failed:
                    with self._lock:
                        self._mark_dirty(a for a in failed if a not in self._dirty)
                        self._changed.wait(RETRY)
        finally:
            requests.close()
            ipr.close()

    def _take(self, most: int) -> list[int]:
        """(Under the lock.) Up to ``most`` addresses, oldest change first."""
        batch: list[int] = []
        queue, dirty = self._queue, self._dirty
        while queue and len(batch) < most:
            ticket, home = queue.popleft()
            if dirty.get(home) == ticket:  # else it changed again later: its newer entry is further on
                del dirty[home]
                batch.append(home)
        while queue and dirty.get(queue[0][1]) != queue[0][0]:  # nothing left before the next change
            queue.popleft()
        return batch

    def _report(self, done: int) -> None:
        """Every barrier whose changes have all been tried (a route the kernel refused is tried again later,
        and counted: a reply does not wait on it)."""
        with self._lock:
            self._done = max(self._done, done)
            reached = []
            while self._marks and self._marks[0][0] <= done:
                reached.append(self._marks.popleft()[1])
        for mark in reached:
            self._applied(mark)

    def _flush_all(self, ipr: Any) -> None:
        """Every route through the device gone in two netlink messages (see ``serve``); what is wanted
        after that is put back a route at a time by the loop."""
        try:
            ipr.link("set", index=self.index, state="down")
            ipr.link("set", index=self.index, state="up")
        except Exception as exc:  # noqa: BLE001 - the routes then go one by one, as before
            self._counters["route_failures"] += 1
            log.warning("taking the TUN device's routes away at once: %s", exc)
            return
        self._counters["routes_removed"] += len(self._have)
        self._counters["route_flushes"] += 1
        self._have.clear()

    def _apply(self, requests: RouteRequests, changes: list[tuple[int, bool]]) -> list[int]:
        """Bring these routes to what is wanted; the addresses the kernel refused (tried again later)."""
        try:
            refused = requests.apply(changes)
        except OSError as exc:  # the batch did not go (out of memory, say): all of it again later
            self._counters["route_failures"] += len(changes)
            log.warning("%d routes into the TUN device: %s", len(changes), exc)
            return [home for home, _ in changes]
        failed = []
        for home, routed in changes:
            code = refused.get(home)
            if code is not None and (routed or code not in (errno.ESRCH, errno.ENOENT)):  # else gone already
                self._counters["route_failures"] += 1
                log.warning("route %s/32 into the TUN device: %s", IPv4Address(home),
                            errno.errorcode.get(code, code))
                failed.append(home)
            elif routed:
                self._have.add(home)
                self._counters["routes_added"] += 1
            else:
                self._have.discard(home)
                self._counters["routes_removed"] += 1
        return failed
