"""Neighbours on the home link (RFC 5944 section 4.6): proxy ARP for every home address that is away, and
gratuitous ARP when that changes, on one interface, for the serving member only.

What is sent when (``docs/neighbours.md`` says it for operators):

- ``away(A)`` (a registration made A's mobile node newly away): a proxy neighbour entry for A (what ``ip
  neigh add proxy A dev D`` makes: the kernel then answers ARP requests for A with this interface's MAC)
  and a gratuitous ARP for A with our MAC, so that hosts and routers that held the mobile node's own MAC
  send to us at once;
- ``home(A, mac)`` (the mobile node de-registered from home): the entry goes, and section 4.6 asks the
  Home Agent to broadcast a gratuitous ARP on the mobile node's behalf with the mobile node's link-layer
  address, which puts the neighbours' entries back to it. Without ``mac`` the interface's neighbour table
  is asked: a mobile node that de-registers from home ARPed for us to send the request, so the kernel has
  its MAC. Found nowhere, nothing is sent: the mobile node's own gratuitous ARP, which section 4.6 asks of
  it too, does the work;
- ``serve(True)`` (a takeover): every entry, and one gratuitous ARP for every away address with our MAC
  (the neighbours held the previous active member's); ``serve(False)``: every entry of ours goes and
  nothing more is announced. Only the serving member answers ARP for home addresses: two answers would
  split a home address's traffic between two members.

Every gratuitous ARP is repeated once a second later and goes through one token bucket (see
``dataplane.announcer``: 1,000 frames a second by default, so a takeover of 100,000 away nodes never
floods the link, and costs the caller one list copy).

Want versus have, as ``runtime.address`` keeps the virtual address: the calls above change what is wanted
and return at once; one task brings the kernel to it. Our entries carry ``NDA_PROTOCOL`` = ``PROTOCOL``
(``ip neigh show proxy`` prints ``proto 77``): that is how they are told from entries someone else made,
which are left alone (never removed, never taken over: an address someone else already proxies is not
added again), and how entries an earlier run left behind (``kill -9``) are found and removed when not
wanted. The task reads the kernel's proxy entries back (an audit) at start, at every ``serve(True)`` and
every ``audit_every`` seconds (stretched so that the reading never takes more than ``AUDIT_SHARE`` of the
time: it takes 1 s at 20,000 entries here, 9 s at 100,000), so an entry removed behind our back comes back
at the next audit. The kernel sends no notification for proxy entries, hence the reading.

Netlink runs in a child process (``dataplane.neighbours_netlink``: pyroute2, batched with
``nlm_request_batch``, ``BATCH`` requests per batch); the state and every decision stay on the event loop,
which hands the child one batch or one dump at a time and awaits its answer, a line of JSON. Not on the
loop, nor in a thread: pyroute2 spends 85 to 150 us of Python per request and its messages are cyclic
garbage, and reading 20,000 entries back made the collector pause the whole interpreter up to 180 ms at a
time (measured here, in a thread as on the loop). In the child that runs on the other CPU, and its pauses
are its own. The child is started again when it dies.

Limits measured here (6.18 kernel, two shared cores, ``bench/neighbours.py``): the kernel keeps proxy
entries in 16 hash buckets, so each add or delete walks a list of n/16 entries, and pyroute2 adds about
150 us of Python per entry in the child. All entries gone after ``serve(False)``: 0.08 to 0.17 s at
1,000 away nodes, 2.5 to 3.9 s at 20,000, 24 s at 100,000 (``ip -batch``, in C: 0.01 s, 0.14 s, 9.5 s).
"Within one advertisement interval" (0.1 s by default) therefore holds up to about a thousand away nodes. What
stops a standby from answering at once, whatever the number, is its routes: the kernel answers a proxy
entry only when IP forwarding is on for the interface and the route to the address leaves by another
device (the data plane's TUN), so a standby whose tunnel routes are gone answers nothing while its entries
are still being removed.

Without proxy entries (``proxy=False``, the ebpf backend, whose program answers ARP for the home
addresses itself): no entry is made, the gratuitous ARPs are sent as above (RFC 5944 4.6 asks for them
whoever answers the requests), and the one audit at start still removes entries an earlier run with
proxy entries left behind. A first registration then costs the home link one gratuitous ARP and nothing
of netlink: a proxy entry took ~150 us of pyroute2's Python in the child, on the CPU the daemon shares.

Also set here, and restored at ``close``: the interface's ``proxy_delay`` (``neigh/IF/proxy_delay``) to 0.
Linux delays every proxy answer to a broadcast request by a random 0 to 0.8 s by default, and drops any
beyond 64 such delayed requests: a takeover must not cost each neighbour up to 0.8 s, nor lose answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import Counter
from pathlib import Path

from homeagent.dataplane.announcer import AGAIN, BURST, RATE, Announcer
from homeagent.dataplane.neighbours_netlink import PROTOCOL, NetlinkWorker

log = logging.getLogger("homeagent.dataplane.neighbours")

BATCH = 128  # netlink requests per batch (about 11 ms of the child's time)
AUDIT_EVERY = 5.0  # seconds between two readings of the kernel's proxy entries, at least
AUDIT_SHARE = 0.05  # the share of the time the readings may take at most (they are stretched to keep it)
RETRY = 1.0  # seconds before a failed netlink request is tried again
CLOSE_TIMEOUT = 30.0  # seconds close() waits for our entries to go


class NeighboursError(RuntimeError):
    pass


class Neighbours:
    """Proxy and gratuitous ARP for the home addresses away from home, on ``interface``."""

    def __init__(self, interface: str, counters: Counter[str] | None = None, *, rate: float = RATE,
                 burst: int = BURST, again: float = AGAIN, audit_every: float = AUDIT_EVERY,
                 proxy_delay: int | None = 0, proxy: bool = True, mac: bytes | None = None) -> None:
        """``proxy_delay``: what to set ``neigh/IF/proxy_delay`` to (in 1/100 s) while open; None leaves
        it alone. ``proxy=False``: someone else answers ARP for the away addresses (the ebpf backend's
        program), so no proxy entries are made, only the gratuitous ARPs sent. ``mac``: what the away
        addresses are announced with, from that source (the group's virtual MAC; default the interface's)."""
        self.mac = mac
        self.interface = interface
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.serving = False
        self.audit_every = audit_every
        self.proxy = proxy
        self.rate, self.burst, self.again = rate, burst, again  # the announcer's pacing
        self._proxy_delay = proxy_delay
        self._proxy_delay_was: str | None = None
        self._away: set[int] = set()  # home addresses away from home (wanted as entries while serving)
        self._returned: dict[int, bytes] = {}  # returned home, to announce with the mobile node's MAC
        self._ours: set[int] = set()  # our entries in the kernel, as last read or made
        self._foreign: set[int] = set()  # entries someone else made on the interface, as last read
        self._dirty: set[int] = set()  # addresses whose entry may differ from what is wanted
        self._unknown: set[int] = set()  # returned home, MAC to be found in the neighbour table
        self._audit_at = 0.0  # loop time of the next audit (0: at once)
        self._flipped = False  # serving changed: every address to be looked at again
        self._changed = asyncio.Event()
        self._settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._announcer: Announcer | None = None
        self._netlink: NetlinkWorker | None = None
        self._index = 0
        self._warned_at = float("-inf")
        self._failing = False  # the last netlink call failed

    # -- what the Home Agent asks for: each returns at once --------------------------------------------

    def away(self, home_address: int) -> None:
        """``home_address``'s mobile node is away (a registration was accepted): proxy for it, and announce
        it if it is newly away. A renewal or a new care-of address changes nothing on the home link."""
        if home_address in self._away:
            return
        self._away.add(home_address)
        self._returned.pop(home_address, None)
        if self.serving:
            if self.proxy:
                self._touch(home_address)
            if self._announcer is not None:
                self._announcer.urgent(home_address)

    def home(self, home_address: int, mac: bytes | None = None, announce: bool = True) -> None:
        """``home_address``'s mobile node is home (it de-registered): stop proxying, and tell the link its
        MAC (RFC 5944 section 4.6), ``mac`` or the one the neighbour table holds. ``announce=False``: its
        binding is merely gone (expired, removed by hand), the mobile node is not known to be on the link:
        stop proxying and announce nothing."""
        if home_address in self._away or home_address in self._ours:
            self._away.discard(home_address)
            self._touch(home_address)
        if not self.serving or self._announcer is None or not announce:
            return
        if mac is not None:
            self._returned[home_address] = bytes(mac)
            self._announcer.urgent(home_address)
        else:
            self._unknown.add(home_address)
            self._wake()

    def serve(self, serving: bool) -> None:
        """Whether this member answers for the home addresses. Taking over: every entry, and every away
        address announced (paced); standing down: every entry of ours removed, nothing more announced."""
        if serving == self.serving:
            return
        self.serving = serving
        self._flipped = True  # the task looks at every address again
        if serving:
            if self._announcer is not None:
                self._announcer.bulk(self._away)
        else:
            if self._announcer is not None:
                self._announcer.clear()
            self._returned.clear()
            self._unknown.clear()
        self._wake()

    def reconcile(self) -> None:
        """Read the kernel's entries back now rather than at the next audit."""
        self._audit_at = 0.0
        self._wake()

    async def settle(self) -> None:
        """Wait until the kernel holds what is wanted, as far as we know (a test's and close's helper)."""
        await self._settled.wait()

    def snapshot(self) -> dict[str, object]:
        """What ``homeagent status`` may show beside the counters."""
        return {"neighbours.serving": self.serving, "neighbours.away": len(self._away),
                "neighbours.proxy_entries": len(self._ours), "neighbours.foreign_entries": len(self._foreign),
                "neighbours.announcements_queued": len(self._announcer.pacer) if self._announcer else 0}

    @property
    def entries(self) -> frozenset[int]:
        """Our proxy entries in the kernel, as far as we know."""
        return frozenset(self._ours)

    # -- life ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the interface's netlink and ARP sockets (CAP_NET_ADMIN and CAP_NET_RAW), set its proxy
        delay, and start the two tasks. The first audit finds what an earlier run left behind."""
        try:
            self._index = socket.if_nametoindex(self.interface)
        except OSError:
            raise NeighboursError(f"no interface {self.interface!r} for proxy ARP") from None
        try:
            self._announcer = Announcer.open(self.interface, self._sender_mac, self.counters, rate=self.rate,
                                             burst=int(self.burst), again=self.again, sent=self._announced,
                                             mac=self.mac)
        except PermissionError:
            raise NeighboursError("proxy and gratuitous ARP need CAP_NET_ADMIN and CAP_NET_RAW") from None
        self._netlink = NetlinkWorker(self._index)
        self._set_proxy_delay()
        forwarding = self._sysctl(f"conf/{self.interface}/forwarding")
        if forwarding is not None and forwarding.read_text().strip() == "0":
            log.warning("IP forwarding is off on %s: the kernel answers no proxy ARP there (it answers only "
                        "for an address it would forward by another device)", self.interface)
        self._announcer.start()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def close(self) -> None:
        """Remove every entry of ours (the stop is graceful), then let go of the interface."""
        self.serve(False)
        if self._task is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CLOSE_TIMEOUT
            while not self._settled.is_set():
                if loop.time() > deadline or (self._failing and not self._ours):
                    # nothing of ours is known to be left, and netlink fails: no reason to hold the stop
                    if self._ours:
                        log.error("could not remove the proxy ARP entries from %s", self.interface)
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settled.wait(), 0.1)
            self._task.cancel()
            self._task = None
        if self._announcer is not None:
            self._announcer.close()
            self._announcer = None
        if self._netlink is not None:
            await self._netlink.close()
            self._netlink = None
        self._restore_proxy_delay()

    # -- the one task that changes the kernel ----------------------------------------------------------

    def _touch(self, address: int) -> None:
        self._dirty.add(address)
        self._wake()

    def _wake(self) -> None:
        self._settled.clear()
        self._changed.set()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._flipped:  # here, not in serve(): the caller pays nothing for a large table
                self._flipped = False
                if self.serving:
                    if self.proxy:
                        self._dirty |= self._away
                    self._audit_at = 0.0  # then: what does the kernel hold? A member that stood down may
                    # have left some, and someone else may have proxied some meanwhile
                else:
                    self._dirty |= self._ours
            wait = self._audit_at - loop.time()
            if not self._dirty and not self._unknown and wait > 0:
                self._settled.set()
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), wait)
                except TimeoutError:
                    pass
                continue
            try:  # what is known to differ first (a takeover's entries, a stand-down's removals), then the
                await self._apply()  # audit, whose differences the next turn applies
                await self._look_up()
                if loop.time() >= self._audit_at:
                    await self._audit()
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - the task must outlive a bad netlink moment
                self._failing = True
                self.counters["neighbours.netlink_errors"] += 1
                self._warn("proxy ARP entries on %s: %s (retrying)", self.interface, exc)
                self._audit_at = loop.time() + RETRY
                await asyncio.sleep(RETRY)

    def _wanted(self, address: int) -> bool:
        return self.proxy and self.serving and address in self._away

    async def _apply(self) -> None:
        """Bring the dirty addresses to what is wanted, ``BATCH`` requests at a time; what is wanted is read
        again for every batch, so a stand-down in the middle of a takeover removes at once."""
        while self._dirty:
            chunk = [self._dirty.pop() for _ in range(min(BATCH, len(self._dirty)))]
            remove = [a for a in chunk if a in self._ours and not self._wanted(a)]
            add = [a for a in chunk if self._wanted(a) and a not in self._ours and a not in self._foreign]
            if remove:
                done = await self._request("del", remove)
                self._ours.difference_update(remove)  # the ones that failed are found by the next audit
                self._dirty.update(a for a in remove if self._wanted(a))  # wanted again meanwhile
                self.counters["neighbours.proxy_removed"] += len(done)
                if len(done) < len(remove):
                    self._audit_soon()
            if add:
                done = await self._request("add", add)
                self._ours.update(done)
                self._dirty.update(a for a in done if not self._wanted(a))  # let go of meanwhile
                self.counters["neighbours.proxy_added"] += len(done)
                if len(done) < len(add):
                    self.counters["neighbours.netlink_errors"] += len(add) - len(done)
                    self._warn("could not add %d proxy ARP entries on %s (retrying)", len(add) - len(done),
                               self.interface)
                    self._audit_soon()
            await asyncio.sleep(0)  # the registrations waiting on the loop go between two batches

    async def _look_up(self) -> None:
        """Find the MACs of mobile nodes returned home without one, and announce them."""
        assert self._netlink is not None
        while self._unknown:
            chunk = [self._unknown.pop() for _ in range(min(BATCH, len(self._unknown)))]
            found = await self._netlink.macs(chunk)
            own = (self._announcer.mac, self._announcer.interface_mac) if self._announcer is not None else ()
            for address, mac in found.items():
                if self.serving and address not in self._away and mac not in own and self._announcer is not None:
                    self._returned.setdefault(address, mac)
                    self._announcer.urgent(address)
            self.counters["neighbours.returned_mac_unknown"] += len(chunk) - len(found)

    async def _request(self, command: str, addresses: list[int]) -> list[int]:
        """Send one batch; the addresses whose request the kernel acknowledged."""
        assert self._netlink is not None
        if command == "add":
            return await self._netlink.add(addresses)
        return await self._netlink.delete(addresses)

    async def _audit(self) -> None:
        """Read every proxy entry of the interface back; what differs from what is wanted becomes dirty."""
        assert self._netlink is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        ours, foreign = await self._netlink.dump()
        lost = self._ours - ours
        wanted = self._away if self.serving and self.proxy else set()
        restored = lost & wanted
        if restored:
            self.counters["neighbours.proxy_restored"] += len(restored)
            self._warn("%d proxy ARP entries of ours on %s were removed by someone else: adding them again",
                       len(restored), self.interface)
        self._ours, self._foreign = ours, foreign
        self._dirty |= (wanted - ours - foreign) | (ours - wanted)
        took = loop.time() - started
        # Without proxy entries only the first reading matters (an earlier run's entries), then one a day
        # and one at every takeover.
        every = self.audit_every if self.proxy else 86400.0
        self._audit_at = loop.time() + max(every, took / AUDIT_SHARE)

    def _audit_soon(self) -> None:
        self._audit_at = min(self._audit_at, asyncio.get_running_loop().time() + RETRY)

    # -- gratuitous ARP ---------------------------------------------------------------------------------

    def _sender_mac(self, address: int) -> bytes | None:
        """The MAC ``address`` is to be announced with now: ours while away, the mobile node's once home;
        nothing from a member that does not serve."""
        if not self.serving or self._announcer is None:
            return None
        if address in self._away:
            return self._announcer.mac
        return self._returned.get(address)

    def _announced(self, address: int, last: bool) -> None:
        if last and address not in self._away:
            self._returned.pop(address, None)

    # -- the interface's proxy delay -------------------------------------------------------------------

    def _sysctl(self, name: str) -> Path | None:
        path = Path("/proc/sys/net/ipv4") / name
        return path if path.exists() else None

    def _set_proxy_delay(self) -> None:
        path = self._sysctl(f"neigh/{self.interface}/proxy_delay")
        if self._proxy_delay is None or path is None:
            return
        try:
            was = path.read_text().strip()
            if was != str(self._proxy_delay):
                path.write_text(f"{self._proxy_delay}\n")
                self._proxy_delay_was = was
        except OSError as exc:
            log.warning("cannot set the proxy ARP delay of %s (answers may wait up to 0.8 s): %s",
                        self.interface, exc)

    def _restore_proxy_delay(self) -> None:
        path = self._sysctl(f"neigh/{self.interface}/proxy_delay")
        if self._proxy_delay_was is None or path is None:
            return
        try:
            path.write_text(f"{self._proxy_delay_was}\n")
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot restore the proxy ARP delay of %s: %s", self.interface, exc)
        self._proxy_delay_was = None

    def _warn(self, message: str, *args: object) -> None:
        """A warning at most every ten seconds: a netlink that keeps failing must not fill the disk."""
        now = asyncio.get_running_loop().time()
        if now >= self._warned_at + 10.0:
            self._warned_at = now
            log.warning(message, *args)

