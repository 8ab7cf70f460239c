"""The group's virtual MAC (``[dataplane] virtual_mac = "auto"``, ebpf; docs/dataplane.md, "A virtual MAC").

Without it a takeover moves each away home address by its own gratuitous ARP, paced (1,000 a second: 100 s
for 100,000 away nodes), and a router that has not had its home address's yet (queued, or lost) sends to the
lost member's MAC until its entry goes stale. With it the router's entries name the group's MAC, which the
new active member takes with its first frame: nothing in the router needs to change.

So the router here keeps the entry it learnt for the mobile node's home address whatever it hears (made
permanent: the gratuitous ARP it would get is queued behind the others, or lost), and ha1 is lost as a box
is: its link down and its daemon killed. With the virtual MAC the stream resumes with the takeover; without it (the
control run, same network), it does not within a few seconds. Real daemons, real mobile node; needs root,
iproute2, clang and bpftool; namespace prefix "vm"."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from daemons import wait
from homeagent.config import virtual_mac_of
from homeagent.config import load as load_config
from homeagent.runtime.forwarding import virtual_mac_lease
from netns.lan import can_run, run
from netns.system_net import COA, HOME, VIP, SystemNet
from netns.test_system import GAP_LIMIT, Stream, echo_round

pytestmark = [pytest.mark.root, pytest.mark.skipif(not can_run(), reason="needs root and iproute2"),
              pytest.mark.skipif(not all(shutil.which(t) for t in ("clang", "bpftool", "tc")),
                                 reason="needs clang, bpftool and tc"),
              pytest.mark.timeout(240)]

VMAC = virtual_mac_of(IPv4Address(VIP)).hex(":")
IN_FLIGHT = 0.1  # seconds after the loss in which what was on its way may still arrive
CONTROL_WAIT = 3.0  # seconds the control run waits for a datagram after the takeover, without the MAC


@contextlib.contextmanager
def group(tmp_path: Path, virtual_mac: str | None) -> Iterator[SystemNet]:
    extra = f'virtual_mac = "{virtual_mac}"' if virtual_mac else ""
    system = SystemNet(tmp_path, f"vm{os.getpid()}", "ebpf", extra)
    system.virtual_mac = virtual_mac is not None  # type: ignore[attr-defined]
    try:
        system.formed()
        yield system
    finally:
        system.close()


@pytest.fixture(params=["auto", None], ids=["virtual-mac", "control"])
def s(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SystemNet]:
    with group(tmp_path, request.param) as system:
        yield system


@pytest.fixture
def with_mac(tmp_path: Path) -> Iterator[SystemNet]:
    with group(tmp_path, "auto") as system:
        yield system


def hold_the_routers_entry(s: SystemNet, address: str) -> str:
    """The router's entry for ``address`` made permanent as it is: no gratuitous ARP changes it any more,
    as none reaches a router whose announcement is queued behind the others, or lost. Its MAC."""
    mac = s.lan.neighbour("rt", address)
    assert mac is not None
    run("ip", "-n", s.ns("rt"), "neigh", "replace", address, "lladdr", mac, "nud", "permanent", "dev", "eth0")
    return mac


def test_a_takeover_needs_no_gratuitous_arp_with_the_virtual_mac(s):
    node_mac = VMAC if s.virtual_mac else s.lan.mac("ha1")
    s.mn_up("mn", COA, "--lifetime", "600")
    echo_round(s, 1)
    wait("the binding at ha2", lambda: s.bindings("ha2"))
    assert s.lan.neighbour("rt", HOME) == node_mac, "the router learnt the home address at this MAC"
    if s.virtual_mac:
        assert s.answers_arp("ha1", HOME, mac_given=VMAC), "the active member answers with the group's MAC"
        assert not s.answers_arp("ha2", HOME, mac_given=VMAC), "the standby answers nothing"
        assert s.dataplane("ha1")["dataplane.virtual_mac"] == VMAC
        shown = s.lan.exec("ha1", sys.executable, "-m", "homeagent", "status", "--config", str(s.configs["ha1"]))
        assert f"virtual MAC {VMAC}" in shown.stdout
    assert hold_the_routers_entry(s, HOME) == node_mac
    with Stream(s) as stream:
        wait("the stream flowing", lambda: len(stream.arrived) > 300, timeout=10)
        lost = time.monotonic()
        run("ip", "-n", s.lan.bridge, "link", "set", "v-ha1", "down")  # the box is gone from the link
        daemon = s.procs.pop("ha1")
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=10)
        wait("ha2 active", lambda: s.role("ha2") == "active", timeout=10)
        active = time.monotonic()
        if s.virtual_mac:
            wait("the stream back", lambda: any(at > lost + IN_FLIGHT for at in stream.arrived.values()),
                 timeout=10)
            time.sleep(0.5)
        else:
            time.sleep(CONTROL_WAIT)
    after = sorted(at for at in stream.arrived.values() if at > lost + IN_FLIGHT)
    print(f"\n{'virtual MAC' if s.virtual_mac else 'control, no virtual MAC'}: ha2 active "
          f"{(active - lost) * 1000:.0f} ms after ha1 was lost; the stream "
          + (f"back {(after[0] - lost) * 1000:.0f} ms after" if after else
             f"not back {(time.monotonic() - lost) * 1000:.0f} ms after"))
    if s.virtual_mac:
        assert after[0] - lost < GAP_LIMIT
        assert s.dataplane("ha2")["dataplane.packets"] > 0
    else:
        assert not after, "the router sends to the lost member's MAC, which nobody takes"


def fdb(s: SystemNet, host: str) -> str:
    return run("ip", "netns", "exec", s.ns(host), "bridge", "fdb", "show", "dev", "eth0").stdout


def test_the_virtual_mac_is_in_the_interface_while_the_daemon_runs_and_goes_with_it(with_mac):
    """In the home link interface's unicast address list (what a NIC filters frames by) on every member,
    standby too (frames to it are taken only while serving); taken off by a clean stop, and by ``homeagent
    cleanup`` after a daemon killed without one."""
    s = with_mac
    for host in ("ha1", "ha2"):
        assert f"{VMAC} self permanent" in fdb(s, host)
    for host, stop in (("ha1", signal.SIGTERM), ("ha2", signal.SIGKILL)):
        daemon = s.procs.pop(host)
        daemon.send_signal(stop)
        daemon.wait(timeout=30)
    assert VMAC not in fdb(s, "ha1"), "a clean stop takes it off"
    assert VMAC in fdb(s, "ha2"), "a killed daemon leaves it"
    done = s.lan.exec("ha2", sys.executable, "-m", "homeagent", "cleanup", "--config", str(s.configs["ha2"]))
    assert f"removed the virtual MAC {VMAC} from eth0" in done.stdout
    assert VMAC not in fdb(s, "ha2")


def test_a_daemon_killed_on_a_live_host_lets_the_group_mac_go(with_mac):
    """kill -9 of the active member's daemon alone: its program stays attached, serving, and would go on
    answering ARP with the group's MAC, each answer pulling the switch's entry, and with it every away home
    address, back to a member whose maps no longer change. It gives the MAC only for the lease its daemon
    renews (``VIRTUAL_MAC_LEASE``, 1 s here): the stream goes on, through ha2 once ha2 has taken over."""
    s = with_mac
    s.mn_up("mn", COA, "--lifetime", "600")
    echo_round(s, 1)
    wait("the binding at ha2", lambda: s.bindings("ha2"))
    with Stream(s) as stream:
        wait("the stream flowing", lambda: len(stream.arrived) > 300, timeout=10)
        killed = time.monotonic()
        daemon = s.procs.pop("ha1")
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=10)
        wait("ha2 active", lambda: s.role("ha2") == "active", timeout=10)
        lease = virtual_mac_lease(load_config(s.configs["ha1"]).redundancy)
        time.sleep(max(0.0, killed + lease + 0.3 - time.monotonic()))
        assert not s.answers_arp("ha1", HOME, mac_given=VMAC), "the killed daemon's program lets the MAC go"
        assert s.answers_arp("ha2", HOME, mac_given=VMAC)
        before = s.dataplane("ha2")["dataplane.packets"]
        time.sleep(0.5)
        assert s.dataplane("ha2")["dataplane.packets"] - before > 300, "the stream goes through ha2"
    arrivals = sorted(at for at in stream.arrived.values() if at > killed - 1.0)
    gap = max(b - a for a, b in zip(arrivals, arrivals[1:], strict=False))
    print(f"\nkill -9 of the active daemon, host alive, virtual MAC: longest gap {gap * 1000:.0f} ms")
    assert gap < GAP_LIMIT
