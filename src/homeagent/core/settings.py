"""The settings of a redundancy group's core, as values: what config.py parsed, in the shape the core
uses (``[redundancy]`` in DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network

from homeagent.config import Mode

__all__ = ["GroupSettings", "Mode"]


@dataclass(frozen=True)
class GroupSettings:
    own_address: int
    virtual_address: int
    port: int
    mode: Mode
    priority: int
    sync: bool
    sync_timeout: float
    advertisement_interval: float
    preempt: bool
    startup_wait: float
    max_datagram: int
    home_network: IPv4Network
    multicast_group: int | None = None
    external_election: bool = False
    preempt_delay: float = 0.0
    _home_mask: int = field(init=False, repr=False, compare=False, default=0)
    _home_prefix: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_home_mask", int(self.home_network.netmask))
        object.__setattr__(self, "_home_prefix", int(self.home_network.network_address))

    def holds(self, home_address: int) -> bool:
        """Whether ``home_address`` is in the home network: a member holds no other network's nodes."""
        return home_address & self._home_mask == self._home_prefix
