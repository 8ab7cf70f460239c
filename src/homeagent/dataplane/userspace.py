"""Backend "userspace": the daemon's handle on the forwarding process (``dataplane.forwarder``).

The Home Agent core calls ``set_tunnels`` and ``serve`` on the registration loop, so neither may wait for
the forwarder: each call records the change in the handle's copy of the table, and one flush, scheduled on
the loop, packs what is waiting into as few control messages as it can (the latest tunnels of a home
address replace earlier ones not yet sent, so a burst coalesces) and sends them without blocking; a full
socket waits for the loop to say it is writable, and a long table is packed a slice per loop turn.

The forwarder is a process of its own (see its docstring for why). The handle reads its socket; when the
socket closes, the forwarder has died: the handle logs it, counts ``dataplane.restarts``, starts a new one
(at once, then backing off if it keeps dying young) and replays the whole table and the serving state to
it. The new TUN device starts empty, so there is nothing stale to reconcile. A forwarder that lives but no
longer reads its socket (hung) is found by a watchdog: every ``PING_EVERY`` seconds the handle asks "are
you there", which the forwarder answers as soon as it reads it; one that has not answered for
``HUNG_AFTER`` seconds is logged, counted (``dataplane.hung``) and killed, and restarted as a dead one;
one that uses CPU meanwhile (starved behind a long replay, which it reads in order) is given up to
``BUSY_LIMIT``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from homeagent.dataplane import Tunnel
from homeagent.dataplane.messages import (Applied, CountersPart, Pong, Ready, decode, encode_barrier,
                                          encode_counters_request, encode_ping, encode_serve, encode_tunnels)
from homeagent.wire.errors import ParseError
from homeagent.wire.ip import DEFAULT_TTL

log = logging.getLogger("homeagent.dataplane")

FLUSH_SLICE = 1024  # home addresses packed per loop turn (~3 ms here): a long replay must not hold the loop
OUTBOX_LIMIT = 64  # packed messages waiting on the socket before packing stops (the rest stays coalesced)
RESTART_FIRST = 0.05  # seconds before restarting a forwarder that died
RESTART_MAX = 5.0  # the longest wait, for a forwarder that dies as soon as it starts
YOUNG = 2.0  # a forwarder that dies younger than this makes the next wait longer
PING_EVERY = 2.0  # seconds between two "are you there" to the forwarder
HUNG_AFTER = 10.0  # seconds without an answer before a forwarder is taken for hung, killed and restarted
# ... unless it is using CPU, as one starved behind a long replay is (it reads its socket in order, and at
# niceness 19 on a busy host gets ~1.5 % of a CPU): that one is given up to this long. One whose threads
# all wait (a system call, a lock) uses none and goes at HUNG_AFTER; one looping forever at BUSY_LIMIT.
BUSY_LIMIT = 60.0
DETAIL_LIMIT = 4096  # home addresses up to which counters() lists every tunnel (~3 us each of forwarder time)


class UserspaceDataplane:
    """A ``Dataplane`` that forwards in a process of its own, restarted whenever it dies."""

    def __init__(self, tun: str = "ha0", mtu: int = 1500, ttl: int = DEFAULT_TTL,
                 argv_prefix: Sequence[str] = (), python: str = sys.executable, nice: int | None = None,
                 read_size: int | None = None) -> None:
        """``argv_prefix``: what the forwarder's command line is wrapped in (``ip netns exec NS`` in the
        tests); ``mtu``: the link's, the TUN device gets 20 less; ``ttl``: the outer TTL; ``nice``: the
        forwarder's niceness (None: its default, ``forwarder.NICE``); ``read_size``: the longest datagram
        it reads from the TUN (None: the link's MTU)."""
        self.tun = tun
        self.mtu = mtu
        self.ttl = ttl
        self.nice = nice
        self.read_size = read_size
        self._argv_prefix = list(argv_prefix)
        self._python = python
        self._table: dict[int, tuple[Tunnel, ...]] = {}
        self._serving = False
        self._pending: dict[int, tuple[Tunnel, ...]] = {}
        self._serve_pending = False
        # Barriers (``barrier``): changes made since the last one sent; the one to send after them; those
        # sent and not yet answered, oldest first, by mark.
        self._unmarked = False
        self._next_barrier: asyncio.Future[None] | None = None
        self._barriers: dict[int, asyncio.Future[None]] = {}
        self._mark = 0
        self._outbox: deque[bytes] = deque()
        self._flush_scheduled = False
        self._writing = False
        self._counters: Counter[str] = Counter()
        self._snapshot: dict[str, object] = {}
        self._parts: dict[int, list[bytes]] = {}
        self._waiting: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._request = 0
        self._asked: list[tuple[int, bool]] = []  # counters requests waiting for the changes before them
        self._ready: asyncio.Future[dict[str, object]] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._started_at = 0.0
        self._restart_wait = RESTART_FIRST
        self._restart: asyncio.TimerHandle | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._ping_mark = 0
        self._pinged_at: float | None = None  # when the unanswered "are you there" went
        # (when, the forwarder's CPU seconds) at the watchdog's looks since its unanswered ping: a tick is
        # 10 ms, so a starved forwarder's CPU is judged over HUNG_AFTER, not over one look's 2 s
        self._cpu_samples: deque[tuple[float, float | None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- the Dataplane interface ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the forwarder; call on the running loop. ``ready()`` waits until it forwards."""
        self._loop = asyncio.get_running_loop()
        self._spawn()

    def set_tunnels(self, home_address: int, tunnels: tuple[Tunnel, ...]) -> None:
        tunnels = tuple(tunnels)
        if tunnels:
            self._table[home_address] = tunnels
        else:
            self._table.pop(home_address, None)
        self._pending[home_address] = tunnels
        self._unmarked = True
        self._schedule()

    def tunnels_of(self, home_address: int) -> tuple[Tunnel, ...]:
        """The tunnels last set for ``home_address`` (what the forwarder has, or will at the next flush)."""
        return self._table.get(home_address, ())

    def tunnel_table(self) -> Mapping[int, tuple[Tunnel, ...]]:
        """Every home address with tunnels, and its tunnels (read only)."""
        return MappingProxyType(self._table)

    def home_addresses(self) -> int:
        """How many home addresses have tunnels."""
        return len(self._table)

    def serve(self, serving: bool) -> None:
        self._serving = serving
        self._serve_pending = True
        self._unmarked = True
        self._schedule()

    def commit(self) -> None:
        """Nothing: the changes go to the forwarder at the end of the loop turn, and a reply waits on its
        barrier."""

    def barrier(self) -> asyncio.Future[None] | None:
        """A future done when the forwarder says every change made so far is in effect: a ``B`` message
        goes after them, and the forwarder answers once its engine and the kernel's routes have them.
        ``None`` when nothing waits, or when no forwarder runs (a new one gets the whole table; a reply
        must not wait for a restart)."""
        if self._sock is None or self._loop is None:
            return None
        if not self._unmarked:  # the changes are all before a barrier sent already: the latest one
            return next(reversed(self._barriers.values()), None)
        if self._next_barrier is None:
            self._next_barrier = self._loop.create_future()
            self._schedule()
        return self._next_barrier

    def counters(self) -> dict[str, object]:
        """The last snapshot from the forwarder, with the handle's own counters; asks for a fresh one, with
        every tunnel's counters while there are at most ``DETAIL_LIMIT`` home addresses (beyond, the
        per-tunnel counters are those of the last ``fetch_counters(tunnels=True)``)."""
        if self._sock is not None and not self._waiting:
            self._ask_counters(len(self._table) <= DETAIL_LIMIT)
        return self._merged()

    async def fetch_counters(self, timeout: float = 2.0, tunnels: bool = True) -> dict[str, object]:
        """A fresh snapshot, once the forwarder has applied everything sent before; ``tunnels``: with every
        tunnel's counters (``dataplane.tunnels``), which costs the forwarder ~3 us a tunnel."""
        future = self._ask_counters(tunnels)
        if future is not None:
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.CancelledError:
                if not future.cancelled():  # it is the caller who is cancelled
                    raise
                # The forwarder died before it answered: what we had is all there is.
        return self._merged()

    async def ready(self, timeout: float = 10.0) -> dict[str, object]:
        """Wait until a forwarder has its device and sockets (what it reported); across a restart, until
        the new one has."""
        future = self._ready
        if future is None:
            raise RuntimeError("the data plane is not started")
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    def close(self) -> None:
        """Stop the forwarder: closing its socket ends it, and its device and routes go with it."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
        proc = self._proc
        self._detach()
        if proc is not None:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- the forwarding process -----------------------------------------------------------------------

    def _spawn(self) -> None:
        assert self._loop is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [*self._argv_prefix, self._python, "-m", "homeagent.dataplane.forwarder",
                "--control-fd", str(theirs.fileno()), "--tun", self.tun, "--mtu", str(self.mtu),
                "--ttl", str(self.ttl), *(["--nice", str(self.nice)] if self.nice is not None else []),
                *(["--read-size", str(self.read_size)] if self.read_size is not None else [])]
        try:
            self._proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            theirs.close()
            log.exception("cannot start the forwarder")
            self._counters["dataplane.start_failures"] += 1
            self._schedule_restart()
            return
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._started_at = time.monotonic()
        if self._ready is None or self._ready.done():
            self._ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._readable)
        self._pinged_at = None
        # The new forwarder knows nothing: everything is to be sent again, the latest state only.
        self._outbox.clear()
        self._pending = dict(self._table)
        self._serve_pending = True
        self._schedule()

    def _detach(self) -> None:
        """Let go of the current forwarder's socket (it ends, or has ended, with it)."""
        sock, self._sock = self._sock, None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            if self._writing:
                self._loop.remove_writer(sock.fileno())
            self._writing = False
            sock.close()
        self._proc = None
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._release_barriers()
        if self._ready is not None and self._loop is not None:
            if self._closed:
                self._ready.cancel()
            elif self._ready.done():  # the next forwarder's: ``ready`` waits for it across the restart
                self._ready = self._loop.create_future()
        self._waiting.clear()
        self._asked.clear()
        self._parts.clear()

    def _died(self, why: str) -> None:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:  # it closed its socket but lives on: end it
                proc.kill()
                code = proc.wait(timeout=3)
        self._detach()
        if self._closed:
            return
        self._counters["dataplane.restarts"] += 1
        log.error("the forwarder died (%s, exit status %s); restarting it and replaying %d home addresses",
                  why, code, len(self._table))
        if time.monotonic() - self._started_at < YOUNG:
            self._restart_wait = min(self._restart_wait * 2, RESTART_MAX)
        else:
            self._restart_wait = RESTART_FIRST
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        assert self._loop is not None
        self._restart = self._loop.call_later(self._restart_wait, self._restart_now)

    def _restart_now(self) -> None:
        self._restart = None
        if not self._closed:
            self._spawn()

    def _readable(self) -> None:
        sock = self._sock
        assert sock is not None
        for _ in range(64):
            try:
                message = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._died(str(exc))
                return
            if not message:
                self._died("its socket closed")
                return
            try:
                answer = decode(message)
            except ParseError as exc:
                self._counters["dataplane.control_malformed"] += 1
                log.warning("the forwarder said something malformed: %s", exc)
                continue
            if isinstance(answer, Ready):
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(answer.info)
                if self._watch is None and self._loop is not None:  # up: from now on it must answer
                    self._watch = self._loop.call_later(PING_EVERY, self._ping)
            elif isinstance(answer, CountersPart):
                self._counters_part(answer)
            elif isinstance(answer, Applied):
                self._applied(answer.mark)
            elif isinstance(answer, Pong) and answer.mark == self._ping_mark:
                self._pinged_at = None

    def _ping(self) -> None:
        """The watchdog: ask the forwarder whether it is there; kill one that has not answered for
        ``HUNG_AFTER`` seconds (its socket then closes, and it is restarted as a dead one is)."""
        sock, proc, loop = self._sock, self._proc, self._loop
        if sock is None or loop is None:
            return
        now = time.monotonic()
        if self._pinged_at is not None:
            waited = now - self._pinged_at
            samples = self._cpu_samples
            samples.append((now, _cpu_seconds(proc.pid) if proc is not None else None))
            while len(samples) > 2 and samples[1][0] <= now - HUNG_AFTER:
                samples.popleft()  # the oldest kept is the newest at least HUNG_AFTER old
            then, latest = samples[0][1], samples[-1][1]
            busy = then is not None and latest is not None and latest > then  # CPU in the last HUNG_AFTER
            if waited >= HUNG_AFTER and proc is not None and not (busy and waited < BUSY_LIMIT):
                self._counters["dataplane.hung"] += 1
                log.error("the forwarder (pid %d) has not answered for %.0f s%s: killing it", proc.pid,
                          waited, ", though busy" if busy else "")
                proc.kill()
                return  # its socket closes: _readable sees it die
        else:
            self._cpu_samples = deque([(now, _cpu_seconds(proc.pid) if proc is not None else None)])
            self._ping_mark = (self._ping_mark + 1) & 0xFFFFFFFF
            try:
                sock.send(encode_ping(self._ping_mark))
                self._pinged_at = now
            except (BlockingIOError, InterruptedError):  # not reading: it is asked again next time
                self._pinged_at = now
            except OSError as exc:
                self._died(str(exc))
                return
        self._watch = loop.call_later(PING_EVERY, self._ping)

    def _applied(self, mark: int) -> None:
        """Barrier ``mark`` and every one sent before it are passed (the forwarder answers in order)."""
        if mark not in self._barriers:
            self._counters["dataplane.control_unexpected"] += 1
            return
        while self._barriers:
            sent, future = next(iter(self._barriers.items()))
            del self._barriers[sent]
            if not future.done():
                future.set_result(None)
            if sent == mark:
                return

    def _release_barriers(self) -> None:
        """The forwarder is gone: nothing waits on it (its successor is given the whole table)."""
        waiting = [*self._barriers.values(), *([self._next_barrier] if self._next_barrier else [])]
        self._barriers.clear()
        self._next_barrier = None
        self._unmarked = False
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def _counters_part(self, part: CountersPart) -> None:
        parts = self._parts.setdefault(part.request, [])
        parts.append(part.chunk)
        if not part.last:
            return
        del self._parts[part.request]
        try:
            snapshot = json.loads(b"".join(parts))
        except ValueError:
            self._counters["dataplane.control_malformed"] += 1
            return
        if "tunnels" not in snapshot and "tunnels" in self._snapshot:  # totals only: keep the last detail
            snapshot["tunnels"] = self._snapshot["tunnels"]
        self._snapshot = snapshot
        future = self._waiting.pop(part.request, None)
        if future is not None and not future.done():
            future.set_result(snapshot)

    def _ask_counters(self, tunnels: bool) -> asyncio.Future[dict[str, object]] | None:
        if self._sock is None or self._loop is None:
            return None
        self._request = (self._request + 1) & 0xFFFFFFFF
        future: asyncio.Future[dict[str, object]] = self._loop.create_future()
        self._waiting[self._request] = future
        self._asked.append((self._request, tunnels))  # after the changes asked before: applied first
        self._schedule()
        return future

    def _merged(self) -> dict[str, object]:
        merged: dict[str, object] = {"dataplane.backend": "userspace",
                                     "dataplane.running": self._sock is not None,
                                     "dataplane.pid": self.pid, "dataplane.restarts": 0, "dataplane.hung": 0,
                                     "dataplane.home_addresses_wanted": len(self._table)}
        merged.update({f"dataplane.{key}": value for key, value in self._snapshot.items()})
        merged.update(self._counters)
        return merged

    # -- sending changes without blocking the loop ----------------------------------------------------

    def _schedule(self) -> None:
        if not self._flush_scheduled and self._loop is not None and self._sock is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._sock is None:
            return
        if self._pending and len(self._outbox) < OUTBOX_LIMIT:
            entries = [self._pending.popitem() for _ in range(min(FLUSH_SLICE, len(self._pending)))]
            self._outbox.extend(encode_tunnels(entries))
        if self._serve_pending and not self._pending:  # after the tunnels: a takeover finds them in place
            self._serve_pending = False
            self._outbox.append(encode_serve(self._serving))
        if self._next_barrier is not None and not self._pending and not self._serve_pending:
            self._mark = (self._mark + 1) & 0xFFFFFFFF
            self._barriers[self._mark] = self._next_barrier
            self._next_barrier = None
            self._unmarked = False
            self._outbox.append(encode_barrier(self._mark))
        if not self._pending:
            self._outbox.extend(encode_counters_request(request, tunnels) for request, tunnels in self._asked)
            self._asked.clear()
        self._send()
        if self._pending and len(self._outbox) < OUTBOX_LIMIT:
            self._schedule()

    def _send(self) -> None:
        sock = self._sock
        if sock is None or self._loop is None:
            return
        while self._outbox:
            try:
                sock.send(self._outbox[0])
            except (BlockingIOError, InterruptedError):
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(sock.fileno(), self._writable)
                return
            except OSError as exc:
                self._died(str(exc))
                return
            self._outbox.popleft()
            self._counters["dataplane.control_messages"] += 1
        if self._writing:
            self._writing = False
            self._loop.remove_writer(sock.fileno())

    def _writable(self) -> None:
        self._send()
        if not self._outbox and (self._pending or self._serve_pending or self._asked or self._next_barrier):
            self._schedule()


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time process ``pid`` has used (user and system, proc(5)), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):
        return None
