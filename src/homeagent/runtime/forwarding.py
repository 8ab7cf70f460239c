"""The runtime's side of the data plane: the core's ``TunnelSet`` and ``Serve`` effects carried to a
``Dataplane`` (the tunnels) and, with a home link, to ``Neighbours`` (proxy and gratuitous ARP), built
from ``[dataplane]``. The daemon hands every such effect here and knows nothing else of forwarding.

What goes where (RFC 5944 4.6): a node with tunnels is away, so the home link must send its traffic to
us (proxy ARP, and a gratuitous ARP when it goes away and when we take over); a node whose tunnels are
gone is no longer ours to answer for, and one that de-registered from home gets its own MAC announced
again. Both sides keep their state whether or not this member serves, so a takeover is one ``serve``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from homeagent.config import Backend, DataplaneConfig
from homeagent.core.effects import Serve, TunnelSet
from homeagent.dataplane import Dataplane
from homeagent.dataplane.neighbours import Neighbours, NeighboursError
from homeagent.dataplane.null import NullDataplane
from homeagent.dataplane.userspace import UserspaceDataplane

log = logging.getLogger("homeagent.dataplane")


class ForwardingError(RuntimeError):
    """The data plane could not be set up (a missing interface, missing capabilities)."""


class Forwarding:
    def __init__(self, config: DataplaneConfig, counters: Counter[str]) -> None:
        self.config = config
        self.neighbours: Neighbours | None = None
        self.dataplane: Dataplane
        if config.backend is Backend.USERSPACE:
            assert config.interface is not None
            self.dataplane = UserspaceDataplane(config.tun, _mtu(config.interface), config.ttl)
            self.neighbours = Neighbours(config.interface, counters)
        else:
            self.dataplane = NullDataplane()

    async def open(self) -> None:
        if isinstance(self.dataplane, UserspaceDataplane):
            self.dataplane.start()
            try:
                await self.dataplane.ready()
            except TimeoutError:
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
            if self.neighbours is not None:
                if effect.tunnels:
                    self.neighbours.away(effect.home_address)
                else:
                    self.neighbours.home(effect.home_address, announce=effect.returned_home)
        else:
            assert type(effect) is Serve
            self.dataplane.serve(effect.serving)
            if self.neighbours is not None:
                self.neighbours.serve(effect.serving)

    def status(self) -> dict[str, object]:
        out = dict(self.dataplane.counters())
        if self.neighbours is not None:
            out["neighbours"] = self.neighbours.snapshot()
        return out

    async def close(self) -> None:
        """Stop forwarding: the proxy entries go first (the home link stops sending to us), then the
        forwarder with its device and routes."""
        if self.neighbours is not None:
            await self.neighbours.close()
        self.dataplane.close()


def _mtu(interface: str) -> int:
    """The home link's MTU (the tunnels' outer packets leave by some link; this one sizes them), 1500 if
    it cannot be read (the forwarder then learns too-big from ICMP like any sender)."""
    try:
        return int(Path(f"/sys/class/net/{interface}/mtu").read_text())
    except (OSError, ValueError):
        log.warning("could not read the MTU of %s: taking 1500", interface)
        return 1500
