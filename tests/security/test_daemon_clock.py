"""A real daemon whose wall clock is stepped by an hour, forward and back, while it holds bindings
(libfaketime, preloaded into the daemon only, with the monotonic clock left alone): no binding expires
early or outlives its lifetime; only what is stamped on the wire follows the new time. Skipped where
libfaketime is not installed (`.ci/run` installs Debian's faketime)."""

from __future__ import annotations

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


@pytest.fixture
def stepped_daemon(tmp_path):
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
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
    while True:
        try:
            control.request(sock, "status", timeout=1)
            break
        except control.ControlError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.log").read_text()
            time.sleep(0.05)
    try:
        yield port, sock, offset
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        stderr.close()
        assert "Traceback" not in (tmp_path / "stderr.log").read_text()


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
