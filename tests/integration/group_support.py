"""Redundancy groups of real ``homeagent run`` processes on loopback, for the ``test_group_*`` modules.

Members run on 127.0.0.2, 127.0.0.3 and 127.0.0.4, all on one free UDP port, the group's virtual address
is 127.0.0.10, each member has its own state_dir, and one HMAC-SHA256 association covers 127.0.0.0/24.
Every daemon is stopped by PID (SIGCONT if paused, SIGTERM, then SIGKILL) when its group is finalised, and
every wait here has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from homeagent.core.replay import ntp_identification
from homeagent.runtime import control
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.redundancy import seal

from .conftest import KEY, SPI, STOP_TIMEOUT, HomeAgentProcess, MobileNodeSocket, homeagent, port_is_free

VIP = "127.0.0.10"
MEMBER_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
GROUP_SPI = 300
GROUP_KEY = bytes.fromhex("5a" * 16 + "c3" * 16)  # 32 bytes, hmac-sha256
GROUP_SA = SecurityAssociation(GROUP_SPI, Algorithm.HMAC_SHA256, GROUP_KEY)
WRONG_GROUP_SA = SecurityAssociation(GROUP_SPI, Algorithm.HMAC_SHA256, bytes.fromhex("a5" * 32))
MN_SA = SecurityAssociation(SPI, Algorithm.HMAC_MD5, KEY)
ADVERTISEMENT_INTERVAL = 0.1
STARTUP_WAIT = 0.5


def free_group_port(addresses: Iterable[str] = (*MEMBER_ADDRESSES, VIP, "127.0.0.5")) -> int:
    """A UDP port free on every address the group (and the tests' impostors) will bind."""
    addresses = tuple(addresses)
    base = os.getpid() * 7919 + time.monotonic_ns() // 1000
    for offset in range(0, 12000, 7):  # below the ephemeral range, where client sockets come from
        port = 20000 + (base + offset) % 12000
        if all(port_is_free(a, port) for a in addresses):
            return port
    raise RuntimeError("no free UDP port")


def group_config_text(
    address: str,
    port: int,
    state_dir: Path,
    peers: Iterable[str],
    *,
    priority: int = 100,
    mode: str = "active-standby",
    replication: str = "async",
    sync_timeout: float = 0.5,
    max_lifetime: int = 1800,
    redundancy_extra: str = "",
    advertisement_interval: float = ADVERTISEMENT_INTERVAL,
) -> str:
    peer_list = ", ".join(f'"{p}"' for p in peers)
    return (
        "[home_agent]\n"
        f'address = "{address}"\n'
        f"port = {port}\n"
        'home_network = "10.1.0.0/16"\n'
        f"max_lifetime = {max_lifetime}\n"
        "replay_tolerance = 7\n"
        f'state_dir = "{state_dir}"\n\n'
        "[[security_association]]\n"
        'home_addresses = "10.1.0.0/16"\n'
        f"spi = {SPI}\n"
        'algorithm = "hmac-md5"\n'
        f'key = "{KEY.hex()}"\n\n'
        "[redundancy]\n"
        f'virtual_address = "{VIP}"\n'
        f'mode = "{mode}"\n'
        f"priority = {priority}\n"
        f"peers = [{peer_list}]\n"
        f'replication = "{replication}"\n'
        f"sync_timeout = {sync_timeout}\n"
        f"advertisement_interval = {advertisement_interval}\n"
        f"startup_wait = {STARTUP_WAIT}\n"
        f"{redundancy_extra}\n"
        "[[redundancy.security_association]]\n"
        'peer = "127.0.0.0/24"\n'
        f"spi = {GROUP_SPI}\n"
        'algorithm = "hmac-sha256"\n'
        f'key = "{GROUP_KEY.hex()}"\n\n'
        '[dataplane]\nbackend = "none"\n'
    )


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (control.ControlError, OSError, ValueError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f" ({last_error})" if last_error else ""))
        time.sleep(interval)


@dataclass
class Member(HomeAgentProcess):
    priority: int = 100
    paused: bool = False
    killed: bool = False

    # -- views through the control socket (fast, for waiting) ----------------------------------------

    def role(self) -> str:
        return self.status()["role"]

    def binding_of(self, home_address: str) -> list[dict[str, Any]]:
        return control.request(self.control_socket, "bindings", home_address=home_address)

    def table(self) -> dict[str, dict[str, Any]]:
        """Home address -> its binding (one care-of address per node in these tests)."""
        return {r["home_address"]: r for r in self.bindings_direct()}

    def peer_states(self) -> dict[str, str]:
        return {p["address"]: p["state"] for p in self.status()["peers"]}

    # -- views through the CLI (what an operator sees; for the assertions) ----------------------------

    def status_cli(self) -> dict[str, Any]:
        r = homeagent("status", "--config", str(self.config_path), "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def table_cli(self) -> dict[str, dict[str, Any]]:
        return {r["home_address"]: r for r in self.bindings_cli()}

    # -- signals, by PID -----------------------------------------------------------------------------

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        self.killed = True
        self.expect_clean_exit = False
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=STOP_TIMEOUT)


@dataclass
class Group:
    tmp_path_factory: pytest.TempPathFactory
    port: int = field(default_factory=free_group_port)
    members: list[Member] = field(default_factory=list)

    def add(
        self,
        address: str,
        priority: int = 100,
        peers: Iterable[str] | None = None,
        **kw: Any,
    ) -> Member:
        """Write a member's config (its own tmp directory and state_dir); the member is not started."""
        root = self.tmp_path_factory.mktemp("member-" + address.replace(".", "-"))
        state_dir = root / "state"
        if peers is None:
            peers = [a for a in MEMBER_ADDRESSES if a != address]
        path = root / "homeagent.toml"
        path.write_text(group_config_text(address, self.port, state_dir, peers, priority=priority, **kw))
        m = Member(path, address, self.port, state_dir, root / "stderr.log", priority=priority)
        self.members.append(m)
        return m

    def member(self, address: str) -> Member:
        return next(m for m in self.members if m.address == address)

    def running(self) -> list[Member]:
        return [m for m in self.members if m.running()]

    def start(self, *members: Member) -> None:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()

    def vip_node(self) -> MobileNodeSocket:
        return MobileNodeSocket(VIP, self.port)

    def wait_formed(self, active: Member | None = None, timeout: float = 8.0) -> None:
        """Every running member is past ``init``, sees every other running member up, and (active-standby)
        exactly one is active: ``active`` when given."""
        members = self.running()
        names = {m.address for m in members}

        def formed() -> bool:
            statuses = {m.address: m.status() for m in members}
            for address, st in statuses.items():
                if st["role"] == "init":
                    return False
                up = {p["address"] for p in st["peers"] if p["state"] == "up"}
                if not (names - {address}) <= up:
                    return False
            roles = [st["role"] for st in statuses.values()]
            if "peer" in roles:
                return all(r == "peer" for r in roles)
            if roles.count("active") != 1:
                return False
            return active is None or statuses[active.address]["role"] == "active"

        wait_until(formed, timeout, f"the group {sorted(names)} to form")

    def wait_replicated(self, home_addresses: Iterable[str], members: Iterable[Member] | None = None,
                        timeout: float = 5.0) -> None:
        """Every member holds a binding for every one of ``home_addresses``."""
        wanted = set(home_addresses)
        targets = list(members) if members is not None else self.running()
        wait_until(lambda: all(wanted <= set(m.table()) for m in targets), timeout,
                   f"{len(wanted)} bindings on {[m.address for m in targets]}")

    def finalize(self) -> None:
        problems = []
        for m in self.members:
            if m.proc is None:
                continue
            if m.paused and m.proc.poll() is None:
                m.resume()
            if m.proc.poll() is None:
                os.kill(m.pid, signal.SIGTERM)
                try:
                    m.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.kill(m.pid, signal.SIGKILL)
                    m.proc.wait(timeout=STOP_TIMEOUT)
                    problems.append(f"{m.address} pid {m.pid} ignored SIGTERM for {STOP_TIMEOUT} s")
            m._stderr.close()
            if m.expect_clean_exit:
                if m.proc.returncode != 0:
                    problems.append(f"{m.address} pid {m.pid}: exit status {m.proc.returncode}\n{m.stderr()}")
                if "Traceback" in m.stderr():
                    problems.append(f"{m.address} pid {m.pid}: traceback in its log\n{m.stderr()}")
        self.members.clear()
        if problems:
            pytest.fail("\n".join(problems))


def make_group(tmp_path_factory: pytest.TempPathFactory):
    """A generator for fixtures: yields a Group, then stops every member it started."""
    g = Group(tmp_path_factory)
    try:
        yield g
    finally:
        g.finalize()


def start_standby_group(g: Group, **kw: Any) -> tuple[Member, Member, Member]:
    """A (priority 200) first, alone, until active; then B (150) and C (100) download its table."""
    a = g.add(MEMBER_ADDRESSES[0], priority=200, **kw)
    b = g.add(MEMBER_ADDRESSES[1], priority=150, **kw)
    c = g.add(MEMBER_ADDRESSES[2], priority=100, **kw)
    g.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    g.start(b, c)
    g.wait_formed(active=a)
    return a, b, c


def sealed(body: bytes, sender: str, receiver: str, sa: SecurityAssociation = GROUP_SA,
           timestamp: int | None = None) -> bytes:
    """A redundancy message sealed as member ``sender`` would for ``receiver``: HA-HA authentication
    (protocol version 2) with an NTP timestamp."""
    stamp = ntp_identification(time.time()) if timestamp is None else timestamp
    return seal(body, sa, stamp, ip(sender), ip(receiver))


def ip(address: str) -> int:
    return int(IPv4Address(address))


def require(condition: object, what: str) -> None:
    """A precondition of an xfail test: its failure is a plain test failure, never taken for the bug's
    AssertionError (the xfail tests here say ``raises=AssertionError``)."""
    if not condition:
        pytest.fail(f"precondition not met: {what}")


def counter(st: dict[str, Any], name: str) -> int:
    return int(st["counters"].get(name, 0))
