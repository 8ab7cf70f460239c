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


class Tunnel(NamedTuple):
    """One tunnel of a home address: to ``care_of_address``, from ``source`` (the address the mobile node
    registered with: RFC 5944 4.2.3 makes it the tunnel's source), with reverse tunnelling (T flag, RFC
    3024) or not."""

    care_of_address: int
    source: int
    reverse: bool


class TunnelSet(NamedTuple):
    """The tunnels of ``home_address`` from now on (``()``: none), whatever changed them: a registration,
    a Binding Update, a table download, an expiry or an operator's removal (the binding table's one stream
    of changes, ``BindingTable.changes``). Made on every member, serving or not: a standby keeps its data
    plane ready, and a takeover is one ``Serve``. ``returned_home``: the mobile node de-registered from
    home (RFC 5944 4.6: the home link must learn its own MAC again)."""

    home_address: int
    tunnels: tuple[Tunnel, ...]
    returned_home: bool = False


@dataclass(frozen=True, slots=True)
class Serve:
    """Whether this member forwards the home addresses' traffic and answers ARP for them: the member
    holding the virtual address (in peer mode too: one member answers ARP for the home addresses, and each
    holds every tunnel), a lone Home Agent always. One effect for the whole table: at a million
    bindings a role change that made one per binding held the event loop for seconds (issue 10)."""

    serving: bool


Effect = Send | TunnelSet | Serve | ClaimAddress | ReleaseAddress
