"""The daemon: a UDP socket, the control socket, one timer, and the core in between.

Registrations are read by draining a non-blocking socket from ``loop.add_reader`` rather than through a
``DatagramProtocol`` (one callback per datagram costs more than the registration itself). Effects are
carried out here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from ipaddress import IPv4Address
from typing import Any

from homeagent.config import Config
from homeagent.core.effects import Effect, Send
from homeagent.core.home_agent import HomeAgent
from homeagent.runtime import control

log = logging.getLogger("homeagent.daemon")

DRAIN_BATCH = 512  # datagrams per wake-up before yielding to timers and the control socket
MAX_DATAGRAM = 8192  # larger than any registration; longer datagrams arrive truncated and fail auth


class StartupError(RuntimeError):
    pass


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.core = HomeAgent(config, time.time())
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        ha = self.config.home_agent
        try:
            ha.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"home_agent.state_dir: cannot create {ha.state_dir}: {exc.strerror}") from None
        self._sock = _udp_socket(str(ha.address), ha.port)
        try:
            try:
                server = await control.serve(self.config.control_socket, self._control)
            except (control.ControlError, OSError) as exc:
                raise StartupError(f"control socket: {exc}") from None
            try:
                loop.add_reader(self._sock.fileno(), self._drain)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.stop)
                log.info("serving registrations on %s:%d (role %s)", ha.address, ha.port, self.core.role)
                await self._stopping.wait()
                log.info("stopping: %d bindings held", len(self.core.bindings))
                loop.remove_reader(self._sock.fileno())
            finally:
                server.close()
                await server.wait_closed()
                self.config.control_socket.unlink(missing_ok=True)
        finally:
            if self._timer:
                self._timer.cancel()
            self._sock.close()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    # -- the hot path ---------------------------------------------------------------------------------

    def _drain(self) -> None:
        sock = self._sock
        assert sock is not None
        receive = self.core.receive_registration
        apply = self._apply
        for _ in range(DRAIN_BATCH):
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                log.debug("receive error: %s", exc)
                continue
            effects = receive(data, source, time.time())
            if effects:
                apply(effects)
        self._arm_timer()

    def _apply(self, effects: list[Effect]) -> None:
        sock = self._sock
        assert sock is not None
        for effect in effects:
            if type(effect) is Send:
                try:
                    sock.sendto(effect.datagram, effect.address)
                except OSError as exc:
                    self.core.counters["send_failed"] += 1
                    log.debug("send to %s failed: %s", effect.address, exc)
            # Tunnel effects reach a data plane once one is configured; with backend "none" the binding
            # table is the whole of the Home Agent's state.

    # -- timers ---------------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        at = self.core.next_timer()
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = at
        self._timer = loop.call_later(max(0.0, at - time.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._apply(self.core.handle_timer(time.time()))
        self._arm_timer()

    # -- control --------------------------------------------------------------------------------------

    def _control(self, request: dict[str, Any]) -> Any:
        command = request.get("command")
        now = time.time()
        if command == "status":
            return self.core.status(now)
        if command == "bindings":
            home_address = request.get("home_address")
            return self.core.binding_list(now, IPv4Address(home_address) if home_address else None)
        raise ValueError(f"unknown command {command!r}")


def _udp_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind((address, port))
    except PermissionError:
        sock.close()
        raise StartupError(
            f"home_agent.port: binding {address}:{port} needs privilege (run as root, grant "
            "CAP_NET_BIND_SERVICE, or use a port from 1024 up)"
        ) from None
    except OSError as exc:
        sock.close()
        raise StartupError(f"home_agent.address: cannot bind {address}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def run(config: Config) -> None:
    """Run until SIGTERM or SIGINT. Raises StartupError when the daemon cannot start."""
    asyncio.run(Daemon(config).run())
