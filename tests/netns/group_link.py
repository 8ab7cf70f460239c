"""A redundancy group on a real link, as the availability test of issue 10 needs it: ``size`` members (real
``homeagent run`` daemons, internal election, async replication, preempt on, ``address_method =
"interface"``), each in a namespace of its own, and a router namespace ``rt`` on one bridge. The router
finds the virtual address the way a real first hop does, by ARP into an ordinary neighbour cache (no static
entry, the kernel's default timers), and a client in it probes the virtual address every 10 ms with a
signed Registration Request. What the tests read: when each answer came (``Prober``), which MAC the
router's cache held for the virtual address and when (``NeighbourWatch``), and the role changes every
member logged (``Group.role_changes``).

    ha<i> P.255.<i>, priority 200 - 10 i  (ha1 ranks first)   rt P.255.254   virtual address P.255.10
    home network P.0.0/18: the load's mobile nodes from P.0.1, the probe's mobile node P.60.1
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from ipaddress import IPv4Address
from pathlib import Path

from daemons import KEY, group_config, status, wait
from netns.lan import Lan
from netns.members import Members

from homeagent.mobile_node import MobileNode, ReplyError
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.registration import RegistrationRequest

_ROLE_TS = re.compile(r"(?:^| )ts=(\S+)")
_ROLE_MSG = re.compile(r'(?:^| )msg="((?:[^"\\]|\\.)*)"')

P = f"10.{120 + os.getpid() % 40}"
VIP = f"{P}.255.10"
ROUTER = "rt"
PORT = 434
HOME_NETWORK = f"{P}.0.0/18"
MN_SA = SecurityAssociation(256, Algorithm.HMAC_MD5, bytes.fromhex(KEY))
PROBE_HOME = IPv4Address(f"{P}.60.1")
PROBE_INTERVAL = 0.010  # seconds between probes (the 10 ms)
LOW32 = 0xFFFFFFFF
# The router's ARP, as the kernel sets it for a new namespace: printed by the tests, never changed.
NEIGH_KNOBS = ("base_reachable_time_ms", "delay_first_probe_time", "gc_stale_time", "locktime",
               "ucast_solicit", "mcast_solicit")


def member(i: int) -> str:
    return f"ha{i}"


def priority(i: int) -> int:
    """Distinct priorities, ha1 highest: the member every other one must end up deferring to."""
    return 200 - 10 * i


class Group(Members):
    """The segment, the members (``netns.members``) and the router."""

    def __init__(self, tmp: Path, size: int) -> None:
        self.members = [member(i) for i in range(1, size + 1)]
        hosts = {m: f"{P}.255.{i}" for i, m in enumerate(self.members, 1)}
        hosts[ROUTER] = f"{P}.255.254"
        configs = {
            m: group_config(tmp, hosts[m], PORT, name=m, virtual_address=VIP, group=f"{P}.255.0/24",
                            home_network=HOME_NETWORK, peers=[hosts[o] for o in self.members if o != m],
                            priority=priority(i), replication="async", preempt=True, election="internal",
                            address_method="interface", interface="eth0")
            for i, m in enumerate(self.members, 1)
        }
        super().__init__(Lan(f"hgl{os.getpid()}", hosts, prefixlen=16), tmp, configs)

    # -- the daemons ----------------------------------------------------------------------------------

    def active(self) -> list[str]:
        return [m for m in self.members if m in self.procs and self.role(m) == "active"]

    def holds_vip(self, host: str) -> bool:
        return VIP in self.lan.addresses(host)

    def formed(self) -> None:
        """ha1 active with the virtual address, every other member standing by without it and every member
        up at ha1: ha1 first (so the start-up flaps the issue saw stay out of the figures), then the rest.
        Generous bounds: four interpreters starting at once on a busy two-CPU host took 16 s; the scenarios,
        not the start, are what is measured."""
        first, rest = self.members[0], self.members[1:]
        self.start(first)
        wait(f"{first} active", lambda: self.role(first) == "active", timeout=15)
        for m in rest:
            self.start(m)
        wait("every other member standing by", lambda: all(self.role(m) == "standby" for m in rest),
             timeout=40)
        wait(f"every member up at {first}", lambda: all(
            p["state"] == "up" for p in (status(self.configs[first]) or {}).get("peers", [{"state": "?"}])),
            timeout=10)
        wait(f"the virtual address on {first} alone",
             lambda: self.holds_vip(first) and not any(self.holds_vip(m) for m in rest))

    # -- what happened --------------------------------------------------------------------------------

    def role_changes(self, host: str, since_wall: float) -> list[tuple[float, str]]:
        """(wall-clock time, "old -> new: reason") for every role change ``host`` logged since ``since_wall``:
        the log keeps them all, ``status --json`` only the last ten."""
        changes = []
        for line in self.log(host).splitlines():  # logfmt (docs/operations.md, "Logs"): ts is UTC
            stamp, message = _ROLE_TS.search(line), _ROLE_MSG.search(line)
            if "event=role_change" not in line or stamp is None or message is None:
                continue
            at = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
            if at >= since_wall:
                changes.append((at, json.loads(f'"{message.group(1)}"').split("role ", 1)[1]))
        return changes

    def router_arp_settings(self) -> dict[str, str]:
        """The knobs that decide how long a neighbour entry outlives the MAC it names."""
        base = "/proc/sys/net/ipv4"
        script = " ".join(f"cat {base}/neigh/eth0/{k};" for k in NEIGH_KNOBS)
        script += f" cat {base}/conf/eth0/arp_accept"
        out = self.lan.exec(ROUTER, "sh", "-c", script).stdout.split()
        return dict(zip((*NEIGH_KNOBS, "arp_accept"), out, strict=True))

    def load(self, rate: int, duration: float, nodes: int = 10_000) -> subprocess.Popen[str]:
        """``homeagent mn load`` from the router's namespace, a process of its own so that it does not share
        the probe's interpreter: its JSON result on stdout. The window holds two seconds of requests (the
        generator gives up on one after a second), so that the load stays at ``rate`` while the virtual
        address is dark, as independent mobile nodes would, instead of stalling on a full window."""
        return self.lan.popen(ROUTER, [sys.executable, "-m", "homeagent", "mn", "load", "--home-agent", VIP,
                                       "--spi", "256", "--key", KEY, "--home-network", HOME_NETWORK,
                                       "--first-home-address", f"{P}.0.1", "--mobile-nodes", str(nodes),
                                       "--care-of", self.lan.hosts[ROUTER], "--lifetime", "1800",
                                       "--rate", str(rate), "--window", str(2 * rate),
                                       "--duration", str(duration)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def group(tmp: Path, size: int) -> Iterator[Group]:
    g = Group(tmp, size)
    try:
        yield g
    finally:
        g.close()


def cpu_pressure() -> float | None:
    """The host's CPU pressure stall total (PSI ``some``: microseconds in which some runnable task waited
    for a CPU), None where the kernel has no PSI. Its rate over a scenario says how starved the members
    were: on a saturated host a member can go unheard for a master-down interval with nothing wrong."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        return None


# -- the probe ----------------------------------------------------------------------------------------


@dataclass
class Gaps:
    """The probe's view of one window."""

    window: float  # seconds
    sent: int
    answered: int
    unanswered: int
    longest: float  # seconds between two answers in a row (or from the last answer to the window's end)
    longest_from: float  # when that gap began (monotonic)
    still_dark: bool  # the longest gap runs to the end of the window: the address never came back
    prober_pause: float  # the longest time between two probes sent: above 10 ms, the prober itself was late
    refusals: Counter[int] = field(default_factory=Counter)  # answers refusing the registration, by code


class Prober:
    """A mobile node in the router's namespace that registers at the virtual address every 10 ms and keeps
    the arrival time of every accepted, authenticated answer (the first, when two actives both answer)."""

    def __init__(self, lan: Lan, host: str = ROUTER) -> None:
        with lan.inside(host):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.node = MobileNode(PROBE_HOME, IPv4Address(VIP), MN_SA, PORT)
        self.care_of = IPv4Address(lan.hosts[host])
        self.sent: dict[int, tuple[float, RegistrationRequest]] = {}  # low 32 bits of Identification
        self.answered: dict[int, float] = {}
        self.refused: list[tuple[float, int]] = []  # (when, code)
        self.started_at = 0.0
        self.stopped_at: float | None = None
        self._pressure: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self.started_at, self._pressure = time.monotonic(), cpu_pressure()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.stopped_at is None:
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=5)
            self.sock.close()
            self.stopped_at = time.monotonic()
            if self._pressure is not None and (pressure := cpu_pressure()) is not None:
                self._pressure = (pressure - self._pressure) / 1e6 / (self.stopped_at - self.started_at)
            else:
                self._pressure = None

    def cpu_pressure(self) -> float | None:
        """The share of the time some task of this host waited for a CPU while the probe ran."""
        return self._pressure if self.stopped_at is not None else None

    def _run(self) -> None:
        # The probe is the measuring instrument: on a busy host its own late sends would read as the
        # address going dark. A real-time policy for this thread alone (it sleeps in select between
        # probes) keeps it on time; the daemons keep the ordinary policy.
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))  # 0: the calling thread on Linux
        next_send = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                datagram = self.node.request(self.care_of, 600)
                request = RegistrationRequest.parse(datagram)
                with contextlib.suppress(OSError):  # no route, no buffer: unanswered, as on a real link
                    self.sock.sendto(datagram, (VIP, PORT))
                self.sent[request.identification & LOW32] = (now, request)
                next_send = max(next_send + PROBE_INTERVAL, now)  # late: the next one now, no burst
            if select.select([self.sock], [], [], max(0.0, next_send - time.monotonic()))[0]:
                self._receive()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, OSError):
                return
            at = time.monotonic()
            key = int.from_bytes(data[16:20], "big") if len(data) >= 20 else -1
            entry = self.sent.get(key)
            if entry is None or key in self.answered:
                continue
            try:
                reply = self.node.check_reply(data, entry[1])
            except ReplyError:
                continue
            if reply.code < 64:
                self.answered[key] = at
            else:
                self.refused.append((at, reply.code))

    def gaps(self, since: float, until: float | None = None, grace: float = 0.5) -> Gaps:
        """Within [since, until] (by default, until the probe stopped): the longest time between two answers
        in a row, counting the stretch from ``since`` to the first answer and from the last answer to
        ``until``; the probes sent, and those sent before ``until - grace`` that were never answered."""
        until = until if until is not None else self.stopped_at or time.monotonic()
        sent = sorted((at, key) for key, (at, _) in list(self.sent.items()) if since <= at <= until)
        answers = sorted(at for at in list(self.answered.values()) if since <= at <= until)
        edges = [since, *answers, until]
        longest, start = max(((b - a), a) for a, b in zip(edges, edges[1:], strict=False))
        sends = [at for at, _ in sent]
        return Gaps(window=until - since, sent=len(sent), answered=len(answers),
                    unanswered=sum(1 for at, key in sent if at <= until - grace and key not in self.answered),
                    longest=longest, longest_from=start, still_dark=start + longest >= until - 1e-6,
                    prober_pause=max((b - a for a, b in zip(sends, sends[1:], strict=False)), default=0.0),
                    refusals=Counter(code for at, code in list(self.refused) if since <= at <= until))


class NeighbourWatch:
    """``ip monitor neigh`` in the router's namespace: (monotonic time, MAC or state) for every change of
    its entry for the virtual address, to show whose MAC the router sent the probes to and when."""

    def __init__(self, lan: Lan, host: str = ROUTER) -> None:
        self.changes: list[tuple[float, str]] = []
        self._proc = subprocess.Popen(["ip", "-n", lan.ns(host), "monitor", "neigh"], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            words = line.split()
            if VIP not in words[:2]:
                continue
            state = words[-1]
            mac = words[words.index("lladdr") + 1] if "lladdr" in words else "-"
            deleted = "deleted " if words[0] == "Deleted" else ""
            self.changes.append((time.monotonic(), f"{deleted}{mac} {state}"))

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._thread.join(timeout=2)
