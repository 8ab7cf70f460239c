"""keepalived decides, the Home Agents follow (``redundancy.election = "external"``): real keepalived 2.x
(VRRPv3, advert_int 0.1) in two namespaces on one Ethernet segment moves the virtual address and calls
``homeagent role active|standby`` from its notify scripts; a mobile node in a third namespace registers at
the virtual address. The active box dies (``kill -9`` of keepalived's VRRP child and parent and of the Home
Agent: everything in its namespace) and the other one must serve every binding, at once, with replay
protection intact. Needs root, iproute2 and keepalived.

    ha1 10.251.X.1  keepalived priority 150 + homeagent   (MASTER)
    ha2 10.251.X.2  keepalived priority 100 + homeagent   (BACKUP)
    mn  10.251.X.100                                      VIP 10.251.X.10
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from daemons import KEY, bindings, group_config, status, wait
from netns import keepalived
from netns.keepalived import KEEPALIVED
from netns.lan import Lan, can_run

from homeagent.mobile_node import LoadGenerator, MobileNode
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.era import to_wire
from homeagent.wire.registration import RegistrationRequest


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not can_run() or KEEPALIVED is None, reason="needs root, iproute2 and keepalived"),
]

PORT = 434
NODES = 300  # mobile nodes registered before the failover
FAILOVER_BOUND = 3.0  # seconds from the kill to the first registration accepted at the virtual address
SUBNET = f"10.251.{os.getpid() % 200 + 20}"  # a /24 of our own, a namespace prefix of our own
VIP = f"{SUBNET}.10"
HOSTS = {"ha1": f"{SUBNET}.1", "ha2": f"{SUBNET}.2", "mn": f"{SUBNET}.100"}
VRID = os.getpid() % 254 + 1
MN_SA = SecurityAssociation(256, Algorithm.HMAC_MD5, bytes.fromhex(KEY))


def member_config(tmp: Path, host: str, other: str) -> Path:
    """A member at HOSTS[host], the other one its peer, keepalived deciding its role. The replay tolerance
    is long, so that only the Identification (replicated) can refuse a replay here."""
    return group_config(tmp, HOSTS[host], PORT, name=host, virtual_address=VIP, group=f"{SUBNET}.0/24",
                        home_agent={"replay_tolerance": 120}, peers=[HOSTS[other]], election="external",
                        replication="async")


class Box:
    """One member's namespace: its Home Agent and its keepalived, every process known by PID."""

    def __init__(self, lan: Lan, tmp: Path, host: str, other: str, priority: int) -> None:
        self.lan, self.tmp, self.host = lan, tmp, host
        self.config = member_config(tmp, host, other)
        self.keepalived_config = tmp / f"keepalived-{host}.conf"
        self.keepalived_config.write_text(keepalived.config(host, VRID, priority, 0.1, f"{VIP}/24", self.config))
        self.log = tmp / f"keepalived-{host}.log"
        self.parent_pidfile = tmp / f"keepalived-{host}.pid"
        self.child_pidfile = tmp / f"keepalived-{host}-vrrp.pid"
        self.procs: list[subprocess.Popen] = []  # type: ignore[type-arg]
        self.home_agent: subprocess.Popen | None = None  # type: ignore[type-arg]

    def start_home_agent(self) -> None:
        with open(self.tmp / f"homeagent-{self.host}.log", "ab") as err:
            # ``ip netns exec`` execs the command: the PID is the daemon's own.
            cmd = [sys.executable, "-m", "homeagent", "run", "--config", str(self.config)]
            self.home_agent = self.lan.popen(self.host, cmd, stdout=subprocess.DEVNULL, stderr=err)
        self.procs.append(self.home_agent)

    def start_keepalived(self) -> None:
        with open(self.log, "ab") as out:
            cmd = keepalived.command(self.keepalived_config, self.parent_pidfile, self.child_pidfile)
            self.procs.append(self.lan.popen(self.host, cmd, stdout=out, stderr=subprocess.STDOUT))

    def logged(self, text: str) -> int:
        """How many lines of keepalived's log contain ``text``."""
        try:
            return sum(text in line for line in self.log.read_text(errors="replace").splitlines())
        except FileNotFoundError:
            return 0

    def pids(self) -> list[int]:
        """keepalived's VRRP child and parent (from their PID files), then the Home Agent."""
        pids = [keepalived.read_pid(self.child_pidfile), keepalived.read_pid(self.parent_pidfile)]
        pids.append(self.home_agent.pid if self.home_agent is not None else None)
        return [pid for pid in pids if pid is not None]

    def crash(self) -> float:
        """``kill -9`` everything in the namespace, keepalived's VRRP child first (killing the parent alone
        lets the child resign cleanly with priority 0, which is no crash). Returns when it was done."""
        pids = self.pids()
        assert len(pids) == 3, f"{self.host}: keepalived child, parent and Home Agent expected, got {pids}"
        killed = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A notify script that happened to be running belongs to the box too.
        for pid in self.lan.pids(self.host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return killed

    def stop(self) -> None:
        # keepalived's VRRP child first: killed after its parent, it would resign and linger a second.
        child = keepalived.read_pid(self.child_pidfile)
        if child is not None and child in self.lan.pids(self.host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def role(box: Box) -> str | None:
    return (status(box.config) or {}).get("role")


def node(n: int) -> MobileNode:
    return MobileNode(IPv4Address(f"10.1.0.{n}"), IPv4Address(VIP), MN_SA, PORT)


@contextlib.contextmanager
def keepalived_pair(name: str, tmp_path: Path) -> Iterator[tuple[Lan, Box, Box]]:
    """Two boxes on one LAN, each a Home Agent under keepalived: ha1 (priority 150) MASTER and told to be
    active, ha2 (100) BACKUP and standing by. Everything is stopped and the namespaces removed after."""
    lan = Lan(f"{name}{os.getpid()}", HOSTS)
    boxes: list[Box] = []
    try:
        ha1 = Box(lan, tmp_path, "ha1", "ha2", 150)
        ha2 = Box(lan, tmp_path, "ha2", "ha1", 100)
        boxes += [ha1, ha2]
        # The Home Agents first: keepalived's first notify must find their control sockets.
        for box in boxes:
            box.start_home_agent()
        for box in boxes:
            wait(f"{box.host} to stand by", lambda box=box: role(box) == "standby")
        ha1.start_keepalived()
        wait("ha1's keepalived to become MASTER", lambda: ha1.logged("Entering MASTER STATE"), timeout=10)
        ha2.start_keepalived()
        wait("ha2's keepalived to become BACKUP", lambda: ha2.logged("Entering BACKUP STATE"), timeout=10)
        wait("ha1 to be told it is active", lambda: role(ha1) == "active", timeout=5)
        wait("ha2 to be told to stand by", lambda: role(ha2) == "standby", timeout=5)
        yield lan, ha1, ha2
    finally:
        for box in boxes:
            box.stop()
        lan.close()


def test_keepalived_failover_keeps_every_binding(tmp_path):
    with keepalived_pair("hka", tmp_path) as (lan, ha1, ha2):
        assert VIP in lan.addresses("ha1") and VIP not in lan.addresses("ha2")

        # Before the failure, from the mobile node's namespace: a few hundred mobile nodes, node 5 once (it
        # renews after the failover) and node 6 twice (its first request, superseded on ha1, is replayed
        # at ha2 later).
        addresses = [IPv4Address(int(IPv4Address("10.1.1.0")) + i) for i in range(NODES)]
        load = LoadGenerator(IPv4Address(VIP), PORT, MN_SA, addresses, IPv4Address(HOSTS["mn"]), lifetime=600,
                             window=32, timeout=1.0)
        with lan.inside("mn"):
            for _ in range(3):  # a datagram lost on the way is sent again on the next pass
                result = load.run(count=NODES)
                if result.accepted == NODES:
                    break
            renewed, replayed = node(5), node(6)
            renewed_first = renewed.register(IPv4Address(HOSTS["mn"]), 600, timeout=0.5)
            replayed_first = replayed.register(IPv4Address(HOSTS["mn"]), 600, timeout=0.5)
            replayed_second = replayed.register(IPv4Address("192.0.2.6"), 600, timeout=0.5)
        assert result.accepted == NODES, result
        assert renewed_first.code == replayed_first.code == replayed_second.code == 0
        held = NODES + 2

        def table(box: Box) -> dict[str, tuple[str, int]]:
            rows = bindings(box.config)
            return {r["home_address"]: (r["care_of_address"], r["identification"]) for r in rows}

        wait("every binding on both members", lambda: len(table(ha1)) == len(table(ha2)) == held, timeout=10)
        before = table(ha1)
        assert table(ha2) == before
        assert before["10.1.0.6"] == ("192.0.2.6", to_wire(replayed_second.reply.identification))  # as listed

        # The active box dies.
        mac_before = lan.neighbour("mn", VIP)
        assert mac_before == lan.mac("ha1")
        masters_before = ha2.logged("Entering MASTER STATE")
        killed = ha1.crash()

        # A registration at the virtual address is accepted within the bound.
        probe = node(7)
        accepted_at = None
        with lan.inside("mn"):
            while time.monotonic() < killed + FAILOVER_BOUND:
                with contextlib.suppress(TimeoutError, OSError):
                    if probe.register(IPv4Address(HOSTS["mn"]), 600, timeout=0.02, retries=0).accepted:
                        accepted_at = time.monotonic()
                        break
        assert accepted_at is not None, f"nothing accepted at {VIP} within {FAILOVER_BOUND} s of the kill"
        print(f"kill -9 -> first registration accepted by ha2: {(accepted_at - killed) * 1000:.0f} ms")

        wait("ha2's keepalived to become MASTER",
             lambda: ha2.logged("Entering MASTER STATE") > masters_before, timeout=2)
        st = status(ha2.config)
        assert st["role"] == "active"
        assert st["transitions"][-1]["reason"] == "told to be active (external election)"
        assert VIP in lan.addresses("ha2")
        assert lan.neighbour("mn", VIP) == lan.mac("ha2")  # keepalived's gratuitous ARP moved the mobile node

        # ha2 holds every binding the dead member accepted, as it accepted them, and the probe's.
        after = table(ha2)
        assert len(after) == held + 1
        assert {hoa: after[hoa] for hoa in before} == before

        with lan.inside("mn"):
            # A renewal (a newer Identification) of a node registered before the failure is accepted.
            renewal = renewed.register(IPv4Address("192.0.2.5"), 600, timeout=0.5)
            assert renewal.code == 0 and renewal.reply.identification > renewed_first.reply.identification
            # The exact bytes of earlier accepted requests, replayed: refused with 133 (Identification
            # mismatch), one superseded on the dead member before the failure, one superseded just now.
            for old, owner in ((replayed_first, replayed), (renewed_first, renewed)):
                assert old.request.raw
                code = replay(old.request.raw, owner)
                assert code == 133, f"replay of {old.as_dict()} answered with code {code}"
        assert table(ha2)["10.1.0.5"] == ("192.0.2.5", to_wire(renewal.reply.identification))
        assert table(ha2)["10.1.0.6"] == ("192.0.2.6", to_wire(replayed_second.reply.identification))
        assert status(ha2.config)["counters"].get("denied.133") == 2


def replay(datagram: bytes, owner: MobileNode) -> int:
    """Send ``datagram`` as it is (from the current namespace) to the virtual address; the code of the
    authenticated reply."""
    sent = RegistrationRequest.parse(datagram)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((VIP, PORT))
        sock.settimeout(1.0)
        sock.send(datagram)
        return owner.check_reply(sock.recv(4096), sent).code
