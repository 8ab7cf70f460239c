"""packaging/homeagent.service and its ebpf drop-in: what the unit promises (docs/operations.md, "Running
under systemd"), that its command lines are ones our parser takes, and ``systemd-analyze verify``."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from homeagent.cli import _parser

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNIT = PACKAGING / "homeagent.service"
EBPF = PACKAGING / "ebpf.conf"
CLEANUP = PACKAGING / "homeagent-cleanup.service"


def settings(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, by key (a key may repeat), comments and sections aside."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


UNIT_SETTINGS = settings(UNIT)


def one(key: str) -> str:
    [value] = UNIT_SETTINGS[key]
    return value


def test_the_unit_is_notify_with_watchdog_state_directory_and_cleanup():
    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert one("WatchdogSec")
    assert one("StateDirectory") == "homeagent" and one("StateDirectoryMode") == "0700"
    assert shlex.split(one("ExecStopPost"))[1:3] == ["cleanup", "--config"]


def test_capabilities_instead_of_root_and_the_hardening():
    assert "User" in UNIT_SETTINGS and one("User") != "root"
    caps = {"CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(one("AmbientCapabilities").split()) == caps == set(one("CapabilityBoundingSet").split())
    assert one("ProtectSystem") == "strict" and one("PrivateTmp") == "yes" and one("NoNewPrivileges") == "yes"
    assert one("RestrictAddressFamilies").split() == ["AF_INET", "AF_UNIX", "AF_NETLINK", "AF_PACKET"]
    assert one("SystemCallFilter") == "@system-service"
    assert one("DeviceAllow") == "/dev/net/tun rw"  # the userspace data plane's TUN device
    ebpf = settings(EBPF)
    assert set(ebpf["AmbientCapabilities"][0].split()) == {"CAP_BPF", "CAP_PERFMON"}
    assert ebpf["SystemCallFilter"] == ["bpf"] and ebpf["ReadWritePaths"] == ["/sys/fs/bpf"]


@pytest.mark.parametrize("key", ["ExecStart", "ExecStopPost"])
def test_the_command_lines_are_ours(key):
    argv = shlex.split(one(key))
    assert argv[0] == "/usr/bin/homeagent"
    args = _parser().parse_args(argv[1:])  # a renamed option would end here with SystemExit
    assert args.config == Path("/etc/homeagent/homeagent.toml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("with_ebpf", [False, True], ids=["unit", "unit+ebpf.conf"])
def test_systemd_analyze_verify(tmp_path, with_ebpf):
    """The unit as installed, but pointing at this interpreter's homeagent (verify checks that the binary
    exists); the drop-in appended as the later sections it stands for."""
    executable = shutil.which("homeagent") or f"{sys.executable} -m homeagent"
    text = UNIT.read_text().replace("/usr/bin/homeagent", executable)
    if with_ebpf:
        text += "\n" + EBPF.read_text()
    unit = tmp_path / "homeagent.service"
    unit.write_text(text)
    cleanup = tmp_path / CLEANUP.name  # what the drop-in's OnFailure= starts
    cleanup.write_text(CLEANUP.read_text().replace("/usr/bin/homeagent", executable))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit), str(cleanup)], capture_output=True,
                          text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if "homeagent" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_a_unit_that_ends_failed_with_ebpf_is_cleaned_up_by_a_oneshot_that_runs_our_cleanup():
    """ExecStopPost='s cleanup keeps a lone Home Agent's ebpf program for Restart= (runtime/cleanup.py,
    ``kept_for_restart``); when the unit ends failed instead, OnFailure= runs the cleanup again, without
    $SERVICE_RESULT, which takes it off."""
    assert settings(EBPF)["OnFailure"] == [CLEANUP.name]
    cleanup = settings(CLEANUP)
    assert cleanup["Type"] == ["oneshot"] and cleanup["User"] == UNIT_SETTINGS["User"]
    argv = shlex.split(cleanup["ExecStart"][0])
    assert argv[0] == "/usr/bin/homeagent" and argv[1] == "cleanup"
    assert _parser().parse_args(argv[1:]).config == Path("/etc/homeagent/homeagent.toml")
