"""Gratuitous ARP on the home link, paced (RFC 5944 section 4.6).

A gratuitous ARP is a broadcast ARP request whose sender and target protocol address are both the address
announced; every host and router on the link that holds an entry for that address takes the sender
hardware address into it (Linux does even within ``locktime``: a gratuitous ARP always overrides). The
Ethernet source is always ours: this interface's MAC, or the group's virtual MAC where one is configured
(docs/dataplane.md, "A virtual MAC"); the sender hardware address is the MAC the entry should point at:
that same MAC while the mobile node is away, the mobile node's own when it has returned home (section 4.6
asks the Home Agent to announce the mobile node's link-layer address then; the switches must still learn
our port from our frames, never the mobile node's MAC from us).

Why paced. At a takeover the new active member announces every home address that is away. At 100,000 of
them, sent as fast as a socket takes them, that is 6 MB of broadcast in well under a second: every host on
the link interrupted 100,000 times, and switches with broadcast-storm control cut the port. So every frame
goes through one token bucket per interface:

- ``rate`` frames a second (default ``RATE`` = 1,000: 60 kB/s, 0.5 Mbit/s of broadcast, which even a
  wireless home link carries at its basic rate), at most ``burst`` at once (default ``BURST`` = 100: a
  burst of registrations is announced at once, not smeared);
- the sending task wakes every ``TICK`` (10 ms) while there is work, sends what the bucket allows, and
  never blocks: a full socket buffer leaves the frame queued for the next tick;
- work is taken in this order: announcements a registration or a return home asked for (``urgent``),
  their repetitions once due, the takeover's announcements (``bulk``), and the takeover's repetitions
  last. Each address is queued once per class however often it is asked for, so the queues never hold more
  than the home addresses;
- every announcement is sent once more ``again`` seconds later (default 1 s; section 4.6 allows a small
  number of retransmissions, for one lost broadcast must not strand a host);
- the MAC is read when the frame goes, not when it is queued (``sender_mac``): an address whose mobile
  node came home meanwhile is announced with the mobile node's MAC or not at all, and a member that stood
  down announces nothing (``clear`` empties the queues too).

So at 100,000 away nodes a takeover costs the caller one list copy, the first announcement of every
address has gone out 100 s later (in no particular order), the repetitions 100 s after that,
and the link never carries more than ``rate`` frames a second plus one ``burst``. The sending costs the
event loop about 5 us a frame (0.5 % of a CPU at the default rate).

``Pacer`` decides (sans-I/O: the time in, frames out); ``Announcer`` is the asyncio task and the socket.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable

from homeagent.wire.arp import BROADCAST, ArpFrame, Operation

log = logging.getLogger("homeagent.dataplane.announcer")

RATE = 1000.0  # gratuitous ARP frames a second on one interface, whatever their number
BURST = 100  # frames sent at once when the bucket is full
AGAIN = 1.0  # seconds before an announcement is repeated (once)
TICK = 0.01  # seconds between two wake-ups of the sending task while there is work
WARN_EVERY = 10.0  # seconds between two warnings about failing sends

URGENT, BULK = 0, 1


def gratuitous_arp(source: bytes, address: int, sender: bytes | None = None) -> bytes:
    """The gratuitous ARP announcing that ``address`` is at ``sender`` (default: ``source``), sent from the
    interface whose MAC is ``source``. With ``sender == source`` this is ``wire.arp.announcement``."""
    sender = source if sender is None else sender
    return ArpFrame(BROADCAST, source, Operation.REQUEST, sender, address, bytes(6), address).to_bytes()


class Pacer:
    """What to announce next and when, under one token bucket; the time is given, never read."""

    def __init__(self, rate: float = RATE, burst: int = BURST, again: float = AGAIN) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.again = again
        self._tokens = float(burst)
        self._filled_at: float | None = None
        self._urgent: OrderedDict[int, None] = OrderedDict()
        self._bulk: deque[int] = deque()
        self._repeat: tuple[deque[tuple[float, int]], deque[tuple[float, int]]] = (deque(), deque())

    def urgent(self, address: int) -> None:
        """Announce ``address`` before anything else (a registration, a return home)."""
        self._urgent[address] = None

    def bulk(self, addresses: Iterable[int]) -> None:
        """Announce ``addresses`` after every urgent announcement (a takeover), in place of any takeover
        still queued: a copy in C, about 1 ms for 100,000 addresses. One that is queued as urgent meanwhile
        is announced as such and skipped here."""
        self._bulk = deque(addresses)

    def clear(self) -> None:
        self._urgent.clear()
        self._bulk.clear()
        for queue in self._repeat:
            queue.clear()

    def __len__(self) -> int:
        """Announcements still to send, repetitions included."""
        return len(self._urgent) + len(self._bulk) + sum(len(q) for q in self._repeat)

    def take(self, now: float) -> list[tuple[int, int]]:
        """The announcements the bucket allows at ``now``, as (address, class), in order; the caller sends
        them (or gives back with ``untake`` those the socket refused)."""
        self._fill(now)
        out: list[tuple[int, int]] = []
        allowed = int(self._tokens)
        urgent, bulk = self._urgent, self._bulk
        urgent_again, bulk_again = self._repeat
        while len(out) < allowed:
            if urgent:
                out.append((urgent.popitem(last=False)[0], URGENT))
            elif urgent_again and urgent_again[0][0] <= now:
                out.append((urgent_again.popleft()[1], URGENT + 2))
            elif bulk:
                address = bulk.popleft()
                if address not in urgent:  # queued as urgent meanwhile: it goes as such
                    out.append((address, BULK))
            elif bulk_again and bulk_again[0][0] <= now:
                out.append((bulk_again.popleft()[1], BULK + 2))
            else:
                break
        self._tokens -= len(out)
        for address, kind in out:
            if kind < 2:  # a first announcement: repeat it once
                self._repeat[kind].append((now + self.again, address))
        return out

    def untake(self, taken: list[tuple[int, int]], now: float) -> None:
        """Give back what ``take`` returned and was not sent (the socket was full): it goes first next time,
        and its tokens are returned."""
        for address, kind in reversed(taken):
            if kind == URGENT:
                self._repeat[URGENT].pop()  # the repetition ``take`` queued for it, last in
                self._urgent[address] = None
                self._urgent.move_to_end(address, last=False)
            elif kind == BULK:
                self._repeat[BULK].pop()
                self._bulk.appendleft(address)
            else:
                self._repeat[kind - 2].appendleft((now, address))
        self._tokens += len(taken)

    def due(self, now: float) -> float | None:
        """When ``take`` has something to give next: ``now`` or later; None when nothing is queued."""
        if self._urgent or self._bulk:
            waiting = now
        else:
            heads = [q[0][0] for q in self._repeat if q]
            if not heads:
                return None
            waiting = max(now, min(heads))
        self._fill(now)
        if self._tokens >= 1:
            return waiting
        return max(waiting, now + (1 - self._tokens) / self.rate)

    def _fill(self, now: float) -> None:
        if self._filled_at is not None and now > self._filled_at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._filled_at) * self.rate)
        if self._filled_at is None or now > self._filled_at:
            self._filled_at = now


class Announcer:
    """Sends the gratuitous ARPs a ``Pacer`` lets go, on an AF_PACKET socket of one interface.

    ``sender_mac(address)`` gives the MAC an address is to be announced with now, or None to let it go
    unannounced (the member stood down, or the address is neither away nor just come home). ``sent``
    (optional) hears every address announced, with whether it was the last time (its repetition), so the
    owner can forget a returned mobile node's MAC once it is announced.
    """

    def __init__(self, sock: socket.socket, sender_mac: Callable[[int], bytes | None],
                 counters: Counter[str] | None = None, *, rate: float = RATE, burst: int = BURST,
                 again: float = AGAIN, sent: Callable[[int, bool], None] | None = None,
                 mac: bytes | None = None) -> None:
        """``mac``: the source of every frame, and what an away address is announced with (the group's
        virtual MAC); default the interface's."""
        self._sock = sock
        self.interface_mac: bytes = sock.getsockname()[4][:6]
        self.mac: bytes = mac or self.interface_mac
        self._sender_mac = sender_mac
        self._counters: Counter[str] = counters if counters is not None else Counter()
        self._sent = sent
        # At least a tick's worth at once: the task wakes every TICK, so a smaller bucket caps the rate
        # at burst / TICK (10,000 frames a second with the default burst).
        self.pacer = Pacer(rate, max(burst, math.ceil(rate * TICK)), again)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warned_at = float("-inf")

    @classmethod
    def open(cls, interface: str, sender_mac: Callable[[int], bytes | None],
             counters: Counter[str] | None = None, *, rate: float = RATE, burst: int = BURST,
             again: float = AGAIN, sent: Callable[[int, bool], None] | None = None,
             mac: bytes | None = None) -> Announcer:
        """An announcer on ``interface`` (needs CAP_NET_RAW); sending starts with ``start``."""
        # Protocol 0: the socket sends whole frames and receives nothing, so a busy link fills no buffer
        # that nobody reads.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((interface, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return cls(sock, sender_mac, counters, rate=rate, burst=burst, again=again, sent=sent, mac=mac)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def urgent(self, address: int) -> None:
        self.pacer.urgent(address)
        self._wake.set()

    def bulk(self, addresses: Iterable[int]) -> None:
        self.pacer.bulk(addresses)
        self._wake.set()

    def clear(self) -> None:
        self.pacer.clear()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.pacer.clear()
        self._sock.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            due = self.pacer.due(now)
            if due is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if due > now:
                self._wake.clear()
                try:  # a new urgent announcement cuts the wait short (if the bucket allows it)
                    await asyncio.wait_for(self._wake.wait(), max(due - now, TICK))
                except TimeoutError:
                    pass
                continue
            self._send(self.pacer.take(now), now)
            await asyncio.sleep(TICK)

    def _send(self, taken: list[tuple[int, int]], now: float) -> None:
        for i, (address, kind) in enumerate(taken):
            mac = self._sender_mac(address)
            if mac is None:
                continue  # no longer ours to announce
            try:
                self._sock.send(gratuitous_arp(self.mac, address, mac))
            except OSError as exc:
                self._counters["neighbours.gratuitous_arp_send_errors"] += 1
                if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                    self.pacer.untake(taken[i:], now)  # the queue is full: the rest goes next tick
                    return
                if now >= self._warned_at + WARN_EVERY:  # the link is down, say: the frame is lost
                    self._warned_at = now
                    log.warning("gratuitous ARP for %s failed: %s",
                                socket.inet_ntoa(address.to_bytes(4, "big")), exc)
                continue
            self._counters["neighbours.gratuitous_arp_sent"] += 1
            if self._sent is not None:
                self._sent(address, kind >= 2)
