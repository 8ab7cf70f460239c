"""The whole system on real links (issue 11, "What it must show"): a correspondent, a router, a home link
(a bridge, ``netns.lan``) with two ``homeagent run`` members of one group (``netns.members``: internal
election, active-standby, ``address_method = "interface"``, ``[dataplane] backend = "userspace"`` on the home
link), and foreign links with mobile nodes at their care-of addresses running ``homeagent mn up``.

    cn 10.9.0.2 --- 10.9.0.1  rt                                  (correspondent link)
                    10.1.0.254 rt --[bridge]-- ha1 10.1.0.1, ha2 10.1.0.2, virtual address 10.1.0.10
                    10.2.0.1  rt --- 10.2.0.10 mn  eth0           (foreign link 1)
                    10.4.0.1  rt --- 10.4.0.10 mn  eth1           (foreign link 3: where mn moves to)
                    10.3.0.1  rt --- 10.3.0.10 mn2                (foreign link 2)

The home address 10.1.0.50 is on the home link's prefix: the router reaches it by ARP, which only the
serving member's proxy entry answers (RFC 5944 4.6). No static neighbour entry anywhere. What the members
need of their hosts, set here: IP forwarding (the kernel answers a proxy entry only for an address it would
forward by another device), a default route by the router (the reverse tunnel's inner datagrams), and
transmit checksum offload off on every veth (``tunnel_net.tx_checksum_off``). The members filter reverse
paths strictly (rp_filter 1, as many distributions ship), which the reverse tunnel passes. The router does
no ingress filtering (rp_filter 0): with reverse tunnelling off the mobile node's answers leave its foreign
link with its home address as source, the triangular routing RFC 3024 exists to avoid where routers
filter.

Every ``homeagent`` process is known by its PID and stopped by ``close``; every namespace is deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from daemons import group_config, status, wait
from netns.lan import Lan, run
from netns.members import Members
from netns.tunnel_net import tx_checksum_off, veth

CN, RT_CN = "10.9.0.2", "10.9.0.1"
HA1, HA2, VIP, RT_HOME = "10.1.0.1", "10.1.0.2", "10.1.0.10", "10.1.0.254"
COA, RT_F1 = "10.2.0.10", "10.2.0.1"
COA2, RT_F2 = "10.3.0.10", "10.3.0.1"
COA3, RT_F3 = "10.4.0.10", "10.4.0.1"
HOME = "10.1.0.50"
HOME_NETWORK = "10.1.0.0/24"
MEMBERS = ("ha1", "ha2")
METRICS_PORT = 9434  # each member's Prometheus endpoint, on its namespace's loopback
STOP_TIMEOUT = 20  # seconds for `mn up` to de-register and exit


class MobileNodeProcess:
    """``homeagent mn up`` in a namespace: its output lines as they come (a thread reads them), commands to
    its standard input, SIGTERM by PID."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, prefix: str, timeout: float = 15, after: int = 0) -> str:
        """The first output line from index ``after`` on that starts with ``prefix``."""
        def found() -> str | None:
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"mn up exited ({self.proc.returncode}): {self.lines}")
            return next((line for line in self.lines[after:] if line.startswith(prefix)), None)
        return wait(f"mn up to say {prefix!r} (said {self.lines})", found, timeout=timeout)

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> int:
        """SIGTERM, as an operator's Ctrl-C: the exit status, once it has de-registered and gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return code


class SystemNet(Members):
    """The network above, the two members (``Members``: start, kill, log) and the mobile nodes."""

    EXTRA = ("cn", "mn", "mn2")

    def __init__(self, tmp: Path, prefix: str, backend: str = "userspace", dataplane: str = "") -> None:
        """``dataplane``: more lines for each member's ``[dataplane]`` table."""
        lan = Lan(prefix, {"ha1": HA1, "ha2": HA2, "rt": RT_HOME})
        self._extra: list[str] = []
        self.nodes: list[MobileNodeProcess] = []
        self.backend = backend
        configs = {host: self._config(tmp, host, backend, dataplane) for host in MEMBERS}
        super().__init__(lan, tmp, configs)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _config(tmp: Path, host: str, backend: str, dataplane: str = "") -> Path:
        address, other = (HA1, HA2) if host == "ha1" else (HA2, HA1)
        path = group_config(tmp, address, 434, name=host, virtual_address=VIP, group=HOME_NETWORK,
                            home_network=HOME_NETWORK, peers=[other], priority=200 if host == "ha1" else 100,
                            replication="async", preempt=True, election="internal",
                            address_method="interface", interface="eth0")
        path.write_text(path.read_text() + f'\n[dataplane]\nbackend = "{backend}"\ninterface = "eth0"\n'
                        f'tun = "ha0"\nttl = 64\n{dataplane}\n[metrics]\nlisten = "127.0.0.1:{METRICS_PORT}"\n')
        return path

    def ns(self, host: str) -> str:
        return self.lan.ns(host)

    def _build(self) -> None:
        lan = self.lan
        for host in self.EXTRA:
            name = self.ns(host)
            run("ip", "netns", "del", name, check=False)  # left over from a run that was killed
            run("ip", "netns", "add", name)
            self._extra.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        self._link("cn", "eth0", CN, "rt", "c0", RT_CN)
        self._link("rt", "f0", RT_F1, "mn", "eth0", COA)
        self._link("rt", "f1", RT_F2, "mn2", "eth0", COA2)
        self._link("rt", "f2", RT_F3, "mn", "eth1", COA3)
        for host in (*MEMBERS, "rt"):
            tx_checksum_off(self.ns(host), "eth0")
            tx_checksum_off(lan.bridge, f"v-{host}")
        for host, gateway in (("cn", RT_CN), ("ha1", RT_HOME), ("ha2", RT_HOME), ("mn", RT_F1),
                              ("mn2", RT_F2)):
            run("ip", "-n", self.ns(host), "route", "add", "default", "via", gateway)
        for host in ("rt", *MEMBERS):
            lan.exec(host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for knob in ("all", "default", "eth0", "c0", "f0", "f1", "f2"):
            lan.exec("rt", "sysctl", "-qw", f"net.ipv4.conf.{knob}.rp_filter=0")
        for host in MEMBERS:  # as many distributions ship them: strict reverse path filtering
            lan.exec(host, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1",
                     "net.ipv4.conf.default.rp_filter=1")

    def _link(self, left: str, left_if: str, left_addr: str, right: str, right_if: str,
              right_addr: str) -> None:
        veth(self.ns(left), left_if, left_addr, self.ns(right), right_if, right_addr)

    # -- the members ----------------------------------------------------------------------------------

    def formed(self) -> None:
        """ha1 active holding the virtual address, ha2 standing by, each up at the other."""
        if "ha1" not in self.procs:
            self.start("ha1")
        wait("ha1 active", lambda: self.role("ha1") == "active", timeout=20)
        if "ha2" not in self.procs:
            self.start("ha2")
        wait("ha2 standing by", lambda: self.role("ha2") == "standby", timeout=30)
        def peers(host: str) -> list[str]:
            return [p["state"] for p in (status(self.configs[host]) or {}).get("peers", [])]
        wait("each member up at the other", lambda: all(peers(m) == ["up"] for m in MEMBERS), timeout=15)
        wait("the virtual address on ha1 alone",
             lambda: VIP in self.lan.addresses("ha1") and VIP not in self.lan.addresses("ha2"))

    def status(self, host: str) -> dict[str, Any]:
        st = status(self.configs[host])
        assert st is not None, f"{host} does not answer: {self.log(host)[-2000:]}"
        return st

    def dataplane(self, host: str) -> dict[str, Any]:
        """``homeagent status --json``'s "dataplane", fresh: the daemon answers from the forwarder's last
        snapshot and asks for the next, so the second of two calls holds everything before the first."""
        self.status(host)
        time.sleep(0.05)
        return self.status(host)["dataplane"]

    def metrics(self, host: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``host``'s Prometheus endpoint scraped (on its own loopback), read by prometheus-client's parser:
        (name, sorted labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        with self.lan.inside(host):
            with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as response:
                text = response.read().decode()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def bindings(self, host: str) -> list[dict[str, Any]]:
        out = run(sys.executable, "-m", "homeagent", "bindings", "--config", str(self.configs[host]),
                  "--json")
        return json.loads(out.stdout)

    def proxied(self, host: str) -> list[str]:
        """``ip neigh show proxy`` on the member's home link interface: the addresses it answers ARP for."""
        out = run("ip", "-n", self.ns(host), "neigh", "show", "proxy", "dev", "eth0").stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def answers_arp(self, host: str, address: str, timeout: float = 0.3, mac_given: str | None = None) -> bool:
        """Whether ``host`` answers the router's ARP request for ``address``, asked on the wire: its kernel
        from a proxy entry (userspace), or the program with no entry (ebpf). The request goes out of a
        packet socket of the router's, from the router's address, so that both answer it (neither answers a
        probe from 0.0.0.0); the answer is heard where it enters the bridge, by ``host``'s port (a packet
        socket of every protocol in the bridge's namespace: a port's frames reach taps, not ARP's handler),
        and counts if it gives ``host``'s MAC, or ``mac_given`` (a group's virtual MAC)."""
        from homeagent.wire.arp import BROADCAST, ETH_P_ARP, ArpFrame, Operation
        from homeagent.wire.errors import ParseError

        every_protocol = 3  # ETH_P_ALL
        mac = bytes.fromhex((mac_given or self.lan.mac(host)).replace(":", ""))
        rt_mac = bytes.fromhex(self.lan.mac("rt").replace(":", ""))
        target = int.from_bytes(socket.inet_aton(address), "big")
        with self.lan.inside("br"):
            port = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(every_protocol))
        with self.lan.inside("rt"):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        with port, sock:
            port.bind((f"v-{host}", every_protocol))
            sock.bind(("eth0", ETH_P_ARP))
            sock.send(ArpFrame(BROADCAST, rt_mac, Operation.REQUEST, rt_mac,
                               int.from_bytes(socket.inet_aton(RT_HOME), "big"), bytes(6), target).to_bytes())
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                port.settimeout(left)
                try:
                    data, where = port.recvfrom(2048)
                    if where[2] == socket.PACKET_OUTGOING or data[12:14] != ETH_P_ARP.to_bytes(2, "big"):
                        continue
                    frame = ArpFrame.parse(data)
                except (TimeoutError, ParseError):
                    continue
                if (frame.operation is Operation.REPLY and frame.sender_address == target
                        and frame.sender_mac == mac):
                    return True
        return False

    # -- the mobile nodes -----------------------------------------------------------------------------

    def mn_up(self, host: str, care_of: str, *options: str) -> MobileNodeProcess:
        """``homeagent mn up`` on ``host``, registered (it said so) and decapsulating."""
        cmd = [sys.executable, "-m", "homeagent", "mn", "up", "--config", str(self.configs["ha1"]),
               "--home-address", HOME, "--care-of", care_of, *options]
        with open(self.tmp / f"{host}-mn.log", "ab") as log:
            proc = self.lan.popen(host, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                  text=True, bufsize=1)
        node = MobileNodeProcess(proc)
        self.nodes.append(node)
        node.wait_line("registered")
        return node

    def close(self) -> None:
        try:
            for node in self.nodes:
                node.stop()
        finally:
            try:
                super().close()  # the members, then the home link's namespaces
            finally:
                for name in reversed(self._extra):
                    for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
                        with contextlib.suppress(ProcessLookupError, ValueError):
                            os.kill(int(pid), 9)
                    run("ip", "netns", "del", name, check=False)
                self._extra.clear()

