"""The settings of a redundancy group's core, as values: what config.py parsed, in the shape the core
uses (``[redundancy]`` in DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
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
