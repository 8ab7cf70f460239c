"""The runtime's side of the data plane: the core's ``TunnelSet`` and ``Serve`` effects carried to a
``Dataplane`` (the tunnels) and, with a home link, to ``Neighbours`` (proxy and gratuitous ARP), built
from ``[dataplane]``. The daemon hands every such effect here and knows nothing else of forwarding.

What goes where (RFC 5944 4.6): a node with tunnels is away, so the home link must send its traffic to
us (proxy ARP, and a gratuitous ARP when it goes away and when we take over); a node whose tunnels are
gone is no longer ours to answer for, and one that de-registered from home gets its own MAC announced
again. Both sides keep their state whether or not this member serves, so a takeover is one ``serve``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from homeagent.config import Backend, DataplaneConfig, ElectionKind, RedundancyConfig
from homeagent.core.effects import Serve, TunnelSet
from homeagent.dataplane import Dataplane
from homeagent.dataplane.ebpf import VIRTUAL_MAC_LEASE, BpfUnavailable, EbpfDataplane
from homeagent.dataplane.neighbours import Neighbours, NeighboursError
from homeagent.dataplane.null import NullDataplane
from homeagent.dataplane.userspace import UserspaceDataplane

log = logging.getLogger("homeagent.dataplane")

BARRIER_TIMEOUT = 1.0  # seconds a registration reply waits at most for the data plane (a hung forwarder)


class ForwardingError(RuntimeError):
    """The data plane could not be set up (a missing interface, missing capabilities)."""


EXTERNAL_TAKEOVER = 10.0  # seconds a VRRP daemon deciding the election may take to replace a dead member


def virtual_mac_lease(redundancy: RedundancyConfig | None) -> float:
    """Seconds the program gives the group's MAC for after each renewal (``EbpfDataplane``): long enough
    that a killed daemon's program carries the traffic until the group has replaced it, renewals coming
    every quarter of it. The internal election replaces a dead active member within five advertisement
    intervals (core/election.py: the master-down interval is three and a skew under one, and a standby
    behind a better one waits one more), so 5 / 0.75 of them; an external one (keepalived) within
    ``EXTERNAL_TAKEOVER``, by its tracking of our health; never under ``VIRTUAL_MAC_LEASE``."""
    if redundancy is None:
        return VIRTUAL_MAC_LEASE
    if redundancy.election is ElectionKind.EXTERNAL:
        return max(VIRTUAL_MAC_LEASE, EXTERNAL_TAKEOVER / 0.75)
    return max(VIRTUAL_MAC_LEASE, 7 * redundancy.advertisement_interval)


class Forwarding:
    def __init__(self, config: DataplaneConfig, counters: Counter[str],
                 redundancy: RedundancyConfig | None = None) -> None:
        """``redundancy``: the group, whose takeover time the virtual MAC's lease must outlast."""
        self.config = config
        self._counters = counters
        self._after: dict[asyncio.Future[None], list[Callable[[], None]]] = {}
        # While serving: the home addresses whose latest tunnel change is not yet in effect, each with the
        # barrier that will say it is, and each barrier's home addresses (to forget them when it passes).
        self._serving = False
        self._unapplied: dict[int, asyncio.Future[None]] = {}
        self._homes_of: dict[asyncio.Future[None], list[int]] = {}
        self.neighbours: Neighbours | None = None
        self.dataplane: Dataplane
        if config.backend is Backend.USERSPACE:
            assert config.interface is not None
            self.dataplane = UserspaceDataplane(config.tun, _mtu(config.interface), config.ttl)
            self.neighbours = Neighbours(config.interface, counters, rate=config.announce_rate)
        elif config.backend is Backend.EBPF:
            assert config.interface is not None
            self.dataplane = EbpfDataplane(config.interface, config.tun, _mtu(config.interface), config.ttl,
                                           extra_interfaces=config.extra_interfaces,
                                           virtual_mac=config.virtual_mac,
                                           lease=virtual_mac_lease(redundancy))
            # The program answers ARP for the away home addresses: gratuitous ARPs only, no proxy entries,
            # with the group's virtual MAC where there is one, as the program's answers.
            self.neighbours = Neighbours(config.interface, counters, rate=config.announce_rate, proxy=False,
                                         mac=config.virtual_mac)
        else:
            self.dataplane = NullDataplane()
        # Whether replies may have to wait, and for what: ``defers``, each for the barrier of its home
        # address's change (userspace: the forwarder's round trip); ``batches``, all of a loop turn's for its
        # ``commit`` (ebpf: the map values, one system call). A backend that applies changes as called
        # (none) holds nothing back.
        self.defers = not isinstance(self.dataplane, (NullDataplane, EbpfDataplane))
        self.batches = isinstance(self.dataplane, EbpfDataplane)

    async def open(self) -> None:
        if isinstance(self.dataplane, (UserspaceDataplane, EbpfDataplane)):
            try:
                self.dataplane.start()
            except BpfUnavailable as exc:
                raise ForwardingError(str(exc)) from None
            try:
                await self.dataplane.ready()
            except TimeoutError:
                self.dataplane.close()  # nothing left behind: a forwarder process, an attached program
                raise ForwardingError(f"the forwarder did not start (TUN {self.config.tun}: needs "
                                      "CAP_NET_ADMIN and CAP_NET_RAW)") from None
        if self.neighbours is not None:
            try:
                await self.neighbours.open()
            except NeighboursError as exc:
                self.dataplane.close()
                raise ForwardingError(str(exc)) from None

    def apply(self, effect: TunnelSet | Serve) -> None:
        if type(effect) is TunnelSet:
            self.dataplane.set_tunnels(effect.home_address, effect.tunnels)
            if self._serving and self.defers:
                self._track(effect.home_address)
            if self.neighbours is not None:
                if effect.tunnels:
                    self.neighbours.away(effect.home_address)
                else:
                    self.neighbours.home(effect.home_address, announce=effect.returned_home)
        else:
            assert type(effect) is Serve
            self._serving = effect.serving
            self.dataplane.serve(effect.serving)
            if self.neighbours is not None:
                self.neighbours.serve(effect.serving)

    def commit(self) -> None:
        """What this loop turn's changes gathered, put into effect (``Dataplane.commit``; nothing to do for a
        backend that applies changes as called). The daemon calls it at the end of every turn that held a
        reply or, with ``batches``, changed a tunnel (``Daemon._commit``)."""
        self.dataplane.commit()

    def _track(self, home_address: int) -> None:
        """Remember which barrier will say that ``home_address``'s latest change is in effect."""
        future = self.dataplane.barrier()
        if future is None:
            self._unapplied.pop(home_address, None)
            return
        homes = self._homes_of.get(future)
        if homes is None:
            homes = self._homes_of[future] = []
            future.add_done_callback(self._passed)
        homes.append(home_address)
        self._unapplied[home_address] = future

    def _passed(self, future: asyncio.Future[None]) -> None:
        for home in self._homes_of.pop(future, ()):
            if self._unapplied.get(home) is future:
                del self._unapplied[home]

    def when_in_effect(self, home_address: int, action: Callable[[], None]) -> None:
        """Run ``action`` (a registration reply for ``home_address``) once the latest change to that home
        address's tunnels is in effect: at once if none waits (a renewal, a refusal, a node whose change is
        through), and after ``BARRIER_TIMEOUT`` at the latest: a data plane that does not answer is counted
        and logged, and must not hold registrations."""
        future = self._unapplied.get(home_address)
        if future is None or future.done():
            action()
            return
        actions = self._after.get(future)
        if actions is None:
            actions = self._after[future] = []
            timer = asyncio.get_running_loop().call_later(BARRIER_TIMEOUT, self._release, future, True)

            def passed(done: asyncio.Future[None]) -> None:
                timer.cancel()
                self._release(done)

            future.add_done_callback(passed)
        actions.append(action)

    def _release(self, future: asyncio.Future[None], late: bool = False) -> None:
        """Run what waits on ``future``, once: when it passes, or ``late`` (the timeout, counted)."""
        actions = self._after.pop(future, [])
        if late and actions:
            self._counters["dataplane.barrier_timeouts"] += 1
            log.warning("the data plane took over %.1f s to apply a change: %d replies sent without waiting",
                        BARRIER_TIMEOUT, len(actions))
        for action in actions:
            action()

    @property
    def binding_counters(self) -> Callable[[int, int], dict[str, int]] | None:
        """Per-binding counters for ``homeagent bindings``, where the backend keeps them (ebpf's maps)."""
        return self.dataplane.binding_counters if isinstance(self.dataplane, EbpfDataplane) else None

    def status(self) -> dict[str, object]:
        out = dict(self.dataplane.counters())
        if self.neighbours is not None:
            out["neighbours"] = self.neighbours.snapshot()
        return out

    async def close(self) -> None:
        """Stop forwarding: the proxy entries go first (the home link stops sending to us), then the
        forwarder with its device and routes. Replies still waiting go now."""
        if self.neighbours is not None:
            await self.neighbours.close()
        self.dataplane.close()
        for future in list(self._after):
            self._release(future)


def _mtu(interface: str) -> int:
    """The home link's MTU (the tunnels' outer packets leave by some link; this one sizes them), 1500 if
    it cannot be read (the forwarder then learns too-big from ICMP like any sender)."""
    try:
        return int(Path(f"/sys/class/net/{interface}/mtu").read_text())
    except (OSError, ValueError):
        log.warning("could not read the MTU of %s: taking 1500", interface)
        return 1500
