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


def group_config(tmp: Path, address: str, port: int, **redundancy: Any) -> Path:
    """A member at ``address``: home network 10.1.0.0/16, one /24 HA-HA key, fast timers, and ``redundancy``."""
    settings = {"virtual_address": VIP, "advertisement_interval": 0.1, "startup_wait": 0.5, **redundancy}
    path = tmp / f"{address}.toml"
    path.write_text(f"""
[home_agent]
address = "{address}"
port = {port}
home_network = "10.1.0.0/16"
state_dir = "{tmp / address}"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
key = "{KEY}"

[redundancy]
{"".join(f"{k} = {json.dumps(v)}{chr(10)}" for k, v in settings.items())}
[[redundancy.security_association]]
peer = "127.0.0.0/24"
spi = 300
algorithm = "hmac-sha256"
key = "{KEY * 2}"
""")
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "homeagent", *args], capture_output=True, text=True, timeout=20)


def status(path: Path) -> dict[str, Any] | None:
    out = cli("status", "--config", str(path), "--json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def bindings(path: Path) -> list[dict[str, Any]]:
    out = cli("bindings", "--config", str(path), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
