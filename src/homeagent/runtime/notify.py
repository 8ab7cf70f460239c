"""systemd's readiness and watchdog protocol (sd_notify(3)), with the standard library alone.

Under ``Type=notify`` systemd hands the daemon ``NOTIFY_SOCKET``, an AF_UNIX datagram socket (a path, or
an abstract name written with a leading ``@``), and waits for ``READY=1`` before it counts the unit as
started and starts the units ordered after it. What "ready" means for a Home Agent, decided here
(docs/operations.md, "Running under systemd"):

- a lone Home Agent: its sockets and its control socket are open and the core has started (it serves from
  that moment);
- a member of a group: it has also left ``init``, that is its table download ended (or its start-up wait
  ran out with no member answering). Before that it answers no registration, and a member restarted for
  an upgrade must not let the next one go down while it still has no table (a rolling restart of a group
  ordered by ``After=`` or driven by a script that waits for ``systemctl start``).

``WATCHDOG=1`` goes out every half ``WATCHDOG_USEC`` from the event loop itself, so a loop that stalls
stops the pings and systemd restarts the daemon (``WatchdogSec=``). ``STOPPING=1`` goes out when a stop
begins. Without ``NOTIFY_SOCKET`` every call here does nothing. A failed send never stops the daemon: it
is logged once at warning. The variables are taken out of the environment, so that the processes the
daemon starts (the data plane's) do not inherit them and speak in its name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, MutableMapping

log = logging.getLogger("homeagent.notify")

READY_POLL = 0.02  # seconds between two looks at whether a member has left init


class Notifier:
    """One daemon's messages to systemd; ``address`` None (no ``NOTIFY_SOCKET``): nothing is sent."""

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog  # seconds between two WATCHDOG=1 (half of WATCHDOG_USEC), or None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read and remove ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (sd_notify's
        ``unset_environment``). A watchdog meant for another process (``WATCHDOG_PID``) is not ours."""
        env = os.environ if environ is None else environ
        raw = env.pop("NOTIFY_SOCKET", None)
        usec, pid = env.pop("WATCHDOG_USEC", None), env.pop("WATCHDOG_PID", None)
        address = None
        if raw and (raw.startswith("/") or raw.startswith("@")):
            address = "\0" + raw[1:] if raw.startswith("@") else raw
        elif raw:
            log.warning("NOTIFY_SOCKET %r is neither a path nor an abstract name: not notifying systemd", raw)
        watchdog = None
        if usec and (pid is None or pid == str(os.getpid())):
            try:
                watchdog = int(usec) / 2e6 if int(usec) > 0 else None
            except ValueError:
                log.warning("WATCHDOG_USEC %r is not a number: no watchdog pings", usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        """One datagram of ``KEY=value`` lines; never blocks, never raises."""
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd on %s: %s", self.address.replace("\0", "@"), exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def supervise(notifier: Notifier, ready: Callable[[], bool], status: Callable[[], str]) -> None:
    """Send ``READY=1`` (with a ``STATUS=`` line) once ``ready()`` is true, and ``WATCHDOG=1`` every
    ``notifier.watchdog`` seconds, before readiness as after (a long table download is no hang). Runs
    until cancelled; without a notify socket it returns at once."""
    if not notifier.enabled:
        return
    loop = asyncio.get_running_loop()
    next_ping = loop.time()
    announced = False
    while True:
        now = loop.time()
        if notifier.watchdog is not None and now >= next_ping:
            notifier.send("WATCHDOG=1")
            next_ping = now + notifier.watchdog
        if not announced and ready():
            notifier.send("READY=1", f"STATUS={status()}")
            announced = True
            log.info("told systemd: ready (%s)", status())
        if announced and notifier.watchdog is None:
            return
        wait = next_ping - loop.time() if notifier.watchdog is not None else READY_POLL
        await asyncio.sleep(max(0.0, min(wait, READY_POLL) if not announced else wait))
