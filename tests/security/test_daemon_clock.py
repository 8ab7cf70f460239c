"""A real daemon whose wall clock is stepped by an hour, forward and back, while it holds bindings
(libfaketime, preloaded into the daemon only, with the monotonic clock left alone): no binding expires
early or outlives its lifetime; only what is stamped on the wire follows the new time. And one whose clock
passes the NTP era's wrap (2036) with a node registered. Skipped where
libfaketime is not installed (`.ci/run` installs Debian's faketime)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys
import time

import pytest

from homeagent.runtime import control
from tests.integration.conftest import MobileNodeSocket, config_text, free_udp_port, ntp_now, rrq

LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)
pytestmark = pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime (Debian package faketime)")
LIFETIME = 6


@contextlib.contextmanager
def daemon_with_clock(tmp_path, offset_text: str):
    """A daemon whose wall clock is the real one moved by what the file holds (``offset_text`` at first):
    (its port, its control socket, that file)."""
    offset = tmp_path / "faketime"
    offset.write_text(offset_text)
    port = free_udp_port()
    config = tmp_path / "homeagent.toml"
    config.write_text(config_text(tmp_path / "state", port))
    env = {**os.environ, "LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    stderr = open(tmp_path / "stderr.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "homeagent", "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    sock = tmp_path / "state" / "control.sock"
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                control.request(sock, "status", timeout=1)
                break
            except control.ControlError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.log").read_text()
                time.sleep(0.05)
        yield port, sock, offset
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        stderr.close()
        assert "Traceback" not in (tmp_path / "stderr.log").read_text()


@pytest.fixture
def stepped_daemon(tmp_path):
    with daemon_with_clock(tmp_path, "+0\n") as daemon:
        yield daemon


@pytest.mark.parametrize("step", ["+1h", "-1h"])
def test_a_stepped_wall_clock_neither_expires_nor_extends_bindings(stepped_daemon, step):
    port, sock, offset = stepped_daemon
    mn = MobileNodeSocket("127.0.0.2", port)
    try:
        reply = mn.exchange(rrq("10.1.0.5", "192.0.2.10", lifetime=LIFETIME))
        assert reply.code == 0
        registered = time.monotonic()
        offset.write_text(f"{step}\n")  # the daemon's wall clock jumps
        time.sleep(1.0)
        [binding] = control.request(sock, "bindings")
        left = LIFETIME - (time.monotonic() - registered)
        assert binding["remaining"] == pytest.approx(left, abs=0.5)
        # Replay protection follows the wall clock: a request stamped with our (unstepped) time is an hour
        # off the daemon's now and gets 133 with the daemon's time, whose seconds differ by the step.
        stale = mn.exchange(rrq("10.1.0.6", "192.0.2.10", ident=ntp_now()))
        assert stale.code == 133
        assert abs((stale.identification >> 32) - (ntp_now() >> 32) - (3600 if step == "+1h" else -3600)) <= 2
        while time.monotonic() - registered < LIFETIME - 1.0:
            assert len(control.request(sock, "bindings")) == 1, "expired before its lifetime"
            time.sleep(0.25)
        time.sleep(2.5)  # the expiry wheel's one-second buckets, and the timer
        assert control.request(sock, "bindings") == [], "outlived its lifetime"
    finally:
        mn.close()


WRAP = 2_085_978_496  # 2036-02-07 06:28:16 UTC, Unix: NTP era 0 ends and its seconds wrap to 0


def ntp_at(unix: float, fraction: int = 0) -> int:
    """The NTP timestamp the wire carries for Unix time ``unix`` (its seconds modulo the era)."""
    return (((int(unix) + 2_208_988_800) & 0xFFFFFFFF) << 32) | fraction


def test_a_node_registered_before_the_ntp_era_wraps_renews_after_it(tmp_path):
    """A daemon whose clock reads 2036-02-07 06:27:56 accepts a node's registration stamped then (NTP
    seconds 0xFFFFFFEC); its clock passes the wrap, and the node's renewal, stamped with NTP seconds near 0,
    is newer, accepted and replicated into the table, and the old request replayed is refused 133.
    Before 2026-12-03 the renewal was refused 133 (a plain comparison took it for older), and so was
    every request of that node until the Home Agent forgot it."""
    skew = int(WRAP - 20 - time.time())  # the daemon's clock: 20 s before the wrap
    with daemon_with_clock(tmp_path, f"+{skew}\n") as (port, sock, offset):
        mn = MobileNodeSocket("127.0.0.2", port)
        try:
            before = ntp_at(time.time() + skew, 0x1000)
            assert before >> 32 > 0xFFFFFFE0
            request = rrq("10.1.0.5", "192.0.2.10", ident=before, lifetime=600)
            first = mn.exchange(request)
            assert (first.code, first.identification) == (0, before)
            offset.write_text(f"+{skew + 40}\n")  # 20 s past the wrap
            time.sleep(0.3)
            after = ntp_at(time.time() + skew + 40, 0x2000)
            assert after >> 32 < 0x40, "the renewal's NTP seconds have wrapped"
            renewal = mn.exchange(rrq("10.1.0.5", "192.0.2.11", ident=after, lifetime=600))
            assert (renewal.code, renewal.identification) == (0, after)
            [binding] = control.request(sock, "bindings")
            assert (binding["care_of_address"], binding["identification"]) == ("192.0.2.11", after)
            replayed = mn.exchange(request)  # within the tolerance no more (40 s), and older anyway
            assert replayed.code == 133 and abs((replayed.identification >> 32) - (after >> 32)) <= 2  # our time
            assert control.request(sock, "bindings")[0]["care_of_address"] == "192.0.2.11"
        finally:
            mn.close()


def test_a_clock_before_2000_is_refused_at_start_with_one_line(tmp_path):
    """What this member stamps with a clock before 2000 would be taken for 2106 and later (wire/era.py)
    and would order every later stamp below it: a host without a real-time clock must wait for NTP."""
    offset = tmp_path / "faketime"
    offset.write_text(f"{int(946_684_800 - 86400 - time.time())}\n")  # 1999-12-31
    config = tmp_path / "homeagent.toml"
    config.write_text(config_text(tmp_path / "state", free_udp_port()))
    env = {**os.environ, "LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    out = subprocess.run([sys.executable, "-m", "homeagent", "run", "--config", str(config)], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out
    [line] = out.stderr.strip().splitlines()
    assert "the system clock reads 1999-12-31" in line and "before 2000" in line, line
