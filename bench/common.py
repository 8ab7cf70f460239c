"""What the benchmarks share: configs, daemons started and stopped by PID, the load client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KEY = "00112233445566778899aabbccddeeff"
SPI = 256
PEER_KEY = "ffeeddccbbaa99887766554433221100"
VIRTUAL = "127.0.0.10"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def write_config(
    directory: Path,
    address: str,
    port: int,
    home_network: str = "10.1.0.0/16",
    peers: list[str] | None = None,
    persistence: bool = True,
    **redundancy: Any,
) -> Path:
    """A member's config; with ``peers`` (possibly empty) it joins a group at VIRTUAL. ``persistence``:
    ``[home_agent] persistence`` (on, the default: its store in the member's state directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = f"""
[home_agent]
address = "{address}"
port = {port}
home_network = "{home_network}"
max_lifetime = 1800
state_dir = "{directory / 'state'}"
persistence = {str(persistence).lower()}

[[security_association]]
home_addresses = "{home_network}"
spi = {SPI}
key = "{KEY}"
"""
    if peers is not None:
        settings = {"virtual_address": VIRTUAL, "peers": peers, "advertisement_interval": 0.1,
                    "startup_wait": 0.5, **redundancy}
        text += "\n[redundancy]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        text += f"""
[[redundancy.security_association]]
peer = "127.0.0.0/24"
spi = 300
algorithm = "hmac-sha256"
key = "{PEER_KEY}"
"""
    path = directory / "homeagent.toml"
    path.write_text(text)
    return path


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` (all its threads) so far (/proc/PID/stat, fields 14
    and 15): on a shared host a rate swings with the neighbours' load, the CPU a unit of work costs much less."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (its forwarder, its netlink helper), from /proc."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "homeagent", "run", "--config", str(config), "--log-level", "warning"]
    )


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def status(config: Path) -> dict[str, Any] | None:
    from homeagent.config import load
    from homeagent.runtime import control

    try:
        return control.request(load(config).control_socket, "status", timeout=30)
    except control.ControlError:
        return None


def wait_role(config: Path, roles: tuple[str, ...], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(config)
        if st is not None and st["role"] in roles:
            return st
        time.sleep(0.05)
    raise RuntimeError(f"{config} did not reach {roles}")


def load(address: str, port: int, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run the load client (a separate process) and return its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", "homeagent", "mn", "load", "--home-agent", address, "--port", str(port),
         "--spi", str(SPI), "--key", KEY, *args],
        check=True, capture_output=True, text=True, timeout=timeout,
    )
    return json.loads(out.stdout)


def in_process_load(count: int, address: str) -> tuple[Any, list[bytes], list[bytes], float]:
    """For the in-process figures (no sockets): a lone Home Agent's config at ``address`` serving
    10.1.0.0/16, ``count`` authenticated first registrations of as many mobile nodes, their renewals, and the
    wall time they were made at (set the Home Agent's clock offset to it: every round finds them fresh)."""
    from ipaddress import IPv4Address

    from homeagent.config import parse as parse_config
    from homeagent.mobile_node import MobileNode
    from homeagent.wire.auth import Algorithm, SecurityAssociation

    sa = SecurityAssociation(SPI, Algorithm.HMAC_MD5, bytes.fromhex(KEY))
    nodes = [MobileNode(IPv4Address(0x0A010000 + 1 + i), IPv4Address(address), sa, 434) for i in range(count)]
    built = time.time()
    requests = [node.request(IPv4Address("192.0.2.1"), 600) for node in nodes]
    renewals = [node.request(IPv4Address("192.0.2.1"), 600) for node in nodes]
    config = parse_config(f"""
[home_agent]
address = "{address}"
home_network = "10.1.0.0/16"
state_dir = "/nonexistent"
persistence = false

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = {SPI}
algorithm = "hmac-md5"
key = "{KEY}"
""")
    return config, requests, renewals, built
