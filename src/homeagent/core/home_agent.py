"""The Home Agent core: one thin object that routes inputs to the machines that decide, and collects
their effects. The runtime owns sockets and clocks; this object owns none."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address
from typing import Any

from homeagent import __version__
from homeagent.config import Config
from homeagent.core.bindings import BindingTable
from homeagent.core.effects import Address, Effect, TunnelDown
from homeagent.core.registrar import Registrar, RegistrarSettings
from homeagent.core.replay import TimestampReplayProtection
from homeagent.core.security import SecurityAssociations


class HomeAgent:
    def __init__(self, config: Config, now: float) -> None:
        ha = config.home_agent
        self.config = config
        self.counters: Counter[str] = Counter()
        self.bindings = BindingTable()
        self.started = now
        self.role = "active"  # a lone Home Agent serves from the start
        self.role_since = now
        self.registrar = Registrar(
            RegistrarSettings(
                home_agent_addresses=frozenset({int(ha.address)}),
                unicast_address=int(ha.address),
                home_network=ha.home_network,
                max_lifetime=ha.max_lifetime,
                simultaneous_bindings=ha.simultaneous_bindings,
            ),
            SecurityAssociations((sa.home_addresses, sa.association) for sa in config.security_associations),
            self.bindings,
            TimestampReplayProtection(ha.replay_tolerance),
            self.counters,
        )

    # -- inputs ---------------------------------------------------------------------------------------

    def receive_registration(self, data: bytes, source: Address, now: float) -> list[Effect]:
        return self.registrar.receive(data, source, now)

    def handle_timer(self, now: float) -> list[Effect]:
        expired = self.bindings.expire(now)
        self.counters["expired"] += len(expired)
        return [TunnelDown(b.home_address, b.care_of_address) for b in expired]

    def next_timer(self) -> float | None:
        return self.bindings.next_expiry()

    # -- views ----------------------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        ha = self.config.home_agent
        return {
            "version": __version__,
            "role": self.role,
            "role_since": self.role_since,
            "uptime": round(now - self.started, 3),
            "address": str(ha.address),
            "port": ha.port,
            "bindings": len(self.bindings),
            "peers": [],
            "counters": dict(sorted(self.counters.items())),
        }

    def binding_list(self, now: float, home_address: IPv4Address | None = None) -> list[dict[str, Any]]:
        if home_address is not None:
            chosen = self.bindings.bindings_of(int(home_address))
        else:
            chosen = tuple(self.bindings)
        return [b.as_dict(now) for b in sorted(chosen, key=lambda b: (b.home_address, b.care_of_address))]
