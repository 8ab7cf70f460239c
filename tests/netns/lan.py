"""One Ethernet segment of network namespaces for the tests that cross a real link.

A namespace ``<prefix>-br`` holds a Linux bridge; every host is a namespace of its own whose ``eth0`` is a
veth pair plugged into the bridge (port ``v-<host>``). Everything is made with iproute2 and deleted by
``close``, whatever state the test left. ``cut``/``join`` isolate bridge ports from each other (the
bridge's ``isolated`` flag): isolated hosts no longer hear each other, but every host still hears the
ones left unisolated, which is how the split-brain test separates the members and not the mobile node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Collection, Iterator


def can_run() -> bool:
    """Namespaces need root and iproute2."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def inside_namespace(name: str) -> Iterator[None]:
    """Run the block in the namespace ``name``: sockets made in it stay there."""
    from pyroute2 import netns

    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()


class Lan:
    def __init__(self, prefix: str, hosts: dict[str, str], prefixlen: int = 24) -> None:
        """``hosts`` maps a short host name to its address on the segment."""
        self.prefix = prefix
        self.hosts = dict(hosts)
        self.prefixlen = prefixlen
        self.bridge = f"{prefix}-br"
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def _add_ns(self, name: str) -> None:
        run("ip", "netns", "del", name, check=False)  # left over from a run that was killed
        run("ip", "netns", "add", name)
        self._made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add_ns(self.bridge)
        run("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge, "link", "set", "br0", "up")
        for host, address in self.hosts.items():
            name = self.ns(host)
            self._add_ns(name)
            run("ip", "link", "add", f"v-{host}", "netns", self.bridge, "type", "veth",
                "peer", "name", "eth0", "netns", name)
            run("ip", "-n", self.bridge, "link", "set", f"v-{host}", "master", "br0", "up")
            run("ip", "-n", name, "link", "set", "eth0", "up")
            run("ip", "-n", name, "addr", "add", f"{address}/{self.prefixlen}", "dev", "eth0")
            # Multicast (the group's advertisements, VRRP) leaves by eth0.
            run("ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0")

    def exec(self, host: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns(host), *cmd, check=check, timeout=timeout)

    def popen(self, host: str, cmd: list[str], **kw) -> subprocess.Popen:  # type: ignore[type-arg]
        return subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd], **kw)

    def udp_socket(self, host: str) -> socket.socket:
        """A UDP socket that lives in ``host``'s namespace (the caller stays where it is)."""
        with self.inside(host):
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def inside(self, host: str) -> contextlib.AbstractContextManager[None]:
        """Run the block in ``host``'s namespace: sockets made in it stay there."""
        return inside_namespace(self.ns(host))

    def addresses(self, host: str) -> list[str]:
        out = run("ip", "-n", self.ns(host), "-o", "-4", "addr", "show", "dev", "eth0").stdout
        return [line.split()[3].split("/")[0] for line in out.splitlines()]

    def mac(self, host: str) -> str:
        return run("ip", "-n", self.ns(host), "-o", "link", "show", "eth0").stdout.split("link/ether ")[1].split()[0]

    def neighbour(self, host: str, address: str) -> str | None:
        """The MAC address ``host`` holds for ``address``, if any."""
        out = run("ip", "-n", self.ns(host), "neigh", "show", address, "dev", "eth0").stdout.split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else None

    def cut(self, *hosts: str) -> None:
        for host in hosts:
            run("ip", "-n", self.bridge, "link", "set", "dev", f"v-{host}", "type", "bridge_slave", "isolated", "on")

    def join(self, *hosts: str) -> None:
        for host in hosts:
            run("ip", "-n", self.bridge, "link", "set", "dev", f"v-{host}", "type", "bridge_slave", "isolated", "off")

    def partition(self, *sides: Collection[str]) -> None:
        """Hosts on different ``sides`` no longer hear each other; a host on no side (a router) still hears
        and is heard by every host. The ``isolated`` flag of ``cut`` cannot make two halves: an isolated
        port hears only unisolated ones. This kernel has no ebtables/nft tools and no tc ``drop`` action,
        so each side's bridge ports get a tc egress filter (u32 on the Ethernet source address) that
        redirects the other sides' frames to ``sink``, a device left down, where mirred drops them.
        Floods and multicast are filtered per port too, so a partition hides advertisements, ARP and
        unicast alike."""
        if run("ip", "-n", self.bridge, "link", "show", "sink", check=False).returncode != 0:
            run("ip", "-n", self.bridge, "link", "add", "sink", "type", "veth", "peer", "name", "sink-peer")
        macs = {host: self.mac(host) for side in sides for host in side}
        batch = []  # one tc process: the cut lands at once, not port by port
        for side in sides:
            others = [macs[h] for s in sides if s is not side for h in s]
            for host in side:
                batch.append(f"qdisc replace dev v-{host} clsact")
                batch += [f"filter add dev v-{host} egress protocol all u32 match ether src {mac} "
                          "action mirred egress redirect dev sink" for mac in others]
        self._tc_batch(batch)

    def heal(self) -> None:
        """Undo ``partition``: every port forwards every frame again."""
        self._tc_batch([f"qdisc del dev v-{host} clsact" for host in self.hosts], check=False)

    def _tc_batch(self, commands: list[str], check: bool = True) -> None:
        """``tc -force -batch`` in the bridge's namespace (-force: on past a failed line, e.g. deleting a
        qdisc a port never had)."""
        subprocess.run(["tc", "-n", self.bridge, "-force", "-batch", "-"], input="\n".join(commands) + "\n",
                       check=check, capture_output=True, text=True, timeout=30)

    def pids(self, host: str) -> list[int]:
        """Every process in ``host``'s namespace."""
        return [int(pid) for pid in run("ip", "netns", "pids", self.ns(host), check=False).stdout.split()]

    def close(self) -> None:
        for name in reversed(self._made):
            for pid in run("ip", "netns", "pids", name, check=False).stdout.split():  # nothing outlives it
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            run("ip", "netns", "del", name, check=False)
        self._made.clear()


@contextlib.contextmanager
def lan(prefix: str, hosts: dict[str, str]) -> Iterator[Lan]:
    segment = Lan(prefix, hosts)
    try:
        yield segment
    finally:
        segment.close()
