"""The data plane's test network: a correspondent, a router, a home link with the Home Agent's host, and
two foreign links each with a mobile node at its care-of address. Every link is a veth pair (a link of two
hosts needs no bridge), with transmit checksum offload off: on veth it leaves encapsulated UDP with a bad
checksum at the far end (``ethtool -K DEV tx off``; pyroute2's ethtool ioctl where ethtool is missing).

    cn 10.9.0.2 --- 10.9.0.1 rt 10.1.0.254 --- 10.1.0.1 ha        (home link 10.1.0.0/24)
                             rt 10.2.0.1   --- 10.2.0.10 mn       (foreign link 1)
                             rt 10.3.0.1   --- 10.3.0.10 mn2      (foreign link 2)

The mobile nodes' home address is 10.1.0.50, on the home link: the router delivers it there to the Home
Agent's host (a fixed neighbour entry stands for the proxy ARP of RFC 5944 4.6, which is the daemon's
part), whose forwarder's /32 route into its TUN draws it in while serving.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from netns.lan import inside_namespace, run

CN, RT_CN = "10.9.0.2", "10.9.0.1"
HA, RT_HOME = "10.1.0.1", "10.1.0.254"
COA, RT_F1 = "10.2.0.10", "10.2.0.1"
COA2, RT_F2 = "10.3.0.10", "10.3.0.1"
HOME = "10.1.0.50"


def a(text: str) -> int:
    return int(IPv4Address(text))


class TunnelNet:
    HOSTS = ("cn", "rt", "ha", "mn", "mn2")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def exec(self, host: str, *cmd: str, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns(host), *cmd, check=check, timeout=timeout)

    def popen(self, host: str, cmd: list[str], **kw) -> subprocess.Popen:  # type: ignore[type-arg]
        return subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd], **kw)

    def inside(self, host: str) -> contextlib.AbstractContextManager[None]:
        """Sockets made in the block live in ``host``'s namespace."""
        return inside_namespace(self.ns(host))

    def socket(self, host: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        with self.inside(host):
            return socket.socket(family, kind, proto)

    def _link(self, left: str, left_if: str, left_addr: str, right: str, right_if: str,
              right_addr: str) -> None:
        veth(self.ns(left), left_if, left_addr, self.ns(right), right_if, right_addr)

    def _build(self) -> None:
        for host in self.HOSTS:
            name = self.ns(host)
            run("ip", "netns", "del", name, check=False)  # left over from a run that was killed
            run("ip", "netns", "add", name)
            self._made.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        self._link("cn", "eth0", CN, "rt", "c0", RT_CN)
        self._link("rt", "h0", RT_HOME, "ha", "eth0", HA)
        self._link("rt", "f0", RT_F1, "mn", "eth0", COA)
        self._link("rt", "f1", RT_F2, "mn2", "eth0", COA2)
        for host, gateway in (("cn", RT_CN), ("ha", RT_HOME), ("mn", RT_F1), ("mn2", RT_F2)):
            run("ip", "-n", self.ns(host), "route", "add", "default", "via", gateway)
        for host in ("rt", "ha"):
            self.exec(host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The router sends the home address's traffic to the Home Agent's host: what proxy ARP (RFC 5944
        # 4.6, the daemon's part) teaches it, held fixed here so that no ARP timing (a failed resolution
        # cached, the proxy's random reply delay) blurs what the data plane does.
        link = run("ip", "-n", self.ns("ha"), "-o", "link", "show", "eth0").stdout
        mac = link.split("link/ether ")[1].split()[0]
        run("ip", "-n", self.ns("rt"), "neigh", "replace", HOME, "lladdr", mac, "dev", "h0", "nud",
            "permanent")

    def close(self) -> None:
        for name in reversed(self._made):
            for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            run("ip", "netns", "del", name, check=False)
        self._made.clear()


def tx_checksum_off(namespace: str, device: str) -> None:
    if shutil.which("ethtool"):
        run("ip", "netns", "exec", namespace, "ethtool", "-K", device, "tx", "off")
        return
    from pyroute2 import netns
    from pyroute2.ethtool import Ethtool

    netns.pushns(namespace)
    try:
        with contextlib.closing(Ethtool()) as ethtool:
            features = ethtool.get_features(device)
            for name, feature in features.features.items():
                if name.startswith("tx-checksum"):
                    feature.enable = False
            ethtool.set_features(device, features)
    finally:
        netns.popns()


def veth(left_ns: str, left_if: str, left_addr: str, right_ns: str, right_if: str, right_addr: str) -> None:
    """A link of two hosts: a veth pair between two namespaces, a /24 address on each end, transmit
    checksum offload off."""
    run("ip", "link", "add", left_if, "netns", left_ns, "type", "veth", "peer", "name", right_if,
        "netns", right_ns)
    for ns, dev, address in ((left_ns, left_if, left_addr), (right_ns, right_if, right_addr)):
        run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
        run("ip", "-n", ns, "link", "set", dev, "up")
        tx_checksum_off(ns, dev)


def udp_echo(server: socket.socket, client: socket.socket, client_address: str, home: str, port: int,
             n: int) -> None:
    """``n`` datagrams from ``client`` to ``home``:``port``, each arriving at ``server`` from
    ``client_address`` and answered, the answer arriving back from the home address."""
    for i in range(n):
        client.sendto(b"hello %d" % i, (home, port))
        data, sender = server.recvfrom(2048)
        assert data == b"hello %d" % i and sender[0] == client_address
        server.sendto(data.upper(), sender)
        assert client.recvfrom(2048) == (b"HELLO %d" % i, (home, port))


def first_of(listener: socket.socket, matches: Callable[[Any], bool], what: str, timeout: float = 3) -> Any:
    """The first datagram a raw socket receives (as scapy's IP) for which ``matches`` is true."""
    from scapy.layers.inet import IP

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listener.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            packet = IP(listener.recv(65535))
        except TimeoutError:
            break
        if matches(packet):
            return packet
    raise AssertionError(f"no {what} arrived")


def icmp_of(listener: socket.socket, kind: int, timeout: float = 3) -> Any:
    """The first ICMP message of type ``kind`` a raw ICMP socket receives, as scapy's IP."""
    from scapy.layers.inet import ICMP

    return first_of(listener, lambda packet: packet[ICMP].type == kind, f"ICMP type {kind}", timeout)
