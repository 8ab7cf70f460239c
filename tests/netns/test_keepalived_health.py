"""``homeagent status`` as keepalived's health check (docs/operations.md, "Letting keepalived decide"): the
Home Agent alone dies on the box that holds the virtual address, keepalived there lives on. Without the
``vrrp_script`` that runs ``homeagent status``, VRRP kept advertising from that box and the address stayed
where nothing answers registrations (a black hole); with it, the instance goes to FAULT after two failed
checks, the other box takes the address and serves every binding, and the restarted Home Agent takes it
back. Real keepalived in network namespaces, as tests/netns/test_keepalived.py runs it; needs root,
iproute2 and keepalived.
"""

from __future__ import annotations

import contextlib
import time
from ipaddress import IPv4Address

import pytest

from daemons import bindings, wait
from netns.keepalived import KEEPALIVED
from netns.lan import Lan, can_run
from netns.test_keepalived import HOSTS, MN_SA, PORT, VIP, keepalived_pair, node, role

from homeagent.mobile_node import LoadGenerator

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not can_run() or KEEPALIVED is None, reason="needs root, iproute2 and keepalived"),
]

NODES = 50
TAKEOVER_BOUND = 8.0  # seconds: two failed checks a second apart (at most 2 s each), then VRRP; a busy host


def accepted_within(probe_number: int, bound: float, lan: Lan) -> float | None:
    """Seconds until a registration at the virtual address is accepted, None if none is within ``bound``."""
    probe = node(probe_number)
    start = time.monotonic()
    with lan.inside("mn"):
        while time.monotonic() < start + bound:
            with contextlib.suppress(TimeoutError, OSError):
                if probe.register(IPv4Address(HOSTS["mn"]), 600, timeout=0.05, retries=0).accepted:
                    return time.monotonic() - start
    return None


def test_a_dead_home_agent_gives_the_address_up(tmp_path):
    with keepalived_pair("hkb", tmp_path) as (lan, ha1, ha2):
        assert ha1.logged("VRRP_Script(homeagent_alive) succeeded") >= 1, "the health check never ran"

        addresses = [IPv4Address(int(IPv4Address("10.1.2.1")) + i) for i in range(NODES)]
        load = LoadGenerator(IPv4Address(VIP), PORT, MN_SA, addresses, IPv4Address(HOSTS["mn"]), window=16)
        with lan.inside("mn"):
            for _ in range(3):  # a datagram lost on the way is sent again on the next pass
                if load.run(count=NODES).accepted == NODES:
                    break
        held = {r["home_address"] for r in bindings(ha1.config)}
        assert {str(a) for a in addresses} <= held
        wait("every binding on ha2", lambda: {r["home_address"] for r in bindings(ha2.config)} >= held)

        # Only the Home Agent dies; keepalived on ha1 lives on and would have kept the address.
        assert ha1.home_agent is not None
        ha1.home_agent.kill()
        ha1.home_agent.wait(timeout=10)
        took = accepted_within(7, TAKEOVER_BOUND, lan)
        assert took is not None, f"nothing accepted at {VIP} within {TAKEOVER_BOUND} s of the death"
        print(f"Home Agent killed -> first registration accepted by ha2: {took * 1000:.0f} ms")
        assert ha1.logged("Entering FAULT STATE") >= 1
        assert VIP in lan.addresses("ha2") and VIP not in lan.addresses("ha1")
        assert role(ha2) == "active"
        assert {r["home_address"] for r in bindings(ha2.config)} >= held | {"10.1.0.7"}

        # Restarted, the Home Agent passes the check again; ha1 (the better priority) takes the address
        # back, with the table it downloaded, the new binding included.
        ha1.start_home_agent()
        wait("ha1 to be told it is active again", lambda: role(ha1) == "active", timeout=15)
        wait("the address back on ha1", lambda: VIP in lan.addresses("ha1"), timeout=5)
        assert {r["home_address"] for r in bindings(ha1.config)} >= held | {"10.1.0.7"}
        assert accepted_within(8, TAKEOVER_BOUND, lan) is not None
