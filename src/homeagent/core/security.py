"""Which security associations cover an address, longest configured prefix first: a mobile node's home
address (mobile node - Home Agent) or a member's address (Home Agent - Home Agent). One lookup for both."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network

from homeagent.wire.auth import SecurityAssociation


class SecurityAssociations:
    def __init__(self, entries: Iterable[tuple[IPv4Network, SecurityAssociation]]) -> None:
        by_prefix: dict[tuple[int, int], dict[int, SecurityAssociation]] = {}
        for network, sa in entries:
            key = (network.prefixlen, int(network.network_address))
            by_prefix.setdefault(key, {})[sa.spi] = sa
        # Longest prefix first; each entry: (mask, network, {spi: association}).
        self._prefixes = [
            (((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1), net, spis)
            for (plen, net), spis in sorted(by_prefix.items(), reverse=True)
        ]

    def covering(self, address: int) -> dict[int, SecurityAssociation] | None:
        """The associations (by SPI) of the longest prefix covering ``address``."""
        for mask, net, spis in self._prefixes:
            if address & mask == net:
                return spis
        return None

    def first_covering(self, address: int) -> SecurityAssociation | None:
        """The one association a member's messages are sealed with: the first configured for the longest
        prefix covering ``address``."""
        spis = self.covering(address)
        return next(iter(spis.values())) if spis else None
