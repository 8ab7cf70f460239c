"""The mobile node's end of the tunnel with a co-located care-of address (RFC 5944 3.1, RFC 2003): the
node decapsulates what its Home Agent tunnels to it, and with reverse tunnelling (RFC 3024) encapsulates
what it sends from its home address. Kernels without an ``ipip`` device (the machines here) need it in
userspace, and ``homeagent mn up`` uses it:

    python3 -m homeagent.dataplane.decap --home-address A --home-agent H --care-of C [--reverse] [--tun mip0]

A TUN device holds the home address (a /32), so applications on the node bind to it and see their traffic
to it. A raw ``IPPROTO_IPIP`` socket reads the tunnel; a datagram is unwrapped and written into the TUN only
if it comes from the Home Agent and is for the home address (a decapsulator that took anything would let
anyone inject traffic "from" any address). With ``reverse``, a policy rule sends whatever leaves from the
home address into the TUN, and what is read there goes to the Home Agent in an outer header from the
care-of address; without it, replies leave directly from the home address (triangular routing).

Needs CAP_NET_ADMIN (device, address, rule, route) and CAP_NET_RAW (raw sockets).
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import sys
import threading
from collections import Counter
from ipaddress import IPv4Address
from types import FrameType
from typing import Any

from homeagent.dataplane.tun import open_tun, without_ipv6
from homeagent.wire.ip import DEFAULT_TTL, HEADER_SIZE, IPPROTO_IPIP, Drop, OuterHeader

log = logging.getLogger("homeagent.dataplane.decap")

# The routing table of a reverse tunnel: one per TUN device, so that mobile nodes sharing a host (tests, a
# router carrying several) each send into their own (434, the registration port, to be easy to recognise).
REVERSE_TABLE_BASE = 434 << 16
RULE_PRIORITY = 434
BATCH = 64


class Decapsulator:
    """The packet decisions of the mobile node's tunnel end, without I/O (``deliver``: write to the TUN;
    ``send``: a raw socket's sendto)."""

    def __init__(self, home_address: int, home_agent: int, care_of: int, reverse: bool,
                 deliver: Any, send: Any, ttl: int = DEFAULT_TTL) -> None:
        self.home = home_address.to_bytes(4, "big")
        self.home_agent = home_agent.to_bytes(4, "big")
        self.reverse = reverse
        self.deliver = deliver
        self.send = send
        self.header = OuterHeader(care_of, home_agent, ttl)
        self.address = (str(IPv4Address(home_agent)), 0)
        self.counters: Counter[str] = Counter()
        self._ident = 0

    def from_network(self, packet: bytes) -> None:
        """IP-in-IP read from the raw socket: unwrap it if it is the Home Agent's, for our home address."""
        length = len(packet)
        ihl = (packet[0] & 0x0F) << 2 if length else 0
        if length < 2 * HEADER_SIZE or ihl < HEADER_SIZE or length < ihl + HEADER_SIZE:
            self.counters[f"drops.{Drop.TRUNCATED}"] += 1
            return
        if packet[12:16] != self.home_agent:
            self.counters[f"drops.{Drop.UNKNOWN_CARE_OF}"] += 1  # not from our tunnel's other end
            return
        inner = packet[ihl:]
        inner_ihl = (inner[0] & 0x0F) << 2
        inner_total = (inner[2] << 8) | inner[3]
        if inner[0] & 0xF0 != 0x40 or inner_ihl < HEADER_SIZE or not inner_ihl <= inner_total <= len(inner):
            self.counters[f"drops.{Drop.INNER_MALFORMED}"] += 1
            return
        if inner[16:20] != self.home:
            self.counters[f"drops.{Drop.NO_TUNNEL}"] += 1  # not for us: we relay nothing
            return
        self.deliver(inner[:inner_total])
        self.counters["packets"] += 1
        self.counters["bytes"] += inner_total

    def from_tun(self, packet: bytes) -> None:
        """A datagram the node sends from its home address (routed into the TUN by the reverse rule)."""
        if len(packet) < HEADER_SIZE or packet[0] & 0xF0 != 0x40:  # the kernel's IPv6 chatter on a new link
            self.counters[f"drops.{Drop.NOT_IPV4}"] += 1
            return
        if not self.reverse:
            self.counters[f"drops.{Drop.NO_TUNNEL}"] += 1
            return
        self._ident = (self._ident + 1) & 0xFFFF
        try:
            self.send(self.header.build(len(packet) + HEADER_SIZE, self._ident, packet[1], packet[6] & 0x40)
                      + packet, self.address)
        except OSError:
            self.counters[f"drops.{Drop.SEND_FAILED}"] += 1
            return
        self.counters["reverse_packets"] += 1
        self.counters["reverse_bytes"] += len(packet)


class MobileTunnel:
    """The device, sockets, rule and loop around one ``Decapsulator``."""

    def __init__(self, home_address: int, home_agent: int, care_of: int, reverse: bool = False,
                 tun: str = "mip0", mtu: int = 1500) -> None:
        self.home_address = home_address
        self.reverse = reverse
        self.mtu = mtu
        self.fd, self.name = open_tun(tun)
        without_ipv6(self.name)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
        self.rx.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
        self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        fd = self.fd
        self.table = 0  # the reverse tunnel's routing table, once configured
        self.engine = Decapsulator(home_address, home_agent, care_of, reverse, lambda p: os.write(fd, p),
                                   self.tx.sendto)
        self._stop_r, self._stop_w = os.pipe()
        self._configure()

    def _configure(self) -> None:
        from pyroute2 import IPRoute

        home = str(IPv4Address(self.home_address))
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=self.name)[0]
            ipr.link("set", index=index, mtu=self.mtu - HEADER_SIZE, state="up")
            ipr.addr("replace", index=index, address=home, prefixlen=32)
            if self.reverse:
                self.table = REVERSE_TABLE_BASE + index
                ipr.route("replace", dst="0.0.0.0/0", oif=index, table=self.table)
                for rule in ipr.get_rules(family=socket.AF_INET):  # an earlier run's, killed before it could
                    if rule.get("FRA_SRC") == home and rule.get("FRA_PRIORITY") == RULE_PRIORITY:
                        try:
                            ipr.rule("del", src=home, src_len=32, priority=RULE_PRIORITY,
                                     table=rule.get("FRA_TABLE") or rule["table"])
                        except Exception:  # noqa: BLE001 - gone meanwhile
                            pass
                ipr.rule("add", src=home, src_len=32, table=self.table, priority=RULE_PRIORITY)
        # What arrives on the TUN comes from anywhere, while the route back to it leaves by the link.
        with open(f"/proc/sys/net/ipv4/conf/{self.name}/rp_filter", "w") as knob:
            knob.write("0")

    def run(self) -> None:
        """Forward both ways until ``stop``."""
        poller = select.epoll()
        tun, rx = self.fd, self.rx.fileno()
        for fd in (tun, rx, self._stop_r):
            poller.register(fd, select.EPOLLIN)
        try:
            while True:
                for fd, _ in poller.poll():
                    if fd == rx:
                        for _ in range(BATCH):
                            try:
                                packet = self.rx.recv(65535)
                            except OSError as exc:  # BlockingIOError, or a socket error to report once
                                if not isinstance(exc, BlockingIOError):
                                    self.engine.counters["receive_errors"] += 1
                                break
                            self.engine.from_network(packet)
                    elif fd == tun:
                        for _ in range(BATCH):
                            try:
                                self.engine.from_tun(os.read(tun, 65535))
                            except BlockingIOError:
                                break
                    else:
                        return
        finally:
            poller.close()

    def stop(self) -> None:
        os.write(self._stop_w, b"x")

    def close(self) -> None:
        """Close the device (its address and the reverse route go with it) and take the rule away."""
        if self.reverse:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                try:
                    ipr.rule("del", src=str(IPv4Address(self.home_address)), src_len=32, table=self.table,
                             priority=RULE_PRIORITY)
                except Exception:  # noqa: BLE001 - gone already
                    pass
        for sock in (self.rx, self.tx):
            sock.close()
        for fd in (self.fd, self._stop_r, self._stop_w):
            os.close(fd)

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="mobile-tunnel", daemon=True)
        thread.start()
        return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m homeagent.dataplane.decap",
                                     description="the mobile node's end of an IP-in-IP tunnel")
    parser.add_argument("--home-address", required=True)
    parser.add_argument("--home-agent", required=True, help="the address the node registered with")
    parser.add_argument("--care-of", required=True, help="the co-located care-of address")
    parser.add_argument("--reverse", action="store_true", help="reverse tunnelling (RFC 3024, T flag)")
    parser.add_argument("--tun", default="mip0")
    parser.add_argument("--mtu", type=int, default=1500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    tunnel = MobileTunnel(int(IPv4Address(args.home_address)), int(IPv4Address(args.home_agent)),
                          int(IPv4Address(args.care_of)), args.reverse, args.tun, args.mtu)

    def stop(signum: int, frame: FrameType | None) -> None:
        tunnel.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    try:
        tunnel.run()
    finally:
        log.info("counters: %s", dict(tunnel.engine.counters))
        tunnel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
