"""The daemon: the sockets, the control socket, one timer, and the core in between.

Datagrams are read by draining non-blocking sockets from ``loop.add_reader`` rather than through a
``DatagramProtocol`` (one callback per datagram costs more than the registration itself). Effects are
carried out here and nowhere else. With redundancy, the member's own address carries registrations (peer
mode) and the group's messages; the virtual address is bound only while the election says this member
holds it. With the ``bind`` method (loopback and single-host set-ups) that is all; with the ``interface``
method ``runtime.address`` also puts the address on the link and announces it. Every turn of the loop (a
drain, a timer, a control command) ends with ``_commit``: what it gathered (the store's changes, the ebpf
backend's map values) is committed before its registration replies leave (runtime/persistence.py,
docs/dataplane.md "A reply means forwarding"), and a long drain commits every ``COMMIT_EVERY`` datagrams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any

from homeagent.config import AddressMethod, Config, ConfigError, ElectionKind, load
from homeagent.core.effects import ClaimAddress, Effect, ReleaseAddress, Send, Serve, TunnelSet
from homeagent.core.home_agent import RELOADABLE, HomeAgent
from homeagent.core.listing import BindingWalk
from homeagent.core.removal import BulkRemoval
from homeagent.runtime import cleanup, control, logs, notify, state_dir
from homeagent.runtime.persistence import Persistence, open_store
from homeagent.runtime.store import StoreError
from homeagent.runtime.address import AddressError, AddressWatch, InterfaceAddress
from homeagent.runtime.forwarding import Forwarding, ForwardingError
from homeagent.wire.era import UNIX_ERA
from homeagent.wire.registration import MessageType

if TYPE_CHECKING:
    from homeagent.runtime.metrics import Endpoint

log = logging.getLogger("homeagent.daemon")

DRAIN_BATCH = 512  # datagrams per wake-up before yielding to timers and the control socket
DRAIN_BUDGET = 0.01  # seconds of work per wake-up, likewise: a burst of table replies or of acks that
#                      each let more replies go must not hold the advertisements back (issue 10)
FLUSH_EVERY = 32  # datagrams between two flushes of the messages queued for members
COMMIT_EVERY = 64  # datagrams between two commits (``_commit``), whose replies wait for them: a whole
#                    drain's would hold back the replies a client keeps its window going with (with a
#                    window of 128, 0.70 of the rate without persistence, against 0.85 so)
MIN_BUFFER = 8192  # larger than any registration; longer datagrams arrive truncated and fail auth
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux: bind an address the interface does not have yet
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux: queue ICMP errors, with the destination, on the socket
SO_EE_ORIGIN_ICMP = 2
REGISTRATION_REPLY = int(MessageType.REGISTRATION_REPLY)
_EXTENDED_ERROR = struct.Struct("=IBBB")  # struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code


class StartupError(RuntimeError):
    pass


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.core = HomeAgent(config, time.monotonic())
        self._now()
        self._own = str(config.home_agent.address)
        self._sockets: dict[str, socket.socket] = {}  # local address -> socket
        self._drainers: dict[str, Callable[[], None]] = {}
        self._buffer = max(MIN_BUFFER, config.redundancy.max_datagram if config.redundancy else 0)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopping: asyncio.Event | None = None
        self._metrics: Endpoint | None = None  # [metrics] listen: the Prometheus endpoint
        self._loop: asyncio.AbstractEventLoop | None = None
        red = config.redundancy
        # The virtual address may not be on the host when its socket is bound: keepalived adds it when it
        # likes (external election), and the interface method adds it just after.
        self._freebind = red is not None and (red.election is ElectionKind.EXTERNAL or red.address_method is AddressMethod.INTERFACE)
        self._forwarding = Forwarding(config.dataplane, self.core.counters, config.redundancy)
        self._persistence: Persistence | None = None  # [home_agent] persistence: opened in run()
        # Registration replies held until what they report is in effect and on disk (``_commit``), and
        # those held so far.
        self._hold_replies = self._forwarding.defers or self._forwarding.batches or config.home_agent.persistence
        self._held: list[tuple[socket.socket, Send]] = []
        self._commit_due = False  # a _commit is scheduled for the end of this loop turn
        # Sockets are read only from the start of service (store loaded, core started) to the stop: what
        # arrives before waits in the kernel, and nothing is accepted that the store would not hold.
        self._reading = False
        self._interface: InterfaceAddress | None = None
        if red is not None and red.address_method is AddressMethod.INTERFACE:
            assert red.interface is not None
            # The home addresses are announced at a takeover by the data plane's Neighbours, paced, when
            # there is one; without, with the virtual address, as before.
            proxied = self.core.bindings.bound if self._forwarding.neighbours is None else list
            self._interface = InterfaceAddress(red.interface, proxied, self.core.counters,
                                               config.dataplane.announce_rate)
        self._watch: AddressWatch | None = None
        if red is not None and red.election is ElectionKind.EXTERNAL:
            self._watch = AddressWatch(str(red.virtual_address), self._address_seen)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        notifier = notify.Notifier.from_environment()  # systemd (Type=notify): READY=1, WATCHDOG=1
        self._handle_signals()
        ha = self.config.home_agent
        now = time.time()
        if now < UNIX_ERA:  # a host without a real-time clock, before NTP set it
            raise StartupError(f"the system clock reads {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} "
                               "UTC, before 2000: what this member stamped would be taken for 2106 and later "
                               "(wire/era.py); set the clock first (NTP), or start after time-sync.target")
        try:
            state_dir.prepare(ha.state_dir)
        except state_dir.StateDirError as exc:
            raise StartupError(str(exc)) from None
        self._open(self._own, ha.port)
        red = self.config.redundancy
        if red is not None and red.election is ElectionKind.INTERNAL:
            # A member whose process died answers our advertisements with ICMP port unreachable: hear it.
            self._sockets[self._own].setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        try:
            if self.config.metrics.listen is not None:
                from homeagent.runtime import metrics  # prometheus-client, only where it is asked for

                try:
                    self._metrics = await metrics.serve(self.config.metrics, self.core, self._forwarding)
                except metrics.MetricsError as exc:
                    raise StartupError(str(exc)) from None
            if red is not None and red.multicast_group is not None:
                self._open_multicast(str(red.multicast_group), ha.port)
            if self._interface is not None:
                try:
                    for line in await cleanup.clean(self.config):  # a member that starts is not active
                        log.warning("%s: left there by an earlier run", line)
                    await self._interface.open()
                except (AddressError, cleanup.CleanupError, OSError) as exc:
                    raise StartupError(str(exc)) from None
            try:
                await self._forwarding.open()
            except ForwardingError as exc:
                raise StartupError(f"data plane: {exc}") from None
            try:
                server = await control.serve(self.config.control_socket, self._control)
            except (control.ControlError, OSError) as exc:
                await self._forwarding.close()
                raise StartupError(f"control socket: {exc}") from None
            try:
                if ha.persistence:  # after the control socket: no second daemon reads or writes the store
                    try:
                        self._persistence = open_store(self.config.store_path, self.core)
                        self._apply(self._persistence.load(self._now()))
                    except StoreError as exc:
                        raise StartupError(str(exc)) from None
                log.info("serving on %s:%d (role %s)", ha.address, ha.port, self.core.role)
                self._apply(self.core.start(self._now()))
                self._read(True)
                if self._watch is not None:
                    await self._watch.open()
                self._arm_timer()
                supervisor = asyncio.create_task(notify.supervise(notifier, self._ready, self._summary))
                await self._stopping.wait()
                # Nothing more is accepted (no datagram read, no timer, no control command) from here: what
                # the stop writes to the store is all there is, and nothing answered is left out of it.
                self._read(False)
                if self._timer:
                    self._timer.cancel()
                    self._timer = self._timer_at = None
                server.close()
                notifier.send("STOPPING=1")
                supervisor.cancel()
                notifier.close()
                log.info("stopping: %d bindings held", len(self.core.bindings))
                if self._watch is not None:
                    self._watch.close()
                self._apply(self.core.stop(self._now()))
                self._commit()
                if self._persistence is not None:
                    self._persistence.close(self._now())
                    self._persistence = None
                if self._interface is not None:
                    await self._interface.close()
            finally:
                await self._forwarding.close()
                server.close()
                # Python 3.12.1+ waits here for every connection, and one whose client reads nothing would
                # hold the stop; what is left is cut when the loop ends (control.serve, CLOSE_WAIT).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(server.wait_closed(), control.CLOSE_WAIT)
                self.config.control_socket.unlink(missing_ok=True)
        finally:
            if self._timer:
                self._timer.cancel()
            for local in list(self._sockets):
                self._close(local)
            if self._metrics is not None:
                await self._metrics.close()

    def _ready(self) -> bool:
        """Serving as systemd understands it: a lone Home Agent at once, a member once out of ``init``."""
        return self.core.role != "init"

    def _summary(self) -> str:
        return f"role {self.core.role}, {len(self.core.bindings)} bindings"

    def _now(self) -> float:
        """The monotonic time every deadline runs on; the core's wall clock is set to agree with the
        system's as of now (a step of the system clock moves only what goes on the wire)."""
        now = time.monotonic()
        self.core.clock.offset = time.time() - now
        return now

    def stop(self) -> None:
        """SIGTERM, SIGINT, SIGQUIT: stop reading, tell the group, close the sockets, exit 0."""
        if self._stopping is not None:
            self._stopping.set()

    # -- signals --------------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        """No signal but SIGKILL ends the daemon unasked-for: each one whose default would end the process
        is handled here. SIGTERM, SIGINT and SIGQUIT stop it cleanly; SIGHUP reloads the configuration;
        SIGUSR1 logs one line of status; the rest (SIGUSR2, the timer, I/O, power and real-time signals)
        are logged and ignored, and SIGPIPE and SIGXFSZ stay ignored as Python leaves them (a failed
        write is an error on that write). The signals a fault raises (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
        SIGABRT, SIGSYS, SIGTRAP) keep their default: a handler would turn a real crash into a hang."""
        loop = self._loop
        assert loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self._report)
        ignored = [getattr(signal, name) for name in ("SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO",
                                                      "SIGPWR", "SIGSTKFLT", "SIGXCPU") if hasattr(signal, name)]
        if hasattr(signal, "SIGRTMIN"):
            ignored += range(signal.SIGRTMIN, signal.SIGRTMAX + 1)
        for sig in ignored:
            loop.add_signal_handler(sig, self._ignore, sig)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_IGN)

    def _ignore(self, sig: int) -> None:
        try:
            name = signal.Signals(sig).name
        except ValueError:  # a real-time signal other than the first and the last
            name = f"signal {sig}"
        log.warning("%s ignored", name)

    def _report(self) -> None:
        """SIGUSR1: the role, the bindings and the peers, in one log line at info."""
        st = self.core.status(self._now())
        peers = ", ".join(f"{p.get('address')} {p.get('state')}" for p in st["peers"]) or "none"
        log.info("status: role %s, %d bindings, peers: %s", st["role"], st["bindings"], peers)

    def reload(self) -> None:
        """SIGHUP: read the configuration file again and apply what can change while bindings are held
        (``HomeAgent.reload``; the log level here). What would need a restart is logged and left as it
        runs; a file that does not load changes nothing. Bindings, sockets and the role never move."""
        counters = self.core.counters
        source = self.config.source
        try:
            if source is None:
                raise ConfigError("config", "not read from a file: nothing to reload")
            new = load(source)
        except ConfigError as exc:
            counters["reload_failed"] += 1
            log.error("reload failed, nothing changed: %s", exc)
            return
        old = self.config
        root = logging.getLogger()
        old_level = logging.getLevelName(root.getEffectiveLevel()).lower()
        restart = self.core.reload(new)
        if new.log.level is not None:
            root.setLevel(new.log.level.upper())
        logs.set_style(new.log.format)
        self.config = self.core.config
        for key in restart:
            log.warning("needs a restart: %s (left as it runs)", key)
        changes = self._changes(old, self.config)
        new_level = logging.getLevelName(root.getEffectiveLevel()).lower()
        if new_level != old_level:
            changes.append(f"log.level {old_level} -> {new_level}")
        if old.log.format != self.config.log.format:
            changes.append(f"log.format {old.log.format} -> {self.config.log.format}")
        counters["reloads"] += 1
        log.info("reloaded %s: %s", source, "; ".join(changes) or ("nothing else changed" if restart else
                                                                   "nothing changed"))

    @staticmethod
    def _changes(old: Config, new: Config) -> list[str]:
        """What a reload changed, by key (never a key's secret)."""
        out = []
        for name in RELOADABLE:
            before, after = getattr(old.home_agent, name), getattr(new.home_agent, name)
            if before != after:
                out.append(f"home_agent.{name} {before} -> {after}")
        if old.security_associations != new.security_associations:
            out.append(f"security_association ({len(new.security_associations)} now)")
        if old.redundancy is not None and new.redundancy is not None:
            associations = new.redundancy.security_associations
            if old.redundancy.security_associations != associations:
                out.append(f"redundancy.security_association ({len(associations)} now)")
        return out

    # -- sockets --------------------------------------------------------------------------------------

    def _open(self, local: str, port: int, freebind: bool = False) -> None:
        key = "home_agent.address" if local == self._own else "redundancy.virtual_address"
        sock = _udp_socket(local, port, freebind, key)
        self._sockets[local] = sock
        assert self._loop is not None
        self._drainers[local] = drain = self._drainer(sock, local)
        if self._reading:
            self._loop.add_reader(sock.fileno(), drain)

    def _read(self, reading: bool) -> None:
        """Start (or stop) reading every socket opened so far, and those opened from now on."""
        assert self._loop is not None
        self._reading = reading
        for local, sock in self._sockets.items():
            if reading:
                self._loop.add_reader(sock.fileno(), self._drainers[local])
            else:
                self._loop.remove_reader(sock.fileno())

    def _open_multicast(self, group: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((group, port))
            membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(self._own))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError as exc:
            sock.close()
            raise StartupError(f"redundancy.multicast_group: cannot join {group}: {exc.strerror}") from None
        sock.setblocking(False)
        self._sockets[group] = sock
        member = self._sockets[self._own]
        member.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self._own))
        assert self._loop is not None
        # What arrives here was sealed for the group: its address, not ours, is the receiver.
        self._drainers[group] = drain = self._drainer(sock, group)
        if self._reading:
            self._loop.add_reader(sock.fileno(), drain)

    def _close(self, local: str) -> None:
        sock = self._sockets.pop(local, None)
        self._drainers.pop(local, None)
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    # -- the hot path ---------------------------------------------------------------------------------

    def _drainer(self, sock: socket.socket, local: str) -> Callable[[], None]:
        core = self.core
        receive = core.receive_datagram
        apply = self._apply
        size = self._buffer
        monotonic = time.monotonic

        def drain() -> None:
            self._now()  # the wall clock's offset, once per burst
            # This turn ends with a commit: what it holds needs none scheduled (``_commit_by_end_of_turn``),
            # which would cost each drain one more turn of the loop, and a burst of small drains is the
            # common case under load (a client that waits for its replies sends a few at a time).
            self._commit_due = True
            try:
                core.begin_batch()
                deadline = monotonic() + DRAIN_BUDGET
                for i in range(DRAIN_BATCH):
                    if i % FLUSH_EVERY == FLUSH_EVERY - 1:  # keep acks and replies flowing in a long burst
                        now = monotonic()
                        apply(core.end_batch(now))
                        if i % COMMIT_EVERY == COMMIT_EVERY - 1:
                            self._commit()
                        if now >= deadline:
                            break  # the rest waits on the socket: the loop runs the timers first
                        core.begin_batch()
                    try:
                        data, source = sock.recvfrom(size)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:  # ICMP port unreachable, reported on the socket
                        log.debug("receive error on %s: %s", local, exc)
                        self._read_errors(sock)
                        continue
                    effects = receive(data, source, local, monotonic())
                    if effects:
                        apply(effects, sock)
                apply(core.end_batch(monotonic()))
            finally:
                self._commit_due = False
                self._commit()
            self._arm_timer()

        return drain

    def _send_failed(self, sock: socket.socket, effect: Send, exc: OSError) -> None:
        """A send that failed. ECONNREFUSED is an earlier datagram's ICMP error (IP_RECVERR), reported on
        this send instead of sending it: read the error and send once more. Anything else is counted."""
        if isinstance(exc, ConnectionRefusedError):
            self._read_errors(sock)
            try:
                sock.sendto(effect.datagram, effect.address)
                return
            except OSError as again:
                exc = again
        self.core.counters["send_failed"] += 1
        log.debug("send to %s failed: %s", effect.address, exc)

    def _read_errors(self, sock: socket.socket) -> None:
        """The ICMP errors queued on ``sock`` (IP_RECVERR): a port or protocol unreachable for a datagram
        we sent tells the core that nothing listens at that member any more."""
        while True:
            try:
                _, ancillary, _, destination = sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
            except OSError:  # empty (BlockingIOError), or no error queue on this socket
                return
            for level, kind, data in ancillary:
                if level != socket.IPPROTO_IP or kind != IP_RECVERR or len(data) < _EXTENDED_ERROR.size:
                    continue
                _, origin, icmp_type, icmp_code = _EXTENDED_ERROR.unpack_from(data)
                if origin == SO_EE_ORIGIN_ICMP and icmp_type == 3 and icmp_code in (2, 3):
                    self._apply(self.core.unreachable(destination[0], self._now()))

    def _apply(self, effects: list[Effect], arrived_on: socket.socket | None = None) -> None:
        """Carry out ``effects`` in order, except that a registration reply, with a data plane that applies
        changes out of line or in batches, or with persistence, is held for ``_commit`` (the mobile node's traffic flows when it
        is told it is registered: docs/dataplane.md, "A reply means forwarding")."""
        for effect in effects:
            if type(effect) is Send:
                sock = self._sockets.get(effect.source) if effect.source else arrived_on
                if sock is None:
                    sock = self._sockets.get(self._own)
                if sock is None:
                    continue
                if self._hold_replies and effect.datagram[0] == REGISTRATION_REPLY:
                    self._commit_by_end_of_turn()
                    self._held.append((sock, effect))
                    continue
                try:
                    sock.sendto(effect.datagram, effect.address)
                except OSError as exc:
                    self._send_failed(sock, effect, exc)
            elif type(effect) is ClaimAddress:
                self._claim(effect.address, effect.announce)
            elif type(effect) is ReleaseAddress:
                self._close(effect.address)
                if self._interface is not None:
                    self._interface.want(effect.address, False)
            elif type(effect) is TunnelSet or type(effect) is Serve:
                self._forwarding.apply(effect)
                if self._forwarding.batches:  # a change gathered: in effect by the end of this turn, reply or not
                    self._commit_by_end_of_turn()
            else:
                raise TypeError(f"an effect the runtime does not know: {effect!r}")  # none is dropped

    def _commit(self) -> None:
        """The end of a turn of the loop, or of a step of a long drain: what it gathered is committed (the
        data plane's batch: ebpf's map values in one system call; the store's transaction: every node
        changed, runtime/persistence.py), then the registration replies held for it go, each at once or,
        with userspace, once the barrier of its home address's latest change has passed. Called at the
        end of every drain (and every ``COMMIT_EVERY`` datagrams of a long one), timer and control command,
        and at the end of any other loop turn that held a reply or gathered a change
        (``_commit_by_end_of_turn``)."""
        forwarding = self._forwarding
        try:
            forwarding.commit()
            if self._persistence is not None:
                self._persistence.commit(self._now())
        finally:  # neither raises by design (each counts its failures); if one did, the replies still go
            self._send_held()

    def _commit_by_end_of_turn(self) -> None:
        """Make sure this turn ends with a ``_commit``: drains, timers and control commands end with one
        already, but the start (the store's bindings, the core's first effects) and callbacks do not."""
        if not self._commit_due:
            self._commit_due = True
            asyncio.get_running_loop().call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._commit_due = False
        self._commit()

    def _send_held(self) -> None:
        forwarding = self._forwarding
        held = self._held
        if not held:
            return
        self._held = []
        if forwarding.defers:
            for sock, effect in held:
                home_address = int.from_bytes(effect.datagram[4:8], "big")  # RFC 5944 3.4
                forwarding.when_in_effect(home_address, partial(self._send, sock, effect))
        else:
            for sock, effect in held:
                self._send(sock, effect)

    def _send(self, sock: socket.socket, effect: Send) -> None:
        try:
            sock.sendto(effect.datagram, effect.address)
        except OSError as exc:  # a socket closed meanwhile (the virtual address given up): counted
            self._send_failed(sock, effect, exc)

    def _claim(self, address: str, announce: bool = False) -> None:
        if self._interface is not None:
            self._interface.want(address, True, announce)
        if address in self._sockets:
            return
        try:
            self._open(address, self.config.home_agent.port, self._freebind)
            log.info("holding the virtual address %s", address)
        except StartupError as exc:
            self.core.counters["claim_failed"] += 1
            if self.core.counters["claim_failed"] == 1 or log.isEnabledFor(logging.DEBUG):
                log.warning("cannot take the virtual address yet (retrying): %s", exc)

    def _address_seen(self, present: bool) -> None:
        """External election: the VRRP daemon put the virtual address on this host, or took it off."""
        log.info("the virtual address is %s this host: %s", "on" if present else "off",
                 "active" if present else "standby")
        self.core.counters["redundancy.address_seen" if present else "redundancy.address_gone"] += 1
        self._apply(self.core.set_role("active" if present else "standby", self._now()))
        self._commit()
        self._arm_timer()

    # -- timers ---------------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        at = self.core.next_timer()
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer:
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, at - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        # Read what is waiting first: after a stall (SIGSTOP, an overloaded host) the timers are late and
        # the datagrams that came meanwhile (the active member's advertisements) must count before them.
        for drain in list(self._drainers.values()):
            drain()
        if self._timer is not None:  # armed by a drain: this call handles the timers anyway
            self._timer.cancel()
            self._timer = self._timer_at = None
        self._apply(self.core.handle_timer(self._now()))
        self._commit()
        self._arm_timer()

    # -- control --------------------------------------------------------------------------------------

    def _control(self, request: dict[str, Any]) -> Any:
        if self._stopping is not None and self._stopping.is_set():  # a connection accepted before the stop:
            raise ValueError("the daemon is stopping")  # its answer would be left out of what the stop stores
        command = request.get("command")
        now = self._now()
        if command == "status":
            answer = {**self.core.status(now), "dataplane": self._forwarding.status()}
            if request.get("reset_counters"):  # after the answer is made: it holds the figures reset
                self.core.reset_counters(now)
                answer["counters_reset"] = True
                log.info("counters reset by hand (homeagent status --reset-counters)")
            return answer
        if command == "bindings":
            home_address = request.get("home_address")
            counters = self._forwarding.binding_counters  # with ebpf, each row gets its binding's counters
            if home_address:
                walk = BindingWalk(self.core.bindings, int(IPv4Address(home_address)), counters=counters)
                return walk.rest(now)
            return control.Stream(self._binding_pages(BindingWalk(self.core.bindings, counters=counters)))
        if command == "remove" and (request.get("all") is True or "prefix" in request):
            prefix = None if request.get("all") is True else IPv4Network(str(request["prefix"]))
            return self._remove_many(BulkRemoval(self.core, prefix), str(prefix or "all"))
        if command == "remove":
            care_of = request.get("care_of_address")
            removed_before = len(self.core.bindings)
            effects = self.core.remove(
                int(IPv4Address(request["home_address"])), int(IPv4Address(care_of)) if care_of else None, now
            )
            self._apply(effects)
            self._commit()  # before the operator is told
            self._arm_timer()
            return {"removed": removed_before - len(self.core.bindings)}
        if command == "role":
            self._apply(self.core.set_role(str(request.get("role")), now))
            self._commit()
            self._arm_timer()
            return {"role": self.core.role}
        raise ValueError(f"unknown command {command!r}")

    async def _remove_many(self, removal: BulkRemoval, scope: str) -> dict[str, int]:
        """``homeagent remove --all`` / ``--prefix``: a step of the removal per turn of the loop (until the
        daemon stops: what is removed by then is answered)."""
        assert self._stopping is not None
        while not self._stopping.is_set() and (effects := removal.step(self._now())) is not None:
            self._apply(effects)
            self._commit()  # each step's removals on disk before the next
            self._arm_timer()
            await asyncio.sleep(0)
        log.info("removed by hand (%s): %d bindings of %d mobile nodes", scope, removal.removed,
                 removal.mobile_nodes)
        return {"removed": removal.removed, "mobile_nodes": removal.mobile_nodes}

    def _binding_pages(self, walk: BindingWalk) -> Iterator[list[dict[str, Any]]]:
        """The whole table for ``homeagent bindings``, a step of the walk per page: the control socket
        serves registrations and advertisements between two pages (issue 10 point 6), and each page's
        ``remaining`` is counted from the moment it is made."""
        while (rows := walk.step(self._now())) is not None:
            yield rows


def _udp_socket(address: str, port: int, freebind: bool = False, key: str = "home_agent.address") -> socket.socket:
    """A registration socket bound to ``address``; StartupError names ``key``, the setting it comes from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if freebind:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
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
        raise StartupError(f"{key}: cannot bind {address}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def run(config: Config) -> None:
    """Run until SIGTERM, SIGINT or SIGQUIT. Raises StartupError when the daemon cannot start."""
    asyncio.run(Daemon(config).run())
