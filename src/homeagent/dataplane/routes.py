"""The /32 routes that draw a home address's traffic into the TUN device, kept by one thread.

Want versus have, as ``runtime.address`` keeps the virtual address: the forwarder says which home
addresses it wants routed (``want``, ``serve``) and returns at once; one thread brings the kernel's table to
that, in order, and retries what failed. A route costs about 200 us of pyroute2 here, so a takeover of
thousands of bindings must not hold the packet loop: the thread takes the interpreter only for the
encoding, and forwarding goes on meanwhile. Only a serving member wants routes: a standby that held them
would draw the home addresses' traffic away from the active member (and its proxy ARP answers with them).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from ipaddress import IPv4Address
from typing import Any

log = logging.getLogger("homeagent.dataplane.routes")

RETRY = 1.0  # seconds before a failed change is tried again
MAIN_TABLE = 254


class HomeRoutes:
    """Keeps a /32 route into the device ``index`` for every home address wanted while serving."""

    def __init__(self, index: int, counters: Counter[str]) -> None:
        self.index = index
        self._counters = counters
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wanted: set[int] = set()
        self._serving = False
        self._dirty: set[int] = set()  # addresses to look at again
        self._have: set[int] = set()
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
        self._dirty |= self._have
        self._thread = threading.Thread(target=self._run, args=(ipr,), name="routes", daemon=True)
        self._thread.start()

    def want(self, home: int, routed: bool) -> None:
        with self._lock:
            if routed:
                self._wanted.add(home)
            else:
                self._wanted.discard(home)
            self._dirty.add(home)
            self.settled.clear()
            self._changed.notify()

    def serve(self, serving: bool) -> None:
        with self._lock:
            if serving == self._serving:
                return
            self._serving = serving
            self._dirty |= self._wanted | self._have
            self.settled.clear()
            self._changed.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closing = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def routed(self) -> int:
        return len(self._have)

    def _run(self, ipr: Any) -> None:
        try:
            while True:
                with self._lock:
                    while not self._dirty and not self._closing:
                        self.settled.set()
                        self._changed.wait()
                    if self._closing:
                        return
                    batch = [self._dirty.pop() for _ in range(min(len(self._dirty), 256))]
                    wanted = {a for a in batch if self._serving and a in self._wanted}
                failed = [a for a in batch if not self._apply(ipr, a, a in wanted)]
                if failed:
                    with self._lock:
                        self._dirty.update(failed)
                        self._changed.wait(RETRY)
        finally:
            ipr.close()

    def _apply(self, ipr: Any, home: int, routed: bool) -> bool:
        """Bring one route to what is wanted; False if the kernel refused (tried again later)."""
        from pyroute2.netlink.exceptions import NetlinkError

        if routed == (home in self._have):
            return True
        dst = f"{IPv4Address(home)}/32"
        try:
            if routed:
                ipr.route("replace", dst=dst, oif=self.index, table=MAIN_TABLE)
                self._have.add(home)
                self._counters["routes_added"] += 1
            else:
                ipr.route("del", dst=dst, oif=self.index, table=MAIN_TABLE)
                self._have.discard(home)
                self._counters["routes_removed"] += 1
            return True
        except NetlinkError as exc:
            if not routed and exc.code in (3, 2):  # ESRCH, ENOENT: gone already
                self._have.discard(home)
                return True
            self._counters["route_failures"] += 1
            log.warning("route %s into the TUN device: %s", dst, exc)
            return False
        except OSError as exc:
            self._counters["route_failures"] += 1
            log.warning("route %s into the TUN device: %s", dst, exc)
            return False
