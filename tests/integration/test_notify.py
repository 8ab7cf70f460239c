"""systemd's readiness protocol, from outside: a real daemon under a fake ``NOTIFY_SOCKET`` (a datagram
socket bound here, as systemd binds its own), checked for READY=1 only once it serves, WATCHDOG=1 at half
of WATCHDOG_USEC, and STOPPING=1 at SIGTERM (runtime/notify.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from homeagent.runtime import control

from .group_support import MEMBER_ADDRESSES, make_group, wait_until
from .conftest import homeagent


class FakeSystemd:
    """A datagram socket where the daemon sends its notifications; each kept with when it came."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.messages: list[tuple[float, str]] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (TimeoutError, socket.timeout):
            return None
        self.messages.append((time.monotonic(), data.decode()))
        return data.decode()

    def until(self, field: str, timeout: float = 10.0) -> tuple[float, str]:
        """The first message holding the line ``field`` (READY=1...), waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        for at, text in self.messages:
            if field in text.splitlines():
                return at, text
        while time.monotonic() < deadline:
            text = self.receive(max(0.01, deadline - time.monotonic()))
            if text is not None and field in text.splitlines():
                return self.messages[-1]
        pytest.fail(f"no {field} within {timeout} s; got {[t for _, t in self.messages]}")

    def count(self, field: str) -> int:
        return sum(field in text.splitlines() for _, text in self.messages)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path):
    sd = FakeSystemd(str(tmp_path / "notify.sock"))
    yield sd
    sd.close()


@pytest.fixture
def g(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def test_lone_home_agent_ready_once_it_serves_watchdog_and_stopping(daemons, fake_systemd, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    ha = daemons.config("notify")
    ha.start(wait=False)
    ready_at, text = fake_systemd.until("READY=1")
    # Ready means serving: the control socket answers at once, and the message says so in STATUS=.
    assert control.request(ha.control_socket, "status")["role"] == "active"
    assert "STATUS=role active, 0 bindings" in text.splitlines()
    assert fake_systemd.count("READY=1") == 1
    # The watchdog: pings keep coming at about half WATCHDOG_USEC.
    first = len(fake_systemd.messages)
    deadline = time.monotonic() + 0.65
    while time.monotonic() < deadline:
        fake_systemd.receive(0.05)
    pings = [at for at, t in fake_systemd.messages[first:] if t == "WATCHDOG=1"]
    assert 4 <= len(pings) <= 9, pings
    assert ha.stop(signal.SIGTERM) == 0
    stopping_at, _ = fake_systemd.until("STOPPING=1", timeout=1)
    assert stopping_at > ready_at
    assert fake_systemd.count("READY=1") == 1


def test_abstract_notify_socket_and_no_watchdog_without_watchdog_usec(daemons, monkeypatch):
    name = f"@homeagent-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    sd = FakeSystemd(name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        ha = daemons.config("notify-abstract")
        ha.start(wait=False)
        sd.until("READY=1")
        ha.wait_ready()
        time.sleep(0.3)
        while sd.receive(0.05) is not None:
            pass
        assert sd.count("WATCHDOG=1") == 0
        assert ha.stop(signal.SIGTERM) == 0
        sd.until("STOPPING=1", timeout=1)
    finally:
        sd.close()


def test_watchdog_for_another_pid_is_not_ours(daemons, fake_systemd, monkeypatch):
    """WATCHDOG_PID names the process the watchdog is for (sd_watchdog_enabled(3)): a daemon that is not
    that process sends no pings, and still tells it is ready."""
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    ha = daemons.config("notify-pid")
    ha.start(wait=False)
    fake_systemd.until("READY=1")
    time.sleep(0.3)
    while fake_systemd.receive(0.05) is not None:
        pass
    assert fake_systemd.count("WATCHDOG=1") == 0
    assert ha.stop() == 0


def test_group_member_ready_only_after_its_table_download(g, fake_systemd, monkeypatch):
    """A member that starts beside an active one is ready only once it holds the group's table: READY=1
    comes after its own init -> standby transition, and it then has every binding."""
    a = g.add(MEMBER_ADDRESSES[0], priority=200, peers=[MEMBER_ADDRESSES[1]])
    b = g.add(MEMBER_ADDRESSES[1], priority=100, peers=[MEMBER_ADDRESSES[0]])
    g.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    r = homeagent("mn", "load", "--config", str(a.config_path), "--home-agent", "127.0.0.10",
                  "--mobile-nodes", "3000")
    assert r.returncode == 0 and json.loads(r.stdout)["accepted"] == 3000, r.stdout + r.stderr

    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    b.start(wait=False)
    monkeypatch.delenv("NOTIFY_SOCKET")
    ready_at, _ = fake_systemd.until("READY=1", timeout=10)
    ready_wall = time.time() - (time.monotonic() - ready_at)  # when READY=1 came, on the wall clock
    st = control.request(b.control_socket, "status")
    assert st["role"] == "standby" and st["bindings"] == 3000, st
    assert st["counters"]["redundancy.table_replies_received"] > 0, st["counters"]
    # It told systemd after it left init (the download's end, in its own transitions), not before.
    [downloaded] = [t for t in st["transitions"] if (t["from"], t["to"]) == ("init", "standby")]
    assert downloaded["reason"] == "table downloaded"
    assert ready_wall >= downloaded["at"] - 0.005, (ready_wall, downloaded)
