"""The data plane: what carries a mobile node's traffic through its tunnels, behind one small interface.

The Home Agent core decides which tunnels exist (from the binding table's change stream) and whether this
member serves; the runtime tells a ``Dataplane`` so, and nothing else. The interface is the same for every
backend: ``userspace`` (a TUN device and raw IP-in-IP sockets in a process of its own), ``null`` (backend
"none": registrations only) and ``fake`` (records calls, for unit tests). Addresses are integers, as in
``core.node_state.Binding``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from homeagent.core.effects import Tunnel  # one definition: the core's effects carry it


class Dataplane(Protocol):
    def set_tunnels(self, home_address: int, tunnels: tuple[Tunnel, ...]) -> None:
        """The tunnels of ``home_address`` from now on, replacing any before; ``()``: none (the mobile node is
        home or its binding is gone). More than one: simultaneous bindings (S flag), one copy each."""

    def serve(self, serving: bool) -> None:
        """Whether this member forwards: only a serving member draws the home addresses' traffic (routes)
        and forwards; the others keep their tunnels ready for a takeover."""

    def commit(self) -> None:
        """Put into effect at once what ``set_tunnels`` gathered (the ebpf backend's map values, written
        in one system call a loop turn); the runtime calls it before it sends a loop turn's registration
        replies. A backend that applies each change as it is called has nothing to do."""

    def barrier(self) -> asyncio.Future[None] | None:
        """``None`` when every ``set_tunnels`` and ``serve`` so far is in effect (a packet to a home address
        now goes through its tunnels); otherwise a future done once it is. The runtime sends a registration
        reply only after the changes made before it are in effect (docs/dataplane.md, "A reply means
        forwarding"): a backend that applies changes synchronously always returns ``None``."""

    def counters(self) -> dict[str, object]:
        """Counters (per tunnel packets and bytes, drops by reason, restarts); may be a cached snapshot."""

    def close(self) -> None:
        """Stop forwarding and give back what was taken (devices, routes, processes)."""


__all__ = ["Dataplane", "Tunnel"]
