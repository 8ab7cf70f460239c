"""External election without a notify script: the member's role follows the virtual address on its host.
keepalived puts the address on an interface when it makes the host master and takes it off when it stops
being master; the member sees that on netlink and changes role at once. Here ``ip addr`` plays keepalived,
in a namespace of our own. Needs root and iproute2."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from daemons import KEY, status, wait
from netns.lan import Lan, can_run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not can_run(), reason="needs root and iproute2")]

SUBNET = f"10.253.{os.getpid() % 200 + 20}"
VIP = f"{SUBNET}.10"


def test_role_follows_the_virtual_address(tmp_path):
    lan = Lan(f"haw{os.getpid()}", {"ha": f"{SUBNET}.1"})
    config = tmp_path / "ha.toml"
    config.write_text(f"""
[home_agent]
address = "{SUBNET}.1"
port = 4434
home_network = "10.1.0.0/16"
state_dir = "{tmp_path / 'state'}"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
key = "{KEY}"

[redundancy]
virtual_address = "{VIP}"
election = "external"
startup_wait = 0.2
""")
    proc = lan.popen("ha", [sys.executable, "-m", "homeagent", "run", "--config", str(config)])
    try:
        wait("the member to stand by", lambda: (status(config) or {}).get("role") == "standby")
        lan.exec("ha", "ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
        wait("active, with no notify script", lambda: status(config)["role"] == "active", timeout=2)
        st = status(config)
        assert st["counters"]["redundancy.address_seen"] == 1
        assert st["transitions"][-1]["reason"].startswith("told to be active")
        lan.exec("ha", "ip", "addr", "add", f"{VIP}/32", "dev", "lo")  # a second copy: still ours
        lan.exec("ha", "ip", "addr", "del", f"{VIP}/24", "dev", "eth0")
        time.sleep(0.3)
        assert status(config)["role"] == "active", "the address is still on lo"
        lan.exec("ha", "ip", "addr", "del", f"{VIP}/32", "dev", "lo")
        wait("standby once the address is gone", lambda: status(config)["role"] == "standby", timeout=2)
        # Following the address is repeatable, not a one-shot.
        lan.exec("ha", "ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
        wait("active again", lambda: status(config)["role"] == "active", timeout=2)
        assert status(config)["counters"]["redundancy.address_gone"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        finally:
            lan.close()
    assert proc.returncode == 0


def test_a_member_that_starts_with_the_address_on_its_host_is_active(tmp_path):
    lan = Lan(f"has{os.getpid()}", {"ha": f"{SUBNET}.1"})
    config = tmp_path / "ha.toml"
    config.write_text(f"""
[home_agent]
address = "{SUBNET}.1"
port = 4434
state_dir = "{tmp_path / 'state'}"

[redundancy]
virtual_address = "{VIP}"
election = "external"
startup_wait = 0.2
""")
    lan.exec("ha", "ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
    proc = lan.popen("ha", [sys.executable, "-m", "homeagent", "run", "--config", str(config)])
    try:
        wait("active from the start", lambda: (status(config) or {}).get("role") == "active")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        finally:
            lan.close()
