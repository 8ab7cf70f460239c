"""Failover time on a real Ethernet segment (network namespaces): from ``kill -9`` of everything in the
active member's namespace to the first registration accepted at the virtual address, sent from a mobile
node in a namespace of its own, over several kills, for

  ours        two members, our own election at the default advertisement interval (0.1 s), the
              ``interface`` method: the active member adds the virtual address to eth0 and sends
              gratuitous ARP;
  keepalived  keepalived (VRRPv3, advert_int 0.1) moving the virtual address and telling the same two
              members their role (``election = "external"``) from its notify scripts.

    sudo python bench/failover.py [--kills 10] [--interval 0.1] [--only ours|keepalived]

Needs root, iproute2 and (for the second half) keepalived. The namespaces (prefix ``hfo<pid>``, a private
/24 of 10.252.0.0/16) and every process are removed at the end, whatever happened. The kill falls at a
different point of the advertisement cycle each time (trial i waits interval * i / kills more), as in
shared/reference/keepalived-failover.md; a kill takes keepalived's VRRP child and parent, and the Home
Agent, in one go.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import daemons  # noqa: E402
from common import KEY, SPI, status  # noqa: E402
from daemons import group_config  # noqa: E402
from netns import keepalived  # noqa: E402
from netns.keepalived import KEEPALIVED, read_pid  # noqa: E402
from netns.lan import Lan, can_run  # noqa: E402

from homeagent.config import ConfigError  # noqa: E402
from homeagent.config import load as load_config  # noqa: E402
from homeagent.mobile_node import MobileNode  # noqa: E402
from homeagent.wire.auth import Algorithm, SecurityAssociation  # noqa: E402

PORT = 434
SUBNET = f"10.252.{os.getpid() % 200 + 20}"
VIP = f"{SUBNET}.10"
HOSTS = {"ha1": f"{SUBNET}.1", "ha2": f"{SUBNET}.2", "mn": f"{SUBNET}.100"}
COA = IPv4Address(HOSTS["mn"])  # the mobile node registers from its own address (co-located care-of)
VRID = os.getpid() % 254 + 1
PROBE_TIMEOUT = 0.02  # seconds a probe registration waits for its reply
FAILOVER_LIMIT = 10.0  # seconds after the kill before a trial counts as failed


class Failed(RuntimeError):
    pass


def wait(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """As the tests wait, but a timeout is a failed trial, counted, not an error."""
    return daemons.wait(what, check, timeout, error=Failed)


class Stamped:
    """A process in a namespace whose output lines are stamped (monotonic clock) as they arrive, and
    copied to a log file."""

    def __init__(self, lan: Lan, host: str, cmd: list[str], log: Path) -> None:
        self.lines: list[tuple[float, str]] = []
        self.proc = lan.popen(host, cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid  # ``ip netns exec`` execs the command: this is its own PID
        self._log = log
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self._log, "ab") as log:
            for raw in iter(self.proc.stdout.readline, b""):
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))
                log.write(raw)
                log.flush()

    def first(self, text: str, after: float = 0.0) -> float | None:
        """When the first line containing ``text`` arrived after ``after``."""
        for at, line in list(self.lines):
            if at > after and text in line:
                return at
        return None

    def tail(self, n: int = 5) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


class Group:
    """Two members (ha1 the one killed, ha2 the one taking over) and a mobile node on one segment."""

    name = ""
    switch_text = ""  # the line ha2 logs when it takes over

    def __init__(self, tmp: Path, interval: float) -> None:
        self.tmp = tmp
        self.interval = interval
        self.lan: Lan | None = None
        self.members: dict[str, Stamped] = {}
        self.configs: dict[str, Path] = {}
        self.probe = MobileNode(IPv4Address("10.1.0.77"), IPv4Address(VIP),
                                SecurityAssociation(SPI, Algorithm.HMAC_MD5, bytes.fromhex(KEY)), PORT)
        self.generation = 0

    # -- set-up and tear-down -----------------------------------------------------------------------

    def build(self) -> None:
        self.generation += 1
        self.members.clear()
        self.lan = Lan(f"hfo{os.getpid()}", HOSTS)  # deletes what it made if it fails half-way
        for host, other in (("ha1", "ha2"), ("ha2", "ha1")):
            self.configs[host] = self.member_config(host, other)
        self.start()

    def close(self) -> None:
        try:
            for proc in self.processes():
                proc.reap()
        finally:
            if self.lan is not None:
                self.lan.close()  # kills what is left in the namespaces and deletes them
                self.lan = None
            self.members.clear()

    def processes(self) -> list[Stamped]:
        return list(self.members.values())

    def member_config(self, host: str, other: str) -> Path:
        path = group_config(self.tmp, HOSTS[host], PORT, name=f"{self.name}-{self.generation}-{host}",
                            virtual_address=VIP, group=f"{SUBNET}.0/24", peers=[HOSTS[other]],
                            replication="async", advertisement_interval=self.interval, **self.redundancy(host))
        try:  # the daemon would refuse it the same way, and status() could not read it
            load_config(path)
        except ConfigError as exc:
            raise Failed(f"the member's config is refused: {exc}") from None
        return path

    def redundancy(self, host: str) -> dict[str, Any]:
        raise NotImplementedError

    def start_member(self, host: str) -> None:
        assert self.lan is not None
        old = self.members.pop(host, None)
        if old is not None:
            old.reap()
        self.members[host] = Stamped(self.lan, host, [sys.executable, "-m", "homeagent", "run", "--config",
                                                      str(self.configs[host]), "--log-level", "info"],
                                     self.tmp / f"{self.name}-homeagent-{host}.log")

    def wait_role(self, host: str, role: str, timeout: float = 10.0) -> None:
        def check() -> bool:
            if not self.members[host].alive():
                raise Failed(f"{self.name}: {host}'s Home Agent exited:\n{self.members[host].tail()}")
            return (status(self.configs[host]) or {}).get("role") == role
        wait(f"{self.name}: {host} {role}", check, timeout)

    def start(self) -> None:
        raise NotImplementedError

    def rearm(self) -> None:
        """After a kill: ha1 back, active again, ha2 standing by."""
        raise NotImplementedError

    def serving(self, host: str) -> None:
        """Wait until ``host`` holds the virtual address alone and the mobile node reaches it there."""
        assert self.lan is not None
        lan = self.lan
        other = "ha2" if host == "ha1" else "ha1"
        wait(f"{self.name}: the virtual address on {host} only",
             lambda: VIP in lan.addresses(host) and VIP not in lan.addresses(other))
        mac = lan.mac(host)
        wait(f"{self.name}: the mobile node registering with {host}",
             lambda: self.accepted_once() and lan.neighbour("mn", VIP) == mac)

    def accepted_once(self) -> bool:
        assert self.lan is not None
        with self.lan.inside("mn"):
            try:
                return self.probe.register(COA, 600, timeout=0.2, retries=0).accepted
            except (TimeoutError, OSError):
                return False

    # -- one trial ----------------------------------------------------------------------------------

    def victims(self) -> list[int]:
        """What dies, in that order."""
        return [self.members["ha1"].pid]

    def kill(self) -> float:
        assert self.lan is not None
        pids = self.victims()
        killed = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.lan.pids("ha1"):  # a notify script under way, say
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return killed

    def first_accepted(self, deadline: float) -> float:
        """Register again and again (a 20 ms timeout) until one is accepted; when it was."""
        assert self.lan is not None
        with self.lan.inside("mn"):
            while time.monotonic() < deadline:
                try:
                    if self.probe.register(COA, 600, timeout=PROBE_TIMEOUT, retries=0).accepted:
                        return time.monotonic()
                except (TimeoutError, OSError):
                    continue
        raise Failed(f"{self.name}: no registration accepted within {FAILOVER_LIMIT} s of the kill")

    def trial(self, i: int, kills: int) -> tuple[float, float]:
        """Kill ha1; (seconds to the first accepted registration, seconds to ha2's switch line)."""
        time.sleep(0.5 + self.interval * i / kills)  # settled, and the kill phase spread over an interval
        killed = self.kill()
        accepted = self.first_accepted(killed + FAILOVER_LIMIT) - killed
        switched_at = wait(f"{self.name}: ha2 logging {self.switch_text!r}",
                           lambda: self.switch_log().first(self.switch_text, killed), timeout=2)
        return accepted, switched_at - killed

    def switch_log(self) -> Stamped:
        return self.members["ha2"]

    def run(self, kills: int) -> tuple[list[float], list[float], int]:
        """Seconds to the first accepted registration and to ha2's switch line, and the failed kills."""
        accepted, switched, failed = [], [], 0
        try:
            self.build()
            for i in range(kills):
                ok = False
                try:
                    took, switch = self.trial(i, kills)
                except Failed as exc:  # a failover that did not happen is a result: count it, go on
                    failed += 1
                    print(f"  {self.name} kill {i + 1}: FAILED: {exc}", flush=True)
                else:
                    ok = True
                    accepted.append(took)
                    switched.append(switch)
                    print(f"  {self.name} kill {i + 1}: first accepted registration after {took * 1000:.0f} "
                          f"ms, ha2 logged {self.switch_text!r} after {switch * 1000:.0f} ms", flush=True)
                if i + 1 < kills:
                    try:
                        if not ok:
                            raise Failed("the kill before failed")
                        self.rearm()
                    except Failed as exc:  # start again from nothing rather than give up
                        print(f"  {self.name}: re-arming failed ({exc}); rebuilding", flush=True)
                        self.close()
                        self.build()
        finally:
            self.close()
        return accepted, switched, failed


class Ours(Group):
    name = "ours"
    switch_text = "-> active"

    def redundancy(self, host: str) -> dict[str, Any]:
        return {"priority": 110 if host == "ha1" else 100, "address_method": "interface", "interface": "eth0"}

    def start(self) -> None:
        self.start_member("ha1")
        self.wait_role("ha1", "active")
        self.start_member("ha2")
        self.wait_role("ha2", "standby")
        self.serving("ha1")

    def rearm(self) -> None:
        assert self.lan is not None
        # The dead member's address stays on its eth0 (a process killed cannot take it off); the daemon
        # clears leftovers when it starts, but a supervisor would not count on it.
        self.lan.exec("ha1", "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)
        self.start_member("ha1")
        self.wait_role("ha1", "active")  # preemption: priority 110 over 100
        self.wait_role("ha2", "standby")
        self.serving("ha1")


class Keepalived(Group):
    name = "keepalived"
    switch_text = "Entering MASTER STATE"

    def __init__(self, tmp: Path, interval: float) -> None:
        super().__init__(tmp, interval)
        self.keepalived: dict[str, Stamped] = {}

    def redundancy(self, host: str) -> dict[str, Any]:
        return {"election": "external"}

    def processes(self) -> list[Stamped]:
        return list(self.keepalived.values()) + super().processes()

    def close(self) -> None:
        if self.lan is not None:  # the VRRP children first: they would resign when their parents die
            for host in self.keepalived:
                child = read_pid(self.pidfile(host, "vrrp"))
                if child is not None and child in self.lan.pids(host):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
        super().close()
        self.keepalived.clear()

    def pidfile(self, host: str, which: str) -> Path:
        return self.tmp / f"keepalived-{self.generation}-{host}-{which}.pid"

    def start_keepalived(self, host: str) -> None:
        assert self.lan is not None and KEEPALIVED is not None
        conf = self.tmp / f"keepalived-{self.generation}-{host}.conf"
        conf.write_text(keepalived.config(host, VRID, 150 if host == "ha1" else 100, self.interval, f"{VIP}/24",
                                          self.configs[host]))
        old = self.keepalived.pop(host, None)
        if old is not None:
            old.reap()
        for which in ("main", "vrrp"):
            self.pidfile(host, which).unlink(missing_ok=True)
        cmd = keepalived.command(conf, self.pidfile(host, "main"), self.pidfile(host, "vrrp"))
        self.keepalived[host] = Stamped(self.lan, host, cmd, self.tmp / f"keepalived-{host}.log")

    def start(self) -> None:
        # The Home Agents first: keepalived's first notify must find their control sockets.
        for host in ("ha1", "ha2"):
            self.start_member(host)
        for host in ("ha1", "ha2"):
            self.wait_role(host, "standby")
        self.start_keepalived("ha1")
        wait("ha1's keepalived MASTER", lambda: self.keepalived["ha1"].first("Entering MASTER STATE"))
        self.start_keepalived("ha2")
        wait("ha2's keepalived BACKUP", lambda: self.keepalived["ha2"].first("Entering BACKUP STATE"))
        self.wait_role("ha1", "active")
        self.wait_role("ha2", "standby")
        self.serving("ha1")

    def victims(self) -> list[int]:
        # The VRRP child first: killed after its parent it would resign cleanly (priority 0), no crash.
        child, parent = read_pid(self.pidfile("ha1", "vrrp")), read_pid(self.pidfile("ha1", "main"))
        if child is None or parent is None:
            raise Failed("keepalived's PID files in ha1 are missing")
        return [child, parent, self.members["ha1"].pid]

    def switch_log(self) -> Stamped:
        return self.keepalived["ha2"]

    def rearm(self) -> None:
        assert self.lan is not None
        self.lan.exec("ha1", "ip", "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)
        wait("nothing left in ha1", lambda: not self.lan.pids("ha1"), timeout=5)  # type: ignore[arg-type]
        self.start_member("ha1")
        self.wait_role("ha1", "standby")  # the table downloaded from ha2
        since = time.monotonic()
        self.start_keepalived("ha1")
        wait("ha1's keepalived MASTER again (preempting)",
             lambda: self.keepalived["ha1"].first("Entering MASTER STATE", since))
        self.wait_role("ha1", "active")
        self.wait_role("ha2", "standby")
        self.serving("ha1")


def summary(label: str, seconds: list[float]) -> str:
    if not seconds:
        return f"{label}: no figures"
    ms = [s * 1000 for s in seconds]
    return f"{label}: median {statistics.median(ms):.0f} ms  min {min(ms):.0f} ms  max {max(ms):.0f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.1,
                   help="our advertisement interval and keepalived's advert_int (default 0.1 s)")
    p.add_argument("--only", choices=["ours", "keepalived"])
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM as on Ctrl-C
    if not can_run():
        print("needs root and iproute2 (network namespaces)", file=sys.stderr)
        return 1
    halves: list[type[Group]] = [Ours, Keepalived]
    if args.only:
        halves = [h for h in halves if h.name == args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="homeagent-failover-") as tmp:
        for half in halves:
            if half is Keepalived and KEEPALIVED is None:
                results.append("keepalived: not measured (keepalived is not installed)")
                continue
            group = half(Path(tmp), args.interval)
            try:
                accepted, switched, failed = group.run(args.kills)
            except Failed as exc:
                results.append(f"{half.name}: not measured: {exc}")
                continue
            if half is Ours:
                head = (f"ours (internal election, advertisement interval {args.interval} s, "
                        f"interface method, {args.kills} kills)")
                switch = "kill -9 -> ha2 logs role standby -> active"
            else:
                head = (f"keepalived ({keepalived_version()}, VRRPv3 advert_int {args.interval} s, "
                        f"external election, {args.kills} kills)")
                switch = "kill -9 -> ha2's keepalived logs Entering MASTER STATE"
            results.append(f"{head}\n  {summary('kill -9 -> first accepted registration', accepted)}"
                           f"\n  {summary(switch, switched)}"
                           + (f"\n  {failed} kill(s) FAILED (no registration accepted within "
                              f"{FAILOVER_LIMIT:g} s, or ha2 never logged the switch)" if failed else ""))
    print()
    for line in results:
        print(line)
    return 0


def keepalived_version() -> str:
    assert KEEPALIVED is not None
    out = subprocess.run([KEEPALIVED, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stdout + out.stderr).split("\n")[0].split(" (")[0].strip()


if __name__ == "__main__":
    sys.exit(main())
