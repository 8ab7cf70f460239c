"""What the core asks the runtime to do. The core never does I/O itself; it returns these.

The ones made for every registration are named tuples: a frozen dataclass costs four times as much to
make, and a Home Agent makes several per registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

Address = tuple[str, int]


class Send(NamedTuple):
    datagram: bytes
    address: Address
    # The local address to send from. None: from the socket the triggering datagram arrived on (so a reply
    # leaves from the address the request was sent to, RFC 5944 3.8.3.1), or the member's own address.
    source: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimAddress:
    """Serve the group's virtual address: bind to it (loopback) or add it to the link and announce it.

    ``announce``: tell the link again even if the address is held already. Another member was active too
    (a partition healed, a paused member woke up, a preemption's hand-over): until it took the address off,
    it answered ARP for it, and the neighbours may hold its MAC (issue 10)."""

    address: str
    announce: bool = False


@dataclass(frozen=True, slots=True)
class ReleaseAddress:
    address: str


class TunnelUp(NamedTuple):
    """Start tunnelling datagrams for ``home_address`` to ``care_of_address`` (IP-in-IP)."""

    home_address: int
    care_of_address: int
    reverse: bool = False  # the T bit was granted: decapsulate what arrives from the care-of address


class TunnelDown(NamedTuple):
    home_address: int
    care_of_address: int


@dataclass(frozen=True, slots=True)
class TunnelAll:
    """Tunnel for every binding of the table (``serving``), or for none: what a role change asks of the
    data plane, which brings itself to it from the table at its own pace; TunnelUp and TunnelDown then
    follow single bindings. One effect, not one per binding: at a million bindings a role change made a
    million of them and held the event loop for seconds (issue 10)."""

    serving: bool


class Accepted(NamedTuple):
    """A registration or de-registration the registrar accepted (the core replicates it; the runtime
    never sees this one)."""

    home_address: int
    care_of_address: int
    home_agent: int
    flags: int
    lifetime: int  # granted; 0 for a de-registration
    identification: int


Effect = Send | TunnelUp | TunnelDown | TunnelAll | ClaimAddress | ReleaseAddress | Accepted
