"""Members of a group as separate ``homeagent`` processes, driven through the CLI, for the tests that
build their own groups (the external election, the namespace tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEY = "00112233445566778899aabbccddeeff"
VIP = "127.0.0.10"


def group_config(tmp: Path, address: str, port: int, *, name: str | None = None, virtual_address: str = VIP,
                 group: str = "127.0.0.0/24", home_network: str = "10.1.0.0/16",
                 home_agent: dict[str, Any] | None = None, **redundancy: Any) -> Path:
    """A member at ``address`` (files named after ``name``, or the address): the mobile nodes of
    ``home_network`` under one key, one HA-HA key for the members in ``group``, fast timers, and the
    ``home_agent`` and ``redundancy`` settings given."""
    settings = {"virtual_address": virtual_address, "advertisement_interval": 0.1, "startup_wait": 0.5,
                **redundancy}
    name = name or address
    path = tmp / f"{name}.toml"
    path.write_text(f"""
[home_agent]
address = "{address}"
port = {port}
home_network = "{home_network}"
state_dir = "{tmp / name}"
{_toml(home_agent or {})}
[[security_association]]
home_addresses = "{home_network}"
spi = 256
key = "{KEY}"

[redundancy]
{_toml(settings)}
[[redundancy.security_association]]
peer = "{group}"
spi = 300
algorithm = "hmac-sha256"
key = "{KEY * 2}"
""")
    return path


def _toml(settings: dict[str, Any]) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "homeagent", *args], capture_output=True, text=True, timeout=20)


def status(path: Path) -> dict[str, Any] | None:
    out = cli("status", "--config", str(path), "--json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def bindings(path: Path) -> list[dict[str, Any]]:
    out = cli("bindings", "--config", str(path), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait(what: str, check: Callable[[], Any], timeout: float = 10.0,
         error: type[Exception] = AssertionError) -> Any:
    """``check()``'s first true value; ``error`` when none came within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise error(f"timed out waiting for {what}")
