"""The ``interface`` method of holding the virtual address: on a real link, the active member adds the
address to its interface and tells the link with gratuitous ARP; stepping down, it takes the address off.

The election decides in microseconds and must not wait for netlink, so the daemon only says what it wants
(``want``) and one task here brings the interface to it, in order. Asking again for what is already held
costs nothing, and a change that failed is tried again at the next ask (the core asks for the address at
every advertisement while active). The address goes on as a /32: the member's own address already gives
the route to the link, and a /32 adds no prefix route to take away again.

Gratuitous ARP (RFC 5944 section 4.6, RFC 5227 "ARP Announcement"): an ARP request with the sender and
target protocol address both set to the address announced and the target hardware address zero,
broadcast. Hosts and routers on the link that hold an entry for the address point it at us. It goes out
for the virtual address, so mobile nodes and routers reach the new active member at once, and for every
home address with a binding that lies on this link, which the member now proxies for its mobile nodes.
Each is sent again ``ANNOUNCE_AGAIN`` seconds later: one lost broadcast must not strand a host.

While it holds the address the member also reads the ARP frames on the link, for a host that still claims
the address (one whose member was killed with it): ``runtime.defence`` decides when to probe and announce
again; here the frames are read, a bounded batch per wake-up and never blocking, and the frames sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from ipaddress import IPv4Address, IPv4Network

from homeagent.runtime.defence import Action, Announce, Defence, Probe, Warn
from homeagent.wire.arp import ETH_P_ARP, ArpFrame
from homeagent.wire.arp import announcement as arp_announcement
from homeagent.wire.arp import probe as arp_probe
from homeagent.wire.errors import ParseError

log = logging.getLogger("homeagent.address")

ANNOUNCE_AGAIN = 1.0  # seconds before every announcement is repeated once
RETRY = 1.0  # seconds before a change the kernel refused is tried again
ANNOUNCE_CHUNK = 256  # frames sent before yielding to the registrations waiting on the loop
READ_BATCH = 64  # ARP frames read per wake-up before yielding to the registrations
FRAME_BUFFER = 128  # bytes read of a frame: ARP is 42 (60 with the link's padding)

__all__ = ["AddressError", "AddressWatch", "InterfaceAddress", "arp_announcement"]


class AddressError(RuntimeError):
    pass


class InterfaceAddress:
    """Keeps the virtual addresses wanted, and only those, on ``interface``."""

    def __init__(self, interface: str, proxied: Callable[[], Iterable[int]], counters: Counter[str],
                 announce_rate: float = 1000.0) -> None:
        """``proxied`` gives the home addresses with a binding, read at each announcement (without a data
        plane, whose ``Neighbours`` announces them otherwise); they go at most ``announce_rate`` a second,
        as the data plane's announcer paces its own (dataplane/announcer.py)."""
        self.interface = interface
        self._proxied = proxied
        self._rate = announce_rate
        self._counters = counters
        self._wanted: dict[str, bool] = {}
        self._held: set[str] = set()
        self._changed = asyncio.Event()
        self._announce_asked: set[str] = set()  # held addresses to announce again
        self._settled = asyncio.Event()
        self._settled.set()
        self._task: asyncio.Task[None] | None = None
        self._ipr: Any = None  # pyroute2.AsyncIPRoute (untyped)
        self._index = 0
        self._mac = b""
        self._links: list[IPv4Network] = []
        self._arp: socket.socket | None = None
        self._failures = 0
        self._defence: Defence | None = None
        self._retry: asyncio.TimerHandle | None = None  # the next pass, while a change failed

    async def open(self) -> None:
        """Find the interface, open its ARP socket and start reading it. What an earlier run left on the
        interface has been taken off before (``runtime.cleanup``): a member that starts is not active."""
        from pyroute2 import AsyncIPRoute

        try:
            self._index = socket.if_nametoindex(self.interface)
        except OSError:
            raise AddressError(f"redundancy.interface: no interface {self.interface!r}") from None
        try:
            arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        except PermissionError:
            raise AddressError("redundancy.address_method = \"interface\" needs root or CAP_NET_RAW and "
                               "CAP_NET_ADMIN") from None
        arp.bind((self.interface, ETH_P_ARP))
        arp.setblocking(False)
        self._arp = arp
        self._mac = arp.getsockname()[4][:6]
        self._defence = Defence(self._mac, self._counters)
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        self._links = await self._networks()
        loop = asyncio.get_running_loop()
        loop.add_reader(arp.fileno(), self._read)
        self._task = loop.create_task(self._work())

    def want(self, address: str, held: bool, announce: bool = False) -> None:
        """``announce``: tell the link again even if the address is held already (another member was
        active too, and the neighbours may hold its MAC)."""
        if announce and held:
            self._announce_asked.add(address)
        elif self._wanted.get(address) is held and (address in self._held) is held:
            return
        self._wanted[address] = held
        self._settled.clear()
        self._changed.set()
        if self._defence is not None:
            # The defence follows the role at once, not the interface: a member stepping down must not take
            # the new active member's announcement for a conflict while netlink takes its address off.
            if not held:
                self._defence.release(int(IPv4Address(address)))
            elif address in self._held:  # wanted again before it came off
                self._defend(self._defence.hold(int(IPv4Address(address)), asyncio.get_running_loop().time()))

    async def close(self) -> None:
        """Give every address back (the stop is graceful), then let go of the interface."""
        for address in list(self._wanted):
            self.want(address, False)
        if self._task is not None:
            try:
                await asyncio.wait_for(self._settled.wait(), 5)
            except TimeoutError:
                log.error("could not take the virtual address off %s", self.interface)
            self._task.cancel()
        if self._retry is not None:
            self._retry.cancel()
        if self._ipr is not None:
            self._ipr.close()
        if self._arp is not None:
            asyncio.get_running_loop().remove_reader(self._arp.fileno())
            self._arp.close()
            self._arp = None  # a probe or announcement still due finds nothing to send on

    # -- the one task that changes the interface ------------------------------------------------------

    async def _work(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            for address, held in list(self._wanted.items()):
                if held and address not in self._held:
                    if await self._add(address):
                        self._held.add(address)
                        log.info("added the virtual address %s to %s", address, self.interface)
                        self._announce_asked.discard(address)  # the announcement below is the one asked for
                        loop = asyncio.get_running_loop()
                        loop.create_task(self._announce(int(IPv4Address(address))))
                        if self._defence is not None and self._wanted.get(address):  # not let go meanwhile
                            self._defend(self._defence.hold(int(IPv4Address(address)), loop.time()))
                elif not held and address in self._held:
                    if await self._delete(address):  # else still on: a standby must not keep it (retried)
                        self._held.discard(address)
                        log.info("took the virtual address %s off %s", address, self.interface)
            for address in [a for a in self._announce_asked if a in self._held]:
                self._announce_asked.discard(address)
                log.info("announcing the virtual address %s on %s again", address, self.interface)
                asyncio.get_running_loop().create_task(self._announce(int(IPv4Address(address))))
            if all((a in self._held) is h for a, h in self._wanted.items()):
                self._settled.set()
            elif self._retry is None or self._retry.when() <= asyncio.get_running_loop().time():
                self._retry = asyncio.get_running_loop().call_later(RETRY, self._changed.set)

    async def _add(self, address: str) -> bool:
        from pyroute2.netlink.exceptions import NetlinkError

        assert self._ipr is not None
        try:
            await self._ipr.addr("replace", index=self._index, address=address, prefixlen=32)
            return True
        except (NetlinkError, OSError) as exc:
            self._counters["claim_failed"] += 1
            self._failures += 1
            if self._failures == 1:
                log.warning("cannot add %s to %s (retrying): %s", address, self.interface, exc)
            return False

    async def _delete(self, address: str) -> bool:
        """Take ``address`` off: True once it is off (taken off, or it was not there), False if the kernel
        refused (it is still on; tried again)."""
        from pyroute2.netlink.exceptions import NetlinkError

        assert self._ipr is not None
        try:
            await self._ipr.addr("del", index=self._index, address=address, prefixlen=32)
            return True
        except (NetlinkError, OSError) as exc:
            if isinstance(exc, NetlinkError) and exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                return True  # not there: off
            self._counters["release_failed"] += 1
            if self._counters["release_failed"] == 1 or log.isEnabledFor(logging.DEBUG):
                log.error("cannot take %s off %s (retrying every %g s): %s", address, self.interface, RETRY, exc)
            return False

    async def _networks(self) -> list[IPv4Network]:
        """The IPv4 networks on the interface: the home link, for choosing which home addresses to announce."""
        assert self._ipr is not None
        networks = []
        async for message in await self._ipr.addr("dump", index=self._index, family=socket.AF_INET):
            networks.append(IPv4Network(f"{message.get('IFA_ADDRESS')}/{message['prefixlen']}", strict=False))
        return networks

    # -- gratuitous ARP -------------------------------------------------------------------------------

    async def _announce(self, address: int, proxied_too: bool = True) -> None:
        """Announce ``address``, and again ``ANNOUNCE_AGAIN`` later; with ``proxied_too``, every home address
        served on the link as well, paced, twice, read again for the second pass (a node that came home
        meanwhile is not announced at our MAC). The virtual address's repetition does not wait for a long
        paced pass. Nothing once the address is let go: a standby must not draw traffic."""
        if not self._holds(address):
            return
        await self._send([address])
        loop = asyncio.get_running_loop()
        first = loop.create_task(self._send_served(address)) if proxied_too else None
        await asyncio.sleep(ANNOUNCE_AGAIN)
        if self._holds(address):
            await self._send([address])
        if first is not None:
            await first
            await self._send_served(address)

    async def _send_served(self, address: int) -> None:
        """The home addresses served on the link, paced, while ``address`` is held."""
        links = [(int(n.network_address), int(n.netmask)) for n in self._links if n.prefixlen < 32]
        served = [a for a in self._proxied() if any(a & mask == net for net, mask in links)]
        await self._send(served, paced_while_held=address)

    def _holds(self, address: int) -> bool:
        text = str(IPv4Address(address))
        return bool(self._wanted.get(text)) and text in self._held

    async def _send(self, addresses: list[int], paced_while_held: int | None = None) -> None:
        """Send an announcement of each of ``addresses``; with ``paced_while_held``, at most the announce rate
        a second, and only while that (virtual) address is held."""
        mac = self._mac
        for start in range(0, len(addresses), ANNOUNCE_CHUNK):
            arp = self._arp
            if arp is None:  # closed meanwhile (the daemon stops)
                return
            if paced_while_held is not None and not self._holds(paced_while_held):
                return
            chunk = addresses[start:start + ANNOUNCE_CHUNK]
            for address in chunk:
                frame = arp_announcement(mac, address)
                for _ in range(100):
                    try:
                        arp.send(frame)
                        self._counters["gratuitous_arp_sent"] += 1
                        break
                    except (BlockingIOError, InterruptedError):
                        await asyncio.sleep(0.001)
                    except OSError as exc:
                        if exc.errno != errno.ENOBUFS:
                            log.warning("gratuitous ARP on %s failed: %s", self.interface, exc)
                            return
                        await asyncio.sleep(0.001)
            await asyncio.sleep(len(chunk) / self._rate if paced_while_held is not None else 0)

    # -- the ARP watch: another host claiming the address ---------------------------------------------

    def _read(self) -> None:
        """Read what the link sent, a batch at a time: a flood of ARP must not starve the registrations, and
        no frame, however malformed, may end the watch."""
        arp, defence = self._arp, self._defence
        assert arp is not None and defence is not None
        now = asyncio.get_running_loop().time()
        for _ in range(READ_BATCH):
            try:
                data, where = arp.recvfrom(FRAME_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ENETDOWN while the link is down: nothing to read
                log.debug("reading ARP on %s: %s", self.interface, exc)
                return
            if where[2] == socket.PACKET_OUTGOING or not defence.held:
                continue  # our own frames, or nothing of ours to defend
            try:
                frame = ArpFrame.parse(data)
            except ParseError:
                continue
            self._defend(defence.heard(frame, now))

    def _defend(self, actions: list[Action]) -> None:
        loop = asyncio.get_running_loop()
        for action in actions:
            if isinstance(action, Warn):
                log.warning("another host claims the virtual address %s: %s answers for it on %s (%d time(s) "
                            "since the last warning); announcing it again. A member killed while active "
                            "leaves the address on its host: run 'homeagent cleanup' there",
                            IPv4Address(action.address), action.mac.hex(":"), self.interface,
                            action.conflicts)
            elif action.at <= loop.time():
                self._act(action)
            else:
                loop.call_at(action.at, self._act, action)

    def _act(self, action: Probe | Announce) -> None:
        """Send what the defence asked for, if the address is still ours (we may have stepped down since)."""
        if self._defence is None or action.address not in self._defence.held or self._arp is None:
            return
        if isinstance(action, Announce):
            asyncio.get_running_loop().create_task(self._announce(action.address, proxied_too=False))
            return
        try:
            self._arp.send(arp_probe(self._mac, action.address))
            self._counters["arp_probes_sent"] += 1
        except OSError as exc:  # a full queue (BlockingIOError) or a link going down: the next request probes
            log.debug("ARP probe on %s failed: %s", self.interface, exc)


class AddressWatch:
    """With an external election the role follows the virtual address on this host.

    keepalived (or any VRRP daemon) puts the address on an interface when it makes this host master and
    takes it off when it stops being master. Acting on that netlink event makes this member active within
    a millisecond, where the notify script (``homeagent role``) first has to start a Python interpreter:
    100 to 200 ms measured here. The notify scripts still work, and agree.
    """

    def __init__(self, address: str, changed: Callable[[bool], None]) -> None:
        self.address = address
        self._changed = changed
        self._ipr: Any = None  # pyroute2.AsyncIPRoute (untyped)
        self._task: asyncio.Task[None] | None = None
        self.present = False

    async def open(self) -> None:
        from pyroute2 import AsyncIPRoute
        from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR

        self._ipr = AsyncIPRoute()
        await self._ipr.bind(groups=RTMGRP_IPV4_IFADDR)
        if await self._held():
            self._set(True)
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._ipr is not None:
            self._ipr.close()

    async def _watch(self) -> None:
        assert self._ipr is not None
        while True:  # each ``get`` yields the messages of one read
            try:
                async for message in self._ipr.get():
                    if message.get("IFA_LOCAL", message.get("IFA_ADDRESS")) != self.address:
                        continue
                    if message.get("event") == "RTM_NEWADDR":
                        self._set(True)
                    else:  # gone from one interface; it may still be on another
                        self._set(await self._held())
            except Exception:  # noqa: BLE001 - the watch must outlive one bad read (ENOBUFS on a busy host)
                log.exception("watching the addresses of this host")
                await asyncio.sleep(1)
                with contextlib.suppress(Exception):  # events may have been missed: look again
                    self._set(await self._held())

    async def _held(self) -> bool:
        assert self._ipr is not None
        found = False
        async for message in await self._ipr.addr("dump", family=socket.AF_INET):
            found = found or message.get("IFA_LOCAL", message.get("IFA_ADDRESS")) == self.address
        return found

    def _set(self, present: bool) -> None:
        if present != self.present:
            self.present = present
            self._changed(present)
