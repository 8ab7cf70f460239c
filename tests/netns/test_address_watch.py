"""External election without a notify script: the member's role follows the virtual address on its host.
keepalived puts the address on an interface when it makes the host master and takes it off when it stops
being master; the member sees that on netlink and changes role at once. Here ``ip addr`` plays keepalived,
in a namespace of our own. Needs root and iproute2."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons import group_config, status, wait
from netns.lan import Lan, can_run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not can_run(), reason="needs root and iproute2")]

SUBNET = f"10.253.{os.getpid() % 200 + 20}"
VIP = f"{SUBNET}.10"


@contextlib.contextmanager
def lone_member(tmp: Path, with_vip: bool = False) -> Iterator[tuple[Lan, Path]]:
    """A member with an external election alone in a namespace (the virtual address already on eth0 if
    ``with_vip``); stopped with SIGTERM, which must end it cleanly."""
    lan = Lan(f"haw{os.getpid()}", {"ha": f"{SUBNET}.1"})
    try:
        config = group_config(tmp, f"{SUBNET}.1", 4434, name="ha", virtual_address=VIP, group=f"{SUBNET}.0/24",
                              election="external", startup_wait=0.2)
        if with_vip:
            lan.exec("ha", "ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
        proc = lan.popen("ha", [sys.executable, "-m", "homeagent", "run", "--config", str(config)])
        try:
            yield lan, config
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        assert proc.returncode == 0
    finally:
        lan.close()


def role(config: Path) -> str | None:
    return (status(config) or {}).get("role")


def test_role_follows_the_virtual_address(tmp_path):
    with lone_member(tmp_path) as (lan, config):
        wait("the member to stand by", lambda: role(config) == "standby")
        lan.exec("ha", "ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
        wait("active, with no notify script", lambda: role(config) == "active", timeout=2)
        st = status(config)
        assert st["counters"]["redundancy.address_seen"] == 1
        assert st["transitions"][-1]["reason"].startswith("told to be active")
        lan.exec("ha", "ip", "addr", "add", f"{VIP}/32", "dev", "lo")  # a second copy: still ours
        lan.exec("ha", "ip", "addr", "del", f"{VIP}/24", "dev", "eth0")
        time.sleep(0.3)
        assert role(config) == "active", "the address is still on lo"
        lan.exec("ha", "ip", "addr", "del", f"{VIP}/32", "dev", "lo")
        wait("standby once the address is gone", lambda: role(config) == "standby", timeout=2)
        # Following the address is repeatable, not a one-shot.
        lan.exec("ha", "ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
        wait("active again", lambda: role(config) == "active", timeout=2)
        assert status(config)["counters"]["redundancy.address_gone"] == 1


def test_a_member_that_starts_with_the_address_on_its_host_is_active(tmp_path):
    with lone_member(tmp_path, with_vip=True) as (_, config):
        wait("active from the start", lambda: role(config) == "active")
