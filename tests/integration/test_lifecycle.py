"""Starting and stopping: config errors refuse to start (naming the key, binding nothing), one daemon per
state_dir, stale control sockets, privileged ports, and a clean stop on SIGTERM/SIGINT with bindings held."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import HA_ADDRESS, KEY, S, config_text, free_udp_port, homeagent, port_is_free, rrq

SA_TEMPLATE = '[[security_association]]\nhome_addresses = "10.1.0.0/16"\nspi = 256\nkey = "{key}"\n{extra}'


def run_and_wait(config: Path, timeout: float = 10.0, env=None, prefix=()) -> tuple[int, str, float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [*prefix, sys.executable, "-m", "homeagent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return r.returncode, r.stderr, time.monotonic() - t0


# -- configuration errors --------------------------------------------------------------------------

CASES = {
    "unknown key": (dict(extra_home_agent='colour = "blue"\n'), "home_agent.colour", 2),
    "bad address": (dict(address="127.0.0.300"), "home_agent.address", 2),
    "short key": (dict(associations=SA_TEMPLATE.format(key="0011223344556677", extra="")),
                  "security_association[0].key", 2),
    "unknown sa key": (dict(associations=SA_TEMPLATE.format(key=KEY.hex(), extra='lifetime = 5\n')),
                       "security_association[0].lifetime", 2),
    "bad algorithm": (dict(associations=SA_TEMPLATE.format(key=KEY.hex(), extra='algorithm = "md4"\n')),
                      "security_association[0].algorithm", 2),
    "reserved spi": (dict(associations=SA_TEMPLATE.format(key=KEY.hex(), extra="").replace("256", "255")),
                     "security_association[0].spi", 2),
    "bad prefix": (dict(home_network="10.1.0.0/33"), "home_agent.home_network", 2),
    "lifetime range": (dict(max_lifetime=0), "home_agent.max_lifetime", 2),
    "address not on this host": (dict(address="192.0.2.1"), "home_agent.address", 1),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_config_error_refuses_to_start(tmp_path, case):
    overrides, key, status = CASES[case]
    port = free_udp_port()
    state_dir = tmp_path / "state"
    config = tmp_path / "bad.toml"
    config.write_text(config_text(state_dir, port, **overrides))
    rc, stderr, elapsed = run_and_wait(config)
    assert rc == status, stderr
    assert key in stderr, stderr
    assert "Traceback" not in stderr
    assert elapsed < 5
    # nothing listens: the registration port is free and there is no control socket
    assert port_is_free(HA_ADDRESS, port)
    assert not (state_dir / "control.sock").exists()


def test_missing_config_file(tmp_path):
    rc, stderr, _ = run_and_wait(tmp_path / "nope.toml")
    assert rc == 2 and "nope.toml" in stderr


def test_unwritable_state_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    port = free_udp_port()
    config = tmp_path / "c.toml"
    config.write_text(config_text(blocker / "state", port))
    rc, stderr, _ = run_and_wait(config)
    assert rc == 1 and "home_agent.state_dir" in stderr, stderr
    assert port_is_free(HA_ADDRESS, port)


# -- one daemon per state_dir ----------------------------------------------------------------------


def test_second_daemon_same_port_refuses(daemons):
    first = daemons.start("first")
    rc, stderr, elapsed = run_and_wait(first.config_path)
    assert rc != 0 and elapsed < 5
    assert "home_agent.address" in stderr and "in use" in stderr.lower(), stderr
    assert first.running() and first.status()["role"] == "active"


def test_second_daemon_same_state_dir_refuses(daemons):
    first = daemons.start("first")
    second = daemons.config("second", state_dir=first.state_dir)  # same state_dir, another port
    rc, stderr, elapsed = run_and_wait(second.config_path)
    assert rc == 1 and elapsed < 5
    assert "another daemon" in stderr and str(first.control_socket) in stderr, stderr
    assert first.running()
    assert port_is_free(HA_ADDRESS, second.port), "the refused daemon left its registration port bound"


def test_refused_second_daemon_leaves_first_reachable(daemons):
    """Regression: the commit that introduced the daemon (2ef5145) unlinked the control socket in
    Daemon.run's outer finally, so a second daemon refused for a live socket removed the first daemon's."""
    first = daemons.start("first")
    second = daemons.config("second", state_dir=first.state_dir)
    rc, _, _ = run_and_wait(second.config_path)
    assert rc == 1
    assert first.control_socket.exists(), "the first daemon's control socket was removed"
    r = homeagent("status", "--config", str(first.config_path), "--json")
    assert r.returncode == 0, r.stderr


def test_stale_control_socket_from_killed_daemon_is_reclaimed(daemons):
    first = daemons.start("crashed")
    first.expect_clean_exit = False
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert first.control_socket.exists()  # left behind by the crash
    again = daemons.config("again", state_dir=first.state_dir, port=first.port)
    again.start()
    assert again.status()["bindings"] == 0
    mn = again.mn()
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1")).code == 0
    mn.close()


# -- privileged port -------------------------------------------------------------------------------


def test_port_434_unprivileged_is_refused_with_a_hint():
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("root, and no setpriv to drop privilege")
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            if int(f.read()) <= 434:
                pytest.skip("this kernel lets unprivileged users bind port 434")
    except OSError:
        pass
    src = Path(__import__("homeagent").__file__).parent.parent
    root = Path(tempfile.mkdtemp(prefix="homeagent-unpriv-"))
    try:
        root.chmod(0o777)
        config = root / "c.toml"
        config.write_text(config_text(root / "state", None))  # no port: the default, 434
        config.chmod(0o644)
        prefix: tuple[str, ...] = ()
        env = dict(os.environ, PYTHONPATH=str(src))
        if os.geteuid() == 0:
            prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
            probe = subprocess.run([*prefix, sys.executable, "-c", "import homeagent.cli"], env=env,
                                   capture_output=True, timeout=20)
            if probe.returncode != 0:
                pytest.skip("nobody cannot import homeagent here")
        rc, stderr, elapsed = run_and_wait(config, env=env, prefix=prefix)
        assert rc == 1, stderr
        assert "home_agent.port" in stderr and "privilege" in stderr, stderr
        assert elapsed < 5
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_port_434_as_root(daemons):
    if os.geteuid() != 0:
        pytest.skip("binding port 434 needs root here")
    address = "127.0.0.77"
    if not port_is_free(address, 434):
        pytest.skip(f"{address}:434 is taken")
    ha = daemons.start("p434", address=address, port=None)
    assert ha.status()["port"] == 434
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1", home_agent=address)).code == 0
    mn.close()


# -- stopping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_with_bindings_held(daemons, sig):
    ha = daemons.start("stop")
    mn = ha.mn()
    for i in range(3):
        assert mn.exchange(rrq("10.1.0.1", f"192.0.2.{i + 1}", flags=S)).code == 0
    assert mn.exchange(rrq("10.1.0.2", "192.0.2.9")).code == 0
    mn.close()
    assert ha.status()["bindings"] == 4
    t0 = time.monotonic()
    assert ha.stop(sig) == 0, ha.stderr()
    assert time.monotonic() - t0 < 3
    assert not ha.control_socket.exists()
    assert port_is_free(ha.address, ha.port)
    assert "Traceback" not in ha.stderr()
    r = homeagent("status", "--config", str(ha.config_path))
    assert r.returncode == 1
