"""Members on the group's multicast address (the patent's multicast to the virtual router group, FIG 4 and
5): in a network namespace of our own, on its loopback with multicast switched on. Trust is configured,
never learnt (docs/security.md): members configured as each other's peers meet and replicate, their own
multicast looped back to them is no violation, and a daemon holding the group's key but configured on
neither is refused on the multicast address too, never learnt, never sent to. Needs root and iproute2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from daemons import KEY, bindings, group_config, status, wait

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (network namespaces)"
)

GROUP = "239.255.43.4"
PORT = 4434


def ns(name: str, *cmd: str, **kw) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(["ip", "netns", "exec", name, *cmd], check=True, capture_output=True, text=True,
                          timeout=30, **kw)


@pytest.fixture
def namespace():
    name = f"ha-mc-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        ns(name, "ip", "link", "set", "lo", "up")
        ns(name, "ip", "link", "set", "lo", "multicast", "on")
        ns(name, "ip", "route", "add", "224.0.0.0/4", "dev", "lo")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10)


def run_members(namespace: str, paths) -> list[subprocess.Popen]:
    procs = []
    for path in paths:
        procs.append(subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-m", "homeagent",
                                       "run", "--config", str(path)], stderr=subprocess.PIPE, text=True))
        wait("the member to start", lambda: status(path))
    return procs


def stop(procs) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p in procs), [p.stderr.read() for p in procs]


def test_configured_members_meet_by_multicast_and_replicate(namespace, tmp_path):
    a, b = (group_config(tmp_path, address, PORT, priority=priority, multicast_group=GROUP, peers=[other])
            for address, priority, other in (("127.0.0.2", 110, "127.0.0.3"), ("127.0.0.3", 100, "127.0.0.2")))
    procs = run_members(namespace, (a, b))
    try:
        wait("A to see B", lambda: [p for p in status(a)["peers"] if p["address"] == "127.0.0.3" and p["state"] == "up"])
        wait("B to see A", lambda: [p for p in status(b)["peers"] if p["address"] == "127.0.0.2" and p["state"] == "up"])
        wait("one active and one standby", lambda: {status(a)["role"], status(b)["role"]} == {"active", "standby"})
        reply = ns(namespace, sys.executable, "-m", "homeagent", "mn", "register", "--home-agent", "127.0.0.10",
                   "--port", str(PORT), "--spi", "256", "--key", KEY, "--home-address", "10.1.0.5",
                   "--care-of", "192.0.2.10", "--json")
        accepted = json.loads(reply.stdout)
        assert accepted["code"] == 0
        for path in (a, b):
            rows = wait("the binding on every member", lambda: bindings(path))
            assert [(r["home_address"], r["care_of_address"], r["identification"]) for r in rows] == [
                ("10.1.0.5", "192.0.2.10", accepted["identification"])]
        # Our own multicast comes back to us on loopback: it is no security violation.
        for path in (a, b):
            assert status(path)["counters"].get("redundancy.security_violations", 0) == 0
    finally:
        stop(procs)


def test_a_daemon_with_the_key_but_not_configured_is_never_learnt_from_the_multicast(namespace, tmp_path):
    a, b = (group_config(tmp_path, address, PORT, priority=priority, multicast_group=GROUP, peers=[other])
            for address, priority, other in (("127.0.0.2", 110, "127.0.0.3"), ("127.0.0.3", 100, "127.0.0.2")))
    stranger = group_config(tmp_path, "127.0.0.4", PORT, priority=200, multicast_group=GROUP,
                            peers=["127.0.0.2", "127.0.0.3"])
    procs = run_members(namespace, (a, b))
    try:
        wait("one active and one standby", lambda: {status(a)["role"], status(b)["role"]} == {"active", "standby"})
        procs += run_members(namespace, (stranger,))
        wait("the stranger's messages to be refused", lambda: all(
            status(p)["counters"].get("redundancy.security_violations", 0) >= 3 for p in (a, b)))
        for path in (a, b):
            st = status(path)
            assert {p["address"] for p in st["peers"]} == {"127.0.0.2", "127.0.0.3"} - {st["address"]}
        assert {status(a)["role"], status(b)["role"]} == {"active", "standby"}  # priority 200 took nothing
    finally:
        stop(procs)
