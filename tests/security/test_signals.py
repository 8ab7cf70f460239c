"""No signal but SIGKILL costs a binding (issue 9, point 4): SIGHUP reloads what can change safely and
keeps every binding, a configuration that does not load changes nothing, the signals a Home Agent has no
use for are ignored, and SIGTERM and SIGQUIT stop it cleanly. Real ``homeagent run`` processes; the
10,000 bindings are registered with ``homeagent mn load``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import (  # noqa: F401 - daemons is a fixture
    KEY,
    HomeAgentProcess,
    config_text,
    daemons,
    free_udp_port,
    homeagent,
    rrq,
)

NEW_KEY = bytes.fromhex("5a5b5c5d5e5f606162636465666768ff")
MANY = 10_000


def associations(key: bytes) -> str:
    return f'[[security_association]]\nhome_addresses = "10.1.0.0/16"\nspi = 256\nkey = "{key.hex()}"\n'


def rewrite(ha: HomeAgentProcess, text: str) -> None:
    """Replace the daemon's config file as an editor would: write aside, then rename over it."""
    aside = ha.config_path.with_suffix(".new")
    aside.write_text(text)
    aside.replace(ha.config_path)


def hangup(ha: HomeAgentProcess, counter: str = "reloads") -> None:
    """SIGHUP, and wait until the daemon has counted the reload (or the failed one)."""
    before = ha.counters().get(counter, 0)
    os.kill(ha.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while ha.counters().get(counter, 0) == before:
        assert ha.running(), f"the daemon died on SIGHUP ({ha.proc.returncode}):\n{ha.stderr()}"
        assert time.monotonic() < deadline, f"no {counter} counted after SIGHUP:\n{ha.stderr()}"
        time.sleep(0.02)


def load(ha: HomeAgentProcess, count: int) -> None:
    """``count`` mobile nodes from 10.1.0.1 registered (again, for any whose reply was lost)."""
    for _ in range(3):
        r = homeagent("mn", "load", "--config", str(ha.config_path), "--mobile-nodes", str(count),
                      "--window", "128", timeout=120)
        assert r.stdout, r.stderr
        if ha.status()["bindings"] == count:
            return
    pytest.fail(f"only {ha.status()['bindings']} of {count} bindings after three loads: {r.stdout}")


def table(ha: HomeAgentProcess) -> dict[str, tuple[str, int, int]]:
    return {b["home_address"]: (b["care_of_address"], b["lifetime"], b["identification"])
            for b in ha.bindings_direct()}


def test_sighup_with_ten_thousand_bindings_reloads_and_keeps_every_one(daemons):
    ha = daemons.start("hup", max_lifetime=1800, associations=associations(KEY))
    load(ha, MANY)
    before = table(ha)
    assert len(before) == MANY

    other_port = free_udp_port()
    rewrite(ha, config_text(ha.state_dir, other_port, max_lifetime=300, associations=associations(NEW_KEY))
            + '\n[log]\nlevel = "debug"\n')
    hangup(ha)

    status = homeagent("status", "--config", str(ha.config_path), "--json")  # the socket has not moved
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["bindings"] == MANY
    assert table(ha) == before, "a binding changed on SIGHUP"
    assert ha.status()["port"] == ha.port
    log = ha.stderr()
    assert "needs a restart: home_agent.port" in log, log
    assert "reloaded" in log and "home_agent.max_lifetime 1800 -> 300" in log and "security_association" in log
    assert NEW_KEY.hex() not in log and KEY.hex() not in log, "a key in the log"

    mn = ha.mn()  # still on the old port: the port needs a restart
    old = mn.exchange(rrq("10.1.200.1", "192.0.2.1", key=KEY))
    assert old.code == 131 and old.authentic(NEW_KEY)
    new = mn.exchange(rrq("10.1.200.1", "192.0.2.1", key=NEW_KEY, lifetime=600))
    assert (new.code, new.lifetime) == (0, 300) and new.authentic(NEW_KEY)
    mn.sock.sendto(b"\x01\x00", ("127.0.0.2", ha.port))  # too short: discarded, logged at debug now
    mn.close()
    deadline = time.monotonic() + 5
    while "discarded from" not in ha.stderr():
        assert time.monotonic() < deadline, "[log] level = debug was not applied on SIGHUP"
        time.sleep(0.02)
    assert ha.status()["bindings"] == MANY + 1
    assert ha.counters()["reloads"] == 1


def test_a_config_that_does_not_load_changes_nothing(daemons):
    ha = daemons.start("broken", max_lifetime=1800)
    good = ha.config_path.read_text()
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1")).code == 0

    rewrite(ha, good.replace("max_lifetime = 1800", "max_lifetime = 0"))
    hangup(ha, "reload_failed")
    rewrite(ha, good.replace('[home_agent]', '[home_agent'))  # not TOML
    hangup(ha, "reload_failed")
    ha.config_path.unlink()
    hangup(ha, "reload_failed")

    assert ha.running() and ha.status()["bindings"] == 1
    counters = ha.counters()
    assert (counters["reload_failed"], counters.get("reloads", 0)) == (3, 0)
    log = ha.stderr()
    assert "reload failed, nothing changed: home_agent.max_lifetime" in log, log
    assert "not valid TOML" in log and "cannot read" in log
    reply = mn.exchange(rrq("10.1.0.2", "192.0.2.1", lifetime=1800))  # the old key and the old maximum
    assert (reply.code, reply.lifetime) == (0, 1800)

    rewrite(ha, good.replace("max_lifetime = 1800", "max_lifetime = 100"))
    hangup(ha)
    reply = mn.exchange(rrq("10.1.0.3", "192.0.2.1", lifetime=1800))
    assert (reply.code, reply.lifetime) == (0, 100)
    mn.close()


def test_a_file_that_changes_only_what_needs_a_restart(daemons):
    ha = daemons.start("restart")
    rewrite(ha, config_text(ha.state_dir, ha.port, home_network="10.0.0.0/8", address="127.0.0.3"))
    hangup(ha)
    log = ha.stderr()
    assert "needs a restart: home_agent.address" in log and "needs a restart: home_agent.home_network" in log
    assert "reloaded " in log and ": nothing else changed" in log  # the restart keys are not changes
    status = ha.status()
    assert status["address"] == "127.0.0.2"
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1")).code == 0  # still at 127.0.0.2, 10.1.0.0/16
    mn.close()


IGNORED = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE, signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF,
           signal.SIGIO, signal.SIGPWR, signal.SIGXCPU, signal.SIGXFSZ, signal.SIGRTMIN, signal.SIGRTMIN + 5,
           signal.SIGRTMAX]


def test_signals_with_no_use_do_not_end_it(daemons):
    ha = daemons.start("ignore")
    mn = ha.mn()
    for i in range(3):
        assert mn.exchange(rrq(f"10.1.0.{i + 1}", "192.0.2.1")).code == 0
    for sig in IGNORED:
        os.kill(ha.pid, sig)
        time.sleep(0.05)
        assert ha.running(), f"signal {sig} ended the daemon ({ha.proc.returncode}):\n{ha.stderr()}"
        assert ha.status()["bindings"] == 3
    assert mn.exchange(rrq("10.1.0.9", "192.0.2.1")).code == 0
    mn.close()
    log = ha.stderr()
    assert "status: role active, 3 bindings, peers: none" in log, log  # SIGUSR1
    assert "SIGUSR2 ignored" in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["SIGTERM", "SIGQUIT"])
def test_sigterm_and_sigquit_stop_it_cleanly(daemons, sig):
    ha = daemons.start("stop")
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1")).code == 0
    mn.close()
    assert ha.stop(sig) == 0, ha.stderr()
    assert not ha.control_socket.exists()
    assert "stopping: 1 bindings held" in ha.stderr()


def test_sigterm_with_a_control_client_connected_stops_without_an_error(daemons):
    """A client connected to the control socket that has not sent its request yet (or a slow reader of a
    long answer) when SIGTERM comes: the daemon stops cleanly and logs no error or traceback."""
    ha = daemons.start("stop-with-client")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(ha.control_socket))
        time.sleep(0.2)  # accepted: its handler waits for the request line
        assert ha.stop(signal.SIGTERM) == 0, ha.stderr()
    finally:
        client.close()
    log = ha.stderr()
    assert "stopping: 0 bindings held" in log, log
    assert "level=error" not in log and "Traceback" not in log, log


# -- the log level at start ------------------------------------------------------------------------


@pytest.mark.parametrize("flag, file_level, serving_logged", [
    (None, None, True),  # info by default
    (None, "warning", False),  # the file decides
    ("info", "warning", True),  # --log-level given: it wins at start
])
def test_log_level_at_start(tmp_path, flag, file_level, serving_logged):
    port = free_udp_port()
    config = tmp_path / "ha.toml"
    config.write_text(config_text(tmp_path / "state", port)
                      + (f'\n[log]\nlevel = "{file_level}"\n' if file_level else ""))
    args = [sys.executable, "-m", "homeagent", "run", "--config", str(config)]
    if flag:
        args += ["--log-level", flag]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "state" / "control.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert ("serving on" in stderr) is serving_logged, stderr


def test_reload_keeps_a_file_without_a_level_at_the_running_level(daemons):
    """--log-level info at start, then a file without [log]: info stays (debug lines do not appear)."""
    ha = daemons.start("level")
    hangup(ha)
    mn = ha.mn()
    mn.sock.sendto(b"\x01\x00", ("127.0.0.2", ha.port))
    mn.close()
    time.sleep(0.2)
    assert "discarded from" not in ha.stderr()
