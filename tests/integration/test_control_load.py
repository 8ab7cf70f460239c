"""``homeagent bindings --json`` over a large table never stalls the active member (issue 10 point 6).

Two real members, advertisement interval 0.1 s (a master-down interval of about 0.4 s). The active one
holds ``BINDINGS`` bindings, registered at the virtual address, and the standby has downloaded them. While
a mobile node registers every 5 ms (the probe), the whole table is dumped twice: read off the control
socket, then through ``homeagent bindings --json`` (niced: on a small CI host the CLI's own parsing and
printing would otherwise take the CPU the two members need, which is not what is tested). Listed in
one go, this table held the active member's event loop about 1.5 s (some 25 µs a binding): no reply to
the probe all that time, and the standby took over for want of advertisements. Listed a page at a time,
the loop runs between two pages: the probe's replies keep coming and no member changes role.

Sized by the time it takes to register the table (some 5-20 s, with the load client in this process): at
60,000 bindings the listing in one go stood still for several master-down intervals, on a fast host too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address

import pytest

from homeagent.mobile_node import LoadGenerator

from .conftest import rrq
from .group_support import MEMBER_ADDRESSES, MN_SA, VIP, Group, Member, make_group, wait_until

BINDINGS = 60_000
FIRST = IPv4Address("10.1.0.1")
PROBE_HOME = "10.1.255.200"  # outside the loaded range
PROBE_EVERY = 0.005
LONGEST_GAP = 0.3  # seconds without a reply to the probe: under the master-down interval (0.3 s + skew)


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


class Probe:
    """A mobile node registering every ``PROBE_EVERY`` s at the virtual address; keeps the monotonic time
    of every reply (any reply: the question is whether the member answers at all)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(PROBE_EVERY)
        self.target = (VIP, port)
        self.replies: list[float] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ident = int(time.time() + 2_208_988_800) << 32
        while not self._stop.is_set():
            ident += 1
            self.sock.sendto(rrq(PROBE_HOME, "192.0.2.77", ident, lifetime=600, home_agent=VIP), self.target)
            self.sent += 1
            deadline = time.monotonic() + PROBE_EVERY
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    self.sock.recv(2048)
                except (TimeoutError, socket.timeout):
                    break
                except ConnectionRefusedError:
                    continue
                self.replies.append(time.monotonic())

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def longest_gap(self) -> float:
        return max((b - a for a, b in zip(self.replies, self.replies[1:])), default=float("inf"))


def raw_bindings(m: Member) -> bytes:
    """The daemon's answer to ``bindings``, as it comes off the control socket (the wire of
    ``control.request``), not parsed."""
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(m.control_socket))
        s.sendall(b'{"command": "bindings"}\n')
        while chunk := s.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def transitions(m: Member) -> list[tuple[str, str, str]]:
    return [(t["from"], t["to"], t["reason"]) for t in m.status().get("transitions", [])]


def test_dumping_a_large_table_costs_no_takeover(group: Group) -> None:
    a = group.add(MEMBER_ADDRESSES[0], priority=200, peers=[MEMBER_ADDRESSES[1]])
    b = group.add(MEMBER_ADDRESSES[1], priority=100, peers=[MEMBER_ADDRESSES[0]])
    group.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    homes = [FIRST + i for i in range(BINDINGS)]
    filled = LoadGenerator(IPv4Address(VIP), group.port, MN_SA, homes, IPv4Address("192.0.2.1"), lifetime=1800,
                           window=256).run(count=BINDINGS)
    assert filled.accepted == BINDINGS, filled
    group.start(b)
    group.wait_formed(active=a)
    wait_until(lambda: b.status()["bindings"] == BINDINGS, 20, "the standby to download the table")
    before = {m.address: transitions(m) for m in (a, b)}

    with Probe(group.port) as probe:
        time.sleep(0.5)
        assert probe.replies, "the probe gets no reply before the dump"
        answers = [raw_bindings(a)]  # parsed after the probe: parsing here would hold up the probe's thread
        r = subprocess.run(["nice", "-n", "10", sys.executable, "-m", "homeagent", "bindings", "--config",
                            str(a.config_path), "--json"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        time.sleep(0.5)

    tables = [json.loads(answers[0])["result"], json.loads(r.stdout)]
    for rows in tables:
        assert len(rows) == BINDINGS + 1  # and the probe's
        homes_listed = [IPv4Address(row["home_address"]) for row in rows]
        assert homes_listed == sorted(set(homes_listed))
    after = {m.address: transitions(m) for m in (a, b)}
    assert after == before, "a member changed role during the dumps"
    assert (a.role(), b.role()) == ("active", "standby")
    assert probe.longest_gap() < LONGEST_GAP, (
        f"the active member did not answer for {probe.longest_gap():.3f} s ({len(probe.replies)} replies to "
        f"{probe.sent} probes)"
    )
