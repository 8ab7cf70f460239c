"""Backend "none": a Home Agent that registers mobile nodes and forwards nothing (another box does, or the
deployment only tests registrations). The calls are counted, so ``homeagent status`` still shows that the
core asked for tunnels."""

from __future__ import annotations

from collections import Counter

from homeagent.dataplane import Tunnel


class NullDataplane:
    def __init__(self) -> None:
        self._counters: Counter[str] = Counter()
        self._homes: set[int] = set()
        self._serving = False

    def set_tunnels(self, home_address: int, tunnels: tuple[Tunnel, ...]) -> None:
        self._counters["dataplane.set_tunnels"] += 1
        if tunnels:
            self._homes.add(home_address)
        else:
            self._homes.discard(home_address)

    def serve(self, serving: bool) -> None:
        self._counters["dataplane.serve"] += 1
        self._serving = serving

    def commit(self) -> None:
        pass  # applied as called

    def barrier(self) -> None:
        return None  # applied as called

    def counters(self) -> dict[str, object]:
        return {"dataplane.backend": "none", "dataplane.serving": self._serving,
                "dataplane.home_addresses": len(self._homes), **self._counters}

    def close(self) -> None:
        self._counters["dataplane.close"] += 1
