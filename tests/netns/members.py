"""``homeagent run`` members on the hosts of a ``Lan``: the one place that starts, kills, pauses and stops
them for the namespace tests (the failover, address-conflict and availability harnesses build on it).

One daemon per host, each known by its PID (``ip netns exec`` execs the command, so the Popen's PID is the
daemon's) and logging at info to ``<tmp>/<host>.log``, which outlives a kill. ``close`` stops every daemon
(SIGTERM, then SIGKILL after 10 s, a paused one resumed first) and deletes the segment, whatever the test
left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemons import status
from netns.lan import Lan


class Members:
    def __init__(self, lan: Lan, tmp: Path, configs: dict[str, Path]) -> None:
        self.lan = lan
        self.tmp = tmp
        self.configs = configs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._paused: set[str] = set()

    def start(self, host: str) -> None:
        with open(self.tmp / f"{host}.log", "ab") as log:
            self.procs[host] = self.lan.popen(host, [sys.executable, "-m", "homeagent", "run", "--config",
                                                     str(self.configs[host]), "--log-level", "info"],
                                              stdout=subprocess.DEVNULL, stderr=log)

    def kill(self, host: str) -> float:
        """kill -9 of everything in ``host``'s namespace (an address it held stays on its interface); when."""
        killed = time.monotonic()
        for pid in self.lan.pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.procs.pop(host).wait(timeout=10)
        return killed

    def pause(self, host: str) -> None:
        os.kill(self.procs[host].pid, signal.SIGSTOP)
        self._paused.add(host)

    def resume(self, host: str) -> None:
        os.kill(self.procs[host].pid, signal.SIGCONT)
        self._paused.discard(host)

    def role(self, host: str) -> str | None:
        return (status(self.configs[host]) or {}).get("role")

    def log(self, host: str) -> str:
        return (self.tmp / f"{host}.log").read_text(errors="replace")

    def close(self) -> None:
        try:
            for host in list(self._paused):
                with contextlib.suppress(ProcessLookupError):
                    self.resume(host)
            for proc in self.procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            self.lan.close()
