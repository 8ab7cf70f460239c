"""The mobile node's tunnel end (``dataplane.decap.MobileTunnel``) in a namespace of its own: with reverse
tunnelling each device has a routing table of its own, so two mobile nodes on one host each send into their
own tunnel; a rule an earlier run left (killed before it could remove it) is replaced, not doubled; close
takes the rule away. Needs root and iproute2; namespace prefix "dc"."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from netns.lan import can_run, run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not can_run(), reason="needs root and iproute2")]

SCRIPT = textwrap.dedent("""
    import subprocess, sys
    from ipaddress import IPv4Address
    from homeagent.dataplane.decap import MobileTunnel

    def via(source):
        out = subprocess.run(["ip", "-o", "route", "get", "192.0.2.99", "from", source], check=True,
                             capture_output=True, text=True).stdout
        return out.split(" dev ")[1].split()[0]

    def rules():
        out = subprocess.run(["ip", "-4", "rule", "show", "priority", "434"], check=True,
                             capture_output=True, text=True).stdout
        return sorted(line.split()[2] for line in out.splitlines())  # "434: from A lookup T"

    a = int(IPv4Address("10.1.0.61")); b = int(IPv4Address("10.1.0.62"))
    ha, coa = int(IPv4Address("10.9.0.1")), int(IPv4Address("10.8.0.10"))
    first = MobileTunnel(a, ha, coa, reverse=True, tun="mipa")
    second = MobileTunnel(b, ha, coa, reverse=True, tun="mipb")
    print("routes", via("10.1.0.61"), via("10.1.0.62"))
    print("tables", first.table != second.table)
    again = MobileTunnel(a, ha, coa, reverse=True, tun="mipc")  # as after a kill -9 of the first
    print("rules", *rules())
    print("again", via("10.1.0.61"))
    for tunnel in (again, second):
        tunnel.close()
    print("left", *rules())
""")


def test_two_mobile_nodes_on_one_host_each_reverse_tunnel_into_their_own_device():
    name = f"dc{os.getpid()}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        out = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", SCRIPT], check=True,
                             capture_output=True, text=True, timeout=60).stdout.splitlines()
    finally:
        run("ip", "netns", "del", name, check=False)
    assert out[0] == "routes mipa mipb", out
    assert out[1] == "tables True"
    assert out[2] == "rules 10.1.0.61 10.1.0.62", "the earlier rule for 10.1.0.61 was replaced, not doubled"
    assert out[3] == "again mipc"
    assert out[4] == "left", "close takes each rule away"
