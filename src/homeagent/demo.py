"""``homeagent demo --group``: a redundancy group at work, on loopback and without root.

Two members (127.0.0.2, priority 200, and 127.0.0.3, priority 100) share the virtual address 127.0.0.10
(the ``bind`` address method, which needs no privilege); a swarm of mobile nodes registers at it; the
view shows both members' tables filling (the standby's by replication). Then the active member is killed
with SIGKILL, as a crash would, and the view shows the standby take over with every binding already in
place; the swarm renews at the virtual address and the new active member accepts every renewal.

On a terminal the view is redrawn in place with plain ANSI escapes (no dependency); otherwise (a pipe, a
log, a test) it prints plain lines: the events, and the tables' sizes at most once a second. Whatever
happens, every process it started is stopped by its PID (SIGTERM, then SIGKILL) and its temporary
directory (configurations, state directories, logs) is removed; the last line says so.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TextIO

from homeagent.mobile_node import LoadGenerator, LoadResult
from homeagent.runtime import control
from homeagent.wire.auth import Algorithm, SecurityAssociation

MEMBERS = (("127.0.0.2", 200), ("127.0.0.3", 100))
VIRTUAL_ADDRESS = "127.0.0.10"
HOME_NETWORK = "10.1.0.0/16"
FIRST_HOME_ADDRESS = IPv4Address("10.1.0.1")
CARE_OF_ADDRESS = IPv4Address("192.0.2.1")
SPI, GROUP_SPI = 256, 300
STEP_TIMEOUT = 15.0  # seconds any one step (a start, the replication, the takeover) may take
REFRESH = 0.1  # seconds between two looks at the members
PLAIN_EVERY = 0.5  # seconds between two progress lines when not on a terminal


@dataclass
class Member:
    address: str
    priority: int
    config: Path
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "homeagent", "run", "--config", str(self.config), "--log-level", "info"],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
            )

    def status(self) -> dict[str, Any] | None:
        """What the member says, or None when it does not answer (not started, killed, busy)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            answer = control.request(self.state_dir / "control.sock", "status", timeout=0.5)
        except control.ControlError:
            return None
        return answer if isinstance(answer, dict) else None

    def stop(self) -> str:
        """SIGTERM by PID, SIGKILL if it is still there after 10 s; what was done, for the last line."""
        if self.proc is None:
            return f"{self.address} never started"
        if self.proc.poll() is not None:
            return f"{self.address} (pid {self.proc.pid}) already ended"
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
            return f"{self.address} (pid {self.proc.pid}) stopped"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return f"{self.address} (pid {self.proc.pid}) killed after ignoring SIGTERM"


class View:
    """The plain view: events as lines, the members' tables at most once a second."""

    def __init__(self, out: TextIO, mobile_nodes: int) -> None:
        self.out = out
        self.mobile_nodes = mobile_nodes
        self._last: tuple[Any, ...] | None = None
        self._at = 0.0

    def event(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def show(self, members: list[Member], statuses: list[dict[str, Any] | None], force: bool = False) -> None:
        state = tuple((s or {}).get("role", "down") for s in statuses) + tuple(
            (s or {}).get("bindings", 0) for s in statuses)
        now = time.monotonic()
        if state != self._last and (force or now - self._at >= PLAIN_EVERY):
            self._last, self._at = state, now
            self.event("  " + " | ".join(_summary(m, s, self.mobile_nodes) for m, s in zip(members, statuses)))

    def close(self) -> None:
        pass


class LiveView(View):
    """On a terminal: the members' block redrawn in place, the events printed above it."""

    def __init__(self, out: TextIO, mobile_nodes: int) -> None:
        super().__init__(out, mobile_nodes)
        self._block: list[str] = []

    def event(self, text: str) -> None:
        self._clear()
        print(text, file=self.out)
        self._draw()

    def show(self, members: list[Member], statuses: list[dict[str, Any] | None], force: bool = False) -> None:
        self._clear()
        self._block = [_bar(m, s, self.mobile_nodes) for m, s in zip(members, statuses)]
        self._draw()

    def close(self) -> None:
        self._block = []  # the last picture stays on the screen, above what follows
        self.out.flush()

    def _clear(self) -> None:
        if self._block:
            self.out.write(f"\x1b[{len(self._block)}F\x1b[J")  # up to the block's first line, erase below

    def _draw(self) -> None:
        for line in self._block:
            self.out.write(line + "\n")
        self.out.flush()


def _summary(m: Member, st: dict[str, Any] | None, total: int) -> str:
    if st is None:
        return f"{m.address} down"
    return f"{m.address} {st['role']} {st['bindings']}/{total} bindings"


def _bar(m: Member, st: dict[str, Any] | None, total: int, width: int = 30) -> str:
    role = "down" if st is None else st["role"]
    count = 0 if st is None else st["bindings"]
    filled = min(width, width * count // max(1, total))
    colour = {"active": "\x1b[32m", "standby": "\x1b[33m", "init": "\x1b[36m"}.get(role, "\x1b[31m")
    return (f"  {m.address:<10} prio {m.priority:<3} {colour}{role:<8}\x1b[0m "
            f"[{'#' * filled}{'.' * (width - filled)}] {count:>6}/{total} bindings")


@dataclass
class Demo:
    mobile_nodes: int
    rate: float
    out: TextIO
    root: Path
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.view: View = (LiveView if self.out.isatty() else View)(self.out, self.mobile_nodes)
        self.port = _free_port([a for a, _ in MEMBERS] + [VIRTUAL_ADDRESS])
        key, group_key = secrets.token_bytes(16), secrets.token_bytes(32)  # this run's own keys
        self.association = SecurityAssociation(SPI, Algorithm.HMAC_MD5, key)
        for address, priority in MEMBERS:
            name = address.replace(".", "-")
            config = self.root / f"{name}.toml"
            state_dir = self.root / name
            config.write_text(_config(address, priority, self.port, state_dir, key, group_key))
            self.members.append(Member(address, priority, config, state_dir, self.root / f"{name}.log"))
        self.home_addresses = [FIRST_HOME_ADDRESS + i for i in range(self.mobile_nodes)]

    def statuses(self) -> list[dict[str, Any] | None]:
        return [m.status() for m in self.members]

    def wait(self, what: str, done: Callable[[list[dict[str, Any] | None]], bool],
             timeout: float = STEP_TIMEOUT) -> list[dict[str, Any] | None]:
        """Refresh the view until ``done(statuses)``; RuntimeError naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.statuses()
            self.view.show(self.members, statuses)
            if done(statuses):
                self.view.show(self.members, statuses, force=True)
                return statuses
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None and m.proc.returncode != -signal.SIGKILL:
                    raise RuntimeError(f"{m.address} exited with status {m.proc.returncode}: "
                                       f"{_tail(m.log)}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(REFRESH)

    def swarm(self) -> LoadGenerator:
        return LoadGenerator(IPv4Address(VIRTUAL_ADDRESS), self.port, self.association, self.home_addresses,
                             CARE_OF_ADDRESS, lifetime=1800, window=32)

    def play(self) -> bool:
        a, b = self.members
        n = self.mobile_nodes
        self.view.event(f"members {a.address} (priority {a.priority}) and {b.address} (priority {b.priority}), "
                        f"virtual address {VIRTUAL_ADDRESS}, UDP port {self.port}")
        a.start()
        self.wait(f"{a.address} to become active", lambda s: s[0] is not None and s[0]["role"] == "active")
        b.start()
        self.wait(f"{b.address} to stand by", lambda s: s[1] is not None and s[1]["role"] == "standby")
        self.view.event(f"{a.address} (pid {_pid(a)}) active, {b.address} (pid {_pid(b)}) standby")

        self.view.event(f"{n} mobile nodes register at {VIRTUAL_ADDRESS}, {self.rate:g} a second")
        first = _in_background(lambda: self.swarm().run(count=n, rate=self.rate))
        result = first.wait(self.view, self.members, self.statuses)
        self.view.event(f"registered: {result.accepted} of {n} accepted in {result.seconds:.1f} s")
        self.wait(f"both tables to hold {result.accepted} bindings",
                  lambda s: all(x is not None and x["bindings"] >= result.accepted for x in s))

        assert a.proc is not None
        killed_at = time.time()
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=10)
        self.view.event(f"kill -9 {a.proc.pid}: the active member {a.address} is gone")
        statuses = self.wait(f"{b.address} to take over", lambda s: s[1] is not None and s[1]["role"] == "active")
        st = statuses[1]
        assert st is not None
        took = next((t for t in reversed(st.get("transitions", [])) if t["to"] == "active"), None)
        after = f"{took['at'] - killed_at:.2f} s after the kill ({took['reason']})" if took else "now"
        self.view.event(f"takeover: {b.address} active {after}, holding {st['bindings']} of {result.accepted} "
                        f"bindings: no mobile node had to register again")

        self.view.event(f"the swarm renews at {VIRTUAL_ADDRESS}")
        renewal = _in_background(lambda: self.swarm().run(count=n, rate=self.rate))
        renewed = renewal.wait(self.view, self.members, self.statuses)
        self.view.event(f"renewed: {renewed.accepted} of {n} accepted by {b.address}")
        return st["bindings"] == result.accepted == n and renewed.accepted == n


class _Background:
    """A swarm running in a thread while the view refreshes."""

    def __init__(self, work: Callable[[], LoadResult]) -> None:
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[], LoadResult]) -> None:
        try:
            self.result = work()
        except BaseException as exc:  # reported in the main thread
            self.error = exc

    def wait(self, view: View, members: list[Member],
             statuses: Callable[[], list[dict[str, Any] | None]]) -> LoadResult:
        """Refresh the view until the swarm is done (it ends by itself: a lost request times out)."""
        while self.thread.is_alive():
            view.show(members, statuses())
            self.thread.join(REFRESH)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _in_background(work: Callable[[], LoadResult]) -> _Background:
    return _Background(work)


def run(mobile_nodes: int, rate: float, out: TextIO | None = None) -> int:
    """The demo; 0 when the takeover kept every binding and the swarm renewed at the new active member."""
    out = out or sys.stdout
    tmp = tempfile.mkdtemp(prefix="homeagent-demo-group-")
    demo: Demo | None = None
    ok = False
    try:
        demo = Demo(mobile_nodes, rate, out, Path(tmp))
        ok = demo.play()
    except RuntimeError as exc:
        print(f"homeagent demo: {exc}", file=sys.stderr)
    finally:
        stopped = [m.stop() for m in demo.members] if demo is not None else []
        if demo is not None:
            demo.view.close()
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"cleaned up: {', '.join(stopped) or 'nothing started'}; removed {tmp}", file=out, flush=True)
    return 0 if ok else 1


def _pid(m: Member) -> int:
    assert m.proc is not None
    return m.proc.pid


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _free_port(addresses: list[str]) -> int:
    """A UDP port free on every one of ``addresses`` (from the ephemeral range, which the kernel picks)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        if all(port_is_free(a, port) for a in addresses):
            return port
    raise RuntimeError("no UDP port free on " + ", ".join(addresses))


def port_is_free(address: str, port: int) -> bool:
    """Whether a UDP socket can be bound at ``address``:``port`` now (the tests ask it too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _config(address: str, priority: int, port: int, state_dir: Path, key: bytes, group_key: bytes) -> str:
    peer = next(a for a, _ in MEMBERS if a != address)
    return f"""# homeagent demo --group: member {address}
[home_agent]
address = "{address}"
port = {port}
home_network = "{HOME_NETWORK}"
state_dir = "{state_dir}"

[[security_association]]
home_addresses = "{HOME_NETWORK}"
spi = {SPI}
algorithm = "hmac-md5"
key = "{key.hex()}"

[redundancy]
virtual_address = "{VIRTUAL_ADDRESS}"
priority = {priority}
peers = ["{peer}"]
advertisement_interval = 0.1
startup_wait = 0.5

[[redundancy.security_association]]
peer = "127.0.0.0/24"
spi = {GROUP_SPI}
algorithm = "hmac-sha256"
key = "{group_key.hex()}"

[dataplane]
backend = "none"
"""
