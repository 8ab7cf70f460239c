"""``homeagent cleanup`` and the daemon's start take off the link what a member killed while active left:
the virtual address and the proxy ARP entries for home addresses on the home link, and nothing else; never
while a daemon answers on the control socket. One member in a namespace of its own with the interface
method (its only peer configured, never started). Needs root and iproute2.

    ha1 P.255.1/16   virtual address P.255.10   home network P.0.0/18   (P = 10.x)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemons import group_config, status, wait
from netns.lan import Lan, can_run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not can_run(), reason="needs root and iproute2")]

P = f"10.{80 + os.getpid() % 40}"
VIP = f"{P}.255.10"
HA1 = f"{P}.255.1"
HOME = [f"{P}.0.5", f"{P}.0.6"]  # home addresses on the link: a data plane proxies for these
KEPT = [f"{P}.100.7", f"{P}.0.0"]  # on the link, but outside the home network / reserved: the operator's


def cleanup(lan: Lan, config: Path) -> subprocess.CompletedProcess[str]:
    return lan.exec("ha1", sys.executable, "-m", "homeagent", "cleanup", "--config", str(config), check=False)


def proxies(lan: Lan) -> set[str]:
    out = lan.exec("ha1", "ip", "neigh", "show", "proxy", "dev", "eth0").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def leave(lan: Lan) -> None:
    """What a member killed while active leaves, as its data plane would have left it."""
    lan.exec("ha1", "ip", "addr", "replace", f"{VIP}/32", "dev", "eth0")
    for address in HOME + KEPT:
        lan.exec("ha1", "ip", "neigh", "replace", "proxy", address, "dev", "eth0")


def test_cleanup_removes_what_a_crash_left_refuses_under_a_live_daemon_and_runs_at_start(tmp_path):
    lan = Lan(f"hcl{os.getpid()}", {"ha1": HA1}, prefixlen=16)
    proc: subprocess.Popen[bytes] | None = None
    try:
        config = group_config(tmp_path, HA1, 434, name="ha1", virtual_address=VIP, group=f"{P}.255.0/24",
                              home_network=f"{P}.0.0/18", peers=[f"{P}.255.2"], address_method="interface",
                              interface="eth0")
        leave(lan)
        out = cleanup(lan, config)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [f"removed the virtual address {VIP}/32 from eth0",
                                           *(f"removed the proxy ARP entry for {a} on eth0" for a in HOME)]
        assert VIP not in lan.addresses("ha1")
        assert proxies(lan) == set(KEPT)

        again = cleanup(lan, config)  # nothing left: still exit 0, and says so
        assert (again.returncode, again.stdout.strip()) == (0, "nothing to clean up on eth0")

        def start() -> subprocess.Popen[bytes]:
            with open(tmp_path / "ha1.log", "ab") as log:
                return lan.popen("ha1", [sys.executable, "-m", "homeagent", "run", "--config", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=log)

        proc = start()
        wait("ha1 active with the address", lambda: (status(config) or {}).get("role") == "active"
             and VIP in lan.addresses("ha1"), timeout=15)
        lan.exec("ha1", "ip", "neigh", "replace", "proxy", HOME[0], "dev", "eth0")
        refused = cleanup(lan, config)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "cleanup refused: a daemon answers on" in refused.stderr
        assert VIP in lan.addresses("ha1") and HOME[0] in proxies(lan), "touched a live daemon's link"

        # kill -9: the address stays; a proxy entry is left too. The next start takes both off first.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        leave(lan)
        proc = start()
        wait("ha1 active again", lambda: (status(config) or {}).get("role") == "active", timeout=15)
        log = (tmp_path / "ha1.log").read_text()
        assert f"removed the virtual address {VIP}/32 from eth0: left there by an earlier run" in log
        for address in HOME:
            assert f"removed the proxy ARP entry for {address} on eth0: left there by an earlier run" in log
        assert proxies(lan) == set(KEPT)

        # A graceful stop leaves nothing behind.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc = None
        assert VIP not in lan.addresses("ha1")
        assert cleanup(lan, config).stdout.strip() == "nothing to clean up on eth0"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        lan.close()


def test_cleanup_with_the_bind_method_has_nothing_to_do(tmp_path):
    config = group_config(tmp_path, "127.0.0.2", 4434, name="bind")
    out = subprocess.run([sys.executable, "-m", "homeagent", "cleanup", "--config", str(config)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ('nothing to clean up: redundancy.address_method is "bind" and no [dataplane]: '
                                  "nothing is put on an interface")
    lone = tmp_path / "lone.toml"
    lone.write_text(config.read_text().split("[redundancy]")[0])
    out = subprocess.run([sys.executable, "-m", "homeagent", "cleanup", "--config", str(lone)],
                         capture_output=True, text=True, timeout=20)
    assert (out.returncode, out.stdout.strip()) == (0, "nothing to clean up: no [redundancy] and no [dataplane]: a "
                                                       "lone Home Agent without a data plane puts nothing on a link")


@pytest.mark.parametrize("redundancy", [False, True], ids=["lone", "bind-method"])
def test_cleanup_removes_the_proxy_entries_a_killed_data_plane_left(tmp_path, redundancy):
    """A lone Home Agent with a data plane (or a group member with the bind method) killed while serving
    leaves its proxy ARP entries on the home link, with nothing behind them (its forwarder, TUN and
    routes died with it): ``homeagent cleanup`` takes them off, the operator's stay. Before 2026-12-03 it
    said there was nothing to clean up without ``address_method = "interface"``."""
    lan = Lan(f"hcd{os.getpid()}", {"ha1": HA1}, prefixlen=16)
    try:
        config = group_config(tmp_path, HA1, 434, name="ha1", virtual_address=VIP, group=f"{P}.255.0/24",
                              home_network=f"{P}.0.0/18", peers=[f"{P}.255.2"])
        text = config.read_text() if redundancy else config.read_text().split("[redundancy]")[0]
        config.write_text(text + '\n[dataplane]\nbackend = "userspace"\ninterface = "eth0"\n')
        for address in HOME + KEPT:
            lan.exec("ha1", "ip", "neigh", "replace", "proxy", address, "dev", "eth0")
        out = cleanup(lan, config)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [f"removed the proxy ARP entry for {a} on eth0" for a in HOME]
        assert proxies(lan) == set(KEPT)
        assert cleanup(lan, config).stdout.strip() == "nothing to clean up on eth0"
    finally:
        lan.close()
