"""A hostile state directory (issue 9, point 5): whoever can write in ``state_dir`` can take the control
socket or stop the start, so the daemon refuses, with one line naming it, a state_dir that is a symlink,
not a directory, another user's, or writable by group or others; it creates a missing one 0700; and it
never removes anything at ``control.sock`` that is not a socket. Real ``homeagent run`` processes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401 - daemons is a fixture
    HA_ADDRESS,
    config_text,
    daemons,
    free_udp_port,
    port_is_free,
    rrq,
)

NOBODY = 65534
PREFIX = "homeagent: cannot start: home_agent.state_dir: "


def refused(config: Path, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``homeagent run`` and return its exit status and standard error; a daemon that starts (the
    directory was accepted) is stopped, and the test fails."""
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "homeagent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, stderr = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"the daemon started with this state_dir:\n{stderr}")
    return proc.returncode, stderr


def write_config(tmp_path: Path, state_dir: Path) -> tuple[Path, int]:
    port = free_udp_port()
    config = tmp_path / "homeagent.toml"
    config.write_text(config_text(state_dir, port))
    config.chmod(0o644)
    return config, port


def test_a_symlinked_state_dir_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    state = tmp_path / "state"
    state.symlink_to(target)
    config, port = write_config(tmp_path, state)
    rc, stderr = refused(config)
    assert (rc, stderr) == (1, f"{PREFIX}{state} is a symlink\n")
    assert list(target.iterdir()) == [], "the daemon put something where the symlink points"
    assert port_is_free(HA_ADDRESS, port)


def test_a_dangling_symlink_is_refused_and_not_followed(tmp_path):
    state = tmp_path / "state"
    state.symlink_to(tmp_path / "not-yet")
    config, _ = write_config(tmp_path, state)
    rc, stderr = refused(config)
    assert (rc, stderr) == (1, f"{PREFIX}{state} is a symlink\n")
    assert not (tmp_path / "not-yet").exists(), "the daemon created the symlink's target"


def test_a_file_is_refused(tmp_path):
    state = tmp_path / "state"
    state.write_text("")
    config, _ = write_config(tmp_path, state)
    rc, stderr = refused(config)
    assert (rc, stderr) == (1, f"{PREFIX}{state} is not a directory\n")


def test_another_users_directory_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    config, _ = write_config(tmp_path, state)
    rc, stderr = refused(config)
    assert (rc, stderr) == (1, f"{PREFIX}{state} is owned by uid {NOBODY}, not uid 0 (the daemon's)\n")
    assert list(state.iterdir()) == []


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777, 0o1777, 0o730], ids=oct)
def test_a_directory_others_may_write_to_is_refused(tmp_path, mode):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    config, port = write_config(tmp_path, state)
    rc, stderr = refused(config)
    assert (rc, stderr) == (1, f"{PREFIX}{state} is writable by group or others (mode {mode:04o}); chmod go-w it\n")
    assert list(state.iterdir()) == []
    assert stat.S_IMODE(state.stat().st_mode) == mode, "the daemon changed a directory it did not make"
    assert port_is_free(HA_ADDRESS, port)


def test_a_missing_directory_is_created_0700_with_its_parents(daemons, tmp_path):
    state = tmp_path / "var" / "lib" / "homeagent"
    old_umask = os.umask(0o022)
    try:
        ha = daemons.start("created", state_dir=state)
    finally:
        os.umask(old_umask)
    st = os.lstat(state)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(tmp_path / "var").st_mode) == 0o755  # parents: the usual umask
    sock = os.lstat(ha.control_socket)
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
    assert ha.status()["bindings"] == 0


def test_happy_path_an_existing_private_directory(daemons, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # readable by others is fine: only writing is refused
    ha = daemons.start("happy", state_dir=state)
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1")).code == 0
    mn.close()
    assert ha.status()["bindings"] == 1
    assert stat.S_IMODE(state.stat().st_mode) == 0o755


# -- what is planted at control.sock -----------------------------------------------------------------


def test_a_regular_file_planted_at_the_control_socket_is_not_deleted(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    planted = state / "control.sock"
    planted.write_text("precious\n")
    config, port = write_config(tmp_path, state)
    rc, stderr = refused(config)
    assert rc == 1
    assert stderr == (f"homeagent: cannot start: control socket: {planted} is a regular file, not a socket; "
                      "refusing to remove it (remove it by hand)\n")
    assert planted.read_text() == "precious\n"
    assert port_is_free(HA_ADDRESS, port)


def test_a_symlink_planted_at_the_control_socket_is_not_deleted(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = state / "control.sock"
    planted.symlink_to(victim)
    config, _ = write_config(tmp_path, state)
    rc, stderr = refused(config)
    assert rc == 1 and f"{planted} is a symlink, not a socket" in stderr, stderr
    assert planted.is_symlink() and victim.read_text() == "precious\n"


# -- a daemon that is not root -----------------------------------------------------------------------


@pytest.fixture
def as_nobody() -> Iterator[tuple[Path, tuple[str, ...], dict[str, str]]]:
    """A directory nobody can write in, and the prefix and environment that run the daemon as nobody."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the daemon as another user")
    src = Path(__import__("homeagent").__file__).parent.parent
    env = dict(os.environ, PYTHONPATH=str(src))
    prefix = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    root = Path(tempfile.mkdtemp(prefix="homeagent-nobody-"))
    try:
        root.chmod(0o755)
        home = root / "home"
        home.mkdir(mode=0o755)
        os.chown(home, NOBODY, NOBODY)
        probe = subprocess.run([*prefix, sys.executable, "-c", "import homeagent.cli"], env=env,
                               capture_output=True, timeout=20)
        if probe.returncode != 0:
            pytest.skip("nobody cannot import homeagent here")
        yield home, prefix, env
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_non_root_daemon_refuses_roots_directory(as_nobody):
    home, prefix, env = as_nobody
    state = home / "state"
    state.mkdir(mode=0o700)  # made by root: root's
    config, _ = write_config(home, state)
    rc, stderr = refused(config, prefix, env)
    assert (rc, stderr) == (1, f"{PREFIX}{state} is owned by uid 0, not uid {NOBODY} (the daemon's)\n")


def test_a_non_root_daemon_creates_and_uses_its_own(as_nobody):
    home, prefix, env = as_nobody
    state = home / ".local" / "state" / "homeagent"
    config, _ = write_config(home, state)
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "homeagent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        status = subprocess.run([*prefix, sys.executable, "-c", _WAIT_FOR_STATUS, str(config)], env=env,
                                capture_output=True, text=True, timeout=20)
        assert status.returncode == 0, status.stderr
        st = os.lstat(state)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)
        assert os.lstat(home / ".local").st_uid == NOBODY
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr


_WAIT_FOR_STATUS = """
import sys, time
from homeagent.config import load
from homeagent.runtime import control
config = load(sys.argv[1])
for _ in range(200):
    try:
        control.request(config.control_socket, "status", timeout=0.5)
        sys.exit(0)
    except control.ControlError:
        time.sleep(0.05)
sys.exit("no status")
"""
