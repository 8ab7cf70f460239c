"""The forwarding process of the userspace data plane:

    python3 -m homeagent.dataplane.forwarder --control-fd N [--tun ha0] [--mtu 1500] [--ttl 64]

It owns a TUN device (IFF_TUN | IFF_NO_PI, MTU = link MTU - 20), a raw ``IPPROTO_IPIP`` socket with
``IP_HDRINCL`` that sends the encapsulated datagrams (and the ICMP errors), a raw ``IPPROTO_IPIP`` socket
that reads the reverse tunnels, and a raw ICMP socket that hears what goes wrong on the way to a care-of
address (the kernel passes it only Destination Unreachable and Time Exceeded: RFC 2003 4.1's soft state, a
narrower path or an unreachable care-of address); ``dataplane.engine`` decides what
happens to each packet, and ``dataplane.routes`` keeps the /32 routes into the TUN. The daemon feeds it
over the ``SOCK_SEQPACKET`` socket ``N`` (``dataplane.messages``); when that socket closes, the forwarder
exits, and the device and its routes go with it.

Why a process started with ``subprocess`` and not a thread, nor ``multiprocessing``: a thread would share
the daemon's interpreter lock, and the design (principle 9) wants a packet burst not to delay a reply, nor
a registration burst to drop packets; each needs a CPU of its own. ``multiprocessing`` with fork would copy
a daemon that has threads (pyroute2, the store) and an event loop into the child, which is unsafe, and with
spawn it would add a pickling channel we do not need. A fresh interpreter running this module has nothing
of the daemon's, can be run and profiled by hand, and can be wrapped (``ip netns exec``) by the one line
that starts it. It needs CAP_NET_ADMIN (TUN device, routes) and CAP_NET_RAW (raw sockets).

The loop waits on the three descriptors with epoll and handles each in bounded batches, so that neither
direction nor the control socket can starve the others: a burst of binding changes is applied 128 changes
at a time between batches of packets, and forwarding goes on while it is.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import struct
import sys
from collections import Counter, deque
from types import FrameType

from homeagent.dataplane import Tunnel
from homeagent.dataplane.engine import Engine
from homeagent.dataplane.messages import (Barrier, CountersRequest, Ping, Serve, SetTunnels, decode,
                                          encode_applied, encode_counters, encode_pong, encode_ready)
from homeagent.dataplane.routes import HomeRoutes
from homeagent.dataplane.tun import open_tun, without_ipv6
from homeagent.wire.errors import ParseError
from homeagent.wire.ip import (DEFAULT_TTL, HEADER_SIZE, ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED,
                               IPPROTO_IPIP)

log = logging.getLogger("homeagent.dataplane.forwarder")

PACKET_BATCH = 64  # packets read from one descriptor before looking at the others
CONTROL_BATCH = 16  # control messages read per wake-up, when the changes read before are all applied
CHANGE_BATCH = 128  # changes applied between two batches of packets (~0.5 ms): a message holds thousands
READ_SIZE = 65535
RECEIVE_BUFFER = 4 << 20
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3  # <linux/in.h>; not in Python's socket module
SOL_RAW, ICMP_FILTER = 255, 1  # <linux/icmp.h>: a mask of the ICMP types the socket does not want


class Forwarder:
    """The descriptors and the loop around one ``Engine``."""

    def __init__(self, control: socket.socket, tun: str = "ha0", mtu: int = 1500,
                 ttl: int = DEFAULT_TTL, read_size: int | None = None) -> None:
        """``read_size``: the longest datagram read from the TUN device (None: the link's MTU)."""
        from pyroute2 import IPRoute

        self.control = control
        self.counters: Counter[str] = Counter()
        self.fd, self.name = open_tun(tun)
        without_ipv6(self.name)
        with IPRoute() as ipr:
            self.index = ipr.link_lookup(ifname=self.name)[0]
            ipr.link("set", index=self.index, mtu=mtu - HEADER_SIZE, state="up")
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
        self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        # The engine keeps each tunnel's path MTU (from the ICMP socket below) and sends nothing larger;
        # the kernel, which learns the same ICMP, must not drop what it sends on its own idea of the path.
        self.tx.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        self.icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        unwanted = ~((1 << ICMP_DEST_UNREACHABLE) | (1 << ICMP_TIME_EXCEEDED)) & 0xFFFFFFFF
        self.icmp.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", unwanted))
        self.icmp.setblocking(False)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.rx.setblocking(False)
        fd = self.fd
        self.engine = Engine(self.tx.sendto, lambda packet: os.write(fd, packet), mtu, ttl)
        self.routes = HomeRoutes(self.index, self.counters, self._applied)
        self.backlog: deque[tuple[int, tuple[Tunnel, ...]] | Serve | CountersRequest | Barrier] = deque()
        self.mtu = mtu
        self.read_size = read_size or mtu

    def run(self) -> None:
        self.routes.start()
        self.control.send(encode_ready({"tun": self.name, "index": self.index, "mtu": self.mtu - HEADER_SIZE,
                                        "pid": os.getpid()}))
        poller = select.epoll()
        tun, rx, control, icmp = self.fd, self.rx.fileno(), self.control.fileno(), self.icmp.fileno()
        for fd in (tun, rx, control, icmp):
            poller.register(fd, select.EPOLLIN)
        read, recv = os.read, self.rx.recv
        # What the kernel routes into the TUN is no longer than its MTU (no IFF_VNET_HDR, so no GSO): a read
        # of the link's MTU is enough, and allocating 1.5 KiB rather than 64 KiB per packet shows in the
        # rate. Behind the ebpf program, which hands the TUN datagrams as they came from any of its links
        # (a jumbo frame too big to tunnel), the whole datagram is read (``read_size``).
        tun_read = self.read_size
        from_tun, from_network = self.engine.from_tun, self.engine.from_network
        batch = range(PACKET_BATCH)
        backlog = self.backlog
        try:
            while True:
                for fd, _ in poller.poll(0 if backlog else -1):
                    if fd == tun:
                        for _ in batch:
                            try:
                                packet = read(tun, tun_read)
                            except BlockingIOError:
                                break
                            from_tun(packet)
                    elif fd == rx:
                        for _ in batch:
                            try:
                                packet = recv(READ_SIZE)
                            except OSError as exc:  # BlockingIOError, or a socket error to report once
                                if not isinstance(exc, BlockingIOError):
                                    self.counters["receive_errors"] += 1
                                break
                            from_network(packet)
                    elif fd == icmp:
                        for _ in batch:
                            try:
                                self.engine.from_icmp(self.icmp.recv(READ_SIZE))
                            except OSError as exc:
                                if not isinstance(exc, BlockingIOError):
                                    self.counters["receive_errors"] += 1
                                break
                    elif not backlog and not self._control():
                        return
                if backlog:
                    self._apply(CHANGE_BATCH)
        finally:
            poller.close()
            self.routes.close()

    def _control(self) -> bool:
        """Read the waiting control messages, a bounded batch, into the backlog; False when the daemon is
        gone. The backlog is applied a little at a time between batches of packets (a table download or a
        takeover sends thousands of changes at once), in order: a serve or a counters request comes after
        the changes sent before it."""
        for _ in range(CONTROL_BATCH):
            try:
                message = self.control.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            except ConnectionResetError:
                return False
            if not message:
                return False
            try:
                command = decode(message)
            except ParseError as exc:
                self.counters["control_malformed"] += 1
                log.warning("malformed control message: %s", exc)
                continue
            if isinstance(command, SetTunnels):
                self.backlog.extend(command.entries)
            elif isinstance(command, (Serve, CountersRequest, Barrier)):
                self.backlog.append(command)
            elif isinstance(command, Ping):  # at once, ahead of the backlog: the handle's watchdog
                try:
                    self.control.send(encode_pong(command.mark))
                except OSError:  # the daemon is gone (it stopped between its ping and our answer)
                    return False
            else:
                self.counters["control_unexpected"] += 1
        return True

    def _apply(self, budget: int) -> None:
        backlog = self.backlog
        for _ in range(min(budget, len(backlog))):
            item = backlog.popleft()
            if isinstance(item, Serve):
                self.engine.serving = item.serving
                self.routes.serve(item.serving)
            elif isinstance(item, CountersRequest):
                for part in encode_counters(item.request, self.snapshot(item.tunnels)):
                    self.control.send(part)
            elif isinstance(item, Barrier):  # the engine has what came before; the routes say when they do
                self.routes.barrier(item.mark)
            else:
                home, tunnels = item
                self.engine.set_tunnels(home, tunnels)
                self.routes.want(home, bool(tunnels))

    def _applied(self, mark: int) -> None:
        """The routes thread's word that the changes before barrier ``mark`` are in the kernel."""
        try:
            self.control.send(encode_applied(mark))
        except OSError:  # the daemon is gone: the main loop ends on the closed socket
            pass

    def snapshot(self, tunnels: bool = True) -> dict[str, object]:
        own = {"routes": self.routes.routed(), "tun": self.name, "pid": os.getpid()}
        return {**self.engine.counters(tunnels), **own, **self.counters}

    def close(self) -> None:
        for closing in (self.tx, self.rx, self.icmp, self.control):
            closing.close()
        os.close(self.fd)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


# The control plane first: when the CPUs are saturated, a flood of datagrams must not starve the daemon's
# registrations and advertisements (bench/forwarding_registrations.py: at the same priority registrations
# fell to 0.36 of idle on two CPUs). Forwarding takes the CPU the daemon leaves, which is nearly all of it.
NICE = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m homeagent.dataplane.forwarder",
                                     description="the userspace data plane's forwarding process")
    parser.add_argument("--control-fd", type=int, required=True, help="SOCK_SEQPACKET socket to the daemon")
    parser.add_argument("--tun", default="ha0", help="TUN device name (default ha0)")
    parser.add_argument("--mtu", type=int, default=1500, help="the link MTU; the TUN gets 20 less")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="outer TTL (default 64)")
    parser.add_argument("--read-size", type=int, default=None,
                        help="the longest datagram read from the TUN (default: the link MTU)")
    parser.add_argument("--nice", type=int, default=NICE,
                        help=f"scheduling niceness added (default {NICE}): registrations come first")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)  # on a busy host the daemon answers registrations first (issue 11)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s forwarder[{os.getpid()}] %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _stop)
    control = socket.socket(fileno=args.control_fd)
    try:
        forwarder = Forwarder(control, args.tun, args.mtu, args.ttl, args.read_size)
    except Exception as exc:  # noqa: BLE001 - OSError, or pyroute2's NetlinkError: said once, then exit
        log.error("cannot open the data plane (it needs CAP_NET_ADMIN and CAP_NET_RAW): %s", exc)
        return 1
    try:
        forwarder.run()
    finally:
        forwarder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
