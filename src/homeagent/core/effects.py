"""What the core asks the runtime to do. The core never does I/O itself; it returns these."""

from __future__ import annotations

from dataclasses import dataclass

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Send:
    datagram: bytes
    address: Address


@dataclass(frozen=True, slots=True)
class TunnelUp:
    """Start tunnelling datagrams for ``home_address`` to ``care_of_address`` (IP-in-IP)."""

    home_address: int
    care_of_address: int
    reverse: bool = False  # the T bit was granted: decapsulate what arrives from the care-of address


@dataclass(frozen=True, slots=True)
class TunnelDown:
    home_address: int
    care_of_address: int


Effect = Send | TunnelUp | TunnelDown
