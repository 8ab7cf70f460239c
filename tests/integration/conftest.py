"""Real ``homeagent run`` processes on loopback, and a Mobile IP toolkit that does not use our code.

Requests are built with scapy and authenticated with ``hmac``/``hashlib`` here, so the daemon is checked
against an independent implementation of RFC 5944 (sections 3.3, 3.4, 3.5.2 and 5.7.1), not against itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.mobileip import MobileIP, MobileIPRRQ

from homeagent import demo
from homeagent.runtime import control

HA_ADDRESS = "127.0.0.2"
MN_ADDRESS = "127.0.0.1"
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
SPI = 256
# A second association, for 10.2.0.0/16: covered by a key but outside home_network (code 129).
OTHER_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
OTHER_SPI = 257
WRONG_KEY = bytes.fromhex("0f" * 16)

NTP_EPOCH_OFFSET = 2_208_988_800
NTP_SECOND = 1 << 32
LOW32 = 0xFFFFFFFF

S, B, D, M, G, R_BIT, T, X_BIT = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


# -- independent Mobile IP helpers ------------------------------------------------------------------


def free_udp_port(address: str = HA_ADDRESS) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


port_is_free = demo.port_is_free


_last_ident = 0


def ntp_now(offset_seconds: float = 0.0) -> int:
    """The current time as a 64-bit NTP timestamp; strictly increasing within this process."""
    global _last_ident
    t = time.time() + offset_seconds + NTP_EPOCH_OFFSET
    ident = (int(t) << 32) | int((t % 1.0) * NTP_SECOND)
    if offset_seconds == 0.0:
        if ident <= _last_ident:
            ident = _last_ident + 1
        _last_ident = ident
    return ident


def ntp_seconds_now() -> int:
    return int(time.time()) + NTP_EPOCH_OFFSET


def mhae(covered: bytes, key: bytes = KEY, spi: int = SPI) -> bytes:
    """Append a Mobile-Home Authentication Extension (type 32, length 20, SPI, HMAC-MD5) to ``covered``."""
    head = covered + bytes((32, 20)) + spi.to_bytes(4, "big")
    return head + hmac.new(key, head, hashlib.md5).digest()


def rrq_header(
    home_address: str,
    care_of: str,
    ident: int,
    lifetime: int = 600,
    flags: int = 0,
    home_agent: str = HA_ADDRESS,
) -> bytes:
    """The fixed 24 bytes of a Registration Request, built by scapy (flags are one raw byte)."""
    pkt = MobileIP(type=1) / MobileIPRRQ(
        flags=flags, lifetime=lifetime, homeaddr=home_address, haaddr=home_agent, coaddr=care_of, id=ident
    )
    data = bytes(pkt)
    assert len(data) == 24
    return data


def rrq(
    home_address: str,
    care_of: str,
    ident: int | None = None,
    lifetime: int = 600,
    flags: int = 0,
    home_agent: str = HA_ADDRESS,
    key: bytes = KEY,
    spi: int = SPI,
    before: bytes = b"",
    after: bytes = b"",
    authenticate: bool = True,
) -> bytes:
    """A Registration Request: header, extensions ``before`` the MHAE, the MHAE, extensions ``after``."""
    if ident is None:
        ident = ntp_now()
    message = rrq_header(home_address, care_of, ident, lifetime, flags, home_agent) + before
    if authenticate:
        message = mhae(message, key, spi)
    return message + after


@dataclass
class Reply:
    raw: bytes
    code: int
    lifetime: int
    home_address: str
    home_agent: str
    identification: int
    spi: int | None
    authenticator: bytes

    def authentic(self, key: bytes = KEY, spi: int = SPI) -> bool:
        """Exactly one MHAE, right after the fixed part, whose HMAC-MD5 verifies with ``key``."""
        raw = self.raw
        if len(raw) != 20 + 22 or raw[20] != 32 or raw[21] != 20 or self.spi != spi:
            return False
        expected = hmac.new(key, raw[:26], hashlib.md5).digest()
        return hmac.compare_digest(expected, raw[26:42])


def parse_reply(data: bytes) -> Reply:
    """Parse with scapy; the MHAE is read from the bytes scapy leaves as payload."""
    pkt = MobileIP(data)
    assert pkt.type == 3, f"not a Registration Reply: {data.hex()}"
    rrp = pkt.payload
    assert rrp.name.startswith("Mobile IP Registration Reply"), rrp.name
    tail = data[20:]
    spi = int.from_bytes(tail[2:6], "big") if len(tail) >= 6 else None
    return Reply(
        data, rrp.code, rrp.lifetime, rrp.homeaddr, rrp.haaddr, rrp.id, spi, tail[6:] if len(tail) >= 6 else b""
    )


class MobileNodeSocket:
    """A plain UDP socket on 127.0.0.1 talking to one Home Agent."""

    def __init__(self, address: str, port: int) -> None:
        self.target = (address, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((MN_ADDRESS, 0))

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.target)

    def receive(self, timeout: float = 2.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data, source = self.sock.recvfrom(4096)
        except (TimeoutError, socket.timeout):
            return None
        assert source == self.target, f"reply from {source}, expected {self.target}"
        return data

    def exchange(self, datagram: bytes, timeout: float = 2.0) -> Reply:
        self.drain()
        self.send(datagram)
        data = self.receive(timeout)
        assert data is not None, "no Registration Reply"
        return parse_reply(data)

    def silent(self, datagram: bytes, wait: float = 0.5) -> bool:
        """True when the daemon answers nothing within ``wait`` seconds."""
        self.drain()
        self.send(datagram)
        return self.receive(wait) is None

    def drain(self) -> list[bytes]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    out.append(self.sock.recv(4096))
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue
        finally:
            self.sock.setblocking(True)
        return out

    def close(self) -> None:
        self.sock.close()


# -- configs and daemons ----------------------------------------------------------------------------


def config_text(
    state_dir: Path,
    port: int,
    address: str = HA_ADDRESS,
    home_network: str = "10.1.0.0/16",
    max_lifetime: int = 1800,
    replay_tolerance: int = 7,
    simultaneous_bindings: int | None = 3,
    extra_home_agent: str = "",
    associations: str | None = None,
) -> str:
    if associations is None:
        associations = (
            f'[[security_association]]\nhome_addresses = "10.1.0.0/16"\nspi = {SPI}\n'
            f'algorithm = "hmac-md5"\nkey = "{KEY.hex()}"\n\n'
            f'[[security_association]]\nhome_addresses = "10.2.0.0/16"\nspi = {OTHER_SPI}\n'
            f'algorithm = "hmac-md5"\nkey = "{OTHER_KEY.hex()}"\n'
        )
    sim = "" if simultaneous_bindings is None else f"simultaneous_bindings = {simultaneous_bindings}\n"
    port_line = "" if port is None else f"port = {port}\n"
    return (
        "[home_agent]\n"
        f'address = "{address}"\n'
        f"{port_line}"
        f'home_network = "{home_network}"\n'
        f"max_lifetime = {max_lifetime}\n"
        f"replay_tolerance = {replay_tolerance}\n"
        f'state_dir = "{state_dir}"\n'
        f"{sim}{extra_home_agent}\n"
        f"{associations}\n"
        '[dataplane]\nbackend = "none"\n'
    )


def homeagent(*args: str, timeout: float = 20.0, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the ``homeagent`` CLI in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "homeagent", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@dataclass
class HomeAgentProcess:
    config_path: Path
    address: str
    port: int
    state_dir: Path
    stderr_path: Path
    proc: subprocess.Popen[bytes] | None = None
    expect_clean_exit: bool = True
    tolerate_traceback: bool = False  # only for tests that document a bug which logs one
    stopped_rc: int | None = field(default=None)

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> HomeAgentProcess:
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "homeagent", "run", "--config", str(self.config_path), "--log-level", "info"],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"daemon exited with {self.proc.returncode} at start-up:\n{self.stderr()}")
            try:
                control.request(self.control_socket, "status", timeout=0.5)
                return
            except (control.ControlError, OSError, ValueError):
                time.sleep(0.02)
        pytest.fail(f"daemon not ready within {timeout} s:\n{self.stderr()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon by PID, wait; kill it if it does not stop in time. Returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
                self.stopped_rc = None
                self._stderr.close()
                pytest.fail(f"daemon {self.proc.pid} ignored signal {sig} for {STOP_TIMEOUT} s")
        self._stderr.close()
        self.stopped_rc = self.proc.returncode
        return self.proc.returncode

    # -- views through the control socket or the CLI --------------------------------------------------

    def status(self) -> dict[str, Any]:
        return control.request(self.control_socket, "status")

    def counters(self) -> dict[str, int]:
        return self.status()["counters"]

    def bindings_direct(self) -> list[dict[str, Any]]:
        return control.request(self.control_socket, "bindings")

    def bindings_cli(self) -> list[dict[str, Any]]:
        r = homeagent("bindings", "--config", str(self.config_path), "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def mn(self) -> MobileNodeSocket:
        return MobileNodeSocket(self.address, self.port)


def stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A binding table without the one field that moves with the clock."""
    return [{k: v for k, v in r.items() if k != "remaining"} for r in rows]


CORE_FIELDS = ("home_address", "care_of_address", "lifetime", "identification", "flags")


def core(rows: list[dict[str, Any]], fields: tuple[str, ...] = CORE_FIELDS) -> list[dict[str, Any]]:
    """The fields DESIGN.md promises (and the request flags), whatever else a row carries."""
    return [{k: r[k] for k in fields} for r in rows]


class Factory:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.started: list[HomeAgentProcess] = []

    def config(self, name: str = "ha", address: str = HA_ADDRESS, port: int | None = -1, **kw: Any) -> HomeAgentProcess:
        """Write a config (to its own tmp directory, with its own state_dir) and return an unstarted daemon."""
        root = self.tmp_path_factory.mktemp(name)
        state_dir = Path(kw.pop("state_dir", root / "state"))
        if port == -1:
            port = free_udp_port(address)
        text = kw.pop("text", None) or config_text(state_dir, port, address=address, **kw)
        path = root / "homeagent.toml"
        path.write_text(text)
        ha = HomeAgentProcess(path, address, port if port is not None else 434, state_dir, root / "stderr.log")
        self.started.append(ha)
        return ha

    def start(self, name: str = "ha", **kw: Any) -> HomeAgentProcess:
        return self.config(name, **kw).start()

    def finalize(self) -> None:
        problems = []
        for ha in self.started:
            if ha.proc is None:
                continue
            rc = ha.stop() if ha.proc.poll() is None else ha.proc.returncode
            if ha.expect_clean_exit:
                if rc != 0:
                    problems.append(f"pid {ha.pid}: exit status {rc} on SIGTERM\n{ha.stderr()}")
                if ha.control_socket.exists():
                    problems.append(f"pid {ha.pid}: left {ha.control_socket} behind")
                if "Traceback" in ha.stderr() and not ha.tolerate_traceback:
                    problems.append(f"pid {ha.pid}: traceback in its log\n{ha.stderr()}")
        self.started.clear()
        if problems:
            pytest.fail("\n".join(problems))


@pytest.fixture
def daemons(tmp_path_factory: pytest.TempPathFactory):
    """Start daemons; every one is stopped by PID (SIGTERM, then SIGKILL) and checked when the test ends."""
    f = Factory(tmp_path_factory)
    yield f
    f.finalize()


@pytest.fixture(scope="module")
def module_daemons(tmp_path_factory: pytest.TempPathFactory):
    f = Factory(tmp_path_factory)
    yield f
    f.finalize()


def ident_parts(ident: int) -> tuple[int, int]:
    return ident >> 32, ident & LOW32


def u32(data: bytes, at: int) -> int:
    return struct.unpack_from("!I", data, at)[0]
