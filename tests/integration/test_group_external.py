"""``redundancy.election = "external"``: another daemon (keepalived's notify scripts) decides who is active
with ``homeagent role active|standby``; the members never elect themselves, and replication goes on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemons import KEY, VIP, bindings, cli, group_config, status, wait

from .conftest import port_is_free



def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    assert port_is_free("127.0.0.2", port)
    return port


def config(tmp: Path, address: str, other: str, port: int) -> Path:
    return group_config(tmp, address, port, peers=[other], election="external", startup_wait=0.3)


def register(port: int, hoa: str, coa: str) -> dict:
    out = cli("mn", "register", "--home-agent", VIP, "--port", str(port), "--spi", "256", "--key", KEY,
              "--home-address", hoa, "--care-of", coa, "--timeout", "0.3", "--retries", "2", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_keepalived_style_role_changes(tmp_path):
    port = free_port()
    a, b = config(tmp_path, "127.0.0.2", "127.0.0.3", port), config(tmp_path, "127.0.0.3", "127.0.0.2", port)
    procs = [subprocess.Popen([sys.executable, "-m", "homeagent", "run", "--config", str(p)],
                              stderr=subprocess.PIPE, text=True) for p in (a, b)]
    try:
        for p in (a, b):
            wait("standby", lambda p=p: (status(p) or {}).get("role") == "standby")
        time.sleep(1.0)  # far past the master-down interval: nobody elects itself
        assert status(a)["role"] == status(b)["role"] == "standby"

        out = cli("role", "active", "--config", str(a))
        assert out.returncode == 0 and "active" in out.stdout
        first = register(port, "10.1.0.5", "192.0.2.10")
        assert first["code"] == 0
        wait("the binding on B", lambda: any(
            r["identification"] == first["identification"]
            for r in bindings(b)))

        # keepalived moves the address: A is told to stand by, B to be active.
        assert cli("role", "standby", "--config", str(a)).returncode == 0
        assert cli("role", "active", "--config", str(b)).returncode == 0
        second = register(port, "10.1.0.6", "192.0.2.11")
        assert second["code"] == 0
        st = status(b)
        assert st["role"] == "active" and st["bindings"] == 2
        assert [t["reason"] for t in st["transitions"]][-1] == "told to be active (external election)"
        assert status(a)["role"] == "standby"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=10)
    assert [p.returncode for p in procs] == [0, 0], [p.stderr.read() for p in procs]


def test_role_is_refused_without_an_external_election(tmp_path):
    port = free_port()
    path = config(tmp_path, "127.0.0.2", "127.0.0.3", port)
    path.write_text(path.read_text().replace('election = "external"\n', ""))
    proc = subprocess.Popen([sys.executable, "-m", "homeagent", "run", "--config", str(path)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait("the member to start", lambda: status(path))
        out = cli("role", "active", "--config", str(path))
        assert out.returncode != 0 and "internal" in out.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0
