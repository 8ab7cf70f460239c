"""Neighbours for unit tests: every call recorded in order, and the state the calls add up to (which home
addresses a serving member would proxy for, and which gratuitous ARPs it would send with which MAC), so a
test can assert both what was asked and where the asking left the home link."""

from __future__ import annotations


class FakeNeighbours:
    """Same calls as ``dataplane.neighbours.Neighbours``, no kernel and no link."""

    MAC = bytes.fromhex("02000000fa4e")  # stands for the interface's MAC in ``announced``

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.away_addresses: set[int] = set()
        self.serving = False
        self.opened = False
        self.closed = False
        self.announced: list[tuple[int, bytes]] = []  # (home address, MAC announced), first sendings only

    @property
    def entries(self) -> frozenset[int]:
        """The proxy entries the real one would hold."""
        return frozenset(self.away_addresses) if self.serving else frozenset()

    async def open(self) -> None:
        self.calls.append(("open", None))
        self.opened = True

    def away(self, home_address: int) -> None:
        self._check("away")
        self.calls.append(("away", home_address))
        if home_address not in self.away_addresses:
            self.away_addresses.add(home_address)
            if self.serving:
                self.announced.append((home_address, self.MAC))

    def home(self, home_address: int, mac: bytes | None = None, announce: bool = True) -> None:
        """A MAC not given is not looked up here (the real one asks the neighbour table)."""
        self._check("home")
        self.calls.append(("home", (home_address, mac, announce)))
        self.away_addresses.discard(home_address)
        if self.serving and announce and mac is not None:
            self.announced.append((home_address, bytes(mac)))

    def serve(self, serving: bool) -> None:
        self._check("serve")
        self.calls.append(("serve", serving))
        if serving and not self.serving:
            self.announced.extend((a, self.MAC) for a in sorted(self.away_addresses))
        self.serving = serving

    def reconcile(self) -> None:
        self.calls.append(("reconcile", None))

    async def settle(self) -> None:
        return None

    def snapshot(self) -> dict[str, object]:
        return {"neighbours.serving": self.serving, "neighbours.away": len(self.away_addresses),
                "neighbours.proxy_entries": len(self.entries), "neighbours.foreign_entries": 0,
                "neighbours.announcements_queued": 0}

    async def close(self) -> None:
        self.calls.append(("close", None))
        self.serving = False
        self.closed = True

    def _check(self, call: str) -> None:
        if self.closed:
            raise RuntimeError(f"{call} after close")
